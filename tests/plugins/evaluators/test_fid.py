"""Fréchet distance against scipy.linalg.sqrtm and closed forms; the FID evaluator on a fake cell."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import torch

from bench.context import CellContext
from bench.data.targets import ClassTarget
from bench.dataset import Dataset, Split
from bench.errors import BenchError
from bench.evaluators.fid import FID, frechet_distance, gaussian_stats, psd_factor
from bench.registry import evaluators


def _sqrtm_fid(mu1, s1, mu2, s2) -> float:
    """The pytorch-fid route: trace of the principal square root of the non-symmetric S1 S2."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _random_stats(rng, n: int, d: int):
    mixing = rng.standard_normal((d, d)) / np.sqrt(d)
    return gaussian_stats(rng.standard_normal((n, d)) @ mixing + rng.standard_normal(d))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sqrtm_when_covariances_are_full_rank(seed):
    rng = np.random.default_rng(seed)
    a, b = _random_stats(rng, 400, 24), _random_stats(rng, 300, 24)
    assert frechet_distance(*a, *b) == pytest.approx(_sqrtm_fid(*a, *b), rel=1e-6)
    assert frechet_distance(*a, *b) == pytest.approx(frechet_distance(*b, *a), rel=1e-9)


@pytest.mark.parametrize("n", [10, 64])  # ranks 9 and 63 of 64: eigh fallback, Cholesky of a singular S1
def test_rank_deficient_covariances_give_a_finite_nonnegative_distance(n):
    rng = np.random.default_rng(3)
    a, b = _random_stats(rng, n, 64), _random_stats(rng, n + 2, 64)
    value = frechet_distance(*a, *b)
    assert np.isfinite(value) and value >= 0
    # eigenvalues of S1 S2 are those of S1^(1/2) S2 S1^(1/2): real and >= 0 up to round-off
    eig = np.clip(np.linalg.eigvals(a[1] @ b[1]).real, 0, None)
    mu = a[0] - b[0]
    expected = mu @ mu + np.trace(a[1]) + np.trace(b[1]) - 2 * np.sqrt(eig).sum()
    assert value == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("n", [5, 50])
def test_psd_factor_reproduces_the_covariance_with_and_without_cholesky(n):
    sigma = _random_stats(np.random.default_rng(n), n, 16)[1]
    factor = psd_factor(sigma)
    assert factor.shape == ((16, 16) if n > 16 else (16, n - 1))  # the eigh fallback keeps the rank
    np.testing.assert_allclose(factor @ factor.T, sigma, atol=1e-12 * np.trace(sigma))


def test_identical_stats_are_at_distance_zero():
    rng = np.random.default_rng(4)
    mu, sigma = _random_stats(rng, 50, 16)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9 * np.trace(sigma))
    mu, sigma = _random_stats(rng, 5, 16)  # rank-deficient
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9 * np.trace(sigma))


def test_one_dimensional_and_diagonal_gaussians_match_the_closed_form():
    # W_2^2(N(m1, s1^2), N(m2, s2^2)) = (m1 - m2)^2 + (s1 - s2)^2, per axis for diagonal covariances
    value = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]]))
    assert value == pytest.approx(3.0**2 + (2.0 - 3.0) ** 2, rel=1e-12)
    rng = np.random.default_rng(5)
    m1, m2 = rng.standard_normal(10), rng.standard_normal(10)
    v1, v2 = rng.gamma(2, size=10), rng.gamma(2, size=10)
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_gaussian_stats_are_unbiased_float64_and_need_two_rows():
    x = np.random.default_rng(6).standard_normal((7, 3)).astype(np.float32)
    mu, sigma = gaussian_stats(x)
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64).T, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12)
    assert gaussian_stats(x[:2, :1])[1].shape == (1, 1)
    with pytest.raises(ValueError):
        gaussian_stats(x[:1])


# -- the evaluator on a fake cell whose features are the flattened samples -------------------------
class Flat(Dataset):
    kind = "image"
    class_names = ["head", "tail_a", "tail_b"]


def _split(rng, counts: dict[int, int], shift: float = 0.0) -> Split:
    y = torch.tensor([c for c, n in counts.items() for _ in range(n)])
    x = rng.standard_normal((len(y), 1, 2, 2)) + 3.0 * y.numpy()[:, None, None, None] + shift
    return Split(torch.tensor(x, dtype=torch.float32), y)


def _cell(tmp_path, synthetic: Split, init: Split | None = None) -> CellContext:
    rng = np.random.default_rng(7)
    train = _split(rng, {0: 60, 1: 30, 2: 25})
    test = _split(rng, {0: 40, 1: 20, 2: 50})
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


def test_evaluator_compares_equal_n_per_augmented_class_and_records_it(tmp_path):
    rng = np.random.default_rng(8)
    cell = _cell(tmp_path, _split(rng, {0: 5, 1: 35, 2: 12}))
    m = FID().evaluate(cell)
    details = json.loads((tmp_path / "fid.json").read_text())
    # class 1: 35 synthetic vs 20 test -> 20; class 2: 12 vs 50 -> 12; the head class is not augmented
    assert {name: c["n"] for name, c in details["classes"].items()} == {"tail_a": 20, "tail_b": 12}
    assert m["n/fid"] == 32
    assert m["fid/tail"] == pytest.approx(np.mean([c["fid"] for c in details["classes"].values()]))
    assert set(m) == {"fid/tail", "fid/pooled", "n/fid"}
    assert FID().evaluate(cell) == m  # seeded subsampling


def test_evaluator_scores_a_matching_distribution_better_than_a_shifted_one(tmp_path):
    rng = np.random.default_rng(9)
    same = FID().evaluate(_cell(tmp_path, _split(rng, {1: 200, 2: 200})))
    shifted = FID().evaluate(_cell(tmp_path, _split(rng, {1: 200, 2: 200}, shift=1.5)))
    assert same["fid/tail"] < shifted["fid/tail"] and same["fid/pooled"] < shifted["fid/pooled"]
    # the shift adds ||(1.5, 1.5, 1.5, 1.5)||^2 = 9 to the mean term of every class
    assert shifted["fid/tail"] - same["fid/tail"] == pytest.approx(9.0, abs=3.0)


def test_init_metrics_appear_only_with_an_untrained_reference(tmp_path):
    rng = np.random.default_rng(10)
    synthetic = _split(rng, {1: 20, 2: 20})
    assert not any(k.endswith("@init") for k in FID().evaluate(_cell(tmp_path, synthetic)))
    m = FID().evaluate(_cell(tmp_path, synthetic, init=_split(rng, {1: 20, 2: 20}, shift=4.0)))
    assert {"fid/tail@init", "fid/pooled@init", "n/fid@init"} <= set(m)
    assert m["fid/tail@init"] > m["fid/tail"]


def test_classes_with_fewer_than_two_pairs_are_skipped_and_train_can_be_the_reference(tmp_path):
    rng = np.random.default_rng(11)
    cell = _cell(tmp_path, _split(rng, {1: 1, 2: 40}))
    assert FID().evaluate(cell)["n/fid"] == 40
    assert FID(reference="train").evaluate(cell)["n/fid"] == 25  # train has 25 of class 2
    with pytest.raises(BenchError, match="reference"):
        FID(reference="val")


def test_without_a_plan_every_class_with_synthetic_samples_is_scored(tmp_path):
    rng = np.random.default_rng(12)
    cell = _cell(tmp_path, _split(rng, {0: 10, 2: 10}))
    cell.targets = None
    FID().evaluate(cell)
    assert set(json.loads((tmp_path / "fid.json").read_text())["classes"]) == {"head", "tail_b"}
    assert evaluators.get("fid") is FID


@pytest.mark.parametrize("n,d,shift", [(64, 8, 0.0), (200, 16, 0.7), (40, 32, 1.5)])
def test_fid_equals_torchmetrics_on_the_same_custom_features(n, d, shift):
    """torchmetrics' FrechetInceptionDistance with an identity feature module (the features fed
    in directly, as bench does with its domain features), in float64."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    from bench.evaluators.fid import fid
    from bench.evaluators.kid import Features

    rng = np.random.default_rng(n + d)
    real = rng.normal(size=(n, d))
    fake = rng.normal(shift, 1.3, size=(n, d)) @ rng.normal(scale=0.5, size=(d, d))
    reference = FrechetInceptionDistance(feature=Features(d), normalize=False).set_dtype(torch.float64)
    reference.update(torch.as_tensor(real), real=True)
    reference.update(torch.as_tensor(fake), real=False)
    assert fid(fake, real) == pytest.approx(float(reference.compute()), rel=1e-6, abs=1e-8)
