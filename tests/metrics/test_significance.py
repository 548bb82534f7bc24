"""Paired significance over generative seeds against independent computations (brute force, scipy)."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from bench.errors import BenchError
from bench.metrics.significance import (
    EXACT_MAX,
    compare,
    limits,
    min_p,
    paired,
    seed_means,
    seeds_needed,
    sign_flip_p,
    t_interval,
    ttest_p,
    wilcoxon_p,
)


def exact_wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided exact Wilcoxon p by enumerating every sign assignment (no ties, no zeros)."""
    ranks = stats.rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    total = ranks.sum()
    sums = np.array(
        [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=len(d))]
    )
    t = min(observed, total - observed)
    return min(1.0, 2 * np.mean(sums <= t))


def brute_force_sign_flip_p(d) -> float:
    """Share of all 2^n sign assignments whose |mean| reaches the observed |mean| (pure Python)."""
    observed = abs(math.fsum(d) / len(d))
    flips = list(itertools.product([1, -1], repeat=len(d)))
    hits = sum(
        abs(math.fsum(s * x for s, x in zip(signs, d)) / len(d)) >= observed - 1e-12 for signs in flips
    )
    return hits / len(flips)


def runs(per_seed: dict) -> dict:
    """{(seed, classifier): value} from {seed: [values]}."""
    return {(s, i): float(v) for s, values in per_seed.items() for i, v in enumerate(values)}


@pytest.mark.parametrize("seed", range(6))
def test_wilcoxon_p_equals_exact_enumeration(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 11))
    d = rng.normal(0.3 * (seed % 3), 1.0, n)
    assert wilcoxon_p(d) == pytest.approx(exact_wilcoxon_p(d), rel=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_sign_flip_p_equals_brute_force_enumeration(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 12))
    d = rng.normal(0.5 * (seed % 4), 1.0, n)
    assert sign_flip_p(d) == brute_force_sign_flip_p(d.tolist())
    same = [0.3, -0.3, 0.3, 0.3]  # equal magnitudes: ties in |mean| count as at least as extreme
    assert sign_flip_p(np.array(same)) == brute_force_sign_flip_p(same)


def test_sign_flip_p_beyond_exact_enumeration_is_a_close_monte_carlo():
    rng = np.random.default_rng(4)
    d = rng.normal(0.4, 1.0, EXACT_MAX + 1)
    signs = np.array(list(itertools.product([1, -1], repeat=len(d))))
    exact = np.mean(np.abs(signs @ d) >= abs(d.sum()) - 1e-9)
    assert abs(sign_flip_p(d) - exact) < 0.01  # Monte-Carlo standard error <= 0.002
    positive = np.full(EXACT_MAX + 2, 1.0)
    assert sign_flip_p(positive) <= 3 / 2**EXACT_MAX and sign_flip_p(positive, seed=1) > 0


def test_ttest_and_interval_match_scipy_on_seed_means():
    rng = np.random.default_rng(0)
    method = {s: rng.normal(0.6, 0.05, 5) for s in range(4)}
    reference = {s: rng.normal(0.55, 0.05, 5) for s in range(4)}
    result = compare(runs(method), runs(reference), "ttest", alpha=0.05)
    x = np.array([method[s].mean() for s in range(4)])
    y = np.array([reference[s].mean() for s in range(4)])
    # the paired t-test by hand: t = mean(d) / (sd(d) / sqrt(n)), two-sided p from the t(n - 1) tail
    d = x - y
    se = d.std(ddof=1) / np.sqrt(len(d))
    t_stat = d.mean() / se
    assert result.n == 4 and result.p == pytest.approx(2 * stats.t.sf(abs(t_stat), df=3), rel=1e-9)
    assert result.mean_diff == pytest.approx(d.mean())
    half = stats.t.ppf(0.975, df=3) * se
    assert (result.low, result.high) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-9)
    assert result.significant == (result.p < 0.05)
    assert ttest_p(np.array([0.1, 0.1, 0.1])) is None  # no spread: scipy's tiny p would be rounding noise
    assert t_interval(np.array([1.0])) == (None, None)


def test_classifier_runs_are_averaged_within_their_generative_seed_before_pairing():
    a = runs({0: [1.0, 3.0], 1: [5.0], 2: [7.0, 9.0, 11.0]})
    b = {(0,): 0.0, (1,): 1.0, (3,): 4.0}
    assert seed_means(a) == {0: 2.0, 1: 5.0, 2: 9.0}
    seeds, x, y = paired(a, b)
    assert seeds == [0, 1] and x.tolist() == [2.0, 5.0] and y.tolist() == [0.0, 1.0]
    result = compare(a, b)
    assert result.n == 2 and result.diffs == ((0, 2.0), (1, 4.0)) and result.mean_diff == 3.0
    assert compare({(0,): 1.0}, {(1,): 1.0}) is None


def test_three_seeds_with_mixed_signs_are_never_significant_however_many_classifiers():
    """The acceptance check: 3 x 50 classifier runs with huge, consistent within-seed differences."""
    rng = np.random.default_rng(3)
    shift = {0: 0.30, 1: -0.25, 2: 0.40}  # mean difference per generative seed: mixed signs
    reference = {s: 0.5 + rng.normal(0, 0.001, 50) for s in shift}
    method = {s: reference[s] + shift[s] + rng.normal(0, 0.001, 50) for s in shift}
    for test in ("permutation", "ttest", "wilcoxon"):
        result = compare(runs(method), runs(reference), test)
        assert result.n == 3 and not result.significant, test
    assert compare(runs(method), runs(reference)).p == pytest.approx(0.5)  # 4 of 8 flips as extreme
    same_sign = {s: reference[s] + 0.3 for s in shift}  # even all positive: 3 seeds cannot reach 0.05
    assert compare(runs(same_sign), runs(reference)).p == pytest.approx(0.25) == min_p(3)


def test_eight_seeds_with_large_positive_differences_are_significant():
    rng = np.random.default_rng(5)
    reference = {s: 0.5 + rng.normal(0, 0.01, 3) for s in range(8)}
    method = {s: reference[s] + 0.1 + rng.normal(0, 0.01, 3) for s in range(8)}
    result = compare(runs(method), runs(reference))
    assert result.n == 8 and result.p == pytest.approx(2 / 2**8) and result.significant
    assert result.low > 0 and compare(runs(method), runs(reference), "ttest").significant


def test_all_zero_differences_are_not_significant():
    same = {(s,): float(s) for s in range(8)}
    for test in ("permutation", "wilcoxon"):
        assert compare(same, same, test).p == 1.0 and not compare(same, same, test).significant
    assert compare(same, same, "ttest").p is None and not compare(same, same, "ttest").significant


def test_limits_say_what_n_seeds_can_show():
    assert min_p(3) == 0.25 and seeds_needed(0.05) == 6 and min_p(6) < 0.05 <= min_p(5)
    text = limits("permutation", 3, 0.05)
    assert "smallest attainable p is 2/2^3 = 0.25" in text and "no mark can appear" in text
    assert "at least 6 seeds" in text
    assert "down to 3" in limits("permutation", 8, 0.05, fewest=3)
    assert "2 degree(s) of freedom" in limits("ttest", 3, 0.05)


def test_unknown_test_is_a_clear_error():
    with pytest.raises(BenchError, match="unknown significance test 'bootstrap'"):
        compare({(0,): 1.0}, {(0,): 0.0}, "bootstrap")
