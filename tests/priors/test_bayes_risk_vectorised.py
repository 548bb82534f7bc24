"""The vectorised Bayes-risk estimators against the plain loops they replaced (issue 26).

The reference loops below are the estimators as they were before vectorisation: the same random
draws must give the same numbers to float rounding (bit for bit where the formulas are unchanged).
"""

import numpy as np
import pytest
import torch

from bench.priors import bayes_risk, bayes_risk_gmm
from bench.priors.bayes_risk import conditional_variance_decomposition, fm_risk_decomposition


def reference_fm_risk(
    x1, labels, subclass, source_mu, source_sigma, n_mc=2000, t_max=0.95, max_reference=2000, seed=0
) -> dict:
    """The pre-vectorisation estimator: a Python loop over the draws, one posterior each."""
    x1, labels, subclass, mu, sigma = bayes_risk._check_inputs(
        x1, labels, subclass, source_mu, source_sigma, n_mc, t_max, max_reference
    )
    rng = np.random.default_rng(seed)
    members = {int(c): torch.nonzero(labels == c).squeeze(1).numpy() for c in torch.unique(labels)}
    draws = np.empty((n_mc, 4))
    for m in range(n_mc):
        i = int(rng.integers(len(x1)))
        t = float(rng.uniform(0.0, t_max))
        eps = torch.from_numpy(rng.standard_normal(x1.shape[1]))
        x_t = t * x1[i].double() + (1 - t) * (mu[i].double() + sigma[i].double() * eps)
        ref = torch.from_numpy(bayes_risk._reference_rows(members[int(labels[i])], i, max_reference, rng))
        draws[m] = reference_one_draw(x_t, t, x1[ref], mu[ref], sigma[ref], subclass[ref])
    return bayes_risk._summarise(draws, x1.shape[1], t_max)


def reference_one_draw(x_t, t, x1_ref, mu_ref, sigma_ref, subclass_ref):
    """(V_c, R, V_ck, ess) at one x_t by the plain formulas (see conditional_variance_decomposition)."""
    x1_ref, mu_ref, sigma_ref = (a.to(torch.float64) for a in (x1_ref, mu_ref, sigma_ref))
    scale = (1 - t) * sigma_ref
    z = (x_t - t * x1_ref - (1 - t) * mu_ref) / scale
    w = torch.softmax(-0.5 * (z**2).sum(1) - torch.log(scale).sum(1), dim=0)
    d = (x1_ref - x_t) / (1 - t)
    dbar = w @ d
    v_class = w @ ((d - dbar) ** 2).sum(1)
    _, k = torch.unique(subclass_ref, return_inverse=True)
    p = torch.zeros(int(k.max()) + 1, dtype=torch.float64).index_add_(0, k, w)
    dbar_k = torch.zeros(len(p), d.shape[1], dtype=torch.float64).index_add_(0, k, w.unsqueeze(1) * d)
    dbar_k = dbar_k / p.clamp(min=1e-300).unsqueeze(1)
    reduction = p @ ((dbar_k - dbar) ** 2).sum(1)
    v_sub = w @ ((d - dbar_k[k]) ** 2).sum(1)
    return float(v_class), float(reduction), float(v_sub), float(1.0 / (w @ w))


def fixture(n, dim, n_classes, n_sub, seed, per_row_source):
    """Long-tailed classes of Gaussian subclasses, float32 like latents; sources shared or per subclass."""
    rng = np.random.default_rng(seed)
    labels = np.minimum(rng.geometric(0.4, n) - 1, n_classes - 1)
    sub = rng.integers(0, n_sub, n)
    centres = rng.standard_normal((n_classes, n_sub, dim)) * 2
    x1 = torch.from_numpy(centres[labels, sub] + rng.standard_normal((n, dim))).float()
    if per_row_source:
        mu = torch.from_numpy(centres[labels, sub] * 0.5).float()
        sigma = torch.from_numpy(rng.uniform(0.3, 1.5, (n_classes, n_sub, dim))[labels, sub]).float()
    else:
        mu, sigma = torch.zeros(dim), torch.ones(dim)
    return x1, torch.from_numpy(labels), torch.from_numpy(sub), mu, sigma


CASES = [  # (n, D, classes, subclasses, per-row source, max_reference)
    (300, 2, 3, 2, False, 2000),
    (400, 16, 4, 3, True, 2000),
    (500, 64, 2, 4, True, 150),  # the large class is subsampled: drawn per draw
    (200, 300, 3, 2, False, 2000),  # collapsed posteriors (ESS ~ 1)
]


@pytest.mark.parametrize("variances", ["by_cost", "pairwise", "direct"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.slow
def test_fm_risk_equals_the_loop_over_draws(case, variances, monkeypatch):
    """Every fixture through the path its size picks, and through each of the two forced."""
    if variances != "by_cost":
        monkeypatch.setattr(bayes_risk, "PAIRWISE_COST", 10**9 if variances == "pairwise" else 0)
    n, dim, classes, subs, per_row, max_reference = case
    x1, labels, sub, mu, sigma = fixture(n, dim, classes, subs, seed=dim, per_row_source=per_row)
    kw = dict(n_mc=150, t_max=0.95, max_reference=max_reference, seed=3)
    want = reference_fm_risk(x1, labels, sub, mu, sigma, **kw)
    got = fm_risk_decomposition(x1, labels, sub, mu, sigma, **kw)
    for key in (
        "risk_class",
        "risk_subclass",
        "reduction",
        "risk_class_se",
        "risk_subclass_se",
        "reduction_se",
        "ess",
        "posterior_ess",
    ):
        assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-300), key
    assert got["reliable"] == want["reliable"] and got["n_mc"] == want["n_mc"]
    # a rounding diagnostic: equal where the loop's gap is far from rounding noise, tiny where it is tiny
    assert (got["max_identity_gap"] < 1e-9) == (want["max_identity_gap"] < 1e-9)


def test_memory_blocks_give_the_same_numbers(monkeypatch):
    """Blocks of draws, rows and dimensions (tiny BLOCK_ELEMENTS) change rounding only."""
    x1, labels, sub, mu, sigma = fixture(300, 40, 3, 3, seed=1, per_row_source=True)
    kw = dict(n_mc=60, max_reference=80, seed=2)
    want = fm_risk_decomposition(x1, labels, sub, mu, sigma, **kw)
    monkeypatch.setattr(bayes_risk, "BLOCK_ELEMENTS", 500)  # a few columns and draws per block
    got = fm_risk_decomposition(x1, labels, sub, mu, sigma, **kw)
    monkeypatch.setattr(bayes_risk, "GRAM_ELEMENTS_MAX", 10)  # every class one draw at a time
    one_at_a_time = fm_risk_decomposition(x1, labels, sub, mu, sigma, **kw)
    for key in ("risk_class", "risk_subclass", "reduction", "ess"):
        assert got[key] == pytest.approx(want[key], rel=1e-10), key
        assert one_at_a_time[key] == pytest.approx(want[key], rel=1e-10), key


def test_one_draw_is_the_plain_formula_bit_for_bit():
    x1, _, sub, mu, sigma = fixture(50, 7, 1, 3, seed=5, per_row_source=True)
    x_t = torch.randn(7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert conditional_variance_decomposition(x_t, 0.6, x1, mu, sigma, sub) == reference_one_draw(
        x_t, 0.6, x1, mu, sigma, sub
    )


def reference_group_mean(values, row_group, count):
    """The pre-issue-26 group mean: a (G, n) one-hot matrix product."""
    one_hot = np.zeros((len(count), len(row_group)))
    one_hot[row_group, np.arange(len(row_group))] = 1.0
    return one_hot @ np.asarray(values) / count[:, None]


@pytest.mark.parametrize("per_row", [False, True])
def test_mixture_moments_equal_the_one_hot_product(monkeypatch, per_row):
    """Group moments a chunk of rows at a time (chunks of 7 rows here), shared sources as given."""
    monkeypatch.setattr(bayes_risk_gmm, "GROUP_CHUNK_ELEMENTS", 7 * 16)
    x1, labels, sub, mu, sigma = fixture(400, 16, 3, 3, seed=11, per_row_source=per_row)
    model = bayes_risk_gmm.fit_mixture(x1, labels, sub, mu, sigma)
    x, group = x1.double().numpy(), model.row_group
    count = np.bincount(group).astype(float)
    m = reference_group_mean(x, group, count)
    np.testing.assert_allclose(model.m, m, rtol=1e-12, atol=1e-14)
    s2 = reference_group_mean(x * x, group, count) - m * m
    floored = model.s2 > s2 + 1e-12  # the variance floor, not the moments
    np.testing.assert_allclose(model.s2[~floored], s2[~floored], rtol=1e-9, atol=1e-12)
    for got, source in ((model.mu, mu), (np.sqrt(model.sig2), sigma)):
        rows = np.broadcast_to(source.double().numpy().reshape(-1, 16), x.shape)
        np.testing.assert_allclose(
            got, reference_group_mean(np.ascontiguousarray(rows), group, count), rtol=1e-12, atol=1e-15
        )


def test_gmm_draws_do_not_depend_on_the_chunk_size(monkeypatch):
    x1, labels, sub, _, _ = fixture(300, 24, 3, 3, seed=12, per_row_source=False)
    want = bayes_risk_gmm.random_partition_null(x1, labels, sub, n_partitions=3, n_mc=300, seed=1)
    monkeypatch.setattr(bayes_risk_gmm, "CHUNK_ELEMENTS", 500_000)  # the chunk before issue 26
    got = bayes_risk_gmm.random_partition_null(x1, labels, sub, n_partitions=3, n_mc=300, seed=1)
    np.testing.assert_allclose(got["reductions"], want["reductions"], rtol=1e-12)
    assert got["observed"] == pytest.approx(want["observed"], rel=1e-12)
