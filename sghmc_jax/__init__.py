"""sghmc_jax: stochastic-gradient MCMC for JAX, as optax transforms and posteriors-style functions."""

from sghmc_jax import diagnostics, kernels, sgmcmc
from sghmc_jax._version import __version__
from sghmc_jax.schedules import cyclical_schedule, cyclical_temperature_schedule, in_sampling_phase
from sghmc_jax.transforms import (
    BAOATransformState,
    PSGHMCTransformState,
    PSGLDTransformState,
    SGHMCTransformState,
    SGLDTransformState,
    SGNHTTransformState,
    baoa,
    psghmc,
    psgld,
    sghmc,
    sgld,
    sgnht,
)
from sghmc_jax.types import Transform

__all__ = [
    "BAOATransformState",
    "PSGHMCTransformState",
    "PSGLDTransformState",
    "SGHMCTransformState",
    "SGLDTransformState",
    "SGNHTTransformState",
    "Transform",
    "__version__",
    "baoa",
    "cyclical_schedule",
    "cyclical_temperature_schedule",
    "diagnostics",
    "in_sampling_phase",
    "kernels",
    "psghmc",
    "psgld",
    "sghmc",
    "sgld",
    "sgmcmc",
    "sgnht",
]
