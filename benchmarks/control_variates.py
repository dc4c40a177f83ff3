"""Control-variate gradients (Baker et al. 2019) against plain minibatch gradients, on Bayesian
logistic regression: scikit-learn's breast-cancer data (N = 569, 30 standardised features and an
intercept, a N(0, 1) prior on the 31 coefficients), with NUTS (BlackJAX) as the gold standard.

1. Gradient variance: the trace of the covariance of the minibatch gradient of the log posterior
   (sum form) over random batches drawn as `sample()` draws them (without replacement within a
   batch), plain and control variate, at batch sizes 4, 16 and 64: at the centre θ̂ and averaged
   over posterior draws (from NUTS). The measured traces are checked against the
   finite-population formula (N²/n)·(N − n)/(N − 1)·tr Cov_i[vᵢ] from the per-example gradients.
2. Posterior accuracy at equal gradient evaluations: the largest error over the 31 coefficients
   of the posterior mean, in NUTS sds, and of the sd (relative), for SGHMC and SGLD with plain and
   CV minibatch gradients. Budget: E epochs of per-example gradients per chain. A plain step costs
   n per-example gradients; a CV step 2n (the batch at θ and at θ̂); the CV set-up (finding θ̂
   with optax's L-BFGS on the full data, and the full-data gradient at θ̂) is charged to every CV
   chain in full, as if it ran alone. Plain chains start at 0; CV chains at θ̂. Each sampler has
   one set of hyperparameters, from the curvature at θ̂ alone, shared by plain, CV and every n.
   "floor" is 3 combined Monte Carlo standard errors (the sampler's and NUTS's; ESS-based): the
   size of the worst of 31 errors that chance alone explains. Each sampler's own discretisation
   bias (without gradient noise) is computed exactly on the Laplace approximation at θ̂: the
   stationary covariance of the linear chain, from its discrete Lyapunov equation.

    python benchmarks/control_variates.py           # a few minutes on 2 CPU cores
    python benchmarks/control_variates.py --quick   # smaller budget and NUTS run (a smoke test)
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

# Runnable from a plain checkout (no install): the repository root on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import scipy.linalg  # noqa: E402
from _common import lbfgs_mode  # noqa: E402

import sghmc_jax  # noqa: E402
from sghmc_jax.control_variates import centre  # noqa: E402

BATCH_SIZES = (4, 16, 64)


def log_likelihood(w, batch):  # one value per example
    z = batch["x"] @ w
    return batch["y"] * z - jnp.logaddexp(0.0, z)


def log_prior(w):  # N(0, 1) on every coefficient
    return -0.5 * jnp.sum(w**2)


def load_data() -> dict:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    x = np.hstack([np.ones((len(x), 1)), x]).astype(np.float32)
    return {"x": x, "y": y.astype(np.float32)}


def nuts_reference(data: dict, chains: int, warmup: int, draws: int, seed: int = 0):
    """BlackJAX NUTS with window adaptation (diagonal mass matrix), full data, vmapped chains."""
    import blackjax

    xj, yj = jnp.asarray(data["x"]), jnp.asarray(data["y"])

    def log_density(w):
        return jnp.sum(log_likelihood(w, {"x": xj, "y": yj})) + log_prior(w)

    def chain(key, w0):
        warm_key, sample_key = jax.random.split(key)
        adapt = blackjax.window_adaptation(blackjax.nuts, log_density, is_mass_matrix_diagonal=True)
        (state, params), _ = adapt.run(warm_key, w0, num_steps=warmup)
        step = blackjax.nuts(log_density, **params).step

        def one(state, k):
            state, info = step(k, state)
            return state, (state.position, info.num_integration_steps, info.is_divergent)

        return jax.lax.scan(one, state, jax.random.split(sample_key, draws))[1]

    keys = jax.random.split(jax.random.key(seed), chains)
    init = 0.5 * jax.random.normal(jax.random.key(seed + 1), (chains, data["x"].shape[1]))  # overdispersed
    samples, leapfrogs, divergent = jax.jit(jax.vmap(chain))(keys, init)
    return np.asarray(samples, np.float64), np.asarray(leapfrogs), int(np.sum(divergent))


def find_centre(data: dict, tol: float, max_iter: int = 200) -> tuple[jax.Array, int, int]:
    """θ̂ by optax's L-BFGS on the full-data loss (mean form), stopped when the largest entry of
    the sum-form gradient is below `tol`. Returns θ̂, the number of full-data value-and-gradient
    evaluations (counted as they run, line-search included) and the iterations."""
    xj, yj = jnp.asarray(data["x"]), jnp.asarray(data["y"])
    n_data = xj.shape[0]

    def loss(w):
        return -(jnp.mean(log_likelihood(w, {"x": xj, "y": yj})) + log_prior(w) / n_data)

    return lbfgs_mode(loss, jnp.zeros(xj.shape[1], jnp.float32), n_data, tol, max_iter)


def variance_table(data: dict, cv, plain, theta_hat: jax.Array, draws: np.ndarray, num_batches: int, seed: int):
    """Per batch size: the measured trace of the minibatch gradient's covariance (plain, CV) at θ̂
    and averaged over `draws`, and the ratio measured / finite-population formula (over draws)."""
    xj, yj = jnp.asarray(data["x"]), jnp.asarray(data["y"])
    n_data = xj.shape[0]
    one_example = lambda w, x, y: log_likelihood(w, {"x": x[None], "y": y[None]})[0]  # noqa: E731
    per_example = jax.vmap(jax.grad(one_example), in_axes=(None, 0, 0))
    thetas = jnp.asarray(draws, jnp.float32)
    rows = []
    for n in BATCH_SIZES:

        @jax.jit
        def traces(theta, key, n=n):
            def one_batch(k):
                idx = jax.random.choice(k, n_data, (n,), replace=False)
                batch = {"x": xj[idx], "y": yj[idx]}
                return tuple(jax.grad(lambda w, lp=lp: lp(w, batch)[0])(theta) for lp in (plain, cv))

            g_plain, g_cv = jax.vmap(one_batch)(jax.random.split(key, num_batches))
            tr = lambda g: jnp.sum(jnp.var(g, axis=0, ddof=1))  # noqa: E731
            v, v_hat = per_example(theta, xj, yj), per_example(theta_hat, xj, yj)
            factor = n_data**2 / n * (n_data - n) / (n_data - 1)
            exact = lambda u: factor * jnp.sum(jnp.var(u, axis=0))  # noqa: E731  (divisor N)
            return jnp.stack([tr(g_plain), tr(g_cv), exact(v), exact(v - v_hat)])

        keys = jax.random.split(jax.random.key(seed + n), len(thetas) + 1)
        at_hat = np.asarray(traces(theta_hat, keys[0]), np.float64)
        over = np.asarray(jax.lax.map(lambda a: traces(*a), (thetas, keys[1:])), np.float64)
        rows.append(dict(
            n=n, plain_hat=at_hat[0], cv_hat=at_hat[1], plain=over[:, 0].mean(), cv=over[:, 1].mean(),
            plain_check=over[:, 0].mean() / over[:, 2].mean(), cv_check=over[:, 1].mean() / over[:, 3].mean(),
        ))
    return rows


def sghmc_stationary(h: np.ndarray, lr: float, alpha: float) -> np.ndarray:
    """θ's stationary covariance of SGHMC (σ = T = 1, exact gradients) on log p = −½ θᵀHθ: the
    linear chain z' = Fz + Gξ of DESIGN.md, Σ = FΣFᵀ + q GGᵀ with q = 2·lr·alpha."""
    d = len(h)
    eye = np.eye(d)
    a = 1 - lr * alpha
    f = np.block([[eye - lr**2 * h, lr * a * eye], [-lr * h, a * eye]])
    g = np.vstack([lr * eye, eye])
    return scipy.linalg.solve_discrete_lyapunov(f, 2 * lr * alpha * g @ g.T)[:d, :d]


def sgld_stationary(h: np.ndarray, lr: float) -> np.ndarray:
    """SGLD's (T = 1, exact gradients): θ' = (I − lr·H)θ + sqrt(2 lr) ξ."""
    f = np.eye(len(h)) - lr * h
    return scipy.linalg.solve_discrete_lyapunov(f, 2 * lr * np.eye(len(h)))


def sd_mcse(draws: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """MCSE of the sd by the delta method on the ESS-based MCSE of the mean of (θ − mean)²."""
    return sghmc_jax.diagnostics.summary((draws - mean) ** 2)["params"]["mcse_mean"] / (2 * sd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller budget and NUTS run (a smoke test)")
    parser.add_argument("--epochs", type=int, default=None, help="gradient budget per chain in epochs (500)")
    args = parser.parse_args()
    epochs = args.epochs or (60 if args.quick else 500)
    chains, nuts_chains = 8, 4
    nuts_warmup, nuts_draws = (300, 300) if args.quick else (1000, 2000)
    num_batches = 500 if args.quick else 2000

    start = time.perf_counter()
    data = load_data()
    n_data, dim = data["x"].shape
    import blackjax

    print(f"{datetime.date.today()}, jax {jax.__version__}, optax {optax.__version__}, blackjax "
          f"{blackjax.__version__}, sghmc_jax {sghmc_jax.__version__}, {jax.devices()[0].platform} "
          f"({os.cpu_count()} cores); breast cancer: N = {n_data}, {dim} coefficients, float32")

    t0 = time.perf_counter()
    nuts_draws_arr, leapfrogs, divergent = nuts_reference(data, nuts_chains, nuts_warmup, nuts_draws)
    ref = sghmc_jax.diagnostics.summary(nuts_draws_arr)["params"]
    ref_mean, ref_sd = ref["mean"], ref["sd"]
    ref_sd_mcse = sd_mcse(nuts_draws_arr, ref_mean, ref_sd)
    print(f"\nNUTS: {nuts_chains} chains x ({nuts_warmup} warm-up + {nuts_draws} draws), {time.perf_counter() - t0:.0f} s "
          f"with compilation; mean leapfrog steps {leapfrogs.mean():.1f}; divergences {divergent}; max R-hat "
          f"{ref['rhat'].max():.4f}; min bulk ESS {ref['ess_bulk'].min():.0f}; max MCSE/sd "
          f"{np.max(ref['mcse_mean'] / ref_sd):.4f}")
    if not args.quick:
        assert ref["rhat"].max() < 1.01 and divergent == 0, "unreliable NUTS reference"
        assert np.max(ref["mcse_mean"] / ref_sd) < 0.03, "unreliable NUTS reference"

    # The CV set-up, charged to CV: L-BFGS to θ̂, then centre()'s full-data gradient there.
    t0 = time.perf_counter()
    theta_hat, lbfgs_evals, lbfgs_iters = find_centre(data, tol=0.1)
    cv = centre(log_likelihood, log_prior, data, theta_hat)
    setup_s = time.perf_counter() - t0
    setup_epochs = lbfgs_evals + 1
    plain = sghmc_jax.make_log_posterior(log_likelihood, log_prior, n_data)
    print(f"CV set-up: L-BFGS {lbfgs_iters} iterations, {lbfgs_evals} full-data gradients, + 1 at θ̂ = "
          f"{setup_epochs} epochs charged to CV ({setup_s:.1f} s with compilation); max |θ̂ − NUTS mean| / NUTS sd "
          f"= {np.max(np.abs(np.asarray(theta_hat) - ref_mean) / ref_sd):.3f}")

    # Hyperparameters from the curvature at θ̂ only (shared by plain, CV and every batch size).
    xj = jnp.asarray(data["x"])
    hessian = -jax.hessian(lambda w: jnp.sum(log_likelihood(w, {"x": xj, "y": jnp.asarray(data["y"])})) + log_prior(w))(theta_hat)
    lam = np.linalg.eigvalsh(np.asarray(hessian, np.float64))
    lr_hmc, alpha, lr_sgld = 0.5 / np.sqrt(lam[-1]), 10.0 * np.sqrt(lam[0]), 0.3 / lam[-1]

    h = np.asarray(hessian, np.float64)
    laplace_sd = np.sqrt(np.diag(np.linalg.inv(h)))
    bias = {name: np.max(np.sqrt(np.diag(cov)) / laplace_sd - 1)
            for name, cov in (("SGHMC", sghmc_stationary(h, lr_hmc, alpha)), ("SGLD", sgld_stationary(h, lr_sgld)))}

    # 1. Gradient variance.
    flat = nuts_draws_arr.reshape(-1, dim)
    picks = flat[np.random.default_rng(1).choice(len(flat), 16, replace=False)]
    print(f"\n1. Gradient variance: trace of the covariance of the minibatch gradient (sum form) over {num_batches} "
          f"random batches, at θ̂ and averaged over {len(picks)} NUTS draws; check = measured / finite-population formula")
    print("| n | plain at θ̂ | CV at θ̂ | plain, posterior draws | CV, posterior draws | plain / CV | check plain, CV |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in variance_table(data, cv, plain, theta_hat, picks, num_batches, seed=2):
        print(f"| {r['n']} | {r['plain_hat']:.4g} | {r['cv_hat']:.3g} | {r['plain']:.4g} | {r['cv']:.4g} | "
              f"{r['plain'] / r['cv']:.2f} | {r['plain_check']:.3f}, {r['cv_check']:.3f} |")

    # 2. Accuracy at equal gradient evaluations.
    print(f"\n2. Accuracy at equal gradient evaluations: {epochs} epochs of per-example gradients per chain, {chains} "
          f"chains; plain steps = {epochs}·N/n from 0; CV steps = ({epochs} − {setup_epochs})·N/(2n) from θ̂; burn-in "
          "20% of the steps; ~1000 draws kept per chain")
    print(f"   SGHMC lr = 0.5/sqrt(lambda_max) = {lr_hmc:.4f}, alpha = 10 sqrt(lambda_min) = {alpha:.2f} "
          f"(lr·alpha = {lr_hmc * alpha:.2f}); SGLD lr = 0.3/lambda_max = {lr_sgld:.5f}; curvature at θ̂ in "
          f"[{lam[0]:.2f}, {lam[-1]:.2f}]")
    print(f"   discretisation bias alone (exact, on the Laplace approximation): max sd/sd_Laplace − 1 = "
          f"{bias['SGHMC']:.4f} (SGHMC), {bias['SGLD']:.4f} (SGLD)")
    print("| sampler | gradient | n | steps | max abs(Δmean)/sd | floor | max abs(sd/sd_NUTS − 1) | floor | max R-hat | min ESS | wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    factories = {
        "SGHMC": lambda k: sghmc_jax.sghmc(lr_hmc, alpha=alpha, temperature=1.0, key=k),
        "SGLD": lambda k: sghmc_jax.sgld(lr_sgld, temperature=1.0, key=k),
    }
    seed = 10
    zeros = jnp.zeros(dim, jnp.float32)
    for sampler, factory in factories.items():
        configs = []
        for n in BATCH_SIZES:
            configs += [("plain", n, plain, zeros, epochs * n_data // n),
                        ("CV", n, cv, theta_hat, (epochs - setup_epochs) * n_data // (2 * n))]
        for kind, n, lp, init, steps in configs:
            seed += 1
            burn_in = steps // 5
            t0 = time.perf_counter()
            result = sghmc_jax.sample(
                jax.random.key(seed), lp, init, transform=factory, num_steps=steps, num_chains=chains,
                data=data, batch_size=n, burn_in=burn_in, thin=max(1, (steps - burn_in) // 1000),
                chunk_size=min(steps, 20_000), progress=False,
            )
            wall = time.perf_counter() - t0
            s = result.summary()["params"]
            draws = np.asarray(result.samples, np.float64)
            mean_err = np.max(np.abs(s["mean"] - ref_mean) / ref_sd)
            mean_floor = 3 * np.max(np.hypot(s["mcse_mean"], ref["mcse_mean"]) / ref_sd)
            sd_err = np.max(np.abs(s["sd"] / ref_sd - 1))
            sd_floor = 3 * np.max(np.hypot(sd_mcse(draws, s["mean"], s["sd"]), ref_sd_mcse * s["sd"] / ref_sd) / ref_sd)
            print(f"| {sampler} | {kind} | {n} | {steps} | {mean_err:.3f} | {mean_floor:.3f} | {sd_err:.3f} | "
                  f"{sd_floor:.3f} | {s['rhat'].max():.3f} | {s['ess_bulk'].min():.0f} | {wall:.1f} |", flush=True)
    print(f"\ntotal {time.perf_counter() - start:.0f} s (wall s: sampling with compilation, per run)")


if __name__ == "__main__":
    main()
