"""The demo behind `python -m sghmc_jax`: SGHMC on Bayesian linear regression, whose exact posterior
is known in closed form, with minibatches and several chains; it prints the sampled posterior
next to the exact one and writes a plot of the marginals when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sghmc_jax.log_posterior import make_log_posterior
from sghmc_jax.sampler import sample
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
    data = {"x": problem.x.astype(np.float32), "y": problem.y.astype(np.float32)}

    def log_likelihood(w: jax.Array, batch: dict) -> jax.Array:
        return -0.5 * (batch["y"] - batch["x"] @ w) ** 2 / problem.noise_std**2

    def log_prior(w: jax.Array) -> jax.Array:
        return -0.5 * jnp.sum(w**2) / problem.prior_std**2

    log_posterior = make_log_posterior(log_likelihood, log_prior, n)
    keys = jax.random.split(jax.random.key(seed))
    # Over-dispersed starts (N(0, 1) around the origin, ~30 posterior sds away) give R-hat power.
    init = jax.random.normal(keys[0], (num_chains, dim))
    result = sample(
        keys[1],
        log_posterior,
        init,
        stacked_init=True,
        transform=lambda key: sghmc(lr, alpha=alpha, beta=beta, temperature=log_posterior.temperature, key=key),
        num_steps=num_steps,
        num_chains=num_chains,
        data=data,
        batch_size=batch_size,
        burn_in=burn_in,
        thin=thin,
        progress=False,
    )
    samples = np.asarray(result.samples)
    summary = result.summary()["params"]
    return {
        "problem": problem,
        "samples": samples,
        "summary": summary,
        "hyper": {"lr": lr, "alpha": alpha, "beta": beta, "batch_size": batch_size},
        "num_steps": num_steps,
        "num_chains": num_chains,
        "burn_in": burn_in,
        "thin": thin,
        "compile_s": result.compile_time,
        "wall_s": result.wall_time,
        "steps_per_s": result.steps_per_second * num_chains,
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
