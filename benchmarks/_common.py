"""Shared helpers for the benchmark scripts: interleaved timing, compile timing, memory, tables.

Every script measures its floor (optax SGD with momentum) in the same run and reports ratios
to it, because this machine is shared and absolute times drift with the load. Repeats are
interleaved (candidate A, B, C, A, B, C, ...) so that a load spike hits every candidate alike;
tables show the median with the min and max of the repeats.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import resource
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "Candidate",
    "Result",
    "EVERY_LEAF_FUSED",
    "compile_candidate",
    "compile_seconds",
    "environment",
    "interleaved",
    "lbfgs_mode",
    "load_average",
    "print_table",
    "xla_peak_bytes",
]


@dataclasses.dataclass
class Candidate:
    """One thing to time: `run()` does one timed unit of work and blocks until it is done."""

    name: str
    run: Callable[[], Any]
    compile_s: float = float("nan")
    peak_bytes: float = float("nan")
    accuracy: float = float("nan")
    note: str = ""


@dataclasses.dataclass
class Result:
    name: str
    median_s: float
    min_s: float
    max_s: float
    ratio: float
    compile_s: float
    peak_bytes: float
    accuracy: float
    note: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def interleaved(candidates: Sequence[Candidate], repeats: int, floor: str, warmup: int = 1) -> list[Result]:
    """Times every candidate `repeats` times, interleaved, and returns ratios to `floor`."""
    for c in candidates:
        for _ in range(warmup):
            c.run()
    times: dict[str, list[float]] = {c.name: [] for c in candidates}
    for _ in range(repeats):
        for c in candidates:
            t0 = time.perf_counter()
            c.run()
            times[c.name].append(time.perf_counter() - t0)
    med = {n: sorted(t)[len(t) // 2] for n, t in times.items()}
    base = med[floor]
    return [
        Result(
            c.name, med[c.name], min(times[c.name]), max(times[c.name]), med[c.name] / base,
            c.compile_s, c.peak_bytes, c.accuracy, c.note,
        )
        for c in candidates
    ]


def compile_seconds(jitted: Any, *args: Any) -> tuple[Any, float]:
    """Lowers and compiles `jitted` for `args`; returns (compiled, seconds including tracing)."""
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - t0


# The candidate name of sghmc_jax's transform traced with every leaf's noise generator fused into
# its own update (no small-leaf bins, no lax.cond): the path an accelerator may prefer.
EVERY_LEAF_FUSED = "sghmc_jax.sghmc, every leaf fused"


def compile_candidate(name: str, jitted: Any, *args: Any) -> tuple[Any, float]:
    """`compile_seconds`, tracing the EVERY_LEAF_FUSED candidate with the small-leaf bins
    switched off (a private knob of sghmc_jax._noise, read when the update is traced)."""
    from sghmc_jax import _noise

    small_leaf = _noise._SMALL_LEAF
    if name == EVERY_LEAF_FUSED:
        _noise._SMALL_LEAF = 1
    try:
        return compile_seconds(jitted, *args)
    finally:
        _noise._SMALL_LEAF = small_leaf


def xla_peak_bytes(compiled: Any) -> float:
    """Peak device memory of one call: live arguments + outputs that are not aliased + temps."""
    m = compiled.memory_analysis()
    if m is None:
        return float("nan")
    return float(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes)


def peak_rss_bytes() -> float:
    """This process's peak resident set size since the last `reset_peak_rss()` (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def current_rss_bytes() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    return float("nan")


def reset_peak_rss() -> None:
    """Resets the kernel's peak-RSS counter (VmHWM) so that later peaks exclude start-up."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def environment() -> dict:
    """Machine, versions and date, for the results table."""
    import jax

    info = {
        "date": datetime.datetime.now().isoformat(timespec="minutes"),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "cpu_count": os.cpu_count(),
        "load_average": load_average(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    try:
        info["cpu"] = next(
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo")
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    for mod in ("optax", "chex", "blackjax"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing optional package is reported, not fatal
            info[mod] = "not installed"
    return info


def _fmt_time(s: float) -> str:
    if s != s:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def print_table(title: str, results: Sequence[Result], env: dict | None = None) -> None:
    """Prints a fixed-width table of results (ratio is median / the floor's median)."""
    print(f"\n## {title}")
    if env:
        print(f"({env['device']} x{env['cpu_count']} {env.get('cpu', '')}, jax {env['jax']}, "
              f"load {env['load_average']}, {env['date']})")
    width = max([34] + [len(r.name) for r in results])
    head = f"{'candidate':{width}s} {'median':>10s} {'min':>10s} {'max':>10s} {'ratio':>7s} {'compile':>9s} {'peak MB':>8s} {'acc':>6s}  note"
    print(head)
    print("-" * len(head))
    for r in results:
        acc = "-" if r.accuracy != r.accuracy else f"{r.accuracy:.3f}"
        mb = "-" if r.peak_bytes != r.peak_bytes else f"{r.peak_bytes / 1e6:.1f}"
        print(
            f"{r.name:{width}s} {_fmt_time(r.median_s):>10s} {_fmt_time(r.min_s):>10s} {_fmt_time(r.max_s):>10s} "
            f"{r.ratio:7.2f} {_fmt_time(r.compile_s):>9s} {mb:>8s} {acc:>6s}  {r.note}"
        )


def save_json(path: str | None, payload: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=1, default=str)


def run_python(
    python: str, script: str, args: Sequence[str], timeout: float, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Runs `python script args` and returns (exit code, combined output); `env` adds to (or
    overrides) this process's environment, e.g. XLA_FLAGS for forced host devices."""
    proc = subprocess.run(
        [python, script, *args], capture_output=True, text=True, timeout=timeout, check=False,
        env=None if env is None else {**os.environ, **env},
    )
    return proc.returncode, proc.stdout + proc.stderr


def skip(name: str, why: str) -> None:
    print(f"SKIPPED {name}: {why}", flush=True)


def lbfgs_mode(
    loss: Callable[[Any], Any], params: Any, num_data: int, tol: float, max_iter: int
) -> tuple[Any, int, int]:
    """Minimises a mean-form full-data `loss` by optax's L-BFGS from `params`, stopped when the
    largest entry of the sum-form gradient (`num_data` times the loss's, at the previous iterate)
    is below `tol`. Returns the minimiser, the full-data evaluations of the loss (counted as they
    run, L-BFGS's line search included) and the iterations."""
    import jax
    import jax.numpy as jnp
    import optax

    evaluations = [0]

    def count() -> None:
        evaluations[0] += 1

    def counted(params: Any) -> Any:
        jax.debug.callback(count)  # once per evaluation, inside the line search too
        return loss(params)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(counted)

    @jax.jit
    def iterate(params: Any, state: Any) -> tuple[Any, Any, Any]:
        value, grad = value_and_grad(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=counted)
        return optax.apply_updates(params, updates), state, grad

    state, iterations = opt.init(params), 0
    while iterations < max_iter:
        params, state, grad = iterate(params, state)
        iterations += 1
        jax.effects_barrier()
        if max(float(jnp.max(jnp.abs(num_data * g))) for g in jax.tree.leaves(grad)) < tol:
            break
    jax.effects_barrier()
    return params, evaluations[0], iterations
