"""What identifies a run (`sghmc_jax/_sampler/identity.py`): a rerun that changes the draws is
refused, naming the change; digests are stable across processes."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sghmc_jax
from sghmc_jax._sampler import identity
from tests import helpers


def _other_likelihood(w, batch):
    resid = batch["y"] - batch["x"] @ w
    return -0.5 * 64 / batch["y"].shape[0] * jnp.sum(resid**2) - 0.5 * jnp.sum(w**2) / 4.0, None


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(transform=sghmc_jax.sghmc(3e-4, alpha=1.0, key=0)), r"lr 0\.001 -> 0\.0003(?!.*compiled step)"),
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
    log_posterior, data = helpers.regression(15)
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
    log_posterior, data = helpers.regression(16)
    kw = dict(num_steps=60, num_chains=2, data=data, batch_size=8, chunk_size=10, progress=False,
              output=tmp_path / "draws", checkpoint_dir=tmp_path / "ckpt")
    with pytest.raises(KeyboardInterrupt):
        sghmc_jax.sample(1, log_posterior, jnp.zeros(3), transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0),
                         callback=helpers.interrupt_after(2), **kw)
    with pytest.raises(ValueError, match=r"lr 0\.001 -> 0\.0003"):
        sghmc_jax.sample(1, log_posterior, jnp.zeros(3), transform=sghmc_jax.sghmc(3e-4, alpha=1.0, key=0), **kw)
    resumed = sghmc_jax.sample(1, log_posterior, jnp.zeros(3), transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0), **kw)
    assert resumed.hyperparameters["lr"] == 1e-3 and len(resumed.sample_steps) == 60


def test_program_digests_are_the_same_in_a_fresh_process():
    """A run's identity must survive a kernel restart (a resumed run is a new process): jaxpr
    text prints Python object addresses (custom_jvp functions), which the digest leaves out."""
    code = """
import jax, jax.numpy as jnp, optax
from sghmc_jax._sampler import identity
f = lambda p, x: jnp.sum(jax.nn.relu(p * x) + jax.nn.softplus(p))
tx = optax.chain(optax.clip(1.0), optax.sgd(optax.cosine_decay_schedule(1e-3, 100)))
print("DIGEST", identity.program_digest(jax.make_jaxpr(jax.grad(f))(jnp.ones(3), jnp.arange(3.0))),
      identity.program_digest(jax.make_jaxpr(tx.update)(jnp.ones(3), tx.init(jnp.ones(3)))))
"""
    import subprocess
    import sys

    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout for _ in range(2)]
    digests = [o.split("DIGEST ")[1].split() for o in outs]
    assert digests[0] == digests[1] and digests[0][0] != digests[0][1]


@pytest.mark.parametrize("where", ["checkpoint_dir", "output"])
def test_files_of_an_earlier_identity_version_are_refused_saying_so(tmp_path, monkeypatch, where):
    """A checkpoint or store written under another identity version (as by an earlier release)
    is refused with a message naming both versions, and left as it was."""
    log_posterior, data = helpers.regression(2)
    kw = dict(
        transform=lambda k: sghmc_jax.sghmc(1e-3, key=k), num_steps=20, num_chains=2, data=data, batch_size=16,
        chunk_size=10, progress=False, **{where: str(tmp_path / "run")},
    )
    with monkeypatch.context() as m:
        m.setattr(identity, "IDENTITY_VERSION", identity.IDENTITY_VERSION - 1)
        sghmc_jax.sample(0, log_posterior, jnp.zeros(3), **kw)
    before = sorted(p.name for p in (tmp_path / "run").rglob("*"))
    old, new = identity.IDENTITY_VERSION - 1, identity.IDENTITY_VERSION
    with pytest.raises(ValueError, match=rf"identity version {old}, this one's is {new}"):
        sghmc_jax.sample(0, log_posterior, jnp.zeros(3), **kw)
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == before  # nothing deleted
