"""BAOA with the functional API of posteriors (`build`, `init`, `update`, `BAOAState`).

Code written for `posteriors.sgmcmc.baoa` ports line by line; randomness is explicit
(`init(..., key=)` to draw momenta, `update(..., key=)` every step) and `inplace=True` means
buffer donation. Both faces run the same rule (`kernels.BAOA`) on the same gradient, so they give
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
_DEFAULTS = kernels.BAOA.defaults

__all__ = ["BAOAState", "build", "init", "update"]


class BAOAState(NamedTuple):
    """State of functional BAOA.

    Attributes:
        params: the parameters θ.
        momenta: the momenta m (after the friction step), a pytree like `params`.
        log_posterior: the log posterior at the params BEFORE the last update; NaN at first.
        aux: the auxiliary output of that `log_posterior` call; None before the first update.
        step: number of updates taken (int32, saturating); schedules are evaluated at it.
    """

    params: ArrayTree
    momenta: ArrayTree
    log_posterior: jax.Array = float("nan")  # type: ignore[assignment]
    aux: Any = None
    step: jax.Array = 0  # type: ignore[assignment]


def build(
    log_posterior: LogProbFn,
    lr: ScalarOrSchedule,
    alpha: jax.typing.ArrayLike = _DEFAULTS.alpha,
    sigma: jax.typing.ArrayLike = _DEFAULTS.sigma,
    temperature: ScalarOrSchedule = _DEFAULTS.temperature,
    momenta: ArrayTree | float | None = None,
) -> Transform:
    r"""Builds the BAOA transform (Leimkuhler & Matthews), binding its hyperparameters.

    .. math::

        m' &= m_t + \epsilon \nabla \log p(\theta_t) \\
        \theta' &= \theta_t + \tfrac{\epsilon}{2} \sigma^{-2} m' \\
        m_{t+1} &= e^{-\gamma \epsilon} m' + \sigma \sqrt{T (1 - e^{-2 \gamma \epsilon})}\, \xi_t \\
        \theta_{t+1} &= \theta' + \tfrac{\epsilon}{2} \sigma^{-2} m_{t+1}

    with γ = α/σ², ξ_t ~ N(0, I), targeting p_T(θ, m) ∝ exp((log p(θ) − mᵀm/(2σ²)) / T).

    Args:
        log_posterior: `log_posterior(params, batch) -> (value, aux)`, value a scalar.
        lr: step size ε > 0, a float or a schedule of the step.
        alpha: friction α >= 0 (any size: the friction step is exact), a float or a schedule.
        sigma: momentum scale σ > 0.
        temperature: T >= 0, a float or a schedule of the step.
        momenta: initial momenta: None draws N(0, σ²T), a scalar fills, a pytree is used as is.

    Returns:
        `Transform(init, update)` with `init(params, *, key=None)` and
        `update(state, batch, *, key, inplace=False)`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.sgmcmc import baoa
        >>> log_post = lambda p, batch: (-0.5 * jnp.sum((p - batch) ** 2), None)
        >>> transform = baoa.build(log_post, lr=0.1, alpha=1.0)
        >>> state = transform.init(jnp.zeros(2), batch=jnp.ones(2), key=jax.random.key(0))
        >>> state = transform.update(state, jnp.ones(2), key=jax.random.key(1))
        >>> int(state.step)
        1

    References:
        Leimkuhler & Matthews, `Rational Construction of Stochastic Numerical Methods for
        Molecular Sampling <https://arxiv.org/abs/1203.5428>`_, AMRX 2013.
    """
    _common.check_build(
        kernels.BAOA,
        log_posterior,
        {"lr": lr, "alpha": alpha, "sigma": sigma, "temperature": temperature},
        {"momenta": momenta},
    )
    init_fn = functools.partial(
        init, momenta=momenta, sigma=sigma, temperature=temperature, log_posterior=log_posterior
    )
    update_fn = functools.partial(
        update, log_posterior=log_posterior, lr=lr, alpha=alpha, sigma=sigma, temperature=temperature
    )
    return Transform(init_fn, update_fn)


def init(
    params: ArrayTree,
    momenta: ArrayTree | float | None = None,
    *,
    key: Any = None,
    sigma: jax.typing.ArrayLike = _DEFAULTS.sigma,
    temperature: ScalarOrSchedule = _DEFAULTS.temperature,
    log_posterior: LogProbFn | None = None,
    batch: Any = None,
) -> BAOAState:
    """Initialises the BAOA state.

    Args:
        params: the initial parameters, a pytree of floating-point arrays.
        momenta: None draws them from N(0, σ²T) (needs `key`), a scalar fills them, a pytree
            like `params` is used as is.
        key: PRNG key (or int seed) used only to draw the momenta.
        sigma: momentum scale σ, for the draw (`build` passes its own).
        temperature: T, for the draw; a schedule is taken at step 0 (`build` passes its own).
        log_posterior: the log posterior (`build` passes its own), traced once with `batch` to
            lay out `aux`, so that the state's structure does not change across `update`.
        batch: an example batch for that trace (needed when `log_posterior` cannot run with
            `batch=None`).

    Returns:
        A `BAOAState` at step 0 with NaN log posterior and `aux` laid out
        (NaN entries) when `log_posterior` is given, else None.
    """
    return _common.init(
        kernels.BAOA,
        BAOAState,
        params,
        {"momenta": momenta, "sigma": sigma, "temperature": temperature},
        key,
        log_posterior,
        batch,
    )


def update(
    state: BAOAState,
    batch: Any,
    log_posterior: LogProbFn,
    lr: ScalarOrSchedule,
    alpha: jax.typing.ArrayLike = _DEFAULTS.alpha,
    sigma: jax.typing.ArrayLike = _DEFAULTS.sigma,
    temperature: ScalarOrSchedule = _DEFAULTS.temperature,
    *,
    key: Any,
    inplace: bool = False,
) -> BAOAState:
    """Takes one BAOA step (see `build` for the rule): one gradient, one noise draw.

    Jit-compiled (cached per `log_posterior` and schedule); numeric hyperparameters are traced.

    Args:
        state: the current `BAOAState`.
        batch: the data batch passed to `log_posterior`.
        log_posterior: `log_posterior(params, batch) -> (value, aux)`.
        lr: step size ε > 0, a float or a schedule of `state.step`.
        alpha: friction α >= 0, a float or a schedule of the step.
        sigma: momentum scale σ > 0.
        temperature: T >= 0, a float or a schedule of `state.step`.
        key: this step's PRNG key (typed, raw uint32 or int seed); use each key once.
        inplace: donate the state's params and momenta buffers to the result.

    Returns:
        The new `BAOAState`; `log_posterior` and `aux` are those at the old params.
    """
    return _common.update(
        kernels.BAOA,
        BAOAState,
        state,
        batch,
        log_posterior,
        {"lr": lr, "alpha": alpha, "sigma": sigma, "temperature": temperature},
        key,
        inplace,
    )
