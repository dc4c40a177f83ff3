"""The convergence rows of `SampleResult.diagnose()`: identical chains; rank-normalised split
R-hat, bulk ESS and a trend test of the log posterior after burn-in; R-hat and bulk ESS of the
worst params coordinates."""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from sghmc_jax import diagnostics
from sghmc_jax._sampler.rows import _na
from sghmc_jax.diagnostics import Row
from sghmc_jax.types import StoredArray

__all__: list[str] = []

_UNCONVERGED = "the chains have not converged: lengthen burn_in / run longer"


# ---- stationarity ------------------------------------------------------------------------------

_Z_MAX = 4.0  # |z| of the trend test above which a series is called not stationary (p ≈ 6e-5)
_LONGER = "not stationary: lengthen burn_in / run longer"


def _trend_z(x: np.ndarray) -> float:
    """A Geweke-style z of one series: its last third's mean minus its first third's, over the
    standard error of that difference. The series is rank-normalised first (a run-away series,
    growing by orders of magnitude, is then a plain trend, not a few huge values with a huge
    MCSE), and the autocorrelation time behind the standard error is estimated on the series
    with its linear trend removed (a trend inside a segment would inflate it and hide itself).
    NaN for fewer than 12 points or a constant series. On stationary AR(1) series (of exp(x/2),
    300 each) |z| > 4 came up 0% at 3000 points and τ = 19, 1% at τ = 199 (15 effective
    points), 7% at 1000 points and τ = 399 (2.5 effective points; the ESS rows flag such runs
    anyway)."""
    x = np.asarray(x, np.float64)
    n = x.shape[-1]
    if n < 12 or not np.all(np.isfinite(x)) or np.ptp(x) == 0:
        return math.nan
    z = diagnostics._rank_normalize(x[None], np)[0]
    t = np.arange(n, dtype=np.float64)
    residual = z - np.polyval(np.polyfit(t, z, 1), t)
    tau = n / float(diagnostics._ess_of_chains(residual[None], np))
    third = n // 3
    first, last = z[:third], z[n - third :]
    se = math.sqrt((np.var(first, ddof=1) + np.var(last, ddof=1)) * max(tau, 1.0) / third)
    return float((np.mean(last) - np.mean(first)) / se) if se > 0 else math.inf


def _param_draws(result: Any, chains: np.ndarray, cap: int) -> tuple[np.ndarray, list[str]]:
    """(coordinate, chain, draw) float64 draws of at most `cap` coordinates (evenly spaced over
    all leaves' flattened coordinates), and their names."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(result.samples, is_leaf=lambda x: isinstance(x, StoredArray))
    sizes = [int(np.prod(np.shape(x)[2:])) for _, x in leaves]
    total = sum(sizes)
    pick = np.unique(np.linspace(0, total - 1, min(cap, total)).round().astype(int)) if total else np.zeros(0, int)
    out, names, start = [], [], 0
    for (path, leaf), size in zip(leaves, sizes, strict=True):
        local = pick[(pick >= start) & (pick < start + size)] - start
        if len(local):
            # A chain at a time: a leaf in the on-disk store is read one chain at a time.
            x = np.stack([np.asarray(leaf[int(c)]).reshape(np.shape(leaf)[1], size)[:, local] for c in chains])
            out.append(np.moveaxis(x, -1, 0).astype(np.float64))
            shape = np.shape(leaf)[2:]
            base = diagnostics._path_name(path)
            names += [base + (str([int(j) for j in np.unravel_index(i, shape)]) if shape else "") for i in local]
        start += size
    return (np.concatenate(out) if out else np.zeros((0, len(chains), 0))), names


def _log_posterior_rows(lp: np.ndarray, chains: np.ndarray, rhat_threshold: float, min_ess: float) -> list[Row]:
    """R-hat, bulk ESS and the worst chain's trend of the (chain, step) log posterior after burn-in."""
    if lp.shape[1] < 12:
        return [_na("log posterior", f"needs at least 12 steps after burn-in, the run has {lp.shape[1]}")]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = float(diagnostics._rhat(lp, np))
        e = float(diagnostics._ess_bulk(lp, np))
    few = "too few effective draws for R-hat and MCSEs to be trusted: run longer"
    rows = [
        _verdict("R-hat log posterior", r, math.nan, f"< {rhat_threshold:.4g}", not r < rhat_threshold, _UNCONVERGED),
        _verdict("ESS log posterior", e, math.nan, f"> {min_ess:.4g}", not e > min_ess, few),
    ]
    zs = np.array([_trend_z(x) for x in lp])
    worst = int(np.nanargmax(np.abs(zs))) if np.any(np.isfinite(zs)) else 0
    z, band = float(zs[worst]), f"|z| < {_Z_MAX:.3g}"
    if not math.isfinite(z):
        return [
            *rows,
            Row("trend log posterior", None, z, math.nan, band, "n/a", "a constant or non-finite log posterior"),
        ]
    flag = abs(z) > _Z_MAX
    direction = "still climbing" if z > 0 else "still falling"
    said = (
        f"{_LONGER}: the log posterior is {direction} (first and last thirds after burn-in, z of their difference)"
        if flag
        else "z of the last third's mean minus the first third's (rank-normalised, after burn-in), worst chain"
    )
    chain = int(chains[worst]) if len(chains) > 1 else None
    return [*rows, Row("trend log posterior", chain, z, math.nan, band, "FLAG" if flag else "ok", said)]


def _verdict(name: str, value: float, error: float, band: str, flag: bool, advice: str, remark: str = "") -> Row:
    """A run-wide row: FLAG with `advice` (and the remark) when `flag`, else ok with the remark."""
    note = (f"{advice}; {remark}" if remark else advice) if flag else remark
    return Row(name, None, value, error, band, "FLAG" if flag else "ok", note)


def _params_rows(
    result: Any, chains: np.ndarray, rhat_threshold: float, min_ess: float, cap: int
) -> tuple[list[Row], float]:
    """R-hat and bulk ESS of the worst of up to `cap` params coordinates; and the smallest bulk
    ESS per chain (for thinning the KSD's draws)."""
    draws, names = _param_draws(result, chains, cap)
    if draws.shape[-1] < 4 or not len(names):
        return [_na("params", f"needs at least 4 draws, the run kept {draws.shape[-1]}")], math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        rh = np.asarray(diagnostics._rhat(draws, np), np.float64)
        es = np.asarray(diagnostics._ess_bulk(draws, np), np.float64)
    leaves = jax.tree.leaves(result.samples, is_leaf=lambda x: isinstance(x, StoredArray))
    coordinates = sum(int(np.prod(np.shape(x)[2:])) for x in leaves)
    sub = f" ({len(names)} of the coordinates)" if len(names) < coordinates else ""
    worst_r = float(np.nanmax(rh)) if np.any(np.isfinite(rh)) else math.nan
    median = float(np.nanmedian(rh)) if np.any(np.isfinite(rh)) else math.nan
    listing = ", ".join(f"{names[i]}: {rh[i]:.3g}" for i in np.argsort(-np.nan_to_num(rh, nan=-np.inf))[:3])
    remark = f"worst {listing}{sub}; error column: the median"
    rows = [
        _verdict(
            "R-hat params (max)",
            worst_r,
            median,
            f"< {rhat_threshold:.4g}",
            worst_r >= rhat_threshold,
            _UNCONVERGED,
            remark,
        )
    ]
    worst_e = float(np.nanmin(es)) if np.any(np.isfinite(es)) else math.nan
    listing = ", ".join(f"{names[i]}: {es[i]:.4g}" for i in np.argsort(np.nan_to_num(es, nan=np.inf))[:3])
    flag = not worst_e > min_ess
    rows.append(
        _verdict(
            "ESS params (min)",
            worst_e,
            math.nan,
            f"> {min_ess:.4g}",
            flag,
            "too few effective draws: run longer",
            f"worst {listing}{sub}",
        )
    )
    return rows, worst_e / len(chains)


def convergence_rows(
    result: Any, chains: np.ndarray, burn_in: int, rhat_threshold: float, min_ess: float, max_params: int
) -> tuple[list[Row], float]:
    """R-hat, bulk ESS and trend of the log posterior, R-hat and bulk ESS of the worst params;
    and the smallest bulk ESS of the params per chain (for thinning the KSD's draws)."""
    lp = np.asarray(result.log_posterior, np.float64)[chains, burn_in:]
    rows = _log_posterior_rows(lp, chains, rhat_threshold, min_ess)
    params, ess_per_chain = _params_rows(result, chains, rhat_threshold, min_ess, max_params)
    return rows + params, ess_per_chain


def identical_rows(result: Any, chains: np.ndarray) -> list[Row]:
    name = "identical chains"
    if len(chains) < 2:
        return [_na(name, "one chain")]
    leaves = jax.tree.leaves(result.samples, is_leaf=lambda x: isinstance(x, StoredArray))
    groups = diagnostics.identical_chains([np.asarray(x)[chains] for x in leaves])
    if not groups:
        return [Row(name, None, 0.0, math.nan, "none", "ok")]
    named = "; ".join(", ".join(str(int(chains[c])) for c in g) for g in groups)
    copies = sum(len(g) - 1 for g in groups)
    return [
        Row(
            name,
            None,
            float(copies),
            math.nan,
            "none",
            "FLAG",
            f"chains {named} have identical draws: {diagnostics._SHARED_NOISE}",
        )
    ]
