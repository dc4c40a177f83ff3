"""`python -m sghmc_jax`: the demo runs, and its posterior matches the exact one within MCSE."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from sghmc_jax import _demo


def test_demo_cli_runs_and_reports(tmp_path):
    out = tmp_path / "demo.png"
    proc = subprocess.run(
        [sys.executable, "-m", "sghmc_jax", "--steps", "2000", "--chains", "2", "--output", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for word in ("exact mean", "SGHMC sd", "R-hat", "ESS bulk", "chain-steps/s"):
        assert word in proc.stdout
    assert out.exists() and out.stat().st_size > 10_000


def test_demo_help():
    proc = subprocess.run([sys.executable, "-m", "sghmc_jax", "--help"], capture_output=True, text=True, check=True)
    for flag in ("--steps", "--chains", "--seed", "--output"):
        assert flag in proc.stdout


def test_demo_rejects_bad_flags():
    proc = subprocess.run(
        [sys.executable, "-m", "sghmc_jax", "--chains", "1"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2 and "--chains must be >= 2" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_demo_posterior_matches_the_exact_one(seed):
    """The default run: every coefficient's mean and sd within 4 MCSE of the closed form."""
    result = _demo.run(seed=seed)
    p, s = result["problem"], result["summary"]
    z_mean = (s["mean"] - p.post_mean) / s["mcse_mean"]
    exact_sd = np.sqrt(np.diag(p.post_cov))
    z_sd = (s["sd"] - exact_sd) / (s["sd"] / np.sqrt(2 * s["ess_bulk"]))
    assert np.all(np.abs(z_mean) < 4), f"seed={seed} z(mean)={z_mean}"
    assert np.all(np.abs(z_sd) < 4), f"seed={seed} z(sd)={z_sd}"
    assert np.all(s["rhat"] < 1.01), f"seed={seed} rhat={s['rhat']}"
