"""Sliced Wasserstein and subclass coverage against closed forms and independent references."""

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.neighbors import NearestNeighbors

from bench.context import CellContext
from bench.dataset import Split
from bench.datasets.synthetic2d import Synthetic2D
from bench.evaluators.swd import SlicedWasserstein, random_directions, sliced_wasserstein, subclass_coverage
from bench.registry import evaluators


@pytest.fixture(scope="module")
def synth():
    return Synthetic2D()


def _w2_squared_by_assignment(u: np.ndarray, v: np.ndarray) -> float:
    """W_2^2 between two equal-size 1-D samples as an optimal assignment problem."""
    cost = (u[:, None] - v[None, :]) ** 2
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def test_one_direction_equals_the_optimal_assignment():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((60, 3)), rng.gamma(2.0, size=(60, 3))
    direction = random_directions(1, 3, seed=4)
    expected = _w2_squared_by_assignment(a @ direction[0], b @ direction[0])
    assert sliced_wasserstein(a, b, direction) ** 2 == pytest.approx(expected, rel=1e-10)
    assert sliced_wasserstein(a, b, direction) == pytest.approx(sliced_wasserstein(b, a, direction))


def test_directions_are_unit_and_seeded():
    d = random_directions(100, 5, seed=3)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0)
    np.testing.assert_array_equal(d, random_directions(100, 5, seed=3))
    assert not np.allclose(d, random_directions(100, 5, seed=4))


@pytest.mark.slow
def test_shifted_isotropic_gaussians_match_the_closed_form():
    # projections of N(0, I) and N(m, I) on unit theta are N(0, 1) and N(theta.m, 1): W_2^2 = (theta.m)^2
    rng, dim, m = np.random.default_rng(1), 4, np.array([2.0, 0.0, 0.0, 0.0])
    a, b = rng.standard_normal((5000, dim)), rng.standard_normal((5000, dim)) + m
    directions = random_directions(2048, dim, seed=0)
    sw2 = sliced_wasserstein(a, b, directions) ** 2
    assert sw2 == pytest.approx(np.mean((directions @ m) ** 2), abs=0.05)
    assert sw2 == pytest.approx(m @ m / dim, abs=0.1)  # E[(theta.m)^2] = |m|^2 / d


def test_identical_sets_are_at_distance_zero():
    a = np.random.default_rng(2).standard_normal((100, 2))
    directions = random_directions(64, 2, seed=0)
    assert sliced_wasserstein(a, a, directions) == 0.0
    assert sliced_wasserstein(a, a[::-1].copy(), directions) == 0.0
    with pytest.raises(ValueError):
        sliced_wasserstein(a, a[:50], directions)


def test_true_mixture_scores_lower_than_a_shifted_copy(synth):
    test, fresh = synth.load("test"), synth.sample(200, seed=1)
    directions = random_directions(256, 2, seed=0)
    for c in range(synth.n_classes):
        real, good = test.x[test.y == c].double().numpy(), fresh.x[fresh.y == c].double().numpy()
        shifted = good + np.array([0.5, 0.0])
        assert sliced_wasserstein(good, real, directions) < sliced_wasserstein(shifted, real, directions)


def _coverage_reference(real, sub, fake, k):
    radius = NearestNeighbors(n_neighbors=k + 1).fit(real).kneighbors(real)[0][:, k]
    nearest = NearestNeighbors(n_neighbors=1).fit(fake).kneighbors(real)[0][:, 0]
    covered = nearest < radius
    return {int(s): covered[sub == s].mean() for s in np.unique(sub)}


def test_coverage_matches_a_nearest_neighbours_reference():
    rng = np.random.default_rng(5)
    real, sub = rng.standard_normal((150, 2)), rng.integers(0, 3, 150)
    fake = rng.standard_normal((90, 2)) * 1.5 + 0.5
    got = subclass_coverage(real, sub, fake, k=5)
    ref = _coverage_reference(real, sub, fake, k=5)
    assert got.keys() == ref.keys() and all(got[s] == pytest.approx(ref[s]) for s in ref)
    assert 0 < min(got.values()) and max(got.values()) < 1  # a case where the answer is not trivial


def test_coverage_is_one_on_the_real_points_and_zero_for_a_missing_subclass(synth):
    test = synth.load("test")
    real, sub = test.x[test.y == 7].double().numpy(), test.subclass[test.y == 7].numpy()
    assert subclass_coverage(real, sub, real, k=5) == {s: 1.0 for s in range(4)}
    without_first = subclass_coverage(real, sub, real[sub != 0], k=5)
    assert without_first[0] < 0.05 and all(without_first[s] == 1.0 for s in (1, 2, 3))
    assert subclass_coverage(real, sub, real[:0], k=5) == {s: 0.0 for s in range(4)}


def _cell(synth, synthetic, init=None, test=None):
    return CellContext(synth, synth.load("train"), test or synth.load("test"), synthetic, Path("."), 0, init)


def test_evaluate_names_directions_and_init_reference(synth):
    good = synth.sample(200, seed=1)
    init = Split(torch.randn(len(good), 2, generator=torch.Generator().manual_seed(0)), good.y)
    evaluator = SlicedWasserstein()
    metrics = evaluator.evaluate(_cell(synth, good, init))
    base = {"swd/all", "swd/tail", "coverage/tail"} | {f"swd/class/class{c}" for c in range(8)}
    assert set(metrics) == base | {name + "@init" for name in base}
    assert all(evaluator.higher_is_better[name] == name.startswith("coverage") for name in metrics)
    assert metrics["swd/all@init"] > 10 * metrics["swd/all"]
    assert metrics["coverage/tail"] > 0.9 and metrics["coverage/tail@init"] < 0.2
    per_class = [metrics[f"swd/class/class{c}"] for c in range(8)]
    assert metrics["swd/all"] == pytest.approx(np.mean(per_class))
    assert metrics["swd/tail"] == pytest.approx(np.mean(per_class[5:]))  # the 3 rarest of 8 classes
    assert evaluator.evaluate(_cell(synth, good, init)) == metrics  # deterministic


def test_source_reference_is_scored_like_the_synthetic_set(synth):
    good, noise = synth.sample(200, seed=1), synth.sample(200, seed=2)
    noise = Split(torch.randn(len(noise), 2, generator=torch.Generator().manual_seed(0)), noise.y)
    # the source-only set scored exactly as a synthetic set would be
    cell = CellContext(
        synth, synth.load("train"), synth.load("test"), good, Path("."), 0, synthetic_source=noise
    )
    metrics = SlicedWasserstein().evaluate(cell)
    alone = SlicedWasserstein().evaluate(_cell(synth, noise))
    assert {k: v for k, v in metrics.items() if k.endswith("@source")} == {
        k + "@source": v for k, v in alone.items()
    }
    assert metrics["swd/tail@source"] > 10 * metrics["swd/tail"]
    assert not any(k.endswith("@init") for k in metrics)


def test_evaluate_coverage_drops_with_missing_tail_subclasses(synth):
    test = synth.load("test")
    assert SlicedWasserstein().evaluate(_cell(synth, test))["coverage/tail"] == 1.0
    # drop subclass 0 of every tail class (5, 6, 7 have 2, 3, 4 subclasses: 3 of 9 pairs lost)
    dropped = test.subset(~((test.y >= 5) & (test.subclass == 0)))
    metrics = SlicedWasserstein().evaluate(_cell(synth, dropped))
    assert metrics["coverage/tail"] == pytest.approx(6 / 9, abs=0.02)
    assert "swd/all@init" not in metrics


def test_evaluate_skips_coverage_without_ground_truth_and_absent_classes(synth):
    test = synth.load("test")
    no_truth = Split(test.x, test.y)
    only_tail = test.subset(test.y >= 5)
    metrics = SlicedWasserstein().evaluate(_cell(synth, only_tail, test=no_truth))
    assert "coverage/tail" not in metrics
    assert set(metrics) == {"swd/all", "swd/tail", "swd/class/class5", "swd/class/class6", "swd/class/class7"}


def test_swd_is_the_registered_plugin():
    assert evaluators.get("swd") is SlicedWasserstein
    assert SlicedWasserstein.applies_to == ("vector",)
