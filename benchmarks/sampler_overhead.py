"""Overhead of `sghmc_jax.sample` over a hand-written `lax.scan` of the same transform (the floor).

Both run the same chains, steps, minibatches (a fresh permutation per chain per epoch), thinning
and the same SGHMC transform; the floor is one compiled scan over all steps written the way a user
would (outer scan over epochs, inner over batches), `sample` runs in chunks with samples moved to
the host between chunks and the progress display ON. Compilation is excluded from both (the
sampler reports it apart). Interleaved repeats; medians, min and max; ratio = sample / floor.

    python benchmarks/sampler_overhead.py            # both problems, 5 repeats
    python benchmarks/sampler_overhead.py --quick    # fewer steps and repeats
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import sghmc_jax


def logistic_problem(n: int = 100_000, d: int = 100, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=d).astype(np.float32) / np.sqrt(d)
    y = (rng.random(n) < 1 / (1 + np.exp(-x @ w))).astype(np.float32)
    params = jnp.zeros(d)

    def log_posterior(w, batch):
        logits = batch["x"] @ w
        ll = jnp.sum(batch["y"] * logits - jnp.logaddexp(0.0, logits))
        return n / batch["y"].shape[0] * ll - 0.5 * jnp.sum(w**2), None

    return {"x": x, "y": y}, params, log_posterior


def mlp_problem(
    n: int = 10_000, d: int = 64, hidden: int = 100, classes: int = 10, seed: int = 0, hidden_layers: int = 2
):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.integers(0, classes, size=n).astype(np.int32)
    sizes = [d, *([hidden] * hidden_layers), classes]
    keys = jax.random.split(jax.random.key(seed), len(sizes) - 1)
    params = [
        {"w": jax.random.normal(k, (a, b)) / np.sqrt(a), "b": jnp.zeros(b)}
        for k, a, b in zip(keys, sizes[:-1], sizes[1:])
    ]

    def log_posterior(params, batch):
        h = batch["x"]
        for layer in params[:-1]:
            h = jax.nn.relu(h @ layer["w"] + layer["b"])
        logits = h @ params[-1]["w"] + params[-1]["b"]
        ll = jnp.sum(jax.nn.log_softmax(logits)[jnp.arange(logits.shape[0]), batch["y"]])
        prior = sum(jnp.sum(p**2) for p in jax.tree.leaves(params))
        return n / batch["y"].shape[0] * ll - 0.5 * prior, None

    return {"x": x, "y": y}, params, log_posterior


def floor_runner(log_posterior, tx, data, params, *, num_chains, num_steps, batch_size, thin, key):
    """The hand-written scan: what `sample` replaces."""
    n = next(iter(jax.tree.leaves(data))).shape[0]
    per_epoch = n // batch_size
    epochs = num_steps // per_epoch
    data = jax.tree.map(jnp.asarray, data)

    def chain(chain_key, params):
        _, noise_key, data_key = jax.random.split(chain_key, 3)
        state = tx.init(params)

        def epoch(carry, e):
            perm = jax.random.permutation(jax.random.fold_in(data_key, e), n)

            def step(carry, j):
                params, state = carry
                idx = jax.lax.dynamic_slice_in_dim(perm, j * batch_size, batch_size)
                batch = jax.tree.map(lambda x: x[idx], data)
                grads = jax.grad(lambda p: -log_posterior(p, batch)[0])(params)
                t = e * per_epoch + j
                updates, state = tx.update(grads, state, params, key=jax.random.fold_in(noise_key, t))
                return (optax.apply_updates(params, updates), state), None

            def thinned(carry, js):
                carry, _ = jax.lax.scan(step, carry, js)
                return carry, carry[0]

            carry, draws = jax.lax.scan(thinned, carry, jnp.arange(per_epoch).reshape(-1, thin))
            return carry, draws

        _, draws = jax.lax.scan(epoch, (params, state), jnp.arange(epochs))
        return draws

    run = jax.jit(jax.vmap(chain, in_axes=(0, None)))
    keys = jax.random.split(key, num_chains)
    compiled = run.lower(keys, params).compile()
    return lambda: jax.block_until_ready(compiled(keys, params))


def bench(name, problem, *, num_chains, num_steps, batch_size, thin, repeats, lr, alpha):
    data, params, log_posterior = problem
    tx = sghmc_jax.sghmc(lr, alpha=alpha, key=0)
    key = jax.random.key(1)
    floor = floor_runner(
        log_posterior, tx, data, params, num_chains=num_chains, num_steps=num_steps,
        batch_size=batch_size, thin=thin, key=key,
    )
    floor()  # warm-up
    device_data = jax.tree.map(jnp.asarray, data)

    def run_sample():
        err = io.StringIO()
        with contextlib.redirect_stderr(err):  # progress ON, printed to a buffer
            r = sghmc_jax.sample(
                key, log_posterior, params, transform=tx, num_steps=num_steps, num_chains=num_chains,
                data=device_data, batch_size=batch_size, thin=thin, chunk_size=1000, progress=True,
            )
        return r

    r = run_sample()  # warm-up (and a sanity check)
    assert np.all(np.isfinite(np.asarray(jax.tree.leaves(r.samples)[0])))
    t_floor, t_sample, t_compile = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        floor()
        t_floor.append(time.perf_counter() - t0)
        r = run_sample()
        t_sample.append(r.wall_time)
        t_compile.append(r.compile_time)
    med_f, med_s = statistics.median(t_floor), statistics.median(t_sample)
    print(
        f"{name:<22} floor {med_f * 1e3:8.1f} ms [{min(t_floor) * 1e3:.1f}, {max(t_floor) * 1e3:.1f}]"
        f"  sample {med_s * 1e3:8.1f} ms [{min(t_sample) * 1e3:.1f}, {max(t_sample) * 1e3:.1f}]"
        f"  ratio {med_s / med_f:5.3f}  (sample's compile {statistics.median(t_compile):.2f} s)"
    )
    return med_s / med_f


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 3 if args.quick else 5
    steps = 1000 if args.quick else 4000
    print(
        f"sghmc_jax {sghmc_jax.__version__}, jax {jax.__version__}, optax {optax.__version__}, "
        f"device {jax.devices()[0].device_kind}, python {platform.python_version()}, "
        f"{platform.machine()}"
    )
    print(f"{repeats} interleaved repeats; 4 chains; {steps} steps; thin 10; times exclude compilation")
    bench("logistic 100k x 100", logistic_problem(), num_chains=4, num_steps=steps, batch_size=1000,
          thin=10, repeats=repeats, lr=1e-4, alpha=1.0)
    bench("MLP 64-100-100-10", mlp_problem(), num_chains=4, num_steps=steps, batch_size=125,
          thin=10, repeats=repeats, lr=1e-4, alpha=1.0)


if __name__ == "__main__":
    main()
