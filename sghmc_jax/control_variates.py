"""Control-variate log posteriors: minibatch gradients whose variance vanishes at a centre.

`centre` builds, from a per-example likelihood, a prior, the data and a centring point θ̂ (e.g.
a mode found with an optax optimiser), a log posterior `log_posterior(params, batch) -> (value,
aux)` whose gradient is the control-variate estimator of Baker et al. (2019). Being a log
posterior, it composes with every sampler, both faces and `sample()` with no change to them;
being a `ScaledLogPosterior`, it carries the temperature that `sample()` and the functional
faces check. `recentre` moves the centre (SVRG-style, between `sample()` calls).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sghmc_jax import _checks
from sghmc_jax.log_posterior import ScaledLogPosterior
from sghmc_jax.types import ArrayTree

__all__ = ["ControlVariate", "centre", "recentre"]


class ControlVariate(ScaledLogPosterior):
    """A minibatch log posterior whose gradient is a control-variate estimator (see `centre`).

    Call it like any log posterior, `value, aux = cv(params, batch)`, and give samplers
    `temperature=cv.temperature`; `sample()` and the functional faces check it.

    Attributes:
        centre: θ̂, the centring point (a pytree like the params).
        full_gradient: the gradient of the full-data log posterior at θ̂, in the units of `form`
            (for `form="mean"` divided by `num_data`), a pytree like the params.
        log_likelihood: the per-example log-likelihood it was built from.
        log_prior: the log prior it was built from.
        data: the full data set (kept for `recentre`; the per-step function does not use it).
        chunk_size: examples per chunk of the full-data pass (None: the whole data set at once).
        temperature, posterior_temperature, num_data, form: as for `ScaledLogPosterior`.
    """

    def __init__(
        self,
        *,
        log_likelihood: Callable[[ArrayTree, Any], jax.Array],
        log_prior: Callable[[ArrayTree], jax.Array],
        data: ArrayTree,
        centre: ArrayTree,
        likelihood_gradient: ArrayTree,
        full_gradient: ArrayTree,
        num_data: int,
        form: str,
        posterior_temperature: float,
        chunk_size: int | None,
    ):
        fn = _control_variate_fn(log_likelihood, log_prior, centre, likelihood_gradient, num_data, form)
        super().__init__(fn, num_data=num_data, form=form, posterior_temperature=posterior_temperature)
        self.log_likelihood = log_likelihood
        self.log_prior = log_prior
        self.data = data
        self.centre = centre
        self.full_gradient = full_gradient
        self.chunk_size = chunk_size
        self._likelihood_gradient = likelihood_gradient

    def __repr__(self) -> str:
        shapes = jax.tree.map(lambda x: tuple(jnp.shape(x)), self.centre)
        return (
            f"ControlVariate(form={self.form!r}, num_data={self.num_data}, "
            f"posterior_temperature={self.posterior_temperature!r}, temperature={self.temperature!r}, "
            f"centre shapes={shapes})"
        )


def _tree_vdot(a: ArrayTree, b: ArrayTree) -> jax.Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _per_example(log_likelihood: Callable[..., jax.Array], params: ArrayTree, batch: Any) -> jax.Array:
    ll = log_likelihood(params, batch)
    if jnp.ndim(ll) != 1:
        raise TypeError(
            f"`log_likelihood` must return one value per example, shape (batch_size,), got {_checks.describe(ll)}"
        )
    return ll


def _control_variate_fn(
    log_likelihood: Callable[[ArrayTree, Any], jax.Array],
    log_prior: Callable[[ArrayTree], jax.Array],
    centre: ArrayTree,
    likelihood_gradient: ArrayTree,
    num_data: int,
    form: str,
) -> Callable[[ArrayTree, Any], tuple[jax.Array, jax.Array]]:
    """The per-step function: the minibatch estimate plus a linear term with zero value and
    gradient c = G − k·∇mean_batch log p(y | θ̂), where G is Σᵢ ∇log p(yᵢ | θ̂) in the form's units
    and k = N ("sum") or 1 ("mean")."""
    scale = num_data if form == "sum" else 1

    def mean_log_likelihood(params: ArrayTree, batch: Any) -> jax.Array:
        return jnp.mean(_per_example(log_likelihood, params, batch))

    def log_posterior(params: ArrayTree, batch: Any) -> tuple[jax.Array, jax.Array]:
        _checks.check_tree_like("params", params, "params_hat", centre)
        mean_ll = mean_log_likelihood(params, batch)
        # The same expressions as make_log_posterior's, so the values agree to the bit.
        if form == "sum":
            value = num_data * mean_ll + log_prior(params)
        else:
            value = mean_ll + log_prior(params) / num_data
        # The batch's gradient at θ̂: the one extra gradient per step that the estimator costs.
        at_centre = jax.grad(mean_log_likelihood)(centre, batch)
        correction = jax.lax.stop_gradient(
            jax.tree.map(lambda g_full, g_batch: g_full - scale * g_batch, likelihood_gradient, at_centre)
        )
        # θ − stop_gradient(θ) is exactly 0 with derivative I: the value stays the minibatch
        # estimate (exactly, whatever the size of c·θ) and the gradient gains exactly c.
        zero = jax.tree.map(lambda p: p - jax.lax.stop_gradient(p), params)
        return value + _tree_vdot(correction, zero).astype(value.dtype), mean_ll

    return log_posterior


@functools.partial(jax.jit, static_argnums=(0, 1))
def _likelihood_gradient_sum(
    log_likelihood: Callable[[ArrayTree, Any], jax.Array], chunk: int, params: ArrayTree, data: ArrayTree
) -> ArrayTree:
    """Σᵢ ∇log p(yᵢ | params) over all of `data`, `chunk` examples at a time (a scan over the
    whole chunks, then the remainder), so memory is bounded by one chunk's gradient."""
    num = jax.tree.leaves(data)[0].shape[0]
    whole, rest = divmod(num, chunk)

    def chunk_gradient(batch: Any) -> ArrayTree:
        return jax.grad(lambda p: jnp.sum(_per_example(log_likelihood, p, batch)))(params)

    total = jax.tree.map(jnp.zeros_like, params)
    if whole:
        chunks = jax.tree.map(lambda x: x[: whole * chunk].reshape(whole, chunk, *x.shape[1:]), data)

        def body(acc: ArrayTree, batch: Any) -> tuple[ArrayTree, None]:
            return jax.tree.map(jnp.add, acc, chunk_gradient(batch)), None

        total, _ = jax.lax.scan(body, total, chunks)
    if rest:
        tail = jax.tree.map(lambda x: x[whole * chunk :], data)
        total = jax.tree.map(jnp.add, total, chunk_gradient(tail))
    return total


def _data_size(data: Any) -> int:
    leaves, _ = jax.tree_util.tree_flatten_with_path(data)
    if not leaves:
        raise ValueError(f"`data` must hold at least one array with a leading example axis, got {data!r}")
    sizes = {}
    for path, leaf in leaves:
        if not hasattr(leaf, "shape") or np.ndim(leaf) == 0:
            raise ValueError(
                "every leaf of `data` needs a leading example axis, got "
                f"{_checks.describe(leaf)} at data{jax.tree_util.keystr(path)}"
            )
        sizes[f"data{jax.tree_util.keystr(path)}"] = int(np.shape(leaf)[0])
    if len(set(sizes.values())) != 1:
        raise ValueError(f"every leaf of `data` must have the same leading size (examples), got {sizes}")
    size = next(iter(sizes.values()))
    if size < 1:
        raise ValueError(f"`data` must hold at least one example, got leading size {size}")
    return size


def _check_temperature(temperature: Any) -> float:
    t = _checks.concrete_float(temperature)
    if t is None or isinstance(temperature, bool) or not math.isfinite(t) or t <= 0:
        raise ValueError(
            f"`temperature` must be a finite number > 0 (1 is the posterior), got temperature={temperature!r}"
        )
    return t


def _check_params_hat(params_hat: Any) -> ArrayTree:
    _checks.check_float_tree("params_hat", params_hat)
    _checks.check_finite_tree("params_hat", params_hat)
    return jax.tree.map(jnp.asarray, params_hat)


def centre(
    log_likelihood: Callable[[ArrayTree, Any], jax.Array],
    log_prior: Callable[[ArrayTree], jax.Array],
    data: ArrayTree,
    params_hat: ArrayTree,
    *,
    num_data: int | None = None,
    form: str = "sum",
    temperature: float = 1.0,
    chunk_size: int | None = None,
) -> ControlVariate:
    r"""Builds the control-variate log posterior centred at `params_hat` (one full-data pass).

    With θ̂ = `params_hat`, N examples and a minibatch S of n of them, the gradient of the result
    at θ is (Baker et al. 2019, for `form="sum"`)

    .. math::

        \widehat{\nabla \log p}(\theta) = \nabla \log p(\theta)\big|_{\hat\theta}
            + \frac{N}{n} \sum_{i \in S} \big[\nabla \log p(y_i \mid \theta)
                                            - \nabla \log p(y_i \mid \hat\theta)\big]
            + \big[\nabla \log p_0(\theta) - \nabla \log p_0(\hat\theta)\big]

    where ∇log p(θ̂) = Σᵢ ∇log p(yᵢ | θ̂) + ∇log p₀(θ̂) is the full-data gradient at θ̂,
    computed once here, and p₀ the prior, whose gradient thus enters exactly at θ. It is unbiased
    for the full-data gradient at every θ (over the blocks of any partition of the data into
    equal batches its average is that gradient exactly), exact at θ = θ̂, and its variance,
    (N²/n)·Cov_i[∇log p(yᵢ | θ) − ∇log p(yᵢ | θ̂)] for sampling with replacement, is of order
    N‖θ − θ̂‖²/n instead of the plain estimator's N²/n: near a mode, where the posterior has
    width O(N^{-1/2}), it is smaller by a factor of order N. On small data sets with many
    parameters the gain can be small: 2.8× at posterior draws of a 31-coefficient logistic
    regression on N = 569 examples, barely more than the doubled cost of a step
    (`benchmarks/control_variates.py`).

    The value of the result is the ordinary minibatch estimate N·mean_S log p(yᵢ | θ) + log
    p₀(θ), exactly as `make_log_posterior` returns it (for monitoring; the control variate
    changes the gradient only): it is that estimate plus ⟨c, θ − stop_gradient(θ)⟩, zero in value
    and c in gradient, with c = Σᵢ ∇log p(yᵢ | θ̂) − (N/n) Σ_{i∈S} ∇log p(yᵢ | θ̂) computed for
    each batch. That costs one extra gradient of the batch's log-likelihood at θ̂ every step,
    about twice a plain step's gradient work. `form="mean"` divides value and gradient by N and
    is sampled at temperature T/N, as for `make_log_posterior`.

    Args:
        log_likelihood: `log_likelihood(params, batch) -> (batch_size,)` per-example
            log-likelihoods of a batch.
        log_prior: `log_prior(params) -> scalar`.
        data: the full data set: a pytree of arrays with the same leading (example) size N; a
            batch is a slice of it along that axis, as `sample(..., data=data)` draws them.
        params_hat: θ̂, a pytree of finite floating-point arrays like the params (e.g. a mode
            found with an optax optimiser; the chains may start there too).
        num_data: N; by default the leading size of `data`, which it must equal if given (a
            check that the minibatch scaling and the full-data pass agree).
        form: "sum" or "mean", as for `make_log_posterior`.
        temperature: the target's temperature relative to the posterior (1: the posterior), as
            for `make_log_posterior`.
        chunk_size: the full-data gradient at θ̂ is taken this many examples at a time (a
            compiled scan), to bound its memory; None takes all N at once. It changes nothing
            else (the minibatch size is the sampler's `batch_size`, free to differ).

    Returns:
        A `ControlVariate`: a `ScaledLogPosterior` (callable `(params, batch) -> (value,
        mean log-likelihood of the batch)`, with `temperature`) that also carries `centre` (θ̂)
        and `full_gradient` (∇log p(θ̂) in the form's units).

    Raises:
        TypeError, ValueError: naming the argument, for callables that are not, a bad `form`,
            `num_data` or `chunk_size`, data leaves of unequal leading sizes, `params_hat` that
            is not a finite float pytree, or a non-finite full-data gradient at `params_hat`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.control_variates import centre
        >>> data = jnp.arange(8.0)  # y_i ~ N(θ, 1), prior N(0, 10²)
        >>> ll = lambda theta, y: -0.5 * (y - theta) ** 2
        >>> cv = centre(ll, lambda theta: -0.005 * theta**2, data, jnp.asarray(3.0))
        >>> cv.temperature, round(float(cv.full_gradient), 4)  # Σ(y_i − 3) − 3/100
        (1.0, 3.97)
        >>> # Equal per-example curvatures: every batch gives the exact full-data gradient.
        >>> grad = jax.grad(lambda theta, batch: cv(theta, batch)[0])
        >>> [round(float(grad(jnp.asarray(1.0), b)), 4) for b in data.reshape(4, 2)]
        [19.99, 19.99, 19.99, 19.99]

    References:
        Baker, J., Fearnhead, P., Fox, E. B. and Nemeth, C. (2019). `Control variates for
        stochastic gradient MCMC <https://arxiv.org/abs/1706.05439>`_. Statistics and
        Computing, 29, 599–615.

        Nemeth, C. and Fearnhead, P. (2021). `Stochastic gradient Markov chain Monte Carlo
        <https://arxiv.org/abs/1907.06986>`_. Journal of the American Statistical Association,
        116(533), 433–450.
    """
    if not callable(log_likelihood):
        raise TypeError(f"`log_likelihood` must be callable, got {type(log_likelihood).__name__}")
    if not callable(log_prior):
        raise TypeError(f"`log_prior` must be callable, got {type(log_prior).__name__}")
    if form not in ("sum", "mean"):
        raise ValueError(f"`form` must be 'sum' or 'mean', got form={form!r}")
    t = _check_temperature(temperature)
    size = _data_size(data)
    if num_data is None:
        n = size
    else:
        n = _checks.check_int("num_data", num_data, 1)
        if n != size:
            raise ValueError(
                f"`num_data` must equal the number of examples in `data` ({size}, its leading "
                f"size): the full-data gradient at the centre is a sum over `data`; got num_data={n}"
            )
    chunk = size if chunk_size is None else _checks.check_int("chunk_size", chunk_size, 1, size, f"N = {size}")
    params_hat = _check_params_hat(params_hat)

    g_lik = _likelihood_gradient_sum(log_likelihood, chunk, params_hat, data)
    g_prior = jax.grad(log_prior)(params_hat)
    if form == "mean":
        g_lik = jax.tree.map(lambda g: g / n, g_lik)
        g_prior = jax.tree.map(lambda g: g / n, g_prior)
    full = jax.tree.map(jnp.add, g_lik, g_prior)
    for path, leaf in jax.tree_util.tree_flatten_with_path(full)[0]:
        if not bool(jnp.all(jnp.isfinite(leaf))):
            raise ValueError(
                "the full-data gradient of the log posterior at `params_hat` must be finite, got "
                f"non-finite values at params_hat{jax.tree_util.keystr(path)}; centre at a point "
                "where the log likelihood and log prior are finite and differentiable"
            )
    return ControlVariate(
        log_likelihood=log_likelihood,
        log_prior=log_prior,
        data=data,
        centre=params_hat,
        likelihood_gradient=g_lik,
        full_gradient=full,
        num_data=n,
        form=form,
        posterior_temperature=t,
        chunk_size=chunk_size,
    )


def recentre(cv: ControlVariate, params_hat: ArrayTree) -> ControlVariate:
    r"""The same control variate centred at a new θ̂ (one more full-data pass): SVRG-style.

    SVRG-LD (Dubey et al. 2016) moves the centre to the chain's current position every m steps
    (m ≈ N/n), so that ‖θ − θ̂‖ stays small wherever the chain goes:

    .. math::

        \hat\theta \leftarrow \theta_t, \quad
        \hat g \leftarrow \textstyle\sum_{i=1}^N \nabla \log p(y_i \mid \theta_t)
        \qquad \text{every } m \text{ steps.}

    A log posterior is a stateless function of (params, batch), so it cannot re-centre itself
    inside a running chain, nor can it hold one centre per chain. Re-centre between runs
    instead: run `sample()` for m steps, re-centre at the chains' mean (or at one chain's
    params) from `result.final_state`, and continue with `init_state=result.final_state` and
    the new control variate. Each call with a new control variate compiles its program again
    (the centre is a constant of the program), so make m large enough for that to pay: this
    is periodic re-centring at a coarse interval (e.g. once after burn-in, moving a rough
    optimiser's centre to the chains' mean), not SVRG-LD's per-chain, every-epoch anchor,
    which would need the anchor in the sampler's state. The returned object is new; `cv` is
    unchanged (a compiled program that closed over its centre stays correct).

    Args:
        cv: a `ControlVariate` from `centre`.
        params_hat: the new θ̂, a finite float pytree with the structure and shapes of
            `cv.centre`.

    Returns:
        A new `ControlVariate` with the likelihood, prior, data, form, temperature and chunk
        size of `cv`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.control_variates import centre, recentre
        >>> ll = lambda theta, y: -0.5 * (y - theta) ** 2
        >>> cv = centre(ll, lambda theta: -0.5 * theta**2, jnp.arange(4.0), jnp.asarray(0.0))
        >>> float(cv.full_gradient), float(recentre(cv, jnp.asarray(1.0)).full_gradient)
        (6.0, 1.0)

    References:
        Dubey, A., Reddi, S. J., Póczos, B., Smola, A. J., Xing, E. P. and Williamson, S. A.
        (2016). `Variance reduction in stochastic gradient Langevin dynamics
        <https://proceedings.neurips.cc/paper/2016/hash/9b698eb3105bd82528f23d0c92dedfc0-Abstract.html>`_.
        Advances in Neural Information Processing Systems 29.

        Baker, J., Fearnhead, P., Fox, E. B. and Nemeth, C. (2019). `Control variates for
        stochastic gradient MCMC <https://arxiv.org/abs/1706.05439>`_. Statistics and
        Computing, 29, 599–615.
    """
    if not isinstance(cv, ControlVariate):
        raise TypeError(f"`cv` must be a ControlVariate (from `centre`), got {type(cv).__name__}")
    params_hat = _check_params_hat(params_hat)
    _checks.check_tree_like("params_hat", params_hat, "cv.centre", cv.centre)
    return centre(
        cv.log_likelihood,
        cv.log_prior,
        cv.data,
        params_hat,
        num_data=cv.num_data,
        form=cv.form,
        temperature=cv.posterior_temperature,
        chunk_size=cv.chunk_size,
    )
