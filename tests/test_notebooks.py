"""The notebooks run, and their known-posterior checks hold (DESIGN.md's pyramid, level 3)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.slow
def test_double_well_moments_match_quadrature(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(NOTEBOOKS / "double_well.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[1:4]]
    z = {row[0]: float(row[-1]) for row in rows}
    assert set(z) == {"E[θ²]", "E[θ⁴]", "P(θ>0)"}
    assert all(abs(v) < 4 for v in z.values()), proc.stdout
    assert (tmp_path / "double_well.png").exists()
