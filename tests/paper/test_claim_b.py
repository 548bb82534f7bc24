"""Claim (b)'s rule on per-seed numbers whose answer is known (bench.paper.claim_b)."""

import numpy as np
import pytest

from bench.paper.claim_b import Condition, condition, geometry_verdict, relative_change


def _seeds(values):
    return dict(enumerate(float(v) for v in values))


def _verdict(rng, n, align_shift=0.0, std_shift=0.0, path_scale=1.0):
    """Reference statistics drawn per seed; the optimised ones shifted by the given amounts plus noise."""
    ref_a, ref_s, ref_p = rng.normal(0.4, 0.02, n), rng.normal(1.0, 0.05, n), rng.normal(10.0, 0.3, n)
    own_a = ref_a + align_shift + rng.normal(0, 0.02, n)
    own_s = ref_s + std_shift + rng.normal(0, 0.05, n)
    own_p = ref_p * path_scale * (1 + rng.normal(0, 0.01, n))
    return geometry_verdict(
        condition(_seeds(own_a), _seeds(ref_a), True),
        condition(_seeds(own_s), _seeds(ref_s), False),
        relative_change(_seeds(own_p), _seeds(ref_p)),
    )


def test_a_large_consistent_gain_at_ten_seeds_holds():
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert _verdict(rng, 10, align_shift=0.2, std_shift=-0.5, path_scale=0.97).word == "holds"


@pytest.mark.parametrize("n", [3, 6, 10])
def test_no_difference_rarely_refutes_or_confirms(n):
    rng = np.random.default_rng(n)
    words = [_verdict(rng, n).word for _ in range(200)]
    assert words.count("holds") / len(words) <= 0.05  # an intersection-union test at level alpha
    assert words.count("does not hold") / len(words) <= 0.10


def test_a_gain_bought_with_longer_paths_does_not_hold():
    v = _verdict(np.random.default_rng(1), 10, align_shift=0.2, std_shift=-0.5, path_scale=1.3)
    assert v.word == "does not hold" and "path length (inflated)" in v.why


def test_a_consistently_worse_alignment_does_not_hold_and_three_seeds_decide_nothing():
    assert _verdict(np.random.default_rng(2), 10, align_shift=-0.2).word == "does not hold"
    assert _verdict(np.random.default_rng(3), 3, align_shift=0.2, std_shift=-0.5).word == "inconclusive"


def test_condition_orients_the_one_sided_p_by_direction_against_scipy_free_enumeration():
    own, ref = _seeds([1.0, 2.0, 3.0, 4.0]), _seeds([0.0, 0.0, 0.0, 0.0])
    up = condition(own, ref, True)
    assert up == Condition(4, 2.5, 1 / 16, 1.0)  # all four positive: only the identity flip is as large
    down = condition(own, ref, False)
    assert (down.p_better, down.p_worse) == (1.0, 1 / 16)


def test_relative_change_matches_a_hand_computed_t_bound():
    from scipy import stats

    own, ref = _seeds([11, 10.5, 10.2]), _seeds([10, 10, 10])
    x = np.array([0.1, 0.05, 0.02])
    half = stats.t.ppf(0.95, 2) * x.std(ddof=1) / np.sqrt(3)
    mean, lo, hi = relative_change(own, ref)
    assert (mean, lo, hi) == pytest.approx((x.mean(), x.mean() - half, x.mean() + half))


def test_missing_data_is_not_measured():
    assert geometry_verdict(None, None, None).word == "not measured"
