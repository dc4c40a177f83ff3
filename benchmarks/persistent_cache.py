"""What JAX's persistent compilation cache gives a notebook user on a kernel restart.

A restarted kernel is a fresh Python process: `sample()`'s in-memory program cache is gone, and
its first call traces and compiles again. JAX's persistent cache keeps XLA's compiled programs
on disk between processes; this script measures the first `sample()` call of a fresh process
three times on the same program (the 7.5k-parameter MLP of `first_draw.py`: 64 → 100 → 10,
minibatches of 100 from 10,000 examples, 4 chains, 2,000 steps):

- without the persistent cache (the floor, measured in this run);
- with it, empty (the first process after turning it on writes the programs);
- with it, filled by the previous process (a kernel restart).

    python benchmarks/persistent_cache.py            # 3 rounds, medians
    python benchmarks/persistent_cache.py --quick    # 1 round
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
import jax
cache = sys.argv[1]
if cache != "none":
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
import sghmc_jax
sys.path.insert(0, "benchmarks")
from sampler_overhead import mlp_problem

data, params, log_posterior = mlp_problem(n=10_000, d=64, hidden=100, classes=10, hidden_layers=1)
tx = lambda key: sghmc_jax.sghmc(0.01, alpha=1.0, key=key)
t0 = time.perf_counter()
r = sghmc_jax.sample(0, log_posterior, params, transform=tx, num_steps=2000, num_chains=4, data=data,
                     batch_size=100, thin=10, progress=False)
print("RESULT " + json.dumps({"first_call": time.perf_counter() - t0, "compile": r.compile_time}))
"""


def child(cache: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, cache], capture_output=True, text=True, check=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round instead of three")
    args = parser.parse_args()
    rounds = 1 if args.quick else 3
    runs: dict[str, list[dict]] = {"no cache": [], "empty cache": [], "filled cache": []}
    for _ in range(rounds):
        directory = tempfile.mkdtemp(prefix="sghmc-jax-cache-")
        try:
            runs["no cache"].append(child("none"))
            runs["empty cache"].append(child(directory))
            runs["filled cache"].append(child(directory))
        finally:
            shutil.rmtree(directory)
    floor = statistics.median(r["first_call"] for r in runs["no cache"])
    print(f"{'fresh process':<14} {'first call s':>12} {'of which compile s':>19} {'ratio to no cache':>18}")
    for name, results in runs.items():
        first = statistics.median(r["first_call"] for r in results)
        compile_ = statistics.median(r["compile"] for r in results)
        print(f"{name:<14} {first:12.2f} {compile_:19.2f} {first / floor:18.2f}")


if __name__ == "__main__":
    main()
