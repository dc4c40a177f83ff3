"""The Gaussian noise generator: exact layout, exact transform, and N(0, 1) statistics.

The proof that the noise is standard normal has three parts:
1. the bits are JAX's own threefry2x32 hash of distinct counters (bit-for-bit against
   `jax.extend.random.threefry_2x32`), so they are as uniform and independent as JAX's;
2. the bits -> normal map is X = S·sqrt(−2 ln U)·cos(πV/2), exactly N(0, 1) for uniform U, V and
   a random sign S (half of Box–Muller), and its float32 implementation matches a float64
   evaluation of that formula to float32 accuracy, tails included (deterministic tests);
3. end to end, 10^7 draws pass a Kolmogorov–Smirnov test against the exact normal CDF, match the
   moments and the tail probabilities out to 5σ, and show no correlation across leaves, chains,
   steps or neighbouring elements, all with tolerances from standard errors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats
from jax.extend.random import threefry_2x32

from sghmc_jax import _noise, kernels

N_BIG = 10_000_000
Z_MAX = 5.0


def _key_words(key: jax.Array) -> np.ndarray:
    data = jax.random.key_data(key).astype(jnp.uint32)
    return np.asarray(threefry_2x32(data, jnp.asarray([0x5347484E, 0], jnp.uint32)))


def reference_noise(key: jax.Array, start: int, n: int) -> np.ndarray:
    """The documented layout in float64: counters start..start+n−1, from JAX's threefry."""
    k = jnp.asarray(_key_words(key))
    counters = np.arange(start, start + n, dtype=np.uint64)
    hi = jnp.asarray((counters >> np.uint64(32)).astype(np.uint32))
    lo = jnp.asarray((counters & np.uint64(0xFFFFFFFF)).astype(np.uint32))
    out = np.asarray(threefry_2x32(k, jnp.concatenate([hi, lo])))
    b0, b1 = out[:n].astype(np.float64), out[n:]
    u = (b0 + 0.5) / 2.0**32
    v = (b1 & 0x7FFFFFFF).astype(np.float64) / 2.0**31
    x = np.sqrt(-2.0 * np.log(u)) * np.cos(np.pi / 2 * v)
    return np.where(b1 >= 0x80000000, -x, x)


@pytest.fixture(scope="module")
def big_sample() -> np.ndarray:
    draws = _noise.normal_like(jax.random.key(2024), jnp.zeros(N_BIG, jnp.float32))
    return np.asarray(draws, np.float64)


def test_threefry_is_jaxs_threefry_bit_for_bit():
    rng = np.random.default_rng(0)
    key = rng.integers(0, 2**32, size=2, dtype=np.uint32)
    x0 = rng.integers(0, 2**32, size=1000, dtype=np.uint32)
    x1 = rng.integers(0, 2**32, size=1000, dtype=np.uint32)
    ours = _noise.threefry2x32(*map(jnp.asarray, (key[0], key[1], x0, x1)))
    ref = np.asarray(threefry_2x32(jnp.asarray(key), jnp.concatenate([jnp.asarray(x0), jnp.asarray(x1)])))
    np.testing.assert_array_equal(np.asarray(ours[0]), ref[:1000])
    np.testing.assert_array_equal(np.asarray(ours[1]), ref[1000:])


def _generator_paths(monkeypatch, small_leaf: int, bin_elements: int) -> None:
    """Switches the generator's thresholds (and drops normal_like's compiled cache)."""
    monkeypatch.setattr(_noise, "_SMALL_LEAF", small_leaf)
    monkeypatch.setattr(_noise, "_BIN_ELEMENTS", bin_elements)
    monkeypatch.setattr(_noise, "_MAX_BINS", 1 << 30)
    monkeypatch.setattr(_noise, "_normal_like_jit", jax.jit(_noise._normal_like))


PATHS = {
    "every-leaf-fused": (1, 1 << 20),
    "one-bin": (1 << 40, 1 << 40),
    "many-padded-bins": (1 << 40, 16),
    "mixed": (40, 64),
}


@pytest.mark.parametrize("path", list(PATHS))
def test_normal_like_follows_the_documented_flat_layout(monkeypatch, path):
    """Element c of the flattened tree is the transform of threefry(K, c), whichever generator
    path produced it (fused into each leaf, one shared bin, or a chain of padded bins)."""
    _generator_paths(monkeypatch, *PATHS[path])
    tree = {"a": jnp.zeros((3, 5)), "b": jnp.zeros(()), "c": jnp.zeros((7,)), "d": jnp.zeros((2, 3, 4)), "e": jnp.zeros(50)}
    key = jax.random.key(42)
    noise = _noise.normal_like(key, tree)
    flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(noise)])
    ref = reference_noise(key, 0, flat.size)
    np.testing.assert_allclose(flat, ref, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("path", list(PATHS)[1:])
def test_every_generator_path_gives_the_same_bits(monkeypatch, path):
    tree = [jnp.zeros((30, 7)), jnp.zeros(5), jnp.zeros((16, 16)), jnp.zeros(1), jnp.zeros((3, 40))]
    key = jax.random.key(5)
    _generator_paths(monkeypatch, *PATHS["every-leaf-fused"])
    fused = _noise.normal_like(key, tree)
    _generator_paths(monkeypatch, *PATHS[path])
    other = _noise.normal_like(key, tree)
    for a, b in zip(fused, other):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("num_leaves, fused_on_gpu", [(6, True), (_noise._FUSED_ON_ACCELERATORS + 1, False)])
def test_accelerators_fuse_the_generator_into_small_trees(num_leaves, fused_on_gpu):
    """The CPU runs one generator per bin; lowered for a GPU, a tree of few small leaves gets one
    generator per leaf (no conditional per bin), and a tree of many keeps the bins."""
    tree = [jnp.zeros((7, 3)) for _ in range(num_leaves)]
    traced = jax.jit(_noise._normal_like).trace(jax.random.key(0), tree)
    cpu = traced.lower(lowering_platforms=("cpu",)).as_text()
    gpu = traced.lower(lowering_platforms=("cuda",)).as_text()
    assert cpu.count("stablehlo.log") == 1  # one bin
    assert gpu.count("stablehlo.log") == (num_leaves if fused_on_gpu else 1)


def test_bins_grow_with_the_model_so_their_count_stays_bounded():
    """100 small leaves of 300k elements: bins of 2^20 would be 34 conditionals to compile;
    bins of 1/_MAX_BINS of the small leaves (6 leaves each) make 17 (one generator each)."""
    tree = [jax.ShapeDtypeStruct((300_000,), jnp.float32)] * 100
    text = jax.jit(_noise._normal_like).trace(jax.random.key(0), tree).lower().as_text()
    assert text.count("stablehlo.log") == 17 <= 2 * _noise._MAX_BINS + 1


@pytest.mark.parametrize("path", list(PATHS))
def test_sghmc_step_uses_the_same_noise_on_every_path(monkeypatch, path):
    """The kernel's noise is normal_like's: at T = 1, zero momenta and zero gradient the new
    momenta are sqrt(2αε)·ξ exactly."""
    _generator_paths(monkeypatch, *PATHS[path])
    tree = {"w": jnp.zeros((9, 4)), "b": jnp.zeros(4), "v": jnp.zeros((2, 50))}
    key = jax.random.key(21)
    _, m = jax.jit(kernels.sghmc_step)(tree, tree, key, 0.5, 2.0, 0.0, 1.0, 1.0)
    xi = _noise.normal_like(key, tree)
    for name in tree:
        np.testing.assert_allclose(m[name], np.sqrt(2.0) * xi[name], rtol=1e-6, err_msg=name)


def test_counters_carry_into_the_high_word():
    """A leaf whose counters cross 2**32 (offset near the top of the low word) hashes (1, c)."""
    k0, k1 = _noise.key_words(jax.random.key(3))
    start = 2**32 - 3
    got = np.asarray(_noise.leaf_noise(k0, k1, start, (6,), jnp.float32), np.float64)
    np.testing.assert_allclose(got, reference_noise(jax.random.key(3), start, 6), rtol=2e-6, atol=2e-6)


def test_leaves_of_the_same_shape_never_share_noise():
    tree = {"a": jnp.zeros((3, 2)), "b": jnp.zeros(3), "c": jnp.zeros((3, 2))}
    noise = _noise.normal_like(jax.random.key(0), tree)
    assert jax.tree.map(jnp.shape, noise) == jax.tree.map(jnp.shape, tree)
    assert not np.allclose(noise["a"], noise["c"])


def test_transform_matches_the_float64_formula_including_the_tails():
    """Deterministic: on bit patterns covering the centre and the deepest tail, the float32
    transform equals S·sqrt(−2 ln U)·cos(πV/2) evaluated in float64, to float32 accuracy."""
    rng = np.random.default_rng(1)
    b0 = np.concatenate([
        np.arange(0, 4096, dtype=np.uint32),  # U ≤ 2^-20: |X| from 5.3σ to 6.8σ
        rng.integers(0, 2**32, size=200_000, dtype=np.uint32),
        np.uint32(2**32 - 1) - np.arange(0, 4096, dtype=np.uint32),  # U → 1: X → 0
    ])
    b1 = rng.integers(0, 2**32, size=b0.size, dtype=np.uint32)
    got = np.asarray(_noise.normal_from_bits(jnp.asarray(b0), jnp.asarray(b1), jnp.float32), np.float64)
    u = (b0.astype(np.float64) + 0.5) / 2.0**32
    v = (b1 & 0x7FFFFFFF).astype(np.float64) / 2.0**31
    radius = np.sqrt(-2 * np.log(u))
    ref = np.where(b1 >= 0x80000000, -1, 1) * radius * np.cos(np.pi / 2 * v)
    # Away from the centre: float32 accuracy. Three roundings bound the error: U is rounded to
    # float32 (spacing 2^-24 near 1, moving R² by up to 2^-23, so R by 2^-24/R), V likewise (2^-24
    # relative) and cos(πV/2) is evaluated in float32 (~1e-7 absolute), each scaled by R.
    away = np.abs(ref) > 1e-2
    err = np.abs(got - ref)[away]
    bound = 2e-6 * np.abs(ref[away]) + 6e-7 * radius[away] + 2.0**-24 / radius[away]
    assert np.all(err <= bound), f"worst excess {np.max(err - bound):.3g} at |X| = {np.abs(ref[away])[np.argmax(err - bound)]:.3g}"
    # Everywhere: U is rounded to float32, whose spacing near 1 is 2^-24, so R² = −2 ln U can move
    # by up to 2^-23 when U is near 1. That only matters for |X| < 1e-3, and since R² ~ Exp(1/2)
    # has density <= 1/2 the CDF of X moves by at most ~6e-8: float32 accuracy in distribution.
    np.testing.assert_array_less(np.abs(got**2 - ref**2), 2.0**-22 + 5e-6 * ref**2)
    # The deepest draw: U = 2^-33 gives R = sqrt(66 ln 2) = 6.76, so the generator covers
    # N(0, 1) out to where it has mass 1.4e-11 left (jax.random.normal float32 stops near 5.2σ).
    r_max = float(_noise.normal_from_bits(jnp.uint32(0), jnp.uint32(0), jnp.float32))
    assert abs(r_max - np.sqrt(66 * np.log(2))) < 1e-5


def test_cos_polynomial_is_float32_exact():
    v = np.linspace(0.0, 1.0, 1_000_001)
    c = np.zeros_like(v)
    for coef in _noise._COS_HALF_PI[::-1]:
        c = c * v * v + coef
    assert np.max(np.abs(c - np.cos(np.pi / 2 * v))) < 1e-9


def test_float64_leaves_get_float64_noise(x64):
    noise = _noise.normal_like(jax.random.key(9), {"x": jnp.zeros(1000, jnp.float64)})
    assert noise["x"].dtype == jnp.float64
    np.testing.assert_allclose(noise["x"], reference_noise(jax.random.key(9), 0, 1000), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_leaves_are_the_rounded_float32_noise(dtype):
    key = jax.random.key(4)
    low = _noise.normal_like(key, jnp.zeros(100, dtype))
    high = _noise.normal_like(key, jnp.zeros(100, jnp.float32))
    assert low.dtype == dtype
    np.testing.assert_array_equal(low, high.astype(dtype))


def test_kolmogorov_smirnov_on_ten_million_draws(big_sample):
    """sqrt(n)·D against the Kolmogorov distribution at significance 1e-4 (seed 2024)."""
    x = np.sort(big_sample)
    cdf = scipy.special.ndtr(x)
    n = x.size
    d = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    limit = scipy.stats.kstwobign.isf(1e-4)
    assert np.sqrt(n) * d < limit, f"seed=2024 KS sqrt(n)·D = {np.sqrt(n) * d:.3f} >= {limit:.3f}"


def test_moments_on_ten_million_draws(big_sample):
    """E X^k for k = 1..4 against 0, 1, 0, 3 with standard errors sqrt(Var X^k / n)."""
    n = big_sample.size
    exact = {1: 0.0, 2: 1.0, 3: 0.0, 4: 3.0}
    variance = {1: 1.0, 2: 2.0, 3: 15.0, 4: 96.0}  # E X^2k − (E X^k)^2
    for k in exact:
        est = float(np.mean(big_sample**k))
        z = (est - exact[k]) / np.sqrt(variance[k] / n)
        assert abs(z) < Z_MAX, f"seed=2024 E X^{k} = {est:.6f} (exact {exact[k]}), z = {z:.2f}"


@pytest.mark.parametrize("t", [1.0, 2.0, 3.0, 4.0, 4.5, 5.0])
def test_tail_probabilities_on_ten_million_draws(big_sample, t):
    """P(X > t) and P(X < −t) against the normal tail, binomial standard errors."""
    n = big_sample.size
    p = scipy.special.ndtr(-t)
    se = np.sqrt(p * (1 - p) / n)
    for side, count in (("upper", np.sum(big_sample > t)), ("lower", np.sum(big_sample < -t))):
        z = (count / n - p) / se
        assert abs(z) < Z_MAX, f"seed=2024 P({side} tail beyond {t}) = {count / n:.3e} vs {p:.3e}, z = {z:.2f}"


def _corr_z(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation times sqrt(n): N(0, 1) under independence."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(np.corrcoef(a, b)[0, 1] * np.sqrt(a.size))


def test_no_correlation_across_leaves_and_neighbours(big_sample):
    tree = [jnp.zeros(1_000_000), jnp.zeros(1_000_000), jnp.zeros((1000, 1000))]
    a, b, c = _noise.normal_like(jax.random.key(6), tree)
    for x, y, what in ((a, b, "leaf 0 vs leaf 1"), (a, c, "leaf 0 vs leaf 2"), (b, c, "leaf 1 vs leaf 2")):
        z = _corr_z(x, y)
        assert abs(z) < Z_MAX, f"seed=6 {what}: correlation z = {z:.2f}"
    for lag in (1, 2, 7):
        z = _corr_z(big_sample[:-lag], big_sample[lag:])
        assert abs(z) < Z_MAX, f"seed=2024 lag-{lag} autocorrelation z = {z:.2f}"


def test_no_correlation_across_chains():
    keys = jax.random.split(jax.random.key(7), 8)
    draws = np.asarray(jax.vmap(lambda k: _noise.normal_like(k, jnp.zeros(200_000)))(keys))
    for i in range(8):
        for j in range(i + 1, 8):
            z = _corr_z(draws[i], draws[j])
            assert abs(z) < Z_MAX, f"seed=7 chains {i} and {j}: correlation z = {z:.2f}"


def test_no_correlation_across_steps():
    """Successive step keys of the optax face (its state key, split every step)."""
    key, draws = jax.random.key(8), []
    for _ in range(6):
        step_key, key = _noise.split_key(key)
        draws.append(np.asarray(_noise.normal_like(step_key, jnp.zeros(200_000))))
    for i in range(len(draws) - 1):
        z = _corr_z(draws[i], draws[i + 1])
        assert abs(z) < Z_MAX, f"seed=8 steps {i} and {i + 1}: correlation z = {z:.2f}"


def test_reproducible_from_the_key_in_any_form():
    shape = jnp.zeros((17, 3))
    typed = _noise.normal_like(jax.random.key(11), shape)
    np.testing.assert_array_equal(typed, _noise.normal_like(jax.random.key(11), shape))
    np.testing.assert_array_equal(typed, _noise.normal_like(jax.random.PRNGKey(11), shape))
    np.testing.assert_array_equal(typed, jax.jit(_noise.normal_like)(jax.random.key(11), shape))
    assert not np.allclose(typed, _noise.normal_like(jax.random.key(12), shape))


@pytest.mark.parametrize("impl", ["rbg", "unsafe_rbg"])
def test_other_key_implementations_give_standard_normals(impl):
    n = 1_000_000
    x = np.asarray(_noise.normal_like(jax.random.key(13, impl=impl), jnp.zeros(n)), np.float64)
    np.testing.assert_array_equal(x, np.asarray(_noise.normal_like(jax.random.key(13, impl=impl), jnp.zeros(n))))
    for k, exact, var in ((1, 0.0, 1.0), (2, 1.0, 2.0)):
        z = (np.mean(x**k) - exact) / np.sqrt(var / n)
        assert abs(z) < Z_MAX, f"seed=13 impl={impl}: E X^{k} z = {z:.2f}"


@pytest.mark.parametrize("partitionable", [True, False])
def test_split_key_is_jax_random_split_bit_for_bit(partitionable):
    with jax.threefry_partitionable(partitionable):
        for seed in (0, 1, 2**31 + 5):
            key = jax.random.key(seed)
            ref = jax.random.key_data(jax.random.split(key))
            for a, b in (_noise.split_key(key), jax.jit(_noise.split_key)(key)):
                np.testing.assert_array_equal(jax.random.key_data(a), ref[0])
                np.testing.assert_array_equal(jax.random.key_data(b), ref[1])
        keys = jax.random.split(jax.random.key(3), 4)
        a, b = jax.vmap(_noise.split_key)(keys)
        ref = jax.vmap(lambda k: jax.random.key_data(jax.random.split(k)))(keys)
        np.testing.assert_array_equal(jax.random.key_data(a), ref[:, 0])
        np.testing.assert_array_equal(jax.random.key_data(b), ref[:, 1])
    rbg = jax.random.key(0, impl="rbg")
    a, b = _noise.split_key(rbg)
    np.testing.assert_array_equal(jax.random.key_data(b), jax.random.key_data(jax.random.split(rbg))[1])


def test_a_donated_update_of_a_large_leaf_needs_no_temporary_buffer():
    """Structural, not timed: the generator fuses into the update, so XLA allocates nothing
    beyond params, momenta and gradient (the SGD-momentum floor's footprint)."""
    import optax
    import sghmc_jax

    params = jnp.zeros(1 << 21)
    tx = sghmc_jax.sghmc(1e-3, alpha=0.1, key=0)

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, tx.init(params), params).compile()
    memory = compiled.memory_analysis()
    assert memory.temp_size_in_bytes < 1 << 16, f"temporaries: {memory.temp_size_in_bytes} bytes"


def test_leaves_over_the_counter_range_are_refused():
    with pytest.raises(ValueError, match=r"at most 2\*\*32 - 1 elements, got a leaf of shape \(65536, 65536\)"):
        jax.eval_shape(_noise.normal_like, jax.random.key(0), jax.ShapeDtypeStruct((65536, 65536), jnp.float32))
