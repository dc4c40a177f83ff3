"""SGLD with the functional API of posteriors (`build`, `init`, `update`, `SGLDState`).

Code written for `posteriors.sgmcmc.sgld` ports line by line; as for `sgmcmc.sghmc`, randomness
is explicit (`update(..., key=)` every step) and `inplace=True` means buffer donation. Each
update runs the optax face's (`sghmc_jax.sgld`) update on the loss gradient, so both faces give
bit-identical chains from the same keys.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax

from sghmc_jax import kernels
from sghmc_jax.sgmcmc import _common
from sghmc_jax.types import ArrayTree, LogProbFn, ScalarOrSchedule, Transform

# The hyperparameters' defaults, from the rule's table (every face shares them).
_DEFAULTS = kernels.SGLD.defaults

__all__ = ["SGLDState", "build", "init", "update"]


class SGLDState(NamedTuple):
    """State of functional SGLD.

    Attributes:
        params: the parameters θ.
        log_posterior: the log posterior at the params the last gradient was taken at (the
            params BEFORE the last update); NaN before the first update.
        aux: the auxiliary output of that `log_posterior` call; None before the first update.
        step: number of updates taken (int32, saturating); schedules are evaluated at it.
    """

    params: ArrayTree
    log_posterior: jax.Array = float("nan")  # type: ignore[assignment]
    aux: Any = None
    step: jax.Array = 0  # type: ignore[assignment]


def build(
    log_posterior: LogProbFn,
    lr: ScalarOrSchedule,
    beta: jax.typing.ArrayLike = _DEFAULTS.beta,
    temperature: ScalarOrSchedule = _DEFAULTS.temperature,
) -> Transform:
    r"""Builds the SGLD transform (Welling & Teh 2011), binding its hyperparameters.

    .. math::

        \theta_{t+1} = \theta_t + \epsilon \nabla \log p(\theta_t)
                       + \sqrt{\epsilon T (2 - \epsilon \beta T)}\, \xi_t

    with ξ_t ~ N(0, I), targeting p_T(θ) ∝ exp(log p(θ) / T) as ε → 0.

    Args:
        log_posterior: `log_posterior(params, batch) -> (value, aux)`, value a scalar.
        lr: step size ε > 0, a float or a schedule of the step.
        beta: gradient-noise variance estimate β >= 0 (a float or a schedule); needs 2 − εβT >= 0.
        temperature: T >= 0, a float or a schedule of the step.

    Returns:
        `Transform(init, update)` with `init(params, *, key=None)` and
        `update(state, batch, *, key, inplace=False)`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.sgmcmc import sgld
        >>> log_post = lambda p, batch: (-0.5 * jnp.sum((p - batch) ** 2), None)
        >>> transform = sgld.build(log_post, lr=0.1, temperature=0.0)
        >>> state = transform.init(jnp.zeros(2), batch=jnp.ones(2))
        >>> state = transform.update(state, jnp.ones(2), key=jax.random.key(1))
        >>> state.params  # T = 0: one gradient step
        Array([0.1, 0.1], dtype=float32)

    References:
        Welling & Teh, `Bayesian Learning via Stochastic Gradient Langevin Dynamics
        <https://www.stats.ox.ac.uk/~teh/research/compstats/WelTeh2011a.pdf>`_, ICML 2011.
    """
    _common.check_build(kernels.SGLD, log_posterior, {"lr": lr, "beta": beta, "temperature": temperature}, {})
    init_fn = functools.partial(init, log_posterior=log_posterior)
    update_fn = functools.partial(update, log_posterior=log_posterior, lr=lr, beta=beta, temperature=temperature)
    return Transform(init_fn, update_fn)


def init(
    params: ArrayTree,
    *,
    key: Any = None,
    log_posterior: LogProbFn | None = None,
    batch: Any = None,
) -> SGLDState:
    """Initialises the SGLD state.

    Args:
        params: the initial parameters, a pytree of floating-point arrays.
        key: unused (SGLD draws nothing at initialisation); accepted so that every functional
            transform initialises alike.
        log_posterior: the log posterior (`build` passes its own), traced once with `batch` to
            lay out `aux`, so that the state's structure does not change across `update`.
        batch: an example batch for that trace (needed when `log_posterior` cannot run with
            `batch=None`).

    Returns:
        An `SGLDState` at step 0 with NaN log posterior and `aux` laid out
        (NaN entries) when `log_posterior` is given, else None.
    """
    return _common.init(kernels.SGLD, SGLDState, params, {}, key, log_posterior, batch)


def update(
    state: SGLDState,
    batch: Any,
    log_posterior: LogProbFn,
    lr: ScalarOrSchedule,
    beta: jax.typing.ArrayLike = _DEFAULTS.beta,
    temperature: ScalarOrSchedule = _DEFAULTS.temperature,
    *,
    key: Any,
    inplace: bool = False,
) -> SGLDState:
    """Takes one SGLD step (see `build` for the rule): one gradient, one noise draw.

    Jit-compiled (cached per `log_posterior` and schedule); numeric hyperparameters are traced
    arguments, so changing them between calls does not recompile.

    Args:
        state: the current `SGLDState`.
        batch: the data batch passed to `log_posterior`.
        log_posterior: `log_posterior(params, batch) -> (value, aux)`.
        lr: step size ε > 0, a float or a schedule of `state.step`.
        beta: gradient-noise variance estimate β >= 0, a float or a schedule of the step.
        temperature: T >= 0, a float or a schedule of `state.step`.
        key: this step's PRNG key (typed, raw uint32 or int seed); use each key once.
        inplace: donate the state's params buffers to the result (the old state's arrays are
            deleted); the numbers are identical to `inplace=False`.

    Returns:
        The new `SGLDState`; `log_posterior` and `aux` are those at the old params.
    """
    return _common.update(
        kernels.SGLD,
        SGLDState,
        state,
        batch,
        log_posterior,
        {"lr": lr, "beta": beta, "temperature": temperature},
        key,
        inplace,
    )
