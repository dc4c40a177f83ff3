"""Each replica of a ladder (`sample(..., temperatures=...)`) at its own temperature.

Replica exchange runs each replica of a chain at temperature T·τ, T the run's and τ the factor
of the rung the replica holds. `sample()` sets the factors, per replica, inside the `vmap` over
replicas (`at`); each of this library's transforms reads them when its `init` or `update` is
traced (`active`), wherever it is (alone, inside `optax.chain`, made by the user's factory), and

- runs its rule at temperature T·τ with the full gradient (`init` draws its momenta at T·τ too),
  its gradient-noise estimate β divided by τ² (`kernels.at_temperature_factor`);
- first carries its state over from the temperature it last ran at (`kernels.temper`: momenta
  scaled by √ratio), when a swap or the ladder's adaptation changed the replica's rung.

Tempering the gradient instead (feeding β·∇log p at temperature T) has the same stationary law
but is the rule at temperature T·τ with step ε/√τ and friction α√τ: the hotter the rung, the
slower it moves against its width, which is the opposite of what the hot rungs are for.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax

__all__: list[str] = []


class Rung(NamedTuple):
    """One replica's temperatures while its update is traced (inside the `vmap` over replicas).

    Attributes:
        factor: τ, its temperature over the run's (a traced scalar).
        ratio: τ over the factor it last ran at (1 where its rung did not change).
        seen: the transforms that read it append (their sampler's name, their temperature): a
            run whose transform reads none cannot be tempered, and says so.
    """

    factor: jax.Array
    ratio: jax.Array
    seen: list[tuple[str, Any]]


_active: contextvars.ContextVar[Rung | None] = contextvars.ContextVar("sghmc_jax_tempering", default=None)


def active() -> Rung | None:
    """The replica's `Rung` while `sample()` traces a ladder's update; None otherwise."""
    return _active.get()


@contextlib.contextmanager
def at(factor: jax.Array, ratio: jax.Array, seen: list[tuple[str, Any]]) -> Iterator[Rung]:
    token = _active.set(Rung(factor, ratio, seen))
    try:
        yield _active.get()  # type: ignore[misc]
    finally:
        _active.reset(token)
