"""Paired significance tests against independent computations (exact enumeration, scipy)."""

import itertools

import numpy as np
import pytest
from scipy import stats

from bench.errors import BenchError
from bench.significance import compare, min_p, paired, wilcoxon_p


def exact_wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided exact Wilcoxon p by enumerating every sign assignment (no ties, no zeros)."""
    ranks = stats.rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    total = ranks.sum()
    sums = np.array([sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=len(d))])
    t = min(observed, total - observed)
    return min(1.0, 2 * np.mean(sums <= t))


@pytest.mark.parametrize("seed", range(6))
def test_wilcoxon_p_equals_exact_enumeration(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 11))
    d = rng.normal(0.3 * (seed % 3), 1.0, n)
    assert wilcoxon_p(d) == pytest.approx(exact_wilcoxon_p(d), rel=1e-9)


def test_marks_follow_scipy_on_the_same_numbers():
    rng = np.random.default_rng(0)
    for shift in (0.0, 0.05, 0.5, 2.0):
        a = {(s, i): float(v) for (s, i), v in zip(itertools.product(range(3), range(3)), rng.normal(shift, 1, 9))}
        b = {k: 0.0 for k in a}
        result = compare(a, b, "wilcoxon", alpha=0.05)
        p = stats.wilcoxon(np.array([a[k] for k in sorted(a)])).pvalue
        assert result.n == 9 and result.p == pytest.approx(p)
        assert result.significant == (p < 0.05)


def test_pairs_only_shared_keys_and_all_zero_differences_are_not_significant():
    x, y = paired({(0,): 1.0, (1,): 2.0, (2,): 3.0}, {(1,): 5.0, (2,): 7.0, (3,): 0.0})
    assert x.tolist() == [2.0, 3.0] and y.tolist() == [5.0, 7.0]
    same = {(s,): float(s) for s in range(8)}
    assert compare(same, same).p == 1.0 and not compare(same, same).significant
    assert compare({(0,): 1.0}, {(1,): 1.0}) is None


def test_three_pairs_can_never_be_significant_with_wilcoxon():
    a, b = {(s,): 10.0 + s for s in range(3)}, {(s,): 0.0 for s in range(3)}
    result = compare(a, b)
    assert result.p == pytest.approx(0.25) and min_p(3) == 0.25 and not result.significant
    assert min_p(6) < 0.05 <= min_p(5)


def test_bootstrap_interval_matches_scipy_and_decides_by_zero():
    rng = np.random.default_rng(1)
    d = rng.normal(1.0, 0.5, 12)
    a = {(i,): float(v) for i, v in enumerate(d)}
    b = {(i,): 0.0 for i in range(12)}
    result = compare(a, b, "bootstrap", alpha=0.05, seed=3)
    ref = stats.bootstrap((d,), np.mean, n_resamples=9999, confidence_level=0.95, method="percentile",
                          random_state=np.random.default_rng(3)).confidence_interval
    assert (result.low, result.high) == pytest.approx((ref.low, ref.high))
    assert result.significant == (ref.low > 0 or ref.high < 0) and result.significant
    noise = {(i,): float(v) for i, v in enumerate(rng.normal(0.0, 1.0, 12))}
    assert not compare(noise, b, "bootstrap").significant
    assert not compare({(0,): 5.0}, {(0,): 0.0}, "bootstrap").significant  # one pair: never


def test_unknown_test_is_a_clear_error():
    with pytest.raises(BenchError, match="unknown significance test 'ttest'"):
        compare({(0,): 1.0}, {(0,): 0.0}, "ttest")
