"""Compile time of a whole training step (gradient + update + apply) on a 200-leaf model.

The model is a 100-layer tanh MLP, 64 wide (100 weight matrices and 100 biases: 200 leaves,
416k parameters), on a batch of 32. The step `(params, state, x, y, key) -> (params, state)` is
jitted with params and state donated, and compiled from a fresh function each time (so no cache
is hit). The floor is optax SGD with momentum, compiled in the same run; candidates are every
sampler's optax face. Each compile is split into tracing (jaxpr), lowering (StableHLO) and XLA's
compilation; medians of interleaved repeats, ratios to the floor's total.

    python benchmarks/compile_time.py            # 7 repeats
    python benchmarks/compile_time.py --quick    # 3 repeats
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import _common  # noqa: E402
import sghmc_jax  # noqa: E402

DEPTH, WIDTH, BATCH = 100, 64, 32


def problem() -> tuple[list[dict[str, jax.Array]], jax.Array, jax.Array]:
    keys = jax.random.split(jax.random.key(0), DEPTH)
    params = [{"w": jax.random.normal(k, (WIDTH, WIDTH)) / WIDTH**0.5, "b": jnp.zeros(WIDTH)} for k in keys]
    x = jax.random.normal(jax.random.key(1), (BATCH, WIDTH))
    y = jax.random.normal(jax.random.key(2), (BATCH, WIDTH))
    return params, x, y


def loss(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    h = x
    for layer in params:
        h = jnp.tanh(h @ layer["w"] + layer["b"])
    return jnp.mean((h - y) ** 2)


CANDIDATES = {
    "optax sgd+momentum (floor)": lambda: optax.sgd(1e-6, momentum=0.9),
    "sghmc": lambda: sghmc_jax.sghmc(1e-3, key=0),
    "sgld": lambda: sghmc_jax.sgld(1e-3, key=0),
    "sgnht": lambda: sghmc_jax.sgnht(1e-3, key=0),
    "baoa": lambda: sghmc_jax.baoa(1e-3, key=0),
    "ubu": lambda: sghmc_jax.ubu(1e-3, key=0),
    "psgld": lambda: sghmc_jax.psgld(1e-3, initial_scale=1.0, key=0),
    "psghmc": lambda: sghmc_jax.psghmc(1e-3, initial_scale=1.0, key=0),
}


def compile_phases(name: str, params: Any, x: jax.Array, y: jax.Array) -> tuple[float, float, float]:
    """(trace, lower, XLA compile) seconds of a fresh training step for one candidate."""
    tx = CANDIDATES[name]()
    with_key = name != "optax sgd+momentum (floor)"

    def step(p, s, x, y, k):
        g = jax.grad(loss)(p, x, y)
        u, s = tx.update(g, s, p, key=k) if with_key else tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    state = tx.init(params)
    jitted = jax.jit(step, donate_argnums=(0, 1))
    t0 = time.perf_counter()
    traced = jitted.trace(params, state, x, y, jax.random.key(3))
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    lowered.compile()
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    params, x, y = problem()
    for name in CANDIDATES:  # warm JAX's own caches (jnp dispatch, the model's trace pieces)
        compile_phases(name, params, x, y)
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in CANDIDATES}
    for _ in range(3 if args.quick else 7):
        for name in CANDIDATES:
            runs[name].append(compile_phases(name, params, x, y))
    env = _common.environment()
    print(f"training-step compile, {DEPTH}-layer MLP ({2 * DEPTH} leaves); {env['date']}, {env['cpu']} \u00d7 {env['cpu_count']}, jax {env['jax']}, {env['device']}")
    print(f"medians of {len(runs[name])} interleaved fresh compiles; load {_common.load_average()}")
    floor = statistics.median(sum(r) for r in runs["optax sgd+momentum (floor)"])
    print(f"{'candidate':28s} {'trace':>7s} {'lower':>7s} {'XLA':>7s} {'total':>7s} {'ratio':>6s}")
    for name, rs in runs.items():
        trace, lower, xla = (statistics.median(r[i] for r in rs) for i in range(3))
        total = statistics.median(sum(r) for r in rs)
        print(f"{name:28s} {trace:7.2f} {lower:7.2f} {xla:7.2f} {total:7.2f} {total / floor:6.2f}")


if __name__ == "__main__":
    main()
