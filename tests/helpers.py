"""Shared targets and statistics for the tests: Gaussian targets, their exact discrete stationary
moments under each linear sampler (a Lyapunov solution), and a many-chain moment estimator with
Monte Carlo standard errors.

The stationary test's method: for log p = −½ θᵀAθ one SGHMC step is the linear AR(1) map
z' = F z + G (√q ξ + ε ζ) on z = (θ, m) (DESIGN.md), whose exact stationary covariance Σ solves
Σ = F Σ Fᵀ + Q. Each of C independent chains starts from an exact draw of N(0, Σ) and runs N
steps; its time average of z zᵀ is one unbiased estimate of Σ if (and only if, for long enough
runs) the implementation is exact. The C per-chain estimates are i.i.d., so their standard error
is the cross-chain standard deviation over √C: the tolerance is a Monte Carlo standard error with
no autocorrelation modelling and no seed picked to pass.

The same method serves every sampler that is linear on a Gaussian target (SGLD, BAOA, and the
preconditioned ones with a frozen preconditioner): a `Scheme` says how to build its optax face
and which part of its state joins θ in z; the `*_transition` functions derive its (F, Q) by hand,
independently of the code under test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.linalg

import sghmc_jax
from sghmc_jax.sgmcmc import _common as sgmcmc_common

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


@dataclasses.dataclass(frozen=True)
class Scheme:
    """How to run one sampler's optax face as the linear chain z = (θ, extra) on a Gaussian.

    `make(hyper, extra0, key)` builds the transform from a dict of (traced) hyperparameters,
    the initial extra state (the momenta; an empty array when z = θ) and a key; `extra(state)`
    reads the extra part of z from the transform state (None when z = θ).
    """

    name: str
    make: Callable
    extra: Callable | None = None


SGHMC = Scheme(
    "sghmc",
    lambda h, m0, key: sghmc_jax.sghmc(
        h["lr"], h["alpha"], h["beta"], h["sigma"], h["temperature"], momenta=m0, key=key
    ),
    lambda state: state.momenta,
)


SGLD = Scheme(
    "sgld", lambda h, _, key: sghmc_jax.sgld(h["lr"], h["beta"], h["temperature"], key=key)
)
BAOA = Scheme(
    "baoa",
    lambda h, m0, key: sghmc_jax.baoa(
        h["lr"], h["alpha"], h["sigma"], h["temperature"], momenta=m0, key=key
    ),
    lambda state: state.momenta,
)
UBU = Scheme(
    "ubu",
    lambda h, m0, key: sghmc_jax.ubu(
        h["lr"], h["alpha"], h["sigma"], h["temperature"], momenta=m0, key=key
    ),
    lambda state: state.momenta,
)
# The preconditioned samplers with a FROZEN preconditioner (decay = 1 keeps V = h["v"]).
PSGLD_FROZEN = Scheme(
    "psgld_frozen",
    lambda h, _, key: sghmc_jax.psgld(
        h["lr"], decay=1.0, eps=h["eps"], temperature=h["temperature"], initial_scale=h["v"],
        key=key,
    ),
)
PSGHMC_FROZEN = Scheme(
    "psghmc_frozen",
    lambda h, m0, key: sghmc_jax.psghmc(
        h["lr"], h["alpha"], h["sigma"], h["temperature"], momenta=m0, decay=1.0, eps=h["eps"],
        initial_scale=h["v"], key=key,
    ),
    lambda state: state.momenta,
)


def check_stationary(scheme: Scheme, precision, hyper: dict, f, q, *, seed: int, **kw):
    """Asserts max |z| < Z_MAX against the exact Lyapunov covariance; returns (est, exact, z)."""
    exact = lyapunov(f, q)
    est = run_stationary(scheme, precision, hyper, exact, seed=seed, **kw)
    z = est.z_scores(exact)
    print(f"[stationary] {scheme.name} seed={seed} max|z|={z.max():.2f}")
    assert z.max() < Z_MAX, (
        f"{scheme.name} seed={seed} {hyper} {kw}: max |z| = {z.max():.2f} against the exact "
        f"discrete stationary covariance\nestimate=\n{est.cov}\nexact=\n{exact}"
    )
    return est, exact, z


def assert_faces_bit_identical(
    tx, transform, log_posterior, params, batch, *, num_steps: int = 30, fields=(), seed: int = 0
):
    """The optax face `tx` (built with key=seed) and the functional `transform` take identical
    steps from the same keys, bit for bit: params, log posterior and each state field in `fields`.

    What is compared is the library's update, so both sides get the SAME gradient program: the
    functional faces' own `loss_gradient`, with the batch a traced argument. Closing over the
    data instead makes it a compile-time constant, and XLA may then fold data-only
    subexpressions of the user's gradient on the host, or fuse them differently (an FMA
    contraction on GPU), so the two gradients, not the updates, can differ in the last bit.
    """
    init_key = jax.random.key(seed)
    step_keys = jax.random.split(jax.random.key(seed + 1), num_steps)
    # The optax face draws its initial momenta from the first half of its split key.
    state = transform.init(params, key=jax.random.split(init_key)[0])

    @jax.jit
    def optax_step(p, s, k, batch):
        value, _, grads = sgmcmc_common.loss_gradient(log_posterior, p, batch)
        updates, s = tx.update(grads, s, p, key=k)
        return optax.apply_updates(p, updates), s, value

    p, s = params, tx.init(params)
    for field in fields:
        chex.assert_trees_all_equal(getattr(s, field), getattr(state, field))
    for k in step_keys:
        state = transform.update(state, batch, key=k)
        p, s, value = optax_step(p, s, k, batch)
        chex.assert_trees_all_equal(p, state.params)
        chex.assert_trees_all_equal(value, state.log_posterior)
        for field in fields:
            chex.assert_trees_all_equal(getattr(s, field), getattr(state, field))
    assert int(state.step) == int(s.step) == num_steps
    return state


def _chain_runner(scheme: Scheme, dim: int, num_steps: int, dtype) -> Callable:
    """A jitted function running vmapped chains of an optax face on a Gaussian target.

    Hyperparameters are traced arguments, so a sweep compiles once per (scheme, dim, steps,
    dtype).
    """

    def one_chain(key, z0, precision, hyper, gn_std):
        theta0, extra0 = z0[:dim].astype(dtype), z0[dim:].astype(dtype)
        init_key, run_key = jax.random.split(key)
        tx = scheme.make(hyper, extra0, init_key)
        state = tx.init(theta0)
        size = z0.shape[0]

        def step(carry, key):
            theta, state, acc, acc_mean = carry
            k_update, k_grad = jax.random.split(key)
            loss_grad = (precision @ theta.astype(precision.dtype)).astype(dtype)
            loss_grad = loss_grad + gn_std * jax.random.normal(k_grad, (dim,), dtype)
            updates, state = tx.update(loss_grad, state, theta, key=k_update)
            theta = optax.apply_updates(theta, updates)
            parts = [theta] if scheme.extra is None else [theta, scheme.extra(state)]
            z = jnp.concatenate(parts).astype(precision.dtype)
            return (theta, state, acc + jnp.outer(z, z), acc_mean + z), None

        zero = jnp.zeros((size, size), precision.dtype)
        carry = (theta0, state, zero, jnp.zeros(size, precision.dtype))
        (_, _, acc, acc_mean), _ = jax.lax.scan(step, carry, jax.random.split(run_key, num_steps))
        return acc / num_steps, acc_mean / num_steps

    return jax.jit(jax.vmap(one_chain, in_axes=(0, 0, None, None, None)))


_RUNNERS: dict = {}


def run_stationary(
    scheme: Scheme,
    precision: np.ndarray,
    hyper: dict,
    exact: np.ndarray,
    *,
    seed: int,
    num_chains: int = 1000,
    num_steps: int = 1000,
    dtype=jnp.float64,
    grad_noise_var: float = 0.0,
) -> MomentEstimate:
    """Runs `num_chains` chains of `scheme` from N(0, exact); returns the moment estimates."""
    dim = precision.shape[0]
    rng = np.random.default_rng(seed)
    z0 = rng.multivariate_normal(np.zeros(exact.shape[0]), exact, size=num_chains)
    keys = jax.random.split(jax.random.key(seed), num_chains)
    runner_key = (scheme.name, dim, num_steps, jnp.dtype(dtype).name)
    if runner_key not in _RUNNERS:
        _RUNNERS[runner_key] = _chain_runner(scheme, dim, num_steps, dtype)
    hyper = {k: jnp.asarray(v, jnp.float64) for k, v in hyper.items()}
    cov, mean = _RUNNERS[runner_key](
        keys,
        jnp.asarray(z0, jnp.float64),
        jnp.asarray(precision, jnp.float64),
        hyper,
        np.sqrt(grad_noise_var),
    )
    cov, mean = np.asarray(cov), np.asarray(mean)
    return MomentEstimate(
        mean=mean.mean(0),
        mean_se=mean.std(0, ddof=1) / np.sqrt(num_chains),
        cov=cov.mean(0),
        cov_se=cov.std(0, ddof=1) / np.sqrt(num_chains),
    )


def estimate_moments(
    precision: np.ndarray,
    h: Hyper,
    *,
    seed: int,
    num_chains: int = 1000,
    num_steps: int = 1000,
    dtype=jnp.float64,
) -> tuple[MomentEstimate, np.ndarray]:
    """SGHMC's chains from the exact stationary law; returns estimates and exact Σ."""
    exact = stationary_covariance(precision, h)
    hyper = {
        "lr": h.lr, "alpha": h.alpha, "beta": h.beta, "sigma": h.sigma,
        "temperature": h.temperature,
    }
    est = run_stationary(
        SGHMC, precision, hyper, exact, seed=seed, num_chains=num_chains,
        num_steps=num_steps, dtype=dtype, grad_noise_var=h.grad_noise_var,
    )
    return est, exact


# Exact one-step laws z' = F z + noise, noise ~ N(0, Q), of the other linear samplers on
# log p = −½ θᵀAθ, with injected gradient noise of covariance b·I (the gradient is
# −Aθ + √b ζ). Each is derived from the sampler's rule as written in its docstring.


def lyapunov(f: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The stationary covariance Σ = F Σ Fᵀ + Q of a stable AR(1) map."""
    radius = max(abs(np.linalg.eigvals(f)))
    assert radius < 1.0, f"unstable test setup: spectral radius {radius}"
    return scipy.linalg.solve_discrete_lyapunov(f, q)


def sgld_transition(
    precision: np.ndarray, lr: float, temperature: float, beta: float = 0.0, grad_noise_var: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """θ' = θ + ε(−Aθ + √b ζ) + √(εT(2 − εβT)) ξ."""
    eye = np.eye(precision.shape[0])
    f = eye - lr * precision
    q = (lr * temperature * (2 - lr * beta * temperature) + lr**2 * grad_noise_var) * eye
    return f, q


def psgld_transition(
    precision: np.ndarray, lr: float, temperature: float, precond: np.ndarray,
    grad_noise_var: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Frozen diagonal G: θ' = θ + εG(−Aθ + √b ζ) + √(2εT G) ξ."""
    g = np.diag(precond)
    f = np.eye(precision.shape[0]) - lr * g @ precision
    q = 2 * lr * temperature * g + lr**2 * grad_noise_var * g @ g
    return f, q


def baoa_transition(
    precision: np.ndarray, lr: float, alpha: float, sigma: float, temperature: float,
    grad_noise_var: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """B (m += ε g), A (θ += ε m/(2σ²)), O (m = c m + s ξ), A, composed as affine maps."""
    d = precision.shape[0]
    eye, zero = np.eye(d), np.zeros((d, d))
    h = lr / (2 * sigma**2)
    c = np.exp(-alpha * lr / sigma**2)
    s2 = sigma**2 * temperature * (1 - c**2)
    kick = np.block([[eye, zero], [-lr * precision, eye]])
    drift = np.block([[eye, h * eye], [zero, eye]])
    friction = np.block([[eye, zero], [zero, c * eye]])
    on_m = np.vstack([zero, eye])  # noise that enters the momentum
    f = drift @ friction @ drift @ kick
    # Gradient noise enters at B and is carried through A, O, A; the O noise through the last A.
    g_grad = drift @ friction @ drift @ on_m * lr
    g_o = drift @ on_m
    q = grad_noise_var * g_grad @ g_grad.T + s2 * g_o @ g_o.T
    return f, q


def ou_covariance(tau: float, alpha: float, sigma: float, temperature: float) -> tuple[float, np.ndarray]:
    """The exact force-free flow over τ, from the Itô isometry: (drift, increment covariance).

    dθ = m/σ² dt, dm = −γm dt + √(2αT) dW, γ = α/σ², a = γτ: θ gains (1 − e^{−a})/γ · m/σ² and
    the increment (ξ_θ, ξ_m) has Var ξ_θ = T(2a − 4(1 − e^{−a}) + 1 − e^{−2a})/(σ²γ²),
    Cov = T(1 − e^{−a})²/γ, Var ξ_m = σ²T(1 − e^{−2a}) (closed forms: fine in float64 for the
    a ≳ 0.01 of the tests).
    """
    gamma = alpha / sigma**2
    a = gamma * tau
    var_theta = temperature * (2 * a - 4 * (1 - np.exp(-a)) + 1 - np.exp(-2 * a)) / (sigma**2 * gamma**2)
    cov = temperature * (1 - np.exp(-a)) ** 2 / gamma
    var_m = sigma**2 * temperature * (1 - np.exp(-2 * a))
    drift = (1 - np.exp(-a)) / (gamma * sigma**2)
    return drift, np.array([[var_theta, cov], [cov, var_m]])


def ubu_transition(
    precision: np.ndarray, lr: float, alpha: float, sigma: float, temperature: float,
    grad_noise_var: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """B (m += ε g) then the exact U(ε) (θ += drift·m, m = e^{−γε} m, plus the OU increment)."""
    d = precision.shape[0]
    eye, zero = np.eye(d), np.zeros((d, d))
    drift, cov = ou_covariance(lr, alpha, sigma, temperature)
    decay = np.exp(-alpha * lr / sigma**2)
    kick = np.block([[eye, zero], [-lr * precision, eye]])
    flow = np.block([[eye, drift * eye], [zero, decay * eye]])
    g_grad = flow @ np.vstack([zero, eye]) * lr
    f = flow @ kick
    q = grad_noise_var * g_grad @ g_grad.T + np.kron(cov, eye)
    return f, q


def psghmc_transition(
    precision: np.ndarray, lr: float, alpha: float, sigma: float, temperature: float,
    precond: np.ndarray, grad_noise_var: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Frozen S = diag(√G): m' = a m + εS(−Aθ + √b ζ) + √(2εαT) ξ; θ' = θ + (ε/σ²) S m'."""
    d = precision.shape[0]
    eye = np.eye(d)
    s = np.diag(np.sqrt(precond))
    e, s2 = lr, sigma**2
    a = 1.0 - e * alpha / s2
    f = np.block([[eye - (e * e / s2) * s @ s @ precision, (e * a / s2) * s], [-e * s @ precision, a * eye]])
    g = np.vstack([(e / s2) * s, eye])  # how a momentum impulse moves z
    q = 2 * e * alpha * temperature * g @ g.T + e * e * grad_noise_var * (g @ s) @ (g @ s).T
    return f, q


# ---- small problems shared by the face tests ----


def regression_problem(seed: int = 0, n: int = 200, d: int = 4):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    y = x @ jnp.arange(1.0, d + 1) + jnp.asarray(rng.normal(size=n), jnp.float32)

    def log_posterior(params, batch):
        xb, yb = batch
        resid = yb - xb @ params["w"] - params["b"]
        value = -0.5 * jnp.sum(resid**2) - 0.5 * jnp.sum(params["w"] ** 2)
        return value, {"rmse": jnp.sqrt(jnp.mean(resid**2))}

    params = {"w": jnp.zeros(d), "b": jnp.zeros(())}
    return log_posterior, params, (x, y)


def logistic_problem(seed: int = 0, n: int = 64, d: int = 5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x @ rng.normal(size=d) + rng.normal(size=n) > 0).astype(float)

    def loss(params):
        logits = x @ params["w"] + params["b"]
        return jnp.sum(jnp.logaddexp(0.0, logits) - y * logits) + 0.5 * jnp.sum(params["w"] ** 2)

    params = {"w": jnp.asarray(rng.normal(size=d)), "b": jnp.asarray(0.3)}
    return loss, params


def run_optax(tx, loss, params, num_steps, keys=None):
    """Runs `num_steps` updates in a jitted scan; per-step keys if given."""
    state = tx.init(params)

    def step(carry, key):
        params, state = carry
        grads = jax.grad(loss)(params)
        if key is None:
            updates, state = tx.update(grads, state, params)
        else:
            updates, state = tx.update(grads, state, params, key=key)
        return (optax.apply_updates(params, updates), state), params

    xs = keys if keys is not None else None
    (params, state), trace = jax.jit(
        lambda c: jax.lax.scan(step, c, xs, length=num_steps)
    )((params, state))
    return params, state, trace


# ---- frozen preconditioners (decay = 1 keeps V, so G = 1/(λ + √V) is fixed) ----


def frozen_preconditioner(hyper: dict) -> np.ndarray:
    """The diagonal G = 1/(eps + √V) of a frozen pSGLD/pSGHMC chain."""
    return 1 / (hyper["eps"] + np.sqrt(np.asarray(hyper["v"], np.float64)))


def frozen_hyper(precision: np.ndarray, *, sgld: bool) -> dict:
    """A frozen Jacobi preconditioner G = 1/diag(A) (V chosen to give it) and a large stable step."""
    eps, precond = 1e-3, 1 / np.diag(precision)
    v = (1 / precond - eps) ** 2
    if sgld:
        lr = float(1.5 / np.linalg.eigvals(np.diag(precond) @ precision).real.max())
        return {"lr": lr, "eps": eps, "temperature": 1.0, "v": v}
    s = np.diag(np.sqrt(precond))
    lr = float(0.7 / np.sqrt(np.linalg.eigvalsh(s @ precision @ s).max()))
    return {"lr": lr, "alpha": 1.0, "sigma": 1.0, "temperature": 1.0, "eps": eps, "v": v}


# ---- a non-Gaussian target with exact moments, and the bias of a sampler on it ----
#
# U(θ) = θ²/2 + θ⁴/4 at T = 1, E θ² by quadrature. As a finite sum of K = 4 "batches",
# U_b(θ) = θ⁴/(4K) + (θ − μ_b)²/(2K) with Σμ_b = 0, whose estimator K∇U_b = θ³ + θ − μ_b adds
# gradient noise of variance Var μ_b = 1.25 (a constant: the batches differ by a shift).

QUARTIC_MU = np.array([-1.5, -0.5, 0.5, 1.5])


def quartic_second_moment() -> float:
    x = np.linspace(-8.0, 8.0, 400_001)
    w = np.exp(-(x**2 / 2 + x**4 / 4))
    return float((w * x**2).sum() / w.sum())


def quartic_bias(
    make: Callable, lr: float, order: str, *, chains: int, cycles: int, burn: int = 50, seed: int = 0
) -> tuple[float, float]:
    """(bias, standard error) of the time-averaged θ² of `chains` chains on the quartic target.

    `make(lr, key)` builds the optax face. A cycle is 2K steps; `order` says which gradient each
    step uses: "full" (∇U), "iid" (a batch drawn uniformly with replacement each step),
    "shuffle" (a fresh permutation each epoch of K steps), "sms" (a permutation forward, then the
    same batches backward). Each chain's time average over `cycles` cycles after `burn` is one
    independent estimate, so the standard error is the cross-chain sd / √chains.
    """
    k = len(QUARTIC_MU)
    mu = jnp.asarray(QUARTIC_MU)
    exact = quartic_second_moment()

    def batches(key: jax.Array) -> jax.Array:
        perm = jax.random.permutation(key, k)
        if order == "sms":
            return jnp.concatenate([perm, perm[::-1]])
        if order == "shuffle":
            return jnp.concatenate([perm, jax.random.permutation(jax.random.fold_in(key, 1), k)])
        return jax.random.randint(key, (2 * k,), 0, k)

    def chain(key: jax.Array) -> jax.Array:
        k_init, k_noise, k_data = jax.random.split(key, 3)
        tx = make(lr, k_noise)
        theta = jax.random.normal(k_init, ()) * np.sqrt(exact)

        def cycle(carry, key):
            def step(carry, b):
                theta, state = carry
                g = theta**3 + theta - (0.0 if order == "full" else mu[b])
                updates, state = tx.update(g, state, theta)
                theta = theta + updates
                return (theta, state), theta**2

            carry, sq = jax.lax.scan(step, carry, batches(key))
            return carry, sq.mean()

        keys = jax.random.split(k_data, burn + cycles)
        carry, _ = jax.lax.scan(cycle, (theta, tx.init(theta)), keys[:burn])
        _, sq = jax.lax.scan(cycle, carry, keys[burn:])
        return sq.mean()

    with jax.enable_x64(True):
        estimates = np.asarray(jax.jit(jax.vmap(chain))(jax.random.split(jax.random.key(seed), chains)))
    assert np.all(np.isfinite(estimates)), f"{order} chains diverged at lr={lr}"
    return float(estimates.mean() - exact), float(estimates.std(ddof=1) / np.sqrt(chains))


# The same kind of target through `sample()` and its batch orders: 4 one-example batches
# U_b(θ) = θ⁴/4 + c_b θ²/2 − μ_b θ, whose mean is θ⁴/4 + θ²/2 (mean c = 1, mean μ = 0). With
# c_b = 1 the batches differ by a shift (the toy above); with `QUARTIC_CURVATURES` they differ in
# curvature too, so the gradient noise (c_b − 1)θ − μ_b changes with θ.

QUARTIC_CURVATURES = np.array([0.2, 1.8, 1.4, 0.6])


def sample_quartic_bias(
    make: Callable, lr: float, order: str, *, curvatures: np.ndarray | None = None,
    mu: np.ndarray = QUARTIC_MU, chains: int, steps: int, burn: int = 400, seed: int = 0,
) -> tuple[float, float]:
    """(bias, standard error) of the per-chain time average of θ² over `steps` steps after
    `burn`, run by `sample(..., batch_order=order, batch_size=1)` with the optax face
    `make(lr, key)` (float32 chains); `order="full"` runs the full gradient without data. `mu`
    (mean 0) sets the number of batches and their shifts. Each
    chain's average is one independent estimate: the standard error is their sd / √chains."""
    c = np.ones(len(mu)) if curvatures is None else np.asarray(curvatures, float)
    assert abs(c.mean() - 1) < 1e-12 and abs(np.mean(mu)) < 1e-12 and len(c) == len(mu), (c, mu)
    if order == "full":
        log_post = lambda th, _: (-(th**4 / 4 + th**2 / 2), None)  # noqa: E731
        kw = {}
    else:
        log_post = lambda th, b: (-(th**4 / 4 + b["c"][0] * th**2 / 2 - b["mu"][0] * th), None)  # noqa: E731
        data = {"mu": np.asarray(mu, np.float32), "c": c.astype(np.float32)}
        kw = {"data": data, "batch_size": 1, "batch_order": order}
    result = sghmc_jax.sample(
        seed, log_post, jnp.zeros((), jnp.float32), transform=lambda key: make(lr, key),
        num_steps=burn + steps, burn_in=burn, num_chains=chains, progress=False,
        chunk_size=min(burn + steps, 2000), on_divergence="continue", **kw,
    )
    draws = np.asarray(result.samples, np.float64)  # (chain, step)
    if not np.all(np.isfinite(draws)):
        raise FloatingPointError(f"{int(np.sum(result.diverged_at >= 0))} chains diverged at lr={lr}")
    estimates = np.mean(draws**2, axis=1)
    return float(estimates.mean() - quartic_second_moment()), float(estimates.std(ddof=1) / np.sqrt(chains))


def log_log_slope(lrs, biases, ses) -> tuple[float, float]:
    """Weighted least-squares slope of log|bias| on log lr, and its standard error (delta
    method: Var log|b| ≈ (se/b)²)."""
    x, y = np.log(lrs), np.log(np.abs(biases))
    w = (np.asarray(biases) / np.asarray(ses)) ** 2
    xm = np.sum(w * x) / np.sum(w)
    ym = np.sum(w * y) / np.sum(w)
    sxx = np.sum(w * (x - xm) ** 2)
    return float(np.sum(w * (x - xm) * (y - ym)) / sxx), float(1 / np.sqrt(sxx))


# ---- shared by the sampler wing's test files ---------------------------------------------------


def regression(seed=0, n=64, d=3):
    """A small Bayesian linear regression of `d` weights: (log_posterior, data as {"x", "y"})."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ np.arange(1.0, d + 1) + rng.normal(size=n)).astype(np.float32)
    data = {"x": x, "y": y}

    def log_posterior(w, batch):
        resid = batch["y"] - batch["x"] @ w
        return -0.5 * n / batch["y"].shape[0] * jnp.sum(resid**2) - 0.5 * jnp.sum(w**2), None

    return log_posterior, data


def interrupt_after(chunks):
    """A callback that raises KeyboardInterrupt after `chunks` chunks (a simulated kill)."""
    calls = {"n": 0}

    def callback(info):
        calls["n"] += 1
        if calls["n"] == chunks:
            raise KeyboardInterrupt("simulated kill")

    return callback
