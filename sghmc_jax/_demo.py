"""The demo behind `python -m sghmc_jax`: SGHMC on Bayesian linear regression, whose exact posterior
is known in closed form, with minibatches and several chains; it prints the sampled posterior
next to the exact one and writes a plot of the marginals when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sghmc_jax import diagnostics
from sghmc_jax.transforms import sghmc

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Problem:
    """Bayesian linear regression y = Xw + N(0, s²), prior w ~ N(0, τ² I), exact posterior."""

    x: np.ndarray
    y: np.ndarray
    noise_std: float
    prior_std: float
    post_mean: np.ndarray
    post_cov: np.ndarray


def make_problem(seed: int, num_data: int = 1000, dim: int = 5) -> Problem:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_data, dim))
    w_true = rng.normal(size=dim)
    noise_std, prior_std = 1.0, 3.0
    y = x @ w_true + noise_std * rng.normal(size=num_data)
    precision = x.T @ x / noise_std**2 + np.eye(dim) / prior_std**2
    post_cov = np.linalg.inv(precision)
    post_mean = post_cov @ (x.T @ y) / noise_std**2
    return Problem(x, y, noise_std, prior_std, post_mean, post_cov)


def run(
    *,
    num_steps: int = 20_000,
    num_chains: int = 4,
    seed: int = 0,
    batch_size: int = 100,
    thin: int = 5,
) -> dict:
    """Runs the demo's chains and returns the samples, diagnostics and timings."""
    problem = make_problem(seed)
    n, dim = problem.x.shape
    if n % batch_size:
        raise ValueError(f"`batch_size` must divide the {n} data points, got batch_size={batch_size}")
    batches_per_epoch = n // batch_size
    num_epochs = math.ceil(num_steps / batches_per_epoch)
    num_steps = num_epochs * batches_per_epoch
    burn_in = num_steps // 10

    # Step size from the posterior's stiffest direction (ε·sqrt(λ_max)/σ = 0.1) and friction
    # near critical damping. β = 0: each chain walks a fresh permutation of the data every epoch,
    # so the minibatch gradient errors within an epoch sum to zero and largely cancel over the
    # ~10-step memory of the dynamics; an i.i.d.-batch estimate of their variance used as β
    # (about 8.7e3 here) would remove noise that is not there and shrink the posterior sd by ~10%.
    lam_max = float(np.linalg.eigvalsh(np.linalg.inv(problem.post_cov)).max())
    lr = 0.1 / math.sqrt(lam_max)
    alpha = 2.0 * math.sqrt(lam_max)
    beta = 0.0
    x, y = jnp.asarray(problem.x, jnp.float32), jnp.asarray(problem.y, jnp.float32)

    def loss(w: jax.Array, xb: jax.Array, yb: jax.Array) -> jax.Array:
        """−log posterior, with the likelihood of the batch scaled up to the N data points."""
        log_lik = -0.5 * jnp.sum((yb - xb @ w) ** 2) / problem.noise_std**2
        log_prior = -0.5 * jnp.sum(w**2) / problem.prior_std**2
        return -(n / xb.shape[0] * log_lik + log_prior)

    def chain(key: jax.Array) -> jax.Array:
        init_key, tx_key, noise_key, data_key = jax.random.split(key, 4)
        tx = sghmc(lr, alpha=alpha, beta=beta, key=tx_key)
        w = jax.random.normal(init_key, (dim,))  # over-dispersed start, for R-hat
        state = tx.init(w)

        def epoch(carry, epoch_index):
            perm = jax.random.permutation(jax.random.fold_in(data_key, epoch_index), n)
            xb = x[perm].reshape(batches_per_epoch, batch_size, dim)
            yb = y[perm].reshape(batches_per_epoch, batch_size)
            steps = epoch_index * batches_per_epoch + jnp.arange(batches_per_epoch)

            def step(carry, inputs):
                w, state = carry
                xi, yi, t = inputs
                grads = jax.grad(loss)(w, xi, yi)
                updates, state = tx.update(grads, state, w, key=jax.random.fold_in(noise_key, t))
                w = optax.apply_updates(w, updates)
                return (w, state), w

            return jax.lax.scan(step, carry, (xb, yb, steps))

        _, trace = jax.lax.scan(epoch, (w, state), jnp.arange(num_epochs))
        return trace.reshape(num_steps, dim)

    run_chains = jax.jit(jax.vmap(chain))
    keys = jax.random.split(jax.random.key(seed), num_chains)
    t0 = time.perf_counter()
    compiled = run_chains.lower(keys).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    trace = jax.block_until_ready(compiled(keys))
    wall_s = time.perf_counter() - t0
    samples = np.asarray(trace[:, burn_in::thin])
    finite = np.isfinite(samples).all(axis=(1, 2))
    if not finite.all():
        raise FloatingPointError(f"chains {np.flatnonzero(~finite).tolist()} diverged")
    summary = diagnostics.summary(samples)["x"]
    return {
        "problem": problem,
        "samples": samples,
        "summary": summary,
        "hyper": {"lr": lr, "alpha": alpha, "beta": beta, "batch_size": batch_size},
        "num_steps": num_steps,
        "num_chains": num_chains,
        "burn_in": burn_in,
        "thin": thin,
        "compile_s": compile_s,
        "wall_s": wall_s,
        "steps_per_s": num_steps * num_chains / wall_s,
    }


def report(result: dict) -> str:
    p, s = result["problem"], result["summary"]
    exact_sd = np.sqrt(np.diag(p.post_cov))
    draws = result["samples"]
    # Standard error of the sd estimate via the delta method on E[(w − mean)²], with ESS.
    sd_se = s["sd"] / np.sqrt(2.0 * s["ess_bulk"])
    h = result["hyper"]
    lines = [
        "SGHMC on Bayesian linear regression (exact Gaussian posterior known in closed form)",
        f"data: N={p.x.shape[0]}, d={p.x.shape[1]}; minibatch {h['batch_size']}; "
        f"lr={h['lr']:.3g} alpha={h['alpha']:.3g} beta={h['beta']:.3g}",
        f"{result['num_chains']} chains x {result['num_steps']} steps, burn-in {result['burn_in']}, "
        f"thin {result['thin']}: {draws.shape[1]} draws per chain",
        "",
        f"{'coef':>4} {'exact mean':>11} {'SGHMC mean':>11} {'MCSE':>8} {'z':>6}"
        f" {'exact sd':>9} {'SGHMC sd':>9} {'z(sd)':>6} {'R-hat':>6} {'ESS bulk':>9} {'ESS tail':>9}",
    ]
    for i in range(p.x.shape[1]):
        z_mean = (s["mean"][i] - p.post_mean[i]) / s["mcse_mean"][i]
        z_sd = (s["sd"][i] - exact_sd[i]) / sd_se[i]
        lines.append(
            f"{i:>4} {p.post_mean[i]:>11.5f} {s['mean'][i]:>11.5f} {s['mcse_mean'][i]:>8.5f}"
            f" {z_mean:>6.2f} {exact_sd[i]:>9.5f} {s['sd'][i]:>9.5f} {z_sd:>6.2f}"
            f" {s['rhat'][i]:>6.3f} {s['ess_bulk'][i]:>9.0f} {s['ess_tail'][i]:>9.0f}"
        )
    lines += [
        "",
        f"compile {result['compile_s']:.2f} s; run {result['wall_s']:.2f} s; "
        f"{result['steps_per_s']:,.0f} chain-steps/s",
    ]
    return "\n".join(lines)


def plot(result: dict, path: str) -> bool:
    """Writes the marginal histograms against the exact densities; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    p, draws = result["problem"], result["samples"]
    dim = p.x.shape[1]
    fig, axes = plt.subplots(1, dim, figsize=(3 * dim, 2.8))
    for i, ax in enumerate(np.atleast_1d(axes)):
        mu, sd = p.post_mean[i], math.sqrt(p.post_cov[i, i])
        grid = np.linspace(mu - 4 * sd, mu + 4 * sd, 200)
        ax.hist(draws[..., i].ravel(), bins=50, density=True, alpha=0.5, label="SGHMC")
        ax.plot(grid, np.exp(-0.5 * ((grid - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi)), "k", label="exact")
        ax.set_title(f"w[{i}]")
        ax.set_yticks([])
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle("SGHMC marginals vs the exact posterior (Bayesian linear regression)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sghmc_jax",
        description="SGHMC on Bayesian linear regression with a closed-form posterior: "
        "several minibatch chains, compared with the exact posterior.",
    )
    parser.add_argument("--steps", type=int, default=20_000, help="steps per chain (default 20000)")
    parser.add_argument("--chains", type=int, default=4, help="number of chains (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the chains (default 0)")
    parser.add_argument("--batch-size", type=int, default=100, help="minibatch size (default 100)")
    parser.add_argument("--output", default="sghmc_demo.png", help="PNG of the marginals (default sghmc_demo.png)")
    parser.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    args = parser.parse_args(argv)
    if args.steps < 100:
        parser.error(f"--steps must be >= 100, got {args.steps}")
    if args.chains < 2:
        parser.error(f"--chains must be >= 2 (R-hat compares chains), got {args.chains}")
    result = run(num_steps=args.steps, num_chains=args.chains, seed=args.seed, batch_size=args.batch_size)
    print(report(result))
    if not args.no_plot:
        if plot(result, args.output):
            print(f"wrote {args.output}")
        else:
            print("matplotlib is not installed: no plot (pip install 'sghmc_jax[examples]')")
    return 0
