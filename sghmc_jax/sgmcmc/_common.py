"""What every functional face shares: checking `log_posterior`, its gradient, schedules, state."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from sghmc_jax.types import ArrayTree, LogProbFn

__all__: list[str] = []


def check_log_posterior(log_posterior: Any) -> None:
    if not callable(log_posterior):
        raise TypeError(
            "`log_posterior` must be a callable log_posterior(params, batch) -> (value, aux), "
            f"got {type(log_posterior).__name__}"
        )


def value_and_aux(log_posterior: LogProbFn, params: ArrayTree, batch: Any) -> tuple[jax.Array, Any]:
    out = log_posterior(params, batch)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(
            "`log_posterior` must return a tuple (value, aux); return (value, None) when there "
            f"is no auxiliary output. Got {type(out).__name__}"
            + (f" of shape {out.shape}" if hasattr(out, "shape") else "")
        )
    value, aux = out
    if jnp.shape(value) != ():
        raise TypeError(
            f"`log_posterior` must return a scalar value, got shape {jnp.shape(value)}"
        )
    return value, aux


def _negated(log_posterior: LogProbFn, params: ArrayTree, batch: Any) -> tuple[jax.Array, Any]:
    value, aux = value_and_aux(log_posterior, params, batch)
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
