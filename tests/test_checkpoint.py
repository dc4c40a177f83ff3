"""Checkpoints (`sghmc_jax/_sampler/checkpoint.py`): a killed run resumes bit for bit; saves are
atomic; another run's checkpoint is refused; nothing of the user's is deleted."""

from __future__ import annotations

import os

import chex
import jax.numpy as jnp
import numpy as np
import pytest

import sghmc_jax
from sghmc_jax._sampler import checkpoint
from tests import helpers


def test_resume_after_interruption_is_bit_identical(tmp_path):
    log_posterior, data = helpers.regression(4)
    kw = dict(
        transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0), num_steps=90, num_chains=2, data=data,
        batch_size=8, burn_in=10, thin=4, chunk_size=12, progress=False,
        predict_fn=lambda w, x: x @ w, predict_inputs=jnp.ones((2, 3)),
    )
    clean = sghmc_jax.sample(7, log_posterior, jnp.zeros(3), **kw)
    with pytest.raises(KeyboardInterrupt):
        sghmc_jax.sample(7, log_posterior, jnp.zeros(3), checkpoint_dir=tmp_path, checkpoint_every=20, callback=helpers.interrupt_after(5), **kw)
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
    log_posterior, data = helpers.regression(4)
    kw = dict(
        transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0), num_steps=40, num_chains=2, data=data,
        batch_size=8, chunk_size=10, thin=4, progress=False,
    )
    clean = sghmc_jax.sample(7, log_posterior, jnp.zeros(3), **kw)
    with pytest.raises(KeyboardInterrupt):
        sghmc_jax.sample(7, log_posterior, jnp.zeros(3), checkpoint_dir=tmp_path, callback=helpers.interrupt_after(2), **kw)
    saved = sorted(int(p.name) for p in (tmp_path / "state").iterdir() if p.name.isdigit())
    assert saved == [8, 16], saved
    resumed = sghmc_jax.sample(7, log_posterior, jnp.zeros(3), checkpoint_dir=tmp_path, **kw)
    np.testing.assert_array_equal(resumed.samples, clean.samples)


def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """A save that dies before orbax renames its temporary directory into place leaves the
    previous checkpoint as it was; the next run removes the unfinished one and resumes from the
    previous, ending bit-identical to an uninterrupted run."""
    from orbax.checkpoint._src.path import atomicity

    log_posterior, data = helpers.regression(5)
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
    state_dir = tmp_path / checkpoint.STATE
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


def test_stale_checkpoint_temporaries_are_removed_and_nothing_else(tmp_path):
    """Regression: a kill during a checkpoint write left a temporary file, a full checkpoint's
    size, that later runs never removed."""
    for name in (".sghmc_checkpoint.tmp-abc123.npz", ".tmp-k2j4_x9q.npz"):  # what earlier versions left
        (tmp_path / name).write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("the user's")
    (tmp_path / ".tmp-mine.npz").write_bytes(b"not ours: the wrong shape of name")
    lp = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    sghmc_jax.sample(0, lp, jnp.zeros(2), transform=sghmc_jax.sghmc(0.1, key=0), num_steps=10, num_chains=2, progress=False, checkpoint_dir=tmp_path)
    assert sorted(os.listdir(tmp_path)) == [".tmp-mine.npz", checkpoint.DRAWS, "notes.txt", checkpoint.STATE]
