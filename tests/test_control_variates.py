"""Control variates: exact properties first (unbiased over the blocks of a partition, exact at
the centre, exact everywhere when the per-example Hessians are equal, value and gradient against
hand-computed quantities), then the measured variance against its exact finite-population
formula, every sampler following its full-data chain on CV minibatches, a conjugate Gaussian
sampled through `sample()` (and continued after `recentre`) with MCSE-based tolerances, and
validation."""

from __future__ import annotations


import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sghmc_jax
from sghmc_jax.control_variates import ControlVariate, centre, recentre
from tests.helpers import Hyper, stationary_covariance
from tests.registry import SAMPLERS

# ---- problems -----------------------------------------------------------------------------------


def logistic_data(seed: int = 0, n: int = 60, d: int = 3, dtype=np.float64) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = (x @ rng.normal(size=d) + 0.5 + rng.logistic(size=n) > 0).astype(float)
    return {"x": x.astype(dtype), "y": y.astype(dtype)}


def logistic_ll(params: dict, batch: dict) -> jax.Array:
    """Per-example log-likelihoods; params a pytree {"w": (d,), "b": ()}."""
    z = batch["x"] @ params["w"] + params["b"]
    return batch["y"] * z - jnp.logaddexp(0.0, z)


def gaussian_prior(params: dict) -> jax.Array:  # N(0, 2²) on every coefficient
    return -0.125 * sum(jnp.sum(p**2) for p in jax.tree.leaves(params))


def random_params(seed: int, d: int = 3, scale: float = 1.0) -> dict:
    rng = np.random.default_rng(seed)
    return {"w": jnp.asarray(scale * rng.normal(size=d)), "b": jnp.asarray(scale * rng.normal())}


def full_log_posterior(params: dict, data: dict, form: str) -> jax.Array:
    total = jnp.sum(logistic_ll(params, data)) + gaussian_prior(params)
    return total if form == "sum" else total / len(data["y"])


@jax.jit(static_argnums=2)
def exact_gradient(params: dict, data: dict, form: str) -> dict:
    return jax.grad(full_log_posterior)(params, data, form)


@jax.jit
def per_example_gradients(params: dict, data: dict) -> dict:
    """∇ log p(yᵢ | params) for every example i (leading axis)."""
    one = lambda p, x, y: logistic_ll(p, {"x": x[None], "y": y[None]})[0]  # noqa: E731
    return jax.vmap(jax.grad(one), in_axes=(None, 0, 0))(params, data["x"], data["y"])


def blocks(data: dict, num_blocks: int) -> list[dict]:
    """The blocks of a fixed partition of the data into equal batches (a random permutation)."""
    n = len(data["y"])
    order = np.random.default_rng(7).permutation(n).reshape(num_blocks, n // num_blocks)
    return [jax.tree.map(lambda x, i=i: x[i], data) for i in order]


@jax.jit(static_argnums=0)
def grad_of(log_posterior, params, batch):
    return jax.grad(lambda p: log_posterior(p, batch)[0])(params)


def assert_trees_close(actual, expected, rtol: float, msg: str = "") -> None:
    """Each leaf within rtol of the largest entry of the expected leaf (an absolute tolerance in
    the leaf's own scale, so entries near 0 are not held to a relative one)."""
    for (path, a), e in zip(jax.tree_util.tree_flatten_with_path(actual)[0], jax.tree.leaves(expected)):
        a, e = np.asarray(a), np.asarray(e)
        tol = rtol * max(float(np.max(np.abs(e))), 1.0)
        err = float(np.max(np.abs(a - e)))
        assert err <= tol, f"{jax.tree_util.keystr(path)}: max |error| {err:.3g} > {tol:.3g} {msg}"


# ---- exact properties ---------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["sum", "mean"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_over_a_partition_is_the_full_gradient(x64, form, seed):
    """(1/K) Σ_k (N/n) Σ_{i∈B_k} vᵢ = Σᵢ vᵢ for any vᵢ, so over the K blocks of a partition the CV
    gradient averages to the full-data gradient exactly, at any θ and θ̂ (to float64 rounding)."""
    data = logistic_data(seed)
    theta_hat = random_params(100 + seed)
    cv = centre(logistic_ll, gaussian_prior, data, theta_hat, form=form)
    for k, theta in enumerate([random_params(200 + seed), random_params(300 + seed, scale=3.0), theta_hat]):
        for num_blocks in (5, 12):
            grads = [grad_of(cv, theta, b) for b in blocks(data, num_blocks)]
            average = jax.tree.map(lambda *g: sum(g) / num_blocks, *grads)
            exact = exact_gradient(theta, data, form)
            assert_trees_close(average, exact, 1e-12, f"(seed {seed}, θ #{k}, K = {num_blocks}, {form})")
            # ... while the blocks themselves differ (except at the centre): the test has teeth.
            if k < 2:
                spread = max(float(np.max(np.abs(np.asarray(g["w"]) - np.asarray(exact["w"])))) for g in grads)
                assert spread > 1e-3 * (1.0 if form == "sum" else 1.0 / 60), (seed, k, spread)


@pytest.mark.parametrize("form", ["sum", "mean"])
def test_every_batch_is_exact_at_the_centre(x64, form):
    data = logistic_data(3)
    theta_hat = random_params(4)
    cv = centre(logistic_ll, gaussian_prior, data, theta_hat, form=form)
    exact = exact_gradient(theta_hat, data, form)
    assert_trees_close(cv.full_gradient, exact, 1e-13, "(full_gradient)")
    chex.assert_trees_all_equal(cv.centre, theta_hat)
    for i, batch in enumerate(blocks(data, 12)):
        assert_trees_close(grad_of(cv, theta_hat, batch), exact, 1e-12, f"(batch {i}, {form})")


def normal_mean_problem(n: int = 60, d: int = 2, s: float = 0.7, tau: float = 3.0, seed: int = 0, dtype=np.float64):
    """yᵢ ~ N(θ, s² I), θ ~ N(0, τ² I): every per-example Hessian is −I/s², so the CV gradient is
    the exact full-data gradient on every batch. Returns (ll, prior, data, exact mean, exact sd)."""
    rng = np.random.default_rng(seed)
    y = (np.linspace(-1.0, 1.0, d) + s * rng.normal(size=(n, d))).astype(dtype)

    def ll(theta, batch):
        return -0.5 * jnp.sum((batch - theta) ** 2, axis=-1) / s**2

    def prior(theta):
        return -0.5 * jnp.sum(theta**2) / tau**2

    precision = n / s**2 + 1 / tau**2
    return ll, prior, y, y.sum(0) / s**2 / precision, 1 / np.sqrt(precision)


@pytest.mark.parametrize("form", ["sum", "mean"])
def test_equal_hessians_give_the_exact_gradient_on_every_batch(x64, form):
    ll, prior, y, _, _ = normal_mean_problem()
    cv = centre(ll, prior, y, jnp.asarray([0.3, -2.0]), form=form)
    full = sghmc_jax.make_log_posterior(ll, prior, len(y), form=form)
    for theta in ([1.5, 0.2], [-4.0, 7.0]):
        theta = jnp.asarray(theta)
        exact = grad_of(full, theta, y)
        for i, batch in enumerate(y.reshape(20, 3, 2)):
            assert_trees_close(grad_of(cv, theta, batch), exact, 1e-12, f"(θ {theta}, batch {i})")


@pytest.mark.parametrize("form", ["sum", "mean"])
def test_value_is_the_minibatch_estimate_and_gradient_the_cv_estimator(x64, form):
    """On one batch: the value and aux are make_log_posterior's to the bit; the gradient is
    ∇log p(θ̂) + (N/n)Σ_S[∇log p(yᵢ|θ) − ∇log p(yᵢ|θ̂)] + ∇log p₀(θ) − ∇log p₀(θ̂) from per-example
    gradients taken here (divided by N for form="mean")."""
    data = logistic_data(5)
    n_data = len(data["y"])
    theta, theta_hat = random_params(6), random_params(7)
    cv = centre(logistic_ll, gaussian_prior, data, theta_hat, form=form)
    plain = sghmc_jax.make_log_posterior(logistic_ll, gaussian_prior, n_data, form=form)
    batch = jax.tree.map(lambda x: x[10:18], data)

    value, aux = cv(theta, batch)
    ref_value, ref_aux = plain(theta, batch)
    assert np.asarray(value) == np.asarray(ref_value), (value, ref_value)
    assert np.asarray(aux) == np.asarray(ref_aux)

    g_theta, g_hat = per_example_gradients(theta, batch), per_example_gradients(theta_hat, batch)
    full_hat = exact_gradient(theta_hat, data, "sum")
    scale = 1.0 if form == "sum" else 1.0 / n_data
    expected = jax.tree.map(  # in NumPy; the prior N(0, 2²) has gradient −θ/4
        lambda f, a, b, t, t_hat: scale * (np.asarray(f) + n_data * np.mean(np.asarray(a) - np.asarray(b), axis=0)
                                           - (np.asarray(t) - np.asarray(t_hat)) / 4),
        full_hat, g_theta, g_hat, theta, theta_hat,
    )
    assert_trees_close(grad_of(cv, theta, batch), expected, 1e-12, f"({form})")
    # ... and the loss an optax face consumes is its negative (inherited from ScaledLogPosterior).
    loss_grad = jax.jit(jax.grad(cv.loss))(theta, batch)
    assert_trees_close(loss_grad, jax.tree.map(np.negative, expected), 1e-12, "(loss)")
    # The plain estimator differs on this batch, so the check above tells the two apart.
    assert np.max(np.abs(np.asarray(grad_of(plain, theta, batch)["w"]) - expected["w"])) > 1e-2 * scale


def test_chunked_full_pass_matches_the_one_shot_pass(x64):
    data = logistic_data(8)
    theta_hat = random_params(9)
    ref = centre(logistic_ll, gaussian_prior, data, theta_hat)
    for chunk in (1, 7, 60):  # 7 does not divide N = 60: 8 whole chunks and a remainder of 4
        cv = centre(logistic_ll, gaussian_prior, data, theta_hat, chunk_size=chunk)
        assert_trees_close(cv.full_gradient, ref.full_gradient, 1e-13, f"(chunk {chunk})")


def test_recentre_moves_the_centre_and_keeps_the_rest(x64):
    data = logistic_data(10)
    cv = centre(logistic_ll, gaussian_prior, data, random_params(11), form="mean", temperature=0.5, chunk_size=7)
    new_hat = random_params(12)
    new = recentre(cv, new_hat)
    assert isinstance(new, ControlVariate) and new is not cv
    assert (new.form, new.num_data, new.temperature, new.chunk_size) == ("mean", 60, 0.5 / 60, 7)
    assert_trees_close(new.full_gradient, exact_gradient(new_hat, data, "mean"), 1e-13)
    chex.assert_trees_all_equal(cv.centre, random_params(11))  # the old one is unchanged
    batch = jax.tree.map(lambda x: x[:6], data)
    assert_trees_close(grad_of(new, new_hat, batch), new.full_gradient, 1e-12)


# ---- measured variance reduction ----------------------------------------------------------------


def _mode_and_laplace(data: dict, d: int) -> tuple[jax.Array, np.ndarray]:
    def lp(w, data):
        return jnp.sum(logistic_ll({"w": w[1:], "b": w[0]}, data)) + gaussian_prior(w)

    @jax.jit
    def newton(data):  # on the concave log posterior, 25 steps (quadratic convergence)
        step = lambda _, w: w - jnp.linalg.solve(jax.hessian(lp)(w, data), jax.grad(lp)(w, data))  # noqa: E731
        w = jax.lax.fori_loop(0, 25, step, jnp.zeros(d + 1))
        return w, jax.grad(lp)(w, data), jax.hessian(lp)(w, data)

    w, grad, hess = newton(data)
    assert float(jnp.max(jnp.abs(grad))) < 1e-8
    return w, np.linalg.inv(-np.asarray(hess))


@pytest.fixture(scope="module")
def logistic_500():
    """Logistic regression, N = 500, 5 features + intercept, seed 21: data, mode, Laplace cov."""
    with jax.enable_x64(True):  # left before the tests run (a module fixture must not leak x64)
        data = jax.tree.map(jnp.asarray, logistic_data(21, n=500, d=5))
        mode, cov = _mode_and_laplace(data, 5)
    return data, mode, cov


def _flat(g: dict) -> jax.Array:
    return jnp.concatenate([g["w"], g["b"][..., None]], axis=-1)


def _finite_population_trace(v: np.ndarray, n: int) -> float:
    """tr Cov of N·mean over a batch of n of the rows of `v` drawn without replacement: the
    finite-population formula (N²/n)·(N − n)/(N − 1)·tr Cov_i[vᵢ] (Cov_i with divisor N)."""
    num = len(v)
    return num**2 / n * (num - n) / (num - 1) * float(np.sum(np.var(v, axis=0)))


@pytest.mark.parametrize("batch_size", [4, 64])
def test_measured_variance_is_the_exact_one_and_far_below_plain(x64, logistic_500, batch_size):
    """Logistic regression, N = 500, d = 5 (+ intercept), at a Laplace draw around the mode θ̂
    (a posterior-typical point; at θ̂ itself the CV's variance is 0). The trace of the covariance
    of each estimator over 2000 random batches (without replacement within a batch) must match
    the finite-population formula from the per-example gradients, vᵢ = ∇ℓᵢ(θ) for plain and
    ∇ℓᵢ(θ) − ∇ℓᵢ(θ̂) for CV, within 5 Monte Carlo standard errors (those of a mean of 2000
    squared deviations); and both means must match the full gradient within 5 standard errors.
    That pins the estimator's variance to the formula; the formula's ratio CV/plain at this
    point (0.015, the same for every n) is then checked to be < 1/10."""
    n_data, d, seed, num_batches = 500, 5, 21, 2000
    data, mode, cov = logistic_500
    theta_vec = mode + np.linalg.cholesky(cov) @ np.random.default_rng(seed).normal(size=d + 1)
    as_tree = lambda w: {"w": w[1:], "b": w[0]}  # noqa: E731
    cv = centre(logistic_ll, gaussian_prior, data, as_tree(mode))
    plain = sghmc_jax.make_log_posterior(logistic_ll, gaussian_prior, n_data)
    theta = as_tree(jnp.asarray(theta_vec))

    def one(key):  # both estimators on one random batch
        batch = jax.tree.map(lambda x: x[jax.random.choice(key, n_data, (batch_size,), replace=False)], data)
        return _flat(grad_of(cv, theta, batch)), _flat(grad_of(plain, theta, batch))

    keys = jax.random.split(jax.random.key(seed + batch_size), num_batches)
    g_cv, g_plain = map(np.asarray, jax.jit(jax.vmap(one))(keys))
    v_theta = np.asarray(_flat(per_example_gradients(theta, data)))
    v_hat = np.asarray(_flat(per_example_gradients(as_tree(mode), data)))
    exact = {"cv": _finite_population_trace(v_theta - v_hat, batch_size),
             "plain": _finite_population_trace(v_theta, batch_size)}
    full = np.asarray(_flat(exact_gradient(theta, data, "sum")))
    for name, g in (("cv", g_cv), ("plain", g_plain)):
        sq = np.sum((g - g.mean(0)) ** 2, axis=1)
        measured, se = sq.mean() * num_batches / (num_batches - 1), sq.std(ddof=1) / np.sqrt(num_batches)
        assert abs(measured - exact[name]) < 5 * se, (
            f"{name}: measured variance {measured:.4g} vs exact {exact[name]:.4g} (SE {se:.2g}; n = "
            f"{batch_size}, seed {seed})"
        )
        z = np.abs(g.mean(0) - full) / (g.std(0, ddof=1) / np.sqrt(num_batches))
        assert z.max() < 5, f"{name} mean gradient off by {z.max():.1f} standard errors (n = {batch_size}, seed {seed})"
    ratio = exact["cv"] / exact["plain"]
    assert ratio < 0.1, f"exact variance ratio CV/plain {ratio:.4f} (seed {seed})"


# ---- composition with every sampler ---------------------------------------------------------------


@pytest.mark.parametrize("s", SAMPLERS, ids=[s.name for s in SAMPLERS])
def test_every_sampler_on_cv_minibatches_follows_its_full_data_chain(x64, s):
    """Equal per-example Hessians make the CV gradient of every batch the full-data gradient, so
    each sampler's functional face, fed the CV on minibatches, follows from the same keys the
    chain it follows with the full-data log posterior on all the data (to float64 rounding).
    The plain minibatch log posterior does not (the check has teeth)."""
    ll, prior, y, _, _ = normal_mean_problem(n=60, d=2)
    temperature = s.hyper["temperature"]
    cv = centre(ll, prior, y, jnp.asarray([0.3, -2.0]), temperature=temperature)
    full = sghmc_jax.make_log_posterior(ll, prior, len(y), temperature=temperature)
    plain = sghmc_jax.make_log_posterior(ll, prior, len(y), temperature=temperature)
    batches = jnp.asarray(y.reshape(20, 3, 2))
    keys = jax.random.split(jax.random.key(3), 20)
    theta0 = jnp.asarray([1.0, -1.0])

    def path(lp, on_batches: bool) -> jax.Array:
        transform = s.build(lp, lr=5e-3)

        def step(state, xs):
            key, batch = xs
            state = transform.update(state, batch if on_batches else jnp.asarray(y), key=key)
            return state, state.params

        state = transform.init(theta0, key=0, batch=batches[0])
        return jax.lax.scan(step, state, (keys, batches))[1]

    # One program for the three chains (one compilation).
    reference, with_cv, with_plain = map(
        np.asarray, jax.jit(lambda: (path(full, False), path(cv, True), path(plain, True)))()
    )
    assert np.max(np.abs(reference - np.asarray(theta0))) > 1e-3  # the chain moves (by far more than the tolerance below)
    np.testing.assert_allclose(with_cv, reference, rtol=0, atol=1e-10, err_msg=s.name)
    assert np.max(np.abs(with_plain - reference)) > 1e-4, s.name
    with pytest.raises(ValueError, match="temperature"):
        s.build(cv, temperature=2 * temperature)


# ---- sampling a conjugate Gaussian through sample() ---------------------------------------------


def _sd_mcse(draws: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """MCSE of the sd, from the ESS-based MCSE of the mean of (θ − mean)² (delta method)."""
    return sghmc_jax.diagnostics.summary((draws - mean) ** 2)["params"]["mcse_mean"] / (2 * sd)


def _gaussian_setup(num_data: int = 1000, seed: int = 0):
    """yᵢ ~ N(θ, 1), θ ∈ R², prior N(0, 10²): the posterior is N(ȳ·N/P, 1/P), P = N + 0.01.
    SGHMC at ε√P = 0.3 and critical damping α = 2√P; its exact stationary sd (from the step's
    Lyapunov equation) exceeds the posterior's by b, 1.7% of it."""
    rng = np.random.default_rng(seed)
    y = (np.array([0.5, -1.0]) + rng.normal(size=(num_data, 2))).astype(np.float32)
    ll = lambda theta, b: -0.5 * jnp.sum((b - theta) ** 2, axis=-1)  # noqa: E731
    prior = lambda theta: -0.005 * jnp.sum(theta**2)  # noqa: E731
    precision = num_data + 0.01
    exact_mean, exact_sd = y.astype(np.float64).sum(0) / precision, 1 / np.sqrt(precision)
    omega = np.sqrt(precision)
    lr, alpha = 0.3 / omega, 2 * omega
    bias = np.sqrt(stationary_covariance(np.array([[precision]]), Hyper(lr, alpha, 1.0, 1.0))[0, 0]) - exact_sd
    assert 0 < bias < 0.02 * exact_sd
    return y, ll, prior, exact_mean, exact_sd, bias, lr, alpha


def _check_gaussian(draws: np.ndarray, exact_mean, exact_sd, bias, what: str) -> np.ndarray:
    """|mean − exact| < 5 MCSE and |sd − exact| < b + 5 MCSE(sd); returns |sd − exact|."""
    s = sghmc_jax.diagnostics.summary(draws)["params"]
    sd_mcse = _sd_mcse(draws, s["mean"], s["sd"])
    assert s["ess_bulk"].min() > 500, (what, s["ess_bulk"])
    mean_z = np.abs(s["mean"] - exact_mean) / s["mcse_mean"]
    assert mean_z.max() < 5, f"{what}: posterior mean off by {mean_z} MCSE"
    assert np.all(np.abs(s["sd"] - exact_sd) < bias + 5 * sd_mcse), (
        f"{what}: posterior sd {s['sd']} vs exact {exact_sd:.5f} (bias {bias:.2g}, MCSE {sd_mcse})"
    )
    return np.abs(s["sd"] - exact_sd)


def test_sample_with_cv_then_recentred_samples_the_exact_gaussian_posterior():
    """sample() with a CV log posterior centred off the mode, then the SVRG-style recipe of
    `recentre` (centre again at the chains' mean, continue from `final_state`). With equal
    per-example Hessians the CV gradient is the full gradient on every batch, so both stages
    sample full-gradient SGHMC's stationary law: mean within 5 MCSE of the posterior's, sd within
    the exact discretisation bias b + 5 MCSE(sd) (MCSEs from the bulk ESS of 8 chains)."""
    seed = 0
    y, ll, prior, exact_mean, exact_sd, bias, lr, alpha = _gaussian_setup(seed=seed)
    theta_hat = jnp.asarray(exact_mean + 3 * exact_sd, jnp.float32)
    cv = centre(ll, prior, y, theta_hat)
    kw = dict(num_chains=8, data=y, batch_size=50, progress=False)
    with pytest.raises(ValueError, match="temperature"):
        sghmc_jax.sample(jax.random.key(seed), cv, theta_hat, num_steps=10, **kw,
                         transform=lambda k: sghmc_jax.sghmc(lr, alpha=alpha, temperature=0.5, key=k))
    transform = lambda k: sghmc_jax.sghmc(lr, alpha=alpha, temperature=cv.temperature, key=k)  # noqa: E731
    first = sghmc_jax.sample(jax.random.key(seed), cv, theta_hat, transform=transform, num_steps=1500, burn_in=100, **kw)
    _check_gaussian(np.asarray(first.samples), exact_mean, exact_sd, bias, f"CV (seed {seed})")
    new_centre = jnp.mean(first.final_state.params, axis=0)
    second = sghmc_jax.sample(
        jax.random.key(seed + 1), recentre(cv, new_centre), None, transform=transform, num_steps=1000,
        init_state=first.final_state, **{k: v for k, v in kw.items() if k != "num_chains"},
    )
    draws = np.concatenate([first.samples, second.samples], axis=1)
    _check_gaussian(draws, exact_mean, exact_sd, bias, f"CV then recentred (seed {seed})")


@pytest.mark.slow
def test_plain_minibatches_at_the_same_settings_are_measurably_off():
    """The contrast to the test above: plain minibatches of 50 at the same settings add gradient
    noise of variance ~N²/n per step, which inflates the sd (~25% measured; the i.i.d.-noise
    Lyapunov prediction is ~60%, without-replacement batches within an epoch are negatively
    correlated): it must exceed the exact sd by more than b + 5 MCSE(sd)."""
    seed = 0
    y, ll, prior, exact_mean, exact_sd, bias, lr, alpha = _gaussian_setup(seed=seed)
    plain = sghmc_jax.make_log_posterior(ll, prior, len(y))
    result = sghmc_jax.sample(
        jax.random.key(seed), plain, jnp.asarray(exact_mean, jnp.float32), num_steps=3000, num_chains=8, data=y,
        batch_size=50, burn_in=200, progress=False,
        transform=lambda k: sghmc_jax.sghmc(lr, alpha=alpha, temperature=plain.temperature, key=k),
    )
    draws = np.asarray(result.samples)
    s = sghmc_jax.diagnostics.summary(draws)["params"]
    sd_z = (s["sd"] - exact_sd - bias) / _sd_mcse(draws, s["mean"], s["sd"])
    assert np.all(sd_z > 5), f"plain minibatch sd {s['sd']} not measurably inflated: z = {sd_z} (seed {seed})"


# ---- validation -------------------------------------------------------------------------------


def _good() -> dict:
    return dict(
        log_likelihood=logistic_ll, log_prior=gaussian_prior, data=logistic_data(0, dtype=np.float32),
        params_hat={"w": np.zeros(3, np.float32), "b": np.float32(0.0)},
    )


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(log_likelihood=3), TypeError, "`log_likelihood` must be callable, got int"),
        (dict(log_prior="prior"), TypeError, "`log_prior` must be callable, got str"),
        (dict(form="avg"), ValueError, "`form` must be 'sum' or 'mean', got form='avg'"),
        (dict(num_data=0), ValueError, "`num_data` must be an int >= 1, got num_data=0"),
        (dict(num_data=60.0), TypeError, "`num_data` must be a Python int, got float"),
        (dict(num_data=61), ValueError, r"`num_data` must equal the number of examples in `data` \(60"),
        (dict(temperature=0.0), ValueError, "`temperature` must be a finite number > 0"),
        (dict(chunk_size=0), ValueError, "`chunk_size` must be an int with 1 <= chunk_size <= N = 60, got chunk_size=0"),
        (dict(chunk_size=61), ValueError, "chunk_size=61"),
        (dict(data={"x": np.zeros((60, 3)), "y": np.zeros(59)}), ValueError, "same leading size"),
        (dict(data={"x": np.zeros((60, 3)), "y": np.float32(1.0)}), ValueError, r"leading example axis.*data\['y'\]"),
        (dict(data={}), ValueError, "`data` must hold at least one array"),
        (dict(params_hat={"w": np.zeros(3, np.int32), "b": 0.0}), TypeError, r"floating-point.*params_hat\['w'\]"),
        (dict(params_hat={"w": np.array([0.0, np.nan, 0.0]), "b": 0.0}), ValueError, r"finite.*params_hat\['w'\]"),
        (dict(log_likelihood=lambda p, b: jnp.sum(logistic_ll(p, b))), TypeError, "one value per example"),
        (dict(log_prior=lambda p: jnp.sum(jnp.sqrt(p["w"]))), ValueError, r"full-data gradient.*params_hat\['w'\]"),
    ],
)
def test_bad_arguments_raise_naming_them(change, error, match):
    kw = {**_good(), **change}
    args = [kw.pop(k) for k in ("log_likelihood", "log_prior", "data", "params_hat")]
    with pytest.raises(error, match=match):
        centre(*args, **kw)


def test_bad_params_and_recentre_arguments_raise():
    kw = _good()
    cv = centre(kw["log_likelihood"], kw["log_prior"], kw["data"], kw["params_hat"])
    batch = jax.tree.map(lambda x: x[:4], kw["data"])
    with pytest.raises(ValueError, match="`params` must have the tree structure of `params_hat`"):
        cv({"w": jnp.zeros(3)}, batch)
    with pytest.raises(ValueError, match=r"shape \(4,\) at params\['w'\]"):
        cv({"w": jnp.zeros(4), "b": jnp.zeros(())}, batch)
    with pytest.raises(TypeError, match="`cv` must be a ControlVariate"):
        recentre(sghmc_jax.make_log_posterior(logistic_ll, gaussian_prior, 60), kw["params_hat"])
    with pytest.raises(ValueError, match=r"`params_hat` must match the shapes of `cv.centre`"):
        recentre(cv, {"w": np.zeros(2, np.float32), "b": np.float32(0.0)})
    with pytest.raises(ValueError, match="finite"):
        recentre(cv, {"w": np.full(3, np.inf, np.float32), "b": np.float32(0.0)})
