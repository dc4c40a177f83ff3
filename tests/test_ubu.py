"""UBU's own tests: the exact Ornstein–Uhlenbeck coefficients, its second order (exactly on
Gaussians, measured on a non-Gaussian target), symmetric minibatch splitting (the order
`sample(batch_order="sms")` visits the data in, and the bias order it buys), and the batches
`sample(batch_order="with_replacement")` draws.

The convention tests and the exact stationary moments on Gaussian targets come from its
registry entry (tests/registry.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sghmc_jax
from sghmc_jax import kernels
from tests import helpers

# ---- the exact U flow ------------------------------------------------------------------------


def _coefficients(tau, alpha, sigma, temperature, dtype=np.float64):
    with jax.enable_x64(dtype == np.float64):
        args = [jnp.asarray(v, dtype) for v in (tau, alpha, sigma, temperature)]
        return [float(c) for c in jax.jit(kernels.ou_coefficients)(*args)]


@pytest.mark.parametrize("tau", [1e-3, 0.05, 0.7, 3.0])
@pytest.mark.parametrize("alpha", [0.03, 1.0, 40.0])
@pytest.mark.parametrize("sigma", [0.3, 2.5])
def test_ou_increment_has_the_ito_covariance(tau, alpha, sigma):
    temperature = 0.8
    drift, decay, l11, l21, l22 = _coefficients(tau, alpha, sigma, temperature)
    exact_drift, cov = helpers.ou_covariance(tau, alpha, sigma, temperature)
    a = alpha / sigma**2 * tau
    if a < 0.05:  # the closed forms cancel here: compare with their leading terms instead
        gamma = alpha / sigma**2
        cov = np.array([
            [2 / 3 * gamma * temperature * tau**3 / sigma**2, temperature * gamma * tau**2],
            [temperature * gamma * tau**2, 2 * sigma**2 * temperature * gamma * tau],
        ])
        rtol = 2 * a
    else:
        rtol = 1e-12
    chol = np.array([[l11, 0.0], [l21, l22]])
    np.testing.assert_allclose(chol @ chol.T, cov, rtol=rtol, atol=0)
    np.testing.assert_allclose(drift, exact_drift, rtol=max(rtol, 1e-14))
    np.testing.assert_allclose(decay, np.exp(-a), rtol=1e-14)


def test_two_flows_of_tau_are_one_flow_of_two_tau():
    """The semigroup property, the reason the two half U's between kicks merge into one."""
    alpha, sigma, temperature, tau = 1.3, 1.7, 0.6, 0.35

    def law(t):
        drift, decay, l11, l21, l22 = _coefficients(t, alpha, sigma, temperature)
        chol = np.array([[l11, 0.0], [l21, l22]])
        return np.array([[1.0, drift], [0.0, decay]]), chol @ chol.T

    a1, q1 = law(tau)
    a2, q2 = law(2 * tau)
    np.testing.assert_allclose(a1 @ a1, a2, rtol=1e-13)
    np.testing.assert_allclose(a1 @ q1 @ a1.T + q1, q2, rtol=1e-13)


@pytest.mark.parametrize("a", [1e-7, 1e-4, 1e-2, 0.5, 0.999, 1.001, 3.0, 1e4])
def test_float32_coefficients_are_accurate_at_any_friction(a):
    """No cancellation: the float32 factors agree with float64 to a few ulps, including at
    the series/closed-form switch (a = 1) and at tiny a, where the closed forms are garbage."""
    f64 = np.array(_coefficients(0.1, 10 * a, 1.0, 1.0))
    f32 = np.array(_coefficients(0.1, 10 * a, 1.0, 1.0, np.float32))
    assert np.all(np.isfinite(f32))
    np.testing.assert_allclose(f32, f64, rtol=2e-6, atol=1e-30)


def test_without_friction_the_flow_is_free_flight_without_noise():
    drift, decay, l11, l21, l22 = _coefficients(0.2, 0.0, 2.0, 1.0)
    assert (drift, decay, l11, l21, l22) == (0.2 / 4, 1.0, 0.0, 0.0, 0.0)


def test_a_traced_step_size_gives_finite_gradients_through_both_branches():
    def total(lr):
        return sum(jnp.sum(c) for c in kernels.ou_coefficients(lr, 1.0, 1.0, 1.0))

    for lr in (1e-6, 0.5, 2.0):
        assert np.isfinite(float(jax.grad(total)(jnp.float32(lr))))


# ---- second order -----------------------------------------------------------------------------


@pytest.mark.parametrize("alpha,sigma,temperature,c", [(1.0, 1.0, 1.0, 1.0), (0.3, 1.7, 0.5, 4.0), (5.0, 0.6, 2.0, 0.3)])
def test_gaussian_variance_error_is_one_twelfth_omega_squared_h_squared(alpha, sigma, temperature, c):
    """On a Gaussian the chain at the stored (half-step) positions has Var θ =
    (T/c)(1 + ω²ε²/12 + O(ε⁴)), ω² = c/σ², as its docstring says: from the Lyapunov equation of
    the hand-derived one-step law (the sampler's own moments are checked against that law by
    the registry's stationary test)."""
    omega = np.sqrt(c / sigma**2)
    ratios = []
    for h in (0.2 / omega, 0.1 / omega, 0.05 / omega):
        f, q = helpers.ubu_transition(np.array([[c]]), h, alpha, sigma, temperature)
        var = helpers.lyapunov(f, q)[0, 0]
        ratios.append((var * c / temperature - 1) / (omega * h) ** 2)
    np.testing.assert_allclose(ratios[-1], 1 / 12, rtol=0.01)
    # Second order: the O(ε⁴) remainder shrinks 4× per halving of ε.
    assert abs(ratios[2] - 1 / 12) < abs(ratios[1] - 1 / 12) / 3


def _ubu(lr, key):
    return sghmc_jax.ubu(lr, alpha=1.0, sigma=1.0, temperature=1.0, key=key)


def _slope(order, lrs, chains):
    measured = [helpers.quartic_bias(_ubu, lr, order, chains=chains, cycles=400) for lr in lrs]
    biases, ses = zip(*measured)
    # Every bias is resolved (several standard errors from zero), so the slope means something.
    assert all(abs(b) > 4 * s for b, s in measured), measured
    return helpers.log_log_slope(lrs, biases, ses), measured


@pytest.mark.slow
def test_bias_is_second_order_with_full_gradients():
    """E θ² on U = θ²/2 + θ⁴/4 (exact by quadrature) at three step sizes: the log-log slope of
    the bias is 2 (measured 2.2 ± 0.17 here: the band allows the O(ε³) term at these ε)."""
    (slope, se), measured = _slope("full", [0.42, 0.3, 0.21], chains=4096)
    assert se < 0.3, measured
    assert 1.6 < slope < 2.7, (slope, se, measured)


@pytest.mark.slow
def test_symmetric_minibatch_splitting_restores_second_order():
    """The same target as a sum of 4 batches, one batch gradient per step. Batches drawn at
    random make the bias first order (slope 1); visiting each permutation forward then backward
    (SMS) makes it at least second order again, and many times smaller."""
    lrs = [0.4, 0.28, 0.2]
    (iid, iid_se), iid_measured = _slope("iid", lrs, chains=2048)
    (sms, sms_se), sms_measured = _slope("sms", lrs, chains=2048)
    assert iid_se < 0.1 and sms_se < 0.3, (iid_measured, sms_measured)
    assert 0.8 < iid < 1.4, (iid, iid_measured)
    assert sms > 1.7, (sms, sms_measured)
    assert abs(sms_measured[-1][0]) < abs(iid_measured[-1][0]) / 3


# ---- symmetric minibatch splitting in sample() --------------------------------------------------


def _batch_order(batch_order, n=5, epochs=6, chains=2):
    """The example each step used, per chain: SGD with step 1 on log p = Σ p[batch] adds 1 at
    the used example (batch size 1)."""
    lp = lambda p, batch: (jnp.sum(p[batch["idx"]]), None)  # noqa: E731
    run = lambda num_steps, init_state=None: sghmc_jax.sample(  # noqa: E731
        0, lp, None if init_state else jnp.zeros(n), transform=optax.sgd(1.0), num_steps=num_steps,
        num_chains=chains, data={"idx": np.arange(n)}, batch_size=1, batch_order=batch_order,
        chunk_size=4, progress=False, init_state=init_state,
    )
    r = run(epochs * n)
    traj = np.concatenate([np.zeros((chains, 1, n)), np.asarray(r.samples)], axis=1)
    return np.diff(traj, axis=1).argmax(axis=2), r, run


def test_sms_visits_each_permutation_forward_then_backward():
    n = 5
    order, long, run = _batch_order("sms", n=n)
    for chain in order:
        epochs = chain.reshape(-1, n)
        for e in range(0, len(epochs), 2):
            assert sorted(epochs[e]) == list(range(n))
            np.testing.assert_array_equal(epochs[e + 1], epochs[e][::-1])
        assert len({tuple(epochs[e]) for e in range(0, len(epochs), 2)}) > 1, "a fresh permutation per cycle"
    assert not np.array_equal(order[0], order[1]), "chains walk their own permutations"
    # A continuation that starts mid-cycle (7 = one epoch and 2 steps) keeps the cycle.
    first = run(7)
    second = run(long.samples.shape[1] - 7, init_state=first.final_state)
    np.testing.assert_array_equal(np.concatenate([first.samples, second.samples], axis=1), long.samples)


def test_shuffle_stays_the_default_and_is_not_a_palindrome():
    n = 5
    default, _, _ = _batch_order("shuffle", n=n)
    epochs = default[0].reshape(-1, n)
    assert any(not np.array_equal(epochs[e + 1], epochs[e][::-1]) for e in range(0, len(epochs), 2))


# ---- batches drawn with replacement in sample() ----------------------------------------------


def _uses(batch_order, *, n, steps, batch_size=1, chains=2, chunk_size=4, init_state=None, key=0):
    """(chain, step, example) how many times each example was in the step's batch: SGD with
    step 1 on log p = Σ p[batch] adds 1 per use. Also returns the result."""
    lp = lambda p, batch: (jnp.sum(p[batch["idx"]]), None)  # noqa: E731
    r = sghmc_jax.sample(
        key, lp, None if init_state else jnp.zeros(n), transform=optax.sgd(1.0), num_steps=steps,
        num_chains=chains, data={"idx": np.arange(n)}, batch_size=batch_size, batch_order=batch_order,
        chunk_size=chunk_size, progress=False, init_state=init_state,
    )
    start = np.asarray(init_state.params) if init_state else np.zeros((chains, n))
    traj = np.concatenate([start[:, None], np.asarray(r.samples)], axis=1)
    return np.rint(np.diff(traj, axis=1)).astype(int), r


def test_with_replacement_batches_are_iid_uniform_and_not_a_permutation_walk():
    n, b, steps = 4, 2, 500
    uses, _ = _uses("with_replacement", n=n, steps=steps, batch_size=b)
    assert np.all(uses.sum(axis=2) == b)
    for c in range(uses.shape[0]):
        # Each example's frequency: b·steps uniform draws (χ² with n − 1 = 3 degrees of
        # freedom; 30 is its 1e-6 upper quantile).
        counts = uses[c].sum(axis=0)
        expected = b * steps / n
        assert np.sum((counts - expected) ** 2 / expected) < 30, counts
        # With replacement: a batch holds the same example twice with probability 1/n
        # (never without replacement); ± 5 standard errors.
        twice = np.mean(uses[c].max(axis=1) == 2)
        assert abs(twice - 1 / n) < 5 * np.sqrt(1 / n * (1 - 1 / n) / steps), twice
        # Not a permutation walk: an epoch of n / b steps covers every example once with
        # probability n!/nⁿ = 0.094 (always, when shuffled).
        epochs = uses[c].reshape(-1, n // b, n).sum(axis=1)
        covered = np.mean(np.all(epochs == 1, axis=1))
        assert covered < 0.094 + 5 * np.sqrt(0.094 * 0.906 / len(epochs)), covered
        # Successive batches are independent: the lag-1 correlation of an example's uses is 0
        # (negative for a permutation walk), ± 5 standard errors.
        x = uses[c, :, 0]
        assert abs(np.corrcoef(x[:-1], x[1:])[0, 1]) < 5 / np.sqrt(steps)
    assert not np.array_equal(uses[0], uses[1]), "chains draw their own batches"
    shuffled, _ = _uses("shuffle", n=n, steps=steps, batch_size=b)
    assert np.all(shuffled.reshape(2, -1, n // b, n).sum(axis=2) == 1), "the contrast: shuffle covers every epoch"


def test_with_replacement_batches_depend_on_the_key_and_step_only():
    """Not on chunking, nor on where a continuation starts."""
    long, _ = _uses("with_replacement", n=5, steps=24, batch_size=2, chunk_size=4)
    other, _ = _uses("with_replacement", n=5, steps=24, batch_size=2, chunk_size=7)
    np.testing.assert_array_equal(long, other)
    first, r = _uses("with_replacement", n=5, steps=7, batch_size=2, chunk_size=4)
    second, _ = _uses("with_replacement", n=5, steps=17, batch_size=2, chunk_size=4, init_state=r.final_state)
    np.testing.assert_array_equal(np.concatenate([first, second], axis=1), long)
    different, _ = _uses("with_replacement", n=5, steps=24, batch_size=2, key=1)
    assert not np.array_equal(different, long)


def test_with_replacement_on_a_data_axis_draws_from_each_shard():
    """With a data axis each device draws batch_size / shards examples, with replacement, from
    the shard it holds: step t's indices in shard d come from fold_in(fold_in(data_key, t), d)."""
    from tests.test_scaling import run

    out = run(
        """
        log_posterior, params, data = problem()
        tx = lambda k: sghmc_jax.sghmc(1e-3, alpha=1.0, key=k)
        mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("chains", "data"))
        r = sghmc_jax.sample(1, log_posterior, params, transform=tx, num_steps=12, num_chains=2,
                             data=data, batch_size=16, chunk_size=5, progress=False,
                             batch_order="with_replacement", mesh=mesh, chain_axis="chains", data_axis="data")
        shards, n_local, b_local = 2, 32, 8
        local = jax.tree.map(lambda x: jnp.asarray(x).reshape(shards, n_local, *x.shape[1:]), data)
        ref = []
        for chain_key in jax.random.split(sghmc_jax._checks.canonical_key(1), 2):
            init_key, noise_key, data_key = jax.random.split(chain_key, 3)
            t_x = tx(init_key)
            p, s = params, t_x.init(params)
            draws = []
            for t in range(12):
                k = jax.random.fold_in(data_key, t)
                idx = [jax.random.randint(jax.random.fold_in(k, d), (b_local,), 0, n_local) for d in range(shards)]
                batch = jax.tree.map(lambda x: jnp.concatenate([x[d][idx[d]] for d in range(shards)]), local)
                g = jax.grad(lambda q: -log_posterior(q, batch)[0])(p)
                u, s = t_x.update(g, s, p, key=jax.random.fold_in(noise_key, t))
                p = optax.apply_updates(p, u)
                draws.append(np.asarray(p["w"]))
            ref.append(np.stack(draws))
        ref = np.stack(ref)
        dump(err=float(np.max(np.abs(r.samples["w"] - ref))), scale=float(np.max(np.abs(ref))))
        """,
        devices=4,
    )
    assert out["err"] <= 1e-5 * max(1.0, out["scale"]), out


@pytest.mark.slow
def test_batch_orders_bias_through_sample():
    """UBU through sample() on the quartic split into 4 batches of different curvature: i.i.d.
    batches make the bias first order; the default shuffle (a permutation per epoch) keeps it
    second order or better and many times smaller (benchmarks/README.md has the full table)."""
    lrs = [0.4, 0.28, 0.2]

    def slope(order):
        measured = [
            helpers.sample_quartic_bias(_ubu, lr, order, curvatures=helpers.QUARTIC_CURVATURES, chains=2048, steps=1600)
            for lr in lrs
        ]
        assert all(abs(b) > 4 * s for b, s in measured), (order, measured)
        return helpers.log_log_slope(lrs, *zip(*measured)), measured

    (iid, iid_se), iid_measured = slope("with_replacement")
    (shuffle, shuffle_se), shuffle_measured = slope("shuffle")
    assert iid_se < 0.1 and shuffle_se < 0.3, (iid_measured, shuffle_measured)
    assert 0.8 < iid < 1.4, (iid, iid_measured)
    assert shuffle > 1.7, (shuffle, shuffle_measured)
    assert abs(shuffle_measured[-1][0]) < abs(iid_measured[-1][0]) / 3


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        ({"batch_order": "reverse", "data": {"x": np.zeros(4)}, "batch_size": 2}, r"`batch_order` must be 'shuffle', 'sms' or 'with_replacement', got batch_order='reverse'"),
        ({"batch_order": "sms"}, r"`batch_order='sms'` orders the minibatches .* pass `data=`"),
        ({"batch_order": "sms", "batches": iter([None] * 3)}, r"`batch_order='sms'` orders the minibatches"),
        ({"batch_order": "with_replacement"}, r"`batch_order='with_replacement'` orders the minibatches"),
    ],
)
def test_bad_batch_order_fails_before_compiling(kwargs, pattern, monkeypatch):
    monkeypatch.setattr(jax, "jit", lambda *a, **k: pytest.fail("compiled before validating"))
    lp = lambda p, b: (-0.5 * jnp.sum(p**2), None)  # noqa: E731
    with pytest.raises(ValueError, match=pattern):
        sghmc_jax.sample(0, lp, jnp.zeros(2), transform=sghmc_jax.ubu(0.1, key=0), num_steps=3, progress=False, **kwargs)


@pytest.mark.parametrize("size", [1000, (1 << 20) + 5])  # a binned small leaf, a leaf with its own fused generators
def test_ubu_noise_is_the_documented_layout_on_every_path(size):
    """Two normals per element: the rows of `normal_like` over a (2, *leaf) array, whichever
    path generates them (each row fused into the update for large leaves)."""
    from sghmc_jax import _noise

    key = jax.random.key(3)
    m = jnp.linspace(-1.0, 1.0, size, dtype=jnp.float32)
    g = jnp.cos(jnp.arange(size, dtype=jnp.float32))
    lr, alpha, sigma, temperature = 0.1, 0.7, 1.3, 0.5
    inc, m_new = jax.jit(kernels.ubu_step)(m, g, key, lr, alpha, sigma, temperature)
    z = np.asarray(_noise.normal_like(key, jax.ShapeDtypeStruct((2, size), jnp.float32)), np.float64)
    drift, decay, l11, l21, l22 = _coefficients(lr, alpha, sigma, temperature)
    kick = np.asarray(m, np.float64) + lr * np.asarray(g, np.float64)
    np.testing.assert_allclose(inc, drift * kick + l11 * z[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m_new, decay * kick + l21 * z[0] + l22 * z[1], rtol=1e-5, atol=1e-6)
