"""Shared targets and statistics for the tests: Gaussian targets, their exact discrete stationary
moments under SGHMC (a Lyapunov solution), and a many-chain moment estimator with Monte Carlo
standard errors.

The stationary test's method: for log p = −½ θᵀAθ one SGHMC step is the linear AR(1) map
z' = F z + G (√q ξ + ε ζ) on z = (θ, m) (DESIGN.md), whose exact stationary covariance Σ solves
Σ = F Σ Fᵀ + Q. Each of C independent chains starts from an exact draw of N(0, Σ) and runs N
steps; its time average of z zᵀ is one unbiased estimate of Σ if (and only if, for long enough
runs) the implementation is exact. The C per-chain estimates are i.i.d., so their standard error
is the cross-chain standard deviation over √C: the tolerance is a Monte Carlo standard error with
no autocorrelation modelling and no seed picked to pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.linalg

import sghmc_jax

# A |z| above this for any of a test's moments fails it. With a few dozen moments per test and
# ~20 tests, the chance of a false failure from N(0, 1) z-scores is ~1e-4 per full run.
Z_MAX = 5.0


def correlated_2d() -> np.ndarray:
    """Precision matrix of a 2-D Gaussian with correlation 0.9 and unequal scales."""
    cov = np.array([[1.0, 0.9 * 0.5], [0.9 * 0.5, 0.25]])
    return np.linalg.inv(cov)


def ill_conditioned(dim: int = 10, condition: float = 100.0, seed: int = 0) -> np.ndarray:
    """Precision matrix with eigenvalues log-spaced over `condition`, in a random rotation."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    eig = np.logspace(-0.5 * np.log10(condition), 0.5 * np.log10(condition), dim)
    return (q * eig) @ q.T


@dataclasses.dataclass(frozen=True)
class Hyper:
    lr: float
    alpha: float
    sigma: float
    temperature: float
    beta: float = 0.0
    grad_noise_var: float = 0.0  # variance b of injected gradient noise, B = b·I


def transition(precision: np.ndarray, h: Hyper) -> tuple[np.ndarray, np.ndarray]:
    """DESIGN.md's F and noise covariance Q of one SGHMC step on log p = −½ θᵀAθ."""
    d = precision.shape[0]
    eye = np.eye(d)
    e, s2 = h.lr, h.sigma**2
    a = 1.0 - e * h.alpha / s2
    f = np.block([[eye - (e * e / s2) * precision, (e * a / s2) * eye], [-e * precision, a * eye]])
    g = np.vstack([(e / s2) * eye, eye])
    q = e * h.temperature * (2 * h.alpha - e * h.beta * h.temperature)
    noise = q * g @ g.T + e * e * h.grad_noise_var * g @ g.T
    return f, noise


def stationary_covariance(precision: np.ndarray, h: Hyper) -> np.ndarray:
    f, noise = transition(precision, h)
    radius = max(abs(np.linalg.eigvals(f)))
    assert radius < 1.0, f"unstable test setup: spectral radius {radius} for {h}"
    return scipy.linalg.solve_discrete_lyapunov(f, noise)


def continuous_limit_covariance(precision: np.ndarray, h: Hyper) -> np.ndarray:
    """The ε → 0 answer: θ ~ N(0, T A⁻¹), m ~ N(0, σ²T I), independent."""
    d = precision.shape[0]
    return np.block(
        [
            [h.temperature * np.linalg.inv(precision), np.zeros((d, d))],
            [np.zeros((d, d)), h.sigma**2 * h.temperature * np.eye(d)],
        ]
    )


@dataclasses.dataclass
class MomentEstimate:
    mean: np.ndarray  # (2d,) estimate of E z
    mean_se: np.ndarray
    cov: np.ndarray  # (2d, 2d) estimate of E z zᵀ
    cov_se: np.ndarray

    def z_scores(self, exact_cov: np.ndarray) -> np.ndarray:
        """|z| of the mean (exact 0) and of the upper triangle of E z zᵀ."""
        iu = np.triu_indices(exact_cov.shape[0])
        zc = (self.cov - exact_cov)[iu] / self.cov_se[iu]
        zm = self.mean / self.mean_se
        return np.abs(np.concatenate([zm, zc]))


def _chain_runner(dim: int, num_steps: int, dtype) -> Callable:
    """A jitted function running vmapped chains of the optax face on a Gaussian target.

    Hyperparameters are traced arguments, so a sweep compiles once per (dim, steps, dtype).
    """

    def one_chain(key, z0, precision, lr, alpha, beta, sigma, temperature, gn_std):
        theta0, m0 = z0[:dim].astype(dtype), z0[dim:].astype(dtype)
        init_key, run_key = jax.random.split(key)
        tx = sghmc_jax.sghmc(lr, alpha, beta, sigma, temperature, momenta=m0, key=init_key)
        state = tx.init(theta0)

        def step(carry, key):
            theta, state, acc, acc_mean = carry
            k_update, k_grad = jax.random.split(key)
            loss_grad = (precision @ theta.astype(precision.dtype)).astype(dtype)
            loss_grad = loss_grad + gn_std * jax.random.normal(k_grad, (dim,), dtype)
            updates, state = tx.update(loss_grad, state, theta, key=k_update)
            theta = optax.apply_updates(theta, updates)
            z = jnp.concatenate([theta, state.momenta]).astype(precision.dtype)
            return (theta, state, acc + jnp.outer(z, z), acc_mean + z), None

        zero = jnp.zeros((2 * dim, 2 * dim), precision.dtype)
        carry = (theta0, state, zero, jnp.zeros(2 * dim, precision.dtype))
        (_, _, acc, acc_mean), _ = jax.lax.scan(step, carry, jax.random.split(run_key, num_steps))
        return acc / num_steps, acc_mean / num_steps

    return jax.jit(jax.vmap(one_chain, in_axes=(0, 0) + (None,) * 7))


_RUNNERS: dict = {}


def estimate_moments(
    precision: np.ndarray,
    h: Hyper,
    *,
    seed: int,
    num_chains: int = 1000,
    num_steps: int = 1000,
    dtype=jnp.float64,
) -> tuple[MomentEstimate, np.ndarray]:
    """Runs `num_chains` chains from the exact stationary law; returns estimates and exact Σ."""
    dim = precision.shape[0]
    exact = stationary_covariance(precision, h)
    rng = np.random.default_rng(seed)
    z0 = rng.multivariate_normal(np.zeros(2 * dim), exact, size=num_chains)
    keys = jax.random.split(jax.random.key(seed), num_chains)
    runner_key = (dim, num_steps, jnp.dtype(dtype).name)
    if runner_key not in _RUNNERS:
        _RUNNERS[runner_key] = _chain_runner(dim, num_steps, dtype)
    cov, mean = _RUNNERS[runner_key](
        keys,
        jnp.asarray(z0, jnp.float64),
        jnp.asarray(precision, jnp.float64),
        h.lr,
        h.alpha,
        h.beta,
        h.sigma,
        h.temperature,
        np.sqrt(h.grad_noise_var),
    )
    cov, mean = np.asarray(cov), np.asarray(mean)
    est = MomentEstimate(
        mean=mean.mean(0),
        mean_se=mean.std(0, ddof=1) / np.sqrt(num_chains),
        cov=cov.mean(0),
        cov_se=cov.std(0, ddof=1) / np.sqrt(num_chains),
    )
    return est, exact
