"""`SampleResult.diagnose()`: checks made for stochastic-gradient samplers, read off a finished run.

Convergence first (identical chains; R-hat, bulk ESS and a trend test of the log posterior;
R-hat and bulk ESS of the worst params), then three diagnostics (issue 14, section 5 of the
research notes):

* kinetic temperature, mᵀm/(σ²d) averaged over the steps after burn-in, per chain, against the
  sampler's discrete expectation (`kernels.Rule.diagnose`): a chain running hotter is being
  heated by gradient noise the sampler does not account for;
* R, the ratio of the minibatch gradient noise a step adds to the noise the sampler injects
  (R ≪ 1 is the premise of every SG-MCMC sampler; on a Gaussian with β = 0 the kinetic
  temperature and the variance are both inflated by a factor ≈ 1 + R);
* the kernel Stein discrepancy of near-independent draws, with full-data scores.

Everything particular to a sampler comes from its `Rule` in kernels.py (a wrapped transform
that recorded none is taken for SGHMC, or SGLD without momenta, and the rows say so).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sghmc_jax import _checks, diagnostics, kernels, stein

__all__: list[str] = []


def _rules() -> dict[str, kernels.Rule]:
    """Every rule defined in kernels.py, by name: a sampler added there is diagnosed as is."""
    return kernels.rules()


_WRAPPED = (
    "the transform's hyperparameters were not recorded (it is not one of this library's transforms as is, "
    "e.g. it sits inside optax.chain)"
)


class RunSource(NamedTuple):
    """What a run was given, by reference, so that `diagnose()` needs no arguments."""

    log_posterior: Any
    data: Any
    batch_size: int | None
    burn_in: int
    host_batches: bool = False


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


def _na(diagnostic: str, note: str, chain: int | None = None, threshold: str = "") -> Row:
    """A row with no verdict: not applicable, or not computable; `note` says why."""
    return Row(diagnostic, chain, math.nan, math.nan, threshold, "n/a", note)


def _fmt(x: float) -> str:
    if x is None or not np.isfinite(x):
        return "-"
    return f"{x:.4g}"


def _number(name: str, value: Any, rule: str) -> float:
    """An override, checked: a real, finite number obeying `rule` (">0" or ">=0")."""
    if isinstance(value, (bool, np.bool_)) or callable(value) or np.ndim(value) != 0:
        raise TypeError(f"`{name}` must be a real number (its value at the run's last step), got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__}: {value!r}") from None
    if not math.isfinite(x) or (rule == ">0" and x <= 0) or (rule == ">=0" and x < 0):
        raise ValueError(f"`{name}` must be finite and {rule[0]} {rule[1:]}, got {name}={value!r}")
    return x


def _host_int(x: Any) -> int:
    return int(np.asarray(jax.device_get(x.addressable_data(0) if hasattr(x, "addressable_data") else x)))


def _hyperparameters(result: Any, overrides: dict[str, Any]) -> tuple[dict[str, float], int]:
    """The transform's hyperparameters at the run's last update (schedules evaluated there),
    with the overrides on top; and the step they were evaluated at."""
    step = max(_host_int(result.final_state.step) - 1, 0)
    values: dict[str, float] = {}
    for name, v in (result.hyperparameters or {}).items():
        values[name] = float(np.asarray(_checks.schedule_value(v, step)))
    rules = {"lr": ">0", "alpha": ">=0", "beta": ">=0", "sigma": ">0", "temperature": ">=0"}
    for name, v in overrides.items():
        if v is not None:
            values[name] = _number(name, v, rules[name])
    return values, step


def _missing(values: dict[str, float], names: tuple[str, ...], recorded: bool) -> str:
    gone = [n for n in names if n not in values]
    if not gone:
        return ""
    why = "" if recorded else f": {_WRAPPED}"
    return f"needs {', '.join(n + '=' for n in gone)}{why}"


def _healthy(result: Any) -> np.ndarray:
    return np.flatnonzero(np.asarray(result.diverged_at) < 0)


def _needs(formula: Any, values: dict[str, float], *args: Any) -> tuple[Any, str]:
    """`formula(values, *args)`, or the name of the hyperparameter it lacked."""
    try:
        return formula(values, *args), ""
    except KeyError as err:
        return None, str(err.args[0])


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


# ---- 1. kinetic temperature -------------------------------------------------------------------

_HOT = (
    "too hot: gradient noise the sampler is not told about heats the momenta (the step's own "
    "discretisation is already in the expected value); lower lr, raise batch_size, raise alpha, "
    "or set beta"
)
_COLD = "too cold: the momenta average below the expected value; run a longer burn-in, or lower beta"


def _advice(text: str, rule: kernels.Rule | None) -> str:
    """`text` without its beta option for a sampler that has no `beta`."""
    if rule is None or any(h.name == "beta" for h in rule.hyperparameters):
        return text
    return text.replace(", or set beta", "").replace(", raise alpha", ", or raise alpha").replace(", or lower beta", "")


def _kinetic_rows(
    result: Any,
    rule: kernels.Rule | None,
    assumed: str,
    values: dict[str, float],
    recorded: bool,
    burn_in: int,
    threshold: float,
) -> list[Row]:
    name = "kinetic temperature"
    kinetic = np.asarray(result.kinetic) if result.kinetic is not None else np.zeros((result.num_chains, 0))
    spec = rule.diagnose if rule is not None else None
    if (spec is not None and spec.kinetic is None) or (kinetic.size and np.all(np.isnan(kinetic))):
        return [_na(name, "not applicable: the transform state holds no momenta (e.g. SGLD, pSGLD)")]
    missing = _missing(values, ("sigma", "temperature"), recorded)
    if missing:
        return [_na(name, missing)]
    sigma, temperature = values["sigma"], values["temperature"]
    if temperature == 0:
        return [_na(name, "not applicable at temperature 0 (no noise: the momenta go to 0)")]
    series = kinetic[:, burn_in:] / sigma**2
    if series.shape[1] < 12:
        return [_na(name, f"needs at least 12 steps after burn-in, the run has {series.shape[1]}")]
    ratio, remark = 1.0, ""
    if spec is None:
        remark = (
            f"compared with T: the rule {rule.name!r} gives no discrete expectation (kernels.Rule.diagnose)"
            if rule
            else ""
        )
    else:
        ratio, lacking = _needs(spec.kinetic, values)
        if lacking:
            return [_na(name, _missing(values, (lacking,), recorded))]
        if spec.thermostat:
            remark = "the thermostat holds it at T by construction (a check of the run, not of the noise)"
        elif abs(ratio - 1) > 1e-3:
            remark = (
                f"{assumed}expected {ratio:.4g}·T, not T: the step's discretisation at these lr, alpha, sigma "
                "(with exact gradients too; lower lr to bring it to T)"
            )
    expected = ratio * temperature
    band = f"E={expected:.4g} ±{threshold:.0%}, >3 mcse"
    rows = []
    for chain in range(series.shape[0]):
        x = series[chain]
        if not np.all(np.isfinite(x)):
            rows.append(_na(name, "the chain diverged", chain=chain, threshold=band))
            continue
        mean = float(np.mean(x))
        mcse = float(diagnostics._mcse_mean(x[None].astype(np.float64), np))
        z = _trend_z(x)
        if abs(z) > _Z_MAX:
            rows.append(Row(name, chain, mean, mcse, band, "FLAG", f"{_LONGER} (its trend test reads z = {z:.3g})"))
            continue
        deviation = mean / expected - 1
        flag = abs(deviation) > threshold and abs(mean - expected) > 3 * mcse
        if not flag and not mcse <= threshold * expected:
            # Too uncertain to be inside the band: a start-up transient among the kept steps
            # (which the trend test can miss when it is short) or too few steps; never "ok".
            rows.append(
                Row(
                    name,
                    chain,
                    mean,
                    mcse,
                    band,
                    "FLAG",
                    f"{_LONGER} (its MCSE {mcse:.3g} is wider than the ±{threshold:.0%} band: the series "
                    "is not stationary, e.g. a start-up transient after burn_in, or too short)",
                )
            )
            continue
        note = (_advice(_HOT, rule) if deviation > 0 else _advice(_COLD, rule)) if flag else remark
        rows.append(Row(name, chain, mean, mcse, band, "FLAG" if flag else "ok", note))
    return rows


# ---- convergence --------------------------------------------------------------------------------

_UNCONVERGED = "the chains have not converged: lengthen burn_in / run longer"


def _param_draws(result: Any, chains: np.ndarray, cap: int) -> tuple[np.ndarray, list[str]]:
    """(coordinate, chain, draw) float64 draws of at most `cap` coordinates (evenly spaced over
    all leaves' flattened coordinates), and their names."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(result.samples, is_leaf=lambda x: hasattr(x, "_array"))
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


def _convergence_rows(
    result: Any, chains: np.ndarray, burn_in: int, rhat_threshold: float, min_ess: float, max_params: int
) -> tuple[list[Row], float]:
    """R-hat, bulk ESS and trend of the log posterior, R-hat and bulk ESS of the worst params;
    and the smallest bulk ESS of the params per chain (for thinning the KSD's draws)."""
    rows: list[Row] = []
    rb, eb = f"< {rhat_threshold:.4g}", f"> {min_ess:.4g}"
    lp = np.asarray(result.log_posterior, np.float64)[chains, burn_in:]
    if lp.shape[1] < 12:
        rows.append(_na("log posterior", f"needs at least 12 steps after burn-in, the run has {lp.shape[1]}"))
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            r = float(diagnostics._rhat(lp, np))
            e = float(diagnostics._ess_bulk(lp, np))
        rows.append(
            Row(
                "R-hat log posterior",
                None,
                r,
                math.nan,
                rb,
                "FLAG" if not r < rhat_threshold else "ok",
                _UNCONVERGED if not r < rhat_threshold else "",
            )
        )
        rows.append(
            Row(
                "ESS log posterior",
                None,
                e,
                math.nan,
                eb,
                "FLAG" if not e > min_ess else "ok",
                "too few effective draws for R-hat and MCSEs to be trusted: run longer" if not e > min_ess else "",
            )
        )
        zs = np.array([_trend_z(x) for x in lp])
        worst = int(np.nanargmax(np.abs(zs))) if np.any(np.isfinite(zs)) else 0
        z = float(zs[worst])
        flag = abs(z) > _Z_MAX
        direction = "still climbing" if z > 0 else "still falling"
        if not math.isfinite(z):
            rows.append(
                Row(
                    "trend log posterior",
                    None,
                    z,
                    math.nan,
                    f"|z| < {_Z_MAX:.3g}",
                    "n/a",
                    "a constant or non-finite log posterior",
                )
            )
        else:
            rows.append(
                Row(
                    "trend log posterior",
                    int(chains[worst]) if len(chains) > 1 else None,
                    z,
                    math.nan,
                    f"|z| < {_Z_MAX:.3g}",
                    "FLAG" if flag else "ok",
                    f"{_LONGER}: the log posterior is {direction} (first and last thirds after burn-in, "
                    "z of their difference)"
                    if flag
                    else "z of the last third's mean minus the first third's (rank-normalised, after burn-in), "
                    "worst chain",
                )
            )
    draws, names = _param_draws(result, chains, max_params)
    ess_per_chain = math.nan
    if draws.shape[-1] < 4 or not len(names):
        rows.append(_na("params", f"needs at least 4 draws, the run kept {draws.shape[-1]}"))
        return rows, ess_per_chain
    with np.errstate(divide="ignore", invalid="ignore"):
        rh = np.asarray(diagnostics._rhat(draws, np), np.float64)
        es = np.asarray(diagnostics._ess_bulk(draws, np), np.float64)
    sub = (
        f" ({len(names)} of the coordinates)"
        if len(names)
        < sum(
            int(np.prod(np.shape(x)[2:]))
            for x in jax.tree.leaves(result.samples, is_leaf=lambda x: hasattr(x, "_array"))
        )
        else ""
    )
    order = np.argsort(-np.nan_to_num(rh, nan=-np.inf))[:3]
    worst_r = float(np.nanmax(rh)) if np.any(np.isfinite(rh)) else math.nan
    listing = ", ".join(f"{names[i]}: {rh[i]:.3g}" for i in order)
    flag = worst_r >= rhat_threshold
    rows.append(
        Row(
            "R-hat params (max)",
            None,
            worst_r,
            float(np.nanmedian(rh)) if np.any(np.isfinite(rh)) else math.nan,
            rb,
            "FLAG" if flag else "ok",
            f"{_UNCONVERGED}; worst {listing}{sub}; error column: the median"
            if flag
            else f"worst {listing}{sub}; error column: the median",
        )
    )
    order = np.argsort(np.nan_to_num(es, nan=np.inf))[:3]
    worst_e = float(np.nanmin(es)) if np.any(np.isfinite(es)) else math.nan
    listing = ", ".join(f"{names[i]}: {es[i]:.4g}" for i in order)
    flag = not worst_e > min_ess
    rows.append(
        Row(
            "ESS params (min)",
            None,
            worst_e,
            math.nan,
            eb,
            "FLAG" if flag else "ok",
            f"too few effective draws: run longer; worst {listing}{sub}" if flag else f"worst {listing}{sub}",
        )
    )
    ess_per_chain = worst_e / len(chains)
    return rows, ess_per_chain


def _identical_rows(result: Any, chains: np.ndarray) -> list[Row]:
    name = "identical chains"
    if len(chains) < 2:
        return [_na(name, "one chain")]
    leaves = jax.tree.leaves(result.samples, is_leaf=lambda x: hasattr(x, "_array"))
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


# ---- 2. gradient noise against injected noise --------------------------------------------------
def _ordinal(k: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, 83rd, ..."""
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def _draw_points(result: Any, chains: np.ndarray, per_chain: int) -> list[Any]:
    """Up to `per_chain` draws of each chain as pytrees, evenly spaced over the second half of
    its draws (the last included): away from a start-up transient that a short burn-in left in
    the draws, where the gradient noise is not the stationary law's."""
    leaves, treedef = jax.tree.flatten(result.samples, is_leaf=lambda x: hasattr(x, "_array"))
    n = len(result.sample_steps)
    points = []
    if n == 0:
        return points
    index = np.unique(np.linspace(n - 1, n // 2, per_chain).round().astype(int))[::-1]
    for chain in chains:
        for i in index:
            leaves_i = [np.asarray(leaf[chain, int(i)]) for leaf in leaves]
            if all(np.all(np.isfinite(x)) for x in leaves_i):
                points.append(jax.tree.unflatten(treedef, leaves_i))
    return points


def _state_field(tree: Any, field: str) -> Any:
    found = [
        x
        for x in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, tuple) and field in getattr(x, "_fields", ()))
        if isinstance(x, tuple) and field in getattr(x, "_fields", ())
    ]
    return getattr(found[0], field) if found else None


def _gradient_variance(
    log_posterior: Any, data: Any, batch_size: int, points: list[Any], num_batches: int, seed: int
) -> np.ndarray:
    """Per coordinate (flattened as the params' leaves), the variance of the minibatch gradient
    of the log posterior over `num_batches` independent minibatches (each a uniform draw of
    `batch_size` examples without replacement, as one of the run's), averaged over `points`."""
    n = int(np.shape(jax.tree.leaves(data)[0])[0])
    rng = np.random.default_rng(seed)
    grad = jax.grad(lambda params, batch: log_posterior(params, batch)[0])

    @jax.jit
    def variance(params: Any, index: jax.Array, data: Any) -> jax.Array:
        batches = jax.tree.map(lambda x: jnp.asarray(x)[index], data)  # (num_batches, batch_size, ...)
        grads = jax.vmap(grad, in_axes=(None, 0))(params, batches)
        flat = [jnp.var(g.reshape(num_batches, -1), axis=0, ddof=1) for g in jax.tree.leaves(grads)]
        return jnp.concatenate(flat)

    total = 0.0
    for p in points:  # fresh minibatches at every point: the estimates are independent
        index = np.stack([rng.permutation(n)[:batch_size] for _ in range(num_batches)])
        total = total + np.asarray(variance(p, jnp.asarray(index), data), np.float64)
    return total / len(points)


_NOISY = (
    "minibatch noise rivals the injected noise, so the stationary law is not the target: raise batch_size, "
    "lower lr (R ∝ lr), raise alpha, or set beta"
)


def _noise_rows(
    result: Any,
    rule: kernels.Rule | None,
    assumed: str,
    values: dict[str, float],
    recorded: bool,
    source: RunSource | None,
    log_posterior: Any,
    data: Any,
    batch_size: Any,
    threshold: float,
    num_points: int,
    num_batches: int,
    seed: int,
) -> list[Row]:
    name = "noise ratio R"
    band = f"mean R < {threshold:.4g}"
    if data is None or batch_size is None or log_posterior is None:
        why = "the run took host `batches`" if source is not None and source.host_batches else "the run had no `data`"
        return [
            _na(name, f"needs data= and batch_size= ({why}): V is estimated from minibatches of it", threshold=band)
        ]
    if rule is None or rule.diagnose is None:
        what = f"the rule {rule.name!r} gives no formula (kernels.Rule.diagnose)" if rule else "unknown sampler"
        return [_na(name, what, threshold=band)]
    spec = rule.diagnose
    missing = _missing(values, spec.noise_needs, recorded)
    if missing:
        return [_na(name, missing, threshold=band)]
    if values["temperature"] == 0:
        return [_na(name, "not applicable at temperature 0 (nothing is injected)", threshold=band)]
    if values.get("alpha", 1.0) == 0 and "alpha" in spec.noise_needs:
        return [Row(name, None, math.inf, math.inf, band, "FLAG", "alpha=0 injects no noise: " + _advice(_NOISY, rule))]
    chains = _healthy(result)
    points = _draw_points(result, chains, num_points)
    if not points:
        return [_na(name, "no finite draws to evaluate the gradient at", threshold=band)]
    v = _gradient_variance(log_posterior, data, batch_size, points, num_batches, seed)
    fields = {}
    for field in rule.fields:
        found = _state_field(result.final_state.transform_state, field)
        if found is not None:
            fields[field] = np.concatenate(
                [np.asarray(x, np.float64)[chains].reshape(len(chains), -1) for x in jax.tree.leaves(found)], axis=1
            )
    try:
        r, lacking = _needs(spec.noise_ratio, values, v, fields)
    except (KeyError, TypeError):
        r, lacking = None, ""
    if r is None:
        what = (
            _missing(values, (lacking,), recorded)
            if lacking and lacking not in rule.fields
            else "the final state lacks the fields its formula reads"
        )
        return [_na(name, what, threshold=band)]
    r = np.asarray(r, np.float64)
    mean, worst = float(np.mean(r)), float(np.max(r))
    flag = mean > threshold
    how = f"{assumed}V from {len(points)} draws x {num_batches} minibatches of {batch_size}"
    return [
        Row(
            name, None, mean, worst, band, "FLAG" if flag else "ok", f"{_advice(_NOISY, rule)} ({how})" if flag else how
        )
    ]


# ---- 3. kernel Stein discrepancy ----------------------------------------------------------------


def _ksd_rows(
    result: Any,
    values: dict[str, float],
    source: RunSource | None,
    log_posterior: Any,
    data: Any,
    data_given: bool,
    cap: int,
    ess_per_chain: float,
) -> list[Row]:
    name = "KSD"
    if log_posterior is None or data is None or (source is not None and source.host_batches and not data_given):
        return [_na(name, "needs data= (the run took host `batches` or no `data`): the scores use the full data")]
    temperature = values.get("temperature")
    if temperature == 0:
        return [_na(name, "not applicable at temperature 0 (no target distribution)")]
    chains = _healthy(result)
    n = len(result.sample_steps)
    if n < 2 or not len(chains):
        return [_na(name, "needs at least 2 draws")]
    # Near-independent draws: every k-th, k = draws per effective draw of the slowest param (the
    # reference below holds for independent draws; autocorrelated ones sit above it by a factor
    # that grows with k, so runs that mix at different speeds would not compare).
    k = max(1, math.ceil(n / ess_per_chain)) if math.isfinite(ess_per_chain) and ess_per_chain > 0 else 1
    index = np.arange(n - 1, -1, -k)[::-1]
    per_chain = max(cap // len(chains), 1)
    if len(index) > per_chain:
        index = index[np.unique(np.linspace(0, len(index) - 1, per_chain).round().astype(int))]
    leaves, treedef = jax.tree.flatten(result.samples, is_leaf=lambda x: hasattr(x, "_array"))
    parts = [np.stack([np.asarray(leaf[int(c)])[index] for c in chains]) for leaf in leaves]
    flat = [x.reshape(-1, *x.shape[2:]) for x in parts]
    finite = np.all(np.stack([np.isfinite(x.reshape(len(x), -1)).all(axis=1) for x in flat]), axis=0)
    m = int(finite.sum())
    if m < 2:
        return [_na(name, f"needs at least 2 near-independent draws, has {m} (thinned to every {_ordinal(k)})")]
    draws = jax.tree.unflatten(treedef, [jnp.asarray(x[finite]) for x in flat])
    scores = stein.scores_from(log_posterior, draws, data, temperature=temperature)
    value = float(stein.ksd(draws, scores, c=1.0, beta=-0.5, statistic="u"))
    # The V-statistic's self-term, E k₀(x, x)/m with k₀(x, x) = ‖s(x)‖² + d here: the scale of the
    # U-statistic's noise for exact independent draws (whose expected U-statistic is 0).
    square = sum(np.sum(np.asarray(s, np.float64).reshape(m, -1) ** 2, axis=1) for s in jax.tree.leaves(scores))
    d = sum(int(np.prod(np.shape(x)[1:])) for x in jax.tree.leaves(draws))
    reference = float(np.mean(square + d)) / m
    note = (
        f"U-statistic of KSD² over {m} draws, every {_ordinal(k)} (near-independent by the params' ESS; IMQ c=1, "
        "beta=-1/2, identity scale): unbiased for the population KSD² whatever the number of draws, ~0 "
        "(either sign) for exact draws; ref: the V-statistic's self-term, its noise scale; no verdict "
        "(compare runs: the smaller the better)"
    )
    if temperature is None:
        note += "; temperature unknown, scores at scores_from's default"
    return [Row(name, None, value, reference, "", "-", note)]


# ---- the entry point ----------------------------------------------------------------------------


def diagnose(
    result: Any,
    *,
    lr: Any = None,
    alpha: Any = None,
    sigma: Any = None,
    temperature: Any = None,
    beta: Any = None,
    sampler: str | None = None,
    log_posterior: Any = None,
    data: Any = None,
    batch_size: int | None = None,
    burn_in: int | None = None,
    kinetic_threshold: float = 0.1,
    noise_threshold: float = 0.1,
    rhat_threshold: float = 1.05,
    min_ess: float = 100.0,
    max_params: int = 1000,
    num_points: int = 4,
    num_batches: int = 16,
    ksd_draws: int = 1000,
    seed: int = 0,
) -> Diagnosis:
    r"""Diagnostics made for stochastic-gradient samplers: a table with one row per check (and
    per chain for the kinetic temperature), its value, threshold and verdict ("ok", "FLAG",
    "n/a" with what was missing, or "-" when reported without a verdict), and advice under it.

    0. **Identical chains**: FLAG when chains have exactly equal draws (shared noise: R-hat and
       ESS then count copies as independent chains). **Convergence**: rank-normalised split
       R-hat (FLAG at `rhat_threshold` or above) and bulk ESS (FLAG at `min_ess` or below) of
       the log posterior after burn-in and of the params (the worst of up to `max_params`
       coordinates, named in the note); a trend test of the log posterior after burn-in per
       chain: z of the last third's mean minus the first third's, rank-normalised, with the
       standard error from the autocorrelation of the linearly detrended series; FLAG past
       |z| = 4 ("lengthen burn_in / run longer"). After every chain diverged: one FLAG row.
    1. **Kinetic temperature** T̂_K = mean over the steps after burn-in of mᵀm/(σ²d) (the
       `kinetic` trace), per chain, with its Monte Carlo standard error (ESS of the series),
       against the sampler's discrete expectation E = T·`Rule.diagnose.kinetic` (the stationary
       momentum variance of its one-step rule when the gradient noise is what it assumes:
       1/(1 − εα/(2σ²)) for SGHMC and pSGHMC, 1 for BAOA, UBU and SGNHT). FLAG when the series
       is not stationary (the trend test above), or when |T̂_K/E − 1| > `kinetic_threshold` and
       |T̂_K − E| > 3 MCSE. Too hot: gradient noise the sampler is not told about. Not
       applicable to SGLD/pSGLD (no momenta); SGNHT's thermostat holds it at T by construction.
    2. **Noise ratio** R_j of the minibatch gradient noise a step adds to the noise it injects,
       per coordinate j, with V_j the variance of the minibatch gradient of the log posterior
       (estimated at `num_points` draws per chain from `num_batches` independent minibatches
       of the run's `batch_size` of `data`):

       .. math::

           R_j = \frac{\epsilon (V_j - \beta T^2)}{2 \alpha T} \ \text{(sghmc, sgnht)},\quad
           \frac{\epsilon (V_j - \beta T^2)}{2 T} \ \text{(sgld)},\quad
           \frac{\epsilon G_j V_j}{2 \alpha T},\ \frac{\epsilon G_j V_j}{2 T}
           \ \text{(psghmc, psgld)},\quad
           \frac{\epsilon^2 V_j}{\sigma^2 T (1 - e^{-2\gamma\epsilon})} \ \text{(baoa, ubu)},

       γ = α/σ², G = 1/(λ + √v) the preconditioner of the final state (mean over chains).
       On a Gaussian the variance and T̂_K are inflated by ≈ 1 + R. Reported as the mean over
       coordinates (the verdict: FLAG above `noise_threshold`) and the maximum.
    3. **Kernel Stein discrepancy** (`stein.ksd`, IMQ c = 1, β = −1/2): the U-statistic of
       KSD² over the healthy chains' draws thinned to near-independence (every ⌈n/ESS⌉-th, ESS
       the smallest bulk ESS of the params per chain), at most `ksd_draws`, with full-data
       scores at the run's temperature (`stein.scores_from` with `data` as the batch). It is
       unbiased for the population KSD² whatever the number of draws (≈ 0, either sign, for
       exact draws), so runs that mix at different speeds compare; the error column gives the
       V-statistic's self-term mean k₀(x, x)/n, the scale of its noise. No verdict: compare
       runs (the smaller the better).

    The hyperparameters come from the transform (`result.hyperparameters`, schedules evaluated
    at the last update); `log_posterior`, `data` and `batch_size` from the run (references kept
    by `sample`). When the transform was wrapped (e.g. in `optax.chain`) the hyperparameters
    are unknown: pass them, or the rows that need them say "n/a" and what is missing.

    Args:
        result: the `SampleResult`.
        lr, alpha, sigma, temperature, beta: override (or supply) the hyperparameters, as their
            values at the run's last step.
        sampler: the rule whose formulas the rows use (the name of any `Rule` in kernels.py:
            "sghmc", "sgld", "sgnht", "baoa", "ubu", "psgld", "psghmc", ...), when the run did
            not record it.
        log_posterior, data, batch_size: override the run's.
        burn_in: steps of this run's traces left out of the kinetic temperature and the log
            posterior's rows (default: the run's `burn_in`).
        kinetic_threshold, noise_threshold: the relative deviation of T̂_K from E, and the mean
            R, above which a row is flagged.
        num_points, num_batches: the draws per chain and the minibatches per draw V is
            estimated from.
        ksd_draws: the most draws the KSD uses.
        rhat_threshold, min_ess: the R-hat at or above which, and the bulk ESS at or below
            which, the convergence rows are flagged.
        max_params: the most parameter coordinates the convergence rows read.
        seed: seeds the minibatches drawn for V.

    Returns:
        A `Diagnosis`: `rows`, `flagged`, `ok`, `to_dicts()`, printed as a table.

    Raises:
        TypeError, ValueError: for a bad override, naming it.

    Example:
        >>> import jax.numpy as jnp, numpy as np, sghmc_jax
        >>> data = jnp.asarray(np.random.default_rng(0).normal(size=(200, 2)), jnp.float32)
        >>> log_post = lambda w, x: (-0.5 * jnp.sum(w**2) - 0.5 * jnp.sum((x - w) ** 2) * 200 / len(x), None)
        >>> result = sghmc_jax.sample(0, log_post, jnp.zeros(2), num_chains=2, num_steps=400, burn_in=100,
        ...     transform=lambda k: sghmc_jax.sghmc(1e-3, alpha=1.0, key=k), data=data, batch_size=50, progress=False)
        >>> table = result.diagnose()
        >>> [row.diagnostic for row in table.rows]  # doctest: +NORMALIZE_WHITESPACE
        ['identical chains', 'R-hat log posterior', 'ESS log posterior', 'trend log posterior',
         'R-hat params (max)', 'ESS params (min)', 'kinetic temperature', 'kinetic temperature',
         'noise ratio R', 'KSD']
    """
    thresholds = {
        "kinetic_threshold": _number("kinetic_threshold", kinetic_threshold, ">0"),
        "noise_threshold": _number("noise_threshold", noise_threshold, ">0"),
        "rhat_threshold": _number("rhat_threshold", rhat_threshold, ">0"),
        "min_ess": _number("min_ess", min_ess, ">=0"),
    }
    num_points = _checks.check_int("num_points", num_points, 1)
    num_batches = _checks.check_int("num_batches", num_batches, 2)
    ksd_draws = _checks.check_int("ksd_draws", ksd_draws, 2)
    max_params = _checks.check_int("max_params", max_params, 1)
    rules = _rules()
    if sampler is not None and sampler not in rules:
        raise ValueError(f"`sampler` must be one of {tuple(rules)} (the rules in kernels.py), got sampler={sampler!r}")
    if log_posterior is not None and not callable(log_posterior):
        raise TypeError(f"`log_posterior` must be callable, got {type(log_posterior).__name__}")
    source: RunSource | None = result._source
    values, _ = _hyperparameters(
        result, {"lr": lr, "alpha": alpha, "sigma": sigma, "temperature": temperature, "beta": beta}
    )
    recorded = result.hyperparameters is not None
    sampler = sampler or result.sampler
    assumed = ""
    if sampler is None:
        kinetic = np.asarray(result.kinetic) if result.kinetic is not None else np.zeros(0)
        sampler = "sgld" if kinetic.size == 0 or np.all(np.isnan(kinetic)) else "sghmc"
        assumed = f"formula of {sampler} assumed (pass sampler= for another); "
    rule = rules.get(sampler)
    log_posterior = log_posterior if log_posterior is not None else (source.log_posterior if source else None)
    data_given = data is not None
    data = data if data_given else (source.data if source else None)
    batch_size = batch_size if batch_size is not None else (source.batch_size if source else None)
    if data is not None:
        n = int(np.shape(jax.tree.leaves(data)[0])[0])
        if batch_size is not None:
            batch_size = _checks.check_int("batch_size", batch_size, 1, n, "the number of examples in `data`")
    if burn_in is None:
        burn_in = source.burn_in if source else 0
    burn_in = _checks.check_int("burn_in", burn_in, 0)
    chains = _healthy(result)
    if not len(chains):
        return Diagnosis(
            (
                Row(
                    "chains",
                    None,
                    math.nan,
                    math.nan,
                    "",
                    "FLAG",
                    f"every chain diverged (at steps {', '.join(map(str, np.asarray(result.diverged_at)))}): "
                    "nothing to diagnose; lower lr",
                ),
            )
        )
    rows = _identical_rows(result, chains)
    convergence, ess_per_chain = _convergence_rows(
        result, chains, burn_in, thresholds["rhat_threshold"], thresholds["min_ess"], max_params
    )
    rows += convergence
    rows += _kinetic_rows(result, rule, assumed, values, recorded, burn_in, thresholds["kinetic_threshold"])
    rows += _noise_rows(
        result,
        rule,
        assumed,
        values,
        recorded,
        source,
        log_posterior,
        data,
        batch_size,
        thresholds["noise_threshold"],
        num_points,
        num_batches,
        seed,
    )
    rows += _ksd_rows(result, values, source, log_posterior, data, data_given, ksd_draws, ess_per_chain)
    return Diagnosis(tuple(rows))
