"""What every functional face shares: checking `log_posterior`, its gradient, schedules, state."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from sghmc_jax import _checks
from sghmc_jax.log_posterior import check_log_posterior_output
from sghmc_jax.types import ArrayTree, LogProbFn

__all__: list[str] = []


def check_log_posterior(log_posterior: Any) -> None:
    if not callable(log_posterior):
        raise TypeError(
            "`log_posterior` must be a callable log_posterior(params, batch) -> (value, aux), "
            f"got {type(log_posterior).__name__}"
        )


def _negated(log_posterior: LogProbFn, params: ArrayTree, batch: Any) -> tuple[jax.Array, Any]:
    value, aux = check_log_posterior_output(log_posterior(params, batch))
    return -value, aux


def loss_gradient(
    log_posterior: LogProbFn, params: ArrayTree, batch: Any
) -> tuple[jax.Array, Any, ArrayTree]:
    """(log posterior value, aux, gradient of the LOSS −log p): what an optax face consumes."""
    (neg_value, aux), loss_grad = jax.value_and_grad(
        functools.partial(_negated, log_posterior), has_aux=True
    )(params, batch)
    return -neg_value, aux, loss_grad


def split_schedule(value: Any) -> tuple[Any, Any]:
    """(number, None) or (None, schedule): numbers are traced jit arguments, schedules static."""
    return (None, value) if callable(value) else (value, None)


def at(value: Any, schedule: Any, step: jax.Array) -> Any:
    return value if schedule is None else schedule(step)


def nan_value(params: ArrayTree) -> jax.Array:
    """The log posterior before the first update: NaN in the params' highest dtype."""
    return jnp.full([], jnp.nan, optax.tree.dtype(params, "highest"))


def step_zero() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def initial_params(params: ArrayTree) -> ArrayTree:
    """The user's params, checked (floating-point, finite) and copied into buffers of the state's
    own, so that `update(..., inplace=True)`, which donates the state's buffers, never deletes
    the caller's arrays."""
    _checks.check_float_tree("params", params)
    _checks.check_finite_tree("params", params)
    return jax.tree.map(lambda x: jnp.array(x, copy=True), params)


def initial_aux(log_posterior: LogProbFn | None, params: ArrayTree, batch: Any) -> Any:
    """`aux` laid out as the log posterior returns it (NaN, or 0 for integers, before the first
    update), so that the state's structure is the same before and after `update` (which a
    `lax.scan` over `update` requires). The log posterior is traced once, with `batch`; without
    a batch it is traced with `batch=None`, and when that fails `aux` stays None (then pass an
    example `batch` to `init` to scan over `update`)."""
    if log_posterior is None:
        return None
    try:
        out = jax.eval_shape(log_posterior, params, batch)
    except Exception:
        if batch is None:
            return None
        raise
    _, aux = check_log_posterior_output(out)

    def empty(s: jax.ShapeDtypeStruct) -> jax.Array:
        fill = jnp.nan if jnp.issubdtype(s.dtype, jnp.inexact) else 0
        return jnp.full(s.shape, fill, s.dtype)

    return jax.tree.map(empty, aux)
