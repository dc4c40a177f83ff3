"""Optax faces: each sampler as an `optax.GradientTransformationExtraArgs`.

Sign convention: like every optax transform, these consume gradients of the LOSS, i.e.
−∇ log p(θ), and return updates for `optax.apply_updates`. Feed them `jax.grad(loss)` with
`loss = -log_posterior`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sghmc_jax import _checks, kernels
from sghmc_jax.types import ArrayTree, ScalarOrSchedule

__all__ = ["SGHMCTransformState", "sghmc"]


class SGHMCTransformState(NamedTuple):
    """State of the `sghmc` transform.

    Attributes:
        step: number of updates taken (int32, saturating); schedules are evaluated at it.
        momenta: the momenta m, a pytree like the params.
        key: the PRNG key split at each update that gets no per-step `key=`.
    """

    step: jax.Array
    momenta: ArrayTree
    key: jax.Array


def _at(value: ScalarOrSchedule, step: jax.Array) -> jax.typing.ArrayLike:
    return value(step) if callable(value) else value


def sghmc(
    learning_rate: ScalarOrSchedule,
    alpha: jax.typing.ArrayLike = 0.01,
    beta: jax.typing.ArrayLike = 0.0,
    sigma: jax.typing.ArrayLike = 1.0,
    temperature: ScalarOrSchedule = 1.0,
    momenta: ArrayTree | float | None = None,
    *,
    key: Any,
) -> optax.GradientTransformationExtraArgs:
    r"""Stochastic gradient Hamiltonian Monte Carlo as an optax transform.

    With g_t = −(incoming update), the gradient of the log posterior at θ_t, ε the learning rate
    and ξ_t ~ N(0, I):

    .. math::

        m_{t+1} &= m_t + \epsilon g_t - \epsilon \sigma^{-2} \alpha m_t
                   + \sqrt{\epsilon T (2\alpha - \epsilon \beta T)}\, \xi_t \\
        \text{update} &= \epsilon \sigma^{-2} m_{t+1}
                   \quad (\theta_{t+1} = \theta_t + \text{update})

    targeting p_T(θ, m) ∝ exp((log p(θ) − mᵀm/(2σ²)) / T). At T = 0 and zero initial momenta it
    is heavy-ball SGD, `optax.sgd(ε²/σ², momentum=1 − εα/σ²)`.

    **Sign convention**: the incoming updates are gradients of the LOSS (−∇ log p), as for every
    optax transform; returned updates go to `optax.apply_updates`.

    **Keys**: `key` seeds the state; each update splits the state key unless it is given a
    per-step key, `update(grads, state, params, key=k)`, which takes precedence (and leaves the
    state key as it was). Vmapped chains must not share noise: pass per-chain keys per step, or
    build the transform inside the vmap from per-chain keys.

    Args:
        learning_rate: step size ε > 0, a float or an optax schedule of the step.
        alpha: friction α >= 0.
        beta: estimate β >= 0 of the gradient-noise variance; needs 2α − εβT >= 0.
        sigma: momentum scale σ > 0 (the momenta's target standard deviation at T = 1).
        temperature: T >= 0, a float or a schedule; T = 1 is the posterior, T < 1 a cold one.
        momenta: initial momenta: None draws them from N(0, σ²T) (N(0, 1) at σ = T = 1, zero at
            T = 0), a scalar fills them, a pytree like the params is used as is.
        key: a PRNG key (typed `jax.random.key`, raw `jax.random.PRNGKey`) or an int seed.

    Returns:
        An `optax.GradientTransformationExtraArgs` with state `SGHMCTransformState`.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import sghmc_jax
        >>> loss = lambda p: 0.5 * jnp.sum(p["w"] ** 2)  # −log N(0, I)
        >>> params = {"w": jnp.ones(3)}
        >>> tx = sghmc_jax.sghmc(learning_rate=0.1, alpha=0.5, key=0)
        >>> state = tx.init(params)
        >>> updates, state = tx.update(jax.grad(loss)(params), state, params)
        >>> params = optax.apply_updates(params, updates)
        >>> params["w"].shape
        (3,)

    References:
        Chen, Fox & Guestrin, `Stochastic Gradient Hamiltonian Monte Carlo
        <https://arxiv.org/abs/1402.4102>`_, ICML 2014.
    """
    _checks.check_sghmc_hyperparameters(
        lr=learning_rate,
        alpha=alpha,
        beta=beta,
        sigma=sigma,
        temperature=temperature,
        lr_name="learning_rate",
    )
    base_key = _checks.canonical_key(key)
    if momenta is not None and not isinstance(momenta, (int, float)):
        _checks.check_float_tree("momenta", momenta)

    def init_fn(params: ArrayTree) -> SGHMCTransformState:
        _checks.check_float_tree("params", params)
        momenta_key, state_key = jax.random.split(base_key)
        m0 = kernels.resolve_momenta(momenta, params, momenta_key, sigma, _checks.value_at_start(temperature))
        return SGHMCTransformState(step=jnp.zeros([], jnp.int32), momenta=m0, key=state_key)

    def update_fn(
        updates: ArrayTree,
        state: SGHMCTransformState,
        params: ArrayTree | None = None,
        *,
        key: Any = None,
        **extra_args: Any,
    ) -> tuple[ArrayTree, SGHMCTransformState]:
        del params, extra_args
        _checks.check_float_tree("updates", updates)
        _checks.check_tree_like("updates", updates, "state.momenta", state.momenta)
        if key is None:
            step_key, next_key = kernels.split_key(state.key)
        else:
            step_key, next_key = _checks.canonical_key(key), state.key
        grad_log_posterior = jax.tree.map(jnp.negative, updates)
        increment, new_momenta = kernels.sghmc_step(
            state.momenta,
            grad_log_posterior,
            step_key,
            _at(learning_rate, state.step),
            alpha,
            beta,
            sigma,
            _at(temperature, state.step),
        )
        new_state = SGHMCTransformState(
            step=optax.safe_increment(state.step), momenta=new_momenta, key=next_key
        )
        return increment, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
