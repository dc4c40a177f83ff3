"""UBU with the functional API of posteriors (`build`, `init`, `update`, `UBUState`).

posteriors has no UBU; this face has the signatures of its `baoa` (the same hyperparameters,
except that alpha defaults to 1.0, a friction rate of 1 as in the UBU literature, not 0.01), so
code written for `posteriors.sgmcmc.baoa` switches integrator by changing the module. Randomness
is explicit
(`init(..., key=)` to draw momenta, `update(..., key=)` every step) and `inplace=True` means
buffer donation. Both faces run the same rule (`kernels.UBU`) on the same gradient, so they give
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
_DEFAULTS = kernels.UBU.defaults

__all__ = ["UBUState", "build", "init", "update"]


class UBUState(NamedTuple):
    """State of functional UBU.

    Attributes:
        params: the parameters θ', UBU's half-step positions (where it takes its gradients).
        momenta: the momenta m at `params`, a pytree like `params`.
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
    r"""Builds the UBU transform (Sanz-Serna & Zygalakis 2021), binding its hyperparameters.

    .. math::

        m' &= m_t + \epsilon \nabla \log p(\theta'_t) \\
        \theta'_{t+1} &= \theta'_t + \epsilon \varphi_1(\gamma\epsilon) \sigma^{-2} m' + L_{11} \zeta_1 \\
        m_{t+1} &= e^{-\gamma\epsilon} m' + L_{21} \zeta_1 + L_{22} \zeta_2

    with γ = α/σ², φ₁(a) = (1 − e^{−a})/a and the exact Ornstein–Uhlenbeck increment
    (`kernels.ou_coefficients`): UBU's U(ε/2) B(ε) U(ε/2) seen at its half-step positions θ',
    one gradient per step, second order, targeting p_T(θ, m) ∝ exp((log p(θ) − mᵀm/(2σ²)) / T).

    Args:
        log_posterior: `log_posterior(params, batch) -> (value, aux)`, value a scalar.
        lr: step size ε > 0, a float or a schedule of the step.
        alpha: friction α >= 0 (any size: the U step is exact), a float or a schedule.
        sigma: momentum scale σ > 0.
        temperature: T >= 0, a float or a schedule of the step.
        momenta: initial momenta: None draws N(0, σ²T), a scalar fills, a pytree is used as is.

    Returns:
        `Transform(init, update)` with `init(params, *, key=None)` and
        `update(state, batch, *, key, inplace=False)`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.sgmcmc import ubu
        >>> log_post = lambda p, batch: (-0.5 * jnp.sum((p - batch) ** 2), None)
        >>> transform = ubu.build(log_post, lr=0.1, alpha=1.0)
        >>> state = transform.init(jnp.zeros(2), batch=jnp.ones(2), key=jax.random.key(0))
        >>> state = transform.update(state, jnp.ones(2), key=jax.random.key(1))
        >>> int(state.step)
        1

    References:
        Sanz-Serna & Zygalakis, `Wasserstein distance estimates for the distributions of
        numerical approximations to ergodic stochastic differential equations
        <https://jmlr.org/papers/v22/21-0453.html>`_, JMLR 2021.
    """
    _common.check_build(
        kernels.UBU,
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
) -> UBUState:
    """Initialises the UBU state.

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
        A `UBUState` at step 0 with NaN log posterior and `aux` laid out
        (NaN entries) when `log_posterior` is given, else None.
    """
    return _common.init(
        kernels.UBU,
        UBUState,
        params,
        {"momenta": momenta, "sigma": sigma, "temperature": temperature},
        key,
        log_posterior,
        batch,
    )


def update(
    state: UBUState,
    batch: Any,
    log_posterior: LogProbFn,
    lr: ScalarOrSchedule,
    alpha: jax.typing.ArrayLike = _DEFAULTS.alpha,
    sigma: jax.typing.ArrayLike = _DEFAULTS.sigma,
    temperature: ScalarOrSchedule = _DEFAULTS.temperature,
    *,
    key: Any,
    inplace: bool = False,
) -> UBUState:
    """Takes one UBU step (see `build` for the rule): one gradient, two normals per element.

    Jit-compiled (cached per `log_posterior` and schedule); numeric hyperparameters are traced.

    Args:
        state: the current `UBUState`.
        batch: the data batch passed to `log_posterior`.
        log_posterior: `log_posterior(params, batch) -> (value, aux)`.
        lr: step size ε > 0, a float or a schedule of `state.step`.
        alpha: friction α >= 0, a float or a schedule of the step.
        sigma: momentum scale σ > 0.
        temperature: T >= 0, a float or a schedule of `state.step`.
        key: this step's PRNG key (typed, raw uint32 or int seed); use each key once.
        inplace: donate the state's params and momenta buffers to the result.

    Returns:
        The new `UBUState`; `log_posterior` and `aux` are those at the old params.
    """
    return _common.update(
        kernels.UBU,
        UBUState,
        state,
        batch,
        log_posterior,
        {"lr": lr, "alpha": alpha, "sigma": sigma, "temperature": temperature},
        key,
        inplace,
    )
