"""The rows of `SampleResult.diagnose()` that evaluate the log posterior's gradient at draws:
R, the minibatch gradient noise a step adds against the noise it injects, and the kernel Stein
discrepancy of near-independent draws with full-data scores."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sghmc_jax import kernels, stein
from sghmc_jax._sampler import replicas
from sghmc_jax._sampler.rows import _advice, _healthy, _missing, _na, _needs
from sghmc_jax.diagnostics import Row
from sghmc_jax.types import StoredArray

__all__: list[str] = []


def _ordinal(k: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, 83rd, ..."""
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def _draw_points(result: Any, chains: np.ndarray, per_chain: int) -> list[Any]:
    """Up to `per_chain` draws of each chain as pytrees, evenly spaced over the second half of
    its draws (the last included): away from a start-up transient that a short burn-in left in
    the draws, where the gradient noise is not the stationary law's."""
    leaves, treedef = jax.tree.flatten(result.samples, is_leaf=lambda x: isinstance(x, StoredArray))
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


def _final_fields(result: Any, rule: kernels.Rule, chains: np.ndarray) -> dict[str, np.ndarray]:
    """The rule's state fields in the final state, (chain, coordinate), of the healthy chains
    (with replica exchange, of the replica holding rung 0 in each chain)."""
    fields = {}
    for field in rule.fields:
        found = _state_field(result.final_state.transform_state, field)
        if found is not None and result.final_state.replicas is not None:
            found = replicas.rung_zero(result.final_state.replicas, found)
        if found is not None:
            fields[field] = np.concatenate(
                [np.asarray(x, np.float64)[chains].reshape(len(chains), -1) for x in jax.tree.leaves(found)], axis=1
            )
    return fields


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


def _noise_not_applicable(
    rule: Any, values: dict[str, float], recorded: bool, source: Any, log_posterior: Any, data: Any, batch_size: Any
) -> str:
    """Why the noise ratio cannot be computed for this run ("" when it can)."""
    if data is None or batch_size is None or log_posterior is None:
        why = "the run took host `batches`" if source is not None and source.host_batches else "the run had no `data`"
        return f"needs data= and batch_size= ({why}): V is estimated from minibatches of it"
    if rule is None or rule.diagnose is None:
        return f"the rule {rule.name!r} gives no formula (kernels.Rule.diagnose)" if rule else "unknown sampler"
    missing = _missing(values, rule.diagnose.noise_needs, recorded)
    if missing:
        return missing
    if values["temperature"] == 0:
        return "not applicable at temperature 0 (nothing is injected)"
    return ""


def _noise_rows(result: Any, run: Any, threshold: float, num_points: int, num_batches: int, seed: int) -> list[Row]:
    rule, assumed, values, recorded = run.rule, run.assumed, run.values, run.recorded
    source, log_posterior, data, batch_size = run.source, run.log_posterior, run.data, run.batch_size
    name = "noise ratio R"
    band = f"mean R < {threshold:.4g}"
    why_not = _noise_not_applicable(rule, values, recorded, source, log_posterior, data, batch_size)
    if why_not:
        return [_na(name, why_not, threshold=band)]
    spec = rule.diagnose
    if values.get("alpha", 1.0) == 0 and "alpha" in spec.noise_needs:
        return [Row(name, None, math.inf, math.inf, band, "FLAG", "alpha=0 injects no noise: " + _advice(_NOISY, rule))]
    chains = _healthy(result)
    points = _draw_points(result, chains, num_points)
    if not points:
        return [_na(name, "no finite draws to evaluate the gradient at", threshold=band)]
    v = _gradient_variance(log_posterior, data, batch_size, points, num_batches, seed)
    fields = _final_fields(result, rule, chains)
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


def _ksd_rows(result: Any, run: Any, cap: int, ess_per_chain: float) -> list[Row]:
    values, source, log_posterior, data, data_given = (
        run.values,
        run.source,
        run.log_posterior,
        run.data,
        run.data_given,
    )
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
    leaves, treedef = jax.tree.flatten(result.samples, is_leaf=lambda x: isinstance(x, StoredArray))
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
