"""BAOA: exact couplings (T = 0 is a key-free hand-written recurrence; huge friction redraws the
momenta; the step's Jacobian is the composed B·A·O·A map; faces agree bit for bit), exact
stationary moments on Gaussian targets, long-run stability at small friction, validation."""

from __future__ import annotations


import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sghmc_jax
from sghmc_jax import kernels
from tests import helpers
from tests.helpers import logistic_problem as _logistic_problem
from tests.helpers import run_optax as _run

A2 = helpers.correlated_2d()
A10 = helpers.ill_conditioned()


def test_zero_temperature_is_deterministic_and_the_hand_written_recurrence(x64):
    loss, params = _logistic_problem(1)
    m0 = {"w": jnp.linspace(-1, 1, 5), "b": jnp.asarray(0.5)}
    lr, alpha, sigma = 0.02, 3.0, 1.5
    make = lambda seed: sghmc_jax.baoa(  # noqa: E731
        lr, alpha=alpha, sigma=sigma, temperature=0.0, momenta=m0, key=seed
    )
    p1, s1, t1 = _run(make(0), loss, params, 100)
    _, _, t2 = _run(make(1), loss, params, 100)
    _, _, t3 = _run(make(0), loss, params, 100, keys=jax.random.split(jax.random.key(5), 100))
    chex.assert_trees_all_equal(t1, t2)
    chex.assert_trees_all_equal(t1, t3)
    h, c = lr / (2 * sigma**2), np.exp(-alpha * lr / sigma**2)
    theta, m = params, m0
    grad = jax.jit(jax.grad(loss))
    for _ in range(100):
        g = grad(theta)
        m = jax.tree.map(lambda m, g: m - lr * g, m, g)  # B: kick with −∇L = ∇ log p
        theta = jax.tree.map(lambda t, m: t + h * m, theta, m)  # A
        m = jax.tree.map(lambda m: c * m, m)  # O at T = 0
        theta = jax.tree.map(lambda t, m: t + h * m, theta, m)  # A
    chex.assert_trees_all_close(p1, theta, atol=1e-12)
    chex.assert_trees_all_close(s1.momenta, m, atol=1e-12)


def test_infinite_friction_limit_redraws_the_momenta(x64):
    """α → ∞: e^{−γε} = 0, so m_{t+1} = σ√T ξ exactly, and the chain stays finite."""
    m, g = jnp.array([3.0, -1.0]), jnp.array([0.5, 2.0])
    key = jax.random.key(2)
    inc, m_new = kernels.baoa_step(m, g, key, 0.1, 1e6, 2.0, 0.5)
    noise = kernels.normal_like(key, m)
    np.testing.assert_allclose(m_new, 2.0 * np.sqrt(0.5) * noise, rtol=1e-15)
    np.testing.assert_allclose(inc, 0.1 / 8 * (m + 0.1 * g + m_new), rtol=1e-14)


@pytest.mark.parametrize(
    ("lr", "alpha", "sigma", "temperature"),
    [(0.3, 0.01, 1.0, 1.0), (0.05, 10.0, 0.5, 2.0), (0.7, 1.0, 3.0, 0.0)],
)
def test_one_step_is_the_composed_linear_map(x64, lr, alpha, sigma, temperature):
    """Jacobian = B·A·O·A's F exactly, and the affine part is the O noise carried by one A."""
    a = helpers.ill_conditioned(dim=4)
    f, _ = helpers.baoa_transition(a, lr, alpha, sigma, temperature)
    key = jax.random.key(3)

    def step(z):
        theta, m = z[:4], z[4:]
        inc, m_new = kernels.baoa_step(m, -jnp.asarray(a) @ theta, key, lr, alpha, sigma, temperature)
        return jnp.concatenate([theta + inc, m_new])

    np.testing.assert_allclose(jax.jacfwd(step)(jnp.zeros(8)), f, rtol=0, atol=1e-13)
    s = sigma * np.sqrt(temperature * (1 - np.exp(-2 * alpha * lr / sigma**2)))
    noise = np.asarray(kernels.normal_like(key, jnp.zeros(4)))
    np.testing.assert_allclose(
        step(jnp.zeros(8)), np.concatenate([lr / (2 * sigma**2) * s * noise, s * noise]), rtol=1e-12, atol=1e-15
    )


def _lr(precision: np.ndarray, sigma: float) -> float:
    """A large stable step: ε·sqrt(λ_max)/σ = 1.2 (the Verlet limit is 2)."""
    return float(1.2 * sigma / np.sqrt(np.linalg.eigvalsh(precision).max()))


@pytest.mark.parametrize(
    ("alpha", "sigma", "temperature"),
    [(0.01, 1.0, 1.0), (1.0, 0.5, 2.0), (10.0, 3.0, 0.1), (1e4, 1.0, 1.0)],
)
def test_stationary_covariance_2d(x64, alpha, sigma, temperature):
    lr = _lr(A2, sigma)
    f, q = helpers.baoa_transition(A2, lr, alpha, sigma, temperature)
    hyper = {"lr": lr, "alpha": alpha, "sigma": sigma, "temperature": temperature}
    helpers.check_stationary(helpers.BAOA, A2, hyper, f, q, seed=31)


def test_stationary_covariance_10d_with_gradient_noise(x64):
    lr = _lr(A10, 1.0)
    f, q = helpers.baoa_transition(A10, lr, 1.0, 1.0, 1.0, grad_noise_var=0.5)
    hyper = {"lr": lr, "alpha": 1.0, "sigma": 1.0, "temperature": 1.0}
    helpers.check_stationary(
        helpers.BAOA, A10, hyper, f, q, seed=32, num_chains=500, grad_noise_var=0.5
    )


def test_float32_and_the_discrete_law_differs_from_its_limit(x64):
    """θ's marginal is exact for BAOA on a Gaussian, but E[θ mᵀ] = ε T/2 · I is not the limit's
    0: the moment test tells the integrator from its continuous limit."""
    lr = _lr(A2, 1.0)
    f, q = helpers.baoa_transition(A2, lr, 1.0, 1.0, 1.0)
    hyper = {"lr": lr, "alpha": 1.0, "sigma": 1.0, "temperature": 1.0}
    est, exact, _ = helpers.check_stationary(helpers.BAOA, A2, hyper, f, q, seed=33, dtype=jnp.float32)
    np.testing.assert_allclose(exact[:2, :2], np.linalg.inv(A2), rtol=1e-9)
    h = helpers.Hyper(lr=lr, alpha=1.0, sigma=1.0, temperature=1.0)
    z_limit = est.z_scores(helpers.continuous_limit_covariance(A2, h))
    assert z_limit.max() > 20, f"seed=33: max |z| vs the continuous limit only {z_limit.max():.1f}"


