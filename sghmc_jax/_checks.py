"""Argument checks shared by every face: keys, hyperparameters and pytrees.

Numeric hyperparameters are checked only when their value is concrete (a Python or NumPy number,
or a JAX array that is not being traced), so `jit`, `vmap` over hyperparameters, schedules and
`optax.inject_hyperparams` keep working. Static things (callables, tree structures, shapes,
dtypes, keys) are always checked.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any, TypeGuard

import jax
import jax.core  # Tracer: `import jax` alone does not bind the submodule for type checkers
import jax.numpy as jnp
import numpy as np

from sghmc_jax.types import Hyperparameter as Hyperparameter  # defined in its public home, kept importable here

__all__: list[str] = []


def concrete_float(value: Any) -> float | None:
    """Returns `value` as a Python float if it is a concrete real scalar, else None."""
    if isinstance(value, jax.core.Tracer) or callable(value):
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float, np.number)):
        return float(value)
    if isinstance(value, (np.ndarray, jax.Array)):
        if value.size != 1:
            return None
        try:
            return float(np.asarray(value).reshape(()))
        except (TypeError, jax.errors.ConcretizationTypeError):
            return None
    return None


def check_scalar(name: str, value: Any) -> None:
    """Raises if a concrete hyperparameter is not a real scalar (traced values pass)."""
    if callable(value) or isinstance(value, jax.core.Tracer):
        return
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a real number, got the bool {value!r}")
    if isinstance(value, (int, float, np.number)):
        return
    if isinstance(value, (np.ndarray, jax.Array)):
        if value.shape != ():
            raise ValueError(f"`{name}` must be a scalar, got an array of shape {value.shape}")
        if not (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)):
            raise TypeError(f"`{name}` must be a real number, got an array of dtype {value.dtype}")
        return
    raise TypeError(
        f"`{name}` must be a float, a scalar array or a schedule (a callable of the step), "
        f"got {type(value).__name__}: {value!r}"
    )


def schedule_value(value: Any, step: Any = 0) -> Any:
    """The value a hyperparameter takes at `step`: a schedule is evaluated there, a number is
    itself."""
    if callable(value):
        return value(jnp.asarray(step, jnp.int32))
    return value


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None, maximum_name: str = "") -> int:
    """`value` as an int: a TypeError unless it is an int (not a bool), a ValueError unless
    `minimum` <= value (<= `maximum`, the value of the argument `maximum_name`, when given)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be a Python int, got {type(value).__name__}: {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        rule = f">= {minimum}" if maximum is None else f"with {minimum} <= {name} <= {maximum_name}"
        raise ValueError(f"`{name}` must be an int {rule}, got {name}={value!r}")
    return int(value)


def check_log_posterior_output(out: Any) -> tuple[Any, Any]:
    """`(value, aux)` from what a log posterior returned, or a TypeError saying what it was."""
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(
            "`log_posterior` must return a tuple (value, aux); return (value, None) when there is "
            f"no auxiliary output. It returned {describe(out)}"
        )
    value, aux = out
    if jnp.shape(value) != ():
        raise TypeError(
            f"`log_posterior` must return a scalar value, it returned {describe(value)} "
            "as the value (sum or average the per-example terms)"
        )
    return value, aux


Rule = tuple[str, Callable[[float], bool], str]


def check_rules(values: dict[str, Any], rules: list[Rule]) -> dict[str, float | None]:
    """Checks each concrete value against its rule; returns the concrete values (None if traced).

    Every value must be a real scalar or a schedule (schedules are checked at step 0, the only
    step whose value is known at build time); a value that breaks its rule raises a ValueError
    naming the argument, the rule and the value.
    """
    for name, value in values.items():
        check_scalar(name, value)
    c = {name: concrete_float(schedule_value(value)) for name, value in values.items()}
    for name, ok, rule in rules:
        v = c[name]
        if v is None:
            continue
        where = " (a schedule, at step 0)" if callable(values[name]) else ""
        if not math.isfinite(v) or not ok(v):
            raise ValueError(f"`{name}` must be finite and {rule}, got {name}={v!r}{where}")
    return c


# The rules a hyperparameter table names: (check, how the rule reads in an error message).
POSITIVE: tuple[Callable[[float], bool], str] = (lambda v: v > 0, "> 0")
NON_NEGATIVE: tuple[Callable[[float], bool], str] = (lambda v: v >= 0, ">= 0")
ANY: tuple[Callable[[float], bool], str] = (lambda v: True, "real")
UNIT: tuple[Callable[[float], bool], str] = (lambda v: 0 <= v <= 1, "in [0, 1]")


def _check_noise_rule(name: str, c: dict[str, float | None], lr_name: str, alpha: float | None) -> None:
    """2α − εβT >= 0 (SGHMC, SGNHT) or 2 − εβT >= 0 (SGLD, alpha=None): no negative noise variance."""
    b, e, t = c["beta"], c[lr_name], c["temperature"]
    if b is None or e is None or t is None:
        return
    if alpha is None:
        rule, given, why = "2 - lr*beta*temperature", "2", "the gradient noise may not exceed"
        fix = f"lower `{lr_name}` or `beta`"
        value = 2.0 - e * b * t
    else:
        rule, given = "2*alpha - lr*beta*temperature", f"2*{alpha!r}"
        why = "beta may not exceed the friction's share of"
        fix = f"lower `{lr_name}` or `beta`, or raise `alpha`"
        value = 2.0 * alpha - e * b * t
    if value < 0:
        raise ValueError(
            f"{name}'s noise variance needs {rule} >= 0 ({why} the noise), got "
            f"{given} - {e!r}*{b!r}*{t!r} = {value!r}; {fix}"
        )


def check_hyperparameters(sampler: Any, values: dict[str, Any], *, lr_name: str = "lr") -> None:
    """Checks hyperparameters against a sampler's table (`sampler.hyperparameters`, and its noise
    rule `sampler.noise_rule`: "alpha" for 2α − εβT >= 0, "two" for 2 − εβT >= 0), for every
    value that is concrete.

    Schedules are checked at step 0 (the only step whose value is known when built); a schedule
    where the table wants a number is a TypeError.
    """
    spelled = {h.name: (lr_name if h.name == "lr" else h.name) for h in sampler.hyperparameters}
    named = {spelled[h.name]: values[h.name] for h in sampler.hyperparameters}
    for h in sampler.hyperparameters:
        arg = spelled[h.name]
        if callable(named[arg]) and not h.schedulable:
            raise TypeError(f"`{arg}` must be a real number, not a schedule, got {named[arg]!r}")
    c = check_rules(named, [(spelled[h.name], *h.rule) for h in sampler.hyperparameters])
    if sampler.noise_rule == "two":
        _check_noise_rule(sampler.name.upper(), c, lr_name, None)
    elif sampler.noise_rule == "alpha" and c["alpha"] is not None:
        _check_noise_rule(sampler.name.upper(), c, lr_name, c["alpha"])
    lr, alpha, sigma = c[lr_name], c.get("alpha"), c.get("sigma")  # SGLD has neither
    if sampler.explicit_friction and lr is not None and alpha is not None and sigma is not None:
        damping = lr * alpha / sigma**2
        if damping >= 2:
            raise ValueError(
                f"{sampler.name.upper()} needs {lr_name}*alpha/sigma**2 < 2 (its momentum is "
                f"multiplied by 1 - {lr_name}*alpha/sigma**2 each step, which must stay above -1 or "
                f"the momenta grow without bound), got {c[lr_name]!r}*{c['alpha']!r}/{c['sigma']!r}**2 = "
                f"{damping!r}; lower `{lr_name}` or `alpha`, or raise `sigma` (critical damping is near 1; "
                f"BAOA's exact friction step has no such limit)"
            )


def check_initial_scale(initial_scale: Any) -> None:
    """The preconditioner's initial V: a scalar >= 0, or a pytree whose every (concrete) entry
    is >= 0."""
    if is_scalar_like(initial_scale):
        check_rules({"initial_scale": initial_scale}, [("initial_scale", *NON_NEGATIVE)])
    else:
        check_float_tree("initial_scale", initial_scale)
        check_non_negative_tree("initial_scale", initial_scale)


def check_initial_xi(xi: Any) -> None:
    """SGNHT's initial thermostat: None (start at alpha) or a finite real number."""
    if xi is None:
        return
    if callable(xi):
        raise TypeError(f"`xi` must be a real number (the initial thermostat), got a callable {xi!r}")
    check_rules({"xi": xi}, [("xi", *ANY)])


def check_initial_momenta(momenta: Any) -> None:
    """Initial momenta: None, a finite scalar, or a finite pytree of floating-point arrays."""
    if momenta is None:
        return
    if is_scalar_like(momenta):
        check_rules({"momenta": momenta}, [("momenta", *ANY)])
    else:
        check_float_tree("momenta", momenta)
        check_finite_tree("momenta", momenta)


def check_settings(settings: dict[str, Any]) -> None:
    """Checks a sampler's initial-state options (`momenta`, `xi`, `initial_scale`)."""
    checks = {"momenta": check_initial_momenta, "xi": check_initial_xi, "initial_scale": check_initial_scale}
    for name, value in settings.items():
        checks[name](value)


def is_scalar_like(value: Any) -> TypeGuard[jax.typing.ArrayLike]:
    """True for a Python/NumPy number or a 0-d array (what fills a tree), False for a pytree."""
    if isinstance(value, (int, float, np.number)):
        return True
    return hasattr(value, "shape") and value.shape == ()


def canonical_key(key: Any, name: str = "key") -> jax.Array:
    """Returns a typed PRNG key from a typed key, a raw uint32 key or an int seed.

    Raw uint32 keys are wrapped with JAX's default key implementation, as `jax.random`
    functions do. Traced int seeds (e.g. a seed held by `optax.inject_hyperparams`) work too.
    """
    if isinstance(key, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a PRNG key or an int seed, got the bool {key!r}")
    if isinstance(key, (int, np.integer)):
        return jax.random.key(int(key))
    dtype = getattr(key, "dtype", None)
    shape = getattr(key, "shape", None)
    if dtype is not None:
        if jnp.issubdtype(dtype, jax.dtypes.prng_key):
            if shape != ():
                raise ValueError(
                    f"`{name}` must be a single PRNG key, got a key array of shape {shape}; "
                    "vmap over chains instead of passing a batch of keys"
                )
            return key
        if jnp.issubdtype(dtype, jnp.integer) and shape == ():
            return jax.random.key(key)
        if dtype == jnp.uint32 and shape is not None and len(shape) == 1:
            try:
                return jax.random.wrap_key_data(key)
            except (TypeError, ValueError) as err:
                raise TypeError(
                    f"`{name}` is a raw uint32 array of shape {shape}, which is not a key of the "
                    f"default implementation ({err}); pass a typed key from jax.random.key"
                ) from None
    raise TypeError(
        f"`{name}` must be a PRNG key (jax.random.key or jax.random.PRNGKey) or an int seed, "
        f"got {type(key).__name__} with dtype={dtype} and shape={shape}"
    )


def _framework(tree: Any) -> str | None:
    """ "equinox" or "flax" when `tree` is a model object of that library, else None."""
    for cls in type(tree).__mro__:
        root = (cls.__module__ or "").split(".")[0]
        if root in ("equinox", "flax"):
            return root
    return None


_FLAX_SPLIT = (
    "`graphdef, params = nnx.split(model, nnx.Param)` (a model with other state, such as "
    "BatchNorm statistics: `graphdef, params, rest = nnx.split(model, nnx.Param, ...)`), and "
    "rebuild the model inside the log posterior with `nnx.merge(graphdef, params)` (or "
    "`nnx.merge(graphdef, params, rest)`)"
)
_SPLIT_HINTS = {
    "equinox": (
        "; it looks like a whole Equinox module: sample its arrays only, `params, static = "
        "eqx.partition(model, eqx.is_inexact_array)`, and rebuild the model inside the log "
        "posterior with `eqx.combine(params, static)`"
    ),
    "flax": f"; it looks like a whole Flax module: sample its parameters only, {_FLAX_SPLIT}",
    None: (
        " (a whole model? split it into its arrays first: `nnx.split(model, nnx.Param)` for "
        "Flax, `eqx.partition(model, eqx.is_inexact_array)` for Equinox)"
    ),
}


def _model_object(x: Any) -> str | None:
    """What a Flax or Equinox object inside params is, when it must not be sampled as it is:
    "flax module" (an `nnx.Module`: its state holds more than parameters), "flax variable"
    (an `nnx.Variable` that is not an `nnx.Param`: batch statistics, caches, RNG state) or
    "equinox module" (checked further: an `eqx.Module` of arrays only, as `eqx.partition`
    gives, is sampled). None for anything else, `nnx.Param`s and `nnx.State`s included.

    The libraries are looked up among the imported modules: an object of one of them means it
    is imported, and neither is a dependency of this library."""
    framework = _framework(x)
    if framework == "flax":
        nnx = sys.modules.get("flax.nnx")
        if nnx is None:
            return None
        if isinstance(x, nnx.Module):
            return "flax module"
        if isinstance(x, nnx.Variable) and not isinstance(x, nnx.Param):
            return "flax variable"
    elif framework == "equinox":
        eqx = sys.modules.get("equinox")
        if eqx is not None and isinstance(x, eqx.Module):
            return "equinox module"
    return None


def _check_model_objects(name: str, tree: Any) -> None:
    """Raises a TypeError at the first whole Flax module, non-`Param` Flax variable, or Equinox
    module holding anything but floating-point arrays, anywhere in `tree` (the root included).

    Why: an `nnx.Module` is a pytree of all its state, and an `eqx.Module` of all its fields, so
    a whole model passes the leaf checks while its BatchNorm statistics, dropout rates or
    counters would be sampled as weights."""
    objects, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: _model_object(x) is not None)
    for path, obj in objects:
        kind = _model_object(obj)
        if kind is None:
            continue
        where = f"{name}{jax.tree_util.keystr(path)}"
        what = type(obj).__name__
        if kind == "flax module":
            raise TypeError(
                f"`{name}` must hold a model's parameters, not the model: got the Flax module "
                f"{what} at {where}, whose state (batch statistics, RNG counters) would be sampled "
                f"as weights; sample its parameters only, {_FLAX_SPLIT}"
            )
        if kind == "flax variable":
            raise TypeError(
                f"`{name}` must hold parameters (nnx.Param) only, got an nnx.{what} variable at "
                f"{where} (not a parameter: it would be sampled as a weight); split the model by "
                f"nnx.Param, `graphdef, params, rest = nnx.split(model, nnx.Param, ...)`, sample "
                f"`params`, and rebuild the model inside the log posterior with "
                f"`nnx.merge(graphdef, params, rest)`"
            )
        for sub, leaf in jax.tree_util.tree_flatten_with_path(obj)[0]:
            dtype = getattr(leaf, "dtype", None)
            if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
                got = f"dtype {dtype}" if dtype is not None else f"a {type(leaf).__name__}"
                raise TypeError(
                    f"every leaf of `{name}` must be a floating-point array, got {got} at "
                    f"{where}{jax.tree_util.keystr(sub)}, a field of the Equinox module {what} "
                    f"that is not an array of weights{_SPLIT_HINTS['equinox']}"
                )


def check_float_tree(name: str, tree: Any) -> None:
    """Raises a TypeError naming the first leaf of `tree` that is not a floating-point array.

    A leaf that is not an array at all (a function, a module, a string) is named with what it
    is, with a hint on splitting a Flax or Equinox model into its arrays; so is a whole Flax
    module, a Flax variable that is not an `nnx.Param`, and an Equinox module with fields that
    are not floating-point arrays, anywhere in the tree.
    """
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    if not leaves:
        raise ValueError(f"`{name}` must hold at least one array, got an empty pytree: {tree!r}")
    framework = _framework(tree)
    for path, leaf in leaves:
        where = f"{name}{jax.tree_util.keystr(path)}"
        if not (hasattr(leaf, "dtype") or isinstance(leaf, (int, float, complex, bool))):
            what = "a function" if callable(leaf) else "an object"
            raise TypeError(
                f"every leaf of `{name}` must be a floating-point array, got {what} of type "
                f"{type(leaf).__name__} at {where}{_SPLIT_HINTS[framework or _framework(leaf)]}"
            )
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            hint = _SPLIT_HINTS[framework] if framework else ""
            raise TypeError(
                f"every leaf of `{name}` must be a floating-point array, got dtype {dtype} at {where}{hint}"
            )
    _check_model_objects(name, tree)


def _host_values(tree: Any) -> list[tuple[Any, np.ndarray]]:
    """(path, value) of every concrete leaf, on the host (NumPy: no JAX program to compile).
    Traced leaves, and arrays this process does not hold whole, are left out."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, jax.core.Tracer):
            continue
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            continue
        out.append((path, np.asarray(leaf)))
    return out


def check_finite_tree(name: str, tree: Any) -> None:
    """Raises a ValueError naming the first leaf of a concrete `tree` holding NaN or infinity.

    Traced leaves (inside jit or vmap) are skipped: their values are not known yet.
    """
    for path, value in _host_values(tree):
        if np.issubdtype(value.dtype, np.inexact) and not np.isfinite(value).all():
            count = int(value.size - np.isfinite(value).sum())
            raise ValueError(
                f"every element of `{name}` must be finite, got {count} non-finite value(s) "
                f"(NaN or infinity) at {name}{jax.tree_util.keystr(path)}"
            )


_SLICE = 1 << 24
# One fused pass on the device (op by op, the mask would be a temporary the size of the data);
# counting the non-finite ones, which are few, cannot overflow int32.
_count_non_finite = jax.jit(lambda x: jnp.sum(~jnp.isfinite(x)))


def check_finite_data(name: str, tree: Any) -> None:
    """Raises a ValueError naming the first floating-point leaf of the data `tree` that holds
    NaN or infinity (a NaN in the data makes a chain diverge exactly as a too-large step does).

    Host arrays are checked with NumPy; device arrays where they are (one reduction each, no
    transfer of the data to the host). Traced leaves, and arrays this process does not hold
    whole, are skipped; so are integer leaves (labels), which cannot be non-finite.
    """
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, jax.core.Tracer):
            continue
        on_accelerator = isinstance(leaf, jax.Array) and any(d.platform != "cpu" for d in leaf.devices())
        if isinstance(leaf, jax.Array) and (on_accelerator or not leaf.is_fully_addressable):
            if not leaf.is_fully_addressable or not jnp.issubdtype(leaf.dtype, jnp.inexact):
                continue
            count = int(_count_non_finite(leaf))
        else:
            value = np.asarray(leaf)  # host memory (a CPU device array is viewed, not copied)
            if not np.issubdtype(value.dtype, np.inexact):
                continue
            flat = value.reshape(-1)  # in slices: no mask the size of the data set in host memory
            count = sum(int(np.count_nonzero(~np.isfinite(flat[i : i + _SLICE]))) for i in range(0, flat.size, _SLICE))
        if count:
            raise ValueError(
                f"every floating-point element of `{name}` must be finite, got {count} non-finite "
                f"value(s) (NaN or infinity) at {name}{jax.tree_util.keystr(path)}; a non-finite "
                f"datum makes the chains diverge as a too-large step would: drop or impute it "
                f"(for missing values: a finite fill and a mask the likelihood multiplies by)"
            )


def check_non_negative_tree(name: str, tree: Any) -> None:
    """Raises a ValueError naming the first leaf of a concrete `tree` with a negative or
    non-finite entry (traced leaves are skipped)."""
    check_finite_tree(name, tree)
    for path, value in _host_values(tree):
        if value.size and value.min() < 0:
            raise ValueError(
                f"every element of `{name}` must be >= 0, got a minimum of {float(value.min())!r} "
                f"at {name}{jax.tree_util.keystr(path)}"
            )


def describe(value: Any) -> str:
    """What a user's function returned, in the user's terms (never a tracer's class name)."""
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}: (" + ", ".join(describe(v) for v in value) + ")"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if value is None:
        return "None"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        shape = tuple(value.shape)
        kind = "a scalar" if shape == () else f"an array of shape {shape}"
        return f"{kind} of dtype {value.dtype}"
    if isinstance(value, dict):
        return f"a dict with keys {sorted(map(str, value))}"
    return f"a {type(value).__name__}"


def check_tree_like(name: str, tree: Any, like_name: str, like: Any) -> None:
    """Raises unless `tree` has the structure and leaf shapes of `like`."""
    s1, s2 = jax.tree.structure(tree), jax.tree.structure(like)
    if s1 != s2:
        raise ValueError(f"`{name}` must have the tree structure of `{like_name}`, got {s1} vs {s2}")
    paths = jax.tree_util.tree_flatten_with_path(like)[0]
    for (path, ref), leaf in zip(paths, jax.tree.leaves(tree), strict=True):
        if jnp.shape(leaf) != jnp.shape(ref):
            raise ValueError(
                f"`{name}` must match the shapes of `{like_name}`, got shape {jnp.shape(leaf)} "
                f"at {name}{jax.tree_util.keystr(path)} where {like_name} has {jnp.shape(ref)}"
            )


# Steps at which a temperature schedule is compared with a log posterior's temperature: every
# step of the first 4096, then every 4096th up to 2**26 (enough to meet a cyclical schedule's
# sampling phases in any run of up to 67M steps).
_SCHEDULE_GRID = np.unique(np.concatenate([np.arange(4096), np.arange(0, 1 << 26, 4096)])).astype(np.int32)


def check_target_temperature(name: str, temperature: Any, target: Any) -> None:
    """Raises unless a sampler's `temperature` agrees with the temperature its log posterior
    declares (`ScaledLogPosterior.temperature`; None when the log posterior declares none).

    A number must equal it (to 1e-6, relatively); a schedule's largest value over a grid of
    steps must equal it (a cyclical or annealing schedule peaks at the target temperature; a
    schedule that is 0 on the whole grid is not checked). Traced values are not checked.
    """
    if target is None:
        return
    target = float(target)
    if callable(temperature):
        with jax.ensure_compile_time_eval():
            values = np.asarray(jax.vmap(temperature)(jnp.asarray(_SCHEDULE_GRID)))
        peak = float(np.max(values))
        if peak == 0.0:
            return
        given, how = peak, f"a schedule whose largest value is {peak!r}"
    else:
        given = concrete_float(temperature)
        if given is None:
            return
        how = f"temperature={given!r}"
    if not math.isclose(given, target, rel_tol=1e-6, abs_tol=0.0):
        raise ValueError(
            f"`temperature` of {name} must be the log posterior's temperature {target!r} (its "
            f"`temperature` attribute, T/num_data for make_log_posterior(form='mean')), got "
            f"{how}; pass temperature=log_posterior.temperature, build a cold posterior with "
            f"make_log_posterior(..., temperature=T), or pass a plain function as the log "
            f"posterior to use this temperature as given"
        )
