"""Update-only benchmark: one optimiser/sampler update on given gradients, no model.

Cases: one flat leaf of 10M float32 parameters, and a 200-leaf tree of 50k-element leaves (the
compile-time case). Candidates, all jitted with params and state donated unless named otherwise:
optax SGD with momentum (the floor), the same without donation, sghmc_jax's optax face (and, on
the tree, the same traced with every leaf's generator fused into its own update), every other
sampler of the family next to its own optax floor (SGLD: optax.sgd; SGNHT, BAOA, UBU: SGD with
momentum; pSGLD: optax.rmsprop; pSGHMC: rmsprop with momentum), a "naive"
SGHMC written the obvious way (one `jax.random.normal` per leaf, tree_map arithmetic), and
BlackJAX's SGHMC diffusion step (skipped when blackjax is not importable).

Columns: per-update time (median/min/max of interleaved repeats) and its ratio to the floor,
compile time (trace + lower + compile; the median of several compiles for those under 3 s),
XLA's peak memory of one call (live arguments + unaliased outputs + temporaries), and with --rss
each candidate's peak RSS growth in a fresh process.

    python benchmarks/update_only.py            # full (a few minutes on 2 CPU cores)
    python benchmarks/update_only.py --quick    # fewer repeats
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from typing import Any

# Runnable from a plain checkout (no install): the repository root and this folder on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import _common  # noqa: E402
import sghmc_jax  # noqa: E402
from _common import EVERY_LEAF_FUSED  # noqa: E402

LR, ALPHA = 1e-3, 0.1  # SGHMC ε, α; the floor is its T = 0 twin optax.sgd(ε², momentum=1 − εα)
# Each sampler's own optax floor (its closest optimiser); the table's ratio column is to the
# common floor, and the note adds the ratio to this one.
FLOOR_OF = {
    "sghmc_jax.sghmc": "optax sgd+momentum (floor)",
    "sghmc_jax.sgnht": "optax sgd+momentum (floor)",
    "sghmc_jax.baoa": "optax sgd+momentum (floor)",
    "sghmc_jax.ubu": "optax sgd+momentum (floor)",
    "sghmc_jax.sgld": "optax sgd",
    "sghmc_jax.psgld": "optax rmsprop",
    "sghmc_jax.psghmc": "optax rmsprop+momentum",
}


def make_tree(case: str) -> dict[str, jax.Array]:
    if case == "flat":
        return {"w": jnp.zeros((10_000_000,), jnp.float32)}
    return {f"layer{i:03d}": jnp.zeros((50_000,), jnp.float32) for i in range(200)}


def naive_sghmc_step(params: Any, momenta: Any, grads: Any, key: jax.Array) -> tuple[Any, Any]:
    """SGHMC written the obvious way: one jax.random.normal per leaf, tree_map arithmetic."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    noise = jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)])
    scale = (LR * 2 * ALPHA) ** 0.5
    momenta = jax.tree.map(lambda m, g, n: (1 - LR * ALPHA) * m - LR * g + scale * n, momenta, grads, noise)
    params = jax.tree.map(lambda p, m: p + LR * m, params, momenta)
    return params, momenta


def candidates(case: str, only: str | None = None) -> list[tuple[str, Callable[[], tuple[Any, tuple]], str]]:
    """(name, make() -> (jitted step, initial args), note) for each candidate of a case."""
    out: list = []

    def optax_like(tx: Any, donate: bool, with_key: bool = False) -> Callable:
        def make() -> tuple:
            params = make_tree(case)

            def step(p, s, g, k):
                u, s = tx.update(g, s, p, key=k) if with_key else tx.update(g, s, p)
                return optax.apply_updates(p, u), s

            f = jax.jit(step, donate_argnums=(0, 1) if donate else ())
            return f, (params, tx.init(params), jax.tree.map(jnp.ones_like, params), jax.random.key(1))

        return make

    out.append(("optax sgd+momentum (floor)", optax_like(optax.sgd(LR**2, momentum=1 - LR * ALPHA), True), "donated"))
    out.append(("optax sgd+momentum, not donated", optax_like(optax.sgd(LR**2, momentum=1 - LR * ALPHA), False), ""))
    out.append(("sghmc_jax.sghmc", optax_like(sghmc_jax.sghmc(LR, alpha=ALPHA, key=0), True, with_key=True), "donated"))
    # The rest of the family, each next to its own optax floor (FLOOR_OF).
    out.append(("optax sgd", optax_like(optax.sgd(LR), True), "donated"))
    out.append(("optax rmsprop", optax_like(optax.rmsprop(LR, decay=0.99, eps=1e-5), True), "donated"))
    out.append(("optax rmsprop+momentum", optax_like(optax.rmsprop(LR, decay=0.99, eps=1e-5, momentum=0.9), True), "donated"))
    out.append(("sghmc_jax.sgld", optax_like(sghmc_jax.sgld(LR, key=0), True, with_key=True), "donated"))
    out.append(("sghmc_jax.sgnht", optax_like(sghmc_jax.sgnht(LR, alpha=ALPHA, key=0), True, with_key=True), "donated"))
    out.append(("sghmc_jax.baoa", optax_like(sghmc_jax.baoa(LR, alpha=ALPHA, key=0), True, with_key=True), "donated"))
    out.append(("sghmc_jax.ubu", optax_like(sghmc_jax.ubu(LR, alpha=ALPHA, key=0), True, with_key=True), "donated"))
    out.append(("sghmc_jax.psgld", optax_like(sghmc_jax.psgld(LR, initial_scale=1.0, key=0), True, with_key=True), "donated"))
    out.append(("sghmc_jax.psghmc", optax_like(sghmc_jax.psghmc(LR, alpha=ALPHA, initial_scale=1.0, key=0), True, with_key=True), "donated"))
    if case == "tree":
        # The same transform traced with every leaf's generator fused into its own update (no
        # bins, no lax.cond): what an accelerator may prefer; its compile time is the question.
        out.append((EVERY_LEAF_FUSED, optax_like(sghmc_jax.sghmc(LR, alpha=ALPHA, key=0), True, with_key=True), "donated"))

    def make_naive() -> tuple:
        params = make_tree(case)
        # A fresh function per call, as for the other candidates: compile repeats then compile
        # anew instead of hitting JAX's cache for a module-level function.
        f = jax.jit(lambda *a: naive_sghmc_step(*a), donate_argnums=(0, 1))
        return f, (params, jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.ones_like, params), jax.random.key(1))

    out.append(("naive SGHMC (random.normal/leaf)", make_naive, "donated"))
    try:
        from blackjax.sgmcmc import diffusions

        one_step = diffusions.sghmc(ALPHA)

        def make_blackjax() -> tuple:
            params = make_tree(case)

            def step(p, m, g, k):
                return one_step(k, p, m, g, LR)

            f = jax.jit(step, donate_argnums=(0, 1))
            return f, (params, jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.ones_like, params), jax.random.key(1))

        out.append(("blackjax sghmc diffusion", make_blackjax, "donated"))
    except ImportError as err:
        _common.skip("blackjax sghmc diffusion", f"blackjax is not importable ({err})")
    if only is not None:
        out = [c for c in out if c[0] == only]
    return out


def runner(f: Any, args: tuple) -> Callable[[], Any]:
    state = list(args)

    def run() -> None:
        new = f(*state)
        jax.block_until_ready(new)
        state[0], state[1] = new

    return run


def rss_mode(case: str, name: str) -> None:
    """Prints this process's peak RSS growth for one candidate (compile + 3 updates)."""
    jnp.zeros(1).block_until_ready()  # start the runtime before the baseline
    _common.reset_peak_rss()
    base = _common.current_rss_bytes()
    (_, make, _), = candidates(case, only=name)
    f, args = make()
    compiled, _ = _common.compile_candidate(name, f, *args)
    run = runner(compiled, args)
    for _ in range(3):
        run()
    print(f"RSS {_common.peak_rss_bytes() - base:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--cases", default="flat,tree", help="comma-separated: flat, tree")
    parser.add_argument("--rss", action="store_true", help="also measure peak RSS per candidate in subprocesses")
    parser.add_argument("--json", default=None, help="write results here")
    parser.add_argument("--compile-repeats", type=int, default=None,
                        help="compiles per candidate under 3 s, median reported (default 7, 3 with --quick)")
    parser.add_argument("--_rss", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compile_repeats is None:
        args.compile_repeats = 3 if args.quick else 7
    if args._rss:
        rss_mode(*args._rss)
        return
    env = _common.environment()
    payload: dict = {"env": env, "cases": {}}
    for case in args.cases.split(","):
        cands, makers = [], {}
        for name, make, note in candidates(case):
            f, fargs = make()
            compiled, seconds = _common.compile_candidate(name, f, *fargs)
            c = _common.Candidate(name, runner(compiled, fargs), compile_s=seconds, note=note,
                                  peak_bytes=_common.xla_peak_bytes(compiled))
            cands.append(c)
            makers[name] = make
        # Compile times drift with the machine's load as much as run times do: recompile the
        # candidates that compile in under 3 s from fresh jit objects, interleaved, and keep the
        # median (the first compile of each is in the sample too).
        compile_times = {c.name: [c.compile_s] for c in cands if c.compile_s < 3.0}
        for _ in range(args.compile_repeats - 1):
            for name in compile_times:
                f, fargs = makers[name]()
                compile_times[name].append(_common.compile_candidate(name, f, *fargs)[1])
        for c in cands:
            if c.name in compile_times:
                c.compile_s = statistics.median(compile_times[c.name])
        results = _common.interleaved(cands, repeats=7 if args.quick else 21, floor=cands[0].name)
        by_name = {r.name: r for r in results}
        for r in results:
            if r.name in FLOOR_OF:
                floor = by_name[FLOOR_OF[r.name]]
                own = f"{r.median_s / floor.median_s:.2f}x its floor ({floor.name}), compile {r.compile_s / floor.compile_s:.2f}x"
                r.note = f"{r.note}; {own}" if r.note else own
        if args.rss:
            for r in results:
                code, out = _common.run_python(sys.executable, __file__, ["--_rss", case, r.name], timeout=600)
                line = [ln for ln in out.splitlines() if ln.startswith("RSS ")]
                r.note = (r.note + f"; RSS +{float(line[0].split()[1]) / 1e6:.0f} MB") if line else r.note
        title = "update only, 1 leaf x 10M float32" if case == "flat" else "update only, 200 leaves x 50k float32"
        _common.print_table(title, results, env)
        payload["cases"][case] = [r.as_dict() for r in results]
    _common.save_json(args.json, payload)


if __name__ == "__main__":
    main()
