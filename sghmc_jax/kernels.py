"""The update rules: one short function per sampler, the only place each algorithm's maths lives.

Every face of the library (the optax transforms, the posteriors-style functional API, the
sampler) calls these rules, through each sampler's `Rule` (what state it carries, how that state
starts and how one step updates it), so given the same keys and gradients they produce
bit-identical chains.

Every rule has one shape: scalar coefficients derived once from the hyperparameters
(`_coefficients`, which owns the rules that keep constant and traced hyperparameters rounding
alike), then a per-leaf formula mapped over the trees with the shared Gaussian noise
(`_map_leaves`, which fuses the noise generator of `_noise` into each leaf's update, or shares
one per bin of small leaves).

Arithmetic runs in at least float32 (bf16/f16 leaves are promoted for the update and stored back
in their own dtype, the noise is never rounded below float32); each leaf keeps its dtype.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sghmc_jax import _checks, _noise
from sghmc_jax._noise import normal_like, split_key
from sghmc_jax.types import ArrayTree, Hyperparameter

__all__ = [
    "Diagnose",
    "Hyperparameter",
    "Rule",
    "baoa_step",
    "init_momenta",
    "normal_like",
    "ou_coefficients",
    "psghmc_step",
    "psgld_step",
    "resolve_momenta",
    "resolve_preconditioner",
    "resolve_xi",
    "rules",
    "sghmc_step",
    "sgld_step",
    "sgnht_step",
    "split_key",
    "ubu_step",
]


# ---- the shape every rule shares ------------------------------------------------------------


def _compute_dtype(dtype: Any) -> Any:
    """The dtype the update is computed in: the leaf's, but never below float32."""
    return jnp.promote_types(dtype, jnp.float32)


def _cast(x: jax.Array, dtype: Any) -> jax.Array:
    """`x.astype(dtype)`, but no operation at all when `x` already has that dtype."""
    return x if x.dtype == dtype else jax.lax.convert_element_type(x, dtype)


def _unfused(x: Any) -> Any:
    """`x`, kept from being contracted with its consumer into a fused multiply-add.

    A product that XLA may contract into an FMA in one program (a hyperparameter folded to a
    constant) and not in another (the same hyperparameter traced) would round differently; the
    rules mark such products so that both faces compute them alike.
    """
    return jax.lax.optimization_barrier(x)


def _coefficients(
    derive: Callable[..., tuple[jax.Array, ...]], *hyperparameters: jax.typing.ArrayLike
) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
    """(hyperparameters as runtime values, `derive(*those)` as fixed coefficients).

    Hyperparameters arrive as compile-time constants (Python floats closed over by an optax face)
    or as traced arguments (the functional faces, `inject_hyperparams`). XLA constant-folds
    arithmetic on the former on the host and runs it on the device for the latter, and a GPU's
    arithmetic can round differently from the host's, so the faces could drift apart by an ulp.
    So the hyperparameters pass a barrier first (becoming runtime values for both), the scalar
    coefficients are derived from them the same way for both, and the coefficients pass a second
    barrier, so that XLA does not rewrite the leaf arithmetic around them (reassociate a product,
    turn a division into a multiplication) differently for different programs. XLA:CPU removes
    barriers before fusion (the compiled HLO shows the constants folded into the update), which
    is harmless there: its code rounds like the host's constant folder, and the face tests check
    the faces bit for bit. It costs a few scalar operations.
    """
    runtime = jax.lax.optimization_barrier(tuple(jnp.asarray(v) for v in hyperparameters))
    return runtime, jax.lax.optimization_barrier(tuple(derive(*runtime)))


def _map_leaves(
    formula: Callable[..., tuple[jax.Array, ...]],
    key: jax.Array,
    coefficients: tuple[jax.Array, ...],
    *trees: ArrayTree,
    draws: int = 1,
) -> tuple[ArrayTree, ...]:
    """`formula(up, coefficients, noise, *leaves)` for every leaf, as trees like `trees[0]`.

    `noise` is the leaf's N(0, 1) noise (float32, float64 for float64 leaves; its layout is
    `_noise.normal_like`'s over `trees[0]`), `coefficients` are cast to the leaf's compute dtype,
    and `up(x)` casts an array to it; the formula returns its outputs in their storage dtypes.
    With `draws` > 1 the noise has a leading axis of that many independent draws per element
    (the layout of `normal_like` over leaves of shape (draws, *leaf shape)).
    """
    treedef = jax.tree.structure(trees[0])
    leaves = [treedef.flatten_up_to(tree) for tree in trees]
    noise_layout = (
        leaves[0]
        if draws == 1
        else [jax.ShapeDtypeStruct((draws, *jnp.shape(x)), jnp.result_type(x)) for x in leaves[0]]
    )
    # Once per compute dtype, here rather than in the formula, which may be traced inside the
    # noise generator's platform branches.
    cast = {
        cdt: tuple(_cast(c, cdt) for c in coefficients)
        for cdt in dict.fromkeys(_compute_dtype(x.dtype) for x in leaves[0])
    }

    # The formula is traced once per compute dtype and leaf shape, not once per leaf: a jitted
    # call per leaf, which XLA inlines (a many-leaf model's trace and lowering were dominated by
    # the formula's operations, each a jnp dispatch).
    traced = {cdt: jax.jit(functools.partial(_apply_formula, formula, cdt)) for cdt in cast}

    def leaf(i: int, noise: jax.Array | tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
        args = [tree_leaves[i] for tree_leaves in leaves]
        cdt = _compute_dtype(args[0].dtype)
        return traced[cdt](cast[cdt], noise, *args)

    outputs = _noise.map_with_noise(key, noise_layout, leaf, draws=draws)
    return tuple(jax.tree.unflatten(treedef, list(column)) for column in zip(*outputs, strict=True))


def _apply_formula(
    formula: Callable[..., Any], cdt: Any, coefficients: tuple, noise: jax.Array, *leaves: jax.Array
) -> Any:
    return formula(lambda x: _cast(x, cdt), coefficients, noise, *leaves)


class Diagnose(NamedTuple):
    """What `SampleResult.diagnose()` needs of a sampler, derived once from its one-step rule.

    Attributes:
        kinetic: `kinetic(hyper) -> E[mᵀm/(σ²d)] / T`, the stationary kinetic temperature of the
            one-step rule relative to T when the gradient noise is what the sampler assumes
            (none, or β·T² per coordinate where it takes a `beta`), in the limit of low
            curvature (the corrections are O(ε²·curvature/σ²)); checked against the exact
            Gaussian moments in the tests. None for a rule without momenta.
        noise_ratio: `noise_ratio(hyper, v, fields) -> R`, per coordinate, the minibatch
            gradient-noise variance a step adds (`v`: the variance of the minibatch gradient of
            the log posterior, per coordinate) over the noise the step injects; `fields` maps
            the rule's state fields to arrays (chain, coordinate) of the final state.
        noise_needs: the hyperparameters `noise_ratio` reads (`beta` is read when present).
        thermostat: the kinetic temperature is held at T by construction (SGNHT).
    """

    kinetic: Callable[[Mapping[str, float]], float] | None
    noise_ratio: Callable[[Mapping[str, float], Any, Mapping[str, Any]], Any]
    noise_needs: tuple[str, ...]
    thermostat: bool = False


def _explicit_friction_kinetic(h: Mapping[str, float]) -> float:
    """m' = a m + √q ξ with no force, a = 1 − εα/σ², and q = 2εαT once the modelled gradient
    noise (ε²βT²) is added back to the injected εT(2α − εβT): Var m = q / (1 − a²), so
    E[mᵀm/(σ²d)] / T = 1 / (1 − εα/(2σ²)): 1.11 at εα/σ² = 0.2, the discretisation."""
    return 1.0 / (1.0 - h["lr"] * h["alpha"] / (2.0 * h["sigma"] ** 2))


def _exact_ou_kinetic(h: Mapping[str, float]) -> float:
    """m ← e^{−γε} m + σ√(T(1 − e^{−2γε})) ξ keeps N(0, σ²T) exactly (BAOA: exactly, at any
    curvature, on Gaussians; UBU: up to O(ε²·curvature/σ²))."""
    return 1.0


def _r_sghmc(h: Mapping[str, float], v: Any, fields: Mapping[str, Any]) -> Any:
    """ε(V − βT²) / (2αT): the gradient noise ε²V against the injected εT(2α − εβT) + ε²βT²."""
    return h["lr"] * (v - h.get("beta", 0.0) * h["temperature"] ** 2) / (2 * h["alpha"] * h["temperature"])


def _r_sgld(h: Mapping[str, float], v: Any, fields: Mapping[str, Any]) -> Any:
    """ε(V − βT²) / (2T)."""
    return h["lr"] * (v - h.get("beta", 0.0) * h["temperature"] ** 2) / (2 * h["temperature"])


def _preconditioner(h: Mapping[str, float], fields: Mapping[str, Any]) -> Any:
    """G = 1/(λ + √v) of the final state, the mean over chains."""
    return (1.0 / (h["eps"] + fields["v"] ** 0.5)).mean(axis=0)


def _r_psgld(h: Mapping[str, float], v: Any, fields: Mapping[str, Any]) -> Any:
    """εGV / (2T)."""
    return h["lr"] * _preconditioner(h, fields) * v / (2 * h["temperature"])


def _r_psghmc(h: Mapping[str, float], v: Any, fields: Mapping[str, Any]) -> Any:
    """εGV / (2αT)."""
    return h["lr"] * _preconditioner(h, fields) * v / (2 * h["alpha"] * h["temperature"])


def _r_exact_ou(h: Mapping[str, float], v: Any, fields: Mapping[str, Any]) -> Any:
    """ε²V / (σ²T(1 − e^{−2γε})): the kick's gradient noise against the exact OU step's."""
    gamma = h["alpha"] / h["sigma"] ** 2
    return h["lr"] ** 2 * v / (h["sigma"] ** 2 * h["temperature"] * -math.expm1(-2 * gamma * h["lr"]))


class Rule(NamedTuple):
    """A sampler's update rule as both of its faces use it.

    Attributes:
        name: the sampler's name (its optax face's).
        fields: the state it carries besides the params and the step count.
        init: `init(params, key, settings) -> {field: value}`, the initial state from the
            hyperparameters at step 0 and the initial-state settings (e.g. `momenta`); `key` is
            None when `draws_at_init` is False.
        step: `step(fields, grad_log_posterior, key, hyper) -> (params increment, new fields)`,
            one step from the gradient at the current params with the hyperparameters' values
            at this step.
        draws_at_init: whether `init` draws from a key (the optax face then splits its key).
        hyperparameters: its hyperparameter table (`Hyperparameter` rows), in its signature's
            order: the rules both faces check (when built, and when traced with concrete
            values) and the defaults both faces' signatures take (`defaults`).
        noise_rule: "alpha" when it needs 2α − εβT >= 0, "two" for 2 − εβT >= 0, else None.
        explicit_friction: whether its momentum decays by the factor 1 − εα/σ² (an explicit
            friction step, stable only for εα/σ² < 2, which is checked).
        integrate: for a sampler that takes more than one gradient per step, `integrate(params,
            fields, gradient, key, hyper) -> (new params, new fields, value, aux)`, with
            `gradient(params) -> (value, aux, grad_log_posterior)` on the step's minibatch at
            any params; it replaces `step` in the functional face, and such a sampler has no
            optax face (an optax update receives one gradient, at the current params).
        diagnose: what `SampleResult.diagnose()` needs (`Diagnose`); None: its rows say the
            rule gives no formula.
    """

    name: str
    fields: tuple[str, ...]
    init: Callable[[ArrayTree, jax.Array | None, Mapping[str, Any]], dict[str, Any]]
    step: Callable[..., tuple[ArrayTree, dict[str, Any]]] | None
    draws_at_init: bool
    hyperparameters: tuple[Hyperparameter, ...]
    noise_rule: str | None = None
    explicit_friction: bool = False
    integrate: Callable[..., tuple[ArrayTree, dict[str, Any], jax.Array, Any]] | None = None
    diagnose: Diagnose | None = None

    @property
    def defaults(self) -> SimpleNamespace:
        """The table's defaults by name, `rule.defaults.alpha`: what the faces' signatures say
        (the step size, which has none, is left out)."""
        return SimpleNamespace(**{h.name: h.default for h in self.hyperparameters if h.default is not None})


def rules() -> dict[str, Rule]:
    """Every sampler's rule by name: the `Rule` of each, defined in this module.

    The registry every other place finds samplers in: a rule `foo` has its optax face
    `sghmc_jax.foo` (in transforms.py) and its functional face `sghmc_jax.sgmcmc.foo`, and
    `SampleResult.diagnose()` looks its formulas up here.

    Example:
        >>> from sghmc_jax import kernels
        >>> kernels.rules()["sghmc"] is kernels.SGHMC
        True
    """
    return {r.name: r for r in globals().values() if isinstance(r, Rule)}


# ---- initial state ---------------------------------------------------------------------------


def init_momenta(
    key: jax.Array, params: ArrayTree, sigma: jax.typing.ArrayLike, temperature: jax.typing.ArrayLike
) -> ArrayTree:
    """Draws momenta from the target's momentum marginal, N(0, sigma² · temperature).

    This is the stationary distribution of the momenta under p_T(θ, m), so a chain started from a
    posterior draw of θ starts in equilibrium. It is N(0, 1) at sigma = temperature = 1 (what
    posteriors draws) and zero at temperature 0.

    Args:
        key: a typed PRNG key.
        params: the pytree of parameters the momenta belong to.
        sigma: momentum scale σ > 0.
        temperature: temperature T >= 0.

    Returns:
        Momenta shaped and typed like `params`.
    """
    scale = jnp.asarray(sigma) * jnp.sqrt(jnp.asarray(temperature))

    def leaf(p: jax.Array, noise: jax.Array) -> jax.Array:
        cdt = _compute_dtype(p.dtype)
        return (scale.astype(cdt) * noise.astype(cdt)).astype(p.dtype)

    params = jax.tree.map(jnp.asarray, params)
    return jax.tree.map(leaf, params, normal_like(key, params))


def resolve_momenta(
    momenta: ArrayTree | float | None,
    params: ArrayTree,
    key: jax.Array | None,
    sigma: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike,
) -> ArrayTree:
    """Initial momenta: drawn from N(0, σ²T) when None, filled when a scalar, checked when a tree."""
    if momenta is None:
        if key is None:
            raise TypeError(
                "`key` is required to draw the initial momenta (momenta=None); pass a key, or "
                "momenta=0.0 (or a pytree) to start from given momenta"
            )
        return init_momenta(key, params, sigma, temperature)
    _checks.check_initial_momenta(momenta)
    if _checks.is_scalar_like(momenta):
        return jax.tree.map(lambda p: jnp.full(jnp.shape(p), momenta, jnp.result_type(p)), params)
    _checks.check_tree_like("momenta", momenta, "params", params)
    # A copy: the state owns its buffers (a donated update must not delete the caller's arrays).
    return jax.tree.map(lambda m, p: jnp.array(m, jnp.result_type(p), copy=True), momenta, params)


def at_temperature_factor(hyper: Mapping[str, Any], factor: Any) -> dict[str, Any]:
    """A rule's hyperparameters for the same run at temperature T·factor (a replica of a ladder):
    the temperature times `factor`, and the gradient-noise estimate β, which stands for a noise
    variance of β·T² per coordinate (the minibatch gradient's, the same at every temperature),
    divided by factor² so that it stands for the same variance."""
    out = dict(hyper)
    out["temperature"] = out["temperature"] * factor
    if "beta" in out:
        out["beta"] = out["beta"] / (factor * factor)
    return out


def temper(fields: Mapping[str, Any], ratio: jax.typing.ArrayLike, hyper: Mapping[str, Any]) -> dict[str, Any]:
    """A rule's state carried from temperature T to T·ratio with its stationary law (replica
    exchange, when a replica changes rung).

    The momenta's law N(0, σ²T) becomes N(0, σ²T·ratio) by m → √ratio·m, and the SGNHT
    thermostat's N(α, σ²T/d) by ξ → α + √ratio·(ξ − α); the preconditioner's V (a running mean of
    squared gradients, the same at every temperature) is kept. When two replicas exchange
    temperatures T_i and T_j these maps scale one by √(T_j/T_i) and the other by √(T_i/T_j), so
    their Jacobians cancel and the kinetic energies over temperature are unchanged: the swap's
    acceptance is that of the positions alone. Where `ratio` is 1 the state is returned as is,
    bit for bit.

    Args:
        fields: the rule's state fields by name (`Rule.fields`).
        ratio: the new temperature over the old, > 0.
        hyper: the hyperparameters' values at this step (`alpha`, for ξ).

    Returns:
        The fields at the new temperature, in their dtypes.
    """
    ratio = jnp.asarray(ratio)
    same = ratio == 1

    def scaled(x: jax.Array, centre: Any = 0.0) -> jax.Array:
        cdt = _compute_dtype(x.dtype)
        new = centre + jnp.sqrt(ratio).astype(cdt) * (x.astype(cdt) - centre)
        return jnp.where(same, x, new.astype(x.dtype))

    out = dict(fields)
    if "momenta" in out:
        out["momenta"] = jax.tree.map(scaled, out["momenta"])
    if "xi" in out:
        out["xi"] = scaled(out["xi"], jnp.asarray(hyper["alpha"]).astype(_compute_dtype(out["xi"].dtype)))
    return out


def resolve_preconditioner(initial_scale: ArrayTree | float, params: ArrayTree) -> ArrayTree:
    """The initial RMS accumulator V: filled when a scalar, checked and copied when a tree."""
    if _checks.is_scalar_like(initial_scale):
        return jax.tree.map(lambda p: jnp.full(jnp.shape(p), initial_scale, jnp.result_type(p)), params)
    _checks.check_tree_like("initial_scale", initial_scale, "params", params)
    return jax.tree.map(lambda v, p: jnp.array(v, jnp.result_type(p), copy=True), initial_scale, params)


def resolve_xi(xi: jax.typing.ArrayLike | None, alpha: jax.typing.ArrayLike, params: ArrayTree) -> jax.Array:
    """The initial SGNHT thermostat: `alpha` when None, a scalar in the params' highest dtype
    (at least float32)."""
    dtype = jnp.promote_types(jnp.result_type(*[jnp.result_type(p) for p in jax.tree.leaves(params)]), jnp.float32)
    return jnp.asarray(alpha if xi is None else xi, dtype)


# The hyperparameter rows the rules share: (name, rule, takes a schedule, default).
_LR = Hyperparameter("lr", _checks.POSITIVE, True)
_ALPHA = Hyperparameter("alpha", _checks.NON_NEGATIVE, True, 0.01)
_BETA = Hyperparameter("beta", _checks.NON_NEGATIVE, True, 0.0)
_SIGMA = Hyperparameter("sigma", _checks.POSITIVE, False, 1.0)
_TEMPERATURE = Hyperparameter("temperature", _checks.NON_NEGATIVE, True, 1.0)
_DECAY = Hyperparameter("decay", _checks.UNIT, True, 0.99)
_EPS = Hyperparameter("eps", _checks.POSITIVE, False, 1e-5)


def _with_momenta(params: ArrayTree, key: jax.Array | None, s: Mapping[str, Any]) -> dict[str, Any]:
    return {"momenta": resolve_momenta(s["momenta"], params, key, s["sigma"], s["temperature"])}


# ---- the rules -------------------------------------------------------------------------------


def sghmc_step(
    momenta: ArrayTree,
    grad_log_posterior: ArrayTree,
    key: jax.Array,
    lr: jax.typing.ArrayLike,
    alpha: jax.typing.ArrayLike,
    beta: jax.typing.ArrayLike,
    sigma: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike,
) -> tuple[ArrayTree, ArrayTree]:
    r"""One SGHMC step (Chen et al. 2014, Algorithm 2 order): momentum first, then position.

    .. math::

        m_{t+1} &= m_t + \epsilon g_t - \epsilon \sigma^{-2} \alpha m_t
                   + \sqrt{\epsilon T (2\alpha - \epsilon \beta T)}\, \xi_t \\
        \theta_{t+1} &= \theta_t + \epsilon \sigma^{-2} m_{t+1}

    with g_t = ∇ log p(θ_t) and ξ_t ~ N(0, I). The position moves with the NEW momentum
    (semi-implicit Euler), which is stable for any α >= 0 up to ε·sqrt(curvature)/σ ≈ 2; the
    simultaneous form θ_{t+1} = θ_t + ε σ⁻² m_t diverges whenever ε·curvature > α.
    It targets p_T(θ, m) ∝ exp((log p(θ) − mᵀm / (2σ²)) / T).

    No Python branching on hyperparameter values, so they may be traced. The rule
    2α − εβT >= 0 is checked by the faces when values are concrete; a traced value that breaks it
    makes the noise scale (and so the momenta) NaN rather than silently wrong.

    Args:
        momenta: current momenta m_t, a pytree like the params.
        grad_log_posterior: g_t, the gradient of the log posterior (not of a loss) at θ_t.
        key: a typed PRNG key for this step, used once (noise layout: see `normal_like`).
        lr: step size ε > 0.
        alpha: friction α >= 0.
        beta: gradient-noise variance estimate β >= 0.
        sigma: momentum scale σ > 0.
        temperature: temperature T >= 0.

    Returns:
        `(params_increment, new_momenta)`: θ_{t+1} − θ_t = ε σ⁻² m_{t+1} and m_{t+1}, both in the
        momenta's dtypes.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.kernels import sghmc_step
        >>> inc, m = sghmc_step(jnp.zeros(2), jnp.ones(2), jax.random.key(0), 0.1, 0.01, 0.0,
        ...                     1.0, 0.0)
        >>> inc
        Array([0.01, 0.01], dtype=float32)

    References:
        Chen, Fox & Guestrin, `Stochastic Gradient Hamiltonian Monte Carlo
        <https://arxiv.org/abs/1402.4102>`_, ICML 2014.
    """

    _, coefficients = _coefficients(_sghmc_coefficients(None), lr, alpha, beta, sigma, temperature)
    update, new_momenta = _map_leaves(_sghmc_leaf, key, coefficients, momenta, grad_log_posterior)
    return update, new_momenta


def _sghmc_coefficients(friction: jax.Array | None) -> Callable[..., tuple[jax.Array, ...]]:
    """SGHMC's scalars, with friction α (None) or a given friction (SGNHT's thermostat ξ); the
    injected noise is α's either way."""

    def derive(lr, alpha, beta, sigma, temperature):
        drift = lr / (sigma * sigma)
        decay = 1 - _unfused(drift * (alpha if friction is None else friction))
        noise_std = jnp.sqrt(lr * temperature * (2 * alpha - _unfused(lr * beta * temperature)))
        return decay, lr, noise_std, drift

    return derive


def _sghmc_leaf(up, c, noise, m, g):
    """m ← decay·m + ε g + noise_std·ξ (stored in m's dtype); the increment ε σ⁻² m."""
    decay, lr, noise_std, drift = c
    m_new = _cast(decay * up(m) + lr * up(g) + noise_std * up(noise), m.dtype)
    return _cast(drift * up(m_new), m.dtype), m_new


def _sghmc(fields, grad, key, h):
    increment, momenta = sghmc_step(
        fields["momenta"], grad, key, h["lr"], h["alpha"], h["beta"], h["sigma"], h["temperature"]
    )
    return increment, {"momenta": momenta}


SGHMC = Rule(
    "sghmc",
    ("momenta",),
    _with_momenta,
    _sghmc,
    draws_at_init=True,
    hyperparameters=(_LR, _ALPHA, _BETA, _SIGMA, _TEMPERATURE),
    noise_rule="alpha",
    explicit_friction=True,
    diagnose=Diagnose(_explicit_friction_kinetic, _r_sghmc, ("lr", "alpha", "temperature")),
)


def sgld_step(
    grad_log_posterior: ArrayTree,
    key: jax.Array,
    lr: jax.typing.ArrayLike,
    beta: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike,
) -> ArrayTree:
    r"""One SGLD step (Welling & Teh 2011) in posteriors' parameterisation.

    .. math::

        \theta_{t+1} = \theta_t + \epsilon g_t + \sqrt{\epsilon T (2 - \epsilon \beta T)}\, \xi_t

    with g_t = ∇ log p(θ_t) and ξ_t ~ N(0, I). It targets p_T(θ) ∝ exp(log p(θ) / T) as ε → 0;
    at T = 0 it is gradient ascent with step ε. β >= 0 estimates the gradient noise's variance
    (in units where the injected variance is reduced by ε²βT²); needs 2 − εβT >= 0.

    Args:
        grad_log_posterior: g_t, the gradient of the log posterior (not of a loss) at θ_t.
        key: a typed PRNG key for this step, used once (split into one key per leaf).
        lr: step size ε > 0.
        beta: gradient-noise variance estimate β >= 0.
        temperature: temperature T >= 0.

    Returns:
        θ_{t+1} − θ_t, in the gradient's dtypes.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.kernels import sgld_step
        >>> sgld_step(jnp.ones(2), jax.random.key(0), 0.1, 0.0, 0.0)
        Array([0.1, 0.1], dtype=float32)

    References:
        Welling & Teh, `Bayesian Learning via Stochastic Gradient Langevin Dynamics
        <https://www.stats.ox.ac.uk/~teh/research/compstats/WelTeh2011a.pdf>`_, ICML 2011.
    """

    def derive(lr, beta, temperature):
        return lr, jnp.sqrt(lr * temperature * (2 - _unfused(lr * beta * temperature)))

    _, coefficients = _coefficients(derive, lr, beta, temperature)

    def leaf(up, c, noise, g):
        lr, noise_std = c
        return (_cast(lr * up(g) + noise_std * up(noise), g.dtype),)

    return _map_leaves(leaf, key, coefficients, grad_log_posterior)[0]


def _sgld(fields, grad, key, h):
    return sgld_step(grad, key, h["lr"], h["beta"], h["temperature"]), {}


SGLD = Rule(
    "sgld",
    (),
    lambda params, key, s: {},
    _sgld,
    draws_at_init=False,
    hyperparameters=(_LR, _BETA, _TEMPERATURE),
    noise_rule="two",
    diagnose=Diagnose(None, _r_sgld, ("lr", "temperature")),
)


def sgnht_step(
    momenta: ArrayTree,
    xi: jax.typing.ArrayLike,
    grad_log_posterior: ArrayTree,
    key: jax.Array,
    lr: jax.typing.ArrayLike,
    alpha: jax.typing.ArrayLike,
    beta: jax.typing.ArrayLike,
    sigma: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike,
) -> tuple[ArrayTree, ArrayTree, jax.Array]:
    r"""One SGNHT step (Ding et al. 2014): SGHMC whose friction ξ is a thermostat.

    .. math::

        m_{t+1} &= m_t + \epsilon g_t - \epsilon \sigma^{-2} \xi_t m_t
                   + \sqrt{\epsilon T (2\alpha - \epsilon \beta T)}\, \zeta_t \\
        \theta_{t+1} &= \theta_t + \epsilon \sigma^{-2} m_{t+1} \\
        \xi_{t+1} &= \xi_t + \epsilon \left(\frac{m_{t+1}^\top m_{t+1}}{\sigma^2 d} - T\right)

    with g_t = ∇ log p(θ_t), ζ_t ~ N(0, I) and d the total number of parameters. The order is
    Ding et al.'s Algorithm 1 and our SGHMC's: momentum, then position and thermostat with the
    NEW momentum (posteriors moves both with the old one, the unstable simultaneous form).
    Its continuous limit leaves p_T(θ, m, ξ) ∝ exp((log p(θ) − mᵀm/(2σ²)) / T) · N(ξ; α, σ²T/d)
    invariant; α sets the injected noise, ξ the friction actually applied. Since
    ξ_N − ξ_0 = ε Σ_t (K_{t+1} − T), the time average of the kinetic temperature
    K = mᵀm/(σ²d) is exactly T + (ξ_N − ξ_0)/(εN): the thermostat absorbs noise it was not told
    about (unmodelled gradient noise) by raising ξ, at the price of a first-order bias in θ.

    Args:
        momenta: current momenta m_t, a pytree like the params.
        xi: the thermostat ξ_t, a scalar (any sign).
        grad_log_posterior: g_t, the gradient of the log posterior at θ_t.
        key: a typed PRNG key for this step, used once.
        lr: step size ε > 0.
        alpha: α >= 0, the friction whose noise is injected (and ξ's stationary mean).
        beta: gradient-noise variance estimate β >= 0; needs 2α − εβT >= 0.
        sigma: momentum scale σ > 0.
        temperature: temperature T >= 0.

    Returns:
        `(params_increment, new_momenta, new_xi)`: ε σ⁻² m_{t+1} and m_{t+1} in the momenta's
        dtypes, ξ_{t+1} in ξ's dtype (at least float32).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.kernels import sgnht_step
        >>> inc, m, xi = sgnht_step(jnp.zeros(2), 0.5, jnp.ones(2), jax.random.key(0), 0.1, 0.5,
        ...                         0.0, 1.0, 0.0)
        >>> inc, xi
        (Array([0.01, 0.01], dtype=float32), Array(0.501, dtype=float32))

    References:
        Ding, Fang, Babbush, Chen, Skeel & Neven, `Bayesian Sampling Using Stochastic Gradient
        Thermostats <https://proceedings.neurips.cc/paper/2014/file/21fe5b8ba755eeaece7a450849876228-Paper.pdf>`_,
        NeurIPS 2014.
    """

    xi = jnp.asarray(xi)
    (_, _, _, sigma, temperature), coefficients = _coefficients(
        _sghmc_coefficients(xi), lr, alpha, beta, sigma, temperature
    )
    increment, new_momenta = _map_leaves(_sghmc_leaf, key, coefficients, momenta, grad_log_posterior)
    # The kinetic temperature of the momenta as stored, so users recomputing it from the state
    # see exactly what drove the thermostat.
    xdt = _compute_dtype(xi.dtype)
    stored = jax.tree.leaves(new_momenta)
    dim = sum(m.size for m in stored)
    sumsq = sum(jnp.sum(jnp.square(m.astype(xdt))) for m in stored)
    # The barrier keeps XLA from turning the division by a constant into a multiplication by
    # its reciprocal (what it may do when σ is a Python float but not when it is traced).
    kinetic = sumsq / _unfused(sigma.astype(xdt) * sigma.astype(xdt) * dim)
    lr = coefficients[1]
    new_xi = xi.astype(xdt) + _unfused(lr.astype(xdt) * (kinetic - temperature.astype(xdt)))
    return increment, new_momenta, new_xi.astype(xi.dtype)


def _sgnht_init(params, key, s):
    return _with_momenta(params, key, s) | {"xi": resolve_xi(s["xi"], s["alpha"], params)}


def _sgnht(fields, grad, key, h):
    increment, momenta, xi = sgnht_step(
        fields["momenta"],
        fields["xi"],
        grad,
        key,
        h["lr"],
        h["alpha"],
        h["beta"],
        h["sigma"],
        h["temperature"],
    )
    return increment, {"momenta": momenta, "xi": xi}


SGNHT = Rule(
    "sgnht",
    ("momenta", "xi"),
    _sgnht_init,
    _sgnht,
    draws_at_init=True,
    hyperparameters=(_LR, _ALPHA, _BETA, _SIGMA, _TEMPERATURE),
    noise_rule="alpha",
    explicit_friction=True,
    # The time average of mᵀm/(σ²d) is exactly T + (ξ_N − ξ_0)/(εN) (see sgnht_step).
    diagnose=Diagnose(lambda h: 1.0, _r_sghmc, ("lr", "alpha", "temperature"), thermostat=True),
)


def baoa_step(
    momenta: ArrayTree,
    grad_log_posterior: ArrayTree,
    key: jax.Array,
    lr: jax.typing.ArrayLike,
    alpha: jax.typing.ArrayLike,
    sigma: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike,
) -> tuple[ArrayTree, ArrayTree]:
    r"""One BAOA step (Leimkuhler & Matthews): kick, half drift, exact friction, half drift.

    .. math::

        m' &= m_t + \epsilon g_t && \text{(B)} \\
        \theta' &= \theta_t + \tfrac{\epsilon}{2} \sigma^{-2} m' && \text{(A)} \\
        m_{t+1} &= e^{-\gamma \epsilon} m' + \sigma \sqrt{T (1 - e^{-2 \gamma \epsilon})}\, \xi_t
            && \text{(O)} \\
        \theta_{t+1} &= \theta' + \tfrac{\epsilon}{2} \sigma^{-2} m_{t+1} && \text{(A)}

    with g_t = ∇ log p(θ_t), γ = α/σ² and ξ_t ~ N(0, I). The gradient is taken once, at θ_t
    (the B step opens the step), so one optax update per gradient is exactly one BAOA step.
    O solves the friction-and-noise part dm = −γ m dt + σ√(2γT) dW exactly, so the step is
    stable for any friction α >= 0 (at α → ∞ it redraws m ~ N(0, σ²T)) and noise-free at
    T = 0. It is BAOAB with the trailing half kick merged into the next step's kick; on Gaussian
    targets its stationary θ law is exact for every stable step size (ε·sqrt(curvature)/σ < 2).

    Args:
        momenta: current momenta m_t, a pytree like the params.
        grad_log_posterior: g_t, the gradient of the log posterior at θ_t.
        key: a typed PRNG key for this step, used once.
        lr: step size ε > 0.
        alpha: friction α >= 0.
        sigma: momentum scale σ > 0.
        temperature: temperature T >= 0.

    Returns:
        `(params_increment, new_momenta)`: θ_{t+1} − θ_t = ε σ⁻² (m' + m_{t+1}) / 2 and m_{t+1},
        in the momenta's dtypes.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.kernels import baoa_step
        >>> inc, m = baoa_step(jnp.zeros(2), jnp.ones(2), jax.random.key(0), 0.1, 0.0, 1.0, 0.0)
        >>> inc
        Array([0.01, 0.01], dtype=float32)

    References:
        Leimkuhler & Matthews, `Rational Construction of Stochastic Numerical Methods for
        Molecular Sampling <https://arxiv.org/abs/1203.5428>`_, AMRX 2013; and
        `Molecular Dynamics <https://doi.org/10.1007/978-3-319-16375-8>`_, Springer 2015.
    """

    def derive(lr, alpha, sigma, temperature):
        half_drift = lr / (2 * sigma * sigma)
        gamma_lr = lr * alpha / (sigma * sigma)
        # expm1: 1 − e^{−2γε} keeps its digits when γε is small (α = 0.01 is the default).
        noise_std = sigma * jnp.sqrt(temperature * -jnp.expm1(-2 * gamma_lr))
        return lr, half_drift, jnp.exp(-gamma_lr), noise_std

    _, coefficients = _coefficients(derive, lr, alpha, sigma, temperature)

    def leaf(up, c, noise, m, g):
        lr, half_drift, decay, noise_std = c
        m_kick = up(m) + lr * up(g)
        m_new = _cast(decay * m_kick + noise_std * up(noise), m.dtype)
        return _cast(half_drift * (m_kick + up(m_new)), m.dtype), m_new

    update, new_momenta = _map_leaves(leaf, key, coefficients, momenta, grad_log_posterior)
    return update, new_momenta


def _baoa(fields, grad, key, h):
    increment, momenta = baoa_step(fields["momenta"], grad, key, h["lr"], h["alpha"], h["sigma"], h["temperature"])
    return increment, {"momenta": momenta}


BAOA = Rule(
    "baoa",
    ("momenta",),
    _with_momenta,
    _baoa,
    draws_at_init=True,
    hyperparameters=(_LR, _ALPHA, _SIGMA, _TEMPERATURE),
    diagnose=Diagnose(_exact_ou_kinetic, _r_exact_ou, ("lr", "alpha", "sigma", "temperature")),
)


def _series(coefficients: tuple[float, ...], a: jax.Array) -> jax.Array:
    """Σ_j coefficients[j]·a^j by Horner's rule."""
    out = jnp.zeros_like(a) + coefficients[-1]
    for c in coefficients[-2::-1]:
        out = out * a + c
    return out


# Maclaurin coefficients (22 terms: below 1e-16 relative for a < 1) of the OU half-step's
# scaled functions, a = γτ: φ₁(a) = (1 − e^{−a})/a, Ŝ(a) = S(a)/a³ with
# S(a) = 2a − 4(1 − e^{−a}) + (1 − e^{−2a}), and D̂(a) = D(a)/a⁴ with
# D(a) = S(a)(1 − e^{−2a}) − (1 − e^{−a})⁴. Their closed forms cancel catastrophically for small a
# (S is a difference of O(a) terms equal to O(a³); in float32 it is garbage below a ≈ 1e-3).
_PHI1 = tuple((-1) ** j / math.factorial(j + 1) for j in range(22))
_S_HAT = tuple((-1) ** k * (4 - 2**k) / math.factorial(k) for k in range(3, 25))
_D_HAT = tuple((-1) ** k * (8 + (k - 4) * 2**k) / math.factorial(k) for k in range(4, 26))


def ou_coefficients(
    tau: jax.Array, alpha: jax.Array, sigma: jax.Array, temperature: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
    r"""The exact solution of the force-free part of underdamped Langevin over a time τ.

    Over τ, dθ = σ⁻² m dt, dm = −γ m dt + σ√(2γT) dW (γ = α/σ²) moves (θ, m) to

    .. math::

        \theta + \text{drift}\, m + L_{11} \zeta_1, \qquad
        e^{-\gamma\tau} m + L_{21} \zeta_1 + L_{22} \zeta_2

    with ζ₁, ζ₂ ~ N(0, 1) independent per coordinate and [[L₁₁, 0], [L₂₁, L₂₂]] the Cholesky
    factor of the increment's covariance; returns (drift, e^{−γτ}, L₁₁, L₂₁, L₂₂). Below γτ = 1
    the factors come from Maclaurin series (exact to rounding in float32 at any γτ, including
    γ = 0: free flight, no noise), above from the closed forms; both branches are computed on
    clamped arguments and selected before any square root, so a traced γτ gives no NaN.
    """
    gamma = alpha / (sigma * sigma)
    a = gamma * tau
    small = a < 1
    a_s = jnp.where(small, a, 0.0)
    a_l = jnp.where(small, 1.0, a)
    em1, em2 = jnp.expm1(-a_l), jnp.expm1(-2 * a_l)
    s_closed = 2 * a_l + 4 * em1 - em2
    d_closed = -s_closed * em2 - em1**4
    phi1 = jnp.where(small, _series(_PHI1, a_s), -em1 / a_l)
    s_hat, d_hat = _series(_S_HAT, a_s), _series(_D_HAT, a_s)
    root_t = jnp.sqrt(temperature)
    # Small a: L11 = τ√(T a Ŝ)/σ, L21 = σ√(T a) φ₁²/√Ŝ, L22 = σ√(T a)√(D̂/Ŝ); large a: the same
    # written with S and D (no a⁴, which overflows float32 for a huge friction).
    l11 = jnp.where(small, tau * jnp.sqrt(a_s * s_hat), tau * jnp.sqrt(s_closed) / a_l) * root_t / sigma
    l21 = (
        sigma * root_t * jnp.where(small, jnp.sqrt(a_s) * phi1 * phi1 / jnp.sqrt(s_hat), em1 * em1 / jnp.sqrt(s_closed))
    )
    l22 = sigma * root_t * jnp.where(small, jnp.sqrt(a_s * d_hat / s_hat), jnp.sqrt(d_closed / s_closed))
    drift = tau * phi1 / (sigma * sigma)
    return drift, jnp.exp(-a), l11, l21, l22


def ubu_step(
    momenta: ArrayTree,
    grad_log_posterior: ArrayTree,
    key: jax.Array,
    lr: jax.typing.ArrayLike,
    alpha: jax.typing.ArrayLike,
    sigma: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike,
) -> tuple[ArrayTree, ArrayTree]:
    r"""One UBU step (Sanz-Serna & Zygalakis 2021), observed at its half-step positions.

    UBU splits underdamped Langevin into U, the force-free part solved exactly (an
    Ornstein–Uhlenbeck process in (θ, m) with correlated Gaussian increments), and B, the
    gradient kick: U(ε/2) B(ε) U(ε/2), one gradient per step, second order. Chained steps merge
    the two half U's between kicks into one exact U(ε), so with the params stored at the
    half-step positions θ' (where UBU takes its gradients) one step is

    .. math::

        m' &= m_t + \epsilon g_t && \text{(B, } g_t = \nabla \log p(\theta'_t)\text{)} \\
        \theta'_{t+1} &= \theta'_t + \epsilon \varphi_1(\gamma\epsilon) \sigma^{-2} m'
            + L_{11} \zeta_1 && \text{(U)} \\
        m_{t+1} &= e^{-\gamma\epsilon} m' + L_{21} \zeta_1 + L_{22} \zeta_2

    with γ = α/σ², φ₁(a) = (1 − e^{−a})/a and (L, ζ) the exact increment of `ou_coefficients`.
    This is exactly the UBU chain seen at θ' (the first half U of the first step is the only
    thing missing, immaterial after burn-in). Stable for ε·sqrt(curvature)/σ < 2 at any
    friction; on a Gaussian target with curvature c its stationary θ variance is
    (T/c)(1 + ω²ε²/12 + O(ε⁴)), ω² = c/σ² (second order, not exact: BAOA is exact there). With
    a step-size schedule the U after step t's kick uses ε_t for both of its halves.

    Args:
        momenta: current momenta m_t, a pytree like the params.
        grad_log_posterior: g_t, the gradient of the log posterior at the stored params θ'_t.
        key: a typed PRNG key for this step, used once (two normals per element: the layout
            of `normal_like` over leaves of shape (2,) + the leaf's shape).
        lr: step size ε > 0.
        alpha: friction α >= 0.
        sigma: momentum scale σ > 0.
        temperature: temperature T >= 0.

    Returns:
        `(params_increment, new_momenta)`: θ'_{t+1} − θ'_t and m_{t+1}, in the momenta's dtypes.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.kernels import ubu_step
        >>> inc, m = ubu_step(jnp.zeros(2), jnp.ones(2), jax.random.key(0), 0.1, 0.0, 1.0, 0.0)
        >>> inc  # no friction, no noise: free flight ε·m' = 0.1·0.1
        Array([0.01, 0.01], dtype=float32)

    References:
        Sanz-Serna & Zygalakis, `Wasserstein distance estimates for the distributions of
        numerical approximations to ergodic stochastic differential equations
        <https://jmlr.org/papers/v22/21-0453.html>`_, JMLR 2021.
        Paulin, Whalley, Chada & Leimkuhler, `Sampling from Bayesian Neural Network Posteriors
        with Symmetric Minibatch Splitting Langevin Dynamics <https://arxiv.org/abs/2410.19780>`_,
        AISTATS 2025.
    """

    def derive(lr, alpha, sigma, temperature):
        return (lr, *ou_coefficients(lr, alpha, sigma, temperature))

    _, coefficients = _coefficients(derive, lr, alpha, sigma, temperature)

    def leaf(up, c, noise, m, g):
        lr, drift, decay, l11, l21, l22 = c
        z1, z2 = up(noise[0]), up(noise[1])
        m_kick = up(m) + lr * up(g)
        m_new = _cast(decay * m_kick + l21 * z1 + l22 * z2, m.dtype)
        return _cast(drift * m_kick + l11 * z1, m.dtype), m_new

    update, new_momenta = _map_leaves(leaf, key, coefficients, momenta, grad_log_posterior, draws=2)
    return update, new_momenta


def _ubu(fields, grad, key, h):
    increment, momenta = ubu_step(fields["momenta"], grad, key, h["lr"], h["alpha"], h["sigma"], h["temperature"])
    return increment, {"momenta": momenta}


UBU = Rule(
    "ubu",
    ("momenta",),
    _with_momenta,
    _ubu,
    draws_at_init=True,
    # α = 1 by default (a friction rate of 1, as in the UBU literature; its U step is exact at any α).
    hyperparameters=(_LR, _ALPHA._replace(default=1.0), _SIGMA, _TEMPERATURE),
    diagnose=Diagnose(_exact_ou_kinetic, _r_exact_ou, ("lr", "alpha", "sigma", "temperature")),
)


def _rms_preconditioner(up, v, g, decay, eps):
    """V ← ρV + (1 − ρ)g² (stored in V's dtype) and G = 1/(λ + √V) from the stored V."""
    g = up(g)
    v_new = _cast(decay * up(v) + (1 - decay) * g * g, v.dtype)
    return v_new, 1 / (eps + jnp.sqrt(up(v_new)))


def psgld_step(
    v: ArrayTree,
    grad_log_posterior: ArrayTree,
    key: jax.Array,
    lr: jax.typing.ArrayLike,
    decay: jax.typing.ArrayLike,
    eps: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike,
) -> tuple[ArrayTree, ArrayTree]:
    r"""One pSGLD step (Li et al. 2016): SGLD with RMSprop's diagonal preconditioner.

    .. math::

        V_{t+1} &= \rho V_t + (1 - \rho)\, g_t \odot g_t \\
        G_{t+1} &= \mathrm{diag}\big(1 / (\lambda + \sqrt{V_{t+1}})\big) \\
        \theta_{t+1} &= \theta_t + \epsilon G_{t+1} g_t
                        + \sqrt{2 \epsilon T G_{t+1}}\, \xi_t

    with g_t = ∇ log p(θ_t), ξ_t ~ N(0, I); ρ = `decay`, λ = `eps`. This is Li et al.'s
    Algorithm 1 in posteriors' SGLD units (their ε is our 2ε). Li et al.'s correction term
    ε Γ(θ), Γ_i = Σ_j ∂G_ij/∂θ_j, is DROPPED, as in their experiments and in common
    implementations: V is a running average of past gradients, not a function of θ, and the
    term is small when ρ is close to 1; dropping it leaves a bias while V adapts. With a frozen
    preconditioner (ρ = 1: V stays as it is) Γ = 0 and the scheme is exactly preconditioned
    SGLD, whose stationary law tends to p_T as ε → 0 — so freeze V after burn-in (a `decay`
    schedule that ends at 1) to sample without that bias.

    Args:
        v: the running mean V_t of squared gradients, a pytree like the params.
        grad_log_posterior: g_t, the gradient of the log posterior at θ_t.
        key: a typed PRNG key for this step, used once.
        lr: step size ε > 0.
        decay: ρ in [0, 1]; 1 freezes V.
        eps: λ > 0, which bounds G by 1/λ.
        temperature: temperature T >= 0.

    Returns:
        `(params_increment, new_v)`, in the gradient's and V's dtypes.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.kernels import psgld_step
        >>> inc, v = psgld_step(jnp.full(2, 4.0), jnp.ones(2), jax.random.key(0), 0.1, 1.0, 0.0,
        ...                     0.0)
        >>> inc  # ε g / (λ + √V) = 0.1 / 2
        Array([0.05, 0.05], dtype=float32)

    References:
        Li, Chen, Carlson & Carin, `Preconditioned Stochastic Gradient Langevin Dynamics for
        Deep Neural Networks <https://arxiv.org/abs/1512.07666>`_, AAAI 2016.
    """

    def derive(lr, decay, eps, temperature):
        return lr, decay, eps, jnp.sqrt(2 * lr * temperature)

    _, coefficients = _coefficients(derive, lr, decay, eps, temperature)

    def leaf(up, c, noise, g, v):
        lr, decay, eps, noise_std = c
        v_new, precond = _rms_preconditioner(up, v, g, decay, eps)
        increment = lr * precond * up(g) + noise_std * jnp.sqrt(precond) * up(noise)
        return _cast(increment, g.dtype), v_new

    increment, new_v = _map_leaves(leaf, key, coefficients, grad_log_posterior, v)
    return increment, new_v


def _psgld(fields, grad, key, h):
    increment, v = psgld_step(fields["v"], grad, key, h["lr"], h["decay"], h["eps"], h["temperature"])
    return increment, {"v": v}


PSGLD = Rule(
    "psgld",
    ("v",),
    lambda params, key, s: {"v": resolve_preconditioner(s["initial_scale"], params)},
    _psgld,
    draws_at_init=False,
    hyperparameters=(_LR, _DECAY, _EPS, _TEMPERATURE),
    diagnose=Diagnose(None, _r_psgld, ("lr", "temperature", "eps")),
)


def psghmc_step(
    momenta: ArrayTree,
    v: ArrayTree,
    grad_log_posterior: ArrayTree,
    key: jax.Array,
    lr: jax.typing.ArrayLike,
    alpha: jax.typing.ArrayLike,
    sigma: jax.typing.ArrayLike,
    temperature: jax.typing.ArrayLike,
    decay: jax.typing.ArrayLike,
    eps: jax.typing.ArrayLike,
) -> tuple[ArrayTree, ArrayTree, ArrayTree]:
    r"""One preconditioned SGHMC step: SGHMC with pSGLD's preconditioner on kick and drift.

    .. math::

        V_{t+1} &= \rho V_t + (1 - \rho)\, g_t \odot g_t, \qquad
        S_{t+1} = \mathrm{diag}\big((\lambda + \sqrt{V_{t+1}})^{-1/2}\big) \\
        m_{t+1} &= m_t + \epsilon S_{t+1} g_t - \epsilon \sigma^{-2} \alpha m_t
                   + \sqrt{2 \epsilon \alpha T}\, \xi_t \\
        \theta_{t+1} &= \theta_t + \epsilon \sigma^{-2} S_{t+1} m_{t+1}

    with g_t = ∇ log p(θ_t), ξ_t ~ N(0, I), S = G^{1/2} for pSGLD's G. This is the complete
    recipe of Ma et al. (2015) with the antisymmetric part Q = [[0, −S], [S, 0]]: the momenta
    keep their target N(0, σ²T) and friction/noise are SGHMC's, so for a FROZEN preconditioner
    (ρ = 1) the step is exactly SGHMC in the coordinates φ = S⁻¹θ (same stability rule, with
    the curvature of S A S), and its overdamped limit is pSGLD. As for pSGLD the correction
    term (here ε ∂S_ii/∂θ_i in the momentum) is dropped: it vanishes for a frozen S and is small
    for ρ near 1. There is no β: the preconditioned gradient's noise changes with V each step.

    Args:
        momenta: current momenta m_t, a pytree like the params.
        v: the running mean V_t of squared gradients, a pytree like the params.
        grad_log_posterior: g_t, the gradient of the log posterior at θ_t.
        key: a typed PRNG key for this step, used once.
        lr: step size ε > 0.
        alpha: friction α >= 0.
        sigma: momentum scale σ > 0.
        temperature: temperature T >= 0.
        decay: ρ in [0, 1]; 1 freezes V.
        eps: λ > 0.

    Returns:
        `(params_increment, new_momenta, new_v)`, in the momenta's and V's dtypes.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from sghmc_jax.kernels import psghmc_step
        >>> inc, m, v = psghmc_step(jnp.zeros(2), jnp.full(2, 16.0), jnp.ones(2),
        ...                         jax.random.key(0), 0.1, 0.0, 1.0, 0.0, 1.0, 0.0)
        >>> m, inc  # S = 1/2: m = ε S g, θ += ε S m
        (Array([0.05, 0.05], dtype=float32), Array([0.0025, 0.0025], dtype=float32))

    References:
        Li, Chen, Carlson & Carin, `Preconditioned Stochastic Gradient Langevin Dynamics for
        Deep Neural Networks <https://arxiv.org/abs/1512.07666>`_, AAAI 2016.
        Ma, Chen & Fox, `A Complete Recipe for Stochastic Gradient MCMC
        <https://arxiv.org/abs/1506.04696>`_, NeurIPS 2015.
        Chen, Fox & Guestrin, `Stochastic Gradient Hamiltonian Monte Carlo
        <https://arxiv.org/abs/1402.4102>`_, ICML 2014.
    """

    def derive(lr, alpha, sigma, temperature, decay, eps):
        drift = lr / (sigma * sigma)
        m_decay = 1 - _unfused(drift * alpha)
        noise_std = jnp.sqrt(2 * lr * alpha * temperature)
        return lr, drift, m_decay, noise_std, decay, eps

    _, coefficients = _coefficients(derive, lr, alpha, sigma, temperature, decay, eps)

    def leaf(up, c, noise, m, v, g):
        lr, drift, m_decay, noise_std, decay, eps = c
        v_new, precond = _rms_preconditioner(up, v, g, decay, eps)
        scale = jnp.sqrt(precond)
        m_new = _cast(m_decay * up(m) + lr * scale * up(g) + noise_std * up(noise), m.dtype)
        return _cast(drift * scale * up(m_new), m.dtype), m_new, v_new

    update, new_momenta, new_v = _map_leaves(leaf, key, coefficients, momenta, v, grad_log_posterior)
    return update, new_momenta, new_v


def _psghmc_init(params, key, s):
    return _with_momenta(params, key, s) | {"v": resolve_preconditioner(s["initial_scale"], params)}


def _psghmc(fields, grad, key, h):
    increment, momenta, v = psghmc_step(
        fields["momenta"],
        fields["v"],
        grad,
        key,
        h["lr"],
        h["alpha"],
        h["sigma"],
        h["temperature"],
        h["decay"],
        h["eps"],
    )
    return increment, {"momenta": momenta, "v": v}


PSGHMC = Rule(
    "psghmc",
    ("momenta", "v"),
    _psghmc_init,
    _psghmc,
    draws_at_init=True,
    hyperparameters=(_LR, _ALPHA, _SIGMA, _TEMPERATURE, _DECAY, _EPS),
    explicit_friction=True,
    # No β: the kinetic formula of SGHMC with β = 0 (its momenta see no preconditioner).
    diagnose=Diagnose(_explicit_friction_kinetic, _r_psghmc, ("lr", "alpha", "temperature", "eps")),
)
