"""Checkpoints of a `sample()` run: the sampler state, draws so far, trace and predictive sums,
saved atomically, so that a killed run resumes bit-identically."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__: list[str] = []

FILE = "sghmc_checkpoint.npz"
_TMP_PREFIX = ".sghmc_checkpoint.tmp-"
# Temporary files of earlier versions (tempfile.mkstemp(prefix=".tmp-", suffix=".npz")).
_LEGACY_TMP = re.compile(r"^\.tmp-[a-z0-9_]{8}\.npz$")


def fingerprint(config: Any, key: jax.Array, step0: int, state: Any) -> str:
    """Identifies a run, so a checkpoint is only resumed by the same run."""
    desc = {
        "config": dataclasses.asdict(config),
        "key": np.asarray(jax.random.key_data(key)).tolist(),
        "key_impl": str(jax.random.key_impl(key)),
        "step0": step0,
        "state": [(str(np.shape(x)), str(getattr(x, "dtype", type(x)))) for x in jax.tree.leaves(state)],
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()


def _to_host(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(x))
    return np.asarray(x)


def replace_atomically(src: str, dst: str) -> None:
    os.replace(src, dst)


class Checkpointer:
    """Saves and loads the whole run atomically: each save writes a temporary file in the
    directory, fsyncs it and renames it over the previous checkpoint, so a crash mid-write leaves
    the previous checkpoint intact. Temporary files left by a killed process (a kill during a
    write can leave one, as large as a checkpoint) are removed when the directory is next used."""

    def __init__(self, directory: str, fingerprint: str):
        self.directory = directory
        self.fingerprint = fingerprint
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, FILE)
        self.removed_stale = self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> list[str]:
        removed = []
        for name in os.listdir(self.directory):
            if name.startswith(_TMP_PREFIX) or _LEGACY_TMP.match(name):
                os.unlink(os.path.join(self.directory, name))
                removed.append(name)
        return removed

    def save(self, state: Any, arrays: dict[str, np.ndarray], next_chunk: int) -> None:
        out: dict[str, np.ndarray] = {}
        for i, leaf in enumerate(jax.tree.leaves(state)):
            out[f"state_{i}"] = _to_host(leaf)
        out.update(arrays)
        meta = {"fingerprint": self.fingerprint, "next_chunk": next_chunk}
        out["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=_TMP_PREFIX, suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **out)
                f.flush()
                os.fsync(f.fileno())
            replace_atomically(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def load(self, template: Any) -> tuple[Any, dict[str, np.ndarray], int] | None:
        """(state like `template`, the other saved arrays, next chunk), or None."""
        if not os.path.exists(self.path):
            return None
        with np.load(self.path, allow_pickle=False) as f:
            meta = json.loads(bytes(f["meta"]).decode())
            if meta["fingerprint"] != self.fingerprint:
                raise ValueError(
                    f"`checkpoint_dir` {self.directory!r} holds a checkpoint of a different run "
                    "(key, sizes or settings differ); use another directory or delete it"
                )
            leaves, treedef = jax.tree.flatten(template)
            restored = []
            for i, ref in enumerate(leaves):
                x = f[f"state_{i}"]
                if isinstance(ref, jax.Array) and jax.dtypes.issubdtype(ref.dtype, jax.dtypes.prng_key):
                    restored.append(jax.random.wrap_key_data(jnp.asarray(x), impl=jax.random.key_impl(ref)))
                else:
                    restored.append(jnp.asarray(x, dtype=ref.dtype))
            arrays = {k: f[k] for k in f.files if not k.startswith("state_") and k != "meta"}
        return jax.tree.unflatten(treedef, restored), arrays, int(meta["next_chunk"])
