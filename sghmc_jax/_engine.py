"""The compiled programs behind `sample()`: the chains' initial state, and the chunk of steps.

One chunk program serves every chunk of a run, and of later runs with the same functions and
shapes: the numbers of burn-in steps, draws and trailing steps are runtime arguments, so neither
the run's length nor a continuation compiles anything new, and so are the transforms' numeric
hyperparameters (`_inputs`), so neither does a sweep over their values. Compiled programs are
cached here, keyed by what the traced program computes and the shapes, dtypes and shardings of
its arguments.

A chunk runs `before` single steps, then `draws` draws of `thin` steps each, then `after` single
steps, recording every step's log posterior, every step's kinetic energy (mᵀm/d of the momenta
in the transform state, for `SampleResult.diagnose`) and every draw in buffers of the chunk's
capacity.

Divergence: a chain diverges at the first draw index s (the params after s steps) whose params
are not finite or whose log posterior is not finite. Step t evaluates the log posterior at θ_t
and makes θ_{t+1}, so it finds either s = t or s = t + 1. With `freeze_diverged` a diverged
chain is held at its last state that passed both checks; its later draws and log posterior
values are NaN, which marks them missing.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from sghmc_jax import _checks, _inputs, _noise
from sghmc_jax.types import ArrayTree, LogProbFn

__all__: list[str] = []


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


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a run lives on a device mesh: the chain axis of every per-chain array on
    `chain_axis`, the data's shard axis (and each minibatch) on `data_axis`, and each params leaf
    partitioned as `param_specs` says (the user's params' own specs over the other mesh axes)."""

    mesh: jax.sharding.Mesh
    chain_axis: str | None
    data_axis: str | None
    param_specs: tuple[jax.sharding.PartitionSpec, ...]
    param_paths: tuple[tuple[str, tuple[int, ...]], ...]  # (keystr path, shape) per params leaf

    def chains(self, *rest: Any) -> jax.sharding.NamedSharding:
        """Sharding of an array with a leading chain axis, then `rest` (a PartitionSpec's)."""
        return jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(self.chain_axis, *rest))

    def replicated(self) -> jax.sharding.NamedSharding:
        return jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())

    def params(self, tree: ArrayTree) -> ArrayTree:
        """Constrains chain-stacked params (or a tree shaped like them) to their shardings."""
        leaves, treedef = jax.tree.flatten(tree)
        return jax.tree.unflatten(
            treedef,
            [
                jax.lax.with_sharding_constraint(x, self.chains(*spec))
                for x, spec in zip(leaves, self.param_specs, strict=True)
            ],
        )

    def like_params(self, tree: Any) -> Any:
        """Constrains a per-chain tree (a transform state) leaf by leaf: a leaf shaped like a
        params leaf whose path ends with that leaf's path (or, failing that, the only params
        leaf of its shape) is partitioned like it; any other is split over chains only."""

        def spec_for(path: str, shape: tuple[int, ...]) -> Any:
            matches = [i for i, (p, s) in enumerate(self.param_paths) if s == shape and path.endswith(p)]
            if not matches:
                matches = [i for i, (_, s) in enumerate(self.param_paths) if s == shape]
            return self.param_specs[matches[-1]] if len(matches) >= 1 else jax.sharding.PartitionSpec()

        def constrain(path: Any, x: jax.Array) -> jax.Array:
            if not hasattr(x, "shape") or jnp.ndim(x) == 0:
                return x
            spec = spec_for(jax.tree_util.keystr(path), tuple(x.shape[1:]))
            return jax.lax.with_sharding_constraint(x, self.chains(*spec))

        return jax.tree_util.tree_map_with_path(constrain, tree)

    def data_sharding(self) -> jax.sharding.NamedSharding:
        """The data's (shard, example, ...) layout: shards on `data_axis`."""
        return jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(self.data_axis))


def _constrain(x: Any, sharding: Any) -> Any:
    return x if sharding is None else jax.lax.with_sharding_constraint(x, sharding)


@dataclasses.dataclass(frozen=True)
class ChunkSpec:
    """What a compiled chunk depends on besides the functions and the state's shapes."""

    capacity: int  # steps per chunk
    thin: int
    batch_size: int | None
    num_data: int | None
    freeze_diverged: bool
    value_dtype: str  # the log posterior's dtype
    data_shards: int = 1  # data held as (shard, example, ...), each chain's minibatch stratified
    # "shuffle": a permutation per epoch; "sms": even epochs forward, odd epochs the same batches
    # backward; "with_replacement": i.i.d. uniform examples every step.
    batch_order: str = "shuffle"
    placement: Placement | None = None

    @property
    def max_draws(self) -> int:
        return self.capacity // self.thin


class Functions(NamedTuple):
    """The user's functions a chunk runs (compared by identity in the cache)."""

    log_posterior: LogProbFn
    transform: Any  # what the user passed: a transform or a factory of one
    update: Callable[..., Any]  # the transform's update
    keep: Callable[[jax.Array], jax.Array] | None
    predict_fn: Callable[[ArrayTree, Any], ArrayTree] | None
    target_temperature: float | None


class ChunkOutput(NamedTuple):
    state: SamplerState
    trace: jax.Array  # (capacity, chain) log posterior per step, NaN past the chunk's steps
    kinetic: jax.Array  # (capacity, chain) mᵀm/d after each step (NaN without momenta)
    draws: ArrayTree  # leaves (max_draws, chain, ...)
    draw_steps: jax.Array  # (max_draws,) steps after which each draw was taken
    keeps: jax.Array  # (max_draws,) the `keep` predicate per draw
    pred_sum: Any
    pred_count: Any


def _per_chain(mask: jax.Array, x: jax.Array) -> jax.Array:
    return mask.reshape((-1,) + (1,) * (jnp.ndim(x) - 1))


def _select(mask: jax.Array, on_true: Any, on_false: Any) -> Any:
    """Per chain: `on_true` where `mask`, else `on_false` (trees with a leading chain axis)."""
    return jax.tree.map(lambda a, b: jnp.where(_per_chain(mask, a), a, b), on_true, on_false)


def _all_finite(tree: ArrayTree) -> jax.Array:
    """(chain,) whether every element of the chain's slice of every leaf is finite."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    ok = [jnp.all(jnp.isfinite(x).reshape(x.shape[0], -1), axis=1) for x in leaves]
    return functools.reduce(jnp.logical_and, ok)


def _has_momenta(x: Any) -> bool:
    return isinstance(x, tuple) and "momenta" in getattr(x, "_fields", ())


def kinetic_energy(tx_state: Any, num_chains: int) -> jax.Array:
    """(chain,) mᵀm/d, the mean over all momentum coordinates of m², of the first state in
    `tx_state` (a transform's, or one inside `optax.chain`'s tuple) with a `momenta` field;
    NaN when there is none (SGLD, pSGLD, a foreign transform)."""
    found = [x for x in jax.tree.leaves(tx_state, is_leaf=_has_momenta) if _has_momenta(x)]
    leaves = jax.tree.leaves(found[0].momenta) if found else []
    if not leaves:
        return jnp.full((num_chains,), jnp.nan, jnp.float32)
    dtype = jnp.promote_types(jnp.result_type(*leaves), jnp.float32)
    total = sum(jnp.sum(jnp.square(x.astype(dtype)).reshape(num_chains, -1), axis=1) for x in leaves)
    count = sum(x.size // num_chains for x in leaves)
    return total / count


def _step(
    spec: ChunkSpec, fns: Functions, state: SamplerState, host_batch: Any, data: Any
) -> tuple[SamplerState, jax.Array, jax.Array]:
    """One step of every chain; returns the new state, the (chain,) log posterior at the old
    params and the (chain,) kinetic energy mᵀm/d of the new momenta."""
    t = state.step
    perm = state.perm
    place = spec.placement
    if data is not None:
        # The data are (shard, example, ...): each chain walks its own permutation of every
        # shard per epoch and takes batch_size / shards examples from each, so that each device
        # of a data axis draws its part of the minibatch from the examples it holds. One shard
        # is the plain scheme: a permutation of all N examples per chain per epoch.
        shards = spec.data_shards
        n_local, b_local = spec.num_data // shards, spec.batch_size // shards
        per_epoch = n_local // b_local
        j = t % per_epoch
        epoch = t // per_epoch

        def new_perm() -> jax.Array:
            def chain(k: jax.Array) -> jax.Array:
                k = jax.random.fold_in(k, epoch)
                if shards == 1:
                    return jax.random.permutation(k, n_local)[None]
                return jax.vmap(lambda d: jax.random.permutation(jax.random.fold_in(k, d), n_local))(jnp.arange(shards))

            return jax.vmap(chain)(state.data_key).astype(jnp.int32)

        # `t` is shared by all chains, so this stays a real branch under the chain vmap.
        if spec.batch_order == "with_replacement":
            # i.i.d. minibatches (the classical SG-MCMC setting): step t's examples are drawn
            # uniformly with replacement from each shard with fold_in(data_key, t), so they
            # depend on the chain's key and the global step only (not on chunking or resume).
            # The epoch permutations are not used (`perm` stays as it is).
            def draw(k: jax.Array) -> jax.Array:
                k = jax.random.fold_in(k, t)
                return jax.vmap(lambda d: jax.random.randint(jax.random.fold_in(k, d), (b_local,), 0, n_local))(
                    jnp.arange(shards)
                )

            idx = jax.vmap(draw)(state.data_key).astype(jnp.int32)  # (chain, shard, b)
        elif spec.batch_order == "sms":
            # Symmetric minibatch splitting: a cycle of two epochs visits one permutation's
            # batches forward, then the same batches backward (a palindrome of kicks).
            forward = epoch % 2 == 0
            perm = jax.lax.cond((j == 0) & forward, new_perm, lambda: perm)
            j = jnp.where(forward, j, per_epoch - 1 - j)
        else:
            perm = jax.lax.cond(j == 0, new_perm, lambda: perm)
        if spec.batch_order != "with_replacement":
            idx = jax.lax.dynamic_slice_in_dim(perm, j * b_local, b_local, axis=2)  # (chain, shard, b)

        def gather(x: jax.Array) -> jax.Array:
            if shards == 1:  # data held as (N, ...)
                return jax.vmap(lambda i: x[i[0]])(idx)
            picked = jax.vmap(lambda i: jax.vmap(lambda xs, ix: xs[ix])(x, i))(idx)
            return picked.reshape((picked.shape[0], spec.batch_size, *x.shape[2:]))

        batch = jax.tree.map(gather, data)
        if place is not None:
            batch = jax.tree.map(lambda b: _constrain(b, place.chains(place.data_axis)), batch)
        batch_axis = 0
    else:
        batch = host_batch
        batch_axis = None
    extra = {} if fns.target_temperature is None else {"target_temperature": fns.target_temperature}

    def neg_log_posterior(params: ArrayTree, batch: Any) -> tuple[jax.Array, Any]:
        value, aux = _checks.check_log_posterior_output(fns.log_posterior(params, batch))
        return -value, aux

    def chain_step(params, tx_state, noise_key, batch):
        (neg_value, _), grads = jax.value_and_grad(neg_log_posterior, has_aux=True)(params, batch)
        updates, tx_state = fns.update(grads, tx_state, params, key=jax.random.fold_in(noise_key, t), **extra)
        return optax.apply_updates(params, updates), tx_state, -neg_value

    # The noise bins' conditionals take a zero made from the step count every chain shares, not
    # from chain 0's key: with chains on several devices, the step needs no communication.
    with _noise.shared_zero(t):
        params, tx_state, value = jax.vmap(chain_step, in_axes=(0, 0, 0, batch_axis))(
            state.params, state.transform_state, state.noise_key, batch
        )
    if place is not None:
        params = place.params(params)
        tx_state = place.like_params(tx_state)
        value = _constrain(value, place.chains())
    alive = state.diverged_at < 0
    value_ok = jnp.isfinite(value)
    params_ok = _all_finite(params)
    newly = alive & ~(value_ok & params_ok)
    diverged_at = jnp.where(newly, jnp.where(value_ok, t + 1, t), state.diverged_at)
    diverged_in_params = jnp.where(newly, value_ok, state.diverged_in_params)
    value = jnp.where(alive, value, jnp.nan)
    last_finite = state.last_finite
    if spec.freeze_diverged:
        # θ_t passed both checks (finite params one step ago, finite log posterior now).
        verified = alive & value_ok
        last_finite = _select(verified, (state.params, state.transform_state), last_finite)
        still = diverged_at < 0
        params, tx_state = _select(still, (params, tx_state), last_finite)
    # Read off the state the step made, after its numbers are fixed: the chain does not change.
    kinetic = jnp.where(alive, kinetic_energy(tx_state, alive.shape[0]), jnp.nan)
    new_state = state._replace(
        step=t + 1,
        params=params,
        transform_state=tx_state,
        perm=perm,
        diverged_at=diverged_at,
        diverged_in_params=diverged_in_params,
        last_finite=last_finite,
    )
    return new_state, value, kinetic


def chunk_program(spec: ChunkSpec, fns: Functions) -> Callable[..., ChunkOutput]:
    """The chunk as a function of (state, xs, pred_sum, pred_count, data, predict_inputs,
    counts), counts = int32 [before, draws, after].

    One loop over the chunk's steps with the draws recorded under a conditional, so that the
    step (the user's gradient and the update) is compiled once, whatever the mix of burn-in,
    draws and trailing steps.
    """

    def run(state, xs, pred_sum, pred_count, data, predict_inputs, counts):
        n_before, n_draws, n_after = counts[0], counts[1], counts[2]
        n_steps = n_before + n_draws * spec.thin + n_after
        trace = jnp.full((spec.capacity, state.diverged_at.shape[0]), jnp.nan, spec.value_dtype)
        kinetic_shape = jax.eval_shape(
            functools.partial(kinetic_energy, num_chains=state.diverged_at.shape[0]), state.transform_state
        )
        kinetic = jnp.full((spec.capacity, state.diverged_at.shape[0]), jnp.nan, kinetic_shape.dtype)
        draws = jax.tree.map(lambda p: jnp.zeros((spec.max_draws, *p.shape), p.dtype), state.params)
        draw_steps = jnp.zeros((spec.max_draws,), jnp.int32)
        keeps = jnp.zeros((spec.max_draws,), bool)

        def record(k: jax.Array, state: SamplerState, buffers: tuple) -> tuple:
            draws, draw_steps, keeps, pred_sum, pred_count = buffers
            alive = state.diverged_at < 0
            sample = jax.tree.map(lambda p: jnp.where(_per_chain(alive, p), p, jnp.nan), state.params)
            draws = jax.tree.map(lambda buf, x: jax.lax.dynamic_update_index_in_dim(buf, x, k, 0), draws, sample)
            # The update that produced this draw ran at step index state.step − 1, where its
            # schedules were evaluated: `keep` sees that index, like a schedule.
            keep = fns.keep(state.step - 1) if fns.keep is not None else jnp.bool_(True)
            draw_steps = draw_steps.at[k].set(state.step)
            keeps = keeps.at[k].set(keep)
            if fns.predict_fn is not None:
                preds = jax.vmap(fns.predict_fn, in_axes=(0, None))(state.params, predict_inputs)
                w = keep & alive
                pred_sum = jax.tree.map(
                    lambda s, p: s + jnp.where(_per_chain(w, p), p, 0).astype(s.dtype),
                    pred_sum,
                    preds,
                )
                pred_count = pred_count + w.astype(pred_count.dtype)
            return draws, draw_steps, keeps, pred_sum, pred_count

        def one(pos: jax.Array, carry: tuple) -> tuple:
            state, trace, kinetic, buffers = carry
            state, value, energy = _step(spec, fns, state, _host_batch(xs, pos), data)
            trace = jax.lax.dynamic_update_index_in_dim(trace, value, pos, 0)
            kinetic = jax.lax.dynamic_update_index_in_dim(kinetic, energy.astype(kinetic.dtype), pos, 0)
            into = pos + 1 - n_before  # steps into the draws
            is_draw = (into > 0) & (into <= n_draws * spec.thin) & (into % spec.thin == 0)
            k = jnp.maximum(into // spec.thin - 1, 0)
            buffers = jax.lax.cond(is_draw, lambda b: record(k, state, b), lambda b: b, buffers)
            return state, trace, kinetic, buffers

        buffers = (draws, draw_steps, keeps, pred_sum, pred_count)
        state, trace, kinetic, buffers = jax.lax.fori_loop(0, n_steps, one, (state, trace, kinetic, buffers))
        draws, draw_steps, keeps, pred_sum, pred_count = buffers
        return ChunkOutput(state, trace, kinetic, draws, draw_steps, keeps, pred_sum, pred_count)

    return run


def _host_batch(xs: Any, pos: Any) -> Any:
    if xs is None:
        return None
    return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, pos, keepdims=False), xs)


def initial_state_program(
    transform: Any,
    is_transform: bool,
    num_chains: int,
    perm_shape: tuple[int, ...],
    stacked: bool,
    placement: Placement | None = None,
) -> Callable[[jax.Array, ArrayTree], SamplerState]:
    """(the run's key, the user's initial params) -> the chains' initial `SamplerState` (no
    `last_finite`). The params are broadcast to every chain (or taken per chain when `stacked`)
    into new buffers: the chunks donate their state, never the caller's arrays."""

    def init_one(chain_key: jax.Array, params: ArrayTree) -> tuple[Any, jax.Array, jax.Array]:
        init_key, noise_key, data_key = jax.random.split(chain_key, 3)
        tx = transform if is_transform else transform(init_key)
        return tx.init(params), noise_key, data_key

    def init(key: jax.Array, params: ArrayTree) -> SamplerState:
        if not stacked:
            params = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_chains, *jnp.shape(x))), params)
        if placement is not None:
            params = placement.params(params)
        # The initial momenta's noise bins take a zero from the run's key, which every chain shares.
        with _noise.shared_zero(jax.random.key_data(key).ravel()[0]):
            tx_state, noise_key, data_key = jax.vmap(init_one)(jax.random.split(key, num_chains), params)
        perm = jnp.zeros((num_chains, *perm_shape), jnp.int32)
        diverged_at = jnp.full((num_chains,), -1, jnp.int32)
        diverged_in_params = jnp.zeros((num_chains,), bool)
        if placement is not None:
            tx_state = placement.like_params(tx_state)
            noise_key, data_key, diverged_at, diverged_in_params = (
                _constrain(x, placement.chains()) for x in (noise_key, data_key, diverged_at, diverged_in_params)
            )
            perm = _constrain(perm, placement.chains(placement.data_axis))
        return SamplerState(
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


# ---- the cache of compiled programs ----------------------------------------------------------

_CACHE_SIZE = 32
_cache: collections.OrderedDict[Any, Any] = collections.OrderedDict()
# The cache key of the program each earlier call's functions made (by identity), and the
# signature of its arguments and hyperparameters: a call that passes them again traces nothing.
_known: dict[Any, tuple] = {}


def _sharding_key(x: Any) -> Any:
    """The sharding a program is compiled for: None for the default device."""
    sharding = getattr(x, "sharding", None)
    if sharding is None or (
        isinstance(sharding, jax.sharding.SingleDeviceSharding) and sharding._device == jax.devices()[0]
    ):
        return None
    return sharding


def abstract(tree: Any) -> Any:
    """`jax.ShapeDtypeStruct`s of a tree's leaves, with their shardings (None: default device)."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x), sharding=_sharding_key(x)),
        tree,
    )


def _signature(tree: Any) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((tuple(x.shape), str(x.dtype), x.sharding) for x in leaves)


class Program:
    """A program for given abstract arguments, traced now (so errors in the user's functions
    surface before anything compiles), then taken from the cache when a program that computes the
    same was compiled before, or compiled by `executable()`.

    Its numeric hyperparameters are inputs (`_inputs`), and the cache is keyed by what the traced
    program computes (`_inputs.content_digest`), by `key` (settings that place it), the abstract
    arguments and the donation; by `functions` (the user's, by identity) too only when the digest
    cannot identify the program. So a call that changes only hyperparameter values, or passes new
    functions of the same structure, compiles nothing; one that passes the same functions again
    does not even trace the program.
    """

    def __init__(
        self,
        key: tuple,
        fn: Callable,
        abstract_args: tuple,
        donate_argnums: tuple[int, ...] = (),
        functions: tuple = (),
        probe: Callable[[], Any] | None = None,
    ):
        # The hyperparameters' values: `probe` traces only the transforms (`_inputs`).
        self._inputs = probe() if probe is not None else _inputs.collect(fn, abstract_args)
        signature = (_signature(abstract_args), _inputs.signature(self._inputs), donate_argnums)
        # The functions of an earlier call, with hyperparameters of the same names and types:
        # its program, untraced (their values are inputs; the probe has checked them).
        identity = (key, functions, *signature)
        found = _known.get(identity)
        self._traced = None
        if found is None or found not in _cache:
            complete: list[bool] = []
            with_inputs = _inputs.taking(fn, self._inputs, complete)
            self._traced = jax.jit(with_inputs, donate_argnums=donate_argnums).trace(
                *abstract_args, _inputs.abstract(self._inputs)
            )
            content, identifies = _inputs.content_digest(self._traced.jaxpr)
            # The jaxpr is flat: the outputs' tree (an optax.chain's state around the same
            # leaves) is the compiled program's too.
            out_tree = jax.tree.structure(self._traced.out_info)
            found = (key, content, () if identifies else functions, out_tree, *signature)
            if all(complete):
                _known[identity] = found
                if len(_known) > 4 * _CACHE_SIZE:
                    _known.pop(next(iter(_known)))
        self._key: tuple = found
        self._executable = _cache.get(self._key)
        self.cached = self._executable is not None
        if self.cached:
            _cache.move_to_end(self._key)

    def out_info(self) -> Any:
        """Abstract outputs (shardings as `abstract` spells them)."""
        info = self._executable.out_info if self._executable is not None else self._traced.out_info
        return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=_sharding_key(s)), info)

    def executable(self) -> Callable[..., Any]:
        """The compiled program, called with the arguments `abstract_args` described."""
        if self._executable is None:
            self._executable = self._traced.lower().compile()
            _cache[self._key] = self._executable
            if len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
        return functools.partial(_call, self._executable, self._inputs)

    def digest(self) -> str:
        """A digest of the program and the values of its hyperparameter inputs."""
        return hashlib.sha256((self._key[1] + _inputs.digest(self._inputs)).encode()).hexdigest()


def _call(executable: Any, inputs: Any, *args: Any) -> Any:
    return executable(*args, inputs)


def clear_cache() -> None:
    """Drops every cached compiled program (they hold references to the user's functions)."""
    _cache.clear()
    _known.clear()
