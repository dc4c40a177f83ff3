"""The run's two compiled programs, the chains' initial state and the chunk of steps, from the
cache when an earlier call compiled them, and the time spent tracing and compiling them."""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp

from sghmc_jax import _inputs
from sghmc_jax._sampler import cache, engine, fields
from sghmc_jax._sampler import placement as placing
from sghmc_jax._sampler.fields import program_view
from sghmc_jax._sampler.plan import Plan
from sghmc_jax.types import SamplerState

__all__: list[str] = []


class Programs:
    """The run's compiled programs (from the cache when an earlier call compiled them)."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.compile_time = 0.0
        self.views = engine.Views(
            program_view(plan.steps),
            program_view(plan.batches),
            program_view(plan.model),
            program_view(plan.predictive),
            plan.placement,
            program_view(plan.ladder),
        )
        self.init_program: cache.Program | None = None
        # Trace both programs now, so that errors in the user's functions (and a temperature
        # that disagrees with the log posterior's) surface before anything compiles.
        t0 = time.perf_counter()
        state_shape = self._initial_state_shape()
        self.pred_sum, self.pred_count = self._predictive_buffers(state_shape)
        records = (plan.steps, plan.batches, plan.model, plan.predictive, plan.ladder)
        self.chunk = cache.Program(
            ("chunk", *(fields.cache_key(r) for r in records), plan.placement),
            engine.chunk_program(self.views),
            (
                state_shape,
                plan.batches.host_chunk_shape(plan.steps.capacity),
                cache.abstract(self.pred_sum),
                cache.abstract(self.pred_count),
                cache.abstract(plan.batches.data),
                cache.abstract(plan.predictive.inputs),
                jax.ShapeDtypeStruct((3,), jnp.int32),
            ),
            donate_argnums=(0,),
            functions=sum((fields.functions(r) for r in records if r is not None), ()),
            probe=_inputs.update_probe(
                plan.model.update, state_shape, plan.model.target_temperature, plan.model.update_transform
            ),
        )
        if self.needs_compiling:  # a cache hit is not compilation
            self.compile_time += time.perf_counter() - t0

    def _initial_state_shape(self) -> Any:
        plan = self.plan
        if plan.start.init_state is not None:
            return self._for_mode(cache.abstract(plan.start.init_state))
        start = plan.start
        views = (program_view(plan.model), program_view(start), self.views.batches, plan.placement, self.views.ladder)
        self.init_program = cache.Program(
            (
                "init",
                plan.model.is_factory,
                *(fields.cache_key(r) for r in (start, plan.batches, plan.ladder)),
                plan.placement,
            ),
            engine.initial_state_program(*views),
            cache.abstract((start.key, start.init_params)),
            functions=(plan.model.transform,),
            probe=_inputs.init_probe(
                plan.model.transform,
                not plan.model.is_factory,
                start.key,
                start.init_params,
                start.stacked_init,
                plan.model.update_transform,
            ),
        )
        if plan.placement is not None:
            # Only the compiled program knows its outputs' shardings (traced, they are
            # unspecified), and they key the chunk program: without this, the second call of a
            # run over a mesh would miss the cache the first one filled.
            self.init_program.executable()
        return self._for_mode(self.init_program.out_info())

    @property
    def needs_compiling(self) -> bool:
        return not self.chunk.cached or (self.init_program is not None and not self.init_program.cached)

    def _for_mode(self, state: Any) -> Any:
        """The state with `last_finite` as this run's divergence mode needs it."""
        if not self.plan.steps.continue_on_divergence:
            return state._replace(last_finite=None)
        if state.last_finite is None:
            return state._replace(last_finite=(state.params, state.transform_state))
        return state

    def _predictive_buffers(self, state_shape: SamplerState) -> tuple[Any, Any]:
        plan = self.plan
        if plan.predictive.fn is None:
            return None, None
        pred_shape = jax.eval_shape(  # of the chains' draws (rung 0's with a ladder)
            jax.vmap(plan.predictive.fn, in_axes=(0, None)), engine.drawn_shape(state_shape), plan.predictive.inputs
        )
        sharding = None if plan.placement is None else plan.placement.chains()
        pred_sum = jax.tree.map(
            lambda s: placing.zeros(s.shape, jnp.promote_types(s.dtype, jnp.float32), sharding), pred_shape
        )
        return pred_sum, placing.zeros((plan.start.num_chains,), jnp.int32, sharding)

    def initial_state(self) -> SamplerState:
        """The chains' state at the start of this call (not yet a checkpoint's)."""
        start = self.plan.start
        if self.init_program is not None:
            t0 = time.perf_counter()
            cached = self.init_program.cached
            init = self.init_program.executable()
            if not cached:
                self.compile_time += time.perf_counter() - t0
            state = init(start.key, start.init_params)
        else:
            # A copy, so that continuing a run leaves the earlier result's final_state usable
            # (the chunk donates its state).
            state = placing.copy(start.init_state)
        state = self._for_mode(state)
        if state.last_finite is not None and state.last_finite[0] is state.params:
            # The chunk donates its state: `last_finite` needs buffers of its own.
            state = state._replace(last_finite=placing.copy(state.last_finite))
        return state

    def chunk_executable(self) -> Any:
        if self.chunk.cached:
            return self.chunk.executable()
        t0 = time.perf_counter()
        executable = self.chunk.executable()
        self.compile_time += time.perf_counter() - t0
        return executable
