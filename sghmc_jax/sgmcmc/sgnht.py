"""SGNHT with the functional API of posteriors (`build`, `init`, `update`, `SGNHTState`).

Code written for `posteriors.sgmcmc.sgnht` ports line by line; randomness is explicit
(`init(..., key=)` to draw momenta, `update(..., key=)` every step) and `inplace=True` means
buffer donation. Both faces run the same rule (`kernels.SGNHT`) on the same gradient, so they give
bit-identical chains from the same keys.

Differences from posteriors in the maths: the position and the thermostat move with the NEW
momentum (Ding et al.'s Algorithm 1, and the stable order of our SGHMC), where posteriors uses
the old one; `xi=0.0` means ξ₀ = 0 (posteriors' `xi or alpha` turns 0.0 into alpha).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax

from sghmc_jax import kernels
from sghmc_jax.sgmcmc import _common
from sghmc_jax.types import ArrayTree, LogProbFn, ScalarOrSchedule, Transform

# The hyperparameters' defaults, from the rule's table (every face shares them).
_DEFAULTS = kernels.SGNHT.defaults

__all__ = ["SGNHTState", "build", "init", "update"]


class SGNHTState(NamedTuple):
    """State of functional SGNHT.

    Attributes:
        params: the parameters θ.
        momenta: the momenta m, a pytree like `params`.
        xi: the thermostat ξ, a scalar in the params' highest dtype (at least float32).
        log_posterior: the log posterior at the params BEFORE the last update; NaN at first.
        aux: the auxiliary output of that `log_posterior` call; None before the first update.
        step: number of updates taken (int32, saturating); schedules are evaluated at it.
    """

    params: ArrayTree
    momenta: ArrayTree
    xi: jax.Array
    log_posterior: jax.Array = float("nan")  # type: ignore[assignment]
    aux: Any = None
    step: jax.Array = 0  # type: ignore[assignment]


def build(
    log_posterior: LogProbFn,
    lr: ScalarOrSchedule,
    alpha: jax.typing.ArrayLike = _DEFAULTS.alpha,
    beta: jax.typing.ArrayLike = _DEFAULTS.beta,
    sigma: jax.typing.ArrayLike = _DEFAULTS.sigma,
    temperature: ScalarOrSchedule = _DEFAULTS.temperature,
    momenta: ArrayTree | float | None = None,
    xi: jax.typing.ArrayLike | None = None,
) -> Transform:
    r"""Builds the SGNHT transform (Ding et al. 2014), binding its hyperparameters.

    .. math::

        m_{t+1} &= m_t + \epsilon \nabla \log p(\theta_t) - \epsilon \sigma^{-2} \xi_t m_t
                   + \sqrt{\epsilon T (2\alpha - \epsilon \beta T)}\, \zeta_t \\
        \theta_{t+1} &= \theta_t + \epsilon \sigma^{-2} m_{t+1} \\
        \xi_{t+1} &= \xi_t + \epsilon \left(\frac{m_{t+1}^\top m_{t+1}}{\sigma^2 d} - T\right)

    with ζ_t ~ N(0, I) and d the number of parameters; in the ε → 0 limit it targets
    p_T(θ, m) ∝ exp((log p(θ) − mᵀm/(2σ²)) / T) with ξ ~ N(α, σ²T/d).

    Args:
        log_posterior: `log_posterior(params, batch) -> (value, aux)`, value a scalar.
        lr: step size ε > 0, a float or a schedule of the step.
        alpha: α >= 0, the friction whose noise is injected (ξ's stationary mean).
        beta: gradient-noise variance estimate β >= 0 (a float or a schedule); needs 2α − εβT >= 0.
        sigma: momentum scale σ > 0.
        temperature: T >= 0, a float or a schedule of the step.
        momenta: initial momenta: None draws N(0, σ²T), a scalar fills, a pytree is used as is.
        xi: initial thermostat ξ₀ (any real); None starts at `alpha`.

    Returns:
        `Transform(init, update)` with `init(params, *, key=None)` and
        `update(state, batch, *, key, inplace=False)`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.sgmcmc import sgnht
        >>> log_post = lambda p, batch: (-0.5 * jnp.sum((p - batch) ** 2), None)
        >>> transform = sgnht.build(log_post, lr=0.1, alpha=0.5)
        >>> state = transform.init(jnp.zeros(2), batch=jnp.ones(2), key=jax.random.key(0))
        >>> float(state.xi)
        0.5
        >>> state = transform.update(state, jnp.ones(2), key=jax.random.key(1))
        >>> int(state.step)
        1

    References:
        Ding, Fang, Babbush, Chen, Skeel & Neven, `Bayesian Sampling Using Stochastic Gradient
        Thermostats <https://proceedings.neurips.cc/paper/2014/file/21fe5b8ba755eeaece7a450849876228-Paper.pdf>`_,
        NeurIPS 2014.
    """
    _common.check_build(
        kernels.SGNHT,
        log_posterior,
        {"lr": lr, "alpha": alpha, "beta": beta, "sigma": sigma, "temperature": temperature},
        {"momenta": momenta, "xi": xi},
    )
    init_fn = functools.partial(
        init,
        momenta=momenta,
        xi=xi,
        alpha=alpha,
        sigma=sigma,
        temperature=temperature,
        log_posterior=log_posterior,
    )
    update_fn = functools.partial(
        update, log_posterior=log_posterior, lr=lr, alpha=alpha, beta=beta, sigma=sigma, temperature=temperature
    )
    return Transform(init_fn, update_fn)


def init(
    params: ArrayTree,
    momenta: ArrayTree | float | None = None,
    xi: jax.typing.ArrayLike | None = None,
    *,
    key: Any = None,
    alpha: jax.typing.ArrayLike = _DEFAULTS.alpha,
    sigma: jax.typing.ArrayLike = _DEFAULTS.sigma,
    temperature: ScalarOrSchedule = _DEFAULTS.temperature,
    log_posterior: LogProbFn | None = None,
    batch: Any = None,
) -> SGNHTState:
    """Initialises the SGNHT state.

    Args:
        params: the initial parameters, a pytree of floating-point arrays.
        momenta: None draws them from N(0, σ²T) (needs `key`), a scalar fills them, a pytree
            like `params` is used as is.
        xi: the initial thermostat; None uses `alpha` (as posteriors' `build` does).
        key: PRNG key (or int seed) used only to draw the momenta.
        alpha: the default ξ₀ (`build` passes its own).
        sigma: momentum scale σ, for the draw (`build` passes its own).
        temperature: T, for the draw; a schedule is taken at step 0 (`build` passes its own).
        log_posterior: the log posterior (`build` passes its own), traced once with `batch` to
            lay out `aux`, so that the state's structure does not change across `update`.
        batch: an example batch for that trace (needed when `log_posterior` cannot run with
            `batch=None`).

    Returns:
        An `SGNHTState` at step 0 with NaN log posterior and `aux` laid out
        (NaN entries) when `log_posterior` is given, else None.
    """
    return _common.init(
        kernels.SGNHT,
        SGNHTState,
        params,
        {"momenta": momenta, "xi": xi, "alpha": alpha, "sigma": sigma, "temperature": temperature},
        key,
        log_posterior,
        batch,
    )


def update(
    state: SGNHTState,
    batch: Any,
    log_posterior: LogProbFn,
    lr: ScalarOrSchedule,
    alpha: jax.typing.ArrayLike = _DEFAULTS.alpha,
    beta: jax.typing.ArrayLike = _DEFAULTS.beta,
    sigma: jax.typing.ArrayLike = _DEFAULTS.sigma,
    temperature: ScalarOrSchedule = _DEFAULTS.temperature,
    *,
    key: Any,
    inplace: bool = False,
) -> SGNHTState:
    """Takes one SGNHT step (see `build` for the rule): one gradient, one noise draw.

    Jit-compiled (cached per `log_posterior` and schedule); numeric hyperparameters are traced.

    Args:
        state: the current `SGNHTState`.
        batch: the data batch passed to `log_posterior`.
        log_posterior: `log_posterior(params, batch) -> (value, aux)`.
        lr: step size ε > 0, a float or a schedule of `state.step`.
        alpha: α >= 0, a float or a schedule of the step.
        beta: gradient-noise variance estimate β >= 0, a float or a schedule of the step.
        sigma: momentum scale σ > 0.
        temperature: T >= 0, a float or a schedule of `state.step`.
        key: this step's PRNG key (typed, raw uint32 or int seed); use each key once.
        inplace: donate the state's params and momenta buffers to the result.

    Returns:
        The new `SGNHTState`; `log_posterior` and `aux` are those at the old params.
    """
    return _common.update(
        kernels.SGNHT,
        SGNHTState,
        state,
        batch,
        log_posterior,
        {"lr": lr, "alpha": alpha, "beta": beta, "sigma": sigma, "temperature": temperature},
        key,
        inplace,
    )
