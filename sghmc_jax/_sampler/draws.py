"""Where each chunk's draws and per-step traces go: host memory (the default), or the run's draw
store on disk (`output=`, or a checkpointed run's), which keeps host memory at one chunk."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from sghmc_jax._sampler.placement import host
from sghmc_jax._sampler.store import DrawStore
from sghmc_jax._sampler.traces import TRACES
from sghmc_jax.types import ArrayTree

__all__: list[str] = []


class Chunk:
    """One chunk's output as the sinks take it: the draw buffers (draw, chain, ...) of which the
    first `n_draws` are the chunk's (`kept` picks those to keep), their steps, and the (step,
    chain) trace buffers by name, of which the first `n_steps` are the chunk's."""

    def __init__(self, out: Any, n_draws: int, kept: np.ndarray | None, n_steps: int):
        self.draws = out.draws
        self.n_draws = n_draws
        self.kept = kept
        self.steps = out.draw_steps[:n_draws] if n_draws else None
        self.traces = out.traces
        self.n_steps = n_steps

    def take(self) -> Any:
        return slice(0, self.n_draws) if self.kept is None else np.flatnonzero(self.kept[: self.n_draws])


class Outputs:
    """What a sink hands the result: the draws, their steps, and each trace by name."""

    def __init__(self, samples: Any, sample_steps: np.ndarray, traces: dict[str, Any]):
        self.samples = samples
        self.sample_steps = sample_steps
        self.traces = traces


class MemorySink:
    """The run's draws, their steps and the traces in host memory."""

    def __init__(self) -> None:
        self.draws: list[ArrayTree] = []
        self.steps: list[np.ndarray] = []
        self.traces: dict[str, list[np.ndarray]] = {tr.name: [] for tr in TRACES}

    def add(self, chunk: Chunk) -> None:
        for name, value in chunk.traces.items():
            self.traces[name].append(host(value)[: chunk.n_steps].T)
        if chunk.n_draws:
            take = chunk.take()
            self.draws.append(jax.tree.map(lambda x: np.swapaxes(host(x)[take], 0, 1), chunk.draws))
            self.steps.append(host(chunk.steps)[take].astype(np.int64))

    def last_log_posterior(self) -> np.ndarray:
        """(chain,) the log posterior at the chunk's last step."""
        return self.traces["log_posterior"][-1][:, -1]

    def result(self, like: ArrayTree, num_chains: int) -> Outputs:
        traces = {
            name: np.concatenate(parts, axis=1) if parts else np.zeros((num_chains, 0))
            for name, parts in self.traces.items()
        }
        if not self.draws:
            empty = jax.tree.map(lambda x: np.zeros((x.shape[0], 0, *x.shape[1:]), x.dtype), like)
            return Outputs(empty, np.zeros((0,), np.int64), traces)
        samples = jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *self.draws)
        return Outputs(samples, np.concatenate(self.steps), traces)


class StoreSink:
    """The run's draws written to a zarr store as they come (`output=`, or the draws of a
    checkpointed run): host memory stays at one chunk."""

    def __init__(self, store: DrawStore, in_memory: bool):
        self.store = store
        self.in_memory = in_memory  # load the draws into memory for the result (no `output`)
        self._last: np.ndarray | None = None

    def add(self, chunk: Chunk) -> None:
        kept = None if chunk.kept is None else np.asarray(chunk.kept)
        steps = None if chunk.steps is None else host(chunk.steps)
        self.store.add(chunk.draws, chunk.n_draws, kept, steps, chunk.traces, chunk.n_steps)
        if chunk.n_steps:
            self._last = host(chunk.traces["log_posterior"])[chunk.n_steps - 1]

    def last_log_posterior(self) -> np.ndarray:
        return np.asarray(self._last)

    def result(self, like: ArrayTree, num_chains: int) -> Outputs:
        self.store.finalize()
        samples = self.store.samples(jax.tree.structure(like))
        traces: dict[str, Any] = {tr.name: self.store.trace(tr.name) for tr in TRACES}
        if self.in_memory:
            samples = jax.tree.map(np.asarray, samples)
            traces = {name: np.asarray(v) for name, v in traces.items()}
        return Outputs(samples, self.store.sample_steps(), traces)
