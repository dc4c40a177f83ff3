"""Where a run's draws go: host memory (the default), or a zarr (v3) store on disk that each chunk's
draws, their steps and the per-step traces are written to as they come, so that host memory
stays at one chunk whatever the run's length.

Why zarr v3 (with zarr-python) rather than tensorstore: it is the format's reference
implementation in pure Python, a store is readable as it is by `zarr.open`, xarray and ArviZ, and
every chunk is a file of its own, so the processes of a multi-host run each write the chains
they hold without coordinating (one chain per chunk along the chain axis). tensorstore (which
orbax brings) writes the same format, so a user can read the store with either.

Layout of a store: the group's attrs hold the leaf names, how many draws and steps are written
and the run's fingerprint; `samples/<leaf>` is (chain, draw, ...leaf shape), `sample_steps` is
(draw,), and each per-step trace of `traces.TRACES` (the log posterior, the kinetic energy) is
a (chain, step) array of its name.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from typing import Any

import jax
import numpy as np

from sghmc_jax._sampler.identity import changes
from sghmc_jax._sampler.traces import TRACES
from sghmc_jax.types import StoredArray

__all__: list[str] = []

_CHUNK_BYTES = 64 << 20  # at most this much per stored chunk of draws
# A store is made under this name beside its path, then renamed to it: a kill while it is being
# made leaves no half-made store at the path (only this, which the next run removes).
_CREATING = ".sghmc-creating"
# What zarr's local store writes a chunk to before renaming it into place (`<name>.<uuid
# hex>.partial`): a kill mid-write leaves one behind, which a resumed run removes.
_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")


def zarr_module() -> Any:
    try:
        import zarr
    except ImportError as err:
        raise ImportError(
            "writing draws to disk (`output=`, or `checkpoint_dir=`) needs zarr: pip install 'sghmc_jax[disk]'"
        ) from err
    return zarr


def leaf_names(tree: Any) -> list[str]:
    from sghmc_jax import diagnostics

    leaves, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, StoredArray))
    names = [diagnostics._path_name(p) for p, _ in leaves]
    if len(set(names)) < len(names):
        names = [jax.tree_util.keystr(p) for p, _ in leaves]
    return [n.replace("/", "_") for n in names]


def _write_local(array: Any, region: tuple[slice, ...], value: jax.Array | np.ndarray, take: Any) -> list[int]:
    """Writes the parts of a (maybe sharded, maybe multi-process) (draw, chain, ...) buffer this
    process holds into `array[chain, draws, ...]` (`region` says which draws, `take` picks them
    from the buffer: a slice or index array); returns the chains written."""
    if not isinstance(value, jax.Array):
        block = np.swapaxes(np.asarray(value)[take], 0, 1)
        array[region] = block
        return list(range(block.shape[0]))
    written = []
    for shard in value.addressable_shards:
        if shard.replica_id != 0:  # another device holds the same values and writes them
            continue
        index = tuple(shard.index) + (slice(None),) * (value.ndim - len(shard.index))
        block = np.swapaxes(np.asarray(shard.data)[take], 0, 1)
        start = index[1].start or 0
        inner = tuple(slice(i.start or 0, (i.start or 0) + n) for i, n in zip(index[2:], block.shape[2:], strict=True))
        array[(slice(start, start + block.shape[0]), region[1], *inner)] = block
        written += range(start, start + block.shape[0])
    return written


def _write_trace(array: Any, start: int, value: jax.Array, n_steps: int) -> None:
    for shard in value.addressable_shards if isinstance(value, jax.Array) else ():
        if shard.replica_id != 0:
            continue
        chains = shard.index[1] if len(shard.index) > 1 else slice(None)
        block = np.asarray(shard.data)[:n_steps].T
        c0 = chains.start or 0
        array[c0 : c0 + block.shape[0], start : start + n_steps] = block
    if not isinstance(value, jax.Array):
        array[:, start : start + n_steps] = np.asarray(value)[:n_steps].T


class DrawStore:
    """A zarr group the run's draws go to, append-only: each chunk writes the draws and steps
    after the ones already there; a resumed run first cuts back to the counts of its checkpoint
    (draws written after it are written again, identically)."""

    def __init__(
        self,
        path: str,
        *,
        params: Any,
        num_chains: int,
        max_draws: int,
        max_steps: int,
        chunk_draws: int,
        chunk_steps: int,
        fingerprint: str,
        parts: dict[str, Any],
        resume: bool,
        trace_dtypes: dict[str, Any],
    ):
        zarr = zarr_module()
        self.path = os.fspath(path)
        self.names = leaf_names(params)
        leaves = jax.tree.leaves(params)
        exists = os.path.exists(os.path.join(self.path, "zarr.json"))
        if exists:
            group = zarr.open_group(self.path, mode="r+")
            if group.attrs.get("fingerprint") != fingerprint:
                raise ValueError(
                    f"{self.path!r} holds draws of another run, which this call will not resume or "
                    f"return: {changes(group.attrs.get('run'), parts)}. sghmc_jax never "
                    "overwrites draws: give `output` (or `checkpoint_dir`) a new path"
                )
            if not resume:
                raise ValueError(
                    f"{self.path!r} already holds this run's draws; give `output` a new path "
                    "(nothing of the old run is deleted), or a `checkpoint_dir` to make the run resumable"
                )
            self.group = group
            self._remove_partial_writes()
        else:
            if os.path.exists(self.path) and os.listdir(self.path):
                raise ValueError(
                    f"`output` {self.path!r} exists and is not empty; sghmc_jax never writes over "
                    "files it did not make: give a new path"
                )
            self.group = self._create(
                zarr,
                leaves,
                num_chains,
                max_draws,
                max_steps,
                chunk_draws,
                chunk_steps,
                {"fingerprint": fingerprint, "run": parts},
                trace_dtypes,
            )
        self.arrays = [self.group[f"samples/{n}"] for n in self.names]
        self.steps = self.group["sample_steps"]
        self.traces = {tr.name: self.group[tr.name] for tr in TRACES}
        self.local_chains: set[int] = set()
        self.draws_written = int(self.group.attrs.get("num_draws", 0))
        self.steps_written = int(self.group.attrs.get("num_steps", 0))

    def _remove_partial_writes(self) -> None:
        """Removes the chunk files a kill left half-written (zarr's `*.partial`); the resumed run
        writes those chunks again. Each process removes its own (they write different files)."""
        for root, _, files in os.walk(self.path):
            for name in files:
                if _PARTIAL.search(name):
                    try:
                        os.unlink(os.path.join(root, name))
                    except FileNotFoundError:  # another process of the run removed it
                        pass

    def _create(
        self,
        zarr: Any,
        leaves: list,
        chains: int,
        max_draws: int,
        max_steps: int,
        chunk_draws: int,
        chunk_steps: int,
        attrs: dict[str, Any],
        trace_dtypes: dict[str, Any],
    ) -> Any:
        """Makes the store under a temporary name beside `path` and renames it into place, so
        that a kill while it is being made leaves nothing at `path` for the rerun to refuse."""
        if jax.process_index() == 0:
            building = self.path.rstrip(os.sep) + _CREATING
            if os.path.exists(building):  # a kill left it while making this store: ours, unfinished
                shutil.rmtree(building)
            group = zarr.open_group(building, mode="w-", zarr_format=3)
            for name, leaf in zip(self.names, leaves, strict=True):
                shape = tuple(np.shape(leaf))[1:]
                # A stored chunk is one chain's draws of one shard of the leaf: the devices (and
                # processes) holding different shards never write the same file.
                sharding = getattr(leaf, "sharding", None)
                block = tuple(sharding.shard_shape(np.shape(leaf)))[1:] if sharding is not None else shape
                itemsize = np.dtype(leaf.dtype).itemsize * max(1, math.prod(block))
                per_chunk = max(1, min(chunk_draws, _CHUNK_BYTES // itemsize))
                group.create_array(
                    f"samples/{name}",
                    shape=(chains, max(max_draws, 1), *shape),
                    chunks=(1, per_chunk, *block),
                    dtype=np.dtype(leaf.dtype),
                    fill_value=np.nan,
                )
            group.create_array(
                "sample_steps", shape=(max(max_draws, 1),), chunks=(max(chunk_draws, 1),), dtype="int64", fill_value=-1
            )
            for name, dtype in trace_dtypes.items():
                # The traces keep the dtypes they have in memory (the log posterior's value's, the
                # momenta's at least float32).
                group.create_array(
                    name,
                    shape=(chains, max(max_steps, 1)),
                    chunks=(1, max(chunk_steps, 1)),
                    dtype=np.dtype(dtype),
                    fill_value=np.nan,
                )
            group.attrs.update({**attrs, "leaves": self.names, "num_draws": 0, "num_steps": 0})
            # An empty directory at `path` (made by the user for the run) is replaced; anything
            # else there was refused above.
            os.replace(building, self.path)
        _barrier("sghmc_jax store created")
        return zarr.open_group(self.path, mode="r+")

    def truncate(self, draws: int, steps: int) -> None:
        """Back to `draws` draws and `steps` steps (a checkpoint's counts)."""
        self.draws_written, self.steps_written = draws, steps
        self._commit()

    def add(
        self,
        draws: Any,
        n_draws: int,
        kept: np.ndarray | None,
        steps: np.ndarray,
        traces: dict[str, jax.Array],
        n_steps: int,
    ) -> None:
        """Appends a chunk: `draws` (draw, chain, ...) buffers of which the first `n_draws` are
        this chunk's (`kept` picks those to store), their `steps`, and the (step, chain) buffers
        of the traces by name."""
        take: Any = slice(0, n_draws) if kept is None else np.flatnonzero(kept[:n_draws])
        count = n_draws if kept is None else int(np.sum(kept[:n_draws]))
        d0 = self.draws_written
        if count:
            self._grow(d0 + count)
            for array, leaf in zip(self.arrays, jax.tree.leaves(draws), strict=True):
                self.local_chains.update(_write_local(array, (slice(None), slice(d0, d0 + count)), leaf, take))
            if jax.process_index() == 0:
                self.steps[d0 : d0 + count] = np.asarray(steps)[take].astype(np.int64)
        self._grow_trace(self.steps_written + n_steps)
        for name, value in traces.items():
            _write_trace(self.traces[name], self.steps_written, value, n_steps)
        self.draws_written += count
        self.steps_written += n_steps
        self._commit()

    def _grow(self, draws: int) -> None:
        if draws > self.steps.shape[0]:  # `keep` or a resumed longer run: make room
            _barrier("sghmc_jax store resize")
            if jax.process_index() == 0:
                size = max(draws, 2 * self.steps.shape[0])
                for array in self.arrays:
                    array.resize((array.shape[0], size, *array.shape[2:]))
                self.steps.resize((size,))
            _barrier("sghmc_jax store resized")
            self.__init_arrays()

    def _grow_trace(self, steps: int) -> None:
        if steps > next(iter(self.traces.values())).shape[1]:
            _barrier("sghmc_jax trace resize")
            if jax.process_index() == 0:
                for array in self.traces.values():
                    array.resize((array.shape[0], max(steps, 2 * array.shape[1])))
            _barrier("sghmc_jax trace resized")
            self.__init_arrays()

    def __init_arrays(self) -> None:
        zarr = zarr_module()
        self.group = zarr.open_group(self.path, mode="r+")
        self.arrays = [self.group[f"samples/{n}"] for n in self.names]
        self.steps = self.group["sample_steps"]
        self.traces = {name: self.group[name] for name in self.traces}

    def _commit(self) -> None:
        _barrier("sghmc_jax chunk written")
        if jax.process_index() == 0:
            self.group.attrs.update({"num_draws": self.draws_written, "num_steps": self.steps_written})

    def mark_missing(self, missing: np.ndarray) -> None:
        """Writes NaN over the (chain, draw) entries where `missing` (a diverged chain's draws
        from its divergence on, one of which the chunk stored before the divergence was
        found); each process writes the chains it wrote."""
        for chain in np.flatnonzero(missing.any(axis=1)):
            if self._writes_chain(chain):
                draws = np.flatnonzero(missing[chain])
                for array in self.arrays:
                    array[chain, int(draws[0]) : int(draws[-1]) + 1] = np.nan

    def _writes_chain(self, chain: int) -> bool:
        return jax.process_count() == 1 or chain in self.local_chains

    def finalize(self) -> None:
        """Cuts the arrays to what was written (they grow in steps ahead of the draws)."""
        _barrier("sghmc_jax store finalize")
        if jax.process_index() == 0:
            for array in self.arrays:
                array.resize((array.shape[0], self.draws_written, *array.shape[2:]))
            self.steps.resize((self.draws_written,))
            for array in self.traces.values():
                array.resize((array.shape[0], self.steps_written))
        _barrier("sghmc_jax store finalized")
        self.__init_arrays()

    def samples(self, treedef: Any) -> Any:
        return jax.tree.unflatten(treedef, [StoredArray(a) for a in self.arrays])

    def sample_steps(self) -> np.ndarray:
        return np.asarray(self.steps[: self.draws_written])

    def trace(self, name: str) -> StoredArray:
        return StoredArray(self.traces[name])


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
