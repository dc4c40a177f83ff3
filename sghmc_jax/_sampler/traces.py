"""The per-step traces: one value per chain at every step of a run (burn-in included), carried
generically through the chunk's buffers, the sinks, the draw store and the result, where each is
the `SampleResult` attribute of its name. Adding a trace is one entry of `TRACES`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__: list[str] = []


class Trace(NamedTuple):
    """A per-step trace.

    Attributes:
        name: the `SampleResult` attribute and the draw store's array.
        dtype: (the abstract transform state, the log posterior's dtype) -> the trace's dtype.
        read: (the (chain,) log posterior at the step's params, the transform states after the
            step) -> the (chain,) values; NaN is written for a chain that had diverged.
    """

    name: str
    dtype: Callable[[Any, str], Any]
    read: Callable[[jax.Array, Any], jax.Array]


def _has_momenta(x: Any) -> bool:
    return isinstance(x, tuple) and "momenta" in getattr(x, "_fields", ())


def kinetic_energy(tx_state: Any, num_chains: int) -> jax.Array:
    """(chain,) mᵀm/d, the mean over all momentum coordinates of m², of the first state in
    `tx_state` (chain-stacked transform states, or ones inside `optax.chain`'s tuple) with a
    `momenta` field; NaN when there is none (SGLD, pSGLD, a foreign transform)."""
    found = [x for x in jax.tree.leaves(tx_state, is_leaf=_has_momenta) if _has_momenta(x)]
    leaves = jax.tree.leaves(found[0].momenta) if found else []
    if not leaves:
        return jnp.full((num_chains,), jnp.nan, jnp.float32)
    dtype = jnp.promote_types(jnp.result_type(*leaves), jnp.float32)
    total = sum(jnp.sum(jnp.square(x.astype(dtype)).reshape(num_chains, -1), axis=1) for x in leaves)
    count = sum(x.size // num_chains for x in leaves)
    return total / count


TRACES: tuple[Trace, ...] = (
    # The log posterior at the params the step's gradient was taken at.
    Trace("log_posterior", lambda tx_state, value_dtype: value_dtype, lambda value, tx_state: value),
    # mᵀm/d of the momenta after the step, what `diagnose()` reads the kinetic temperature from.
    Trace(
        "kinetic",
        lambda tx_state, value_dtype: jax.eval_shape(lambda s: kinetic_energy(s, 1), tx_state).dtype,
        lambda value, tx_state: kinetic_energy(tx_state, value.shape[0]),
    ),
)
