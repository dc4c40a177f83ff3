"""The cache of compiled programs: a program is compiled once and reused by later calls (and
later runs) that trace to the same program: the same computation (the traced jaxpr, its
constants' values, its outputs' tree; the transforms' numeric hyperparameters are inputs,
`sghmc_jax._inputs`, so a sweep over their values reuses it), the same settings (the program
views of the run plan's records, without the user's functions) and the same arguments' shapes,
dtypes and shardings. A call that passes the same functions again does not even trace."""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from sghmc_jax import _inputs

__all__: list[str] = []

_CACHE_SIZE = 32
_cache: collections.OrderedDict[Any, Any] = collections.OrderedDict()
# The cache key of the program each earlier call's functions made (by identity), and the
# signature of its arguments and hyperparameters: a call that passes them again traces nothing.
_known: dict[Any, tuple] = {}


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
    """A program for given abstract arguments, traced now (so errors in the user's functions
    surface before anything compiles), then taken from the cache when a program that computes the
    same was compiled before, or compiled by `executable()`.

    Its numeric hyperparameters are inputs (`_inputs`), and the cache is keyed by what the traced
    program computes (`_inputs.content_digest`), by `key` (settings that place it), the abstract
    arguments and the donation; by `functions` (the user's, by identity) too only when the digest
    cannot identify the program. So a call that changes only hyperparameter values, or passes new
    functions of the same structure, compiles nothing; one that passes the same functions again
    does not even trace the program.
    """

    def __init__(
        self,
        key: tuple,
        fn: Callable,
        abstract_args: tuple,
        donate_argnums: tuple[int, ...] = (),
        functions: tuple = (),
        probe: Callable[[], Any] | None = None,
    ):
        # The hyperparameters' values: `probe` traces only the transforms (`_inputs`).
        self._inputs = probe() if probe is not None else _inputs.collect(fn, abstract_args)
        signature = (_signature(abstract_args), _inputs.signature(self._inputs), donate_argnums)
        # The functions of an earlier call, with hyperparameters of the same names and types:
        # its program, untraced (their values are inputs; the probe has checked them).
        identity = (key, functions, *signature)
        found = _known.get(identity)
        self._traced = None
        if found is None or found not in _cache:
            complete: list[bool] = []
            with_inputs = _inputs.taking(fn, self._inputs, complete)
            self._traced = jax.jit(with_inputs, donate_argnums=donate_argnums).trace(
                *abstract_args, _inputs.abstract(self._inputs)
            )
            content, identifies = _inputs.content_digest(self._traced.jaxpr)
            # The jaxpr is flat: the outputs' tree (an optax.chain's state around the same
            # leaves) is the compiled program's too.
            out_tree = jax.tree.structure(self._traced.out_info)
            found = (key, content, () if identifies else functions, out_tree, *signature)
            if all(complete):
                _known[identity] = found
                if len(_known) > 4 * _CACHE_SIZE:
                    _known.pop(next(iter(_known)))
        self._key: tuple = found
        self._executable = _cache.get(self._key)
        self.cached = self._executable is not None
        if self.cached:
            _cache.move_to_end(self._key)

    def out_info(self) -> Any:
        """Abstract outputs (shardings as `abstract` spells them)."""
        info = self._executable.out_info if self._executable is not None else self._traced.out_info
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=_sharding_key(s)), info)

    def executable(self) -> Callable[..., Any]:
        """The compiled program, called with the arguments `abstract_args` described."""
        if self._executable is None:
            self._executable = self._traced.lower().compile()
            _cache[self._key] = self._executable
            if len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
        return functools.partial(_call, self._executable, self._inputs)

    def digest(self) -> str:
        """A digest of what the program computes (its hyperparameters' values are inputs:
        `inputs_digest`)."""
        return self._key[1]

    def inputs_digest(self) -> str:
        """A digest of the values of the program's hyperparameter inputs."""
        return _inputs.digest(self._inputs)


def _call(executable: Any, inputs: Any, *args: Any) -> Any:
    return executable(*args, inputs)


def clear_cache() -> None:
    """Drops every cached compiled program (they hold references to the user's functions)."""
    _cache.clear()
    _known.clear()
