"""The sampler: runs any of this library's transforms for many steps, over several chains, with
minibatches, burn-in, thinning, progress, diagnostics, divergence handling and exact resume.

Steps run in compiled chunks with no per-step Python; between chunks the thinned samples move to
the host, so the device holds one chunk of draws, never the whole run. `sample` is four parts,
each in its module of `sghmc_jax._sampler`: the run plan (`plan.py`: the arguments as checked
records, before anything compiles), the compiled programs and the initial or restored state
(`programs.py`, reused by later calls with the same functions and shapes: a continuation
compiles nothing), the chunk loop (`loop.py`) and the result (`result.py`).

Randomness: `key` is split into one key per chain, and each chain's key into three: one seeds its
transform's init (when `transform` is a factory of a key), one its per-step noise and one its
minibatch order. Step t of a chain uses `fold_in(noise_key, t)` and epoch e's permutation uses
`fold_in(data_key, e)` (with `batch_order="with_replacement"`, step t's batch uses
`fold_in(data_key, t)`), so the draws depend only on the key and the global step number: not on
chunking, checkpoints or continuation.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import optax

from sghmc_jax._sampler import identity, loop, result
from sghmc_jax._sampler.plan import Ladder, Monitor, Plan, Predictive, Start, Steps, Storage
from sghmc_jax._sampler.programs import Programs
from sghmc_jax._sampler.result import DivergenceError, SampleResult
from sghmc_jax.types import ArrayTree, LogProbFn, SamplerState

__all__ = ["DivergenceError", "SampleResult", "SamplerState", "sample"]

# Their public home is this module (they are defined with the rest of the sampler's wing).
SampleResult.__module__ = DivergenceError.__module__ = __name__

TransformLike = optax.GradientTransformation | Callable[[jax.Array], optax.GradientTransformation]


def sample(
    key: Any,
    log_posterior: LogProbFn,
    init_params: ArrayTree,
    *,
    transform: TransformLike,
    num_steps: int,
    num_chains: int = 4,
    stacked_init: bool = False,
    data: ArrayTree | None = None,
    batch_size: int | None = None,
    batch_order: str = "shuffle",
    batches: Iterable[Any] | None = None,
    burn_in: int = 0,
    thin: int = 1,
    keep: Callable[[jax.Array], jax.Array] | None = None,
    chunk_size: int = 1000,
    progress: bool = True,
    on_divergence: str = "raise",
    predict_fn: Callable[[ArrayTree, Any], ArrayTree] | None = None,
    predict_inputs: Any = None,
    init_state: SamplerState | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    callback: Callable[[dict], None] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    chain_axis: str | None = None,
    data_axis: str | None = None,
    output: str | os.PathLike | None = None,
    temperatures: int | Sequence[float] | None = None,
    swap_every: int = 1,
    swaps: str = "deo",
    adapt_ladder: int = 0,
    keep_rungs: bool = False,
) -> SampleResult:
    """Runs `num_chains` chains of a transform for `num_steps` steps and returns the draws.

    Args:
        key: PRNG key (typed, raw or int seed) for everything random in the run (not used with
            `init_state`: a continuation draws from the state's own keys, as the run would have).
        log_posterior: `log_posterior(params, batch) -> (value, aux)`; `make_log_posterior`
            builds one from a per-example likelihood with the data-size scaling right, and the
            temperature it declares is checked against the transform's (a disagreement raises).
        init_params: the initial params: one pytree shared by all chains, or, with
            `stacked_init=True`, a pytree whose leaves have a leading axis of size `num_chains`.
        transform: one of this library's transforms (e.g. `sghmc_jax.sghmc(...)`), also inside
            `optax.chain`; or a function `key -> transform`, called once per chain with its own
            key, so that the chains' initial momenta differ too (with a plain transform they
            share the transform's initial momenta; their step noise differs either way).
        num_steps: steps per chain in this call.
        num_chains: number of chains (vmapped).
        stacked_init: whether `init_params` has a leading chain axis.
        data: a pytree of arrays with a leading example axis, held on the device; each chain
            draws a minibatch of `batch_size` every step, by default walking its own
            permutation each epoch (without replacement; the last N mod batch_size examples of
            a permutation sit that epoch out; see `batch_order`). None passes `batch=None` (unless `batches` is given).
        batch_size: minibatch size, 1 <= batch_size <= N; required with `data`.
        batch_order: how each chain walks `data`: "shuffle" (a fresh permutation every
            epoch), "sms", symmetric minibatch splitting (Paulin et al. 2025): a fresh
            permutation every other epoch, whose batches the next epoch visits in reverse
            order, so the kicks form a palindrome over each pair of epochs, or
            "with_replacement": every step's batch drawn uniformly with replacement (i.i.d.
            batches, the classical SG-MCMC setting; per data shard with `data_axis`), from
            `fold_in(data_key, step)`. Measured with UBU, BAOA and SGHMC on a quartic target
            split into 4 batches (`benchmarks/README.md`, "Bias order"), on batches that
            differ by a shift and on batches that differ in curvature: i.i.d. batches make the
            bias first order in the step size and the largest (8-9x the default's for UBU at
            the smallest step); "shuffle" and "sms" both keep it second order or better, sms
            no better than shuffle (1.2-1.3x larger at the largest step, equal within MCSE at
            the others). Sms beat shuffle only with 2 batches per epoch; with 16 neither was
            second order at those steps and sms was the worse: the benefit of both
            permutation orders needs epochs short against the chain's memory.
        batches: instead of `data`, an iterable of host batches, one per step, shared by all
            chains, moved to the device `chunk_size` at a time (for data too big for the device).
        burn_in: steps discarded before the first draw.
        thin: keep one draw every `thin` steps after burn-in (draws after steps burn_in + thin,
            burn_in + 2·thin, ...).
        keep: optional jit-able predicate of the step index of the update that produced a
            draw (0-based, the index its schedules were evaluated at; the draw's entry in
            `sample_steps` is that index + 1), e.g. the sampling phase of a cyclical schedule
            (`functools.partial(sghmc_jax.in_sampling_phase, ...)`); draws where it is False
            are dropped.
        chunk_size: steps per compiled chunk; samples go to the host between chunks. Calls with
            the same functions, shapes, `chunk_size` and `thin` share one compiled program.
        progress: show a progress bar (tqdm if installed, else a line per chunk on stderr).
        on_divergence: "raise" stops at the end of the chunk where a chain's params or log
            posterior become non-finite and raises `DivergenceError` with the draws taken
            before it; "continue" holds that chain at its last finite state (its later draws
            are NaN, `diverged_at` says where) and runs the others on.
        predict_fn: optional `predict_fn(params, predict_inputs)`; the sampler keeps a running
            mean of it over the kept draws without storing them.
        predict_inputs: the inputs for `predict_fn`.
        init_state: a `SamplerState` to continue from (e.g. `result.final_state`), with the
            transform that made it; then `init_params`, `stacked_init`, `num_chains` and the
            chains' keys come from it (`num_chains` other than the default and the state's is an
            error). The continuation equals the longer run it extends, bit for bit.
        checkpoint_dir: where to checkpoint the sampler state (orbax) every `checkpoint_every`
            steps (at chunk ends); if it holds a checkpoint of the same run, the run resumes from
            it and ends bit-identical to an uninterrupted run (or, when that run had finished,
            returns its draws). The same run means the same arguments, key, log posterior,
            transform with its hyperparameters and schedules, and the same values of `data`
            and `init_params` (checked by SHA-256 digests, about 0.07 s per 100 MB); a checkpoint
            of any other run is refused with an error that names what differs. Saves are atomic and hold the
            state only: the draws go to the draw store (`output`, or `checkpoint_dir/draws`)
            as they come, never rewritten. Needs `sghmc_jax[disk]`.
        checkpoint_every: steps between checkpoints (rounded up to a chunk end); by default
            every chunk end.
        callback: optional function called on the host after every chunk (and after that
            chunk's checkpoint, so a callback that stops the run loses nothing) with a dict of
            progress information (`step`, `num_steps`, `mean_log_posterior`).
        mesh: a `jax.sharding.Mesh` to run on (docs, guide "Scaling out"); its devices may span
            several processes (`jax.distributed`). Params given as arrays sharded over it (a
            `NamedSharding`) keep their partition, and every per-parameter part of the state
            (momenta, preconditioner, ...) follows it; other params are replicated.
        chain_axis: the mesh axis the chains are split over (`num_chains` a multiple of its
            size): each device runs its own chains, with no communication in the step.
        output: a path for a new zarr (v3) store that each chunk's draws, their steps and the
            log-posterior trace are written to as they come (each process writes the chains it
            holds), so that host memory stays at one chunk whatever the run's length; the
            result then reads them lazily from it (`samples` leaves and `log_posterior` are
            `StoredArray`s). Needs `sghmc_jax[disk]`. None keeps the draws in memory.
        data_axis: the mesh axis the minibatch is split over: `data` is split into that many
            equal shards of examples (N and `batch_size` multiples of its size), each device
            draws its part of every minibatch from its own shard (a per-chain permutation of
            each shard per epoch), and the gradient is reduced across the axis in the step.
        temperatures: replica exchange (parallel tempering): None for none; an int R >= 2 for a geometric
            ladder of R rungs from 1 to 10; or the rungs' temperature factors, 1.0 first, strictly
            increasing. Each of the `num_chains` chains becomes a ladder of R replicas (the state's chain
            axis holds num_chains × R, chain-major); the replica on rung r runs the transform's sampler at
            temperature τ_r·T with the full gradient, T the sampler's temperature (a constant > 0; the
            sampler may sit inside `optax.chain` or come from a factory), so it targets p(θ)^(1/(τ_r T)) and
            moves as a run at that temperature would, with the same step size and friction (and its `beta`,
            which stands for a gradient-noise variance β·T², divided by τ_r²). A replica that changes rung
            has its momenta (and SGNHT's thermostat) rescaled to its new temperature, which keeps the swap
            exact. A transform without one of this library's samplers is refused (its temperature cannot be
            set per rung). Replicas swap RUNGS (a small int array), never params, which is what a mesh
            wants: with `chain_axis` each device holds whole ladders, and the swaps and the gather of rung 0
            need no communication. The draws, `log_posterior` and `kinetic` are those of the replica holding
            rung 0, gathered at each draw; `result.swap_acceptance` and `result.round_trips` say how the
            ladder mixes. Not yet with `data_axis` or host `batches`; `predict_fn` averages rung 0's
            predictions. A chain diverges when any of its replicas does (`diverged_at` is the first); with
            `on_divergence="continue"` that replica is held, its non- finite energy rejects every swap with
            it, and the chain's draws from then on are missing.
        swap_every: steps between swap rounds: a round at every step t > 0 that is a
            multiple of it, between the step's gradient and its update, Metropolis on adjacent rungs with
            the step's own log posterior values (`sghmc_jax._sampler.replicas` has the rule).
            Exact with full-data energies (no `data`); with `data`, the minibatch energies'
            noise is corrected as Deng et al. (ICML 2020) do, with the variance of each
            replica's minibatch estimate taken from its batch's single-example values (this
            assumes `make_log_posterior`'s form, a prior plus N/n times the batch's sum) and
            smoothed over rounds; for a `control_variates.centre` log posterior the swap uses
            its control-variate energies (Deng et al., ICLR 2021), whose variance is far
            smaller. Its extra cost is one forward pass per example of the batch at swap steps
            (two with a control variate).
        swaps: "deo" (deterministic even/odd: pairs (i, i + 1) with i even on even rounds, odd
            on odd rounds; Syed et al., JRSS-B 2022), or "random" (all pairs of a parity drawn
            uniformly each round: the reversible scheme, whose replicas cross the ladder
            diffusively).
        adapt_ladder: 0 keeps the ladder as given; A > 0 adapts each chain's ladder at steps
            A/32, A/16, ..., A/2, A (rounds that double; A <= burn_in, counted from the run's
            first step) as Syed et al. do: from each rung pair's rejection rate since the last
            adaptation, the rungs' factors β = 1/τ are moved (rung 0 and the top kept) so that
            every pair is expected to reject equally, then frozen. `swap_acceptance` then
            counts the swaps since the last adaptation, and `temperatures` is each chain's
            final ladder.
        keep_rungs: with a ladder, keep every rung's draws: `samples` leaves are then (chain,
            draw, R, ...), rung r at index r of the third axis (rung 0 the target's), and
            `summary()` treats each rung's coordinates as parameters of their own. Rung r's
            draws are a run at temperature τ_r·T whose replicas come and go by swaps: as
            converged as rung 0's only if the run suits that temperature too (its step size
            and length; `diagnose()` reads rung 0's draws only). With `adapt_ladder` each chain
            ends on a ladder of its own (`temperatures`), so `summary()`'s rows of a hot rung
            pool chains at slightly different temperatures.

    Returns:
        A `SampleResult`.

    Raises:
        DivergenceError: if a chain diverges with `on_divergence="raise"`.
        ValueError, TypeError: for bad arguments, before anything is compiled.
    """
    ladder = Ladder.build(temperatures, swap_every, swaps, adapt_ladder, keep_rungs)
    rungs = 1 if ladder is None else ladder.rungs
    plan = Plan.build(
        steps=Steps.build(num_steps, burn_in, thin, chunk_size, on_divergence),
        start=Start.build(key, init_params, stacked_init, num_chains, init_state, rungs),
        mesh=(mesh, chain_axis, data_axis),
        batches=(data, batch_size, batch_order, batches),
        predictive=Predictive.build(predict_fn, predict_inputs),
        model=(log_posterior, transform, keep),
        storage=Storage.build(checkpoint_dir, checkpoint_every, output),
        monitor=Monitor.build(progress, callback),
        ladder=ladder,
    )
    identity.check_processes_agree(plan)
    programs = Programs(plan)
    outcome = loop.run(plan, programs, programs.initial_state())
    return result.make(plan, programs, outcome)
