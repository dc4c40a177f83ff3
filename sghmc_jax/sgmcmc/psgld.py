"""Preconditioned SGLD with a posteriors-style functional API (`build`, `init`, `update`,
`PSGLDState`).

posteriors has no pSGLD; the names follow its SGLD (`lr`, `temperature`) and optax's rmsprop
(`decay`, `eps`, `initial_scale`). Each update runs the optax face's (`sghmc_jax.psgld`) update
on the loss gradient, so both faces give bit-identical chains from the same keys.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax

from sghmc_jax import kernels
from sghmc_jax.sgmcmc import _common
from sghmc_jax.types import ArrayTree, LogProbFn, ScalarOrSchedule, Transform

# The hyperparameters' defaults, from the rule's table (every face shares them).
_DEFAULTS = kernels.PSGLD.defaults

__all__ = ["PSGLDState", "build", "init", "update"]


class PSGLDState(NamedTuple):
    """State of functional pSGLD.

    Attributes:
        params: the parameters θ.
        v: V, the running mean of squared gradients, a pytree like `params`.
        log_posterior: the log posterior at the params BEFORE the last update; NaN at first.
        aux: the auxiliary output of that `log_posterior` call; None before the first update.
        step: number of updates taken (int32, saturating); schedules are evaluated at it.
    """

    params: ArrayTree
    v: ArrayTree
    log_posterior: jax.Array = float("nan")  # type: ignore[assignment]
    aux: Any = None
    step: jax.Array = 0  # type: ignore[assignment]


def build(
    log_posterior: LogProbFn,
    lr: ScalarOrSchedule,
    decay: ScalarOrSchedule = _DEFAULTS.decay,
    eps: jax.typing.ArrayLike = _DEFAULTS.eps,
    temperature: ScalarOrSchedule = _DEFAULTS.temperature,
    initial_scale: ArrayTree | float = 0.0,
) -> Transform:
    r"""Builds the pSGLD transform (Li et al. 2016), binding its hyperparameters.

    .. math::

        V_{t+1} &= \rho V_t + (1 - \rho)\, g_t^2, \qquad
        G_{t+1} = 1 / (\lambda + \sqrt{V_{t+1}}) \\
        \theta_{t+1} &= \theta_t + \epsilon G_{t+1} g_t + \sqrt{2 \epsilon T G_{t+1}}\, \xi_t

    elementwise, with g_t = ∇ log p(θ_t), ξ_t ~ N(0, I), ρ = `decay`, λ = `eps`. The Γ(θ)
    correction is dropped; `decay=1.0` (or a schedule ending at 1) freezes the preconditioner,
    which removes the bias that causes (see `sghmc_jax.psgld`).

    Args:
        log_posterior: `log_posterior(params, batch) -> (value, aux)`, value a scalar.
        lr: step size ε > 0, a float or a schedule of the step.
        decay: ρ in [0, 1], a float or a schedule; 1 freezes V.
        eps: λ > 0.
        temperature: T >= 0, a float or a schedule of the step.
        initial_scale: V₀ >= 0, a scalar or a pytree like the params.

    Returns:
        `Transform(init, update)` with `init(params, *, key=None)` and
        `update(state, batch, *, key, inplace=False)`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.sgmcmc import psgld
        >>> log_post = lambda p, batch: (-0.5 * jnp.sum((p - batch) ** 2), None)
        >>> transform = psgld.build(log_post, lr=1e-2, initial_scale=1.0)
        >>> state = transform.init(jnp.zeros(2), batch=jnp.ones(2))
        >>> state = transform.update(state, jnp.ones(2), key=jax.random.key(1))
        >>> state.v  # 0.99 · 1 + 0.01 · 1²
        Array([1., 1.], dtype=float32)

    References:
        Li, Chen, Carlson & Carin, `Preconditioned Stochastic Gradient Langevin Dynamics for
        Deep Neural Networks <https://arxiv.org/abs/1512.07666>`_, AAAI 2016.
    """
    _common.check_build(
        kernels.PSGLD,
        log_posterior,
        {"lr": lr, "decay": decay, "eps": eps, "temperature": temperature},
        {"initial_scale": initial_scale},
    )
    init_fn = functools.partial(init, initial_scale=initial_scale, log_posterior=log_posterior)
    update_fn = functools.partial(
        update, log_posterior=log_posterior, lr=lr, decay=decay, eps=eps, temperature=temperature
    )
    return Transform(init_fn, update_fn)


def init(
    params: ArrayTree,
    initial_scale: ArrayTree | float = 0.0,
    *,
    key: Any = None,
    log_posterior: LogProbFn | None = None,
    batch: Any = None,
) -> PSGLDState:
    """Initialises the pSGLD state.

    Args:
        params: the initial parameters, a pytree of floating-point arrays.
        initial_scale: V₀ >= 0: a scalar fills it, a pytree like `params` is used as is.
        key: unused (nothing is drawn at initialisation); accepted so that every functional
            transform initialises alike.
        log_posterior: the log posterior (`build` passes its own), traced once with `batch` to
            lay out `aux`, so that the state's structure does not change across `update`.
        batch: an example batch for that trace (needed when `log_posterior` cannot run with
            `batch=None`).

    Returns:
        A `PSGLDState` at step 0 with NaN log posterior and `aux` laid out
        (NaN entries) when `log_posterior` is given, else None.
    """
    return _common.init(kernels.PSGLD, PSGLDState, params, {"initial_scale": initial_scale}, key, log_posterior, batch)


def update(
    state: PSGLDState,
    batch: Any,
    log_posterior: LogProbFn,
    lr: ScalarOrSchedule,
    decay: ScalarOrSchedule = _DEFAULTS.decay,
    eps: jax.typing.ArrayLike = _DEFAULTS.eps,
    temperature: ScalarOrSchedule = _DEFAULTS.temperature,
    *,
    key: Any,
    inplace: bool = False,
) -> PSGLDState:
    """Takes one pSGLD step (see `build` for the rule): one gradient, one noise draw.

    Jit-compiled (cached per `log_posterior` and schedule); numeric hyperparameters are traced.

    Args:
        state: the current `PSGLDState`.
        batch: the data batch passed to `log_posterior`.
        log_posterior: `log_posterior(params, batch) -> (value, aux)`.
        lr: step size ε > 0, a float or a schedule of `state.step`.
        decay: ρ in [0, 1], a float or a schedule of `state.step`.
        eps: λ > 0.
        temperature: T >= 0, a float or a schedule of `state.step`.
        key: this step's PRNG key (typed, raw uint32 or int seed); use each key once.
        inplace: donate the state's params and V buffers to the result.

    Returns:
        The new `PSGLDState`; `log_posterior` and `aux` are those at the old params.
    """
    return _common.update(
        kernels.PSGLD,
        PSGLDState,
        state,
        batch,
        log_posterior,
        {"lr": lr, "decay": decay, "eps": eps, "temperature": temperature},
        key,
        inplace,
    )
