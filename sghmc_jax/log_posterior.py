"""Building minibatch log posteriors with the data-size scaling right, and losses from them.

`make_log_posterior` returns a `ScaledLogPosterior`: a `log_posterior(params, batch) -> (value,
aux)` that also carries the temperature at which a sampler targets the posterior with it, so
that `sample()` and the functional faces can check (and name) a sampler whose temperature
disagrees, the most damaging silent mistake in SG-MCMC code. `as_loss` turns any log posterior
into the loss an optax face consumes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp

from sghmc_jax import _checks
from sghmc_jax.types import ArrayTree, LogProbFn

__all__ = ["ScaledLogPosterior", "as_loss", "make_log_posterior"]


class ScaledLogPosterior:
    """A minibatch log posterior and the temperature that makes a sampler target the posterior.

    Call it like any log posterior, `value, aux = log_posterior(params, batch)`; give samplers
    `temperature=log_posterior.temperature`. `sample()` and the functional faces' `build` raise
    when a sampler's temperature disagrees with it.

    Attributes:
        temperature: the sampler temperature to use with it: the posterior temperature (1 unless
            a cold posterior was asked for) for `form="sum"`, divided by `num_data` for
            `form="mean"`.
        posterior_temperature: the temperature of the target relative to the posterior (1: the
            posterior itself; < 1: a cold posterior).
        num_data: N, the number of examples in the full data set.
        form: "sum" or "mean".
    """

    def __init__(self, fn: LogProbFn, *, num_data: int, form: str, posterior_temperature: float = 1.0):
        self._fn = fn
        self.num_data = num_data
        self.form = form
        self.posterior_temperature = posterior_temperature
        scale = 1.0 if form == "sum" else 1.0 / num_data
        self.temperature = posterior_temperature * scale

    def __call__(self, params: ArrayTree, batch: Any) -> tuple[jax.Array, Any]:
        return self._fn(params, batch)

    def loss(self, params: ArrayTree, batch: Any) -> jax.Array:
        """−value: the loss whose gradient an optax face consumes (`jax.grad(lp.loss)`)."""
        return -self._fn(params, batch)[0]

    def __iter__(self) -> Iterator[Any]:
        # `log_posterior, temperature = make_log_posterior(...)` keeps working, and the unpacked
        # log posterior still carries its temperature.
        yield self
        yield self.temperature

    def __repr__(self) -> str:
        return (
            f"ScaledLogPosterior(form={self.form!r}, num_data={self.num_data}, "
            f"posterior_temperature={self.posterior_temperature!r}, temperature={self.temperature!r})"
        )


def make_log_posterior(
    log_likelihood: Callable[[ArrayTree, Any], jax.Array],
    log_prior: Callable[[ArrayTree], jax.Array],
    num_data: int,
    *,
    form: str = "sum",
    temperature: float = 1.0,
) -> ScaledLogPosterior:
    """Builds `log_posterior(params, batch)` for minibatches with the data-size scaling right.

    The minibatch estimate of the full-data log posterior log p(θ) + Σᵢ log p(yᵢ | θ) is
    `N · mean_batch(log p(yᵢ | θ)) + log p(θ)`. Two equivalent forms are offered:

    - `form="sum"` (the classic form): that estimate itself, sampled at temperature 1.
    - `form="mean"` (posteriors' recipe): the estimate divided by N, i.e.
      `mean_batch(log p(yᵢ | θ)) + log p(θ) / N`, sampled at temperature 1/N. Its gradients are
      O(1) whatever N is, so step sizes carry over between data sets; exp(value / T) is the same
      target.

    The result carries that temperature: pass `temperature=log_posterior.temperature` to the
    sampler. `sample()` and the functional faces raise when the sampler's temperature differs
    (forgetting it samples at T = 1, e.g. a posterior sd 25 times too large at N = 600).

    Args:
        log_likelihood: `log_likelihood(params, batch) -> (batch_size,)` per-example
            log-likelihoods of the batch.
        log_prior: `log_prior(params) -> scalar`.
        num_data: N, the number of examples in the full data set.
        form: "sum" or "mean".
        temperature: the target's temperature relative to the posterior: 1 is the posterior,
            < 1 a cold posterior p(θ | data)^(1/T) (the sampler's temperature is this times 1/N
            for `form="mean"`).

    Returns:
        A `ScaledLogPosterior`; its aux output is the batch's mean log-likelihood. It unpacks as
        `(log_posterior, temperature)`.

    Example:
        >>> import jax.numpy as jnp
        >>> from sghmc_jax import make_log_posterior
        >>> ll = lambda w, batch: -0.5 * (batch - w) ** 2
        >>> lp = make_log_posterior(ll, lambda w: -0.5 * w**2, 100, form="mean")
        >>> lp.temperature
        0.01
        >>> value, mean_ll = lp(jnp.asarray(0.0), jnp.ones(4))
        >>> float(value), float(lp.loss(jnp.asarray(0.0), jnp.ones(4)))
        (-0.5, 0.5)
    """
    if not callable(log_likelihood):
        raise TypeError(f"`log_likelihood` must be callable, got {type(log_likelihood).__name__}")
    if not callable(log_prior):
        raise TypeError(f"`log_prior` must be callable, got {type(log_prior).__name__}")
    n = _checks.check_int("num_data", num_data, 1)
    if form not in ("sum", "mean"):
        raise ValueError(f"`form` must be 'sum' or 'mean', got form={form!r}")
    t = _checks.concrete_float(temperature)
    if t is None or isinstance(temperature, bool) or not math.isfinite(t) or t <= 0:
        raise ValueError(
            f"`temperature` must be a finite number > 0 (1 is the posterior), got temperature={temperature!r}"
        )

    def mean_log_likelihood(params: ArrayTree, batch: Any) -> jax.Array:
        ll = log_likelihood(params, batch)
        if jnp.ndim(ll) != 1:
            raise TypeError(
                f"`log_likelihood` must return one value per example, shape (batch_size,), got {_checks.describe(ll)}"
            )
        return jnp.mean(ll)

    if form == "sum":

        def log_posterior(params: ArrayTree, batch: Any) -> tuple[jax.Array, jax.Array]:
            mean_ll = mean_log_likelihood(params, batch)
            return n * mean_ll + log_prior(params), mean_ll

    else:

        def log_posterior(params: ArrayTree, batch: Any) -> tuple[jax.Array, jax.Array]:
            mean_ll = mean_log_likelihood(params, batch)
            return mean_ll + log_prior(params) / n, mean_ll

    return ScaledLogPosterior(log_posterior, num_data=n, form=form, posterior_temperature=t)


def as_loss(log_posterior: LogProbFn, *, has_aux: bool = False) -> Callable[..., Any]:
    """The loss an optax face consumes, −log p, from a `log_posterior(params, batch) -> (value,
    aux)`.

    Args:
        log_posterior: a posteriors-style log posterior (e.g. from `make_log_posterior`).
        has_aux: return `(loss, aux)` (for `jax.value_and_grad(..., has_aux=True)`) instead of
            the loss alone.

    Returns:
        `loss(params, batch)`; it keeps the log posterior's `temperature` attribute, if any.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import sghmc_jax
        >>> loss = sghmc_jax.as_loss(lambda p, batch: (-0.5 * jnp.sum((p - batch) ** 2), None))
        >>> jax.grad(loss)(jnp.zeros(2), jnp.ones(2))
        Array([-1., -1.], dtype=float32)
    """
    if not callable(log_posterior):
        raise TypeError(
            "`log_posterior` must be a callable log_posterior(params, batch) -> (value, aux), "
            f"got {type(log_posterior).__name__}"
        )

    def loss(params: ArrayTree, batch: Any) -> Any:
        value, aux = _checks.check_log_posterior_output(log_posterior(params, batch))
        return (-value, aux) if has_aux else -value

    if hasattr(log_posterior, "temperature"):
        loss.temperature = log_posterior.temperature  # type: ignore[attr-defined]
    return loss
