"""SGHMC with the functional API of posteriors (`build`, `init`, `update`, `SGHMCState`).

Code written for `posteriors.sgmcmc.sghmc` ports line by line; what differs is what JAX needs:
randomness is explicit (`init(..., key=)` to draw momenta, `update(..., key=)` every step), and
`inplace=True` means buffer donation (the old state's arrays are reused and become unusable).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax

from sghmc_jax import kernels
from sghmc_jax.sgmcmc import _common
from sghmc_jax.types import ArrayTree, LogProbFn, ScalarOrSchedule, Transform

# The hyperparameters' defaults, from the rule's table (every face shares them).
_DEFAULTS = kernels.SGHMC.defaults

__all__ = ["SGHMCState", "build", "init", "update"]


class SGHMCState(NamedTuple):
    """State of functional SGHMC.

    Attributes:
        params: the parameters θ.
        momenta: the momenta m, a pytree like `params`.
        log_posterior: the log posterior at the params the last gradient was taken at (the
            params BEFORE the last update); NaN before the first update.
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
    beta: jax.typing.ArrayLike = _DEFAULTS.beta,
    sigma: jax.typing.ArrayLike = _DEFAULTS.sigma,
    temperature: ScalarOrSchedule = _DEFAULTS.temperature,
    momenta: ArrayTree | float | None = None,
) -> Transform:
    r"""Builds the SGHMC transform (Chen et al. 2014), binding its hyperparameters.

    .. math::

        m_{t+1} &= m_t + \epsilon \nabla \log p(\theta_t) - \epsilon \sigma^{-2} \alpha m_t
                   + \sqrt{\epsilon T (2\alpha - \epsilon \beta T)}\, \xi_t \\
        \theta_{t+1} &= \theta_t + \epsilon \sigma^{-2} m_{t+1}

    targeting p_T(θ, m) ∝ exp((log p(θ) − mᵀm/(2σ²)) / T).

    Args:
        log_posterior: `log_posterior(params, batch) -> (value, aux)`, value a scalar.
        lr: step size ε > 0, a float or a schedule of the step.
        alpha: friction α >= 0, a float or a schedule of the step.
        beta: gradient-noise variance estimate β >= 0 (a float or a schedule); needs 2α − εβT >= 0.
        sigma: momentum scale σ > 0.
        temperature: T >= 0, a float or a schedule of the step.
        momenta: initial momenta: None draws N(0, σ²T), a scalar fills, a pytree is used as is.

    Returns:
        `Transform(init, update)` with `init(params, *, key=None)` and
        `update(state, batch, *, key, inplace=False)`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.sgmcmc import sghmc
        >>> log_post = lambda p, batch: (-0.5 * jnp.sum((p - batch) ** 2), None)
        >>> transform = sghmc.build(log_post, lr=0.1, alpha=0.5)
        >>> state = transform.init(jnp.zeros(2), batch=jnp.ones(2), key=jax.random.key(0))
        >>> state = transform.update(state, jnp.ones(2), key=jax.random.key(1))
        >>> int(state.step)
        1

    References:
        Chen, Fox & Guestrin, `Stochastic Gradient Hamiltonian Monte Carlo
        <https://arxiv.org/abs/1402.4102>`_, ICML 2014.
    """
    _common.check_build(
        kernels.SGHMC,
        log_posterior,
        {"lr": lr, "alpha": alpha, "beta": beta, "sigma": sigma, "temperature": temperature},
        {"momenta": momenta},
    )
    init_fn = functools.partial(
        init, momenta=momenta, sigma=sigma, temperature=temperature, log_posterior=log_posterior
    )
    update_fn = functools.partial(
        update, log_posterior=log_posterior, lr=lr, alpha=alpha, beta=beta, sigma=sigma, temperature=temperature
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
) -> SGHMCState:
    """Initialises the SGHMC state.

    Args:
        params: the initial parameters, a pytree of floating-point arrays.
        momenta: None draws them from N(0, σ²T) (needs `key`; N(0, 1) at the defaults, as in
            posteriors), a scalar fills them, a pytree like `params` is used as is.
        key: PRNG key (or int seed) used only to draw the momenta.
        sigma: momentum scale σ, for the draw (`build` passes its own).
        temperature: T, for the draw; a schedule is taken at step 0 (`build` passes its own).
        log_posterior: the log posterior (`build` passes its own), traced once with `batch` to
            lay out `aux`, so that the state's structure does not change across `update`.
        batch: an example batch for that trace (needed when `log_posterior` cannot run with
            `batch=None`).

    Returns:
        An `SGHMCState` at step 0 with NaN log posterior and `aux` laid out
        (NaN entries) when `log_posterior` is given, else None.
    """
    return _common.init(
        kernels.SGHMC,
        SGHMCState,
        params,
        {"momenta": momenta, "sigma": sigma, "temperature": temperature},
        key,
        log_posterior,
        batch,
    )


def update(
    state: SGHMCState,
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
) -> SGHMCState:
    """Takes one SGHMC step (see `build` for the rule): one gradient, one noise draw.

    The update is jit-compiled (cached per `log_posterior` and schedule); numeric
    hyperparameters are traced arguments, so changing them between calls does not recompile.

    Args:
        state: the current `SGHMCState`.
        batch: the data batch passed to `log_posterior`.
        log_posterior: `log_posterior(params, batch) -> (value, aux)`.
        lr: step size ε > 0, a float or a schedule of `state.step`.
        alpha: friction α >= 0, a float or a schedule of the step.
        beta: gradient-noise variance estimate β >= 0, a float or a schedule of the step.
        sigma: momentum scale σ > 0.
        temperature: T >= 0, a float or a schedule of `state.step`.
        key: this step's PRNG key (typed, raw uint32 or int seed); use each key once.
        inplace: donate the state's params and momenta buffers to the result (the old state's
            arrays are deleted); the numbers are identical to `inplace=False`.

    Returns:
        The new `SGHMCState`; `log_posterior` and `aux` are those at the old params.
    """
    return _common.update(
        kernels.SGHMC,
        SGHMCState,
        state,
        batch,
        log_posterior,
        {"lr": lr, "alpha": alpha, "beta": beta, "sigma": sigma, "temperature": temperature},
        key,
        inplace,
    )
