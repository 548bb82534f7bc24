"""KID (torchmetrics) on domain features: the unbiased squared MMD of the cubic kernel."""

import numpy as np
import pytest
from sklearn.metrics.pairwise import polynomial_kernel

from bench.evaluators.fid import fid
from bench.evaluators.kid import kid


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The U-statistic of MMD^2 with k(a, b) = (a . b / d + 1)^3, from scikit-learn's kernel."""
    k = lambda a, b: polynomial_kernel(a, b, degree=3, gamma=1.0 / x.shape[1], coef0=1.0)  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m, n = len(x), len(y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2 * kxy.mean()
    )


@pytest.mark.parametrize("n,d,shift", [(12, 3, 0.0), (30, 8, 0.5), (50, 16, 2.0)])
def test_kid_equals_the_unbiased_mmd_computed_independently(n, d, shift):
    rng = np.random.default_rng(n)
    fake, real = rng.normal(size=(n, d)), rng.normal(shift, 1.0, size=(n, d))
    # subsets of all n rows: every subset is the whole set, so KID is the estimate on all samples
    assert kid(fake, real) == pytest.approx(mmd2_unbiased(fake, real), rel=1e-9, abs=1e-12)


def test_kid_grows_with_the_distance_between_the_sets():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 8))
    values = [kid(rng.normal(shift, 1.0, size=(200, 8)), real) for shift in (0.0, 0.25, 0.5, 1.0)]
    assert values == sorted(values) and abs(values[0]) < 0.05 < values[-1]


def test_kid_is_unbiased_at_small_n_where_fid_is_not():
    """Two samples of one distribution: KID averages to 0 at n = 10, FID to a large positive bias."""
    rng = np.random.default_rng(1)
    kids, fids = [], []
    for _ in range(200):
        a, b = rng.normal(size=(10, 4)), rng.normal(size=(10, 4))
        kids.append(kid(a, b))
        fids.append(fid(a, b))
    standard_error = np.std(kids) / np.sqrt(len(kids))
    assert abs(np.mean(kids)) < 3 * standard_error
    assert np.mean(fids) > 10 * np.std(fids) / np.sqrt(len(fids))


def test_subsets_larger_sets_deterministically_under_a_seed():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(40, 4)), rng.normal(0.3, 1.0, size=(60, 4))
    assert kid(a, b, seed=3, max_subset=20) == kid(a, b, seed=3, max_subset=20)
    assert kid(a, b, seed=3, max_subset=20) != kid(a, b, seed=4, max_subset=20)


def test_the_evaluator_scores_each_augmented_class_at_equal_n_like_fid(tmp_path):
    """On fid's test cell: one KID per augmented class (the head class is not scored), their mean
    as kid/tail, and a shifted synthetic set scored worse."""
    import json

    from test_fid import _cell, _split

    from bench.evaluators.kid import KID

    rng = np.random.default_rng(8)
    cell = _cell(tmp_path, _split(rng, {0: 5, 1: 35, 2: 12}))
    m = KID().evaluate(cell)
    assert set(m) == {"kid/tail", "kid/pooled"}
    details = json.loads((tmp_path / "kid.json").read_text())["classes"]
    assert set(details) == {"tail_a", "tail_b"}  # the head class is not augmented
    assert m["kid/tail"] == pytest.approx(np.mean([c["kid"] for c in details.values()]))
    shifted = KID().evaluate(
        _cell(tmp_path, _split(np.random.default_rng(8), {0: 5, 1: 35, 2: 12}, shift=1.5))
    )
    assert shifted["kid/tail"] > m["kid/tail"] + 0.1
