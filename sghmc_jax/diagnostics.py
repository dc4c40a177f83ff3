"""MCMC convergence diagnostics in JAX: split R-hat, rank-normalised R-hat, bulk/tail ESS, MCSE.

Every per-parameter function takes `draws` of shape `(chain, draw)` and returns a scalar array.
They are written with vectorised `jax.numpy` operations only (no Python loop over draws, no
data-dependent Python control flow), so they can be wrapped in `jax.jit` or `jax.vmap`; they work
in float32 and float64, following the dtype of the input (integer, boolean and half-precision
input is converted to JAX's default float type).

The estimators follow Vehtari et al. (2021) and Stan's implementation of them, the same
algorithm as ArviZ 0.x (`az.rhat(..., method="rank")`, `az.ess(..., method="bulk" | "tail" |
"mean")`, `az.mcse(..., method="mean")`):

- Chains are split in two halves (when `draw` is odd the middle draw is dropped), so that a
  trend within one chain shows up as disagreement between its halves.
- Rank normalisation replaces each draw by `Phi^{-1}((r - 3/8) / (S + 1/4))`, where `r` is its
  average rank among all `S` split draws (Blom's offset), which makes R-hat and ESS well
  defined for heavy-tailed posteriors without a finite mean or variance.
- ESS uses the multi-chain autocorrelation estimator with Geyer's initial positive and initial
  monotone sequence truncation, and Stan's cap of `S * log10(S)` against antithetic chains.

In float64 the results agree with ArviZ 0.23 and arviz-stats 1.3 to rounding error. As there,
any NaN in `draws` makes the result NaN, and chains that are constant (after the transformation
each ESS applies) get an ESS of `S`, the number of split draws, and an R-hat of NaN (0 / 0).
Differences by design: "constant" means a range of exactly 0 here, not ArviZ's range below
1e-15, which depends on the scale of the draws; and R-hat is returned for a single chain, whose
two halves are enough (ArviZ returns NaN for fewer than 2 chains). In float32, rounding can
break the tie between the folded values of the two middle draws (S is even, so the median is
their midpoint), which moves the folded R-hat by O(1/S) relative to a float64 computation.

`summary` applies all of them to every leaf of a pytree of samples whose leaves have leading
axes `(chain, draw, ...)`.

References:
    Vehtari, A., Gelman, A., Simpson, D., Carpenter, B. and Bürkner, P.-C. (2021).
    Rank-normalization, folding, and localization: An improved R-hat for assessing convergence of
    MCMC. Bayesian Analysis, 16(2), 667-718.

    Geyer, C. J. (1992). Practical Markov chain Monte Carlo. Statistical Science, 7(4), 473-483.

    Blom, G. (1958). Statistical Estimates and Transformed Beta-Variables. Wiley, New York.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Diagnosis",
    "IdenticalChainsWarning",
    "Row",
    "ess_bulk",
    "ess_mean",
    "ess_tail",
    "identical_chains",
    "mcse_mean",
    "rhat",
    "split_rhat",
    "summary",
]

_MIN_DRAWS = 4
_TAIL_PROBS = (0.05, 0.95)
_SUMMARY_STATS = ("mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "rhat")


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


def _as_float(x: Any, name: str) -> jax.Array:
    """Returns `x` as a JAX array of a float dtype of at least single precision."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(f"`{name}` must be real-valued, got dtype {x.dtype}")
    if not jnp.issubdtype(x.dtype, jnp.floating) or jnp.finfo(x.dtype).bits < 32:
        # Ranks of more than 2048 draws are not representable in half precision, so anything
        # narrower than float32 is promoted to the default float (float64 under x64).
        x = x.astype(jax.dtypes.canonicalize_dtype(jnp.float64))
    return x


def _check_draws(draws: Any) -> jax.Array:
    """Validates a `(chain, draw)` array and returns it as a float array."""
    shape = getattr(draws, "shape", None)
    if shape is None:
        shape = np.shape(draws)
    if len(shape) != 2 or shape[0] < 1 or shape[1] < _MIN_DRAWS:
        raise ValueError(
            f"`draws` must have shape (chain, draw) with chain >= 1 and draw >= {_MIN_DRAWS}, got shape {tuple(shape)}"
        )
    return _as_float(draws, "draws")


# --------------------------------------------------------------------------------------------
# Building blocks. Each takes draws of shape (..., chain, draw) (any leading batch axes) and
# the array module `xp` to compute with: `jax.numpy` for the public functions (jit- and
# vmap-able), NumPy for `summary` (XLA:CPU sorts rows ~30 times slower than NumPy, and a
# summary should not wait for a compiler). The two share every line but the few operations
# below, and are cross-checked against each other and against ArviZ in the tests.
# --------------------------------------------------------------------------------------------


def _cummin(x: Any, xp: Any, reverse: bool = False) -> Any:
    if xp is np:
        return np.minimum.accumulate(x[..., ::-1], axis=-1)[..., ::-1] if reverse else np.minimum.accumulate(x, axis=-1)
    return jax.lax.cummin(x, axis=x.ndim - 1, reverse=reverse)


def _cummax(x: Any, xp: Any) -> Any:
    if xp is np:
        return np.maximum.accumulate(x, axis=-1)
    return jax.lax.cummax(x, axis=x.ndim - 1)


# Wichura's AS 241 (PPND16): the normal quantile to about 1e-16 relative, for NumPy.
_AS241 = {
    "a": (
        3.3871328727963666080e0,
        1.3314166789178437745e2,
        1.9715909503065514427e3,
        1.3731693765509461125e4,
        4.5921953931549871457e4,
        6.7265770927008700853e4,
        3.3430575583588128105e4,
        2.5090809287301226727e3,
    ),
    "b": (
        1.0,
        4.2313330701600911252e1,
        6.8718700749205790830e2,
        5.3941960214247511077e3,
        2.1213794301586595867e4,
        3.9307895800092710610e4,
        2.8729085735721942674e4,
        5.2264952788528545610e3,
    ),
    "c": (
        1.42343711074968357734e0,
        4.63033784615654529590e0,
        5.76949722146069140550e0,
        3.64784832476320460504e0,
        1.27045825245236838258e0,
        2.41780725177450611770e-1,
        2.27238449892691845833e-2,
        7.74545014278341407640e-4,
    ),
    "d": (
        1.0,
        2.05319162663775882187e0,
        1.67638483018380384940e0,
        6.89767334985100004550e-1,
        1.48103976427480074590e-1,
        1.51986665636164571966e-2,
        5.47593808499534494600e-4,
        1.05075007164441684324e-9,
    ),
    "e": (
        6.65790464350110377720e0,
        5.46378491116411436990e0,
        1.78482653991729133580e0,
        2.96560571828504891230e-1,
        2.65321895265761230930e-2,
        1.24266094738807843860e-3,
        2.71155556874348757815e-5,
        2.01033439929228813265e-7,
    ),
    "f": (
        1.0,
        5.99832206555887937690e-1,
        1.36929880922735805310e-1,
        1.48753612908506148525e-2,
        7.86869131145613259100e-4,
        1.84631831751005468180e-5,
        1.42151175831644588870e-7,
        2.04426310338993978564e-15,
    ),
}


def _polynomial(coefficients: tuple[float, ...], r: np.ndarray) -> np.ndarray:
    out = np.full_like(r, coefficients[-1])
    for c in coefficients[-2::-1]:
        out = out * r + c
    return out


def _ndtri(p: Any, xp: Any) -> Any:
    """Φ⁻¹(p), the standard normal quantile, for 0 < p < 1."""
    if xp is not np:
        return jax.scipy.special.ndtri(p)
    p = np.asarray(p, np.float64)
    q = p - 0.5
    z = np.empty_like(p)
    central = np.abs(q) <= 0.425
    r = 0.180625 - q[central] ** 2
    z[central] = q[central] * _polynomial(_AS241["a"], r) / _polynomial(_AS241["b"], r)
    tail = ~central
    r = np.sqrt(-np.log(np.minimum(p[tail], 1 - p[tail])))
    near = r <= 5.0
    out = np.empty_like(r)
    out[near] = _polynomial(_AS241["c"], r[near] - 1.6) / _polynomial(_AS241["d"], r[near] - 1.6)
    far = ~near
    out[far] = _polynomial(_AS241["e"], r[far] - 5.0) / _polynomial(_AS241["f"], r[far] - 5.0)
    z[tail] = out * np.sign(q[tail])
    return z


def _average_ranks(flat: Any, xp: Any) -> Any:
    """1-based ranks along the last axis, ties sharing the average of the ranks they span."""
    if xp is np:
        order = np.argsort(flat, axis=-1)  # ties share their average rank: no need for stable
        ordered = np.take_along_axis(flat, order, axis=-1)
        size = flat.shape[-1]
        index = np.broadcast_to(np.arange(size), flat.shape)
        change = ordered[..., 1:] != ordered[..., :-1]
        starts = np.concatenate([np.ones((*change.shape[:-1], 1), bool), change], axis=-1)
        ends = np.concatenate([change, np.ones((*change.shape[:-1], 1), bool)], axis=-1)
        first = _cummax(np.where(starts, index, 0), np)
        last = _cummin(np.where(ends, index, size - 1), np, reverse=True)
        ranks = np.empty(flat.shape, flat.dtype)
        np.put_along_axis(ranks, order, (first + last).astype(flat.dtype) / 2 + 1, axis=-1)
        return ranks

    def row(v: jax.Array) -> jax.Array:
        ordered = jnp.sort(v)
        left = jnp.searchsorted(ordered, v, side="left")
        right = jnp.searchsorted(ordered, v, side="right")
        return (left + right + 1).astype(v.dtype) / 2

    return jnp.vectorize(row, signature="(n)->(n)")(flat)


def _split_chains(x: Any, xp: Any) -> Any:
    """Splits every chain into its first and second half, stacked along the chain axis."""
    n = x.shape[-1]
    half = n // 2
    # For an odd number of draws the middle draw is dropped, as Stan and ArviZ do, so both
    # halves have the same length.
    return xp.concatenate([x[..., :half], x[..., n - half :]], axis=-2)


def _rank_normalize(x: Any, xp: Any) -> Any:
    """Replaces each draw by the normal quantile of its average rank over all chains (Blom)."""
    flat = x.reshape(*x.shape[:-2], -1)
    size = flat.shape[-1]
    z = _ndtri((_average_ranks(flat, xp) - 0.375) / (size + 0.25), xp)
    return z.reshape(x.shape).astype(x.dtype)


def _fold(x: Any, xp: Any) -> Any:
    """Distance from the median, whose rank-normalised R-hat detects differences in scale."""
    flat = x.reshape(*x.shape[:-2], -1)
    return xp.abs(x - xp.median(flat, axis=-1)[..., None, None])


def _rhat_of_chains(x: Any, xp: Any) -> Any:
    """Gelman-Rubin potential scale reduction of the chains as given (no splitting)."""
    n = x.shape[-1]
    within = xp.mean(xp.var(x, axis=-1, ddof=1), axis=-1)
    between = n * xp.var(xp.mean(x, axis=-1), axis=-1, ddof=1)
    return xp.sqrt((between / within + n - 1) / n)


def _autocovariance(x: Any, xp: Any) -> Any:
    """Biased autocovariance (divided by n) of each chain at every lag, computed via FFT."""
    n = x.shape[-1]
    centred = x - xp.mean(x, axis=-1, keepdims=True)
    # Zero padding to at least 2n - 1 turns the FFT's circular correlation into the linear one.
    nfft = 1 << (2 * n - 1).bit_length()
    spectrum = xp.fft.rfft(centred, n=nfft, axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    acov = xp.fft.irfft(power, n=nfft, axis=-1)[..., :n] / n
    return acov.astype(x.dtype)


def _ess_of_chains(x: Any, xp: Any) -> Any:
    """Multi-chain ESS of the chains as given (the caller splits and transforms them).

    This is Stan's estimator (also ArviZ's), with its loops replaced by masks: pairs
    `P_k = rho_{2k} + rho_{2k+1}` are summed up to, not including, the first pair that is not
    positive (Geyer's initial positive sequence), after replacing each by the running minimum
    (Geyer's initial monotone sequence); the even-lag autocorrelation of the first rejected pair
    is then added once (not doubled) when it is positive, as Stan does.
    """
    m, n = x.shape[-2:]
    size = m * n
    dtype = x.dtype
    acov = _autocovariance(x, xp)
    within = xp.mean(acov[..., 0], axis=-1) * n / (n - 1)
    var_plus = within * (n - 1) / n
    if m > 1:
        var_plus = var_plus + xp.var(xp.mean(x, axis=-1), axis=-1, ddof=1)
    rho = 1 - (within[..., None] - xp.mean(acov, axis=-2)) / var_plus[..., None]
    rho = xp.where(xp.arange(n) == 0, xp.asarray(1, rho.dtype), rho)

    # Stan looks at pairs whose odd lag is at most n - 2 (except the first pair, always used).
    last_pair = max(0, (n - 3) // 2)
    pairs = rho[..., 0 : 2 * last_pair + 2 : 2] + rho[..., 1 : 2 * last_pair + 2 : 2]
    # Index of the first non-positive pair (last_pair + 1 when there is none, via the sentinel).
    sentinel = xp.ones((*pairs.shape[:-1], 1), bool)
    leading_positive = xp.argmax(xp.concatenate([pairs <= 0, sentinel], axis=-1), axis=-1)
    # When every pair is positive Stan stops with the last one outside the doubled sum, so the
    # number of summed pairs is capped at last_pair.
    n_summed = xp.minimum(leading_positive, last_pair)
    monotone = _cummin(pairs, xp)
    summed = xp.sum(xp.where(xp.arange(last_pair + 1) < n_summed[..., None], monotone, 0), axis=-1)
    next_even = xp.take_along_axis(rho, (2 * n_summed)[..., None], axis=-1)[..., 0]
    next_pair = xp.take_along_axis(pairs, n_summed[..., None], axis=-1)[..., 0]
    # Stan keeps that even-lag term when it is positive, or when its pair was stored because
    # the pair sum was >= 0 (only the > 0 test stops its loop early).
    keep_next = (next_even > 0) | (next_pair >= 0)
    tau = -1 + 2 * summed + xp.where(keep_next, next_even, 0)
    # Antithetic chains can make tau tiny; Stan caps the ESS at S * log10(S).
    tau = xp.maximum(tau, 1 / math.log10(size))
    ess = size / tau
    constant = xp.max(x, axis=(-2, -1)) == xp.min(x, axis=(-2, -1))
    return xp.where(constant, xp.asarray(size, dtype), ess).astype(dtype)


def _nan_if_any_nan(x: Any, value: Any, xp: Any) -> Any:
    """Propagates a NaN anywhere in the draws, which sorting and ranking would otherwise hide."""
    return xp.where(xp.any(xp.isnan(x), axis=(-2, -1)), xp.nan, value).astype(value.dtype)


def _split_rhat(x: Any, xp: Any = jnp) -> Any:
    return _nan_if_any_nan(x, _rhat_of_chains(_split_chains(x, xp), xp), xp)


def _rhat(x: Any, xp: Any = jnp) -> Any:
    split = _split_chains(x, xp)
    # Bulk (location) and folded (scale) R-hat share one computation on a stacked batch.
    both = _rhat_of_chains(_rank_normalize(xp.stack([split, _fold(split, xp)]), xp), xp)
    return _nan_if_any_nan(x, xp.max(both, axis=0), xp)


def _ess_bulk(x: Any, xp: Any = jnp) -> Any:
    return _nan_if_any_nan(x, _ess_of_chains(_rank_normalize(_split_chains(x, xp), xp), xp), xp)


def _ess_tail(x: Any, xp: Any = jnp) -> Any:
    # The quantiles are those of all draws (the middle one included when draw is odd), with
    # the linear interpolation of R's type 7, as ArviZ does.
    flat = x.reshape(*x.shape[:-2], -1)
    quantiles = xp.quantile(flat, xp.asarray(_TAIL_PROBS, x.dtype), axis=-1)  # (2, ...)
    indicators = (x[None] <= quantiles[..., None, None]).astype(x.dtype)
    ess = _ess_of_chains(_split_chains(indicators, xp), xp)
    return _nan_if_any_nan(x, xp.min(ess, axis=0), xp)


def _ess_mean(x: Any, xp: Any = jnp) -> Any:
    return _nan_if_any_nan(x, _ess_of_chains(_split_chains(x, xp), xp), xp)


def _mcse_mean(x: Any, xp: Any = jnp) -> Any:
    sd = xp.std(x.reshape(*x.shape[:-2], -1), axis=-1, ddof=1)
    return sd / xp.sqrt(_ess_mean(x, xp))


def _all_stats(x: Any, xp: Any = jnp) -> dict[str, Any]:
    flat = x.reshape(*x.shape[:-2], -1)
    return {
        "mean": xp.mean(flat, axis=-1),
        "sd": xp.std(flat, axis=-1, ddof=1),
        "mcse_mean": _mcse_mean(x, xp),
        "ess_bulk": _ess_bulk(x, xp),
        "ess_tail": _ess_tail(x, xp),
        "rhat": _rhat(x, xp),
    }


_split_rhat_jit = jax.jit(_split_rhat)
_rhat_jit = jax.jit(_rhat)
_ess_bulk_jit = jax.jit(_ess_bulk)
_ess_tail_jit = jax.jit(_ess_tail)
_ess_mean_jit = jax.jit(_ess_mean)
_mcse_mean_jit = jax.jit(_mcse_mean)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def split_rhat(draws: Any) -> jax.Array:
    """Classic split R-hat (potential scale reduction factor) without rank normalisation.

    Each chain is split into two halves and the Gelman-Rubin R-hat of the resulting chains is
    returned: `sqrt(((n - 1) / n * W + B / n) / W)` with `W` the mean within-chain variance and
    `B / n` the variance of the chain means. It assumes a finite variance; prefer `rhat`.

    Args:
        draws: Array of shape `(chain, draw)` with `draw >= 4`.

    Returns:
        A scalar array with the split R-hat (NaN if `draws` contains NaN or is constant).

    Raises:
        ValueError: If `draws` does not have shape `(chain, draw)` with `draw >= 4`.

    References:
        Vehtari, A., Gelman, A., Simpson, D., Carpenter, B. and Bürkner, P.-C. (2021).
        Rank-normalization, folding, and localization: An improved R-hat for assessing
        convergence of MCMC. Bayesian Analysis, 16(2).
    """
    return _split_rhat_jit(_check_draws(draws))


def rhat(draws: Any) -> jax.Array:
    """Rank-normalised split R-hat of Vehtari et al. (2021).

    The maximum of the split R-hat of the rank-normalised draws (sensitive to differences in
    location) and of the rank-normalised folded draws `|x - median(x)|` (sensitive to
    differences in scale). The paper recommends using draws only when it is below 1.01.

    Args:
        draws: Array of shape `(chain, draw)` with `draw >= 4`.

    Returns:
        A scalar array with the rank-normalised R-hat (NaN if `draws` contains NaN or is
        constant).

    Raises:
        ValueError: If `draws` does not have shape `(chain, draw)` with `draw >= 4`.

    References:
        Vehtari, A., Gelman, A., Simpson, D., Carpenter, B. and Bürkner, P.-C. (2021).
        Rank-normalization, folding, and localization: An improved R-hat for assessing
        convergence of MCMC. Bayesian Analysis, 16(2).
    """
    return _rhat_jit(_check_draws(draws))


def ess_bulk(draws: Any) -> jax.Array:
    """Bulk effective sample size: the ESS of the rank-normalised split chains.

    It measures how well the centre of the distribution is explored and, unlike the plain ESS,
    is defined when the posterior has no finite mean or variance.

    Args:
        draws: Array of shape `(chain, draw)` with `draw >= 4`.

    Returns:
        A scalar array with the bulk ESS (NaN if `draws` contains NaN).

    Raises:
        ValueError: If `draws` does not have shape `(chain, draw)` with `draw >= 4`.

    References:
        Vehtari, A., Gelman, A., Simpson, D., Carpenter, B. and Bürkner, P.-C. (2021).
        Rank-normalization, folding, and localization: An improved R-hat for assessing
        convergence of MCMC. Bayesian Analysis, 16(2).
    """
    return _ess_bulk_jit(_check_draws(draws))


def ess_tail(draws: Any) -> jax.Array:
    """Tail effective sample size: the smaller ESS of the 5% and 95% quantile indicators.

    The ESS of the split chains of `I(x <= q05)` and of `I(x <= q95)`, where the quantiles are
    those of all draws; it measures how well the tails (and so the 90% intervals) are explored.

    Args:
        draws: Array of shape `(chain, draw)` with `draw >= 4`.

    Returns:
        A scalar array with the tail ESS (NaN if `draws` contains NaN).

    Raises:
        ValueError: If `draws` does not have shape `(chain, draw)` with `draw >= 4`.

    References:
        Vehtari, A., Gelman, A., Simpson, D., Carpenter, B. and Bürkner, P.-C. (2021).
        Rank-normalization, folding, and localization: An improved R-hat for assessing
        convergence of MCMC. Bayesian Analysis, 16(2).
    """
    return _ess_tail_jit(_check_draws(draws))


def ess_mean(draws: Any) -> jax.Array:
    """Effective sample size for the mean: the ESS of the split chains, untransformed.

    This is the ESS that goes into the Monte Carlo standard error of the posterior mean; it
    assumes a finite variance.

    Args:
        draws: Array of shape `(chain, draw)` with `draw >= 4`.

    Returns:
        A scalar array with the ESS of the mean (NaN if `draws` contains NaN).

    Raises:
        ValueError: If `draws` does not have shape `(chain, draw)` with `draw >= 4`.

    References:
        Vehtari, A., Gelman, A., Simpson, D., Carpenter, B. and Bürkner, P.-C. (2021).
        Rank-normalization, folding, and localization: An improved R-hat for assessing
        convergence of MCMC. Bayesian Analysis, 16(2).
    """
    return _ess_mean_jit(_check_draws(draws))


def mcse_mean(draws: Any) -> jax.Array:
    """Monte Carlo standard error of the posterior mean: `sd / sqrt(ess_mean)`.

    `sd` is the standard deviation (ddof=1) of all draws together.

    Args:
        draws: Array of shape `(chain, draw)` with `draw >= 4`.

    Returns:
        A scalar array with the MCSE of the mean (NaN if `draws` contains NaN).

    Raises:
        ValueError: If `draws` does not have shape `(chain, draw)` with `draw >= 4`.

    References:
        Vehtari, A., Gelman, A., Simpson, D., Carpenter, B. and Bürkner, P.-C. (2021).
        Rank-normalization, folding, and localization: An improved R-hat for assessing
        convergence of MCMC. Bayesian Analysis, 16(2).
    """
    return _mcse_mean_jit(_check_draws(draws))


def _path_name(path: tuple[Any, ...]) -> str:
    """Readable name of a pytree leaf path, e.g. `layers.0.w` (`params` for a bare array)."""
    if not path:
        return "params"
    parts = []
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            parts.append(str(entry.key))
        elif isinstance(entry, jax.tree_util.GetAttrKey):
            parts.append(entry.name)
        elif isinstance(entry, jax.tree_util.SequenceKey):
            parts.append(str(entry.idx))
        elif isinstance(entry, jax.tree_util.FlattenedIndexKey):
            parts.append(str(entry.key))
        else:
            parts.append(str(entry))
    return ".".join(parts)


# Elements per NumPy block in `summary`: blocks that stay in cache ran 2-3 times faster than
# large ones on the project machine (2^16 elements: 512 kB per float64 temporary).
_SUMMARY_BLOCK_ELEMENTS = 1 << 16


def _summary_stats(batch: np.ndarray) -> dict[str, np.ndarray]:
    """`_all_stats` of every parameter of a (parameter, chain, draw) array, in float64 NumPy."""
    num, chains, draws = batch.shape
    out = {k: np.empty((num,), np.float64) for k in _SUMMARY_STATS}
    step = max(1, _SUMMARY_BLOCK_ELEMENTS // (chains * draws))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for start in range(0, num, step):
            block = np.asarray(batch[start : start + step], np.float64)
            for k, v in _all_stats(block, np).items():
                out[k][start : start + step] = v
    return out


class IdenticalChainsWarning(UserWarning):
    """Two or more chains have exactly equal draws: they share their noise, and R-hat and ESS,
    which take them for independent chains, read converged."""


_SHARED_NOISE = (
    "they share their noise (typically `jax.vmap(tx.init)(params)` with one construction key "
    "and no per-step `key=`; or, at temperature 0, their start), so R-hat and ESS count copies as "
    "independent chains and read converged whatever the run did. Give each chain its own noise: "
    "pass `key=jax.random.fold_in"
    "(chain_key, step)` to `update` with one `chain_key` per chain, or build each chain's "
    'transform from its own key (docs, guide "The optax face")'
)


def identical_chains(samples: Any, rtol: float = 1e-3) -> list[tuple[int, ...]]:
    """The groups of chains whose draws are equal, exactly or to within `rtol` times each
    coordinate's sd, in every leaf and at every draw compared.

    Chains that share their noise and start alike (e.g. `jax.vmap(tx.init)(params)` with one
    construction key and no per-step `key=`) are bit-identical copies; from nearby starts they
    contract onto each other within rounding. Either way R-hat reads 1.00 and the ESS is
    multiplied by the number of copies. Independent chains differ by about one sd everywhere.

    Near-equality is judged on at most 256 coordinates (spread over the leaves) and the last 256
    draws, so the check costs little whatever the model's size; exact equality on everything.

    Args:
        samples: A pytree whose leaves have shape `(chain, draw, ...)`.
        rtol: how close, in units of each coordinate's sd over all chains and draws, two chains
            must be at every compared draw to count as copies.

    Returns:
        Tuples of chain indices (ascending), one per group of two or more identical chains;
        empty when all chains differ.

    Example:
        >>> import numpy as np
        >>> from sghmc_jax.diagnostics import identical_chains
        >>> x = np.random.default_rng(0).normal(size=(1, 50))
        >>> identical_chains(np.concatenate([x, x + 1, x, x + 1e-6]))
        [(0, 2, 3)]
    """
    leaves = [np.asarray(x) for x in jax.tree.leaves(samples)]
    if not leaves or np.ndim(leaves[0]) < 2:
        return []
    num_chains = leaves[0].shape[0]
    exact: dict[bytes, list[int]] = {}
    for chain in range(num_chains):
        digest = hashlib.blake2b(digest_size=32)
        for leaf in leaves:
            digest.update(np.ascontiguousarray(leaf[chain]).tobytes())
        exact.setdefault(digest.digest(), []).append(chain)
    # Near copies: compare one representative of each exact group on a subsample.
    columns = [x.reshape(num_chains, x.shape[1], -1)[:, -256:].astype(np.float64) for x in leaves if x.size]
    table = np.concatenate(columns, axis=2) if columns else np.zeros((num_chains, 0, 0))
    if table.shape[2] > 256:
        table = table[:, :, np.linspace(0, table.shape[2] - 1, 256).astype(int)]
    scale = table.std(axis=(0, 1))
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, np.inf)
    reps = [g[0] for g in exact.values()]
    parent = {r: r for r in reps}
    for i, a in enumerate(reps):
        for b in reps[i + 1 :]:
            with np.errstate(invalid="ignore"):
                close = np.abs(table[a] - table[b]) <= rtol * scale
            if table.size and close.all():
                parent[b] = parent[a] if parent[a] == a else parent[parent[a]]
    groups: dict[int, list[int]] = {}
    for g in exact.values():
        root = parent[g[0]]
        while parent[root] != root:
            root = parent[root]
        groups.setdefault(root, []).extend(g)
    return [tuple(sorted(g)) for g in groups.values() if len(g) > 1]


def _warn_identical(samples: Any, chain_ids: Sequence[int] | None = None, stacklevel: int = 3) -> list[tuple[int, ...]]:
    """Warns (`IdenticalChainsWarning`) naming the identical chains, by `chain_ids` when given."""
    groups = identical_chains(samples)
    if chain_ids is not None:
        groups = [tuple(int(chain_ids[c]) for c in g) for g in groups]
    for g in groups:
        warnings.warn(
            f"chains {', '.join(map(str, g))} have identical draws: {_SHARED_NOISE}",
            IdenticalChainsWarning,
            stacklevel=stacklevel,
        )
    return groups


def summary(samples: Any) -> dict[str, dict[str, np.ndarray]]:
    """Posterior summary and convergence diagnostics for every leaf of a pytree of samples.

    Each leaf is an array with leading axes `(chain, draw)` followed by the parameter's own
    shape; the statistics are computed for every scalar parameter and reshaped back to the
    leaf's shape. The computation runs on the host in float64 NumPy, vectorised over the
    parameters of all leaves that share chain and draw (the same code as the JAX functions
    above, which XLA:CPU runs ~30 times slower because of its row sorts; nothing compiles).

    Args:
        samples: A pytree whose leaves have shape `(chain, draw, ...)` with `draw >= 4`.

    Returns:
        A dict keyed by the leaf's path (dict keys, attribute names and sequence indices joined
        by dots, e.g. `"layers.0.w"`; `"params"` when `samples` is a single array; the spelling of
        `jax.tree_util.keystr` if dotted names would collide), in leaf order, each mapping to a
        dict of float64 NumPy arrays of the leaf's trailing shape: `"mean"`, `"sd"` (ddof=1),
        `"mcse_mean"`, `"ess_bulk"`, `"ess_tail"` and `"rhat"` (the rank-normalised R-hat).

    Warns:
        IdenticalChainsWarning: when two or more chains have exactly equal draws (shared
            noise), naming them: their R-hat and ESS are meaningless.

    Raises:
        ValueError: If a leaf does not have at least 2 axes or has fewer than 4 draws.

    References:
        Vehtari, A., Gelman, A., Simpson, D., Carpenter, B. and Bürkner, P.-C. (2021).
        Rank-normalization, folding, and localization: An improved R-hat for assessing
        convergence of MCMC. Bayesian Analysis, 16(2).
    """
    return _summary(samples)


def _summary(samples: Any, chain_ids: Sequence[int] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """`summary`, with the identical-chains warning naming chains by `chain_ids`."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(samples)
    # Leaves with the same (chain, draw, dtype) are concatenated into one batch of parameters,
    # so a model with many leaves costs one compilation and one call, not one per leaf shape.
    names = [_path_name(path) for path, _ in leaves]
    if len(set(names)) < len(names):
        # Dotted names can collide (a key "a.b" and a nested a/b); JAX's own spelling cannot.
        names = [jax.tree_util.keystr(path) for path, _ in leaves]
    groups: dict[tuple[int, int, Any], list[tuple[str, tuple[int, ...], jax.Array]]] = {}
    for name, (_, leaf) in zip(names, leaves, strict=True):
        shape = tuple(np.shape(leaf))
        if len(shape) < 2 or shape[0] < 1 or shape[1] < _MIN_DRAWS:
            raise ValueError(
                "`samples` leaves must have shape (chain, draw, ...) with chain >= 1 and draw >= "
                f"{_MIN_DRAWS}, got shape {shape} for leaf {name!r}"
            )
        x = np.asarray(leaf)
        if np.iscomplexobj(x):
            raise TypeError(f"`samples` must be real-valued, got dtype {x.dtype} for leaf {name!r}")
        flat = x.reshape(shape[0], shape[1], math.prod(shape[2:]))
        groups.setdefault((shape[0], shape[1]), []).append((name, shape[2:], flat))

    results: dict[str, dict[str, np.ndarray]] = {}
    for members in groups.values():
        batch = np.concatenate([flat for _, _, flat in members], axis=-1)
        stats = _summary_stats(np.moveaxis(batch, -1, 0))
        start = 0
        for name, trailing, flat in members:
            stop = start + flat.shape[-1]
            results[name] = {k: stats[k][start:stop].reshape(trailing) for k in _SUMMARY_STATS}
            start = stop
    _warn_identical(samples, chain_ids, stacklevel=4)
    # Keep the pytree's leaf order rather than the grouping order.
    return {name: results[name] for name in names}


# ---- the table `SampleResult.diagnose()` returns ------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of a `Diagnosis`.

    Attributes:
        diagnostic: "kinetic temperature", "noise ratio R" or "KSD".
        chain: the chain it is about, or None for the run as a whole.
        value: the estimate (NaN when it could not be computed).
        error: its Monte Carlo standard error (kinetic temperature), the maximum over
            coordinates (noise ratio) or the reference value (KSD); NaN when none.
        threshold: what `value` is compared with, in words ("" when there is no verdict).
        verdict: "ok", "FLAG", "n/a" (not applicable or not computable: `note` says why) or
            "-" (reported, no verdict).
        note: advice when flagged, what is missing when "n/a", else a remark or "".
    """

    diagnostic: str
    chain: int | None
    value: float
    error: float
    threshold: str
    verdict: str
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """The table `SampleResult.diagnose()` returns: `rows`, printed as a table with the notes
    (advice for flagged rows, what was missing for "n/a" ones) underneath."""

    rows: tuple[Row, ...]

    @property
    def flagged(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "FLAG"]

    @property
    def ok(self) -> bool:
        """No row flagged (rows that could not be computed do not count)."""
        return not self.flagged

    def to_dicts(self) -> list[dict[str, Any]]:
        return [dataclasses.asdict(r) for r in self.rows]

    def __str__(self) -> str:
        header = ("diagnostic", "chain", "value", "± / max / ref", "threshold", "verdict")
        lines = [
            (
                r.diagnostic,
                "all" if r.chain is None else str(r.chain),
                _fmt(r.value),
                _fmt(r.error),
                r.threshold,
                r.verdict,
            )
            for r in self.rows
        ]
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
        out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
        out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines]
        notes, seen = [], set()
        for r in self.rows:
            if r.note and (r.diagnostic, r.note) not in seen:
                seen.add((r.diagnostic, r.note))
                chains = [
                    str(q.chain)
                    for q in self.rows
                    if q.diagnostic == r.diagnostic and q.note == r.note and q.chain is not None
                ]
                where = f" (chain {', '.join(chains)})" if chains else ""
                notes.append(f"  {r.diagnostic}{where} [{r.verdict}]: {r.note}")
        return "\n".join(out + (["notes:", *notes] if notes else []))

    __repr__ = __str__


def _fmt(x: float) -> str:
    if x is None or not np.isfinite(x):
        return "-"
    return f"{x:.4g}"
