"""Functional SGMCMC algorithms with the API of posteriors' `posteriors.sgmcmc`."""

from sghmc_jax.sgmcmc import sghmc, sgld

__all__ = ["sghmc", "sgld"]
