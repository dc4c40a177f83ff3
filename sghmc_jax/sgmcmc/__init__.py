"""Functional SGMCMC algorithms with the API of posteriors' `posteriors.sgmcmc`."""

from sghmc_jax.sgmcmc import baoa, psghmc, psgld, sghmc, sgld, sgnht, ubu

__all__ = ["baoa", "psghmc", "psgld", "sghmc", "sgld", "sgnht", "ubu"]
