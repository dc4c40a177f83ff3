"""posteriors' SGHMC (PyTorch, CPU) on the training benchmark's problems; run by training.py.

Runs in its own virtual environment (benchmarks/.venv-posteriors, with the CPU torch build and
posteriors; `make bench` creates it) because it needs PyTorch. Usage (what training.py calls):

    python posteriors_bench.py PROBLEM DATA.npz BATCH STEPS ACC_STEPS LR ALPHA

It prints one line `RESULT {json}` with the time per gradient step (median/min/max over repeats
of STEPS steps), the test accuracy after ACC_STEPS steps, and the versions.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import posteriors
import torch
from torch.func import functional_call


def main() -> None:
    problem, path, batch_size, steps, acc_steps, lr, alpha = sys.argv[1:8]
    batch_size, steps, acc_steps, lr, alpha = int(batch_size), int(steps), int(acc_steps), float(lr), float(alpha)
    torch.manual_seed(0)
    data = {k: torch.from_numpy(v) for k, v in np.load(path).items()}
    x, y = data["x_train"], data["y_train"].long()
    n = x.shape[0]
    if problem == "lr":
        model = torch.nn.Linear(x.shape[1], 1)
    else:
        model = torch.nn.Sequential(
            torch.nn.Linear(64, 100), torch.nn.Tanh(), torch.nn.Linear(100, 100), torch.nn.Tanh(), torch.nn.Linear(100, 10)
        )
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    if problem == "lr":
        params = {k: torch.zeros_like(v) for k, v in params.items()}

    def log_posterior(p: dict, batch: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        xb, yb = batch
        z = functional_call(model, p, (xb,))
        if problem == "lr":
            z = z[:, 0]
            loglik = torch.sum(yb * z - torch.nn.functional.softplus(z))
        else:
            loglik = -torch.nn.functional.cross_entropy(z, yb, reduction="sum")
        prior = -0.5 * sum(torch.sum(v**2) for v in p.values())
        return (n / batch_size) * loglik + prior, torch.tensor([])

    transform = posteriors.sgmcmc.sghmc.build(log_posterior, lr=lr, alpha=alpha, momenta=0.0)
    num_batches = n // batch_size

    def batch(i: int) -> tuple:
        s = (i % num_batches) * batch_size
        return x[s : s + batch_size], (y[s : s + batch_size].float() if problem == "lr" else y[s : s + batch_size])

    state = transform.init(params)
    for i in range(acc_steps):
        state, _ = transform.update(state, batch(i), inplace=True)
    with torch.no_grad():
        z = functional_call(model, state.params, (data["x_test"],))
        pred = (z[:, 0] > 0).long() if problem == "lr" else z.argmax(1)
        acc = float((pred == data["y_test"].long()).float().mean())

    state = transform.init(params)
    times = []
    step = 0
    for _ in range(8):
        t0 = time.perf_counter()
        for _ in range(steps):
            state, _ = transform.update(state, batch(step), inplace=True)
            step += 1
        times.append((time.perf_counter() - t0) / steps)
    times = sorted(times[1:])  # the first repeat warms up
    print("RESULT " + json.dumps({
        "median_s": times[len(times) // 2], "min_s": times[0], "max_s": times[-1], "accuracy": acc,
        "torch": torch.__version__, "posteriors": getattr(posteriors, "__version__", "unknown"),
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
