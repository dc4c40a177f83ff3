"""The conventions every sampler keeps (DESIGN.md, STYLE.md), checked for each entry of
`tests/registry.py`: both faces bit-identical; keys (the state key split each step, a per-step
key wins, per-chain keys under vmap, every key form and implementation); dtypes; no
recompilation (steps, schedules, injected and traced hyperparameters); buffer donation that
never consumes the caller's arrays; a state structure fixed from `init`; validation before
anything compiles; composition with optax; posteriors' signatures; long-run stability at small
friction; and exact stationary moments where the step is linear on a Gaussian target."""

from __future__ import annotations

import inspect
import os
import pathlib
import re
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sghmc_jax
from tests import helpers
from tests.registry import SAMPLERS, Sampler

_ids = [s.name for s in SAMPLERS]
ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLERS_PAGE = ROOT / "docs" / "guides" / "samplers.md"  # its table has a row per sampler
DEVELOPER_PAGE = ROOT / "docs" / "developer.md"  # its "Adding a sampler" is the checklist


@pytest.fixture(params=SAMPLERS, ids=_ids)
def s(request) -> Sampler:
    return request.param


@pytest.fixture(autouse=True)
def _fresh_trace_counter():
    """chex keys its trace counter by call stack and source, which the parametrised tests here
    share: count each test alone."""
    chex.clear_trace_counter()
    yield
    chex.clear_trace_counter()


def _lp(params, batch):
    return -0.5 * jnp.sum((params["w"] - batch) ** 2) - 0.1 * jnp.sum(params["b"] ** 2), {"b": params["b"]}


# ---- the two faces ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheduled", [False, True], ids=["constant", "scheduled"])
def test_faces_give_bit_identical_chains(s, scheduled):
    """Same keys and the same gradient program: params, log posterior and every state field agree
    bit for bit, the initial state included (drawn from the same key), with constant
    hyperparameters (constants in the optax face, traced in the functional one) and schedules."""
    log_posterior, params, data = helpers.regression_problem()
    kw = {}
    if scheduled:
        kw = {"lr": optax.exponential_decay(1e-3, 5, 0.8), "temperature": optax.linear_schedule(0.7, 0.2, 20)}
        if "decay" in s.hyper:
            kw["decay"] = optax.join_schedules([optax.constant_schedule(0.95), optax.constant_schedule(1.0)], [10])
    state = helpers.assert_faces_bit_identical(
        s.transform(**kw), s.build(log_posterior, **kw), log_posterior, params, data, num_steps=30, fields=s.fields
    )
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params))


def test_faces_agree_inside_one_jitted_scan(s):
    """Both faces as the carry of one `lax.scan` (the functional state laid out by `init`)."""
    log_posterior, params, data = helpers.regression_problem(1)
    keys = jax.random.split(jax.random.key(2), 60)
    transform = s.build(log_posterior)
    tx = s.transform()

    @jax.jit
    def both(params):
        f_state = transform.init(params, key=jax.random.split(jax.random.key(0))[0], batch=data)

        def body(carry, k):
            f_state, p, o_state = carry
            f_state = transform.update(f_state, data, key=k)
            _, _, grads = sghmc_jax.sgmcmc._common.loss_gradient(log_posterior, p, data)
            u, o_state = tx.update(grads, o_state, p, key=k)
            return (f_state, optax.apply_updates(p, u), o_state), None

        (f_state, p, o_state), _ = jax.lax.scan(body, (f_state, params, tx.init(params)), keys)
        return f_state, p, o_state

    f_state, p, o_state = both(params)
    chex.assert_trees_all_equal(f_state.params, p)
    for field in s.fields:
        chex.assert_trees_all_equal(getattr(f_state, field), getattr(o_state, field))
    assert int(f_state.step) == int(o_state.step) == 60


# ---- keys ------------------------------------------------------------------------------------


def test_state_key_is_split_each_step_without_a_per_step_key(s):
    tx = s.transform(key=jax.random.key(7))
    state = tx.init(jnp.zeros(4))
    u1, s1 = tx.update(jnp.zeros(4), state)
    u2, _ = tx.update(jnp.zeros(4), s1)
    assert not np.allclose(u1, u2)
    step_key, next_key = jax.random.split(state.key)
    np.testing.assert_array_equal(jax.random.key_data(s1.key), jax.random.key_data(next_key))
    # The step used the split-off key: the same update as with it passed explicitly.
    u_explicit, _ = tx.update(jnp.zeros(4), state, key=step_key)
    np.testing.assert_array_equal(u1, u_explicit)


def test_per_step_key_overrides_the_state_key(s):
    extra = {"momenta": 0.0} if "momenta" in s.fields else {}
    tx_a, tx_b = s.transform(key=1, **extra), s.transform(key=2, **extra)
    sa, sb = tx_a.init(jnp.zeros(4)), tx_b.init(jnp.zeros(4))
    k = jax.random.key(42)
    ua, sa2 = tx_a.update(jnp.ones(4), sa, key=k)
    ub, _ = tx_b.update(jnp.ones(4), sb, key=k)
    np.testing.assert_array_equal(ua, ub)  # same per-step key, different state keys
    np.testing.assert_array_equal(jax.random.key_data(sa2.key), jax.random.key_data(sa.key))
    uc, _ = tx_a.update(jnp.ones(4), sa, key=jax.random.key(43))
    assert not np.allclose(ua, uc)


def test_vmapped_chains_get_their_own_noise_and_initial_state(s):
    tx = s.transform(lr=0.1)
    state = jax.vmap(tx.init)(jnp.zeros((8, 3)))
    keys = jax.random.split(jax.random.key(9), 8)
    updates, _ = jax.vmap(lambda st, k: tx.update(jnp.zeros(3), st, key=k))(state, keys)
    assert len({tuple(r) for r in np.asarray(updates).round(8)}) == 8
    same, _ = jax.vmap(lambda st, k: tx.update(jnp.zeros(3), st, key=k))(state, jnp.stack([keys[0]] * 8))
    if not s.draws_at_init:
        np.testing.assert_array_equal(same, jnp.broadcast_to(same[0], same.shape))
    else:
        # Built inside the vmap from per-chain keys, the chains draw their own initial momenta.
        per_chain = jax.vmap(lambda k: s.transform(key=k).init(jnp.zeros(3)))(keys)
        assert len({tuple(r) for r in np.asarray(per_chain.momenta).round(8)}) == 8


@pytest.mark.parametrize("key", [3, np.int64(3), jax.random.PRNGKey(3), jax.random.key(3)])
def test_int_seed_raw_and_typed_keys_are_the_same_key(s, key):
    tx, ref = s.transform(key=key), s.transform(key=jax.random.key(3))
    u, state = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))
    u_ref, _ = ref.update(jnp.ones(2), ref.init(jnp.zeros(2)))
    assert jax.dtypes.issubdtype(state.key.dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(u, u_ref)


@pytest.mark.parametrize("impl", ["rbg", "unsafe_rbg"])
def test_any_key_implementation(s, impl):
    tx = s.transform(key=jax.random.key(0, impl=impl))
    state = tx.init(jnp.zeros(3))
    u1, state = tx.update(jnp.ones(3), state, key=jax.random.key(1, impl=impl))
    u2, state = tx.update(jnp.ones(3), state)
    assert np.all(np.isfinite(u1)) and np.all(np.isfinite(u2)) and not np.allclose(u1, u2)


@pytest.mark.parametrize(
    ("key", "pattern"),
    [
        ("seed", r"`key` must be a PRNG key .* got str"),
        (True, r"`key` must be a PRNG key or an int seed, got the bool True"),
        (jnp.ones(2), r"`key` must be a PRNG key .* got ArrayImpl with dtype=float32"),
        (jax.random.split(jax.random.key(0), 3), r"`key` must be a single PRNG key, got a key array of shape \(3,\)"),
    ],
)
def test_invalid_keys_are_named(s, key, pattern):
    with pytest.raises((TypeError, ValueError), match=pattern):
        s.transform(key=key)


# ---- dtypes and compilation -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32, jnp.float64])
def test_dtypes_are_preserved_under_jit(x64, s, dtype):
    params = {"w": jnp.ones((3, 2), dtype), "b": jnp.zeros((2,), dtype)}
    tx = s.transform(lr=0.05)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.tree.map(lambda p: 2 * p, params), state, params)
        return optax.apply_updates(params, updates), state, updates

    for _ in range(3):
        params, state, updates = step(params, state)
    trees = [params, updates] + [getattr(state, f) for f in s.fields if f != "xi"]
    for tree in trees:
        assert {x.dtype for x in jax.tree.leaves(tree)} == {jnp.dtype(dtype)}
        assert all(np.all(np.isfinite(np.asarray(x, np.float64))) for x in jax.tree.leaves(tree))
    if "xi" in s.fields:
        assert state.xi.dtype == jnp.promote_types(dtype, jnp.float32)


def test_nothing_recompiles_across_steps_schedules_and_hyperparameters(s):
    """One compiled step serves every step (schedules read the traced step count), every value of
    an injected hyperparameter, and, in the functional face, every numeric hyperparameter."""
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    grads = jax.tree.map(lambda x: 0.1 * x + 0.2, params)
    schedule = optax.cosine_decay_schedule(0.05, 100)
    for with_key in (True, False):
        tx = s.transform(lr=schedule, temperature=optax.linear_schedule(0.7, 0.3, 50))

        @jax.jit
        @chex.assert_max_traces(n=1)
        def step(p, st, k, tx=tx, with_key=with_key):
            u, st = tx.update(grads, st, p, key=k) if with_key else tx.update(grads, st, p)
            return optax.apply_updates(p, u), st

        p, st = params, tx.init(params)
        for i in range(5):
            p, st = step(p, st, jax.random.key(i))
        assert int(st.step) == 5
        chex.clear_trace_counter()

    kw = s.hyper | s.settings
    injected = optax.inject_hyperparams(s.optax, static_args=("key",))(
        learning_rate=kw.pop("lr"), key=0, **kw
    )

    @jax.jit
    @chex.assert_max_traces(n=1)
    def injected_step(p, st):
        u, st = injected.update(grads, st, p)
        return optax.apply_updates(p, u), st

    p, st = params, injected.init(params)
    for lr, temperature in ((0.05, 1.0), (0.01, 0.5), (0.2, 0.0)):
        st.hyperparams["learning_rate"] = jnp.asarray(lr)
        st.hyperparams["temperature"] = jnp.asarray(temperature)
        p, st = injected_step(p, st)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(p))

    log_posterior = lambda q, b: (-0.5 * jnp.sum(q**2), None)  # noqa: E731
    state = s.build(log_posterior).init(jnp.ones(2), key=0)
    s.module.update(state, None, log_posterior, **s.hyper, key=0)
    compiled = sghmc_jax.sgmcmc._common._update_jit._cache_size()
    for lr, temperature in ((0.2, 0.5), (0.05, 2.0), (0.3, 0.0)):
        s.module.update(state, None, log_posterior, **(s.hyper | {"lr": lr, "temperature": temperature}), key=0)
    assert sghmc_jax.sgmcmc._common._update_jit._cache_size() == compiled


def test_traced_hyperparameters_are_not_checked(s):
    """Under vmap over hyperparameters nothing is branched on or checked."""
    tx0 = s.transform(lr=0.1, temperature=0.0)
    state = tx0.init(jnp.zeros(2))
    out = jax.vmap(lambda lr: s.transform(lr=lr, temperature=0.0).update(jnp.ones(2), state)[0])(jnp.array([0.1, 0.2]))
    assert out.shape == (2, 2) and np.all(np.isfinite(out))
    assert not np.allclose(out[0], out[1])


# ---- donation and state ----------------------------------------------------------------------


def test_inplace_gives_identical_numbers_reuses_the_states_buffers_and_spares_the_callers(s):
    """Regression (issue 10): `init` kept the caller's params (and momenta/V trees), so the first
    donated update deleted them."""
    params = {"w": jnp.zeros(3), "b": jnp.ones(2)}
    given = {}
    if "momenta" in s.fields:
        given["momenta"] = {"w": jnp.full(3, 0.5), "b": jnp.full(2, -0.5)}
    if "v" in s.fields:
        given["initial_scale"] = {"w": jnp.ones(3), "b": jnp.ones(2)}
    transform = s.build(_lp, **given)
    a = transform.init(params, key=3)
    b = transform.init(params, key=3)
    for i in range(3):
        old = b
        a = transform.update(a, jnp.ones(3), key=i)
        b = transform.update(b, jnp.ones(3), key=i, inplace=True)
        assert all(x.is_deleted() for x in jax.tree.leaves(old.params))
        chex.assert_trees_all_equal(a, b)
    np.testing.assert_array_equal(params["w"] + 1, 1.0)  # the caller's arrays are alive
    for tree in given.values():
        assert np.all(np.isfinite(np.asarray(tree["w"])))


def test_state_structure_is_fixed_from_init_so_update_scans(s):
    """Regression (issue 10): `init` set aux=None, so a `lax.scan` over `update` failed whenever
    the log posterior returned an aux. `init` lays it out (NaN before the first update)."""
    transform = s.build(_lp)
    state = transform.init({"w": jnp.zeros(3), "b": jnp.ones(2)}, key=0, batch=jnp.ones(3))
    assert np.all(np.isnan(state.aux["b"])) and np.isnan(state.log_posterior) and int(state.step) == 0

    def step(state, key):
        return transform.update(state, jnp.ones(3), key=key), None

    final, _ = jax.lax.scan(step, state, jax.random.split(jax.random.key(1), 5))
    assert jax.tree.structure(final) == jax.tree.structure(state) and int(final.step) == 5
    value, aux = _lp(jax.tree.map(lambda x: x, transform.update(final, jnp.ones(3), key=9).params), jnp.ones(3))
    assert np.isfinite(value) and aux["b"].shape == (2,)


def test_state_holds_the_log_posterior_at_the_old_params(s):
    log_posterior, params, data = helpers.regression_problem(3)
    transform = s.build(log_posterior)
    new = transform.update(transform.init(params, key=0), data, key=0)
    value, aux = log_posterior(params, data)
    np.testing.assert_allclose(new.log_posterior, value, rtol=1e-6)
    np.testing.assert_allclose(new.aux["rmse"], aux["rmse"], rtol=1e-6)
    assert int(new.step) == 1


# ---- validation ------------------------------------------------------------------------------


def test_invalid_hyperparameters_are_named_by_both_faces(s):
    for bad, pattern in s.invalid:
        error = TypeError if "must be a real number" in pattern else ValueError
        kw = s.hyper | s.settings | bad
        lr = kw.pop("lr")
        with pytest.raises(error, match=pattern.format(lr="learning_rate")):
            s.optax(lr, key=0, **kw)
        with pytest.raises(error, match=pattern.format(lr="lr")):
            s.module.build(_lp, lr, **kw)


def test_bad_params_and_trees_fail_naming_the_leaf(s):
    transform, tx = s.build(_lp), s.transform()
    for init in (lambda p: transform.init(p, key=0), tx.init):
        with pytest.raises(TypeError, match=re.escape("every leaf of `params` must be a floating-point array, got dtype int32 at params['n']")):
            init({"w": jnp.zeros(2), "n": jnp.zeros(2, jnp.int32)})
    with pytest.raises(ValueError, match=re.escape("every element of `params` must be finite, got 1 non-finite value(s) (NaN or infinity) at params['w']")):
        transform.init({"w": jnp.array([0.0, jnp.nan, 1.0]), "b": jnp.zeros(2)}, key=0)
    state = tx.init({"a": jnp.zeros(2)})
    with pytest.raises(TypeError, match=re.escape("every leaf of `updates` must be a floating-point array")):
        tx.update({"a": jnp.zeros(2, jnp.int32)}, state)
    if s.fields:
        with pytest.raises(ValueError, match=rf"`updates` must have the tree structure of `state\.{s.fields[0]}`"):
            tx.update({"b": jnp.zeros(2)}, state)
    with pytest.raises(TypeError, match=r"`log_posterior` must be a callable"):
        s.module.build("not a function", 0.1)


def test_a_whole_equinox_module_is_named_with_how_to_split_it(s):
    eqx = pytest.importorskip("equinox")
    model = eqx.nn.MLP(2, 1, 4, 1, key=jax.random.key(0))
    pattern = r"got a function of type \w+ at params\.activation; it looks like a whole Equinox module: .*eqx\.partition\(model, eqx\.is_inexact_array\)"
    with pytest.raises(TypeError, match=pattern):
        s.build(lambda p, b: (0.0, None)).init(model, key=0)
    with pytest.raises(TypeError, match=pattern):
        s.transform().init(model)


def test_temperature_must_agree_with_the_log_posteriors(s):
    """Regression (issue 10): a `form="mean"` log posterior needs temperature 1/N; forgetting it
    sampled at T = 1 silently. `build` checks; the optax face checks the `target_temperature`
    that `sample()` passes."""
    ll = lambda p, batch: -0.5 * (batch - p["w"]) ** 2  # noqa: E731
    lp = sghmc_jax.make_log_posterior(ll, lambda p: -0.5 * jnp.sum(p["w"] ** 2), 500, form="mean")
    pattern = rf"`temperature` of {s.name} must be the log posterior's temperature 0\.002 .*got temperature=0\.7"
    with pytest.raises(ValueError, match=pattern):
        s.build(lp)
    tx = s.transform()
    with pytest.raises(ValueError, match=pattern):
        tx.update({"w": jnp.ones(())}, tx.init({"w": jnp.zeros(())}), target_temperature=lp.temperature)
    transform = s.build(lp, temperature=lp.temperature)
    state = transform.init({"w": jnp.zeros(())}, key=0, batch=jnp.ones(4))
    assert np.isfinite(transform.update(state, jnp.ones(4), key=1).log_posterior)


def test_log_posterior_return_errors_say_what_came_back(s):
    with pytest.raises(TypeError, match=re.escape("`log_posterior` must return a tuple (value, aux); return (value, None) when there is no auxiliary output. It returned a scalar of dtype float32")):
        s.build(lambda p, b: -jnp.sum(p**2)).init(jnp.zeros(2), key=0)
    bad = s.build(lambda p, b: (-(p**2), None))
    with pytest.raises(TypeError, match=re.escape("`log_posterior` must return a scalar value, it returned an array of shape (2,) of dtype float32 as the value")):
        bad.update(bad.init(jnp.zeros(2), key=0), None, key=1)


def test_signatures_mirror_posteriors(s):
    """posteriors' names and order (optax.rmsprop's for the preconditioner), then what JAX needs:
    keyword-only `key`, `inplace`; the state as posteriors lays it out."""
    assert tuple(inspect.signature(s.module.build).parameters) == s.signature
    hyper = [p for p in s.signature[1:] if p not in ("momenta", "xi", "initial_scale")]
    assert list(inspect.signature(s.module.update).parameters) == ["state", "batch", "log_posterior", *hyper, "key", "inplace"]
    state_type = getattr(s.module, next(n for n in s.module.__all__ if n.endswith("State")))
    assert state_type._fields == ("params", *s.fields, "log_posterior", "aux", "step")
    optax_state = getattr(sghmc_jax, next(n for n in dir(sghmc_jax) if n.lower() == f"{s.name}transformstate"))
    assert optax_state._fields == ("step", *s.fields, "key")
    if s.draws_at_init:
        with pytest.raises(TypeError, match="`key` is required to draw the initial momenta"):
            s.module.init(jnp.zeros(2))


def test_every_face_takes_its_defaults_from_the_rules_table(s):
    """Issue 19, item 4: a hyperparameter's default lives in the rule's table only; the optax
    factory, `build`, `init` and `update` all default to it (the step size has none), and the
    initial-state settings (`momenta`, `xi`, `initial_scale`) default alike in every face that
    takes them. A parameter with a default that is neither is a hyperparameter the table lacks."""
    table = {h.name: h.default for h in s.rule.hyperparameters}
    settings = ("momenta", "xi", "initial_scale")
    faces = {"optax": s.optax, "build": s.module.build, "init": s.module.init, "update": s.module.update}
    seen: dict[str, dict[str, Any]] = {}
    for face, fn in faces.items():
        parameters = inspect.signature(fn).parameters
        for name, p in parameters.items():
            hyper = "lr" if name == "learning_rate" else name
            if hyper in table:
                want = inspect.Parameter.empty if table[hyper] is None else table[hyper]
                assert p.default == want and type(p.default) is type(want), (
                    f"{s.name} {face}: `{name}` defaults to {p.default!r}, the rule's table to {want!r}"
                )
            elif name in settings:
                seen.setdefault(name, {})[face] = p.default
            else:
                assert p.kind is p.KEYWORD_ONLY or p.default is p.empty or p.default is None, (
                    f"{s.name} {face}: `{name}` has the default {p.default!r} but no row in the rule's table"
                )
        if face != "init":  # init takes only what the rule's initial state reads
            missing = {"learning_rate" if h == "lr" and face == "optax" else h for h in table} - set(parameters)
            assert not missing, f"{s.name} {face} lacks the hyperparameters {missing}"
    for name, defaults in seen.items():
        assert len(set(map(repr, defaults.values()))) == 1, f"{s.name}: `{name}` defaults differ: {defaults}"


# ---- composition -----------------------------------------------------------------------------


def test_composes_with_clipping(s):
    params, grads, key = jnp.zeros(3), jnp.array([30.0, 40.0, 0.0]), jax.random.key(5)
    chained = optax.chain(optax.clip_by_global_norm(1.0), s.transform(lr=0.1))
    plain = s.transform(lr=0.1)
    u1, _ = chained.update(grads, chained.init(params), params, key=key)
    u2, _ = plain.update(grads / 50.0, plain.init(params), params, key=key)
    np.testing.assert_allclose(u1, u2, rtol=1e-6, atol=1e-7)


# ---- statistics ------------------------------------------------------------------------------


def test_long_run_stability_at_small_friction(x64, s):
    """α = 0.01 (where the sampler has friction), ε = 0.05 on N(0, 1), 10,000 steps from
    equilibrium: every chain stays finite (the simultaneous-update form of SGHMC diverges here),
    and θ's variance stays within 10 MCSE of 1 (the O(ε) bias of the non-exact schemes is below
    that)."""
    overrides = {"lr": 0.05, "temperature": 1.0}
    if "alpha" in s.hyper:
        overrides |= {"alpha": 0.01, "sigma": 1.0}
    if "beta" in s.hyper:
        overrides["beta"] = 0.0
    if "v" in s.fields:
        overrides |= {"decay": 1.0, "eps": 1e-3}

    def chain(key):
        k0, k1, k2 = jax.random.split(key, 3)
        theta = jax.random.normal(k0, (1,), jnp.float64)
        settings = {"initial_scale": (1 - 1e-3) ** 2} if "v" in s.fields else {}
        tx = s.transform(key=k1, **overrides, **settings)

        def step(carry, k):
            theta, state = carry
            u, state = tx.update(theta, state, theta, key=k)
            theta = optax.apply_updates(theta, u)
            return (theta, state), theta[0] ** 2

        _, sq = jax.lax.scan(step, (theta, tx.init(theta)), jax.random.split(k2, 10_000))
        return jnp.mean(sq)

    second = np.asarray(jax.jit(jax.vmap(chain))(jax.random.split(jax.random.key(43), 200)))
    assert np.all(np.isfinite(second)), f"seed=43 {s.name}: a chain diverged"
    mean, se = second.mean(), second.std(ddof=1) / np.sqrt(len(second))
    assert abs(mean - 1) < 10 * se + 0.06, f"seed=43 {s.name}: E θ² = {mean:.4f} ± {se:.4f}"


@pytest.mark.parametrize("grad_noise_var", [0.0, 0.5])
@pytest.mark.parametrize("linear", [x for x in SAMPLERS if x.linear], ids=[x.name for x in SAMPLERS if x.linear])
def test_exact_stationary_moments_on_a_gaussian(x64, linear, grad_noise_var):
    """Where one step is linear on log p = −½ θᵀAθ, many chains started from the exact discrete
    stationary law N(0, Σ), Σ = FΣFᵀ + Q (including the gradient noise B = b·I injected here),
    keep its moments: |z| < Z_MAX against Σ, standard errors from independent chains."""
    a = helpers.correlated_2d()
    hyper = linear.linear.hyper(a)
    f, q = linear.linear.transition(a, hyper, grad_noise_var)
    helpers.check_stationary(
        linear.linear.scheme, a, hyper, f, q, seed=61 + _ids.index(linear.name), grad_noise_var=grad_noise_var
    )


def test_a_rule_may_take_several_gradients_per_step():
    """The functional machinery leaves room for samplers with more than one gradient per step
    (`Rule.integrate`): a leapfrog step, two gradients, matches its hand-written recurrence; such
    a rule has no optax face."""
    from sghmc_jax import _checks, kernels, transforms
    from sghmc_jax.sgmcmc import _common

    class LeapfrogState(NamedTuple):
        params: Any
        momenta: Any
        log_posterior: Any
        aux: Any
        step: Any

    def integrate(params, fields, gradient, key, h):
        value, aux, g0 = gradient(params)
        half = fields["momenta"] + 0.5 * h["lr"] * g0
        new = params + h["lr"] * half
        _, _, g1 = gradient(new)
        return new, {"momenta": half + 0.5 * h["lr"] * g1}, value, aux

    rule = kernels.Rule(
        "leapfrog", ("momenta",), lambda p, key, s: {"momenta": jnp.full_like(p, s["momenta"])}, None,
        draws_at_init=False, integrate=integrate,
        hyperparameters=(_checks.Hyperparameter("lr", _checks.POSITIVE, True), _checks.Hyperparameter("temperature", _checks.NON_NEGATIVE, True)),
    )
    log_posterior = lambda p, b: (-0.5 * jnp.sum(p**2) - 0.25 * jnp.sum(p**4), None)  # noqa: E731
    hyper = {"lr": 0.1, "temperature": 0.0}
    state = _common.init(rule, LeapfrogState, jnp.array([1.0, -0.5]), {"momenta": 0.3}, None, log_posterior, None)
    grad = jax.grad(lambda p: log_posterior(p, None)[0])
    theta, m = np.array([1.0, -0.5]), np.full(2, 0.3)
    for i in range(10):
        state = _common.update(rule, LeapfrogState, state, None, log_posterior, hyper, i, False)
        half = m + 0.05 * np.asarray(grad(theta))
        theta = theta + 0.1 * half
        m = half + 0.05 * np.asarray(grad(theta))
    np.testing.assert_allclose(state.params, theta, rtol=1e-5, atol=1e-6)  # float32 vs float64
    np.testing.assert_allclose(state.momenta, m, rtol=1e-5, atol=1e-6)
    assert int(state.step) == 10
    with pytest.raises(TypeError, match="leapfrog takes more than one gradient per step, so it has no optax face"):
        transforms._transform(rule, LeapfrogState, hyper, {}, 0)


def test_diagnose_runs_for_every_sampler_and_its_rule_holds_the_formulas(s):
    """Issue 18, item 8: every sampler's rule carries what `diagnose()` needs (`Rule.diagnose`:
    the discrete kinetic expectation where it has momenta, the noise ratio), and `diagnose()`
    runs on a run of it, with nothing naming samplers elsewhere."""
    from sghmc_jax import kernels

    rule = kernels.rules()[s.name]
    assert rule.name == s.name and rule.diagnose is not None
    assert (rule.diagnose.kinetic is None) == ("momenta" not in s.fields)
    data = jnp.asarray(np.random.default_rng(0).normal(size=(40, 2)), jnp.float32)
    lp = lambda p, b: (-0.5 * jnp.sum(p**2) - 0.5 * jnp.sum((b - p) ** 2), None)  # noqa: E731
    result = sghmc_jax.sample(
        0, lp, jnp.zeros(2), transform=lambda k: s.transform(key=k, lr=0.05, temperature=1.0),
        num_steps=200, burn_in=50, num_chains=2, data=data, batch_size=10, progress=False,
    )
    table = result.diagnose()
    assert result.sampler == s.name
    assert {"kinetic temperature", "noise ratio R", "KSD", "R-hat log posterior"} <= {r.diagnostic for r in table.rows}
    (noise,) = [r for r in table.rows if r.diagnostic == "noise ratio R"]
    assert noise.verdict in ("ok", "FLAG") and np.isfinite(noise.value), noise


@pytest.mark.parametrize("lr_alpha", [0.05, 0.4])
@pytest.mark.parametrize("linear", [x for x in SAMPLERS if x.linear and "momenta" in x.fields], ids=[x.name for x in SAMPLERS if x.linear and "momenta" in x.fields])
def test_rules_kinetic_expectation_is_the_exact_stationary_momentum_variance(x64, linear, lr_alpha):
    """Issue 18, item 7: `Rule.diagnose.kinetic` against Var m/(σ²T) of the exact discrete
    stationary law (Lyapunov), with the gradient noise the sampler models, on a Gaussian of low
    curvature (1e-6), where the formulas are exact
    up to O(ε²·curvature/σ²)."""
    from sghmc_jax import kernels

    a = np.eye(1) * 1e-6
    hyper = linear.linear.hyper(np.eye(1)) | {"lr": 0.01, "alpha": lr_alpha / 0.01, "sigma": 1.3, "temperature": 0.7}
    # The gradient noise the sampler is told about (β·T², where it takes a β) is there.
    f, q = linear.linear.transition(a, hyper, hyper.get("beta", 0.0) * hyper["temperature"] ** 2)
    m = helpers.lyapunov(f, q)[-1, -1] if f.shape[0] == 2 else None
    assert m is not None, f.shape
    expected = kernels.rules()[linear.name].diagnose.kinetic(hyper)
    np.testing.assert_allclose(m / (hyper["sigma"] ** 2 * hyper["temperature"]), expected, rtol=1e-4)


# ---- adding a sampler --------------------------------------------------------------------------


def test_the_registry_covers_every_rule_and_every_place_finds_it():
    """Every rule of `kernels.rules()` (the registry of samplers) has an entry in tests/registry.py,
    its optax face and state exported by `sghmc_jax`, its functional face in `sghmc_jax.sgmcmc`
    and a row in the table of docs/guides/samplers.md: the places that find samplers by discovery."""
    from sghmc_jax import kernels, transforms

    rules = kernels.rules()
    assert set(rules) == {x.name for x in SAMPLERS}, "every rule has one entry in tests/registry.py"
    samplers_table = SAMPLERS_PAGE.read_text()
    for name, rule in rules.items():
        assert name in sghmc_jax.sgmcmc.__all__ and hasattr(sghmc_jax.sgmcmc, name), name
        assert f"| `{name}` |" in samplers_table, f"docs/guides/samplers.md has no row for {name}"
        if rule.integrate is not None:
            continue  # several gradients per step: no optax face
        state = next(n for n in sghmc_jax.__all__ if n.lower() == f"{name}transformstate")
        assert name in sghmc_jax.__all__ and getattr(sghmc_jax, name) is getattr(transforms, name), name
        assert getattr(sghmc_jax, state) in transforms._sampler_states(), state

# A toy sampler written exactly as "Adding a sampler" (docs/developer.md) says, one piece per file it names.
_TOY_RULE = '''

def toy_step(grad_log_posterior: ArrayTree, key: jax.Array, lr: jax.typing.ArrayLike,
             temperature: jax.typing.ArrayLike) -> ArrayTree:
    r"""One step of overdamped Langevin dynamics: θ ← θ + ε g + √(2εT) ξ (a toy).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.kernels import toy_step
        >>> toy_step(jnp.ones(2), jax.random.key(0), 0.1, 0.0)
        Array([0.1, 0.1], dtype=float32)
    """

    def derive(lr, temperature):
        return lr, jnp.sqrt(2 * lr * temperature)

    _, coefficients = _coefficients(derive, lr, temperature)

    def leaf(up, c, noise, g):
        lr, noise_std = c
        return (_cast(lr * up(g) + noise_std * up(noise), g.dtype),)

    return _map_leaves(leaf, key, coefficients, grad_log_posterior)[0]


TOY = Rule(
    "toy",
    (),
    lambda params, key, s: {},
    lambda fields, grad, key, h: (toy_step(grad, key, h["lr"], h["temperature"]), {}),
    draws_at_init=False,
    hyperparameters=(_LR, _TEMPERATURE),
    diagnose=Diagnose(None, _r_sgld, ("lr", "temperature")),
)
'''

_TOY_OPTAX = '''

class ToyTransformState(NamedTuple):
    """State of the `toy` transform."""

    step: jax.Array
    key: jax.Array


def toy(
    learning_rate: ScalarOrSchedule,
    temperature: ScalarOrSchedule = kernels.TOY.defaults.temperature,
    *,
    key: Any,
) -> optax.GradientTransformationExtraArgs:
    """Overdamped Langevin dynamics (a toy) as an optax transform.

    Example:
        >>> import jax.numpy as jnp, sghmc_jax
        >>> tx = sghmc_jax.toy(0.1, temperature=0.0, key=0)
        >>> tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))[0]
        Array([-0.1, -0.1], dtype=float32)
    """
    return _transform(kernels.TOY, ToyTransformState, {"lr": learning_rate, "temperature": temperature}, {}, key)
'''

_TOY_FUNCTIONAL = '''"""Overdamped Langevin dynamics (a toy) with the functional API of posteriors."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax

from sghmc_jax import kernels
from sghmc_jax.sgmcmc import _common
from sghmc_jax.types import ArrayTree, LogProbFn, ScalarOrSchedule, Transform

_DEFAULTS = kernels.TOY.defaults

__all__ = ["ToyState", "build", "init", "update"]


class ToyState(NamedTuple):
    """State of the functional toy."""

    params: ArrayTree
    log_posterior: jax.Array = float("nan")  # type: ignore[assignment]
    aux: Any = None
    step: jax.Array = 0  # type: ignore[assignment]


def build(log_posterior: LogProbFn, lr: ScalarOrSchedule, temperature: ScalarOrSchedule = _DEFAULTS.temperature) -> Transform:
    """Builds the toy transform.

    Example:
        >>> import jax.numpy as jnp
        >>> from sghmc_jax.sgmcmc import toy
        >>> transform = toy.build(lambda p, b: (-0.5 * jnp.sum(p**2), None), lr=0.1, temperature=0.0)
        >>> transform.update(transform.init(jnp.ones(2)), None, key=0).params
        Array([0.9, 0.9], dtype=float32)
    """
    _common.check_build(kernels.TOY, log_posterior, {"lr": lr, "temperature": temperature}, {})
    init_fn = functools.partial(init, log_posterior=log_posterior)
    update_fn = functools.partial(update, log_posterior=log_posterior, lr=lr, temperature=temperature)
    return Transform(init_fn, update_fn)


def init(params: ArrayTree, *, key: Any = None, log_posterior: LogProbFn | None = None, batch: Any = None) -> ToyState:
    """Initialises the toy state."""
    return _common.init(kernels.TOY, ToyState, params, {}, key, log_posterior, batch)


def update(state: ToyState, batch: Any, log_posterior: LogProbFn, lr: ScalarOrSchedule,
           temperature: ScalarOrSchedule = _DEFAULTS.temperature, *, key: Any, inplace: bool = False) -> ToyState:
    """Takes one toy step."""
    hyperparameters = {"lr": lr, "temperature": temperature}
    return _common.update(kernels.TOY, ToyState, state, batch, log_posterior, hyperparameters, key, inplace)
'''

_TOY_ENTRY = '''
SAMPLERS.append(
    Sampler(
        name="toy",
        fields=(),
        hyper={"lr": 1e-3, "temperature": 0.7},
        settings={},
        invalid=(_POSITIVE_LR, _SCHEDULED_LR, _NAN_TEMPERATURE),
        signature=("log_posterior", "lr", "temperature"),
    )
)
'''

_TOY_ROW = "| `toy` | θ ← θ + ε g + √(2εT) ξ | a test's toy | never |\n"


def _add_the_toy(root: pathlib.Path) -> set[str]:
    """Writes the toy into a copy of the repository at `root`; returns the files it touched."""
    def edit(path: str, change) -> None:
        file = root / path
        file.write_text(change(file.read_text() if file.exists() else ""))
        touched.add(path)

    touched: set[str] = set()
    edit("sghmc_jax/kernels.py", lambda t: t + _TOY_RULE)
    edit("sghmc_jax/transforms.py", lambda t: t.replace("__all__ = [", '__all__ = [\n    "ToyTransformState",\n    "toy",', 1) + _TOY_OPTAX)
    edit("sghmc_jax/sgmcmc/toy.py", lambda t: _TOY_FUNCTIONAL)
    edit("tests/registry.py", lambda t: t.replace("\nBY_NAME = ", _TOY_ENTRY + "\nBY_NAME = ", 1))
    edit("docs/guides/samplers.md", lambda t: t.replace("\n| `psghmc` |", "\n" + _TOY_ROW + "| `psghmc` |", 1))
    return touched


@pytest.mark.slow
def test_a_sampler_added_as_the_readme_says_gets_both_faces_sample_diagnose_and_every_convention_test(tmp_path):
    """Issue 19, item 6: a toy sampler written into a copy of the repository in exactly the files
    "Adding a sampler" (docs/developer.md) names (and no other) gets its optax and functional faces, the
    registry's every convention test (both faces bit-identical, keys, dtypes, validation,
    signatures and defaults, `sample()` and `diagnose()` on its run, ...) and its examples run
    by the doctest discovery, in a fresh process."""
    import shutil
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    ignore = shutil.ignore_patterns("__pycache__", "*.npz")
    for part in ("sghmc_jax", "tests"):
        shutil.copytree(root / part, tmp_path / part, ignore=ignore)
    shutil.copytree(root / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("_build", "api"), symlinks=True)
    for file in ("README.md", "pyproject.toml"):
        shutil.copy(root / file, tmp_path / file)
    touched = _add_the_toy(tmp_path)
    section = DEVELOPER_PAGE.read_text().split("\n## Adding a sampler\n")[1].split("\n## ")[0]
    listed = set(re.findall(r"\*\*`([\w/.<>]+)`\*\*", section))
    assert {t.replace("toy", "<name>") for t in touched} == listed, (touched, listed)
    assert len(touched) <= 5

    env = {**os.environ, "PYTHONPATH": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    selected = ["tests/test_conventions.py", "tests/test_docs.py::test_docstring_examples"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-m", "not slow", *selected,
         "-k", "toy or registry_covers or kernels or transforms"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200, check=False,
    )
    tail = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    passed = set(re.findall(r"^PASSED (\S+)", proc.stdout, flags=re.M))
    toy = {t for t in passed if "[toy" in t and t.startswith("tests/test_conventions.py")}
    missing = [n for n in _convention_tests() if not any(t.split("::")[1].startswith(f"{n}[") for t in toy)]
    assert not missing, f"convention tests that did not run (or pass) for the toy: {missing}\n{tail}"
    for test in ("test_diagnose_runs_for_every_sampler_and_its_rule_holds_the_formulas[toy]",
                 "test_faces_give_bit_identical_chains[toy-scheduled]",
                 "test_every_face_takes_its_defaults_from_the_rules_table[toy]",
                 "test_the_registry_covers_every_rule_and_every_place_finds_it"):
        assert f"tests/test_conventions.py::{test}" in passed, (test, tail)
    for module in ("sghmc_jax.kernels", "sghmc_jax.transforms", "sghmc_jax.sgmcmc.toy"):
        assert f"tests/test_docs.py::test_docstring_examples[{module}]" in passed, (module, tail)


def _convention_tests() -> list[str]:
    """The names of this module's tests that take the registry's sampler (the `s` fixture)."""
    names = re.findall(r"^def (test_\w+)\((?:x64, )?s[,)]", pathlib.Path(__file__).read_text(), flags=re.M)
    assert len(names) >= 20, names
    return names

