"""sghmc_jax: stochastic-gradient MCMC for JAX, as optax transforms and posteriors-style functions."""

from sghmc_jax import control_variates, diagnostics, kernels, sgmcmc, stein
from sghmc_jax._version import __version__
from sghmc_jax.log_posterior import ScaledLogPosterior, as_loss, make_log_posterior
from sghmc_jax.sampler import DivergenceError, SampleResult, SamplerState, sample
from sghmc_jax.schedules import cyclical_schedule, cyclical_temperature_schedule, in_sampling_phase
from sghmc_jax.transforms import (
    BAOATransformState,
    PSGHMCTransformState,
    PSGLDTransformState,
    SGHMCTransformState,
    SGLDTransformState,
    SGNHTTransformState,
    UBUTransformState,
    baoa,
    no_chain_collectives,
    psghmc,
    psgld,
    sghmc,
    sgld,
    sgnht,
    ubu,
)
from sghmc_jax.types import Transform

__all__ = [
    "BAOATransformState",
    "DivergenceError",
    "PSGHMCTransformState",
    "PSGLDTransformState",
    "SGHMCTransformState",
    "SGLDTransformState",
    "SGNHTTransformState",
    "SampleResult",
    "SamplerState",
    "ScaledLogPosterior",
    "Transform",
    "UBUTransformState",
    "__version__",
    "as_loss",
    "baoa",
    "control_variates",
    "cyclical_schedule",
    "cyclical_temperature_schedule",
    "diagnostics",
    "in_sampling_phase",
    "kernels",
    "make_log_posterior",
    "no_chain_collectives",
    "psghmc",
    "psgld",
    "sample",
    "sghmc",
    "sgld",
    "sgmcmc",
    "sgnht",
    "stein",
    "ubu",
]
