"""The cache of compiled programs: a program for given abstract arguments is compiled once and
reused by later calls (and later runs) with the same key: the program views of the run plan's
records (the user's functions by identity, the settings that shape the program) and the
arguments' shapes, dtypes and shardings."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from sghmc_jax._sampler import identity

__all__: list[str] = []

_CACHE_SIZE = 32
_cache: collections.OrderedDict[Any, Any] = collections.OrderedDict()
# The traced program of each cached one, for its digest (what identifies a run: `identity.py`),
# computed when a run first asks for it.
_jaxprs: dict[Any, Any] = {}
_digests: dict[Any, str] = {}


def _sharding_key(x: Any) -> Any:
    """The sharding a program is compiled for: None for the default device."""
    sharding = getattr(x, "sharding", None)
    if sharding is None or (
        isinstance(sharding, jax.sharding.SingleDeviceSharding) and sharding.device_set == {jax.devices()[0]}
    ):
        return None
    return sharding


def abstract(tree: Any) -> Any:
    """`jax.ShapeDtypeStruct`s of a tree's leaves, with their shardings (None: default device)."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x), sharding=_sharding_key(x)),
        tree,
    )


def _signature(tree: Any) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((tuple(x.shape), str(x.dtype), x.sharding) for x in leaves)


class Program:
    """A program for given abstract arguments: taken from the cache, or traced now (so errors in
    the user's functions surface before anything compiles) and compiled by `executable()`."""

    def __init__(self, key: tuple, fn: Callable, abstract_args: tuple, donate_argnums: tuple[int, ...] = ()):
        self._key = (key, _signature(abstract_args))
        self._executable = _cache.get(self._key)
        self._traced = None
        if self._executable is not None:
            _cache.move_to_end(self._key)
        else:
            self._traced = jax.jit(fn, donate_argnums=donate_argnums).trace(*abstract_args)

    @property
    def cached(self) -> bool:
        return self._traced is None

    def out_info(self) -> Any:
        """Abstract outputs (shardings as `abstract` spells them)."""
        info = self._executable.out_info if self._executable is not None else self._traced.out_info
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=_sharding_key(s)), info)

    def executable(self) -> Any:
        if self._executable is None:
            self._executable = self._traced.lower().compile()
            _cache[self._key] = self._executable
            _jaxprs[self._key] = self._traced.jaxpr
            if len(_cache) > _CACHE_SIZE:
                old, _ = _cache.popitem(last=False)
                _jaxprs.pop(old, None)
                _digests.pop(old, None)
        return self._executable

    def digest(self) -> str:
        """A digest of the program's jaxpr and constants (`identity.program_digest`)."""
        if self._key not in _digests:
            jaxpr = self._traced.jaxpr if self._traced is not None else _jaxprs[self._key]
            digest = identity.program_digest(jaxpr)
            if self._key in _cache:
                _digests[self._key] = digest
            return digest
        return _digests[self._key]


def clear_cache() -> None:
    """Drops every cached compiled program (they hold references to the user's functions)."""
    _cache.clear()
    _jaxprs.clear()
    _digests.clear()
