"""The sampler's progress display: tqdm when installed, else a line per chunk on stderr.

It shows a compile phase while programs compile, then one rate: steps per second of sampling,
compilation excluded (tqdm's own rate, which counts the compile, is not shown).
"""

from __future__ import annotations

import sys
from typing import Any

__all__: list[str] = []

_BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


class Progress:
    """Progress of `total` steps; disabled, it does nothing."""

    def __init__(self, total: int, enabled: bool):
        self.total = total
        self.enabled = enabled
        self.done = 0
        self.ran = 0
        self.bar: Any = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, unit="step", desc="sampling", bar_format=_BAR_FORMAT)
            except ImportError:
                self.bar = None

    def compiling(self) -> None:
        """Says that programs are being compiled (before the first steps, or a new program)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_description_str("compiling", refresh=True)
        else:
            sys.stderr.write(f"sampling: compiling (step {self.done}/{self.total})\n")

    def resumed(self, n: int) -> None:
        """Counts `n` steps restored from a checkpoint as done."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def update(self, n: int, mean_log_posterior: float, run_seconds: float) -> None:
        """Records `n` more steps; the rate is over `run_seconds` (compilation excluded)."""
        if not self.enabled or n == 0:
            return
        self.done += n
        self.ran += n
        rate = self.ran / max(run_seconds, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        if self.bar is not None:
            self.bar.set_description_str("sampling", refresh=False)
            self.bar.update(n)
            self.bar.set_postfix_str(
                f"{rate:,.0f} steps/s, {left:,.0f} s left, log post {mean_log_posterior:.4g}",
                refresh=True,
            )
        else:
            sys.stderr.write(
                f"sampling: step {self.done}/{self.total} ({rate:,.0f} steps/s excluding "
                f"compilation, mean log posterior {mean_log_posterior:.6g})\n"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
