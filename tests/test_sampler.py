"""The sampler: exact agreement with a hand-written scan, burn-in/thinning, data order, resume,
divergence, errors; then statistics on a Gaussian and on conjugate linear regression."""

from __future__ import annotations

import os
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sghmc_jax
from sghmc_jax import _checkpoint, _engine
from tests import helpers
from tests.helpers import Z_MAX, Hyper


def _regression(seed=0, n=64, d=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ np.arange(1.0, d + 1) + rng.normal(size=n)).astype(np.float32)
    data = {"x": x, "y": y}

    def log_posterior(w, batch):
        resid = batch["y"] - batch["x"] @ w
        return -0.5 * n / batch["y"].shape[0] * jnp.sum(resid**2) - 0.5 * jnp.sum(w**2), None

    return log_posterior, data


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
    log_posterior, data = _regression()
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
    log_posterior, data = _regression(1)
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
    log_posterior, data = _regression(2)
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
    log_posterior, data = _regression(3)
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


def test_every_example_is_used_once_per_epoch_in_each_chains_own_order():
    n, b, epochs, chains = 24, 4, 3, 2
    data = {"idx": np.arange(n)}
    # d log p / d p = indicator of the batch: SGD with step 1 adds 1 to each used example.
    lp = lambda p, batch: (jnp.sum(p[batch["idx"]]), None)  # noqa: E731
    r = sghmc_jax.sample(
        0, lp, jnp.zeros(n), transform=optax.sgd(1.0), num_steps=epochs * n // b, num_chains=chains,
        data=data, batch_size=b, chunk_size=5, progress=False,
    )
    traj = np.concatenate([np.zeros((chains, 1, n)), r.samples], axis=1)
    used = np.diff(traj, axis=1)  # (chain, step, n): 1 where the example was in the batch
    assert np.all(used.sum(axis=2) == b)
    per_epoch = used.reshape(chains, epochs, n // b, n).sum(axis=2)
    np.testing.assert_array_equal(per_epoch, 1)
    orders = used.argmax(axis=2)  # (chain, step) one example of each batch
    assert not np.array_equal(orders[0], orders[1]), "chains must walk their own permutations"
    first_epoch, second_epoch = used[0, : n // b], used[0, n // b : 2 * n // b]
    assert not np.array_equal(first_epoch, second_epoch), "each epoch draws a fresh permutation"


def test_stacked_init_starts_each_chain_where_told():
    lp = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    init = jnp.array([[10.0, 10.0], [-10.0, -10.0]])
    tx = sghmc_jax.sghmc(1e-3, temperature=0.0, momenta=0.0, key=0)
    r = sghmc_jax.sample(0, lp, init, transform=tx, num_steps=2, num_chains=2, stacked_init=True, progress=False)
    assert r.samples[0, 0, 0] > 9 and r.samples[1, 0, 0] < -9
    assert np.all(np.asarray(init) == [[10.0, 10.0], [-10.0, -10.0]])  # the caller's array survives


def _interrupt_after(chunks):
    calls = {"n": 0}

    def callback(info):
        calls["n"] += 1
        if calls["n"] == chunks:
            raise KeyboardInterrupt("simulated kill")

    return callback


def test_resume_after_interruption_is_bit_identical(tmp_path):
    log_posterior, data = _regression(4)
    kw = dict(
        transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0), num_steps=90, num_chains=2, data=data,
        batch_size=8, burn_in=10, thin=4, chunk_size=12, progress=False,
        predict_fn=lambda w, x: x @ w, predict_inputs=jnp.ones((2, 3)),
    )
    clean = sghmc_jax.sample(7, log_posterior, jnp.zeros(3), **kw)
    with pytest.raises(KeyboardInterrupt):
        sghmc_jax.sample(7, log_posterior, jnp.zeros(3), checkpoint_dir=tmp_path, checkpoint_every=20, callback=_interrupt_after(5), **kw)
    resumed = sghmc_jax.sample(7, log_posterior, jnp.zeros(3), checkpoint_dir=tmp_path, checkpoint_every=20, **kw)
    np.testing.assert_array_equal(resumed.samples, clean.samples)
    np.testing.assert_array_equal(resumed.sample_steps, clean.sample_steps)
    np.testing.assert_array_equal(resumed.log_posterior, clean.log_posterior)
    np.testing.assert_array_equal(resumed.predictive_mean, clean.predictive_mean)
    chex.assert_trees_all_equal(resumed.final_state.transform_state.momenta, clean.final_state.transform_state.momenta)


def test_default_checkpoints_come_at_every_chunk_end_and_before_the_callback(tmp_path):
    """Chunks end on multiples of `thin` (8, 16, ... for chunk_size=10, thin=4): the default
    saves at each of them, and a callback that stops the run after chunk 2 finds its chunk
    saved, so the rerun resumes from step 16 and ends bit-identical."""
    log_posterior, data = _regression(4)
    kw = dict(
        transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0), num_steps=40, num_chains=2, data=data,
        batch_size=8, chunk_size=10, thin=4, progress=False,
    )
    clean = sghmc_jax.sample(7, log_posterior, jnp.zeros(3), **kw)
    with pytest.raises(KeyboardInterrupt):
        sghmc_jax.sample(7, log_posterior, jnp.zeros(3), checkpoint_dir=tmp_path, callback=_interrupt_after(2), **kw)
    saved = sorted(int(p.name) for p in (tmp_path / "state").iterdir() if p.name.isdigit())
    assert saved == [8, 16], saved
    resumed = sghmc_jax.sample(7, log_posterior, jnp.zeros(3), checkpoint_dir=tmp_path, **kw)
    np.testing.assert_array_equal(resumed.samples, clean.samples)


def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """A save that dies before orbax renames its temporary directory into place leaves the
    previous checkpoint as it was; the next run removes the unfinished one and resumes from the
    previous, ending bit-identical to an uninterrupted run."""
    from orbax.checkpoint._src.path import atomicity

    log_posterior, data = _regression(5)
    kw = dict(
        transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0), num_steps=60, num_chains=2, data=data,
        batch_size=8, chunk_size=10, progress=False, checkpoint_dir=tmp_path, checkpoint_every=10,
    )
    clean = sghmc_jax.sample(8, log_posterior, jnp.zeros(3), **{**kw, "checkpoint_dir": None, "checkpoint_every": None})
    real_finalize = atomicity.AtomicRenameTemporaryPath.finalize
    calls = {"n": 0}

    async def crash_on_third(self, *args, **kwargs):
        calls["n"] += self.get_final().name.isdigit()  # the rename of a whole checkpoint (a step)
        if calls["n"] == 3:
            raise OSError("simulated crash mid-write")
        return await real_finalize(self, *args, **kwargs)

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", crash_on_third)
    with pytest.raises(OSError, match="simulated crash"):
        sghmc_jax.sample(8, log_posterior, jnp.zeros(3), **kw)
    state_dir = tmp_path / _checkpoint.STATE
    assert any("tmp" in name for name in os.listdir(state_dir)), "the crash left its temporary directory"
    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", real_finalize)
    resumed = sghmc_jax.sample(8, log_posterior, jnp.zeros(3), **kw)
    np.testing.assert_array_equal(resumed.samples, clean.samples)
    np.testing.assert_array_equal(resumed.log_posterior, clean.log_posterior)
    assert not any("tmp" in name for name in os.listdir(state_dir)), "the unfinished save is removed"


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    lp = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    kw = dict(transform=sghmc_jax.sghmc(0.1, key=0), num_steps=10, num_chains=2, progress=False, checkpoint_dir=tmp_path)
    sghmc_jax.sample(0, lp, jnp.zeros(2), **kw)
    with pytest.raises(ValueError, match="holds a checkpoint of a different run"):
        sghmc_jax.sample(1, lp, jnp.zeros(2), **kw)


def test_divergence_is_reported_with_the_draws_before_it():
    # ε·sqrt(curvature) = 0.5·sqrt(100) = 5 > 2: unstable, the chain blows up within ~100 steps.
    lp = lambda p, b: (-50.0 * jnp.sum(p**2), None)  # noqa: E731
    tx = sghmc_jax.sghmc(0.5, alpha=0.01, momenta=0.0, temperature=0.0, key=0)
    init = jnp.array([[1e-30], [1.0]])
    with pytest.raises(sghmc_jax.DivergenceError) as info:
        sghmc_jax.sample(0, lp, init, transform=tx, num_steps=2000, num_chains=2, stacked_init=True, chunk_size=100, progress=False)
    err = info.value
    assert err.chain == 1 and 0 < err.step < 2000
    assert re.search(rf"chain 1 diverged: its (log posterior was non-finite at the params|params were non-finite) after {err.step} steps", str(err))
    assert err.result.samples.shape[1] == err.step - 1  # draws after steps 1..step-1
    np.testing.assert_array_equal(err.result.sample_steps, np.arange(1, err.step))
    assert np.all(np.isfinite(err.result.samples))
    assert err.result.log_posterior.shape[1] == err.step + 1  # up to the step that found it


def test_continue_on_divergence_keeps_the_other_chains():
    lp = lambda p, b: (-50.0 * jnp.sum(p**2), None)  # noqa: E731
    tx = sghmc_jax.sghmc(0.5, alpha=0.01, momenta=0.0, temperature=0.0, key=0)
    init = jnp.array([[0.0], [1.0], [0.0]])
    r = sghmc_jax.sample(0, lp, init, transform=tx, num_steps=1000, num_chains=3, stacked_init=True, on_divergence="continue", progress=False)
    assert r.diverged_at[0] == -1 and r.diverged_at[2] == -1 and r.diverged_at[1] > 0
    assert np.all(np.isnan(r.samples[1, r.diverged_at[1] :]))
    assert np.all(np.isfinite(r.samples[[0, 2]]))
    assert r.samples.shape[1] == 1000
    assert set(r.summary()) == {"params"}


def test_keep_predicate_drops_draws():
    lp = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    r = sghmc_jax.sample(
        0, lp, jnp.zeros(1), transform=sghmc_jax.sghmc(0.1, key=0), num_steps=40, num_chains=2, thin=2,
        keep=lambda step: (step % 10) >= 6, chunk_size=8, progress=False,
    )
    # keep sees the 0-based index of the update behind each draw; sample_steps counts steps.
    np.testing.assert_array_equal(r.sample_steps, [s for s in range(2, 41, 2) if (s - 1) % 10 >= 6])
    assert r.samples.shape[:2] == (2, len(r.sample_steps))


def test_predictive_mean_is_the_mean_over_kept_draws():
    log_posterior, data = _regression(6)
    inputs = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)
    r = sghmc_jax.sample(
        0, log_posterior, jnp.zeros(3), transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0), num_steps=60,
        num_chains=2, data=data, batch_size=8, burn_in=10, thin=5, progress=False,
        predict_fn=lambda w, x: {"mu": x @ w}, predict_inputs=inputs,
    )
    expected = np.einsum("cdk,nk->cn", r.samples, np.asarray(inputs)) / r.samples.shape[1]
    np.testing.assert_allclose(r.predictive_mean["mu"], expected, rtol=1e-5, atol=1e-6)


def test_host_batches_match_a_hand_written_scan():
    log_posterior, data = _regression(7)
    tx = sghmc_jax.sghmc(1e-3, alpha=1.0, key=0)
    rng = np.random.default_rng(3)
    batches = [jax.tree.map(lambda a: a[idx], data) for idx in (rng.choice(64, 8, replace=False) for _ in range(30))]
    r = sghmc_jax.sample(0, log_posterior, jnp.zeros(3), transform=tx, num_steps=30, num_chains=2, batches=iter(batches), chunk_size=7, progress=False)
    _, noise_key, _ = jax.random.split(jax.random.split(jax.random.key(0), 2)[1], 3)
    params, state = jnp.zeros(3), tx.init(jnp.zeros(3))
    for t, batch in enumerate(batches):
        grads = jax.grad(lambda p: -log_posterior(p, batch)[0])(params)
        updates, state = tx.update(grads, state, params, key=jax.random.fold_in(noise_key, t))
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(r.samples[1, -1], params, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="`batches` ran out"):
        sghmc_jax.sample(0, log_posterior, jnp.zeros(3), transform=tx, num_steps=31, batches=iter(batches), progress=False)


def test_progress_lines_without_tqdm(capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    lp = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    sghmc_jax.sample(0, lp, jnp.zeros(1), transform=sghmc_jax.sghmc(0.1, key=0), num_steps=20, chunk_size=10)
    err = capsys.readouterr().err
    assert "sampling: step 10/20" in err and "sampling: step 20/20" in err and "steps/s" in err
    sghmc_jax.sample(0, lp, jnp.zeros(1), transform=sghmc_jax.sghmc(0.1, key=0), num_steps=20, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"batch_size": 100}, ValueError, r"`batch_size` must be <= the number of examples in `data` \(64\), got batch_size=100"),
        ({"thin": 0}, ValueError, r"`thin` must be an int >= 1, got thin=0"),
        ({"burn_in": 50}, ValueError, r"`burn_in` must be < num_steps .* got burn_in=50 and num_steps=50"),
        ({"data": {"x": np.zeros((64, 3)), "y": np.zeros(63)}}, ValueError, r"every leaf of `data` must have the same leading size"),
        ({"log_posterior": lambda w, b: -jnp.sum(w**2)}, TypeError, r"`log_posterior` must return a tuple \(value, aux\)"),
        ({"num_chains": 0}, ValueError, r"`num_chains` must be an int >= 1, got num_chains=0"),
        ({"on_divergence": "ignore"}, ValueError, r"`on_divergence` must be 'raise' or 'continue'"),
        ({"transform": 3}, TypeError, r"`transform` must be an optax GradientTransformation"),
        ({"stacked_init": True}, ValueError, r"with stacked_init=True every leaf of `init_params` must have a leading axis of size num_chains=4"),
    ],
)
def test_bad_inputs_fail_before_compiling(kwargs, error, pattern, monkeypatch):
    log_posterior, data = _regression()
    monkeypatch.setattr(_engine.Program, "executable", lambda *a, **k: pytest.fail("compiled"))
    kw = dict(
        log_posterior=log_posterior, transform=sghmc_jax.sghmc(1e-3, key=0), num_steps=50, data=data,
        batch_size=8, progress=False,
    ) | kwargs
    lp = kw.pop("log_posterior")
    with pytest.raises(error, match=pattern):
        sghmc_jax.sample(0, lp, jnp.zeros(3), **kw)


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


def test_cyclical_sampling_phase_plugs_into_keep():
    import functools

    k, m, beta = 200, 4, 0.5
    lp = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    tx = sghmc_jax.sghmc(
        sghmc_jax.cyclical_schedule(0.3, k, m), alpha=1.0,
        temperature=sghmc_jax.cyclical_temperature_schedule(1.0, k, m, beta), key=0,
    )
    keep = functools.partial(sghmc_jax.in_sampling_phase, total_steps=k, num_cycles=m, exploration_fraction=beta)
    r = sghmc_jax.sample(0, lp, jnp.zeros(1), transform=tx, num_steps=k, num_chains=2, keep=keep, chunk_size=30, progress=False)
    expected = [s + 1 for s in range(k) if bool(sghmc_jax.in_sampling_phase(s, k, m, beta))]
    np.testing.assert_array_equal(r.sample_steps, expected)
    assert len(expected) == k // 2


# ---- regressions: what a new user ran into ---------------------------------------------------


def _norm_log_posterior(p, batch):
    return -jnp.sqrt(jnp.sum(p**2)), None  # NaN gradient at 0


def test_a_nan_gradient_is_a_divergence_with_no_nan_draw_kept():
    """Regression: `DivergenceError.result.samples` held the diverged chain's NaN draw."""
    init = jnp.array([[1.0, 1.0], [0.0, 0.0]])
    with pytest.raises(sghmc_jax.DivergenceError) as info:
        sghmc_jax.sample(
            0, _norm_log_posterior, init, stacked_init=True, num_chains=2,
            transform=sghmc_jax.sghmc(0.1, alpha=1.0, key=0), num_steps=10, progress=False,
        )
    err = info.value
    assert (err.chain, err.step) == (1, 1)
    assert "chain 1 diverged: its params were non-finite after 1 steps" in str(err)
    assert err.result.samples.shape == (2, 0, 2) and err.result.sample_steps.size == 0


def _support_log_posterior(p, batch):
    # log p = −3θ on θ > 0, −inf elsewhere: the chain drifts out of the support at finite θ.
    return jnp.sum(jnp.where(p > 0, -3.0 * p, -jnp.inf)), None


def test_draws_before_a_divergence_all_have_a_finite_log_posterior():
    """Regression: the last draw in `.result` had log posterior −inf."""
    tx = sghmc_jax.sghmc(0.2, alpha=1.0, temperature=0.0, momenta=0.0, key=0)
    init = jnp.array([[50.0], [1.0]])
    with pytest.raises(sghmc_jax.DivergenceError) as info:
        sghmc_jax.sample(0, _support_log_posterior, init, stacked_init=True, num_chains=2, transform=tx, num_steps=200, progress=False)
    err = info.value
    assert err.chain == 1 and "its log posterior was non-finite at the params after" in str(err)
    r = err.result
    assert r.sample_steps.size == err.step - 1
    values = jax.vmap(jax.vmap(lambda p: _support_log_posterior(p, None)[0]))(jnp.asarray(r.samples))
    assert np.all(np.isfinite(values)), values
    assert not np.isfinite(r.log_posterior[1, err.step])  # the trace shows what was found


@pytest.mark.parametrize("case", ["nan_gradient", "out_of_support"])
def test_continue_holds_a_diverged_chain_at_its_last_finite_state(case):
    """Regression: under on_divergence='continue' the chain was frozen at its NaN params."""
    if case == "nan_gradient":
        lp, init = _norm_log_posterior, jnp.array([[1.0, 1.0], [0.0, 0.0]])
        tx = sghmc_jax.sghmc(0.1, alpha=1.0, key=0)
    else:
        lp, init = _support_log_posterior, jnp.array([[50.0], [1.0]])
        tx = sghmc_jax.sghmc(0.2, alpha=1.0, temperature=0.0, momenta=0.0, key=0)
    r = sghmc_jax.sample(
        0, lp, init, stacked_init=True, num_chains=2, transform=tx, num_steps=60,
        on_divergence="continue", progress=False,
    )
    step = int(r.diverged_at[1])
    assert r.diverged_at[0] == -1 and step >= 1
    frozen = jax.tree.map(lambda x: x[1], r.final_state.params)
    assert np.all(np.isfinite(frozen)) and np.isfinite(lp(frozen, None)[0])
    assert np.all(np.isfinite(jax.tree.map(lambda x: x[1], r.final_state.transform_state.momenta)))
    before = r.sample_steps < step
    assert np.all(np.isfinite(r.samples[1, before])) and np.all(np.isnan(r.samples[1, ~before]))
    np.testing.assert_array_equal(r.samples[1, before.sum() - 1] if before.any() else init[1], frozen)
    assert np.all(np.isnan(r.log_posterior[1, step + 1 :]))
    assert np.all(np.isfinite(r.samples[0]))


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"init_params": jnp.array([0.0, jnp.nan, 1.0])}, ValueError, r"every element of `init_params` must be finite, got 1 non-finite value\(s\) \(NaN or infinity\) at init_params"),
        ({"keep": 3}, TypeError, r"`keep` must be a function of the step index returning a bool or None, got int: 3"),
        ({"callback": "print"}, TypeError, r"`callback` must be a function of a dict or None, got str"),
        ({"log_posterior": lambda w, b: -jnp.sum(w**2)}, TypeError, r"`log_posterior` must return a tuple \(value, aux\); return \(value, None\) when there is no auxiliary output\. It returned a scalar of dtype float32$"),
        ({"log_posterior": lambda w, b: (-(w**2), None)}, TypeError, r"`log_posterior` must return a scalar value, it returned an array of shape \(3,\) of dtype float32 as the value"),
    ],
)
def test_more_bad_inputs_fail_before_compiling(kwargs, error, pattern, monkeypatch):
    monkeypatch.setattr(_engine.Program, "executable", lambda *a, **k: pytest.fail("compiled"))
    kw = dict(log_posterior=_regression()[0], init_params=jnp.zeros(3)) | kwargs
    with pytest.raises(error, match=pattern) as info:
        sghmc_jax.sample(0, kw.pop("log_posterior"), kw.pop("init_params"), transform=sghmc_jax.sghmc(1e-3, key=0), num_steps=5, progress=False, **kw)
    assert "Tracer" not in str(info.value) and "ShapeDtypeStruct" not in str(info.value)


def test_a_whole_flax_or_equinox_model_as_params_says_how_to_split_it():
    nnx = pytest.importorskip("flax.nnx")
    eqx = pytest.importorskip("equinox")
    lp = lambda p, b: (jnp.asarray(0.0), None)  # noqa: E731
    tx = sghmc_jax.sghmc(1e-3, key=0)
    mlp = eqx.nn.MLP(2, 1, 4, 1, key=jax.random.key(0))
    with pytest.raises(TypeError, match=r"`init_params` must be a floating-point array, got a function .* at init_params\.activation; it looks like a whole Equinox module: .*eqx\.partition"):
        sghmc_jax.sample(0, lp, mlp, transform=tx, num_steps=5, progress=False)
    model = nnx.Sequential(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), nnx.Dropout(0.1, rngs=nnx.Rngs(1)))
    with pytest.raises(TypeError, match=r"got dtype uint32 at init_params\.layers\[1\]\.rngs.*it looks like a whole Flax module: .*nnx\.split\(model, nnx\.Param\)"):
        sghmc_jax.sample(0, lp, model, transform=tx, num_steps=5, progress=False)


def test_a_forgotten_temperature_is_an_error_before_compiling(monkeypatch):
    """Regression: with `form="mean"` a transform at the default T = 1 sampled a posterior 25
    times too wide, silently."""
    log_posterior, data = _regression()
    ll = lambda w, batch: -0.5 * (batch["y"] - batch["x"] @ w) ** 2  # noqa: E731
    lp = sghmc_jax.make_log_posterior(ll, lambda w: -0.5 * jnp.sum(w**2), 64, form="mean")
    kw = dict(num_steps=20, num_chains=2, data=data, batch_size=8, progress=False)
    with monkeypatch.context() as m:
        m.setattr(_engine.Program, "executable", lambda *a, **k: pytest.fail("compiled"))
        for bad in (sghmc_jax.sghmc(1e-2, key=0), lambda k: sghmc_jax.sgld(1e-2, temperature=1 / 32, key=k),
                    optax.chain(optax.clip_by_global_norm(10.0), sghmc_jax.baoa(1e-2, temperature=sghmc_jax.cyclical_temperature_schedule(1.0, 20, 2, 0.5), key=0))):
            with pytest.raises(ValueError, match=r"`temperature` of \w+ must be the log posterior's temperature 0\.015625"):
                sghmc_jax.sample(0, lp, jnp.zeros(3), transform=bad, **kw)
    unpacked, temperature = lp  # the old README's spelling still carries the temperature
    assert unpacked is lp and temperature == 1 / 64
    r = sghmc_jax.sample(0, unpacked, jnp.zeros(3), transform=sghmc_jax.sghmc(1e-2, temperature=temperature, key=0), **kw)
    assert np.all(np.isfinite(r.samples))
    cold = sghmc_jax.make_log_posterior(ll, lambda w: -0.5 * jnp.sum(w**2), 64, form="mean", temperature=0.5)
    assert cold.temperature == 0.5 / 64


def test_later_calls_with_the_same_functions_compile_nothing():
    """Regression: every call recompiled, a continuation too (and its initial state apart)."""
    log_posterior, data = _regression(9)
    tx = lambda k: sghmc_jax.sghmc(1e-3, alpha=1.0, key=k)  # noqa: E731
    kw = dict(transform=tx, num_chains=2, data=data, batch_size=8, chunk_size=16, progress=False)
    first = sghmc_jax.sample(0, log_posterior, jnp.zeros(3), num_steps=40, **kw)
    assert first.compile_time > 0
    again = sghmc_jax.sample(1, log_posterior, jnp.ones(3), num_steps=70, burn_in=9, thin=1, **kw)
    assert again.compile_time == 0.0
    cont = sghmc_jax.sample(0, log_posterior, None, num_steps=33, init_state=first.final_state, **kw)
    assert cont.compile_time == 0.0
    other_thin = sghmc_jax.sample(0, log_posterior, None, num_steps=30, thin=3, init_state=cont.final_state, **kw)
    assert other_thin.compile_time > 0  # thin is part of the compiled loop


def test_progress_shows_a_compile_phase_and_one_rate(capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name)) if name.startswith("tqdm") else real_import(name, *a, **k))
    lp = lambda p, b: (-0.5 * jnp.sum(p**2) - 0.25 * jnp.sum(p**4), None)  # noqa: E731
    sghmc_jax.sample(0, lp, jnp.zeros(1), transform=sghmc_jax.sghmc(0.1, key=0), num_steps=20, chunk_size=10)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("sampling: compiling")
    assert all("steps/s excluding compilation" in line for line in lines[1:]) and len(lines) == 3


def test_tqdm_progress_bar_runs(capsys):
    pytest.importorskip("tqdm")
    lp = lambda p, b: (-0.5 * jnp.sum(p**2) - 0.125 * jnp.sum(p**4), None)  # noqa: E731
    sghmc_jax.sample(0, lp, jnp.zeros(1), transform=sghmc_jax.sghmc(0.1, key=0), num_steps=20, chunk_size=10)
    err = capsys.readouterr().err
    assert "steps/s" in err and "it/s" not in err  # one rate: ours, compilation excluded


def test_result_repr_is_a_short_summary():
    """Regression: `print(result)` printed every array (83 kB)."""
    lp = lambda p, b: (-0.5 * jnp.sum(p["w"] ** 2), None)  # noqa: E731
    r = sghmc_jax.sample(0, lp, {"w": jnp.zeros(50)}, transform=sghmc_jax.sghmc(0.1, key=0), num_steps=300, num_chains=3, progress=False)
    text = repr(r)
    assert len(text) < 300 and text.startswith("SampleResult(3 chains × 300 draws (steps 1–300) of {'w': (50,)} float32; 0 diverged")


def test_stale_checkpoint_temporaries_are_removed_and_nothing_else(tmp_path):
    """Regression: a kill during a checkpoint write left a temporary file, a full checkpoint's
    size, that later runs never removed."""
    for name in (".sghmc_checkpoint.tmp-abc123.npz", ".tmp-k2j4_x9q.npz"):  # what earlier versions left
        (tmp_path / name).write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("the user's")
    (tmp_path / ".tmp-mine.npz").write_bytes(b"not ours: the wrong shape of name")
    lp = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    sghmc_jax.sample(0, lp, jnp.zeros(2), transform=sghmc_jax.sghmc(0.1, key=0), num_steps=10, num_chains=2, progress=False, checkpoint_dir=tmp_path)
    assert sorted(os.listdir(tmp_path)) == [".tmp-mine.npz", _checkpoint.DRAWS, "notes.txt", _checkpoint.STATE]


def test_samplers_one_after_another_in_one_process():
    """Regression: a nested jit's cached trace captured the noise bins' shared zero (a tracer of
    the first sampler's initial-state program) and the next sampler's program reused it
    ("Computation compiled for 3 inputs but called with 2"; a notebook found it)."""
    log_posterior, data = _regression(11)
    for make in (sghmc_jax.sghmc, sghmc_jax.baoa, sghmc_jax.sgnht):
        r = sghmc_jax.sample(
            0, log_posterior, jnp.zeros(3), transform=lambda k, make=make: make(1e-3, alpha=1.0, key=k),
            num_steps=20, num_chains=2, data=data, batch_size=8, progress=False,
        )
        assert np.all(np.isfinite(r.samples))


# ---- draws streamed to disk ------------------------------------------------------------------


def test_draws_streamed_to_disk_equal_the_in_memory_run_and_are_read_lazily(tmp_path):
    flat_log_posterior, data = _regression(12)
    log_posterior = lambda p, batch: flat_log_posterior(p["w"], batch)  # noqa: E731
    kw = dict(transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0), num_steps=90, num_chains=3, data=data,
              batch_size=8, burn_in=6, thin=4, chunk_size=20, progress=False)
    memory = sghmc_jax.sample(2, log_posterior, {"w": jnp.zeros(3)}, **kw)
    disk = sghmc_jax.sample(2, log_posterior, {"w": jnp.zeros(3)}, output=tmp_path / "run.zarr", **kw)
    leaf = disk.samples["w"]
    assert type(leaf).__name__ == "StoredArray" and leaf.shape == memory.samples["w"].shape
    np.testing.assert_array_equal(leaf[1, 2:5], memory.samples["w"][1, 2:5])  # read lazily
    np.testing.assert_array_equal(np.asarray(leaf), memory.samples["w"])
    np.testing.assert_array_equal(disk.sample_steps, memory.sample_steps)
    np.testing.assert_array_equal(np.asarray(disk.log_posterior), memory.log_posterior)
    assert disk.summary(select=["w"])["w"]["rhat"].shape == (3,)
    np.testing.assert_allclose(disk.summary()["w"]["mean"], memory.summary()["w"]["mean"], rtol=1e-6)
    import zarr

    store = zarr.open_group(str(tmp_path / "run.zarr"), mode="r")  # a plain zarr v3 store
    assert store.attrs["num_draws"] == len(memory.sample_steps) and store["samples/w"].shape == (3, 21, 3)
    with pytest.raises(ValueError, match="already holds this run's draws"):
        sghmc_jax.sample(2, log_posterior, {"w": jnp.zeros(3)}, output=tmp_path / "run.zarr", **kw)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's")
    with pytest.raises(ValueError, match="exists and is not empty"):
        sghmc_jax.sample(2, log_posterior, {"w": jnp.zeros(3)}, output=tmp_path / "mine", **kw)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "the user's"


def test_streamed_run_resumes_after_a_kill_without_rewriting_earlier_draws(tmp_path):
    log_posterior, data = _regression(13)
    kw = dict(transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0), num_steps=80, num_chains=2, data=data,
              batch_size=8, thin=2, chunk_size=10, progress=False, output=tmp_path / "draws",
              checkpoint_dir=tmp_path / "ckpt", checkpoint_every=20)
    clean = sghmc_jax.sample(4, log_posterior, jnp.zeros(3), **{**kw, "output": None, "checkpoint_dir": None, "checkpoint_every": None})
    with pytest.raises(KeyboardInterrupt):
        sghmc_jax.sample(4, log_posterior, jnp.zeros(3), callback=_interrupt_after(5), **kw)
    chunk = tmp_path / "draws" / "samples" / "params" / "c" / "0" / "0" / "0"
    before = chunk.stat().st_mtime_ns
    resumed = sghmc_jax.sample(4, log_posterior, jnp.zeros(3), **kw)
    np.testing.assert_array_equal(np.asarray(resumed.samples), clean.samples)
    np.testing.assert_array_equal(np.asarray(resumed.log_posterior), clean.log_posterior)
    assert chunk.stat().st_mtime_ns == before, "the first draws were written once"
    assert not any(f.suffix == ".npz" for f in (tmp_path / "ckpt").rglob("*")), "checkpoints hold no draws"


def test_a_run_killed_before_its_first_checkpoint_starts_over_in_its_own_store(tmp_path):
    log_posterior, data = _regression(14)
    kw = dict(transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0), num_steps=40, num_chains=2, data=data,
              batch_size=8, chunk_size=10, progress=False, checkpoint_dir=tmp_path, checkpoint_every=30)
    clean = sghmc_jax.sample(5, log_posterior, jnp.zeros(3), **{**kw, "checkpoint_dir": None, "checkpoint_every": None})
    with pytest.raises(KeyboardInterrupt):
        sghmc_jax.sample(5, log_posterior, jnp.zeros(3), callback=_interrupt_after(2), **kw)
    assert (tmp_path / _checkpoint.DRAWS).is_dir()
    resumed = sghmc_jax.sample(5, log_posterior, jnp.zeros(3), **kw)
    np.testing.assert_array_equal(resumed.samples, clean.samples)
    np.testing.assert_array_equal(resumed.log_posterior, clean.log_posterior)


# ---- a rerun is the same run, or it is refused -------------------------------------------------


def _other_likelihood(w, batch):
    resid = batch["y"] - batch["x"] @ w
    return -0.5 * 64 / batch["y"].shape[0] * jnp.sum(resid**2) - 0.5 * jnp.sum(w**2) / 4.0, None


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(transform=sghmc_jax.sghmc(3e-4, alpha=1.0, key=0)), r"lr 0\.001 -> 0\.0003"),
        (dict(transform=sghmc_jax.sghmc(optax.linear_schedule(1e-3, 5e-4, 40), alpha=1.0, key=0)),
         r"lr 0\.001 -> a schedule"),
        (dict(transform=sghmc_jax.sghmc(1e-3, alpha=1.0, momenta=0.5, key=0)), "the compiled step"),
        (dict(log_posterior=_other_likelihood), "the compiled step"),
        (dict(data="shifted"), "the values of `data`"),
        (dict(init_params=jnp.ones(3)), "the values of `init_params`"),
        (dict(thin=2), "`thin` 1 -> 2"),
    ],
    ids=["lr", "schedule", "initial-momenta", "likelihood", "data-values", "init-values", "thin"],
)
def test_a_rerun_that_changes_the_draws_is_refused_naming_the_change(tmp_path, change, match):
    """Regression: the fingerprint covered shapes, not values, hyperparameters or the
    likelihood, so a finished run rerun with another lr, likelihood or data returned the old
    draws, and a crashed run resumed at another lr mixed the two."""
    log_posterior, data = _regression(15)
    kw = dict(log_posterior=log_posterior, init_params=jnp.zeros(3), transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0),
              num_steps=40, num_chains=2, data=data, batch_size=8, chunk_size=10, progress=False)
    first = sghmc_jax.sample(0, checkpoint_dir=tmp_path / "ckpt", **kw)
    if change.get("data") == "shifted":
        change = dict(data={"x": data["x"], "y": data["y"] + 1.0})
    with pytest.raises(ValueError, match=f"different run.*{match}"):
        sghmc_jax.sample(0, checkpoint_dir=tmp_path / "ckpt", **{**kw, **change})
    # The same without a checkpoint: the draw store refuses it too, and keeps its draws.
    sghmc_jax.sample(0, output=tmp_path / "out", **kw)
    with pytest.raises(ValueError, match=f"another run.*{match}"):
        sghmc_jax.sample(0, output=tmp_path / "out", **{**kw, **change})
    again = sghmc_jax.sample(0, checkpoint_dir=tmp_path / "ckpt", **kw)  # the same run: its draws
    np.testing.assert_array_equal(again.samples, first.samples)


def test_a_crashed_run_rerun_at_another_lr_is_refused_not_resumed(tmp_path):
    """The issue's case: streamed and checkpointed, stopped after 2 chunks, rerun at a lower lr."""
    log_posterior, data = _regression(16)
    kw = dict(num_steps=60, num_chains=2, data=data, batch_size=8, chunk_size=10, progress=False,
              output=tmp_path / "draws", checkpoint_dir=tmp_path / "ckpt")
    with pytest.raises(KeyboardInterrupt):
        sghmc_jax.sample(1, log_posterior, jnp.zeros(3), transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0),
                         callback=_interrupt_after(2), **kw)
    with pytest.raises(ValueError, match=r"lr 0\.001 -> 0\.0003"):
        sghmc_jax.sample(1, log_posterior, jnp.zeros(3), transform=sghmc_jax.sghmc(3e-4, alpha=1.0, key=0), **kw)
    resumed = sghmc_jax.sample(1, log_posterior, jnp.zeros(3), transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0), **kw)
    assert resumed.hyperparameters["lr"] == 1e-3 and len(resumed.sample_steps) == 60


def test_program_digests_are_the_same_in_a_fresh_process():
    """A run's identity must survive a kernel restart (a resumed run is a new process): jaxpr
    text prints Python object addresses (custom_jvp functions), which the digest leaves out."""
    code = """
import jax, jax.numpy as jnp, optax
from sghmc_jax import _checkpoint
f = lambda p, x: jnp.sum(jax.nn.relu(p * x) + jax.nn.softplus(p))
tx = optax.chain(optax.clip(1.0), optax.sgd(optax.cosine_decay_schedule(1e-3, 100)))
print("DIGEST", _checkpoint.program_digest(jax.make_jaxpr(jax.grad(f))(jnp.ones(3), jnp.arange(3.0))),
      _checkpoint.program_digest(jax.make_jaxpr(tx.update)(jnp.ones(3), tx.init(jnp.ones(3)))))
"""
    import subprocess
    import sys

    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout for _ in range(2)]
    digests = [o.split("DIGEST ")[1].split() for o in outs]
    assert digests[0] == digests[1] and digests[0][0] != digests[0][1]


_KILLED_RUN = """
import os, pathlib, signal, sys
import jax.numpy as jnp, numpy as np
import sghmc_jax
from tests.test_sampler import _regression

where, out = sys.argv[1], sys.argv[2]
if where == "creating":  # SIGKILL while the draw store is being made: after its second array
    import zarr.core.group as group_module
    made = {"n": 0}
    create = group_module.Group.create_array
    def create_then_die(self, *a, **k):
        made["n"] += 1
        if made["n"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return create(self, *a, **k)
    group_module.Group.create_array = create_then_die
else:  # SIGKILL mid-write of a chunk of draws, after the first checkpoint: zarr's temporary remains
    replace = pathlib.Path.replace
    seen = {"n": 0}
    def replace_or_die(self, target):
        if str(self).endswith(".partial") and "samples" in str(self):
            seen["n"] += 1
            if seen["n"] == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        return replace(self, target)
    pathlib.Path.replace = replace_or_die
log_posterior, data = _regression(17)
sghmc_jax.sample(3, log_posterior, jnp.zeros(3), transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0), num_steps=40,
                 num_chains=2, data=data, batch_size=8, chunk_size=10, progress=False, output=out + "/draws",
                 checkpoint_dir=out + "/ckpt")
"""


@pytest.mark.parametrize("where", ["creating", "writing"])
def test_a_run_killed_while_making_or_writing_its_store_resumes_and_leaves_nothing_behind(tmp_path, where):
    """Regression: a SIGKILL while the draw store was being made left a store without its
    fingerprint, which the same command then refused ("holds draws of another run"); a SIGKILL
    mid chunk write left zarr's `*.partial` files, which a completed resume never removed."""
    import pathlib
    import signal
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", _KILLED_RUN, where, str(tmp_path)], cwd=root,
                          capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    left = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".partial") or "creating" in p.name]
    assert left, "the kill left nothing to clean up: the test would not see the defect"
    log_posterior, data = _regression(17)
    kw = dict(transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0), num_steps=40, num_chains=2, data=data,
              batch_size=8, chunk_size=10, progress=False)
    clean = sghmc_jax.sample(3, log_posterior, jnp.zeros(3), **kw)
    resumed = sghmc_jax.sample(3, log_posterior, jnp.zeros(3), output=tmp_path / "draws",
                               checkpoint_dir=tmp_path / "ckpt", **kw)
    np.testing.assert_array_equal(np.asarray(resumed.samples), clean.samples)
    np.testing.assert_array_equal(np.asarray(resumed.log_posterior), clean.log_posterior)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".partial") or "creating" in p.name]


def test_traces_keep_their_dtype_on_disk_and_steps_per_second_counts_this_call(tmp_path):
    """Regression: with `output=`/`checkpoint_dir=` the log posterior and kinetic traces came back
    float64 (float32 in memory); a resumed run's steps/s counted the steps run before the kill."""
    log_posterior, data = _regression(18)
    kw = dict(transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0), num_steps=60, num_chains=2, data=data,
              batch_size=8, chunk_size=10, progress=False)
    memory = sghmc_jax.sample(2, log_posterior, jnp.zeros(3), **kw)
    disk = sghmc_jax.sample(2, log_posterior, jnp.zeros(3), output=tmp_path / "out", **kw)
    assert memory.log_posterior.dtype == np.float32 and memory.kinetic.dtype == np.float32
    assert disk.log_posterior.dtype == np.float32 and disk.kinetic.dtype == np.float32
    with pytest.raises(KeyboardInterrupt):
        sghmc_jax.sample(2, log_posterior, jnp.zeros(3), checkpoint_dir=tmp_path / "ckpt",
                         callback=_interrupt_after(4), **kw)
    resumed = sghmc_jax.sample(2, log_posterior, jnp.zeros(3), checkpoint_dir=tmp_path / "ckpt", **kw)
    assert resumed.log_posterior.dtype == np.float32
    assert round(resumed.steps_per_second * resumed.wall_time) == 20  # 2 chunks run by this call


@pytest.mark.parametrize(
    "where, match",
    [
        (dict(output=3), "`output` must be a path"),
        (dict(output="FILE"), "`output` must be a directory"),
        (dict(output="CKPT", checkpoint_dir="CKPT"), "`output` .* must be a path of its own"),
        (dict(output="CKPT/state", checkpoint_dir="CKPT"), "`output` .* must be a path of its own"),
    ],
)
def test_bad_output_paths_are_refused_before_compiling(tmp_path, where, match):
    (tmp_path / "FILE").write_text("the user's")
    where = {k: str(tmp_path / v) if isinstance(v, str) else v for k, v in where.items()}
    lp = lambda p, b: (jnp.sum(p), None)  # noqa: E731
    with pytest.raises((TypeError, ValueError), match=match):
        sghmc_jax.sample(0, lp, jnp.zeros(2), transform=sghmc_jax.sghmc(0.1, key=0), num_steps=5, progress=False, **where)
    assert (tmp_path / "FILE").read_text() == "the user's"


# ---- issue 18: inputs checked before compiling (NaN data, thin, a transform that does not
# sample, a functional face's transform, a functional init that cannot lay out aux) ----------


def _no_compile(monkeypatch):
    monkeypatch.setattr(_engine.Program, "executable", lambda *a, **k: pytest.fail("compiled"))


@pytest.mark.parametrize("on_device", [False, True], ids=["numpy", "jax"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_data_is_named_before_compiling(monkeypatch, on_device, bad):
    """Regression (issue 18): a NaN in `data` made every chain diverge, reading exactly like a
    step size that is too large."""
    _no_compile(monkeypatch)
    log_posterior, data = _regression(18)
    data = {"x": data["x"].copy(), "y": data["y"].copy(), "label": np.arange(64)}
    data["y"][[5, 9]] = bad
    if on_device:
        data = jax.tree.map(jnp.asarray, data)
    with pytest.raises(ValueError, match=re.escape("every floating-point element of `data` must be finite, got 2 non-finite value(s) (NaN or infinity) at data['y']")):
        sghmc_jax.sample(0, log_posterior, jnp.zeros(3), transform=sghmc_jax.sghmc(1e-3, key=0), num_steps=5, data=data, batch_size=8, progress=False)


def test_a_non_finite_first_host_batch_is_named_before_compiling(monkeypatch):
    _no_compile(monkeypatch)
    log_posterior, data = _regression(18)
    first = {"x": data["x"][:8].copy(), "y": data["y"][:8]}
    first["x"][2, 1] = np.nan
    batches = [first] + [{"x": data["x"][:8], "y": data["y"][:8]}] * 4
    with pytest.raises(ValueError, match=re.escape("`batches[0]` must be finite, got 1 non-finite value(s) (NaN or infinity) at batches[0]['x']")):
        sghmc_jax.sample(0, log_posterior, jnp.zeros(3), transform=sghmc_jax.sghmc(1e-3, key=0), num_steps=5, batches=batches, progress=False)


@pytest.mark.parametrize("num_steps, burn_in, thin", [(10, 0, 11), (10, 5, 6), (100, 99, 2)])
def test_a_thin_that_keeps_no_draw_is_an_error(monkeypatch, num_steps, burn_in, thin):
    """Regression (issue 18): `thin` larger than the steps after burn-in returned 0 draws."""
    _no_compile(monkeypatch)
    lp = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    with pytest.raises(ValueError, match=re.escape(f"`thin` must be <= num_steps - burn_in ({num_steps - burn_in}) so that at least one draw is kept, got thin={thin}")):
        sghmc_jax.sample(0, lp, jnp.zeros(2), transform=sghmc_jax.sghmc(1e-3, key=0), num_steps=num_steps, burn_in=burn_in, thin=thin, progress=False)


def test_thin_equal_to_the_steps_after_burn_in_keeps_one_draw():
    lp = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    result = sghmc_jax.sample(0, lp, jnp.zeros(2), transform=sghmc_jax.sghmc(1e-3, key=0), num_steps=10, burn_in=4, thin=6, num_chains=1, progress=False)
    assert result.samples.shape == (1, 1, 2)


@pytest.mark.parametrize(
    "transform",
    [lambda: optax.adam(1e-3), lambda: optax.chain(optax.clip(1.0), optax.sgd(1e-3)), lambda: (lambda k: optax.sgd(1e-3))],
    ids=["adam", "chain-of-optimisers", "factory-of-an-optimiser"],
)
def test_a_transform_without_noise_warns_that_it_optimises(transform):
    """Regression (issue 18): `optax.adam` was accepted as a sampler without a word. A warning,
    not an error: a user's own noisy transform cannot be told apart from it."""
    lp = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    with pytest.warns(UserWarning, match=r"holds none of this library's samplers .* OPTIMISES rather than samples") as record:
        sghmc_jax.sample(0, lp, jnp.zeros(2), transform=transform(), num_steps=2, num_chains=1, progress=False)
    assert record[0].filename == __file__, "the warning points at the user's call"


@pytest.mark.parametrize(
    "transform",
    [
        lambda: sghmc_jax.sgld(1e-3, key=0),
        lambda: (lambda k: sghmc_jax.ubu(1e-3, key=k)),
        lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.add_decayed_weights(1.0), sghmc_jax.sghmc(1e-3, key=0)),
        lambda: optax.inject_hyperparams(sghmc_jax.sghmc)(learning_rate=1e-3, key=0),
        lambda: optax.masked(sghmc_jax.psgld(1e-3, key=0), {"a": True, "b": True}),
    ],
    ids=["sgld", "factory", "chain", "inject_hyperparams", "masked"],
)
def test_our_samplers_alone_or_wrapped_do_not_warn(transform):
    lp = lambda p, b: (-0.5 * jnp.sum(p["a"] ** 2) - 0.5 * jnp.sum(p["b"] ** 2), None)  # noqa: E731
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        sghmc_jax.sample(0, lp, {"a": jnp.zeros(2), "b": jnp.zeros(())}, transform=transform(), num_steps=2, num_chains=1, progress=False)


@pytest.mark.parametrize("face", ["sghmc", "sgld", "ubu", "psghmc"])
@pytest.mark.parametrize("as_factory", [False, True], ids=["transform", "factory"])
def test_a_functional_face_transform_says_sample_takes_the_optax_face(monkeypatch, face, as_factory):
    """Regression (issue 18): it failed deep in tracing with "update() got multiple values for
    argument 'log_posterior'"."""
    _no_compile(monkeypatch)
    lp = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    functional = getattr(sghmc_jax.sgmcmc, face).build(lp, 1e-3)
    transform, name = ((lambda k: functional), "transform\\(key\\)") if as_factory else (functional, "transform")
    with pytest.raises(TypeError, match=rf"`{name}` must be an optax-face transform, got the functional face's Transform from sghmc_jax\.sgmcmc\.{face}\.build\(\.\.\.\).*pass transform=sghmc_jax\.{face}\(learning_rate, \.\.\., key=key\)"):
        sghmc_jax.sample(0, lp, jnp.zeros(2), transform=transform, num_steps=5, progress=False)


def test_functional_init_warns_when_it_cannot_lay_out_aux_without_a_batch():
    """Regression (issue 18): init without `batch=` left aux=None when the log posterior could
    not run on batch=None, and a later `lax.scan` over update failed with a pytree mismatch."""
    log_posterior, data = _regression(18)
    lp = lambda w, batch: (log_posterior(w, batch)[0], {"resid": batch["y"] - batch["x"] @ w})  # noqa: E731
    transform = sghmc_jax.sgmcmc.sghmc.build(lp, 1e-4)
    with pytest.warns(UserWarning, match=r"init\(params\) without `batch=` .* `jax\.lax\.scan` over `update` fails .*`init\(params, batch=batch, \.\.\.\)`") as record:
        state = transform.init(jnp.zeros(3), key=0)
    assert record[0].filename == __file__, "the warning points at the user's call"
    assert state.aux is None
    batch = jax.tree.map(jnp.asarray, data)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        state = transform.init(jnp.zeros(3), key=0, batch=batch)  # the fix: no warning, aux laid out
    step = lambda s, k: (transform.update(s, batch, key=k), None)  # noqa: E731
    jax.lax.scan(step, state, jax.random.split(jax.random.key(0), 3))


# ---- found by using the library as a new user ------------------------------------------------


def _mean_form_problem():
    rng = np.random.default_rng(21)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    data = {"x": x, "y": (x @ np.array([1.0, -2.0, 0.5], np.float32) + rng.normal(size=200)).astype(np.float32)}
    lik = lambda w, b: -0.5 * (b["y"] - b["x"] @ w) ** 2  # noqa: E731
    prior = lambda w: -0.5 * jnp.sum(w**2)  # noqa: E731
    return lik, prior, data


def test_an_injected_temperature_that_disagrees_with_the_log_posterior_is_refused():
    """Regression: under optax.inject_hyperparams the temperature is in the (traced) state, so
    sample() ran T = 1 against a log posterior that needs 1/N, silently far too wide."""
    lik, prior, data = _mean_form_problem()
    lp = sghmc_jax.make_log_posterior(lik, prior, num_data=200, form="mean")
    kw = dict(num_steps=20, num_chains=2, data=data, batch_size=50, progress=False)
    injected = lambda t: lambda k: optax.inject_hyperparams(sghmc_jax.sghmc)(1e-3, alpha=1.0, temperature=t, key=k)  # noqa: E731
    with pytest.raises(ValueError, match=r"temperature.*0\.005.*got temperature=1\.0"):
        sghmc_jax.sample(0, lp, jnp.zeros(3), transform=injected(1.0), **kw)
    r = sghmc_jax.sample(0, lp, jnp.zeros(3), transform=injected(lp.temperature), **kw)
    assert np.all(np.isfinite(r.samples))


def test_a_log_posterior_built_for_another_num_data_is_refused():
    """Regression: make_log_posterior(num_data=100) with 200 examples in `data` sampled a law
    of the wrong width, silently."""
    lik, prior, data = _mean_form_problem()
    lp = sghmc_jax.make_log_posterior(lik, prior, num_data=100)
    with pytest.raises(ValueError, match=r"num_data=100.*`data` holds 200"):
        sghmc_jax.sample(0, lp, jnp.zeros(3), transform=sghmc_jax.sghmc(1e-3, key=0), num_steps=20,
                         data=data, batch_size=50, progress=False)


def test_messages_of_a_returned_run_and_of_batches_that_run_out(tmp_path):
    log_posterior, data = _regression(22)
    kw = dict(transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0), num_steps=20, num_chains=2, data=data,
              batch_size=8, chunk_size=10, progress=False, checkpoint_dir=tmp_path)
    sghmc_jax.sample(0, log_posterior, jnp.zeros(3), **kw)
    again = sghmc_jax.sample(0, log_posterior, jnp.zeros(3), **kw)
    assert "no steps run by this call" in repr(again) and "nan" not in repr(again)
    with pytest.raises(ValueError, match=r"init_state=result\.final_state"):
        sghmc_jax.sample(0, log_posterior, jnp.zeros(3), **{**kw, "num_steps": 40})
    batches = [{"x": data["x"][:8], "y": data["y"][:8]}] * 13
    with pytest.raises(ValueError, match=r"ran out.*\(7 more were needed to finish this chunk\)"):
        sghmc_jax.sample(0, log_posterior, jnp.zeros(3), transform=sghmc_jax.sghmc(1e-3, key=0), num_steps=30,
                         batches=batches, chunk_size=10, progress=False)
