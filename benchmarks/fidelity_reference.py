"""The references of `benchmarks/fidelity.py` (issue 20): long BlackJAX NUTS runs on the full train
split of each task, generated once and stored in `benchmarks/references/`:

    <task>.npz    logistic regressions: `draws` (chains, draws, dim) float32, thinned,
                  `chain_mean` and `chain_second_moment` (chains, dim) from every draw, and
                  `chain_probs` (chains, test points, 2), each chain's mean predictive on the test
                  split (from all its draws); MLP classifiers: `chain_probs` (chains, points,
                  classes); MLP regression: `per_draw` (chains, draws, points, 2) float32, each
                  kept draw's predictive mean and noise sd on the test split
    <task>.json   the settings, the time it took, the diagnostics (R-hat, bulk ESS, divergences,
                  leapfrog steps per draw) and the floor: the metrics of the first half of the
                  chains against the second half (for a multimodal BNN posterior the reference is
                  itself approximate; no candidate can be shown closer than that floor)

NUTS with BlackJAX's window adaptation (diagonal mass matrix), chains vmapped, started from
independent random initialisations (the MLPs' at the prior's scale, the logistic regressions'
overdispersed around 0). Diagnostics: on the coefficients for the logistic regressions; for the
MLPs, whose parameters are not identifiable (permutations of hidden units), on the per-draw mean
test log-likelihood and on the per-draw predictive probabilities of the test points.

Resumable per task: a task whose files exist is skipped (`--force` regenerates it).

    python benchmarks/fidelity_reference.py --task breast_cancer pima      # minutes
    python benchmarks/fidelity_reference.py --task digits_mlp               # long: see README
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any

# `fidelity` (this folder) puts the repository root on the path for `sghmc_jax`.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fidelity
import jax
import numpy as np
from jax.flatten_util import ravel_pytree

import sghmc_jax


@dataclasses.dataclass(frozen=True)
class Settings:
    chains: int = 4
    warmup: int = 1000
    draws: int = 2000
    thin: int = 2  # of the stored draws (the predictive means use every draw)
    max_doublings: int = 10  # NUTS tree depth: at most 2^10 − 1 leapfrog steps per draw
    target_accept: float = 0.8
    seed: int = 0


SETTINGS = {
    "breast_cancer": Settings(draws=10_000, thin=10),
    "pima": Settings(draws=10_000, thin=10),
    "diabetes_mlp": Settings(warmup=1000, draws=1000, thin=5, max_doublings=8, target_accept=0.9),
    "digits_mlp": Settings(warmup=1000, draws=1000, max_doublings=8, target_accept=0.9),
    "mnist1d_mlp": Settings(warmup=1000, draws=1000, max_doublings=8, target_accept=0.9),
}


def nuts_chains(task: fidelity.Task, split: fidelity.Split, s: Settings):
    """Runs `s.chains` NUTS chains (vmapped) and returns the kept draws (a params pytree with leading
    axes (chain, draw)), the leapfrog steps per draw and the number of divergent transitions."""
    import blackjax

    dim = split.x_train.shape[1]
    template = fidelity.init_params(task, dim, jax.random.key(0))
    _, unravel = ravel_pytree(template)
    log_density = fidelity.log_density(task, split)
    logdensity = lambda flat: log_density(unravel(flat))  # noqa: E731

    def chain(key, x0):
        warm_key, sample_key = jax.random.split(key)
        adapt = blackjax.window_adaptation(
            blackjax.nuts,
            logdensity,
            is_mass_matrix_diagonal=True,
            target_acceptance_rate=s.target_accept,
            max_num_doublings=s.max_doublings,
        )
        (state, params), _ = adapt.run(warm_key, x0, num_steps=s.warmup)
        step = blackjax.nuts(logdensity, **params).step  # params carry max_num_doublings

        def one(state, k):
            state, info = step(k, state)
            return state, (state.position, info.num_integration_steps, info.is_divergent)

        return jax.lax.scan(one, state, jax.random.split(sample_key, s.draws))[1]

    init_key, run_key = jax.random.split(jax.random.key(s.seed))
    if task.kind == "logistic":  # overdispersed around 0
        x0 = 0.5 * jax.random.normal(init_key, (s.chains, len(ravel_pytree(template)[0])))
    else:
        x0 = jax.vmap(lambda k: ravel_pytree(fidelity.init_params(task, dim, k))[0])(
            jax.random.split(init_key, s.chains)
        )
    flat, leapfrogs, divergent = jax.jit(jax.vmap(chain))(jax.random.split(run_key, s.chains), x0)
    draws = jax.vmap(jax.vmap(unravel))(flat)
    return jax.tree.map(np.asarray, draws), np.asarray(leapfrogs), int(np.sum(divergent))


def _diagnostics(task: fidelity.Task, split: fidelity.Split, draws: dict, per_draw: np.ndarray) -> dict[str, Any]:
    """R-hat and bulk ESS: of the coefficients (logistic regressions), else of the per-draw mean
    test log-likelihood and of the per-draw predictive (probabilities, or means for regression)."""
    out: dict[str, Any] = {}
    if task.kind == "logistic":
        s = sghmc_jax.diagnostics.summary(draws["w"].astype(np.float64))["params"]
        out.update(
            max_rhat_coefficients=float(s["rhat"].max()),
            min_ess_bulk_coefficients=float(s["ess_bulk"].min()),
            max_mcse_over_sd=float(np.max(s["mcse_mean"] / s["sd"])),
        )
    c, d = per_draw.shape[:2]
    if task.kind == "regression":
        mu, sd = per_draw[..., 0], per_draw[..., 1]
        y = split.y_test[None, None]
        loglik = np.mean(-0.5 * ((y - mu) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi), axis=-1)
        pred = mu
    else:
        loglik = np.mean(
            np.log(np.take_along_axis(per_draw, split.y_test[None, None, :, None], -1)[..., 0] + 1e-300), -1
        )
        pred = per_draw.reshape(c, d, -1)
    s_ll = sghmc_jax.diagnostics.summary(loglik)["params"]
    s_pred = sghmc_jax.diagnostics.summary(pred)["params"]
    rhat = np.nan_to_num(s_pred["rhat"], nan=1.0)  # constant probabilities (0 or 1) have no R-hat
    out.update(
        rhat_test_loglik=float(s_ll["rhat"]),
        ess_bulk_test_loglik=float(s_ll["ess_bulk"]),
        max_rhat_predictive=float(rhat.max()),
        median_rhat_predictive=float(np.median(rhat)),
    )
    return out


def generate(task: fidelity.Task, s: Settings, reference_dir: str) -> dict[str, Any]:
    """Runs the reference of one task and writes `<task>.npz` and `<task>.json`; returns the metadata."""
    split = fidelity.task_data(task.name)
    t0 = time.perf_counter()
    draws, leapfrogs, divergent = nuts_chains(task, split, s)
    seconds = time.perf_counter() - t0
    c, d = s.chains, s.draws
    flat = jax.tree.map(lambda a: a.reshape(c * d, *a.shape[2:]), draws)
    per_draw = fidelity.predictive(task, flat, split.x_test).reshape(c, d, len(split.x_test), -1)
    arrays: dict[str, np.ndarray] = {}
    if task.kind == "regression":
        arrays["per_draw"] = per_draw[:, :: s.thin].astype(np.float32)
    else:
        arrays["chain_probs"] = per_draw.mean(1).astype(np.float32)
    if task.kind == "logistic":  # moments from every draw; the stored draws are thinned
        arrays["draws"] = draws["w"][:, :: s.thin].astype(np.float32)
        arrays["chain_mean"] = draws["w"].astype(np.float64).mean(1)
        arrays["chain_second_moment"] = (draws["w"].astype(np.float64) ** 2).mean(1)
    meta = {
        "task": task.name,
        "method": "BlackJAX NUTS, window adaptation (diagonal mass matrix)",
        "settings": dataclasses.asdict(s),
        "seconds": seconds,
        "divergent": divergent,
        "mean_leapfrogs_per_draw": float(leapfrogs.mean()),
        "full_data_gradients_after_warmup": int(leapfrogs.sum()),
        "train": len(split.x_train),
        "test": len(split.x_test),
        "environment": fidelity.environment(),
        "diagnostics": _diagnostics(task, split, draws, per_draw),
    }
    ref = dict(arrays, meta=meta)
    meta["floor"] = fidelity.floor(task, ref)
    os.makedirs(reference_dir, exist_ok=True)
    np.savez_compressed(os.path.join(reference_dir, f"{task.name}.npz"), **arrays)
    with open(os.path.join(reference_dir, f"{task.name}.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def refloor(task: fidelity.Task, reference_dir: str) -> None:
    """Recomputes the floor stored in `<task>.json` from its arrays (after a change of metric)."""
    ref = fidelity.load_reference(task, reference_dir)
    if ref is None:
        print(f"{task.name}: no reference")
        return
    meta = ref.pop("meta")
    meta["floor"] = fidelity.floor(task, ref)
    with open(os.path.join(reference_dir, f"{task.name}.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"{task.name}: floor {json.dumps(meta['floor'])}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", nargs="*", default=list(fidelity.TASKS), choices=list(fidelity.TASKS))
    parser.add_argument("--force", action="store_true", help="regenerate references that exist")
    parser.add_argument("--refloor", action="store_true", help="recompute the floors of existing references only")
    parser.add_argument("--out", default=fidelity.REFERENCE_DIR, help="folder of the references")
    args = parser.parse_args(argv)
    for name in args.task:
        task = fidelity.TASKS[name]
        if args.refloor:
            refloor(task, args.out)
            continue
        if os.path.exists(os.path.join(args.out, f"{name}.json")) and not args.force:
            print(f"{name}: exists, skipped (--force to regenerate)")
            continue
        if not fidelity.available(task):
            print(f"{name}: skipped ({task.needs} is not installed; `pip install -e .[bench]`)")
            continue
        meta = generate(task, SETTINGS[name], args.out)
        print(
            f"{name}: {meta['seconds']:.0f} s, {meta['divergent']} divergent, {meta['mean_leapfrogs_per_draw']:.1f} "
            f"leapfrogs per draw; {json.dumps(meta['diagnostics'])}; floor {json.dumps(meta['floor'])}",
            flush=True,
        )


if __name__ == "__main__":
    main()
