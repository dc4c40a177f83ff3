"""Types shared across the library: what users pass and get back (`SamplerState` to continue a
run, `StoredArray` for draws on disk)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeAlias

import chex
import jax
import numpy as np

__all__ = [
    "ArrayTree",
    "Hyperparameter",
    "LogProbFn",
    "ReplicaState",
    "SamplerState",
    "ScalarOrSchedule",
    "Schedule",
    "StoredArray",
    "Transform",
]

ArrayTree: TypeAlias = chex.ArrayTree
"""A pytree of arrays (params, momenta, gradients)."""

LogProbFn: TypeAlias = Callable[[ArrayTree, Any], tuple[jax.Array, Any]]
"""`log_posterior(params, batch) -> (value, aux)`, the posteriors convention."""

Schedule: TypeAlias = Callable[[jax.Array], jax.typing.ArrayLike]
"""A function of the step count, e.g. an optax schedule."""

ScalarOrSchedule: TypeAlias = float | jax.Array | Schedule
"""A hyperparameter that takes a schedule (a number, or a `Schedule` of the step count)."""


class Transform(NamedTuple):
    """A functional SGMCMC algorithm with its hyperparameters bound (posteriors' `Transform`).

    Attributes:
        init: `init(params, *, key=None, batch=None) -> state` (`batch`: an example batch with
            which the log posterior is traced to lay out the state's `aux`).
        update: `update(state, batch, *, key, inplace=False) -> state`.
    """

    init: Callable[..., Any]
    update: Callable[..., Any]


class ReplicaState(NamedTuple):
    """Replica exchange's bookkeeping (`sample(..., temperatures=...)`), every array with a
    leading axis of the run's chains, each a ladder of R replicas (replica r of chain c is entry
    c·R + r of the state's chain axis).

    Attributes:
        rung: (chain, R) int32, the rung each replica holds (swaps exchange these, never params).
        beta: (chain, R) each rung's factor β_r = 1/τ_r of the log posterior (β_0 = 1), fixed
            unless the ladder adapts (`adapt_ladder`).
        swap_key: (chain,) key of the swaps (round at step t uses fold_in(swap_key, t)), apart
            from the transform's noise keys.
        attempts: (chain, R − 1) int32, swaps attempted between rungs r and r + 1 (since the
            ladder last adapted).
        accepts: (chain, R − 1) int32, of those, accepted.
        variance: (chain, R) the running estimate of the variance of each replica's minibatch
            log-posterior estimate (zeros with full-data energies).
        heading: (chain, R) int32, per replica: 1 if it reached the top rung since it last held
            rung 0, 0 if it has held rung 0 since, −1 if it has never held rung 0.
        round_trips: (chain,) int32, trips rung 0 -> top rung -> rung 0 made by the chain's replicas.
        started: (chain, R) float32, the ladder's temperature factors τ as the run was started
            with (`temperatures`): a continuation must ask for the same.
        adapt_ladder: (chain,) int32, the run's `adapt_ladder` (a continuation must ask for the
            same: the ladder adapts at fixed steps of the whole run).
    """

    rung: jax.Array
    beta: jax.Array
    swap_key: jax.Array
    attempts: jax.Array
    accepts: jax.Array
    variance: jax.Array
    heading: jax.Array
    round_trips: jax.Array
    started: jax.Array
    adapt_ladder: jax.Array


class SamplerState(NamedTuple):
    """Everything needed to continue a run exactly (all arrays have a leading chain axis except
    `step`).

    Attributes:
        step: number of steps taken by every chain (int32 scalar).
        params: the chains' parameters.
        transform_state: the chains' transform states (momenta, keys, counters).
        noise_key: per-chain key of the step noise (step t uses fold_in(noise_key, t)).
        data_key: per-chain key of the minibatch order (epoch e uses fold_in(data_key, e)).
        perm: per-chain permutation of the data for the current epoch, shape (chain, N);
            shape (chain, 0) without on-device data.
        diverged_at: per-chain draw index (number of steps) of the first non-finite params or
            log posterior, or −1.
        diverged_in_params: per-chain whether that divergence was non-finite params (made by an
            update; else a non-finite log posterior at finite params).
        last_finite: with `on_divergence="continue"`, each chain's last `(params,
            transform_state)` whose params and log posterior were finite (where a diverged
            chain is held); None otherwise.
        replicas: with `temperatures` (replica exchange), the ladders' `ReplicaState`, and the
            other fields' chain axis holds every replica (chain-major); None otherwise.
    """

    step: jax.Array
    params: ArrayTree
    transform_state: Any
    noise_key: jax.Array
    data_key: jax.Array
    perm: jax.Array
    diverged_at: jax.Array
    diverged_in_params: jax.Array
    last_finite: Any = None
    replicas: ReplicaState | None = None

    def __repr__(self) -> str:
        leaves = jax.tree.leaves(self.params)
        chains = int(self.noise_key.shape[0]) if hasattr(self.noise_key, "shape") else "?"
        size = sum(int(np.prod(np.shape(x)[1:])) for x in leaves)
        kind = type(self.transform_state).__name__
        diverged = int(np.sum(np.asarray(self.diverged_at) >= 0)) if hasattr(self.diverged_at, "shape") else "?"
        return (
            f"SamplerState(step={np.asarray(self.step) if hasattr(self.step, 'shape') else self.step}, "
            f"{chains} chains × {size} params in {len(leaves)} leaves, transform_state={kind}, {diverged} diverged)"
        )


class StoredArray:
    """A lazy view of an array in a run's draw store on disk (`sample(output=...)`: a leaf of
    `SampleResult.samples`, (chain, draw, ...), or a per-step trace, (chain, step)): indexing
    reads from disk what it selects; `np.asarray` reads it all (a leaf of 10M parameters × 1,000
    draws is 40 GB: select first)."""

    def __init__(self, array: Any):
        self._array = array
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.asarray(self._array[index])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.asarray(self._array[...])
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"StoredArray(shape={self.shape}, dtype={self.dtype})"


class Hyperparameter(NamedTuple):
    """One row of a sampler's hyperparameter table (`kernels.Rule.hyperparameters`).

    The table is the one place a hyperparameter's rule and default live: both faces check
    values against it (when built, and when traced with concrete values), and both faces'
    signatures take their defaults from it (`kernels.Rule.defaults`).

    Attributes:
        name: its name in the functional face (`lr` is spelled `learning_rate` by the optax faces).
        rule: `(check, text)`: `check(value) -> bool` for a concrete finite value, and how the
            rule reads in an error message (e.g. `"> 0"`).
        schedulable: whether a schedule of the step is accepted.
        default: the value every face uses when it is not given; None when it must be given
            (the step size).

    Example:
        >>> from sghmc_jax import kernels
        >>> kernels.SGHMC.hyperparameters[1]
        Hyperparameter(name='alpha', rule=(<function ...>, '>= 0'), schedulable=True, default=0.01)
        >>> kernels.SGHMC.defaults.alpha
        0.01
    """

    name: str
    rule: tuple[Callable[[float], bool], str]
    schedulable: bool
    default: float | None = None
