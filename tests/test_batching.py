"""Minibatches (`sghmc_jax/_sampler/batching.py`): the orders of `ORDERS` walk every example once
per epoch per chain; host batches."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sghmc_jax
from tests import helpers


def test_every_example_is_used_once_per_epoch_in_each_chains_own_order():
    n, b, epochs, chains = 24, 4, 3, 2
    data = {"idx": np.arange(n)}
    # d log p / d p = indicator of the batch: SGD with step 1 adds 1 to each used example.
    lp = lambda p, batch: (jnp.sum(p[batch["idx"]]), None)  # noqa: E731
    r = sghmc_jax.sample(
        0, lp, jnp.zeros(n), transform=optax.sgd(1.0), num_steps=epochs * n // b, num_chains=chains,
        data=data, batch_size=b, chunk_size=5, progress=False,
    )
    traj = np.concatenate([np.zeros((chains, 1, n)), r.samples], axis=1)
    used = np.diff(traj, axis=1)  # (chain, step, n): 1 where the example was in the batch
    assert np.all(used.sum(axis=2) == b)
    per_epoch = used.reshape(chains, epochs, n // b, n).sum(axis=2)
    np.testing.assert_array_equal(per_epoch, 1)
    orders = used.argmax(axis=2)  # (chain, step) one example of each batch
    assert not np.array_equal(orders[0], orders[1]), "chains must walk their own permutations"
    first_epoch, second_epoch = used[0, : n // b], used[0, n // b : 2 * n // b]
    assert not np.array_equal(first_epoch, second_epoch), "each epoch draws a fresh permutation"


def test_host_batches_match_a_hand_written_scan():
    log_posterior, data = helpers.regression(7)
    tx = sghmc_jax.sghmc(1e-3, alpha=1.0, key=0)
    rng = np.random.default_rng(3)
    batches = [jax.tree.map(lambda a: a[idx], data) for idx in (rng.choice(64, 8, replace=False) for _ in range(30))]
    r = sghmc_jax.sample(0, log_posterior, jnp.zeros(3), transform=tx, num_steps=30, num_chains=2, batches=iter(batches), chunk_size=7, progress=False)
    _, noise_key, _ = jax.random.split(jax.random.split(jax.random.key(0), 2)[1], 3)
    params, state = jnp.zeros(3), tx.init(jnp.zeros(3))
    for t, batch in enumerate(batches):
        grads = jax.grad(lambda p: -log_posterior(p, batch)[0])(params)
        updates, state = tx.update(grads, state, params, key=jax.random.fold_in(noise_key, t))
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(r.samples[1, -1], params, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="`batches` ran out"):
        sghmc_jax.sample(0, log_posterior, jnp.zeros(3), transform=tx, num_steps=31, batches=iter(batches), progress=False)
