"""Minibatches: from `data` on the device, in one of the orders of `ORDERS`, or from an iterable
of host batches moved to the device a chunk at a time.

Each chain walks its own order of `data`. The data are held as (shard, example, ...) when a data
axis splits them: each chain then takes batch_size / shards examples from every shard, so that
each device of the data axis draws its part of the minibatch from the examples it holds. One
shard is the plain scheme.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sghmc_jax import _checks
from sghmc_jax._sampler import placement as placing
from sghmc_jax._sampler.fields import setting, value

__all__: list[str] = []


class Where(NamedTuple):
    """Where a chain's step t is in its walk of the data: the chains' permutations (chain,
    shard, n) of this epoch, the batch's position in it, the epoch, the batches per epoch, the
    examples and batch size per shard, and the chains' data keys."""

    t: jax.Array
    perm: jax.Array
    j: jax.Array
    epoch: jax.Array
    per_epoch: int
    n_local: int
    b_local: int
    shards: int
    data_key: jax.Array


def _new_perm(w: Where) -> jax.Array:
    """A fresh permutation of every shard per chain for epoch `w.epoch`, from fold_in(data_key, epoch)."""

    def chain(k: jax.Array) -> jax.Array:
        k = jax.random.fold_in(k, w.epoch)
        if w.shards == 1:
            return jax.random.permutation(k, w.n_local)[None]
        return jax.vmap(lambda d: jax.random.permutation(jax.random.fold_in(k, d), w.n_local))(jnp.arange(w.shards))

    return jax.vmap(chain)(w.data_key).astype(jnp.int32)


def _slice(w: Where, perm: jax.Array, j: jax.Array) -> jax.Array:
    return jax.lax.dynamic_slice_in_dim(perm, j * w.b_local, w.b_local, axis=2)  # (chain, shard, b)


# `t` is shared by all chains, so each `cond` below stays a real branch under the chain vmap.


def _shuffle(w: Where) -> tuple[jax.Array, jax.Array]:
    """A fresh permutation every epoch, walked in order."""
    perm = jax.lax.cond(w.j == 0, lambda: _new_perm(w), lambda: w.perm)
    return _slice(w, perm, w.j), perm


def _sms(w: Where) -> tuple[jax.Array, jax.Array]:
    """Symmetric minibatch splitting: a cycle of two epochs visits one permutation's batches
    forward, then the same batches backward (a palindrome of kicks)."""
    forward = w.epoch % 2 == 0
    perm = jax.lax.cond((w.j == 0) & forward, lambda: _new_perm(w), lambda: w.perm)
    return _slice(w, perm, jnp.where(forward, w.j, w.per_epoch - 1 - w.j)), perm


def _with_replacement(w: Where) -> tuple[jax.Array, jax.Array]:
    """i.i.d. minibatches (the classical SG-MCMC setting): step t's examples are drawn uniformly
    with replacement from each shard with fold_in(data_key, t), so they depend on the chain's key
    and the global step only. The epoch permutations are not used (`perm` stays as it is)."""

    def draw(k: jax.Array) -> jax.Array:
        k = jax.random.fold_in(k, w.t)
        return jax.vmap(lambda d: jax.random.randint(jax.random.fold_in(k, d), (w.b_local,), 0, w.n_local))(
            jnp.arange(w.shards)
        )

    return jax.vmap(draw)(w.data_key).astype(jnp.int32), w.perm


# The batch orders of `sample(batch_order=...)`: each maps where the chains are to the examples
# of their minibatch, (chain, shard, batch_size / shards), and the permutations they hold next.
ORDERS: dict[str, Callable[[Where], tuple[jax.Array, jax.Array]]] = {
    "shuffle": _shuffle,
    "sms": _sms,
    "with_replacement": _with_replacement,
}


def _leading_size(name: str, tree: Any) -> int:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    if not leaves:
        raise ValueError(f"`{name}` must hold at least one array, got an empty pytree")
    sizes = {jax.tree_util.keystr(p): (np.shape(x)[0] if np.ndim(x) else None) for p, x in leaves}
    if None in sizes.values():
        bad = [k for k, v in sizes.items() if v is None]
        raise ValueError(f"every leaf of `{name}` needs a leading example axis, got scalars at {bad}")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"every leaf of `{name}` must have the same leading size, got {sizes}")
    return int(next(iter(sizes.values())))


@dataclasses.dataclass(frozen=True)
class Batches:
    """The run's minibatches: from `data` (placed on the device), or from host `batches`."""

    # Named as `sample()`'s arguments, so that the run's identity names what changed.
    batch_size: int | None = setting(compiled=True)
    num_data: int | None = setting(compiled=True)
    batch_order: str = setting(compiled=True)
    data_shards: int = setting(compiled=True)
    host_batches: bool = setting(compiled=True)
    data: Any = value()  # placed
    user_data: Any = value()  # as the caller gave it, for `diagnose()`
    iterator: Iterator[Any] | None = value()
    first_host_batch: Any = value()

    @classmethod
    def build(cls, data: Any, batch_size: Any, order: Any, batches: Any, placement: Any) -> Batches:
        if data is not None and batches is not None:
            raise ValueError("pass either `data` (on the device) or `batches` (from the host), not both")
        if order not in ORDERS:
            *rest, last = (repr(o) for o in ORDERS)
            raise ValueError(f"`batch_order` must be {', '.join(rest)} or {last}, got batch_order={order!r}")
        if order != "shuffle" and data is None:
            raise ValueError(
                f"`batch_order={order!r}` orders the minibatches `sample` draws from `data`; "
                "with host `batches` (or no data) the order is the iterable's: pass `data=` and `batch_size=`"
            )
        if data is None:
            if batch_size is not None and batches is None:
                raise ValueError("`batch_size` needs `data`")
            return cls._from_host(batches, placement, order)
        num_data = _leading_size("data", data)
        _checks.check_finite_data("data", data)
        if batch_size is None:
            raise ValueError("`batch_size` is required with `data`")
        batch_size = _checks.check_int("batch_size", batch_size, 1)
        if batch_size > num_data:
            raise ValueError(
                f"`batch_size` must be <= the number of examples in `data` ({num_data}), got batch_size={batch_size}"
            )
        shards = 1 if placement is None else placement.data_shards
        for name, count in (("the number of examples in `data`", num_data), ("`batch_size`", batch_size)):
            if count % shards:
                raise ValueError(
                    f"{name} must be a multiple of the size of data_axis={getattr(placement, 'data_axis', None)!r} "
                    f"({shards}), got {count}"
                )
        placed = placing.place_data(data, placement)
        return cls(batch_size, num_data, order, shards, False, placed, data)

    @classmethod
    def _from_host(cls, batches: Any, placement: Any, order: str) -> Batches:
        if batches is None:
            return cls(None, None, order, 1, False)
        if placement is not None and placement.data_axis is not None:
            raise ValueError("`data_axis` splits on-device `data`; host `batches` are shared by all chains")
        iterator = iter(batches)
        try:
            first = next(iterator)
        except StopIteration:
            raise ValueError("`batches` is empty") from None
        _checks.check_finite_data("batches[0]", first)
        return cls(None, None, order, 1, True, iterator=iterator, first_host_batch=first)

    def example(self) -> Any:
        """One chain's minibatch (abstract for `data`), to trace the log posterior with."""
        if self.data is None:
            return self.first_host_batch
        lead = 1 if self.data_shards == 1 else 2  # placed data are (shard, example, ...) with shards
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct((self.batch_size, *x.shape[lead:]), x.dtype), self.data)

    @property
    def perm_shape(self) -> tuple[int, int]:
        """Each chain's epoch permutation: (shard, examples per shard); (0, 0) without data."""
        return (self.data_shards, self.num_data // self.data_shards) if self.num_data else (0, 0)

    def host_chunk_shape(self, capacity: int) -> Any:
        """The abstract stacked host batches of a chunk, or None."""
        if self.first_host_batch is None:
            return None
        first = jax.tree.map(np.asarray, self.first_host_batch)
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct((capacity, *x.shape), x.dtype), first)


def minibatch(batches: Batches, t: jax.Array, perm: jax.Array, data_key: jax.Array, data: Any) -> tuple[Any, Any]:
    """Inside a step (`batches` is its program view): every chain's minibatch of `data` at step
    `t`, (chain, batch_size, ...), and the permutations the chains hold next."""
    shards = batches.data_shards
    assert batches.num_data is not None and batches.batch_size is not None  # a run with `data`
    n_local, b_local = batches.num_data // shards, batches.batch_size // shards
    per_epoch = n_local // b_local
    where = Where(t, perm, t % per_epoch, t // per_epoch, per_epoch, n_local, b_local, shards, data_key)
    idx, perm = ORDERS[batches.batch_order](where)

    def gather(x: jax.Array) -> jax.Array:
        if shards == 1:  # data held as (N, ...)
            return jax.vmap(lambda i: x[i[0]])(idx)
        picked = jax.vmap(lambda i: jax.vmap(lambda xs, ix: xs[ix])(x, i))(idx)
        return picked.reshape((picked.shape[0], batches.batch_size, *x.shape[2:]))

    return jax.tree.map(gather, data), perm


def host_batch(xs: Any, pos: Any) -> Any:
    """Inside a chunk: the host batch of its step `pos`, or None."""
    if xs is None:
        return None
    return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, pos, keepdims=False), xs)


def take_host_batches(it: Iterator[Any], first: Any, n: int, capacity: int) -> tuple[Any, Any]:
    """Takes n batches (the pending one first), stacks them on a new leading axis and pads it to
    `capacity` (the chunk program's fixed size) by repeating the last."""
    items = []
    pending = first
    for _ in range(n):
        if pending is None:
            try:
                pending = next(it)
            except StopIteration:
                raise ValueError(
                    f"`batches` ran out: it must yield one batch per step ({n - len(items)} more "
                    "were needed to finish this chunk)"
                ) from None
        items.append(pending)
        pending = None
    items += [items[-1]] * (capacity - n)
    stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *items)
    return jax.device_put(stacked), None
