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

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

__all__ = [
    "ess_bulk",
    "ess_mean",
    "ess_tail",
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
            "`draws` must have shape (chain, draw) with chain >= 1 and draw >= "
            f"{_MIN_DRAWS}, got shape {tuple(shape)}"
        )
    return _as_float(draws, "draws")


# --------------------------------------------------------------------------------------------
# Building blocks (all take a float array of shape (chain, draw) that has been validated)
# --------------------------------------------------------------------------------------------


def _split_chains(x: jax.Array) -> jax.Array:
    """Splits every chain into its first and second half, stacked along the chain axis."""
    half = x.shape[1] // 2
    # For an odd number of draws the middle draw is dropped, as Stan and ArviZ do, so both
    # halves have the same length.
    return jnp.concatenate([x[:, :half], x[:, x.shape[1] - half :]], axis=0)


def _rank_normalize(x: jax.Array) -> jax.Array:
    """Replaces each draw by the normal quantile of its average rank over all chains."""
    flat = x.reshape(-1)
    size = flat.shape[0]
    ordered = jnp.sort(flat)
    # Ties share the average of the ranks they span: 1-based ranks left+1 .. right.
    left = jnp.searchsorted(ordered, flat, side="left")
    right = jnp.searchsorted(ordered, flat, side="right")
    ranks = (left + right + 1).astype(x.dtype) / 2
    z = norm.ppf((ranks - 0.375) / (size + 0.25))
    return z.reshape(x.shape).astype(x.dtype)


def _fold(x: jax.Array) -> jax.Array:
    """Distance from the median, whose rank-normalised R-hat detects differences in scale."""
    return jnp.abs(x - jnp.median(x))


def _rhat_of_chains(x: jax.Array) -> jax.Array:
    """Gelman-Rubin potential scale reduction of the chains as given (no splitting)."""
    n = x.shape[1]
    within = jnp.mean(jnp.var(x, axis=1, ddof=1))
    between = n * jnp.var(jnp.mean(x, axis=1), ddof=1)
    return jnp.sqrt((between / within + n - 1) / n)


def _autocovariance(x: jax.Array) -> jax.Array:
    """Biased autocovariance (divided by n) of each chain at every lag, computed via FFT."""
    n = x.shape[1]
    centred = x - jnp.mean(x, axis=1, keepdims=True)
    # Zero padding to at least 2n - 1 turns the FFT's circular correlation into the linear one.
    nfft = 1 << (2 * n - 1).bit_length()
    spectrum = jnp.fft.rfft(centred, n=nfft, axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    acov = jnp.fft.irfft(power, n=nfft, axis=1)[:, :n] / n
    return acov.astype(x.dtype)


def _ess_of_chains(x: jax.Array) -> jax.Array:
    """Multi-chain ESS of the chains as given (the caller splits and transforms them).

    This is Stan's estimator (also ArviZ's), with its loops replaced by masks: pairs
    `P_k = rho_{2k} + rho_{2k+1}` are summed up to, not including, the first pair that is not
    positive (Geyer's initial positive sequence), after replacing each by the running minimum
    (Geyer's initial monotone sequence); the even-lag autocorrelation of the first rejected pair
    is then added once (not doubled) when it is positive, as Stan does.
    """
    m, n = x.shape
    size = m * n
    dtype = x.dtype
    acov = _autocovariance(x)
    within = jnp.mean(acov[:, 0]) * n / (n - 1)
    var_plus = within * (n - 1) / n
    if m > 1:
        var_plus = var_plus + jnp.var(jnp.mean(x, axis=1), ddof=1)
    rho = 1 - (within - jnp.mean(acov, axis=0)) / var_plus
    rho = rho.at[0].set(1)

    # Stan looks at pairs whose odd lag is at most n - 2 (except the first pair, always used).
    last_pair = max(0, (n - 3) // 2)
    pairs = rho[0 : 2 * last_pair + 2 : 2] + rho[1 : 2 * last_pair + 2 : 2]
    # Index of the first non-positive pair (last_pair + 1 when there is none, via the sentinel).
    leading_positive = jnp.argmax(jnp.append(pairs <= 0, True))
    # When every pair is positive Stan stops with the last one outside the doubled sum, so the
    # number of summed pairs is capped at last_pair.
    n_summed = jnp.minimum(leading_positive, last_pair)
    monotone = jax.lax.cummin(pairs)
    summed = jnp.sum(jnp.where(jnp.arange(last_pair + 1) < n_summed, monotone, 0))
    next_even = rho[2 * n_summed]
    # Stan keeps that even-lag term when it is positive, or when its pair was stored because
    # the pair sum was >= 0 (only the > 0 test stops its loop early).
    keep_next = (next_even > 0) | (pairs[n_summed] >= 0)
    tau = -1 + 2 * summed + jnp.where(keep_next, next_even, 0)
    # Antithetic chains can make tau tiny; Stan caps the ESS at S * log10(S).
    tau = jnp.maximum(tau, 1 / math.log10(size))
    ess = size / tau
    constant = jnp.max(x) == jnp.min(x)
    return jnp.where(constant, jnp.asarray(size, dtype), ess).astype(dtype)


def _nan_if_any_nan(x: jax.Array, value: jax.Array) -> jax.Array:
    """Propagates a NaN anywhere in the draws, which sorting and ranking would otherwise hide."""
    return jnp.where(jnp.any(jnp.isnan(x)), jnp.nan, value).astype(value.dtype)


def _split_rhat(x: jax.Array) -> jax.Array:
    return _nan_if_any_nan(x, _rhat_of_chains(_split_chains(x)))


def _rhat(x: jax.Array) -> jax.Array:
    split = _split_chains(x)
    # Bulk (location) and folded (scale) R-hat share one vmapped computation, which halves
    # the compiled program.
    both = jax.vmap(lambda y: _rhat_of_chains(_rank_normalize(y)))(jnp.stack([split, _fold(split)]))
    return _nan_if_any_nan(x, jnp.max(both))


def _ess_bulk(x: jax.Array) -> jax.Array:
    return _nan_if_any_nan(x, _ess_of_chains(_rank_normalize(_split_chains(x))))


def _ess_tail(x: jax.Array) -> jax.Array:
    # The quantiles are those of all draws (the middle one included when draw is odd), with
    # the linear interpolation of R's type 7, as ArviZ does.
    quantiles = jnp.quantile(x, jnp.asarray(_TAIL_PROBS, x.dtype))
    indicators = (x[None] <= quantiles[:, None, None]).astype(x.dtype)
    ess = jax.vmap(lambda y: _ess_of_chains(_split_chains(y)))(indicators)
    return _nan_if_any_nan(x, jnp.min(ess))


def _ess_mean(x: jax.Array) -> jax.Array:
    return _nan_if_any_nan(x, _ess_of_chains(_split_chains(x)))


def _mcse_mean(x: jax.Array) -> jax.Array:
    return jnp.std(x, ddof=1) / jnp.sqrt(_ess_mean(x))


def _all_stats(x: jax.Array) -> dict[str, jax.Array]:
    return {
        "mean": jnp.mean(x),
        "sd": jnp.std(x, ddof=1),
        "mcse_mean": _mcse_mean(x),
        "ess_bulk": _ess_bulk(x),
        "ess_tail": _ess_tail(x),
        "rhat": _rhat(x),
    }


_split_rhat_jit = jax.jit(_split_rhat)
_rhat_jit = jax.jit(_rhat)
_ess_bulk_jit = jax.jit(_ess_bulk)
_ess_tail_jit = jax.jit(_ess_tail)
_ess_mean_jit = jax.jit(_ess_mean)
_mcse_mean_jit = jax.jit(_mcse_mean)
_all_stats_vmap_jit = jax.jit(jax.vmap(_all_stats))


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
    """Readable name of a pytree leaf path, e.g. `layers.0.w` (or `x` for a bare array)."""
    if not path:
        return "x"
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


def summary(samples: Any) -> dict[str, dict[str, np.ndarray]]:
    """Posterior summary and convergence diagnostics for every leaf of a pytree of samples.

    Each leaf is an array with leading axes `(chain, draw)` followed by the parameter's own
    shape; the statistics are computed for every scalar parameter (vectorised with `jax.vmap`
    over the flattened trailing axes of all leaves that share chain, draw and dtype) and
    reshaped back to the leaf's shape.

    Args:
        samples: A pytree whose leaves have shape `(chain, draw, ...)` with `draw >= 4`.

    Returns:
        A dict keyed by the leaf's path (dict keys, attribute names and sequence indices joined
        by dots, e.g. `"layers.0.w"`; `"x"` when `samples` is a single array; the spelling of
        `jax.tree_util.keystr` if dotted names would collide), in leaf order, each mapping to a
        dict of NumPy arrays of the leaf's trailing shape: `"mean"`, `"sd"` (ddof=1),
        `"mcse_mean"`, `"ess_bulk"`, `"ess_tail"` and `"rhat"` (the rank-normalised R-hat).

    Raises:
        ValueError: If a leaf does not have at least 2 axes or has fewer than 4 draws.

    References:
        Vehtari, A., Gelman, A., Simpson, D., Carpenter, B. and Bürkner, P.-C. (2021).
        Rank-normalization, folding, and localization: An improved R-hat for assessing
        convergence of MCMC. Bayesian Analysis, 16(2).
    """
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
        x = _as_float(leaf, "samples")
        flat = x.reshape(shape[0], shape[1], math.prod(shape[2:]))
        groups.setdefault((shape[0], shape[1], x.dtype), []).append((name, shape[2:], flat))

    results: dict[str, dict[str, np.ndarray]] = {}
    for (_, _, dtype), members in groups.items():
        batch = jnp.moveaxis(jnp.concatenate([flat for _, _, flat in members], axis=-1), -1, 0)
        if batch.shape[0] > 0:
            stats = {k: np.array(v) for k, v in _all_stats_vmap_jit(batch).items()}
        else:
            stats = {k: np.zeros((0,), dtype) for k in _SUMMARY_STATS}
        start = 0
        for name, trailing, flat in members:
            stop = start + flat.shape[-1]
            results[name] = {k: stats[k][start:stop].reshape(trailing) for k in _SUMMARY_STATS}
            start = stop
    # Keep the pytree's leaf order rather than the grouping order.
    return {name: results[name] for name in names}
