"""sghmc_jax: stochastic-gradient MCMC for JAX, as optax transforms and posteriors-style functions."""

from sghmc_jax import diagnostics, kernels, sgmcmc
from sghmc_jax._version import __version__
from sghmc_jax.sampler import (
    DivergenceError,
    SampleResult,
    SamplerState,
    ScaledLogPosterior,
    make_log_posterior,
    sample,
)
from sghmc_jax.transforms import SGHMCTransformState, sghmc
from sghmc_jax.types import Transform

__all__ = [
    "DivergenceError",
    "SGHMCTransformState",
    "SampleResult",
    "SamplerState",
    "ScaledLogPosterior",
    "Transform",
    "__version__",
    "diagnostics",
    "kernels",
    "make_log_posterior",
    "sample",
    "sghmc",
    "sgmcmc",
]
