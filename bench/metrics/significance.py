"""Paired significance of a method against a reference (no augmentation, vanilla FM) over generative seeds.

The unit of replication is the generative seed. A metric's runs are keyed (generative seed,) or
(generative seed, classifier index): the classifiers of one generative seed are trained on the
same synthetic set, so they are not independent and are first averaged within their seed
(`seed_means`). The method and its reference are then paired by generative seed, one difference
per seed, and tested (gin-free, chosen on the command line):

- `permutation` (default): exact two-sided sign-flip permutation test of the mean paired
  difference: under the null each difference is as likely negative as positive, so p is the share
  of the 2^n sign assignments whose |mean| is at least the observed one (the identity counted).
  Exact for n <= EXACT_MAX seeds, beyond that 2^EXACT_MAX seeded random flips. With n seeds the
  smallest attainable p is 2 / 2^n (`min_p`): 3 seeds give 0.25, so fewer than 6 seeds can never
  reach p < 0.05.
- `ttest`: two-sided paired t-test (scipy.stats.ttest_1samp of the differences against 0); no
  floor on p, but it rests on n - 1 degrees of freedom and on roughly normal differences, which
  3 seeds cannot check. Differences without spread leave t undefined: never significant.
- `wilcoxon`: scipy.stats.wilcoxon, two-sided, exact for small n (zero differences dropped); the
  same 2 / 2^n floor as the sign-flip test.

Every comparison also reports the mean difference with its (1 - alpha) Student-t interval
(95 % at the default alpha). The former `bootstrap` option is gone: resampling 3 per-seed
differences that share a sign gives an interval that always excludes 0.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import stats

from bench.errors import BenchError

TESTS = ("permutation", "ttest", "wilcoxon")
DEFAULT_TEST = "permutation"
EXACT_MAX = 16  # seeds up to which every sign flip is enumerated (2^16 = 65,536 flips)
_REL_TOL = 1e-10  # |mean| ties within float rounding count as "at least as extreme"


@dataclass(frozen=True)
class Comparison:
    """Outcome of one paired comparison over generative seeds."""

    n: int  # number of paired generative seeds
    mean_diff: float  # mean over seeds of (method - reference)
    diffs: tuple = ()  # (seed, difference) per paired seed
    p: Optional[float] = None  # the test's two-sided p (None: undefined, e.g. one seed for the t-test)
    low: Optional[float] = None  # (1 - alpha) t interval of the mean difference (None below 2 seeds)
    high: Optional[float] = None
    significant: bool = False


def seed_means(runs: dict) -> dict:
    """{generative seed: mean of its finite runs}: the independent units behind a metric's runs."""
    by_seed: dict = {}
    for key, value in runs.items():
        if value is not None and math.isfinite(value):
            by_seed.setdefault(key[0], []).append(float(value))
    return {seed: sum(v) / len(v) for seed, v in by_seed.items()}


def paired(a: dict, b: dict) -> tuple[list, np.ndarray, np.ndarray]:
    """Generative seeds both run dicts hold, with the per-seed means of `a` and of `b`."""
    ma, mb = seed_means(a), seed_means(b)
    seeds = sorted(set(ma) & set(mb))
    return seeds, np.array([ma[s] for s in seeds], dtype=float), np.array([mb[s] for s in seeds], dtype=float)


def compare(a: dict, b: dict, test: str = DEFAULT_TEST, alpha: float = 0.05, seed: int = 0) -> Optional[Comparison]:
    """Paired comparison of run dicts `a` (method) and `b` (reference) by generative seed; None without pairs."""
    check_test(test)
    seeds, x, y = paired(a, b)
    d = x - y
    if len(d) == 0:
        return None
    p = {"permutation": lambda: sign_flip_p(d, seed), "ttest": lambda: ttest_p(d),
         "wilcoxon": lambda: wilcoxon_p(d)}[test]()
    low, high = t_interval(d, alpha)
    return Comparison(len(d), float(d.mean()), tuple(zip(seeds, d.tolist())), p, low, high,
                      significant=p is not None and p < alpha)


def check_test(test: str) -> None:
    """A clear error for an unknown test name."""
    if test not in TESTS:
        raise BenchError(f"unknown significance test {test!r}; use one of {', '.join(TESTS)}")


def sign_flip_p(d: np.ndarray, seed: int = 0) -> float:
    """Two-sided p of the mean of `d` under random sign flips: exact up to EXACT_MAX values."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    if n <= EXACT_MAX:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)  # row 0 is the identity
    else:  # Monte Carlo: the identity plus random flips, p = (1 + hits) / (1 + draws)
        rng = np.random.default_rng(seed)
        signs = np.vstack([np.ones((1, n), int), rng.choice([-1, 1], size=(2**EXACT_MAX - 1, n))])
    means = np.abs(signs @ d) / n
    observed = abs(d.mean())
    return float(np.mean(means >= observed - _REL_TOL * np.abs(d).mean()))


def ttest_p(d: np.ndarray) -> Optional[float]:
    """Two-sided one-sample t-test p of `d` against 0 (None for one value or differences without spread)."""
    d = np.asarray(d, dtype=float)
    if len(d) < 2 or np.ptp(d) <= _REL_TOL * np.abs(d).mean():
        return None  # scipy would return nan, or a spurious tiny p from rounding noise
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of differences `d` (1.0 when every difference is 0)."""
    if not np.any(d != 0):
        return 1.0
    with warnings.catch_warnings():  # scipy warns when it falls back to the normal approximation
        warnings.simplefilter("ignore")
        return float(stats.wilcoxon(d, alternative="two-sided").pvalue)


def t_interval(d: np.ndarray, alpha: float = 0.05) -> tuple[Optional[float], Optional[float]]:
    """(1 - alpha) Student-t interval of the mean of `d`: what the seeds say about the true difference."""
    n = len(d)
    if n < 2:
        return None, None
    half = stats.t.ppf(1 - alpha / 2, n - 1) * np.std(d, ddof=1) / math.sqrt(n)
    return float(d.mean() - half), float(d.mean() + half)


def min_p(n: int) -> float:
    """The smallest two-sided p an exact sign-flip or Wilcoxon test can give with n nonzero pairs: 2 / 2^n."""
    return min(1.0, 2.0 / 2.0**n)


def seeds_needed(alpha: float) -> int:
    """The fewest seeds whose smallest attainable sign-flip p is below alpha (6 for 0.05)."""
    n = 1
    while min_p(n) >= alpha:
        n += 1
    return n


def describe(test: str) -> str:
    """The test's name, for footnotes and captions."""
    check_test(test)
    return {"permutation": "exact two-sided sign-flip permutation test of the mean paired difference",
            "ttest": "two-sided paired t-test",
            "wilcoxon": "two-sided exact Wilcoxon signed-rank test"}[test]


def limits(test: str, n: int, alpha: float, fewest: Optional[int] = None) -> str:
    """What n generative seeds (down to `fewest` in some comparisons) can and cannot show with `test`."""
    seeds = f"{n} generative seed{'s' if n != 1 else ''}"
    if test == "ttest":
        return (f"With n = {seeds} the t-test rests on {max(n - 1, 0)} degree(s) of freedom and assumes normal "
                "per-seed differences, which so few seeds cannot check; the exact sign-flip test could not go "
                f"below p = {min_p(n):.3g}.")
    floor, needed = min_p(n), seeds_needed(alpha)
    if floor >= alpha:
        return (f"With n = {seeds} the smallest attainable p is 2/2^{n} = {floor:.3g} ≥ {alpha:g}, so no mark "
                f"can appear: {n} seed{'s' if n != 1 else ''} can show the size and sign of each seed's "
                "difference, not a significant one, and a missing mark is not evidence of no difference "
                f"(p < {alpha:g} needs at least {needed} seeds).")
    text = f"With n = {seeds} the smallest attainable p is 2/2^{n} = {floor:.3g}."
    if fewest is not None and fewest < needed:
        text += f" Comparisons over fewer than {needed} seeds (here down to {fewest}) can never be marked."
    return text
