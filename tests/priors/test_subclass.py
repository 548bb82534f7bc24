"""Subclass induction: EBIC against hand formulas and sklearn, K recovery, the min-size guard, PCA."""

import math

import numpy as np
import pytest
from scipy.special import comb
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

from bench.errors import BenchError
from bench.priors.subclass import check_subclass_config, ebic, induce_subclasses, n_free_parameters

GAMMAS = [0.0, 0.25, 0.5, 1.0]


def diagonal_mixture(k, d, n, seed, sep=10.0):
    """n points from k diagonal Gaussians with weights k:k-1:..:1, means sep apart on +-axes."""
    rng = np.random.default_rng(seed)
    weights = np.arange(k, 0, -1.0) / (k * (k + 1) / 2)
    counts = rng.multinomial(n, weights)
    means = np.zeros((k, d))
    for j in range(k):  # +-e_0, +-e_1, ...: every pair is at least sep * sqrt(2) apart
        means[j, j // 2] = sep * (1 if j % 2 == 0 else -1)
    scales = rng.uniform(0.5, 1.5, size=(k, d))
    x = np.concatenate([means[j] + scales[j] * rng.normal(size=(counts[j], d)) for j in range(k)])
    return x - x.mean(0), np.repeat(np.arange(k), counts)


@pytest.mark.parametrize("k, d", [(1, 1), (3, 4), (8, 16)])
def test_n_free_parameters_counts_a_fitted_sklearn_mixture(k, d):
    x = np.random.default_rng(0).normal(size=(60, d))
    gmm = GaussianMixture(k, covariance_type="diag", random_state=0).fit(x)
    assert n_free_parameters(k, d) == gmm.means_.size + gmm.covariances_.size + gmm.weights_.size - 1


@pytest.mark.parametrize("k", [1, 3, 8])
def test_ebic_matches_a_hand_computation_with_exact_binomials(k):
    n, d, k_max, gamma, log_lik = 250, 3, 8, 0.7, -1234.5
    p, big_p = k * 7 - 1, 2 * k_max * 7 - 1  # P = p_{2 k_max}
    expected = -2 * log_lik + p * math.log(n) + 2 * gamma * math.log(comb(big_p, p, exact=True))
    assert ebic(log_lik, n, d, k, k_max, gamma) == pytest.approx(expected, rel=1e-12)


def test_ebic_with_gamma_zero_is_sklearn_bic():
    x, _ = diagonal_mixture(3, 4, 200, seed=0)
    for k in (1, 2, 3):
        gmm = GaussianMixture(k, covariance_type="diag", random_state=0).fit(x)
        assert ebic(gmm.score(x) * len(x), len(x), 4, k, 8, 0.0) == pytest.approx(gmm.bic(x), rel=1e-10)


def test_fit_records_the_ebic_of_independent_sklearn_fits():
    x, _ = diagonal_mixture(3, 3, 200, seed=1)
    fit = induce_subclasses(x, k_max=5, gamma=0.5, min_size=10, seed=4)
    assert sorted(fit.ebic) == [1, 2, 3, 4, 5]
    for k, value in fit.ebic.items():
        gmm = GaussianMixture(k, covariance_type="diag", random_state=4, reg_covar=1e-6).fit(x)
        assert value == pytest.approx(ebic(gmm.score(x) * len(x), len(x), 3, k, 5, 0.5), rel=1e-9)
    assert fit.k == min(fit.ebic, key=fit.ebic.get)


@pytest.mark.parametrize("true_k, d", [(1, 2), (2, 3), (3, 5), (4, 8)])
@pytest.mark.slow
def test_ebic_recovers_the_true_k_of_separated_diagonal_mixtures(true_k, d):
    hits = 0
    for seed in range(10):
        x, y = diagonal_mixture(true_k, d, 300, seed)
        fit = induce_subclasses(x, seed=seed)
        if fit.k == true_k:
            hits += 1
            assert adjusted_rand_score(y, fit.assignment) > 0.95
    assert hits >= 9


def _non_gaussian_classes():
    """Residual clouds where a diagonal GMM over-splits, so gamma has something to prune."""
    for seed in range(3):
        rng = np.random.default_rng(seed)
        angle = rng.uniform(0, 2 * np.pi, 400)
        ring = np.c_[5 * np.cos(angle), 5 * np.sin(angle)] + 0.5 * rng.normal(size=(400, 2))
        yield seed, rng.uniform(-1, 1, size=(400, 4))
        yield seed, rng.standard_t(3, size=(400, 6))
        yield seed, np.c_[ring, rng.normal(size=(400, 2))]
        yield seed, diagonal_mixture(3, 4, 400, seed, sep=3.0)[0]


@pytest.mark.slow
def test_larger_gamma_never_picks_more_subclasses():
    # every K = 1..8 is a candidate (min_size = 10, n = 400)
    decreased = False
    for seed, x in _non_gaussian_classes():
        ks = [induce_subclasses(x, k_max=8, gamma=g, min_size=10, seed=seed).k for g in GAMMAS]
        assert all(a >= b for a, b in zip(ks, ks[1:])), ks
        decreased |= ks[-1] < ks[0]
    assert decreased  # gamma did prune somewhere, so the check had teeth


def test_tiny_true_subcluster_is_merged_to_respect_min_size():
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.normal(size=(200, 2)) + [8, 0],
            rng.normal(size=(150, 2)) - [8, 0],
            rng.normal(size=(5, 2)) + [0, 30],  # the tiny, far subcluster EBIC wants as its own subclass
        ]
    )
    fit = induce_subclasses(x, gamma=0.5, min_size=10, seed=0)
    assert min(fit.sizes) >= 10 and sum(fit.sizes) == 355
    assert "reduced to" in fit.note and "min_size=10" in fit.note
    assert min(fit.ebic.values()) < fit.ebic[fit.k]  # the EBIC-best K was rejected for its tiny subclass
    assert fit.k == 2


def test_class_below_twice_min_size_gets_one_subclass_without_fitting_more():
    x, _ = diagonal_mixture(2, 2, 19, seed=0, sep=30.0)
    fit = induce_subclasses(x, min_size=10)
    assert fit.k == 1 and list(fit.ebic) == [1] and fit.sizes == [19]
    assert "tiny class (n=19 < 2*min_size=20)" in fit.note
    assert np.array_equal(fit.assignment, np.zeros(19, dtype=np.int64))
    assert induce_subclasses(np.concatenate([x, x[:1]]), min_size=10).ebic.keys() == {1, 2}


def test_empty_class_gets_one_subclass_with_unit_weight():
    fit = induce_subclasses(np.zeros((0, 5)))
    assert fit.k == 1 and fit.sizes == [0] and fit.weights.tolist() == [1.0] and fit.assignment.shape == (0,)


def test_assignment_is_largest_first_with_weights_n_k_over_n_and_reproducible():
    x, y = diagonal_mixture(3, 3, 300, seed=2)
    x = x[::-1]  # put the smallest true subclass first so relabelling has work to do
    fit = induce_subclasses(x, seed=3)
    assert fit.assignment.dtype == np.int64 and fit.k == 3
    assert fit.sizes == sorted(fit.sizes, reverse=True) == np.bincount(fit.assignment).tolist()
    np.testing.assert_allclose(fit.weights, np.array(fit.sizes) / 300)
    assert fit.weights.sum() == pytest.approx(1.0)
    sklearn_labels = GaussianMixture(3, covariance_type="diag", random_state=3).fit(x).predict(x)
    assert adjusted_rand_score(sklearn_labels, fit.assignment) == 1.0
    again = induce_subclasses(x, seed=3)
    assert np.array_equal(again.assignment, fit.assignment) and again.ebic == fit.ebic


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"k_max": 0}, "optprior.k_max must be an integer >= 1, got 0"),
        ({"k_max": 2.5}, "optprior.k_max must be an integer >= 1, got 2.5"),
        ({"gamma": 1.5}, r"optprior.gamma must be in \[0, 1\] \(0 is BIC\), got 1.5"),
        ({"gamma": -0.1}, "optprior.gamma must be in"),
        ({"gamma": float("nan")}, "optprior.gamma must be in"),
        ({"min_size": 0}, "optprior.min_size must be an integer >= 1, got 0"),
        ({"pca_dim": 0}, r"optprior.pca_dim must be None \(no PCA\) or an integer >= 1, got 0"),
    ],
)
def test_bad_config_raises_a_bench_error_naming_the_gin_parameter(bad, message):
    config = {"k_max": 8, "gamma": 0.5, "min_size": 10, "pca_dim": None} | bad
    with pytest.raises(BenchError, match=message):
        check_subclass_config(**config)
    with pytest.raises(BenchError, match=message):
        induce_subclasses(np.zeros((50, 2)), **config)


def test_config_errors_name_the_calling_method():
    with pytest.raises(BenchError, match="optprior_sub.gamma"):
        check_subclass_config(8, 2.0, 10, None, owner="optprior_sub")


def test_non_finite_residuals_name_their_rows_and_the_encoder():
    x = np.random.default_rng(0).normal(size=(40, 3))
    x[3, 1], x[7, 0] = np.nan, np.inf
    with pytest.raises(BenchError, match=r"2 residual row\(s\) are not finite \(rows 3, 7\).*encoder"):
        induce_subclasses(x)


def test_pca_path_recovers_the_true_k_in_high_dimension():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(512, 3)))[0].T  # the mixture lives in a random 3-d subspace
    low, y = diagonal_mixture(3, 3, 300, seed=0, sep=12.0)
    x = low @ basis + rng.normal(size=(300, 512))
    fit = induce_subclasses(x, pca_dim=16, seed=0)
    assert fit.k == 3 and "GMM on 16 PCA components" in fit.note
    assert adjusted_rand_score(y, fit.assignment) > 0.95
    assert n_free_parameters(8, 16) < 300  # the EBIC counted 16 dims, not 512
    assert max(fit.ebic) == 8


def test_pca_dim_is_clamped_to_the_class_rank_and_skipped_when_not_smaller_than_d():
    x, _ = diagonal_mixture(2, 80, 30, seed=0)
    assert "GMM on 29 PCA components (pca_dim 64 clamped to n-1)" in induce_subclasses(x, pca_dim=64).note
    assert "PCA skipped" in induce_subclasses(x[:, :8], pca_dim=8).note
