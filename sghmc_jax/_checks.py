"""Argument checks shared by every face: keys, hyperparameters and pytrees.

Numeric hyperparameters are checked only when their value is concrete (a Python or NumPy number,
or a JAX array that is not being traced), so `jit`, `vmap` over hyperparameters, schedules and
`optax.inject_hyperparams` keep working. Static things (callables, tree structures, shapes,
dtypes, keys) are always checked.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__: list[str] = []


def concrete_float(value: Any) -> float | None:
    """Returns `value` as a Python float if it is a concrete real scalar, else None."""
    if isinstance(value, jax.core.Tracer) or callable(value):
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float, np.number)):
        return float(value)
    if isinstance(value, (np.ndarray, jax.Array)):
        if value.size != 1:
            return None
        try:
            return float(np.asarray(value).reshape(()))
        except (TypeError, jax.errors.ConcretizationTypeError):
            return None
    return None


def check_scalar(name: str, value: Any) -> None:
    """Raises if a concrete hyperparameter is not a real scalar (traced values pass)."""
    if callable(value) or isinstance(value, jax.core.Tracer):
        return
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a real number, got the bool {value!r}")
    if isinstance(value, (int, float, np.number)):
        return
    if isinstance(value, (np.ndarray, jax.Array)):
        if value.shape != ():
            raise ValueError(f"`{name}` must be a scalar, got an array of shape {value.shape}")
        if not (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)):
            raise TypeError(f"`{name}` must be a real number, got an array of dtype {value.dtype}")
        return
    raise TypeError(
        f"`{name}` must be a float, a scalar array or a schedule (a callable of the step), "
        f"got {type(value).__name__}: {value!r}"
    )


def value_at_start(value: Any) -> Any:
    """The value a hyperparameter takes at step 0 (schedules are evaluated there)."""
    if callable(value):
        return value(jnp.zeros([], jnp.int32))
    return value


def check_sghmc_hyperparameters(
    *,
    lr: Any,
    alpha: Any,
    beta: Any,
    sigma: Any,
    temperature: Any,
    lr_name: str = "lr",
) -> None:
    """Checks SGHMC's hyperparameter rules for every value that is concrete.

    Schedules are checked at step 0 (the only step whose value is known at build time).
    """
    values = {lr_name: lr, "alpha": alpha, "beta": beta, "sigma": sigma, "temperature": temperature}
    for name, value in values.items():
        check_scalar(name, value)
    c = {name: concrete_float(value_at_start(value)) for name, value in values.items()}
    rules: list[tuple[str, Callable[[float], bool], str]] = [
        (lr_name, lambda v: v > 0, "> 0"),
        ("alpha", lambda v: v >= 0, ">= 0"),
        ("beta", lambda v: v >= 0, ">= 0"),
        ("sigma", lambda v: v > 0, "> 0"),
        ("temperature", lambda v: v >= 0, ">= 0"),
    ]
    for name, ok, rule in rules:
        v = c[name]
        if v is None:
            continue
        where = " (a schedule, at step 0)" if callable(values[name]) else ""
        if not math.isfinite(v) or not ok(v):
            raise ValueError(f"`{name}` must be finite and {rule}, got {name}={v!r}{where}")
    a, b, e, t = c["alpha"], c["beta"], c[lr_name], c["temperature"]
    if None not in (a, b, e, t) and 2.0 * a - e * b * t < 0:
        raise ValueError(
            "SGHMC's noise variance needs 2*alpha - lr*beta*temperature >= 0 "
            f"(beta may not exceed the friction's share of the noise), got "
            f"2*{a!r} - {e!r}*{b!r}*{t!r} = {2.0 * a - e * b * t!r}; "
            f"lower `{lr_name}` or `beta`, or raise `alpha`"
        )


def canonical_key(key: Any, name: str = "key") -> jax.Array:
    """Returns a typed PRNG key from a typed key, a raw uint32 key or an int seed.

    Raw uint32 keys are wrapped with JAX's default key implementation, as `jax.random`
    functions do. Traced int seeds (e.g. a seed held by `optax.inject_hyperparams`) work too.
    """
    if isinstance(key, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a PRNG key or an int seed, got the bool {key!r}")
    if isinstance(key, (int, np.integer)):
        return jax.random.key(int(key))
    dtype = getattr(key, "dtype", None)
    shape = getattr(key, "shape", None)
    if dtype is not None:
        if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            if shape != ():
                raise ValueError(
                    f"`{name}` must be a single PRNG key, got a key array of shape {shape}; "
                    "vmap over chains instead of passing a batch of keys"
                )
            return key
        if jnp.issubdtype(dtype, jnp.integer) and shape == ():
            return jax.random.key(key)
        if dtype == jnp.uint32 and len(shape) == 1:
            try:
                return jax.random.wrap_key_data(key)
            except (TypeError, ValueError) as err:
                raise TypeError(
                    f"`{name}` is a raw uint32 array of shape {shape}, which is not a key of the "
                    f"default implementation ({err}); pass a typed key from jax.random.key"
                ) from None
    raise TypeError(
        f"`{name}` must be a PRNG key (jax.random.key or jax.random.PRNGKey) or an int seed, "
        f"got {type(key).__name__} with dtype={dtype} and shape={shape}"
    )


def check_float_tree(name: str, tree: Any) -> None:
    """Raises a TypeError naming the first leaf of `tree` that is not a floating-point array."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    if not leaves:
        raise ValueError(f"`{name}` must hold at least one array, got an empty pytree: {tree!r}")
    for path, leaf in leaves:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"every leaf of `{name}` must be a floating-point array, got dtype {dtype} at "
                f"{name}{jax.tree_util.keystr(path)}"
            )


def check_tree_like(name: str, tree: Any, like_name: str, like: Any) -> None:
    """Raises unless `tree` has the structure and leaf shapes of `like`."""
    s1, s2 = jax.tree.structure(tree), jax.tree.structure(like)
    if s1 != s2:
        raise ValueError(
            f"`{name}` must have the tree structure of `{like_name}`, got {s1} vs {s2}"
        )
    paths = jax.tree_util.tree_flatten_with_path(like)[0]
    for (path, ref), leaf in zip(paths, jax.tree.leaves(tree)):
        if jnp.shape(leaf) != jnp.shape(ref):
            raise ValueError(
                f"`{name}` must match the shapes of `{like_name}`, got shape {jnp.shape(leaf)} "
                f"at {name}{jax.tree_util.keystr(path)} where {like_name} has {jnp.shape(ref)}"
            )
