"""Kernel Stein discrepancy (`sghmc_jax.stein`).

Exact checks first. The reference is written from the definition of the Stein kernel,
k₀(x, y) = s(x)ᵀs(y) k + s(x)ᵀ∇_y k + s(y)ᵀ∇_x k + Σ_i ∂_{x_i}∂_{y_i} k, in NumPy float64, with
every derivative of the IMQ kernel k a central finite difference (Richardson-extrapolated) and
the statistics summed explicitly: it shares no formula with `sghmc_jax.stein`, whose closed form
it checks (to ~1e-10, the differences' error), along with the blocking, padding and pytree
flattening; autodiff of the definition pins k₀ of one pair to rounding.

Then behaviour, with tolerances from Monte Carlo standard errors over independent replicates:
under exact draws the U-statistic has mean 0 and n·E[KSD_V²] = E k₀(x, x), 2d for the target
N(0, I) at c = 1, β = −1/2; wrong draws give a KSD many standard errors larger; noisy scores bias
V by exactly c^{2β}·tr Cov/n and leave U unbiased. The checks allow Z_MAX = 5 standard errors of
the mean over 100 replicates. The per-replicate U and n·KSD_V² are right-skewed (skewness
1.2-1.5: their degenerate part tends to a weighted sum of centred χ²₁), which fattens the lower
tail of the t-statistic; resampling 20 000 replicates put P(|t| > 5) at <= 5e-5 per check with
100 replicates, against 2e-4 to 3e-4 with 40.

Compilation dominates the run time (about a second per program on a loaded CPU), so the tests
reuse a few shapes: float64 draws of n = 40 with block_size=16, float32 draws of d = 3 with
n = 100 or 300.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.spatial.distance

import sghmc_jax
from sghmc_jax import stein
from tests.helpers import Z_MAX  # 5: a |z| above it fails a statistical check

# ----------------------------------------------------------------------------------------------
# Independent reference, written from the definitions (NumPy, float64)
# ----------------------------------------------------------------------------------------------


def np_imq(x, y, c, beta, scale):
    """k(x_i, y_j) = (c² + Σ_l (x_il − y_jl)² / scale_l)^β for all pairs: an (n, m) array."""
    r = x[:, None, :] - y[None, :, :]
    return (c**2 + np.sum(r * r / scale, axis=-1)) ** beta


def np_stein_matrix(x, s, c=1.0, beta=-0.5, scale=None, h=1e-3):
    """H_ij = k₀(x_i, x_j) from the definition, for all pairs of rows of x (n, d) with scores s.

    ∂_{x_l}k, ∂_{y_l}k and ∂_{x_l}∂_{y_l}k are central differences in coordinate l of the first,
    the second and both arguments, each extrapolated from steps h and h/2 (Richardson:
    (4·D(h/2) − D(h))/3, truncation O(h⁴)). Measured against the closed form over d in {1, 4, 10},
    c >= 0.5 and β >= −0.9, every entry is within 2e-8 and the statistics within 3e-10
    relatively.
    """
    n, d = x.shape
    scale = np.broadcast_to(np.asarray(1.0 if scale is None else scale, np.float64), (d,))
    k = lambda a, b: np_imq(a, b, c, beta, scale)

    def differences(step):
        grad_x, grad_y, mixed = np.zeros((d, n, n)), np.zeros((d, n, n)), np.zeros((n, n))
        for l in range(d):
            e = np.zeros(d)
            e[l] = step
            grad_x[l] = (k(x + e, x) - k(x - e, x)) / (2 * step)
            grad_y[l] = (k(x, x + e) - k(x, x - e)) / (2 * step)
            mixed += (k(x + e, x + e) - k(x + e, x - e) - k(x - e, x + e) + k(x - e, x - e)) / (4 * step**2)
        return grad_x, grad_y, mixed

    grad_x, grad_y, mixed = ((4 * fine - coarse) / 3 for coarse, fine in zip(differences(h), differences(h / 2)))
    return (
        (s @ s.T) * k(x, x)  # s(x_i)ᵀs(x_j) k
        + np.einsum("il,lij->ij", s, grad_y)  # s(x_i)ᵀ∇_y k
        + np.einsum("jl,lij->ij", s, grad_x)  # s(x_j)ᵀ∇_x k
        + mixed
    )


def np_statistics(x, s, **kw):
    """(KSD_V, U-statistic of KSD²): √(Σ_{i,j} H_ij / n²) and Σ_{i≠j} H_ij / (n(n − 1))."""
    h = np_stein_matrix(np.asarray(x, np.float64), np.asarray(s, np.float64), **kw)
    n = h.shape[0]
    off_diagonal = sum(h[i, j] for i in range(n) for j in range(n) if i != j)
    diagonal = sum(h[i, i] for i in range(n))
    return np.sqrt((off_diagonal + diagonal) / n**2), off_diagonal / (n * (n - 1))


def mean_and_se(values):
    values = np.asarray(values, np.float64)
    return values.mean(), values.std(ddof=1) / np.sqrt(values.size)


# ----------------------------------------------------------------------------------------------
# The Stein kernel of one pair
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_stein_kernel_matches_the_definition(seed, x64):
    rng = np.random.default_rng(seed)
    d = 3  # one compiled program per kind of scale (d = 1 and 4 are checked through `ksd`)
    x, y, sx, sy = (rng.normal(size=d) for _ in range(4))
    c, beta = rng.uniform(0.5, 2.0), rng.uniform(-0.9, -0.1)
    scale = rng.uniform(0.5, 3.0, d) if seed % 2 else None
    want = np_stein_matrix(np.stack([x, y]), np.stack([sx, sy]), c=c, beta=beta, scale=scale)
    pair = stein.imq_stein_kernel(x, y, sx, sy, c=c, beta=beta, scale=scale)
    same = stein.imq_stein_kernel(x, x, sx, sx, c=c, beta=beta, scale=scale)
    msg = f"seed={seed}, d={d}, c={c:.3f}, beta={beta:.3f}"
    assert float(pair) == pytest.approx(want[0, 1], rel=1e-7, abs=1e-8), msg
    assert float(same) == pytest.approx(want[0, 0], rel=1e-7, abs=1e-8), msg


@jax.jit
def _autodiff_k0(x, y, sx, sy, c, beta, scale):
    k = lambda a, b: (c**2 + jnp.sum((a - b) ** 2 / scale)) ** beta
    mixed = jnp.trace(jax.jacfwd(jax.grad(k, argnums=0), argnums=1)(x, y))
    return sx @ sy * k(x, y) + sx @ jax.grad(k, 1)(x, y) + sy @ jax.grad(k, 0)(x, y) + mixed


@pytest.mark.parametrize("seed", range(3))
def test_stein_kernel_matches_autodiff_of_the_definition(seed, x64):
    rng = np.random.default_rng(100 + seed)
    d = 3
    x, y, sx, sy = (jnp.asarray(rng.normal(size=d)) for _ in range(4))
    c, beta, scale = rng.uniform(0.5, 2.0), rng.uniform(-0.9, -0.1), jnp.asarray(rng.uniform(0.3, 3.0, d))
    want = _autodiff_k0(x, y, sx, sy, c, beta, scale)
    got = stein.imq_stein_kernel(x, y, sx, sy, c=c, beta=beta, scale=scale)
    assert float(got) == pytest.approx(float(want), rel=1e-12), f"seed={100 + seed}"


def test_stein_kernel_is_symmetric_with_the_known_diagonal(x64):
    rng = np.random.default_rng(7)
    x, y, sx, sy = (rng.normal(size=3) for _ in range(4))
    scale = np.array([0.5, 1.0, 4.0])
    kw = {"c": 1.5, "beta": -0.4, "scale": scale}
    assert float(stein.imq_stein_kernel(x, y, sx, sy, **kw)) == pytest.approx(
        float(stein.imq_stein_kernel(y, x, sy, sx, **kw)), rel=1e-14
    )
    # k₀(x, x) = ‖s‖² c^{2β} − 2β tr(Γ⁻¹) c^{2β−2}
    want = sx @ sx * 1.5 ** (-0.8) + 0.8 * np.sum(1 / scale) * 1.5 ** (-2.8)
    assert float(stein.imq_stein_kernel(x, x, sx, sx, **kw)) == pytest.approx(want, rel=1e-14)


# ----------------------------------------------------------------------------------------------
# ksd against the reference
# ----------------------------------------------------------------------------------------------


# (d, scale, block_size) with n = 40: 1×1 blocks, blocks with a padded last one (7, 16); the
# identity, a scalar (isotropic, ≠ 1) and a per-coordinate scale. A single block (n <= block_size,
# the default path up to n = 1024) is checked in float32 below.
CASES = [(1, None, 1), (1, "vector", 7), (4, None, 16), (4, 2.5, 16), (4, "vector", 16)]


@pytest.mark.parametrize("d, scale, block_size", CASES)
def test_ksd_matches_the_definition(d, scale, block_size, x64):
    seed = 10 * d + block_size
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, d)) * 1.3 + 0.4
    s = rng.normal(size=(40, d))  # arbitrary scores: nothing cancels by construction
    scale = rng.uniform(0.3, 3.0, d) if scale == "vector" else scale
    for c, beta in ((1.0, -0.5), (0.7, -0.8)):
        v_want, u_want = np_statistics(x, s, c=c, beta=beta, scale=scale)
        v = stein.ksd(x, s, c=c, beta=beta, scale=scale, block_size=block_size)
        u = stein.ksd(x, s, c=c, beta=beta, scale=scale, block_size=block_size, statistic="u")
        assert v.shape == () and v.dtype == jnp.float64 and u.dtype == jnp.float64
        msg = f"seed={seed}, c={c}, beta={beta}: V {float(v)} vs {v_want}, U {float(u)} vs {u_want}"
        assert float(v) == pytest.approx(v_want, rel=1e-8), msg
        assert float(u) == pytest.approx(u_want, rel=1e-8, abs=1e-9), msg


def test_float32_agrees_with_float64():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 3))
    v32, u32 = stein.ksd(x, -x), stein.ksd(x, -x, statistic="u")
    assert v32.dtype == jnp.float32 and u32.dtype == jnp.float32
    v64, u64 = np_statistics(x, -x)
    assert float(v32) == pytest.approx(v64, rel=1e-5)
    assert float(u32) == pytest.approx(u64, rel=1e-3, abs=1e-6)  # |u64| ~ 1e-3: a sum that cancels


def test_draws_far_from_the_origin_lose_no_accuracy():
    """k₀ depends on x − y only; `ksd` centres the draws before its Gram expansions, so draws
    around 1000 in float32 give the KSD of the same draws around 0 (an uncentred expansion
    ‖x‖² + ‖y‖² − 2xᵀy loses ~1e6·eps ~ 0.1 of every squared distance here)."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    for statistic, tol in (("v", 1e-4), ("u", 1e-3)):
        near = float(stein.ksd(x, -x, statistic=statistic))
        far = float(stein.ksd(x + 1000.0, -x, statistic=statistic))
        assert far == pytest.approx(near, rel=tol, abs=1e-6), statistic


def test_memory_is_blocked():
    """With block_size B the compiled sum's scratch memory is O(B² + n·d), not O(n²)."""
    n, block = 2048, 128
    x = jnp.zeros((n, 3))
    args = (x, x, jnp.ones(()), 1.0, -0.5)
    analysis = stein._stein_sums.lower(*args, block).compile().memory_analysis()
    if analysis is None:
        pytest.skip("this backend reports no memory analysis")
    assert analysis.temp_size_in_bytes < n * n * 4 / 10, analysis.temp_size_in_bytes


# ----------------------------------------------------------------------------------------------
# Behaviour on exact and wrong draws
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [100, 300])
def test_exact_draws_give_u_mean_zero_and_v_its_known_bias(n):
    """Replicates of n exact N(0, I₃) draws with exact scores: the U-statistic's mean is within
    Z_MAX standard errors of KSD² = 0 and n·KSD_V²'s within Z_MAX of E k₀(x, x) = E‖x‖² + d = 2d
    (c = 1, β = −1/2, Γ = I; the off-diagonal terms have mean 0), so KSD_V falls like 1/√n."""
    d, reps, seed = 3, 100, 11 + n
    rng = np.random.default_rng(seed)
    u, nv2 = [], []
    for _ in range(reps):
        x = rng.normal(size=(n, d)).astype(np.float32)
        u.append(float(stein.ksd(x, -x, statistic="u")))
        nv2.append(n * float(stein.ksd(x, -x)) ** 2)
    mean, se = mean_and_se(u)
    assert abs(mean) < Z_MAX * se, f"n={n}: U mean {mean:.2e} ± {se:.1e}, seed {seed}"
    mean, se = mean_and_se(nv2)
    assert abs(mean - 2 * d) < Z_MAX * se, f"n={n}: n·E[KSD_V²] = {mean:.3f} ± {se:.3f}, want {2 * d}, seed {seed}"


def test_ksd_under_jit_and_vmap_with_traced_hyperparameters():
    """Vmapped over replicates and jitted, with c and β traced and the median scale computed in
    the trace, `ksd` gives the eager values; new c and β compile nothing."""
    x = np.random.default_rng(17).normal(size=(8, 100, 3)).astype(np.float32)
    u = lambda xi, c, beta: stein.ksd(xi, -xi, c=c, beta=beta, scale="median", statistic="u")
    traced = jax.jit(jax.vmap(u, in_axes=(0, None, None)))(x, 1.3, -0.3)
    for i in (0, 7):
        assert float(traced[i]) == pytest.approx(float(u(x[i], 1.3, -0.3)), rel=1e-4, abs=1e-6), f"replicate {i}, seed 17"
    stein.ksd(x[0], -x[0], c=1.3, beta=-0.3)
    compiled = stein._stein_sums._cache_size()
    stein.ksd(x[0], -x[0], c=2.0, beta=-0.6)
    assert stein._stein_sums._cache_size() == compiled


@pytest.mark.parametrize("wrong", ["shift 0.5", "scale 1.5"])
def test_wrong_draws_give_a_larger_ksd(wrong):
    """Draws from N(0.5, I₃) or N(0, 1.5²I₃) scored against the target N(0, I₃): KSD_V and the
    U-statistic are more than 10 standard errors (of their difference, over 20 replicates of
    n = 300) above those of exact draws."""
    rng = np.random.default_rng(13)
    good = {"v": [], "u": []}
    bad = {"v": [], "u": []}
    for _ in range(20):
        x = rng.normal(size=(300, 3)).astype(np.float32)
        y = (x + 0.5) if wrong == "shift 0.5" else 1.5 * x
        for statistic in ("v", "u"):
            good[statistic].append(float(stein.ksd(x, -x, statistic=statistic)))
            bad[statistic].append(float(stein.ksd(y, -y, statistic=statistic)))
    for statistic in ("v", "u"):
        (mg, sg), (mb, sb) = mean_and_se(good[statistic]), mean_and_se(bad[statistic])
        z = (mb - mg) / np.hypot(sg, sb)
        assert z > 10, f"{wrong}, {statistic}: {mb:.4f} vs {mg:.4f}, {z:.1f} standard errors apart, seed 13"


def test_noisy_scores_bias_v_and_leave_u_unbiased():
    """Exact draws, scores with independent N(0, τ²I) noise per draw: the U-statistic keeps mean
    0; the V-statistic's KSD² gains c^{2β} tr Cov / n = dτ²/n, so n·E[KSD_V²] = d(2 + τ²) (and
    the check can tell it from the noiseless 2d)."""
    d, n, tau, reps = 3, 100, 1.5, 100
    rng = np.random.default_rng(14)
    u, nv2 = [], []
    for _ in range(reps):
        x = rng.normal(size=(n, d)).astype(np.float32)
        s = -x + tau * rng.normal(size=(n, d)).astype(np.float32)
        u.append(float(stein.ksd(x, s, statistic="u")))
        nv2.append(n * float(stein.ksd(x, s)) ** 2)
    mean, se = mean_and_se(u)
    assert abs(mean) < Z_MAX * se, f"U mean {mean:.2e} ± {se:.1e}, seed 14"
    mean, se = mean_and_se(nv2)
    want = d * (2 + tau**2)
    assert abs(mean - want) < Z_MAX * se, f"n·V² {mean:.2f} ± {se:.2f}, want {want}, seed 14"
    assert abs(mean - 2 * d) > Z_MAX * se, f"n·V² {mean:.2f} ± {se:.2f} too close to {2 * d}, seed 14"


# ----------------------------------------------------------------------------------------------
# Pytrees and scale
# ----------------------------------------------------------------------------------------------


def test_pytree_draws_match_the_flattened_array(x64):
    """Each draw is its leaves raveled and concatenated in tree order ("b" before "w")."""
    rng = np.random.default_rng(15)
    n = 40
    tree = {"w": rng.normal(size=(n, 3)), "b": rng.normal(size=(n,))}
    scores = {"w": rng.normal(size=(n, 3)), "b": rng.normal(size=(n,))}
    flat = lambda t: np.concatenate([t["b"][:, None], t["w"]], axis=1)
    scale_tree = {"w": rng.uniform(0.5, 2.0, 3), "b": np.float64(3.0)}
    scale_flat = np.concatenate([[3.0], scale_tree["w"]])
    for scale_t, scale_f in ((None, None), (scale_tree, scale_flat), ("median", "median")):
        for statistic in ("v", "u"):
            got = stein.ksd(tree, scores, scale=scale_t, statistic=statistic, block_size=16)
            want = stein.ksd(flat(tree), flat(scores), scale=scale_f, statistic=statistic, block_size=16)
            assert float(got) == pytest.approx(float(want), rel=1e-13), (statistic, scale_f)
    # One array leaf of draws of shape (2, 2) takes a scale of that shape.
    x, s = flat(tree).reshape(n, 2, 2), flat(scores).reshape(n, 2, 2)
    got = stein.ksd(x, s, scale=scale_flat.reshape(2, 2), block_size=16)
    want = stein.ksd(flat(tree), flat(scores), scale=scale_flat, block_size=16)
    assert float(got) == pytest.approx(float(want), rel=1e-13)
    # Draws of a scalar parameter, shape (n,), are draws of d = 1.
    got = stein.ksd(tree["b"], scores["b"], block_size=1)
    assert float(got) == pytest.approx(np_statistics(tree["b"][:, None], scores["b"][:, None])[0], rel=1e-8)


def test_median_scale(x64):
    """ℓ = the median pairwise distance (scipy's pdist), over all draws when n <= 1000 and over
    1000 evenly spaced ones beyond."""
    rng = np.random.default_rng(16)
    x = rng.normal(size=(40, 4)) * 3.0
    ell2 = np.median(scipy.spatial.distance.pdist(x)) ** 2
    got = stein.ksd(x, -x / 9.0, scale="median", block_size=16)
    assert float(got) == pytest.approx(float(stein.ksd(x, -x / 9.0, scale=ell2, block_size=16)), rel=1e-12)
    x = rng.normal(size=(1100, 2)) * 3.0
    sub = x[np.unique(np.round(np.linspace(0, 1099, 1000)).astype(int))]
    ell2 = np.median(scipy.spatial.distance.pdist(sub)) ** 2
    *_, got = stein._prepare(x, -x, None, "median")  # (x, s, A, ℓ²)
    assert float(got) == pytest.approx(ell2, rel=1e-12)


def test_median_scale_of_constant_draws_is_an_error():
    x = np.ones((10, 3))
    with pytest.raises(ValueError, match="`scale`='median' needs a median pairwise distance > 0"):
        stein.ksd(x, -x, scale="median")


# ----------------------------------------------------------------------------------------------
# scores_from
# ----------------------------------------------------------------------------------------------


def _gaussian_log_posterior(precision, mean):
    def log_posterior(params, batch):
        theta = jnp.concatenate([params["a"], params["b"].ravel()])
        r = theta - mean - batch
        return -0.5 * r @ (precision @ r), {"unused": r}

    return log_posterior


def test_scores_from_a_gaussian_log_posterior_is_minus_precision_times_theta(x64):
    rng = np.random.default_rng(18)
    m = rng.normal(size=(5, 5))
    precision = m @ m.T + 5 * np.eye(5)  # Σ⁻¹
    log_posterior = _gaussian_log_posterior(jnp.asarray(precision), jnp.zeros(5))
    n = 10
    draws = {"a": jnp.asarray(rng.normal(size=(n, 1))), "b": jnp.asarray(rng.normal(size=(n, 2, 2)))}
    theta = np.concatenate([np.asarray(draws["a"]), np.asarray(draws["b"]).reshape(n, 4)], axis=1)
    want = -theta @ precision  # −Σ⁻¹θ per draw (Σ⁻¹ symmetric)
    for chunk_size in (3, 64):  # with a remainder chunk; larger than n
        scores = stein.scores_from(log_posterior, draws, jnp.zeros(5), chunk_size=chunk_size)
        got = np.concatenate([np.asarray(scores["a"]), np.asarray(scores["b"]).reshape(n, 4)], axis=1)
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13, err_msg=f"chunk_size={chunk_size}")
    # The same log posterior again compiles nothing.
    compiled = stein._scores._cache_size()
    stein.scores_from(log_posterior, draws, jnp.ones(5), chunk_size=3)
    assert stein._scores._cache_size() == compiled


def test_scores_from_divides_by_the_temperature(x64):
    """A `ScaledLogPosterior` of form "mean" (value = mean log-lik + log prior / N, sampled at
    T = 1/N) gives the scores of the posterior itself, those of the plain sum; a cold one
    (posterior temperature 0.5) those of p²; an explicit temperature divides the plain sum's."""
    rng = np.random.default_rng(19)
    data = jnp.asarray(rng.normal(size=(20, 2)))
    lik = lambda w, batch: -0.5 * jnp.sum((batch - w) ** 2, axis=-1)
    prior = lambda w: -0.5 * jnp.sum(w**2)
    draws = jnp.asarray(rng.normal(size=(7, 2)))
    want = np.sum(np.asarray(data), axis=0) - 21 * np.asarray(draws)  # Σ(y_i − w) − w
    by_mean = stein.scores_from(sghmc_jax.make_log_posterior(lik, prior, 20, form="mean"), draws, data)
    np.testing.assert_allclose(by_mean, want, rtol=1e-12)
    cold = sghmc_jax.make_log_posterior(lik, prior, 20, form="mean", temperature=0.5)
    np.testing.assert_allclose(stein.scores_from(cold, draws, data), 2 * want, rtol=1e-12)
    plain = lambda w, batch: (jnp.sum(lik(w, batch)) + prior(w), None)
    np.testing.assert_allclose(stein.scores_from(plain, draws, data), want, rtol=1e-12)
    np.testing.assert_allclose(stein.scores_from(plain, draws, data, temperature=2.0), want / 2, rtol=1e-12)


def test_scores_from_an_unhashable_log_posterior(x64):
    class LogPosterior:  # defines __eq__ without __hash__: cannot be a static jit argument
        __hash__ = None

        def __eq__(self, other):
            return self is other

        def __call__(self, w, batch):
            return -0.5 * jnp.sum((w - batch) ** 2), None

    draws = jnp.arange(6.0).reshape(3, 2)
    np.testing.assert_allclose(stein.scores_from(LogPosterior(), draws, jnp.ones(2)), 1.0 - draws)


def test_scores_from_per_draw_batches(x64):
    rng = np.random.default_rng(20)
    log_posterior = lambda w, batch: (-0.5 * jnp.sum((w - batch) ** 2), None)
    draws, batches = jnp.asarray(rng.normal(size=(9, 3))), jnp.asarray(rng.normal(size=(9, 3)))
    got = stein.scores_from(log_posterior, draws, batches, per_draw_batches=True, chunk_size=4)
    np.testing.assert_allclose(got, batches - draws, rtol=1e-14)


# ----------------------------------------------------------------------------------------------
# Validation: every bad argument is named, with the rule and the value, before anything compiles
# ----------------------------------------------------------------------------------------------

_X = np.random.default_rng(0).normal(size=(10, 3))
_LOG_POST = lambda w, batch: (-0.5 * jnp.sum(w**2), None)

BAD_KSD = [
    ({"scores": _X[:, :2]}, ValueError, r"`scores` must have the shapes of `draws`, got a leaf of shape \(10, 2\)"),
    ({"scores": {"a": _X}}, ValueError, "`scores` must have the structure"),
    ({"draws": _X[:1], "scores": _X[:1]}, ValueError, "n >= 2.*n=1"),
    ({"draws": {"a": _X, "b": _X[:5]}, "scores": {"a": _X, "b": _X[:5]}}, ValueError, r"same leading axis.*draws\['b'\]"),
    ({"draws": _X[0, 0], "scores": _X[0, 0]}, ValueError, "leading axis of draws"),
    ({"draws": _X + 1j, "scores": _X}, TypeError, "`draws` must hold real numbers.*complex128"),
    ({"scores": _X > 0}, TypeError, "`scores` must hold real numbers.*bool"),
    ({"draws": {}, "scores": {}}, ValueError, "`draws` must hold at least one array"),
    ({"c": 0.0}, ValueError, r"`c` must be finite and > 0, got c=0.0"),
    ({"c": float("nan")}, ValueError, "`c` must be finite"),
    ({"c": lambda step: 1.0}, TypeError, "`c` must be a real number"),
    ({"c": np.ones(2)}, ValueError, r"`c` must be a scalar, got an array of shape \(2,\)"),
    ({"beta": 0.0}, ValueError, r"`beta` must be finite and in \(-1, 0\), got beta=0.0"),
    ({"beta": -1.0}, ValueError, "`beta`.*got beta=-1.0"),
    ({"beta": 0.5}, ValueError, "`beta`.*got beta=0.5"),
    ({"statistic": "w"}, ValueError, "`statistic` must be 'v'.*got 'w'"),
    ({"statistic": "V"}, ValueError, "`statistic`.*got 'V'"),
    ({"statistic": None}, TypeError, "`statistic` must be the string 'v' or 'u', got NoneType"),
    ({"block_size": 0}, ValueError, "`block_size` must be an int >= 1, got block_size=0"),
    ({"block_size": 2.0}, TypeError, "`block_size` must be a Python int, got float: 2.0"),
    ({"block_size": True}, TypeError, "`block_size` must be a Python int, got bool"),
    ({"scale": -1.0}, ValueError, "`scale` must be finite and > 0.*got -1.0"),
    ({"scale": np.array([1.0, 0.0, 1.0])}, ValueError, r"`scale`.*got 0.0 at index \(1,\)"),
    ({"scale": np.array([1.0, np.inf, 1.0])}, ValueError, r"`scale` must be finite.*got inf at index \(1,\)"),
    ({"scale": np.ones(5)}, ValueError, "`scale` must be None.*length d=3.*shape \\(5,\\)"),
    ({"scale": "mean"}, ValueError, "`scale`.*'mean'"),
    ({"scale": {"a": 1.0}}, ValueError, "`scale`.*structure"),
    ({"draws": {"a": _X}, "scores": {"a": _X}, "scale": {"a": np.ones(2)}}, ValueError, r"`scale`.*shape \(2,\) stands for draws of shape \(3,\)"),
]


@pytest.mark.parametrize("kwargs, error, pattern", BAD_KSD)
def test_ksd_bad_arguments_fail_before_compiling(kwargs, error, pattern, monkeypatch):
    monkeypatch.setattr(stein, "_prepare", lambda *a, **k: pytest.fail("compiled"))
    monkeypatch.setattr(stein, "_stein_sums", lambda *a, **k: pytest.fail("compiled"))
    args = {"draws": _X, "scores": -_X} | kwargs
    with pytest.raises(error, match=pattern):
        stein.ksd(args.pop("draws"), args.pop("scores"), **args)


BAD_KERNEL = [
    ({"x": _X}, ValueError, r"`x` must be a flat vector.*got shape \(10, 3\)"),
    ({"y": _X[0, :2]}, ValueError, r"`y` must have the shape of `x`, \(3,\), got shape \(2,\)"),
    ({"score_y": np.array(["a", "b", "c"])}, TypeError, "`score_y` must hold real numbers"),
    ({"scale": "median"}, TypeError, "`scale`.*use `ksd`"),
    ({"scale": np.ones(2)}, ValueError, r"`scale`.*length d=3, got shape \(2,\)"),
    ({"scale": 0.0}, ValueError, "`scale` must be finite and > 0.*got 0.0"),
    ({"c": -1.0}, ValueError, "`c`.*c=-1.0"),
    ({"beta": -2.0}, ValueError, "`beta`.*beta=-2.0"),
]


@pytest.mark.parametrize("kwargs, error, pattern", BAD_KERNEL)
def test_stein_kernel_bad_arguments_fail_before_compiling(kwargs, error, pattern, monkeypatch):
    monkeypatch.setattr(stein, "_pair", lambda *a, **k: pytest.fail("compiled"))
    args = {"x": _X[0], "y": _X[1], "score_x": -_X[0], "score_y": -_X[1]} | kwargs
    with pytest.raises(error, match=pattern):
        stein.imq_stein_kernel(args.pop("x"), args.pop("y"), args.pop("score_x"), args.pop("score_y"), **args)


BAD_SCORES = [
    ({"log_posterior": None}, TypeError, "`log_posterior` must be a callable.*got NoneType"),
    ({"log_posterior": lambda w, b: -jnp.sum(w**2)}, TypeError, r"must return a tuple \(value, aux\)"),
    ({"log_posterior": lambda w, b: (w, None)}, TypeError, r"must return a scalar value.*shape \(3,\)"),
    ({"chunk_size": 0}, ValueError, "`chunk_size` must be an int >= 1, got chunk_size=0"),
    ({"temperature": 0.0}, ValueError, "`temperature` must be finite and > 0, got temperature=0.0"),
    ({"temperature": lambda step: 1.0}, TypeError, "`temperature` must be a real number.*not a schedule"),
    ({"draws": {"a": _X, "b": _X[:3]}}, ValueError, "`draws`.*same leading axis"),
    ({"draws": np.arange(10)[:, None]}, TypeError, "`draws` must be a floating-point array, got dtype int"),
    ({"per_draw_batches": True, "batch": np.ones((4, 3))}, ValueError, "`batch`.*n=10, got 4"),
    ({"per_draw_batches": 1}, TypeError, "`per_draw_batches` must be a bool"),
]


@pytest.mark.parametrize("kwargs, error, pattern", BAD_SCORES)
def test_scores_from_bad_arguments_fail_before_compiling(kwargs, error, pattern, monkeypatch):
    monkeypatch.setattr(stein, "_scores", lambda *a, **k: pytest.fail("compiled"))
    args = {"log_posterior": _LOG_POST, "draws": _X, "batch": None} | kwargs
    with pytest.raises(error, match=pattern):
        stein.scores_from(args.pop("log_posterior"), args.pop("draws"), args.pop("batch"), **args)
