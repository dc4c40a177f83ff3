"""The chunk loop: runs the plan's chunks, hands each chunk's draws and traces to the sink,
reports progress, checkpoints at chunk ends, and stops at a divergence (unless the run
continues past it)."""

from __future__ import annotations

import os
import time
from typing import Any, NamedTuple

import numpy as np

from sghmc_jax._sampler import batching, engine, identity
from sghmc_jax._sampler.checkpoint import DRAWS, Checkpointer
from sghmc_jax._sampler.draws import Chunk, MemorySink, StoreSink
from sghmc_jax._sampler.placement import host
from sghmc_jax._sampler.plan import Plan
from sghmc_jax._sampler.programs import Programs
from sghmc_jax._sampler.progress import Progress
from sghmc_jax._sampler.store import DrawStore
from sghmc_jax.types import SamplerState

__all__: list[str] = []


class Outcome(NamedTuple):
    state: SamplerState
    step0: int
    sink: MemorySink | StoreSink
    pred_sum: Any
    pred_count: Any
    wall_time: float
    steps_run: int  # by this call (a resumed run's steps before the kill are not counted)
    divergence: tuple[int, int] | None


class _Disk(NamedTuple):
    sink: MemorySink | StoreSink
    checkpointer: Checkpointer | None
    restored: Any  # (state, (pred_sum, pred_count), meta) of the checkpoint resumed, or None


def _open_disk(plan: Plan, programs: Programs, step0: int, state: SamplerState) -> _Disk:
    """The sink the draws go to and, with `checkpoint_dir`, the checkpointer and the checkpoint
    to resume (None to start afresh); both refuse another run's files."""
    storage = plan.storage
    if not storage.on_disk:
        return _Disk(MemorySink(), None, None)
    fingerprint, parts = identity.identity(identity.parts(plan, programs, step0, state))
    checkpointer, restored = None, None
    if storage.checkpoint_dir is not None:
        checkpointer = Checkpointer(storage.checkpoint_dir, fingerprint, parts)
        restored = checkpointer.load(state, (programs.pred_sum, programs.pred_count))
    path = storage.output
    if path is None:  # on disk without `output`: a checkpointed run, whose store is its own
        assert checkpointer is not None
        path = checkpointer.draws_path
    if restored is not None:
        _check_same_store(restored[2], path, storage.checkpoint_dir)
    traces = programs.chunk.out_info().traces
    store = DrawStore(
        path,
        params=engine.drawn_shape(state, plan.ladder is not None and plan.ladder.keep_rungs),
        num_chains=plan.start.num_chains,
        max_draws=sum(d for _, d, _ in plan.steps.chunks()),
        max_steps=plan.steps.num_steps,
        chunk_draws=plan.steps.max_draws,
        chunk_steps=plan.steps.capacity,
        # A checkpointed run that stopped before its first checkpoint starts over in its own
        # store: the draws there are this run's (same fingerprint), written again identically.
        fingerprint=fingerprint,
        parts=parts,
        resume=checkpointer is not None,
        trace_dtypes={name: t.dtype for name, t in traces.items()},
    )
    if restored is None:
        store.truncate(0, 0)
    else:
        store.truncate(int(restored[2]["draws"]), int(restored[2]["steps"]))
    return _Disk(StoreSink(store, in_memory=storage.output is None), checkpointer, restored)


def _check_same_store(meta: dict[str, Any], path: str, checkpoint_dir: Any) -> None:
    """A checkpoint resumes only into the draw store its run was writing: elsewhere the draws
    before it would be missing (a new store holds none of them)."""
    saved, here = meta.get("store"), os.path.abspath(path)
    if saved != here:
        had = f"output={saved!r}" if saved != os.path.abspath(os.path.join(checkpoint_dir, DRAWS)) else "no `output`"
        raise ValueError(
            f"`checkpoint_dir` {checkpoint_dir!r} holds a checkpoint of this run whose draws were written "
            f"to {saved!r}, but this call would write them to {here!r}: the draws taken before the "
            f"checkpoint would be missing from the result. Pass {had}, as the run that wrote it did "
            "(nothing was changed on disk)"
        )


class _Run:
    """The mutable state of the loop: the chains' state, the predictive sums, the clock."""

    def __init__(self, plan: Plan, programs: Programs, state: SamplerState):
        self.plan, self.programs = plan, programs
        self.state = state
        self.step0 = int(host(state.step))
        self.pred_sum, self.pred_count = programs.pred_sum, programs.pred_count
        self.disk = _open_disk(plan, programs, self.step0, state)
        self.start_chunk = 0
        if self.disk.restored is not None:
            self.state, (self.pred_sum, self.pred_count), meta = self.disk.restored
            self.start_chunk = int(meta["next_chunk"])
        self.saved = {int(host(self.state.step))} if self.disk.restored is not None else set()
        self.last_checkpoint_step = int(host(self.state.step))
        self.wall_time = 0.0
        self.steps_run = 0
        self.pending_batch = plan.batches.first_host_batch

    def save(self, next_chunk: int) -> None:
        step = int(host(self.state.step))
        if step in self.saved:  # the last chunk's checkpoint is also the final one
            return
        store = self.disk.sink.store  # a checkpointed run writes its draws to its store
        meta = {
            "next_chunk": next_chunk,
            "draws": store.draws_written,
            "steps": store.steps_written,
            "store": os.path.abspath(store.path),
        }
        self.disk.checkpointer.save(step, self.state, (self.pred_sum, self.pred_count), meta)
        self.saved.add(step)

    def chunk(self, executable: Any, counts: tuple[int, int, int]) -> float:
        """Runs one chunk; returns the mean log posterior of the live chains at its end."""
        plan = self.plan
        before, n_draws, after = counts
        n_steps = before + n_draws * plan.steps.thin + after
        xs = None
        if plan.batches.iterator is not None:
            xs, self.pending_batch = batching.take_host_batches(
                plan.batches.iterator, self.pending_batch, n_steps, plan.steps.capacity
            )
        t0 = time.perf_counter()
        self.steps_run += n_steps
        out = executable(
            self.state,
            xs,
            self.pred_sum,
            self.pred_count,
            plan.batches.data,
            plan.predictive.inputs,
            np.asarray(counts, np.int32),
        )
        self.state, self.pred_sum, self.pred_count = out.state, out.pred_sum, out.pred_count
        kept = host(out.keeps) if (n_draws and plan.model.keep is not None) else None
        self.disk.sink.add(Chunk(out, n_draws, kept, n_steps))
        self.wall_time += time.perf_counter() - t0
        last = self.disk.sink.last_log_posterior()
        finite = last[np.isfinite(last)]
        return float(finite.mean()) if finite.size else float("nan")

    def first_divergence(self) -> tuple[int, int] | None:
        """(chain, step) of the earliest divergence, when the run stops at one."""
        diverged_at = host(self.state.diverged_at)
        if self.plan.steps.continue_on_divergence or not (diverged_at >= 0).any():
            return None
        chain = int(np.argmin(np.where(diverged_at >= 0, diverged_at, np.iinfo(np.int32).max)))
        return chain, int(diverged_at[chain])

    def after_chunk(self, index: int, mean_lp: float) -> None:
        """The checkpoint (when due) and then the callback, which may stop the run losing nothing."""
        plan = self.plan
        step = int(host(self.state.step))
        if self.disk.checkpointer is not None and step - self.last_checkpoint_step >= plan.storage.checkpoint_every:
            self.save(index + 1)
            self.last_checkpoint_step = step
        if plan.monitor.callback is not None:
            info = {"step": step - self.step0, "num_steps": plan.steps.num_steps, "mean_log_posterior": mean_lp}
            plan.monitor.callback(info)


def run(plan: Plan, programs: Programs, state: SamplerState) -> Outcome:
    """Runs the call's chunks from `state` (or from the checkpoint it resumes)."""
    loop = _Run(plan, programs, state)
    chunks = plan.steps.chunks()
    bar = Progress(plan.steps.num_steps, enabled=plan.monitor.progress)
    if loop.start_chunk:
        bar.resumed(int(host(loop.state.step)) - loop.step0)
    divergence = None
    try:
        if programs.needs_compiling:
            bar.compiling()
        executable = programs.chunk_executable()
        for index in range(loop.start_chunk, len(chunks)):
            before, n_draws, after = chunks[index]
            mean_lp = loop.chunk(executable, chunks[index])
            bar.update(before + n_draws * plan.steps.thin + after, mean_lp, loop.wall_time)
            divergence = loop.first_divergence()
            if divergence is not None:
                break
            loop.after_chunk(index, mean_lp)
        if loop.disk.checkpointer is not None and divergence is None:
            loop.save(len(chunks))
    finally:
        bar.close()
    return Outcome(
        loop.state,
        loop.step0,
        loop.disk.sink,
        loop.pred_sum,
        loop.pred_count,
        loop.wall_time,
        loop.steps_run,
        divergence,
    )
