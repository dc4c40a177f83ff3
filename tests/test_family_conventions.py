"""The conventions every optax face shares (DESIGN.md, STYLE.md), checked for each sampler of the
family: keys (state key split per step, per-step key wins and leaves the state key, per-chain
keys under vmap, key forms), dtypes kept under jit, schedules and inject_hyperparams without
retracing, tree errors that name the argument."""

from __future__ import annotations

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sghmc_jax

FACES = {
    "sgld": sghmc_jax.sgld,
    "sgnht": sghmc_jax.sgnht,
    "baoa": sghmc_jax.baoa,
    "psgld": lambda lr, **kw: sghmc_jax.psgld(lr, initial_scale=1.0, **kw),
    "psghmc": lambda lr, **kw: sghmc_jax.psghmc(lr, initial_scale=1.0, **kw),
}
WITH_MOMENTA = ("sgnht", "baoa", "psghmc")


@pytest.fixture(params=sorted(FACES))
def name(request):
    return request.param


@pytest.fixture(autouse=True)
def _fresh_trace_counter():
    """chex keys its trace counter by call stack and source, which the parametrised tests here
    (and test_transforms' identical inner `step`) share: count each test alone."""
    chex.clear_trace_counter()
    yield
    chex.clear_trace_counter()


def test_state_key_is_split_each_step_without_a_per_step_key(name):
    tx = FACES[name](0.1, key=jax.random.key(7))
    state = tx.init(jnp.zeros(4))
    u1, s1 = tx.update(jnp.zeros(4), state)
    u2, _ = tx.update(jnp.zeros(4), s1)
    assert not np.allclose(u1, u2)
    assert not np.array_equal(jax.random.key_data(s1.key), jax.random.key_data(state.key))
    _, next_key = jax.random.split(state.key)
    np.testing.assert_array_equal(jax.random.key_data(s1.key), jax.random.key_data(next_key))


def test_per_step_key_overrides_the_state_key(name):
    params = jnp.zeros(4)
    extra = {"momenta": 0.0} if name in WITH_MOMENTA else {}
    tx_a, tx_b = FACES[name](0.1, key=1, **extra), FACES[name](0.1, key=2, **extra)
    sa, sb = tx_a.init(params), tx_b.init(params)
    k = jax.random.key(42)
    ua, sa2 = tx_a.update(jnp.ones(4), sa, key=k)
    ub, _ = tx_b.update(jnp.ones(4), sb, key=k)
    np.testing.assert_array_equal(ua, ub)
    np.testing.assert_array_equal(jax.random.key_data(sa2.key), jax.random.key_data(sa.key))
    uc, _ = tx_a.update(jnp.ones(4), sa, key=jax.random.key(43))
    assert not np.allclose(ua, uc)


def test_vmapped_chains_with_per_chain_keys_get_different_noise(name):
    tx = FACES[name](0.1, key=0)
    state = jax.vmap(tx.init)(jnp.zeros((8, 3)))
    keys = jax.random.split(jax.random.key(9), 8)
    updates, _ = jax.vmap(lambda s, k: tx.update(jnp.zeros(3), s, key=k))(state, keys)
    assert len({tuple(r) for r in np.asarray(updates).round(8)}) == 8


@pytest.mark.parametrize("key", [3, jax.random.PRNGKey(3), jax.random.key(3), jax.random.key(3, impl="rbg")])
def test_accepted_key_forms(name, key):
    tx = FACES[name](0.1, key=key)
    updates, state = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))
    assert jax.dtypes.issubdtype(state.key.dtype, jax.dtypes.prng_key)
    assert np.all(np.isfinite(updates))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32, jnp.float64])
def test_dtypes_are_preserved_under_jit(x64, name, dtype):
    params = {"w": jnp.ones((3, 2), dtype), "b": jnp.zeros((2,), dtype)}
    tx = FACES[name](0.05, key=0)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.tree.map(lambda p: 2 * p, params), state, params)
        return optax.apply_updates(params, updates), state, updates

    for _ in range(3):
        params, state, updates = step(params, state)
    trees = [params, updates] + [getattr(state, f) for f in ("momenta", "v") if hasattr(state, f)]
    for tree in trees:
        assert {x.dtype for x in jax.tree.leaves(tree)} == {jnp.dtype(dtype)}
        assert all(np.all(np.isfinite(np.asarray(x, np.float64))) for x in jax.tree.leaves(tree))
    if name == "sgnht":
        assert state.xi.dtype == jnp.promote_types(dtype, jnp.float32)


def test_schedules_do_not_retrace(name):
    tx = FACES[name](optax.cosine_decay_schedule(0.1, 100), temperature=optax.linear_schedule(1.0, 0.5, 50), key=0)
    params = jnp.zeros(3)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        updates, state = tx.update(params + 1.0, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(5):
        params, state = step(params, state)
    assert int(state.step) == 5


def test_inject_hyperparams_do_not_retrace(name):
    make = {"psgld": sghmc_jax.psgld, "psghmc": sghmc_jax.psghmc}.get(name, FACES[name])
    tx = optax.inject_hyperparams(make, static_args=("key",))(learning_rate=0.1, temperature=1.0, key=0)
    params = jnp.zeros(3)
    state = tx.init(params)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(state, key):
        return tx.update(jnp.ones(3), state, params, key=key)

    outs = []
    for i, (lr, temp) in enumerate([(0.1, 1.0), (0.05, 0.5), (0.2, 0.0)]):
        state.hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
        state.hyperparams["temperature"] = jnp.asarray(temp, jnp.float32)
        updates, state = step(state, jax.random.key(i))
        outs.append(np.asarray(updates))
    assert np.all(np.isfinite(outs))


def test_composes_with_clipping(name):
    params = jnp.zeros(3)
    grads = jnp.array([30.0, 40.0, 0.0])
    key = jax.random.key(5)
    chained = optax.chain(optax.clip_by_global_norm(1.0), FACES[name](0.1, key=0))
    plain = FACES[name](0.1, key=0)
    u1, _ = chained.update(grads, chained.init(params), params, key=key)
    u2, _ = plain.update(grads / 50.0, plain.init(params), params, key=key)
    np.testing.assert_allclose(u1, u2, rtol=1e-6, atol=1e-7)


def test_update_tree_errors_name_the_argument(name):
    tx = FACES[name](0.1, key=0)
    state = tx.init({"a": jnp.zeros(2)})
    if name == "sgld":  # no state tree to compare with: dtype errors only
        with pytest.raises(TypeError, match=re.escape("every leaf of `updates` must be a floating-point array")):
            tx.update({"a": jnp.zeros(2, jnp.int32)}, state)
        return
    with pytest.raises(ValueError, match=r"`updates` must have the tree structure of `state\.(momenta|v)`"):
        tx.update({"b": jnp.zeros(2)}, state)
    with pytest.raises(TypeError, match=re.escape("every leaf of `params` must be a floating-point array, got dtype int32 at params['n']")):
        tx.init({"n": jnp.zeros(2, jnp.int32)})
