"""`sample()` end to end: exact agreement with a hand-written scan, burn-in/thinning, chunking,
continuation, chains; then statistics on a Gaussian and on conjugate linear regression. Each
concern of the wing has its own file: test_plan (arguments), test_batching, test_engine
(divergence, keep, predictive), test_cache, test_checkpoint, test_identity, test_store,
test_progress."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sghmc_jax
from tests import helpers
from tests.helpers import Z_MAX, Hyper


def _reference_scan(key, log_posterior, params, tx, num_steps, data=None, batch_size=None, chain=0, num_chains=1):
    """The documented semantics of one chain of `sample`, written out by hand."""
    chain_key = jax.random.split(sghmc_jax._checks.canonical_key(key), num_chains)[chain]
    _, noise_key, data_key = jax.random.split(chain_key, 3)
    state = tx.init(params)
    n = None if data is None else next(iter(jax.tree.leaves(data))).shape[0]

    def step(carry, t):
        params, state = carry
        batch = None
        if data is not None:
            per_epoch = n // batch_size
            perm = jax.random.permutation(jax.random.fold_in(data_key, t // per_epoch), n)
            idx = jax.lax.dynamic_slice_in_dim(perm, (t % per_epoch) * batch_size, batch_size)
            batch = jax.tree.map(lambda x: x[idx], data)
        neg = lambda p: -log_posterior(p, batch)[0]  # noqa: E731
        value, grads = jax.value_and_grad(neg)(params)
        updates, state = tx.update(grads, state, params, key=jax.random.fold_in(noise_key, t))
        params = optax.apply_updates(params, updates)
        return (params, state), (params, -value)

    _, (trace, lp) = jax.jit(lambda c: jax.lax.scan(step, c, jnp.arange(num_steps)))((params, state))
    return trace, lp


def test_one_chain_reproduces_a_hand_written_scan():
    log_posterior, data = helpers.regression()
    tx = sghmc_jax.sghmc(1e-3, alpha=1.0, key=5)
    params = jnp.zeros(3)
    result = sghmc_jax.sample(
        1, log_posterior, params, transform=tx, num_steps=50, num_chains=1, data=data,
        batch_size=16, chunk_size=20, progress=False,
    )
    trace, lp = _reference_scan(1, log_posterior, params, tx, 50, jax.tree.map(jnp.asarray, data), 16)
    np.testing.assert_array_equal(result.samples[0], trace)
    np.testing.assert_array_equal(result.log_posterior[0], lp)
    np.testing.assert_array_equal(result.sample_steps, np.arange(1, 51))


def test_burn_in_and_thinning_select_exactly_the_right_steps():
    log_posterior, data = helpers.regression(1)
    tx = sghmc_jax.sghmc(1e-3, alpha=1.0, key=0)
    full = sghmc_jax.sample(
        2, log_posterior, jnp.zeros(3), transform=tx, num_steps=103, num_chains=2, data=data,
        batch_size=8, chunk_size=7, progress=False,
    )
    part = sghmc_jax.sample(
        2, log_posterior, jnp.zeros(3), transform=tx, num_steps=103, num_chains=2, data=data,
        batch_size=8, burn_in=10, thin=3, chunk_size=7, progress=False,
    )
    expected_steps = np.arange(13, 104, 3)  # draws after steps 13, 16, ..., 103
    np.testing.assert_array_equal(part.sample_steps, expected_steps)
    np.testing.assert_array_equal(part.samples, full.samples[:, expected_steps - 1])
    np.testing.assert_array_equal(part.log_posterior, full.log_posterior)
    chex.assert_trees_all_equal(part.final_state.params, full.final_state.params)


def test_chunking_does_not_change_the_draws():
    log_posterior, data = helpers.regression(2)
    tx = sghmc_jax.sghmc(1e-3, alpha=1.0, key=0)
    runs = [
        sghmc_jax.sample(
            3, log_posterior, jnp.zeros(3), transform=tx, num_steps=60, num_chains=2, data=data,
            batch_size=8, thin=2, chunk_size=c, progress=False,
        ).samples
        for c in (4, 60)
    ]
    np.testing.assert_array_equal(runs[0], runs[1])


def test_continuing_from_final_state_equals_one_long_run():
    log_posterior, data = helpers.regression(3)
    tx = sghmc_jax.sghmc(1e-3, alpha=1.0, key=0)
    kw = dict(transform=tx, num_chains=2, data=data, batch_size=8, progress=False)
    long = sghmc_jax.sample(4, log_posterior, jnp.zeros(3), num_steps=40, **kw)
    first = sghmc_jax.sample(4, log_posterior, jnp.zeros(3), num_steps=25, **kw)
    second = sghmc_jax.sample(4, log_posterior, None, num_steps=15, init_state=first.final_state, **kw)
    np.testing.assert_array_equal(np.concatenate([first.samples, second.samples], axis=1), long.samples)
    np.testing.assert_array_equal(second.sample_steps, np.arange(26, 41))
    assert np.all(np.isfinite(np.asarray(first.final_state.params)))  # not donated away


def test_chains_differ_and_a_factory_gives_each_its_own_initial_momenta():
    lp = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    r = sghmc_jax.sample(0, lp, jnp.zeros(2), transform=sghmc_jax.sghmc(0.1, key=0), num_steps=5, num_chains=3, progress=False)
    assert len({tuple(np.asarray(r.samples[c, -1]).round(6)) for c in range(3)}) == 3
    f = sghmc_jax.sample(
        0, lp, jnp.zeros(2), transform=lambda k: sghmc_jax.sghmc(0.1, key=k), num_steps=1, num_chains=3, progress=False,
    )
    m = np.asarray(f.final_state.transform_state.momenta)
    assert len({tuple(row.round(6)) for row in m}) == 3
    plain = np.asarray(r.final_state.transform_state.momenta)
    assert plain.shape == (3, 2)


def test_stacked_init_starts_each_chain_where_told():
    lp = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    init = jnp.array([[10.0, 10.0], [-10.0, -10.0]])
    tx = sghmc_jax.sghmc(1e-3, temperature=0.0, momenta=0.0, key=0)
    r = sghmc_jax.sample(0, lp, init, transform=tx, num_steps=2, num_chains=2, stacked_init=True, progress=False)
    assert r.samples[0, 0, 0] > 9 and r.samples[1, 0, 0] < -9
    assert np.all(np.asarray(init) == [[10.0, 10.0], [-10.0, -10.0]])  # the caller's array survives


def test_make_log_posterior_forms():
    ll = lambda w, batch: -0.5 * (batch - w) ** 2  # noqa: E731
    prior = lambda w: -0.5 * w**2 / 4.0  # noqa: E731
    batch = jnp.array([0.5, 1.5, -1.0])
    lp_sum, t_sum = sghmc_jax.make_log_posterior(ll, prior, 300)
    lp_mean, t_mean = sghmc_jax.make_log_posterior(ll, prior, 300, form="mean")
    assert (t_sum, t_mean) == (1.0, 1 / 300)
    w = jnp.asarray(0.3)
    v_sum, aux = lp_sum(w, batch)
    np.testing.assert_allclose(v_sum, 300 * jnp.mean(ll(w, batch)) + prior(w), rtol=1e-6)
    np.testing.assert_allclose(lp_mean(w, batch)[0] / t_mean, v_sum, rtol=1e-5)
    np.testing.assert_allclose(aux, jnp.mean(ll(w, batch)))
    with pytest.raises(ValueError, match="`form` must be 'sum' or 'mean', got form='avg'"):
        sghmc_jax.make_log_posterior(ll, prior, 300, form="avg")
    with pytest.raises(ValueError, match="`num_data` must be an int >= 1, got num_data=0"):
        sghmc_jax.make_log_posterior(ll, prior, 0)


# ---- statistics ------------------------------------------------------------------------------


def _theta_z_scores(samples, exact_cov):
    """|z| of E θθᵀ per entry, each chain's time average being one i.i.d. estimate."""
    outer = np.einsum("cti,ctj->cij", samples, samples) / samples.shape[1]
    mean, se = outer.mean(0), outer.std(0, ddof=1) / np.sqrt(samples.shape[0])
    iu = np.triu_indices(exact_cov.shape[0])
    return np.abs((mean - exact_cov)[iu] / se[iu])


@pytest.mark.parametrize("minibatch", [False, True])
def test_gaussian_moments_match_the_exact_discrete_stationary_law(x64, minibatch):
    """Full batch, and i.i.d. host minibatches adding gradient noise of known variance b: the θ
    covariance of the draws is the Lyapunov solution's (with ε²·b·GGᵀ for the minibatch noise)."""
    a = helpers.correlated_2d()
    b = 2.0 if minibatch else 0.0
    h = Hyper(lr=0.25, alpha=1.0, sigma=1.0, temperature=1.0, grad_noise_var=b)
    exact = helpers.stationary_covariance(a, h)[:2, :2]
    chains, steps, seed = 64, 3000, 21
    init = np.random.default_rng(seed).multivariate_normal(np.zeros(2), exact, size=chains)
    batches = None
    if minibatch:
        # log p(θ, batch) = −½θᵀAθ + θᵀ·batch with batch ~ N(0, b·I) i.i.d.: gradient noise b·I.
        rng = np.random.default_rng(seed + 1)
        batches = (rng.normal(scale=np.sqrt(b), size=2) for _ in range(steps))
    lp = lambda p, batch: (-0.5 * p @ jnp.asarray(a) @ p + (0.0 if batch is None else p @ batch), None)  # noqa: E731
    r = sghmc_jax.sample(
        seed, lp, jnp.asarray(init), transform=sghmc_jax.sghmc(h.lr, h.alpha, 0.0, h.sigma, h.temperature, key=0),
        num_steps=steps, num_chains=chains, stacked_init=True, burn_in=200, batches=batches, progress=False,
    )
    z = _theta_z_scores(r.samples, exact)
    assert z.max() < Z_MAX, f"seed={seed}: max |z| = {z.max():.2f}"


@pytest.mark.slow
def test_conjugate_regression_with_minibatches_matches_the_closed_form():
    """On-device data with per-epoch permutations: posterior means and sds within 4 MCSE."""
    from sghmc_jax import _demo

    problem = _demo.make_problem(3, num_data=500, dim=3)
    n = problem.x.shape[0]
    ll = lambda w, batch: -0.5 * (batch["y"] - batch["x"] @ w) ** 2 / problem.noise_std**2  # noqa: E731
    prior = lambda w: -0.5 * jnp.sum(w**2) / problem.prior_std**2  # noqa: E731
    log_posterior, temperature = sghmc_jax.make_log_posterior(ll, prior, n)
    lam = np.linalg.eigvalsh(np.linalg.inv(problem.post_cov)).max()
    tx = sghmc_jax.sghmc(0.1 / np.sqrt(lam), alpha=2 * np.sqrt(lam), temperature=temperature, key=0)
    r = sghmc_jax.sample(
        0, log_posterior, jnp.zeros(3), transform=tx, num_steps=20_000, num_chains=4,
        data={"x": problem.x.astype(np.float32), "y": problem.y.astype(np.float32)}, batch_size=50,
        burn_in=1000, thin=5, progress=False,
    )
    s = r.summary()["params"]
    exact_sd = np.sqrt(np.diag(problem.post_cov))
    z_mean = (s["mean"] - problem.post_mean) / s["mcse_mean"]
    z_sd = (s["sd"] - exact_sd) / (s["sd"] / np.sqrt(2 * s["ess_bulk"]))
    assert np.all(np.abs(z_mean) < 4) and np.all(np.abs(z_sd) < 4), f"seed=0 z_mean={z_mean} z_sd={z_sd}"
    assert np.all(s["rhat"] < 1.01)
    # ESS agrees with ArviZ on the same draws.
    import arviz as az

    ref = az.ess(r.samples[..., 0], method="bulk")
    np.testing.assert_allclose(s["ess_bulk"][0], float(ref), rtol=1e-3)


def test_to_arviz_and_summary_agree():
    lp = lambda p, b: (-0.5 * jnp.sum(p["w"] ** 2), None)  # noqa: E731
    r = sghmc_jax.sample(
        0, lp, {"w": jnp.zeros(2)}, transform=sghmc_jax.sghmc(0.3, alpha=1.0, key=0), num_steps=400,
        num_chains=2, progress=False,
    )
    idata = r.to_arviz()
    assert idata.posterior["w"].shape == (2, 400, 2)
    # The log posterior at each draw's params: the next step's trace entry.
    lp = np.asarray(idata.sample_stats["lp"])
    np.testing.assert_array_equal(lp[:, :-1], r.log_posterior[:, 1:])
    np.testing.assert_allclose(lp[:, 0], -0.5 * np.sum(r.samples["w"][:, 0] ** 2, axis=-1), rtol=1e-5)
    assert np.all(np.isnan(lp[:, -1]))
    import arviz as az

    np.testing.assert_allclose(
        np.asarray(az.rhat(idata, method="rank")["w"]), r.summary()["w"]["rhat"], rtol=1e-4
    )


def test_result_repr_is_a_short_summary():
    """Regression: `print(result)` printed every array (83 kB)."""
    lp = lambda p, b: (-0.5 * jnp.sum(p["w"] ** 2), None)  # noqa: E731
    r = sghmc_jax.sample(0, lp, {"w": jnp.zeros(50)}, transform=sghmc_jax.sghmc(0.1, key=0), num_steps=300, num_chains=3, progress=False)
    text = repr(r)
    assert len(text) < 300 and text.startswith("SampleResult(3 chains × 300 draws (steps 1–300) of {'w': (50,)} float32; 0 diverged")
