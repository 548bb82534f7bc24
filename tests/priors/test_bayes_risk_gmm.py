"""The Gaussian-mixture Bayes-risk estimator and claim (a)'s random-partition null, against
independent computations: numerical integration (1-D), the empirical estimator where it is
reliable (2-D, many points), the data variance at t -> 0, and partitions with known structure."""

import numpy as np
import pytest
import torch
from numpy.polynomial.legendre import leggauss

from bench.errors import BenchError
from bench.priors.bayes_risk import fm_risk_decomposition
from bench.priors.bayes_risk_gmm import (
    VAR_FLOOR_REL,
    fit_mixture,
    gmm_risk_decomposition,
    random_partition_null,
)


def two_components(n, means, scales, seed=0):
    """One class, two subclasses of n points each, x = mean_k + scale_k * N(0, I)."""
    rng = np.random.default_rng(seed)
    k = np.repeat([0, 1], n)
    x = np.asarray(means, float)[k] + np.asarray(scales, float)[k] * rng.standard_normal(
        (2 * n, len(means[0]))
    )
    return torch.from_numpy(x), torch.zeros(2 * n, dtype=torch.long), torch.from_numpy(k)


def quadrature_risks(w, m, s2, t_max):
    """(class risk, subclass risk) of a 1-D two-component mixture, standard source, by numerical
    integration over d | x_t on a grid (x0 = x_t - t d, x1 = x_t + (1 - t) d, Jacobian 1)."""
    nodes, weights = leggauss(24)
    ts, wt = 0.5 * t_max * (nodes + 1), 0.5 * weights  # mean over t ~ U(0, t_max)
    x = np.linspace(-12, 12, 1201)[:, None]
    d = np.linspace(-16, 16, 1601)[None, :]
    dx, dd = x[1, 0] - x[0, 0], d[0, 1] - d[0, 0]
    normal = lambda v, mean, var: np.exp(-0.5 * (v - mean) ** 2 / var) / np.sqrt(2 * np.pi * var)  # noqa: E731
    v_class = v_sub = 0.0
    for t, weight in zip(ts, wt):
        joint = [
            wk * normal(x - t * d, 0.0, 1.0) * normal(x + (1 - t) * d, mk, sk) for wk, mk, sk in zip(w, m, s2)
        ]
        moments = lambda p: (p.sum(1) * dd, (p * d).sum(1) * dd, (p * d * d).sum(1) * dd)  # noqa: E731
        p0, p1, p2 = moments(sum(joint))
        v_class += weight * ((p2 - p1**2 / p0) * dx).sum()
        for p in joint:
            q0, q1, q2 = moments(p)
            v_sub += weight * ((q2 - q1**2 / np.maximum(q0, 1e-300)) * dx).sum()
    return v_class, v_sub


@pytest.mark.slow
def test_one_dimension_matches_numerical_integration():
    x1, labels, k = two_components(400, [[-1.5], [2.0]], [[0.5], [0.8]])
    model = fit_mixture(x1, labels, k, torch.zeros(1), torch.ones(1))
    want_class, want_sub = quadrature_risks(model.weight, model.m[:, 0], model.s2[:, 0], 0.9)
    got = gmm_risk_decomposition(x1, labels, k, torch.zeros(1), torch.ones(1), n_mc=40000, t_max=0.9, seed=1)
    assert abs(got["risk_class"] - want_class) < 4 * got["risk_class_se"]
    assert abs(got["risk_subclass"] - want_sub) < 4 * got["risk_subclass_se"]
    assert got["reduction"] == pytest.approx(got["risk_class"] - got["risk_subclass"], rel=1e-12)


@pytest.mark.slow
def test_two_dimensions_agree_with_the_reliable_empirical_estimate():
    x1, labels, k = two_components(1500, [[-1.0, 0.5], [1.5, -1.0]], [[0.6, 0.6], [0.8, 0.5]], seed=2)
    args = (x1, labels, k, torch.zeros(2), torch.ones(2))
    gmm = gmm_risk_decomposition(*args, n_mc=4000, t_max=0.9, seed=3)
    emp = fm_risk_decomposition(*args, n_mc=4000, t_max=0.9, seed=4)
    assert emp["reliable"]
    for key in ("risk_class", "reduction"):
        se = np.hypot(gmm[f"{key}_se"], emp[f"{key}_se"])
        assert abs(gmm[key] - emp[key]) < 4 * se, key


def test_near_t0_the_class_risk_is_the_data_variance():
    """At t = 0, x_t = x0 is independent of x1 and k (standard source), so Var(d | x_t) = Var(x1) and
    the reduction is the between-subclass variance of x1 (p(k | x_t) = the subclass weights)."""
    x1, labels, k = two_components(
        300, [[0.0, 3.0, -1.0], [2.0, 0.0, 1.0]], [[1.0, 0.5, 2.0], [0.3, 1.0, 1.0]]
    )
    got = gmm_risk_decomposition(x1, labels, k, torch.zeros(3), torch.ones(3), n_mc=200, t_max=1e-4)
    x = x1.numpy()
    assert got["risk_class"] == pytest.approx(x.var(0).mean(), rel=1e-2)
    between = np.mean([(x[k.numpy() == j].mean(0) - x.mean(0)) ** 2 for j in (0, 1)], axis=0).mean()
    assert got["reduction"] == pytest.approx(between, rel=1e-2)


def test_a_single_subclass_has_no_reduction():
    x1, labels, _ = two_components(100, [[0.0, 0.0], [3.0, 3.0]], [[1.0, 1.0], [1.0, 1.0]])
    got = gmm_risk_decomposition(
        x1, labels, torch.zeros_like(labels), torch.zeros(2), torch.ones(2), n_mc=100
    )
    assert got["reduction"] == 0.0 and got["risk_class"] == got["risk_subclass"] > 0


def test_random_partitions_of_one_gaussian_match_the_random_ones():
    """A random 'induced' partition of one Gaussian class is one more draw from the null."""
    rng = np.random.default_rng(5)
    x1 = torch.from_numpy(rng.standard_normal((600, 4)))
    labels, sub = torch.zeros(600, dtype=torch.long), torch.from_numpy(rng.integers(3, size=600))
    null = random_partition_null(x1, labels, sub, n_partitions=20, n_mc=1000, seed=0)
    risk = gmm_risk_decomposition(x1, labels, sub, torch.zeros(4), torch.ones(4), n_mc=1000, seed=0)
    assert null["observed"] == risk["reduction"]  # common random numbers: the same draws
    assert null["observed"] < 0.02 * risk["risk_class"] and null["reduction_mean"] < 0.02 * risk["risk_class"]
    assert abs(null["excess"]) < 4 * null["reduction_std"]
    assert null["p_rank"] > 1 / 21 and len(null["reductions"]) == null["n_partitions"] == 20


def test_separated_subclasses_beat_every_random_partition():
    x1, labels, k = two_components(200, [[-3.0, 0.0], [3.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]])
    null = random_partition_null(x1, labels, k, n_partitions=20, n_mc=500, seed=0)
    assert null["p_rank"] == pytest.approx(1 / 21)
    assert null["excess"] > 0.5 and max(null["reductions"]) < null["observed"]


def test_random_partitions_keep_the_subclass_sizes():
    from bench.priors.bayes_risk_gmm import _permute_within

    labels = np.repeat([0, 1], [30, 50])
    sub = np.concatenate([np.repeat([0, 1, 2], [5, 10, 15]), np.repeat([0, 1], [20, 30])])
    perm = _permute_within(labels, sub, np.random.default_rng(0))
    for c in (0, 1):
        assert np.bincount(perm[labels == c]).tolist() == np.bincount(sub[labels == c]).tolist()
    assert (perm != sub).any()


def test_deterministic_and_floored():
    x1, labels, k = two_components(
        50, [[0.0, 0.0], [2.0, 2.0]], [[1.0, 0.0], [1.0, 1.0]]
    )  # dim 1 of k=0 constant
    args = (x1, labels, k, torch.zeros(2), torch.ones(2))
    assert gmm_risk_decomposition(*args, n_mc=50, seed=3) == gmm_risk_decomposition(*args, n_mc=50, seed=3)
    assert gmm_risk_decomposition(*args, n_mc=50, seed=3) != gmm_risk_decomposition(*args, n_mc=50, seed=4)
    model = fit_mixture(*args)
    assert model.s2[0, 1] == pytest.approx(VAR_FLOOR_REL * x1.numpy().var(0).mean())


def test_per_group_sources_are_used():
    """With each subclass's source at its data mean and scale s, Var(d | k) = 2 s^2 at every t."""
    x1, labels, k = two_components(2000, [[-4.0, 0.0], [4.0, 0.0]], [[0.5, 0.5], [0.5, 0.5]], seed=6)
    model = fit_mixture(x1, labels, k, torch.zeros(2), torch.ones(2))
    mu, sigma = torch.from_numpy(model.m)[k], torch.from_numpy(np.sqrt(model.s2))[k]
    got = gmm_risk_decomposition(x1, labels, k, mu, sigma, n_mc=500)
    # Cov(x_t, d | k) = t s^2 - (1 - t) s^2; Var(d | x_t, k) = 2 s^2 - g^2 / v, v = ((1-t)^2 + t^2) s^2
    t = np.linspace(0, 0.95, 100001)
    s2 = model.s2.mean()
    want = np.mean(2 * s2 - ((2 * t - 1) * s2) ** 2 / (((1 - t) ** 2 + t**2) * s2))
    assert got["risk_subclass"] == pytest.approx(want, rel=0.02)


@pytest.mark.parametrize(
    "change",
    [
        dict(t_max=1.0),
        dict(n_mc=1),
        dict(source_sigma=torch.zeros(2)),
        dict(labels=torch.zeros(3, dtype=torch.long)),
    ],
)
def test_bad_arguments_raise_bench_error(change):
    x1, labels, k = two_components(10, [[0.0, 0.0], [1.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]])
    args = (
        dict(x1=x1, labels=labels, subclass=k, source_mu=torch.zeros(2), source_sigma=torch.ones(2)) | change
    )
    with pytest.raises(BenchError):
        gmm_risk_decomposition(**args)


def test_optprior_records_the_gmm_and_its_null_shared_with_optprior_sub_and_the_evaluator_names_them():
    from bench.evaluators.geometry import _names, recorded_metrics
    from bench.methods.optprior import OptPrior, OptPriorSub

    g = torch.Generator().manual_seed(0)
    z = torch.randn(200, 6, generator=g)
    z[100:] += 3
    z[50:100, 5] += 6  # two subclasses in class 0
    labels = torch.repeat_interleave(torch.arange(2), 100)
    args = dict(k_max=2, min_size=10, steps=5, risk_samples=20, risk_gmm_samples=100, risk_partitions=5)
    info = OptPrior(**args).fit_prior(z, labels, 2, seed=0).info["bayes_risk"]
    sub = OptPriorSub(**args).fit_prior(z, labels, 2, seed=0).info["bayes_risk"]
    assert (
        info["gmm"]["standard"] == sub["gmm"]["standard"]
        and info["random_partitions"] == sub["random_partitions"]
    )
    assert info["random_partitions"]["observed"] == info["gmm"]["standard"]["reduction"]
    assert (
        info["random_partitions"]["n_partitions"] == 5 and "standard" in info
    )  # D = 6 <= 256: empirical kept
    metrics, names = recorded_metrics({"bayes_risk": info}), _names()
    assert metrics["bayes_risk/gmm/standard/reduction"] == info["gmm"]["standard"]["reduction"]
    assert metrics["bayes_risk/gmm/learned/risk_class"] == info["gmm"]["learned"]["risk_class"]
    assert metrics["bayes_risk/random/standard/p_rank"] == info["random_partitions"]["p_rank"]
    assert set(metrics) <= set(names)
    assert names["bayes_risk/random/standard/excess"] and not names["bayes_risk/random/standard/p_rank"]
    skipped = OptPrior(**args, risk_empirical_max_dim=4).fit_prior(z, labels, 2, seed=0).info["bayes_risk"]
    assert "standard" not in skipped and skipped["gmm"] == info["gmm"]
