"""The run plan: `sample()`'s arguments as typed, frozen records, one per concern, each checking
its own arguments and the cross-argument rules it owns, all before anything compiles. Their
fields say what they are for (`fields.py`): the run's identity and the compiled programs' cache
key are derived from them.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sghmc_jax import _checks, _tempering, transforms
from sghmc_jax._sampler import fields
from sghmc_jax._sampler import placement as placing
from sghmc_jax._sampler import store as storing
from sghmc_jax._sampler.batching import Batches
from sghmc_jax._sampler.checkpoint import STATE, orbax
from sghmc_jax._sampler.fields import compiled, setting, value
from sghmc_jax.types import ArrayTree, SamplerState, Transform

__all__: list[str] = []


@dataclasses.dataclass(frozen=True)
class Steps:
    """How many steps, which are kept, and in what chunks."""

    num_steps: int = setting()
    burn_in: int = setting()
    thin: int = setting(compiled=True)
    chunk_size: int = setting(compiled=True)
    continue_on_divergence: bool = setting(compiled=True)

    @classmethod
    def build(cls, num_steps: Any, burn_in: Any, thin: Any, chunk_size: Any, on_divergence: Any) -> Steps:
        num_steps = _checks.check_int("num_steps", num_steps, 1)
        burn_in = _checks.check_int("burn_in", burn_in, 0)
        thin = _checks.check_int("thin", thin, 1)
        chunk_size = _checks.check_int("chunk_size", chunk_size, 1)
        if burn_in >= num_steps:
            raise ValueError(
                f"`burn_in` must be < num_steps so that some draws are kept, got burn_in={burn_in} "
                f"and num_steps={num_steps}"
            )
        if thin > num_steps - burn_in:
            raise ValueError(
                f"`thin` must be <= num_steps - burn_in ({num_steps - burn_in}) so that at least one "
                f"draw is kept, got thin={thin} with num_steps={num_steps} and burn_in={burn_in}"
            )
        if on_divergence not in ("raise", "continue"):
            raise ValueError(f"`on_divergence` must be 'raise' or 'continue', got {on_divergence!r}")
        return cls(num_steps, burn_in, thin, chunk_size, on_divergence == "continue")

    @property
    def capacity(self) -> int:
        """Steps per compiled chunk (a chunk holds at least one draw)."""
        return max(self.chunk_size, self.thin)

    @property
    def max_draws(self) -> int:
        return self.capacity // self.thin

    def chunks(self) -> list[tuple[int, int, int]]:
        """The call's steps as chunks (before, draws, after): burn-in steps, then draws of `thin`
        steps each, then the steps after the last draw, at most `capacity` steps per chunk."""
        thin, capacity = self.thin, self.capacity
        burn = self.burn_in
        draws, tail = divmod(self.num_steps - self.burn_in, thin)
        plan = []
        while burn or draws or tail:
            before = min(burn, capacity)
            burn -= before
            room = capacity - before
            d = min(draws, room // thin) if not burn else 0
            draws -= d
            room -= d * thin
            after = min(tail, room) if not draws and not burn else 0
            tail -= after
            plan.append((before, d, after))
        return plan


DEFAULT_TOP_TEMPERATURE = 10.0
"""The hottest rung's temperature factor of a ladder given as a number of rungs."""

SWAPS = ("deo", "random")
ADAPT_ROUNDS = 6  # the ladder adapts at adapt_ladder / 2^j, j = 5, ..., 0


TEMPERING = "the sampler at temperature tau*T, momenta rescaled at swaps"


@dataclasses.dataclass(frozen=True)
class Ladder:
    """Replica exchange (`temperatures=`): each chain is a ladder of replicas, one per rung,
    which swap rungs (temperatures, not states) every `swap_every` steps (`_sampler/replicas.py`).

    `base_temperature`, the run's own temperature T (rung r targets exp(log p / (τ_r T))), and
    `noisy_energies` (minibatch energies from `data=`, which need the swap's bias correction) are
    filled in by `Plan.build` from the model and the batches."""

    temperatures: tuple[float, ...] = setting(compiled=True)
    swap_every: int = setting(compiled=True)
    swaps: str = setting(compiled=True)
    adapt_ladder: int = setting(compiled=True)
    keep_rungs: bool = setting(compiled=True)
    # Derived from the model and the batches (whose settings identify the run), not settings.
    base_temperature: float = compiled()
    noisy_energies: bool = compiled()
    # How the rungs are tempered, in the run's identity: a checkpoint or store of a ladder run
    # by the version that tempered the gradient (which did not record it) is refused, not
    # continued with other dynamics.
    tempering: str = setting()

    @property
    def rungs(self) -> int:
        return len(self.temperatures)

    @property
    def adapt_at(self) -> tuple[int, ...]:
        """The steps at which the ladder adapts, in rounds that double: A/32, ..., A/2, A."""
        return tuple(sorted({self.adapt_ladder >> j for j in range(ADAPT_ROUNDS)} - {0}))

    @classmethod
    def build(cls, temperatures: Any, swap_every: Any, swaps: Any, adapt_ladder: Any, keep_rungs: Any) -> Ladder | None:
        swap_every = _checks.check_int("swap_every", swap_every, 1)
        if swaps not in SWAPS:
            raise ValueError(f"`swaps` must be 'deo' or 'random', got swaps={swaps!r}")
        adapt_ladder = _checks.check_int("adapt_ladder", adapt_ladder, 0)
        if not isinstance(keep_rungs, (bool, np.bool_)):
            raise TypeError(f"`keep_rungs` must be a bool, got {type(keep_rungs).__name__}: {keep_rungs!r}")
        if temperatures is None:
            if adapt_ladder or keep_rungs:
                given = f"adapt_ladder={adapt_ladder}" if adapt_ladder else "keep_rungs=True"
                raise ValueError(f"`{given.split('=')[0]}` needs `temperatures` (a ladder), got {given}")
            return None
        ladder = _check_temperatures(temperatures)
        return cls(ladder, swap_every, swaps, adapt_ladder, bool(keep_rungs), 1.0, False, TEMPERING)

    def fit(self, model: Model, batches: Batches, steps: Steps, start: Start, placement: Any) -> Ladder:
        """The ladder with the run's temperature and energies, once the arguments it cannot run
        with yet are refused."""
        first = 0 if start.init_state is None else int(np.asarray(jax.device_get(start.init_state.step)))
        if start.init_state is not None and start.init_state.replicas is not None:
            _check_continues_ladder(self, start.init_state.replicas)
        if first < self.adapt_ladder > first + steps.burn_in:
            raise ValueError(
                f"`adapt_ladder` must be <= burn_in (the ladder is frozen before the first draw), got "
                f"adapt_ladder={self.adapt_ladder} and burn_in={steps.burn_in}"
                + (f" from step {first}" if first else "")
            )
        unsupported = {
            "data_axis": placement is not None and placement.data_axis is not None,
            "batches": batches.host_batches,
        }
        for name, given in unsupported.items():
            if given:
                raise ValueError(
                    f"`temperatures` (replica exchange) does not yet run with `{name}`, got both; "
                    f"leave one out (temperatures={self.temperatures})"
                )
        return dataclasses.replace(
            self,
            base_temperature=_base_temperature(model, start.one_params()),
            noisy_energies=batches.num_data is not None,
        )


def _check_continues_ladder(ladder: Ladder, held: Any) -> None:
    """A continuation (`init_state`) asks for the ladder and adaptation its run started with: the
    state holds the run's ladder (adapted, maybe), which a call cannot change."""
    started = placing.host(held.started)[0]  # every chain starts alike
    if not np.array_equal(started, np.asarray(ladder.temperatures, np.float32)):
        raise ValueError(
            f"`init_state` holds a ladder started with temperatures={tuple(float(t) for t in started)}, but "
            f"`temperatures` asks for {ladder.temperatures}: continue a run with the `temperatures` it was "
            "started with (a ladder's rungs cannot change during a run)"
        )
    adapt = int(placing.host(held.adapt_ladder)[0])
    if adapt != ladder.adapt_ladder:
        raise ValueError(
            f"`init_state` holds a ladder started with adapt_ladder={adapt}, but this call asks for "
            f"adapt_ladder={ladder.adapt_ladder}: continue a run with the `adapt_ladder` it was started with "
            "(the ladder adapts at fixed steps of the whole run)"
        )


def _check_temperatures(temperatures: Any) -> tuple[float, ...]:
    """A ladder: an int R >= 2 (geometric from 1 to DEFAULT_TOP_TEMPERATURE), or the rungs'
    temperature factors, 1.0 first, strictly increasing and finite."""
    if isinstance(temperatures, (bool, np.bool_, str)):
        raise TypeError(
            "`temperatures` must be an int (the number of rungs) or a sequence of temperature "
            f"factors, got {type(temperatures).__name__}: {temperatures!r}"
        )
    if isinstance(temperatures, (int, np.integer)):
        rungs = _checks.check_int("temperatures", temperatures, 2)
        return tuple(float(DEFAULT_TOP_TEMPERATURE ** (r / (rungs - 1))) for r in range(rungs))
    try:
        ladder = tuple(float(t) for t in temperatures)
    except (TypeError, ValueError) as err:
        raise TypeError(
            "`temperatures` must be an int (the number of rungs) or a sequence of temperature "
            f"factors, got {type(temperatures).__name__}: {temperatures!r}"
        ) from err
    if len(ladder) < 2 or ladder[0] != 1.0:
        raise ValueError(f"`temperatures` must hold at least 2 rungs, the first exactly 1.0 (the target), got {ladder}")
    if not all(np.isfinite(ladder)) or bool(np.any(np.diff(ladder) <= 0)):
        raise ValueError(f"`temperatures` must be finite and strictly increasing, got {ladder}")
    return ladder


def _base_temperature(model: Model, one_params: Any) -> float:
    """The run's temperature T (a constant > 0): the transform's, else the log posterior's
    declared one, else that of this library's sampler inside the transform (`optax.chain`)."""
    declared = (model.hyperparameters or {}).get("temperature", model.target_temperature)
    if declared is None:
        declared = _inner_temperature(model.update_transform, one_params)
    if declared is None or callable(declared):
        what = "a schedule" if callable(declared) else "not known"
        raise ValueError(
            f"`temperatures` needs the run's temperature as a constant, which is {what} here: pass one of "
            "this library's transforms with a constant `temperature` (or a log posterior that declares "
            "its temperature, from make_log_posterior)"
        )
    declared = float(declared)
    if not declared > 0:
        raise ValueError(f"`temperatures` needs the run's temperature > 0, got temperature={declared}")
    return declared


def _inner_temperature(transform: Any, one_params: Any) -> Any:
    """The temperature of the one sampler of this library that `transform.init` initialises (as
    a replica of a ladder would, `_tempering`), traced without running; None if there is none or
    there are several."""
    seen: list[tuple[str, Any]] = []
    with _tempering.at(jnp.ones([]), jnp.ones([]), seen):
        # A new function: `eval_shape` reuses the trace of one it traced before, and `seen`
        # fills only while Python runs.
        jax.eval_shape(lambda params: transform.init(params), one_params)
    return seen[0][1] if len(seen) == 1 else None


@dataclasses.dataclass(frozen=True)
class Start:
    """Where the chains start: the run's key and initial params, or a state to continue."""

    num_chains: int = setting(compiled=True)
    stacked_init: bool = setting(compiled=True)
    key: jax.Array = value()
    init_params: ArrayTree | None = value()
    init_state: SamplerState | None = value()

    @classmethod
    def build(
        cls, key: Any, init_params: Any, stacked_init: Any, num_chains: Any, init_state: Any, rungs: int = 1
    ) -> Start:
        """`rungs`: the replicas per chain (replica exchange's ladder; 1 without it)."""
        key = _checks.canonical_key(key)
        if init_state is not None:
            if not isinstance(init_state, SamplerState):
                raise TypeError(f"`init_state` must be a SamplerState, got {type(init_state).__name__}")
            _check_state_rungs(init_state, rungs)
            held = int(init_state.noise_key.shape[0]) // rungs
            if num_chains not in (4, held):  # 4: `sample`'s default
                raise ValueError(
                    f"`num_chains` comes from `init_state`, which holds {held} chains, "
                    f"got num_chains={num_chains!r}: leave num_chains out to continue them"
                )
            num_chains = held
        num_chains = _checks.check_int("num_chains", num_chains, 1)
        if init_state is None:
            init_params = _check_init_params(init_params, stacked_init, num_chains)
            return cls(num_chains, bool(stacked_init), key, init_params, None)
        return cls(num_chains, bool(stacked_init), key, None, init_state)

    @property
    def params(self) -> ArrayTree:
        """The initial params as given (one tree, or chain-stacked), or the state's."""
        return self.init_params if self.init_params is not None else self.init_state.params

    @property
    def stacked(self) -> bool:
        """Whether `params` has a leading chain axis."""
        return self.init_params is None or self.stacked_init

    def one_params(self) -> ArrayTree:
        """One chain's params (abstract when stacked), to trace the user's functions with."""
        if not self.stacked:
            return self.params
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), self.params)

    def placed(self, placement: placing.Placement | None) -> Start:
        """The key and the initial params on the run's mesh."""
        if placement is None:
            return self
        params = self.init_params
        if params is not None:
            params = jax.tree.map(lambda x: placing.onto_mesh(x, placement), params)
        return dataclasses.replace(self, key=placing.key_onto_mesh(self.key, placement), init_params=params)


def _check_state_rungs(init_state: SamplerState, rungs: int) -> None:
    """`init_state` holds ladders of `rungs` replicas exactly when the call has `temperatures`."""
    held = None if init_state.replicas is None else int(init_state.replicas.rung.shape[1])
    if (held or 1) != rungs:
        said = "no ladder" if held is None else f"ladders of {held} rungs"
        asked = "none" if rungs == 1 else f"{rungs} rungs"
        raise ValueError(
            f"`init_state` holds {said}, but `temperatures` asks for {asked}: continue a run with "
            "the `temperatures` it was started with"
        )


def _check_init_params(init_params: ArrayTree, stacked_init: bool, num_chains: int) -> ArrayTree:
    """The initial params, checked (floating-point, finite, and with a chain axis when
    `stacked_init`); the initial state's program broadcasts or copies them into buffers of the
    run's own (the run donates its state, which must never delete the caller's arrays)."""
    _checks.check_float_tree("init_params", init_params)
    _checks.check_finite_tree("init_params", init_params)
    if stacked_init:
        bad = {
            jax.tree_util.keystr(p): np.shape(x)
            for p, x in jax.tree_util.tree_flatten_with_path(init_params)[0]
            if np.ndim(x) == 0 or np.shape(x)[0] != num_chains
        }
        if bad:
            raise ValueError(
                f"with stacked_init=True every leaf of `init_params` must have a leading axis "
                f"of size num_chains={num_chains}, got shapes {bad}"
            )
    return jax.tree.map(lambda x: x if isinstance(x, jax.Array) else jnp.asarray(x), init_params)


def _check_callable(name: str, value: Any, signature: str) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"`{name}` must be a function {signature} or None, got {type(value).__name__}: {value!r}")


@dataclasses.dataclass(frozen=True)
class Predictive:
    """The running mean of `predict_fn` over the kept draws."""

    fn: Callable[[ArrayTree, Any], ArrayTree] | None = compiled()
    inputs: Any = value()

    @classmethod
    def build(cls, predict_fn: Any, predict_inputs: Any) -> Predictive:
        _check_callable("predict_fn", predict_fn, "predict_fn(params, predict_inputs)")
        if (predict_fn is None) != (predict_inputs is None):
            raise ValueError("`predict_fn` and `predict_inputs` must be given together")
        return cls(predict_fn, predict_inputs)

    def check_traces(self, one_params: Any) -> None:
        """Traces `predict_fn` once (no compilation), so an error in it surfaces here, clearly."""
        if self.fn is not None:
            jax.eval_shape(self.fn, one_params, self.inputs)


@dataclasses.dataclass(frozen=True)
class Storage:
    """Where the run's checkpoints and draws go on disk (neither changes the draws)."""

    checkpoint_dir: str | None = value()
    checkpoint_every: int | None = value()
    output: str | None = value()

    @classmethod
    def build(cls, checkpoint_dir: Any, checkpoint_every: Any, output: Any) -> Storage:
        if checkpoint_every is not None:
            checkpoint_every = _checks.check_int("checkpoint_every", checkpoint_every, 1)
            if checkpoint_dir is None:
                raise ValueError("`checkpoint_every` needs `checkpoint_dir`")
        elif checkpoint_dir is not None:
            # Every chunk end. (Not `chunk_size` steps: a chunk ends on a multiple of `thin`, so
            # it may hold fewer steps than chunk_size, and the next save would come a chunk late.)
            checkpoint_every = 1
        _check_disk(checkpoint_dir, output)
        fspath = lambda p: None if p is None else os.fspath(p)  # noqa: E731
        return cls(fspath(checkpoint_dir), checkpoint_every, fspath(output))

    @property
    def on_disk(self) -> bool:
        return self.output is not None or self.checkpoint_dir is not None


def _check_disk(checkpoint_dir: Any, output: Any) -> None:
    """`checkpoint_dir` and `output` are paths, with their libraries installed, and apart."""
    for name, path in (("checkpoint_dir", checkpoint_dir), ("output", output)):
        if path is None:
            continue
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"`{name}` must be a path (str or os.PathLike), got {type(path).__name__}")
        if os.path.isfile(path):
            raise ValueError(f"`{name}` must be a directory, but {os.fspath(path)!r} is a file")
        storing.zarr_module()  # both write the draws to a zarr store
    if checkpoint_dir is not None:
        orbax()
        if output is not None:
            ckpt, out = os.path.abspath(checkpoint_dir), os.path.abspath(output)
            state = os.path.join(ckpt, STATE)
            if out in (ckpt, state) or out.startswith(state + os.sep):
                raise ValueError(
                    f"`output` {os.fspath(output)!r} must be a path of its own, not `checkpoint_dir` "
                    "(which holds the checkpoints)"
                )


@dataclasses.dataclass(frozen=True)
class Monitor:
    """What the run reports as it goes (neither changes the draws)."""

    progress: bool = value()
    callback: Callable[[dict], None] | None = value()

    @classmethod
    def build(cls, progress: Any, callback: Any) -> Monitor:
        _check_callable("callback", callback, "of a dict")
        return cls(bool(progress), callback)


def is_transform(x: Any) -> bool:
    return isinstance(x, optax.GradientTransformation) or (
        hasattr(x, "init") and hasattr(x, "update") and not isinstance(x, type)
    )


@dataclasses.dataclass(frozen=True)
class Model:
    """The user's functions the chains run: the log posterior, the transform (or a factory of
    one, called once per chain), and `keep`."""

    log_posterior: Any = compiled()
    transform: Any = compiled()
    keep: Callable[[jax.Array], jax.Array] | None = compiled()
    # Read only by the transform's trace-time check against its own temperature: not a key.
    target_temperature: float | None = setting(compiled=True, compare=False)
    value_dtype: str = setting(compiled=True)  # the log posterior's
    update: Callable[..., Any] = compiled(compare=False)  # a factory's is new at every call
    update_transform: Any = value()  # the transform, or one the factory made

    @property
    def is_factory(self) -> bool:
        return not is_transform(self.transform)

    @property
    def sampler(self) -> str | None:
        return getattr(self.update_transform, "sampler", None)

    @property
    def hyperparameters(self) -> dict[str, Any] | None:
        return getattr(self.update_transform, "hyperparameters", None)

    @classmethod
    def build(cls, log_posterior: Any, transform: Any, keep: Any, start: Start, batches: Batches) -> Model:
        if not callable(log_posterior):
            raise TypeError(f"`log_posterior` must be callable, got {type(log_posterior).__name__}")
        if not (is_transform(transform) or callable(transform)):
            raise TypeError(
                "`transform` must be an optax GradientTransformation (e.g. sghmc_jax.sghmc(...)) or "
                f"a function key -> transform, got {type(transform).__name__}"
            )
        check_not_functional("transform", transform)
        _check_callable("keep", keep, "of the step index returning a bool")
        update_transform: Any = transform if is_transform(transform) else transform(jax.random.key(0))
        if not is_transform(update_transform):
            raise TypeError(
                f"`transform(key)` must return an optax GradientTransformation, got {type(update_transform).__name__}"
            )
        check_not_functional("transform(key)", update_transform)
        one_params = start.one_params()
        _check_state_fits(update_transform, start, one_params)
        # Trace log_posterior once (no compilation) so a wrong return type fails here, clearly.
        value, _ = _checks.check_log_posterior_output(jax.eval_shape(log_posterior, one_params, batches.example()))
        _warn_if_no_sampler(update_transform, one_params)
        target = getattr(log_posterior, "temperature", None)
        transforms._check_injected_temperature(update_transform, one_params, target)
        declared = getattr(log_posterior, "num_data", None)
        if declared is not None and batches.num_data is not None and int(declared) != batches.num_data:
            raise ValueError(
                f"`log_posterior` was built for num_data={declared} examples (its data-size scaling), "
                f"but `data` holds {batches.num_data}: pass num_data={batches.num_data} to "
                "make_log_posterior (or centre), or the posterior's width is off by the ratio"
            )
        temperature = None if target is None else float(target)
        return cls(
            log_posterior, transform, keep, temperature, str(value.dtype), update_transform.update, update_transform
        )


def _names(tree: Any) -> str:
    """A transform state's kind in words: its type's name, or those of a tuple's members."""
    if isinstance(tree, tuple) and not hasattr(tree, "_fields"):
        return "(" + ", ".join(_names(x) for x in tree) + ")"
    return type(tree).__name__


def _check_state_fits(update_transform: Any, start: Start, one_params: Any) -> None:
    """`init_state` continues with `transform` only if it holds the state that transform makes
    (another sampler's state would fail deep inside the compiled loop)."""
    if start.init_state is None:
        return
    made = jax.eval_shape(update_transform.init, one_params)
    have = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), start.init_state.transform_state)
    same = jax.tree.structure(made) == jax.tree.structure(have) and all(
        (a.shape, a.dtype) == (b.shape, b.dtype)
        for a, b in zip(jax.tree.leaves(made), jax.tree.leaves(have), strict=True)
    )
    if not same:
        raise TypeError(
            f"`init_state` holds the state of another transform than `transform` makes: "
            f"{_names(start.init_state.transform_state)} against {_names(made)}; continue with the "
            "transform that made it, or start the new one where the chains are: "
            "init_params=result.final_state.params, stacked_init=True"
        )


def _warn_if_no_sampler(update_transform: Any, one_params: Any) -> None:
    # A warning, not an error: a user's own noisy transform (e.g. one built on optax.add_noise)
    # samples too, and we cannot tell it from optax.adam.
    if transforms._holds_sampler(update_transform, one_params):
        return
    warnings.warn(
        "`transform` holds none of this library's samplers (no sghmc_jax transform state in "
        "`transform.init(params)`, also searched inside optax.chain and other wrappers): a "
        "transform with no noise, such as optax.adam or optax.sgd, OPTIMISES rather than "
        "samples, and its 'draws' are an optimisation path, not posterior samples. Pass a "
        "sampler, e.g. sghmc_jax.sghmc(learning_rate, key=key), alone or inside optax.chain; "
        "ignore this warning only if your transform injects its own correctly scaled noise",
        UserWarning,
        stacklevel=5,
    )


def check_not_functional(name: str, transform: Any) -> None:
    """A functional face's `Transform(init, update)` looks like an optax transform (it has
    `init` and `update`) but its `update(state, batch, ...)` takes no gradients: say which
    optax factory `sample()` takes instead."""
    if not isinstance(transform, Transform):
        return
    update = transform.update
    module = getattr(getattr(update, "func", update), "__module__", None) or ""
    face = module.rsplit(".", 1)[-1]
    if module.startswith("sghmc_jax.sgmcmc.") and face in transforms.__all__:
        built, factory = f"sghmc_jax.sgmcmc.{face}.build(...)", f"sghmc_jax.{face}"
    else:
        built, factory = "a functional face's build(...)", "sghmc_jax.sghmc"
    raise TypeError(
        f"`{name}` must be an optax-face transform, got the functional face's Transform from "
        f"{built}, whose update takes (state, batch), not gradients; sample() takes the optax "
        f"face and the log posterior separately: pass transform={factory}(learning_rate, ..., "
        f"key=key) (the functional face's `lr` is the optax face's `learning_rate`), or "
        f"transform=lambda key: {factory}(learning_rate, ..., key=key)"
    )


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything `sample()` was asked to do, checked, one record per concern."""

    steps: Steps
    start: Start
    placement: placing.Placement | None
    batches: Batches
    predictive: Predictive
    model: Model
    storage: Storage
    monitor: Monitor
    ladder: Ladder | None = None

    @classmethod
    def build(
        cls,
        *,
        steps: Steps,
        start: Start,
        mesh: tuple[Any, Any, Any],
        batches: tuple[Any, Any, Any, Any],
        predictive: Predictive,
        model: tuple[Any, Any, Any],
        storage: Storage,
        monitor: Monitor,
        ladder: Ladder | None = None,
    ) -> Plan:
        """The plan from the records `sample()` built from its own arguments, and the arguments
        of the records that need others: the placement (`mesh`, `chain_axis`, `data_axis`) needs
        the start; the batches (`data`, `batch_size`, `batch_order`, `batches`) the placement;
        the model (`log_posterior`, `transform`, `keep`) the start and the batches."""
        placement = placing.build(*mesh, start.num_chains, start.params, start.stacked)
        start = start.placed(placement)
        batches_record = Batches.build(*batches, placement)
        model_record = Model.build(*model, start, batches_record)
        predictive.check_traces(start.one_params())
        if ladder is not None:
            ladder = ladder.fit(model_record, batches_record, steps, start, placement)
        return cls(steps, start, placement, batches_record, predictive, model_record, storage, monitor, ladder)

    def records(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    def settings(self) -> dict[str, Any]:
        """Every setting of every record, by name (what the run's identity records)."""
        out: dict[str, Any] = {"placement": self.placement}
        for record in self.records():
            if record is not None and record is not self.placement:  # placed whole, above
                out |= fields.settings(record)
        return out
