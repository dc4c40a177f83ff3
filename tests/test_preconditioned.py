"""pSGLD and preconditioned SGHMC: exact couplings (T = 0 pSGLD is RMSprop; a frozen
preconditioner stays bit-for-bit frozen and makes pSGHMC SGHMC in the coordinates S⁻¹θ; faces
agree bit for bit), exact stationary moments with a frozen preconditioner (where the dropped
Γ term vanishes, so the chain is linear and its law a Lyapunov solution), validation."""

from __future__ import annotations

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sghmc_jax
from sghmc_jax.sgmcmc import psghmc, psgld
from tests import helpers
from tests.helpers import logistic_problem as _logistic_problem
from tests.helpers import run_optax as _run

A2 = helpers.correlated_2d()
A10 = helpers.ill_conditioned()


def _v_for(precond: np.ndarray, eps: float) -> np.ndarray:
    """The V that gives G = 1/(λ + √V) = precond."""
    return (1 / precond - eps) ** 2


@pytest.mark.parametrize(("decay", "initial_scale"), [(0.9, 0.0), (0.99, 1.0)])
def test_psgld_at_zero_temperature_is_rmsprop(x64, decay, initial_scale):
    loss, params = _logistic_problem()
    tx = sghmc_jax.psgld(0.01, decay=decay, eps=1e-5, temperature=0.0, initial_scale=initial_scale, key=0)
    ref = optax.rmsprop(0.01, decay=decay, eps=1e-5, initial_scale=initial_scale, eps_in_sqrt=False)
    _, state, trace = _run(tx, loss, params, 100)
    _, ref_state, ref_trace = _run(ref, loss, params, 100)
    chex.assert_trees_all_close(trace, ref_trace, atol=1e-12, rtol=0)
    chex.assert_trees_all_close(state.v, ref_state[0].nu, atol=1e-12, rtol=0)


@pytest.mark.parametrize("make", [sghmc_jax.psgld, sghmc_jax.psghmc])
def test_decay_one_freezes_the_preconditioner_bit_for_bit(make):
    loss, params = _logistic_problem(3)
    params = jax.tree.map(lambda x: x.astype(jnp.float32), params)
    v0 = jax.tree.map(lambda p: jnp.full(jnp.shape(p), 0.7, p.dtype), params)
    _, state, _ = _run(make(0.01, decay=1.0, initial_scale=v0, key=0), loss, params, 50)
    chex.assert_trees_all_equal(state.v, v0)
    # A decay schedule adapts V during burn-in, then freezes it.
    burn_in = 20
    decay = optax.join_schedules([optax.constant_schedule(0.9), optax.constant_schedule(1.0)], [burn_in])
    tx = make(0.01, decay=decay, initial_scale=1.0, key=0)
    _, s_burn, _ = _run(tx, loss, params, burn_in)
    _, s_more, _ = _run(tx, loss, params, burn_in + 30)
    # Same key stream: the first `burn_in` steps coincide, and V no longer moves after them.
    chex.assert_trees_all_equal(s_burn.v, s_more.v)
    assert not np.allclose(s_burn.v["w"], 1.0)


def test_frozen_psghmc_is_sghmc_in_rescaled_coordinates(x64):
    """S fixed: θ = Sφ with φ running SGHMC on L(Sφ), from the same momenta and keys."""
    loss, params = _logistic_problem(4)
    eps = 1e-3
    v = {"w": jnp.linspace(0.2, 5.0, 5), "b": jnp.asarray(2.0)}
    scale = jax.tree.map(lambda v: 1 / jnp.sqrt(eps + jnp.sqrt(v)), v)
    hyper = dict(alpha=0.8, sigma=1.2, temperature=0.6)
    tx = sghmc_jax.psghmc(0.03, **hyper, decay=1.0, eps=eps, initial_scale=v, key=5)
    ref = sghmc_jax.sghmc(0.03, **hyper, key=5)
    rescaled_loss = lambda phi: loss(jax.tree.map(jnp.multiply, scale, phi))  # noqa: E731
    phi0 = jax.tree.map(jnp.divide, params, scale)
    keys = jax.random.split(jax.random.key(6), 100)
    p, s, _ = _run(tx, loss, params, 100, keys=keys)
    phi, s_ref, _ = _run(ref, rescaled_loss, phi0, 100, keys=keys)
    chex.assert_trees_all_close(p, jax.tree.map(jnp.multiply, scale, phi), atol=1e-10)
    chex.assert_trees_all_close(s.momenta, s_ref.momenta, atol=1e-10)


def test_unit_preconditioner_is_plain_sghmc_and_sgld(x64):
    """V = 0, λ = 1: G = S = 1, so the preconditioned samplers are SGHMC (β = 0) and SGLD."""
    loss, params = _logistic_problem(5)
    keys = jax.random.split(jax.random.key(7), 50)
    pairs = [
        (sghmc_jax.psghmc(0.05, 0.5, 1.1, 0.9, decay=1.0, eps=1.0, key=2), sghmc_jax.sghmc(0.05, 0.5, 0.0, 1.1, 0.9, key=2)),
        (sghmc_jax.psgld(0.05, decay=1.0, eps=1.0, temperature=0.9, key=2), sghmc_jax.sgld(0.05, temperature=0.9, key=2)),
    ]
    for tx, ref in pairs:
        _, _, trace = _run(tx, loss, params, 50, keys=keys)
        _, _, ref_trace = _run(ref, loss, params, 50, keys=keys)
        chex.assert_trees_all_close(trace, ref_trace, atol=1e-12)


@pytest.mark.parametrize(
    ("precision", "precond", "temperature", "grad_noise_var"),
    [
        (A2, 1 / np.diag(A2), 1.0, 0.0),  # Jacobi preconditioning
        (A2, np.array([2.0, 0.01]), 0.5, 0.0),  # a poor one
        (A2, 1 / np.diag(A2), 1.0, 1.0),  # unmodelled gradient noise: ε²GBG
        (A10, np.random.default_rng(0).uniform(0.2, 3.0, 10), 1.0, 0.0),
    ],
    ids=["jacobi", "poor", "grad-noise", "10d"],
)
def test_frozen_psgld_stationary_covariance(x64, precision, precond, temperature, grad_noise_var):
    eps = 1e-3
    lr = float(1.5 / np.linalg.eigvals(np.diag(precond) @ precision).real.max())
    f, q = helpers.psgld_transition(precision, lr, temperature, precond, grad_noise_var)
    hyper = {"lr": lr, "eps": eps, "temperature": temperature, "v": _v_for(precond, eps)}
    helpers.check_stationary(
        helpers.PSGLD_FROZEN, precision, hyper, f, q, seed=51, grad_noise_var=grad_noise_var,
        num_chains=1000 if precision is A2 else 500,
    )


@pytest.mark.parametrize(
    ("precision", "precond", "alpha", "sigma", "grad_noise_var"),
    [
        (A2, 1 / np.diag(A2), 1.0, 1.0, 0.0),
        (A2, np.array([2.0, 0.01]), 0.05, 2.0, 0.0),
        (A2, 1 / np.diag(A2), 3.0, 0.7, 1.0),
        (A10, np.random.default_rng(1).uniform(0.2, 3.0, 10), 1.0, 1.0, 0.0),
    ],
    ids=["jacobi", "poor-small-friction", "grad-noise", "10d"],
)
def test_frozen_psghmc_stationary_covariance(x64, precision, precond, alpha, sigma, grad_noise_var):
    eps = 1e-3
    s = np.diag(np.sqrt(precond))
    lam = np.linalg.eigvalsh(s @ precision @ s).max()
    lr = float(min(0.7 * sigma / np.sqrt(lam), sigma**2 / alpha))
    f, q = helpers.psghmc_transition(precision, lr, alpha, sigma, 1.0, precond, grad_noise_var)
    hyper = {"lr": lr, "alpha": alpha, "sigma": sigma, "temperature": 1.0, "eps": eps, "v": _v_for(precond, eps)}
    helpers.check_stationary(
        helpers.PSGHMC_FROZEN, precision, hyper, f, q, seed=52, grad_noise_var=grad_noise_var,
        num_chains=1000 if precision is A2 else 500,
    )


def test_float32_frozen_chains_match_the_float64_reference(x64):
    eps, precond = 1e-3, 1 / np.diag(A2)
    lr = float(1.5 / np.linalg.eigvals(np.diag(precond) @ A2).real.max())
    f, q = helpers.psgld_transition(A2, lr, 1.0, precond)
    hyper = {"lr": lr, "eps": eps, "temperature": 1.0, "v": _v_for(precond, eps)}
    helpers.check_stationary(helpers.PSGLD_FROZEN, A2, hyper, f, q, seed=53, dtype=jnp.float32)


def test_initial_scale_trees_are_checked():
    """A pytree V₀ must match the params, be floating-point, and be >= 0 everywhere (regression,
    issue 10: only the scalar form was checked; a negative entry made G = 1/(λ + √V) NaN)."""
    with pytest.raises(ValueError, match=r"`initial_scale` must match the shapes of `params`, got shape \(3,\)"):
        sghmc_jax.psgld(0.1, initial_scale={"w": jnp.ones(3)}, key=0).init({"w": jnp.ones(2)})
    with pytest.raises(TypeError, match=r"every leaf of `initial_scale` must be a floating-point array"):
        sghmc_jax.psgld(0.1, initial_scale={"w": jnp.ones(2, jnp.int32)}, key=0)
    bad = {"w": jnp.array([1.0, -0.5, 2.0])}
    for make in (lambda: psgld.build(lambda p, b: (0.0, None), 0.1, initial_scale=bad),
                 lambda: psghmc.build(lambda p, b: (0.0, None), 0.1, initial_scale=bad),
                 lambda: sghmc_jax.psgld(0.1, initial_scale=bad, key=0),
                 lambda: sghmc_jax.psghmc(0.1, initial_scale=bad, key=0)):
        with pytest.raises(ValueError, match=re.escape("every element of `initial_scale` must be >= 0, got a minimum of -0.5 at initial_scale['w']")):
            make()


