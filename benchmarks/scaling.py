"""Scaling: many chains on one device, chains across devices, data-parallel width, and the host
memory of runs streamed to disk.

Parts (`--parts`, all by default):

- `chains`: chain-steps/s of 1, 4, 16, 64 and 256 vmapped chains on one device, for a logistic
  regression (5k x 100, batch 100) and a small MLP (64-100-10, 7,510 params, 2,500 synthetic
  examples, batch 50). Floor: a jitted `lax.scan` of plain `optax.sgd`, vmapped over the same
  chains, with the same minibatches (a fresh permutation per chain per epoch) and the same
  `value_and_grad` of the same log posterior, keeping the same per-step trace. Candidates: the
  SGHMC transform in that same scan (the kernel's cost), and `sghmc_jax.sample` (the sampler's:
  chunks, divergence checks, draws moved to the host, thin 10). No compilation in the times
  (the scans are compiled ahead of time, `sample` is timed from its second call); repeats
  interleaved; the table shows time per chain-step and its ratio to the floor's at the same
  chain count, and the per-epoch permutation's share, timed apart.
- `devices`: `sample` with the chains split over 1, 2, 4, 8 devices (a 1-D mesh, `chain_axis`),
  16 chains per device of the small MLP, against the same chains on one device without a mesh
  in the same process (the floor); also whether the draws are bit-identical to the floor's.
- `data`: `sample` with each minibatch split over 1, 2, 4, 8 devices (`data_axis`), one chain
  of a 101k-param MLP (128-256-256-10) with a global batch of 1,024, against the same run on one
  device without a mesh.
- `rss`: peak host RSS of `sample` runs of a 101k-param MLP (128-256-256-10 on 1,024 examples,
  batch 8, 1 chain, thin 1, the default chunk of 1,000 steps) that stream their draws to a zarr
  store (`output=` a temporary directory), against in-memory runs, by number of draws (1k, 4k
  and 16k; 1k and 4k with `--quick`), and RSS after the first and the last chunk. In-memory
  runs that would need more than a quarter of the available memory are skipped.

`devices`, `data` and `rss` run each configuration in a fresh Python process;
`devices` and `data` with XLA_FLAGS=--xla_force_host_platform_device_count=8 added, so that a
CPU shows 8 devices. On a CPU those 8 devices share the machine's cores: their curves measure
the overhead (and correctness) of the partitioning, not a speed-up. On a machine with
accelerators the same script uses the accelerators (the flag only adds CPU devices) and skips
the widths it has no devices for.

    python benchmarks/scaling.py                       # everything
    python benchmarks/scaling.py --quick               # fewer steps, repeats and draws
    python benchmarks/scaling.py --parts chains,rss --json scaling.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
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
from sghmc_jax._sampler import cache  # noqa: E402
from sampler_overhead import logistic_problem, mlp_problem  # noqa: E402

CHAIN_COUNTS = (1, 4, 16, 64, 256)
DEVICE_COUNTS = (1, 2, 4, 8)
FORCED_DEVICES = 8
LR, ALPHA = 1e-4, 1.0  # stable for both problems (sum-form log posteriors, N = 10k)


def _sghmc(key: Any) -> optax.GradientTransformation:
    return sghmc_jax.sghmc(LR, alpha=ALPHA, key=key)


# ---- part 1: many chains on one device -------------------------------------------------------


def scan_runner(log_posterior, tx_for, data, params, *, num_chains: int, num_steps: int, batch_size: int):
    """A jitted `lax.scan` of `tx_for(chain_key)` over `num_steps`, vmapped over chains: each
    chain walks its own permutation of the data per epoch (the sampler's scheme) and the scan
    keeps the log posterior of every step (as the sampler does). Returns a function that runs
    it once and blocks."""
    n = next(iter(jax.tree.leaves(data))).shape[0]
    per_epoch = n // batch_size
    data = jax.tree.map(jnp.asarray, data)

    def chain(chain_key, params):
        init_key, noise_key, data_key = jax.random.split(chain_key, 3)
        tx = tx_for(init_key)

        def step(carry, t):
            params, state, perm = carry
            j = t % per_epoch
            epoch_key = jax.random.fold_in(data_key, t // per_epoch)
            perm = jax.lax.cond(
                j == 0, lambda: jax.random.permutation(epoch_key, n).astype(jnp.int32), lambda: perm
            )
            idx = jax.lax.dynamic_slice_in_dim(perm, j * batch_size, batch_size)
            batch = jax.tree.map(lambda x: x[idx], data)

            def neg_log_posterior(p):
                value, aux = log_posterior(p, batch)
                return -value, aux

            (value, _), grads = jax.value_and_grad(neg_log_posterior, has_aux=True)(params)
            updates, state = tx.update(grads, state, params, key=jax.random.fold_in(noise_key, t))
            return (optax.apply_updates(params, updates), state, perm), -value

        carry = (params, tx.init(params), jnp.zeros((n,), jnp.int32))
        (params, _, _), trace = jax.lax.scan(step, carry, jnp.arange(num_steps))
        return params, trace

    run = jax.jit(jax.vmap(chain, in_axes=(0, None)))
    keys = jax.random.split(jax.random.key(1), num_chains)
    compiled, compile_s = _common.compile_seconds(run, keys, params)
    return (lambda: jax.block_until_ready(compiled(keys, params))), compile_s


def _small_mlp():
    """The `chains` and `devices` parts' MLP: 64-100-10 (7,510 params), 2,500 synthetic examples."""
    return mlp_problem(n=2_500, d=64, hidden=100, classes=10, hidden_layers=1)


def _sgd_for(key: Any) -> optax.GradientTransformation:
    del key
    sgd = optax.sgd(LR**2)  # SGHMC's position step is ε²·gradient at T = 0 (σ = 1)
    # optax.sgd takes no key: accept and drop the per-step one, so the scan is the same.
    return optax.GradientTransformationExtraArgs(sgd.init, lambda g, s, p=None, **kw: sgd.update(g, s, p))


def chains_part(quick: bool, env: dict) -> list[dict]:
    problems = {
        "logistic 5k x 100, batch 100": (logistic_problem(n=5_000, d=100), 100),
        "MLP 64-100-10, batch 50": (_small_mlp(), 50),
    }
    repeats = 3 if quick else 5
    rows = []
    for name, ((data, params, log_posterior), batch_size) in problems.items():
        device_data = jax.tree.map(jnp.asarray, data)
        for num_chains in CHAIN_COUNTS:
            # Steps per timed call: enough for 1 chain to amortise a call's fixed costs, fewer
            # for many chains; whole epochs (50 steps), so that each candidate draws the same
            # number of permutations per step whatever the chain count.
            num_steps = max(50, (2000 if quick else 8000) // num_chains // 50 * 50)
            chunk = min(num_steps, 1000)
            floor, floor_c = scan_runner(
                log_posterior, _sgd_for, data, params, num_chains=num_chains, num_steps=num_steps,
                batch_size=batch_size,
            )
            kernel, kernel_c = scan_runner(
                log_posterior, _sghmc, data, params, num_chains=num_chains, num_steps=num_steps,
                batch_size=batch_size,
            )

            run_sample = _sample_runner(
                log_posterior, params, device_data, batch_size, num_chains=num_chains, num_steps=num_steps,
                chunk_size=chunk,
            )
            t0 = time.perf_counter()
            first = run_sample()
            sample_c = time.perf_counter() - t0 - first.wall_time
            assert int(np.sum(first.diverged_at >= 0)) == 0
            candidates = [
                _common.Candidate("floor: optax.sgd scan", floor, compile_s=floor_c),
                _common.Candidate("sghmc transform, same scan", kernel, compile_s=kernel_c),
                _common.Candidate("sghmc_jax.sample, thin 10", run_sample, compile_s=sample_c),
            ]
            # No warm-up: nothing left to compile (the scans were compiled ahead of time, and
            # sample()'s first call above compiled its programs).
            results = _common.interleaved(candidates, repeats, floor=candidates[0].name, warmup=0)
            chain_steps = num_chains * num_steps
            perm_s = _permutation_seconds(data, num_chains, repeats)
            for r in results:
                rows.append({
                    "problem": name, "chains": num_chains, "steps": num_steps, "candidate": r.name,
                    "median_s": r.median_s, "min_s": r.min_s, "max_s": r.max_s,
                    "per_chain_step_s": r.median_s / chain_steps,
                    "chain_steps_per_s": chain_steps / r.median_s,
                    "ratio": r.ratio, "compile_s": r.compile_s,
                    # every candidate draws a permutation of the data per chain per epoch
                    "permutation_per_chain_step_s": perm_s / num_chains / (_num_data(data) // batch_size),
                })
            print(f"  {name}, {num_chains} chains done ({_common.load_average()})", flush=True)
            del floor, kernel, first
            cache.clear_cache()  # drop this chain count's programs (and their buffers' memory)
            gc.collect()
    _print_chains(rows, env)
    return rows


def _sample_runner(log_posterior, params, data, batch_size: int, **kw: int):
    """`sghmc_jax.sample` of this part's SGHMC over `data` (on the device), thin 10."""

    def run():
        return sghmc_jax.sample(
            jax.random.key(1), log_posterior, params, transform=_sghmc, data=data,
            batch_size=batch_size, thin=10, progress=False, **kw,
        )

    return run


def _num_data(data: Any) -> int:
    return int(next(iter(jax.tree.leaves(data))).shape[0])


def _permutation_seconds(data: Any, num_chains: int, repeats: int) -> float:
    """Median time of one epoch's permutations of the data, one per chain (what every candidate
    draws once per epoch), jitted and vmapped as in the sampler."""
    n = _num_data(data)
    perm = jax.jit(jax.vmap(lambda k: jax.random.permutation(k, n).astype(jnp.int32)))
    keys = jax.random.split(jax.random.key(2), num_chains)
    jax.block_until_ready(perm(keys))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(perm(keys))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _print_chains(rows: list[dict], env: dict) -> None:
    print(f"\n## Many chains on one device ({env['device']}, jax {env['jax']}, {env['date']})")
    print("µs per chain-step (median of interleaved repeats); xR: ratio to the floor at the same chain "
          "count; (vs 1): that time relative to the same candidate's at 1 chain; sample/s: sample()'s "
          "chain-steps per second; perm.: µs per chain-step of the per-epoch permutation of the data "
          "(timed apart; every candidate draws it)")
    for problem in dict.fromkeys(r["problem"] for r in rows):
        sub = [r for r in rows if r["problem"] == problem]
        names = list(dict.fromkeys(r["candidate"] for r in sub))
        print(f"\n{problem}")
        head = (f"{'chains':>6s} {'steps':>5s} " + " ".join(f"{n[:27]:>27s}" for n in names)
                + f" {'sample/s':>9s} {'perm.':>6s}")
        print(head)
        print("-" * len(head))
        fewest = min(x["chains"] for x in sub)
        one = {r["candidate"]: r["per_chain_step_s"] for r in sub if r["chains"] == fewest}
        for c in dict.fromkeys(r["chains"] for r in sub):
            here = [next(x for x in sub if x["chains"] == c and x["candidate"] == n) for n in names]
            cells = [
                f"{_us(r['per_chain_step_s'])} x{r['ratio']:.2f} "
                f"({r['per_chain_step_s'] / one[r['candidate']]:.2f})"
                for r in here
            ]
            perm = _us(here[0]["permutation_per_chain_step_s"])
            print(f"{c:6d} {here[0]['steps']:5d} " + " ".join(f"{x:>27s}" for x in cells)
                  + f" {here[-1]['chain_steps_per_s']:9,.0f} {perm:>6s}")


def _us(s: float) -> str:
    return f"{s * 1e6:.1f}" if s < 1e-4 else f"{s * 1e6:.0f}"


# ---- parts 2 and 3: devices (in child processes) ---------------------------------------------


def _child_devices(cfg: dict) -> dict:
    """One width of the `devices` or `data` part, in this (fresh) process."""
    from jax.sharding import Mesh

    width = cfg["width"]
    if jax.device_count() < width:
        return {"skipped": f"{jax.device_count()} {jax.devices()[0].platform} device(s), {width} needed"}
    if cfg["part"] == "devices":
        data, params, log_posterior = _small_mlp()
        num_chains, batch_size, axes = cfg["chains_per_device"] * width, 50, dict(chain_axis="chains")
        mesh = Mesh(np.array(jax.devices()[:width]), ("chains",))
    else:
        data, params, log_posterior = mlp_problem(n=16_384, d=128, hidden=256, classes=10, hidden_layers=2)
        num_chains, batch_size, axes = 1, 1024, dict(data_axis="data")
        mesh = Mesh(np.array(jax.devices()[:width]), ("data",))
    num_steps = cfg["steps"]

    def run(**placement):
        return sghmc_jax.sample(
            jax.random.key(1), log_posterior, params, transform=_sghmc, num_steps=num_steps,
            num_chains=num_chains, data=data, batch_size=batch_size, thin=10,
            chunk_size=num_steps, progress=False, **placement,
        )

    first_floor, first_mesh = run(), run(mesh=mesh, **axes)  # compile both
    floor_c, mesh_c = first_floor.compile_time, first_mesh.compile_time
    times: dict[str, list[float]] = {"floor": [], "mesh": []}
    for _ in range(cfg["repeats"]):
        for name, kw in (("floor", {}), ("mesh", {"mesh": mesh, **axes})):
            t0 = time.perf_counter()
            r = run(**kw)
            times[name].append(time.perf_counter() - t0)
            assert int(np.sum(r.diverged_at >= 0)) == 0
    pairs = list(zip(jax.tree.leaves(first_floor.samples), jax.tree.leaves(first_mesh.samples)))
    same = all(np.array_equal(a, b) for a, b in pairs)
    err = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in pairs)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "width": width, "chains": num_chains, "steps": num_steps, "batch_size": batch_size,
        "floor_s": med["floor"], "mesh_s": med["mesh"],
        "floor_min_s": min(times["floor"]), "mesh_min_s": min(times["mesh"]),
        "ratio": med["mesh"] / med["floor"], "floor_compile_s": floor_c, "mesh_compile_s": mesh_c,
        "same_draws": same, "max_abs_diff": err, "platform": jax.devices()[0].platform,
        "device_kind": jax.devices()[0].device_kind,
    }


def _forced_env() -> dict[str, str]:
    flags = os.environ.get("XLA_FLAGS", "")
    return {"XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={FORCED_DEVICES}".strip()}


def _in_child(cfg: dict, env: dict[str, str] | None, timeout: float) -> dict:
    args = ["--child", json.dumps(cfg)]
    code, out = _common.run_python(sys.executable, os.path.abspath(__file__), args, timeout, env)
    lines = [x for x in out.splitlines() if x.startswith("RESULT ")]
    if code != 0 or not lines:
        return {"error": f"exit code {code}: {out[-2000:]}"}
    return json.loads(lines[-1][len("RESULT "):])


def devices_part(part: str, quick: bool, env: dict) -> list[dict]:
    rows = []
    for width in DEVICE_COUNTS:
        if part == "devices":
            cfg = {"part": part, "width": width, "chains_per_device": 16, "steps": 50 if quick else 200}
        else:
            cfg = {"part": part, "width": width, "steps": 20 if quick else 60}
        cfg["repeats"] = 3 if quick else 5
        out = _in_child(cfg, _forced_env(), timeout=900)
        rows.append({**cfg, **out})
        print(f"  {part}, width {width} done ({_common.load_average()})", flush=True)
    _print_devices(part, rows, env)
    return rows


def _print_devices(part: str, rows: list[dict], env: dict) -> None:
    if part == "devices":
        print(f"\n## Chains across devices: 16 chains per device, MLP 64-100-10, batch 50 ({env['date']})")
        print("floor: the same chains on one device, no mesh, in the same process")
    else:
        print(f"\n## Data-parallel width: 1 chain, MLP 128-256-256-10 (101k params), batch 1,024 "
              f"({env['date']})")
        print("floor: the same run on one device, no mesh, in the same process (other minibatches)")
    print("ratio: mesh / floor, of the medians and of the fastest repeats (less sensitive to a shared "
          "machine's load); chain-steps/s of the mesh run's median")
    head = (f"{'devices':>7s} {'chains':>6s} {'steps':>5s} {'floor':>9s} {'mesh':>9s} {'ratio':>6s} "
            f"{'of min':>6s} {'chain-steps/s':>13s} {'vs row 1':>8s} {'compile':>8s}  draws")
    print(head)
    print("-" * len(head))
    base = None
    for r in rows:
        if "skipped" in r or "error" in r:
            print(f"{r['width']:7d}  {r.get('skipped') or r['error'][-300:]}")
            continue
        rate = r["chains"] * r["steps"] / r["mesh_s"]
        base = base or rate
        same = "identical" if r["same_draws"] else f"differ by {r['max_abs_diff']:.2g}"
        if part == "data" and not r["same_draws"]:
            same = "other minibatches (shard-stratified)"
        print(f"{r['width']:7d} {r['chains']:6d} {r['steps']:5d} {r['floor_s'] * 1e3:7.0f}ms "
              f"{r['mesh_s'] * 1e3:7.0f}ms {r['ratio']:6.2f} {r['mesh_min_s'] / r['floor_min_s']:6.2f} "
              f"{rate:13,.0f} {rate / base:8.2f} {r['mesh_compile_s']:7.2f}s  {same}")


# ---- part 4: host memory of streamed runs (in child processes) -------------------------------


def _child_rss(cfg: dict) -> dict:
    data, params, log_posterior = mlp_problem(n=1024, d=128, hidden=256, classes=10, hidden_layers=2)
    num_params = int(sum(x.size for x in jax.tree.leaves(params)))
    tmp = tempfile.mkdtemp(prefix="sghmc_scaling_")
    try:
        after_chunk: list[float] = []  # RSS after each chunk: does it drift once running?

        def run(num_steps: int, output: str | None):
            return sghmc_jax.sample(
                jax.random.key(1), log_posterior, params, transform=_sghmc, num_steps=num_steps,
                num_chains=1, data=data, batch_size=8, thin=1, progress=False, output=output,
                callback=lambda info: after_chunk.append(_common.current_rss_bytes()),
            )

        stream = cfg["mode"] == "streamed"
        warm = run(10, os.path.join(tmp, "warm") if stream else None)  # compiles (same chunk program)
        del warm
        gc.collect()
        after_chunk.clear()
        _common.reset_peak_rss()
        before = _common.current_rss_bytes()
        t0 = time.perf_counter()
        r = run(cfg["draws"], os.path.join(tmp, "draws") if stream else None)
        seconds = time.perf_counter() - t0
        peak = _common.peak_rss_bytes()
        assert int(np.sum(r.diverged_at >= 0)) == 0
        n_draws = len(r.sample_steps)
        disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp) for f in fs)
        return {
            "mode": cfg["mode"], "draws": n_draws, "params": num_params, "rss_before_mb": before / 1e6,
            "peak_rss_mb": peak / 1e6, "growth_mb": (peak - before) / 1e6,
            "draws_mb": n_draws * num_params * 4 / 1e6,
            "rss_first_chunk_mb": after_chunk[0] / 1e6, "rss_last_chunk_mb": after_chunk[-1] / 1e6,
            "seconds": seconds, "per_step_ms": seconds / cfg["draws"] * 1e3, "disk_mb": disk / 1e6,
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _available_bytes() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    return float("inf")


def rss_part(quick: bool, env: dict) -> list[dict]:
    draw_counts = (1000, 4000) if quick else (1000, 4000, 16000)
    rows = []
    for draws in draw_counts:
        for mode in ("streamed", "in memory"):
            # In memory, the draws are held once per chunk and once concatenated at the end.
            need = 2 * draws * 101_386 * 4
            if mode == "in memory" and need > _available_bytes() / 4:
                rows.append({"mode": mode, "draws": draws, "skipped": f"would need ~{need / 1e9:.1f} GB"})
                continue
            out = _in_child({"part": "rss", "mode": mode, "draws": draws}, None, timeout=1800)
            rows.append({"mode": mode, **out} if "error" in out else out)
            print(f"  rss, {mode}, {draws} draws done ({_common.load_average()})", flush=True)
    print(f"\n## Peak host RSS by number of draws: 1 chain of a 101k-param MLP, batch 8, thin 1, "
          f"chunks of 1,000 steps ({env['date']})")
    print("growth = peak RSS during the run - RSS before it (after compiling, in a fresh process); "
          "chunk 1 / last: RSS after the first and the last chunk")
    head = (f"{'draws':>6s} {'mode':>10s} {'draws MB':>9s} {'before MB':>9s} {'peak MB':>8s} {'growth MB':>9s} "
            f"{'chunk 1':>8s} {'last':>6s} {'ms/step':>8s} {'disk MB':>8s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        if "skipped" in r or "error" in r:
            print(f"{r['draws']:6d} {r['mode']:>10s}  {r.get('skipped') or r['error'][-300:]}")
            continue
        print(f"{r['draws']:6d} {r['mode']:>10s} {r['draws_mb']:9.0f} {r['rss_before_mb']:9.0f} "
              f"{r['peak_rss_mb']:8.0f} "
              f"{r['growth_mb']:9.0f} {r['rss_first_chunk_mb']:8.0f} {r['rss_last_chunk_mb']:6.0f} "
              f"{r['per_step_ms']:8.2f} {r['disk_mb']:8.0f}")
    return rows


# ---- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, repeats and draws")
    parser.add_argument(
        "--parts", default="chains,devices,data,rss", help="comma-separated subset of chains,devices,data,rss"
    )
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        cfg = json.loads(args.child)
        out = _child_rss(cfg) if cfg["part"] == "rss" else _child_devices(cfg)
        print("RESULT " + json.dumps(out), flush=True)
        return
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"chains", "devices", "data", "rss"}
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}")
    env = _common.environment()
    env["sghmc_jax"] = sghmc_jax.__version__
    env["optax"] = optax.__version__
    print(f"sghmc_jax {env['sghmc_jax']}, jax {env['jax']}, optax {env['optax']}, {env['backend']} "
          f"({env['device']}) x{jax.device_count()}, {env['cpu_count']} CPUs ({env['cpu']}), "
          f"{_available_bytes() / 2**30:.0f} GiB available, load {env['load_average']}, {env['date']}"
          + (", --quick" if args.quick else ""))
    payload: dict[str, Any] = {"environment": env, "quick": args.quick}
    if "chains" in parts:
        payload["chains"] = chains_part(args.quick, env)
    for part in ("devices", "data"):
        if part in parts:
            payload[part] = devices_part(part, args.quick, env)
    if "rss" in parts:
        payload["rss"] = rss_part(args.quick, env)
    payload["load_average_end"] = _common.load_average()
    _common.save_json(args.json, payload)


if __name__ == "__main__":
    main()
