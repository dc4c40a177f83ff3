"""Preconditioned SGHMC with a posteriors-style functional API (`build`, `init`, `update`,
`PSGHMCState`).

The names follow posteriors' SGHMC (`lr`, `alpha`, `sigma`, `temperature`, `momenta`) and optax's
rmsprop (`decay`, `eps`, `initial_scale`); there is no `beta`. Each update runs the optax face's
(`sghmc_jax.psghmc`) update on the loss gradient, so both faces give bit-identical chains.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax

from sghmc_jax import kernels
from sghmc_jax.sgmcmc import _common
from sghmc_jax.types import ArrayTree, LogProbFn, ScalarOrSchedule, Transform

# The hyperparameters' defaults, from the rule's table (every face shares them).
_DEFAULTS = kernels.PSGHMC.defaults

__all__ = ["PSGHMCState", "build", "init", "update"]


class PSGHMCState(NamedTuple):
    """State of functional preconditioned SGHMC.

    Attributes:
        params: the parameters θ.
        momenta: the momenta m, a pytree like `params`.
        v: V, the running mean of squared gradients, a pytree like `params`.
        log_posterior: the log posterior at the params BEFORE the last update; NaN at first.
        aux: the auxiliary output of that `log_posterior` call; None before the first update.
        step: number of updates taken (int32, saturating); schedules are evaluated at it.
    """

    params: ArrayTree
    momenta: ArrayTree
    v: ArrayTree
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
    decay: ScalarOrSchedule = _DEFAULTS.decay,
    eps: jax.typing.ArrayLike = _DEFAULTS.eps,
    initial_scale: ArrayTree | float = 0.0,
) -> Transform:
    r"""Builds the preconditioned SGHMC transform, binding its hyperparameters.

    .. math::

        V_{t+1} &= \rho V_t + (1 - \rho)\, g_t^2, \qquad S_{t+1} = (\lambda + \sqrt{V_{t+1}})^{-1/2} \\
        m_{t+1} &= m_t + \epsilon S_{t+1} g_t - \epsilon \sigma^{-2} \alpha m_t
                   + \sqrt{2 \epsilon \alpha T}\, \xi_t \\
        \theta_{t+1} &= \theta_t + \epsilon \sigma^{-2} S_{t+1} m_{t+1}

    elementwise, with g_t = ∇ log p(θ_t), ξ_t ~ N(0, I) (see `sghmc_jax.psghmc`).

    Args:
        log_posterior: `log_posterior(params, batch) -> (value, aux)`, value a scalar.
        lr: step size ε > 0, a float or a schedule of the step.
        alpha: friction α >= 0, a float or a schedule of the step.
        sigma: momentum scale σ > 0.
        temperature: T >= 0, a float or a schedule of the step.
        momenta: initial momenta: None draws N(0, σ²T), a scalar fills, a pytree is used as is.
        decay: ρ in [0, 1], a float or a schedule; 1 freezes V.
        eps: λ > 0.
        initial_scale: V₀ >= 0, a scalar or a pytree like the params.

    Returns:
        `Transform(init, update)` with `init(params, *, key=None)` and
        `update(state, batch, *, key, inplace=False)`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.sgmcmc import psghmc
        >>> log_post = lambda p, batch: (-0.5 * jnp.sum((p - batch) ** 2), None)
        >>> transform = psghmc.build(log_post, lr=1e-2, alpha=1.0, initial_scale=1.0)
        >>> state = transform.init(jnp.zeros(2), batch=jnp.ones(2), key=jax.random.key(0))
        >>> state = transform.update(state, jnp.ones(2), key=jax.random.key(1))
        >>> int(state.step), state.v.shape
        (1, (2,))

    References:
        Li, Chen, Carlson & Carin, `Preconditioned Stochastic Gradient Langevin Dynamics for
        Deep Neural Networks <https://arxiv.org/abs/1512.07666>`_, AAAI 2016.
        Ma, Chen & Fox, `A Complete Recipe for Stochastic Gradient MCMC
        <https://arxiv.org/abs/1506.04696>`_, NeurIPS 2015.
    """
    _common.check_build(
        kernels.PSGHMC,
        log_posterior,
        {
            "lr": lr,
            "alpha": alpha,
            "sigma": sigma,
            "temperature": temperature,
            "decay": decay,
            "eps": eps,
        },
        {"momenta": momenta, "initial_scale": initial_scale},
    )
    init_fn = functools.partial(
        init,
        momenta=momenta,
        initial_scale=initial_scale,
        sigma=sigma,
        temperature=temperature,
        log_posterior=log_posterior,
    )
    update_fn = functools.partial(
        update,
        log_posterior=log_posterior,
        lr=lr,
        alpha=alpha,
        sigma=sigma,
        temperature=temperature,
        decay=decay,
        eps=eps,
    )
    return Transform(init_fn, update_fn)


def init(
    params: ArrayTree,
    momenta: ArrayTree | float | None = None,
    initial_scale: ArrayTree | float = 0.0,
    *,
    key: Any = None,
    sigma: jax.typing.ArrayLike = _DEFAULTS.sigma,
    temperature: ScalarOrSchedule = _DEFAULTS.temperature,
    log_posterior: LogProbFn | None = None,
    batch: Any = None,
) -> PSGHMCState:
    """Initialises the preconditioned SGHMC state.

    Args:
        params: the initial parameters, a pytree of floating-point arrays.
        momenta: None draws them from N(0, σ²T) (needs `key`), a scalar fills them, a pytree
            like `params` is used as is.
        initial_scale: V₀ >= 0: a scalar fills it, a pytree like `params` is used as is.
        key: PRNG key (or int seed) used only to draw the momenta.
        sigma: momentum scale σ, for the draw (`build` passes its own).
        temperature: T, for the draw; a schedule is taken at step 0 (`build` passes its own).
        log_posterior: the log posterior (`build` passes its own), traced once with `batch` to
            lay out `aux`, so that the state's structure does not change across `update`.
        batch: an example batch for that trace (needed when `log_posterior` cannot run with
            `batch=None`).

    Returns:
        A `PSGHMCState` at step 0 with NaN log posterior and `aux` laid out
        (NaN entries) when `log_posterior` is given, else None.
    """
    return _common.init(
        kernels.PSGHMC,
        PSGHMCState,
        params,
        {"momenta": momenta, "initial_scale": initial_scale, "sigma": sigma, "temperature": temperature},
        key,
        log_posterior,
        batch,
    )


def update(
    state: PSGHMCState,
    batch: Any,
    log_posterior: LogProbFn,
    lr: ScalarOrSchedule,
    alpha: jax.typing.ArrayLike = _DEFAULTS.alpha,
    sigma: jax.typing.ArrayLike = _DEFAULTS.sigma,
    temperature: ScalarOrSchedule = _DEFAULTS.temperature,
    decay: ScalarOrSchedule = _DEFAULTS.decay,
    eps: jax.typing.ArrayLike = _DEFAULTS.eps,
    *,
    key: Any,
    inplace: bool = False,
) -> PSGHMCState:
    """Takes one preconditioned SGHMC step (see `build`): one gradient, one noise draw.

    Jit-compiled (cached per `log_posterior` and schedule); numeric hyperparameters are traced.

    Args:
        state: the current `PSGHMCState`.
        batch: the data batch passed to `log_posterior`.
        log_posterior: `log_posterior(params, batch) -> (value, aux)`.
        lr: step size ε > 0, a float or a schedule of `state.step`.
        alpha: friction α >= 0, a float or a schedule of the step.
        sigma: momentum scale σ > 0.
        temperature: T >= 0, a float or a schedule of `state.step`.
        decay: ρ in [0, 1], a float or a schedule of `state.step`.
        eps: λ > 0.
        key: this step's PRNG key (typed, raw uint32 or int seed); use each key once.
        inplace: donate the state's params, momenta and V buffers to the result.

    Returns:
        The new `PSGHMCState`; `log_posterior` and `aux` are those at the old params.
    """
    return _common.update(
        kernels.PSGHMC,
        PSGHMCState,
        state,
        batch,
        log_posterior,
        {
            "lr": lr,
            "alpha": alpha,
            "sigma": sigma,
            "temperature": temperature,
            "decay": decay,
            "eps": eps,
        },
        key,
        inplace,
    )
