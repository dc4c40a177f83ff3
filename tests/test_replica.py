"""Replica exchange in `sample()` (`temperatures=`): argument checks, the target rung's mode
weights on a bimodal mixture that a single temperature cannot cross, the minibatch swap's bias
correction, DEO against random swaps (round trips against their exact counts on a flat target),
and exact continuation and resume."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sghmc_jax
from sghmc_jax import diagnostics, kernels
from sghmc_jax._sampler import replicas
from tests import helpers

# A 1-D mixture 0.25·N(−3, 0.5²) + 0.75·N(3, 0.5²): the log density at the barrier (x = 0) is
# ~18 below the modes', so a chain at temperature 1 started in the minor mode stays there.
MU, S, W = 3.0, 0.5, 0.75
LADDER = tuple(float(t) for t in np.geomspace(1.0, 40.0, 8))


def log_mixture(x):
    minor = jnp.log(1 - W) - 0.5 * ((x + MU) / S) ** 2
    major = jnp.log(W) - 0.5 * ((x - MU) / S) ** 2
    return jnp.logaddexp(minor, major)


def log_posterior(x, batch):
    return jnp.sum(log_mixture(x)), None


def exact_major_weight() -> float:
    """P(x > 0) under the mixture, by quadrature on a fine grid."""
    grid = np.linspace(-12.0, 12.0, 200_001)
    density = np.exp(np.asarray(jax.jit(log_mixture)(jnp.asarray(grid, jnp.float32)), np.float64))
    return float(density[grid > 0].sum() / density.sum())


def major_weight(result) -> tuple[float, float]:
    """Rung 0's fraction of draws in the major mode and its Monte Carlo standard error (ESS-based)."""
    above = (np.asarray(result.samples)[..., 0] > 0).astype(np.float64)
    return float(above.mean()), float(diagnostics.mcse_mean(above))


def transform(key):
    return sghmc_jax.sghmc(0.1, alpha=1.0, key=key)


def run_mixture(temperatures, swaps="deo", **kw):
    kw = dict(num_steps=8000, burn_in=3000, num_chains=64, progress=False) | kw
    start = jnp.full((1,), -MU)  # every chain starts in the minor mode
    return sghmc_jax.sample(0, log_posterior, start, transform=transform, temperatures=temperatures, swaps=swaps, **kw)


@pytest.fixture(scope="module")
def deo_run():
    return run_mixture(LADDER, "deo")


def quadratic(x, batch):
    return -0.5 * jnp.sum(x**2), None


def small(**kw):
    kw = dict(transform=transform, num_steps=20, num_chains=2, progress=False, init_params=jnp.zeros(2)) | kw
    return sghmc_jax.sample(0, quadratic, **kw)


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        (dict(temperatures=1), ValueError, r"`temperatures` must be an int >= 2, got temperatures=1"),
        (dict(temperatures=(1.0,)), ValueError, r"at least 2 rungs, the first exactly 1.0 .*got \(1.0,\)"),
        (dict(temperatures=(2.0, 4.0)), ValueError, r"the first exactly 1.0 .*got \(2.0, 4.0\)"),
        (dict(temperatures=(1.0, 3.0, 2.0)), ValueError, r"strictly increasing, got \(1.0, 3.0, 2.0\)"),
        (dict(temperatures=(1.0, float("inf"))), ValueError, r"finite and strictly increasing, got \(1.0, inf\)"),
        (dict(temperatures="hot"), TypeError, r"`temperatures` must be an int .* got str: 'hot'"),
        (dict(temperatures=True), TypeError, r"`temperatures` must be an int .* got bool: True"),
        (dict(adapt_ladder=10), ValueError, r"`adapt_ladder` needs `temperatures` .* got adapt_ladder=10"),
        (dict(temperatures=3, adapt_ladder=-1), ValueError, r"`adapt_ladder` must be an int >= 0, got adapt_ladder=-1"),
        (
            dict(temperatures=3, adapt_ladder=11, burn_in=10),
            ValueError,
            r"`adapt_ladder` must be <= burn_in .* got adapt_ladder=11 and burn_in=10",
        ),
        (dict(temperatures=3, swap_every=0), ValueError, r"`swap_every` must be an int >= 1, got swap_every=0"),
        (
            dict(temperatures=3, swaps="sometimes"),
            ValueError,
            r"`swaps` must be 'deo' or 'random', got swaps='sometimes'",
        ),
        (dict(temperatures=3, batches=iter([None] * 20)), ValueError, r"does not yet run with `batches`"),
        (
            dict(
                temperatures=3,
                transform=lambda k: sghmc_jax.sghmc(0.1, temperature=optax.constant_schedule(1.0), key=k),
            ),
            ValueError,
            r"needs the run's temperature as a constant, which is a schedule",
        ),
        (
            dict(temperatures=3, transform=lambda k: sghmc_jax.sghmc(0.1, temperature=0.0, key=k)),
            ValueError,
            r"needs the run's temperature > 0, got temperature=0.0",
        ),
        (
            dict(temperatures=3, transform=optax.sgd(0.1)),
            ValueError,
            r"needs the run's temperature as a constant, which is not known",
        ),
    ],
)
@pytest.mark.filterwarnings("ignore:`transform` holds none of this library's samplers")
def test_arguments_are_checked_before_anything_compiles(kw, error, match):
    with pytest.raises(error, match=match):
        small(**kw)


def test_a_geometric_ladder_of_r_rungs_runs_from_1_to_the_default_top():
    result = small(temperatures=4)
    np.testing.assert_allclose(result.temperatures, np.broadcast_to(np.geomspace(1.0, 10.0, 4), (2, 4)), rtol=1e-12)
    assert result.swap_acceptance.shape == (3,) and result.round_trips.shape == (2,)
    assert jax.tree.leaves(result.samples)[0].shape == (2, 20, 2)
    assert result.log_posterior.shape == (2, 20)


def test_init_state_must_hold_the_ladder_the_call_asks_for():
    plain = small()
    with pytest.raises(ValueError, match=r"`init_state` holds no ladder, but `temperatures` asks for 3 rungs"):
        small(temperatures=3, init_state=plain.final_state)
    laddered = small(temperatures=3)
    with pytest.raises(ValueError, match=r"`init_state` holds ladders of 3 rungs, but `temperatures` asks for none"):
        small(init_state=laddered.final_state)
    with pytest.raises(ValueError, match=r"ladders of 3 rungs, but `temperatures` asks for 4 rungs"):
        small(temperatures=4, init_state=laddered.final_state)


def test_a_continuation_asks_for_the_ladder_its_run_started_with():
    """The state holds the run's ladder: a call asking for other rungs or another adaptation
    would run the old ladder while reporting the new one, so it is refused."""
    first = small(temperatures=(1.0, 3.0, 9.0), adapt_ladder=8, burn_in=10)
    state = first.final_state
    with pytest.raises(
        ValueError,
        match=r"started with temperatures=\(1.0, 3.0, 9.0\), but `temperatures` asks for "
        r"\(1.0, 30.0, 900.0\)",
    ):
        small(temperatures=(1.0, 30.0, 900.0), adapt_ladder=8, init_state=state)
    with pytest.raises(ValueError, match=r"started with adapt_ladder=8, but this call asks for adapt_ladder=0"):
        small(temperatures=(1.0, 3.0, 9.0), init_state=state)
    again = small(temperatures=(1.0, 3.0, 9.0), adapt_ladder=8, init_state=state)
    np.testing.assert_array_equal(again.temperatures, first.temperatures)  # the adapted ladder, run on


def test_diagnose_reads_rung_zero_when_every_rung_is_kept():
    """With keep_rungs the samples have a rung axis; diagnose() reads rung 0's draws, the same
    as a run that keeps only them (its rows equal, KSD and noise ratio included)."""
    log_posterior_mb, data = helpers.regression(4)
    kw = dict(
        transform=lambda k: sghmc_jax.sghmc(1e-3, alpha=1.0, key=k),
        num_steps=300,
        burn_in=100,
        num_chains=2,
        data=data,
        batch_size=8,
        temperatures=3,
        progress=False,
    )
    every, target = (sghmc_jax.sample(7, log_posterior_mb, jnp.zeros(3), keep_rungs=k, **kw) for k in (True, False))
    assert np.asarray(every.samples).shape[2] == 3
    rows = [r.to_dicts() for r in (every.diagnose(), target.diagnose())]
    assert [row["diagnostic"] for row in rows[0]] == [row["diagnostic"] for row in rows[1]]
    assert {"KSD", "noise ratio R"} <= {row["diagnostic"] for row in rows[0]}
    np.testing.assert_array_equal([row["value"] for row in rows[0]], [row["value"] for row in rows[1]])


def test_diagnose_reads_the_state_of_the_replica_holding_rung_zero():
    """The noise ratio of a preconditioned sampler reads the final state's preconditioner: with
    a ladder, that of the replica holding rung 0 in each chain (not replica c of the flat axis)."""
    from sghmc_jax._sampler import scores

    log_posterior_mb, data = helpers.regression(4)
    result = sghmc_jax.sample(
        7,
        log_posterior_mb,
        jnp.zeros(3),
        transform=lambda k: sghmc_jax.psgld(1e-3, key=k),
        num_steps=200,
        num_chains=3,
        data=data,
        batch_size=8,
        temperatures=(1.0, 50.0),
        progress=False,
    )
    state = result.final_state
    holder = np.argmin(np.asarray(state.replicas.rung), axis=1)  # per chain, its replica on rung 0
    v = np.asarray(state.transform_state.v).reshape(3, 2, 3)[np.arange(3), holder]
    fields = scores._final_fields(result, kernels.PSGLD, np.arange(3))
    np.testing.assert_array_equal(fields["v"], v.astype(np.float64))
    assert not np.array_equal(v, np.asarray(state.transform_state.v)[:3])  # another pick would differ


def test_rung_zero_finds_the_mode_weights_a_single_temperature_cannot(deo_run):
    exact = exact_major_weight()
    assert abs(exact - W) < 1e-6
    weight, mcse = major_weight(deo_run)
    assert abs(weight - exact) < 4 * mcse, (weight, mcse, exact, "seed 0")
    single = run_mixture(None, num_steps=2000, burn_in=500)
    stuck, _ = major_weight(single)
    assert stuck < 0.05, (stuck, "seed 0: a single temperature should not cross the barrier")


def test_deo_makes_more_round_trips_than_random_swaps(deo_run):
    """Syed et al.: deterministic even/odd swaps move a replica through the ladder ballistically,
    random-parity swaps diffusively; with 8 rungs that is a factor measured at ~3.2 here (with
    every swap accepted it tends to R − 1 = 7 exactly: the flat-target tests below)."""
    random_run = run_mixture(LADDER, "random")
    deo, rnd = int(deo_run.round_trips.sum()), int(random_run.round_trips.sum())
    assert deo > 2 * rnd, (deo, rnd, "seed 0")
    # Random swaps attempt each pair on about half the rounds, DEO on exactly half.
    np.testing.assert_allclose(deo_run.swap_acceptance, random_run.swap_acceptance, atol=0.02)


# Round trips, exactly. With a flat log posterior every replica's energy is the same, so every
# tried swap is accepted (log A = 0) and the rungs move by the parities alone. A replica on rung r
# at a round of parity q moves up when r ≡ q (mod 2) and r < R − 1, down when r ≢ q and r > 0,
# and stays otherwise. With DEO (round k has parity k mod 2, from k = 1) the parity of r − k is
# kept by every move and flips at a stay, so each replica bounces between the ends: R − 1 moves
# up, a stay on the top rung, R − 1 moves down, a stay on rung 0, a period of 2R rounds. The
# replica starting on rung r first stands on rung 0 after s_r rounds, s_r = r for r even and
# 2R − 1 − r for r odd, which over r = 0..R−1 are 0, 2, ..., 2R − 2, and completes a trip every
# 2R rounds after that: a chain's count after n rounds is Σ_{j<R} max(0, ⌊(n − 2j)/(2R)⌋),
# R trips per 2R rounds (1/(2R) per replica per round). With random parities each replica's
# (rung, heading) is a Markov chain (the parity of round k is a fair coin independent of the
# past), a walk on the path 0..R−1 that stays at an end with probability ½; its expected
# commute time between the ends is 2R·(R − 1) (total degree times resistance), so the rate
# falls to 1/(2R(R − 1)) per replica per round: ballistic against diffusive.


def flat(x, batch):
    return 0.0 * jnp.sum(x), None


def deo_round_trips(rungs: int, rounds: int) -> int:
    """A chain's round trips after `rounds` DEO rounds in which every swap is accepted."""
    return sum(max(0, (rounds - 2 * j) // (2 * rungs)) for j in range(rungs))


def expected_round_trips(rungs: int, rounds: int, even_probability) -> np.ndarray:
    """E[a chain's round trips] after 0..`rounds` rounds in which every swap is accepted, round k
    trying the even pairs with probability `even_probability(k)`, else the odd ones: each
    replica's law over (heading, rung) propagated exactly (heading −1: not yet on rung 0, 0: left
    rung 0, 1: reached the top since), summed over replicas by linearity."""
    mass = np.zeros((3, rungs))  # mass[heading + 1, rung], summed over the chain's replicas
    mass[1, 0], mass[0, 1:] = 1.0, 1.0
    r = np.arange(rungs)
    trips = [0.0]
    for k in range(1, rounds + 1):
        new, trip = np.zeros_like(mass), 0.0
        for parity, weight in ((0, even_probability(k)), (1, 1.0 - even_probability(k))):
            to = np.where((r % 2 == parity) & (r < rungs - 1), r + 1, np.where((r % 2 != parity) & (r > 0), r - 1, r))
            for heading in (-1, 0, 1):
                moved = weight * mass[heading + 1]
                trip += moved[to == 0].sum() if heading == 1 else 0.0
                after = np.where(to == 0, 0, np.where((to == rungs - 1) & (heading == 0), 1, heading))
                np.add.at(new, (after + 1, to), moved)
        mass = new
        trips.append(trips[-1] + trip)
    return np.asarray(trips)


def deo_parity(k: int) -> float:
    return float(k % 2 == 0)


def ladder_record(rungs: int, swaps: str = "deo"):
    temperatures = tuple(float(t) for t in np.geomspace(1.0, 10.0, rungs))
    return type(
        "L",
        (),
        dict(rungs=rungs, temperatures=temperatures, base_temperature=1.0, swap_every=1, swaps=swaps, adapt_ladder=0),
    )


@pytest.mark.parametrize("rungs", [2, 3, 4, 5, 8])
def test_deo_round_trips_are_the_exact_bounce_count_after_every_round(rungs):
    """`replicas.swap` round by round against the closed form (and the closed form against the
    exact propagation with DEO's parities, which the random-swap test relies on)."""
    ladder, rounds = ladder_record(rungs), 6 * rungs

    def one_round(state, k):
        state = replicas.swap(ladder, state, jnp.zeros(3 * rungs), None, k)
        return state, (state.round_trips, state.accepts.sum() - state.attempts.sum())

    state = replicas.initial(ladder, jax.random.key(0), 3, "float32")
    _, (counts, rejected) = jax.lax.scan(one_round, state, jnp.arange(1, rounds + 1, dtype=jnp.int32))
    np.testing.assert_array_equal(rejected, 0)  # log A = 0: every tried swap accepted
    exact = np.asarray([deo_round_trips(rungs, n) for n in range(rounds + 1)])
    np.testing.assert_array_equal(counts, np.broadcast_to(exact[1:, None], (rounds, 3)))
    np.testing.assert_array_equal(expected_round_trips(rungs, rounds, deo_parity), exact)


@pytest.mark.parametrize(("rungs", "swap_every", "num_steps"), [(2, 1, 12), (4, 3, 88), (8, 1, 70)])
def test_deo_round_trips_of_a_run_are_the_exact_count(rungs, swap_every, num_steps):
    """Through `sample()`: rounds at steps t > 0 with t % swap_every == 0, round k = t // swap_every."""
    result = sghmc_jax.sample(
        0,
        flat,
        jnp.zeros(1),
        transform=transform,
        num_steps=num_steps,
        num_chains=2,
        progress=False,
        temperatures=rungs,
        swap_every=swap_every,
        swaps="deo",
    )
    rounds = (num_steps - 1) // swap_every
    np.testing.assert_array_equal(result.round_trips, deo_round_trips(rungs, rounds))
    np.testing.assert_array_equal(result.swap_acceptance, 1.0)


@pytest.mark.parametrize(("rungs", "rounds"), [(4, 100), (8, 200)])
def test_random_swap_round_trips_match_their_exact_expectation(rungs, rounds):
    """Through `sample()`, 2,000 chains: the mean count against the exact expectation, within
    4 standard errors across chains (the chains' counts are independent)."""
    chains, swap_every = 2000, 2
    result = sghmc_jax.sample(
        0,
        flat,
        jnp.zeros(1),
        transform=transform,
        num_steps=swap_every * rounds + 1,
        num_chains=chains,
        thin=swap_every * rounds + 1,
        progress=False,
        temperatures=rungs,
        swap_every=swap_every,
        swaps="random",
    )
    counts = np.asarray(result.round_trips, np.float64)
    exact = expected_round_trips(rungs, rounds, lambda k: 0.5)[-1]
    se = counts.std(ddof=1) / np.sqrt(chains)
    assert abs(counts.mean() - exact) < 4 * se, (counts.mean(), exact, se, "seed 0")
    assert exact < deo_round_trips(rungs, rounds) / 2  # well behind DEO's ballistic count


@pytest.mark.parametrize("rungs", [4, 8])
def test_round_trip_rates_per_round_are_ballistic_for_deo_and_diffusive_for_random(rungs):
    """Per replica and round, exactly: DEO 1/(2R), random 1/(2R(R − 1)) once the start is
    forgotten: the count's increments settle as λ^k, λ = cos(π/(2R − 1)) the decay of the walk
    killed on reaching rung 0 (0.978 at R = 8), so after 2,000 rounds the start is below rounding."""
    period = 2 * rungs
    deo_rate = (deo_round_trips(rungs, 10 * period) - deo_round_trips(rungs, 9 * period)) / (period * rungs)
    assert deo_rate == 1 / (2 * rungs)
    expected = expected_round_trips(rungs, 3000, lambda k: 0.5)
    random_rate = (expected[3000] - expected[2000]) / (1000 * rungs)
    np.testing.assert_allclose(random_rate, 1 / (2 * rungs * (rungs - 1)), rtol=1e-9)


def test_the_swap_is_the_exact_metropolis_rule():
    """One round by hand: rungs (1, 2) at T = 1, energies chosen so that log A is known."""
    ladder = type(
        "L", (), dict(rungs=2, temperatures=(1.0, 2.0), base_temperature=1.0, swap_every=1, swaps="deo", adapt_ladder=0)
    )
    state = replicas.initial(ladder, jax.random.key(3), 4000, "float32")
    # Replica 0 (rung 0, β = 1) at log p = −3, replica 1 (rung 1, β = ½) at log p = −1:
    # log A = (1 − ½)·(−1 − (−3)) = 1 -> always accepted; reversed, log A = −1 -> e^{−1}.
    value = jnp.tile(jnp.asarray([-3.0, -1.0]), 4000)
    up = replicas.swap(ladder, state, value, None, jnp.int32(0))
    assert int(up.accepts.sum()) == 4000
    down = replicas.swap(ladder, state, jnp.tile(jnp.asarray([-1.0, -3.0]), 4000), None, jnp.int32(0))
    rate = float(down.accepts.mean())
    assert abs(rate - np.exp(-1.0)) < 4 * np.sqrt(np.exp(-1.0) * (1 - np.exp(-1.0)) / 4000), rate
    np.testing.assert_array_equal(down.rung.sum(axis=1), 1)  # each ladder still holds rungs 0 and 1
    # Odd rounds try only odd pairs: none with 2 rungs.
    assert int(replicas.swap(ladder, state, value, None, jnp.int32(1)).attempts.sum()) == 0


def test_two_calls_equal_one_bit_for_bit():
    log_posterior_mb, data = helpers.regression(4)
    kw = dict(
        transform=lambda k: sghmc_jax.sghmc(1e-3, alpha=1.0, key=k),
        num_chains=2,
        data=data,
        batch_size=8,
        temperatures=3,
        swap_every=2,
        progress=False,
        chunk_size=7,
    )
    one = sghmc_jax.sample(5, log_posterior_mb, jnp.zeros(3), num_steps=40, **kw)
    first = sghmc_jax.sample(5, log_posterior_mb, jnp.zeros(3), num_steps=17, **kw)
    second = sghmc_jax.sample(5, log_posterior_mb, jnp.zeros(3), num_steps=23, init_state=first.final_state, **kw)
    both = np.concatenate([first.samples, second.samples], axis=1)
    np.testing.assert_array_equal(both, one.samples)
    jax.tree.map(
        np.testing.assert_array_equal,
        one.final_state.replicas._replace(swap_key=0),
        second.final_state.replicas._replace(swap_key=0),
    )
    assert int(one.final_state.replicas.attempts.sum()) == 2 * 19  # rounds at steps 2, 4, ..., 38; one pair each
    assert float(one.final_state.replicas.variance.min()) > 0  # minibatch energies: estimated


def test_a_killed_run_resumes_bit_for_bit(tmp_path):
    log_posterior_mb, data = helpers.regression(4)
    kw = dict(
        transform=lambda k: sghmc_jax.sghmc(1e-3, alpha=1.0, key=k),
        num_steps=60,
        num_chains=2,
        data=data,
        batch_size=8,
        temperatures=(1.0, 2.0, 5.0),
        burn_in=10,
        chunk_size=12,
        progress=False,
    )
    clean = sghmc_jax.sample(7, log_posterior_mb, jnp.zeros(3), **kw)
    with pytest.raises(KeyboardInterrupt):
        sghmc_jax.sample(
            7, log_posterior_mb, jnp.zeros(3), checkpoint_dir=tmp_path, callback=helpers.interrupt_after(3), **kw
        )
    resumed = sghmc_jax.sample(7, log_posterior_mb, jnp.zeros(3), checkpoint_dir=tmp_path, **kw)
    np.testing.assert_array_equal(resumed.samples, clean.samples)
    np.testing.assert_array_equal(resumed.log_posterior, clean.log_posterior)
    np.testing.assert_array_equal(resumed.swap_acceptance, clean.swap_acceptance)
    np.testing.assert_array_equal(resumed.round_trips, clean.round_trips)


def test_a_checkpoint_of_a_ladder_tempered_otherwise_is_refused(tmp_path, monkeypatch):
    """How the rungs are tempered is part of the run's identity: a ladder run's checkpoint
    from a version that tempered otherwise (the first tempered the gradient, and recorded
    nothing) is refused with what differs, never resumed with other dynamics."""
    from sghmc_jax._sampler import plan

    kw = dict(num_steps=30, temperatures=3, chunk_size=10, checkpoint_dir=tmp_path)
    with monkeypatch.context() as m:
        m.setattr(plan, "TEMPERING", "the gradient times 1/tau")
        with pytest.raises(KeyboardInterrupt):
            small(callback=helpers.interrupt_after(1), **kw)
    with pytest.raises(ValueError, match=r"`tempering` the gradient times 1/tau -> the sampler at temperature tau\*T"):
        small(**kw)


def test_a_rerun_with_another_ladder_is_refused_in_the_arguments_own_words(tmp_path):
    kw = dict(num_steps=30, burn_in=10, chunk_size=10, checkpoint_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        small(temperatures=3, adapt_ladder=8, callback=helpers.interrupt_after(1), **kw)
    with pytest.raises(ValueError, match=r"`adapt_ladder` 8 -> 4") as changed:
        small(temperatures=3, adapt_ladder=4, **kw)
    with pytest.raises(ValueError, match=r"`temperatures` \[1.0, 3.16.*\] -> None") as dropped:
        small(**kw)
    for said in (str(changed.value), str(dropped.value)):  # no internal names
        assert not any(name in said for name in ("base_temperature", "noisy_energies", "adapt_steps")), said


def noisy_mixture_data(num_data: int = 1000, scale: float = 0.007):
    """Per-example terms c_i (mean exactly 0) whose minibatch mean adds noise N·mean(c)·(x + 3) to
    the mixture's log density: none at the minor mode, Gaussian of sd ~5 at the major one."""
    c = np.random.default_rng(0).normal(size=num_data)
    return jnp.asarray((c - c.mean()) / c.std() * scale, jnp.float32)


def noisy_log_posterior(num_data: int):
    # Single-example values log_mixture + N·c_i·(x + 3): make_log_posterior's form, whose
    # per-example variance the correction reads.
    def log_posterior(x, batch):
        return jnp.sum(log_mixture(x)) + num_data * jnp.mean(batch) * jnp.sum(x + MU), None

    return log_posterior


@pytest.mark.slow
def test_minibatch_swaps_keep_the_weights_only_with_the_correction(monkeypatch):
    """Deng et al.'s correction: with minibatch energies the corrected swap keeps rung 0's mode
    weight within 4 MCSE of the exact one; with the correction off (a zero variance estimate) the
    same run is measurably biased (measured: 0.667 ± 0.010 against 0.75)."""
    data = noisy_mixture_data()
    kw = dict(num_steps=8000, burn_in=3000, num_chains=64, progress=False, data=data, batch_size=50)
    start = jnp.full((1,), -MU)
    corrected = sghmc_jax.sample(0, noisy_log_posterior(1000), start, transform=transform, temperatures=LADDER, **kw)
    weight, mcse = major_weight(corrected)
    assert abs(weight - W) < 4 * mcse, (weight, mcse, "seed 0")
    assert float(corrected.final_state.replicas.variance.max()) > 1.0  # the estimate is in use
    monkeypatch.setattr(replicas, "minibatch_variance", lambda *a, **k: jnp.zeros((), jnp.float32))
    # A new log posterior (by identity), so that the program is traced again with the patch.
    plain = sghmc_jax.sample(0, noisy_log_posterior(1000), start, transform=transform, temperatures=LADDER, **kw)
    assert float(plain.final_state.replicas.variance.max()) == 0.0
    biased, biased_mcse = major_weight(plain)
    assert W - biased > 4 * biased_mcse, (biased, biased_mcse, "seed 0")


def test_diagnose_reports_each_rung_pair_and_the_round_trips():
    def narrow(x, batch):  # sd 0.1: a replica at τ = 10⁴ drifts to where log p ≪ rung 1's
        return -50.0 * jnp.sum(x**2), None

    kw = dict(transform=transform, num_chains=2, progress=False, temperatures=(1.0, 2.0, 1e4))
    result = sghmc_jax.sample(0, narrow, jnp.zeros(2), num_steps=400, **kw)
    rows = {row.diagnostic: row for row in result.diagnose().rows}
    near, far = rows["swap acceptance 0-1"], rows["swap acceptance 1-2"]
    assert near.value == pytest.approx(result.swap_acceptance[0]) and near.verdict == "ok", near
    assert far.value < 0.1 and far.verdict == "FLAG" and "add rungs between τ = 2 and 1e+04" in far.note, far
    trips = rows["round trips"]
    assert trips.value == result.round_trips.sum() and trips.verdict == ("ok" if trips.value else "FLAG")
    # Two swap rounds (steps 0 and 10) cannot make a round trip over 3 rungs (it takes 4).
    short = sghmc_jax.sample(0, narrow, jnp.zeros(2), num_steps=20, swap_every=10, **kw)
    short_trips = {row.diagnostic: row for row in short.diagnose().rows}["round trips"]
    assert short_trips.value == 0 and short_trips.verdict == "FLAG", short_trips
    assert not any(r.diagnostic.startswith("swap") for r in small(num_steps=200).diagnose().rows)


def test_output_streams_rung_zero_draws_to_disk(tmp_path):
    kw = dict(temperatures=3, num_steps=30, chunk_size=8)
    in_memory = small(**kw)
    on_disk = small(output=tmp_path / "draws", **kw)
    np.testing.assert_array_equal(np.asarray(on_disk.samples), in_memory.samples)
    np.testing.assert_array_equal(np.asarray(on_disk.log_posterior), in_memory.log_posterior)
    np.testing.assert_array_equal(on_disk.swap_acceptance, in_memory.swap_acceptance)


def test_an_adapted_ladder_equalises_the_swap_rates_then_stays_frozen():
    """Syed et al.'s adaptation from a ladder with three rungs bunched at 1 and a far top: the
    rates, 0.19-0.99 as given, come out within 0.15 of each other (measured 0.05-0.08), and a
    continuation keeps the adapted ladder."""
    bunched = (1.0, 1.05, 1.1, 1.15, 40.0)
    kw = dict(transform=transform, num_chains=16, temperatures=bunched, progress=False)
    fixed = sghmc_jax.sample(0, log_posterior, jnp.zeros(1), num_steps=6000, burn_in=3000, **kw)
    adapted = sghmc_jax.sample(0, log_posterior, jnp.zeros(1), num_steps=6000, burn_in=3000, adapt_ladder=3000, **kw)
    spread = lambda r: float(np.ptp(r.swap_acceptance))  # noqa: E731
    assert spread(fixed) > 0.7 and spread(adapted) < 0.15, (fixed.swap_acceptance, adapted.swap_acceptance, "seed 0")
    assert adapted.round_trips.sum() > fixed.round_trips.sum()
    np.testing.assert_allclose(adapted.temperatures[:, [0, -1]], np.broadcast_to([1.0, 40.0], (16, 2)), rtol=1e-6)
    assert np.all(np.diff(adapted.temperatures, axis=1) > 0)
    more = sghmc_jax.sample(
        0, log_posterior, None, num_steps=100, adapt_ladder=3000, init_state=adapted.final_state, **kw
    )
    np.testing.assert_array_equal(more.temperatures, adapted.temperatures)


def test_ladders_split_over_devices_give_the_one_device_draws():
    """Chains over a mesh's chain axis hold whole ladders per device: the swaps and rung 0's
    gather stay local (no collective in the chunk), and the draws equal the one-device run's."""
    from tests.test_scaling import run as run_on_devices

    out = run_on_devices(
        """
        log_posterior, params, data = problem()
        tx = lambda k: sghmc_jax.sghmc(1e-3, alpha=1.0, key=k)
        kw = dict(transform=tx, num_steps=40, num_chains=4, thin=2, chunk_size=20, progress=False, data=data,
                  batch_size=16, temperatures=3, swap_every=2)
        plain = sghmc_jax.sample(0, log_posterior, params, **kw)
        mesh = Mesh(np.array(jax.devices()), ("chains",))
        cache.clear_cache()
        sharded = sghmc_jax.sample(0, log_posterior, params, mesh=mesh, chain_axis="chains", **kw)
        hlo = chunk_hlo()
        state = sharded.final_state
        dump(
            same=bool(np.array_equal(plain.samples["w"], sharded.samples["w"])
                      and np.array_equal(plain.log_posterior, sharded.log_posterior)
                      and np.array_equal(plain.swap_acceptance, sharded.swap_acceptance)),
            collectives=sorted(set(COLLECTIVES.findall(hlo))),
            params_spec=spec(state.params["w"]),
            rung_spec=spec(state.replicas.rung),
        )
        """,
        devices=4,
    )
    assert out["same"], "the draws over 4 devices differ from the one-device run's"
    assert out["params_spec"] == out["rung_spec"] == ["chains"]
    assert out["collectives"] == [], f"the chunk program communicates: {out['collectives']}"


def test_a_centred_log_posterior_swaps_on_control_variate_energies():
    """Deng et al. (ICLR 2021): for a `control_variates.centre` log posterior the swap's energy is
    the control-variate estimate, the same function of θ as the log posterior up to a constant
    per batch, with a far smaller minibatch variance (measured ~100× smaller here), so the
    corrected swaps are accepted where the plain energies' never are."""
    from sghmc_jax import control_variates

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 3)).astype(np.float32)
    data = {"x": x, "y": (x @ np.arange(1.0, 4.0) + rng.normal(size=1000)).astype(np.float32)}
    ll = lambda w, b: -0.5 * (b["y"] - b["x"] @ w) ** 2  # noqa: E731
    prior = lambda w: -0.5 * jnp.sum(w**2)  # noqa: E731
    plain = sghmc_jax.make_log_posterior(ll, prior, num_data=1000)
    w_hat = jnp.asarray(np.linalg.solve(x.T @ x + np.eye(3), x.T @ data["y"]), jnp.float32)
    cv = control_variates.centre(ll, prior, data, w_hat)
    batch = jax.tree.map(lambda a: a[:50], data)
    w1, w2 = w_hat + 0.05, w_hat - jnp.asarray([0.02, 0.0, 0.04])
    centred, value = replicas.energy_function(cv), replicas.energy_function(plain)
    np.testing.assert_allclose(centred(w1, batch) - centred(w2, batch), value(w1, batch) - value(w2, batch), rtol=1e-4)
    kw = dict(
        transform=lambda k: sghmc_jax.sghmc(3e-3, alpha=10.0, key=k),
        num_steps=1000,
        burn_in=200,
        num_chains=8,
        data=data,
        batch_size=50,
        temperatures=(1.0, 1.5, 2.25, 3.4),
        progress=False,
    )
    runs = [sghmc_jax.sample(0, lp, w_hat, **kw) for lp in (plain, cv)]
    plain_var, cv_var = (float(np.mean(r.final_state.replicas.variance)) for r in runs)
    assert cv_var < plain_var / 10, (plain_var, cv_var, "seed 0")
    assert np.all(runs[1].swap_acceptance > runs[0].swap_acceptance), [r.swap_acceptance for r in runs]


def test_keep_rungs_keeps_every_rung_in_order_and_rung_zero_unchanged():
    kw = dict(temperatures=(1.0, 4.0), num_steps=400, burn_in=50, num_chains=4)
    every = small(keep_rungs=True, **kw)
    target = small(**kw)
    assert every.samples.shape == (4, 350, 2, 2)
    np.testing.assert_array_equal(every.samples[:, :, 0], target.samples)
    with pytest.raises(ValueError, match=r"`keep_rungs` needs `temperatures` \(a ladder\), got keep_rungs=True"):
        small(keep_rungs=True)


RUNGS = (1.0, 2.0, 4.0, 8.0)  # exact in binary: τ·T and 1/τ are computed without rounding


@pytest.mark.parametrize(
    "make",
    [
        # β stands for a gradient-noise variance β·T²: the same noise at temperature T·τ is β/τ².
        lambda t, f: lambda k: sghmc_jax.sghmc(0.1, alpha=1.0, beta=0.5 / f**2, temperature=t, key=k),
        lambda t, f: lambda k: sghmc_jax.sgnht(0.05, alpha=1.0, temperature=t, key=k),  # and its thermostat ξ
        lambda t, f: lambda k: sghmc_jax.sgld(0.05, beta=0.5 / f**2, temperature=t, key=k),
        lambda t, f: lambda k: optax.chain(optax.clip(5.0), sghmc_jax.psghmc(0.05, alpha=1.0, temperature=t, key=k)),
    ],
    ids=["sghmc-beta", "sgnht", "sgld-beta", "chain-psghmc"],
)
def test_each_rung_runs_its_sampler_at_its_temperature_with_the_full_gradient(make):
    """Coupling: with no swap in the run, the replica on rung r draws what a plain run at
    temperature T·τ_r draws, step for step, from the same keys (replica r of chain 0 takes the
    keys of chain r of a run of R chains). Tempering the gradient instead would run the rung at
    step ε/√τ and friction α√τ, another chain. Equal to float rounding: the temperature is a
    per-replica array in the ladder's program, a scalar in the plain one."""

    def lp(x, batch):
        return -0.5 * jnp.sum(x**2 * jnp.arange(1.0, 4.0)), None

    kw = dict(num_steps=50, progress=False)
    ladder = sghmc_jax.sample(
        3,
        lp,
        jnp.zeros(3),
        transform=make(0.5, 1.0),
        num_chains=1,
        temperatures=RUNGS,
        swap_every=10**6,
        keep_rungs=True,
        **kw,
    )
    assert int(ladder.final_state.replicas.attempts.sum()) == 0
    for rung, tau in enumerate(RUNGS):
        plain = sghmc_jax.sample(3, lp, jnp.zeros(3), transform=make(0.5 * tau, tau), num_chains=len(RUNGS), **kw)
        np.testing.assert_allclose(ladder.samples[0, :, rung], plain.samples[rung], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sampler", ["sghmc", "sgnht"])
def test_every_rung_keeps_its_stationary_variance_across_swaps(sampler):
    """Rung r of the unit Gaussian targets N(0, τ_r): E[x²] = τ_r, up to the integrator's own
    bias at this lr (the allowance: the gap between τ_r and the discrete chain's stationary
    variance at temperature τ_r, DESIGN.md's Lyapunov), with swaps accepted ~80% of the time.
    A replica that kept its momenta across a swap (not rescaled by √(τ_new/τ_old)) lands at
    the wrong kinetic temperature every time it moves: measured 18 MCSE off at rung 0 (SGHMC),
    so this test fails without the rescale; SGNHT's thermostat absorbs most of it (3 to 4 MCSE,
    inside the tolerance), so its case checks the rung's law, and the rescale of ξ is checked
    exactly below."""
    lr = 0.1 if sampler == "sghmc" else 0.05
    result = sghmc_jax.sample(
        1,
        quadratic,
        jnp.zeros(1),
        transform=lambda k: getattr(sghmc_jax, sampler)(lr, alpha=1.0, key=k),
        num_chains=64,
        num_steps=4000,
        burn_in=500,
        temperatures=RUNGS,
        keep_rungs=True,
        progress=False,
    )
    assert np.all(result.swap_acceptance > 0.6), result.swap_acceptance
    for rung, tau in enumerate(RUNGS):
        h = helpers.Hyper(lr=lr, alpha=1.0, sigma=1.0, temperature=tau)
        discrete = helpers.stationary_covariance(np.eye(1), h)[0, 0] if sampler == "sghmc" else tau
        square = np.asarray(result.samples[:, :, rung, 0], np.float64) ** 2
        mean, mcse = square.mean(), float(diagnostics.mcse_mean(square))
        assert abs(mean - tau) < 4 * mcse + abs(discrete - tau), (rung, mean, mcse, discrete, "seed 1")


def test_a_transform_with_no_sampler_of_this_library_cannot_be_tempered():
    declared = sghmc_jax.make_log_posterior(lambda x, b: -0.5 * (b - x) ** 2, lambda x: -0.5 * jnp.sum(x**2), 4)
    kw = dict(transform=optax.sgd(0.1), num_steps=5, temperatures=3, progress=False)
    with pytest.raises(ValueError, match=r"runs each replica at its rung's temperature, .* holds none of them"):
        with pytest.warns(UserWarning, match="holds none of this library's samplers"):
            sghmc_jax.sample(0, declared, jnp.zeros(1), data=jnp.ones(4), batch_size=2, **kw)


@pytest.mark.parametrize("keep_rungs", [False, True])
def test_predict_fn_averages_rung_zero(keep_rungs):
    result = small(
        temperatures=3, keep_rungs=keep_rungs, burn_in=5, predict_fn=lambda p, x: jnp.sum(p * x), predict_inputs=2.0
    )
    rung_zero = np.asarray(result.samples)[:, :, 0] if keep_rungs else np.asarray(result.samples)
    np.testing.assert_allclose(result.predictive_mean, (2.0 * rung_zero.sum(-1)).mean(axis=1), rtol=1e-5)


def test_stacked_init_starts_every_replica_of_a_chain_at_its_params():
    start = jnp.asarray([[-100.0, 0.0], [100.0, 0.0]])  # far apart: one step moves a replica by ~1
    result = small(temperatures=3, stacked_init=True, init_params=start, num_steps=1)
    assert result.final_state.params.shape == (6, 2)
    np.testing.assert_allclose(np.asarray(result.final_state.params)[:, 0], [-100] * 3 + [100] * 3, atol=2)


def test_a_diverged_replica_is_held_and_its_chain_marked_from_then_on():
    """With on_divergence="continue", a replica whose log posterior turns non-finite is held where
    it was (its NaN energy rejects every swap with it), the other chains run on, and its chain's
    draws from that step on are missing, as a diverged chain's are."""

    def walled(x, batch):  # finite only inside |x| < 3: the hot rung wanders out, rung 0 does not
        return jnp.where(jnp.all(jnp.abs(x) < 3.0), -0.5 * jnp.sum(x**2), jnp.nan), None

    kw = dict(transform=transform, num_chains=4, progress=False, temperatures=(1.0, 1000.0), num_steps=300)
    result = sghmc_jax.sample(0, walled, jnp.zeros(1), on_divergence="continue", **kw)
    assert np.all(result.diverged_at > 0), result.diverged_at
    samples = np.asarray(result.samples)[..., 0]
    for chain, step in enumerate(result.diverged_at):
        assert np.all(np.isfinite(samples[chain, result.sample_steps < step]))
        assert np.all(np.isnan(samples[chain, result.sample_steps >= step]))
    with pytest.raises(sghmc_jax.DivergenceError, match=r"chain \d diverged"):
        sghmc_jax.sample(0, walled, jnp.zeros(1), **kw)


def test_a_state_carried_to_another_temperature_keeps_its_law_and_is_untouched_at_ratio_one():
    """`kernels.temper`: momenta m → √ratio·m (N(0, σ²T) to N(0, σ²T·ratio)), the SGNHT
    thermostat ξ → α + √ratio·(ξ − α), the preconditioner kept; ratio 1 returns the state bit
    for bit (a replica whose rung did not change runs on exactly)."""
    fields = {"momenta": {"a": jnp.asarray([1.0, -2.0]), "b": jnp.asarray(3.0, jnp.bfloat16)}, "xi": jnp.asarray(0.7)}
    fields["v"] = jnp.asarray([0.1, 0.2])
    hot = kernels.temper(fields, 4.0, {"alpha": 0.5})
    np.testing.assert_allclose(hot["momenta"]["a"], [2.0, -4.0])
    assert hot["momenta"]["b"].dtype == jnp.bfloat16 and float(hot["momenta"]["b"]) == 6.0
    np.testing.assert_allclose(hot["xi"], 0.5 + 2.0 * 0.2, rtol=1e-6)
    assert hot["v"] is fields["v"]
    back = kernels.temper(hot, 0.25, {"alpha": 0.5})
    np.testing.assert_allclose(back["xi"], 0.7, rtol=1e-6)
    same = kernels.temper(fields, 1.0, {"alpha": 0.3})
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), same, fields)
