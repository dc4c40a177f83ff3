"""The sampler: runs any of this library's transforms for many steps, over several chains, with
minibatches, burn-in, thinning, progress, diagnostics, divergence handling and exact resume.

Steps run in compiled chunks with no per-step Python; between chunks the thinned samples move to
the host, so the device holds one chunk of draws, never the whole run. `sample` is four parts:
validation into a `_Setup` (before anything compiles), the initial or restored state, the chunk
loop, and the result. The compiled programs live in `_engine` and are reused by later calls with
the same functions and shapes (a continuation compiles nothing).

Randomness: `key` is split into one key per chain, and each chain's key into three: one seeds its
transform's init (when `transform` is a factory of a key), one its per-step noise and one its
minibatch order. Step t of a chain uses `fold_in(noise_key, t)` and epoch e's permutation uses
`fold_in(data_key, e)` (with `batch_order="with_replacement"`, step t's batch uses
`fold_in(data_key, t)`), so the draws depend only on the key and the global step number: not on
chunking, checkpoints or continuation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sghmc_jax import (
    _checkpoint,
    _checks,
    _diagnose,
    _engine,
    _inputs,
    _progress,
    _store,
    diagnostics,
    transforms,
)
from sghmc_jax._engine import SamplerState
from sghmc_jax.types import ArrayTree, LogProbFn, Transform

__all__ = ["DivergenceError", "SampleResult", "SamplerState", "sample"]

TransformLike = optax.GradientTransformation | Callable[[jax.Array], optax.GradientTransformation]


@dataclasses.dataclass
class SampleResult:
    """What `sample` returns.

    Attributes:
        samples: pytree like the params with leading axes (chain, draw), on the host. With
            `on_divergence="continue"`, a diverged chain's draws from its divergence on are NaN
            (missing); `summary()` and `to_arviz()` leave diverged chains out.
        sample_steps: (draw,) the step count after which each draw was taken.
        log_posterior: (chain, step) the log posterior at every step of this run (at the params
            the step's gradient was taken at), burn-in included; NaN after a chain diverged.
        final_state: a `SamplerState`; `sample(..., init_state=result.final_state)` continues.
        diverged_at: (chain,) the draw index (number of steps) at which a chain's params or log
            posterior were first non-finite, −1 if never.
        predictive_mean: running mean of `predict_fn` over the kept draws, per chain (leading
            chain axis), or None.
        wall_time: seconds spent running steps (compilation excluded).
        compile_time: seconds spent tracing and compiling (the initial state's program and the
            chunk's; 0 when both came from the cache of an earlier call).
        steps_per_second: steps per chain per second of `wall_time`.
        kinetic: (chain, step) mᵀm/d, the mean square of the momenta in the transform state
            after every step of this run (burn-in included), NaN for a transform without
            momenta (SGLD, pSGLD) and after a chain diverged; what `diagnose()` reads the
            kinetic temperature from.
        sampler: the transform's rule name ("sghmc", "baoa", ...) when `transform` was one of
            this library's transforms (or a factory of one), else None (e.g. inside
            `optax.chain`: `diagnose()` then takes the hyperparameters as arguments).
        hyperparameters: that transform's hyperparameters by name (numbers or schedules), or None.
    """

    samples: ArrayTree
    sample_steps: np.ndarray
    log_posterior: np.ndarray
    final_state: SamplerState
    diverged_at: np.ndarray
    predictive_mean: ArrayTree | None
    wall_time: float
    compile_time: float
    steps_per_second: float
    kinetic: Any = None
    sampler: str | None = None
    hyperparameters: dict[str, Any] | None = None
    # References (not copies) to what the run used, for `diagnose()`.
    _source: _diagnose.RunSource | None = dataclasses.field(default=None, repr=False)

    def diagnose(self, **kwargs: Any) -> _diagnose.Diagnosis:
        return _diagnose.diagnose(self, **kwargs)

    diagnose.__doc__ = _diagnose.diagnose.__doc__

    @property
    def num_chains(self) -> int:
        return int(self.diverged_at.shape[0])

    def _healthy(self) -> np.ndarray:
        ok = self.diverged_at < 0
        if not ok.any():
            raise ValueError("every chain diverged: no draws to summarise")
        return ok

    def _selected(self, select: Any) -> dict[str, np.ndarray]:
        """The draws of the healthy chains, by leaf name, of the leaves `select` names (a list
        of names, a predicate of the name, or None for all); only those are read (from disk,
        when the draws are there)."""
        ok = self._healthy()
        names = _store._leaf_names(self.samples) if self.samples is not None else []
        leaves = jax.tree.leaves(self.samples, is_leaf=lambda x: isinstance(x, _store.StoredArray))
        if select is None:
            chosen = names
        elif callable(select):
            chosen = [n for n in names if select(n)]
        else:
            chosen = list(select)
            unknown = sorted(set(chosen) - set(names))
            if unknown:
                raise ValueError(f"`select` names leaves that are not in the samples: {unknown}; they are {names}")
        out = {}
        for name, leaf in zip(names, leaves, strict=True):
            if name in chosen:
                out[name] = np.asarray(leaf)[ok]
        return out

    def summary(self, select: Any = None) -> dict[str, dict[str, np.ndarray]]:
        """Per-parameter mean, sd, MCSE, bulk/tail ESS and rank-normalised split R-hat
        (`diagnostics.summary`) over the chains that did not diverge; warns
        (`diagnostics.IdenticalChainsWarning`) when chains have identical draws.

        Args:
            select: the leaves to summarise: a list of leaf names (as in the result's keys),
                a predicate of the name, or None for all (with millions of parameters on disk,
                choose: only the selected leaves are read).
        """
        ids = np.flatnonzero(self._healthy())  # the warning names chains by their index in the run
        return diagnostics._summary(self._selected(select), chain_ids=ids)

    def to_arviz(self, select: Any = None) -> Any:
        """The draws of the chains that did not diverge as an `arviz.InferenceData` (needs
        ArviZ: `pip install sghmc_jax[arviz]`), with the log posterior at each draw as the
        sample stat `lp` (NaN for the last draw when the run ended with it: its log posterior
        is evaluated by the next step). `select` as for `summary`; warns
        (`diagnostics.IdenticalChainsWarning`) when chains have identical draws."""
        try:
            import arviz as az
        except ImportError as err:
            raise ImportError("to_arviz() needs ArviZ: pip install arviz") from err
        ok = self._healthy()
        posterior = self._selected(select)
        diagnostics._warn_identical(posterior, np.flatnonzero(ok))
        # The trace's column j is the log posterior at the params after (first + j) steps.
        trace = np.asarray(self.log_posterior)
        first = int(_host(self.final_state.step)) - trace.shape[1]
        index = self.sample_steps - first
        inside = index < trace.shape[1]
        lp = np.full((int(ok.sum()), len(index)), np.nan, trace.dtype)
        lp[:, inside] = trace[ok][:, index[inside]]
        return az.from_dict(posterior=posterior, sample_stats={"lp": lp})

    def __repr__(self) -> str:
        leaves = jax.tree_util.tree_flatten_with_path(
            self.samples, is_leaf=lambda x: isinstance(x, _store.StoredArray)
        )[0]
        if len(leaves) == 1 and not leaves[0][0]:
            shapes: Any = tuple(np.shape(leaves[0][1])[2:])
        else:  # leaf names, not the container's repr (an nnx.State's spans lines)
            shapes = {diagnostics._path_name(p): tuple(np.shape(x)[2:]) for p, x in leaves}
        dtypes = sorted({str(x.dtype) for _, x in leaves})
        draws = len(self.sample_steps)
        steps = f"steps {self.sample_steps[0]}–{self.sample_steps[-1]}" if draws else "no draws"
        diverged = int((self.diverged_at >= 0).sum())
        if self.wall_time > 0:
            ran = f"sampling {self.wall_time:.3g} s ({self.steps_per_second:,.0f} steps/s per chain)"
        else:  # a finished run's draws, returned from its checkpoint
            ran = "no steps run by this call"
        return (
            f"SampleResult({self.num_chains} chains × {draws} draws ({steps}) of "
            f"{shapes} {'/'.join(dtypes)}; {diverged} diverged; {ran}, compile {self.compile_time:.3g} s)"
        )


class DivergenceError(FloatingPointError):
    """A chain's params or log posterior became non-finite.

    Attributes:
        chain: the first chain that diverged.
        step: the draw index (number of steps) at which it first had non-finite params or a
            non-finite log posterior.
        result: a `SampleResult` holding the draws (of all chains) taken before that step, all
            finite, and the log posterior of every chain up to that step.
    """

    def __init__(self, chain: int, step: int, cause: str, result: SampleResult):
        super().__init__(
            f"chain {chain} diverged: {cause} after {step} steps. The "
            f"{len(result.sample_steps)} draws taken before it are in this exception's "
            "`.result`; pass on_divergence='continue' to keep the other chains running."
        )
        self.chain = chain
        self.step = step
        self.result = result


@dataclasses.dataclass(frozen=True)
class _Config:
    num_chains: int
    num_steps: int
    burn_in: int
    thin: int
    chunk_size: int
    batch_size: int | None
    num_data: int | None
    host_batches: bool
    continue_on_divergence: bool
    data_shards: int = 1
    placement: _engine.Placement | None = None
    batch_order: str = "shuffle"


@dataclasses.dataclass
class _Setup:
    """Everything `sample` was asked to do, validated."""

    config: _Config
    key: jax.Array
    log_posterior: LogProbFn
    transform: Any
    update_transform: optax.GradientTransformation
    user_data: Any  # `data` as the caller gave it (not placed on a mesh), for `diagnose()`
    keep: Callable[[jax.Array], jax.Array] | None
    predict_fn: Callable[[ArrayTree, Any], ArrayTree] | None
    predict_inputs: Any
    target_temperature: float | None
    value_dtype: str
    data: Any
    batch_iter: Iterator[Any] | None
    first_host_batch: Any
    init_params: ArrayTree | None
    stacked_init: bool
    init_state: SamplerState | None
    checkpoint_dir: str | None
    checkpoint_every: int | None
    output: str | None
    callback: Callable[[dict], None] | None
    progress: bool


def _is_transform(x: Any) -> bool:
    return isinstance(x, optax.GradientTransformation) or (
        hasattr(x, "init") and hasattr(x, "update") and not isinstance(x, type)
    )


def _check_not_functional(name: str, transform: Any) -> None:
    """A functional face's `Transform(init, update)` looks like an optax transform (it has
    `init` and `update`) but its `update(state, batch, ...)` takes no gradients: say which
    optax factory `sample()` takes instead."""
    if not isinstance(transform, Transform):
        return
    update = transform.update
    module = getattr(getattr(update, "func", update), "__module__", None) or ""
    face = module.rsplit(".", 1)[-1]
    if module.startswith("sghmc_jax.sgmcmc.") and face in transforms.__all__:
        built, factory = f"sghmc_jax.sgmcmc.{face}.build(...)", f"sghmc_jax.{face}"
    else:
        built, factory = "a functional face's build(...)", "sghmc_jax.sghmc"
    raise TypeError(
        f"`{name}` must be an optax-face transform, got the functional face's Transform from "
        f"{built}, whose update takes (state, batch), not gradients; sample() takes the optax "
        f"face and the log posterior separately: pass transform={factory}(learning_rate, ..., "
        f"key=key) (the functional face's `lr` is the optax face's `learning_rate`), or "
        f"transform=lambda key: {factory}(learning_rate, ..., key=key)"
    )


def _check_callable(name: str, value: Any, signature: str) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"`{name}` must be a function {signature} or None, got {type(value).__name__}: {value!r}")


def _leading_size(name: str, tree: Any) -> int:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    if not leaves:
        raise ValueError(f"`{name}` must hold at least one array, got an empty pytree")
    sizes = {jax.tree_util.keystr(p): (np.shape(x)[0] if np.ndim(x) else None) for p, x in leaves}
    if None in sizes.values():
        bad = [k for k, v in sizes.items() if v is None]
        raise ValueError(f"every leaf of `{name}` needs a leading example axis, got scalars at {bad}")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"every leaf of `{name}` must have the same leading size, got {sizes}")
    return int(next(iter(sizes.values())))


def sample(
    key: Any,
    log_posterior: LogProbFn,
    init_params: ArrayTree,
    *,
    transform: TransformLike,
    num_steps: int,
    num_chains: int = 4,
    stacked_init: bool = False,
    data: ArrayTree | None = None,
    batch_size: int | None = None,
    batch_order: str = "shuffle",
    batches: Iterable[Any] | None = None,
    burn_in: int = 0,
    thin: int = 1,
    keep: Callable[[jax.Array], jax.Array] | None = None,
    chunk_size: int = 1000,
    progress: bool = True,
    on_divergence: str = "raise",
    predict_fn: Callable[[ArrayTree, Any], ArrayTree] | None = None,
    predict_inputs: Any = None,
    init_state: SamplerState | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    callback: Callable[[dict], None] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    chain_axis: str | None = None,
    data_axis: str | None = None,
    output: str | os.PathLike | None = None,
) -> SampleResult:
    """Runs `num_chains` chains of a transform for `num_steps` steps and returns the draws.

    Args:
        key: PRNG key (typed, raw or int seed) for everything random in the run.
        log_posterior: `log_posterior(params, batch) -> (value, aux)`; `make_log_posterior`
            builds one from a per-example likelihood with the data-size scaling right, and the
            temperature it declares is checked against the transform's (a disagreement raises).
        init_params: the initial params: one pytree shared by all chains, or, with
            `stacked_init=True`, a pytree whose leaves have a leading axis of size `num_chains`.
        transform: one of this library's transforms (e.g. `sghmc_jax.sghmc(...)`), also inside
            `optax.chain`; or a function `key -> transform`, called once per chain with its own
            key, so that the chains' initial momenta differ too (with a plain transform they
            share the transform's initial momenta; their step noise differs either way).
        num_steps: steps per chain in this call.
        num_chains: number of chains (vmapped).
        stacked_init: whether `init_params` has a leading chain axis.
        data: a pytree of arrays with a leading example axis, held on the device; each chain
            draws a minibatch of `batch_size` every step, by default walking its own
            permutation each epoch (without replacement; the last N mod batch_size examples of
            a permutation sit that epoch out; see `batch_order`). None passes `batch=None` (unless `batches` is given).
        batch_size: minibatch size, 1 <= batch_size <= N; required with `data`.
        batch_order: how each chain walks `data`: "shuffle" (a fresh permutation every
            epoch), "sms", symmetric minibatch splitting (Paulin et al. 2025): a fresh
            permutation every other epoch, whose batches the next epoch visits in reverse
            order, so the kicks form a palindrome over each pair of epochs, or
            "with_replacement": every step's batch drawn uniformly with replacement (i.i.d.
            batches, the classical SG-MCMC setting; per data shard with `data_axis`), from
            `fold_in(data_key, step)`. Measured with UBU, BAOA and SGHMC on a quartic target
            split into 4 batches (`benchmarks/README.md`, "Bias order"), on batches that
            differ by a shift and on batches that differ in curvature: i.i.d. batches make the
            bias first order in the step size and the largest (8-9x the default's for UBU at
            the smallest step); "shuffle" and "sms" both keep it second order or better, sms
            no better than shuffle (1.2-1.3x larger at the largest step, equal within MCSE at
            the others). Sms beat shuffle only with 2 batches per epoch; with 16 neither was
            second order at those steps and sms was the worse: the benefit of both
            permutation orders needs epochs short against the chain's memory.
        batches: instead of `data`, an iterable of host batches, one per step, shared by all
            chains, moved to the device `chunk_size` at a time (for data too big for the device).
        burn_in: steps discarded before the first draw.
        thin: keep one draw every `thin` steps after burn-in (draws after steps burn_in + thin,
            burn_in + 2·thin, ...).
        keep: optional jit-able predicate of the step index of the update that produced a
            draw (0-based, the index its schedules were evaluated at; the draw's entry in
            `sample_steps` is that index + 1), e.g. the sampling phase of a cyclical schedule
            (`functools.partial(sghmc_jax.in_sampling_phase, ...)`); draws where it is False
            are dropped.
        chunk_size: steps per compiled chunk; samples go to the host between chunks. Calls with
            the same functions, shapes, `chunk_size` and `thin` share one compiled program.
        progress: show a progress bar (tqdm if installed, else a line per chunk on stderr).
        on_divergence: "raise" stops at the end of the chunk where a chain's params or log
            posterior become non-finite and raises `DivergenceError` with the draws taken
            before it; "continue" holds that chain at its last finite state (its later draws
            are NaN, `diverged_at` says where) and runs the others on.
        predict_fn: optional `predict_fn(params, predict_inputs)`; the sampler keeps a running
            mean of it over the kept draws without storing them.
        predict_inputs: the inputs for `predict_fn`.
        init_state: a `SamplerState` to continue from (e.g. `result.final_state`); then
            `init_params`, `stacked_init` and `num_chains` come from it.
        checkpoint_dir: where to checkpoint the sampler state (orbax) every `checkpoint_every`
            steps (at chunk ends); if it holds a checkpoint of the same run, the run resumes from
            it and ends bit-identical to an uninterrupted run (or, when that run had finished,
            returns its draws). The same run means the same arguments, key, log posterior,
            transform with its hyperparameters and schedules, and the same values of `data`
            and `init_params` (checked by SHA-256 digests, about 0.07 s per 100 MB); a checkpoint
            of any other run is refused with an error that names what differs. Saves are atomic and hold the
            state only: the draws go to the draw store (`output`, or `checkpoint_dir/draws`)
            as they come, never rewritten. Needs `sghmc_jax[disk]`.
        checkpoint_every: steps between checkpoints (rounded up to a chunk end); by default
            every chunk end.
        callback: optional function called on the host after every chunk (and after that
            chunk's checkpoint, so a callback that stops the run loses nothing) with a dict of
            progress information (`step`, `num_steps`, `mean_log_posterior`).
        mesh: a `jax.sharding.Mesh` to run on (README, "Scaling out"); its devices may span
            several processes (`jax.distributed`). Params given as arrays sharded over it (a
            `NamedSharding`) keep their partition, and every per-parameter part of the state
            (momenta, preconditioner, ...) follows it; other params are replicated.
        chain_axis: the mesh axis the chains are split over (`num_chains` a multiple of its
            size): each device runs its own chains, with no communication in the step.
        output: a path for a new zarr (v3) store that each chunk's draws, their steps and the
            log-posterior trace are written to as they come (each process writes the chains it
            holds), so that host memory stays at one chunk whatever the run's length; the
            result then reads them lazily from it (`samples` leaves and `log_posterior` are
            `StoredArray`s). Needs `sghmc_jax[disk]`. None keeps the draws in memory.
        data_axis: the mesh axis the minibatch is split over: `data` is split into that many
            equal shards of examples (N and `batch_size` multiples of its size), each device
            draws its part of every minibatch from its own shard (a per-chain permutation of
            each shard per epoch), and the gradient is reduced across the axis in the step.

    Returns:
        A `SampleResult`.

    Raises:
        DivergenceError: if a chain diverges with `on_divergence="raise"`.
        ValueError, TypeError: for bad arguments, before anything is compiled.
    """
    setup = _validate(
        key=key,
        log_posterior=log_posterior,
        init_params=init_params,
        transform=transform,
        num_steps=num_steps,
        num_chains=num_chains,
        stacked_init=stacked_init,
        data=data,
        batch_size=batch_size,
        batch_order=batch_order,
        batches=batches,
        burn_in=burn_in,
        thin=thin,
        keep=keep,
        chunk_size=chunk_size,
        progress=progress,
        on_divergence=on_divergence,
        predict_fn=predict_fn,
        predict_inputs=predict_inputs,
        init_state=init_state,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        callback=callback,
        mesh=mesh,
        chain_axis=chain_axis,
        data_axis=data_axis,
        output=output,
    )
    _check_processes_agree(setup)
    programs = _Programs(setup)
    state = programs.initial_state()
    outcome = _run(setup, programs, state)
    return _result(setup, programs, outcome)


# ---- 1. validation ---------------------------------------------------------------------------


def _validate(**kw: Any) -> _Setup:
    """Checks every argument and returns what the run needs; raises before anything compiles."""
    log_posterior = kw["log_posterior"]
    transform = kw["transform"]
    if not callable(log_posterior):
        raise TypeError(f"`log_posterior` must be callable, got {type(log_posterior).__name__}")
    if not (_is_transform(transform) or callable(transform)):
        raise TypeError(
            "`transform` must be an optax GradientTransformation (e.g. sghmc_jax.sghmc(...)) or "
            f"a function key -> transform, got {type(transform).__name__}"
        )
    _check_not_functional("transform", transform)
    num_steps = _checks.check_int("num_steps", kw["num_steps"], 1)
    burn_in = _checks.check_int("burn_in", kw["burn_in"], 0)
    thin = _checks.check_int("thin", kw["thin"], 1)
    chunk_size = _checks.check_int("chunk_size", kw["chunk_size"], 1)
    if burn_in >= num_steps:
        raise ValueError(
            f"`burn_in` must be < num_steps so that some draws are kept, got burn_in={burn_in} "
            f"and num_steps={num_steps}"
        )
    if thin > num_steps - burn_in:
        raise ValueError(
            f"`thin` must be <= num_steps - burn_in ({num_steps - burn_in}) so that at least one "
            f"draw is kept, got thin={thin} with num_steps={num_steps} and burn_in={burn_in}"
        )
    if kw["on_divergence"] not in ("raise", "continue"):
        raise ValueError(f"`on_divergence` must be 'raise' or 'continue', got {kw['on_divergence']!r}")
    _check_callable("keep", kw["keep"], "of the step index returning a bool")
    _check_callable("callback", kw["callback"], "of a dict")
    _check_callable("predict_fn", kw["predict_fn"], "predict_fn(params, predict_inputs)")
    predict_fn, predict_inputs = kw["predict_fn"], kw["predict_inputs"]
    if (predict_fn is None) != (predict_inputs is None):
        raise ValueError("`predict_fn` and `predict_inputs` must be given together")
    checkpoint_dir, checkpoint_every = kw["checkpoint_dir"], kw["checkpoint_every"]
    if checkpoint_every is not None:
        checkpoint_every = _checks.check_int("checkpoint_every", checkpoint_every, 1)
        if checkpoint_dir is None:
            raise ValueError("`checkpoint_every` needs `checkpoint_dir`")
    elif checkpoint_dir is not None:
        # Every chunk end. (Not `chunk_size` steps: a chunk ends on a multiple of `thin`, so it
        # may hold fewer steps than chunk_size, and the next save would come a chunk late.)
        checkpoint_every = 1
    _check_disk(checkpoint_dir, kw["output"])
    data, batches, batch_size = kw["data"], kw["batches"], kw["batch_size"]
    if data is not None and batches is not None:
        raise ValueError("pass either `data` (on the device) or `batches` (from the host), not both")
    num_data = None
    if data is not None:
        num_data = _leading_size("data", data)
        _checks.check_finite_data("data", data)
        if batch_size is None:
            raise ValueError("`batch_size` is required with `data`")
        batch_size = _checks.check_int("batch_size", batch_size, 1)
        if batch_size > num_data:
            raise ValueError(
                f"`batch_size` must be <= the number of examples in `data` ({num_data}), got batch_size={batch_size}"
            )
    elif batch_size is not None and batches is None:
        raise ValueError("`batch_size` needs `data`")
    batch_order = kw["batch_order"]
    if batch_order not in ("shuffle", "sms", "with_replacement"):
        raise ValueError(
            f"`batch_order` must be 'shuffle', 'sms' or 'with_replacement', got batch_order={batch_order!r}"
        )
    if batch_order != "shuffle" and data is None:
        raise ValueError(
            f"`batch_order={batch_order!r}` orders the minibatches `sample` draws from `data`; "
            "with host `batches` (or no data) the order is the iterable's: pass `data=` and `batch_size=`"
        )

    base_key = _checks.canonical_key(kw["key"])
    init_state = kw["init_state"]
    num_chains = kw["num_chains"]
    if init_state is not None:
        if not isinstance(init_state, SamplerState):
            raise TypeError(f"`init_state` must be a SamplerState, got {type(init_state).__name__}")
        num_chains = int(init_state.noise_key.shape[0])
    num_chains = _checks.check_int("num_chains", num_chains, 1)
    init_params = None
    if init_state is None:
        init_params = _check_init_params(kw["init_params"], kw["stacked_init"], num_chains)
    placement = _placement(
        kw["mesh"],
        kw["chain_axis"],
        kw["data_axis"],
        num_chains,
        init_params if init_params is not None else init_state.params,
        stacked=init_params is None or kw["stacked_init"],
    )
    if placement is not None:
        # Every input of a program over the mesh must live on the mesh: the run's key and params
        # not already partitioned over it are replicated (the devices may span processes).
        base_key = jax.random.wrap_key_data(
            _on_mesh(jax.random.key_data(base_key), placement.replicated()), impl=jax.random.key_impl(base_key)
        )
        if init_params is not None:
            init_params = jax.tree.map(lambda x: _onto_mesh(x, placement), init_params)
    data_shards = 1
    if data is not None:
        if placement is not None and placement.data_axis is not None:
            data_shards = placement.mesh.shape[placement.data_axis]
            for name, value in (("the number of examples in `data`", num_data), ("`batch_size`", batch_size)):
                if value % data_shards:
                    raise ValueError(
                        f"{name} must be a multiple of the size of data_axis={placement.data_axis!r} "
                        f"({data_shards}), got {value}"
                    )
        data = _place_data(data, data_shards, placement)

    batch_iter: Iterator[Any] | None = iter(batches) if batches is not None else None
    first_host_batch = None
    if batch_iter is not None:
        try:
            first_host_batch = next(batch_iter)
        except StopIteration:
            raise ValueError("`batches` is empty") from None
        _checks.check_finite_data("batches[0]", first_host_batch)

    update_transform = transform if _is_transform(transform) else transform(jax.random.key(0))
    if not _is_transform(update_transform):
        raise TypeError(
            f"`transform(key)` must return an optax GradientTransformation, got {type(update_transform).__name__}"
        )
    _check_not_functional("transform(key)", update_transform)

    # Trace log_posterior once (no compilation) so a wrong return type fails here, clearly.
    if init_params is None:
        one_params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), init_state.params)
    elif kw["stacked_init"]:
        one_params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), init_params)
    else:
        one_params = init_params
    if data is not None:
        # Placed data are (shard, example, ...) when a data axis splits them.
        lead = 1 if data_shards == 1 else 2
        example_batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct((batch_size, *x.shape[lead:]), x.dtype), data)
    else:
        example_batch = first_host_batch
    value, _ = _checks.check_log_posterior_output(jax.eval_shape(log_posterior, one_params, example_batch))
    if predict_fn is not None:
        jax.eval_shape(predict_fn, one_params, predict_inputs)
    if not transforms._holds_sampler(update_transform, one_params):
        # A warning, not an error: a user's own noisy transform (e.g. one built on
        # optax.add_noise) samples too, and we cannot tell it from optax.adam.
        warnings.warn(
            "`transform` holds none of this library's samplers (no sghmc_jax transform state in "
            "`transform.init(params)`, also searched inside optax.chain and other wrappers): a "
            "transform with no noise, such as optax.adam or optax.sgd, OPTIMISES rather than "
            "samples, and its 'draws' are an optimisation path, not posterior samples. Pass a "
            "sampler, e.g. sghmc_jax.sghmc(learning_rate, key=key), alone or inside optax.chain; "
            "ignore this warning only if your transform injects its own correctly scaled noise",
            UserWarning,
            stacklevel=3,
        )
    target = getattr(log_posterior, "temperature", None)
    transforms._check_injected_temperature(update_transform, one_params, target)
    declared = getattr(log_posterior, "num_data", None)
    if declared is not None and num_data is not None and int(declared) != num_data:
        raise ValueError(
            f"`log_posterior` was built for num_data={declared} examples (its data-size scaling), "
            f"but `data` holds {num_data}: pass num_data={num_data} to make_log_posterior (or "
            "centre), or the posterior's width is off by the ratio"
        )

    if placement is not None and kw["batches"] is not None and placement.data_axis is not None:
        raise ValueError("`data_axis` splits on-device `data`; host `batches` are shared by all chains")
    config = _Config(
        num_chains=num_chains,
        num_steps=num_steps,
        burn_in=burn_in,
        thin=thin,
        chunk_size=chunk_size,
        batch_size=batch_size,
        num_data=num_data,
        host_batches=batches is not None,
        continue_on_divergence=kw["on_divergence"] == "continue",
        data_shards=data_shards,
        placement=placement,
        batch_order=batch_order,
    )
    return _Setup(
        config=config,
        key=base_key,
        log_posterior=log_posterior,
        transform=transform,
        update_transform=update_transform,
        user_data=kw["data"],
        keep=kw["keep"],
        predict_fn=predict_fn,
        predict_inputs=predict_inputs,
        target_temperature=None if target is None else float(target),
        value_dtype=str(value.dtype),
        data=data,
        batch_iter=batch_iter,
        first_host_batch=first_host_batch,
        init_params=init_params,
        stacked_init=bool(kw["stacked_init"]),
        init_state=init_state,
        checkpoint_dir=None if checkpoint_dir is None else os.fspath(checkpoint_dir),
        checkpoint_every=checkpoint_every,
        output=None if kw["output"] is None else os.fspath(kw["output"]),
        callback=kw["callback"],
        progress=kw["progress"],
    )


def _check_disk(checkpoint_dir: Any, output: Any) -> None:
    """`checkpoint_dir` and `output` are paths, with their libraries installed, and apart."""
    for name, path in (("checkpoint_dir", checkpoint_dir), ("output", output)):
        if path is None:
            continue
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"`{name}` must be a path (str or os.PathLike), got {type(path).__name__}")
        if os.path.isfile(path):
            raise ValueError(f"`{name}` must be a directory, but {os.fspath(path)!r} is a file")
        _store._zarr()  # both write the draws to a zarr store
    if checkpoint_dir is not None:
        _checkpoint._orbax()
        if output is not None:
            ckpt, out = os.path.abspath(checkpoint_dir), os.path.abspath(output)
            state = os.path.join(ckpt, _checkpoint.STATE)
            if out in (ckpt, state) or out.startswith(state + os.sep):
                raise ValueError(
                    f"`output` {os.fspath(output)!r} must be a path of its own, not `checkpoint_dir` "
                    "(which holds the checkpoints)"
                )


def _placement(
    mesh: Any, chain_axis: Any, data_axis: Any, num_chains: int, params: ArrayTree, stacked: bool
) -> _engine.Placement | None:
    """The run's placement on `mesh`, checked; None without a mesh."""
    if mesh is None:
        if chain_axis is not None or data_axis is not None:
            raise ValueError("`chain_axis` and `data_axis` name axes of a `mesh`; pass the mesh too")
        return None
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"`mesh` must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    mesh = _auto_axes(mesh)
    for name, axis in (("chain_axis", chain_axis), ("data_axis", data_axis)):
        if axis is not None and axis not in mesh.axis_names:
            raise ValueError(f"`{name}` must be one of the mesh's axes {mesh.axis_names}, got {name}={axis!r}")
    if chain_axis is not None and chain_axis == data_axis:
        raise ValueError(f"`chain_axis` and `data_axis` must be different axes, got {chain_axis!r} for both")
    if chain_axis is not None and num_chains % mesh.shape[chain_axis]:
        raise ValueError(
            f"`num_chains` must be a multiple of the size of chain_axis={chain_axis!r} "
            f"({mesh.shape[chain_axis]}), got num_chains={num_chains}"
        )
    specs, paths = [], []
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        sharding = getattr(x, "sharding", None)
        spec = jax.sharding.PartitionSpec()
        if isinstance(sharding, jax.sharding.NamedSharding):
            if sharding.mesh.shape != mesh.shape or sharding.mesh.axis_names != mesh.axis_names:
                raise ValueError(
                    f"the params leaf at {jax.tree_util.keystr(path)} is sharded over another mesh "
                    f"({dict(sharding.mesh.shape)}) than `mesh` ({dict(mesh.shape)})"
                )
            spec = sharding.spec
        entries = tuple(spec) + (None,) * (np.ndim(x) - len(spec))
        if stacked:
            entries = entries[1:]
        used = {a for e in entries for a in (e if isinstance(e, tuple) else (e,)) if a is not None}
        if used & {chain_axis, data_axis} - {None}:
            raise ValueError(
                f"the params leaf at {jax.tree_util.keystr(path)} is partitioned over {sorted(used)}, "
                f"which must not include chain_axis={chain_axis!r} or data_axis={data_axis!r}"
            )
        specs.append(jax.sharding.PartitionSpec(*entries))
        shape = tuple(np.shape(x)[1:] if stacked else np.shape(x))
        paths.append((jax.tree_util.keystr(path), shape))
    return _engine.Placement(mesh, chain_axis, data_axis, tuple(specs), tuple(paths))


def _auto_axes(mesh: jax.sharding.Mesh) -> jax.sharding.Mesh:
    """The same devices and axis names with every axis Auto (the sampler places its arrays with
    sharding constraints, which Explicit axes, `jax.make_mesh`'s default, do not take)."""
    auto = jax.sharding.AxisType.Auto
    if all(t == auto for t in mesh.axis_types):
        return mesh
    return jax.sharding.Mesh(mesh.devices, mesh.axis_names, axis_types=(auto,) * len(mesh.axis_names))


def _onto_mesh(x: Any, placement: _engine.Placement) -> Any:
    """A params leaf on the run's mesh: partitioned as it is over the mesh it came on (the same
    devices and axes, maybe Explicit ones), or replicated when it came unpartitioned."""
    sharding = getattr(x, "sharding", None)
    if not isinstance(sharding, jax.sharding.NamedSharding):
        return _on_mesh(x, placement.replicated())
    if sharding.mesh != placement.mesh:
        return jax.device_put(x, jax.sharding.NamedSharding(placement.mesh, sharding.spec))
    return x


def _on_mesh(x: Any, sharding: jax.sharding.NamedSharding) -> jax.Array:
    """`x` (whole on this host) as an array laid out as `sharding`, whose devices may span
    processes (each process gives its own devices their parts)."""
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _place_data(data: ArrayTree, shards: int, placement: _engine.Placement | None) -> ArrayTree:
    """The data on the device(s): as they are without a data axis (replicated over a mesh), else
    split into `shards` equal shards of examples, (shard, example, ...), the shards over the
    data axis; a process holding the whole data set gives each of its devices its shards."""

    def place(x: Any) -> jax.Array:
        if placement is None:
            return jnp.asarray(x)
        if shards == 1:
            return _on_mesh(x, placement.replicated())
        host = np.asarray(x)
        return _on_mesh(host.reshape((shards, host.shape[0] // shards, *host.shape[1:])), placement.data_sharding())

    return jax.tree.map(place, data)


def _check_init_params(init_params: ArrayTree, stacked_init: bool, num_chains: int) -> ArrayTree:
    """The initial params, checked (floating-point, finite, and with a chain axis when
    `stacked_init`); the initial state's program broadcasts or copies them into buffers of the
    run's own (the run donates its state, which must never delete the caller's arrays)."""
    _checks.check_float_tree("init_params", init_params)
    _checks.check_finite_tree("init_params", init_params)
    if stacked_init:
        bad = {
            jax.tree_util.keystr(p): np.shape(x)
            for p, x in jax.tree_util.tree_flatten_with_path(init_params)[0]
            if np.ndim(x) == 0 or np.shape(x)[0] != num_chains
        }
        if bad:
            raise ValueError(
                f"with stacked_init=True every leaf of `init_params` must have a leading axis "
                f"of size num_chains={num_chains}, got shapes {bad}"
            )
    return jax.tree.map(lambda x: x if isinstance(x, jax.Array) else jnp.asarray(x), init_params)


# ---- 2. programs and the initial state -------------------------------------------------------


class _Programs:
    """The run's compiled programs (from the cache when an earlier call compiled them), and the
    time spent tracing and compiling them."""

    def __init__(self, setup: _Setup):
        self.setup = setup
        cfg = setup.config
        self.compile_time = 0.0
        self.spec = _engine.ChunkSpec(
            capacity=max(cfg.chunk_size, cfg.thin),
            thin=cfg.thin,
            batch_size=cfg.batch_size,
            num_data=cfg.num_data,
            freeze_diverged=cfg.continue_on_divergence,
            value_dtype=setup.value_dtype,
            data_shards=cfg.data_shards,
            placement=cfg.placement,
            batch_order=cfg.batch_order,
        )
        self.fns = _engine.Functions(
            log_posterior=setup.log_posterior,
            transform=setup.transform,
            update=setup.update_transform.update,
            keep=setup.keep,
            predict_fn=setup.predict_fn,
            target_temperature=setup.target_temperature,
        )
        self._init_program: _engine.Program | None = None
        # Trace both programs now, so that errors in the user's functions (and a temperature
        # that disagrees with the log posterior's) surface before anything compiles.
        t0 = time.perf_counter()
        if setup.init_state is None:
            perm_shape = (cfg.data_shards, cfg.num_data // cfg.data_shards) if cfg.num_data else (0, 0)
            how = (_is_transform(setup.transform), cfg.num_chains, perm_shape, setup.stacked_init, cfg.placement)
            self._init_program = _engine.Program(
                ("init", *how),
                _engine.initial_state_program(setup.transform, *how),
                _engine.abstract((setup.key, setup.init_params)),
                functions=(setup.transform,),
                probe=_inputs.init_probe(setup.transform, how[0], setup.key, setup.init_params, setup.stacked_init),
            )
            if cfg.placement is not None:
                # Only the compiled program knows its outputs' shardings (traced, they are
                # unspecified), and they key the chunk program: without this, the second call
                # of a run over a mesh would miss the cache the first one filled.
                self._init_program.executable()
            state_shape = self._init_program.out_info()
        else:
            state_shape = _engine.abstract(setup.init_state)
        state_shape = self._for_mode(state_shape)
        self.pred_sum, self.pred_count = self._predictive_buffers(state_shape)
        xs = self._host_batch_shape()
        self.chunk = _engine.Program(
            ("chunk", self.spec),
            _engine.chunk_program(self.spec, self.fns),
            (
                state_shape,
                xs,
                _engine.abstract(self.pred_sum),
                _engine.abstract(self.pred_count),
                _engine.abstract(setup.data),
                _engine.abstract(setup.predict_inputs),
                jax.ShapeDtypeStruct((3,), jnp.int32),
            ),
            donate_argnums=(0,),
            functions=tuple(self.fns._replace(update=None, target_temperature=None)),
            probe=_inputs.update_probe(setup.update_transform.update, state_shape, setup.target_temperature),
        )
        if self.needs_compiling:  # a cache hit is not compilation
            self.compile_time += time.perf_counter() - t0

    @property
    def needs_compiling(self) -> bool:
        return not self.chunk.cached or (self._init_program is not None and not self._init_program.cached)

    def _for_mode(self, state: Any) -> Any:
        """The state with `last_finite` as this run's divergence mode needs it."""
        if not self.setup.config.continue_on_divergence:
            return state._replace(last_finite=None)
        if state.last_finite is None:
            return state._replace(last_finite=(state.params, state.transform_state))
        return state

    def _predictive_buffers(self, state_shape: SamplerState) -> tuple[Any, Any]:
        setup = self.setup
        if setup.predict_fn is None:
            return None, None
        pred_shape = jax.eval_shape(
            jax.vmap(setup.predict_fn, in_axes=(0, None)), state_shape.params, setup.predict_inputs
        )
        place = setup.config.placement
        sharding = None if place is None else place.chains()
        pred_sum = jax.tree.map(
            lambda s: _zeros(s.shape, jnp.promote_types(s.dtype, jnp.float32), sharding), pred_shape
        )
        return pred_sum, _zeros((setup.config.num_chains,), jnp.int32, sharding)

    def _host_batch_shape(self) -> Any:
        if self.setup.batch_iter is None:
            return None
        first = jax.tree.map(np.asarray, self.setup.first_host_batch)
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct((self.spec.capacity, *x.shape), x.dtype), first)

    def initial_state(self) -> SamplerState:
        """The chains' state at the start of this call (not yet a checkpoint's)."""
        setup = self.setup
        if self._init_program is not None:
            t0 = time.perf_counter()
            cached = self._init_program.cached
            init = self._init_program.executable()
            if not cached:
                self.compile_time += time.perf_counter() - t0
            state = init(setup.key, setup.init_params)
        else:
            # A copy, so that continuing a run leaves the earlier result's final_state usable
            # (the chunk donates its state).
            state = _copy(setup.init_state)
        state = self._for_mode(state)
        if state.last_finite is not None and state.last_finite[0] is state.params:
            # The chunk donates its state: `last_finite` needs buffers of its own.
            state = state._replace(last_finite=_copy(state.last_finite))
        return state

    def chunk_executable(self) -> Any:
        if self.chunk.cached:
            return self.chunk.executable()
        t0 = time.perf_counter()
        executable = self.chunk.executable()
        self.compile_time += time.perf_counter() - t0
        return executable


def _zeros(shape: tuple[int, ...], dtype: Any, sharding: Any) -> jax.Array:
    """Zeros on the default device, or laid out as `sharding` (whose devices may span processes)."""
    if sharding is None:
        return jnp.zeros(shape, dtype)
    return _on_mesh(np.zeros(shape, dtype), sharding)


def _host(x: Any) -> np.ndarray:
    """`x` as a NumPy array on this host, gathering the parts other processes hold."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _copy(tree: Any) -> Any:
    return jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x, tree)


# ---- 3. the chunk loop -----------------------------------------------------------------------


def _plan(config: _Config, capacity: int) -> list[tuple[int, int, int]]:
    """The call's steps as chunks (before, draws, after): burn-in steps, then draws of `thin`
    steps each, then the steps after the last draw, at most `capacity` steps per chunk."""
    thin = config.thin
    burn = config.burn_in
    draws = (config.num_steps - config.burn_in) // thin
    tail = (config.num_steps - config.burn_in) % thin
    plan = []
    while burn or draws or tail:
        before = min(burn, capacity)
        burn -= before
        room = capacity - before
        d = min(draws, room // thin) if not burn else 0
        draws -= d
        room -= d * thin
        after = min(tail, room) if not draws and not burn else 0
        tail -= after
        plan.append((before, d, after))
    return plan


class _MemorySink:
    """The run's draws, their steps and the log-posterior trace in host memory (the default)."""

    def __init__(self) -> None:
        self.draws: list[ArrayTree] = []
        self.steps: list[np.ndarray] = []
        self.traces: list[np.ndarray] = []
        self.kinetics: list[np.ndarray] = []

    def add(
        self, draws: Any, n_draws: int, kept: np.ndarray | None, steps: Any, trace: Any, n_steps: int, kinetic: Any
    ) -> None:
        self.traces.append(_host(trace)[:n_steps].T)
        self.kinetics.append(_host(kinetic)[:n_steps].T)
        if n_draws:
            take = slice(0, n_draws) if kept is None else np.flatnonzero(kept[:n_draws])
            self.draws.append(jax.tree.map(lambda x: np.swapaxes(_host(x)[take], 0, 1), draws))
            self.steps.append(_host(steps)[take].astype(np.int64))

    def last_trace(self) -> np.ndarray:
        return self.traces[-1]

    def result(self, like: ArrayTree, num_chains: int) -> tuple[ArrayTree, np.ndarray, np.ndarray, np.ndarray]:
        log_post = np.concatenate(self.traces, axis=1) if self.traces else np.zeros((num_chains, 0))
        kinetic = np.concatenate(self.kinetics, axis=1) if self.kinetics else np.zeros((num_chains, 0))
        if not self.draws:
            empty = jax.tree.map(lambda x: np.zeros((x.shape[0], 0, *x.shape[1:]), x.dtype), like)
            return empty, np.zeros((0,), np.int64), log_post, kinetic
        samples = jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *self.draws)
        return samples, np.concatenate(self.steps), log_post, kinetic


class _StoreSink:
    """The run's draws written to a zarr store as they come (`output=`, or the draws of a
    checkpointed run): host memory stays at one chunk."""

    def __init__(self, store: _store.DrawStore, in_memory: bool):
        self.store = store
        self.in_memory = in_memory  # load the draws into memory for the result (no `output`)
        self._last: np.ndarray | None = None

    def add(
        self, draws: Any, n_draws: int, kept: np.ndarray | None, steps: Any, trace: Any, n_steps: int, kinetic: Any
    ) -> None:
        self.store.add(
            draws, n_draws, None if kept is None else np.asarray(kept), _host(steps), trace, n_steps, kinetic
        )
        self._last = _host(trace)[n_steps - 1] if n_steps else self._last

    def last_trace(self) -> np.ndarray:
        return np.asarray(self._last)[:, None]

    def result(self, like: ArrayTree, num_chains: int) -> tuple[ArrayTree, np.ndarray, Any, Any]:
        self.store.finalize()
        treedef = jax.tree.structure(like)
        samples, steps, log_post = self.store.samples(treedef), self.store.sample_steps(), self.store.log_posterior()
        kinetic = self.store.kinetic_trace()
        if self.in_memory:
            samples, log_post, kinetic = jax.tree.map(np.asarray, samples), np.asarray(log_post), np.asarray(kinetic)
        return samples, steps, log_post, kinetic


class _Outcome(NamedTuple):
    state: SamplerState
    step0: int
    sink: _MemorySink | _StoreSink
    pred_sum: Any
    pred_count: Any
    wall_time: float
    steps_run: int  # by this call (a resumed run's steps before the kill are not counted)
    divergence: tuple[int, int] | None


def _take_host_batches(it: Iterator[Any], first: Any, n: int, capacity: int) -> tuple[Any, Any]:
    """Takes n batches (the pending one first), stacks them on a new leading axis and pads it to
    `capacity` (the chunk program's fixed size) by repeating the last."""
    items = []
    pending = first
    for _ in range(n):
        if pending is None:
            try:
                pending = next(it)
            except StopIteration:
                raise ValueError(
                    f"`batches` ran out: it must yield one batch per step ({n - len(items)} more "
                    "were needed to finish this chunk)"
                ) from None
        items.append(pending)
        pending = None
    items += [items[-1]] * (capacity - n)
    stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *items)
    return jax.device_put(stacked), None


def _across_processes(digests: dict[str, str]) -> dict[str, list[str]]:
    """Each named digest as every process of the run computed it, in process order."""
    from jax.experimental import multihost_utils

    names = sorted(digests)
    mine = np.stack([np.frombuffer(bytes.fromhex(digests[n]), np.uint8) for n in names])
    every = np.asarray(multihost_utils.process_allgather(mine))  # (process, name, 32)
    return {n: [bytes(every[p, i]).hex() for p in range(every.shape[0])] for i, n in enumerate(names)}


def _check_processes_agree(setup: _Setup) -> None:
    """With several processes (`jax.distributed`), each must have been given the same key and
    data (each takes its own part of them): checked by digests before anything compiles, since
    otherwise the run completes with draws that are no one run's."""
    if jax.process_count() == 1:
        return
    every = _across_processes(
        {
            "`key`": _checkpoint.digest(jax.random.key_data(setup.key)),
            "`data`": _checkpoint.digest(setup.user_data),
            "the first of `batches`": _checkpoint.digest(setup.first_host_batch),
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


def _identity_parts(setup: _Setup, programs: _Programs, step0: int, state: SamplerState) -> dict[str, Any]:
    """What identifies the run, for its checkpoints and draw store: every setting, the key, the
    compiled programs (the log posterior, the transform with its hyperparameters and schedules,
    `keep`, `predict_fn`) and digests of the values it starts from, so that a rerun that differs
    in anything that changes the draws is refused, not resumed or returned."""
    initial = setup.init_params if setup.init_state is None else setup.init_state
    programs_run = [programs.chunk] + ([programs._init_program] if programs._init_program is not None else [])
    initial_values = _checkpoint.digest(initial)
    if jax.process_count() > 1:  # each process digested the parts of sharded params it holds
        every = _across_processes({"initial values": initial_values})["initial values"]
        initial_values = hashlib.sha256("".join(every).encode()).hexdigest()
    return {
        "settings": dataclasses.asdict(setup.config),
        "key": [np.asarray(_host(jax.random.key_data(setup.key))).tolist(), str(jax.random.key_impl(setup.key))],
        "start step": step0,
        "state layout": [(np.shape(x), str(getattr(x, "dtype", type(x)))) for x in jax.tree.leaves(state)],
        "hyperparameters": getattr(setup.update_transform, "hyperparameters", None),
        "program": [p.digest() for p in programs_run],
        "data": _checkpoint.digest(setup.user_data),
        "initial values": initial_values,
        "predict_inputs": _checkpoint.digest(setup.predict_inputs),
        "first batch": _checkpoint.digest(setup.first_host_batch),
    }


def _run(setup: _Setup, programs: _Programs, state: SamplerState) -> _Outcome:
    config = setup.config
    spec = programs.spec
    step0 = int(_host(state.step))
    pred_sum, pred_count = programs.pred_sum, programs.pred_count
    plan = _plan(config, spec.capacity)
    start_chunk = 0

    checkpointer = None
    restored = None
    sink: _MemorySink | _StoreSink = _MemorySink()
    if setup.output is not None or setup.checkpoint_dir is not None:
        fingerprint, parts = _checkpoint.identity(_identity_parts(setup, programs, step0, state))
        if setup.checkpoint_dir is not None:
            checkpointer = _checkpoint.Checkpointer(setup.checkpoint_dir, fingerprint, parts)
            restored = checkpointer.load(state, (pred_sum, pred_count))
        path = setup.output if setup.output is not None else checkpointer.draws_path
        max_draws = sum(d for _, d, _ in plan)
        out = programs.chunk.out_info()
        store = _store.DrawStore(
            path,
            params=state.params,
            num_chains=config.num_chains,
            max_draws=max_draws,
            max_steps=config.num_steps,
            chunk_draws=spec.max_draws,
            chunk_steps=spec.capacity,
            # A checkpointed run that stopped before its first checkpoint starts over in its own
            # store: the draws there are this run's (same fingerprint), written again identically.
            fingerprint=fingerprint,
            parts=parts,
            resume=checkpointer is not None,
            trace_dtypes=(out.trace.dtype, out.kinetic.dtype),
        )
        sink = _StoreSink(store, in_memory=setup.output is None)
        if restored is None:
            store.truncate(0, 0)
    if restored is not None:
        state, (pred_sum, pred_count), meta = restored
        start_chunk = int(meta["next_chunk"])
        sink.store.truncate(int(meta["draws"]), int(meta["steps"]))

    bar = _progress.Progress(config.num_steps, enabled=setup.progress)
    if start_chunk:
        bar.resumed(int(_host(state.step)) - step0)
    wall_time = 0.0
    steps_run = 0
    divergence: tuple[int, int] | None = None
    last_checkpoint_step = int(_host(state.step))

    saved = {int(_host(state.step))} if restored is not None else set()

    def save(next_chunk: int) -> None:
        step = int(_host(state.step))
        if step in saved:  # the last chunk's checkpoint is also the final one
            return
        draws, steps = (sink.store.draws_written, sink.store.steps_written)
        checkpointer.save(
            step, state, (pred_sum, pred_count), {"next_chunk": next_chunk, "draws": draws, "steps": steps}
        )
        saved.add(step)

    first_host_batch = setup.first_host_batch
    try:
        if programs.needs_compiling:
            bar.compiling()
        run = programs.chunk_executable()
        for index in range(start_chunk, len(plan)):
            before, n_draws, after = plan[index]
            n_steps = before + n_draws * spec.thin + after
            xs = None
            if setup.batch_iter is not None:
                xs, first_host_batch = _take_host_batches(setup.batch_iter, first_host_batch, n_steps, spec.capacity)
            t0 = time.perf_counter()
            steps_run += n_steps
            out = run(
                state,
                xs,
                pred_sum,
                pred_count,
                setup.data,
                setup.predict_inputs,
                np.asarray([before, n_draws, after], np.int32),
            )
            state, pred_sum, pred_count = out.state, out.pred_sum, out.pred_count
            kept = _host(out.keeps) if (n_draws and setup.keep is not None) else None
            sink.add(
                out.draws, n_draws, kept, out.draw_steps[:n_draws] if n_draws else None, out.trace, n_steps, out.kinetic
            )
            wall_time += time.perf_counter() - t0
            last = sink.last_trace()[:, -1]
            finite = last[np.isfinite(last)]
            mean_lp = float(finite.mean()) if finite.size else float("nan")
            bar.update(n_steps, mean_lp, wall_time)
            diverged_at = _host(state.diverged_at)
            if not config.continue_on_divergence and (diverged_at >= 0).any():
                chain = int(np.argmin(np.where(diverged_at >= 0, diverged_at, np.iinfo(np.int32).max)))
                divergence = (chain, int(diverged_at[chain]))
                break
            if checkpointer is not None and int(_host(state.step)) - last_checkpoint_step >= setup.checkpoint_every:
                save(index + 1)
                last_checkpoint_step = int(_host(state.step))
            if setup.callback is not None:
                setup.callback(
                    {
                        "step": int(_host(state.step)) - step0,
                        "num_steps": config.num_steps,
                        "mean_log_posterior": mean_lp,
                    }
                )
        if checkpointer is not None and divergence is None:
            save(len(plan))
    finally:
        bar.close()
    return _Outcome(state, step0, sink, pred_sum, pred_count, wall_time, steps_run, divergence)


# ---- 4. the result ---------------------------------------------------------------------------


def _result(setup: _Setup, programs: _Programs, outcome: _Outcome) -> SampleResult:
    state = outcome.state
    samples, sample_steps, log_post, kinetic = outcome.sink.result(state.params, setup.config.num_chains)
    diverged_at = _host(state.diverged_at)
    if (diverged_at >= 0).any():
        # A draw whose log posterior turned out non-finite (found at the next step, once the
        # draw was taken) is missing too.
        missing = (diverged_at[:, None] >= 0) & (sample_steps[None, :] >= diverged_at[:, None])
        if isinstance(samples, np.ndarray) or all(isinstance(x, np.ndarray) for x in jax.tree.leaves(samples)):
            samples = jax.tree.map(
                lambda x: np.where(missing.reshape(missing.shape + (1,) * (x.ndim - 2)), np.nan, x), samples
            )
        else:  # in the store: mark them there
            outcome.sink.store.mark_missing(missing)
    predictive_mean = None
    if outcome.pred_sum is not None:
        counts = np.maximum(_host(outcome.pred_count), 1)
        predictive_mean = jax.tree.map(
            lambda s: np.asarray(s) / counts.reshape((-1,) + (1,) * (np.ndim(s) - 1)),
            jax.tree.map(_host, outcome.pred_sum),
        )
    wall = outcome.wall_time
    result = SampleResult(
        samples=samples,
        sample_steps=sample_steps,
        log_posterior=log_post,
        final_state=state,
        diverged_at=diverged_at,
        predictive_mean=predictive_mean,
        wall_time=wall,
        compile_time=programs.compile_time,
        steps_per_second=outcome.steps_run / wall if wall > 0 else float("nan"),
        kinetic=kinetic,
        sampler=getattr(setup.update_transform, "sampler", None),
        hyperparameters=getattr(setup.update_transform, "hyperparameters", None),
        _source=_diagnose.RunSource(
            log_posterior=setup.log_posterior,
            data=setup.user_data,
            batch_size=setup.config.batch_size,
            burn_in=setup.config.burn_in,
            host_batches=setup.config.host_batches,
        ),
    )
    if outcome.divergence is not None:
        chain, step = outcome.divergence
        local = step - outcome.step0  # index of that step in this call's trace
        if bool(_host(state.diverged_in_params)[chain]):
            cause = "its params were non-finite"
        else:
            cause = "its log posterior was non-finite at the params"
        before = result.sample_steps < step
        result.samples = jax.tree.map(lambda x: np.asarray(x)[:, before], result.samples)
        result.sample_steps = result.sample_steps[before]
        result.log_posterior = np.asarray(result.log_posterior)[:, : local + 1]
        result.kinetic = np.asarray(result.kinetic)[:, : local + 1]
        raise DivergenceError(chain, step, cause, result)
    return result
