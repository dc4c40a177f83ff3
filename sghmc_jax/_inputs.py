"""Numeric hyperparameters as inputs of `sample()`'s compiled programs, so that a sweep compiles
once.

A notebook user tunes `lr`, `alpha` or `temperature` by calling `sample()` again. Closed over as
Python numbers, those values were constants of the compiled program, and every new value
compiled it again. Here they become arguments of the program instead:

- While `sample()` traces a program, a scope is active. Each of this library's transforms looks
  its numeric hyperparameters up in it (`resolve`) when its `init` or `update` is traced, and gets
  back the program's inputs in place of the numbers. This reaches a transform wherever it is, alone,
  inside `optax.chain` or another wrapper, or built by the user's factory inside the program.
- The values are found by a first pass (`collect`: the transforms' `init` or `update` traced
  under `jax.eval_shape`, `init_probe` and `update_probe`, with a scope that only records them,
  transform by transform in the order their lookups come), then passed as one argument
  (`taking`). A transform's slot holds inputs only if the second pass finds
  the same names and values there, so a lookup order that differed between the passes would leave
  constants in the program, never another transform's values.
- Compiled programs are cached by what they compute (`content_digest`: the traced jaxpr, with the
  values of its constants), not by the identity of the user's functions, so a new lambda or a new
  `make_log_posterior` object of the same structure finds the program compiled before.

Each input keeps the dtype and weak type that `jnp.asarray` gives the number, what the rules made
of the constant (they put every hyperparameter through `jnp.asarray` and a barrier,
`kernels._coefficients`), so the numbers do not change.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.core  # Tracer: `import jax` alone does not bind the submodule for type checkers
import jax.extend
import jax.numpy as jnp
import numpy as np

from sghmc_jax import _checks
from sghmc_jax._sampler import identity

__all__: list[str] = []

Inputs = tuple[dict[str, jax.Array], ...]  # per transform (in lookup order), its inputs by name


class _Scope:
    """The lookups of one trace: `given` are the program's inputs (None: the first pass, which only
    records the numbers)."""

    def __init__(self, given: Any = None, expected: Inputs | None = None):
        self.given = given  # the traced inputs
        self.expected = expected  # the values `collect` found
        self.found: list[dict[str, jax.Array]] = []
        self._slots: dict[int, int] = {}
        self._owners: list[Any] = []  # kept alive, so that their ids stay theirs

    def slot(self, owner: Any, values: Mapping[str, Any]) -> int:
        index = self._slots.get(id(owner))
        if index is None:
            index = self._slots[id(owner)] = len(self._owners)
            self._owners.append(owner)
            with jax.ensure_compile_time_eval():  # concrete, not staged into the trace
                self.found.append({k: jnp.asarray(v) for k, v in values.items() if _is_number(v)})
        return index


_active: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("sghmc_jax_inputs", default=None)


def _is_number(value: Any) -> bool:
    """A concrete number (or array of numbers): not a schedule, a bool or a traced value."""
    if callable(value) or isinstance(value, (bool, np.bool_, jax.core.Tracer)):
        return False
    if not isinstance(value, (int, float, np.number, np.ndarray, jax.Array)):
        return False
    return np.asarray(value).dtype.kind in "iuf"


def _same(a: Mapping[str, jax.Array], b: Mapping[str, jax.Array]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].weak_type == b[k].weak_type and np.array_equal(a[k], b[k]) for k in a
    )


def resolve(owner: Any, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """`hyperparameters` (numbers or schedules, by name) with the numbers replaced by the
    program's inputs while `sample()` traces it; as they are otherwise. `owner` identifies the
    transform (the same object at every lookup of one transform)."""
    scope = _active.get()
    if scope is None:
        return dict(hyperparameters)
    index = scope.slot(owner, hyperparameters)
    expected = scope.expected
    if expected is None or index >= len(expected) or not _same(expected[index], scope.found[index]):
        return dict(hyperparameters)
    return {**hyperparameters, **scope.given[index]}


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No scope inside: for checks that need the concrete values."""
    token = _active.set(None)
    try:
        yield
    finally:
        _active.reset(token)


@contextlib.contextmanager
def _scope(given: Any = None, expected: Inputs | None = None) -> Iterator[_Scope]:
    scope = _Scope(given, expected)
    token = _active.set(scope)
    try:
        yield scope
    finally:
        _active.reset(token)


def collect(fn: Callable[..., Any], abstract_args: tuple) -> Inputs:
    """The numeric hyperparameters `fn` looks up when traced on `abstract_args` (nothing runs or
    compiles)."""
    with _scope() as scope:
        jax.eval_shape(fn, *abstract_args)
    return tuple(scope.found)


def _one_chain(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), tree)


def _read_off(made: Any) -> Inputs | None:
    """What `collect` would find, read off without tracing, for one of this library's transforms
    as is (`made`: the transform, or the one its factory made) whose hyperparameters are all
    numbers: its one lookup is of them. None otherwise (a wrapper, a schedule: trace). A wrong
    answer here costs a sweep, never a number: the trace keeps constants where it finds other
    values (`taking`)."""
    values = getattr(made, "hyperparameters", None)
    if getattr(made, "sampler", None) is None or not isinstance(values, dict):
        return None
    if any(callable(v) for v in values.values()):
        return None
    with jax.ensure_compile_time_eval():
        return ({k: jnp.asarray(v) for k, v in values.items() if _is_number(v)},)


def init_probe(
    transform: Any, is_transform: bool, key: Any, params: Any, stacked: bool, made: Any = None
) -> Callable[[], Inputs]:
    """`collect` for the initial-state program, tracing only what looks hyperparameters up in it:
    one chain's `transform.init` (of the transform `transform(key)` makes, for a factory); read
    off `made` (`_read_off`) where it can be."""
    params = _one_chain(params) if stacked else params
    one = jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), (key, params))
    return lambda: _read_off(made) or collect(lambda k, p: (transform if is_transform else transform(k)).init(p), one)


def update_probe(
    update: Callable[..., Any], state: Any, target_temperature: float | None, made: Any = None
) -> Callable[[], Inputs]:
    """`collect` for the chunk program, tracing only what looks hyperparameters up in it: one
    chain's `update` (which also checks the transform's temperature against `target_temperature`,
    as the program's would); read off `made` (`_read_off`) where it can be, with that check made
    on its temperature."""
    extra = {} if target_temperature is None else {"target_temperature": target_temperature}
    one = _one_chain((state.params, state.transform_state, state.noise_key))

    def probe() -> Inputs:
        found = _read_off(made)
        if found is None:
            return collect(lambda p, s, k: update(p, s, p, key=k, **extra), one)
        if "temperature" in made.hyperparameters:
            _checks.check_target_temperature(made.sampler, made.hyperparameters["temperature"], target_temperature)
        return found

    return probe


def taking(fn: Callable[..., Any], inputs: Inputs, complete: list[bool]) -> Callable[..., Any]:
    """`fn` with one more, last, argument, traced in place of `inputs` (what `collect` found),
    which its lookups return. Appends to `complete` whether the trace found exactly `inputs`
    (every number an input: False when a lookup fell back to constants)."""

    def with_inputs(*args: Any) -> Any:
        with _scope(args[-1], inputs) as scope:
            out = fn(*args[:-1])
        found = scope.found
        complete.append(len(found) == len(inputs) and all(_same(a, b) for a, b in zip(inputs, found, strict=True)))
        return out

    # The program's name is `fn`'s (what names it in profiles and in JAX's persistent cache).
    with_inputs.__name__, with_inputs.__qualname__ = fn.__name__, fn.__qualname__
    return with_inputs


def abstract(inputs: Inputs) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, weak_type=x.weak_type), inputs)


def signature(inputs: Inputs) -> tuple:
    """What a program compiled for `inputs` depends on: their names, shapes and types."""
    return tuple(tuple((k, x.shape, str(x.dtype), x.weak_type) for k, x in sorted(d.items())) for d in inputs)


def digest(inputs: Inputs) -> str:
    """A digest of the inputs' values (part of a run's identity: they are no longer constants of
    the program, whose digest identified them before)."""
    return identity.digest([dict(d) for d in inputs])


# Primitives whose Python callables are differentiation rules: a compiled program that is not
# differentiated again runs only their primal jaxpr, which the digest covers.
_RULES_ONLY = frozenset({"custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"})
# Python functions in a parameter (not objects such as a `Mesh`, whose repr is their content).
_FUNCTIONS = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, functools.partial)


def _walk(jaxpr: Any, consts: list[Any]) -> bool:
    """Gathers the constants of the jaxprs nested in `jaxpr`'s equations into `consts`; whether
    every Python function in their parameters is a differentiation rule (False: a callback, or
    another function that the jaxpr's text does not identify)."""
    safe = True
    for eqn in jaxpr.eqns:
        for value in eqn.params.values():
            for item in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(item, jax.extend.core.ClosedJaxpr):
                    consts.extend(item.consts)
                    safe = _walk(item.jaxpr, consts) and safe
                elif isinstance(item, jax.extend.core.Jaxpr):
                    safe = _walk(item, consts) and safe
                elif isinstance(item, _FUNCTIONS) and eqn.primitive.name not in _RULES_ONLY:
                    safe = False
        if "callback" in eqn.primitive.name:  # pure_callback, io_callback, debug_callback
            safe = False
    return safe


def content_digest(closed_jaxpr: Any) -> tuple[str, bool]:
    """(a digest of what a traced program computes, whether the digest identifies it).

    The digest is `identity.program_digest`'s (the jaxpr's text without object addresses, and
    its constants' values) with the values of the constants of nested jaxprs. It identifies the
    program unless an equation holds a Python callable that runs (`jax.pure_callback`,
    `jax.debug.print`, ...): two callbacks print alike, so such a program is also keyed by the
    user's functions. The callables of `custom_jvp`/`custom_vjp` are differentiation rules, and the
    chunk program differentiates the log posterior while it is traced (the jaxpr holds the
    gradient's equations, not the rule): the compiled program never calls them.
    """
    nested: list[Any] = []
    safe = _walk(closed_jaxpr.jaxpr, nested)
    h = hashlib.sha256(identity.program_digest(closed_jaxpr).encode())
    h.update(identity.digest(nested).encode())
    return h.hexdigest(), safe
