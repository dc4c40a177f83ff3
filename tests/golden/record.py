"""Golden outputs: a few hundred steps of every sampler through both faces, from fixed keys, in
float32 and float64, and short `sample()` runs. `tests/test_golden.py` checks them bit for bit,
so that a refactoring that changes any number is caught.

Run `python tests/golden/record.py` to (re)write `tests/golden/golden.npz`; only do that when a
change of the numbers is intended, and say why in the commit.
"""

from __future__ import annotations

import functools
import pathlib
import platform

import jax
import jax.numpy as jnp
import numpy as np
import optax

import sghmc_jax
from sghmc_jax import sgmcmc

PATH = pathlib.Path(__file__).with_name("golden.npz")
NUM_STEPS = 200
RECORD_EVERY = 10

# Each sampler: its optax face, its functional module, and hyperparameters in both spellings.
SAMPLERS = {
    "sghmc": (
        lambda key: sghmc_jax.sghmc(0.01, alpha=0.5, beta=0.1, sigma=0.8, temperature=0.7, key=key),
        lambda lp: sgmcmc.sghmc.build(lp, lr=0.01, alpha=0.5, beta=0.1, sigma=0.8, temperature=0.7),
        ("momenta",),
    ),
    "sgld": (
        lambda key: sghmc_jax.sgld(1e-3, beta=0.2, temperature=0.9, key=key),
        lambda lp: sgmcmc.sgld.build(lp, lr=1e-3, beta=0.2, temperature=0.9),
        (),
    ),
    "sgnht": (
        lambda key: sghmc_jax.sgnht(
            0.01, alpha=0.5, beta=0.05, sigma=1.2, temperature=0.8, xi=0.3, key=key
        ),
        lambda lp: sgmcmc.sgnht.build(
            lp, lr=0.01, alpha=0.5, beta=0.05, sigma=1.2, temperature=0.8, xi=0.3
        ),
        ("momenta", "xi"),
    ),
    "baoa": (
        lambda key: sghmc_jax.baoa(0.02, alpha=1.0, sigma=0.9, temperature=0.6, key=key),
        lambda lp: sgmcmc.baoa.build(lp, lr=0.02, alpha=1.0, sigma=0.9, temperature=0.6),
        ("momenta",),
    ),
    "psgld": (
        lambda key: sghmc_jax.psgld(
            1e-3, decay=0.95, eps=1e-3, temperature=0.5, initial_scale=0.5, key=key
        ),
        lambda lp: sgmcmc.psgld.build(
            lp, lr=1e-3, decay=0.95, eps=1e-3, temperature=0.5, initial_scale=0.5
        ),
        ("v",),
    ),
    "psghmc": (
        lambda key: sghmc_jax.psghmc(
            0.01, alpha=0.5, sigma=1.0, temperature=0.7, decay=0.9, eps=1e-3, initial_scale=1.0,
            key=key,
        ),
        lambda lp: sgmcmc.psghmc.build(
            lp, lr=0.01, alpha=0.5, sigma=1.0, temperature=0.7, decay=0.9, eps=1e-3,
            initial_scale=1.0,
        ),
        ("momenta", "v"),
    ),
}


def problem(dtype):
    """A 3-output linear regression with a (4, 3) and a (3,) leaf, and a fixed batch order."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 4))
    y = x @ rng.normal(size=(4, 3)) + 0.3 + rng.normal(size=(96, 3))
    data = (jnp.asarray(x, dtype), jnp.asarray(y, dtype))
    order = rng.integers(0, 96, size=(NUM_STEPS, 16))

    def log_posterior(params, batch):
        xb, yb = batch
        resid = yb - xb @ params["w"] - params["b"]
        value = -0.5 * 6.0 * jnp.sum(resid**2) - 0.5 * jnp.sum(params["w"] ** 2)
        return value, {"mse": jnp.mean(resid**2)}

    params = {"w": jnp.full((4, 3), 0.1, dtype), "b": jnp.zeros(3, dtype)}
    batches = [(data[0][i], data[1][i]) for i in order]
    return log_posterior, params, batches


def _neg(log_posterior, params, batch):
    value, aux = log_posterior(params, batch)
    return -value, aux


def run_optax(name, dtype, per_step_keys):
    make_tx, _, fields = SAMPLERS[name]
    log_posterior, params, batches = problem(dtype)
    tx = make_tx(jax.random.key(11))
    keys = jax.random.split(jax.random.key(12), NUM_STEPS)

    @jax.jit
    def step(params, state, batch, key):
        (_, _), grads = jax.value_and_grad(functools.partial(_neg, log_posterior), has_aux=True)(
            params, batch
        )
        if per_step_keys:
            updates, state = tx.update(grads, state, params, key=key)
        else:
            updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    out = {}
    for t in range(NUM_STEPS):
        params, state = step(params, state, batches[t], keys[t])
        if (t + 1) % RECORD_EVERY == 0:
            out[f"params@{t + 1}"] = params
    out["state"] = {f: getattr(state, f) for f in fields}
    return out


def run_functional(name, dtype):
    _, build, fields = SAMPLERS[name]
    log_posterior, params, batches = problem(dtype)
    transform = build(log_posterior)
    keys = jax.random.split(jax.random.key(12), NUM_STEPS)
    state = transform.init(params, batch=batches[0], key=jax.random.key(13))
    out = {}
    for t in range(NUM_STEPS):
        state = transform.update(state, batches[t], key=keys[t])
        if (t + 1) % RECORD_EVERY == 0:
            out[f"params@{t + 1}"] = state.params
            out[f"log_posterior@{t + 1}"] = state.log_posterior
    out["state"] = {f: getattr(state, f) for f in fields}
    out["aux"] = state.aux
    return out


def run_sample(name):
    make_tx, _, _ = SAMPLERS[name]
    log_posterior, params, _ = problem(jnp.float32)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(96, 4)).astype(np.float32)
    data = (x, (x @ np.ones((4, 3)) + rng.normal(size=(96, 3))).astype(np.float32))
    result = sghmc_jax.sample(
        jax.random.key(21), log_posterior, params, transform=make_tx, num_steps=150,
        num_chains=3, data=data, batch_size=16, burn_in=12, thin=3, chunk_size=40,
        progress=False,
    )
    return {
        "samples": result.samples,
        "log_posterior": result.log_posterior,
        "sample_steps": result.sample_steps,
        "final_params": result.final_state.params,
    }


def flat(tree, prefix):
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {prefix + jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves}


def compute() -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for dtype in ("float32", "float64"):
        with jax.enable_x64(dtype == "float64"):
            for name in SAMPLERS:
                arrays |= flat(run_optax(name, jnp.dtype(dtype), True), f"{name}/{dtype}/optax")
                arrays |= flat(run_functional(name, jnp.dtype(dtype)), f"{name}/{dtype}/functional")
            arrays |= flat(run_optax("sghmc", jnp.dtype(dtype), False), f"sghmc/{dtype}/optax_state_key")
            arrays |= flat(run_optax("sgld", jnp.dtype(dtype), False), f"sgld/{dtype}/optax_state_key")
    for name in ("sghmc", "baoa"):
        arrays |= flat(run_sample(name), f"{name}/sample")
    return arrays


def environment() -> dict[str, str]:
    """What the bits depend on besides our code: XLA's version, the backend and the CPU's vector
    extensions (XLA:CPU vectorises reductions, and contracts FMAs, for the host it runs on)."""
    import jaxlib

    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            words = set(f.read().split())
        flags = ",".join(sorted(w for w in ("avx2", "avx512f", "fma") if w in words))
    except OSError:
        pass
    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "backend": jax.default_backend(),
        "machine": platform.machine(),
        "cpu_flags": flags,
    }


if __name__ == "__main__":
    arrays = compute()
    env = environment()
    np.savez_compressed(PATH, **arrays, **{f"env:{k}": np.asarray(v) for k, v in env.items()})
    print(f"wrote {len(arrays)} arrays to {PATH} ({env})")
