"""Checkpoints of a `sample()` run with orbax, the ecosystem's checkpointer: the sampler state
(sharded and multi-host arrays as they are), the predictive sums and where the run stands. The
draws are never in a checkpoint: they are on disk already, in the run's draw store
(`_store.DrawStore`), which a resumed run cuts back to the checkpoint's counts.

Saves are atomic (orbax writes a temporary directory and renames it when complete; the previous
checkpoint stays until then, and an unfinished one is removed when the directory is next used)
and loads read arrays and JSON only, never pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__: list[str] = []

STATE = "state"  # orbax's directory inside checkpoint_dir
DRAWS = "draws"  # the draw store's, when the run has no `output`
# What earlier versions wrote: a single npz checkpoint, and temporary files of it.
_LEGACY_FILE = "sghmc_checkpoint.npz"
_LEGACY_TMP = re.compile(r"^(\.sghmc_checkpoint\.tmp-.*|\.tmp-[a-z0-9_]{8}\.npz)$")


def _orbax() -> Any:
    try:
        import orbax.checkpoint as ocp
    except ImportError as err:
        raise ImportError("`checkpoint_dir` needs orbax-checkpoint: pip install 'sghmc_jax[disk]'") from err
    return ocp


# Bumped when what identifies a run changes; checkpoints and stores of another version are
# refused with a message that says so (they cannot be checked to be the same run).
IDENTITY_VERSION = 3  # 3: hyperparameters are program inputs (their values, not the jaxpr, identify them)

# The parts of a run's identity, in the words an error uses to say which of them changed.
_WHAT = {
    "key": "the key",
    "start step": "the step the call starts from",
    "state layout": "the shapes or dtypes of the params or the transform's state",
    "hyperparameters": "the transform's hyperparameters",
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
    digests are then combined: `sampler._identity_parts`)."""
    if _is_key(x):
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
    if not isinstance(saved, dict) or saved.get("version") != parts.get("version"):
        return (
            "it was written by another version of sghmc_jax, which did not record what identifies "
            "a run, so it cannot be checked to be this run"
        )
    said = []
    for name in sorted(set(saved) | set(parts)):
        old, new = saved.get(name), parts.get(name)
        if old == new:
            continue
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


def _is_key(x: Any) -> bool:
    return isinstance(x, (jax.Array, jax.ShapeDtypeStruct)) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_saved(tree: Any) -> dict[str, Any]:
    """The leaves orbax stores, by flat index: typed PRNG keys as their raw uint32 data, and
    empty arrays left out (orbax refuses zero-size arrays; they have nothing to restore)."""
    return {str(i): jax.random.key_data(x) if _is_key(x) else x for i, x in _stored_leaves(tree)}


def _stored_leaves(tree: Any) -> list[tuple[int, Any]]:
    return [(i, x) for i, x in enumerate(jax.tree.leaves(tree)) if getattr(x, "size", np.size(x))]


def _abstract_saved(tree: Any) -> dict[str, jax.ShapeDtypeStruct]:
    def one(x: Any) -> jax.ShapeDtypeStruct:
        sharding = getattr(x, "sharding", None)
        if _is_key(x):
            data = jax.eval_shape(jax.random.key_data, x)
            return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
        return jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x), sharding=sharding)

    return {str(i): one(x) for i, x in _stored_leaves(tree)}


def _from_saved(saved: dict[str, Any], template: Any) -> Any:
    leaves, treedef = jax.tree.flatten(template)
    out = []
    for i, t in enumerate(leaves):
        if str(i) not in saved:  # an empty array
            out.append(t)
        elif _is_key(t):
            out.append(jax.random.wrap_key_data(saved[str(i)], impl=jax.random.key_impl(t)))
        else:
            out.append(saved[str(i)])
    return jax.tree.unflatten(treedef, out)


class Checkpointer:
    """The run's checkpoints in `directory/state` (orbax), keeping the two newest."""

    def __init__(self, directory: str, fingerprint: str, parts: dict[str, Any]):
        self.directory = directory
        self.fingerprint = fingerprint
        self.parts = parts
        os.makedirs(directory, exist_ok=True)
        self.removed_stale = self._remove_stale_temporaries()
        if os.path.exists(os.path.join(directory, _LEGACY_FILE)):
            raise ValueError(
                f"`checkpoint_dir` {directory!r} holds a checkpoint of an earlier sghmc_jax version "
                f"({_LEGACY_FILE}), which this one cannot resume; use another directory (nothing "
                "there is deleted)"
            )
        ocp = _orbax()
        self.manager = ocp.CheckpointManager(
            os.path.join(os.path.abspath(directory), STATE),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=2, create=True, enable_async_checkpointing=False, cleanup_tmp_directories=True
            ),
        )

    @property
    def draws_path(self) -> str:
        return os.path.join(self.directory, DRAWS)

    def _remove_stale_temporaries(self) -> list[str]:
        removed = []
        for name in os.listdir(self.directory):
            if _LEGACY_TMP.match(name):
                os.unlink(os.path.join(self.directory, name))
                removed.append(name)
        return removed

    def save(self, step: int, state: Any, extra: Any, meta: dict[str, Any]) -> None:
        ocp = _orbax()
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_to_saved({"state": state, "extra": extra})),
                meta=ocp.args.JsonSave({"fingerprint": self.fingerprint, "run": self.parts, **meta}),
            ),
            force=True,
        )
        self.manager.wait_until_finished()

    def load(self, template: Any, extra_template: Any) -> tuple[Any, Any, dict[str, Any]] | None:
        """(state like `template`, extra like `extra_template`, the saved meta), or None."""
        step = self.manager.latest_step()
        if step is None:
            return None
        ocp = _orbax()
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        if meta.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"`checkpoint_dir` {self.directory!r} holds a checkpoint of a different run, which "
                f"this call will not resume or return: {changes(meta.get('run'), self.parts)}. Give "
                "this run another `checkpoint_dir` (nothing in that one is deleted)"
            )
        tree = {"state": template, "extra": extra_template}
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract_saved(tree)))
        )["state"]
        restored = _from_saved(restored, tree)
        return restored["state"], restored["extra"], meta
