"""optprior: tokens, subclass sampling, sources, the fitted prior and the proxy objective."""

import numpy as np
import pytest
import torch

from bench.datasets.synthetic2d import Synthetic2D
from bench.errors import BenchError
from bench.method import Condition
from bench.methods.optprior import OptPrior, OptPriorOpt, OptPriorSub
from bench.prior import class_means
from bench.priors.source_opt import ProxyConfig, SourceParams, optimize_sources, proxy_terms
from bench.priors.subclass import induce_subclasses

FAST = dict(steps=300, risk_samples=200)


@pytest.fixture(scope="module")
def data():
    ds = Synthetic2D(n_max=1000)
    return ds, ds.load("train")


@pytest.fixture(scope="module")
def fitted(data):
    ds, train = data
    method = OptPrior(**FAST)
    method.setup(ds.n_classes, method.fit_prior(train.x, train.y, ds.n_classes, seed=0))
    return method


def test_tokens_encode_class_and_subclass():
    m = OptPrior()
    m.setup(3)
    cond = Condition(torch.tensor([0, 2, -1]), torch.tensor([1, 3, 0]))
    assert m.tokens(cond).tolist() == [[1, 1 + 3 + 0 * 8 + 1], [3, 1 + 3 + 2 * 8 + 3], [0, 0]]
    assert m.vocab_size == 1 + 3 + 3 * 8 and m.n_tokens == 2
    opt = OptPriorOpt()
    opt.setup(3)
    assert opt.n_tokens == 1 and opt.vocab_size == 4 and opt.k_max == 1


@pytest.mark.slow
def test_subclasses_are_drawn_from_the_fitted_weights(fitted):
    u = torch.rand(40_000, generator=torch.Generator().manual_seed(0))
    labels = torch.full((40_000,), 3)
    k = fitted.sampling_condition(labels, u).subclass
    weights = fitted.prior.tensors["weights"][3]
    freq = torch.bincount(k, minlength=len(weights)).float() / len(k)
    assert torch.allclose(freq, weights, atol=0.01)
    assert int(k.max()) < fitted.prior.info["k"][3]


def test_source_is_the_subclass_gaussian(fitted):
    cond = Condition(torch.tensor([1, 2]), torch.tensor([0, 1]))
    eps = torch.randn(2, 2, generator=torch.Generator().manual_seed(3))
    t = fitted.prior.tensors
    g = cond.label * fitted.k_max + cond.subclass
    expected = t["mu"][g].numpy() + np.exp(t["log_sigma"][g].numpy()) * eps.numpy()
    np.testing.assert_allclose(fitted.sample_source(cond, eps).numpy(), expected, rtol=1e-6)
    sub = OptPriorSub(**FAST)
    assert torch.equal(sub.sample_source(cond, eps), eps)  # the ablation keeps N(0, I)


def test_prior_recovers_the_true_subclass_counts_of_well_sampled_classes(data, fitted):
    ds, train = data
    counts = train.counts(ds.n_classes)
    for c in range(ds.n_classes):
        if counts[c] >= 200:
            assert fitted.prior.info["k"][c] == ds.mixture[c].n_subclasses, c
    # every training row is conditioned on its own induced subclass
    idx = torch.arange(len(train))
    cond = fitted.training_condition(train.y, idx)
    assert torch.equal(cond.subclass, fitted.prior.tensors["assignment"])


@pytest.mark.parametrize("threads", [1, 3])
def test_classes_induced_in_parallel_equal_one_serial_fit_per_class(threads):
    rng = np.random.default_rng(1)
    labels = torch.tensor(rng.integers(0, 4, 600))
    sub = rng.integers(0, 2, 600)
    x = torch.tensor(
        rng.normal(size=(4, 2, 40))[labels.numpy(), sub] * 4 + rng.normal(size=(600, 40)), dtype=torch.float32
    )
    means = class_means(x, labels, 4)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fits = OptPrior(**FAST)._induce(x, means, labels, 4, seed=3)
    finally:
        torch.set_num_threads(before)
    for c, fit in enumerate(fits):
        want = induce_subclasses((x[labels == c] - means[c]).double().numpy(), seed=3)
        assert fit.k == want.k == 2 and fit.ebic == want.ebic
        np.testing.assert_array_equal(fit.assignment, want.assignment)


def test_optimisation_tightens_directions_and_radii(fitted):
    geo = fitted.prior.info["geometry"]
    assert geo["optimised"]["alignment"] > geo["init"]["alignment"]
    assert geo["optimised"]["radial_std"] < geo["init"]["radial_std"] < geo["standard"]["radial_std"]
    trace = fitted.prior.info["loss_trace"]
    assert trace[-1][2] < trace[0][2]  # L_ang


def test_bayes_risk_reduction_is_clearly_positive_where_the_subclasses_are_real(fitted):
    """synthetic2d's classes are mixtures of separated subclasses, so knowing the subclass lowers
    the Bayes risk: the recorded reduction is positive beyond its own standard error (3 SE),
    which a reduction that is merely non-negative (as it is by construction) would not show."""
    for source in ("standard", "learned"):
        risk = fitted.prior.info["bayes_risk"][source]
        assert risk["reduction"] > 3 * risk["reduction_se"] > 0, risk
        assert abs(risk["risk_class"] - risk["risk_subclass"] - risk["reduction"]) < 1e-9


def toy_problem():
    """Two subclasses of one class, a source at their centre."""
    g = torch.Generator().manual_seed(0)
    group = torch.arange(400) % 2
    x = torch.randn(400, 2, generator=g) * 0.2 + torch.stack([group * 2.0 - 1.0, torch.ones(400)], 1)
    caps = torch.tensor([0.8, 0.8])
    init = SourceParams(torch.zeros(2, 2), torch.zeros(2, 2), torch.tensor([[-1.0, 1], [1, 1]]))
    return x, group, caps, init


@pytest.mark.parametrize("scale", ["per_dim", "raw"])
@pytest.mark.slow
def test_cap_is_the_guardrail_against_norm_inflation(scale):
    x, group, caps, init = toy_problem()
    cfg = ProxyConfig(steps=400, lr=0.05, objective_scale=scale)
    capped = optimize_sources(init, x, group, caps, cfg, seed=0).params
    free = optimize_sources(
        init, x, group, caps, ProxyConfig(**{**vars(cfg), "lambda_cap": 0.0}), seed=0
    ).params
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    rho = lambda p: (x - (p.mu[group] + p.log_sigma[group].exp() * eps)).norm(dim=1)  # noqa: E731
    excess = lambda p: torch.relu(rho(p) - caps[group]).mean()  # noqa: E731
    assert rho(free).mean() > 2 * rho(init).mean()  # without the cap, norms inflate
    assert excess(free) > 3 * excess(init)
    # with it, path lengths come down to the caps (per_dim weighs the cap 1 / D = 1/2 as much here)
    assert rho(capped).mean() < (1.0 if scale == "raw" else 1.15) * caps.mean()
    assert excess(capped) < 0.2 * excess(init)
    assert proxy_terms(capped, x, group, eps, caps, cfg).ang < proxy_terms(init, x, group, eps, caps, cfg).ang


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(gamma=1.5), "optprior.gamma"),
        (dict(k_max=0), "optprior.k_max"),
        (dict(cap_quantile=0.0), "cap_quantile"),
        (dict(lr=0.0), "optprior.lr"),
        (dict(objective_scale="sqrt_d"), "optprior.objective_scale"),
    ],
)
def test_bad_configuration_is_rejected_at_construction(kwargs, message):
    with pytest.raises(BenchError, match=message):
        OptPrior(**kwargs)


def test_non_finite_latents_name_the_rows(data):
    ds, train = data
    x = train.x.clone()
    x[5, 0] = float("nan")
    with pytest.raises(BenchError, match="5"):
        OptPrior(**FAST).fit_prior(x, train.y, ds.n_classes, seed=0)


@pytest.mark.parametrize("shape", [(2,), (1, 4, 4), (4, 2, 2)])
def test_source_path_and_loss_match_the_closed_form(shape):
    """x0 = mu_ck + sigma_ck eps, x_t and the target inside the loss, for any latent shape."""
    from bench.method import TrainBatch
    from bench.methods.optprior import SubclassPrior

    d, k_max, n_classes = int(np.prod(shape)), 3, 2
    g = torch.Generator().manual_seed(0)
    tensors = {
        "mu": torch.randn(n_classes * k_max, d, generator=g),
        "log_sigma": 0.3 * torch.randn(n_classes * k_max, d, generator=g),
        "weights": torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]),
        "assignment": torch.tensor([1, 0, 0, 0]),
    }
    method = OptPrior(k_max=k_max)
    method.setup(n_classes, SubclassPrior(tensors, {}))
    labels, index = torch.tensor([0, 1, 0, 1]), torch.arange(4)
    cond = method.training_condition(labels, index)
    assert cond.subclass.tolist() == [1, 0, 0, 0]
    eps, x1 = (torch.randn(4, *shape, generator=g) for _ in range(2))
    t = torch.rand(4, generator=g)
    group = (labels * k_max + cond.subclass).numpy()
    x0 = (
        tensors["mu"].numpy()[group]
        + np.exp(tensors["log_sigma"].numpy()[group]) * eps.reshape(4, -1).numpy()
    )
    np.testing.assert_allclose(
        method.sample_source(cond, eps).reshape(4, -1).numpy(), x0, rtol=1e-5, atol=1e-6
    )

    class Recorder(torch.nn.Module):
        def forward(self, x_t, t, tokens):
            self.seen = (x_t, tokens)
            return torch.zeros_like(x_t)

    backbone = Recorder()
    loss = method.loss(backbone, TrainBatch(x1=x1, cond=cond, eps=eps, t=t))
    tt = t.numpy()[:, None]
    x_t = (1 - tt) * x0 + tt * x1.reshape(4, -1).numpy()
    np.testing.assert_allclose(backbone.seen[0].reshape(4, -1).numpy(), x_t, rtol=1e-5, atol=1e-5)
    target = x1.reshape(4, -1).numpy() - x0
    assert float(loss) == pytest.approx(np.mean(target**2), rel=1e-5)
    assert backbone.seen[1].tolist() == [[1, 1 + 2 + 0 * 3 + 1], [2, 1 + 2 + 3 + 0], [1, 3], [2, 6]]


@pytest.mark.slow
def test_same_seed_gives_the_same_prior_bit_for_bit_for_any_number_of_threads():
    from bench.perf.offline import long_tailed_latents

    z, labels = long_tailed_latents(600, 300, 4)
    before, priors = torch.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            priors.append(OptPrior(steps=30, risk_samples=0, batch_size=256).fit_prior(z, labels, 4, seed=5))
    finally:
        torch.set_num_threads(before)
    for other in priors[1:]:
        assert other.tensors.keys() == priors[0].tensors.keys()
        for name, tensor in priors[0].tensors.items():
            assert torch.equal(other.tensors[name], tensor), name
        for key in ("k", "init", "geometry", "loss_trace"):
            assert other.info[key] == priors[0].info[key], key


def test_geometry_scores_every_source_with_one_rule_and_a_length_matched_reference(fitted):
    """Claim (b)'s stages: each with its SE over the draws; the matched isotropic class-mean
    source has the optimised source's path length (tuned per class, so also overall)."""
    geo = fitted.prior.info["geometry"]
    assert {"standard", "init", "matched", "optimised"} <= set(geo)
    for stage in ("standard", "init", "matched", "optimised"):
        assert geo[stage]["prototypes"] == "held_out" and geo[stage]["draws"] == fitted.geometry_draws
        assert all(
            geo[stage][f"{s}_se"] >= 0 for s in ("alignment", "radial_std", "radial_cv", "path_length")
        )
    assert geo["matched"]["path_length"] == pytest.approx(geo["optimised"]["path_length"], rel=1e-6)
    assert len(geo["matched"]["spread"]) == len(geo["matched"]["target_path_length"]) == fitted.n_classes
    assert -1 <= geo["optimised"]["alignment_learned"] <= 1


def test_kappa_sweep_records_one_stage_per_margin_and_every_metric_is_declared(data):
    from bench.evaluators.geometry import TransportGeometry, recorded_metrics

    ds, train = data
    method = OptPrior(steps=30, risk_samples=0, geometry_draws=2, kappa=0.5, kappa_sweep=(0.5, 0.9))
    geo = method.fit_prior(train.x, train.y, ds.n_classes, seed=0).info["geometry"]
    assert geo["optimised_kappa0.5"]["kappa"] == 0.5 and geo["optimised_kappa0.9"]["kappa"] == 0.9
    same = {k: v for k, v in geo["optimised_kappa0.5"].items() if k != "kappa"}
    assert same == geo["optimised"]  # the run's own margin: the same sources, not optimised twice
    assert geo["optimised_kappa0.9"]["alignment_learned"] != geo["optimised"]["alignment_learned"]
    metrics = recorded_metrics({"geometry": geo})
    assert {
        "geom_radial_cv/prior_matched",
        "geom_radial_cv_se/prior_init",
        "geom_alignment/prior_optimised_kappa0.9",
        "geom_alignment_learned",
    } <= set(metrics)
    assert set(metrics) <= set(TransportGeometry.higher_is_better)
    assert TransportGeometry.higher_is_better["geom_alignment/prior_matched"]
    assert not TransportGeometry.higher_is_better["geom_radial_std_se/prior_optimised_kappa0.7"]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(geometry_draws=-1), "geometry_draws"),
        (dict(geometry_draws=2.5), "geometry_draws"),
        (dict(kappa_sweep=(0.5, 1.2)), "kappa_sweep"),
        (dict(kappa_sweep="high"), "kappa_sweep"),
    ],
)
def test_bad_geometry_configuration_is_rejected_at_construction(kwargs, message):
    with pytest.raises(BenchError, match=message):
        OptPrior(**kwargs)


def test_geometry_draws_zero_skips_the_geometry(data):
    ds, train = data
    assert (
        OptPrior(steps=5, risk_samples=0, geometry_draws=0)
        .fit_prior(train.x, train.y, ds.n_classes, seed=0)
        .info["geometry"]
        == {}
    )
