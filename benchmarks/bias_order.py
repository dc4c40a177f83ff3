"""The order of the stationary bias in the step size, for UBU, BAOA and SGHMC, with full
gradients and with minibatches drawn at random or by symmetric minibatch splitting (SMS).

Target U(θ) = θ²/2 + θ⁴/4 at T = 1 (E θ² by quadrature), as a sum of 4 shifted batches
(`tests/helpers.quartic_bias`, which also runs the slow tests' version of this measurement).
For each sampler and batch order, the bias of the time-averaged θ² at three step sizes, its
Monte Carlo standard error (independent chains), and the weighted log-log slope with its
standard error. α = σ = 1.

    python benchmarks/bias_order.py            # 4096 chains x 400 cycles of 8 steps
    python benchmarks/bias_order.py --quick    # 1024 chains x 200 cycles
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402

import sghmc_jax  # noqa: E402
from tests import helpers  # noqa: E402

SAMPLERS = {
    "ubu": lambda lr, key: sghmc_jax.ubu(lr, alpha=1.0, sigma=1.0, temperature=1.0, key=key),
    "baoa": lambda lr, key: sghmc_jax.baoa(lr, alpha=1.0, sigma=1.0, temperature=1.0, key=key),
    "sghmc": lambda lr, key: sghmc_jax.sghmc(lr, alpha=1.0, sigma=1.0, temperature=1.0, key=key),
}
ORDERS = ("full", "iid", "sms")
LRS = (0.3, 0.21, 0.15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--orders", default=",".join(ORDERS), help="comma-separated subset of full,iid,sms")
    parser.add_argument("--lrs", default=",".join(map(str, LRS)), help="comma-separated step sizes")
    args = parser.parse_args()
    lrs = tuple(float(v) for v in args.lrs.split(","))
    orders = args.orders.split(",")
    chains, cycles = (1024, 200) if args.quick else (4096, 400)
    env = _common.environment()
    print(", ".join(f"{k} {env[k]}" for k in ("date", "cpu", "cpu_count", "jax", "backend")))
    print(f"chains={chains} cycles={cycles} (8 steps each) lrs={lrs}")
    print("| sampler | batches | bias at ε = " + " / ".join(map(str, lrs)) + " | slope ± se |")
    print("|---|---|---|---|")
    for name, make in SAMPLERS.items():
        for order in orders:
            try:
                measured = [helpers.quartic_bias(make, lr, order, chains=chains, cycles=cycles) for lr in lrs]
            except AssertionError as err:  # a chain diverged: the step is past this scheme's stability
                print(f"| {name} | {order} | {err} | – |", flush=True)
                continue
            biases, ses = zip(*measured)
            slope, se = helpers.log_log_slope(lrs, biases, ses)
            cells = " / ".join(f"{b:+.4f} ± {s:.4f}" for b, s in measured)
            print(f"| {name} | {order} | {cells} | {slope:.2f} ± {se:.2f} |", flush=True)


if __name__ == "__main__":
    main()
