"""SGHMC's own laws (the conventions every sampler keeps are in test_conventions.py): the exact
couplings (T = 0 is heavy-ball SGD; α = β = T = 0 is deterministic symplectic Euler; one step is
DESIGN.md's linear map on a Gaussian), composition with optax as a Bayesian recipe (weight decay
as a prior, last-layer Bayes, schedules, inject_hyperparams), the functional face's memory under
donation, and the exact discrete stationary moments swept over α, σ, T, β and the dimension."""

from __future__ import annotations

import itertools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sghmc_jax
from sghmc_jax import kernels
from sghmc_jax.sgmcmc import sghmc
from tests import helpers
from tests.helpers import Z_MAX, Hyper
from tests.helpers import logistic_problem as _logistic_problem
from tests.helpers import run_optax as _run

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



def _step_z(precision, h, key):
    """One kernel step as a function of z = (θ, m), gradient of log p = −½ θᵀAθ."""
    d = precision.shape[0]

    def f(z):
        theta, m = z[:d], z[d:]
        inc, m_new = kernels.sghmc_step(
            m, -precision @ theta, key, h.lr, h.alpha, h.beta, h.sigma, h.temperature
        )
        return jnp.concatenate([theta + inc, m_new])

    return f


@pytest.mark.parametrize(("lr", "alpha", "sigma"), [(0.05, 1.0, 1.0), (0.02, 5.0, 0.7), (0.1, 0.01, 2.0)])
def test_zero_temperature_is_heavy_ball_sgd(x64, lr, alpha, sigma):
    """T = 0, m₀ = 0 equals optax.sgd(ε²/σ², momentum = 1 − εα/σ²) on the loss gradient."""
    loss, params = _logistic_problem()
    tx = sghmc_jax.sghmc(lr, alpha=alpha, sigma=sigma, temperature=0.0, momenta=0.0, key=0)
    ref = optax.sgd(lr**2 / sigma**2, momentum=1 - lr * alpha / sigma**2)
    _, _, trace = _run(tx, loss, params, 200)
    _, _, ref_trace = _run(ref, loss, params, 200)
    chex.assert_trees_all_close(trace, ref_trace, atol=1e-6, rtol=0)


def test_no_friction_zero_temperature_is_deterministic_hamiltonian_dynamics(x64):
    """α = β = 0, T = 0: the key plays no part, and the chain is symplectic Euler."""
    loss, params = _logistic_problem(1)
    m0 = {"w": jnp.linspace(-1, 1, 5), "b": jnp.asarray(0.5)}
    make = lambda seed: sghmc_jax.sghmc(  # noqa: E731
        0.01, alpha=0.0, beta=0.0, sigma=1.5, temperature=0.0, momenta=m0, key=seed
    )
    p1, s1, t1 = _run(make(0), loss, params, 100)
    p2, s2, t2 = _run(make(1), loss, params, 100)
    chex.assert_trees_all_equal(t1, t2)
    # Hand-written symplectic Euler: m ← m − ε∇L(θ); θ ← θ + ε m / σ².
    theta, m = params, m0
    for _ in range(100):
        g = jax.grad(loss)(theta)
        m = jax.tree.map(lambda m, g: m - 0.01 * g, m, g)
        theta = jax.tree.map(lambda t, m: t + 0.01 * m / 1.5**2, theta, m)
    chex.assert_trees_all_close(p1, theta, atol=1e-12)
    chex.assert_trees_all_close(s1.momenta, m, atol=1e-12)


def test_add_decayed_weights_is_a_gaussian_prior():
    """chain(add_decayed_weights(λ), sghmc) on loss L == sghmc on L + λ|θ|²/2, step by step."""
    loss = lambda p: jnp.sum(jnp.cos(p))  # noqa: E731
    prior_loss = lambda p: loss(p) + 0.5 * 0.3 * jnp.sum(p**2)  # noqa: E731
    params = jnp.linspace(-1.0, 1.0, 4)
    a = optax.chain(optax.add_decayed_weights(0.3), sghmc_jax.sghmc(0.05, alpha=0.5, key=0))
    b = sghmc_jax.sghmc(0.05, alpha=0.5, key=0)
    pa, sa, pb, sb = params, a.init(params), params, b.init(params)
    for i in range(20):
        k = jax.random.key(i)
        ua, sa = a.update(jax.grad(loss)(pa), sa, pa, key=k)
        ub, sb = b.update(jax.grad(prior_loss)(pb), sb, pb, key=k)
        pa, pb = optax.apply_updates(pa, ua), optax.apply_updates(pb, ub)
    np.testing.assert_allclose(pa, pb, rtol=1e-5, atol=1e-6)


def test_masked_last_layer_bayes():
    """optax.multi_transform: SGHMC on one subtree, SGD on the other."""
    params = {"body": jnp.ones(3), "head": jnp.ones(2)}
    tx = optax.multi_transform(
        {"sample": sghmc_jax.sghmc(0.1, key=0), "sgd": optax.sgd(0.1)},
        {"body": "sgd", "head": "sample"},
    )
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, state = jax.jit(tx.update)(grads, state, params)
    np.testing.assert_allclose(updates["body"], -0.1)
    assert updates["head"].shape == (2,)


def test_learning_rate_and_temperature_schedules():
    lr_fn = optax.exponential_decay(0.1, transition_steps=1, decay_rate=0.5)
    t_fn = optax.linear_schedule(1.0, 0.0, transition_steps=2)
    params = jnp.zeros(3)
    tx = sghmc_jax.sghmc(lr_fn, alpha=0.5, temperature=t_fn, momenta=0.0, key=0)
    state = tx.init(params)
    m = jnp.zeros(3)
    for step in range(4):
        k = jax.random.key(step)
        updates, state = jax.jit(tx.update)(jnp.ones(3), state, key=k)
        inc, m = sghmc_jax.kernels.sghmc_step(m, -jnp.ones(3), k, lr_fn(step), 0.5, 0.0, 1.0, t_fn(step))
        # Eager vs jit may differ in the last bit (XLA fuses into FMAs); the values agree.
        np.testing.assert_allclose(updates, inc, rtol=1e-6, atol=1e-9)
    assert int(state.step) == 4


def test_inject_hyperparams_changes_lr_and_temperature_without_retracing():
    params = jnp.zeros(3)
    tx = optax.inject_hyperparams(sghmc_jax.sghmc, static_args=("key",))(
        learning_rate=0.1, temperature=1.0, alpha=0.5, momenta=0.0, key=0
    )
    state = tx.init(params)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(state, key):
        return tx.update(jnp.ones(3), state, params, key=key)

    m = jnp.zeros(3)
    for i, (lr, temp) in enumerate([(0.1, 1.0), (0.05, 0.5), (0.2, 0.0)]):
        state.hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
        state.hyperparams["temperature"] = jnp.asarray(temp, jnp.float32)
        k = jax.random.key(i)
        updates, state = step(state, k)
        inc, m = sghmc_jax.kernels.sghmc_step(
            m, -jnp.ones(3), k, jnp.float32(lr), jnp.float32(0.5), jnp.float32(0.0),
            jnp.float32(1.0), jnp.float32(temp),
        )
        np.testing.assert_allclose(updates, inc, rtol=1e-6)


def test_inject_hyperparams_with_an_int_seed_hyperparameter():
    tx = optax.inject_hyperparams(sghmc_jax.sghmc)(learning_rate=0.1, key=0)
    params = jnp.zeros(3)
    state = tx.init(params)
    updates, state = jax.jit(tx.update)(jnp.ones(3), state, params)
    assert np.all(np.isfinite(updates))


def test_momenta_options():
    params = {"a": jnp.zeros(2), "b": jnp.zeros((2, 2))}
    filled = sghmc_jax.sghmc(0.1, momenta=0.5, key=0).init(params).momenta
    chex.assert_trees_all_equal(filled, jax.tree.map(lambda p: p + 0.5, params))
    given = {"a": jnp.ones(2), "b": jnp.full((2, 2), 2.0)}
    chex.assert_trees_all_equal(sghmc_jax.sghmc(0.1, momenta=given, key=0).init(params).momenta, given)
    cold = sghmc_jax.sghmc(0.1, temperature=0.0, key=0).init(params).momenta
    chex.assert_trees_all_equal(cold, params)


def test_tree_and_dtype_errors():
    tx = sghmc_jax.sghmc(0.1, momenta={"a": jnp.zeros(2)}, key=0)
    with pytest.raises(ValueError, match=re.escape("`momenta` must have the tree structure of `params`")):
        tx.init({"a": jnp.zeros(2), "b": jnp.zeros(1)})
    tx = sghmc_jax.sghmc(0.1, momenta={"a": jnp.zeros(3)}, key=0)
    with pytest.raises(ValueError, match=re.escape("`momenta` must match the shapes of `params`, got shape (3,) at momenta['a']")):
        tx.init({"a": jnp.zeros(2)})
    with pytest.raises(TypeError, match=re.escape("every leaf of `params` must be a floating-point array, got dtype int32 at params['n']")):
        sghmc_jax.sghmc(0.1, key=0).init({"w": jnp.zeros(2), "n": jnp.zeros(2, jnp.int32)})


@pytest.mark.parametrize(
    "h",
    [
        Hyper(lr=0.3, alpha=0.01, sigma=1.0, temperature=1.0),
        Hyper(lr=0.05, alpha=10.0, sigma=0.5, temperature=2.0, beta=3.0),
        Hyper(lr=0.7, alpha=1.0, sigma=3.0, temperature=0.0),
    ],
)
def test_one_step_is_designs_linear_map(x64, h):
    """Jacobian = F and the noise covariance = q·GGᵀ exactly (DESIGN.md), for any key."""
    a = helpers.ill_conditioned(dim=4)
    f_exact, q_exact = helpers.transition(a, h)
    key = jax.random.key(3)
    step = _step_z(jnp.asarray(a), h, key)
    jac = jax.jacfwd(step)(jnp.zeros(8))
    np.testing.assert_allclose(jac, f_exact, rtol=0, atol=1e-13)
    # The affine part at z = 0 is the noise: G·√q·ξ with the kernel's own ξ for this key.
    noise = kernels.normal_like(key, jnp.zeros(4))
    g = np.vstack([(h.lr / h.sigma**2) * np.eye(4), np.eye(4)])
    q = h.lr * h.temperature * (2 * h.alpha - h.lr * h.beta * h.temperature)
    np.testing.assert_allclose(step(jnp.zeros(8)), g @ (np.sqrt(q) * noise), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g @ g.T * q, q_exact, atol=1e-15)


def test_symplectic_without_friction(x64):
    """α = 0: det F = 1 (the map preserves phase-space volume), as symplectic Euler must."""
    a = helpers.correlated_2d()
    h = Hyper(lr=0.4, alpha=0.0, sigma=1.3, temperature=0.0)
    jac = jax.jacfwd(_step_z(jnp.asarray(a), h, jax.random.key(0)))(jnp.zeros(4))
    assert abs(np.linalg.det(jac) - 1.0) < 1e-12


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_kernel_keeps_leaf_dtypes(dtype):
    m = {"w": jnp.ones((4,), dtype), "b": jnp.ones((), dtype)}
    g = jax.tree.map(jnp.ones_like, m)
    inc, m_new = kernels.sghmc_step(m, g, jax.random.key(1), 0.1, 0.5, 0.0, 1.0, 1.0)
    assert jax.tree.map(lambda x: x.dtype, inc) == {"w": dtype, "b": dtype}
    assert jax.tree.map(lambda x: x.dtype, m_new) == {"w": dtype, "b": dtype}


def test_init_momenta_scale(x64):
    params = jnp.zeros(200_000)
    m = kernels.init_momenta(jax.random.key(5), params, 3.0, 0.5)
    # Var = σ²T = 4.5; the sample variance's standard error is 4.5·√(2/n).
    se = 4.5 * np.sqrt(2 / params.size)
    assert abs(np.var(m) - 4.5) < 5 * se, f"seed=5 var={np.var(m)}"
    np.testing.assert_array_equal(kernels.init_momenta(jax.random.key(5), params, 3.0, 0.0), 0.0)


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


# ---- exact discrete stationary moments (DESIGN.md's test pyramid, level 2) ----

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
