"""Flax NNX and Equinox models through the sampler and the optax face: the README's recipes
(`nnx.split(model, nnx.Param)`, `eqx.partition(model, eqx.is_inexact_array)`) give the exact
posterior of a Bayesian linear regression, the same whichever library holds the model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sghmc_jax

nnx = pytest.importorskip("flax.nnx")
eqx = pytest.importorskip("equinox")

N, D, PRIOR_SD = 200, 3, 2.0


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.7 + rng.normal(size=N)).astype(np.float32)
    return {"x": x, "y": y}


def _exact_posterior(data):
    """Mean and sd of (w, b) under N(0, PRIOR_SD²) priors and unit noise."""
    design = np.hstack([data["x"], np.ones((N, 1))]).astype(np.float64)
    precision = design.T @ design + np.eye(D + 1) / PRIOR_SD**2
    cov = np.linalg.inv(precision)
    return cov @ design.T @ data["y"], np.sqrt(np.diag(cov))


def _flax():
    model = nnx.Linear(D, 1, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)

    def predict(params, x):
        return nnx.merge(graphdef, params)(x)[:, 0]

    def flat(samples):  # (chain, draw, w1, w2, w3, b)
        return np.concatenate([samples["kernel"][...][..., 0], samples["bias"][...]], axis=-1)

    return params, predict, flat


def _equinox():
    model = eqx.nn.Linear(D, 1, key=jax.random.key(0))
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def predict(params, x):
        return jax.vmap(eqx.combine(params, static))(x)[:, 0]

    def flat(samples):
        return np.concatenate([samples.weight[..., 0, :], samples.bias], axis=-1)

    return params, predict, flat


@pytest.mark.parametrize("library", ["flax", "equinox"])
def test_sampler_gives_the_exact_posterior_for_either_library(library):
    params, predict, flat = {"flax": _flax, "equinox": _equinox}[library]()
    data = _data()
    log_lik = lambda p, batch: -0.5 * (batch["y"] - predict(p, batch["x"])) ** 2  # noqa: E731
    log_prior = lambda p: -0.5 * sum(jnp.sum(w**2) for w in jax.tree.leaves(p)) / PRIOR_SD**2  # noqa: E731
    lp = sghmc_jax.make_log_posterior(log_lik, log_prior, N)
    result = sghmc_jax.sample(
        jax.random.key(1), lp, params,
        transform=lambda k: sghmc_jax.sghmc(0.01, alpha=1.5, temperature=lp.temperature, key=k),
        num_steps=6000, num_chains=4, data=data, batch_size=N, burn_in=500, thin=2, progress=False,
    )
    draws = flat(result.samples)
    mean, sd = _exact_posterior(data)
    from sghmc_jax import diagnostics

    stats = diagnostics.summary(draws)["params"]
    z = (stats["mean"] - mean) / stats["mcse_mean"]
    assert np.all(np.abs(z) < 5), f"seed=1 {library}: z = {z}"
    np.testing.assert_allclose(stats["sd"], sd, rtol=0.25)
    assert np.all(stats["rhat"] < 1.05)


@pytest.mark.parametrize("library", ["flax", "equinox"])
def test_optax_face_trains_the_model_in_a_jitted_loop(library):
    params, predict, flat = {"flax": _flax, "equinox": _equinox}[library]()
    data = jax.tree.map(jnp.asarray, _data())
    tx = optax.chain(optax.add_decayed_weights(1 / PRIOR_SD**2), sghmc_jax.sghmc(0.05, alpha=3.0, temperature=0.0, momenta=0.0, key=0))
    loss = lambda p, batch: 0.5 * jnp.sum((batch["y"] - predict(p, batch["x"])) ** 2)  # noqa: E731
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params, data), state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(1000):
        params, state = step(params, state)
    # T = 0: heavy-ball descent to the posterior mode, the posterior mean of this Gaussian.
    np.testing.assert_allclose(flat(jax.tree.map(lambda x: x[None, None], params))[0, 0], _exact_posterior(_data())[0], atol=1e-3)


# ---- a whole model, or a model's non-parameter state, is refused with how to split it ----------


def _batchnorm_model():
    rngs = nnx.Rngs(0)
    return nnx.Sequential(nnx.Linear(D, 4, rngs=rngs), nnx.BatchNorm(4, rngs=rngs), nnx.Linear(4, 1, rngs=rngs))


_LP = lambda p, b: (sum(jnp.sum(x) for x in jax.tree.leaves(p)), None)  # noqa: E731


def _every_entry(params, name="params"):
    """Calls every face's entry point that takes params, each with its own argument name."""
    yield "params", lambda: sghmc_jax.sghmc(1e-3, key=0).init(params)
    yield "params", lambda: sghmc_jax.sgmcmc.sghmc.build(_LP, 1e-3).init(params, key=0)
    yield "init_params", lambda: sghmc_jax.sample(0, _LP, params, transform=sghmc_jax.sghmc(1e-3, key=0), num_steps=2, progress=False)


def test_a_whole_flax_module_with_batchnorm_is_refused_by_every_face(monkeypatch):
    """Regression (issue 18): with flax 0.12 an nnx.Module is a pytree of float arrays, so a
    Linear→BatchNorm→Linear model passed every check and its running statistics were sampled
    as weights (var 1 → ~30)."""
    from sghmc_jax._sampler import cache

    monkeypatch.setattr(cache.Program, "executable", lambda *a, **k: pytest.fail("compiled"))
    model = _batchnorm_model()
    for name, call in _every_entry(model):
        with pytest.raises(TypeError, match=rf"`{name}` must hold a model's parameters, not the model: got the Flax module Sequential at {name},.*nnx\.split\(model, nnx\.Param, \.\.\.\)"):
            call()
    for name, call in _every_entry({"model": model}):  # anywhere in the tree
        with pytest.raises(TypeError, match=rf"Flax module Sequential at {name}\['model'\]"):
            call()


def test_a_flax_state_with_batch_statistics_is_refused_with_how_to_split_by_param(monkeypatch):
    from sghmc_jax._sampler import cache

    monkeypatch.setattr(cache.Program, "executable", lambda *a, **k: pytest.fail("compiled"))
    _, state = nnx.split(_batchnorm_model())  # Params and BatchStats together
    for name, call in _every_entry(state):
        with pytest.raises(TypeError, match=rf"`{name}` must hold parameters \(nnx\.Param\) only, got an nnx\.BatchStat variable at {name}\['layers'\]\[1\]\['mean'\].*graphdef, params, rest = nnx\.split\(model, nnx\.Param, \.\.\.\)"):
            call()


def test_a_flax_state_of_params_only_is_accepted_and_keeps_the_batch_statistics_out():
    model = _batchnorm_model()
    model.eval()  # BatchNorm normalises with its running statistics, which the log posterior reads
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jnp.asarray(_data()["x"][:8])
    lp = lambda p, b: (-0.5 * jnp.sum(nnx.merge(graphdef, p, rest)(b) ** 2), None)  # noqa: E731
    sghmc_jax.sghmc(1e-3, key=0).init(params)
    sghmc_jax.sgmcmc.sghmc.build(lp, 1e-3).init(params, batch=x, key=0)
    result = sghmc_jax.sample(0, lp, params, transform=sghmc_jax.sghmc(1e-3, key=0), num_steps=2, num_chains=1, batches=[x, x], progress=False)
    sampled = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(result.samples)[0]}
    assert not any("mean" in p or "var" in p for p in sampled), sampled
    assert len(sampled) == len(jax.tree.leaves(params)) == 6


class _Scaled(eqx.Module):
    linear: eqx.nn.Linear
    scale: float  # a plain field, not a static one: a pytree leaf that is not an array


def test_an_equinox_module_with_non_array_fields_is_refused_and_its_partition_accepted():
    """Regression (issue 18): a Python float field of an eqx.Module is a leaf that passed the
    floating-point check and was sampled as a weight."""
    model = _Scaled(eqx.nn.Linear(D, 1, key=jax.random.key(0)), 2.0)
    for name, call in _every_entry(model):
        with pytest.raises(TypeError, match=rf"got a float at {name}\.scale, a field of the Equinox module _Scaled that is not an array of weights; .*eqx\.partition\(model, eqx\.is_inexact_array\)"):
            call()
    arrays, static = eqx.partition(model, eqx.is_inexact_array)
    for _, call in _every_entry(arrays):
        call()
    sghmc_jax.sghmc(1e-3, key=0).init(eqx.nn.Linear(D, 1, key=jax.random.key(0)))  # arrays only: fine
