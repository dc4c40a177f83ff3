"""`python -m sghmc_jax`: the demo (see `python -m sghmc_jax --help`)."""

import sys

from sghmc_jax._demo import main

sys.exit(main())
