"""sghmc_jax: stochastic-gradient MCMC for JAX, as optax transforms and posteriors-style functions."""

from sghmc_jax import control_variates, diagnostics, kernels, sgmcmc, stein, transforms
from sghmc_jax._version import __version__
from sghmc_jax.log_posterior import ScaledLogPosterior, as_loss, make_log_posterior
from sghmc_jax.sampler import DivergenceError, SampleResult, SamplerState, sample
from sghmc_jax.schedules import cyclical_schedule, cyclical_temperature_schedule, in_sampling_phase

# Every sampler's optax face and its state, as transforms.py lists them (`transforms.__all__`):
# a sampler added there is exported here without an edit (docs/developer.md, "Adding a sampler").
from sghmc_jax.transforms import *  # noqa: F403
from sghmc_jax.types import Transform

__all__ = [
    "DivergenceError",
    "SampleResult",
    "SamplerState",
    "ScaledLogPosterior",
    "Transform",
    "__version__",
    "as_loss",
    "control_variates",
    "cyclical_schedule",
    "cyclical_temperature_schedule",
    "diagnostics",
    "in_sampling_phase",
    "kernels",
    "make_log_posterior",
    "sample",
    "sgmcmc",
    "stein",
]
__all__ += transforms.__all__
