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
import jax.numpy as jnp
import optax

from sghmc_jax import _checks, kernels, transforms
from sghmc_jax.sgmcmc import _common
from sghmc_jax.types import ArrayTree, LogProbFn, ScalarOrSchedule, Transform

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


def _check(lr: Any, decay: Any, eps: Any, temperature: Any, initial_scale: Any = 0.0) -> None:
    _checks.check_rules(
        {"lr": lr, "temperature": temperature},
        [("lr", lambda v: v > 0, "> 0"), ("temperature", lambda v: v >= 0, ">= 0")],
    )
    _checks.check_preconditioner(decay=decay, eps=eps, initial_scale=initial_scale)


def build(
    log_posterior: LogProbFn,
    lr: ScalarOrSchedule,
    decay: ScalarOrSchedule = 0.99,
    eps: jax.typing.ArrayLike = 1e-5,
    temperature: ScalarOrSchedule = 1.0,
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
        >>> state = transform.init(jnp.zeros(2))
        >>> state = transform.update(state, jnp.ones(2), key=jax.random.key(1))
        >>> state.v  # 0.99 · 1 + 0.01 · 1²
        Array([1., 1.], dtype=float32)

    References:
        Li, Chen, Carlson & Carin, `Preconditioned Stochastic Gradient Langevin Dynamics for
        Deep Neural Networks <https://arxiv.org/abs/1512.07666>`_, AAAI 2016.
    """
    _common.check_log_posterior(log_posterior)
    _checks.check_target_temperature(
        "psgld", temperature, getattr(log_posterior, "temperature", None)
    )
    _check(lr, decay, eps, temperature, initial_scale)
    init_fn = functools.partial(init, log_posterior=log_posterior, initial_scale=initial_scale)
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
    del key
    params = _common.initial_params(params)
    v0 = kernels.resolve_preconditioner(initial_scale, params)
    return PSGLDState(params, v0, _common.nan_value(params), _common.initial_aux(log_posterior, params, batch), _common.step_zero())


def update(
    state: PSGLDState,
    batch: Any,
    log_posterior: LogProbFn,
    lr: ScalarOrSchedule,
    decay: ScalarOrSchedule = 0.99,
    eps: jax.typing.ArrayLike = 1e-5,
    temperature: ScalarOrSchedule = 1.0,
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
    _common.check_log_posterior(log_posterior)
    _check(lr, decay, eps, temperature)
    _checks.check_float_tree("state.params", state.params)
    key = _checks.canonical_key(key)
    lr_value, lr_schedule = _common.split_schedule(lr)
    t_value, t_schedule = _common.split_schedule(temperature)
    d_value, d_schedule = _common.split_schedule(decay)
    step_fn = _update_donated if inplace else _update_jit
    params, v, value, aux, step = step_fn(
        state.params,
        state.v,
        jnp.asarray(state.step, jnp.int32),
        jnp.asarray(state.log_posterior),
        batch,
        key,
        lr_value,
        d_value,
        eps,
        t_value,
        log_posterior=log_posterior,
        lr_schedule=lr_schedule,
        decay_schedule=d_schedule,
        temperature_schedule=t_schedule,
    )
    return PSGLDState(params, v, value, aux, step)


def _update_impl(
    params: ArrayTree,
    v: ArrayTree,
    step: jax.Array,
    previous_value: jax.Array,
    batch: Any,
    key: jax.Array,
    lr: jax.typing.ArrayLike | None,
    decay: jax.typing.ArrayLike | None,
    eps: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike | None,
    *,
    log_posterior: LogProbFn,
    lr_schedule: Any,
    decay_schedule: Any,
    temperature_schedule: Any,
) -> tuple[ArrayTree, ArrayTree, jax.Array, Any, jax.Array]:
    lr = _common.at(lr, lr_schedule, step)
    decay = _common.at(decay, decay_schedule, step)
    temperature = _common.at(temperature, temperature_schedule, step)
    value, aux, loss_grad = _common.loss_gradient(log_posterior, params, batch)
    tx = transforms.psgld(lr, decay, eps, temperature, key=key)
    increment, tx_state = tx.update(
        loss_grad, transforms.PSGLDTransformState(step, v, key), params, key=key
    )
    new_params = optax.apply_updates(params, increment)
    value = jnp.asarray(value, previous_value.dtype)
    return new_params, tx_state.v, value, aux, tx_state.step


_STATIC = ("log_posterior", "lr_schedule", "decay_schedule", "temperature_schedule")
_update_jit = jax.jit(_update_impl, static_argnames=_STATIC)
_update_donated = jax.jit(_update_impl, static_argnames=_STATIC, donate_argnums=(0, 1))
