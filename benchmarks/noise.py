"""Where the time of Gaussian noise goes, and what the alternatives cost (10M float32 draws).

Two tables. "standalone": each generator alone, writing a fresh 10M array (what the issue
measured). "fused": each generator inside a donated SGHMC-like update m' = a·m + b·g + c·ξ,
p' = p + d·m', the way the library uses it; the floor is the same update without noise.

Generators: jax.random.normal with each key implementation (threefry partitionable and not,
rbg, unsafe_rbg; threefry4x32 and philox where this JAX has them), jax.random.bits alone (the
bit-generation share), the erfinv transform alone on given uniforms (the transform share), and
this library's pieces: the inline threefry2x32 hash alone, hash + half Box-Muller (the shipped
generator), hash + erfinv, philox2x32-10 + half Box-Muller, and the transform without its log
(to show the log's share; not a valid generator).

    python benchmarks/noise.py            # a few minutes on 2 CPU cores
    python benchmarks/noise.py --quick
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

# Runnable from a plain checkout (no install): the repository root and this folder on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

import _common  # noqa: E402
from sghmc_jax import _noise  # noqa: E402

N = 10_000_000
U32 = jnp.uint32


def _counters(n: int) -> tuple[jax.Array, jax.Array]:
    return jnp.zeros((n,), U32), lax.iota(U32, n)


def _philox2x32(k: jax.Array, x0: jax.Array, x1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Philox2x32-10 (Salmon et al. 2011), for comparison only."""
    m = U32(0xD256D193)
    for r in range(10):
        if r:
            k = k + U32(0x9E3779B9)
        lo = m * x0
        hi = lax.mulhi(jnp.broadcast_to(m, x0.shape), x0) if hasattr(lax, "mulhi") else (x0 >> U32(16)) * U32(0)
        x0, x1 = hi ^ x1 ^ k, lo
    return x0, x1


def _erfinv_from_bits(b0: jax.Array) -> jax.Array:
    """jax.random.normal's transform: 23 mantissa bits -> U(-1, 1) -> sqrt(2)·erfinv."""
    f = lax.bitcast_convert_type((b0 >> U32(9)) | U32(0x3F800000), jnp.float32) - 1.0
    u = jnp.maximum(f * 2.0 - 1.0, np.nextafter(np.float32(-1), np.float32(0)))
    return jnp.float32(np.sqrt(2)) * lax.erf_inv(u)


def _no_log(b0: jax.Array, b1: jax.Array) -> jax.Array:
    """The shipped transform with sqrt(−2 ln U) replaced by sqrt(U): timing only."""
    f = jnp.float32
    radius = jnp.sqrt((b0.astype(f) + f(0.5)) * f(2.0**-32))
    v = (b1 & U32(0x7FFFFFFF)).astype(f) * f(2.0**-31)
    w = v * v
    cos = jnp.full_like(w, _noise._COS_HALF_PI[-1])
    for c in _noise._COS_HALF_PI[-2::-1]:
        cos = cos * w + f(c)
    x = radius * cos
    return jnp.where(b1 >= U32(0x80000000), -x, x)


def generators() -> dict[str, Callable[[jax.Array, int], jax.Array]]:
    def words(key: jax.Array) -> tuple[jax.Array, jax.Array]:
        return _noise.key_words(key)

    gens: dict[str, Callable[[jax.Array, int], jax.Array]] = {
        "jax.random.normal (threefry, partitionable)": lambda k, n: jax.random.normal(k, (n,)),
        "jax.random.bits (threefry, partitionable)": lambda k, n: jax.random.bits(k, (n,), jnp.uint32).astype(jnp.float32),
        "erfinv transform alone (given uniforms)": None,  # type: ignore[dict-item]
        "sghmc_jax: threefry2x32 hash alone": lambda k, n: _noise.threefry2x32(*words(k), *_counters(n))[0].astype(jnp.float32),
        "sghmc_jax: hash + half Box-Muller (shipped)": lambda k, n: _noise.normal_from_bits(
            *_noise.threefry2x32(*words(k), *_counters(n)), jnp.float32),
        "hash + erfinv (jax's transform)": lambda k, n: _erfinv_from_bits(_noise.threefry2x32(*words(k), *_counters(n))[0]),
        "hash + half Box-Muller without log (timing only)": lambda k, n: _no_log(*_noise.threefry2x32(*words(k), *_counters(n))),
    }
    if hasattr(lax, "mulhi"):
        gens["philox2x32-10 + half Box-Muller"] = lambda k, n: _noise.normal_from_bits(
            *_philox2x32(words(k)[0], *_counters(n)), jnp.float32)
    for impl in ("rbg", "unsafe_rbg", "threefry4x32", "philox4x32"):
        try:
            jax.random.key(0, impl=impl)
        except Exception:  # noqa: BLE001 - an implementation this JAX lacks is skipped
            continue
        gens[f"jax.random.normal ({impl})"] = (lambda impl: lambda k, n: jax.random.normal(
            jax.random.wrap_key_data(jax.random.bits(k, (len(jax.random.key_data(jax.random.key(0, impl=impl))),), jnp.uint32), impl=impl),
            (n,)))(impl)
    return gens


def standalone(quick: bool, env: dict) -> list[_common.Result]:
    key = jax.random.key(0)
    cands = []
    for name, gen in generators().items():
        if gen is None:
            u = jax.random.uniform(key, (N,), jnp.float32, np.nextafter(np.float32(-1), np.float32(0)), 1.0)
            f = jax.jit(lambda u: jnp.float32(np.sqrt(2)) * lax.erf_inv(u))
            compiled, seconds = _common.compile_seconds(f, u)
            cands.append(_common.Candidate(name, (lambda c, u: lambda: c(u).block_until_ready())(compiled, u), compile_s=seconds))
            continue
        f = jax.jit(lambda k, gen=gen: gen(k, N))
        compiled, seconds = _common.compile_seconds(f, key)
        cands.append(_common.Candidate(name, (lambda c: lambda: c(key).block_until_ready())(compiled), compile_s=seconds))
    copy = jax.jit(lambda x: x * 2.0)
    x = jnp.ones(N)
    cands.insert(0, _common.Candidate("floor: x*2 into a fresh 10M array", lambda: copy(x).block_until_ready()))
    res = _common.interleaved(cands, repeats=5 if quick else 11, floor=cands[0].name)
    _common.print_table("standalone: 10M float32 draws into a fresh array", res, env)
    return res


def fused(quick: bool, env: dict) -> list[_common.Result]:
    key = jax.random.key(0)
    cands = []

    def make(gen: Callable[[jax.Array, int], jax.Array] | None) -> Any:
        def update(p: jax.Array, m: jax.Array, g: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
            xi = 0.0 if gen is None else gen(k, N)
            m = 0.99 * m - 0.01 * g + 0.1 * xi
            return p + 0.01 * m, m

        return jax.jit(update, donate_argnums=(0, 1))

    gens = {"floor: the same update without noise": None, **{k: v for k, v in generators().items() if v is not None}}
    g = jnp.ones(N)
    for name, gen in gens.items():
        f = make(gen)
        state = [jnp.zeros(N), jnp.zeros(N)]
        compiled, seconds = _common.compile_seconds(f, *state, g, key)

        def run(c: Any = compiled, state: list = state) -> None:
            state[0], state[1] = c(state[0], state[1], g, key)
            jax.block_until_ready(state)

        cands.append(_common.Candidate(name, run, compile_s=seconds, note="donated"))
    res = _common.interleaved(cands, repeats=5 if quick else 11, floor=cands[0].name)
    _common.print_table("fused into a donated 10M update (ratio to the update without noise)", res, env)
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    env = _common.environment()
    payload = {"env": env, "standalone": [r.as_dict() for r in standalone(args.quick, env)],
               "fused": [r.as_dict() for r in fused(args.quick, env)]}
    _common.save_json(args.json, payload)


if __name__ == "__main__":
    main()
