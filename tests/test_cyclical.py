"""Cyclical SG-MCMC schedules: exact values at cycle boundaries, the paper's formula, exact phase
lengths, the temperature schedule matching the predicate, jit/vmap without retracing, use as the
schedules of a sampler, validation."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sghmc_jax


def _paper_step_size(k: np.ndarray, init: float, total: int, cycles: int) -> np.ndarray:
    """Zhang et al. (2020), eq. (1), with their 1-based k, in float64."""
    length = math.ceil(total / cycles)
    return init / 2 * (np.cos(np.pi * np.mod(k - 1, length) / length) + 1)


@pytest.mark.parametrize(("total", "cycles"), [(100, 4), (10, 3), (1000, 1), (7, 7), (50_000, 6)])
def test_step_size_is_the_papers_formula(total, cycles):
    lr = sghmc_jax.cyclical_schedule(0.3, total, cycles)
    steps = np.arange(2 * total)
    values = np.asarray(jax.vmap(lr)(jnp.asarray(steps)))
    np.testing.assert_allclose(values, _paper_step_size(steps + 1, 0.3, total, cycles), rtol=2e-6, atol=1e-7)


def test_values_at_cycle_boundaries_are_exact():
    lr = sghmc_jax.cyclical_schedule(0.1, total_steps=100, num_cycles=4)  # L = 25
    for s in (0, 25, 50, 75, 100, 125):
        assert float(lr(s)) == np.float32(0.1), s
    # Strictly decreasing within a cycle, back to the top after it.
    values = np.asarray(jax.vmap(lr)(jnp.arange(25)))
    assert np.all(np.diff(values) < 0)
    np.testing.assert_allclose(float(lr(24)), 0.05 * (1 + np.cos(np.pi * 24 / 25)), rtol=1e-5)
    half = sghmc_jax.cyclical_schedule(0.1, total_steps=100, num_cycles=5)  # L = 20
    np.testing.assert_allclose(float(half(10)), 0.05, rtol=1e-6)


def test_uneven_cycles_truncate_the_last_one():
    """K = 10, M = 3: L = ⌈10/3⌉ = 4, cycles start at 0, 4, 8 (the last has 2 steps)."""
    lr = sghmc_jax.cyclical_schedule(1.0, total_steps=10, num_cycles=3)
    starts = [s for s in range(10) if float(lr(s)) == 1.0]
    assert starts == [0, 4, 8]


@pytest.mark.parametrize(
    ("total", "cycles", "fraction", "explore", "sample"),
    [
        (1000, 4, 0.8, 200, 50),
        (100, 10, 0.3, 3, 7),  # 0.3·10 is 3 in decimal, 3.0000000000000004 in binary floats
        (100, 10, 0.0, 0, 10),
        (100, 10, 1.0, 10, 0),
        (100, 3, 0.5, 17, 17),  # L = 34: ⌈17⌉ = 17
        (100, 3, 0.51, 18, 16),
    ],
)
def test_phase_lengths_are_exact(total, cycles, fraction, explore, sample):
    length = math.ceil(total / cycles)
    steps = jnp.arange(length * cycles)
    keep = np.asarray(sghmc_jax.in_sampling_phase(steps, total, cycles, fraction)).reshape(cycles, length)
    for c in range(cycles):
        row = keep[c]
        assert row.sum() == sample and (~row).sum() == explore, (c, row)
        assert not row[:explore].any() and row[explore:].all()  # explore first, then sample
    temp = sghmc_jax.cyclical_temperature_schedule(0.7, total, cycles, fraction)
    values = np.asarray(jax.vmap(temp)(steps)).reshape(cycles, length)
    np.testing.assert_array_equal(values, np.where(keep, np.float32(0.7), 0.0))


def test_jit_and_vmap_without_retracing():
    total, cycles, fraction = 1000, 4, 0.8
    lr = sghmc_jax.cyclical_schedule(0.05, total, cycles)
    temp = sghmc_jax.cyclical_temperature_schedule(1.0, total, cycles, fraction)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def all_three(step):
        return lr(step), temp(step), sghmc_jax.in_sampling_phase(step, total, cycles, fraction)

    for s in (0, 199, 200, 249, 250, 999, 12_345):
        e, t, keep = all_three(jnp.asarray(s, jnp.int32))
        assert bool(keep) == ((s % 250) >= 200) and float(t) == float(keep)
        np.testing.assert_allclose(float(e), _paper_step_size(np.array(s + 1), 0.05, total, cycles), rtol=1e-5)
    batch = jax.jit(jax.vmap(all_three))(jnp.arange(1000))
    assert int(batch[2].sum()) == 4 * 50


def test_drives_a_sampler_noise_free_while_exploring():
    """As sghmc's schedules: exploration steps are heavy-ball SGD (key-independent), sampling
    steps are noisy, and the step size used at step s is lr(s)."""
    total, cycles, fraction = 40, 2, 0.5  # L = 20: steps 0-9 explore, 10-19 sample
    lr = sghmc_jax.cyclical_schedule(0.1, total, cycles)
    temp = sghmc_jax.cyclical_temperature_schedule(1.0, total, cycles, fraction)
    tx = sghmc_jax.sghmc(lr, alpha=1.0, temperature=temp, key=0)
    state = tx.init(jnp.zeros(3))
    assert float(jnp.abs(state.momenta).sum()) == 0.0  # drawn at T(0) = 0
    update = jax.jit(tx.update)
    for s in range(total):
        state = state._replace(momenta=jnp.zeros(3))
        u1, new = update(jnp.ones(3), state, key=jax.random.key(2 * s))
        u2, _ = update(jnp.ones(3), state, key=jax.random.key(2 * s + 1))
        sampling = bool(sghmc_jax.in_sampling_phase(s, total, cycles, fraction))
        assert sampling == (not np.array_equal(u1, u2)), s
        if not sampling:  # m = −ε·1, update = ε·m
            np.testing.assert_allclose(u1, -float(lr(s)) ** 2, rtol=1e-6)
        state = new
    assert int(state.step) == total


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda: sghmc_jax.cyclical_schedule(0.1, 100, 0), ValueError, r"`num_cycles` must be an int with 1 <= num_cycles <= total_steps, got num_cycles=0"),
        (lambda: sghmc_jax.cyclical_schedule(0.1, 10, 11), ValueError, r"`num_cycles` must be an int with 1 <= num_cycles <= total_steps, got num_cycles=11"),
        (lambda: sghmc_jax.cyclical_schedule(0.1, 0, 1), ValueError, r"`total_steps` must be an int >= 1, got total_steps=0"),
        (lambda: sghmc_jax.cyclical_schedule(0.1, 100.0, 4), TypeError, r"`total_steps` must be a Python int, got float: 100.0"),
        (lambda: sghmc_jax.cyclical_schedule(0.1, 100, True), TypeError, r"`num_cycles` must be a Python int, got bool"),
        (lambda: sghmc_jax.cyclical_schedule(-0.1, 100, 4), ValueError, r"`init_value` must be finite and > 0, got init_value=-0.1"),
        (lambda: sghmc_jax.in_sampling_phase(0, 100, 4, 1.5), ValueError, r"`exploration_fraction` must be finite and in \[0, 1\], got exploration_fraction=1.5"),
        (lambda: sghmc_jax.in_sampling_phase(0, 100, 4, float("nan")), ValueError, r"`exploration_fraction` must be finite and in \[0, 1\], got exploration_fraction=nan"),
        (lambda: jax.jit(lambda b: sghmc_jax.in_sampling_phase(0, 100, 4, b))(0.5), TypeError, r"`exploration_fraction` must be a concrete number"),
        (lambda: sghmc_jax.cyclical_temperature_schedule(-1.0, 100, 4, 0.5), ValueError, r"`temperature` must be finite and >= 0, got temperature=-1.0"),
    ],
)
def test_invalid_arguments_are_named(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
