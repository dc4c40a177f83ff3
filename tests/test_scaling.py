"""Scaling out on JAX's own sharding, tested on forced host devices in subprocesses (so the rest of
the suite keeps one device): chains across devices with no communication in the step,
data-parallel gradients, a 2-D chains × data mesh, parameters sharded like the user's, and two
processes joined by `jax.distributed` giving the samples of one process with all the devices."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

PRELUDE = """
import json, re, sys
import jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import sghmc_jax
from sghmc_jax._sampler import cache

def problem(n=64, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ np.linspace(-1, 1, d) + 0.5 * rng.normal(size=n)).astype(np.float32)
    def log_posterior(p, batch):
        resid = batch["y"] - batch["x"] @ p["w"] - p["b"]
        return -0.5 * n / batch["y"].shape[0] * jnp.sum(resid**2) - 0.5 * jnp.sum(p["w"]**2) - 0.5 * p["b"]**2, None
    params = {"w": jnp.zeros(d), "b": jnp.zeros(())}
    return log_posterior, params, {"x": x, "y": y}

COLLECTIVES = re.compile(r"all-reduce|all-gather|all-to-all|collective-permute|reduce-scatter|collective-broadcast")

def spec(x):
    # The array's PartitionSpec as a list, trailing Nones dropped (spellings vary by version).
    entries = list(x.sharding.spec)
    while entries and entries[-1] is None:
        entries.pop()
    return entries

def chunk_hlo():
    return "\\n".join(e.as_text() for e in cache._cache.values() if hasattr(e, "as_text"))

def dump(**kw):
    print("RESULT " + json.dumps({k: (np.asarray(v).tolist() if hasattr(v, "shape") else v) for k, v in kw.items()}), flush=True)
"""


def run(code: str, devices: int, timeout: int = 600) -> dict:
    """Runs `code` after PRELUDE in a fresh Python with `devices` forced host devices; returns
    what it passed to dump()."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.JSONDecoder().raw_decode(line[len("RESULT "):])[0]


def test_chains_across_devices_run_without_communication_and_give_the_unsharded_draws():
    out = run(
        """
        log_posterior, params, data = problem()
        tx = lambda k: sghmc_jax.sghmc(1e-3, alpha=1.0, key=k)
        kw = dict(transform=tx, num_steps=60, num_chains=8, data=data, batch_size=16, thin=3,
                  chunk_size=30, progress=False)
        plain = sghmc_jax.sample(0, log_posterior, params, **kw)
        mesh = Mesh(np.array(jax.devices()), ("chains",))
        cache.clear_cache()
        sharded = sghmc_jax.sample(0, log_posterior, params, mesh=mesh, chain_axis="chains", **kw)
        hlo = chunk_hlo()
        state = sharded.final_state
        dump(
            same=bool(np.array_equal(plain.samples["w"], sharded.samples["w"])
                      and np.array_equal(plain.log_posterior, sharded.log_posterior)),
            close=float(np.max(np.abs(plain.samples["w"] - sharded.samples["w"]))),
            collectives=sorted(set(COLLECTIVES.findall(hlo))),
            params_spec=spec(state.params["w"]),
            momenta_spec=spec(state.transform_state.momenta["w"]),
            key_spec=spec(state.noise_key),
            devices=len(state.params["w"].sharding.device_set),
        )
        """,
        devices=4,
    )
    assert out["collectives"] == [], f"the chunk program communicates: {out['collectives']}"
    assert out["params_spec"] == out["momenta_spec"] == out["key_spec"] == ["chains"]
    assert out["devices"] == 4
    assert out["same"], f"sharded chains differ from the unsharded run by up to {out['close']}"


_DATA_PARALLEL_REFERENCE = """
def reference(key, log_posterior, params, tx, data, num_steps, batch_size, shards, num_chains):
    '''The data-parallel minibatch scheme written out on one device: each chain walks its own
    permutation of each of `shards` equal shards per epoch, taking batch_size / shards from each.'''
    n = data["y"].shape[0]
    n_local, b_local = n // shards, batch_size // shards
    per_epoch = n_local // b_local
    local = jax.tree.map(lambda x: jnp.asarray(x).reshape(shards, n_local, *x.shape[1:]), data)
    out = []
    for c, chain_key in enumerate(jax.random.split(sghmc_jax._checks.canonical_key(key), num_chains)):
        init_key, noise_key, data_key = jax.random.split(chain_key, 3)
        t_x = tx(init_key)
        p, s = params, t_x.init(params)
        draws = []
        for t in range(num_steps):
            ek = jax.random.fold_in(data_key, t // per_epoch)
            j = t % per_epoch
            idx = [jax.random.permutation(jax.random.fold_in(ek, d), n_local)[j * b_local:(j + 1) * b_local] for d in range(shards)]
            batch = jax.tree.map(lambda x: jnp.concatenate([x[d][idx[d]] for d in range(shards)]), local)
            g = jax.grad(lambda q: -log_posterior(q, batch)[0])(p)
            u, s = t_x.update(g, s, p, key=jax.random.fold_in(noise_key, t))
            p = optax.apply_updates(p, u)
            draws.append(np.asarray(p["w"]))
        out.append(np.stack(draws))
    return np.stack(out)
"""


@pytest.mark.parametrize("chains_by_data", [(1, 4), (2, 2)], ids=["data-4", "chains-2x-data-2"])
def test_data_parallel_gradients_are_reduced_in_the_step_and_follow_the_sharded_scheme(chains_by_data):
    c, d = chains_by_data
    out = run(
        _DATA_PARALLEL_REFERENCE + textwrap.dedent(f"""
        log_posterior, params, data = problem()
        tx = lambda k: sghmc_jax.sghmc(1e-3, alpha=1.0, key=k)
        mesh = Mesh(np.array(jax.devices()).reshape({c}, {d}), ("chains", "data"))
        r = sghmc_jax.sample(1, log_posterior, params, transform=tx, num_steps=24, num_chains=2,
                             data=data, batch_size=16, chunk_size=10, progress=False,
                             mesh=mesh, chain_axis="chains", data_axis="data")
        ref = reference(1, log_posterior, params, tx, data, 24, 16, {d}, 2)
        hlo = chunk_hlo()
        dump(err=float(np.max(np.abs(r.samples["w"] - ref))), scale=float(np.max(np.abs(ref))),
             collectives=sorted(set(COLLECTIVES.findall(hlo))),
             perm_spec=spec(r.final_state.perm))
        """),
        devices=4,
    )
    assert out["err"] <= 1e-5 * max(1.0, out["scale"]), out
    assert "all-reduce" in out["collectives"], out  # the gradient's sum over the data shards
    # (a mesh axis of size 1 may be spelled None)
    assert out["perm_spec"] == ["chains" if c > 1 else out["perm_spec"][0], "data"]


def test_make_mesh_and_make_log_posterior_with_a_data_axis_compile_once():
    """What a notebook user writes: `jax.make_mesh` (Explicit axes by default), a
    `make_log_posterior` likelihood (checked per example, on the per-device batch layout), and
    the same `sample()` call run twice: the second finds the first's programs."""
    out = run(
        """
        rng = np.random.default_rng(0)
        x = rng.normal(size=(64, 3)).astype(np.float32)
        y = (x @ np.array([1.0, -2.0, 0.5]) > 0).astype(np.float32)
        ll = lambda w, b: -jnp.logaddexp(0.0, -(2 * b["y"] - 1) * (b["x"] @ w))
        lp = sghmc_jax.make_log_posterior(ll, lambda w: -0.5 * jnp.sum(w**2), num_data=64)
        mesh = jax.make_mesh((2, 2), ("chains", "data"))
        kw = dict(transform=lambda k: sghmc_jax.sghmc(1e-3, alpha=10.0, key=k), num_steps=20,
                  num_chains=4, data={"x": x, "y": y}, batch_size=16, progress=False,
                  mesh=mesh, chain_axis="chains", data_axis="data")
        first = sghmc_jax.sample(0, lp, jnp.zeros(3), **kw)
        second = sghmc_jax.sample(0, lp, jnp.zeros(3), **kw)
        dump(axis_types=[str(t) for t in mesh.axis_types], first=first.compile_time,
             second=second.compile_time, same=bool(np.array_equal(first.samples, second.samples)))
        """,
        devices=4,
    )
    assert "Explicit" in out["axis_types"][0], out
    assert out["first"] > 0 and out["second"] == 0.0, out
    assert out["same"], out


def test_data_parallel_log_posterior_is_checked_with_minibatch_shapes():
    """The argument check traces the log posterior on a (batch, ...) minibatch, not on the
    (batch, examples per shard, ...) layout of the sharded data (a classifier indexing its
    log-softmax by label failed on that before compiling)."""
    out = run(
        """
        shapes = []
        def log_posterior(w, batch):
            shapes.append([list(batch["x"].shape), list(batch["y"].shape)])
            logp = jax.nn.log_softmax(batch["x"] @ w)
            return jnp.sum(logp[jnp.arange(batch["y"].shape[0]), batch["y"]]) - 0.5 * jnp.sum(w**2), None
        rng = np.random.default_rng(0)
        data = {"x": rng.normal(size=(64, 3)).astype(np.float32), "y": rng.integers(0, 4, 64).astype(np.int32)}
        mesh = Mesh(np.array(jax.devices()), ("data",))
        r = sghmc_jax.sample(0, log_posterior, jnp.zeros((3, 4)), transform=sghmc_jax.sghmc(1e-3, alpha=1.0, key=0),
                             num_steps=4, num_chains=1, data=data, batch_size=16, progress=False,
                             mesh=mesh, data_axis="data")
        dump(shapes=sorted({json.dumps(s) for s in shapes}), finite=bool(np.all(np.isfinite(r.samples))))
        """,
        devices=4,
    )
    assert out["shapes"] == ["[[16, 3], [16]]"], out
    assert out["finite"]


def test_sharded_params_keep_their_partition_and_the_unsharded_draws():
    out = run(
        """
        log_posterior, params, data = problem(d=8)
        tx = lambda k: sghmc_jax.sghmc(1e-3, alpha=1.0, key=k)
        kw = dict(transform=tx, num_steps=30, num_chains=2, data=data, batch_size=16,
                  chunk_size=15, progress=False)
        plain = sghmc_jax.sample(3, log_posterior, params, **kw)
        mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("chains", "model"))
        sharded_params = {"w": jax.device_put(params["w"], NamedSharding(mesh, P("model"))),
                          "b": jax.device_put(params["b"], NamedSharding(mesh, P()))}
        r = sghmc_jax.sample(3, log_posterior, sharded_params, mesh=mesh, chain_axis="chains", **kw)
        s = r.final_state
        dump(err=float(np.max(np.abs(plain.samples["w"] - r.samples["w"]))),
             params_spec=spec(s.params["w"]),
             momenta_spec=spec(s.transform_state.momenta["w"]),
             bias_spec=spec(s.transform_state.momenta["b"]))
        """,
        devices=4,
    )
    assert out["params_spec"] == out["momenta_spec"] == ["chains", "model"]
    assert out["bias_spec"] == ["chains"]
    assert out["err"] < 1e-5, out  # float reassociation in the gradient only


def test_a_mesh_from_jax_make_mesh_with_explicit_axes_gives_the_same_draws():
    """jax.make_mesh gives Explicit axes by default, which sharding constraints refuse: the run
    uses the same devices and names as Auto axes, params sharded over the Explicit mesh keep
    their partition, and the draws are those of a `Mesh(...)` (Auto) run."""
    out = run(
        """
        log_posterior, params, data = problem(d=8)
        kw = dict(transform=lambda k: sghmc_jax.sghmc(1e-3, alpha=1.0, key=k), num_steps=20, num_chains=2,
                  data=data, batch_size=16, chunk_size=10, progress=False, chain_axis="chains")
        draws, specs = {}, {}
        for name, mesh in [("auto", Mesh(np.array(jax.devices()).reshape(2, 2), ("chains", "model"))),
                           ("explicit", jax.make_mesh((2, 2), ("chains", "model")))]:
            sharded = {"w": jax.device_put(params["w"], NamedSharding(mesh, P("model"))),
                       "b": jax.device_put(params["b"], NamedSharding(mesh, P()))}
            r = sghmc_jax.sample(4, log_posterior, sharded, mesh=mesh, **kw)
            draws[name], specs[name] = r.samples["w"], spec(r.final_state.params["w"])
        dump(explicit_types=[str(t) for t in jax.make_mesh((2, 2), ("chains", "model")).axis_types],
             same=bool(np.array_equal(draws["auto"], draws["explicit"])), specs=specs)
        """,
        devices=4,
    )
    assert all("Explicit" in t for t in out["explicit_types"]), out  # what this test is about
    assert out["same"], out
    assert out["specs"]["explicit"] == out["specs"]["auto"] == ["chains", "model"]


def test_mesh_arguments_are_checked_before_compiling():
    out = run(
        """
        log_posterior, params, data = problem()
        mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("chains", "data"))
        errors = []
        for kw in [dict(chain_axis="chain"), dict(num_chains=3, chain_axis="chains"),
                   dict(chain_axis="data", data_axis="data"),
                   dict(data_axis="data", batch_size=15),
                   dict(mesh=None, chain_axis="chains")]:
            args = dict(transform=sghmc_jax.sghmc(1e-3, key=0), num_steps=5, num_chains=2, data=data,
                        batch_size=16, progress=False, mesh=mesh) | kw
            try:
                sghmc_jax.sample(0, log_posterior, params, **args)
                errors.append("no error")
            except (ValueError, TypeError) as e:
                errors.append(str(e))
        dump(errors=errors)
        """,
        devices=4,
    )
    e = out["errors"]
    assert "`chain_axis` must be one of the mesh's axes ('chains', 'data'), got chain_axis='chain'" in e[0]
    assert "`num_chains` must be a multiple of the size of chain_axis='chains' (2), got num_chains=3" in e[1]
    assert "`chain_axis` and `data_axis` must be different axes" in e[2]
    assert "`batch_size` must be a multiple of the size of data_axis='data' (2), got 15" in e[3]
    assert "pass the mesh too" in e[4]


def test_a_sharded_run_killed_mid_way_resumes_bit_identically(tmp_path):
    """8 devices as chains × data × model (params sharded over model): a run streamed to disk
    and checkpointed with orbax, killed after 3 of its 6 chunks, resumes to the uninterrupted
    run's draws, trace and state, bit for bit."""
    out = run(
        f"""
        log_posterior, params, data = problem(d=8)
        mesh = Mesh(np.array(jax.devices()).reshape(2, 2, 2), ("chains", "data", "model"))
        params = {{"w": jax.device_put(params["w"], NamedSharding(mesh, P("model"))),
                   "b": jax.device_put(params["b"], NamedSharding(mesh, P()))}}
        kw = dict(transform=lambda k: sghmc_jax.sghmc(1e-3, alpha=1.0, key=k), num_steps=60, num_chains=4,
                  data=data, batch_size=16, thin=2, chunk_size=10, progress=False, mesh=mesh,
                  chain_axis="chains", data_axis="data")
        clean = sghmc_jax.sample(6, log_posterior, params, **kw)
        disk = dict(output={str(tmp_path / "draws")!r}, checkpoint_dir={str(tmp_path / "ckpt")!r}, checkpoint_every=10)
        chunks = []
        def kill(info):
            chunks.append(info["step"])
            if len(chunks) == 3:
                raise KeyboardInterrupt
        try:
            sghmc_jax.sample(6, log_posterior, params, callback=kill, **disk, **kw)
        except KeyboardInterrupt:
            pass
        resumed = sghmc_jax.sample(6, log_posterior, params, **disk, **kw)
        same = lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b)))
        dump(killed_at=chunks[-1],
             w=same(resumed.samples["w"], clean.samples["w"]), b=same(resumed.samples["b"], clean.samples["b"]),
             lp=same(resumed.log_posterior, clean.log_posterior), steps=same(resumed.sample_steps, clean.sample_steps),
             momenta=same(resumed.final_state.transform_state.momenta["w"], clean.final_state.transform_state.momenta["w"]),
             momenta_spec=spec(resumed.final_state.transform_state.momenta["w"]))
        """,
        devices=8,
    )
    assert out["killed_at"] == 30
    assert out["w"] and out["b"] and out["lp"] and out["steps"] and out["momenta"], out
    assert out["momenta_spec"] == ["chains", "model"]


def _result_of(stdout: str) -> dict:
    """What a process passed to dump(): the JSON after "RESULT " on its last such line (a
    collective library may print onto the same line, after it)."""
    line = [x for x in stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.JSONDecoder().raw_decode(line[len("RESULT "):])[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


_MULTIHOST = """
import os
pid, port = int(os.environ["PROCESS_ID"]), int(os.environ["PORT"])
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid)
assert jax.device_count() == 8 and jax.local_device_count() == 4
"""

_RUN_8 = """
import os
log_posterior, params, data = problem()
mesh = Mesh(np.array(jax.devices()), ("chains",))
out = os.environ.get("OUT")  # stream to disk and checkpoint there: each process writes its chains
disk = {} if out is None else dict(output=out + "/draws", checkpoint_dir=out + "/ckpt", checkpoint_every=20)
r = sghmc_jax.sample(5, log_posterior, params, transform=lambda k: sghmc_jax.sghmc(1e-3, alpha=1.0, key=k),
                     num_steps=40, num_chains=8, data=data, batch_size=16, thin=2, chunk_size=20,
                     progress=False, mesh=mesh, chain_axis="chains", **disk)
dump(w=r.samples["w"], lp=r.log_posterior, steps=r.sample_steps, process=jax.process_index())
"""


@pytest.mark.slow
@pytest.mark.parametrize("to_disk", [False, True], ids=["in-memory", "streamed-and-checkpointed"])
def test_two_processes_with_jax_distributed_give_the_samples_of_one_process(tmp_path, to_disk):
    """2 processes × 4 host devices on localhost, joined by jax.distributed, against 1 process
    with 8 devices: the same draws, the same log posterior trace (every process gets them),
    also when each process streams its chains to one zarr store and orbax checkpoints the
    state from both."""
    single = run(_RUN_8, devices=8)
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu", "PORT": str(port)}
    if to_disk:
        env["OUT"] = str(tmp_path)
    code = PRELUDE + _MULTIHOST + _RUN_8
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**env, "PROCESS_ID": str(i)},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr[-4000:]
        outs.append(_result_of(stdout))
    for out in outs:
        assert out["w"] == single["w"] and out["lp"] == single["lp"] and out["steps"] == single["steps"]
    assert sorted(o["process"] for o in outs) == [0, 1]
    if to_disk:
        import zarr

        store = zarr.open_group(str(tmp_path / "draws"), mode="r")
        assert store["samples/w"][:].tolist() == single["w"]
        assert (tmp_path / "ckpt" / "state" / "40").is_dir()


_RUN_8_OWN_INPUTS = """
import os
log_posterior, params, data = problem()
if os.environ["CHANGE"] == "data" and pid == 1:
    data = {"x": data["x"], "y": data["y"] + 1.0}
key = 5 + (pid if os.environ["CHANGE"] == "key" else 0)
mesh = Mesh(np.array(jax.devices()), ("chains",))
try:
    sghmc_jax.sample(key, log_posterior, params, transform=lambda k: sghmc_jax.sghmc(1e-3, alpha=1.0, key=k),
                     num_steps=40, num_chains=8, data=data, batch_size=16, chunk_size=20, progress=False,
                     mesh=mesh, chain_axis="chains")
    dump(error=None, compiled=len(cache._cache))
except ValueError as err:
    dump(error=str(err), compiled=len(cache._cache))
"""


@pytest.mark.slow
@pytest.mark.parametrize("change", ["key", "data"])
def test_processes_given_different_keys_or_data_are_refused_before_compiling(change):
    """Regression: hosts given different keys or data ran to completion with draws that were no
    one run's. Each process now digests its key and data, and all compare them first."""
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu",
           "PORT": str(port), "CHANGE": change}
    code = PRELUDE + _MULTIHOST + _RUN_8_OWN_INPUTS
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**env, "PROCESS_ID": str(i)},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr[-4000:]
        out = _result_of(stdout)
        assert out["error"] is not None and f"`{change}`: processes [1] differ from process 0" in out["error"]
        assert out["compiled"] == 0, "refused before the run's programs compiled"


def test_a_users_vmapped_optax_loop_over_sharded_chains_needs_no_collective_with_no_chain_collectives():
    """Regression (issue 18): the optax face vmapped over chains sharded across devices compiled
    an all-reduce per update (the noise bins' zero came from chain 0's key); `sample()` avoided
    it privately. `sghmc_jax.no_chain_collectives` gives a user's own loop the same step, with
    the same numbers."""
    out = run(
        """
        n_chains = 8
        mesh = Mesh(np.array(jax.devices()), ("chains",))
        chains = NamedSharding(mesh, P("chains"))
        loss = lambda p: 0.5 * sum(jnp.sum(x**2) for x in jax.tree.leaves(p))
        tx = sghmc_jax.sghmc(1e-2, alpha=1.0, key=0)
        params = {"w": jnp.ones((n_chains, 5, 3)), "b": jnp.ones((n_chains, 3))}
        params = jax.device_put(params, chains)
        states = jax.device_put(jax.vmap(tx.init)(params), chains)
        keys = jax.device_put(jax.random.split(jax.random.key(1), n_chains), chains)

        def make(scoped):
            @jax.jit
            def step(params, states, t):
                def chain(p, s, k):
                    u, s = tx.update(jax.grad(loss)(p), s, p, key=jax.random.fold_in(k, t))
                    return optax.apply_updates(p, u), s
                if scoped:
                    with sghmc_jax.no_chain_collectives(t):
                        return jax.vmap(chain)(params, states, keys)
                return jax.vmap(chain)(params, states, keys)
            return step

        out = {}
        for scoped in (False, True):
            step = make(scoped)
            hlo = step.lower(params, states, jnp.int32(0)).compile().as_text()
            p, s = params, states
            for t in range(3):
                p, s = step(p, s, jnp.int32(t))
            out[scoped] = (sorted(set(COLLECTIVES.findall(hlo))), p, spec(p["w"]))
        dump(
            plain_collectives=out[False][0],
            scoped_collectives=out[True][0],
            scoped_spec=out[True][2],
            same=all(bool(np.array_equal(a, b)) for a, b in zip(jax.tree.leaves(out[False][1]), jax.tree.leaves(out[True][1]))),
        )
        """,
        devices=4,
    )
    assert out["plain_collectives"], "the unscoped loop no longer communicates: this test lost its point"
    assert out["scoped_collectives"] == [], f"the scoped step communicates: {out['scoped_collectives']}"
    assert out["scoped_spec"] == ["chains"]
    assert out["same"], "the scope changed the numbers"


def test_no_chain_collectives_checks_its_step():
    import jax.numpy as jnp

    import sghmc_jax

    for bad, match in ((jnp.zeros(2, jnp.int32), "shape \\(2,\\)"), (1.5, "dtype float32"), ("t", "got str")):
        with pytest.raises(TypeError, match=f"`step` must be an integer scalar.*{match}"):
            with sghmc_jax.no_chain_collectives(bad):
                pass
