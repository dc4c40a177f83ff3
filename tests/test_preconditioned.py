"""pSGLD and preconditioned SGHMC: exact couplings (T = 0 pSGLD is RMSprop; a frozen
preconditioner stays bit-for-bit frozen and makes pSGHMC SGHMC in the coordinates S⁻¹θ; faces
agree bit for bit), exact stationary moments with a frozen preconditioner (where the dropped
Γ term vanishes, so the chain is linear and its law a Lyapunov solution), validation."""

from __future__ import annotations

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sghmc_jax
from sghmc_jax.sgmcmc import psghmc, psgld
from tests import helpers
from tests.helpers import regression_problem as _problem
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


def test_psgld_faces_give_bit_identical_chains():
    log_posterior, params, data = _problem()
    decay = optax.join_schedules([optax.constant_schedule(0.95), optax.constant_schedule(1.0)], [10])
    hyper = dict(decay=decay, eps=1e-4, temperature=0.7, initial_scale=0.5)
    tx = sghmc_jax.psgld(1e-3, **hyper, key=0)
    transform = psgld.build(log_posterior, 1e-3, **hyper)
    helpers.assert_faces_bit_identical(tx, transform, log_posterior, params, data, fields=("v",))


def test_psghmc_faces_give_bit_identical_chains():
    log_posterior, params, data = _problem(1)
    hyper = dict(alpha=0.5, sigma=1.3, temperature=0.7, decay=0.95, eps=1e-4, initial_scale=0.5)
    tx = sghmc_jax.psghmc(1e-3, **hyper, key=0)
    transform = psghmc.build(log_posterior, 1e-3, **hyper)
    helpers.assert_faces_bit_identical(
        tx, transform, log_posterior, params, data, fields=("momenta", "v")
    )


def test_inplace_gives_identical_numbers():
    log_posterior, params, data = _problem(2)
    for module in (psgld, psghmc):
        transform = module.build(log_posterior, 1e-3, initial_scale=1.0)
        a = transform.init(params, key=3)
        b = transform.init(jax.tree.map(jnp.copy, params), key=3)
        for i in range(3):
            old = b
            a = transform.update(a, data, key=i)
            b = transform.update(b, data, key=i, inplace=True)
            assert all(x.is_deleted() for x in jax.tree.leaves((old.params, old.v)))
            chex.assert_trees_all_equal((a.params, a.v), (b.params, b.v))


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


def test_psghmc_long_run_stability_at_small_friction(x64):
    """α = 0.01, ε = 0.05 on N(0, 1), frozen G = 4 (so ε√(G·λ) = 0.1), 10,000 steps."""
    a1, eps, precond = np.array([[1.0]]), 1e-3, np.array([4.0])
    f, q = helpers.psghmc_transition(a1, 0.05, 0.01, 1.0, 1.0, precond)
    hyper = {"lr": 0.05, "alpha": 0.01, "sigma": 1.0, "temperature": 1.0, "eps": eps, "v": _v_for(precond, eps)}
    est, _, _ = helpers.check_stationary(
        helpers.PSGHMC_FROZEN, a1, hyper, f, q, seed=54, num_chains=200, num_steps=10_000
    )
    assert np.all(np.isfinite(est.cov))


@pytest.mark.parametrize("make", [sghmc_jax.psgld, sghmc_jax.psghmc])
@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"learning_rate": 0.0}, r"`learning_rate` must be finite and > 0, got learning_rate=0.0"),
        ({"decay": 1.5}, r"`decay` must be finite and in \[0, 1\], got decay=1.5"),
        ({"decay": lambda s: -0.1}, r"`decay` must be finite and in \[0, 1\], got decay=-0.1 \(a schedule, at step 0\)"),
        ({"eps": 0.0}, r"`eps` must be finite and > 0, got eps=0.0"),
        ({"initial_scale": -1.0}, r"`initial_scale` must be finite and >= 0, got initial_scale=-1.0"),
        ({"temperature": -1.0}, r"`temperature` must be finite and >= 0, got temperature=-1.0"),
    ],
)
def test_invalid_hyperparameters_are_named(make, kwargs, pattern):
    kw = {"learning_rate": 0.1} | kwargs
    with pytest.raises(ValueError, match=pattern):
        make(**kw, key=0)


def test_psghmc_specific_rules_and_tree_errors():
    with pytest.raises(ValueError, match=r"`alpha` must be finite and >= 0, got alpha=-0.5"):
        sghmc_jax.psghmc(0.1, alpha=-0.5, key=0)
    with pytest.raises(ValueError, match=r"`sigma` must be finite and > 0, got sigma=0.0"):
        psghmc.build(lambda p, b: (0.0, None), 0.1, sigma=0.0)
    with pytest.raises(ValueError, match=r"`initial_scale` must match the shapes of `params`, got shape \(3,\)"):
        sghmc_jax.psgld(0.1, initial_scale={"w": jnp.ones(3)}, key=0).init({"w": jnp.ones(2)})
    with pytest.raises(TypeError, match=r"every leaf of `initial_scale` must be a floating-point array"):
        sghmc_jax.psgld(0.1, initial_scale={"w": jnp.ones(2, jnp.int32)}, key=0)
    with pytest.raises(ValueError, match=r"`lr` must be finite and > 0, got lr=-1.0"):
        psgld.build(lambda p, b: (0.0, None), -1.0)


def test_signatures():
    """posteriors' SGLD/SGHMC names, then optax.rmsprop's for the preconditioner."""
    assert list(inspect.signature(psgld.build).parameters) == [
        "log_posterior", "lr", "decay", "eps", "temperature", "initial_scale",
    ]
    assert list(inspect.signature(psghmc.build).parameters) == [
        "log_posterior", "lr", "alpha", "sigma", "temperature", "momenta", "decay", "eps", "initial_scale",
    ]
    assert psgld.PSGLDState._fields == ("params", "v", "log_posterior", "aux", "step")
    assert psghmc.PSGHMCState._fields == ("params", "momenta", "v", "log_posterior", "aux", "step")
