"""Tests of `sghmc_jax.diagnostics` against ArviZ, plus validation, dtype, jit and summary tests.

ArviZ is the reference implementation of Vehtari et al. (2021) in Python. The calls used,

    az.rhat(x, method="rank"), az.rhat(x, method="split"),
    az.ess(x, method="bulk"), az.ess(x, method="tail", prob=(0.05, 0.95)),
    az.ess(x, method="mean"), az.mcse(x, method="mean"),

with `x` a NumPy array of shape (chain, draw), work with ArviZ 0.23.4 (the newest release for
Python 3.11, checked here) and with ArviZ 1.x, whose `arviz` namespace re-exports
`arviz_stats.rhat/ess/mcse` (Python >= 3.12; its array layer, arviz_stats 1.3.3, gives the same
numbers). `prob` is passed explicitly for the tail ESS because the 1.x array interface requires
it. The algorithm is the same in both: Stan's, which `diagnostics` reproduces with masks instead
of loops, so in float64 the two agree to rounding error (about 1e-14 relative).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

with warnings.catch_warnings():
    # ArviZ 0.x announces its 1.0 refactor with a FutureWarning at import.
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

from sghmc_jax import diagnostics

CHAINS, DRAWS = 4, 500
_SEEDS = {"iid": 0, "ar1": 1, "antithetic": 2, "shifted_means": 3, "cauchy": 4, "ties": 5}
KINDS = list(_SEEDS)


def _ar1(rng: np.random.Generator, phi: float, shape: tuple[int, int]) -> np.ndarray:
    """AR(1) chains x_t = phi x_{t-1} + e_t started from the stationary distribution."""
    noise = rng.normal(size=shape)
    noise[:, 0] /= np.sqrt(1 - phi**2)
    return scipy.signal.lfilter([1.0], [1.0, -phi], noise, axis=1)


def _dataset(kind: str, shape: tuple[int, int] = (CHAINS, DRAWS)) -> np.ndarray:
    rng = np.random.default_rng([_SEEDS[kind], *shape])
    if kind == "iid":
        return rng.normal(size=shape)
    if kind == "ar1":
        return _ar1(rng, 0.9, shape)
    if kind == "antithetic":
        # Negatively autocorrelated chains have ESS > S, which exercises Stan's S*log10(S) cap.
        return _ar1(rng, -0.7, shape)
    if kind == "shifted_means":
        return rng.normal(size=shape) + np.arange(shape[0])[:, None]
    if kind == "cauchy":
        return rng.standard_cauchy(size=shape)
    if kind == "ties":
        return np.round(rng.normal(size=shape))
    raise AssertionError(kind)


def _arviz(x: np.ndarray) -> dict[str, float]:
    with warnings.catch_warnings():
        # ArviZ warns on the Cauchy draws' overflowing variance and on 1-chain R-hat.
        warnings.simplefilter("ignore")
        return {
            "rhat": float(az.rhat(x, method="rank")),
            "split_rhat": float(az.rhat(x, method="split")),
            "ess_bulk": float(az.ess(x, method="bulk")),
            "ess_tail": float(az.ess(x, method="tail", prob=(0.05, 0.95))),
            "ess_mean": float(az.ess(x, method="mean")),
            "mcse_mean": float(az.mcse(x, method="mean")),
        }


FUNCTIONS: dict[str, Callable[[Any], jax.Array]] = {
    "rhat": diagnostics.rhat,
    "split_rhat": diagnostics.split_rhat,
    "ess_bulk": diagnostics.ess_bulk,
    "ess_tail": diagnostics.ess_tail,
    "ess_mean": diagnostics.ess_mean,
    "mcse_mean": diagnostics.mcse_mean,
}


def _ours(x: Any) -> dict[str, float]:
    return {name: float(f(x)) for name, f in FUNCTIONS.items()}


def _assert_close(ours: dict[str, float], ref: dict[str, float], rtol: float) -> None:
    for name, expected in ref.items():
        if np.isnan(expected):
            assert np.isnan(ours[name]), name
            continue
        np.testing.assert_allclose(ours[name], expected, rtol=rtol, err_msg=name)


@pytest.fixture
def float64() -> Iterator[None]:
    """Enables float64 in JAX for one test and restores the previous setting."""
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.mark.parametrize("kind", KINDS)
def test_matches_arviz_float64(kind: str, float64: None) -> None:
    x = _dataset(kind)
    ours = _ours(x)
    _assert_close(ours, _arviz(x), rtol=1e-9)
    assert diagnostics.rhat(x).dtype == jnp.float64
    if kind == "shifted_means":
        assert ours["rhat"] > 1.2 and ours["split_rhat"] > 1.2
    elif kind in ("iid", "ties"):
        assert ours["rhat"] < 1.01
    if kind == "ar1":
        # phi = 0.9 means tau = (1 + phi) / (1 - phi) = 19: the ESS is far below S = 2000.
        assert ours["ess_bulk"] < 250 and ours["ess_mean"] < 250
    if kind == "antithetic":
        # phi = -0.7 gives tau = 0.3 / 1.7 < 1 / log10(S): Stan's antithetic cap applies.
        size = CHAINS * DRAWS
        np.testing.assert_allclose(ours["ess_mean"], size * np.log10(size), rtol=1e-12)


@pytest.mark.parametrize(
    ("kind", "shape"),
    [
        # One chain of odd length: the middle draw is dropped when splitting, and with 5 draws
        # per half only two lag pairs are available, so Geyer's truncation runs out of lags.
        ("ar1", (1, 11)),
        ("antithetic", (1, 11)),
    ],
)
def test_matches_arviz_float64_short_chain(
    kind: str, shape: tuple[int, int], float64: None
) -> None:
    x = _dataset(kind, shape)
    ref = _arviz(x)
    ours = _ours(x)
    # ArviZ wants 2 chains before splitting for R-hat; the two halves suffice here (as in Stan).
    assert np.isnan(ref.pop("rhat")) and np.isnan(ref.pop("split_rhat"))
    assert np.isfinite(ours["rhat"]) and np.isfinite(ours["split_rhat"])
    _assert_close(ours, ref, rtol=1e-9)


@pytest.mark.parametrize("kind", ["iid", "ar1", "shifted_means", "cauchy", "ties"])
def test_matches_arviz_float32(kind: str) -> None:
    x = _dataset(kind).astype(np.float32)
    ours = _ours(x)
    assert diagnostics.ess_bulk(x).dtype == jnp.float32
    # ArviZ computes in float64 on the same float32 values; what is left is float32 rounding.
    # Observed differences on these draws are below 2e-6. Larger ones are possible: S is
    # always even after splitting, so the median is the midpoint of the two middle draws,
    # whose folded values tie in float64 but may not after float32 rounding; that moves two
    # extreme ranks of the folded draws by 1/2 (seen up to 2e-5 on other AR(1) draws of this
    # size and 1e-3 with 80 draws).
    _assert_close(ours, _arviz(x.astype(np.float64)), rtol=1e-4)


def test_constant_and_nan_draws(float64: None) -> None:
    constant = np.ones((1, 11))
    ref = _arviz(constant)
    for name in ("ess_bulk", "ess_tail", "ess_mean"):
        # ArviZ (and so we) report S = 10 split draws for constant chains rather than 0 / 0.
        assert float(FUNCTIONS[name](constant)) == ref[name] == 10.0
    assert np.isnan(float(diagnostics.rhat(constant)))
    with_nan = _dataset("iid").copy()
    with_nan[1, 7] = np.nan
    for name, f in FUNCTIONS.items():
        assert np.isnan(float(f(with_nan))), name


def test_integer_draws_are_converted_to_float() -> None:
    ints = np.round(_dataset("ties") * 3).astype(np.int32)
    default_float = jax.dtypes.canonicalize_dtype(np.float64)  # float32 unless x64 is enabled
    for name, f in FUNCTIONS.items():
        got = f(ints)
        assert got.dtype == default_float, name
        np.testing.assert_allclose(got, f(ints.astype(default_float)), rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("shape", [(3,), (2, 3), (0, 10), (2, 10, 1)])
def test_bad_shape_raises(name: str, shape: tuple[int, ...]) -> None:
    expected = r"`draws` must have shape \(chain, draw\).*draw >= 4"
    with pytest.raises(ValueError, match=expected) as info:
        FUNCTIONS[name](np.zeros(shape))
    assert f"got shape {shape}" in str(info.value)


def test_complex_draws_raise() -> None:
    with pytest.raises(TypeError, match="`draws` must be real-valued"):
        diagnostics.rhat(np.zeros((2, 10), dtype=np.complex64))


def test_jit_and_vmap() -> None:
    x = jnp.asarray(_dataset("ar1"), jnp.float32)
    for f in (diagnostics.rhat, diagnostics.ess_tail):
        np.testing.assert_allclose(jax.jit(f)(x), f(x), rtol=1e-6)
    stacked = jnp.stack([x, x + 2 * jnp.arange(CHAINS, dtype=x.dtype)[:, None]])
    batched = jax.vmap(diagnostics.rhat)(stacked)
    np.testing.assert_allclose(batched[0], diagnostics.rhat(x), rtol=1e-6)
    assert batched[1] > 1.5


class _Params(NamedTuple):
    w: Any
    b: Any


def test_summary_pytree(float64: None) -> None:
    rng = np.random.default_rng(7)
    # Six AR(1) parameters of shape (2, 3), one scalar and one empty leaf: 2 chains x 40 draws.
    w = _ar1(rng, 0.5, (2 * 6, 40)).reshape(2, 6, 40).transpose(0, 2, 1).reshape(2, 40, 2, 3)
    samples = {
        "scale": rng.normal(size=(2, 40)),
        "layer": [_Params(w=w, b=np.ones((2, 40, 0)))],
    }
    out = diagnostics.summary(samples)
    assert list(out) == ["layer.0.w", "layer.0.b", "scale"]
    stats = {"mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "rhat"}
    assert all(set(v) == stats for v in out.values())
    assert all(isinstance(a, np.ndarray) for v in out.values() for a in v.values())
    assert out["scale"]["rhat"].shape == ()
    assert out["layer.0.w"]["ess_bulk"].shape == (2, 3)
    assert out["layer.0.b"]["mean"].shape == (0,)
    per_param = {("scale", ()): samples["scale"]}
    for i, j in np.ndindex(2, 3):
        per_param[("layer.0.w", (i, j))] = w[:, :, i, j]
    for (name, index), draws in per_param.items():
        ref = _arviz(draws) | {"mean": draws.mean(), "sd": draws.std(ddof=1)}
        got = {k: float(out[name][k][index]) for k in stats}
        _assert_close(got, {k: ref[k] for k in stats}, rtol=1e-9)


def test_summary_single_array_names_and_errors(float64: None) -> None:
    # Trailing size 7 in float64, as in test_summary_pytree, so the batch compiles once.
    x = _dataset("iid", (2, 280)).reshape(2, 40, 7)
    out = diagnostics.summary(x)
    assert list(out) == ["params"] and out["params"]["rhat"].shape == (7,)
    collide = diagnostics.summary({"a.b": x[..., :3], "a": {"b": x[..., 3:]}})
    assert list(collide) == ["['a']['b']", "['a.b']"]
    np.testing.assert_array_equal(collide["['a.b']"]["ess_bulk"], out["params"]["ess_bulk"][:3])
    with pytest.raises(
        ValueError, match=r"`samples` leaves must have shape.*got shape \(40,\) for leaf 'a'"
    ):
        diagnostics.summary({"a": np.zeros(40)})
    with pytest.raises(ValueError, match=r"`samples`.*draw >= 4, got shape \(2, 3, 5\)"):
        diagnostics.summary({"a": np.zeros((2, 3, 5))})


def test_summary_warns_naming_chains_that_share_their_noise():
    """Issue 18, item 3: `jax.vmap(tx.init)(params)` with one construction key and no per-step
    key gives bit-identical chains, whose R-hat reads 1.00; the per-chain key pattern does not."""
    import optax

    import sghmc_jax

    tx = sghmc_jax.sghmc(0.1, alpha=1.0, key=0)
    grad = jax.grad(lambda p: 0.5 * jnp.sum(p**2))
    params = jnp.zeros((4, 3))

    def run(per_chain_keys):
        state = jax.vmap(tx.init)(params)

        def step(carry, i):
            p, s = carry
            if per_chain_keys:
                keys = jax.vmap(lambda c: jax.random.fold_in(jax.random.fold_in(jax.random.key(1), c), i))(jnp.arange(4))
                u, s = jax.vmap(lambda g, s, k: tx.update(g, s, key=k))(jax.vmap(grad)(p), s, keys)
            else:
                u, s = jax.vmap(tx.update)(jax.vmap(grad)(p), s)
            p = optax.apply_updates(p, u)
            return (p, s), p

        return np.moveaxis(np.asarray(jax.lax.scan(step, (params, state), jnp.arange(400))[1]), 0, 1)

    with pytest.warns(diagnostics.IdenticalChainsWarning, match="chains 0, 1, 2, 3 have identical draws"):
        stats = diagnostics.summary({"w": run(False)})
    assert np.all(np.isfinite(stats["w"]["rhat"]))  # computed as if the copies were independent
    assert diagnostics.identical_chains(run(False)) == [(0, 1, 2, 3)]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", diagnostics.IdenticalChainsWarning)
        diagnostics.summary({"w": run(True)})


def test_near_copies_are_identical_chains_and_independent_chains_are_not():
    """Regression (a new user's loop): chains sharing their noise from starts 1e-3 apart
    contract onto each other within 1e-6 and were not flagged, the check being bitwise."""
    import optax

    import sghmc_jax

    tx = sghmc_jax.sghmc(0.1, alpha=2.0, key=0)
    params = 1e-3 * jnp.arange(4.0)[:, None] * jnp.ones((4, 3))
    state = jax.vmap(tx.init)(params)

    @jax.jit
    def step(params, state):
        grads = params - 1.0  # the loss ½‖θ − 1‖²
        updates, state = jax.vmap(tx.update)(grads, state, params)
        return optax.apply_updates(params, updates), state

    draws = []
    for _ in range(300):
        params, state = step(params, state)
        draws.append(params)
    draws = np.stack(draws[100:], axis=1)
    assert not np.array_equal(draws[0], draws[1])  # not bitwise copies
    assert diagnostics.identical_chains(draws) == [(0, 1, 2, 3)]
    with pytest.warns(diagnostics.IdenticalChainsWarning, match="chains 0, 1, 2, 3"):
        diagnostics.summary(draws)
    rng = np.random.default_rng(3)
    for shape in ((8, 1000, 30), (4, 50), (2, 6, 2000)):
        assert diagnostics.identical_chains(rng.normal(size=shape)) == [], shape
