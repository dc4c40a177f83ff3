"""The optax face: exact couplings, keys, composition with optax, dtypes, schedules, validation."""

from __future__ import annotations

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sghmc_jax
from tests.helpers import logistic_problem as _logistic_problem
from tests.helpers import run_optax as _run


@pytest.mark.parametrize(("lr", "alpha", "sigma"), [(0.05, 1.0, 1.0), (0.02, 5.0, 0.7), (0.1, 0.01, 2.0)])
def test_zero_temperature_is_heavy_ball_sgd(x64, lr, alpha, sigma):
    """T = 0, m₀ = 0 equals optax.sgd(ε²/σ², momentum = 1 − εα/σ²) on the loss gradient."""
    loss, params = _logistic_problem()
    tx = sghmc_jax.sghmc(lr, alpha=alpha, sigma=sigma, temperature=0.0, momenta=0.0, key=0)
    ref = optax.sgd(lr**2 / sigma**2, momentum=1 - lr * alpha / sigma**2)
    _, _, trace = _run(tx, loss, params, 200)
    _, _, ref_trace = _run(ref, loss, params, 200)
    chex.assert_trees_all_close(trace, ref_trace, atol=1e-6, rtol=0)


def test_no_friction_zero_temperature_is_deterministic_hamiltonian_dynamics(x64):
    """α = β = 0, T = 0: the key plays no part, and the chain is symplectic Euler."""
    loss, params = _logistic_problem(1)
    m0 = {"w": jnp.linspace(-1, 1, 5), "b": jnp.asarray(0.5)}
    make = lambda seed: sghmc_jax.sghmc(  # noqa: E731
        0.01, alpha=0.0, beta=0.0, sigma=1.5, temperature=0.0, momenta=m0, key=seed
    )
    p1, s1, t1 = _run(make(0), loss, params, 100)
    p2, s2, t2 = _run(make(1), loss, params, 100)
    chex.assert_trees_all_equal(t1, t2)
    # Hand-written symplectic Euler: m ← m − ε∇L(θ); θ ← θ + ε m / σ².
    theta, m = params, m0
    for _ in range(100):
        g = jax.grad(loss)(theta)
        m = jax.tree.map(lambda m, g: m - 0.01 * g, m, g)
        theta = jax.tree.map(lambda t, m: t + 0.01 * m / 1.5**2, theta, m)
    chex.assert_trees_all_close(p1, theta, atol=1e-12)
    chex.assert_trees_all_close(s1.momenta, m, atol=1e-12)


def test_state_key_is_split_each_step_without_a_per_step_key():
    tx = sghmc_jax.sghmc(0.1, key=jax.random.key(7))
    params = jnp.zeros(4)
    state = tx.init(params)
    u1, s1 = tx.update(jnp.zeros(4), state)
    u2, _ = tx.update(jnp.zeros(4), s1)
    assert not np.allclose(u1, u2)
    step_key, next_key = jax.random.split(state.key)
    np.testing.assert_array_equal(jax.random.key_data(s1.key), jax.random.key_data(next_key))
    # The step's noise is exactly the kernel's noise for the split-off step key.
    u_ref, _ = sghmc_jax.kernels.sghmc_step(state.momenta, jnp.zeros(4), step_key, 0.1, 0.01, 0.0, 1.0, 1.0)
    np.testing.assert_array_equal(u1, u_ref)


def test_per_step_key_overrides_the_state_key():
    params = jnp.zeros(4)
    tx_a = sghmc_jax.sghmc(0.1, momenta=0.0, key=1)
    tx_b = sghmc_jax.sghmc(0.1, momenta=0.0, key=2)
    sa, sb = tx_a.init(params), tx_b.init(params)
    k = jax.random.key(42)
    ua, sa2 = tx_a.update(jnp.ones(4), sa, key=k)
    ub, _ = tx_b.update(jnp.ones(4), sb, key=k)
    np.testing.assert_array_equal(ua, ub)  # same per-step key, different state keys
    np.testing.assert_array_equal(jax.random.key_data(sa2.key), jax.random.key_data(sa.key))
    uc, _ = tx_a.update(jnp.ones(4), sa, key=jax.random.key(43))
    assert not np.allclose(ua, uc)


def test_vmapped_chains_with_per_chain_keys_get_different_noise():
    tx = sghmc_jax.sghmc(0.1, momenta=0.0, key=0)
    params = jnp.zeros((8, 3))
    state = jax.vmap(tx.init)(params)
    keys = jax.random.split(jax.random.key(9), 8)
    updates, _ = jax.vmap(lambda g, s, k: tx.update(g, s, key=k))(jnp.zeros((8, 3)), state, keys)
    rows = np.asarray(updates)
    assert len({tuple(r) for r in rows.round(8)}) == 8
    same, _ = jax.vmap(lambda g, s, k: tx.update(g, s, key=k))(
        jnp.zeros((8, 3)), state, jnp.stack([keys[0]] * 8)
    )
    np.testing.assert_array_equal(same, jnp.broadcast_to(same[0], same.shape))


def test_building_inside_vmap_gives_per_chain_initial_momenta():
    keys = jax.random.split(jax.random.key(0), 4)
    states = jax.vmap(lambda k: sghmc_jax.sghmc(0.1, key=k).init(jnp.zeros(3)))(keys)
    assert len({tuple(r) for r in np.asarray(states.momenta).round(8)}) == 4


@pytest.mark.parametrize("key", [0, np.int64(3), jax.random.PRNGKey(3), jax.random.key(3)])
def test_accepted_key_forms(key):
    tx = sghmc_jax.sghmc(0.1, key=key)
    state = tx.init(jnp.zeros(2))
    assert jax.dtypes.issubdtype(state.key.dtype, jax.dtypes.prng_key)


def test_int_seed_and_raw_key_match_the_typed_key():
    outs = []
    for key in (3, jax.random.PRNGKey(3), jax.random.key(3)):
        tx = sghmc_jax.sghmc(0.1, key=key)
        outs.append(tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0])
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg", "unsafe_rbg"])
def test_any_key_implementation(impl):
    tx = sghmc_jax.sghmc(0.1, key=jax.random.key(0, impl=impl))
    state = tx.init(jnp.zeros(3))
    updates, state = tx.update(jnp.ones(3), state, key=jax.random.key(1, impl=impl))
    updates, state = tx.update(jnp.ones(3), state)
    assert np.all(np.isfinite(updates))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32, jnp.float64])
def test_dtypes_are_preserved_under_jit(x64, dtype):
    params = {"w": jnp.ones((3, 2), dtype), "b": jnp.zeros((2,), dtype)}
    tx = sghmc_jax.sghmc(0.05, alpha=0.5, key=0)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.tree.map(lambda p: 2 * p, params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, updates

    for _ in range(3):
        params, state, updates = step(params, state)
    for tree in (params, state.momenta, updates):
        assert {x.dtype for x in jax.tree.leaves(tree)} == {jnp.dtype(dtype)}
        assert all(np.all(np.isfinite(np.asarray(x, np.float64))) for x in jax.tree.leaves(tree))


def test_clip_by_global_norm_before_it_clips_the_gradient():
    params = jnp.zeros(3)
    grads = jnp.array([30.0, 40.0, 0.0])
    key = jax.random.key(5)
    chained = optax.chain(optax.clip_by_global_norm(1.0), sghmc_jax.sghmc(0.1, key=0))
    plain = sghmc_jax.sghmc(0.1, key=0)
    u1, _ = chained.update(grads, chained.init(params), params, key=key)
    u2, _ = plain.update(grads / 50.0, plain.init(params), params, key=key)
    np.testing.assert_allclose(u1, u2, rtol=1e-6, atol=1e-7)


def test_add_decayed_weights_is_a_gaussian_prior():
    """chain(add_decayed_weights(λ), sghmc) on loss L == sghmc on L + λ|θ|²/2, step by step."""
    loss = lambda p: jnp.sum(jnp.cos(p))  # noqa: E731
    prior_loss = lambda p: loss(p) + 0.5 * 0.3 * jnp.sum(p**2)  # noqa: E731
    params = jnp.linspace(-1.0, 1.0, 4)
    a = optax.chain(optax.add_decayed_weights(0.3), sghmc_jax.sghmc(0.05, alpha=0.5, key=0))
    b = sghmc_jax.sghmc(0.05, alpha=0.5, key=0)
    pa, sa, pb, sb = params, a.init(params), params, b.init(params)
    for i in range(20):
        k = jax.random.key(i)
        ua, sa = a.update(jax.grad(loss)(pa), sa, pa, key=k)
        ub, sb = b.update(jax.grad(prior_loss)(pb), sb, pb, key=k)
        pa, pb = optax.apply_updates(pa, ua), optax.apply_updates(pb, ub)
    np.testing.assert_allclose(pa, pb, rtol=1e-5, atol=1e-6)


def test_masked_last_layer_bayes():
    """optax.multi_transform: SGHMC on one subtree, SGD on the other."""
    params = {"body": jnp.ones(3), "head": jnp.ones(2)}
    tx = optax.multi_transform(
        {"sample": sghmc_jax.sghmc(0.1, key=0), "sgd": optax.sgd(0.1)},
        {"body": "sgd", "head": "sample"},
    )
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, state = jax.jit(tx.update)(grads, state, params)
    np.testing.assert_allclose(updates["body"], -0.1)
    assert updates["head"].shape == (2,)


def test_learning_rate_and_temperature_schedules():
    lr_fn = optax.exponential_decay(0.1, transition_steps=1, decay_rate=0.5)
    t_fn = optax.linear_schedule(1.0, 0.0, transition_steps=2)
    params = jnp.zeros(3)
    tx = sghmc_jax.sghmc(lr_fn, alpha=0.5, temperature=t_fn, momenta=0.0, key=0)
    state = tx.init(params)
    m = jnp.zeros(3)
    for step in range(4):
        k = jax.random.key(step)
        updates, state = jax.jit(tx.update)(jnp.ones(3), state, key=k)
        inc, m = sghmc_jax.kernels.sghmc_step(m, -jnp.ones(3), k, lr_fn(step), 0.5, 0.0, 1.0, t_fn(step))
        # Eager vs jit may differ in the last bit (XLA fuses into FMAs); the values agree.
        np.testing.assert_allclose(updates, inc, rtol=1e-6, atol=1e-9)
    assert int(state.step) == 4


def test_inject_hyperparams_changes_lr_and_temperature_without_retracing():
    params = jnp.zeros(3)
    tx = optax.inject_hyperparams(sghmc_jax.sghmc, static_args=("key",))(
        learning_rate=0.1, temperature=1.0, alpha=0.5, momenta=0.0, key=0
    )
    state = tx.init(params)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(state, key):
        return tx.update(jnp.ones(3), state, params, key=key)

    m = jnp.zeros(3)
    for i, (lr, temp) in enumerate([(0.1, 1.0), (0.05, 0.5), (0.2, 0.0)]):
        state.hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
        state.hyperparams["temperature"] = jnp.asarray(temp, jnp.float32)
        k = jax.random.key(i)
        updates, state = step(state, k)
        inc, m = sghmc_jax.kernels.sghmc_step(
            m, -jnp.ones(3), k, jnp.float32(lr), jnp.float32(0.5), jnp.float32(0.0),
            jnp.float32(1.0), jnp.float32(temp),
        )
        np.testing.assert_allclose(updates, inc, rtol=1e-6)


def test_inject_hyperparams_with_an_int_seed_hyperparameter():
    tx = optax.inject_hyperparams(sghmc_jax.sghmc)(learning_rate=0.1, key=0)
    params = jnp.zeros(3)
    state = tx.init(params)
    updates, state = jax.jit(tx.update)(jnp.ones(3), state, params)
    assert np.all(np.isfinite(updates))


def test_no_retracing_across_steps():
    tx = sghmc_jax.sghmc(optax.cosine_decay_schedule(0.1, 100), key=0)
    params = jnp.zeros(3)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        updates, state = tx.update(params, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(5):
        params, state = step(params, state)


def test_momenta_options():
    params = {"a": jnp.zeros(2), "b": jnp.zeros((2, 2))}
    filled = sghmc_jax.sghmc(0.1, momenta=0.5, key=0).init(params).momenta
    chex.assert_trees_all_equal(filled, jax.tree.map(lambda p: p + 0.5, params))
    given = {"a": jnp.ones(2), "b": jnp.full((2, 2), 2.0)}
    chex.assert_trees_all_equal(sghmc_jax.sghmc(0.1, momenta=given, key=0).init(params).momenta, given)
    cold = sghmc_jax.sghmc(0.1, temperature=0.0, key=0).init(params).momenta
    chex.assert_trees_all_equal(cold, params)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"learning_rate": 0.0}, r"`learning_rate` must be finite and > 0, got learning_rate=0.0"),
        ({"learning_rate": float("nan")}, r"`learning_rate` must be finite and > 0, got learning_rate=nan"),
        ({"learning_rate": lambda s: -0.1}, r"`learning_rate` .* > 0, got learning_rate=-0.1 \(a schedule, at step 0\)"),
        ({"alpha": -1.0}, r"`alpha` must be finite and >= 0, got alpha=-1.0"),
        ({"beta": -0.5}, r"`beta` must be finite and >= 0, got beta=-0.5"),
        ({"sigma": 0.0}, r"`sigma` must be finite and > 0, got sigma=0.0"),
        ({"temperature": -1.0}, r"`temperature` must be finite and >= 0, got temperature=-1.0"),
        ({"alpha": 0.01, "beta": 1.0}, r"2\*alpha - lr\*beta\*temperature >= 0.*= -0.08"),
        ({"alpha": jnp.ones(3)}, r"`alpha` must be a scalar, got an array of shape \(3,\)"),
    ],
)
def test_invalid_hyperparameters_are_named(kwargs, pattern):
    kw = {"learning_rate": 0.1} | kwargs
    with pytest.raises(ValueError, match=pattern):
        sghmc_jax.sghmc(**kw, key=0)


@pytest.mark.parametrize(
    ("key", "pattern"),
    [
        ("seed", r"`key` must be a PRNG key .* got str"),
        (True, r"`key` must be a PRNG key or an int seed, got the bool True"),
        (jnp.ones(2), r"`key` must be a PRNG key .* got ArrayImpl with dtype=float32"),
        (jax.random.split(jax.random.key(0), 3), r"`key` must be a single PRNG key, got a key array of shape \(3,\)"),
    ],
)
def test_invalid_keys_are_named(key, pattern):
    with pytest.raises((TypeError, ValueError), match=pattern):
        sghmc_jax.sghmc(0.1, key=key)


def test_traced_hyperparameters_are_not_checked():
    """Under vmap over hyperparameters nothing is branched on or checked."""
    lrs = jnp.array([0.1, 0.2])
    out = jax.vmap(
        lambda lr: sghmc_jax.sghmc(lr, temperature=0.0, momenta=0.0, key=0).update(
            jnp.ones(2), sghmc_jax.sghmc(lr, key=0).init(jnp.zeros(2))._replace(momenta=jnp.zeros(2))
        )[0]
    )(lrs)
    np.testing.assert_allclose(out, [[-0.01, -0.01], [-0.04, -0.04]], rtol=1e-6)


def test_tree_and_dtype_errors():
    tx = sghmc_jax.sghmc(0.1, momenta={"a": jnp.zeros(2)}, key=0)
    with pytest.raises(ValueError, match=re.escape("`momenta` must have the tree structure of `params`")):
        tx.init({"a": jnp.zeros(2), "b": jnp.zeros(1)})
    tx = sghmc_jax.sghmc(0.1, momenta={"a": jnp.zeros(3)}, key=0)
    with pytest.raises(ValueError, match=re.escape("`momenta` must match the shapes of `params`, got shape (3,) at momenta['a']")):
        tx.init({"a": jnp.zeros(2)})
    with pytest.raises(TypeError, match=re.escape("every leaf of `params` must be a floating-point array, got dtype int32 at params['n']")):
        sghmc_jax.sghmc(0.1, key=0).init({"w": jnp.zeros(2), "n": jnp.zeros(2, jnp.int32)})


@pytest.mark.parametrize("name", ["sghmc", "sgld", "sgnht", "baoa", "psgld", "psghmc"])
def test_steps_schedules_and_injected_hyperparameters_do_not_recompile(name):
    """One compiled step serves every step (schedules read the traced step count) and every
    value of an injected hyperparameter, with per-step keys or the state's own."""
    make = getattr(sghmc_jax, name)
    schedule = optax.cosine_decay_schedule(0.05, 100)
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    grads = jax.tree.map(lambda x: 0.1 * x + 0.2, params)
    for tx, with_key in [(make(schedule, key=0), True), (make(schedule, key=0), False)]:

        @jax.jit
        def step(p, s, k, tx=tx, with_key=with_key):
            u, s = tx.update(grads, s, p, key=k) if with_key else tx.update(grads, s, p)
            return optax.apply_updates(p, u), s

        p, s = params, tx.init(params)
        for i in range(5):
            p, s = step(p, s, jax.random.key(i))
        assert step._cache_size() == 1
    injected = optax.inject_hyperparams(make)(learning_rate=0.05, key=0)

    @jax.jit
    def injected_step(p, s):
        u, s = injected.update(grads, s, p)
        return optax.apply_updates(p, u), s

    p, s = params, injected.init(params)
    for lr in (0.05, 0.01, 0.2):
        s.hyperparams["learning_rate"] = jnp.asarray(lr)
        p, s = injected_step(p, s)
    assert injected_step._cache_size() == 1
