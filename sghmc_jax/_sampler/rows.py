"""What the rows of `SampleResult.diagnose()` share: the "n/a" row, what a row lacks, which
chains are healthy, and advice worded for the sampler at hand."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from sghmc_jax import kernels
from sghmc_jax.diagnostics import Row

__all__: list[str] = []

_WRAPPED = (
    "the transform's hyperparameters were not recorded (it is not one of this library's transforms as is, "
    "e.g. it sits inside optax.chain)"
)


class RunSource(NamedTuple):
    """What a run was given, by reference, so that `diagnose()` needs no arguments."""

    log_posterior: Any
    data: Any
    batch_size: int | None
    burn_in: int
    host_batches: bool = False
    keep_rungs: bool = False  # `samples` hold every rung of a ladder (rung 0 at index 0 of axis 2)


def _na(diagnostic: str, note: str, chain: int | None = None, threshold: str = "") -> Row:
    """A row with no verdict: not applicable, or not computable; `note` says why."""
    return Row(diagnostic, chain, math.nan, math.nan, threshold, "n/a", note)


def _missing(values: dict[str, float], names: tuple[str, ...], recorded: bool) -> str:
    gone = [n for n in names if n not in values]
    if not gone:
        return ""
    why = "" if recorded else f": {_WRAPPED}"
    return f"needs {', '.join(n + '=' for n in gone)}{why}"


def _healthy(result: Any) -> np.ndarray:
    return np.flatnonzero(np.asarray(result.diverged_at) < 0)


def _needs(formula: Any, values: dict[str, float], *args: Any) -> tuple[Any, str]:
    """`formula(values, *args)`, or the name of the hyperparameter it lacked."""
    try:
        return formula(values, *args), ""
    except KeyError as err:
        return None, str(err.args[0])


def _advice(text: str, rule: kernels.Rule | None) -> str:
    """`text` without its beta option for a sampler that has no `beta`."""
    if rule is None or any(h.name == "beta" for h in rule.hyperparameters):
        return text
    return text.replace(", or set beta", "").replace(", raise alpha", ", or raise alpha").replace(", or lower beta", "")
