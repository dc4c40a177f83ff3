"""Progress reporting (`sghmc_jax/_sampler/progress.py`)."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

import sghmc_jax


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
