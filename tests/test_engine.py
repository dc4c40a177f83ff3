"""The compiled chunk (`sghmc_jax/_sampler/engine.py`): divergence handling, `keep`, the
predictive mean."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sghmc_jax
from tests import helpers


def test_divergence_is_reported_with_the_draws_before_it():
    # ε·sqrt(curvature) = 0.5·sqrt(100) = 5 > 2: unstable, the chain blows up within ~100 steps.
    lp = lambda p, b: (-50.0 * jnp.sum(p**2), None)  # noqa: E731
    tx = sghmc_jax.sghmc(0.5, alpha=0.01, momenta=0.0, temperature=0.0, key=0)
    init = jnp.array([[1e-30], [1.0]])
    with pytest.raises(sghmc_jax.DivergenceError) as info:
        sghmc_jax.sample(0, lp, init, transform=tx, num_steps=2000, num_chains=2, stacked_init=True, chunk_size=100, progress=False)
    err = info.value
    assert err.chain == 1 and 0 < err.step < 2000
    assert re.search(rf"chain 1 diverged: its (log posterior was non-finite at the params|params were non-finite) after {err.step} steps", str(err))
    assert err.result.samples.shape[1] == err.step - 1  # draws after steps 1..step-1
    np.testing.assert_array_equal(err.result.sample_steps, np.arange(1, err.step))
    assert np.all(np.isfinite(err.result.samples))
    assert err.result.log_posterior.shape[1] == err.step + 1  # up to the step that found it


def test_continue_on_divergence_keeps_the_other_chains():
    lp = lambda p, b: (-50.0 * jnp.sum(p**2), None)  # noqa: E731
    tx = sghmc_jax.sghmc(0.5, alpha=0.01, momenta=0.0, temperature=0.0, key=0)
    init = jnp.array([[0.0], [1.0], [0.0]])
    r = sghmc_jax.sample(0, lp, init, transform=tx, num_steps=1000, num_chains=3, stacked_init=True, on_divergence="continue", progress=False)
    assert r.diverged_at[0] == -1 and r.diverged_at[2] == -1 and r.diverged_at[1] > 0
    assert np.all(np.isnan(r.samples[1, r.diverged_at[1] :]))
    assert np.all(np.isfinite(r.samples[[0, 2]]))
    assert r.samples.shape[1] == 1000
    assert set(r.summary()) == {"params"}


def test_keep_predicate_drops_draws():
    lp = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    r = sghmc_jax.sample(
        0, lp, jnp.zeros(1), transform=sghmc_jax.sghmc(0.1, key=0), num_steps=40, num_chains=2, thin=2,
        keep=lambda step: (step % 10) >= 6, chunk_size=8, progress=False,
    )
    # keep sees the 0-based index of the update behind each draw; sample_steps counts steps.
    np.testing.assert_array_equal(r.sample_steps, [s for s in range(2, 41, 2) if (s - 1) % 10 >= 6])
    assert r.samples.shape[:2] == (2, len(r.sample_steps))


def test_predictive_mean_is_the_mean_over_kept_draws():
    log_posterior, data = helpers.regression(6)
    inputs = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)
    r = sghmc_jax.sample(
        0, log_posterior, jnp.zeros(3), transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0), num_steps=60,
        num_chains=2, data=data, batch_size=8, burn_in=10, thin=5, progress=False,
        predict_fn=lambda w, x: {"mu": x @ w}, predict_inputs=inputs,
    )
    expected = np.einsum("cdk,nk->cn", r.samples, np.asarray(inputs)) / r.samples.shape[1]
    np.testing.assert_allclose(r.predictive_mean["mu"], expected, rtol=1e-5, atol=1e-6)


def test_cyclical_sampling_phase_plugs_into_keep():
    import functools

    k, m, beta = 200, 4, 0.5
    lp = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    tx = sghmc_jax.sghmc(
        sghmc_jax.cyclical_schedule(0.3, k, m), alpha=1.0,
        temperature=sghmc_jax.cyclical_temperature_schedule(1.0, k, m, beta), key=0,
    )
    keep = functools.partial(sghmc_jax.in_sampling_phase, total_steps=k, num_cycles=m, exploration_fraction=beta)
    r = sghmc_jax.sample(0, lp, jnp.zeros(1), transform=tx, num_steps=k, num_chains=2, keep=keep, chunk_size=30, progress=False)
    expected = [s + 1 for s in range(k) if bool(sghmc_jax.in_sampling_phase(s, k, m, beta))]
    np.testing.assert_array_equal(r.sample_steps, expected)
    assert len(expected) == k // 2


# ---- regressions: what a new user ran into ---------------------------------------------------


def _norm_log_posterior(p, batch):
    return -jnp.sqrt(jnp.sum(p**2)), None  # NaN gradient at 0


def test_a_nan_gradient_is_a_divergence_with_no_nan_draw_kept():
    """Regression: `DivergenceError.result.samples` held the diverged chain's NaN draw."""
    init = jnp.array([[1.0, 1.0], [0.0, 0.0]])
    with pytest.raises(sghmc_jax.DivergenceError) as info:
        sghmc_jax.sample(
            0, _norm_log_posterior, init, stacked_init=True, num_chains=2,
            transform=sghmc_jax.sghmc(0.1, alpha=1.0, key=0), num_steps=10, progress=False,
        )
    err = info.value
    assert (err.chain, err.step) == (1, 1)
    assert "chain 1 diverged: its params were non-finite after 1 steps" in str(err)
    assert err.result.samples.shape == (2, 0, 2) and err.result.sample_steps.size == 0


def _support_log_posterior(p, batch):
    # log p = −3θ on θ > 0, −inf elsewhere: the chain drifts out of the support at finite θ.
    return jnp.sum(jnp.where(p > 0, -3.0 * p, -jnp.inf)), None


def test_draws_before_a_divergence_all_have_a_finite_log_posterior():
    """Regression: the last draw in `.result` had log posterior −inf."""
    tx = sghmc_jax.sghmc(0.2, alpha=1.0, temperature=0.0, momenta=0.0, key=0)
    init = jnp.array([[50.0], [1.0]])
    with pytest.raises(sghmc_jax.DivergenceError) as info:
        sghmc_jax.sample(0, _support_log_posterior, init, stacked_init=True, num_chains=2, transform=tx, num_steps=200, progress=False)
    err = info.value
    assert err.chain == 1 and "its log posterior was non-finite at the params after" in str(err)
    r = err.result
    assert r.sample_steps.size == err.step - 1
    values = jax.vmap(jax.vmap(lambda p: _support_log_posterior(p, None)[0]))(jnp.asarray(r.samples))
    assert np.all(np.isfinite(values)), values
    assert not np.isfinite(r.log_posterior[1, err.step])  # the trace shows what was found


@pytest.mark.parametrize("case", ["nan_gradient", "out_of_support"])
def test_continue_holds_a_diverged_chain_at_its_last_finite_state(case):
    """Regression: under on_divergence='continue' the chain was frozen at its NaN params."""
    if case == "nan_gradient":
        lp, init = _norm_log_posterior, jnp.array([[1.0, 1.0], [0.0, 0.0]])
        tx = sghmc_jax.sghmc(0.1, alpha=1.0, key=0)
    else:
        lp, init = _support_log_posterior, jnp.array([[50.0], [1.0]])
        tx = sghmc_jax.sghmc(0.2, alpha=1.0, temperature=0.0, momenta=0.0, key=0)
    r = sghmc_jax.sample(
        0, lp, init, stacked_init=True, num_chains=2, transform=tx, num_steps=60,
        on_divergence="continue", progress=False,
    )
    step = int(r.diverged_at[1])
    assert r.diverged_at[0] == -1 and step >= 1
    frozen = jax.tree.map(lambda x: x[1], r.final_state.params)
    assert np.all(np.isfinite(frozen)) and np.isfinite(lp(frozen, None)[0])
    assert np.all(np.isfinite(jax.tree.map(lambda x: x[1], r.final_state.transform_state.momenta)))
    before = r.sample_steps < step
    assert np.all(np.isfinite(r.samples[1, before])) and np.all(np.isnan(r.samples[1, ~before]))
    np.testing.assert_array_equal(r.samples[1, before.sum() - 1] if before.any() else init[1], frozen)
    assert np.all(np.isnan(r.log_posterior[1, step + 1 :]))
    assert np.all(np.isfinite(r.samples[0]))
