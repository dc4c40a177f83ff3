"""The samplers under test: one entry each gives a sampler every convention test
(`tests/test_conventions.py`) and, where its step is linear on a Gaussian target, the exact
stationary-moment test. Adding a sampler means adding its entry here (docs/developer.md, "Adding a
sampler").
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable
from typing import Any

import numpy as np

import sghmc_jax
from sghmc_jax import kernels, sgmcmc
from tests import helpers


@dataclasses.dataclass(frozen=True)
class Linear:
    """How to check the sampler's exact discrete stationary law on a Gaussian target.

    `scheme` runs its optax face as the linear chain z = (θ, extra) (`helpers.run_stationary`);
    `transition(precision, hyper, grad_noise_var) -> (F, Q)` is the one-step law derived by hand
    from the rule; `hyper(precision)` gives the hyperparameters of the check.
    """

    scheme: helpers.Scheme
    transition: Callable[..., tuple[np.ndarray, np.ndarray]]
    hyper: Callable[[np.ndarray], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Sampler:
    """One sampler: its two faces and what the convention tests need to know about it.

    Attributes:
        name: the optax face's name, `sghmc_jax.<name>`; its functional face is
            `sghmc_jax.sgmcmc.<name>`.
        fields: the state it carries besides params and step (both faces' names).
        hyper: representative hyperparameters (functional spelling: `lr`), all non-default.
        settings: initial-state settings used with them (e.g. `initial_scale`).
        invalid: bad hyperparameters (functional spelling) and the error each must give, with
            `{lr}` standing for the face's spelling of the step size.
        signature: posteriors' `build` parameters, in order (posteriors' names and order first).
        linear: the exact stationary check, where the step is linear on a Gaussian.
    """

    name: str
    fields: tuple[str, ...]
    hyper: dict[str, Any]
    settings: dict[str, Any]
    invalid: tuple[tuple[dict[str, Any], str], ...]
    signature: tuple[str, ...]
    linear: Linear | None = None

    @property
    def optax(self) -> Callable[..., Any]:
        return getattr(sghmc_jax, self.name)

    @property
    def module(self) -> types.ModuleType:
        return getattr(sgmcmc, self.name)

    @property
    def rule(self) -> kernels.Rule:
        return kernels.rules()[self.name]

    @property
    def draws_at_init(self) -> bool:
        return "momenta" in self.fields

    def transform(self, *, key: Any = 0, **overrides: Any) -> Any:
        """The optax face with the representative hyperparameters (overridable)."""
        kw = self.hyper | self.settings | overrides
        return self.optax(kw.pop("lr"), key=key, **kw)

    def build(self, log_posterior: Callable, **overrides: Any) -> Any:
        """The functional face with the representative hyperparameters (overridable)."""
        kw = self.hyper | self.settings | overrides
        return self.module.build(log_posterior, kw.pop("lr"), **kw)


_POSITIVE_LR = ({"lr": 0.0}, r"`{lr}` must be finite and > 0, got {lr}=0.0")
_SCHEDULED_LR = ({"lr": lambda s: -0.1}, r"`{lr}` must be finite and > 0, got {lr}=-0.1 \(a schedule, at step 0\)")
_NAN_TEMPERATURE = ({"temperature": float("nan")}, r"`temperature` must be finite and >= 0, got temperature=nan")
_NEGATIVE_ALPHA = ({"alpha": -1.0}, r"`alpha` must be finite and >= 0, got alpha=-1.0")
_ZERO_SIGMA = ({"sigma": 0.0}, r"`sigma` must be finite and > 0, got sigma=0.0")
_ARRAY_ALPHA = ({"alpha": np.ones(3)}, r"`alpha` must be a scalar, got an array of shape \(3,\)")
_SCHEDULED_SIGMA = ({"sigma": lambda s: 1.0}, r"`sigma` must be a real number, not a schedule")
_SCHEDULED_NEGATIVE_ALPHA = ({"alpha": lambda s: -0.5}, r"`alpha` must be finite and >= 0, got alpha=-0.5 \(a schedule, at step 0\)")
_DECAY = ({"decay": 1.5}, r"`decay` must be finite and in \[0, 1\], got decay=1.5")
_SCHEDULED_DECAY = ({"decay": lambda s: -0.1}, r"`decay` must be finite and in \[0, 1\], got decay=-0.1 \(a schedule, at step 0\)")
_EPS = ({"eps": 0.0}, r"`eps` must be finite and > 0, got eps=0.0")
# A friction whose explicit step 1 − εα/σ² is below −1 makes the momenta grow without bound.
_OVERDAMPED = (
    {"lr": 0.25, "alpha": 10.0, "sigma": 1.0, "beta": 0.0},
    r"NAME needs {lr}\*alpha/sigma\*\*2 < 2 .* got 0.25\*10.0/1.0\*\*2 = 2.5",
)
_SCHEDULED_EPS = ({"eps": lambda s: 0.1}, r"`eps` must be a real number, not a schedule")
_INITIAL_SCALE = ({"initial_scale": -1.0}, r"`initial_scale` must be finite and >= 0, got initial_scale=-1.0")

A2 = helpers.correlated_2d()


def _sghmc_lr(precision: np.ndarray, alpha: float, sigma: float) -> float:
    """A large stable step: ε·sqrt(λ_max)/σ = 0.7 unless the friction needs ε·α/σ² <= 1."""
    return float(min(0.7 * sigma / np.sqrt(np.linalg.eigvalsh(precision).max()), sigma**2 / alpha))


def _sghmc_transition(precision, h, grad_noise_var=0.0):
    return helpers.transition(
        precision,
        helpers.Hyper(h["lr"], h["alpha"], h["sigma"], h["temperature"], h["beta"], grad_noise_var),
    )


# BAOA's and UBU's hyperparameters follow the same rules (exact friction: any alpha >= 0).
_EXACT_FRICTION_INVALID = (
    _POSITIVE_LR, _SCHEDULED_LR, _NAN_TEMPERATURE, _NEGATIVE_ALPHA, _ZERO_SIGMA, _SCHEDULED_SIGMA,
    ({"momenta": np.float32("nan")}, r"`momenta` must be finite and real, got momenta=nan"),
)

SAMPLERS = [
    Sampler(
        name="sghmc",
        fields=("momenta",),
        hyper={"lr": 1e-3, "alpha": 0.5, "beta": 0.1, "sigma": 1.3, "temperature": 0.7},
        settings={},
        invalid=(
            _POSITIVE_LR, _SCHEDULED_LR, _NAN_TEMPERATURE, _NEGATIVE_ALPHA, _ZERO_SIGMA,
            _ARRAY_ALPHA, _SCHEDULED_SIGMA, _SCHEDULED_NEGATIVE_ALPHA,
            ({"beta": -0.5}, r"`beta` must be finite and >= 0, got beta=-0.5"),
            ({"alpha": 0.01, "beta": 1.0, "lr": 0.1, "temperature": 1.0},
             r"SGHMC's noise variance needs 2\*alpha - lr\*beta\*temperature >= 0 .*= -0.08; lower `{lr}` or `beta`, or raise `alpha`"),
            ({"momenta": float("nan")}, r"`momenta` must be finite and real, got momenta=nan"),
            (_OVERDAMPED[0], _OVERDAMPED[1].replace("NAME", "SGHMC")),
        ),
        signature=("log_posterior", "lr", "alpha", "beta", "sigma", "temperature", "momenta"),
        linear=Linear(
            helpers.SGHMC,
            _sghmc_transition,
            lambda a: {"lr": _sghmc_lr(a, 1.0, 1.0), "alpha": 1.0, "beta": 0.2, "sigma": 1.0, "temperature": 1.0},
        ),
    ),
    Sampler(
        name="sgld",
        fields=(),
        hyper={"lr": 1e-3, "beta": 0.3, "temperature": 0.7},
        settings={},
        invalid=(
            _POSITIVE_LR, _SCHEDULED_LR, _NAN_TEMPERATURE,
            ({"beta": -1.0}, r"`beta` must be finite and >= 0, got beta=-1.0"),
            ({"lr": 0.5, "beta": 5.0, "temperature": 1.0},
             r"SGLD's noise variance needs 2 - lr\*beta\*temperature >= 0 .* got 2 - 0.5\*5.0\*1.0 = -0.5; lower `{lr}` or `beta`"),
            ({"beta": lambda s: -1.0}, r"`beta` must be finite and >= 0, got beta=-1.0 \(a schedule, at step 0\)"),
        ),
        signature=("log_posterior", "lr", "beta", "temperature"),
        linear=Linear(
            helpers.SGLD,
            lambda a, h, b=0.0: helpers.sgld_transition(a, h["lr"], h["temperature"], h["beta"], b),
            lambda a: {"lr": 0.05, "beta": 1.0, "temperature": 1.0},
        ),
    ),
    Sampler(
        name="sgnht",
        fields=("momenta", "xi"),
        hyper={"lr": 1e-3, "alpha": 0.5, "beta": 0.1, "sigma": 1.3, "temperature": 0.7},
        settings={"xi": 0.3},
        invalid=(
            _POSITIVE_LR, _SCHEDULED_LR, _NAN_TEMPERATURE, _NEGATIVE_ALPHA, _ZERO_SIGMA,
            ({"xi": float("nan")}, r"`xi` must be finite and real, got xi=nan"),
            ({"momenta": float("inf")}, r"`momenta` must be finite and real, got momenta=inf"),
            ({"xi": lambda s: 0.0}, r"`xi` must be a real number \(the initial thermostat\)"),
            ({"alpha": 0.01, "beta": 1.0, "lr": 0.1, "temperature": 1.0},
             r"SGNHT's noise variance needs 2\*alpha - lr\*beta\*temperature >= 0 .*= -0.08"),
            (_OVERDAMPED[0], _OVERDAMPED[1].replace("NAME", "SGNHT")),
        ),
        signature=("log_posterior", "lr", "alpha", "beta", "sigma", "temperature", "momenta", "xi"),
    ),
    Sampler(
        name="baoa",
        fields=("momenta",),
        hyper={"lr": 1e-3, "alpha": 0.5, "sigma": 1.3, "temperature": 0.7},
        settings={},
        invalid=_EXACT_FRICTION_INVALID,
        signature=("log_posterior", "lr", "alpha", "sigma", "temperature", "momenta"),
        linear=Linear(
            helpers.BAOA,
            lambda a, h, b=0.0: helpers.baoa_transition(a, h["lr"], h["alpha"], h["sigma"], h["temperature"], b),
            lambda a: {"lr": float(1.2 / np.sqrt(np.linalg.eigvalsh(a).max())), "alpha": 1.0, "sigma": 1.0, "temperature": 1.0},
        ),
    ),
    Sampler(
        name="ubu",
        fields=("momenta",),
        hyper={"lr": 1e-3, "alpha": 0.5, "sigma": 1.3, "temperature": 0.7},
        settings={},
        invalid=_EXACT_FRICTION_INVALID,
        signature=("log_posterior", "lr", "alpha", "sigma", "temperature", "momenta"),
        linear=Linear(
            helpers.UBU,
            lambda a, h, b=0.0: helpers.ubu_transition(a, h["lr"], h["alpha"], h["sigma"], h["temperature"], b),
            lambda a: {"lr": float(1.2 / np.sqrt(np.linalg.eigvalsh(a).max())), "alpha": 1.0, "sigma": 1.0, "temperature": 1.0},
        ),
    ),
    Sampler(
        name="psgld",
        fields=("v",),
        hyper={"lr": 1e-3, "decay": 0.95, "eps": 1e-4, "temperature": 0.7},
        settings={"initial_scale": 0.5},
        invalid=(_POSITIVE_LR, _SCHEDULED_LR, _NAN_TEMPERATURE, _DECAY, _SCHEDULED_DECAY, _EPS, _SCHEDULED_EPS, _INITIAL_SCALE),
        signature=("log_posterior", "lr", "decay", "eps", "temperature", "initial_scale"),
        linear=Linear(
            helpers.PSGLD_FROZEN,
            lambda a, h, b=0.0: helpers.psgld_transition(a, h["lr"], h["temperature"], helpers.frozen_preconditioner(h), b),
            lambda a: helpers.frozen_hyper(a, sgld=True),
        ),
    ),
    Sampler(
        name="psghmc",
        fields=("momenta", "v"),
        hyper={"lr": 1e-3, "alpha": 0.5, "sigma": 1.3, "temperature": 0.7, "decay": 0.95, "eps": 1e-4},
        settings={"initial_scale": 0.5},
        invalid=(
            _POSITIVE_LR, _NEGATIVE_ALPHA, _ZERO_SIGMA, _NAN_TEMPERATURE, _DECAY, _EPS, _INITIAL_SCALE,
            ({"momenta": float("nan")}, r"`momenta` must be finite and real, got momenta=nan"),
            ({k: v for k, v in _OVERDAMPED[0].items() if k != "beta"}, _OVERDAMPED[1].replace("NAME", "PSGHMC")),
        ),
        signature=("log_posterior", "lr", "alpha", "sigma", "temperature", "momenta", "decay", "eps", "initial_scale"),
        linear=Linear(
            helpers.PSGHMC_FROZEN,
            lambda a, h, b=0.0: helpers.psghmc_transition(
                a, h["lr"], h["alpha"], h["sigma"], h["temperature"], helpers.frozen_preconditioner(h), b
            ),
            lambda a: helpers.frozen_hyper(a, sgld=False),
        ),
    ),
]

BY_NAME = {s.name: s for s in SAMPLERS}
