"""Golden outputs (tests/golden/record.py): every sampler through both faces, in float32 and
float64, and short `sample()` runs, against numbers recorded before a refactoring.

Bit for bit where the recording's environment is this one (same jax/jaxlib, backend and CPU
vector extensions, which decide XLA's reduction order and FMA contraction); elsewhere XLA may
round differently, and the check is to float tolerance, which still catches any change of the
rule, the noise or the keys (each moves the chains by O(1)).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.golden import record


@pytest.fixture(scope="module")
def golden():
    with np.load(record.PATH) as f:
        recorded = {k: f[k] for k in f.files}
    env = {k[4:]: str(v) for k, v in recorded.items() if k.startswith("env:")}
    arrays = {k: v for k, v in recorded.items() if not k.startswith("env:")}
    return env, arrays


@pytest.fixture(scope="module")
def current():
    return record.compute()


def test_golden_outputs_are_unchanged(golden, current):
    env, expected = golden
    exact = env == record.environment()
    assert sorted(current) == sorted(expected), "the set of recorded outputs changed"
    bad = []
    for name, want in expected.items():
        got = current[name]
        assert got.dtype == want.dtype and got.shape == want.shape, (name, got.dtype, got.shape)
        same = (
            np.array_equal(got, want, equal_nan=True)
            if exact
            else np.allclose(got, want, rtol=2e-4 if got.dtype == np.float32 else 1e-9, atol=1e-5, equal_nan=True)
        )
        if not same:
            bad.append(f"{name}: max |diff| {np.nanmax(np.abs(got.astype(float) - want)):.3g}")
    how = "bit for bit" if exact else f"to float tolerance (recorded on {env})"
    assert not bad, f"{len(bad)} golden outputs changed ({how}):\n" + "\n".join(bad[:20])
