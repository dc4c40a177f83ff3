"""Cyclical SG-MCMC (Zhang et al. 2020): the cyclical step size, its temperature, its sampling phase.

The run of K = `total_steps` steps is cut into M = `num_cycles` cycles of L = ⌈K/M⌉ steps.
Within a cycle the step size falls from its initial value to ~0 along a half cosine; the first
⌈βL⌉ steps of each cycle (β = `exploration_fraction`) are the exploration phase, where the
sampler runs noise-free (temperature 0: SGHMC becomes heavy-ball SGD, SGLD plain SGD) to move to
a new mode, and the rest is the sampling phase, at the target temperature, whose draws are kept.

Steps count from 0, as optax schedules and our transforms' `state.step` do: the update taken at
step s (the state's `step` before the update) uses `schedule(s)`, and the draw it produces
belongs to the sampling phase iff `in_sampling_phase(s, ...)`. Zhang et al. number steps from 1
(their k is our s + 1). After `total_steps` the cycles simply continue.

All three are pure `jax.numpy` functions of the step: they work under `jit`, `vmap` and
`lax.scan`, and a traced step does not retrace. The cycle length and the exploration length are
Python ints computed once at construction (⌈βL⌉ is computed in exact decimal arithmetic, so
β = 0.3 with L = 10 explores 3 steps, not 4).
"""

from __future__ import annotations

import fractions
import math
from typing import Any

import jax
import jax.numpy as jnp

from sghmc_jax import _checks, _inputs
from sghmc_jax.types import Schedule

__all__ = ["cyclical_schedule", "cyclical_temperature_schedule", "in_sampling_phase"]


def _as_float(value: jax.typing.ArrayLike) -> jax.Array:
    value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        value = value.astype(jnp.result_type(float))
    return value


def _cycle_length(total_steps: Any, num_cycles: Any) -> int:
    """L = ⌈K/M⌉, after checking 1 <= M <= K."""
    total_steps = _checks.check_int("total_steps", total_steps, 1)
    num_cycles = _checks.check_int("num_cycles", num_cycles, 1, total_steps, "total_steps")
    return -(-total_steps // num_cycles)


def _exploration_steps(cycle_length: int, exploration_fraction: Any) -> int:
    """⌈βL⌉ in exact decimal arithmetic (0.3·10 is 3, not the float 3.0000000000000004)."""
    beta = _checks.concrete_float(exploration_fraction)
    if beta is None or callable(exploration_fraction):
        raise TypeError(
            "`exploration_fraction` must be a concrete number (it fixes the phase lengths), got "
            f"{type(exploration_fraction).__name__}: {exploration_fraction!r}"
        )
    if not (math.isfinite(beta) and 0.0 <= beta <= 1.0):
        raise ValueError(f"`exploration_fraction` must be finite and in [0, 1], got exploration_fraction={beta!r}")
    return math.ceil(fractions.Fraction(repr(beta)) * cycle_length)


def cyclical_schedule(init_value: jax.typing.ArrayLike, total_steps: int, num_cycles: int) -> Schedule:
    r"""The cyclical cosine step size of Zhang et al. (2020), as an optax schedule.

    .. math::

        \epsilon(s) = \frac{\epsilon_0}{2}
            \left[\cos\left(\frac{\pi \,(s \bmod L)}{L}\right) + 1\right],
        \qquad L = \lceil K / M \rceil

    for step s = 0, 1, ... (Zhang et al.'s k − 1), computed as ε₀ sin²(π(L − s mod L)/(2L)) (the
    same number, accurate to float32 rounding even at a cycle's end). It equals ε₀ exactly at
    the start of every cycle (s = 0, L, 2L, ...), ε₀/2 half way, and ≈ ε₀π²/(4L²) at a
    cycle's last step. Pair it with `cyclical_temperature_schedule` and `in_sampling_phase`.

    Args:
        init_value: ε₀ > 0, the step size at the start of each cycle.
        total_steps: K >= 1, the planned number of steps.
        num_cycles: M, with 1 <= M <= K.

    Returns:
        A schedule `step -> step size` (float32, or float64 under x64 for a float64 ε₀).

    Example:
        >>> import sghmc_jax
        >>> lr = sghmc_jax.cyclical_schedule(0.1, total_steps=100, num_cycles=4)
        >>> [round(float(lr(s)), 4) for s in (0, 1, 12, 24, 25)]
        [0.1, 0.0996, 0.0531, 0.0004, 0.1]

    References:
        Zhang, Li, Zhang, Chen & Wilson, `Cyclical Stochastic Gradient MCMC for Bayesian Deep
        Learning <https://arxiv.org/abs/1902.03932>`_, ICLR 2020.
    """
    _checks.check_rules({"init_value": init_value}, [("init_value", lambda v: v > 0, "> 0")])
    if callable(init_value):
        raise TypeError(f"`init_value` must be a number, got a callable {init_value!r}")
    length = _cycle_length(total_steps, num_cycles)

    def schedule(step: jax.typing.ArrayLike) -> jax.Array:
        position = jnp.mod(jnp.asarray(step), length)
        # Inside `sample()` the number is an input of the program: a sweep compiles once.
        init = _as_float(_inputs.resolve(schedule, {"init_value": init_value})["init_value"])
        # (cos(πr) + 1)/2 = sin²(π(1 − r)/2) with 1 − r = (L − position)/L, an exact integer
        # over L: no cancellation, and full relative precision near the end of a cycle.
        remaining = (length - position).astype(init.dtype) / length
        return init * jnp.square(jnp.sin(0.5 * jnp.pi * remaining))

    return schedule


def in_sampling_phase(
    step: jax.typing.ArrayLike, total_steps: int, num_cycles: int, exploration_fraction: float
) -> jax.Array:
    r"""Whether the update taken at `step` is in a cycle's sampling phase (its draw is kept).

    .. math::

        (s \bmod L) \ge \lceil \beta L \rceil, \qquad L = \lceil K / M \rceil

    i.e. Zhang et al.'s r(k) >= β with r(k) = ((k − 1) mod L)/L and k = s + 1. Each cycle has
    exactly ⌈βL⌉ exploration steps and L − ⌈βL⌉ sampling steps (the last cycle fewer when
    M does not divide K). β = 0 samples everywhere; β = 1 never samples.

    Args:
        step: the step count at which the update is taken (the transform state's `step`
            before `update`), an int or an int array (traced is fine; any shape).
        total_steps: K >= 1.
        num_cycles: M, with 1 <= M <= K.
        exploration_fraction: β in [0, 1], a concrete number.

    Returns:
        A boolean array shaped like `step`.

    Example:
        >>> import jax.numpy as jnp, sghmc_jax
        >>> sghmc_jax.in_sampling_phase(jnp.arange(10), total_steps=10, num_cycles=2,
        ...                             exploration_fraction=0.6)
        Array([False, False, False,  True,  True, False, False, False,  True,  True], dtype=bool)

    References:
        Zhang, Li, Zhang, Chen & Wilson, `Cyclical Stochastic Gradient MCMC for Bayesian Deep
        Learning <https://arxiv.org/abs/1902.03932>`_, ICLR 2020.
    """
    length = _cycle_length(total_steps, num_cycles)
    explore = _exploration_steps(length, exploration_fraction)
    return jnp.mod(jnp.asarray(step), length) >= explore


def cyclical_temperature_schedule(
    temperature: jax.typing.ArrayLike,
    total_steps: int,
    num_cycles: int,
    exploration_fraction: float,
) -> Schedule:
    r"""The temperature matching `cyclical_schedule`: 0 while exploring, T while sampling.

    .. math::

        T(s) = \begin{cases} 0 & (s \bmod L) < \lceil \beta L \rceil \\
                             T & \text{otherwise} \end{cases}

    Give it as the `temperature` of any of our transforms: in the exploration phase the noise
    is off (SGLD is SGD, SGHMC heavy-ball SGD, as in Zhang et al.), in the sampling phase the
    chain targets p_T. Momenta drawn at construction use T(0) = 0 when β > 0, i.e. start at 0.

    Args:
        temperature: T >= 0, the sampling phase's temperature.
        total_steps: K >= 1.
        num_cycles: M, with 1 <= M <= K.
        exploration_fraction: β in [0, 1], a concrete number.

    Returns:
        A schedule `step -> temperature`.

    Example:
        >>> import jax, jax.numpy as jnp, sghmc_jax
        >>> K, M, beta = 1000, 4, 0.8
        >>> tx = sghmc_jax.sghmc(
        ...     sghmc_jax.cyclical_schedule(0.05, K, M), alpha=1.0,
        ...     temperature=sghmc_jax.cyclical_temperature_schedule(1.0, K, M, beta), key=0)
        >>> t = sghmc_jax.cyclical_temperature_schedule(1.0, K, M, beta)
        >>> [float(t(s)) for s in (0, 199, 200, 249, 250)]
        [0.0, 0.0, 1.0, 1.0, 0.0]

    References:
        Zhang, Li, Zhang, Chen & Wilson, `Cyclical Stochastic Gradient MCMC for Bayesian Deep
        Learning <https://arxiv.org/abs/1902.03932>`_, ICLR 2020.
    """
    _checks.check_rules({"temperature": temperature}, [("temperature", lambda v: v >= 0, ">= 0")])
    if callable(temperature):
        raise TypeError(f"`temperature` must be a number, got a callable {temperature!r}")
    length = _cycle_length(total_steps, num_cycles)
    explore = _exploration_steps(length, exploration_fraction)

    def schedule(step: jax.typing.ArrayLike) -> jax.Array:
        t = _as_float(_inputs.resolve(schedule, {"temperature": temperature})["temperature"])
        sampling = jnp.mod(jnp.asarray(step), length) >= explore
        return jnp.where(sampling, t, jnp.zeros_like(t))

    return schedule
