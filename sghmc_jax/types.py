"""Types shared across the library."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeAlias

import chex
import jax

__all__ = ["ArrayTree", "Hyperparameter", "LogProbFn", "ScalarOrSchedule", "Schedule", "Transform"]

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


class Hyperparameter(NamedTuple):
    """One row of a sampler's hyperparameter table (`kernels.Rule.hyperparameters`).

    The table is the one place a hyperparameter's rule and default live: both faces check
    values against it (when built, and when traced with concrete values), and both faces'
    signatures take their defaults from it (`kernels.Rule.defaults`).

    Attributes:
        name: its name in the functional face (`lr` is spelled `learning_rate` by the optax faces).
        rule: `(check, text)`: `check(value) -> bool` for a concrete finite value, and how the
            rule reads in an error message (e.g. `"> 0"`).
        schedulable: whether a schedule of the step is accepted.
        default: the value every face uses when it is not given; None when it must be given
            (the step size).

    Example:
        >>> from sghmc_jax import kernels
        >>> kernels.SGHMC.hyperparameters[1]
        Hyperparameter(name='alpha', rule=(<function ...>, '>= 0'), schedulable=True, default=0.01)
        >>> kernels.SGHMC.defaults.alpha
        0.01
    """

    name: str
    rule: tuple[Callable[[float], bool], str]
    schedulable: bool
    default: float | None = None
