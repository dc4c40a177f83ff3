"""SGHMC with the functional API of posteriors (`build`, `init`, `update`, `SGHMCState`).

Code written for `posteriors.sgmcmc.sghmc` ports line by line; what differs is what JAX needs:
randomness is explicit (`init(..., key=)` to draw momenta, `update(..., key=)` every step), and
`inplace=True` means buffer donation (the old state's arrays are reused and become unusable).
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
    alpha: jax.typing.ArrayLike = 0.01,
    beta: jax.typing.ArrayLike = 0.0,
    sigma: jax.typing.ArrayLike = 1.0,
    temperature: ScalarOrSchedule = 1.0,
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
        alpha: friction α >= 0.
        beta: gradient-noise variance estimate β >= 0; needs 2α − εβT >= 0.
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
        >>> state = transform.init(jnp.zeros(2), key=jax.random.key(0))
        >>> state = transform.update(state, jnp.ones(2), key=jax.random.key(1))
        >>> int(state.step)
        1

    References:
        Chen, Fox & Guestrin, `Stochastic Gradient Hamiltonian Monte Carlo
        <https://arxiv.org/abs/1402.4102>`_, ICML 2014.
    """
    _common.check_log_posterior(log_posterior)
    _checks.check_initial_momenta(momenta)
    _checks.check_target_temperature(
        "sghmc", temperature, getattr(log_posterior, "temperature", None)
    )
    _checks.check_sghmc_hyperparameters(
        lr=lr, alpha=alpha, beta=beta, sigma=sigma, temperature=temperature
    )
    init_fn = functools.partial(
        init, momenta=momenta, sigma=sigma, temperature=temperature, log_posterior=log_posterior
    )
    update_fn = functools.partial(
        update,
        log_posterior=log_posterior,
        lr=lr,
        alpha=alpha,
        beta=beta,
        sigma=sigma,
        temperature=temperature,
    )
    return Transform(init_fn, update_fn)


def init(
    params: ArrayTree,
    momenta: ArrayTree | float | None = None,
    *,
    key: Any = None,
    sigma: jax.typing.ArrayLike = 1.0,
    temperature: ScalarOrSchedule = 1.0,
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
    params = _common.initial_params(params)
    key = None if key is None else _checks.canonical_key(key)
    m0 = kernels.resolve_momenta(momenta, params, key, sigma, _checks.value_at_start(temperature))
    return SGHMCState(
        params,
        m0,
        _common.nan_value(params),
        _common.initial_aux(log_posterior, params, batch),
        _common.step_zero(),
    )


def update(
    state: SGHMCState,
    batch: Any,
    log_posterior: LogProbFn,
    lr: ScalarOrSchedule,
    alpha: jax.typing.ArrayLike = 0.01,
    beta: jax.typing.ArrayLike = 0.0,
    sigma: jax.typing.ArrayLike = 1.0,
    temperature: ScalarOrSchedule = 1.0,
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
        alpha: friction α >= 0.
        beta: gradient-noise variance estimate β >= 0.
        sigma: momentum scale σ > 0.
        temperature: T >= 0, a float or a schedule of `state.step`.
        key: this step's PRNG key (typed, raw uint32 or int seed); use each key once.
        inplace: donate the state's params and momenta buffers to the result (the old state's
            arrays are deleted); the numbers are identical to `inplace=False`.

    Returns:
        The new `SGHMCState`; `log_posterior` and `aux` are those at the old params.
    """
    _common.check_log_posterior(log_posterior)
    _checks.check_sghmc_hyperparameters(
        lr=lr, alpha=alpha, beta=beta, sigma=sigma, temperature=temperature
    )
    _checks.check_float_tree("state.params", state.params)
    key = _checks.canonical_key(key)
    lr_value, lr_schedule = (None, lr) if callable(lr) else (lr, None)
    t_value, t_schedule = (None, temperature) if callable(temperature) else (temperature, None)
    step_fn = _update_donated if inplace else _update_jit
    params, momenta, value, aux, step = step_fn(
        state.params,
        state.momenta,
        jnp.asarray(state.step, jnp.int32),
        jnp.asarray(state.log_posterior),
        batch,
        key,
        lr_value,
        alpha,
        beta,
        sigma,
        t_value,
        log_posterior=log_posterior,
        lr_schedule=lr_schedule,
        temperature_schedule=t_schedule,
    )
    return SGHMCState(params, momenta, value, aux, step)


def _update_impl(
    params: ArrayTree,
    momenta: ArrayTree,
    step: jax.Array,
    previous_value: jax.Array,
    batch: Any,
    key: jax.Array,
    lr: jax.typing.ArrayLike | None,
    alpha: jax.typing.ArrayLike,
    beta: jax.typing.ArrayLike,
    sigma: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike | None,
    *,
    log_posterior: LogProbFn,
    lr_schedule: Any,
    temperature_schedule: Any,
) -> tuple[ArrayTree, ArrayTree, jax.Array, Any, jax.Array]:
    if lr_schedule is not None:
        lr = lr_schedule(step)
    if temperature_schedule is not None:
        temperature = temperature_schedule(step)
    # The step goes through the optax face's own update on LOSS gradients, so both faces run the
    # same operations in the same order and give bit-identical chains from the same keys.
    value, aux, loss_grad = _common.loss_gradient(log_posterior, params, batch)
    tx = transforms.sghmc(lr, alpha, beta, sigma, temperature, momenta=0.0, key=key)
    increment, tx_state = tx.update(
        loss_grad, transforms.SGHMCTransformState(step, momenta, key), params, key=key
    )
    new_momenta = tx_state.momenta
    new_params = optax.apply_updates(params, increment)
    value = jnp.asarray(value, previous_value.dtype)
    return new_params, new_momenta, value, aux, tx_state.step


_STATIC = ("log_posterior", "lr_schedule", "temperature_schedule")
_update_jit = jax.jit(_update_impl, static_argnames=_STATIC)
_update_donated = jax.jit(_update_impl, static_argnames=_STATIC, donate_argnums=(0, 1))
