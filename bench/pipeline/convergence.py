"""Whether training reached a plateau: the smoothed loss's relative change over the last steps.

Flow-matching losses are noisy step to step (fresh x0, t per batch) and never reach zero, so
"converged" means "no longer improving": with a window of W = `fraction` of the steps, the mean
loss of the last W steps is compared with the mean of the W steps before them, and

    rel_change = (mean(previous W) - mean(last W)) / mean(last W)

is the relative improvement over the last `fraction` of training. Training counts as converged
when rel_change < `tol` (a loss that rises also counts: more steps would not lower it). The
record stores the numbers with the verdict, and tables mark cells that did not converge, so a
comparison never silently rests on an undertrained method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench.config.train import FRACTION, TOL  # the defaults of train.convergence_window / _tol


def convergence(losses: Sequence[float], fraction: float = FRACTION, tol: float = TOL) -> dict | None:
    """{"converged", "rel_change", "threshold", "window"} of per-step `losses`; None when there are
    too few steps (fewer than two windows of at least one step) or a non-finite mean."""
    window = int(round(fraction * len(losses)))
    if window < 1 or 2 * window > len(losses):
        return None
    last = sum(losses[-window:]) / window
    previous = sum(losses[-2 * window : -window]) / window
    if not (math.isfinite(last) and math.isfinite(previous)) or last <= 0:
        return None
    rel = (previous - last) / last
    return {"converged": bool(rel < tol), "rel_change": rel, "threshold": tol, "window": window}
