"""What identifies a run: its settings, key, compiled programs and the digests of the values it
starts from, recorded with its checkpoints and draw store, so that a rerun that differs in
anything that changes the draws is refused (saying what changed), never resumed or returned."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sghmc_jax._sampler.placement import host

__all__: list[str] = []


# Bumped when what identifies a run changes; checkpoints and stores of another version are
# refused with a message that says so (they cannot be checked to be the same run).
IDENTITY_VERSION = 3

# The parts of a run's identity, in the words an error uses to say which of them changed.
_WHAT = {
    "key": "the key",
    "start step": "the step the call starts from",
    "state layout": "the shapes or dtypes of the params or the transform's state",
    "hyperparameters": "the transform's hyperparameters",
    "hyperparameter values": "the values of the transforms' hyperparameters (inside `optax.chain` too)",
    "program": "the compiled step (the log posterior, the transform, its hyperparameters or "
    "schedules, `keep` or `predict_fn`)",
    "data": "the values of `data`",
    "initial values": "the values of `init_params` (or of `init_state`)",
    "predict_inputs": "the values of `predict_inputs`",
    "first batch": "the values of the first of `batches`",
}


def _hash_leaf(h: Any, x: Any) -> None:
    """Feeds one array's dtype, shape and bytes to `h`. Of an array that spans processes: the
    whole of it when each holds a copy, else the parts this process holds (the processes'
    digests are then combined: `parts`)."""
    if is_key(x):
        x = jax.random.key_data(x)
    h.update(f"{np.shape(x)}{jnp.result_type(x)}".encode())
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if x.is_fully_replicated:
            x = x.addressable_data(0)
        else:
            parts = {str(s.index): s.data for s in x.addressable_shards}
            for index in sorted(parts):
                h.update(index.encode())
                h.update(np.ascontiguousarray(np.asarray(parts[index])).view(np.uint8).ravel())
            return
    h.update(np.ascontiguousarray(np.asarray(x)).view(np.uint8).ravel())


def digest(tree: Any) -> str:
    """A digest of a pytree's structure and values (SHA-256 of the bytes on the host: about
    0.07 s for 100 MB here)."""
    h = hashlib.sha256(str(jax.tree.structure(tree)).encode())
    for x in jax.tree.leaves(tree):
        _hash_leaf(h, x)
    return h.hexdigest()


def program_digest(jaxpr: Any) -> str:
    """A digest of a traced program: its jaxpr's text (with Python object addresses, which differ
    between processes, left out) and the values of its constants."""
    h = hashlib.sha256(re.sub(r" at 0x[0-9a-f]+", "", str(jaxpr.jaxpr)).encode())
    for c in jaxpr.consts:
        _hash_leaf(h, c)
    return h.hexdigest()


def _readable(value: Any) -> Any:
    if callable(value):
        return "a schedule"
    try:
        array = np.asarray(value)
    except Exception:  # anything else is named by its type
        return type(value).__name__
    if array.size == 1 and array.dtype.kind in "biuf":
        return repr(array.item())
    return f"an array {digest(array)[:12]}"


def identity(parts: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(the fingerprint, the parts it was made of, as JSON), from named parts: `settings` and
    `hyperparameters` dicts (kept readable, so that an error can say what changed to what) and
    digests or small values for the rest."""
    parts = dict(parts)
    if parts.get("hyperparameters") is not None:
        parts["hyperparameters"] = {k: _readable(v) for k, v in parts["hyperparameters"].items()}
    parts = json.loads(json.dumps(parts, sort_keys=True, default=str))
    parts["version"] = IDENTITY_VERSION
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest(), parts


def changes(saved: dict[str, Any] | None, parts: dict[str, Any]) -> str:
    """What differs between the run that wrote a checkpoint or store (`saved`) and this one, in
    words."""
    if not isinstance(saved, dict) or "version" not in saved:
        return (
            "it was written by another version of sghmc_jax, which did not record what identifies "
            "a run, so it cannot be checked to be this run"
        )
    if saved["version"] != parts.get("version"):
        return (
            f"it was written by a version of sghmc_jax that identified runs differently (identity "
            f"version {saved['version']}, this one's is {parts.get('version')}), so it cannot be "
            "checked to be this run"
        )
    said = []
    for name in sorted(set(saved) | set(parts)):
        old, new = saved.get(name), parts.get(name)
        if old == new or (
            name == "hyperparameter values" and saved.get("hyperparameters") != parts.get("hyperparameters")
        ):
            continue  # (a transform's own hyperparameters are said by name, above)
        if isinstance(old, dict) and isinstance(new, dict):
            for k in sorted(set(old) | set(new)):
                if old.get(k) != new.get(k):
                    said.append(f"{'`' + k + '`' if name == 'settings' else k} {old.get(k)} -> {new.get(k)}")
        else:
            said.append(_WHAT.get(name, name))
    hint = ""
    if saved.get("settings", {}).get("num_steps") != parts.get("settings", {}).get("num_steps"):
        hint = " (to run a finished run on, pass `init_state=result.final_state` to a new call)"
    return "these differ from the run that wrote it: " + "; ".join(said) + hint


def is_key(x: Any) -> bool:
    return isinstance(x, (jax.Array, jax.ShapeDtypeStruct)) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def across_processes(digests: dict[str, str]) -> dict[str, list[str]]:
    """Each named digest as every process of the run computed it, in process order."""
    from jax.experimental import multihost_utils

    names = sorted(digests)
    mine = np.stack([np.frombuffer(bytes.fromhex(digests[n]), np.uint8) for n in names])
    every = np.asarray(multihost_utils.process_allgather(mine))  # (process, name, 32)
    return {n: [bytes(every[p, i]).hex() for p in range(every.shape[0])] for i, n in enumerate(names)}


def check_processes_agree(plan: Any) -> None:
    """With several processes (`jax.distributed`), each must have been given the same key and
    data (each takes its own part of them): checked by digests before anything compiles, since
    otherwise the run completes with draws that are no one run's."""
    if jax.process_count() == 1:
        return
    every = across_processes(
        {
            "`key`": digest(jax.random.key_data(plan.start.key)),
            "`data`": digest(plan.batches.user_data),
            "the first of `batches`": digest(plan.batches.first_host_batch),
        }
    )
    differ = {name: values for name, values in every.items() if len(set(values)) > 1}
    if differ:
        said = "; ".join(
            f"{name}: processes {[p for p, v in enumerate(values) if v != values[0]]} differ from process 0"
            for name, values in differ.items()
        )
        raise ValueError(
            f"the {jax.process_count()} processes of this run were given different inputs ({said}); "
            "every process must pass the same `key` and `data` (each takes its own part of them)"
        )


def parts(plan: Any, programs: Any, step0: int, state: Any) -> dict[str, Any]:
    """What identifies the run, for its checkpoints and draw store: every setting, the key, the
    compiled programs (the log posterior, the transform with its hyperparameters and schedules,
    `keep`, `predict_fn`) and digests of the values it starts from."""
    start = plan.start
    initial = start.init_params if start.init_state is None else start.init_state
    programs_run = [programs.chunk] + ([programs.init_program] if programs.init_program is not None else [])
    initial_values = digest(initial)
    if jax.process_count() > 1:  # each process digested the parts of sharded params it holds
        every = across_processes({"initial values": initial_values})["initial values"]
        initial_values = hashlib.sha256("".join(every).encode()).hexdigest()
    settings = {
        k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
        for k, v in plan.settings().items()
    }
    return {
        "settings": settings,
        "key": [np.asarray(host(jax.random.key_data(start.key))).tolist(), str(jax.random.key_impl(start.key))],
        "start step": step0,
        "state layout": [(np.shape(x), str(getattr(x, "dtype", type(x)))) for x in jax.tree.leaves(state)],
        "hyperparameters": plan.model.hyperparameters,
        "program": [p.digest() for p in programs_run],
        "hyperparameter values": [p.inputs_digest() for p in programs_run],
        "data": digest(plan.batches.user_data),
        "initial values": initial_values,
        "predict_inputs": digest(plan.predictive.inputs),
        "first batch": digest(plan.batches.first_host_batch),
    }
