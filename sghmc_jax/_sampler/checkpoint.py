"""Checkpoints of a `sample()` run with orbax, the ecosystem's checkpointer: the sampler state
(sharded and multi-host arrays as they are), the predictive sums and where the run stands. The
draws are never in a checkpoint: they are on disk already, in the run's draw store
(`store.DrawStore`), which a resumed run cuts back to the checkpoint's counts.

Saves are atomic (orbax writes a temporary directory and renames it when complete; the previous
checkpoint stays until then, and an unfinished one is removed when the directory is next used)
and loads read arrays and JSON only, never pickle.
"""

from __future__ import annotations

import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sghmc_jax._sampler.identity import changes, is_key

__all__: list[str] = []

STATE = "state"  # orbax's directory inside checkpoint_dir
DRAWS = "draws"  # the draw store's, when the run has no `output`
# What earlier versions wrote: a single npz checkpoint, and temporary files of it.
_LEGACY_FILE = "sghmc_checkpoint.npz"
_LEGACY_TMP = re.compile(r"^(\.sghmc_checkpoint\.tmp-.*|\.tmp-[a-z0-9_]{8}\.npz)$")


def orbax() -> Any:
    try:
        import orbax.checkpoint as ocp
    except ImportError as err:
        raise ImportError("`checkpoint_dir` needs orbax-checkpoint: pip install 'sghmc_jax[disk]'") from err
    return ocp


def _to_saved(tree: Any) -> dict[str, Any]:
    """The leaves orbax stores, by flat index: typed PRNG keys as their raw uint32 data, and
    empty arrays left out (orbax refuses zero-size arrays; they have nothing to restore)."""
    return {str(i): jax.random.key_data(x) if is_key(x) else x for i, x in _stored_leaves(tree)}


def _stored_leaves(tree: Any) -> list[tuple[int, Any]]:
    return [(i, x) for i, x in enumerate(jax.tree.leaves(tree)) if getattr(x, "size", np.size(x))]


def _abstract_saved(tree: Any) -> dict[str, jax.ShapeDtypeStruct]:
    def one(x: Any) -> jax.ShapeDtypeStruct:
        sharding = getattr(x, "sharding", None)
        if is_key(x):
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
        elif is_key(t):
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
        ocp = orbax()
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
        ocp = orbax()
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
        ocp = orbax()
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
