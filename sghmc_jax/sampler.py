"""The sampler: runs any of this library's transforms for many steps, over several chains, with
minibatches, burn-in, thinning, progress, diagnostics, divergence handling and exact resume.

Steps run in jit-compiled `lax.scan` chunks with no per-step Python; between chunks the thinned
samples move to the host, so the device holds one chunk of draws, never the whole run.

Randomness: `key` is split into one key per chain, and each chain's key into three: one seeds its
transform's init (when `transform` is a factory of a key), one its per-step noise and one its
minibatch order. Step t of a chain uses `fold_in(noise_key, t)` and epoch e's permutation uses
`fold_in(data_key, e)`, so the draws depend only on the key and the global step number: not on
chunking, checkpoints or continuation.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sghmc_jax import _checks, diagnostics
from sghmc_jax.types import ArrayTree, LogProbFn

__all__ = [
    "DivergenceError",
    "SampleResult",
    "SamplerState",
    "ScaledLogPosterior",
    "make_log_posterior",
    "sample",
]

TransformLike = optax.GradientTransformation | Callable[[jax.Array], optax.GradientTransformation]


class ScaledLogPosterior(NamedTuple):
    """A log posterior built from a per-example likelihood, and the temperature it needs.

    Attributes:
        log_posterior: `log_posterior(params, batch) -> (value, aux)`.
        temperature: the temperature to give the transform so that it targets the posterior.
    """

    log_posterior: LogProbFn
    temperature: float


def make_log_posterior(
    log_likelihood: Callable[[ArrayTree, Any], jax.Array],
    log_prior: Callable[[ArrayTree], jax.Array],
    num_data: int,
    *,
    form: str = "sum",
) -> ScaledLogPosterior:
    """Builds `log_posterior(params, batch)` for minibatches with the data-size scaling right.

    The minibatch estimate of the full-data log posterior log p(θ) + Σᵢ log p(yᵢ | θ) is
    `N · mean_batch(log p(yᵢ | θ)) + log p(θ)`. Two equivalent forms are offered:

    - `form="sum"` (the classic form): that estimate itself, with temperature 1.
    - `form="mean"` (posteriors' recipe): the estimate divided by N, i.e.
      `mean_batch(log p(yᵢ | θ)) + log p(θ) / N`, with temperature 1/N. Its gradients are O(1)
      whatever N is, so step sizes carry over between data sets; exp(value / T) is the same
      target.

    Args:
        log_likelihood: `log_likelihood(params, batch) -> (batch_size,)` per-example
            log-likelihoods of the batch.
        log_prior: `log_prior(params) -> scalar`.
        num_data: N, the number of examples in the full data set.
        form: "sum" or "mean".

    Returns:
        `ScaledLogPosterior(log_posterior, temperature)`; pass `temperature` to the transform.
        The aux output is the batch's mean log-likelihood.

    Example:
        >>> import jax.numpy as jnp
        >>> from sghmc_jax import make_log_posterior
        >>> ll = lambda w, batch: -0.5 * (batch - w) ** 2
        >>> lp, temperature = make_log_posterior(ll, lambda w: -0.5 * w**2, 100, form="mean")
        >>> temperature
        0.01
    """
    if not callable(log_likelihood):
        raise TypeError(f"`log_likelihood` must be callable, got {type(log_likelihood).__name__}")
    if not callable(log_prior):
        raise TypeError(f"`log_prior` must be callable, got {type(log_prior).__name__}")
    if isinstance(num_data, bool) or not isinstance(num_data, (int, np.integer)) or num_data < 1:
        raise ValueError(f"`num_data` must be an int >= 1, got num_data={num_data!r}")
    if form not in ("sum", "mean"):
        raise ValueError(f"`form` must be 'sum' or 'mean', got form={form!r}")
    n = int(num_data)

    def _mean_ll(params: ArrayTree, batch: Any) -> jax.Array:
        ll = log_likelihood(params, batch)
        if jnp.ndim(ll) != 1:
            raise TypeError(
                "`log_likelihood` must return one value per example, shape (batch_size,), "
                f"got shape {jnp.shape(ll)}"
            )
        return jnp.mean(ll)

    if form == "sum":

        def log_posterior(params: ArrayTree, batch: Any) -> tuple[jax.Array, jax.Array]:
            mean_ll = _mean_ll(params, batch)
            return n * mean_ll + log_prior(params), mean_ll

        return ScaledLogPosterior(log_posterior, 1.0)

    def log_posterior_mean(params: ArrayTree, batch: Any) -> tuple[jax.Array, jax.Array]:
        mean_ll = _mean_ll(params, batch)
        return mean_ll + log_prior(params) / n, mean_ll

    return ScaledLogPosterior(log_posterior_mean, 1.0 / n)


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
        diverged_at: per-chain step at which the log posterior first became non-finite, or −1.
    """

    step: jax.Array
    params: ArrayTree
    transform_state: Any
    noise_key: jax.Array
    data_key: jax.Array
    perm: jax.Array
    diverged_at: jax.Array


@dataclasses.dataclass
class SampleResult:
    """What `sample` returns.

    Attributes:
        samples: pytree like the params with leading axes (chain, draw), on the host.
        sample_steps: (draw,) the step count after which each draw was taken.
        log_posterior: (chain, step) the log posterior at every step of this run (at the params
            the step's gradient was taken at), burn-in included.
        final_state: a `SamplerState`; `sample(..., init_state=result.final_state)` continues.
        diverged_at: (chain,) step of the first non-finite log posterior, −1 if none.
        predictive_mean: running mean of `predict_fn` over the kept draws, per chain (leading
            chain axis), or None.
        wall_time: seconds spent running steps (compilation excluded).
        compile_time: seconds spent compiling.
        steps_per_second: steps per chain per second of `wall_time`.
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

    @property
    def num_chains(self) -> int:
        return int(self.log_posterior.shape[0])

    def summary(self) -> dict[str, dict[str, np.ndarray]]:
        """Per-parameter mean, sd, MCSE, bulk/tail ESS and rank-normalised split R-hat
        (`diagnostics.summary`) over the chains that did not diverge."""
        ok = self.diverged_at < 0
        if not ok.any():
            raise ValueError("every chain diverged: no draws to summarise")
        return diagnostics.summary(jax.tree.map(lambda x: x[ok], self.samples))

    def to_arviz(self) -> Any:
        """The draws as an `arviz.InferenceData` (needs ArviZ installed)."""
        try:
            import arviz as az
        except ImportError as err:
            raise ImportError("to_arviz() needs ArviZ: pip install arviz") from err
        leaves, _ = jax.tree_util.tree_flatten_with_path(self.samples)
        posterior = {diagnostics._path_name(path): np.asarray(leaf) for path, leaf in leaves}
        return az.from_dict(posterior=posterior)


class DivergenceError(FloatingPointError):
    """A chain's log posterior became non-finite.

    Attributes:
        chain: the first chain that diverged.
        step: the step at which its log posterior was first non-finite.
        result: a `SampleResult` holding the draws (of all chains) taken before that step.
    """

    def __init__(self, chain: int, step: int, result: SampleResult):
        super().__init__(
            f"chain {chain} diverged: its log posterior was non-finite at step {step} (evaluated "
            f"at the params after {step} steps). The {len(result.sample_steps)} draws taken "
            "before it are in this exception's `.result`; pass on_divergence='continue' to keep "
            "the other chains running."
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


def _is_transform(x: Any) -> bool:
    return isinstance(x, optax.GradientTransformation) or (
        hasattr(x, "init") and hasattr(x, "update") and not isinstance(x, type)
    )


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {name}={value!r}")
    return int(value)


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
) -> SampleResult:
    """Runs `num_chains` chains of a transform for `num_steps` steps and returns the draws.

    Args:
        key: PRNG key (typed, raw or int seed) for everything random in the run.
        log_posterior: `log_posterior(params, batch) -> (value, aux)`; `make_log_posterior`
            builds one from a per-example likelihood with the data-size scaling right.
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
            draws a minibatch of `batch_size` every step, walking its own permutation each epoch
            (without replacement; the last N mod batch_size examples of a permutation sit that
            epoch out). None passes `batch=None` (unless `batches` is given).
        batch_size: minibatch size, 1 <= batch_size <= N; required with `data`.
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
        chunk_size: steps per compiled chunk; samples go to the host between chunks.
        progress: show a progress bar (tqdm if installed, else a line per chunk on stderr).
        on_divergence: "raise" stops at the end of the chunk where a chain's log posterior
            becomes non-finite and raises `DivergenceError` with the draws taken before it;
            "continue" freezes that chain (its later draws are NaN, `diverged_at` says where)
            and runs the others on.
        predict_fn: optional `predict_fn(params, predict_inputs)`; the sampler keeps a running
            mean of it over the kept draws without storing them.
        predict_inputs: the inputs for `predict_fn`.
        init_state: a `SamplerState` to continue from (e.g. `result.final_state`); then
            `init_params`, `stacked_init` and `num_chains` come from it.
        checkpoint_dir: where to save the full sampler state every `checkpoint_every` steps (at
            chunk ends); if it holds a checkpoint of the same run, the run resumes from it and
            ends bit-identical to an uninterrupted run. Writes are atomic.
        checkpoint_every: steps between checkpoints (rounded up to a chunk end).
        callback: optional function called on the host after every chunk with a dict of
            progress information (`step`, `num_steps`, `mean_log_posterior`).

    Returns:
        A `SampleResult`.

    Raises:
        DivergenceError: if a chain diverges with `on_divergence="raise"`.
        ValueError, TypeError: for bad arguments, before anything is compiled.
    """
    # ---- validation, all before any compilation ---------------------------------------------
    if not callable(log_posterior):
        raise TypeError(f"`log_posterior` must be callable, got {type(log_posterior).__name__}")
    if not (_is_transform(transform) or callable(transform)):
        raise TypeError(
            "`transform` must be an optax GradientTransformation (e.g. sghmc_jax.sghmc(...)) or "
            f"a function key -> transform, got {type(transform).__name__}"
        )
    num_steps = _check_int("num_steps", num_steps, 1)
    burn_in = _check_int("burn_in", burn_in, 0)
    thin = _check_int("thin", thin, 1)
    chunk_size = _check_int("chunk_size", chunk_size, 1)
    if burn_in >= num_steps:
        raise ValueError(
            f"`burn_in` must be < num_steps so that some draws are kept, got burn_in={burn_in} "
            f"and num_steps={num_steps}"
        )
    if on_divergence not in ("raise", "continue"):
        raise ValueError(f"`on_divergence` must be 'raise' or 'continue', got {on_divergence!r}")
    if (predict_fn is None) != (predict_inputs is None):
        raise ValueError("`predict_fn` and `predict_inputs` must be given together")
    if checkpoint_every is not None:
        checkpoint_every = _check_int("checkpoint_every", checkpoint_every, 1)
        if checkpoint_dir is None:
            raise ValueError("`checkpoint_every` needs `checkpoint_dir`")
    elif checkpoint_dir is not None:
        checkpoint_every = chunk_size
    if data is not None and batches is not None:
        raise ValueError("pass either `data` (on the device) or `batches` (from the host), not both")
    num_data = None
    if data is not None:
        num_data = _leading_size("data", data)
        if batch_size is None:
            raise ValueError("`batch_size` is required with `data`")
        batch_size = _check_int("batch_size", batch_size, 1)
        if batch_size > num_data:
            raise ValueError(
                f"`batch_size` must be <= the number of examples in `data` ({num_data}), got "
                f"batch_size={batch_size}"
            )
        data = jax.tree.map(jnp.asarray, data)
    elif batch_size is not None and batches is None:
        raise ValueError("`batch_size` needs `data`")

    base_key = _checks.canonical_key(key)
    if init_state is not None:
        if not isinstance(init_state, SamplerState):
            raise TypeError(f"`init_state` must be a SamplerState, got {type(init_state).__name__}")
        num_chains = int(init_state.noise_key.shape[0])
    num_chains = _check_int("num_chains", num_chains, 1)
    if init_state is None:
        _checks.check_float_tree("init_params", init_params)
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
            # A copy: the run donates its state's buffers, which must not be the caller's.
            stacked = jax.tree.map(jnp.array, init_params)
        else:
            stacked = jax.tree.map(
                lambda x: jnp.broadcast_to(jnp.asarray(x), (num_chains, *np.shape(x))), init_params
            )
    else:
        stacked = init_state.params

    config = _Config(
        num_chains=num_chains,
        num_steps=num_steps,
        burn_in=burn_in,
        thin=thin,
        chunk_size=chunk_size,
        batch_size=batch_size,
        num_data=num_data,
        host_batches=batches is not None,
        continue_on_divergence=on_divergence == "continue",
    )

    batch_iter: Iterator[Any] | None = iter(batches) if batches is not None else None
    first_host_batch = None
    if batch_iter is not None:
        try:
            first_host_batch = next(batch_iter)
        except StopIteration:
            raise ValueError("`batches` is empty") from None

    tx_for_update = transform if _is_transform(transform) else transform(jax.random.key(0))
    if not _is_transform(tx_for_update):
        raise TypeError(
            f"`transform(key)` must return an optax GradientTransformation, got "
            f"{type(tx_for_update).__name__}"
        )

    # Trace log_posterior once (no compilation) so a wrong return type fails here, clearly.
    one_params = jax.tree.map(lambda x: x[0], stacked)
    if data is not None:
        example_batch = jax.tree.map(lambda x: x[:batch_size], data)
    else:
        example_batch = first_host_batch
    _eval_log_posterior_shape(log_posterior, one_params, example_batch)
    if predict_fn is not None:
        jax.eval_shape(predict_fn, one_params, predict_inputs)

    # ---- state -----------------------------------------------------------------------------
    if init_state is None:
        state = _initial_state(base_key, stacked, transform, num_chains, num_data)
    else:
        # A copy, so that continuing a run leaves the earlier result's final_state usable.
        state = jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x, init_state)
    step0 = int(state.step)

    pred_sum = pred_count = None
    if predict_fn is not None:
        pred_shape = jax.eval_shape(
            jax.vmap(predict_fn, in_axes=(0, None)), state.params, predict_inputs
        )
        pred_sum = jax.tree.map(
            lambda s: jnp.zeros(s.shape, jnp.promote_types(s.dtype, jnp.float32)), pred_shape
        )
        pred_count = jnp.zeros((num_chains,), jnp.int32)

    checkpointer = None
    restored = None
    if checkpoint_dir is not None:
        fingerprint = _fingerprint(config, base_key, step0, state)
        checkpointer = _Checkpointer(os.fspath(checkpoint_dir), fingerprint)
        restored = checkpointer.load(state, pred_sum)

    runner = _Runner(
        config=config,
        log_posterior=log_posterior,
        transform=tx_for_update,
        data=data,
        keep=keep,
        predict_fn=predict_fn,
        predict_inputs=predict_inputs,
    )
    plan = _plan(config, step0)
    draws: list[Any] = []
    draw_steps: list[np.ndarray] = []
    traces: list[np.ndarray] = []
    start_chunk = 0
    if restored is not None:
        state, draws, draw_steps, traces, pred_sum, pred_count, start_chunk = restored

    bar = _Progress(num_steps, enabled=progress)
    if start_chunk:
        bar.resumed(int(state.step) - step0)
    compile_time = 0.0
    wall_time = 0.0
    diverged_error: tuple[int, int] | None = None
    last_checkpoint_step = int(state.step)
    try:
        for index in range(start_chunk, len(plan)):
            kind, n = plan[index]
            xs = None
            if batch_iter is not None:
                xs, first_host_batch = _take_host_batches(batch_iter, first_host_batch, n * (thin if kind == "draw" else 1))
            t0 = time.perf_counter()
            fn = runner.compiled(kind, n, state, xs, pred_sum, pred_count)
            compile_time += time.perf_counter() - t0
            t0 = time.perf_counter()
            out = fn(state, xs, pred_sum, pred_count, data, predict_inputs)
            state, trace, chunk_draws, chunk_steps, pred_sum, pred_count = out
            trace = np.asarray(jax.device_get(trace)).T  # (chain, n_steps)
            if chunk_draws is not None:
                chunk_draws = jax.device_get(chunk_draws)
            wall_time += time.perf_counter() - t0
            traces.append(trace)
            if chunk_draws is not None:
                chunk_steps = np.asarray(chunk_steps)
                kept = np.asarray(chunk_draws[1]) if keep is not None else None
                samples_chunk = chunk_draws[0]
                if kept is not None:
                    samples_chunk = jax.tree.map(lambda x: x[:, kept], samples_chunk)
                    chunk_steps = chunk_steps[kept]
                draws.append(samples_chunk)
                draw_steps.append(chunk_steps)
            last = trace[:, -1][np.isfinite(trace[:, -1])] if trace.size else trace
            mean_lp = float(last.mean()) if last.size else float("nan")
            bar.update(trace.shape[1], mean_lp, wall_time)
            if callback is not None:
                callback({"step": int(state.step) - step0, "num_steps": num_steps, "mean_log_posterior": mean_lp})
            diverged_at = np.asarray(state.diverged_at)
            if not config.continue_on_divergence and (diverged_at >= 0).any():
                chain = int(np.argmin(np.where(diverged_at >= 0, diverged_at, np.iinfo(np.int32).max)))
                diverged_error = (chain, int(diverged_at[chain]))
                break
            if checkpointer is not None and int(state.step) - last_checkpoint_step >= checkpoint_every:
                checkpointer.save(state, draws, draw_steps, traces, pred_sum, pred_count, index + 1)
                last_checkpoint_step = int(state.step)
    finally:
        bar.close()

    samples, sample_steps = _concat_draws(draws, draw_steps, stacked)
    log_post = np.concatenate(traces, axis=1) if traces else np.zeros((num_chains, 0))
    predictive_mean = None
    if pred_sum is not None:
        predictive_mean = jax.tree.map(
            lambda s: np.asarray(s) / np.maximum(np.asarray(pred_count), 1).reshape((-1,) + (1,) * (np.ndim(s) - 1)),
            jax.device_get(pred_sum),
        )
    steps_run = int(state.step) - step0
    result = SampleResult(
        samples=samples,
        sample_steps=sample_steps,
        log_posterior=log_post,
        final_state=state,
        diverged_at=np.asarray(state.diverged_at),
        predictive_mean=predictive_mean,
        wall_time=wall_time,
        compile_time=compile_time,
        steps_per_second=steps_run / wall_time if wall_time > 0 else float("nan"),
    )
    if diverged_error is not None:
        chain, step = diverged_error
        before = result.sample_steps <= step
        result.samples = jax.tree.map(lambda x: x[:, before], result.samples)
        result.sample_steps = result.sample_steps[before]
        raise DivergenceError(chain, step, result)
    if checkpointer is not None:
        checkpointer.save(state, draws, draw_steps, traces, pred_sum, pred_count, len(plan))
    return result


# ---- internals ------------------------------------------------------------------------------


def _eval_log_posterior_shape(log_posterior: LogProbFn, params: ArrayTree, batch: Any) -> None:
    out = jax.eval_shape(log_posterior, params, batch)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(
            "`log_posterior` must return a tuple (value, aux); return (value, None) when there is "
            f"no auxiliary output. Got {type(out).__name__}"
            + (f" of shape {out.shape}" if hasattr(out, "shape") else "")
        )
    if out[0].shape != ():
        raise TypeError(f"`log_posterior` must return a scalar value, got shape {out[0].shape}")


def _initial_state(
    key: jax.Array, params: ArrayTree, transform: TransformLike, num_chains: int, num_data: int | None
) -> SamplerState:
    chain_keys = jax.random.split(key, num_chains)

    def init_one(chain_key: jax.Array, p: ArrayTree) -> tuple[Any, jax.Array, jax.Array]:
        init_key, noise_key, data_key = jax.random.split(chain_key, 3)
        tx = transform if _is_transform(transform) else transform(init_key)
        return tx.init(p), noise_key, data_key

    tx_state, noise_key, data_key = jax.jit(jax.vmap(init_one))(chain_keys, params)
    n = num_data or 0
    return SamplerState(
        step=jnp.zeros([], jnp.int32),
        params=params,
        transform_state=tx_state,
        noise_key=noise_key,
        data_key=data_key,
        perm=jnp.zeros((num_chains, n), jnp.int32),
        diverged_at=jnp.full((num_chains,), -1, jnp.int32),
    )


def _plan(config: _Config, step0: int) -> list[tuple[str, int]]:
    """The run as chunks: ("burn", steps) and ("draw", draws of `thin` steps each), then the
    tail steps after the last draw as ("burn", steps)."""
    plan: list[tuple[str, int]] = []
    burn = config.burn_in
    while burn > 0:
        n = min(burn, config.chunk_size)
        plan.append(("burn", n))
        burn -= n
    num_draws = (config.num_steps - config.burn_in) // config.thin
    per_chunk = max(1, config.chunk_size // config.thin)
    while num_draws > 0:
        n = min(num_draws, per_chunk)
        plan.append(("draw", n))
        num_draws -= n
    tail = (config.num_steps - config.burn_in) % config.thin
    if tail:
        plan.append(("burn", tail))
    return plan


class _Runner:
    """Builds and caches the compiled chunk functions."""

    def __init__(self, *, config, log_posterior, transform, data, keep, predict_fn, predict_inputs):
        self.config = config
        self.log_posterior = log_posterior
        self.transform = transform
        self.data = data
        self.keep = keep
        self.predict_fn = predict_fn
        self.predict_inputs = predict_inputs
        self._cache: dict[tuple[str, int], Any] = {}

    def _neg_log_posterior(self, params: ArrayTree, batch: Any) -> tuple[jax.Array, Any]:
        value, aux = self.log_posterior(params, batch)
        return -value, aux

    def _step(self, state: SamplerState, host_batch: Any, data: Any) -> tuple[SamplerState, jax.Array]:
        """One step of every chain; returns the new state and the (chain,) log posterior."""
        cfg = self.config
        t = state.step
        perm = state.perm
        if data is not None:
            per_epoch = cfg.num_data // cfg.batch_size
            j = t % per_epoch
            epoch = t // per_epoch
            n = cfg.num_data

            def new_perm() -> jax.Array:
                return jax.vmap(lambda k: jax.random.permutation(jax.random.fold_in(k, epoch), n))(
                    state.data_key
                ).astype(jnp.int32)

            # `t` is shared by all chains, so this stays a real branch under the chain vmap.
            perm = jax.lax.cond(j == 0, new_perm, lambda: perm)
            idx = jax.lax.dynamic_slice_in_dim(perm, j * cfg.batch_size, cfg.batch_size, axis=1)
            batch = jax.vmap(lambda i: jax.tree.map(lambda x: x[i], data))(idx)
            batch_axis = 0
        else:
            batch = host_batch
            batch_axis = None

        def chain_step(params, tx_state, noise_key, batch):
            (neg_value, _), grads = jax.value_and_grad(self._neg_log_posterior, has_aux=True)(params, batch)
            updates, tx_state = self.transform.update(
                grads, tx_state, params, key=jax.random.fold_in(noise_key, t)
            )
            return optax.apply_updates(params, updates), tx_state, -neg_value

        params, tx_state, value = jax.vmap(chain_step, in_axes=(0, 0, 0, batch_axis))(
            state.params, state.transform_state, state.noise_key, batch
        )
        finite = jnp.isfinite(value)
        newly = (state.diverged_at < 0) & ~finite
        diverged_at = jnp.where(newly, t, state.diverged_at)
        if cfg.continue_on_divergence:
            # A diverged chain keeps its last finite state; its later draws are NaN (below).
            alive = diverged_at < 0

            def freeze(new, old):
                mask = alive.reshape((-1,) + (1,) * (jnp.ndim(new) - 1))
                return jnp.where(mask, new, old)

            params = jax.tree.map(freeze, params, state.params)
            tx_state = jax.tree.map(freeze, tx_state, state.transform_state)
        new_state = SamplerState(
            step=t + 1,
            params=params,
            transform_state=tx_state,
            noise_key=state.noise_key,
            data_key=state.data_key,
            perm=perm,
            diverged_at=diverged_at,
        )
        return new_state, value

    def _chunk(self, kind: str, n: int):
        cfg = self.config
        thin = cfg.thin if kind == "draw" else 1

        def run(state, xs, pred_sum, pred_count, data, predict_inputs):
            def inner(state, x):
                return self._step(state, x, data)

            if kind == "burn":
                state, trace = jax.lax.scan(inner, state, xs, length=n)
                return state, trace, None, None, pred_sum, pred_count

            def outer(carry, x):
                state, pred_sum, pred_count = carry
                state, trace = jax.lax.scan(inner, state, x, length=thin)
                draw = state.params
                if cfg.continue_on_divergence:
                    dead = state.diverged_at >= 0
                    draw = jax.tree.map(
                        lambda d: jnp.where(dead.reshape((-1,) + (1,) * (d.ndim - 1)), jnp.nan, d), draw
                    )
                # The update that produced this draw ran at step index state.step − 1, where
                # its schedules were evaluated: `keep` sees that index, like a schedule.
                keep = self.keep(state.step - 1) if self.keep is not None else jnp.bool_(True)
                if self.predict_fn is not None:
                    preds = jax.vmap(self.predict_fn, in_axes=(0, None))(state.params, predict_inputs)
                    w = keep & (state.diverged_at < 0)
                    pred_sum = jax.tree.map(
                        lambda s, p: s + jnp.where(w.reshape((-1,) + (1,) * (p.ndim - 1)), p, 0).astype(s.dtype),
                        pred_sum,
                        preds,
                    )
                    pred_count = pred_count + w.astype(pred_count.dtype)
                return (state, pred_sum, pred_count), (trace, draw, state.step, keep)

            xs_outer = None if xs is None else jax.tree.map(lambda a: a.reshape((n, thin) + a.shape[1:]), xs)
            (state, pred_sum, pred_count), (trace, draws, steps, keeps) = jax.lax.scan(
                outer, (state, pred_sum, pred_count), xs_outer, length=n
            )
            trace = trace.reshape((n * thin,) + trace.shape[2:])
            draws = jax.tree.map(lambda d: jnp.swapaxes(d, 0, 1), draws)  # (chain, draw, ...)
            return state, trace, (draws, keeps), steps, pred_sum, pred_count

        return run

    def compiled(self, kind: str, n: int, state, xs, pred_sum, pred_count):
        """The chunk function compiled ahead of time (so compilation is timed apart)."""
        key = (kind, n, jax.tree.structure(xs), tuple((x.shape, str(x.dtype)) for x in jax.tree.leaves(xs)))
        if key not in self._cache:
            fn = jax.jit(self._chunk(kind, n), donate_argnums=(0,))
            self._cache[key] = fn.lower(
                state, xs, pred_sum, pred_count, self.data, self.predict_inputs
            ).compile()
        return self._cache[key]


def _take_host_batches(it: Iterator[Any], first: Any, n: int) -> tuple[Any, Any]:
    """Takes n batches (the pending one first) and stacks them on a new leading axis."""
    items = []
    pending = first
    for _ in range(n):
        if pending is None:
            try:
                pending = next(it)
            except StopIteration:
                raise ValueError(
                    f"`batches` ran out: it must yield one batch per step ({n} more were needed)"
                ) from None
        items.append(pending)
        pending = None
    stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *items)
    return jax.device_put(stacked), None


def _concat_draws(draws: list, draw_steps: list, like: ArrayTree) -> tuple[ArrayTree, np.ndarray]:
    if draws:
        samples = jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs], axis=1), *draws)
        return samples, np.concatenate(draw_steps).astype(np.int64)
    empty = jax.tree.map(lambda x: np.zeros((x.shape[0], 0) + x.shape[1:], x.dtype), like)
    return empty, np.zeros((0,), np.int64)


class _Progress:
    """tqdm when installed, else one line per chunk on stderr; nothing when disabled."""

    def __init__(self, total: int, enabled: bool):
        self.total = total
        self.enabled = enabled
        self.done = 0
        self.ran = 0
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, unit="step", desc="sampling")
            except ImportError:
                self.bar = None

    def resumed(self, n: int) -> None:
        """Counts `n` steps restored from a checkpoint as done."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def update(self, n: int, mean_log_posterior: float, run_seconds: float) -> None:
        """Records `n` more steps; the rate is over `run_seconds` (compilation excluded)."""
        if not self.enabled or n == 0:
            return
        self.done += n
        self.ran += n
        rate = self.ran / max(run_seconds, 1e-9)
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(steps_per_s=f"{rate:,.0f}", log_post=f"{mean_log_posterior:.4g}", refresh=False)
        else:
            sys.stderr.write(
                f"sampling: step {self.done}/{self.total} ({rate:,.0f} steps/s, mean log "
                f"posterior {mean_log_posterior:.6g})\n"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---- checkpoints -----------------------------------------------------------------------------


def _fingerprint(config: _Config, key: jax.Array, step0: int, state: SamplerState) -> str:
    """Identifies a run, so a checkpoint is only resumed by the same run."""
    desc = {
        "config": dataclasses.asdict(config),
        "key": np.asarray(jax.random.key_data(key)).tolist(),
        "key_impl": str(jax.random.key_impl(key)),
        "step0": step0,
        "state": [(str(np.shape(x)), str(getattr(x, "dtype", type(x)))) for x in jax.tree.leaves(state)],
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()


def _to_host(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(x))
    return np.asarray(x)


class _Checkpointer:
    """Saves and loads the whole run (state, draws so far, trace, predictive sums) atomically:
    each save writes a temporary file in the directory, fsyncs it and renames it over the
    previous checkpoint, so a crash mid-write leaves the previous checkpoint intact."""

    FILE = "sghmc_checkpoint.npz"

    def __init__(self, directory: str, fingerprint: str):
        self.directory = directory
        self.fingerprint = fingerprint
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, self.FILE)

    def save(self, state, draws, draw_steps, traces, pred_sum, pred_count, next_chunk: int) -> None:
        arrays: dict[str, np.ndarray] = {}
        for i, leaf in enumerate(jax.tree.leaves(state)):
            arrays[f"state_{i}"] = _to_host(leaf)
        samples, steps = _concat_draws(draws, draw_steps, state.params) if draws else (None, None)
        if samples is not None:
            for i, leaf in enumerate(jax.tree.leaves(samples)):
                arrays[f"draws_{i}"] = np.asarray(leaf)
            arrays["draw_steps"] = steps
        if traces:
            arrays["trace"] = np.concatenate(traces, axis=1)
        if pred_sum is not None:
            for i, leaf in enumerate(jax.tree.leaves(pred_sum)):
                arrays[f"pred_{i}"] = np.asarray(leaf)
            arrays["pred_count"] = np.asarray(pred_count)
        meta = {"fingerprint": self.fingerprint, "next_chunk": next_chunk}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            _replace_atomically(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def load(self, template: SamplerState, pred_template: Any):
        if not os.path.exists(self.path):
            return None
        with np.load(self.path) as f:
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
            state = jax.tree.unflatten(treedef, restored)
            draws, draw_steps = [], []
            if "draw_steps" in f:
                p_leaves, p_def = jax.tree.flatten(template.params)
                draws = [jax.tree.unflatten(p_def, [f[f"draws_{i}"] for i in range(len(p_leaves))])]
                draw_steps = [f["draw_steps"]]
            traces = [f["trace"]] if "trace" in f else []
            pred_sum = pred_count = None
            if "pred_count" in f:
                pred_leaves, pred_def = jax.tree.flatten(pred_template)
                pred_sum = jax.tree.unflatten(
                    pred_def, [jnp.asarray(f[f"pred_{i}"]) for i in range(len(pred_leaves))]
                )
                pred_count = jnp.asarray(f["pred_count"])
            return state, draws, draw_steps, traces, pred_sum, pred_count, int(meta["next_chunk"])


def _replace_atomically(src: str, dst: str) -> None:
    os.replace(src, dst)
