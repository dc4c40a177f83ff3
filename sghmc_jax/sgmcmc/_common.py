"""What every functional face shares: one generic `build`/`init`/`update` over a sampler's
`kernels.Rule`, with the schedules, the jit, the buffer donation and the mapping between the
rule's fields and the face's state.

A face's state is `State(params, *rule.fields, log_posterior, aux, step)`; each
`sgmcmc/<name>.py` keeps posteriors' explicit signatures and docstrings and calls these.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from sghmc_jax import _checks, kernels
from sghmc_jax.types import ArrayTree, LogProbFn

__all__: list[str] = []


def check_log_posterior(log_posterior: Any) -> None:
    if not callable(log_posterior):
        raise TypeError(
            "`log_posterior` must be a callable log_posterior(params, batch) -> (value, aux), "
            f"got {type(log_posterior).__name__}"
        )


def check_build(
    rule: kernels.Rule, log_posterior: LogProbFn, hyperparameters: dict[str, Any], settings: dict[str, Any]
) -> None:
    """Everything `build` checks: the log posterior, the hyperparameters against the rule's table,
    the initial-state settings, and the temperature against the log posterior's."""
    check_log_posterior(log_posterior)
    _checks.check_hyperparameters(rule, hyperparameters)
    _checks.check_settings(settings)
    _checks.check_target_temperature(
        rule.name, hyperparameters["temperature"], getattr(log_posterior, "temperature", None)
    )


def _negated(log_posterior: LogProbFn, params: ArrayTree, batch: Any) -> tuple[jax.Array, Any]:
    value, aux = _checks.check_log_posterior_output(log_posterior(params, batch))
    return -value, aux


def loss_gradient(log_posterior: LogProbFn, params: ArrayTree, batch: Any) -> tuple[jax.Array, Any, ArrayTree]:
    """(log posterior value, aux, gradient of the LOSS −log p): what an optax face consumes."""
    (neg_value, aux), loss_grad = jax.value_and_grad(functools.partial(_negated, log_posterior), has_aux=True)(
        params, batch
    )
    return -neg_value, aux, loss_grad


def initial_params(params: ArrayTree) -> ArrayTree:
    """The user's params, checked (floating-point, finite) and copied into buffers of the state's
    own, so that `update(..., inplace=True)`, which donates the state's buffers, never deletes
    the caller's arrays."""
    _checks.check_float_tree("params", params)
    _checks.check_finite_tree("params", params)
    return jax.tree.map(lambda x: jnp.array(x, copy=True), params)


def initial_aux(log_posterior: LogProbFn | None, params: ArrayTree, batch: Any) -> Any:
    """`aux` laid out as the log posterior returns it (NaN, or 0 for integers, before the first
    update), so that the state's structure is the same before and after `update` (which a
    `lax.scan` over `update` requires). The log posterior is traced once, with `batch`; without
    a batch it is traced with `batch=None`, and when that fails `aux` stays None, with a
    warning (then pass an example `batch` to `init` to scan over `update`)."""
    if log_posterior is None:
        return None
    try:
        out = jax.eval_shape(log_posterior, params, batch)
    except Exception as err:
        if batch is None:
            # Not an error: a Python loop over `update` works with aux None; only a scan fails,
            # far from here and with a message about pytree structures.
            warnings.warn(
                "init(params) without `batch=` traces `log_posterior(params, None)` to lay out "
                f"the state's `aux`, and that failed ({type(err).__name__}: {str(err)[:200]}); "
                "`aux` is None until the first `update`, which changes the state's structure, "
                "so a `jax.lax.scan` over `update` fails with a pytree mismatch (unless the log "
                "posterior's aux is None). Fix: pass an example batch, `init(params, batch=batch, ...)`",
                UserWarning,
                stacklevel=4,
            )
            return None
        raise
    _, aux = _checks.check_log_posterior_output(out)

    def empty(s: jax.ShapeDtypeStruct) -> jax.Array:
        fill = jnp.nan if jnp.issubdtype(s.dtype, jnp.inexact) else 0
        return jnp.full(s.shape, fill, s.dtype)

    return jax.tree.map(empty, aux)


def init(
    rule: kernels.Rule,
    state_type: type,
    params: ArrayTree,
    values: dict[str, Any],
    key: Any,
    log_posterior: LogProbFn | None,
    batch: Any,
) -> Any:
    """The state at step 0: `values` holds the hyperparameters the rule's init needs and its
    initial-state settings (schedules are taken at step 0); `key` (or None) draws what the rule
    draws."""
    params = initial_params(params)
    key = None if key is None else _checks.canonical_key(key)
    start = {k: _checks.schedule_value(v) for k, v in values.items()}
    fields = rule.init(params, key, start)
    value = jnp.full([], jnp.nan, optax.tree.dtype(params, "highest"))
    aux = initial_aux(log_posterior, params, batch)
    return state_type(params=params, **fields, log_posterior=value, aux=aux, step=jnp.zeros([], jnp.int32))


def update(
    rule: kernels.Rule,
    state_type: type,
    state: Any,
    batch: Any,
    log_posterior: LogProbFn,
    hyperparameters: dict[str, Any],
    key: Any,
    inplace: bool,
) -> Any:
    """One step of `rule` on a face's state; jit-compiled once per (rule, log posterior,
    schedules), with the numeric hyperparameters traced, and with the state's buffers donated
    when `inplace`."""
    check_log_posterior(log_posterior)
    _checks.check_hyperparameters(rule, hyperparameters)
    _checks.check_float_tree("state.params", state.params)
    numbers = {k: v for k, v in hyperparameters.items() if not callable(v)}
    schedules = tuple((k, v) for k, v in hyperparameters.items() if callable(v))
    step_fn = _update_donated if inplace else _update_jit
    params, fields, value, aux, step = step_fn(
        state.params,
        {f: getattr(state, f) for f in rule.fields},
        jnp.asarray(state.step, jnp.int32),
        jnp.asarray(state.log_posterior),
        batch,
        _checks.canonical_key(key),
        numbers,
        rule=rule,
        log_posterior=log_posterior,
        schedules=schedules,
    )
    return state_type(params=params, **fields, log_posterior=value, aux=aux, step=step)


def _update_impl(
    params: ArrayTree,
    fields: dict[str, Any],
    step: jax.Array,
    previous_value: jax.Array,
    batch: Any,
    key: jax.Array,
    numbers: dict[str, Any],
    *,
    rule: kernels.Rule,
    log_posterior: LogProbFn,
    schedules: tuple[tuple[str, Callable], ...],
) -> tuple[ArrayTree, dict[str, Any], jax.Array, Any, jax.Array]:
    now = dict(numbers) | {name: schedule(step) for name, schedule in schedules}

    def gradient(p: ArrayTree) -> tuple[jax.Array, Any, ArrayTree]:
        value, aux, loss_grad = loss_gradient(log_posterior, p, batch)
        return value, aux, jax.tree.map(jax.lax.neg, loss_grad)

    if rule.integrate is not None:
        new_params, fields, value, aux = rule.integrate(params, fields, gradient, key, now)
    else:
        # The rule on the negated loss gradient, exactly as the optax face runs it: both faces
        # give bit-identical chains from the same keys.
        value, aux, grad_log_posterior = gradient(params)
        increment, fields = rule.step(fields, grad_log_posterior, key, now)
        new_params = optax.apply_updates(params, increment)
    return new_params, fields, jnp.asarray(value, previous_value.dtype), aux, optax.safe_increment(step)


_STATIC = ("rule", "log_posterior", "schedules")
_update_jit = jax.jit(_update_impl, static_argnames=_STATIC)
_update_donated = jax.jit(_update_impl, static_argnames=_STATIC, donate_argnums=(0, 1))
