"""Per-step cost of replica exchange: a ladder of R rungs against R times the chains without swaps.

A ladder of R rungs runs R replicas per chain, so `sample(..., num_chains=C, temperatures=R)`
evaluates C·R gradients per step, as `sample(..., num_chains=C·R)` does: the latter (same
transform, steps, minibatches and thinning, no ladder) is the floor. What the ladder adds: each
replica's sampler run at its own temperature T·τ (a per-replica temperature array in place of
the run's scalar), the carry of a replica's momenta to its new temperature when a swap changes
its rung (momenta times √(τ_new/τ_old), a select per step), the swap round (a sort of the
rungs, a Metropolis test per pair) and the gather of rung 0's draws, plus, with `data=`, the
minibatch energies' variance (a forward pass per example of each replica's batch, at swap
steps). Issue 22's target:
the ladder's per-step cost ≤ 1.1 × the floor's.

Problems: a logistic regression with the full data in every gradient (exact energies, no
`data=`), the same with minibatches (`data=`, batch 100), and the 2-D mixture of 25 Gaussians
of `notebooks/replica_exchange.ipynb` (`data=`, batch 1), where the gradient costs almost nothing
and the sampler's own per-step work shows (its noise pool is 20,000 vectors and its runs 10 times
as long, so that each chain's one permutation of the pool per epoch, ~0.5 µs per vector, does
not swamp the steps). The ladder swaps every step (`swap_every=1`, the
most it can cost) and, with `data=`, also every 10 steps. Times are `SampleResult.wall_time`
(sampling; compilation excluded: every candidate runs once before the timed repeats, so later
calls reuse its compiled chunks). Repeats are interleaved (floor, ladder, ..., floor, ladder,
...); the table shows medians (min–max) and the median over repeats of the ratio ladder / floor
within the same repeat.

    python benchmarks/replica_cost.py            # 7 repeats, 2,000 steps (20,000 on the mixture)
    python benchmarks/replica_cost.py --quick    # 3 repeats, 500 steps (5,000)
"""

from __future__ import annotations

import argparse
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from _common import environment

import sghmc_jax

CHAINS, RUNGS = 4, 4


def logistic(n: int, d: int = 50, seed: int = 0):
    """(data, init, log_posterior(params, batch)) with the data-size scaling of a minibatch."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=d).astype(np.float32) / np.sqrt(d)
    y = (rng.random(n) < 1 / (1 + np.exp(-x @ w))).astype(np.float32)

    def log_posterior(w, batch):
        logits = batch["x"] @ w
        ll = jnp.sum(batch["y"] * logits - jnp.logaddexp(0.0, logits))
        return n / batch["y"].shape[0] * ll - 0.5 * jnp.sum(w**2), None

    return {"x": x, "y": y}, jnp.zeros(d), log_posterior


def mixture25():
    """The notebook's 25-Gaussian mixture: exact energies, N(0, I) gradient noise as batch-1 data."""
    centers = jnp.asarray([(2.0 * i, 2.0 * j) for i in range(-2, 3) for j in range(-2, 3)])

    def log_posterior(theta, batch):
        logp = jax.nn.logsumexp(-jnp.sum((theta - centers) ** 2, axis=-1) / 0.06)
        noise = jnp.dot(theta, batch["z"][0])
        return logp + noise - jax.lax.stop_gradient(noise), None

    pool = np.random.default_rng(0).normal(size=(20_000, 2)).astype(np.float32)
    return {"z": pool - pool.mean(0)}, jnp.zeros(2), log_posterior


def problems() -> dict[str, tuple]:
    """name: (log_posterior, init, extra sample() arguments, swap_every values, steps multiplier)."""
    full_data, full_init, full_lp = logistic(10_000)
    full = jax.tree.map(jnp.asarray, full_data)
    mb_data, mb_init, mb_lp = logistic(100_000)
    mix_data, mix_init, mix_lp = mixture25()
    return {
        "logistic 10k × 50, full data": (lambda w, _: full_lp(w, full), full_init, {}, (1,), 1),
        "logistic 100k × 50, data=, batch 100": (mb_lp, mb_init, dict(data=mb_data, batch_size=100), (1, 10), 1),
        "25 Gaussians (2-D), data=, batch 1": (mix_lp, mix_init, dict(data=mix_data, batch_size=1), (1, 10), 10),
    }


def transform(key):
    return sghmc_jax.sghmc(1e-3, alpha=1.0, key=key)


def measure(name: str, problem: tuple, steps: int, repeats: int) -> None:
    log_posterior, init, extra, swap_everies, multiplier = problem
    steps *= multiplier
    kw = dict(transform=transform, num_steps=steps, thin=10, progress=False, **extra)
    calls = {f"{CHAINS * RUNGS} chains, no ladder (floor)": dict(num_chains=CHAINS * RUNGS)}
    for k in swap_everies:
        calls[f"{CHAINS} chains × {RUNGS} rungs, swap_every={k}"] = dict(
            num_chains=CHAINS, temperatures=RUNGS, swap_every=k
        )
    times: dict[str, list[float]] = {c: [] for c in calls}
    for args in calls.values():  # warm-up: compiles every candidate once
        sghmc_jax.sample(0, log_posterior, init, **kw, **args)
    for rep in range(repeats):
        for c, args in calls.items():
            times[c].append(sghmc_jax.sample(rep + 1, log_posterior, init, **kw, **args).wall_time)
    floor = next(iter(calls))
    print(f"\n{name}: {steps} steps, {CHAINS * RUNGS} gradients per step, {repeats} interleaved repeats")
    print(f"{'candidate':<34} {'median':>9} {'min–max':>17} {'ratio':>6}")
    for c, t in times.items():
        ratio = statistics.median(a / b for a, b in zip(t, times[floor], strict=True))
        spread = f"{min(t) * 1e3:.0f}–{max(t) * 1e3:.0f} ms"
        print(f"{c:<34} {statistics.median(t) * 1e3:6.0f} ms {spread:>17} {ratio:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats of 500 steps")
    args = parser.parse_args()
    steps, repeats = (500, 3) if args.quick else (2000, 7)
    env = environment()
    print(" ".join(f"{k}={v}" for k, v in env.items() if k in ("date", "cpu", "cpu_count", "jax", "optax", "python")))
    print(f"sghmc_jax {sghmc_jax.__version__}, load average at start {env['load_average']}")
    for name, problem in problems().items():
        measure(name, problem, steps, repeats)
    print(f"\nload average at end {environment()['load_average']}")


if __name__ == "__main__":
    main()
