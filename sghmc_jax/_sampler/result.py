"""What `sample()` returns: the draws with their steps and traces, the final state, and the
run's timings; or, when a chain diverges, a `DivergenceError` carrying the draws before it."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from sghmc_jax import diagnostics
from sghmc_jax._sampler import diagnose as _diagnose
from sghmc_jax._sampler import engine
from sghmc_jax._sampler.draws import StoreSink
from sghmc_jax._sampler.loop import Outcome
from sghmc_jax._sampler.placement import host
from sghmc_jax._sampler.plan import Plan
from sghmc_jax._sampler.programs import Programs
from sghmc_jax._sampler.store import leaf_names
from sghmc_jax._sampler.traces import TRACES
from sghmc_jax.diagnostics import Diagnosis
from sghmc_jax.types import ArrayTree, SamplerState, StoredArray

__all__: list[str] = []


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
        temperatures: with replica exchange (`temperatures=`), (chain, R) each chain's ladder of
            temperature factors at the end of the run (rung 0 first, 1.0: the draws,
            `log_posterior` and `kinetic` are rung 0's; the rows differ only when the ladder
            adapted); else None.
        swap_acceptance: with replica exchange, (R − 1,) the fraction of the swaps attempted
            between rungs r and r + 1 that were accepted, over all chains and the whole run
            (continuations included: the counts live in `final_state.replicas`) since the
            ladder last adapted; else None.
        round_trips: with replica exchange, (chain,) the round trips rung 0 -> top rung -> rung 0
            made by each chain's replicas over the whole run (continuations included); else None.
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
    temperatures: np.ndarray | None = None
    swap_acceptance: np.ndarray | None = None
    round_trips: np.ndarray | None = None
    # References (not copies) to what the run used, for `diagnose()`.
    _source: _diagnose.RunSource | None = dataclasses.field(default=None, repr=False)

    def diagnose(self, **kwargs: Any) -> Diagnosis:
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
        names = leaf_names(self.samples) if self.samples is not None else []
        leaves = jax.tree.leaves(self.samples, is_leaf=lambda x: isinstance(x, StoredArray))
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
        first = int(host(self.final_state.step)) - trace.shape[1]
        index = self.sample_steps - first
        inside = index < trace.shape[1]
        lp = np.full((int(ok.sum()), len(index)), np.nan, trace.dtype)
        lp[:, inside] = trace[ok][:, index[inside]]
        return az.from_dict(posterior=posterior, sample_stats={"lp": lp})

    def __repr__(self) -> str:
        leaves = jax.tree_util.tree_flatten_with_path(self.samples, is_leaf=lambda x: isinstance(x, StoredArray))[0]
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


def _missing_as_nan(outcome: Outcome, samples: Any, sample_steps: np.ndarray, diverged_at: np.ndarray) -> Any:
    """The draws with a diverged chain's draws from its divergence on missing (NaN): a draw
    whose log posterior turned out non-finite (found at the next step, once the draw was taken)
    is missing too. In the store they are marked there."""
    if not (diverged_at >= 0).any():
        return samples
    missing = (diverged_at[:, None] >= 0) & (sample_steps[None, :] >= diverged_at[:, None])
    if isinstance(outcome.sink, StoreSink) and not all(isinstance(x, np.ndarray) for x in jax.tree.leaves(samples)):
        outcome.sink.store.mark_missing(missing)
        return samples
    return jax.tree.map(lambda x: np.where(missing.reshape(missing.shape + (1,) * (x.ndim - 2)), np.nan, x), samples)


def _predictive_mean(outcome: Outcome) -> Any:
    if outcome.pred_sum is None:
        return None
    counts = np.maximum(host(outcome.pred_count), 1)
    return jax.tree.map(
        lambda s: np.asarray(s) / counts.reshape((-1,) + (1,) * (np.ndim(s) - 1)),
        jax.tree.map(host, outcome.pred_sum),
    )


def make(plan: Plan, programs: Programs, outcome: Outcome) -> SampleResult:
    """The call's `SampleResult`; raises `DivergenceError` (holding it, cut before the
    divergence) when the run stopped at one."""
    state = outcome.state
    keep_rungs = plan.ladder is not None and plan.ladder.keep_rungs
    out = outcome.sink.result(engine.drawn_shape(state, keep_rungs), plan.start.num_chains)
    diverged_at = _per_chain_divergence(host(state.diverged_at), plan.start.num_chains)
    wall = outcome.wall_time
    result = SampleResult(
        samples=_missing_as_nan(outcome, out.samples, out.sample_steps, diverged_at),
        sample_steps=out.sample_steps,
        final_state=state,
        diverged_at=diverged_at,
        predictive_mean=_predictive_mean(outcome),
        wall_time=wall,
        compile_time=programs.compile_time,
        steps_per_second=outcome.steps_run / wall if wall > 0 else float("nan"),
        sampler=plan.model.sampler,
        hyperparameters=plan.model.hyperparameters,
        _source=_diagnose.RunSource(
            log_posterior=plan.model.log_posterior,
            data=plan.batches.user_data,
            batch_size=plan.batches.batch_size,
            burn_in=plan.steps.burn_in,
            host_batches=plan.batches.host_batches,
            keep_rungs=plan.ladder is not None and plan.ladder.keep_rungs,
        ),
        **out.traces,
        **_ladder_figures(plan, state),
    )
    if outcome.divergence is not None:
        raise _divergence_error(result, outcome)
    return result


def _per_chain_divergence(diverged_at: np.ndarray, num_chains: int) -> np.ndarray:
    """(chain,) where each chain first diverged: with ladders of replicas, its first replica to."""
    if diverged_at.shape[0] == num_chains:
        return diverged_at
    ladders = diverged_at.reshape(num_chains, -1)
    first = np.where(ladders >= 0, ladders, np.iinfo(np.int32).max).min(axis=1)
    return np.where(first == np.iinfo(np.int32).max, -1, first).astype(diverged_at.dtype)


def _ladder_figures(plan: Plan, state: Any) -> dict[str, Any]:
    """The result's replica-exchange attributes (none without a ladder)."""
    if plan.ladder is None:
        return {}
    rs = state.replicas
    attempts, accepts = host(rs.attempts).sum(axis=0), host(rs.accepts).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.where(attempts > 0, accepts / attempts, np.nan)
    temperatures = np.broadcast_to(np.asarray(plan.ladder.temperatures), rs.beta.shape)
    if plan.ladder.adapt_ladder:  # the state's (float32) factors; else the ladder exactly as given
        temperatures = 1.0 / host(rs.beta).astype(np.float64)
    return {"temperatures": temperatures, "swap_acceptance": rates, "round_trips": host(rs.round_trips)}


def _divergence_error(result: SampleResult, outcome: Outcome) -> DivergenceError:
    assert outcome.divergence is not None
    replica, step = outcome.divergence
    chain = replica * result.num_chains // int(host(outcome.state.diverged_at).shape[0])
    local = step - outcome.step0  # index of that step in this call's traces
    if bool(host(outcome.state.diverged_in_params)[replica]):
        cause = "its params were non-finite"
    else:
        cause = "its log posterior was non-finite at the params"
    before = result.sample_steps < step
    result.samples = jax.tree.map(lambda x: np.asarray(x)[:, before], result.samples)
    result.sample_steps = result.sample_steps[before]
    for tr in TRACES:
        setattr(result, tr.name, np.asarray(getattr(result, tr.name))[:, : local + 1])
    return DivergenceError(chain, step, cause, result)
