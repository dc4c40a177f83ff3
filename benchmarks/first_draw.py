"""Time to first draw: what a notebook user waits for, on `sample()`'s first call, on a second
call and on a continuation, and on `summary()`.

Each measurement runs in a fresh Python process (as a new notebook kernel would), on a 7.5k-
parameter MLP (64 → 100 → 10, softmax likelihood, minibatches of 100 from 10,000 examples, 4
chains, 2,000 steps, thin 10). The floors, measured in the same process:

- compilation: a hand-written `jax.jit` of a `lax.scan` of optax SGD with momentum over the same
  steps, vmapped over the same chains (its compile time, tracing included);
- `summary()`: ArviZ's `rhat`, `ess` (bulk and tail) and `mcse` on the same draws.

    python benchmarks/first_draw.py            # 3 fresh processes
    python benchmarks/first_draw.py --quick    # 1 process
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time, warnings
t_start = time.perf_counter()
import jax, jax.numpy as jnp, numpy as np, optax
import sghmc_jax
sys.path.insert(0, "benchmarks")
from sampler_overhead import mlp_problem

data, params, log_posterior = mlp_problem(n=10_000, d=64, hidden=100, classes=10, hidden_layers=1)
num_params = sum(x.size for x in jax.tree.leaves(params))
tx = lambda key: sghmc_jax.sghmc(0.01, alpha=1.0, key=key)
kw = dict(transform=tx, num_chains=4, data=data, batch_size=100, thin=10, progress=False)
out = {"num_params": int(num_params)}

t0 = time.perf_counter()
r = sghmc_jax.sample(0, log_posterior, params, num_steps=2000, **kw)
total = time.perf_counter() - t0
out["first_total_s"], out["first_compile_s"], out["first_wall_s"] = total, r.compile_time, r.wall_time
out["first_outside_compile_s"] = total - r.wall_time - r.compile_time

t0 = time.perf_counter()
r2 = sghmc_jax.sample(1, log_posterior, params, num_steps=1500, burn_in=300, **kw)
total = time.perf_counter() - t0
out["second_fixed_s"], out["second_compile_s"] = total - r2.wall_time, r2.compile_time

t0 = time.perf_counter()
r3 = sghmc_jax.sample(0, log_posterior, None, num_steps=1000, init_state=r.final_state, **kw)
total = time.perf_counter() - t0
out["continuation_fixed_s"], out["continuation_compile_s"] = total - r3.wall_time, r3.compile_time
out["continuation_wall_s"] = r3.wall_time

# Floor: optax SGD-momentum in one jitted scan over the same steps and chains.
sgd = optax.sgd(1e-4, momentum=0.99)
xs, ys = jnp.asarray(data["x"]), jnp.asarray(data["y"])
def chain(params, key):
    state = sgd.init(params)
    def step(carry, t):
        params, state = carry
        idx = jax.random.randint(jax.random.fold_in(key, t), (100,), 0, xs.shape[0])
        grads = jax.grad(lambda p: -log_posterior(p, {"x": xs[idx], "y": ys[idx]})[0])(params)
        updates, state = sgd.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None
    (params, _), _ = jax.lax.scan(step, (params, state), jnp.arange(2000))
    return params
stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (4, *x.shape)), params)
t0 = time.perf_counter()
jax.jit(jax.vmap(chain)).lower(stacked, jax.random.split(jax.random.key(0), 4)).compile()
out["floor_compile_s"] = time.perf_counter() - t0

samples = r.samples
t0 = time.perf_counter(); sghmc_jax.diagnostics.summary(samples); out["summary_s"] = time.perf_counter() - t0
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import arviz as az
    idata = az.from_dict(posterior={f"p{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(samples))})
    t0 = time.perf_counter()
    az.rhat(idata); az.ess(idata, method="bulk"); az.ess(idata, method="tail"); az.mcse(idata)
    out["arviz_s"] = time.perf_counter() - t0
out["draws"] = int(len(r.sample_steps))
print("RESULT " + json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs = []
    for _ in range(1 if args.quick else 3):
        proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
        line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
        runs.append(json.loads(line[len("RESULT "):]))
    keys = [k for k in runs[0] if k not in ("num_params", "draws")]
    print(f"{runs[0]['num_params']}-parameter MLP, 4 chains, {runs[0]['draws']} draws; "
          f"medians of {len(runs)} fresh processes (min–max)")
    for k in keys:
        values = [r[k] for r in runs]
        print(f"  {k:28s} {statistics.median(values):8.3f}  ({min(values):.3f}–{max(values):.3f})")
    med = {k: statistics.median(r[k] for r in runs) for k in keys}
    print(f"  first-call compile / optax floor compile: {med['first_compile_s'] / med['floor_compile_s']:.2f}x")
    print(f"  summary() / ArviZ rhat+ess+mcse:          {med['summary_s'] / med['arviz_s']:.2f}x")


if __name__ == "__main__":
    main()
