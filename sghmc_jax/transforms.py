"""Optax faces: each sampler as an `optax.GradientTransformationExtraArgs`.

Sign convention: like every optax transform, these consume gradients of the LOSS, i.e.
−∇ log p(θ), and return updates for `optax.apply_updates`. Feed them `jax.grad(loss)` with
`loss = -log_posterior` (`sghmc_jax.as_loss` builds it from a posteriors-style log posterior).

Extra arguments of `update` (optax's `GradientTransformationExtraArgs`; `optax.chain` passes
them on): `key=` a per-step PRNG key, which takes precedence over the state's; and
`target_temperature=` the temperature the loss's log posterior needs (a `ScaledLogPosterior`'s
`temperature`), which `sample()` passes so that a transform whose temperature disagrees raises
when traced, before anything compiles.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sghmc_jax import _checks, _inputs, _noise, _tempering, kernels
from sghmc_jax.types import ArrayTree, ScalarOrSchedule

__all__ = [
    "BAOATransformState",
    "PSGHMCTransformState",
    "PSGLDTransformState",
    "SGHMCTransformState",
    "SGLDTransformState",
    "SGNHTTransformState",
    "UBUTransformState",
    "baoa",
    "no_chain_collectives",
    "psghmc",
    "psgld",
    "sghmc",
    "sgld",
    "sgnht",
    "ubu",
]


class SamplerTransform(optax.GradientTransformationExtraArgs):
    """An `optax.GradientTransformationExtraArgs` that says what it is, so that `sample()` can
    record its hyperparameters for `SampleResult.diagnose()`.

    Attributes (set by the factory; no new tuple fields, so it unpacks and chains as optax's):
        sampler: the rule's name ("sghmc", "sgld", "sgnht", "baoa", "ubu", "psgld", "psghmc").
        hyperparameters: the factory's numeric hyperparameters by their rule names ("lr",
            "alpha", "beta", "sigma", "temperature", ...): numbers or schedules of the step.
    """

    sampler: str
    hyperparameters: dict[str, Any]


def _transform(
    rule: kernels.Rule,
    state_type: type,
    hyperparameters: dict[str, Any],
    settings: dict[str, Any],
    key: Any,
) -> optax.GradientTransformationExtraArgs:
    """The optax face of `rule`: its state is `state_type(step, *rule.fields, key)`.

    `hyperparameters` are the rule's (numbers or schedules of the state's step, checked here
    against the rule's table), `settings` its initial-state options (e.g. `momenta`).
    The incoming updates are loss gradients; the rule gets their negation, the gradient of the
    log posterior, and the increment it returns is the update.
    """
    step = rule.step
    if rule.integrate is not None or step is None:
        raise TypeError(
            f"{rule.name} takes more than one gradient per step, so it has no optax face (an "
            "optax update receives one gradient, at the current params): use its functional face"
        )
    _checks.check_hyperparameters(rule, hyperparameters, lr_name="learning_rate")
    _checks.check_settings(settings)
    base_key = _checks.canonical_key(key)

    def init_fn(params: ArrayTree) -> Any:
        _checks.check_float_tree("params", params)
        if rule.draws_at_init:
            init_key, state_key = jax.random.split(base_key)
        else:
            init_key, state_key = None, base_key
        start = {k: _checks.schedule_value(v) for k, v in _inputs.resolve(hyperparameters, hyperparameters).items()}
        rung = _tempering.active()
        if rung is not None:  # a replica of a ladder: its momenta are drawn at its temperature
            rung.seen.append((rule.name, hyperparameters["temperature"]))
            start = kernels.at_temperature_factor(start, rung.factor)
        start |= settings
        fields = rule.init(params, init_key, start)
        return state_type(step=jnp.zeros([], jnp.int32), key=state_key, **fields)

    def update_fn(
        updates: ArrayTree, state: Any, params: ArrayTree | None = None, *, key: Any = None, **extra_args: Any
    ) -> tuple[ArrayTree, Any]:
        del params
        with _inputs.paused():  # on the values given, not on a sweep's program inputs
            _checks.check_target_temperature(
                rule.name, hyperparameters["temperature"], extra_args.get("target_temperature")
            )
        _checks.check_float_tree("updates", updates)
        if rule.fields:
            field = rule.fields[0]
            _checks.check_tree_like("updates", updates, f"state.{field}", getattr(state, field))
        if key is None:
            step_key, next_key = kernels.split_key(state.key)
        else:
            step_key, next_key = _checks.canonical_key(key), state.key
        # Inside `sample()`, its numbers are the program's inputs: a sweep compiles once.
        now = {
            k: _checks.schedule_value(v, state.step)
            for k, v in _inputs.resolve(hyperparameters, hyperparameters).items()
        }
        fields = {f: getattr(state, f) for f in rule.fields}
        rung = _tempering.active()
        if rung is not None:  # a replica of a ladder (`_tempering`): at its rung's temperature
            _check_tempered(rule, hyperparameters, rung)
            fields = kernels.temper(fields, rung.ratio, now)
            now = kernels.at_temperature_factor(now, rung.factor)
        grad_log_posterior = jax.tree.map(jax.lax.neg, updates)
        increment, fields = step(fields, grad_log_posterior, step_key, now)
        return increment, state_type(step=optax.safe_increment(state.step), key=next_key, **fields)

    transform = SamplerTransform(init_fn, update_fn)
    transform.sampler = rule.name
    transform.hyperparameters = dict(hyperparameters)
    return transform


def _check_tempered(rule: kernels.Rule, hyperparameters: dict[str, Any], rung: _tempering.Rung) -> None:
    """A replica of a ladder runs at T·τ: its temperature must be a number. (The rule's checks
    need not be made again at T·τ: with β divided by τ², `kernels.at_temperature_factor`, the
    noise rule 2α − εβT >= 0 only loosens as T grows.)"""
    rung.seen.append((rule.name, hyperparameters["temperature"]))
    temperature = hyperparameters["temperature"]
    if callable(temperature):
        raise ValueError(
            f"`temperatures` (replica exchange) runs each rung at its own multiple of the run's temperature, "
            f"which must be a constant: {rule.name}'s `temperature` is a schedule, {temperature!r}"
        )


@contextlib.contextmanager
def no_chain_collectives(step: jax.typing.ArrayLike) -> Iterator[None]:
    """Keeps a `vmap` over chains of these transforms free of communication between devices.

    On CPU, and on accelerators for trees of many small leaves, the noise of small leaves is
    drawn in bins whose conditionals take an opaque zero from the key; under a `vmap` over
    chains that zero is chain 0's, so when the chains are sharded over devices (a
    `NamedSharding` of the chain axis) XLA broadcasts it from chain 0's device in every update:
    an all-reduce per step. Inside this scope the zero is made from `step` instead, a value
    every chain shares, and the update needs no communication. The numbers do not change.
    `sample()` does this itself; use it in your own vmapped optax loop.

    Args:
        step: an integer scalar known only at run time (a traced value inside `jit`, e.g. the
            step count your loop carries), outside the `vmap` (not batched over chains). Any
            such value works; a constant would let XLA fold the bins' conditionals away.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import sghmc_jax
        >>> tx = sghmc_jax.sghmc(1e-2, alpha=1.0, key=0)
        >>> loss = lambda p: 0.5 * jnp.sum(p["w"] ** 2)
        >>> params = {"w": jnp.zeros((4, 3))}             # 4 chains (shard this axis over devices)
        >>> states = jax.vmap(tx.init)(params)
        >>> keys = jax.random.split(jax.random.key(1), 4)
        >>> @jax.jit
        ... def step(params, states, t):
        ...     def chain(p, s, k):
        ...         u, s = tx.update(jax.grad(loss)(p), s, p, key=jax.random.fold_in(k, t))
        ...         return optax.apply_updates(p, u), s
        ...     with sghmc_jax.no_chain_collectives(t):  # outside the vmap
        ...         return jax.vmap(chain)(params, states, keys)
        >>> for t in range(3):
        ...     params, states = step(params, states, t)
        >>> params["w"].shape
        (4, 3)
    """
    try:
        value = jnp.asarray(step)
    except TypeError:
        raise TypeError(f"`step` must be an integer scalar, got {type(step).__name__}: {step!r}") from None
    if value.shape != () or not jnp.issubdtype(value.dtype, jnp.integer):
        raise TypeError(
            f"`step` must be an integer scalar (shared by all chains, outside the vmap), got "
            f"shape {value.shape} and dtype {value.dtype}"
        )
    with _noise.shared_zero(value):
        yield


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


def sghmc(
    learning_rate: ScalarOrSchedule,
    alpha: jax.typing.ArrayLike = kernels.SGHMC.defaults.alpha,
    beta: jax.typing.ArrayLike = kernels.SGHMC.defaults.beta,
    sigma: jax.typing.ArrayLike = kernels.SGHMC.defaults.sigma,
    temperature: ScalarOrSchedule = kernels.SGHMC.defaults.temperature,
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
        alpha: friction α >= 0, a float or a schedule of the step.
        beta: estimate β >= 0 of the gradient-noise variance (a float or a schedule); needs 2α − εβT >= 0.
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
    return _transform(
        kernels.SGHMC,
        SGHMCTransformState,
        {"lr": learning_rate, "alpha": alpha, "beta": beta, "sigma": sigma, "temperature": temperature},
        {"momenta": momenta},
        key,
    )


class SGLDTransformState(NamedTuple):
    """State of the `sgld` transform.

    Attributes:
        step: number of updates taken (int32, saturating); schedules are evaluated at it.
        key: the PRNG key split at each update that gets no per-step `key=`.
    """

    step: jax.Array
    key: jax.Array


def sgld(
    learning_rate: ScalarOrSchedule,
    beta: jax.typing.ArrayLike = kernels.SGLD.defaults.beta,
    temperature: ScalarOrSchedule = kernels.SGLD.defaults.temperature,
    *,
    key: Any,
) -> optax.GradientTransformationExtraArgs:
    r"""Stochastic gradient Langevin dynamics as an optax transform (posteriors' parameterisation).

    With g_t = −(incoming update), the gradient of the log posterior at θ_t, and ξ_t ~ N(0, I):

    .. math::

        \text{update} = \epsilon g_t + \sqrt{\epsilon T (2 - \epsilon \beta T)}\, \xi_t
            \quad (\theta_{t+1} = \theta_t + \text{update})

    targeting p_T(θ) ∝ exp(log p(θ) / T) as ε → 0. At T = 0 it is `optax.sgd(ε)`.

    **Sign convention and keys**: as for `sghmc`: incoming updates are LOSS gradients; `key`
    seeds the state key, split every update unless `update(..., key=k)` gives a per-step key.

    Args:
        learning_rate: step size ε > 0, a float or an optax schedule of the step.
        beta: estimate β >= 0 of the gradient-noise variance (a float or a schedule); needs 2 − εβT >= 0.
        temperature: T >= 0, a float or a schedule; T = 1 is the posterior.
        key: a PRNG key (typed or raw) or an int seed.

    Returns:
        An `optax.GradientTransformationExtraArgs` with state `SGLDTransformState`.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import sghmc_jax
        >>> loss = lambda p: 0.5 * jnp.sum(p ** 2)  # −log N(0, I)
        >>> params = jnp.ones(3)
        >>> tx = sghmc_jax.sgld(learning_rate=0.1, temperature=0.0, key=0)
        >>> updates, state = tx.update(jax.grad(loss)(params), tx.init(params), params)
        >>> optax.apply_updates(params, updates)  # T = 0: a gradient step
        Array([0.9, 0.9, 0.9], dtype=float32)

    References:
        Welling & Teh, `Bayesian Learning via Stochastic Gradient Langevin Dynamics
        <https://www.stats.ox.ac.uk/~teh/research/compstats/WelTeh2011a.pdf>`_, ICML 2011.
    """
    return _transform(
        kernels.SGLD,
        SGLDTransformState,
        {"lr": learning_rate, "beta": beta, "temperature": temperature},
        {},
        key,
    )


class SGNHTTransformState(NamedTuple):
    """State of the `sgnht` transform.

    Attributes:
        step: number of updates taken (int32, saturating); schedules are evaluated at it.
        momenta: the momenta m, a pytree like the params.
        xi: the thermostat ξ, a scalar in the params' highest dtype (at least float32).
        key: the PRNG key split at each update that gets no per-step `key=`.
    """

    step: jax.Array
    momenta: ArrayTree
    xi: jax.Array
    key: jax.Array


def sgnht(
    learning_rate: ScalarOrSchedule,
    alpha: jax.typing.ArrayLike = kernels.SGNHT.defaults.alpha,
    beta: jax.typing.ArrayLike = kernels.SGNHT.defaults.beta,
    sigma: jax.typing.ArrayLike = kernels.SGNHT.defaults.sigma,
    temperature: ScalarOrSchedule = kernels.SGNHT.defaults.temperature,
    momenta: ArrayTree | float | None = None,
    xi: jax.typing.ArrayLike | None = None,
    *,
    key: Any,
) -> optax.GradientTransformationExtraArgs:
    r"""Stochastic gradient Nosé–Hoover thermostat as an optax transform.

    With g_t = −(incoming update), ζ_t ~ N(0, I) and d the number of parameters:

    .. math::

        m_{t+1} &= m_t + \epsilon g_t - \epsilon \sigma^{-2} \xi_t m_t
                   + \sqrt{\epsilon T (2\alpha - \epsilon \beta T)}\, \zeta_t \\
        \text{update} &= \epsilon \sigma^{-2} m_{t+1} \\
        \xi_{t+1} &= \xi_t + \epsilon \left(\frac{m_{t+1}^\top m_{t+1}}{\sigma^2 d} - T\right)

    SGHMC whose friction ξ adapts until the kinetic temperature mᵀm/(σ²d) averages T (exactly,
    over time: see `kernels.sgnht_step`), which absorbs gradient noise that β does not model.
    With ξ held at α it is `sghmc`, bit for bit. ξ and the position move with the NEW momentum
    (Ding et al.'s Algorithm 1; posteriors uses the old one). The price of the adaptation: the
    θ moments carry a first-order bias in ε (SGHMC's is second order on Gaussians).

    Args:
        learning_rate: step size ε > 0, a float or an optax schedule of the step.
        alpha: α >= 0: sets the injected noise, the thermostat's stationary mean and its
            default initial value.
        beta: estimate β >= 0 of the gradient-noise variance (a float or a schedule); needs 2α − εβT >= 0.
        sigma: momentum scale σ > 0.
        temperature: T >= 0, a float or a schedule.
        momenta: initial momenta: None draws N(0, σ²T), a scalar fills, a pytree is used as is.
        xi: initial thermostat ξ_0 (any real); None starts at `alpha`.
        key: a PRNG key (typed or raw) or an int seed.

    Returns:
        An `optax.GradientTransformationExtraArgs` with state `SGNHTTransformState`.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import sghmc_jax
        >>> loss = lambda p: 0.5 * jnp.sum(p ** 2)
        >>> params = jnp.ones(3)
        >>> tx = sghmc_jax.sgnht(learning_rate=0.1, alpha=0.5, key=0)
        >>> state = tx.init(params)
        >>> updates, state = tx.update(jax.grad(loss)(params), state, params)
        >>> state.xi.dtype, int(state.step)
        (dtype('float32'), 1)

    References:
        Ding, Fang, Babbush, Chen, Skeel & Neven, `Bayesian Sampling Using Stochastic Gradient
        Thermostats <https://proceedings.neurips.cc/paper/2014/file/21fe5b8ba755eeaece7a450849876228-Paper.pdf>`_,
        NeurIPS 2014.
    """
    return _transform(
        kernels.SGNHT,
        SGNHTTransformState,
        {"lr": learning_rate, "alpha": alpha, "beta": beta, "sigma": sigma, "temperature": temperature},
        {"momenta": momenta, "xi": xi},
        key,
    )


class BAOATransformState(NamedTuple):
    """State of the `baoa` transform.

    Attributes:
        step: number of updates taken (int32, saturating); schedules are evaluated at it.
        momenta: the momenta m (after the O step), a pytree like the params.
        key: the PRNG key split at each update that gets no per-step `key=`.
    """

    step: jax.Array
    momenta: ArrayTree
    key: jax.Array


def baoa(
    learning_rate: ScalarOrSchedule,
    alpha: jax.typing.ArrayLike = kernels.BAOA.defaults.alpha,
    sigma: jax.typing.ArrayLike = kernels.BAOA.defaults.sigma,
    temperature: ScalarOrSchedule = kernels.BAOA.defaults.temperature,
    momenta: ArrayTree | float | None = None,
    *,
    key: Any,
) -> optax.GradientTransformationExtraArgs:
    r"""BAOA Langevin splitting (Leimkuhler & Matthews) as an optax transform.

    With g_t = −(incoming update), γ = α/σ² and ξ_t ~ N(0, I):

    .. math::

        m' &= m_t + \epsilon g_t \\
        m_{t+1} &= e^{-\gamma \epsilon} m' + \sigma \sqrt{T (1 - e^{-2 \gamma \epsilon})}\, \xi_t \\
        \text{update} &= \tfrac{\epsilon}{2} \sigma^{-2} (m' + m_{t+1})

    i.e. kick (B), half drift (A), exact Ornstein–Uhlenbeck friction (O), half drift (A). The
    single gradient an optax update receives, at θ_t, is exactly what B needs. Stable for any
    friction, noise-free at T = 0, and on Gaussian targets its θ marginal is exact for every
    stable step size (ε·sqrt(curvature)/σ < 2). No β: posteriors' BAOA has none.

    Args:
        learning_rate: step size ε > 0, a float or an optax schedule of the step.
        alpha: friction α >= 0, a float or a schedule of the step.
        sigma: momentum scale σ > 0.
        temperature: T >= 0, a float or a schedule.
        momenta: initial momenta: None draws N(0, σ²T), a scalar fills, a pytree is used as is.
        key: a PRNG key (typed or raw) or an int seed.

    Returns:
        An `optax.GradientTransformationExtraArgs` with state `BAOATransformState`.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import sghmc_jax
        >>> loss = lambda p: 0.5 * jnp.sum(p ** 2)
        >>> params = jnp.ones(2)
        >>> tx = sghmc_jax.baoa(learning_rate=0.1, alpha=1.0, temperature=0.0, momenta=0.0, key=0)
        >>> updates, state = tx.update(jax.grad(loss)(params), tx.init(params), params)
        >>> updates  # ε/2 · (m' + e^{−0.1} m'), m' = −0.1
        Array([-0.00952419, -0.00952419], dtype=float32)

    References:
        Leimkuhler & Matthews, `Rational Construction of Stochastic Numerical Methods for
        Molecular Sampling <https://arxiv.org/abs/1203.5428>`_, AMRX 2013.
    """
    return _transform(
        kernels.BAOA,
        BAOATransformState,
        {"lr": learning_rate, "alpha": alpha, "sigma": sigma, "temperature": temperature},
        {"momenta": momenta},
        key,
    )


class UBUTransformState(NamedTuple):
    """State of the `ubu` transform.

    Attributes:
        step: number of updates taken (int32, saturating); schedules are evaluated at it.
        momenta: the momenta m at the stored (half-step) params, a pytree like the params.
        key: the PRNG key split at each update that gets no per-step `key=`.
    """

    step: jax.Array
    momenta: ArrayTree
    key: jax.Array


def ubu(
    learning_rate: ScalarOrSchedule,
    alpha: jax.typing.ArrayLike = kernels.UBU.defaults.alpha,
    sigma: jax.typing.ArrayLike = kernels.UBU.defaults.sigma,
    temperature: ScalarOrSchedule = kernels.UBU.defaults.temperature,
    momenta: ArrayTree | float | None = None,
    *,
    key: Any,
) -> optax.GradientTransformationExtraArgs:
    r"""UBU, the second-order splitting of underdamped Langevin (Sanz-Serna & Zygalakis), as an
    optax transform.

    With g_t = −(incoming update), γ = α/σ² and ζ₁, ζ₂ ~ N(0, I):

    .. math::

        m' &= m_t + \epsilon g_t \\
        \text{update} &= \epsilon \varphi_1(\gamma\epsilon) \sigma^{-2} m' + L_{11} \zeta_1 \\
        m_{t+1} &= e^{-\gamma\epsilon} m' + L_{21} \zeta_1 + L_{22} \zeta_2

    i.e. a gradient kick (B) and the force-free dynamics solved exactly over ε (U: friction,
    drift and noise together, with correlated increments for θ and m; `kernels.ou_coefficients`).
    The params it moves are UBU's half-step positions, where UBU takes its gradients, so one
    update per gradient is exactly one U(ε/2) B(ε) U(ε/2) step. Second order with one gradient
    per step: on a Gaussian of curvature c, Var θ = (T/c)(1 + ω²ε²/12 + O(ε⁴)), ω² = c/σ².
    Stable for ε·sqrt(curvature)/σ < 2 at any friction, noise-free at T = 0. With minibatches
    it stays second order when the batches are visited in symmetric order
    (`sample(..., batch_order="sms")`: SMS-UBU, Paulin et al. 2025); in random order the
    minibatch noise adds a first-order bias, as for every one-gradient scheme. No β.

    Args:
        learning_rate: step size ε > 0, a float or an optax schedule of the step.
        alpha: friction α >= 0, a float or a schedule of the step (γ = α/σ² is a rate: the
            momenta forget over 1/γ time units, i.e. 1/(γε) steps).
        sigma: momentum scale σ > 0.
        temperature: T >= 0, a float or a schedule.
        momenta: initial momenta: None draws N(0, σ²T), a scalar fills, a pytree is used as is.
        key: a PRNG key (typed or raw) or an int seed.

    Returns:
        An `optax.GradientTransformationExtraArgs` with state `UBUTransformState`.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import sghmc_jax
        >>> loss = lambda p: 0.5 * jnp.sum(p ** 2)
        >>> params = jnp.ones(2)
        >>> tx = sghmc_jax.ubu(learning_rate=0.1, alpha=0.0, temperature=0.0, momenta=0.0, key=0)
        >>> updates, state = tx.update(jax.grad(loss)(params), tx.init(params), params)
        >>> updates  # free flight ε·m' with m' = −0.1
        Array([-0.01, -0.01], dtype=float32)

    References:
        Sanz-Serna & Zygalakis, `Wasserstein distance estimates for the distributions of
        numerical approximations to ergodic stochastic differential equations
        <https://jmlr.org/papers/v22/21-0453.html>`_, JMLR 2021.
    """
    return _transform(
        kernels.UBU,
        UBUTransformState,
        {"lr": learning_rate, "alpha": alpha, "sigma": sigma, "temperature": temperature},
        {"momenta": momenta},
        key,
    )


class PSGLDTransformState(NamedTuple):
    """State of the `psgld` transform.

    Attributes:
        step: number of updates taken (int32, saturating); schedules are evaluated at it.
        v: V, the running mean of squared gradients (RMSprop's accumulator), like the params.
        key: the PRNG key split at each update that gets no per-step `key=`.
    """

    step: jax.Array
    v: ArrayTree
    key: jax.Array


def psgld(
    learning_rate: ScalarOrSchedule,
    decay: ScalarOrSchedule = kernels.PSGLD.defaults.decay,
    eps: jax.typing.ArrayLike = kernels.PSGLD.defaults.eps,
    temperature: ScalarOrSchedule = kernels.PSGLD.defaults.temperature,
    initial_scale: ArrayTree | float = 0.0,
    *,
    key: Any,
) -> optax.GradientTransformationExtraArgs:
    r"""Preconditioned SGLD (Li et al. 2016) as an optax transform.

    With g_t = −(incoming update) and ξ_t ~ N(0, I), elementwise:

    .. math::

        V_{t+1} &= \rho V_t + (1 - \rho)\, g_t^2, \qquad
        G_{t+1} = 1 / (\lambda + \sqrt{V_{t+1}}) \\
        \text{update} &= \epsilon G_{t+1} g_t + \sqrt{2 \epsilon T G_{t+1}}\, \xi_t

    SGLD (posteriors' units) with RMSprop's preconditioner; ρ = `decay`, λ = `eps`, V_0 =
    `initial_scale` (names as in `optax.rmsprop`). Li et al.'s Γ(θ) correction term is dropped
    (see `kernels.psgld_step`), which biases the chain while V adapts. **Freeze V** to remove
    that bias: `decay=1.0` (with V given by `initial_scale`) keeps G constant, and a schedule
    such as `optax.join_schedules([optax.constant_schedule(0.99), optax.constant_schedule(1.0)],
    [burn_in])` adapts V during burn-in and then samples with a fixed preconditioner.

    Args:
        learning_rate: step size ε > 0, a float or an optax schedule of the step.
        decay: ρ in [0, 1], a float or a schedule; 1 freezes V.
        eps: λ > 0; G <= 1/λ.
        temperature: T >= 0, a float or a schedule.
        initial_scale: V_0 >= 0: a scalar fills it, a pytree like the params (e.g. a V estimated
            in an earlier run) is used as is. With V_0 = 0 the first steps are large
            (G ≈ 1/(√(1−ρ)|g|)), as in RMSprop.
        key: a PRNG key (typed or raw) or an int seed.

    Returns:
        An `optax.GradientTransformationExtraArgs` with state `PSGLDTransformState`.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import sghmc_jax
        >>> loss = lambda p: 0.5 * jnp.sum(p ** 2)
        >>> params = jnp.ones(2)
        >>> tx = sghmc_jax.psgld(0.1, decay=1.0, eps=1e-8, initial_scale=4.0,
        ...                      temperature=0.0, key=0)
        >>> updates, state = tx.update(jax.grad(loss)(params), tx.init(params), params)
        >>> updates  # frozen V = 4: G = 1/2
        Array([-0.05, -0.05], dtype=float32)

    References:
        Li, Chen, Carlson & Carin, `Preconditioned Stochastic Gradient Langevin Dynamics for
        Deep Neural Networks <https://arxiv.org/abs/1512.07666>`_, AAAI 2016.
    """
    return _transform(
        kernels.PSGLD,
        PSGLDTransformState,
        {"lr": learning_rate, "decay": decay, "eps": eps, "temperature": temperature},
        {"initial_scale": initial_scale},
        key,
    )


class PSGHMCTransformState(NamedTuple):
    """State of the `psghmc` transform.

    Attributes:
        step: number of updates taken (int32, saturating); schedules are evaluated at it.
        momenta: the momenta m, a pytree like the params.
        v: V, the running mean of squared gradients, like the params.
        key: the PRNG key split at each update that gets no per-step `key=`.
    """

    step: jax.Array
    momenta: ArrayTree
    v: ArrayTree
    key: jax.Array


def psghmc(
    learning_rate: ScalarOrSchedule,
    alpha: jax.typing.ArrayLike = kernels.PSGHMC.defaults.alpha,
    sigma: jax.typing.ArrayLike = kernels.PSGHMC.defaults.sigma,
    temperature: ScalarOrSchedule = kernels.PSGHMC.defaults.temperature,
    momenta: ArrayTree | float | None = None,
    decay: ScalarOrSchedule = kernels.PSGHMC.defaults.decay,
    eps: jax.typing.ArrayLike = kernels.PSGHMC.defaults.eps,
    initial_scale: ArrayTree | float = 0.0,
    *,
    key: Any,
) -> optax.GradientTransformationExtraArgs:
    r"""Preconditioned SGHMC: `sghmc` with `psgld`'s RMSprop preconditioner, as an optax transform.

    With g_t = −(incoming update), ξ_t ~ N(0, I) and S = (λ + √V)^{-1/2} elementwise:

    .. math::

        V_{t+1} &= \rho V_t + (1 - \rho)\, g_t^2 \\
        m_{t+1} &= m_t + \epsilon S_{t+1} g_t - \epsilon \sigma^{-2} \alpha m_t
                   + \sqrt{2 \epsilon \alpha T}\, \xi_t \\
        \text{update} &= \epsilon \sigma^{-2} S_{t+1} m_{t+1}

    The preconditioner scales the kick and the drift by S = G^{1/2}, so the momenta keep their
    N(0, σ²T) target, a frozen preconditioner makes it SGHMC in the coordinates S⁻¹θ, and its
    overdamped limit is pSGLD (see `kernels.psghmc_step`). A separate transform rather than an
    option of `sghmc`, so `sghmc` keeps posteriors' signature and state. The Γ correction is
    dropped (as in `psgld`); freeze V (`decay=1.0`, or a schedule ending at 1) to remove its
    bias. There is no `beta`.

    Args:
        learning_rate: step size ε > 0, a float or an optax schedule of the step.
        alpha: friction α >= 0, a float or a schedule of the step.
        sigma: momentum scale σ > 0.
        temperature: T >= 0, a float or a schedule.
        momenta: initial momenta: None draws N(0, σ²T), a scalar fills, a pytree is used as is.
        decay: ρ in [0, 1], a float or a schedule; 1 freezes V.
        eps: λ > 0.
        initial_scale: V_0 >= 0, a scalar or a pytree like the params.
        key: a PRNG key (typed or raw) or an int seed.

    Returns:
        An `optax.GradientTransformationExtraArgs` with state `PSGHMCTransformState`.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import sghmc_jax
        >>> loss = lambda p: 0.5 * jnp.sum(p["w"] ** 2)
        >>> params = {"w": jnp.ones(3)}
        >>> tx = sghmc_jax.psghmc(1e-2, alpha=1.0, initial_scale=1.0, key=0)
        >>> state = tx.init(params)
        >>> updates, state = tx.update(jax.grad(loss)(params), state, params)
        >>> jax.tree.map(jnp.shape, state.v)
        {'w': (3,)}

    References:
        Li, Chen, Carlson & Carin, `Preconditioned Stochastic Gradient Langevin Dynamics for
        Deep Neural Networks <https://arxiv.org/abs/1512.07666>`_, AAAI 2016.
        Ma, Chen & Fox, `A Complete Recipe for Stochastic Gradient MCMC
        <https://arxiv.org/abs/1506.04696>`_, NeurIPS 2015.
    """
    return _transform(
        kernels.PSGHMC,
        PSGHMCTransformState,
        {
            "lr": learning_rate,
            "alpha": alpha,
            "sigma": sigma,
            "temperature": temperature,
            "decay": decay,
            "eps": eps,
        },
        {"momenta": momenta, "initial_scale": initial_scale},
        key,
    )


def _sampler_states() -> tuple[type, ...]:
    """Every sampler's optax state, found by its name (`<Name>TransformState`) when asked, so that
    a sampler added anywhere in this module needs no edit here."""
    return tuple(v for k, v in globals().items() if k.endswith("TransformState") and isinstance(v, type))


def _holds_sampler(transform: Any, params: Any) -> bool:
    """Whether `transform` is, or wraps, one of this library's samplers: its own `sampler`
    attribute, or (through `optax.chain`, `inject_hyperparams`, masks and any wrapper that keeps
    its inner state in its own) one of our states in the state `init` would make, traced with
    `jax.eval_shape` (nothing runs or compiles)."""
    if isinstance(transform, SamplerTransform):
        return True
    state = jax.eval_shape(transform.init, params)
    states = _sampler_states()
    found = jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, states))
    return any(isinstance(x, states) for x in found)


def _check_injected_temperature(transform: Any, params: Any, target: float | None) -> None:
    """Checks a temperature that `optax.inject_hyperparams` moved into the state against the log
    posterior's (`target`). Inside `sample()` the state is traced, so the check in `update`
    cannot see it; here the state `init` makes is looked at (it is only computed when the traced
    state holds an injected `temperature`). A temperature of 0 at step 0 is not checked (a
    schedule's exploration phase)."""
    if target is None or isinstance(transform, SamplerTransform):
        return

    # optax's InjectHyperparamsState and InjectStatefulHyperparamsState
    def injected(x: Any) -> bool:
        return isinstance(getattr(x, "hyperparams", None), dict) and isinstance(x, tuple)

    shapes = jax.tree.leaves(jax.eval_shape(transform.init, params), is_leaf=injected)
    if not any(injected(x) and "temperature" in x.hyperparams for x in shapes):
        return
    concrete = jax.tree.map(lambda p: jnp.zeros(p.shape, p.dtype) if isinstance(p, jax.ShapeDtypeStruct) else p, params)
    for x in jax.tree.leaves(transform.init(concrete), is_leaf=injected):
        if injected(x) and "temperature" in x.hyperparams:
            value = float(np.asarray(x.hyperparams["temperature"]))
            if value != 0.0:
                _checks.check_target_temperature("inject_hyperparams", value, target)
