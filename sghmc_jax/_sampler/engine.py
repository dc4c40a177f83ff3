"""The compiled programs behind `sample()`: the chains' initial state, and the chunk of steps.

One chunk program serves every chunk of a run, and of later runs with the same functions and
shapes: the numbers of burn-in steps, draws and trailing steps are runtime arguments, so neither
the run's length nor a continuation compiles anything new. The programs read only the program
views of the run plan's records (`fields.program_view`), which are also their cache key (`cache.py`).

A chunk runs `before` single steps, then `draws` draws of `thin` steps each, then `after` single
steps, recording every step's traces (`traces.TRACES`: the log posterior, the kinetic energy)
and every draw in buffers of the chunk's capacity.

Divergence: a chain diverges at the first draw index s (the params after s steps) whose params
are not finite or whose log posterior is not finite. Step t evaluates the log posterior at θ_t
and makes θ_{t+1}, so it finds either s = t or s = t + 1. With `continue_on_divergence` a
diverged chain is held at its last state that passed both checks; its later draws and trace
values are NaN, which marks them missing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sghmc_jax import _checks, _noise, _tempering
from sghmc_jax._sampler import batching, replicas
from sghmc_jax._sampler.placement import Placement, constrain
from sghmc_jax._sampler.traces import TRACES
from sghmc_jax.types import ArrayTree, SamplerState

__all__: list[str] = []


class Views(NamedTuple):
    """The program views of the run plan's records (`fields.program_view`) a chunk reads."""

    steps: Any
    batches: Any
    model: Any
    predictive: Any
    placement: Placement | None
    ladder: Any = None  # replica exchange's (`plan.Ladder`), or None


class ChunkOutput(NamedTuple):
    state: SamplerState
    traces: dict[str, jax.Array]  # by name: (capacity, chain) per step, NaN past the chunk's steps
    draws: ArrayTree  # leaves (max_draws, chain, ...)
    draw_steps: jax.Array  # (max_draws,) steps after which each draw was taken
    keeps: jax.Array  # (max_draws,) the `keep` predicate per draw
    pred_sum: Any
    pred_count: Any


def _per_chain(mask: jax.Array, x: jax.Array) -> jax.Array:
    return mask.reshape((-1,) + (1,) * (jnp.ndim(x) - 1))


def _leading(mask: jax.Array, x: jax.Array) -> jax.Array:
    """`mask` over the leading axes of `x`, broadcastable against it."""
    return mask.reshape(mask.shape + (1,) * (jnp.ndim(x) - mask.ndim))


def _select(mask: jax.Array, on_true: Any, on_false: Any) -> Any:
    """Per chain: `on_true` where `mask`, else `on_false` (trees with a leading chain axis)."""
    return jax.tree.map(lambda a, b: jnp.where(_per_chain(mask, a), a, b), on_true, on_false)


def _all_finite(tree: ArrayTree) -> jax.Array:
    """(chain,) whether every element of the chain's slice of every leaf is finite."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    ok = [jnp.all(jnp.isfinite(x).reshape(x.shape[0], -1), axis=1) for x in leaves]
    return functools.reduce(jnp.logical_and, ok)


def _neg_log_posterior(model: Any) -> Callable[[ArrayTree, Any], tuple[jax.Array, Any]]:
    def neg_log_posterior(params: ArrayTree, batch: Any) -> tuple[jax.Array, Any]:
        value, aux = _checks.check_log_posterior_output(model.log_posterior(params, batch))
        return -value, aux

    return neg_log_posterior


def _chain_update(model: Any, t: jax.Array) -> Callable[..., tuple[Any, Any]]:
    """One chain's transform update at step t from its gradient of the log posterior: (params, state)."""
    extra = {} if model.target_temperature is None else {"target_temperature": model.target_temperature}

    def chain_update(params: Any, grads: Any, tx_state: Any, noise_key: jax.Array) -> tuple[Any, Any]:
        updates, tx_state = model.update(grads, tx_state, params, key=jax.random.fold_in(noise_key, t), **extra)
        return optax.apply_updates(params, updates), tx_state

    return chain_update


def _update(views: Views, state: SamplerState, batch: Any, batch_axis: Any) -> tuple[Any, ...]:
    """Every chain's gradient at its params and the transform's update: (params, transform
    states, the (chain,) log posterior at the old params)."""
    if views.ladder is not None:
        return _tempered_update(views, state, batch, batch_axis)
    neg_log_posterior = _neg_log_posterior(views.model)
    chain_update = _chain_update(views.model, state.step)

    def chain_step(params, tx_state, noise_key, batch):
        (neg_value, _), grads = jax.value_and_grad(neg_log_posterior, has_aux=True)(params, batch)
        return *chain_update(params, grads, tx_state, noise_key), -neg_value

    # The noise bins' conditionals take a zero made from the step count every chain shares, not
    # from chain 0's key: with chains on several devices, the step needs no communication.
    with _noise.shared_zero(state.step):
        params, tx_state, value = jax.vmap(chain_step, in_axes=(0, 0, 0, batch_axis))(
            state.params, state.transform_state, state.noise_key, batch
        )
    place = views.placement
    if place is not None:
        params, tx_state = place.params(params), place.like_params(tx_state)
        value = constrain(value, place.chains())
    return params, tx_state, value


def tempered(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` (one replica's transform init or update), vmapped over replicas with two more
    leading arguments, each replica's temperature factor τ and its ratio to the factor it last
    ran at, which this library's transforms read (`_tempering`); refuses a transform that reads
    none, which could not be run at its rung's temperature."""

    def per_replica(factor: jax.Array, ratio: jax.Array, *args: Any) -> Any:
        seen: list[tuple[str, Any]] = []
        with _tempering.at(factor, ratio, seen):
            out = fn(*args)
        if not seen:
            raise ValueError(
                "`temperatures` (replica exchange) runs each replica at its rung's temperature, which it sets "
                "in this library's samplers (alone, in optax.chain, or from a factory); the transform given "
                "holds none of them"
            )
        return out

    return jax.vmap(per_replica)


def _tempered_update(views: Views, state: SamplerState, batch: Any, batch_axis: Any) -> tuple[Any, ...]:
    """`_update` for ladders of replicas (`replicas.py`): every replica's gradient, then the
    ladder's adaptation and swap round when due (from the log posteriors), then each replica's
    update at the temperature of the rung it holds after them (`_tempering`). Returns the new
    replica state too, as a fourth element."""
    model, ladder, t, ladder_state = views.model, views.ladder, state.step, state.replicas
    assert ladder_state is not None
    (neg_value, _), grads = jax.vmap(jax.value_and_grad(_neg_log_posterior(model), has_aux=True), (0, batch_axis))(
        state.params, batch
    )
    value = -neg_value

    def swap_round(rs: Any) -> Any:
        energy, variance = value, None
        if ladder.noisy_energies:
            estimate = replicas.energy_function(model.log_posterior)
            if isinstance(model.log_posterior, replicas.ControlVariate):
                energy = jax.vmap(estimate, (0, batch_axis))(state.params, batch)
            one = functools.partial(replicas.minibatch_variance, estimate, batches=views.batches)
            variance = jax.vmap(one, (0, batch_axis))(state.params, batch)
        return replicas.swap(ladder, rs, energy, variance, t)

    rs = ladder_state
    if ladder.adapt_at:  # adapt the ladder first, at the steps it adapts at (during burn-in)
        at = jnp.any(t == jnp.asarray(ladder.adapt_at, t.dtype))
        rs = jax.lax.cond(at, replicas.adapt, lambda rs: rs, rs)
    rs = jax.lax.cond(replicas.swaps_at(ladder, t), swap_round, lambda rs: rs, rs)
    before, after = replicas.betas(ladder, ladder_state), replicas.betas(ladder, rs)
    with _noise.shared_zero(t):
        params, tx_state = tempered(_chain_update(model, t))(
            1 / after, before / after, state.params, grads, state.transform_state, state.noise_key
        )
    place = views.placement
    if place is not None:  # each device holds whole ladders: the swap and the update stay local
        params, tx_state = place.params(params), place.like_params(tx_state)
        value = constrain(value, place.chains())
        rs = jax.tree.map(lambda x: constrain(x, place.chains()), rs)
    return params, tx_state, value, rs


def step(views: Views, state: SamplerState, host_batch: Any, data: Any) -> tuple[SamplerState, dict[str, jax.Array]]:
    """One step of every chain; returns the new state and the step's traces by name."""
    t, perm, place = state.step, state.perm, views.placement
    if data is not None:
        batch, perm = batching.minibatch(views.batches, t, perm, state.data_key, data)
        if place is not None:
            batch = jax.tree.map(lambda b: constrain(b, place.chains(place.data_axis)), batch)
        batch_axis = 0
    else:
        batch, batch_axis = host_batch, None
    params, tx_state, value, *ladder = _update(views, state, batch, batch_axis)
    alive = state.diverged_at < 0
    value_ok = jnp.isfinite(value)
    newly = alive & ~(value_ok & _all_finite(params))
    diverged_at = jnp.where(newly, jnp.where(value_ok, t + 1, t), state.diverged_at)
    diverged_in_params = jnp.where(newly, value_ok, state.diverged_in_params)
    last_finite = state.last_finite
    if views.steps.continue_on_divergence:
        # θ_t passed both checks (finite params one step ago, finite log posterior now).
        last_finite = _select(alive & value_ok, (state.params, state.transform_state), last_finite)
        params, tx_state = _select(diverged_at < 0, (params, tx_state), last_finite)
    value = jnp.where(alive, value, jnp.nan)
    # Read off the state the step made, after its numbers are fixed: the chain does not change.
    traces = {tr.name: jnp.where(alive, tr.read(value, tx_state), jnp.nan) for tr in TRACES}
    if ladder:  # the traces of rung 0, the target's
        state = state._replace(replicas=ladder[0])
        traces = replicas.rung_zero(ladder[0], traces)
    new_state = state._replace(
        step=t + 1,
        params=params,
        transform_state=tx_state,
        perm=perm,
        diverged_at=diverged_at,
        diverged_in_params=diverged_in_params,
        last_finite=last_finite,
    )
    return new_state, traces


def _drawn(state: SamplerState, keep_rungs: bool = False) -> tuple[jax.Array, ArrayTree]:
    """(whether alive, params) of the chains whose draws are recorded: every chain, or with
    ladders of replicas the replica of each chain that holds rung 0 (gathered here only), or
    with `keep_rungs` every replica in rung order (leaves (chain, R, ...), alive (chain, R))."""
    if state.replicas is None:
        return state.diverged_at < 0, state.params
    pick = replicas.by_rung if keep_rungs else replicas.rung_zero
    diverged_at, params = pick(state.replicas, (state.diverged_at, state.params))
    return diverged_at < 0, params


def drawn_shape(state: SamplerState, keep_rungs: bool = False) -> ArrayTree:
    """The abstract params of the chains whose draws are recorded (leading axis: the run's chains)."""
    return jax.eval_shape(lambda s: _drawn(s, keep_rungs)[1], state)


def _record(views: Views, k: jax.Array, state: SamplerState, buffers: tuple, predict_inputs: Any) -> tuple:
    """Writes draw `k` (the chains' params, NaN for a diverged chain), its step and `keep`, and
    adds the kept draws' predictions to the running sums."""
    draws, draw_steps, keeps, pred_sum, pred_count = buffers
    alive, params = _drawn(state, views.ladder is not None and views.ladder.keep_rungs)
    sample = jax.tree.map(lambda p: jnp.where(_leading(alive, p), p, jnp.nan), params)
    draws = jax.tree.map(lambda buf, x: jax.lax.dynamic_update_index_in_dim(buf, x, k, 0), draws, sample)
    # The update that produced this draw ran at step index state.step − 1, where its schedules
    # were evaluated: `keep` sees that index, like a schedule.
    keep = views.model.keep(state.step - 1) if views.model.keep is not None else jnp.bool_(True)
    draw_steps = draw_steps.at[k].set(state.step)
    keeps = keeps.at[k].set(keep)
    if views.predictive.fn is not None:
        if alive.ndim > 1:  # every rung kept: the predictions are rung 0's
            alive, params = alive[:, 0], jax.tree.map(lambda p: p[:, 0], params)
        preds = jax.vmap(views.predictive.fn, in_axes=(0, None))(params, predict_inputs)
        w = keep & alive
        pred_sum = jax.tree.map(lambda s, p: s + jnp.where(_per_chain(w, p), p, 0).astype(s.dtype), pred_sum, preds)
        pred_count = pred_count + w.astype(pred_count.dtype)
    return draws, draw_steps, keeps, pred_sum, pred_count


def chunk_program(views: Views) -> Callable[..., ChunkOutput]:
    """The chunk as a function of (state, xs, pred_sum, pred_count, data, predict_inputs,
    counts), counts = int32 [before, draws, after].

    One loop over the chunk's steps with the draws recorded under a conditional, so that the
    step (the user's gradient and the update) is compiled once, whatever the mix of burn-in,
    draws and trailing steps.
    """
    steps = views.steps

    def run(state, xs, pred_sum, pred_count, data, predict_inputs, counts):
        n_before, n_draws, n_after = counts[0], counts[1], counts[2]
        n_steps = n_before + n_draws * steps.thin + n_after
        chains = state.diverged_at.shape[0] if state.replicas is None else state.replicas.rung.shape[0]
        traces = {
            tr.name: jnp.full(
                (steps.capacity, chains), jnp.nan, tr.dtype(state.transform_state, views.model.value_dtype)
            )
            for tr in TRACES
        }
        keep_rungs = views.ladder is not None and views.ladder.keep_rungs
        draws = jax.tree.map(lambda p: jnp.zeros((steps.max_draws, *p.shape), p.dtype), drawn_shape(state, keep_rungs))
        draw_steps = jnp.zeros((steps.max_draws,), jnp.int32)
        keeps = jnp.zeros((steps.max_draws,), bool)

        def one(pos: jax.Array, carry: tuple) -> tuple:
            state, traces, buffers = carry
            state, values = step(views, state, batching.host_batch(xs, pos), data)
            traces = {
                name: jax.lax.dynamic_update_index_in_dim(buf, values[name].astype(buf.dtype), pos, 0)
                for name, buf in traces.items()
            }
            into = pos + 1 - n_before  # steps into the draws
            is_draw = (into > 0) & (into <= n_draws * steps.thin) & (into % steps.thin == 0)
            k = jnp.maximum(into // steps.thin - 1, 0)
            buffers = jax.lax.cond(is_draw, lambda b: _record(views, k, state, b, predict_inputs), lambda b: b, buffers)
            return state, traces, buffers

        buffers = (draws, draw_steps, keeps, pred_sum, pred_count)
        state, traces, buffers = jax.lax.fori_loop(0, n_steps, one, (state, traces, buffers))
        draws, draw_steps, keeps, pred_sum, pred_count = buffers
        return ChunkOutput(state, traces, draws, draw_steps, keeps, pred_sum, pred_count)

    return run


def initial_state_program(
    model: Any, start: Any, batches: Any, placement: Placement | None, ladder: Any = None
) -> Callable[[jax.Array, ArrayTree], SamplerState]:
    """(the run's key, the user's initial params) -> the chains' initial `SamplerState` (no
    `last_finite`), from the program views of the records. The params are broadcast to every
    chain (or taken per chain when stacked) into new buffers: the chunks donate their state,
    never the caller's arrays. With a `ladder`, every chain is R replicas (chain-major) that
    start from the chain's params, each with keys of its own, and a `ReplicaState`."""
    rungs = 1 if ladder is None else ladder.rungs
    num_chains = start.num_chains * rungs

    def init_one(chain_key: jax.Array, params: ArrayTree) -> tuple[Any, jax.Array, jax.Array]:
        init_key, noise_key, data_key = jax.random.split(chain_key, 3)
        tx = model.transform(init_key) if model.is_factory else model.transform
        return tx.init(params), noise_key, data_key

    def init(key: jax.Array, params: ArrayTree) -> SamplerState:
        if not start.stacked_init:
            params = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_chains, *jnp.shape(x))), params)
        elif rungs > 1:
            params = jax.tree.map(lambda x: jnp.repeat(x, rungs, axis=0), params)
        if placement is not None:
            params = placement.params(params)
        ladder_state = None
        if ladder is not None:
            # The swaps' keys come from the run's key by a path apart from the chains' split.
            swap_key = jax.random.fold_in(key, 0x5A4D)
            ladder_state = replicas.initial(ladder, swap_key, start.num_chains, model.value_dtype)
        # The initial momenta's noise bins take a zero from the run's key, which every chain shares.
        with _noise.shared_zero(jax.random.key_data(key).ravel()[0]):
            if ladder_state is None:
                tx_state, noise_key, data_key = jax.vmap(init_one)(jax.random.split(key, num_chains), params)
            else:  # each replica's transform state at its rung's temperature
                factor = 1 / replicas.betas(ladder, ladder_state)
                tx_state, noise_key, data_key = tempered(init_one)(
                    factor, jnp.ones_like(factor), jax.random.split(key, num_chains), params
                )
        perm = jnp.zeros((num_chains, *batches.perm_shape), jnp.int32)
        diverged_at = jnp.full((num_chains,), -1, jnp.int32)
        diverged_in_params = jnp.zeros((num_chains,), bool)
        if placement is not None:
            tx_state = placement.like_params(tx_state)
            noise_key, data_key, diverged_at, diverged_in_params = (
                constrain(x, placement.chains()) for x in (noise_key, data_key, diverged_at, diverged_in_params)
            )
            perm = constrain(perm, placement.chains(placement.data_axis))
        if ladder_state is not None and placement is not None:
            by_chain = placement.chains()
            ladder_state = jax.tree.map(lambda x: constrain(x, by_chain), ladder_state)
        return SamplerState(
            replicas=ladder_state,
            step=jnp.zeros([], jnp.int32),
            params=params,
            transform_state=tx_state,
            noise_key=noise_key,
            data_key=data_key,
            perm=perm,
            diverged_at=diverged_at,
            diverged_in_params=diverged_in_params,
        )

    return init
