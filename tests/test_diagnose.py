"""`SampleResult.diagnose()` and the kinetic-energy trace behind it.

The target throughout: θ ∈ R^10 with log p(θ | batch) = −½ mean_{i ∈ batch} ‖x_i − θ‖², i.e.
N(x̄, I) on the full data (curvature 1). A minibatch of n of the N examples gives the gradient
x̄_B − θ, whose per-coordinate variance is exactly V_j = S_j² (1 − n/N) / n (S_j² the data's
variance with ddof 1, sampling without replacement), the same at every θ: so R is known in
closed form, and with `batch_size=N` it is 0.
"""

from __future__ import annotations

import doctest
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sghmc_jax
from sghmc_jax import _diagnose

N, D = 100, 10
SPREAD = 20.0  # sd of the data: batch size 1 then adds gradient noise of variance ~400


def _data() -> jax.Array:
    x = np.random.default_rng(0).normal(size=(N, D)) * SPREAD
    return jnp.asarray(x - x.mean(axis=0), jnp.float32)  # x̄ = 0: the target is N(0, I)


DATA = _data()


def log_post(theta, batch):
    return -0.5 * jnp.mean(jnp.sum((batch - theta) ** 2, axis=-1)), None


def exact_v(batch_size: int) -> np.ndarray:
    return np.var(np.asarray(DATA, np.float64), axis=0, ddof=1) * (1 - batch_size / N) / batch_size


def sghmc_factory(key):
    return sghmc_jax.sghmc(0.05, alpha=1.0, key=key)


def run(transform, batch_size=N, num_steps=5000, burn_in=1000, **kw):
    return sghmc_jax.sample(
        1, log_post, jnp.zeros(D), transform=transform, num_steps=num_steps, burn_in=burn_in,
        num_chains=4, data=DATA, batch_size=batch_size, thin=5, progress=False, **kw,
    )


@pytest.fixture(scope="module")
def clean():
    """SGHMC, full batch: no gradient noise; ε = 0.05, α = 1."""
    return run(sghmc_factory)


@pytest.fixture(scope="module")
def noisy():
    """The same SGHMC with batch size 1: R = εV/(2αT) ≈ 0.05·396/2 ≈ 10, far from small."""
    return run(sghmc_factory, batch_size=1)


@pytest.fixture(scope="module")
def sgld_runs():
    """SGLD on N(0, I), full batch, at a small and a too-large step."""
    return {
        lr: sghmc_jax.sample(
            2, log_post, jnp.zeros(D), transform=sghmc_jax.sgld(lr, key=0), num_steps=5100, burn_in=100,
            thin=20, num_chains=4, data=DATA, batch_size=N, progress=False,
        )
        for lr in (0.1, 1.0)
    }


def rows(table, name):
    return [r for r in table.rows if r.diagnostic == name]


# ---- the trace --------------------------------------------------------------------------------


def test_kinetic_trace_is_the_mean_square_of_the_momenta(clean):
    assert clean.kinetic.shape == clean.log_posterior.shape == (4, 5000)
    momenta = np.asarray(clean.final_state.transform_state.momenta)
    np.testing.assert_allclose(clean.kinetic[:, -1], np.mean(momenta**2, axis=1), rtol=1e-6)
    assert clean.sampler == "sghmc" and clean.hyperparameters["lr"] == 0.05


def test_kinetic_trace_is_streamed_to_the_store(tmp_path):
    memory = run(sghmc_factory, num_steps=300, burn_in=100)
    stored = run(sghmc_factory, num_steps=300, burn_in=100, output=tmp_path / "draws")
    np.testing.assert_array_equal(np.asarray(stored.kinetic), memory.kinetic)
    np.testing.assert_array_equal(np.asarray(stored.samples), np.asarray(memory.samples))


# ---- 1. kinetic temperature -------------------------------------------------------------------


def test_kinetic_temperature_passes_a_clean_run(clean):
    # Per chain: 4000 steps after burn-in, d = 10, τ ≈ 1/(εα) = 20 steps, so the MCSE is ~0.07:
    # a 10% deviation is already > 1 MCSE, and an exact run flags only past 3 MCSE (p ≈ 0.003).
    # The discretisation bias of the momenta at εα = 0.05 is a few percent.
    table = clean.diagnose()
    kinetic = rows(table, "kinetic temperature")
    assert [r.chain for r in kinetic] == [0, 1, 2, 3]
    assert all(r.verdict == "ok" for r in kinetic), table
    assert all(abs(r.value - 1) < 0.1 for r in kinetic), table


def test_kinetic_temperature_flags_hidden_gradient_noise(noisy):
    # Predicted T̂_K ≈ T(1 + R) ≈ 11: ~140 MCSE away, at any seed.
    table = noisy.diagnose()
    kinetic = rows(table, "kinetic temperature")
    assert all(r.verdict == "FLAG" and r.value > 3 for r in kinetic), table
    assert "lower lr, raise alpha, or set beta" in str(table)


def test_kinetic_temperature_is_not_applicable_without_momenta(sgld_runs):
    result = sgld_runs[0.1]
    assert np.all(np.isnan(result.kinetic))
    (row,) = rows(result.diagnose(), "kinetic temperature")
    assert row.verdict == "n/a" and "not applicable" in row.note


# ---- 2. noise ratio ---------------------------------------------------------------------------


def test_noise_ratio_flags_a_tiny_batch_and_matches_the_closed_form(noisy):
    (row,) = rows(noisy.diagnose(), "noise ratio R")
    exact = 0.05 * exact_v(1) / 2  # εV/(2αT), α = T = 1
    assert row.verdict == "FLAG"
    # V is averaged over 16 draws × 16 minibatches (15 dof each) and 10 coordinates: the mean
    # R's relative sd is ~sqrt(2/(16·15·10)) ≈ 3% for Gaussian data; 20% is > 6 sd.
    assert abs(row.value / exact.mean() - 1) < 0.2, (row.value, exact.mean())
    assert row.error >= row.value  # the max over coordinates


def test_noise_ratio_passes_full_batch(clean):
    (row,) = rows(clean.diagnose(), "noise ratio R")
    assert row.verdict == "ok" and row.value < 1e-9  # every minibatch is the whole data (up to rounding)


def test_noise_ratio_passes_a_moderate_batch_and_scales_with_lr(clean):
    # The clean run's draws, asked about minibatches of 50 (overrides): V ≈ 400·(1 − 1/2)/50 = 4,
    # so R = εV/2 ≈ 0.02 at ε = 0.01 (5× under the threshold) and ≈ 1 at ε = 0.5 (10× over).
    for lr in (0.01, 0.5):
        (row,) = rows(clean.diagnose(batch_size=50, lr=lr), "noise ratio R")
        exact = lr * exact_v(50).mean() / 2
        assert row.verdict == ("ok" if lr == 0.01 else "FLAG"), row
        assert abs(row.value / exact - 1) < 0.2, (lr, row.value, exact)


def test_baoa_full_batch_passes_and_its_noise_ratio_uses_the_exact_ou_noise():
    # BAOA at ε = 0.1, γ = 1, full batch: the kinetic temperature is T up to O(ε²) (MCSE ≈ 0.035
    # per chain over 4000 steps); asked about minibatches of 10, R = ε²V/(σ²T(1 − e^{−2γε})) ≈ 1.9.
    result = run(lambda k: sghmc_jax.baoa(0.1, alpha=1.0, key=k))
    table = result.diagnose()
    assert all(r.verdict == "ok" for r in table.rows if r.diagnostic != "KSD"), table
    (row,) = rows(result.diagnose(batch_size=10), "noise ratio R")
    exact = 0.1**2 * exact_v(10).mean() / (1 - math.exp(-2 * 0.1))
    assert row.verdict == "FLAG" and abs(row.value / exact - 1) < 0.2, (row.value, exact)


def test_noise_ratio_of_psgld_uses_the_preconditioner():
    # A frozen preconditioner (decay 1) of V_0 = 4: G = 1/(λ + 2), so R = εGV/(2T) ≈ 0.05·4/(2·2).
    result = run(
        lambda k: sghmc_jax.psgld(0.05, decay=1.0, initial_scale=4.0, key=k), num_steps=300, burn_in=100
    )
    (row,) = rows(result.diagnose(batch_size=50), "noise ratio R")
    exact = 0.05 * exact_v(50).mean() / (2 * (2 + 1e-5))
    assert row.verdict == "ok" and abs(row.value / exact - 1) < 0.2, (row.value, exact)


# ---- 3. KSD ---------------------------------------------------------------------------------


def test_ksd_is_larger_for_a_biased_step(sgld_runs):
    # SGLD on N(0, I), full batch: the stationary variance is 2/(2 − ε), 1.05 at ε = 0.1 and 2 at
    # ε = 1, thinned by 20 (autocorrelation 0.9^20 ≈ 0.12 at ε = 0.1), 1000 draws each. Under
    # exact independent draws KSD_V ≈ the row's reference √((E‖s‖² + d)/n) = √(2d/n) ≈ 0.14;
    # N(0, 2I) has a population KSD² of ≈ 0.05 on top of its own reference (measured: 0.140,
    # reference 0.143, against 0.269), far more than the fluctuations of KSD² at n = 1000.
    def ksd(lr):
        (row,) = rows(sgld_runs[lr].diagnose(), "KSD")
        assert row.verdict == "-" and math.isfinite(row.value) and row.error > 0
        return row.value, row.error

    small, reference = ksd(0.1)
    large, _ = ksd(1.0)
    assert small < 1.3 * reference and large > 1.5 * small, (small, large, reference)


# ---- hyperparameters, overrides, the table ----------------------------------------------------


def test_wrapped_transform_says_what_is_missing_and_takes_overrides():
    result = run(lambda k: optax.chain(sghmc_factory(k)), num_steps=600, burn_in=100)
    assert result.sampler is None and np.all(np.isfinite(result.kinetic))  # momenta found inside
    table = result.diagnose()
    (kinetic,) = rows(table, "kinetic temperature")
    (noise,) = rows(table, "noise ratio R")
    assert kinetic.verdict == noise.verdict == "n/a"
    assert "sigma=" in kinetic.note and "temperature=" in kinetic.note and "optax.chain" in kinetic.note
    assert "lr=" in noise.note and "alpha=" in noise.note
    given = result.diagnose(lr=0.05, alpha=1.0, sigma=1.0, temperature=1.0)
    assert all(r.verdict in ("ok", "-") for r in given.rows), given
    assert len(rows(given, "kinetic temperature")) == 4


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"lr": -1.0}, ValueError, "lr"),
        ({"alpha": float("nan")}, ValueError, "alpha"),
        ({"sigma": 0.0}, ValueError, "sigma"),
        ({"temperature": "hot"}, TypeError, "temperature"),
        ({"beta": optax.constant_schedule(1.0)}, TypeError, "beta"),
        ({"sampler": "hmc"}, ValueError, "sampler"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"noise_threshold": -0.1}, ValueError, "noise_threshold"),
    ],
)
def test_bad_overrides_raise_naming_the_argument(clean, kwargs, error, name):
    with pytest.raises(error, match=f"`{name}`"):
        clean.diagnose(**kwargs)


def test_the_table_prints_one_line_per_row_and_the_advice(noisy):
    table = noisy.diagnose()
    text = str(table)
    assert text.splitlines()[0].startswith("diagnostic")
    assert len(text.splitlines()) >= 1 + len(table.rows)
    assert not table.ok and len(table.flagged) == 5  # 4 chains' temperatures and R
    assert repr(table) == text


def test_transforms_say_what_they_are():
    tx = sghmc_jax.ubu(0.1, alpha=2.0, key=0)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    assert tx.sampler == "ubu" and tx.hyperparameters["alpha"] == 2.0
    init, update = tx  # still a pair
    assert callable(init) and callable(update)


def test_docstring_example():
    assert doctest.testmod(_diagnose, optionflags=doctest.ELLIPSIS).failed == 0
