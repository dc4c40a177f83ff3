"""Where a run lives: on the default device, or on a `mesh` with the chains over `chain_axis`,
the data's shards over `data_axis` and each params leaf partitioned as the user gave it; and the
moves between the host and the device(s) the run needs (whose devices may span processes)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sghmc_jax.types import ArrayTree

__all__: list[str] = []


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a run lives on a device mesh: the chain axis of every per-chain array on
    `chain_axis`, the data's shard axis (and each minibatch) on `data_axis`, and each params leaf
    partitioned as `param_specs` says (the user's params' own specs over the other mesh axes)."""

    mesh: jax.sharding.Mesh
    chain_axis: str | None
    data_axis: str | None
    param_specs: tuple[jax.sharding.PartitionSpec, ...]
    param_paths: tuple[tuple[str, tuple[int, ...]], ...]  # (keystr path, shape) per params leaf

    @property
    def data_shards(self) -> int:
        """How many shards of examples the data are split into (1 without a data axis)."""
        return 1 if self.data_axis is None else int(self.mesh.shape[self.data_axis])

    def chains(self, *rest: Any) -> jax.sharding.NamedSharding:
        """Sharding of an array with a leading chain axis, then `rest` (a PartitionSpec's)."""
        return jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(self.chain_axis, *rest))

    def replicated(self) -> jax.sharding.NamedSharding:
        return jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())

    def params(self, tree: ArrayTree) -> ArrayTree:
        """Constrains chain-stacked params (or a tree shaped like them) to their shardings."""
        leaves, treedef = jax.tree.flatten(tree)
        return jax.tree.unflatten(
            treedef,
            [
                jax.lax.with_sharding_constraint(x, self.chains(*spec))
                for x, spec in zip(leaves, self.param_specs, strict=True)
            ],
        )

    def like_params(self, tree: Any) -> Any:
        """Constrains a per-chain tree (a transform state) leaf by leaf: a leaf shaped like a
        params leaf whose path ends with that leaf's path (or, failing that, the only params
        leaf of its shape) is partitioned like it; any other is split over chains only."""

        def spec_for(path: str, shape: tuple[int, ...]) -> Any:
            matches = [i for i, (p, s) in enumerate(self.param_paths) if s == shape and path.endswith(p)]
            if not matches:
                matches = [i for i, (_, s) in enumerate(self.param_paths) if s == shape]
            return self.param_specs[matches[-1]] if len(matches) >= 1 else jax.sharding.PartitionSpec()

        def constrain(path: Any, x: jax.Array) -> jax.Array:
            if not hasattr(x, "shape") or jnp.ndim(x) == 0:
                return x
            spec = spec_for(jax.tree_util.keystr(path), tuple(x.shape[1:]))
            return jax.lax.with_sharding_constraint(x, self.chains(*spec))

        return jax.tree_util.tree_map_with_path(constrain, tree)

    def data_sharding(self) -> jax.sharding.NamedSharding:
        """The data's (shard, example, ...) layout: shards on `data_axis`."""
        return jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(self.data_axis))


def build(
    mesh: Any, chain_axis: Any, data_axis: Any, num_chains: int, params: ArrayTree, stacked: bool
) -> Placement | None:
    """The run's placement on `mesh`, checked; None without a mesh."""
    if mesh is None:
        if chain_axis is not None or data_axis is not None:
            raise ValueError("`chain_axis` and `data_axis` name axes of a `mesh`; pass the mesh too")
        return None
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"`mesh` must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    mesh = _auto_axes(mesh)
    for name, axis in (("chain_axis", chain_axis), ("data_axis", data_axis)):
        if axis is not None and axis not in mesh.axis_names:
            raise ValueError(f"`{name}` must be one of the mesh's axes {mesh.axis_names}, got {name}={axis!r}")
    if chain_axis is not None and chain_axis == data_axis:
        raise ValueError(f"`chain_axis` and `data_axis` must be different axes, got {chain_axis!r} for both")
    if chain_axis is not None and num_chains % mesh.shape[chain_axis]:
        raise ValueError(
            f"`num_chains` must be a multiple of the size of chain_axis={chain_axis!r} "
            f"({mesh.shape[chain_axis]}), got num_chains={num_chains}"
        )
    specs, paths = [], []
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        specs.append(_param_spec(path, x, mesh, stacked, chain_axis, data_axis))
        shape = tuple(np.shape(x)[1:] if stacked else np.shape(x))
        paths.append((jax.tree_util.keystr(path), shape))
    return Placement(mesh, chain_axis, data_axis, tuple(specs), tuple(paths))


def _param_spec(path: Any, x: Any, mesh: jax.sharding.Mesh, stacked: bool, chain_axis: Any, data_axis: Any) -> Any:
    """The partition of one params leaf (without its chain axis): the user's, over `mesh`."""
    sharding = getattr(x, "sharding", None)
    spec = jax.sharding.PartitionSpec()
    if isinstance(sharding, jax.sharding.NamedSharding):
        if sharding.mesh.shape != mesh.shape or sharding.mesh.axis_names != mesh.axis_names:
            raise ValueError(
                f"the params leaf at {jax.tree_util.keystr(path)} is sharded over another mesh "
                f"({dict(sharding.mesh.shape)}) than `mesh` ({dict(mesh.shape)})"
            )
        spec = sharding.spec
    entries = tuple(spec) + (None,) * (np.ndim(x) - len(spec))
    if stacked:
        entries = entries[1:]
    used = {a for e in entries for a in (e if isinstance(e, tuple) else (e,)) if a is not None}
    if used & {chain_axis, data_axis} - {None}:
        raise ValueError(
            f"the params leaf at {jax.tree_util.keystr(path)} is partitioned over {sorted(used)}, "
            f"which must not include chain_axis={chain_axis!r} or data_axis={data_axis!r}"
        )
    return jax.sharding.PartitionSpec(*entries)


def _auto_axes(mesh: jax.sharding.Mesh) -> jax.sharding.Mesh:
    """The same devices and axis names with every axis Auto (the sampler places its arrays with
    sharding constraints, which Explicit axes, `jax.make_mesh`'s default, do not take)."""
    auto = jax.sharding.AxisType.Auto
    if all(t == auto for t in mesh.axis_types):
        return mesh
    return jax.sharding.Mesh(mesh.devices, mesh.axis_names, axis_types=(auto,) * len(mesh.axis_names))


def constrain(x: Any, sharding: Any) -> Any:
    """`x` constrained to `sharding` inside a program; unchanged without one."""
    return x if sharding is None else jax.lax.with_sharding_constraint(x, sharding)


def onto_mesh(x: Any, placement: Placement) -> Any:
    """A params leaf on the run's mesh: partitioned as it is over the mesh it came on (the same
    devices and axes, maybe Explicit ones), or replicated when it came unpartitioned."""
    sharding = getattr(x, "sharding", None)
    if not isinstance(sharding, jax.sharding.NamedSharding):
        return on_mesh(x, placement.replicated())
    if sharding.mesh != placement.mesh:
        return jax.device_put(x, jax.sharding.NamedSharding(placement.mesh, sharding.spec))
    return x


def on_mesh(x: Any, sharding: jax.sharding.NamedSharding) -> jax.Array:
    """`x` (whole on this host) as an array laid out as `sharding`, whose devices may span
    processes (each process gives its own devices their parts)."""
    host_x = np.asarray(x)
    return jax.make_array_from_callback(host_x.shape, sharding, lambda index: host_x[index])


def key_onto_mesh(key: jax.Array, placement: Placement | None) -> jax.Array:
    """The run's key replicated over the mesh (every input of a program over the mesh must live
    on it); unchanged without a mesh."""
    if placement is None:
        return key
    data = on_mesh(jax.random.key_data(key), placement.replicated())
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(key))


def place_data(data: ArrayTree, placement: Placement | None) -> ArrayTree:
    """The data on the device(s): as they are without a data axis (replicated over a mesh), else
    split into equal shards of examples, (shard, example, ...), the shards over the data axis; a
    process holding the whole data set gives each of its devices its shards."""

    def place(x: Any) -> jax.Array:
        if placement is None:
            return jnp.asarray(x)
        shards = placement.data_shards
        if shards == 1:
            return on_mesh(x, placement.replicated())
        host_x = np.asarray(x)
        return on_mesh(
            host_x.reshape((shards, host_x.shape[0] // shards, *host_x.shape[1:])), placement.data_sharding()
        )

    return jax.tree.map(place, data)


def zeros(shape: tuple[int, ...], dtype: Any, sharding: Any) -> jax.Array:
    """Zeros on the default device, or laid out as `sharding` (whose devices may span processes)."""
    if sharding is None:
        return jnp.zeros(shape, dtype)
    return on_mesh(np.zeros(shape, dtype), sharding)


def host(x: Any) -> np.ndarray:
    """`x` as a NumPy array on this host, gathering the parts other processes hold."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def copy(tree: Any) -> Any:
    """New buffers for the arrays of `tree` (the chunks donate their state)."""
    return jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x, tree)
