"""IRS: Stirling approximation vs exact integers, likelihood vs an independent recursion, known
generators, and the evaluator on a fake cell."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from bench.context import CellContext
from bench.data.targets import ClassTarget
from bench.dataset import Dataset, Split
from bench.evaluators.irs import (
    IRS,
    distinct_count_log_pmf,
    image_retrieval_score,
    irs_from_counts,
    log_likelihood,
    log_stirling2,
    nearest_train_index,
)
from bench.registry import evaluators


def _exact_stirling2(n: int) -> list[int]:
    """S2(n, k) for k = 0..n by S2(m, k) = k S2(m-1, k) + S2(m-1, k-1), in Python ints."""
    row = [1]
    for m in range(1, n + 1):
        row = [0] + [k * (row[k] if k < m else 0) + row[k - 1] for k in range(1, m + 1)]
    return row


def _distinct_count_pmf(s: int, n: int) -> np.ndarray:
    """P(K = k | s, n) for k = 0..n by adding one uniform draw from s items at a time."""
    p = np.zeros(n + 1)
    p[0] = 1.0
    for _ in range(n):
        p[1:] = p[1:] * np.arange(1, n + 1) / s + p[:-1] * (s - np.arange(0, n)) / s
        p[0] = 0.0
    return p


def test_temme_log_stirling_is_within_0_07_over_n_of_the_exact_value():
    # measured: max over 2 <= n <= 120, 1 <= k <= n of n * |error| is 0.069
    # (|error| <= 0.014 at n = 3, 6e-4 at n = 100)
    for n in (2, 3, 5, 10, 30, 120):
        exact = _exact_stirling2(n)
        k = np.arange(1, n + 1)
        expected = [math.log(exact[i]) for i in k]
        np.testing.assert_allclose(log_stirling2(n, k), expected, atol=0.07 / n, rtol=0)
    assert log_stirling2(5, [0, 6]).tolist() == [-np.inf, -np.inf]


def test_likelihood_with_exact_stirling_numbers_equals_the_draw_recursion():
    n = 12
    exact = _exact_stirling2(n)
    for s in (5, 12, 40):
        dp = _distinct_count_pmf(s, n)
        for k in range(1, min(n, s) + 1):
            assert math.exp(log_likelihood(s, k, n, math.log(exact[k]))) == pytest.approx(dp[k], rel=1e-10)
        renormalised = np.exp(distinct_count_log_pmf(s, n, log_stirling2(n, np.arange(1, n + 1))))
        np.testing.assert_allclose(renormalised, dp[1 : min(n, s) + 1], rtol=0.02, atol=1e-12)


@pytest.mark.parametrize("k, n, N", [(17, 30, 60), (30, 80, 100), (8, 8, 50), (3, 40, 10)])
def test_s_hat_and_bounds_match_the_exact_distribution(k, n, N):
    pmf = {s: _distinct_count_pmf(s, n) for s in range(k, N + 1)}
    r = irs_from_counts(k, n, N, alpha=0.05)
    assert r["s_hat"] == max(pmf, key=lambda s: pmf[s][k])  # the Stirling factor is constant in s
    high = max([r["s_hat"]] + [s for s in pmf if s > r["s_hat"] and pmf[s][: k + 1].sum() >= 0.05])
    low = min([r["s_hat"]] + [s for s in pmf if s < r["s_hat"] and pmf[s][k:].sum() >= 0.05])
    assert abs(r["irs_inf_high"] * N - high) <= 1 and abs(r["irs_inf_low"] * N - low) <= 1
    assert r["irs_inf_low"] <= r["irs_inf"] <= r["irs_inf_high"] and r["irs_alpha"] == k / N


def test_bounds_bracket_the_learned_fraction_of_a_uniform_generator_about_90_percent_of_the_time():
    # two one-sided 5% tests: the interval misses m about 10% of the time
    rng, N, n, hits = np.random.default_rng(0), 1000, 500, []
    for m in np.tile([50, 200, 600], 20):
        k = len(np.unique(rng.integers(0, m, n)))
        r = irs_from_counts(k, n, N)
        hits.append(r["irs_inf_low"] <= m / N <= r["irs_inf_high"])
        assert r["irs_inf"] == pytest.approx(m / N, rel=0.2)
    assert 0.8 <= np.mean(hits) <= 0.98


def test_queries_drawn_from_m_training_items_give_irs_inf_near_m_over_n():
    rng = np.random.default_rng(1)
    train = rng.standard_normal((800, 6))
    learned = rng.choice(800, 200, replace=False)
    drawn = rng.choice(learned, 400)
    r = image_retrieval_score(train, train[drawn] + 1e-6 * rng.standard_normal((400, 6)))
    assert r["n"] == 400 and r["N"] == 800 and r["k"] == len(np.unique(drawn))
    assert r["irs_inf_low"] <= 0.25 <= r["irs_inf_high"] and r["irs_inf"] == pytest.approx(0.25, rel=0.1)
    assert r["irs_alpha"] < r["irs_inf"]


def test_the_training_set_as_queries_covers_everything_and_resampling_it_covers_1_minus_1_over_e():
    rng = np.random.default_rng(2)
    train = rng.standard_normal((2000, 4))
    itself = image_retrieval_score(train, train)
    assert itself["irs_alpha"] == itself["irs_inf"] == itself["irs_inf_low"] == 1.0
    for n in (1000, 2000, 4000):  # expected coverage 1 - (1 - 1/N)^n: 1 - e^(-1/2), 1 - 1/e, 1 - e^(-2)
        r = image_retrieval_score(train, train[rng.integers(0, 2000, n)])
        assert r["irs_alpha"] == pytest.approx(1 - (1 - 1 / 2000) ** n, abs=0.025)
        assert r["irs_inf_high"] == 1.0 and r["irs_inf_low"] <= 1.0 and r["irs_inf"] > 0.9


def test_nearest_index_matches_sklearn_across_batches():
    rng = np.random.default_rng(3)
    train, queries = rng.standard_normal((300, 5)), rng.standard_normal((257, 5))
    expected = NearestNeighbors(n_neighbors=1).fit(train).kneighbors(queries, return_distance=False)[:, 0]
    np.testing.assert_array_equal(nearest_train_index(train, queries, batch_elems=300 * 10), expected)


# -- the evaluator on a fake cell whose features are the flattened samples -------------------------
class Flat(Dataset):
    kind = "image"
    class_names = ["head", "tail_a", "tail_b"]


def _split(rng, counts: dict[int, int]) -> Split:
    y = torch.tensor([c for c, n in counts.items() for _ in range(n)])
    x = rng.standard_normal((len(y), 1, 2, 2)) + 5.0 * y.numpy()[:, None, None, None]
    return Split(torch.tensor(x, dtype=torch.float32), y)


def _copies(train: Split, per_class: dict[int, tuple[int, int]], rng) -> Split:
    """n draws (with replacement) from m training items of each class: a memorising generator."""
    idx = [
        rng.choice(rng.choice(np.flatnonzero(train.y.numpy() == c), m, replace=False), n)
        for c, (m, n) in per_class.items()
    ]
    return train.subset(torch.as_tensor(np.concatenate(idx)))


def _cell(tmp_path, synthetic=None, init=None):
    rng = np.random.default_rng(4)
    train, test = _split(rng, {0: 50, 1: 100, 2: 120}), _split(rng, {0: 30, 1: 60, 2: 200})
    synthetic = synthetic or _copies(train, {1: (20, 80), 2: (60, 150)}, rng)
    targets = [ClassTarget(n, 0, 0.0, "g", s) for n, s in zip(Flat.class_names, [0, 10, 10])]
    extractor = SimpleNamespace(embed=lambda x: np.asarray(x).reshape(len(x), -1))
    return CellContext(
        Flat(),
        train,
        test,
        synthetic,
        tmp_path,
        seed=0,
        synthetic_init=init,
        targets=targets,
        extractor=lambda: extractor,
    )


def test_evaluator_uses_equal_n_queries_per_augmented_class_and_records_them(tmp_path):
    cell = _cell(tmp_path)
    m = IRS().evaluate(cell)
    details = json.loads((tmp_path / "irs.json").read_text())
    assert set(details["classes"]) == {"tail_a", "tail_b"}
    a, b = details["classes"]["tail_a"]["synthetic"], details["classes"]["tail_b"]["synthetic"]
    assert a["synthetic"]["n"] == a["test"]["n"] == 60 and b["synthetic"]["n"] == b["test"]["n"] == 150
    assert a["synthetic"]["N"] == 100 and details["pooled"]["synthetic"]["N"] == 220
    # memorised 20 of 100 and 60 of 120 training items; fresh test images reach far more of them
    assert a["synthetic"]["irs_inf_low"] <= 0.2 <= a["synthetic"]["irs_inf_high"]
    assert b["synthetic"]["irs_inf_low"] <= 0.5 <= b["synthetic"]["irs_inf_high"]
    assert m["irs_inf/tail"] == pytest.approx((a["synthetic"]["irs_inf"] + b["synthetic"]["irs_inf"]) / 2)
    assert a["irs_adjusted"] == a["synthetic"]["s_hat"] / a["test"]["s_hat"] < 0.5
    assert m["irs_adjusted/pooled"] < 1
    assert m["irs_alpha/pooled"] == details["pooled"]["synthetic"]["irs_alpha"]
    assert set(m) == {
        "irs_inf/tail",
        "irs_inf/pooled",
        "irs_alpha/pooled",
        "irs_adjusted/tail",
        "irs_adjusted/pooled",
        "n/irs",
    }
    assert m["n/irs"] == 60 + 150 == details["pooled"]["synthetic"]["n"]  # pooled queries at equal n
    assert all(IRS.higher_is_better[k] for k in m if not k.startswith("n/"))


def test_init_metrics_appear_only_with_an_untrained_reference(tmp_path):
    rng = np.random.default_rng(5)
    init = _split(rng, {1: 40, 2: 40})
    m = IRS().evaluate(_cell(tmp_path, init=init))
    assert {k for k in m if k.endswith("@init")} == {k + "@init" for k in m if not k.endswith("@init")}
    assert m["irs_adjusted/tail@init"] > m["irs_adjusted/tail"]  # fresh draws beat memorised copies
    assert evaluators.get("irs") is IRS
