"""The order of the stationary bias in the step size, through `sample()`, for each batch order
it offers, with full gradients as the reference.

Two splittings of U(θ) = θ²/2 + θ⁴/4 at T = 1 (E θ² by quadrature) into the mean of 4
one-example batches (batch_size=1, so an epoch is 4 steps):

- "quartic": U_b(θ) = θ²/2 + θ⁴/4 − μ_b θ, μ = (−1.5, −0.5, 0.5, 1.5): the batches differ by a
  shift, so the gradient noise is the same at every θ (`tests/helpers.quartic_bias`'s toy);
- "curvature": U_b(θ) = c_b θ²/2 + θ⁴/4 − μ_b θ, c = (0.2, 1.8, 1.4, 0.6): the batches differ
  in curvature too, so the gradient noise (c_b − 1)θ − μ_b changes with θ. Both have the mean
  θ²/2 + θ⁴/4 (E θ² = 0.4679); `tests/helpers.sample_quartic_bias` runs them.

Batch orders (`sample(..., batch_order=...)`): "shuffle" (the default, a fresh permutation per
epoch), "sms" (symmetric minibatch splitting: each permutation forward, then backward),
"with_replacement" (i.i.d. uniform batches every step), and "full" (the full gradient, no
minibatches). For each sampler, target and order: the bias of the time-averaged θ² at three step
sizes, ± its Monte Carlo standard error (each chain's time average is one independent
estimate), and the weighted log-log slope ± its standard error. α = σ = 1, float32 chains.

    python benchmarks/bias_order.py                 # 4096 chains x (400 burn-in + 3200) steps
    python benchmarks/bias_order.py --quick         # 1024 chains x (400 + 1600) steps
    python benchmarks/bias_order.py --samplers ubu --targets curvature --orders shuffle,sms
    python benchmarks/bias_order.py --samplers ubu --targets quartic --orders shuffle,sms --num-batches 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import sghmc_jax  # noqa: E402
import numpy as np  # noqa: E402

from tests import helpers  # noqa: E402

SAMPLERS = {
    "ubu": lambda lr, key: sghmc_jax.ubu(lr, alpha=1.0, sigma=1.0, temperature=1.0, key=key),
    "baoa": lambda lr, key: sghmc_jax.baoa(lr, alpha=1.0, sigma=1.0, temperature=1.0, key=key),
    "sghmc": lambda lr, key: sghmc_jax.sghmc(lr, alpha=1.0, sigma=1.0, temperature=1.0, key=key),
}
TARGETS = {"quartic": None, "curvature": helpers.QUARTIC_CURVATURES}  # the batches' c_b
ORDERS = ("full", "shuffle", "sms", "with_replacement")
LRS = (0.3, 0.21, 0.15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--orders", default=",".join(ORDERS), help="comma-separated subset of " + ",".join(ORDERS))
    parser.add_argument("--lrs", default=",".join(map(str, LRS)), help="comma-separated step sizes")
    parser.add_argument(
        "--num-batches", type=int, default=4,
        help="split the quartic target into this many batches, shifts evenly spaced with variance 1.25",
    )
    args = parser.parse_args()
    lrs = tuple(float(v) for v in args.lrs.split(","))
    mu = np.linspace(-1.0, 1.0, args.num_batches)
    mu = helpers.QUARTIC_MU if args.num_batches == 4 else mu / mu.std() * np.sqrt(1.25)
    if args.num_batches != 4 and "curvature" in args.targets:
        parser.error("--num-batches applies to the quartic target only: pass --targets quartic")
    chains, steps, burn = (1024, 1600, 400) if args.quick else (4096, 3200, 400)
    env = _common.environment()
    print(", ".join(f"{k} {env[k]}" for k in ("date", "cpu", "cpu_count", "jax", "backend")) + f", load {os.getloadavg()[0]:.1f}")
    print(f"chains={chains} steps={burn} burn-in + {steps} lrs={lrs} batches={args.num_batches}; "
          f"E θ² = {helpers.quartic_second_moment():.4f}")
    print("| sampler | target | batches | bias at ε = " + " / ".join(map(str, lrs)) + " | slope ± se |")
    print("|---|---|---|---|---|")
    t0 = time.perf_counter()
    for name in args.samplers.split(","):
        for target in args.targets.split(","):
            for order in args.orders.split(","):
                try:
                    measured = [
                        helpers.sample_quartic_bias(
                            SAMPLERS[name], lr, order, curvatures=TARGETS[target], mu=mu, chains=chains, steps=steps, burn=burn
                        )
                        for lr in lrs
                    ]
                except FloatingPointError as err:  # past this scheme's stability at some step
                    print(f"| {name} | {target} | {order} | {err} | – |", flush=True)
                    continue
                biases, ses = zip(*measured)
                slope, se = helpers.log_log_slope(lrs, biases, ses)
                cells = " / ".join(f"{b:+.4f} ± {s:.4f}" for b, s in measured)
                print(f"| {name} | {target} | {order} | {cells} | {slope:.2f} ± {se:.2f} |", flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
