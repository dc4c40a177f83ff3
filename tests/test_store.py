"""The draw store (`sghmc_jax/_sampler/store.py`, `draws.py`): draws streamed to disk equal the
in-memory run, are read lazily, and survive kills."""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest

import sghmc_jax
from sghmc_jax._sampler import checkpoint
from tests import helpers


def test_draws_streamed_to_disk_equal_the_in_memory_run_and_are_read_lazily(tmp_path):
    flat_log_posterior, data = helpers.regression(12)
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
    log_posterior, data = helpers.regression(13)
    kw = dict(transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0), num_steps=80, num_chains=2, data=data,
              batch_size=8, thin=2, chunk_size=10, progress=False, output=tmp_path / "draws",
              checkpoint_dir=tmp_path / "ckpt", checkpoint_every=20)
    clean = sghmc_jax.sample(4, log_posterior, jnp.zeros(3), **{**kw, "output": None, "checkpoint_dir": None, "checkpoint_every": None})
    with pytest.raises(KeyboardInterrupt):
        sghmc_jax.sample(4, log_posterior, jnp.zeros(3), callback=helpers.interrupt_after(5), **kw)
    chunk = tmp_path / "draws" / "samples" / "params" / "c" / "0" / "0" / "0"
    before = chunk.stat().st_mtime_ns
    resumed = sghmc_jax.sample(4, log_posterior, jnp.zeros(3), **kw)
    np.testing.assert_array_equal(np.asarray(resumed.samples), clean.samples)
    np.testing.assert_array_equal(np.asarray(resumed.log_posterior), clean.log_posterior)
    assert chunk.stat().st_mtime_ns == before, "the first draws were written once"
    assert not any(f.suffix == ".npz" for f in (tmp_path / "ckpt").rglob("*")), "checkpoints hold no draws"


def test_a_run_killed_before_its_first_checkpoint_starts_over_in_its_own_store(tmp_path):
    log_posterior, data = helpers.regression(14)
    kw = dict(transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0), num_steps=40, num_chains=2, data=data,
              batch_size=8, chunk_size=10, progress=False, checkpoint_dir=tmp_path, checkpoint_every=30)
    clean = sghmc_jax.sample(5, log_posterior, jnp.zeros(3), **{**kw, "checkpoint_dir": None, "checkpoint_every": None})
    with pytest.raises(KeyboardInterrupt):
        sghmc_jax.sample(5, log_posterior, jnp.zeros(3), callback=helpers.interrupt_after(2), **kw)
    assert (tmp_path / checkpoint.DRAWS).is_dir()
    resumed = sghmc_jax.sample(5, log_posterior, jnp.zeros(3), **kw)
    np.testing.assert_array_equal(resumed.samples, clean.samples)
    np.testing.assert_array_equal(resumed.log_posterior, clean.log_posterior)


# ---- a rerun is the same run, or it is refused -------------------------------------------------


_KILLED_RUN = """
import os, pathlib, signal, sys
import jax.numpy as jnp, numpy as np
import sghmc_jax
from tests import helpers

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
log_posterior, data = helpers.regression(17)
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
    log_posterior, data = helpers.regression(17)
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
    log_posterior, data = helpers.regression(18)
    kw = dict(transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0), num_steps=60, num_chains=2, data=data,
              batch_size=8, chunk_size=10, progress=False)
    memory = sghmc_jax.sample(2, log_posterior, jnp.zeros(3), **kw)
    disk = sghmc_jax.sample(2, log_posterior, jnp.zeros(3), output=tmp_path / "out", **kw)
    assert memory.log_posterior.dtype == np.float32 and memory.kinetic.dtype == np.float32
    assert disk.log_posterior.dtype == np.float32 and disk.kinetic.dtype == np.float32
    with pytest.raises(KeyboardInterrupt):
        sghmc_jax.sample(2, log_posterior, jnp.zeros(3), checkpoint_dir=tmp_path / "ckpt",
                         callback=helpers.interrupt_after(4), **kw)
    resumed = sghmc_jax.sample(2, log_posterior, jnp.zeros(3), checkpoint_dir=tmp_path / "ckpt", **kw)
    assert resumed.log_posterior.dtype == np.float32
    assert round(resumed.steps_per_second * resumed.wall_time) == 20  # 2 chunks run by this call


def test_messages_of_a_returned_run_and_of_batches_that_run_out(tmp_path):
    log_posterior, data = helpers.regression(22)
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


@pytest.mark.parametrize("first, second", [("output", None), (None, "output")], ids=["output_dropped", "output_added"])
def test_a_checkpoint_resumes_only_into_the_store_its_run_wrote(tmp_path, first, second):
    """A killed run that wrote its draws to `output` (or to the checkpoint's own store) and is
    rerun with its draws going elsewhere is refused, naming both paths: resumed into a new store,
    the draws before the checkpoint would be missing (NaN, steps -1) with no error."""
    log_posterior, data = helpers.regression(5)
    kw = dict(
        transform=lambda k: sghmc_jax.sghmc(1e-3, key=k), num_steps=60, num_chains=2, data=data, batch_size=16,
        chunk_size=10, progress=False, checkpoint_dir=str(tmp_path / "ckpt"),
    )
    paths = {"output": {"output": str(tmp_path / "draws")}, None: {}}
    with pytest.raises(KeyboardInterrupt):
        sghmc_jax.sample(0, log_posterior, jnp.zeros(3), callback=helpers.interrupt_after(2), **kw, **paths[first])
    with pytest.raises(ValueError, match=r"draws were written to .* but this call would write them to"):
        sghmc_jax.sample(0, log_posterior, jnp.zeros(3), **kw, **paths[second])
    resumed = sghmc_jax.sample(0, log_posterior, jnp.zeros(3), **kw, **paths[first])
    whole = sghmc_jax.sample(0, log_posterior, jnp.zeros(3), **{k: v for k, v in kw.items() if k != "checkpoint_dir"})
    np.testing.assert_array_equal(np.asarray(resumed.samples), whole.samples)
    assert (np.asarray(resumed.sample_steps) >= 0).all()
