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
from sghmc_jax._sampler import diagnose as _diagnose
from sghmc_jax._sampler.scores import _ordinal

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
    assert "lower lr, raise batch_size, raise alpha, or set beta" in str(table)


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
    # ε = 1. The row is the U-statistic of KSD² on near-independent draws: ~0 for exact draws
    # (its null sd at ~1000 draws in d = 10 is ~0.002, measured over 300 sets of 50 draws: 0.024,
    # scaling as 1/m), while N(0, 2I) has a population KSD² of ≈ 0.05.
    def ksd(lr):
        (row,) = rows(sgld_runs[lr].diagnose(), "KSD")
        assert row.verdict == "-" and math.isfinite(row.value) and row.error > 0
        return row.value, row.error

    small, reference = ksd(0.1)
    large, _ = ksd(1.0)
    assert abs(small) < reference and large > 0.025 and large > small + 0.02, (small, large, reference)


def test_ksd_ranks_an_autocorrelated_exact_chain_above_a_too_wide_one():
    """Issue 18, item 9: one chain each; the exact one (SGLD at ε = 0.004 on N(0, I), τ ≈ 250
    steps, draws every step) is strongly autocorrelated, the 1.8×-too-wide one (ε = 2 − 2/1.8²)
    nearly independent. On ESS-thinned draws the U-statistic is unbiased for the population KSD²
    whatever the number of draws: ≈ 0 (null sd ≈ 0.024 at 50 draws) against ≈ 0.1."""
    data = jnp.zeros((10, D))
    lp = lambda th, b: (-0.5 * jnp.sum(th**2), None)  # noqa: E731
    values = {}
    for name, lr in (("exact", 0.004), ("wide", 2 - 2 / 1.8**2)):
        result = sghmc_jax.sample(
            1, lp, jnp.zeros(D), num_chains=1, num_steps=41000, burn_in=1000, transform=sghmc_jax.sgld(lr, key=3),
            data=data, batch_size=10, progress=False,
        )
        (row,) = rows(result.diagnose(), "KSD")
        assert "every" in row.note and "U-statistic" in row.note, row
        values[name] = row.value
    assert abs(values["exact"]) < 0.1 and values["exact"] < values["wide"] - 0.05, values


# ---- hyperparameters, overrides, the table ----------------------------------------------------


def test_wrapped_transform_says_what_is_missing_and_takes_overrides():
    # (Long enough that the kinetic temperature's MCSE fits in its ±10% band: a 500-step run's
    # does not, and that row is then flagged as too uncertain, rightly.)
    result = run(lambda k: optax.chain(sghmc_factory(k)), num_steps=3000, burn_in=500)
    assert result.sampler is None and np.all(np.isfinite(result.kinetic))  # momenta found inside
    table = result.diagnose()
    (kinetic,) = rows(table, "kinetic temperature")
    (noise,) = rows(table, "noise ratio R")
    assert kinetic.verdict == noise.verdict == "n/a"
    assert "sigma=" in kinetic.note and "temperature=" in kinetic.note and "optax.chain" in kinetic.note
    assert "lr=" in noise.note and "alpha=" in noise.note
    given = result.diagnose(lr=0.05, alpha=1.0, sigma=1.0, temperature=1.0)
    checks = ("kinetic temperature", "noise ratio R", "KSD")
    assert all(r.verdict in ("ok", "-") for r in given.rows if r.diagnostic in checks), given
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
    assert not table.ok
    assert {r.diagnostic for r in table.flagged} >= {"kinetic temperature", "noise ratio R"}, table
    assert repr(table) == text


def test_transforms_say_what_they_are():
    tx = sghmc_jax.ubu(0.1, alpha=2.0, key=0)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    assert tx.sampler == "ubu" and tx.hyperparameters["alpha"] == 2.0
    init, update = tx  # still a pair
    assert callable(init) and callable(update)


def test_docstring_example():
    assert doctest.testmod(_diagnose, optionflags=doctest.ELLIPSIS).failed == 0


# ---- issue 18: runs diagnose() must not pass, and runs it must not crash on ---------------------


def _copies_of_chain_0(result):
    """The result with every chain replaced by chain 0: what shared noise gives."""
    import dataclasses

    def rep(x):
        x = np.asarray(x)
        return np.repeat(x[:1], x.shape[0], axis=0)

    return dataclasses.replace(
        result, samples=jax.tree.map(rep, result.samples), log_posterior=rep(result.log_posterior),
        kinetic=rep(result.kinetic),
    )


def test_identical_chains_are_flagged_by_diagnose_summary_and_to_arviz(clean):
    shared = _copies_of_chain_0(clean)
    table = shared.diagnose()
    (row,) = rows(table, "identical chains")
    assert row.verdict == "FLAG" and "chains 0, 1, 2, 3 have identical draws" in row.note, table
    (distinct,) = rows(clean.diagnose(), "identical chains")
    assert distinct.verdict == "ok"
    with pytest.warns(sghmc_jax.diagnostics.IdenticalChainsWarning, match="chains 0, 1, 2, 3 have identical draws"):
        shared.summary()
    pytest.importorskip("arviz")
    with pytest.warns(sghmc_jax.diagnostics.IdenticalChainsWarning, match="share their noise"):
        shared.to_arviz()


def test_unconverged_chains_are_flagged():
    """Issue 18, item 5: chains started at ±10 and ±30 on N(0, I), overdamped (α = 5) with a tiny
    step: they relax at a rate ε/α = 4e-4 per step, so after 2000 steps they are still far apart
    and still climbing: R-hat, ESS and the trend test flag it (all said "ok" before)."""
    init = jnp.asarray(np.linspace(-30, 30, 4)[:, None] * np.ones((4, D)), jnp.float32)
    result = sghmc_jax.sample(
        1, log_post, init, stacked_init=True, transform=lambda k: sghmc_jax.sghmc(0.002, alpha=5.0, key=k),
        num_steps=2000, burn_in=200, num_chains=4, data=DATA, batch_size=N, progress=False,
    )
    table = result.diagnose()
    flagged = {r.diagnostic for r in table.flagged}
    assert {"R-hat log posterior", "trend log posterior", "R-hat params (max)"} <= flagged, table
    assert "lengthen burn_in / run longer" in str(table)


def test_run_away_chains_do_not_pass_the_kinetic_temperature():
    """Issue 18, item 6: on a repulsive target (log p = +0.01 θ²) the chains run away; the
    kinetic temperature grows ~50× over the run, its MCSE is then as large as its mean and the
    "> 3 MCSE off" rule alone never fires. The trend test flags the series."""
    up = lambda th, b: (0.01 * jnp.sum(th**2), None)  # noqa: E731
    result = sghmc_jax.sample(
        0, up, jnp.zeros(D), transform=lambda k: sghmc_jax.sghmc(0.05, alpha=1.0, key=k), num_steps=4000,
        burn_in=1000, num_chains=2, data=DATA, batch_size=N, progress=False,
    )
    kinetic = rows(result.diagnose(), "kinetic temperature")
    assert all(r.verdict == "FLAG" and "not stationary" in r.note for r in kinetic), kinetic
    assert all(r.error > 0.3 * r.value for r in kinetic)  # the MCSE rule alone would pass it


@pytest.mark.parametrize("alpha", [20.0, 40.0])
def test_exact_gradients_at_large_friction_are_not_called_hot(alpha):
    """Issue 18, item 7: SGHMC with exact gradients at ε = 0.01, εα = 0.2 and 0.4, has kinetic
    temperature 1/(1 − εα/2) = 1.11 and 1.25 (the discretisation; the θ law is right): compared
    with that, not with T, it passes."""
    result = sghmc_jax.sample(
        2, log_post, jnp.zeros(D), transform=lambda k: sghmc_jax.sghmc(0.01, alpha=alpha, key=k),
        num_steps=6000, burn_in=1000, num_chains=4, thin=5, data=DATA, batch_size=N, progress=False,
    )
    expected = 1 / (1 - 0.01 * alpha / 2)
    kinetic = rows(result.diagnose(), "kinetic temperature")
    assert all(r.verdict == "ok" for r in kinetic), kinetic
    assert all(abs(r.value - expected) < 5 * r.error + 0.02 for r in kinetic), (expected, kinetic)
    assert "discretisation" in kinetic[0].note


def test_diagnose_after_every_chain_diverged_says_so():
    """Issue 18, item 8: no `need at least one array to stack`."""
    result = sghmc_jax.sample(
        0, lambda th, b: (1e3 * jnp.sum(th**2), None), jnp.ones(D), transform=lambda k: sghmc_jax.sghmc(0.1, key=k),
        num_steps=200, num_chains=2, data=DATA, batch_size=N, progress=False, on_divergence="continue",
    )
    assert np.all(result.diverged_at >= 0)
    table = result.diagnose()
    assert not table.ok and "every chain diverged" in str(table)


def test_diagnose_after_host_batches_says_what_is_missing():
    """Issue 18, item 8: a run fed by host `batches` has no `data` for the scores (was a TypeError)."""

    def batches():
        while True:
            yield DATA[:20]

    result = sghmc_jax.sample(
        0, log_post, jnp.zeros(D), transform=sghmc_factory, num_steps=300, burn_in=100, num_chains=2,
        batches=batches(), progress=False,
    )
    table = result.diagnose()
    (ksd,) = rows(table, "KSD")
    (noise,) = rows(table, "noise ratio R")
    assert ksd.verdict == noise.verdict == "n/a" and "host `batches`" in ksd.note and "host `batches`" in noise.note
    assert rows(result.diagnose(data=DATA), "KSD")[0].verdict == "-"


def test_a_rule_added_to_kernels_is_diagnosed_without_a_list_of_names(clean, monkeypatch):
    """Issue 18, item 8: a sampler added by the README's checklist (its `Rule` in kernels.py) is
    diagnosed, not refused with "`sampler` must be one of ..."; without `Rule.diagnose` its rows
    say what the rule lacks."""
    import dataclasses

    from sghmc_jax import kernels

    monkeypatch.setattr(kernels, "FOO", kernels.SGHMC._replace(name="foo", diagnose=None), raising=False)
    table = dataclasses.replace(clean, sampler="foo").diagnose()
    (noise,) = rows(table, "noise ratio R")
    assert noise.verdict == "n/a" and "'foo' gives no formula" in noise.note
    assert all(r.verdict == "ok" for r in rows(table, "kinetic temperature")), table
    assert "gives no discrete expectation" in rows(table, "kinetic temperature")[0].note
    monkeypatch.setattr(kernels, "FOO", kernels.SGHMC._replace(name="foo"), raising=False)
    assert rows(dataclasses.replace(clean, sampler="foo").diagnose(), "noise ratio R")[0].verdict == "ok"


def test_readme_diagnosing_example_says_what_its_comment_says():
    """docs/guides/diagnosing.md, "Diagnosing a run": the run converges (every convergence row ok), εα = 0.18 puts
    the expected kinetic temperature at 1/(1 − 0.09) = 1.099·T, and R is about 0.2 (flagged)."""
    import pathlib
    import re

    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "guides" / "diagnosing.md").read_text()
    section = text[text.index("# Diagnosing a run") : text.index("The KSD is also there on its own")]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    namespace: dict = {}
    exec(compile(block, "docs/guides/diagnosing.md", "exec"), namespace)
    table = namespace["table"]
    convergence = ("identical chains", "R-hat log posterior", "ESS log posterior", "trend log posterior",
                   "R-hat params (max)", "ESS params (min)")
    assert all(r.verdict == "ok" for r in table.rows if r.diagnostic in convergence), table
    assert all("E=1.099" in r.threshold for r in rows(table, "kinetic temperature")), table
    assert all(r.value > 1.099 * namespace["log_post"].temperature for r in rows(table, "kinetic temperature")), table
    (noise,) = rows(table, "noise ratio R")
    assert noise.verdict == "FLAG" and 0.12 < noise.value < 0.35, noise
    assert "batch_size" in noise.note, noise


def test_a_start_up_transient_inside_the_kept_steps_is_not_ok():
    """Regression (a new user's run): chains started far out with no burn-in read a kinetic
    temperature thousands of times too hot, ± an MCSE as large, and the row said "ok"; the noise
    ratio, estimated at draws inside the transient, read R in the hundreds and advised a larger
    batch. Now a row whose MCSE is wider than its band is flagged, and R is estimated on the
    second half of the draws."""
    starts = jnp.asarray(np.linspace(-50.0, 50.0, 4)[:, None] * np.ones((4, D)), jnp.float32)
    result = sghmc_jax.sample(
        1, log_post, starts, stacked_init=True, transform=sghmc_factory, num_steps=3000, burn_in=0,
        num_chains=4, data=DATA, batch_size=50, thin=5, progress=False,
    )
    table = result.diagnose()
    kinetic = rows(table, "kinetic temperature")
    assert max(r.value for r in kinetic) > 3, table  # the transient is in the series
    assert all(r.verdict == "FLAG" for r in kinetic if r.value > 2), table
    assert all("burn_in" in r.note for r in kinetic if r.verdict == "FLAG" and r.value > 2), table
    (noise,) = rows(table, "noise ratio R")
    expected = float(np.max(exact_v(50))) * 0.05 / 2  # εV/(2αT), α = T = 1
    assert noise.value < 2 * expected, (noise, expected)


def test_ordinals_in_notes():
    assert [_ordinal(k) for k in (1, 2, 3, 4, 11, 12, 13, 21, 22, 83, 111, 112)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "83rd", "111th", "112th"]
