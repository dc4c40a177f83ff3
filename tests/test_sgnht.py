"""SGNHT: exact couplings (a thermostat held at α is SGHMC bit for bit; the thermostat moves with
the new momentum; faces agree bit for bit), the thermostat's defining property (the kinetic
temperature averages T, even under gradient noise SGHMC is not told about), the first-order
convergence of θ's moments as ε halves, long-run stability, validation."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sghmc_jax
from sghmc_jax import kernels
from sghmc_jax.sgmcmc import sgnht
from tests.helpers import Z_MAX
from tests.helpers import logistic_problem as _logistic_problem
from tests.helpers import run_optax as _run


def test_thermostat_held_at_alpha_is_sghmc_bit_for_bit():
    """With ξ reset to α before every step SGNHT's momentum and position steps are SGHMC's."""
    loss, params = _logistic_problem(2)
    params = jax.tree.map(lambda x: x.astype(jnp.float32), params)
    hyper = dict(alpha=0.7, beta=0.2, sigma=1.3, temperature=0.8)
    a = sghmc_jax.sgnht(0.02, **hyper, key=3)
    b = sghmc_jax.sghmc(0.02, **hyper, key=3)

    @jax.jit
    def steps(params):
        def body(carry, key):
            pa, sa, pb, sb = carry
            sa = sa._replace(xi=jnp.asarray(0.7, sa.xi.dtype))
            ua, sa = a.update(jax.grad(loss)(pa), sa, pa, key=key)
            ub, sb = b.update(jax.grad(loss)(pb), sb, pb, key=key)
            pa, pb = optax.apply_updates(pa, ua), optax.apply_updates(pb, ub)
            return (pa, sa, pb, sb), (pa, pb)

        carry = (params, a.init(params), params, b.init(params))
        return jax.lax.scan(body, carry, jax.random.split(jax.random.key(0), 200))

    (_, sa, _, sb), (ta, tb) = steps(params)
    chex.assert_trees_all_equal(ta, tb)
    chex.assert_trees_all_equal(sa.momenta, sb.momenta)


def test_thermostat_moves_with_the_new_momentum(x64):
    """ξ_{t+1} = ξ_t + ε(m_{t+1}ᵀm_{t+1}/(σ²d) − T), with d counted over every leaf."""
    m = {"a": jnp.array([1.0, -2.0, 0.5]), "b": jnp.asarray(3.0)}
    g = {"a": jnp.array([0.1, 0.2, 0.3]), "b": jnp.asarray(-1.0)}
    lr, alpha, sigma, temp, xi = 0.1, 0.5, 1.5, 0.7, jnp.asarray(0.2)
    inc, m_new, xi_new = kernels.sgnht_step(m, xi, g, jax.random.key(1), lr, alpha, 0.0, sigma, temp)
    sumsq = sum(float(jnp.sum(x**2)) for x in jax.tree.leaves(m_new))
    np.testing.assert_allclose(xi_new, 0.2 + lr * (sumsq / (sigma**2 * 4) - temp), rtol=1e-14)
    # and the momentum step used the OLD ξ as friction
    noise = kernels.normal_like(jax.random.key(1), m)
    std = np.sqrt(lr * temp * 2 * alpha)
    expected = jax.tree.map(lambda m, g, z: (1 - lr * 0.2 / sigma**2) * m + lr * g + std * z, m, g, noise)
    chex.assert_trees_all_close(m_new, expected, atol=1e-14)
    chex.assert_trees_all_close(inc, jax.tree.map(lambda m: lr / sigma**2 * m, m_new), atol=1e-15)


def test_zero_temperature_is_deterministic(x64):
    loss, params = _logistic_problem(1)
    make = lambda seed: sghmc_jax.sgnht(0.01, alpha=0.0, temperature=0.0, momenta=0.1, key=seed)  # noqa: E731
    _, s1, t1 = _run(make(0), loss, params, 50)
    _, _, t2 = _run(make(1), loss, params, 50, keys=jax.random.split(jax.random.key(2), 50))
    chex.assert_trees_all_equal(t1, t2)
    assert float(s1.xi) > 0.0  # T = 0: the thermostat only brakes


# Many vmapped chains on the Gaussian with precisions `lam` (diagonal), each recording the time
# averages, after a burn-in, of: θ's normalised second moment mean(λθ²)/T − 1 (its bias), the
# kinetic temperature mᵀm/(σ²dT) − 1, and ξ.


@functools.cache
def _runner(kind: str, dim: int, num_steps: int, burn_in: int):
    make = {"sgnht": sghmc_jax.sgnht, "sghmc": sghmc_jax.sghmc}[kind]

    def chain(key, lam, lr, alpha, sigma, temperature, gn_std, m0):
        k0, k1, k2, k3 = jax.random.split(key, 4)
        theta = jax.random.normal(k0, (dim,)) * jnp.sqrt(temperature / lam)
        tx = make(lr, alpha, 0.0, sigma, temperature, momenta=m0, key=k1)
        state = tx.init(theta)

        def step(carry, key):
            theta, state, acc = carry
            k_update, k_grad = jax.random.split(key)
            loss_grad = lam * theta + gn_std * jax.random.normal(k_grad, (dim,))
            updates, state = tx.update(loss_grad, state, theta, key=k_update)
            theta = optax.apply_updates(theta, updates)
            kinetic = jnp.sum(state.momenta**2) / (sigma**2 * dim)
            obs = jnp.stack([
                jnp.mean(lam * theta**2) / temperature - 1,
                kinetic / temperature - 1,
                getattr(state, "xi", alpha),
            ])
            return (theta, state, acc + obs), None

        carry, _ = jax.lax.scan(step, (theta, state, jnp.zeros(3)), jax.random.split(k2, burn_in))
        carry = (carry[0], carry[1], jnp.zeros(3))
        (_, _, acc), _ = jax.lax.scan(step, carry, jax.random.split(k3, num_steps))
        return acc / num_steps

    return jax.jit(jax.vmap(chain, in_axes=(0,) + (None,) * 7))


def _averages(kind, *, seed, num_chains, num_steps, burn_in, lam, lr, alpha, sigma=1.0,
              temperature=1.0, grad_noise_var=0.0, momenta=None):
    run = _runner(kind, len(lam), num_steps, burn_in)
    keys = jax.random.split(jax.random.key(seed), num_chains)
    m0 = None if momenta is None else jnp.full(len(lam), momenta)
    out = np.asarray(run(keys, jnp.asarray(lam), lr, alpha, sigma, temperature, np.sqrt(grad_noise_var), m0))
    return out.mean(0), out.std(0, ddof=1) / np.sqrt(num_chains)


def test_thermostat_drives_the_kinetic_temperature_to_t_even_under_gradient_noise(x64):
    """Started with m = 0, under unmodelled gradient noise (β = 0): SGNHT's kinetic temperature
    averages T within MCSE, ξ rises above α to absorb the noise, while SGHMC overheats."""
    kw = dict(seed=41, num_chains=200, num_steps=4000, burn_in=1000, lam=np.linspace(0.5, 2, 8),
              lr=0.1, alpha=1.0, sigma=2.0, temperature=0.5, grad_noise_var=2.0, momenta=0.0)
    mean, se = _averages("sgnht", **kw)
    z = abs(mean[1]) / se[1]
    print(f"[sgnht] kinetic temperature/T - 1 = {mean[1]:.2e} ± {se[1]:.1e} (|z| = {z:.2f}); xi = {mean[2]:.3f}")
    assert z < Z_MAX, f"seed=41: kinetic temperature off by {mean[1]:.3g} ± {se[1]:.2g}"
    assert mean[2] > 1.0 + 5 * se[2], f"seed=41: ξ = {mean[2]} did not rise above α = 1"
    mean_hmc, se_hmc = _averages("sghmc", **kw)
    z_hmc = mean_hmc[1] / se_hmc[1]
    assert z_hmc > 20, f"seed=41: SGHMC's kinetic temperature only {z_hmc:.1f} SE above T"


def test_theta_moments_converge_at_first_order(x64):
    """The bias of θ's second moment shrinks like ε¹ as ε halves (SGHMC's is ε² on Gaussians:
    the thermostat pins the momenta's temperature to T and the position pays for SGHMC's O(ε)
    momentum excess). Log-log slope over ε = 0.2, 0.1, 0.05, from 500 chains each; the slope's
    standard error comes from the MCSEs (delta method). Allowed: 5 SE plus 0.15 for the O(ε)
    correction to the local slope at these step sizes (measured ≈ +0.1)."""
    lrs = np.array([0.2, 0.1, 0.05])
    bias, bias_se = [], []
    for lr in lrs:
        mean, se = _averages("sgnht", seed=42, num_chains=500, num_steps=10_000, burn_in=200,
                             lam=np.linspace(0.5, 2, 8), lr=float(lr), alpha=1.0)
        assert abs(mean[1]) < Z_MAX * se[1], f"seed=42 ε={lr}: kinetic temperature {mean[1]} ± {se[1]}"
        bias.append(mean[0])
        bias_se.append(se[0])
    bias, bias_se = np.array(bias), np.array(bias_se)
    assert np.all(np.abs(bias) > 5 * bias_se), f"seed=42: bias {bias} not resolved (SE {bias_se})"
    x, y = np.log(lrs), np.log(np.abs(bias))
    w = (x - x.mean()) / np.sum((x - x.mean()) ** 2)
    slope = float(np.sum(w * y))
    slope_se = float(np.sqrt(np.sum(w**2 * (bias_se / bias) ** 2)))
    print(f"[sgnht] bias {bias} ± {bias_se}: slope {slope:.3f} ± {slope_se:.3f}")
    assert abs(slope - 1) < 5 * slope_se + 0.15, f"seed=42: order {slope:.3f} ± {slope_se:.3f}, bias {bias}"
    assert abs(slope - 2) > 5 * slope_se, f"seed=42: cannot tell first from second order ({slope_se=})"


def test_long_run_stability_at_small_friction(x64):
    """α = 0.01, ε = 0.05 on N(0, 1) for 10,000 steps: finite, kinetic temperature T."""
    mean, se = _averages("sgnht", seed=43, num_chains=200, num_steps=10_000, burn_in=0,
                         lam=np.array([1.0]), lr=0.05, alpha=0.01)
    assert np.all(np.isfinite(mean)), f"seed=43: {mean}"
    # From equilibrium there is no burn-in bias: the kinetic average is T + (ξ_N − ξ_0)/(εN).
    assert abs(mean[1]) < Z_MAX * se[1], f"seed=43: kinetic temperature {mean[1]} ± {se[1]}"


def test_xi_defaults_to_alpha_and_zero_is_zero():
    """posteriors' `xi or alpha` turns xi=0.0 into alpha; here 0.0 means 0.0."""
    params = jnp.zeros(3)
    assert float(sgnht.build(lambda p, b: (0.0, None), 0.1, alpha=0.3).init(params, momenta=0.0).xi) == pytest.approx(0.3)
    assert float(sgnht.build(lambda p, b: (0.0, None), 0.1, alpha=0.3, xi=0.0).init(params, momenta=0.0).xi) == 0.0
    assert float(sghmc_jax.sgnht(0.1, alpha=0.3, key=0).init(params).xi) == pytest.approx(0.3)


