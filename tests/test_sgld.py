"""SGLD: exact couplings (T = 0 is SGD, faces agree bit for bit), exact stationary moments on
Gaussian targets (the AR(1) law θ' = (I − εA)θ + noise), validation, posteriors' signatures."""

from __future__ import annotations


import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sghmc_jax
from tests import helpers
from tests.helpers import logistic_problem as _logistic_problem
from tests.helpers import run_optax as _run

A2 = helpers.correlated_2d()
A10 = helpers.ill_conditioned()


@pytest.mark.parametrize("lr", [0.01, 0.1])
def test_zero_temperature_is_sgd(x64, lr):
    """T = 0 equals optax.sgd(ε) on the loss gradient (to rounding: XLA may fuse ε·g + 0·ξ)."""
    loss, params = _logistic_problem()
    _, _, trace = _run(sghmc_jax.sgld(lr, temperature=0.0, key=0), loss, params, 100)
    _, _, ref = _run(optax.sgd(lr), loss, params, 100)
    chex.assert_trees_all_close(trace, ref, atol=1e-13, rtol=0)


def test_one_step_is_the_rule(x64):
    """The noise is the kernel's one draw per leaf, scaled by √(εT(2 − εβT))."""
    params = {"a": jnp.zeros(3), "b": jnp.zeros(())}
    grads = {"a": jnp.array([1.0, -2.0, 0.5]), "b": jnp.asarray(3.0)}
    key = jax.random.key(4)
    tx = sghmc_jax.sgld(0.1, beta=2.0, temperature=0.5, key=0)
    updates, state = tx.update(grads, tx.init(params), params, key=key)
    noise = sghmc_jax.kernels.normal_like(key, grads)
    scale = np.sqrt(0.1 * 0.5 * (2 - 0.1 * 2.0 * 0.5))
    expected = jax.tree.map(lambda g, z: -0.1 * g + scale * z, grads, noise)
    chex.assert_trees_all_close(updates, expected, atol=1e-15)
    assert int(state.step) == 1


@pytest.mark.parametrize(
    ("precision", "lr", "temperature", "beta", "grad_noise_var"),
    [
        (A2, 0.05, 1.0, 0.0, 0.0),
        (A2, 0.07, 0.3, 0.0, 0.0),  # ε·λ_max = 1.8: near the stability edge
        (A2, 0.005, 2.0, 0.0, 0.0),
        (A2, 0.05, 1.0, 4.0, 2.0),  # β models the injected gradient noise (to first order)
        (A2, 0.05, 1.0, 0.0, 2.0),  # unmodelled gradient noise: ε²B in the exact answer
        (A10, 0.15, 1.0, 0.0, 0.0),  # ε·λ_max = 1.5: far from the continuous limit
    ],
)
def test_stationary_covariance(x64, precision, lr, temperature, beta, grad_noise_var):
    f, q = helpers.sgld_transition(precision, lr, temperature, beta, grad_noise_var)
    hyper = {"lr": lr, "beta": beta, "temperature": temperature}
    est, exact, _ = helpers.check_stationary(
        helpers.SGLD, precision, hyper, f, q, seed=21, grad_noise_var=grad_noise_var
    )
    if precision is A10:
        # At this step the discrete answer is many standard errors from T·A⁻¹: the test pins
        # the integrator, not just the target.
        limit = temperature * np.linalg.inv(precision)
        z_limit = est.z_scores(limit)
        assert z_limit.max() > 20, f"seed=21: max |z| vs the continuous limit only {z_limit.max():.1f}"


def test_float32_chains_match_the_float64_reference(x64):
    f, q = helpers.sgld_transition(A2, 0.05, 1.0)
    helpers.check_stationary(
        helpers.SGLD, A2, {"lr": 0.05, "beta": 0.0, "temperature": 1.0}, f, q, seed=22,
        dtype=jnp.float32,
    )


