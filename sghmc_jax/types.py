"""Types shared across the library."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeAlias

import chex
import jax

__all__ = ["ArrayTree", "LogProbFn", "ScalarOrSchedule", "Schedule", "Transform"]

ArrayTree: TypeAlias = chex.ArrayTree
"""A pytree of arrays (params, momenta, gradients)."""

LogProbFn: TypeAlias = Callable[[ArrayTree, Any], tuple[jax.Array, Any]]
"""`log_posterior(params, batch) -> (value, aux)`, the posteriors convention."""

Schedule: TypeAlias = Callable[[jax.Array], jax.typing.ArrayLike]
"""A function of the step count, e.g. an optax schedule."""

ScalarOrSchedule: TypeAlias = float | jax.Array | Schedule


class Transform(NamedTuple):
    """A functional SGMCMC algorithm with its hyperparameters bound (posteriors' `Transform`).

    Attributes:
        init: `init(params, *, key=None, batch=None) -> state` (`batch`: an example batch with
            which the log posterior is traced to lay out the state's `aux`).
        update: `update(state, batch, *, key, inplace=False) -> state`.
    """

    init: Callable[..., Any]
    update: Callable[..., Any]
