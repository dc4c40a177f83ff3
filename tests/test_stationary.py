"""Exact discrete stationary moments of SGHMC on Gaussian targets (DESIGN.md's test pyramid,
level 2): many chains' empirical covariance of (θ, m) against the Lyapunov solution, with
tolerances from Monte Carlo standard errors (see tests/helpers.py for the method)."""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from tests.helpers import Z_MAX, Hyper

A2 = helpers.correlated_2d()
A10 = helpers.ill_conditioned()


def _lr(precision: np.ndarray, alpha: float, sigma: float) -> float:
    """A large stable step: ε·sqrt(λ_max)/σ = 0.7 unless the friction needs ε·α/σ² <= 1."""
    lam = np.linalg.eigvalsh(precision).max()
    return float(min(0.7 * sigma / np.sqrt(lam), sigma**2 / alpha))


def _check(precision, h, seed, **kw):
    est, exact = helpers.estimate_moments(precision, h, seed=seed, **kw)
    z = est.z_scores(exact)
    assert z.max() < Z_MAX, (
        f"seed={seed} {h}: max |z| = {z.max():.2f} against the exact discrete stationary "
        f"covariance\nestimate=\n{est.cov}\nexact=\n{exact}"
    )
    return est, exact


SWEEP = list(itertools.product([0.01, 10.0], [0.5, 1.0, 3.0], [0.1, 1.0, 2.0]))


@pytest.mark.parametrize(("alpha", "sigma", "temperature"), SWEEP)
def test_stationary_covariance_2d_sweep(x64, alpha, sigma, temperature):
    h = Hyper(lr=_lr(A2, alpha, sigma), alpha=alpha, sigma=sigma, temperature=temperature)
    # A seed per case: with one seed the chain is linear in T's square root, so every T would
    # give the same z-scores and the T sweep would test nothing new.
    _check(A2, h, seed=11 + SWEEP.index((alpha, sigma, temperature)))


@pytest.mark.parametrize(
    ("alpha", "beta", "grad_noise_var"),
    [
        (1.0, 0.0, 0.5),  # unmodelled gradient noise: the exact answer includes ε²GBGᵀ
        (1.0, 0.5, 0.5),  # β = B (T = 1): the injected noise is compensated to first order
        (2.0, 3.0, 0.0),  # β without gradient noise: less injected noise, still exact
    ],
)
def test_stationary_covariance_with_gradient_noise(x64, alpha, beta, grad_noise_var):
    h = Hyper(
        lr=_lr(A2, alpha, 1.0), alpha=alpha, sigma=1.0, temperature=1.0, beta=beta,
        grad_noise_var=grad_noise_var,
    )
    _check(A2, h, seed=12)


@pytest.mark.parametrize(("alpha", "sigma", "temperature"), [(0.01, 1.0, 1.0), (10.0, 3.0, 0.1), (1.0, 0.5, 2.0)])
def test_stationary_covariance_10d_ill_conditioned(x64, alpha, sigma, temperature):
    h = Hyper(lr=_lr(A10, alpha, sigma), alpha=alpha, sigma=sigma, temperature=temperature)
    _check(A10, h, seed=13, num_chains=500)


def test_float32_chains_match_the_float64_reference(x64):
    h = Hyper(lr=_lr(A2, 1.0, 1.0), alpha=1.0, sigma=1.0, temperature=1.0)
    _check(A2, h, seed=14, dtype=jnp.float32)


def test_the_moment_test_can_tell_the_integrator_from_its_continuous_limit(x64):
    """At these step sizes the exact discrete covariance is many standard errors away from the
    ε → 0 limit, so the sweep above pins the integrator, not just the target."""
    h = Hyper(lr=_lr(A2, 1.0, 1.0), alpha=1.0, sigma=1.0, temperature=1.0)
    est, exact = _check(A2, h, seed=15)
    z_limit = est.z_scores(helpers.continuous_limit_covariance(A2, h))
    assert z_limit.max() > 20, f"seed=15: max |z| vs the continuous limit only {z_limit.max():.1f}"


def test_long_run_stability_at_small_friction(x64):
    """α = 0.01, ε = 0.05 on N(0, 1) for 10,000 steps: finite, and still the exact moments.
    The simultaneous-update form θ += ε m_t has spectral radius > 1 here and diverges."""
    a1 = np.array([[1.0]])
    h = Hyper(lr=0.05, alpha=0.01, sigma=1.0, temperature=1.0)
    est, exact = _check(a1, h, seed=16, num_chains=200, num_steps=10_000)
    assert np.all(np.isfinite(est.cov))

    f_sim = np.array([[1.0, h.lr], [-h.lr, 1.0 - h.lr * h.alpha]])
    assert max(abs(np.linalg.eigvals(f_sim))) > 1.0
    z = np.array([1.0, 0.0])
    for _ in range(10_000):
        z = f_sim @ z
    assert np.linalg.norm(z) > 1e3, "the simultaneous form should have blown up"
