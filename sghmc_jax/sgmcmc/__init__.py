"""Functional SGMCMC algorithms with the API of posteriors' `posteriors.sgmcmc`."""

from sghmc_jax.sgmcmc import baoa, sghmc, sgld, sgnht

__all__ = ["baoa", "sghmc", "sgld", "sgnht"]
