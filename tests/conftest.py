import jax
import pytest


@pytest.fixture
def x64():
    """Enables float64 for one test (the exact references are computed in float64)."""
    with jax.enable_x64(True):
        yield
