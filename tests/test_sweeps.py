"""Sweeps without recompiling: a `sample()` call that changes only numeric hyperparameter values
(of the transform, alone or inside `optax.chain`, and the log posterior's temperature) reuses the
program compiled before and gives the draws a fresh compile gives; a change of structure still
compiles; the run's identity still sees the values; the program cache keyed by what a program
computes never serves one program for another."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sghmc_jax
from sghmc_jax._sampler import cache

N = 48


def _data(seed=0, d=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, d)).astype(np.float32)
    y = (x @ np.arange(1.0, d + 1) + rng.normal(size=N)).astype(np.float32)
    return {"x": x, "y": y}


def _log_likelihood(w, batch):
    return -0.5 * (batch["y"] - batch["x"] @ w) ** 2


def _log_prior(w):
    return -0.5 * jnp.sum(w**2)


def _run(lr, alpha, temperature, *, chained, **kw):
    """The BNN notebook's structure: a new log posterior and a new factory lambda every call."""
    log_post = sghmc_jax.make_log_posterior(_log_likelihood, _log_prior, N, form="mean", temperature=temperature)

    def transform(key):
        tx = sghmc_jax.sghmc(lr, alpha=alpha, temperature=log_post.temperature, key=key)
        return optax.chain(optax.clip_by_global_norm(100.0), tx) if chained else tx

    return sghmc_jax.sample(
        0, log_post, jnp.zeros(3), transform=transform, num_steps=30, num_chains=2, data=_data(),
        batch_size=8, burn_in=10, progress=False, **kw,
    )  # fmt: skip


@pytest.mark.parametrize("chained", [False, True], ids=["alone", "in optax.chain"])
def test_a_second_call_that_changes_only_values_compiles_nothing_and_draws_as_a_fresh_compile(chained):
    cache.clear_cache()
    first = _run(0.05, 1.0, 1.0, chained=chained)
    assert first.compile_time > 0
    programs = len(cache._cache)
    swept = {}
    for values in [(0.02, 1.0, 1.0), (0.02, 1.0, 0.3), (0.02, 0.5, 0.3)]:  # lr, then T, then alpha
        swept[values] = _run(*values, chained=chained)
        assert swept[values].compile_time == 0.0, values
        assert len(cache._cache) == programs, values
    for values, result in swept.items():
        cache.clear_cache()
        fresh = _run(*values, chained=chained)
        assert fresh.compile_time > 0
        np.testing.assert_array_equal(result.samples, fresh.samples, err_msg=str(values))
        np.testing.assert_array_equal(result.log_posterior, fresh.log_posterior, err_msg=str(values))
    # The values reached the chains: every step of the sweep moved them elsewhere.
    draws = [first.samples] + [r.samples for r in swept.values()]
    assert all(not np.array_equal(a, b) for a, b in itertools.pairwise(draws))


def test_a_change_of_structure_still_compiles():
    log_posterior = lambda w, batch: (-0.5 * jnp.sum(w**2), None)  # noqa: E731
    kw = dict(num_steps=20, num_chains=2, progress=False)
    cache.clear_cache()
    sghmc_jax.sample(0, log_posterior, jnp.zeros(3), transform=sghmc_jax.sghmc(0.1, alpha=1.0, key=0), **kw)
    schedule = optax.linear_schedule(0.1, 0.01, 20)
    for transform in [
        sghmc_jax.sghmc(schedule, alpha=1.0, key=0),  # a schedule where a number was
        sghmc_jax.sgld(0.1, key=0),  # another sampler
        optax.chain(optax.clip(1.0), sghmc_jax.sghmc(0.1, alpha=1.0, key=0)),  # the same leaves, another state tree
    ]:
        result = sghmc_jax.sample(0, log_posterior, jnp.zeros(3), transform=transform, **kw)
        assert result.compile_time > 0
    assert isinstance(result.final_state.transform_state, tuple) and len(result.final_state.transform_state) == 2


def test_a_rerun_at_another_lr_inside_optax_chain_is_refused(tmp_path):
    """The hyperparameters are no longer constants of the program, whose digest identified them:
    the run's identity holds the values of its inputs (said as such, not as another program)."""
    data = _data(1)

    def log_posterior(w, batch):
        return -0.5 * N / 8 * jnp.sum((batch["y"] - batch["x"] @ w) ** 2) - 0.5 * jnp.sum(w**2), None

    def run(lr):
        transform = optax.chain(optax.clip(10.0), sghmc_jax.sghmc(lr, alpha=1.0, key=0))
        return sghmc_jax.sample(
            0, log_posterior, jnp.zeros(3), transform=transform, num_steps=20, num_chains=2, data=data,
            batch_size=8, chunk_size=10, progress=False, checkpoint_dir=tmp_path,
        )  # fmt: skip

    first = run(1e-3)
    with pytest.raises(ValueError, match=r"different run.*the values of the transforms' hyperparameters") as err:
        run(3e-4)
    assert "compiled step" not in str(err.value)  # the program is the same; its inputs' values differ
    np.testing.assert_array_equal(run(1e-3).samples, first.samples)


def test_programs_with_different_callbacks_do_not_share_a_compiled_program():
    """A callback's function does not show in the jaxpr's text: such programs are also keyed by
    the user's functions, so each call runs its own callback."""

    def make(factor):
        def log_posterior(w, batch):
            scale = jax.pure_callback(lambda: np.float32(factor), jax.ShapeDtypeStruct((), jnp.float32))
            return -0.5 * scale * jnp.sum(w**2), None

        return log_posterior

    kw = dict(transform=sghmc_jax.sghmc(0.1, alpha=1.0, temperature=0.0, momenta=0.0, key=0), num_steps=5,
              num_chains=1, progress=False)  # fmt: skip
    a = sghmc_jax.sample(0, make(1.0), jnp.ones(2), **kw)
    b = sghmc_jax.sample(0, make(4.0), jnp.ones(2), **kw)
    assert b.compile_time > 0
    np.testing.assert_allclose(b.log_posterior[:, 0], 4.0 * a.log_posterior[:, 0])


def test_custom_jvp_rules_that_differ_make_different_programs():
    """Two `custom_jvp` functions with the same primal and different rules print alike, but the
    chunk program differentiates the log posterior while it is traced, so the rule's equations
    are in its jaxpr: the second does not get the first's program."""

    def make(rule_scale):
        @jax.custom_jvp
        def square(x):
            return x**2

        square.defjvp(lambda primals, tangents: (primals[0] ** 2, rule_scale * 2 * primals[0] * tangents[0]))
        return lambda w, batch: (-0.5 * jnp.sum(square(w)), None)

    kw = dict(transform=sghmc_jax.sghmc(0.1, alpha=1.0, temperature=0.0, momenta=0.0, key=0), num_steps=3,
              num_chains=1, progress=False)  # fmt: skip
    a = sghmc_jax.sample(0, make(1.0), jnp.ones(2), **kw)
    b = sghmc_jax.sample(0, make(3.0), jnp.ones(2), **kw)
    assert b.compile_time > 0
    assert not np.array_equal(a.samples, b.samples)


def test_a_sweep_over_the_numbers_of_the_librarys_schedules_compiles_nothing():
    log_posterior = lambda w, batch: (-0.5 * jnp.sum(w**2), None)  # noqa: E731

    def run(lr, temperature):
        transform = sghmc_jax.sghmc(
            sghmc_jax.cyclical_schedule(lr, 40, 2),
            alpha=1.0,
            temperature=sghmc_jax.cyclical_temperature_schedule(temperature, 40, 2, 0.25),
            key=0,
        )
        return sghmc_jax.sample(0, log_posterior, jnp.zeros(3), transform=transform, num_steps=40, num_chains=2,
                                progress=False)  # fmt: skip

    cache.clear_cache()
    assert run(0.1, 1.0).compile_time > 0
    swept = run(0.05, 0.5)
    assert swept.compile_time == 0.0
    cache.clear_cache()
    np.testing.assert_array_equal(swept.samples, run(0.05, 0.5).samples)


LR = 0.1


def test_the_same_factory_reading_a_changed_global_samples_at_the_new_value():
    """A call with the same functions takes its program untraced; the values still come from
    this call (before, a factory reading a global `lr` got the first call's value baked in)."""
    global LR
    log_posterior = lambda w, batch: (-0.5 * jnp.sum(w**2), None)  # noqa: E731
    transform = lambda k: sghmc_jax.sghmc(LR, alpha=1.0, key=k)  # noqa: E731
    kw = dict(transform=transform, num_steps=20, num_chains=2, progress=False)
    cache.clear_cache()
    LR = 0.1
    first = sghmc_jax.sample(0, log_posterior, jnp.zeros(3), **kw)
    LR = 0.03
    try:
        swept = sghmc_jax.sample(0, log_posterior, jnp.zeros(3), **kw)
        assert swept.compile_time == 0.0
        assert swept.hyperparameters["lr"] == 0.03
        cache.clear_cache()
        fresh = sghmc_jax.sample(0, log_posterior, jnp.zeros(3), **kw)
    finally:
        LR = 0.1
    np.testing.assert_array_equal(swept.samples, fresh.samples)
    assert not np.array_equal(first.samples, swept.samples)
