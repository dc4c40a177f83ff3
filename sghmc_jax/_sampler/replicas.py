"""Replica exchange (`sample(..., temperatures=...)`): each chain is a ladder of R replicas on
the engine's chain axis (chain-major: replica r of chain c is entry c·R + r), which swap their
rungs every `swap_every` steps.

Tempering: a replica holding rung r runs its sampler at temperature T·τ_r with the full
gradient of log p, so it targets p^(1/(τ_r T)) and moves as that sampler does at that
temperature, with the run's step size and friction (`_tempering`; each of this library's
transforms reads its factor). Its momenta's law N(0, σ²Tτ_r) depends on the rung, so when a swap
(or the ladder's adaptation) changes a replica's rung its state is carried to the new temperature
(`kernels.temper`: momenta times √(τ_new/τ_old)); for a swap of rungs i and j the two maps'
Jacobians cancel and the kinetic energies over temperature are unchanged, so exchanging the
rungs of two replicas (their temperatures, not their states) is the exact parallel-tempering
swap on the positions alone.

The swap at step t (when t > 0 is a multiple of `swap_every`), made after the step's gradients
and before its update, with ℓ_a = log p̂(θ_a) the step's log posterior of the replica holding rung i
and ℓ_b that of the one holding rung i + 1, Δ = (β_i − β_{i+1})/T > 0:

    log A = Δ (ℓ_b − ℓ_a) − ½ Δ² (σ_a² + σ_b²)

With full-data energies (no `data=`) σ = 0 and this is the exact Metropolis swap. With minibatch
energies, ℓ̂_a − ℓ̂_b has variance σ_a² + σ_b² (independent batches); if it is Gaussian,
E[exp(Δ(ℓ̂_b − ℓ̂_a) − ½Δ²(σ_a² + σ_b²))] = exp(Δ(ℓ_b − ℓ_a)): the correction of Deng, Feng,
Gao, Liang and Lin (ICML 2020), whose −(1/τ_1 − 1/τ_2)²σ̂² is this with σ_a = σ_b. σ² is the
variance over minibatches of the log-posterior estimate at the replica's params: with the
log posterior a prior plus N/n times the batch's sum of log-likelihoods (`make_log_posterior`'s
form), its single-example values e_i = log p̂(θ, {x_i}) have sample variance s², and the
estimate from the n examples of the batch is σ̃² = s²/n · (1 − n/N) (without replacement; no
factor (1 − n/N) with `batch_order="with_replacement"`). It is smoothed per replica by stochastic
approximation, σ̂²_k = (1 − γ_k) σ̂²_{k−1} + γ_k σ̃²_k, γ_k = 1/min(k, 10), k the swap round.
For a `control_variates.centre` log posterior the swap's estimate (and σ̃², from its single-
example values) is the control-variate one of Deng et al. (ICLR 2021): `energy_function`.

Which adjacent pairs are tried: "deo" (Syed, Bouchard-Côté, Deligiannidis and Doucet, JRSS-B
2022): pairs (i, i + 1) with i even on even rounds, odd on odd rounds; "random": all pairs of a
parity drawn uniformly each round (Syed et al.'s reversible "stochastic even-odd" scheme).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from sghmc_jax import _checks
from sghmc_jax.control_variates import ControlVariate
from sghmc_jax.types import ArrayTree, ReplicaState

__all__: list[str] = []

SMOOTHING_ROUNDS = 10  # γ_k = 1/min(k, SMOOTHING_ROUNDS)


def initial(ladder: Any, key: jax.Array, num_chains: int, value_dtype: Any) -> ReplicaState:
    """Replica r of every chain starts on rung r, heading up from rung 0."""
    rungs = ladder.rungs
    rung = jnp.broadcast_to(jnp.arange(rungs, dtype=jnp.int32), (num_chains, rungs))
    beta = jnp.asarray([1.0 / t for t in ladder.temperatures], jnp.float32)
    return ReplicaState(
        rung=rung,
        beta=jnp.broadcast_to(beta, (num_chains, rungs)),
        swap_key=jax.random.split(key, num_chains),
        attempts=jnp.zeros((num_chains, rungs - 1), jnp.int32),
        accepts=jnp.zeros((num_chains, rungs - 1), jnp.int32),
        variance=jnp.zeros((num_chains, rungs), jnp.promote_types(value_dtype, jnp.float32)),
        heading=jnp.where(rung == 0, 0, -1).astype(jnp.int32),
        round_trips=jnp.zeros((num_chains,), jnp.int32),
        started=jnp.broadcast_to(jnp.asarray(ladder.temperatures, jnp.float32), (num_chains, rungs)),
        adapt_ladder=jnp.full((num_chains,), ladder.adapt_ladder, jnp.int32),
    )


def betas(ladder: Any, state: ReplicaState) -> jax.Array:
    """(chain·R,) β = 1/τ of the rung each replica holds (its temperature is T/β)."""
    return jnp.take_along_axis(state.beta, state.rung, axis=1).reshape(-1)


def rung_zero(state: ReplicaState, tree: Any) -> Any:
    """Each chain's entry of the replica holding rung 0, from a tree whose leaves have a leading
    replica axis (chain·R, ...): taken within each chain's ladder (reshaped (chain, R, ...)), so
    a run whose chains are split over devices gathers nothing across them."""
    chains, rungs = state.rung.shape
    held = jnp.argmin(state.rung, axis=1)

    def one(x: jax.Array) -> jax.Array:
        ladders = x.reshape(chains, rungs, *x.shape[1:])
        index = held.reshape((chains, 1) + (1,) * (x.ndim - 1))
        return jnp.take_along_axis(ladders, index, axis=1)[:, 0]

    return jax.tree.map(one, tree)


def energy_function(log_posterior: Any) -> Callable[[ArrayTree, Any], jax.Array]:
    """The swap's minibatch log-posterior estimate: the log posterior's value, or, for a
    `control_variates.centre` one, the control-variate estimate of Deng, Feng, Karagiannis, Lin
    and Liang (ICLR 2021), log p₀(θ) + (N/n) Σ_S [log p(yᵢ|θ) − log p(yᵢ|θ̂)] (in the log
    posterior's form): the full-data log likelihood at θ̂ it leaves out is the same constant for
    every replica, so it cancels in the swap, and the estimate's variance is of order
    N‖θ − θ̂‖²/n instead of N²/n."""
    if isinstance(log_posterior, ControlVariate):
        cv = log_posterior

        def centred(params: ArrayTree, batch: Any) -> jax.Array:
            diff = jnp.mean(cv.log_likelihood(params, batch) - cv.log_likelihood(cv.centre, batch))
            if cv.form == "sum":
                return cv.num_data * diff + cv.log_prior(params)
            return diff + cv.log_prior(params) / cv.num_data

        return centred

    def value(params: ArrayTree, batch: Any) -> jax.Array:
        return _checks.check_log_posterior_output(log_posterior(params, batch))[0]

    return value


def by_rung(state: ReplicaState, tree: Any) -> Any:
    """Every chain's replicas in rung order, leaves (chain, R, ...), from a tree whose leaves
    have a leading replica axis (chain·R, ...), taken within each chain's ladder."""
    chains, rungs = state.rung.shape
    holder = jnp.argsort(state.rung, axis=1)

    def one(x: jax.Array) -> jax.Array:
        ladders = x.reshape(chains, rungs, *x.shape[1:])
        return jnp.take_along_axis(ladders, holder.reshape((chains, rungs) + (1,) * (x.ndim - 1)), axis=1)

    return jax.tree.map(one, tree)


def minibatch_variance(energy: Any, params: ArrayTree, batch: Any, batches: Any) -> jax.Array:
    """σ̃² of one replica's minibatch `energy` (module docstring), from its batch's examples."""
    n = batches.batch_size
    values = jax.vmap(lambda example: energy(params, jax.tree.map(lambda x: x[None], example)))(batch)
    values = values.astype(jnp.float32)
    finite = 1.0 if batches.batch_order == "with_replacement" else 1.0 - n / batches.num_data
    return jnp.var(values, ddof=1) / n * finite if n > 1 else jnp.zeros((), jnp.float32)


def swaps_at(ladder: Any, t: jax.Array) -> jax.Array:
    """Whether step t makes a swap round: every `swap_every` steps from step `swap_every` on (at
    step 0 every replica of a chain is at the same params, where every tried swap is accepted)."""
    return (t > 0) & (t % ladder.swap_every == 0)


def _smoothed(state: ReplicaState, sample: jax.Array, t: jax.Array, swap_every: int) -> jax.Array:
    k = t // swap_every  # the swap round, from 1
    gamma = 1.0 / jnp.minimum(k, SMOOTHING_ROUNDS).astype(state.variance.dtype)
    return (1 - gamma) * state.variance + gamma * sample.reshape(state.variance.shape).astype(state.variance.dtype)


def swap(ladder: Any, state: ReplicaState, value: jax.Array, variance: jax.Array | None, t: jax.Array) -> ReplicaState:
    """One swap round at step t (module docstring): `value` (chain·R,) the replicas' log
    posterior at their params, `variance` (chain·R,) this round's σ̃² (None: exact energies)."""
    chains, rungs = state.rung.shape
    var = state.variance if variance is None else _smoothed(state, variance, t, ladder.swap_every)
    holder = jnp.argsort(state.rung, axis=1)  # (chain, rung) the replica holding each rung
    at = lambda x: jnp.take_along_axis(x.reshape(chains, rungs), holder, axis=1)  # noqa: E731
    logp, sig2 = at(value).astype(var.dtype), at(var)
    inverse = state.beta.astype(var.dtype) / ladder.base_temperature
    delta = inverse[:, :-1] - inverse[:, 1:]
    log_accept = delta * (logp[:, 1:] - logp[:, :-1]) - 0.5 * delta**2 * (sig2[:, :-1] + sig2[:, 1:])
    keys = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, t)))(state.swap_key)
    round_ = t // ladder.swap_every
    if ladder.swaps == "deo":
        parity = jnp.broadcast_to(round_ % 2, (chains,))
    else:
        parity = jax.vmap(lambda k: jax.random.bernoulli(k).astype(jnp.int32))(keys[:, 0])
    u = jax.vmap(lambda k: jax.random.uniform(k, (rungs - 1,), var.dtype))(keys[:, 1])
    tried = (jnp.arange(rungs - 1) % 2)[None, :] == parity[:, None]
    accepted = tried & (jnp.log(u) < log_accept)
    # A replica on rung r moves up when pair (r, r + 1) swapped, down when pair (r − 1, r) did.
    up = jnp.pad(accepted, ((0, 0), (0, 1)))
    down = jnp.pad(accepted, ((0, 0), (1, 0)))
    moved = lambda x: jnp.take_along_axis(x, state.rung, axis=1).astype(jnp.int32)  # noqa: E731
    rung = state.rung + moved(up) - moved(down)
    trip = (rung == 0) & (state.heading == 1)
    heading = jnp.where(rung == 0, 0, jnp.where((rung == rungs - 1) & (state.heading == 0), 1, state.heading))
    return state._replace(
        rung=rung,
        attempts=state.attempts + tried.astype(jnp.int32),
        accepts=state.accepts + accepted.astype(jnp.int32),
        variance=var,
        heading=heading.astype(jnp.int32),
        round_trips=state.round_trips + jnp.sum(trip, axis=1, dtype=jnp.int32),
    )


MIN_REJECTION = 1e-3  # keeps the communication barrier strictly increasing along the ladder


def adapt(state: ReplicaState) -> ReplicaState:
    """Syed et al.'s ladder update, per chain: the rejection rate r_i of each rung pair since the
    last update, the communication barrier Λ (Λ(β_0) = 0, Λ(β_{i+1}) = Λ(β_i) + r_i, linear in
    β between rungs), and new factors β'_k = Λ⁻¹(k·Λ(β_top)/(R − 1)) with β_0 = 1 and β_top
    kept, so that every pair is expected to reject equally; the counts restart. A chain with a
    pair not yet attempted keeps its ladder."""

    def one(beta: jax.Array, attempts: jax.Array, accepts: jax.Array) -> jax.Array:
        rejection = 1.0 - accepts / jnp.maximum(attempts, 1)
        barrier = jnp.concatenate([jnp.zeros(1), jnp.cumsum(jnp.clip(rejection, MIN_REJECTION, 1.0))])
        targets = jnp.linspace(0.0, 1.0, beta.shape[0]) * barrier[-1]
        new = jnp.interp(targets, barrier, beta).at[0].set(beta[0]).at[-1].set(beta[-1])
        return jnp.where(jnp.all(attempts > 0), new, beta).astype(beta.dtype)

    beta = jax.vmap(one)(state.beta, state.attempts, state.accepts)
    return state._replace(beta=beta, attempts=jnp.zeros_like(state.attempts), accepts=jnp.zeros_like(state.accepts))
