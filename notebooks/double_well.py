# %% [markdown]
# # SGHMC on a double well, against the exact density
#
# A bimodal 1-D target p(θ) ∝ exp(−h (θ² − 1)²) with barrier height h = 2: the chain must cross
# the barrier to get the mode weights right. Its moments are known by quadrature, so the sampled
# E[θ²], E[θ⁴] and P(θ > 0) can be checked against exact values within Monte Carlo standard
# errors. Run as a script (`python notebooks/double_well.py`) or open it in Jupyter with
# jupytext (percent format). It writes `double_well.png` next to where it is run.

# %%
import jax
import jax.numpy as jnp
import numpy as np

import sghmc_jax

HEIGHT = 2.0


def log_posterior(theta, batch):
    return -HEIGHT * jnp.sum((theta**2 - 1.0) ** 2), None


grid = np.linspace(-3, 3, 20_001)
density = np.exp(-HEIGHT * (grid**2 - 1) ** 2)
density /= np.trapezoid(density, grid)
exact = {
    "E[θ²]": np.trapezoid(grid**2 * density, grid),
    "E[θ⁴]": np.trapezoid(grid**4 * density, grid),
    "P(θ>0)": 0.5,
}

# %%
result = sghmc_jax.sample(
    jax.random.key(0),
    log_posterior,
    jnp.zeros(1),
    transform=lambda key: sghmc_jax.sghmc(0.05, alpha=1.0, key=key),
    num_steps=40_000,
    num_chains=8,
    burn_in=2_000,
    thin=4,
    progress=False,
)
theta = result.samples[..., 0]  # (chain, draw)

# %%
rows = []
for name, f in [("E[θ²]", theta**2), ("E[θ⁴]", theta**4), ("P(θ>0)", (theta > 0).astype(float))]:
    est = float(f.mean())
    se = float(sghmc_jax.diagnostics.mcse_mean(jnp.asarray(f)))
    rows.append((name, exact[name], est, se, (est - exact[name]) / se))
print(f"{'quantity':>8} {'exact':>8} {'SGHMC':>8} {'MCSE':>7} {'z':>6}")
for name, ex, est, se, z in rows:
    print(f"{name:>8} {ex:8.4f} {est:8.4f} {se:7.4f} {z:6.2f}")
print(f"R-hat {float(sghmc_jax.diagnostics.rhat(jnp.asarray(theta))):.3f}, "
      f"ESS bulk {float(sghmc_jax.diagnostics.ess_bulk(jnp.asarray(theta))):.0f}")

# %%
try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(theta.ravel(), bins=120, density=True, alpha=0.5, label="SGHMC, 8 chains")
    ax.plot(grid, density, "k", label="exact")
    ax.set_xlim(-2.2, 2.2)
    ax.set_xlabel("θ")
    ax.legend()
    fig.tight_layout()
    fig.savefig("double_well.png", dpi=100)
except ImportError:
    print("matplotlib not installed: no plot")
