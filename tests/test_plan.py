"""The run plan (`sghmc_jax/_sampler/plan.py`, `batching.py`): every bad argument of `sample()` is
refused before anything compiles, naming the argument, the rule and the value."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sghmc_jax
from sghmc_jax._sampler import cache
from tests import helpers


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"batch_size": 100}, ValueError, r"`batch_size` must be <= the number of examples in `data` \(64\), got batch_size=100"),
        ({"thin": 0}, ValueError, r"`thin` must be an int >= 1, got thin=0"),
        ({"burn_in": 50}, ValueError, r"`burn_in` must be < num_steps .* got burn_in=50 and num_steps=50"),
        ({"data": {"x": np.zeros((64, 3)), "y": np.zeros(63)}}, ValueError, r"every leaf of `data` must have the same leading size"),
        ({"log_posterior": lambda w, b: -jnp.sum(w**2)}, TypeError, r"`log_posterior` must return a tuple \(value, aux\)"),
        ({"num_chains": 0}, ValueError, r"`num_chains` must be an int >= 1, got num_chains=0"),
        ({"on_divergence": "ignore"}, ValueError, r"`on_divergence` must be 'raise' or 'continue'"),
        ({"transform": 3}, TypeError, r"`transform` must be an optax GradientTransformation"),
        ({"stacked_init": True}, ValueError, r"with stacked_init=True every leaf of `init_params` must have a leading axis of size num_chains=4"),
    ],
)
def test_bad_inputs_fail_before_compiling(kwargs, error, pattern, monkeypatch):
    log_posterior, data = helpers.regression()
    monkeypatch.setattr(cache.Program, "executable", lambda *a, **k: pytest.fail("compiled"))
    kw = dict(
        log_posterior=log_posterior, transform=sghmc_jax.sghmc(1e-3, key=0), num_steps=50, data=data,
        batch_size=8, progress=False,
    ) | kwargs
    lp = kw.pop("log_posterior")
    with pytest.raises(error, match=pattern):
        sghmc_jax.sample(0, lp, jnp.zeros(3), **kw)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"init_params": jnp.array([0.0, jnp.nan, 1.0])}, ValueError, r"every element of `init_params` must be finite, got 1 non-finite value\(s\) \(NaN or infinity\) at init_params"),
        ({"keep": 3}, TypeError, r"`keep` must be a function of the step index returning a bool or None, got int: 3"),
        ({"callback": "print"}, TypeError, r"`callback` must be a function of a dict or None, got str"),
        ({"log_posterior": lambda w, b: -jnp.sum(w**2)}, TypeError, r"`log_posterior` must return a tuple \(value, aux\); return \(value, None\) when there is no auxiliary output\. It returned a scalar of dtype float32$"),
        ({"log_posterior": lambda w, b: (-(w**2), None)}, TypeError, r"`log_posterior` must return a scalar value, it returned an array of shape \(3,\) of dtype float32 as the value"),
    ],
)
def test_more_bad_inputs_fail_before_compiling(kwargs, error, pattern, monkeypatch):
    monkeypatch.setattr(cache.Program, "executable", lambda *a, **k: pytest.fail("compiled"))
    kw = dict(log_posterior=helpers.regression()[0], init_params=jnp.zeros(3)) | kwargs
    with pytest.raises(error, match=pattern) as info:
        sghmc_jax.sample(0, kw.pop("log_posterior"), kw.pop("init_params"), transform=sghmc_jax.sghmc(1e-3, key=0), num_steps=5, progress=False, **kw)
    assert "Tracer" not in str(info.value) and "ShapeDtypeStruct" not in str(info.value)


def test_a_whole_flax_or_equinox_model_as_params_says_how_to_split_it():
    nnx = pytest.importorskip("flax.nnx")
    eqx = pytest.importorskip("equinox")
    lp = lambda p, b: (jnp.asarray(0.0), None)  # noqa: E731
    tx = sghmc_jax.sghmc(1e-3, key=0)
    mlp = eqx.nn.MLP(2, 1, 4, 1, key=jax.random.key(0))
    with pytest.raises(TypeError, match=r"`init_params` must be a floating-point array, got a function .* at init_params\.activation; it looks like a whole Equinox module: .*eqx\.partition"):
        sghmc_jax.sample(0, lp, mlp, transform=tx, num_steps=5, progress=False)
    model = nnx.Sequential(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), nnx.Dropout(0.1, rngs=nnx.Rngs(1)))
    with pytest.raises(TypeError, match=r"got dtype uint32 at init_params\.layers\[1\]\.rngs.*it looks like a whole Flax module: .*nnx\.split\(model, nnx\.Param\)"):
        sghmc_jax.sample(0, lp, model, transform=tx, num_steps=5, progress=False)


def test_a_forgotten_temperature_is_an_error_before_compiling(monkeypatch):
    """Regression: with `form="mean"` a transform at the default T = 1 sampled a posterior 25
    times too wide, silently."""
    log_posterior, data = helpers.regression()
    ll = lambda w, batch: -0.5 * (batch["y"] - batch["x"] @ w) ** 2  # noqa: E731
    lp = sghmc_jax.make_log_posterior(ll, lambda w: -0.5 * jnp.sum(w**2), 64, form="mean")
    kw = dict(num_steps=20, num_chains=2, data=data, batch_size=8, progress=False)
    with monkeypatch.context() as m:
        m.setattr(cache.Program, "executable", lambda *a, **k: pytest.fail("compiled"))
        for bad in (sghmc_jax.sghmc(1e-2, key=0), lambda k: sghmc_jax.sgld(1e-2, temperature=1 / 32, key=k),
                    optax.chain(optax.clip_by_global_norm(10.0), sghmc_jax.baoa(1e-2, temperature=sghmc_jax.cyclical_temperature_schedule(1.0, 20, 2, 0.5), key=0))):
            with pytest.raises(ValueError, match=r"`temperature` of \w+ must be the log posterior's temperature 0\.015625"):
                sghmc_jax.sample(0, lp, jnp.zeros(3), transform=bad, **kw)
    unpacked, temperature = lp  # the old README's spelling still carries the temperature
    assert unpacked is lp and temperature == 1 / 64
    r = sghmc_jax.sample(0, unpacked, jnp.zeros(3), transform=sghmc_jax.sghmc(1e-2, temperature=temperature, key=0), **kw)
    assert np.all(np.isfinite(r.samples))
    cold = sghmc_jax.make_log_posterior(ll, lambda w: -0.5 * jnp.sum(w**2), 64, form="mean", temperature=0.5)
    assert cold.temperature == 0.5 / 64


@pytest.mark.parametrize(
    "where, match",
    [
        (dict(output=3), "`output` must be a path"),
        (dict(output="FILE"), "`output` must be a directory"),
        (dict(output="CKPT", checkpoint_dir="CKPT"), "`output` .* must be a path of its own"),
        (dict(output="CKPT/state", checkpoint_dir="CKPT"), "`output` .* must be a path of its own"),
    ],
)
def test_bad_output_paths_are_refused_before_compiling(tmp_path, where, match):
    (tmp_path / "FILE").write_text("the user's")
    where = {k: str(tmp_path / v) if isinstance(v, str) else v for k, v in where.items()}
    lp = lambda p, b: (jnp.sum(p), None)  # noqa: E731
    with pytest.raises((TypeError, ValueError), match=match):
        sghmc_jax.sample(0, lp, jnp.zeros(2), transform=sghmc_jax.sghmc(0.1, key=0), num_steps=5, progress=False, **where)
    assert (tmp_path / "FILE").read_text() == "the user's"


# ---- issue 18: inputs checked before compiling (NaN data, thin, a transform that does not
# sample, a functional face's transform, a functional init that cannot lay out aux) ----------


def _no_compile(monkeypatch):
    monkeypatch.setattr(cache.Program, "executable", lambda *a, **k: pytest.fail("compiled"))


@pytest.mark.parametrize("on_device", [False, True], ids=["numpy", "jax"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_data_is_named_before_compiling(monkeypatch, on_device, bad):
    """Regression (issue 18): a NaN in `data` made every chain diverge, reading exactly like a
    step size that is too large."""
    _no_compile(monkeypatch)
    log_posterior, data = helpers.regression(18)
    data = {"x": data["x"].copy(), "y": data["y"].copy(), "label": np.arange(64)}
    data["y"][[5, 9]] = bad
    if on_device:
        data = jax.tree.map(jnp.asarray, data)
    with pytest.raises(ValueError, match=re.escape("every floating-point element of `data` must be finite, got 2 non-finite value(s) (NaN or infinity) at data['y']")):
        sghmc_jax.sample(0, log_posterior, jnp.zeros(3), transform=sghmc_jax.sghmc(1e-3, key=0), num_steps=5, data=data, batch_size=8, progress=False)


def test_a_non_finite_first_host_batch_is_named_before_compiling(monkeypatch):
    _no_compile(monkeypatch)
    log_posterior, data = helpers.regression(18)
    first = {"x": data["x"][:8].copy(), "y": data["y"][:8]}
    first["x"][2, 1] = np.nan
    batches = [first] + [{"x": data["x"][:8], "y": data["y"][:8]}] * 4
    with pytest.raises(ValueError, match=re.escape("`batches[0]` must be finite, got 1 non-finite value(s) (NaN or infinity) at batches[0]['x']")):
        sghmc_jax.sample(0, log_posterior, jnp.zeros(3), transform=sghmc_jax.sghmc(1e-3, key=0), num_steps=5, batches=batches, progress=False)


@pytest.mark.parametrize("num_steps, burn_in, thin", [(10, 0, 11), (10, 5, 6), (100, 99, 2)])
def test_a_thin_that_keeps_no_draw_is_an_error(monkeypatch, num_steps, burn_in, thin):
    """Regression (issue 18): `thin` larger than the steps after burn-in returned 0 draws."""
    _no_compile(monkeypatch)
    lp = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    with pytest.raises(ValueError, match=re.escape(f"`thin` must be <= num_steps - burn_in ({num_steps - burn_in}) so that at least one draw is kept, got thin={thin}")):
        sghmc_jax.sample(0, lp, jnp.zeros(2), transform=sghmc_jax.sghmc(1e-3, key=0), num_steps=num_steps, burn_in=burn_in, thin=thin, progress=False)


def test_thin_equal_to_the_steps_after_burn_in_keeps_one_draw():
    lp = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    result = sghmc_jax.sample(0, lp, jnp.zeros(2), transform=sghmc_jax.sghmc(1e-3, key=0), num_steps=10, burn_in=4, thin=6, num_chains=1, progress=False)
    assert result.samples.shape == (1, 1, 2)


@pytest.mark.parametrize(
    "transform",
    [lambda: optax.adam(1e-3), lambda: optax.chain(optax.clip(1.0), optax.sgd(1e-3)), lambda: (lambda k: optax.sgd(1e-3))],
    ids=["adam", "chain-of-optimisers", "factory-of-an-optimiser"],
)
def test_a_transform_without_noise_warns_that_it_optimises(transform):
    """Regression (issue 18): `optax.adam` was accepted as a sampler without a word. A warning,
    not an error: a user's own noisy transform cannot be told apart from it."""
    lp = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    with pytest.warns(UserWarning, match=r"holds none of this library's samplers .* OPTIMISES rather than samples") as record:
        sghmc_jax.sample(0, lp, jnp.zeros(2), transform=transform(), num_steps=2, num_chains=1, progress=False)
    assert record[0].filename == __file__, "the warning points at the user's call"


@pytest.mark.parametrize(
    "transform",
    [
        lambda: sghmc_jax.sgld(1e-3, key=0),
        lambda: (lambda k: sghmc_jax.ubu(1e-3, key=k)),
        lambda: optax.chain(optax.clip_by_global_norm(1.0), optax.add_decayed_weights(1.0), sghmc_jax.sghmc(1e-3, key=0)),
        lambda: optax.inject_hyperparams(sghmc_jax.sghmc)(learning_rate=1e-3, key=0),
        lambda: optax.masked(sghmc_jax.psgld(1e-3, key=0), {"a": True, "b": True}),
    ],
    ids=["sgld", "factory", "chain", "inject_hyperparams", "masked"],
)
def test_our_samplers_alone_or_wrapped_do_not_warn(transform):
    lp = lambda p, b: (-0.5 * jnp.sum(p["a"] ** 2) - 0.5 * jnp.sum(p["b"] ** 2), None)  # noqa: E731
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        sghmc_jax.sample(0, lp, {"a": jnp.zeros(2), "b": jnp.zeros(())}, transform=transform(), num_steps=2, num_chains=1, progress=False)


@pytest.mark.parametrize("face", ["sghmc", "sgld", "ubu", "psghmc"])
@pytest.mark.parametrize("as_factory", [False, True], ids=["transform", "factory"])
def test_a_functional_face_transform_says_sample_takes_the_optax_face(monkeypatch, face, as_factory):
    """Regression (issue 18): it failed deep in tracing with "update() got multiple values for
    argument 'log_posterior'"."""
    _no_compile(monkeypatch)
    lp = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    functional = getattr(sghmc_jax.sgmcmc, face).build(lp, 1e-3)
    transform, name = ((lambda k: functional), "transform\\(key\\)") if as_factory else (functional, "transform")
    with pytest.raises(TypeError, match=rf"`{name}` must be an optax-face transform, got the functional face's Transform from sghmc_jax\.sgmcmc\.{face}\.build\(\.\.\.\).*pass transform=sghmc_jax\.{face}\(learning_rate, \.\.\., key=key\)"):
        sghmc_jax.sample(0, lp, jnp.zeros(2), transform=transform, num_steps=5, progress=False)


def test_functional_init_warns_when_it_cannot_lay_out_aux_without_a_batch():
    """Regression (issue 18): init without `batch=` left aux=None when the log posterior could
    not run on batch=None, and a later `lax.scan` over update failed with a pytree mismatch."""
    log_posterior, data = helpers.regression(18)
    lp = lambda w, batch: (log_posterior(w, batch)[0], {"resid": batch["y"] - batch["x"] @ w})  # noqa: E731
    transform = sghmc_jax.sgmcmc.sghmc.build(lp, 1e-4)
    with pytest.warns(UserWarning, match=r"init\(params\) without `batch=` .* `jax\.lax\.scan` over `update` fails .*`init\(params, batch=batch, \.\.\.\)`") as record:
        state = transform.init(jnp.zeros(3), key=0)
    assert record[0].filename == __file__, "the warning points at the user's call"
    assert state.aux is None
    batch = jax.tree.map(jnp.asarray, data)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        state = transform.init(jnp.zeros(3), key=0, batch=batch)  # the fix: no warning, aux laid out
    step = lambda s, k: (transform.update(s, batch, key=k), None)  # noqa: E731
    jax.lax.scan(step, state, jax.random.split(jax.random.key(0), 3))


# ---- found by using the library as a new user ------------------------------------------------


def _mean_form_problem():
    rng = np.random.default_rng(21)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    data = {"x": x, "y": (x @ np.array([1.0, -2.0, 0.5], np.float32) + rng.normal(size=200)).astype(np.float32)}
    lik = lambda w, b: -0.5 * (b["y"] - b["x"] @ w) ** 2  # noqa: E731
    prior = lambda w: -0.5 * jnp.sum(w**2)  # noqa: E731
    return lik, prior, data


def test_an_injected_temperature_that_disagrees_with_the_log_posterior_is_refused():
    """Regression: under optax.inject_hyperparams the temperature is in the (traced) state, so
    sample() ran T = 1 against a log posterior that needs 1/N, silently far too wide."""
    lik, prior, data = _mean_form_problem()
    lp = sghmc_jax.make_log_posterior(lik, prior, num_data=200, form="mean")
    kw = dict(num_steps=20, num_chains=2, data=data, batch_size=50, progress=False)
    injected = lambda t: lambda k: optax.inject_hyperparams(sghmc_jax.sghmc)(1e-3, alpha=1.0, temperature=t, key=k)  # noqa: E731
    with pytest.raises(ValueError, match=r"temperature.*0\.005.*got temperature=1\.0"):
        sghmc_jax.sample(0, lp, jnp.zeros(3), transform=injected(1.0), **kw)
    r = sghmc_jax.sample(0, lp, jnp.zeros(3), transform=injected(lp.temperature), **kw)
    assert np.all(np.isfinite(r.samples))


def test_a_log_posterior_built_for_another_num_data_is_refused():
    """Regression: make_log_posterior(num_data=100) with 200 examples in `data` sampled a law
    of the wrong width, silently."""
    lik, prior, data = _mean_form_problem()
    lp = sghmc_jax.make_log_posterior(lik, prior, num_data=100)
    with pytest.raises(ValueError, match=r"num_data=100.*`data` holds 200"):
        sghmc_jax.sample(0, lp, jnp.zeros(3), transform=sghmc_jax.sghmc(1e-3, key=0), num_steps=20,
                         data=data, batch_size=50, progress=False)


def test_init_state_of_another_transform_or_chain_count_is_refused_before_compiling(monkeypatch):
    """Continuing SGHMC's state with SGLD failed inside the compiled loop (a carry-structure
    error naming neither argument); a num_chains that contradicts the state was ignored."""
    lp = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    state = sghmc_jax.sample(0, lp, jnp.zeros(3), transform=lambda k: sghmc_jax.sghmc(1e-2, key=k), num_steps=5,
                             progress=False).final_state
    _no_compile(monkeypatch)
    with pytest.raises(TypeError, match=r"`init_state` holds the state of another transform .*SGHMCTransformState "
                                        r"against SGLDTransformState"):
        sghmc_jax.sample(0, lp, None, transform=lambda k: sghmc_jax.sgld(1e-2, key=k), num_steps=5,
                         progress=False, init_state=state)
    with pytest.raises(ValueError, match=r"`num_chains` comes from `init_state`, which holds 4 chains, got num_chains=8"):
        sghmc_jax.sample(0, lp, None, transform=lambda k: sghmc_jax.sghmc(1e-2, key=k), num_steps=5, num_chains=8,
                         progress=False, init_state=state)
    assert repr(state) == "SamplerState(step=5, 4 chains × 3 params in 1 leaves, transform_state=SGHMCTransformState, 0 diverged)"
