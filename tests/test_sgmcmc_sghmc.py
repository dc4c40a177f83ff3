"""The posteriors-style functional face, and its bit-for-bit agreement with the optax face."""

from __future__ import annotations

import inspect
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sghmc_jax
from sghmc_jax.sgmcmc import sghmc
from tests import helpers
from tests.helpers import regression_problem as _problem


HYPER = dict(alpha=0.5, beta=0.1, sigma=1.3, temperature=0.7)


def test_faces_give_bit_identical_chains():
    """Same keys ⇒ the optax face and the functional face take identical steps, bit for bit,
    including the initial momenta each draws from its key."""
    log_posterior, params, data = _problem()
    transform = sghmc.build(log_posterior, 1e-3, **HYPER)
    tx = sghmc_jax.sghmc(1e-3, **HYPER, key=0)
    helpers.assert_faces_bit_identical(
        tx, transform, log_posterior, params, data, num_steps=50, fields=("momenta",)
    )


def test_faces_agree_inside_a_jitted_scan():
    log_posterior, params, data = _problem(1)
    lr, num_steps = 1e-3, 100
    keys = jax.random.split(jax.random.key(2), num_steps)
    transform = sghmc.build(log_posterior, lr, **HYPER)
    tx = sghmc_jax.sghmc(lr, **HYPER, momenta=0.0, key=0)
    loss = lambda p, b: -log_posterior(p, b)[0]  # noqa: E731

    @jax.jit
    def both(params):
        # aux has a fixed structure from the first update on, so it can be a scan carry.
        s_f = transform.init(params, momenta=0.0)
        s_f = s_f._replace(aux={"rmse": jnp.zeros(())})

        def f(carry, k):
            s_f, p_o, s_o = carry
            s_f = transform.update(s_f, data, key=k)
            u, s_o = tx.update(jax.grad(loss)(p_o, data), s_o, p_o, key=k)
            return (s_f, optax.apply_updates(p_o, u), s_o), None

        (s_f, p_o, s_o), _ = jax.lax.scan(f, (s_f, params, tx.init(params)), keys)
        return s_f, p_o, s_o

    s_f, p_o, s_o = both(params)
    chex.assert_trees_all_equal(s_f.params, p_o)
    chex.assert_trees_all_equal(s_f.momenta, s_o.momenta)
    assert int(s_f.step) == num_steps


def test_inplace_gives_identical_numbers_and_reuses_buffers():
    log_posterior, params, data = _problem(2)
    transform = sghmc.build(log_posterior, 1e-3, **HYPER)
    a = transform.init(params, key=3)
    b = transform.init(jax.tree.map(jnp.copy, params), momenta=jax.tree.map(jnp.copy, a.momenta))
    for i in range(5):
        k = jax.random.key(i)
        old = b
        a = transform.update(a, data, key=k)
        b = transform.update(b, data, key=k, inplace=True)
        assert all(x.is_deleted() for x in jax.tree.leaves((old.params, old.momenta)))
        chex.assert_trees_all_equal((a.params, a.momenta, a.log_posterior), (b.params, b.momenta, b.log_posterior))


def test_inplace_updates_do_not_grow_memory():
    """With donation, live device memory after each step stays at one state (params + momenta)."""
    n = 2_000_000  # 8 MB per float32 array
    log_posterior = lambda p, batch: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    transform = sghmc.build(log_posterior, 0.01, alpha=1.0)
    state = transform.init(jnp.ones(n), momenta=0.0)
    state = transform.update(state, None, key=0, inplace=True)  # compile outside the measurement

    def live_bytes():
        return sum(x.nbytes for x in jax.live_arrays() if not x.is_deleted())

    before = live_bytes()
    for i in range(10):
        state = transform.update(state, None, key=i, inplace=True)
    after = live_bytes()
    assert after <= before + 1024, f"live bytes grew from {before} to {after}"
    # Without donation every step leaves the old state alive while both are referenced.
    kept = [state]
    for i in range(3):
        kept.append(transform.update(kept[-1], None, key=i))
    assert live_bytes() >= after + 3 * 2 * 4 * n


def test_state_and_log_posterior_value():
    log_posterior, params, data = _problem(3)
    transform = sghmc.build(log_posterior, 1e-3, momenta=0.0)
    state = transform.init(params)
    assert np.isnan(state.log_posterior) and state.aux is None and int(state.step) == 0
    new = transform.update(state, data, key=0)
    value, aux = log_posterior(params, data)
    np.testing.assert_allclose(new.log_posterior, value, rtol=1e-6)  # at the OLD params
    np.testing.assert_allclose(new.aux["rmse"], aux["rmse"], rtol=1e-6)
    assert int(new.step) == 1


def test_bare_scalar_log_posterior_is_a_clear_type_error():
    transform = sghmc.build(lambda p, b: -jnp.sum(p**2), 0.1)
    # `init` traces the log posterior to lay out `aux`, so the mistake surfaces there, in the
    # user's terms (not as a tracer's class name).
    with pytest.raises(TypeError, match=re.escape("`log_posterior` must return a tuple (value, aux); return (value, None) when there is no auxiliary output. It returned a scalar of dtype float32")):
        transform.init(jnp.zeros(2), key=0)
    state = sghmc.init(jnp.zeros(2), key=0)  # no log posterior to trace: the update says it
    with pytest.raises(TypeError, match=re.escape("It returned a scalar of dtype float32")):
        sghmc.update(state, None, lambda p, b: -jnp.sum(p**2), 0.1, key=1)


def test_non_scalar_log_posterior_value_is_a_clear_type_error():
    transform = sghmc.build(lambda p, b: (-(p**2), None), 0.1)
    with pytest.raises(TypeError, match=re.escape("`log_posterior` must return a scalar value, it returned an array of shape (2,) of dtype float32 as the value")):
        transform.update(transform.init(jnp.zeros(2), key=0), None, key=1)


def test_init_needs_a_key_only_to_draw_momenta():
    with pytest.raises(TypeError, match="`key` is required to draw the initial momenta"):
        sghmc.init(jnp.zeros(2))
    assert float(sghmc.init(jnp.zeros(2), momenta=0.0).momenta.sum()) == 0.0


def test_schedules_in_the_functional_face():
    lr_fn = optax.exponential_decay(0.1, transition_steps=1, decay_rate=0.5)
    log_posterior = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    state = sghmc.init(jnp.ones(2), momenta=0.0)
    s1 = sghmc.update(state, None, log_posterior, lr_fn, temperature=0.0, key=0)
    s2 = sghmc.update(s1, None, log_posterior, lr_fn, temperature=0.0, key=0)
    # step 0: lr 0.1 ⇒ m = -0.1, θ = 1 - 0.01; step 1: lr 0.05.
    np.testing.assert_allclose(s1.params, 0.99, rtol=1e-6)
    m2 = (1 - 0.05 * 0.01) * -0.1 - 0.05 * 0.99  # decayed m₁ plus the kick at θ₁ = 0.99
    np.testing.assert_allclose(s2.momenta, m2, rtol=1e-5)
    np.testing.assert_allclose(s2.params, 0.99 + 0.05 * m2, rtol=1e-5)


def test_changing_hyperparameters_does_not_recompile():
    log_posterior = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    state = sghmc.init(jnp.ones(2), momenta=0.0)
    sghmc.update(state, None, log_posterior, 0.1, key=0)
    before = sghmc._update_jit._cache_size()
    for lr, alpha in [(0.2, 0.5), (0.05, 2.0), (0.3, 0.0)]:
        sghmc.update(state, None, log_posterior, lr, alpha=alpha, key=0)
    assert sghmc._update_jit._cache_size() == before


def test_functional_validation_matches_the_optax_face():
    log_posterior = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    with pytest.raises(ValueError, match=r"`lr` must be finite and > 0, got lr=-1.0"):
        sghmc.build(log_posterior, -1.0)
    with pytest.raises(ValueError, match=r"`sigma` must be finite and > 0, got sigma=0.0"):
        sghmc.update(sghmc.init(jnp.ones(2), momenta=0.0), None, log_posterior, 0.1, sigma=0.0, key=0)
    with pytest.raises(TypeError, match=r"`log_posterior` must be a callable"):
        sghmc.build("not a function", 0.1)


def test_signatures_mirror_posteriors():
    """posteriors' names and order, plus what JAX needs (keyword-only key, sigma/temperature
    for the momentum draw in init)."""
    assert list(inspect.signature(sghmc.build).parameters) == [
        "log_posterior", "lr", "alpha", "beta", "sigma", "temperature", "momenta",
    ]
    assert list(inspect.signature(sghmc.update).parameters) == [
        "state", "batch", "log_posterior", "lr", "alpha", "beta", "sigma", "temperature", "key", "inplace",
    ]
    assert list(inspect.signature(sghmc.init).parameters)[:2] == ["params", "momenta"]
    assert sghmc.SGHMCState._fields == ("params", "momenta", "log_posterior", "aux", "step")
    defaults = {k: v.default for k, v in inspect.signature(sghmc.build).parameters.items()}
    assert (defaults["alpha"], defaults["beta"], defaults["sigma"], defaults["temperature"]) == (0.01, 0.0, 1.0, 1.0)
