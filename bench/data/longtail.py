"""Long-tail bookkeeping shared by datasets and evaluators: count profiles, subclass shares, the tail."""

from __future__ import annotations

import math

import numpy as np
import torch

from bench.errors import BenchError


def tail_classes(counts: torch.Tensor, fraction: float = 1 / 3) -> list[int]:
    """Indices of the rarest `fraction` of classes by training count (at least one class).

    Ties are broken by class index so the choice is deterministic.
    """
    n = len(counts)
    k = max(1, math.ceil(n * fraction - 1e-9))
    order = sorted(range(n), key=lambda c: (int(counts[c]), c))
    return sorted(order[:k])


def exponential_profile(n_max: int, n_classes: int, imbalance_ratio: float) -> list[int]:
    """Per-class counts n_c = round(n_max * ratio ** (-c / (C - 1))), class 0 the head.

    The standard exponential long-tail profile (Cui et al., 2019): the head keeps n_max samples
    and the last class n_max / imbalance_ratio, so one number sets how skewed a benchmark is.
    """
    if n_classes < 1 or n_max < 1 or imbalance_ratio < 1:
        raise BenchError(
            f"a long-tail profile needs n_max >= 1, n_classes >= 1 and imbalance_ratio >= 1 "
            f"(got {n_max}, {n_classes}, {imbalance_ratio}); fix the dataset's settings"
        )
    if n_classes == 1:
        return [int(n_max)]
    return [round(n_max * imbalance_ratio ** (-c / (n_classes - 1))) for c in range(n_classes)]


def allocate(n: int, weights: np.ndarray) -> list[int]:
    """Split n samples across subclasses by weight, at least one each, summing to n exactly.

    Each subclass first gets one sample (so even a 20-sample tail class shows all its
    subclasses); the rest is shared by largest remainder, which keeps the split deterministic.
    """
    if n < len(weights):
        raise BenchError(f"cannot give {len(weights)} subclasses one sample each from {n} samples")
    share = (n - len(weights)) * np.asarray(weights, dtype=float)
    counts = np.floor(share).astype(int)
    left = (n - len(weights)) - counts.sum()
    counts[np.argsort(-(share - counts), kind="stable")[:left]] += 1
    return (counts + 1).tolist()
