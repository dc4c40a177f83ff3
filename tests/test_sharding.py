"""Sharded parameters: the update partitions like the params, with no collective at all.

The noise is a function of each element's flat position (`normal_like`), so every device can
hash its own slice: nothing forces an all-gather of sharded params. Checked on 4 host CPU
devices in a subprocess (XLA fixes the device count when the backend starts).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    r"""
    import json, re
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import sghmc_jax
    from sghmc_jax.sgmcmc import sghmc as functional

    assert len(jax.devices()) == 4, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("x",))
    spec = {
        "big": P("x"),      # >= 2**20 elements: its own generator, fused into its update
        "w": P("x"),        # the small leaves share the bins' generator
        "b": P(),
        "w2": P(None, "x"),
    }
    key = jax.random.key(3)
    shapes = {"big": (1 << 20, 2), "w": (1024, 64), "b": (64,), "w2": (512, 8)}
    params = {k: jax.random.normal(jax.random.fold_in(key, i), s) for i, (k, s) in enumerate(shapes.items())}
    grads = jax.tree.map(lambda x: 0.3 * x + 0.1, params)
    put = lambda tree: jax.device_put(tree, {k: NamedSharding(mesh, s) for k, s in spec.items()})
    collectives = re.compile(r"= (\([^)]*\)|\S+) (all-gather|all-reduce|collective-permute|all-to-all|reduce-scatter)[-a-z]*\(")

    def communication(compiled):
        # [result type, collective] of every collective in the compiled program
        return [list(m) for m in collectives.findall(compiled.as_text())]
    out = {}

    tx = sghmc_jax.sghmc(1e-2, alpha=0.5, key=0)

    def step(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    sharded_state = tx.init(put(params))
    compiled = jax.jit(step).lower(put(params), sharded_state, put(grads)).compile()
    out["optax_collectives"] = communication(compiled)
    new_p, new_s = compiled(put(params), sharded_state, put(grads))
    ref_p, ref_s = jax.jit(step)(params, tx.init(params), grads)
    out["optax_specs"] = {k: list(new_p[k].sharding.spec) for k in spec}
    out["optax_momenta_specs"] = {k: list(new_s.momenta[k].sharding.spec) for k in spec}
    out["optax_equal"] = all(
        np.array_equal(np.asarray(new_p[k]), np.asarray(ref_p[k]))
        and np.array_equal(np.asarray(new_s.momenta[k]), np.asarray(ref_s.momenta[k]))
        for k in spec
    )

    def log_post(p, batch):
        return -0.5 * sum(jnp.sum((x - batch) ** 2) for x in jax.tree.leaves(p)), None

    transform = functional.build(log_post, lr=1e-2, alpha=0.5)
    state = transform.init(put(params), key=key)
    update = jax.jit(transform.update)
    compiled = update.lower(state, jnp.float32(0.2), key=jax.random.key(1)).compile()
    out["functional_collectives"] = communication(compiled)
    new = update(state, jnp.float32(0.2), key=jax.random.key(1))
    ref = jax.jit(transform.update)(transform.init(params, key=key), jnp.float32(0.2), key=jax.random.key(1))
    out["functional_specs"] = {k: list(new.params[k].sharding.spec) for k in spec}
    out["functional_equal"] = all(
        np.array_equal(np.asarray(new.params[k]), np.asarray(ref.params[k])) for k in spec
    )
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def sharded() -> dict:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, proc.stdout[-2000:]
    return json.loads(line[0][len("RESULT ") :])


EXPECTED_SPECS = {"big": ["x"], "w": ["x"], "b": [], "w2": [None, "x"]}


def test_sharded_optax_update_has_no_collective(sharded):
    assert sharded["optax_collectives"] == []


def test_sharded_functional_update_only_reduces_the_log_posterior(sharded):
    """The functional face also returns log p(θ), a sum over the sharded params: its scalar
    all-reduce is the only communication."""
    assert sharded["functional_collectives"]
    assert {op for _, op in sharded["functional_collectives"]} == {"all-reduce"}
    for shape, _ in sharded["functional_collectives"]:
        assert re.fullmatch(r"\(?f32\[\](, f32\[\])*\)?", shape), shape  # scalars only


@pytest.mark.parametrize("face", ["optax", "functional"])
def test_sharded_update_keeps_the_params_sharding_and_the_unsharded_bits(sharded, face):
    assert sharded[f"{face}_specs"] == EXPECTED_SPECS
    assert sharded[f"{face}_equal"]


def test_sharded_momenta_stay_sharded_like_the_params(sharded):
    assert sharded["optax_momenta_specs"] == EXPECTED_SPECS
