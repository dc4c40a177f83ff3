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
import numpy as np

from sghmc_jax import _checks, diagnostics, kernels
from sghmc_jax._sampler.convergence import _LONGER, _Z_MAX, _trend_z, convergence_rows, identical_rows
from sghmc_jax._sampler.rows import RunSource, _advice, _healthy, _missing, _na, _needs
from sghmc_jax._sampler.scores import _ksd_rows, _noise_rows
from sghmc_jax.diagnostics import Diagnosis, Row
from sghmc_jax.types import StoredArray

__all__: list[str] = []


def _rules() -> dict[str, kernels.Rule]:
    """Every rule defined in kernels.py, by name: a sampler added there is diagnosed as is."""
    return kernels.rules()


def _number(name: str, value: Any, rule: Any) -> float:
    """An override, checked: a real, finite number obeying `rule`: ">0", ">=0", or a
    hyperparameter table's `(check, text)`."""
    if isinstance(value, (bool, np.bool_)) or callable(value) or np.ndim(value) != 0:
        raise TypeError(f"`{name}` must be a real number (its value at the run's last step), got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a real number, got {type(value).__name__}: {value!r}") from None
    if isinstance(rule, str):
        rule = ((lambda v: v > 0), "> 0") if rule == ">0" else ((lambda v: v >= 0), ">= 0")
    check, text = rule
    if not math.isfinite(x) or not check(x):
        raise ValueError(f"`{name}` must be finite and {text}, got {name}={value!r}")
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
    # Each hyperparameter's rule as the samplers' tables state it (they agree where they share a name).
    rules = {h.name: h.rule for rule in kernels.rules().values() for h in rule.hyperparameters}
    for name, v in overrides.items():
        if v is not None:
            values[name] = _number(name, v, rules[name])
    return values, step


# ---- 1. kinetic temperature -------------------------------------------------------------------

_HOT = (
    "too hot: gradient noise the sampler is not told about heats the momenta (the step's own "
    "discretisation is already in the expected value); lower lr, raise batch_size, raise alpha, "
    "or set beta"
)
_COLD = "too cold: the momenta average below the expected value; run a longer burn-in, or lower beta"


def _kinetic_expectation(rule: kernels.Rule | None, assumed: str, values: dict[str, float], recorded: bool) -> Any:
    """(E/T, the remark for ok rows) for this rule at these hyperparameters, or the "n/a" note."""
    spec = rule.diagnose if rule is not None else None
    if spec is None:
        if rule is None:
            return 1.0, ""
        return 1.0, f"compared with T: the rule {rule.name!r} gives no discrete expectation (kernels.Rule.diagnose)"
    ratio, lacking = _needs(spec.kinetic, values)
    if lacking:
        return _missing(values, (lacking,), recorded)
    if spec.thermostat:
        return ratio, "the thermostat holds it at T by construction (a check of the run, not of the noise)"
    if abs(ratio - 1) > 1e-3:
        return ratio, (
            f"{assumed}expected {ratio:.4g}·T, not T: the step's discretisation at these lr, alpha, sigma "
            "(with exact gradients too; lower lr to bring it to T)"
        )
    return ratio, ""


def _kinetic_row(chain: int, x: np.ndarray, expected: float, threshold: float, rule: Any, remark: str) -> Row:
    """One chain's kinetic temperature row from its series mᵀm/(σ²d) after burn-in."""
    name, band = "kinetic temperature", f"E={expected:.4g} ±{threshold:.0%}, >3 mcse"
    if not np.all(np.isfinite(x)):
        return _na(name, "the chain diverged", chain=chain, threshold=band)
    mean = float(np.mean(x))
    mcse = float(diagnostics._mcse_mean(x[None].astype(np.float64), np))
    z = _trend_z(x)
    if abs(z) > _Z_MAX:
        return Row(name, chain, mean, mcse, band, "FLAG", f"{_LONGER} (its trend test reads z = {z:.3g})")
    deviation = mean / expected - 1
    flag = abs(deviation) > threshold and abs(mean - expected) > 3 * mcse
    if not flag and not mcse <= threshold * expected:
        # Too uncertain to be inside the band: a start-up transient among the kept steps (which
        # the trend test can miss when it is short) or too few steps; never "ok".
        return Row(
            name,
            chain,
            mean,
            mcse,
            band,
            "FLAG",
            f"{_LONGER} (its MCSE {mcse:.3g} is wider than the ±{threshold:.0%} band: the series "
            "is not stationary, e.g. a start-up transient after burn_in, or too short)",
        )
    note = (_advice(_HOT, rule) if deviation > 0 else _advice(_COLD, rule)) if flag else remark
    return Row(name, chain, mean, mcse, band, "FLAG" if flag else "ok", note)


def _kinetic_rows(result: Any, run: Any, threshold: float) -> list[Row]:
    rule, assumed, values, recorded, burn_in = run.rule, run.assumed, run.values, run.recorded, run.burn_in
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
    expectation = _kinetic_expectation(rule, assumed, values, recorded)
    if isinstance(expectation, str):
        return [_na(name, expectation)]
    ratio, remark = expectation
    return [_kinetic_row(c, series[c], ratio * temperature, threshold, rule, remark) for c in range(series.shape[0])]


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
       abs(z) = 4 ("lengthen burn_in / run longer"). After every chain diverged: one FLAG row.
    1. **Kinetic temperature** T̂_K = mean over the steps after burn-in of mᵀm/(σ²d) (the
       `kinetic` trace), per chain, with its Monte Carlo standard error (ESS of the series),
       against the sampler's discrete expectation E = T·`Rule.diagnose.kinetic` (the stationary
       momentum variance of its one-step rule when the gradient noise is what it assumes:
       1/(1 − εα/(2σ²)) for SGHMC and pSGHMC, 1 for BAOA, UBU and SGNHT). FLAG when the series
       is not stationary (the trend test above), or when abs(T̂_K/E − 1) > `kinetic_threshold` and
       abs(T̂_K − E) > 3 MCSE. Too hot: gradient noise the sampler is not told about. Not
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
    overrides = {"lr": lr, "alpha": alpha, "sigma": sigma, "temperature": temperature, "beta": beta}
    result = _rung_zero(result)
    run = _resolve(result, overrides, sampler, log_posterior, data, batch_size, burn_in)
    chains = _healthy(result)
    if not len(chains):
        every = ", ".join(map(str, np.asarray(result.diverged_at)))
        note = f"every chain diverged (at steps {every}): nothing to diagnose; lower lr"
        return Diagnosis((Row("chains", None, math.nan, math.nan, "", "FLAG", note),))
    rows = identical_rows(result, chains)
    convergence, ess_per_chain = convergence_rows(
        result, chains, run.burn_in, thresholds["rhat_threshold"], thresholds["min_ess"], max_params
    )
    rows += convergence
    rows += _ladder_rows(result)
    rows += _kinetic_rows(result, run, thresholds["kinetic_threshold"])
    rows += _noise_rows(result, run, thresholds["noise_threshold"], num_points, num_batches, seed)
    rows += _ksd_rows(result, run, ksd_draws, ess_per_chain)
    return Diagnosis(tuple(rows))


def _rung_zero(result: Any) -> Any:
    """With replica exchange's `keep_rungs`, the result with rung 0's draws only: every row is
    about the target (a hot rung's draws are another temperature's, and have an extra axis)."""
    source = result._source
    if source is None or not source.keep_rungs:
        return result
    samples = jax.tree.map(lambda x: x[:, :, 0], result.samples, is_leaf=lambda x: isinstance(x, StoredArray))
    return dataclasses.replace(result, samples=samples)


SWAP_TOO_RARE = 0.1  # a rung pair whose swaps are accepted less often is flagged


def _ladder_rows(result: Any) -> list[Row]:
    """With replica exchange: each rung pair's swap acceptance (flagged below SWAP_TOO_RARE: the
    rungs are too far apart for replicas to pass), and the ladder's round trips (flagged at none:
    no replica went from rung 0 to the top and back, so rung 0's draws have not been helped)."""
    if result.swap_acceptance is None:
        return []
    rows, tau = [], np.mean(result.temperatures, axis=0)
    for r, rate in enumerate(np.asarray(result.swap_acceptance, float)):
        if math.isnan(rate):
            verdict, note = "n/a", "no swap attempted between these rungs yet"
        elif rate < SWAP_TOO_RARE:
            verdict, note = "FLAG", f"add rungs between τ = {tau[r]:.3g} and {tau[r + 1]:.3g}"
        else:
            verdict, note = "ok", ""
        rows.append(
            Row(f"swap acceptance {r}-{r + 1}", None, float(rate), math.nan, f">= {SWAP_TOO_RARE}", verdict, note)
        )
    trips = int(np.sum(result.round_trips))
    note = "" if trips else "no replica crossed the ladder and back: run longer, or raise the top temperature"
    rows.append(Row("round trips", None, float(trips), math.nan, "> 0", "ok" if trips else "FLAG", note))
    return rows


class _Run(NamedTuple):
    """What `diagnose()` reads of the run, with the caller's overrides on top."""

    rule: kernels.Rule | None
    assumed: str  # "formula of ... assumed" when the run recorded no sampler
    values: dict[str, float]
    recorded: bool
    source: RunSource | None
    log_posterior: Any
    data: Any
    data_given: bool
    batch_size: int | None
    burn_in: int


def _resolve(
    result: Any,
    overrides: dict[str, Any],
    sampler: str | None,
    log_posterior: Any,
    data: Any,
    batch_size: Any,
    burn_in: Any,
) -> _Run:
    """The rule, hyperparameters, log posterior, data and burn-in the rows use: the run's,
    recorded by `sample`, or the caller's overrides (checked)."""
    rules = _rules()
    if sampler is not None and sampler not in rules:
        raise ValueError(f"`sampler` must be one of {tuple(rules)} (the rules in kernels.py), got sampler={sampler!r}")
    if log_posterior is not None and not callable(log_posterior):
        raise TypeError(f"`log_posterior` must be callable, got {type(log_posterior).__name__}")
    source: RunSource | None = result._source
    values, _ = _hyperparameters(result, overrides)
    sampler = sampler or result.sampler
    assumed = ""
    if sampler is None:
        kinetic = np.asarray(result.kinetic) if result.kinetic is not None else np.zeros(0)
        sampler = "sgld" if kinetic.size == 0 or np.all(np.isnan(kinetic)) else "sghmc"
        assumed = f"formula of {sampler} assumed (pass sampler= for another); "
    log_posterior = log_posterior if log_posterior is not None else (source.log_posterior if source else None)
    data_given = data is not None
    data = data if data_given else (source.data if source else None)
    batch_size = batch_size if batch_size is not None else (source.batch_size if source else None)
    if data is not None and batch_size is not None:
        n = int(np.shape(jax.tree.leaves(data)[0])[0])
        batch_size = _checks.check_int("batch_size", batch_size, 1, n, "the number of examples in `data`")
    burn_in = _checks.check_int("burn_in", burn_in if burn_in is not None else (source.burn_in if source else 0), 0)
    recorded = result.hyperparameters is not None
    return _Run(
        rules.get(sampler), assumed, values, recorded, source, log_posterior, data, data_given, batch_size, burn_in
    )
