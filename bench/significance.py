"""Paired significance of a method against a reference (no augmentation, vanilla FM) across runs.

Runs are paired by key: the generative seed for generative metrics, (generative seed, classifier
seed) for downstream scores, so each difference compares the two rows on the same seeds. Two
tests (gin-free, chosen on the command line):

- `wilcoxon`: scipy.stats.wilcoxon, two-sided, on the paired differences (exact distribution for
  small n; zero differences dropped, as Wilcoxon's original method). With n pairs the smallest
  two-sided p is 2 / 2^n, so fewer than 6 pairs can never reach p < 0.05: `min_p` says so.
- `bootstrap`: a percentile interval of the mean paired difference (scipy.stats.bootstrap,
  9,999 resamples, seeded); significant when the (1 - alpha) interval excludes 0. With very few
  pairs the interval is optimistic: prefer the Wilcoxon test for the headline marks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import stats

from bench.errors import BenchError

TESTS = ("wilcoxon", "bootstrap")
BOOTSTRAP_RESAMPLES = 9999


@dataclass(frozen=True)
class Comparison:
    """Outcome of one paired comparison."""

    n: int  # number of pairs
    mean_diff: float  # mean of (method - reference)
    p: Optional[float] = None  # Wilcoxon p-value
    low: Optional[float] = None  # bootstrap interval of the mean difference
    high: Optional[float] = None
    significant: bool = False


def paired(a: dict, b: dict) -> tuple[np.ndarray, np.ndarray]:
    """Values of the keys both run dicts share, in key order."""
    keys = sorted(set(a) & set(b))
    return np.array([a[k] for k in keys], dtype=float), np.array([b[k] for k in keys], dtype=float)


def compare(a: dict, b: dict, test: str = "wilcoxon", alpha: float = 0.05, seed: int = 0) -> Optional[Comparison]:
    """Paired comparison of run dicts {key: value} `a` (method) and `b` (reference); None without pairs."""
    if test not in TESTS:
        raise BenchError(f"unknown significance test {test!r}; use one of {', '.join(TESTS)}")
    x, y = paired(a, b)
    keep = np.isfinite(x) & np.isfinite(y)
    d = x[keep] - y[keep]
    if len(d) == 0:
        return None
    if test == "wilcoxon":
        p = wilcoxon_p(d)
        return Comparison(len(d), float(d.mean()), p=p, significant=p < alpha)
    low, high = bootstrap_interval(d, alpha, seed)
    return Comparison(len(d), float(d.mean()), low=low, high=high,
                      significant=len(d) >= 2 and not low <= 0.0 <= high)


def wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of differences `d` (1.0 when every difference is 0)."""
    if not np.any(d != 0):
        return 1.0
    with warnings.catch_warnings():  # scipy warns when it falls back to the normal approximation
        warnings.simplefilter("ignore")
        return float(stats.wilcoxon(d, alternative="two-sided").pvalue)


def bootstrap_interval(d: np.ndarray, alpha: float, seed: int) -> tuple[float, float]:
    """Percentile (1 - alpha) interval of the mean of `d` (a point interval for one pair or no spread;
    `compare` never calls one pair significant)."""
    if len(d) < 2 or np.all(d == d[0]):
        return float(d.mean()), float(d.mean())
    res = stats.bootstrap((d,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=1 - alpha,
                          method="percentile", random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def min_p(n: int) -> float:
    """The smallest two-sided p an exact Wilcoxon test can give with n nonzero pairs: 2 / 2^n."""
    return min(1.0, 2.0 / 2.0**n)
