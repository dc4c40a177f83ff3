"""A temperature sweep as the BNN notebook runs it: what each `sample()` call costs a notebook
user who calls it again with a new temperature.

The model and the calls have the notebook's (`notebooks/bayesian_neural_net.ipynb`) structure:
a Flax NNX MLP 64 → 100 (tanh) → 10 on 1,198 examples of 64 features (synthetic data of the
digits set's shapes), `make_log_posterior(..., form="mean", temperature=T)` built anew for every
temperature, `transform=lambda k: sghmc_jax.sghmc(LR, alpha=ALPHA, temperature=log_post.temperature,
key=k)` (a new lambda every call), on-device data with minibatches of 64, 4 chains and a
predictive mean on two input sets. Each call runs `--steps` steps (burn-in a third, thin 10).

Each repeat is a fresh Python process (a new notebook kernel) that runs the 4 temperatures in
turn; the table shows, per call of the sweep, the median over repeats (min–max) of the call's
total time and of its `compile_time` (tracing and compiling), and the sampling time
(`wall_time`) as the floor the other two are measured against.

    python benchmarks/sweep.py              # 3 repeats of 300 steps per call
    python benchmarks/sweep.py --quick      # 1 repeat
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
import sghmc_jax

STEPS = int(sys.argv[1])
TEMPERATURES = [0.01, 0.1, 0.3, 1.0]
LR, ALPHA, BATCH, CHAINS = 0.2, 1.0, 64, 4
rng = np.random.default_rng(0)
N = 1198
x = rng.uniform(0, 1, size=(N, 64)).astype(np.float32)
y = rng.integers(0, 10, size=N).astype(np.int32)
x_test = rng.uniform(0, 1, size=(599, 64)).astype(np.float32)


class MLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(64, 100, rngs=rngs)
        self.out = nnx.Linear(100, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


graphdef, init_params = nnx.split(MLP(nnx.Rngs(0)), nnx.Param)


def log_likelihood(params, batch):
    logits = nnx.merge(graphdef, params)(batch["x"])
    return jnp.take_along_axis(jax.nn.log_softmax(logits), batch["y"][:, None], axis=1)[:, 0]


def log_prior(params):
    return -0.5 * sum(jnp.sum(w**2) for w in jax.tree.leaves(params))


def predict(params, inputs):
    model = nnx.merge(graphdef, params)
    return {name: jax.nn.softmax(model(v)) for name, v in inputs.items()}


train_data = {"x": x, "y": y}
pred_inputs = {"test": jnp.asarray(x_test), "ood": jnp.asarray(x_test[:, ::-1])}
calls = []
for i, T in enumerate(TEMPERATURES):
    t0 = time.perf_counter()
    log_post = sghmc_jax.make_log_posterior(log_likelihood, log_prior, num_data=N, form="mean", temperature=T)
    result = sghmc_jax.sample(
        jax.random.key(100 + i), log_post, init_params,
        transform=lambda k: sghmc_jax.sghmc(LR, alpha=ALPHA, temperature=log_post.temperature, key=k),
        num_steps=STEPS, num_chains=CHAINS, data=train_data, batch_size=BATCH, burn_in=STEPS // 3,
        thin=10, predict_fn=predict, predict_inputs=pred_inputs, chunk_size=5_000, progress=False,
    )
    jax.block_until_ready(result.samples)
    total = time.perf_counter() - t0
    calls.append({"T": T, "total_s": total, "compile_s": result.compile_time, "wall_s": result.wall_time})
print(json.dumps({"calls": calls, "jax": jax.__version__, "sghmc_jax": sghmc_jax.__version__}))
"""


def _one(steps: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(steps)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}–{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--json", help="write the raw figures here")
    args = parser.parse_args()
    runs = [_one(args.steps) for _ in range(1 if args.quick else args.repeats)]
    versions = f"jax {runs[0]['jax']}, sghmc_jax {runs[0]['sghmc_jax']}"
    print(f"{versions}, {len(runs)} fresh processes, {args.steps} steps per call")
    print("| call | T | total | compile | sampling (floor) |")
    print("| --- | --- | --- | --- | --- |")
    for i, call in enumerate(runs[0]["calls"]):
        column = [r["calls"][i] for r in runs]
        cells = [_cell([c[k] for c in column]) for k in ("total_s", "compile_s", "wall_s")]
        print(f"| {i + 1} | {call['T']} | " + " | ".join(cells) + " |")
    sweep = [sum(c["total_s"] for c in r["calls"]) for r in runs]
    compiled = [sum(c["compile_s"] for c in r["calls"]) for r in runs]
    print(f"| sweep | all 4 | {_cell(sweep)} | {_cell(compiled)} | |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()
