"""Functional SGMCMC algorithms with the API of posteriors' `posteriors.sgmcmc`.

One module per sampler, `sgmcmc/<name>.py` for each rule of `kernels.rules()` (the registry of
samplers), imported here from that registry: a sampler added there needs no edit here.
"""

import importlib

from sghmc_jax import kernels

__all__ = sorted(kernels.rules())  # pyright: ignore[reportUnsupportedDunderAll]
for _name in __all__:
    globals()[_name] = importlib.import_module(f"{__name__}.{_name}")
del _name
