"""Paired significance of a method against a reference (no augmentation, vanilla FM) over generative seeds.

The unit of replication is the generative seed. A metric's runs are keyed (generative seed,) or
(generative seed, classifier index): the classifiers of one generative seed are trained on the
same synthetic set, so they are not independent and are first averaged within their seed
(`seed_means`). The method and its reference are then paired by generative seed, one difference
per seed, and tested (gin-free, chosen on the command line):

- `permutation` (default): exact two-sided sign-flip permutation test of the mean paired
  difference: under the null each difference is as likely negative as positive, so p is the share
  of the 2^n sign assignments whose |mean| is at least the observed one (the identity counted).
  Exact for n <= EXACT_MAX seeds, beyond that 2^EXACT_MAX seeded random flips. A zero difference
  has no sign: it is dropped (flipping it changes no flipped sum, so p is the same either way) and
  n counts the nonzero differences. With n of them the smallest attainable p is 2 / 2^n (`min_p`),
  one-sided 1 / 2^n: 3 seeds give 0.25, so fewer than 6 seeds can never reach p < 0.05.
- `ttest`: two-sided paired t-test (scipy.stats.ttest_1samp of the differences against 0); no
  floor on p, but it rests on n - 1 degrees of freedom and on roughly normal differences, which
  3 seeds cannot check. Differences without spread leave t undefined: never significant.
- `wilcoxon`: scipy.stats.wilcoxon, two-sided, exact for small n (zero differences dropped); the
  same 2 / 2^n floor as the sign-flip test.

Every comparison also carries the chosen test's two one-sided p-values (`p_greater`: method >
reference, `p_less`: method < reference; the claims report's verdicts use these, Holm-corrected,
`holm`), the two-sided t-test p as a cross-check (`t_p`), and the mean difference with its
(1 - alpha) Student-t interval (95 % at the default alpha). `seeds_for_power` gives the paired
seeds an observed effect would need for 80 % power, never fewer than an exact test's floor allows.
The former `bootstrap` option is gone: resampling 3 per-seed differences that share a sign gives
an interval that always excludes 0.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

from bench.errors import BenchError

TESTS = ("permutation", "ttest", "wilcoxon")
DEFAULT_TEST = "permutation"
EXACT_MAX = 16  # seeds up to which every sign flip is enumerated (2^16 = 65,536 flips)
_REL_TOL = 1e-10  # |mean| ties within float rounding count as "at least as extreme"
# a paired difference this small is float rounding of two equal scores (e.g. 1.1e-16 between equal bAccs)
ZERO_TOL = 1e-12


@dataclass(frozen=True)
class Comparison:
    """Outcome of one paired comparison over generative seeds."""

    n: int  # number of paired generative seeds
    mean_diff: float  # mean over seeds of (method - reference)
    diffs: tuple = ()  # (seed, difference) per paired seed
    p: float | None = None  # the test's two-sided p (None: undefined, e.g. one seed for the t-test)
    low: float | None = None  # (1 - alpha) t interval of the mean difference (None below 2 seeds)
    high: float | None = None
    significant: bool = False
    p_greater: float | None = None  # one-sided p, alternative: method - reference > 0
    p_less: float | None = None  # one-sided p, alternative: method - reference < 0
    t_p: float | None = None  # two-sided paired t-test p (a cross-check column, whatever the test)

    @property
    def nonzero(self) -> int:
        """Paired seeds whose difference is not exactly 0 (the ones an exact sign test can use)."""
        return sum(d != 0 for _, d in self.diffs)

    @property
    def sd(self) -> float | None:
        """Sample std of the paired differences (None below 2 seeds)."""
        return float(np.std([d for _, d in self.diffs], ddof=1)) if self.n > 1 else None


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


def difference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x - y with rounding noise set to exactly 0: two equal scores computed along different paths (a
    bAcc of 0.9 as a mean of per-class recalls) can differ by 1e-16, and an exact test would count that
    as a signed difference. Below ZERO_TOL in absolute value no metric bench records means anything."""
    d = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    d[np.abs(d) <= ZERO_TOL] = 0.0
    return d


def compare(
    a: dict, b: dict, test: str = DEFAULT_TEST, alpha: float = 0.05, seed: int = 0
) -> Comparison | None:
    """Paired comparison of run dicts `a` (method) and `b` (reference) by generative seed; None without pairs."""
    check_test(test)
    seeds, x, y = paired(a, b)
    d = difference(x, y)
    if len(d) == 0:
        return None
    p, greater, less = (paired_p(d, test, side, seed) for side in ("two-sided", "greater", "less"))
    low, high = t_interval(d, alpha)
    return Comparison(
        len(d),
        float(d.mean()),
        tuple(zip(seeds, d.tolist())),
        p,
        low,
        high,
        significant=p is not None and p < alpha,
        p_greater=greater,
        p_less=less,
        t_p=ttest_p(d),
    )


def paired_p(d: np.ndarray, test: str, alternative: str = "two-sided", seed: int = 0) -> float | None:
    """p of differences `d` under `test` for `alternative` ("two-sided", "greater": mean > 0, "less")."""
    check_test(test)
    if test == "permutation":
        return sign_flip_p(d, seed, alternative)
    return ttest_p(d, alternative) if test == "ttest" else wilcoxon_p(d, alternative)


def check_test(test: str) -> None:
    """A clear error for an unknown test name."""
    if test not in TESTS:
        raise BenchError(f"unknown significance test {test!r}; use one of {', '.join(TESTS)}")


def sign_flip_p(d: np.ndarray, seed: int = 0, alternative: str = "two-sided") -> float:
    """p of the mean of `d` under random sign flips (exact up to EXACT_MAX nonzero values):
    two-sided |sum| >= |observed|, "greater" sum >= observed, "less" sum <= observed. Zero
    differences are dropped first (they have no sign and leave every flipped sum unchanged, so p is
    the same with them; dropping them keeps the enumeration exact); all zeros give p = 1."""
    d = np.asarray(d, dtype=float)
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return 1.0
    if n <= EXACT_MAX:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)  # row 0 is the identity
    else:  # Monte Carlo: the identity plus random flips, p = (1 + hits) / (1 + draws)
        rng = np.random.default_rng(seed)
        signs = np.vstack([np.ones((1, n), int), rng.choice([-1, 1], size=(2**EXACT_MAX - 1, n))])
    sums, observed, tol = signs @ d, d.sum(), _REL_TOL * np.abs(d).sum()
    hits = {
        "two-sided": lambda: np.abs(sums) >= abs(observed) - tol,
        "greater": lambda: sums >= observed - tol,
        "less": lambda: sums <= observed + tol,
    }[alternative]()
    return float(np.mean(hits))


def ttest_p(d: np.ndarray, alternative: str = "two-sided") -> float | None:
    """One-sample t-test p of `d` against 0 (None for one value or differences without spread)."""
    d = np.asarray(d, dtype=float)
    if len(d) < 2 or np.ptp(d) <= _REL_TOL * np.abs(d).mean():
        return None  # scipy would return nan, or a spurious tiny p from rounding noise
    return float(stats.ttest_1samp(d, 0.0, alternative=alternative).pvalue)


def wilcoxon_p(d: np.ndarray, alternative: str = "two-sided") -> float:
    """Wilcoxon signed-rank p of differences `d`, zeros dropped (1.0 when every difference is 0)."""
    d = np.asarray(d, dtype=float)
    if not np.any(d != 0):
        return 1.0
    with warnings.catch_warnings():  # scipy warns when it falls back to the normal approximation
        warnings.simplefilter("ignore")
        return float(stats.wilcoxon(d, alternative=alternative, zero_method="wilcox").pvalue)


def t_interval(d: np.ndarray, alpha: float = 0.05) -> tuple[float | None, float | None]:
    """(1 - alpha) Student-t interval of the mean of `d`: what the seeds say about the true difference."""
    n = len(d)
    if n < 2:
        return None, None
    half = stats.t.ppf(1 - alpha / 2, n - 1) * np.std(d, ddof=1) / math.sqrt(n)
    return float(d.mean() - half), float(d.mean() + half)


def min_p(n: int, two_sided: bool = True) -> float:
    """The smallest p an exact sign-flip or Wilcoxon test can give with n NONZERO paired differences
    (zeros are dropped, see `sign_flip_p`): 2 / 2^n two-sided, 1 / 2^n one-sided."""
    return min(1.0, (2.0 if two_sided else 1.0) / 2.0**n)


def nonzero(diffs) -> int:
    """How many differences are not exactly 0: the n an exact sign test's floor depends on."""
    return int(np.count_nonzero(np.asarray(list(diffs), dtype=float)))


def seeds_needed(alpha: float, two_sided: bool = True) -> int:
    """The fewest nonzero paired differences whose smallest attainable exact p is below alpha
    (two-sided: 6 for 0.05, 8 for 0.05 / 3; one-sided: 5 for 0.05, 6 for 0.05 / 3)."""
    n = 1
    while min_p(n, two_sided) >= alpha:
        n += 1
    return n


def holm(pvalues: dict) -> dict:
    """Holm's step-down adjusted p-values of a family {name: p} (None, an undefined p, counts as 1).

    Sorted ascending p_(1) <= ... <= p_(m), the i-th adjusted value is max over j <= i of
    min(1, (m - j + 1) p_(j)); rejecting where it is below alpha holds the chance of any false
    rejection in the family at alpha whatever the dependence between the tests."""
    ranked = sorted(pvalues, key=lambda k: 1.0 if pvalues[k] is None else pvalues[k])
    m, running, out = len(ranked), 0.0, {}
    for i, key in enumerate(ranked):
        p = 1.0 if pvalues[key] is None else pvalues[key]
        running = max(running, min(1.0, (m - i) * p))
        out[key] = running
    return out


POWER = 0.8
# |mean| / sd below this is a mean that is zero but for rounding (differences that cancel, e.g.
# -0.02, 0.01833, 0.00167 average to 1e-17): no effect, not one that needs 10^30 seeds
NEGLIGIBLE_DZ = 1e-9
LARGE_N = 10_000  # beyond this the z-test's n stands for the t-test's (they differ by < 0.1 %)


def seeds_for_power(
    mean: float, sd: float | None, alpha: float, power: float = POWER, exact: bool = True
) -> int | None:
    """The fewest paired seeds at which a one-sided test at level `alpha` detects the effect
    d_z = |mean| / sd with probability `power`; None when there is no effect (mean 0) or no sd.

    Power is the paired t-test's, from the noncentral t: P(T_{n-1, d_z sqrt(n)} > t_{1-alpha, n-1})
    (the sign-flip test of the mean has the same large-sample power). With `exact` (sign-flip,
    Wilcoxon) n is also at least the fewest seeds whose one-sided floor 1 / 2^n is below alpha:
    below that no effect, however large, can be shown. Differences without spread (sd 0) need just
    that floor. A mean below NEGLIGIBLE_DZ sds is rounding, so None too; past LARGE_N seeds the
    z-test's n is returned."""
    floor_n = seeds_needed(alpha, two_sided=False) if exact else 2
    if sd is None or mean == 0 or not math.isfinite(mean):
        return None
    if sd == 0:
        return max(floor_n, 2)
    dz = abs(mean) / sd
    if dz < NEGLIGIBLE_DZ:
        return None
    z = stats.norm.ppf(1 - alpha) + stats.norm.ppf(power)
    n = max(2, floor_n, math.ceil((z / dz) ** 2))  # the z-test's n: the t-test never needs fewer
    if n > LARGE_N:
        return n
    while stats.nct.sf(stats.t.ppf(1 - alpha, n - 1), n - 1, dz * math.sqrt(n)) < power:
        n += 1
    return n


def describe(test: str) -> str:
    """The test's name, for footnotes and captions."""
    check_test(test)
    return {
        "permutation": "exact two-sided sign-flip permutation test of the mean paired difference",
        "ttest": "two-sided paired t-test",
        "wilcoxon": "two-sided exact Wilcoxon signed-rank test",
    }[test]


def limits(test: str, n: int, alpha: float, fewest: int | None = None) -> str:
    """What n generative seeds (down to `fewest` in some comparisons) can and cannot show with `test`."""
    seeds = f"{n} generative seed{'s' if n != 1 else ''}"
    if test == "ttest":
        return (
            f"With n = {seeds} the t-test rests on {max(n - 1, 0)} degree(s) of freedom and assumes normal "
            "per-seed differences, which so few seeds cannot check; the exact sign-flip test could not go "
            f"below p = {min_p(n):.3g}."
        )
    floor, needed = min_p(n), seeds_needed(alpha)
    if floor >= alpha:
        return (
            f"With n = {seeds} the smallest attainable p is 2/2^{n} = {floor:.3g} ≥ {alpha:g}, so no mark "
            f"can appear: {n} seed{'s' if n != 1 else ''} can show the size and sign of each seed's "
            "difference, not a significant one, and a missing mark is not evidence of no difference "
            f"(p < {alpha:g} needs at least {needed} seeds)."
        )
    text = f"With n = {seeds} the smallest attainable p is 2/2^{n} = {floor:.3g}."
    if fewest is not None and fewest < needed:
        text += f" Comparisons over fewer than {needed} seeds (here down to {fewest}) can never be marked."
    return text
