"""The compiled programs' cache (`sghmc_jax/_sampler/cache.py`): later calls compile nothing."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import sghmc_jax
from tests import helpers


def test_later_calls_with_the_same_functions_compile_nothing():
    """Regression: every call recompiled, a continuation too (and its initial state apart)."""
    log_posterior, data = helpers.regression(9)
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


def test_samplers_one_after_another_in_one_process():
    """Regression: a nested jit's cached trace captured the noise bins' shared zero (a tracer of
    the first sampler's initial-state program) and the next sampler's program reused it
    ("Computation compiled for 3 inputs but called with 2"; a notebook found it)."""
    log_posterior, data = helpers.regression(11)
    for make in (sghmc_jax.sghmc, sghmc_jax.baoa, sghmc_jax.sgnht):
        r = sghmc_jax.sample(
            0, log_posterior, jnp.zeros(3), transform=lambda k, make=make: make(1e-3, alpha=1.0, key=k),
            num_steps=20, num_chains=2, data=data, batch_size=8, progress=False,
        )
        assert np.all(np.isfinite(r.samples))


# ---- draws streamed to disk ------------------------------------------------------------------
