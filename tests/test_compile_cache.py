"""The library's programs are stable across processes, so JAX's persistent compilation cache
serves a restarted notebook kernel (README, "Time to first draw"): a second fresh process running
the same `sample()` call finds every program it compiles in the cache and writes no new one."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

CHILD = r"""
import sys
import jax
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
import jax.numpy as jnp, numpy as np, optax, sghmc_jax

rng = np.random.default_rng(0)
x = rng.normal(size=(256, 3)).astype(np.float32)
data = {"x": x, "y": (x @ np.array([1.0, -2.0, 0.5], np.float32) + rng.normal(size=256)).astype(np.float32)}
lik = lambda w, b: -0.5 * (b["y"] - b["x"] @ w) ** 2
log_post = sghmc_jax.make_log_posterior(lik, lambda w: -0.5 * jnp.sum(w**2), num_data=256)
transform = lambda k: sghmc_jax.sghmc(optax.cosine_decay_schedule(3e-3, 200), alpha=30.0, key=k)
r = sghmc_jax.sample(jax.random.key(0), log_post, jnp.zeros(3), transform=transform, num_steps=200, num_chains=2,
                     data=data, batch_size=32, thin=5, progress=False)
print("MEAN", np.asarray(r.samples).mean())
"""


@pytest.mark.slow
def test_a_restarted_process_finds_every_program_in_the_persistent_cache(tmp_path):
    cache = tmp_path / "cache"

    def fresh_process() -> str:
        out = subprocess.run([sys.executable, "-c", CHILD, str(cache)], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "JAX_PLATFORMS": "cpu"}, check=False, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        return [x for x in out.stdout.splitlines() if x.startswith("MEAN")][-1]

    first = fresh_process()
    written = sorted(p.name for p in cache.iterdir())
    assert any(name.startswith("jit_run") for name in written), written  # the chunk program is cached
    second = fresh_process()
    assert sorted(p.name for p in cache.iterdir()) == written, "the second process compiled a program anew"
    assert first == second  # and its draws are the same
