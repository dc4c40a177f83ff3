"""What every functional (posteriors-style) face owes its caller: its state owns its buffers, its
structure is fixed from `init`, its inputs are checked before anything compiles, and its
temperature agrees with the log posterior's."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sghmc_jax
from sghmc_jax.sgmcmc import baoa, psghmc, psgld, sghmc, sgld, sgnht

MODULES = {"sghmc": sghmc, "sgld": sgld, "sgnht": sgnht, "baoa": baoa, "psgld": psgld, "psghmc": psghmc}
WITH_MOMENTA = ("sghmc", "sgnht", "baoa", "psghmc")
PRECONDITIONED = ("psgld", "psghmc")


def log_posterior(params, batch):
    value = -0.5 * jnp.sum((params["w"] - batch) ** 2)
    return value, {"residual": jnp.sum(params["w"] - batch), "count": jnp.int32(3)}


@pytest.fixture(params=sorted(MODULES))
def name(request):
    return request.param


def test_inplace_update_never_deletes_the_callers_arrays(name):
    """Regression: `init` kept the caller's params (and momenta/V trees) as the state's own, so
    the first donated update deleted them."""
    params = {"w": jnp.zeros(3)}
    extra = {}
    if name in WITH_MOMENTA:
        extra["momenta"] = {"w": jnp.full(3, 0.5)}
    if name in PRECONDITIONED:
        extra["initial_scale"] = {"w": jnp.ones(3)}
    transform = MODULES[name].build(log_posterior, 1e-2, **extra)
    state = transform.init(params, key=jax.random.key(0))
    state = transform.update(state, jnp.ones(3), key=jax.random.key(1), inplace=True)
    state = transform.update(state, jnp.ones(3), key=jax.random.key(2), inplace=True)
    np.testing.assert_array_equal(params["w"] + 1, 1.0)  # still alive, unchanged
    for tree in extra.values():
        assert np.all(np.isfinite(np.asarray(tree["w"])))


def test_state_structure_is_fixed_from_init_so_update_scans(name):
    """Regression: `init` set aux=None, so a `lax.scan` over `update` failed whenever the log
    posterior returned an aux."""
    transform = MODULES[name].build(log_posterior, 1e-2)
    state = transform.init({"w": jnp.zeros(3)}, key=jax.random.key(0), batch=jnp.ones(3))
    assert jax.tree.structure(state.aux) == jax.tree.structure({"count": 0, "residual": 0})
    assert np.isnan(state.aux["residual"]) and state.aux["count"].dtype == jnp.int32

    def step(state, key):
        return transform.update(state, jnp.ones(3), key=key), None

    final, _ = jax.lax.scan(step, state, jax.random.split(jax.random.key(1), 5))
    assert int(final.step) == 5
    assert jax.tree.structure(final) == jax.tree.structure(state)
    # Without a batch the log posterior is traced with batch=None when it can be.
    no_batch = MODULES[name].build(lambda p, b: (-jnp.sum(p["w"] ** 2), {"n": jnp.sum(p["w"])}), 1e-2)
    assert no_batch.init({"w": jnp.zeros(3)}, key=0).aux["n"].shape == ()


def test_nan_params_fail_at_init_naming_the_leaf(name):
    with pytest.raises(ValueError, match=re.escape("every element of `params` must be finite, got 1 non-finite value(s) (NaN or infinity) at params['w']")):
        MODULES[name].build(log_posterior, 1e-2).init({"w": jnp.array([0.0, jnp.nan, 1.0])}, key=0)


def test_a_whole_equinox_module_is_named_with_how_to_split_it(name):
    eqx = pytest.importorskip("equinox")
    model = eqx.nn.MLP(2, 1, 4, 1, key=jax.random.key(0))
    with pytest.raises(TypeError, match=r"got a function of type \w+ at params\.activation; it looks like a whole Equinox module: .*eqx\.partition\(model, eqx\.is_inexact_array\)"):
        MODULES[name].build(lambda p, b: (0.0, None), 1e-2).init(model, key=0)


@pytest.mark.parametrize("momenta", [float("nan"), float("inf"), np.float32("nan"), jnp.asarray(jnp.nan)])
def test_non_finite_scalar_momenta_fail_when_built(momenta):
    """Regression: a NaN scalar `momenta` filled the momenta with NaN, silently."""
    pattern = r"`momenta` must be finite and real, got momenta=nan|`momenta` must be finite and real, got momenta=inf"
    for module in (sghmc, sgnht, baoa, psghmc):
        with pytest.raises(ValueError, match=pattern):
            module.build(log_posterior, 1e-2, momenta=momenta)
    for face in (sghmc_jax.sghmc, sghmc_jax.sgnht, sghmc_jax.baoa, sghmc_jax.psghmc):
        with pytest.raises(ValueError, match=pattern):
            face(1e-2, momenta=momenta, key=0)


def test_negative_entries_of_a_pytree_initial_scale_fail_when_built():
    """Regression: only the scalar form of `initial_scale` was checked; a negative entry of a
    pytree made G = 1/(λ + √V) NaN."""
    bad = {"w": jnp.array([1.0, -0.5, 2.0])}
    for build in (psgld.build, psghmc.build):
        with pytest.raises(ValueError, match=re.escape("every element of `initial_scale` must be >= 0, got a minimum of -0.5 at initial_scale['w']")):
            build(log_posterior, 1e-2, initial_scale=bad)
    for face in (sghmc_jax.psgld, sghmc_jax.psghmc):
        with pytest.raises(ValueError, match=re.escape("at initial_scale['w']")):
            face(1e-2, initial_scale=bad, key=0)


def test_build_checks_the_temperature_against_the_log_posteriors(name):
    """Regression: a `form="mean"` log posterior needs temperature 1/N; forgetting it sampled at
    T = 1 with no warning."""
    ll = lambda w, batch: -0.5 * (batch - w["w"]) ** 2  # noqa: E731
    lp = sghmc_jax.make_log_posterior(ll, lambda w: -0.5 * jnp.sum(w["w"] ** 2), 500, form="mean")
    with pytest.raises(ValueError, match=r"`temperature` of \w+ must be the log posterior's temperature 0\.002 .*got temperature=1\.0"):
        MODULES[name].build(lp, 1e-2)
    transform = MODULES[name].build(lp, 1e-2, temperature=lp.temperature)
    state = transform.init({"w": jnp.zeros(())}, key=0, batch=jnp.ones(4))
    assert np.isfinite(transform.update(state, jnp.ones(4), key=1).log_posterior)
