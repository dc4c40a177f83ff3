"""The kernel alone: the exact linear map on a Gaussian target, noise layout, dtypes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sghmc_jax import kernels
from tests import helpers
from tests.helpers import Hyper


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
    xi = kernels.normal_like(key, jnp.zeros(4))
    g = np.vstack([(h.lr / h.sigma**2) * np.eye(4), np.eye(4)])
    q = h.lr * h.temperature * (2 * h.alpha - h.lr * h.beta * h.temperature)
    np.testing.assert_allclose(step(jnp.zeros(8)), g @ (np.sqrt(q) * xi), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g @ g.T * q, q_exact, atol=1e-15)


def test_symplectic_without_friction(x64):
    """α = 0: det F = 1 (the map preserves phase-space volume), as symplectic Euler must."""
    a = helpers.correlated_2d()
    h = Hyper(lr=0.4, alpha=0.0, sigma=1.3, temperature=0.0)
    jac = jax.jacfwd(_step_z(jnp.asarray(a), h, jax.random.key(0)))(jnp.zeros(4))
    assert abs(np.linalg.det(jac) - 1.0) < 1e-12


def test_normal_like_layout_numbers_elements_across_the_flattened_tree():
    """The documented layout: leaf b's noise is the flat-layout noise at counters 6, 7, 8 (after
    leaf a's six elements), and the same counters give the same numbers in any tree."""
    tree = {"a": jnp.zeros((3, 2)), "b": jnp.zeros(3), "c": jnp.zeros((3, 2))}
    noise = kernels.normal_like(jax.random.key(0), tree)
    assert jax.tree.map(jnp.shape, noise) == jax.tree.map(jnp.shape, tree)
    # Leaves of the same shape must not share noise.
    assert not np.allclose(noise["a"], noise["c"])
    flat = kernels.normal_like(jax.random.key(0), jnp.zeros(15))
    np.testing.assert_array_equal(noise["b"], flat[6:9])
    np.testing.assert_array_equal(noise["c"].ravel(), flat[9:])


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
