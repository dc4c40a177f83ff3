"""Whole training steps (minibatch gradient + update) in `lax.scan`, against optax SGD-momentum.

Problems:
- `lr`: Bayesian logistic regression, 100k x 100 synthetic data, batch 1,000, N(0, 1) prior.
- `mlp`: a 64-100-100-10 tanh MLP on scikit-learn's bundled digits (1,437 train / 360 test),
  batch 128, N(0, 1) prior.

Candidates: optax SGD with momentum (the floor: SGHMC's T = 0 twin, sgd(ε², momentum=1 − εα)),
sghmc_jax's optax face and functional face, a naive SGHMC (one `jax.random.normal` per leaf),
BlackJAX's SGHMC diffusion step (skipped when blackjax is missing), and posteriors' SGHMC on
PyTorch (CPU), run by benchmarks/posteriors_bench.py in benchmarks/.venv-posteriors (created by
`make bench`; skipped with a message when missing). The timed unit is one jitted call of
`--steps` scan steps with the state donated; the table shows time per step, its ratio to the
floor, compile time, and each candidate's test accuracy after `--accuracy-steps` steps
(final iterate), so that speed is never bought with a broken sampler.

    python benchmarks/training.py               # both problems, full repeats
    python benchmarks/training.py --quick       # fewer repeats and steps
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

# Runnable from a plain checkout (no install): the repository root and this folder on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import _common  # noqa: E402
import sghmc_jax  # noqa: E402
from _common import EVERY_LEAF_FUSED  # noqa: E402
from sghmc_jax.sgmcmc import sghmc as functional_sghmc  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
POSTERIORS_PYTHON = os.path.join(HERE, ".venv-posteriors", "bin", "python")

# ε, α per problem (SGHMC's parameterisation, σ = 1, T = 1). εα ≈ 0.1: momentum 0.9 for the floor.
HYPER = {"lr": (3e-3, 30.0), "mlp": (1e-2, 10.0)}


def lr_data(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, d = 110_000, 100
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=d) * 3 / np.sqrt(d)
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ w)))).astype(np.int32)
    return {"x_train": x[:100_000], "y_train": y[:100_000], "x_test": x[100_000:], "y_test": y[100_000:]}


SYNTHETIC: list[bool] = []  # set when the digits data had to be replaced


def digits_data(seed: int = 0) -> dict[str, np.ndarray]:
    """scikit-learn's bundled digits (8x8 images, 10 classes); a synthetic stand-in of the same
    shapes when scikit-learn is missing (timings are the same; accuracies are then meaningless)."""
    try:
        from sklearn.datasets import load_digits  # the data set ships inside scikit-learn
    except ImportError as err:
        _common.skip("digits data", f"scikit-learn is not importable ({err}); using synthetic data of the same shapes")
        SYNTHETIC.append(True)
        rng = np.random.default_rng(seed)
        x = rng.random((1797, 64)).astype(np.float32)
        y = rng.integers(0, 10, 1797).astype(np.int32)
    else:
        x, y = load_digits(return_X_y=True)
        x = (x / 16.0).astype(np.float32)
    perm = np.random.default_rng(seed).permutation(len(x))
    x, y = x[perm], y[perm].astype(np.int32)
    return {"x_train": x[:1437], "y_train": y[:1437], "x_test": x[1437:], "y_test": y[1437:]}


def init_params(problem: str, seed: int = 0) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed + 1)
    if problem == "lr":
        return {"w": jnp.zeros(100, jnp.float32), "b": jnp.zeros((), jnp.float32)}
    sizes = [64, 100, 100, 10]
    params = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"w{i}"] = jnp.asarray(rng.normal(size=(a, b)) / np.sqrt(a), jnp.float32)
        params[f"b{i}"] = jnp.zeros(b, jnp.float32)
    return params


def logits_fn(problem: str) -> Callable[[Any, jax.Array], jax.Array]:
    if problem == "lr":
        return lambda p, x: x @ p["w"] + p["b"]

    def mlp(p: Any, x: jax.Array) -> jax.Array:
        h = jnp.tanh(x @ p["w0"] + p["b0"])
        h = jnp.tanh(h @ p["w1"] + p["b1"])
        return h @ p["w2"] + p["b2"]

    return mlp


def make_log_posterior(problem: str, n_train: int, batch_size: int) -> Callable:
    logits = logits_fn(problem)

    def log_posterior(params: Any, batch: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, None]:
        x, y = batch
        z = logits(params, x)
        if problem == "lr":
            loglik = jnp.sum(y * z - jnp.logaddexp(0.0, z))
        else:
            loglik = jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], axis=1))
        prior = -0.5 * sum(jnp.sum(v**2) for v in jax.tree.leaves(params))
        return (n_train / batch_size) * loglik + prior, None

    return log_posterior


def accuracy(problem: str, params: Any, data: dict[str, np.ndarray]) -> float:
    z = logits_fn(problem)(params, jnp.asarray(data["x_test"]))
    pred = (z > 0).astype(jnp.int32) if problem == "lr" else jnp.argmax(z, axis=1)
    return float(jnp.mean(pred == jnp.asarray(data["y_test"])))


def naive_sghmc_update(lr: float, alpha: float) -> Callable:
    def update(params: Any, momenta: Any, grads: Any, key: jax.Array) -> tuple[Any, Any]:
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(key, len(leaves))
        noise = jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])
        scale = (lr * 2 * alpha) ** 0.5
        momenta = jax.tree.map(lambda m, g, n: (1 - lr * alpha) * m + lr * g + scale * n, momenta, grads, noise)
        return jax.tree.map(lambda p, m: p + lr * m, params, momenta), momenta

    return update


def scan_runners(problem: str, data: dict[str, np.ndarray], batch_size: int, steps: int) -> dict[str, tuple[Callable, Callable]]:
    """name -> (make_initial_carry(), jitted run(carry, step0) -> carry) for each JAX candidate."""
    lr, alpha = HYPER[problem]
    x, y = jnp.asarray(data["x_train"]), jnp.asarray(data["y_train"])
    n = x.shape[0]
    num_batches = n // batch_size
    log_posterior = make_log_posterior(problem, n, batch_size)
    loss = lambda p, b: -log_posterior(p, b)[0]  # noqa: E731
    grad_log_posterior = jax.grad(lambda p, b: log_posterior(p, b)[0])

    def batch_at(step: jax.Array) -> tuple[jax.Array, jax.Array]:
        start = (step % num_batches) * batch_size
        return (
            jax.lax.dynamic_slice_in_dim(x, start, batch_size),
            jax.lax.dynamic_slice_in_dim(y, start, batch_size),
        )

    def scanned(body: Callable) -> Callable:
        # Per-step keys are split once per call, outside the loop, as a user would (a key
        # derivation inside the loop costs a rolled threefry loop per step on CPU).
        def run(carry: Any, step0: jax.Array) -> Any:
            keys = jax.random.split(jax.random.fold_in(jax.random.key(11), step0), steps)

            def f(c, xs):
                i, key = xs
                return body(c, step0 + i, key), None

            return jax.lax.scan(f, carry, (jnp.arange(steps), keys))[0]

        return jax.jit(run, donate_argnums=(0,))

    out: dict[str, tuple[Callable, Callable]] = {}

    def optax_candidate(tx: Any, with_key: bool) -> tuple[Callable, Callable]:
        def body(c: Any, step: jax.Array, key: jax.Array) -> Any:
            params, state = c
            g = jax.grad(loss)(params, batch_at(step))
            if with_key:
                u, state = tx.update(g, state, params, key=key)
            else:
                u, state = tx.update(g, state, params)
            return optax.apply_updates(params, u), state

        def init() -> Any:
            p = init_params(problem)
            return p, tx.init(p)

        return init, scanned(body)

    out["optax sgd+momentum (floor)"] = optax_candidate(optax.sgd(lr**2, momentum=1 - lr * alpha), False)
    sampler = sghmc_jax.sghmc(lr, alpha=alpha, momenta=0.0, key=0)
    out["sghmc_jax.sghmc (optax face)"] = optax_candidate(sampler, True)
    out["sghmc_jax.sghmc, state key split"] = optax_candidate(sampler, False)
    # Same transform, traced with every leaf's generator fused into its update (no shared bins,
    # no lax.cond): the comparison to run on accelerators, where a conditional may cost more.
    out[EVERY_LEAF_FUSED] = optax_candidate(sampler, True)

    transform = functional_sghmc.build(log_posterior, lr, alpha=alpha, momenta=0.0)

    def functional_body(c: Any, step: jax.Array, key: jax.Array) -> Any:
        state = transform.update(c, batch_at(step), key=key)
        return state._replace(aux=None)

    def functional_init() -> Any:
        state = transform.init(init_params(problem))
        return state._replace(log_posterior=jnp.zeros((), jnp.float32))

    out["sghmc_jax.sgmcmc.sghmc (functional)"] = (functional_init, scanned(functional_body))

    naive = naive_sghmc_update(lr, alpha)

    def naive_body(c: Any, step: jax.Array, key: jax.Array) -> Any:
        params, momenta = c
        g = grad_log_posterior(params, batch_at(step))
        return naive(params, momenta, g, key)

    def zero_momenta_init() -> Any:
        p = init_params(problem)
        return p, jax.tree.map(jnp.zeros_like, p)

    out["naive SGHMC (random.normal/leaf)"] = (zero_momenta_init, scanned(naive_body))

    try:
        from blackjax.sgmcmc import diffusions

        one_step = diffusions.sghmc(alpha)

        def blackjax_body(c: Any, step: jax.Array, key: jax.Array) -> Any:
            params, momenta = c
            g = grad_log_posterior(params, batch_at(step))
            return one_step(key, params, momenta, g, lr)

        out["blackjax sghmc diffusion"] = (zero_momenta_init, scanned(blackjax_body))
    except ImportError as err:
        _common.skip("blackjax sghmc diffusion", f"blackjax is not importable ({err})")
    return out


def params_of(name: str, carry: Any) -> Any:
    return carry.params if "functional" in name else carry[0]


def run_posteriors(problem: str, data: dict[str, np.ndarray], batch_size: int, steps: int, acc_steps: int) -> dict | None:
    if not os.path.exists(POSTERIORS_PYTHON):
        _common.skip("posteriors sghmc (torch)", f"{POSTERIORS_PYTHON} not found; `make bench` creates it")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.npz")
        np.savez(path, **data)
        lr, alpha = HYPER[problem]
        code, out = _common.run_python(
            POSTERIORS_PYTHON, os.path.join(HERE, "posteriors_bench.py"),
            [problem, path, str(batch_size), str(steps), str(acc_steps), str(lr), str(alpha)], timeout=1800,
        )
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    if code != 0 or not lines:
        _common.skip("posteriors sghmc (torch)", f"the posteriors run failed (exit {code}): {out[-500:]}")
        return None
    import json

    return json.loads(lines[-1][len("RESULT "):])


def bench_problem(problem: str, quick: bool, with_posteriors: bool, env: dict) -> list[_common.Result]:
    data = lr_data() if problem == "lr" else digits_data()
    batch_size = 1000 if problem == "lr" else 128
    steps = 100 if quick else 200
    acc_steps = 1000 if quick else 3000
    runners = scan_runners(problem, data, batch_size, steps)
    cands = []
    for name, (init, run) in runners.items():
        carry = init()
        compiled, seconds = _common.compile_candidate(name, run, carry, jnp.asarray(0))
        # Accuracy first, from a fresh start, with the same compiled scan.
        acc_carry = init()
        for i in range(acc_steps // steps):
            acc_carry = compiled(acc_carry, jnp.asarray(i * steps))
        acc = accuracy(problem, params_of(name, acc_carry), data)
        box = [init(), 0]

        def run_once(box: list = box, compiled: Any = compiled) -> None:
            box[0] = compiled(box[0], jnp.asarray(box[1] * steps))
            box[1] += 1
            jax.block_until_ready(box[0])

        note = f"{steps} steps/call" + ("; synthetic data: accuracy meaningless" if problem == "mlp" and SYNTHETIC else "")
        cands.append(_common.Candidate(name, run_once, compile_s=seconds, accuracy=acc, note=note))
    results = _common.interleaved(cands, repeats=7 if quick else 15, floor=cands[0].name)
    for r in results:  # per gradient step
        r.median_s, r.min_s, r.max_s = r.median_s / steps, r.min_s / steps, r.max_s / steps
    if with_posteriors:
        post = run_posteriors(problem, data, batch_size, steps, acc_steps)
        if post is not None:
            floor = results[0].median_s
            results.append(_common.Result(
                "posteriors sghmc (torch, CPU)", post["median_s"], post["min_s"], post["max_s"],
                post["median_s"] / floor, float("nan"), float("nan"), post["accuracy"],
                f"torch {post['torch']}, posteriors {post['posteriors']}, separate process",
            ))
    title = ("logistic regression 100k x 100, batch 1,000" if problem == "lr" else "MLP 64-100-100-10 on digits, batch 128") + ", time per step"
    _common.print_table(title, results, env)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and accuracy steps")
    parser.add_argument("--problems", default="lr,mlp", help="comma-separated: lr, mlp")
    parser.add_argument("--no-posteriors", action="store_true", help="skip the PyTorch posteriors candidate")
    parser.add_argument("--json", default=None, help="write results here")
    args = parser.parse_args()
    env = _common.environment()
    payload: dict = {"env": env, "problems": {}}
    for problem in args.problems.split(","):
        results = bench_problem(problem, args.quick, not args.no_posteriors, env)
        payload["problems"][problem] = [r.as_dict() for r in results]
    _common.save_json(args.json, payload)


if __name__ == "__main__":
    main()
