"""`SampleResult.diagnose()`: checks made for stochastic-gradient samplers, read off a finished run.

Three diagnostics (issue 14, section 5 of the research notes):

* kinetic temperature, mᵀm/(σ²d) averaged over the steps after burn-in, per chain, against T:
  under the sampler's stationary law m ~ N(0, σ²T), so a chain running hot is being heated by
  gradient noise the sampler does not account for;
* R, the ratio of the minibatch gradient noise a step adds to the noise the sampler injects
  (R ≪ 1 is the premise of every SG-MCMC sampler; on a Gaussian with β = 0 the kinetic
  temperature and the variance are both inflated by a factor ≈ 1 + R);
* the kernel Stein discrepancy of a thinned subset of the draws, with full-data scores.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sghmc_jax import _checks, diagnostics, stein

__all__: list[str] = []

_MOMENTUM_SAMPLERS = ("sghmc", "sgnht", "psghmc", "baoa", "ubu")
_SAMPLERS = (*_MOMENTUM_SAMPLERS, "sgld", "psgld")
_WRAPPED = "the transform's hyperparameters were not recorded (it is not one of this library's transforms as is, e.g. it sits inside optax.chain)"


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
            (r.diagnostic, "all" if r.chain is None else str(r.chain), _fmt(r.value), _fmt(r.error), r.threshold, r.verdict)
            for r in self.rows
        ]
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
        out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
        out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
        notes, seen = [], set()
        for r in self.rows:
            if r.note and (r.diagnostic, r.note) not in seen:
                seen.add((r.diagnostic, r.note))
                chains = [str(q.chain) for q in self.rows if q.diagnostic == r.diagnostic and q.note == r.note and q.chain is not None]
                where = f" (chain {', '.join(chains)})" if chains else ""
                notes.append(f"  {r.diagnostic}{where} [{r.verdict}]: {r.note}")
        return "\n".join(out + (["notes:", *notes] if notes else []))

    __repr__ = __str__


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


# ---- 1. kinetic temperature -------------------------------------------------------------------

_HOT = (
    "too hot: gradient noise the sampler is not told about heats the momenta; lower lr, raise "
    "alpha, or set beta. (A chain still drifting toward the posterior also runs hot: if the log "
    "posterior is still climbing, lengthen burn_in first.)"
)
_HAS_BETA = ("sghmc", "sgnht", "sgld", None)  # None: unknown, the advice keeps beta


def _advice(text: str, sampler: str | None) -> str:
    """`text` without its beta option for a sampler that has no `beta`."""
    if sampler in _HAS_BETA:
        return text
    return text.replace(", or set beta", "").replace(", raise alpha", ", or raise alpha")


_COLD = "too cold: the momenta average below T; run a longer burn-in, or lower lr (discretisation)"


def _kinetic_rows(result: Any, sampler: str | None, values: dict[str, float], recorded: bool,
                  burn_in: int, threshold: float) -> list[Row]:
    name = "kinetic temperature"
    kinetic = np.asarray(result.kinetic) if result.kinetic is not None else np.zeros((result.num_chains, 0))
    if sampler in ("sgld", "psgld") or (kinetic.size and np.all(np.isnan(kinetic))):
        return [Row(name, None, math.nan, math.nan, "", "n/a", "not applicable: the transform state holds no momenta (e.g. SGLD, pSGLD)")]
    missing = _missing(values, ("sigma", "temperature"), recorded)
    if missing:
        return [Row(name, None, math.nan, math.nan, "", "n/a", missing)]
    sigma, temperature = values["sigma"], values["temperature"]
    if temperature == 0:
        return [Row(name, None, math.nan, math.nan, "", "n/a", "not applicable at temperature 0 (no noise: the momenta go to 0)")]
    series = kinetic[:, burn_in:] / sigma**2
    if series.shape[1] < 8:
        return [Row(name, None, math.nan, math.nan, "", "n/a", f"needs at least 8 steps after burn-in, the run has {series.shape[1]}")]
    band = f"T={temperature:.4g} ±{threshold:.0%}, >3 mcse"
    remark = "the thermostat holds it at T by construction (a check of the run, not of the noise)" if sampler == "sgnht" else ""
    rows = []
    for chain in range(series.shape[0]):
        x = series[chain]
        if not np.all(np.isfinite(x)):
            rows.append(Row(name, chain, math.nan, math.nan, band, "n/a", "the chain diverged"))
            continue
        mean = float(np.mean(x))
        mcse = float(diagnostics._mcse_mean(x[None].astype(np.float64), np))
        deviation = mean / temperature - 1
        flag = abs(deviation) > threshold and abs(mean - temperature) > 3 * mcse
        note = (_advice(_HOT, sampler) if deviation > 0 else _COLD) if flag else remark
        rows.append(Row(name, chain, mean, mcse, band, "FLAG" if flag else "ok", note))
    return rows


# ---- 2. gradient noise against injected noise --------------------------------------------------


def _draw_points(result: Any, chains: np.ndarray, per_chain: int) -> list[Any]:
    """Up to `per_chain` draws of each chain (evenly spaced, the last included) as pytrees."""
    leaves, treedef = jax.tree.flatten(result.samples, is_leaf=lambda x: hasattr(x, "_array"))
    n = len(result.sample_steps)
    points = []
    if n == 0:
        return points
    index = np.unique(np.linspace(n - 1, 0, per_chain).round().astype(int))[::-1]
    for chain in chains:
        for i in index:
            leaves_i = [np.asarray(leaf[chain, int(i)]) for leaf in leaves]
            if all(np.all(np.isfinite(x)) for x in leaves_i):
                points.append(jax.tree.unflatten(treedef, leaves_i))
    return points


def _state_field(tree: Any, field: str) -> Any:
    found = [
        x for x in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, tuple) and field in getattr(x, "_fields", ()))
        if isinstance(x, tuple) and field in getattr(x, "_fields", ())
    ]
    return getattr(found[0], field) if found else None


def _gradient_variance(log_posterior: Any, data: Any, batch_size: int, points: list[Any], num_batches: int,
                       seed: int) -> np.ndarray:
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


_NOISY = "minibatch noise rivals the injected noise, so the stationary law is not the target: raise batch_size, lower lr (R ∝ lr), raise alpha, or set beta"


def _noise_rows(result: Any, sampler: str | None, values: dict[str, float], recorded: bool, source: RunSource,
                log_posterior: Any, data: Any, batch_size: Any, threshold: float, num_points: int,
                num_batches: int, seed: int) -> list[Row]:
    name = "noise ratio R"
    band = f"mean R < {threshold:.4g}"
    if data is None or batch_size is None or log_posterior is None:
        why = "the run took host `batches`" if source is not None and source.host_batches else "the run had no `data`"
        return [Row(name, None, math.nan, math.nan, band, "n/a", f"needs data= and batch_size= ({why}): V is estimated from minibatches of it")]
    assumed = ""
    if sampler is None:
        kinetic = np.asarray(result.kinetic) if result.kinetic is not None else np.zeros(0)
        sampler = "sgld" if kinetic.size == 0 or np.all(np.isnan(kinetic)) else "sghmc"
        assumed = f"formula of {sampler} assumed (pass sampler= for baoa/ubu/psgld/psghmc); "
    elif sampler not in _SAMPLERS:
        raise ValueError(f"`sampler` must be one of {_SAMPLERS}, got sampler={sampler!r}")
    needs = {"sghmc": ("lr", "alpha", "temperature"), "sgnht": ("lr", "alpha", "temperature"),
             "psghmc": ("lr", "alpha", "temperature", "eps"), "sgld": ("lr", "temperature"),
             "psgld": ("lr", "temperature", "eps"), "baoa": ("lr", "alpha", "sigma", "temperature"),
             "ubu": ("lr", "alpha", "sigma", "temperature")}[sampler]
    missing = _missing(values, needs, recorded)
    if missing:
        return [Row(name, None, math.nan, math.nan, band, "n/a", missing)]
    lr, temperature = values["lr"], values["temperature"]
    beta = values.get("beta", 0.0)
    if temperature == 0:
        return [Row(name, None, math.nan, math.nan, band, "n/a", "not applicable at temperature 0 (nothing is injected)")]
    if sampler != "sgld" and sampler != "psgld" and values["alpha"] == 0:
        return [Row(name, None, math.inf, math.inf, band, "FLAG", "alpha=0 injects no noise: " + _advice(_NOISY, sampler))]
    chains = _healthy(result)
    points = _draw_points(result, chains, num_points)
    if not points:
        return [Row(name, None, math.nan, math.nan, band, "n/a", "no finite draws to evaluate the gradient at")]
    v = _gradient_variance(log_posterior, data, batch_size, points, num_batches, seed)
    if sampler in ("psgld", "psghmc"):
        acc = _state_field(result.final_state.transform_state, "v")
        if acc is None:
            return [Row(name, None, math.nan, math.nan, band, "n/a", "no preconditioner accumulator `v` in the final state")]
        g = [1.0 / (values["eps"] + np.sqrt(np.asarray(x, np.float64)[chains].reshape(len(chains), -1))) for x in jax.tree.leaves(acc)]
        precondition = np.concatenate(g, axis=1).mean(axis=0)
    if sampler in ("sghmc", "sgnht"):
        r = lr * (v - beta * temperature**2) / (2 * values["alpha"] * temperature)
    elif sampler == "sgld":
        r = lr * (v - beta * temperature**2) / (2 * temperature)
    elif sampler == "psgld":
        r = lr * precondition * v / (2 * temperature)
    elif sampler == "psghmc":
        r = lr * precondition * v / (2 * values["alpha"] * temperature)
    else:  # baoa, ubu: the kick's h²V against the exact OU step's σ²T(1 − e^{−2γh})
        gamma = values["alpha"] / values["sigma"] ** 2
        r = lr**2 * v / (values["sigma"] ** 2 * temperature * -math.expm1(-2 * gamma * lr))
    mean, worst = float(np.mean(r)), float(np.max(r))
    flag = mean > threshold
    how = f"{assumed}V from {len(points)} draws x {num_batches} minibatches of {batch_size}"
    return [Row(name, None, mean, worst, band, "FLAG" if flag else "ok", f"{_advice(_NOISY, sampler)} ({how})" if flag else how)]


# ---- 3. kernel Stein discrepancy ----------------------------------------------------------------


def _ksd_rows(result: Any, values: dict[str, float], source: RunSource, log_posterior: Any, data: Any,
              data_given: bool, cap: int) -> list[Row]:
    name = "KSD"
    if log_posterior is None or (source is not None and source.host_batches and not data_given):
        return [Row(name, None, math.nan, math.nan, "", "n/a", "needs data= (the run took host `batches`): the scores use the full data")]
    chains = _healthy(result)
    n = len(result.sample_steps)
    per_chain = max(cap // max(len(chains), 1), 1)
    leaves, treedef = jax.tree.flatten(result.samples, is_leaf=lambda x: hasattr(x, "_array"))
    if n < 2:
        return [Row(name, None, math.nan, math.nan, "", "n/a", "needs at least 2 draws")]
    index = np.unique(np.linspace(0, n - 1, min(per_chain, n)).round().astype(int))
    parts = [np.stack([np.asarray(leaf[int(c)])[index] for c in chains]) for leaf in leaves]
    flat = [x.reshape(-1, *x.shape[2:]) for x in parts]
    finite = np.all(np.stack([np.isfinite(x.reshape(len(x), -1)).all(axis=1) for x in flat]), axis=0)
    draws = jax.tree.unflatten(treedef, [jnp.asarray(x[finite]) for x in flat])
    temperature = values.get("temperature")
    if temperature == 0:
        return [Row(name, None, math.nan, math.nan, "", "n/a", "not applicable at temperature 0 (no target distribution)")]
    scores = stein.scores_from(log_posterior, draws, data, temperature=temperature)
    value = float(stein.ksd(draws, scores, c=1.0, beta=-0.5, statistic="v"))
    # Under exact independent draws E KSD_V² = E k₀(x, x)/m, with k₀(x, x) = ‖s(x)‖² + d here.
    m = int(finite.sum())
    square = sum(np.sum(np.asarray(s, np.float64).reshape(m, -1) ** 2, axis=1) for s in jax.tree.leaves(scores))
    d = sum(int(np.prod(np.shape(x)[1:])) for x in jax.tree.leaves(draws))
    reference = math.sqrt(float(np.mean(square + d)) / m)
    note = (
        f"V-statistic over {m} draws (IMQ c=1, beta=-1/2, identity scale); reference: the value exact "
        "independent draws would have; no verdict (compare runs of the same n)"
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
    num_points: int = 4,
    num_batches: int = 16,
    ksd_draws: int = 1000,
    seed: int = 0,
) -> Diagnosis:
    r"""Diagnostics made for stochastic-gradient samplers: a table with one row per check (and
    per chain for the kinetic temperature), its value, threshold and verdict ("ok", "FLAG",
    "n/a" with what was missing, or "-" when reported without a verdict), and advice under it.

    1. **Kinetic temperature** T̂_K = mean over the steps after burn-in of mᵀm/(σ²d) (the
       `kinetic` trace), per chain, with its Monte Carlo standard error (ESS of the series).
       Under the sampler's stationary law m ~ N(0, σ²T), so E T̂_K = T. FLAG when
       |T̂_K/T − 1| > `kinetic_threshold` and |T̂_K − T| > 3 MCSE. Too hot: gradient noise
       the sampler is not told about ("lower lr, raise alpha, or set beta"). Not applicable to
       SGLD/pSGLD (no momenta); SGNHT's thermostat holds it at T by construction.
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
    3. **Kernel Stein discrepancy** (`stein.ksd`, IMQ c = 1, β = −1/2, V-statistic) of at most
       `ksd_draws` draws evenly spaced over the healthy chains, with full-data scores at the
       run's temperature (`stein.scores_from` with `data` as the batch). A KSD value means
       something only relative to another: the row gives as reference √(mean k₀(x, x)/n), the
       value exact *independent* draws would have in expectation; correlated MCMC draws sit
       above it even when exact. So it carries no verdict: compare runs (e.g. two step sizes)
       at the same number of draws.

    The hyperparameters come from the transform (`result.hyperparameters`, schedules evaluated
    at the last update); `log_posterior`, `data` and `batch_size` from the run (references kept
    by `sample`). When the transform was wrapped (e.g. in `optax.chain`) the hyperparameters
    are unknown: pass them, or the rows that need them say "n/a" and what is missing.

    Args:
        result: the `SampleResult`.
        lr, alpha, sigma, temperature, beta: override (or supply) the hyperparameters, as their
            values at the run's last step.
        sampler: the rule whose formula R uses ("sghmc", "sgld", "sgnht", "baoa", "ubu",
            "psgld", "psghmc"), when the run did not record it.
        log_posterior, data, batch_size: override the run's.
        burn_in: steps of this run's trace left out of the kinetic temperature (default: the
            run's `burn_in`).
        kinetic_threshold, noise_threshold: the relative deviation of T̂_K from T, and the mean
            R, above which a row is flagged.
        num_points, num_batches: the draws per chain and the minibatches per draw V is
            estimated from.
        ksd_draws: the most draws the KSD uses.
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
        >>> [row.diagnostic for row in table.rows]
        ['kinetic temperature', 'kinetic temperature', 'noise ratio R', 'KSD']
    """
    thresholds = {
        "kinetic_threshold": _number("kinetic_threshold", kinetic_threshold, ">0"),
        "noise_threshold": _number("noise_threshold", noise_threshold, ">0"),
    }
    num_points = _checks.check_int("num_points", num_points, 1)
    num_batches = _checks.check_int("num_batches", num_batches, 2)
    ksd_draws = _checks.check_int("ksd_draws", ksd_draws, 2)
    if sampler is not None and sampler not in _SAMPLERS:
        raise ValueError(f"`sampler` must be one of {_SAMPLERS}, got sampler={sampler!r}")
    if log_posterior is not None and not callable(log_posterior):
        raise TypeError(f"`log_posterior` must be callable, got {type(log_posterior).__name__}")
    source: RunSource | None = result._source
    values, _ = _hyperparameters(
        result, {"lr": lr, "alpha": alpha, "sigma": sigma, "temperature": temperature, "beta": beta}
    )
    recorded = result.hyperparameters is not None
    sampler = sampler or result.sampler
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
    rows = _kinetic_rows(result, sampler, values, recorded, burn_in, thresholds["kinetic_threshold"])
    rows += _noise_rows(result, sampler, values, recorded, source, log_posterior, data, batch_size,
                        thresholds["noise_threshold"], num_points, num_batches, seed)
    rows += _ksd_rows(result, values, source, log_posterior, data, data_given, ksd_draws)
    return Diagnosis(tuple(rows))
