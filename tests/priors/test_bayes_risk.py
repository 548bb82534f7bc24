"""Bayes flow-matching risk decomposition (Eq. 1-2) against closed forms and an analytic mixture."""

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.stats import multivariate_normal

from bench.datasets.synthetic2d import Synthetic2D
from bench.errors import BenchError
from bench.priors.bayes_risk import (
    ESS_MIN,
    conditional_variance_decomposition,
    fm_risk_decomposition,
    reliable,
)

MEANS = np.array([[-1.5, 0.0], [1.5, 0.5]])
STDS = np.array([0.5, 1.0])
WEIGHTS = np.array([0.3, 0.7])


def _mixture_sample(n: int, seed: int, means=MEANS, stds=STDS, weights=WEIGHTS):
    """n points of a 2-D two-Gaussian class: exact subclass counts, each subclass moment-matched.

    Matching the counts and the first two moments of every subclass removes the O(1/sqrt(n))
    fluctuations of the empirical distribution that the reduction is most sensitive to (at t = 0
    it equals pi_1 pi_2 ||m_1 - m_2||^2 / D exactly), so the empirical Bayes reduction can be
    compared with the population value at a tight tolerance.
    """
    rng = np.random.default_rng(seed)
    k = np.repeat(np.arange(len(weights)), np.round(weights * n).astype(int))
    z = rng.standard_normal((len(k), 2))
    for j in range(len(weights)):
        z[k == j] = (z[k == j] - z[k == j].mean(0)) / z[k == j].std(0)
    return torch.from_numpy(means[k] + stds[k, None] * z), torch.from_numpy(k)


def _population_reduction_and_risk(t_max: float, n: int, seed: int):
    """Independent MC of E[R] / D and E[V_ck] / D for the population mixture with an N(0, I) source.

    Uses the analytic posterior: x_t | k ~ N(t m_k, (t^2 s_k^2 + (1 - t)^2) I),
    E[x1 | x_t, k] = m_k + t s_k^2 / (t^2 s_k^2 + (1 - t)^2) (x_t - t m_k), and per dimension
    Var(d | x_t, k) = Var(x1 | x_t, k) / (1 - t)^2 = s_k^2 / (t^2 s_k^2 + (1 - t)^2).
    """
    rng = np.random.default_rng(seed)
    k = rng.choice(2, size=n, p=WEIGHTS)
    x1 = MEANS[k] + STDS[k, None] * rng.standard_normal((n, 2))
    t = rng.uniform(0, t_max, size=(n, 1))
    x_t = t * x1 + (1 - t) * rng.standard_normal((n, 2))
    var = t**2 * STDS**2 + (1 - t) ** 2
    diff = x_t[:, None, :] - t[:, :, None] * MEANS[None]
    log_p = np.log(WEIGHTS) - np.log(var) - 0.5 * (diff**2).sum(2) / var  # log N in 2-D, up to a constant
    p = np.exp(log_p - log_p.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    mean_d = (MEANS[None] + (t * STDS**2 / var)[:, :, None] * diff - x_t[:, None, :]) / (1 - t)[:, :, None]
    overall = (p[:, :, None] * mean_d).sum(1, keepdims=True)
    reduction = (p * ((mean_d - overall) ** 2).sum(2)).sum(1) / 2
    within = (p * STDS**2 / var).sum(1)
    return [(float(x.mean()), float(x.std(ddof=1) / np.sqrt(n))) for x in (reduction, within)]


@pytest.mark.slow
def test_reduction_matches_the_analytic_gaussian_mixture():
    x1, k = _mixture_sample(3000, seed=100)
    zeros = torch.zeros(len(x1), dtype=torch.long)
    got = fm_risk_decomposition(
        x1, zeros, k, torch.zeros(2), torch.ones(2), n_mc=6000, t_max=0.8, max_reference=3000, seed=0
    )
    (red, red_se), (within, within_se) = _population_reduction_and_risk(0.8, 400_000, seed=1)
    # Allowance for the finite sample (1%): with exact counts and moment-matched subclasses, six
    # datasets at 20,000 draws each scattered around the population value by no more than the MC
    # standard error (mean deviation 0.1%), and at t <= 0.8 the posterior spreads over ~1,600 points.
    assert abs(got["reduction"] - red) < 4 * np.hypot(got["reduction_se"], red_se) + 0.01 * red
    assert (
        abs(got["risk_subclass"] - within) < 4 * np.hypot(got["risk_subclass_se"], within_se) + 0.01 * within
    )
    assert got["max_identity_gap"] < 1e-8


def test_decomposition_identity_and_nonnegativity_per_draw():
    rng = np.random.default_rng(3)
    x1 = torch.from_numpy(rng.standard_normal((40, 5)) * 2)
    sub = torch.from_numpy(rng.integers(0, 3, 40))
    mu = torch.from_numpy(rng.standard_normal((3, 5)))[sub]  # subclass-dependent sources
    sigma = torch.from_numpy(rng.uniform(0.3, 2.0, (3, 5)))[sub]
    for _ in range(200):
        t = float(rng.uniform(0, 0.99))
        x_t = torch.from_numpy(rng.standard_normal(5) * rng.choice([0.5, 3.0, 30.0]))
        v_class, reduction, v_sub, ess = conditional_variance_decomposition(x_t, t, x1, mu, sigma, sub)
        assert reduction >= 0 and v_sub >= 0
        assert v_class == pytest.approx(v_sub + reduction, rel=1e-8, abs=1e-12)
        assert 1 - 1e-9 <= ess <= 40 + 1e-9


def test_one_draw_equals_a_scipy_posterior():
    rng = np.random.default_rng(4)
    x1, mu = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    sigma, sub = rng.uniform(0.5, 1.5, (6, 3)), np.array([0, 0, 1, 1, 1, 2])
    t, x_t = 0.4, rng.standard_normal(3)
    w = np.array(
        [
            multivariate_normal(t * x1[j] + (1 - t) * mu[j], np.diag(((1 - t) * sigma[j]) ** 2)).pdf(x_t)
            for j in range(6)
        ]
    )
    w /= w.sum()
    d = (x1 - x_t) / (1 - t)
    dbar = w @ d
    p = np.array([w[sub == k].sum() for k in range(3)])
    dbar_k = np.array([w[sub == k] @ d[sub == k] / p[k] for k in range(3)])
    expected = (
        w @ ((d - dbar) ** 2).sum(1),
        p @ ((dbar_k - dbar) ** 2).sum(1),
        w @ ((d - dbar_k[sub]) ** 2).sum(1),
        1 / (w @ w),
    )
    x1_t, mu_t, sigma_t, sub_t = (torch.from_numpy(a) for a in (x1, mu, sigma, sub))
    got = conditional_variance_decomposition(torch.from_numpy(x_t), t, x1_t, mu_t, sigma_t, sub_t)
    assert got == pytest.approx(expected, rel=1e-9)


def test_single_subclass_gives_zero_reduction():
    x1, _ = _mixture_sample(300, seed=5)
    zeros = torch.zeros(len(x1), dtype=torch.long)
    got = fm_risk_decomposition(x1, zeros, zeros, torch.zeros(2), torch.ones(2), n_mc=200, t_max=0.8)
    assert 0.0 <= got["reduction"] < 1e-12 * got["risk_class"]
    assert got["risk_class"] == pytest.approx(got["risk_subclass"], rel=1e-12)
    assert got["risk_class"] > 0.1


def test_near_t0_the_risks_are_the_data_variances():
    # At t ~ 0, x_t carries no information about which point was drawn: the posterior is uniform, so
    # the risks are the class's per-dimension variance and its within/between-subclass split.
    x1, k = _mixture_sample(400, seed=6)
    labels = torch.zeros(len(x1), dtype=torch.long)
    got = fm_risk_decomposition(x1, labels, k, torch.zeros(2), torch.ones(2), n_mc=50, t_max=1e-3)
    x, kk = x1.numpy(), k.numpy()
    total = x.var(0).sum() / 2
    within = sum((kk == j).mean() * x[kk == j].var(0).sum() for j in (0, 1)) / 2
    assert got["risk_class"] == pytest.approx(total, rel=0.02)
    assert got["risk_subclass"] == pytest.approx(within, rel=0.02)
    assert got["reduction"] == pytest.approx(total - within, rel=0.02)


def test_classes_are_kept_apart_and_subsampling_keeps_the_drawn_point():
    x1, k = _mixture_sample(200, seed=7)
    # Every point its own class: the posterior is the drawn point alone, so nothing is uncertain.
    own = torch.arange(len(x1))
    assert fm_risk_decomposition(x1, own, k, torch.zeros(2), torch.ones(2), n_mc=20)["risk_class"] == 0.0
    # A reference set of one must still contain the drawn point, giving zero risk as well.
    one = fm_risk_decomposition(
        x1, torch.zeros(200, dtype=torch.long), k, torch.zeros(2), torch.ones(2), n_mc=20, max_reference=1
    )
    assert one["risk_class"] == 0.0


def test_separated_subclasses_reduce_the_risk_more():
    results = []
    for gap in (0.25, 3.0):
        means = np.array([[-gap, 0.0], [gap, 0.0]])
        x1, k = _mixture_sample(
            600, seed=8, means=means, stds=np.array([1.0, 1.0]), weights=np.array([0.5, 0.5])
        )
        results.append(
            fm_risk_decomposition(
                x1,
                torch.zeros(600, dtype=torch.long),
                k,
                torch.zeros(2),
                torch.ones(2),
                n_mc=800,
                t_max=0.8,
                seed=1,
            )
        )
    overlapping, separated = results
    assert separated["reduction"] - overlapping["reduction"] > 4 * np.hypot(
        separated["reduction_se"], overlapping["reduction_se"]
    )


def test_deterministic_by_seed():
    x1, k = _mixture_sample(300, seed=9)
    args = (x1, torch.zeros(300, dtype=torch.long), k, torch.zeros(2), torch.ones(2))
    assert fm_risk_decomposition(*args, n_mc=100, seed=3) == fm_risk_decomposition(*args, n_mc=100, seed=3)
    assert fm_risk_decomposition(*args, n_mc=100, seed=3) != fm_risk_decomposition(*args, n_mc=100, seed=4)


def test_subclass_sources_give_the_gaussian_within_subclass_risk():
    # Source N(m_k, s0^2 I) for Gaussian subclass N(m_k, s_k^2 I): given k, (d, x_t) are jointly
    # Gaussian and Var(d | x_t, k) = s_k^2 s0^2 / (t^2 s_k^2 + (1 - t)^2 s0^2) per dimension, so the
    # subclass risk is sum_k pi_k of its average over t ~ U(0, t_max), whatever x_t is.
    x1, k = _mixture_sample(3000, seed=10)
    s0, t_max = 0.5, 0.8
    got = fm_risk_decomposition(
        x1,
        torch.zeros(3000, dtype=torch.long),
        k,
        torch.from_numpy(MEANS)[k],
        torch.full((3000, 2), s0, dtype=torch.float64),
        n_mc=1500,
        t_max=t_max,
        max_reference=3000,
        seed=2,
    )
    expected = (
        sum(
            w * quad(lambda t, s=s: s**2 * s0**2 / (t**2 * s**2 + (1 - t) ** 2 * s0**2), 0, t_max)[0]
            for w, s in zip(WEIGHTS, STDS)
        )
        / t_max
    )
    # Allowance 2%: at t = 0.8 the narrow sources leave ~50 points under each posterior, so the
    # empirical within-subclass variance runs a little below the population one.
    assert abs(got["risk_subclass"] - expected) < 4 * got["risk_subclass_se"] + 0.02 * expected
    standard = fm_risk_decomposition(
        x1,
        torch.zeros(3000, dtype=torch.long),
        k,
        torch.zeros(2),
        torch.ones(2),
        n_mc=300,
        t_max=t_max,
        max_reference=500,
        seed=2,
    )
    assert got["risk_subclass"] < standard["risk_subclass"] - 4 * standard["risk_subclass_se"]


@pytest.mark.parametrize(
    "change", [{"t_max": 1.0}, {"n_mc": 1}, {"source_sigma": torch.zeros(2)}, {"source_mu": torch.zeros(3)}]
)
def test_bad_arguments_raise_bench_error(change):
    x1 = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
    args = {
        "x1": x1,
        "labels": torch.zeros(10, dtype=torch.long),
        "subclass": torch.zeros(10, dtype=torch.long),
        "source_mu": torch.zeros(2),
        "source_sigma": torch.ones(2),
        **change,
    }
    with pytest.raises(BenchError):
        fm_risk_decomposition(**args)


def _synthetic2d_population(ds: Synthetic2D, class_weights: np.ndarray, t_max: float, n: int, seed: int):
    """Independent MC of E[R] / D, E[V_ck] / D and E[V_c] / D for synthetic2d's true mixtures, N(0, I) source.

    Classes are drawn with `class_weights`, then (k, x1, t, x_t) from the true mixture; the exact
    posterior over the subclasses of a Gaussian mixture (see _population_reduction_and_risk) gives
    R and V_ck at each x_t, and V_c = R + V_ck. Returns [(mean, standard error)] of the three.
    """
    rng = np.random.default_rng(seed)
    c = rng.choice(len(class_weights), size=n, p=class_weights)
    red, within = np.empty(n), np.empty(n)
    for cls in np.unique(c):
        rows, mix = np.nonzero(c == cls)[0], ds.mixture[cls]
        k = rng.choice(mix.n_subclasses, size=len(rows), p=mix.weights)
        x1 = mix.means[k] + mix.stds[k, None] * rng.standard_normal((len(rows), 2))
        t = rng.uniform(0, t_max, size=(len(rows), 1))
        x_t = t * x1 + (1 - t) * rng.standard_normal((len(rows), 2))
        var = t**2 * mix.stds**2 + (1 - t) ** 2
        diff = x_t[:, None, :] - t[:, :, None] * mix.means[None]
        log_p = np.log(mix.weights) - np.log(var) - 0.5 * (diff**2).sum(2) / var
        p = np.exp(log_p - log_p.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        posterior_x1 = mix.means[None] + (t * mix.stds**2 / var)[:, :, None] * diff  # E[x1 | x_t, k]
        mean_d = (posterior_x1 - x_t[:, None, :]) / (1 - t)[:, :, None]
        overall = (p[:, :, None] * mean_d).sum(1, keepdims=True)
        red[rows] = (p * ((mean_d - overall) ** 2).sum(2)).sum(1) / 2
        within[rows] = (p * mix.stds**2 / var).sum(1)
    return [(float(x.mean()), float(x.std(ddof=1) / np.sqrt(n))) for x in (red, within, red + within)]


def test_synthetic2d_estimate_matches_the_exact_mixture_and_is_reliable():
    # synthetic2d as the benchmark builds it (8 long-tailed classes, 1-4 true subclasses each), with
    # its ground-truth subclasses and bench's default t_max and reference size; the population
    # values come from the true mixture's exact posterior, independently of bench's code.
    ds = Synthetic2D()
    train = ds.load("train")
    got = fm_risk_decomposition(
        train.x.double(), train.y, train.subclass, torch.zeros(2), torch.ones(2), n_mc=800, seed=0
    )
    counts = np.bincount(train.y.numpy(), minlength=ds.n_classes)
    population = _synthetic2d_population(ds, counts / counts.sum(), got["t_max"], 400_000, seed=1)
    for key, (value, se) in zip(("reduction", "risk_subclass", "risk_class"), population):
        assert abs(got[key] - value) < 3 * np.hypot(got[f"{key}_se"], se), key
    assert got["reduction"] > 10 * got["reduction_se"]  # a clear reduction, not noise around 0
    assert got["reliable"] and got["ess"] > ESS_MIN and got["max_identity_gap"] < 1e-12


def test_a_collapsed_posterior_is_flagged_unreliable_and_runs_far_low():
    # Two Gaussian subclasses in D = 64 with narrow subclass sources N(m_k, 0.3^2 I): the exact
    # within-subclass risk is the closed form of test_subclass_sources_give_the_gaussian_within_subclass_risk,
    # but 400 training points cannot fill 64 dimensions, so the posterior sits on one point in most
    # draws and the empirical risk is a fraction of the population's.
    rng = np.random.default_rng(0)
    dim, n, s0 = 64, 400, 0.3
    k = np.arange(n) % 2
    means = np.zeros((2, dim))
    means[1, 0] = 3.0
    x1 = torch.from_numpy(means[k] + rng.standard_normal((n, dim)))
    got = fm_risk_decomposition(
        x1,
        torch.zeros(n, dtype=torch.long),
        torch.from_numpy(k),
        torch.from_numpy(means[k]),
        torch.full((n, dim), s0, dtype=torch.float64),
        n_mc=200,
        seed=0,
    )
    expected = quad(lambda t: s0**2 / (t**2 + (1 - t) ** 2 * s0**2), 0, got["t_max"])[0] / got["t_max"]
    assert got["risk_subclass"] < 0.5 * expected
    assert got["ess"] < 2 and not got["reliable"]
    assert got["posterior_ess"] > 5 * got["ess"]  # the arithmetic mean hides the collapse


def test_reliability_thresholds():
    assert reliable(20.0, 1e-6) and reliable(300.0, 0.0)
    assert not reliable(19.9, 0.0) and not reliable(300.0, 0.576)
