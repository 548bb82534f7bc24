"""CPD and CBFM against closed forms computed by hand in numpy (torchcfm-style oracle tests)."""

import functools
import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

import gin
from bench.errors import BenchError
from bench.method import Condition, TrainBatch
from bench.methods.cbfm import ClassBalancedFM
from bench.methods.cpd import ConditionalPrior
from bench.methods.fm import FlowMatching
from bench.prior import Prior

METHODS = ["fm", "cpd", "cbfm"]
SHAPES = [(2,), (1, 4, 4), (4, 2, 2)]
N_CLASSES = 3


def make(name, **kwargs):
    """A method instance; cbfm defaults to no regulariser and no dropout (pure FM)."""
    if name == "cbfm":
        return ClassBalancedFM(**{"tau": 0.0, "label_dropout": 0.0, **kwargs})
    return {"fm": FlowMatching, "cpd": ConditionalPrior}[name](**kwargs)


def fitted(method, z, y):
    """`method` after its offline stage on training latents z with labels y."""
    method.setup(N_CLASSES, method.fit_prior(torch.tensor(z), torch.tensor(y), N_CLASSES, seed=0))
    return method


def data(shape, n=40, seed=0):
    """Training latents with class-dependent offsets, so class means differ."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n)
    z = (rng.normal(size=(n, *shape)) + 3.0 * y.reshape(-1, *[1] * len(shape))).astype(np.float32)
    return z, y


def expected_source(name, z, y, labels, eps, sigma=0.7):
    """x0 in closed form: eps for the N(0, I) source, m_c + sigma eps for CPD."""
    if name != "cpd":
        return eps
    means = np.stack([z[y == c].astype(np.float64).mean(0) for c in range(N_CLASSES)])
    return means[labels] + sigma * eps


class Recorder(torch.nn.Module):
    """A backbone returning a fixed velocity and remembering every call's inputs."""

    def __init__(self, v):
        super().__init__()
        self.v, self.calls = v, []

    def forward(self, x_t, t, tokens):
        self.calls.append((x_t, t, tokens))
        return self.v


class TokenScale(torch.nn.Module):
    """v(x, t, token) = x * e_token: one parameter vector per token, outputs known in closed form."""

    def __init__(self, vocab, shape, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.e = torch.nn.Parameter(torch.randn(vocab, math.prod(shape), generator=g, dtype=torch.float64))
        self.calls = []

    def forward(self, x_t, t, tokens):
        self.calls.append(tokens[:, 0].clone())
        return x_t * self.e[tokens[:, 0]].reshape(x_t.shape)


def batch(shape, n, seed, labels=None):
    """A float64 training batch with its own generator."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_CLASSES, n) if labels is None else labels
    return TrainBatch(
        x1=torch.tensor(rng.normal(size=(n, *shape))),
        cond=Condition(torch.tensor(labels)),
        eps=torch.tensor(rng.normal(size=(n, *shape))),
        t=torch.tensor(rng.uniform(size=n)),
        generator=torch.Generator().manual_seed(seed),
    )


# -- source, path and target -------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", METHODS)
def test_source_matches_closed_form(name, shape):
    z, y = data(shape)
    method = fitted(make(name), z, y)
    rng = np.random.default_rng(1)
    labels, eps = rng.integers(0, N_CLASSES, 7), rng.normal(size=(7, *shape))
    x0 = method.sample_source(Condition(torch.tensor(labels)), torch.tensor(eps))
    np.testing.assert_allclose(x0.numpy(), expected_source(name, z, y, labels, eps), rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", METHODS)
def test_path_and_target_inside_the_loss_match_closed_form(name, shape):
    z, y = data(shape)
    method = fitted(make(name), z, y)
    b = batch(shape, 6, seed=2)
    v = torch.tensor(np.random.default_rng(3).normal(size=(6, *shape)))
    backbone = Recorder(v)
    loss = method.loss(backbone, b)
    x1, eps, t = b.x1.numpy(), b.eps.numpy(), b.t.numpy()
    labels = b.cond.label.numpy()
    x0 = expected_source(name, z, y, labels, eps)
    tt = t.reshape(-1, *[1] * len(shape))
    assert len(backbone.calls) == (2 if name == "cbfm" else 1)
    for x_t, t_seen, _ in backbone.calls:  # cbfm: the same x_t and t for y and y'
        np.testing.assert_allclose(x_t.numpy(), (1 - tt) * x0 + tt * x1, atol=1e-5)
        np.testing.assert_array_equal(t_seen.numpy(), t)
    assert backbone.calls[0][2].tolist() == [[c + 1] for c in labels]
    np.testing.assert_allclose(loss.item(), np.mean((v.numpy() - (x1 - x0)) ** 2), rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_cbfm_without_regulariser_or_dropout_is_exactly_fm(shape):
    z, y = data(shape)
    backbone = TokenScale(N_CLASSES + 1, shape)
    fm = fitted(FlowMatching(), z, y).loss(backbone, batch(shape, 8, seed=4))
    cb = fitted(ClassBalancedFM(tau=0.0, label_dropout=0.0), z, y).loss(backbone, batch(shape, 8, seed=4))
    assert cb.item() == fm.item()


def test_cpd_prior_survives_save_and_load(tmp_path):
    z, y = data((4, 2, 2))
    method = fitted(ConditionalPrior(sigma=0.3), z, y)
    method.prior.save(tmp_path)
    loaded = ConditionalPrior(sigma=0.3)
    loaded.setup(N_CLASSES, loaded.prior_class().load(tmp_path))
    cond, eps = Condition(torch.tensor([2, 0, 1])), torch.randn(3, 4, 2, 2)
    assert torch.equal(loaded.sample_source(cond, eps), method.sample_source(cond, eps))
    assert method.prior.info == {"sigma": 0.3} and method.describe() == {"name": "cpd", "sigma": 0.3}


# -- the CBFM regulariser ----------------------------------------------------------------
def cbfm_by_hand(b, e, first, second, tau, weight):
    """The CBFM loss and its gradient wrt the token vectors e, derived by hand for v = x * e_token."""
    x1, x0, t = b.x1.numpy().reshape(len(b.x1), -1), b.eps.numpy().reshape(len(b.x1), -1), b.t.numpy()
    x_t, u = (1 - t)[:, None] * x0 + t[:, None] * x1, x1 - x0
    v, v_bal = x_t * e[first], x_t * e[second]
    keep = first != 0  # dropped samples carry the null token and no regulariser
    w = tau * {"1-t": 1 - t, "eps": (1 - t) * t**2, "constant": np.ones_like(t)}[weight] * keep
    n, d = x_t.shape
    loss = np.mean((v - u) ** 2) + np.mean(
        w * (np.mean((v - v_bal) ** 2, 1) + 0.25 * np.mean((v - v_bal) ** 2, 1))
    )
    grad = np.zeros_like(e)
    for i in range(n):
        grad[first[i]] += 2 * (v[i] - u[i]) * x_t[i] / (n * d)  # FM term: into v(x_t, y)
        grad[first[i]] += w[i] * 2 * (v[i] - v_bal[i]) * x_t[i] / (n * d)  # balancing: into v(x_t, y)
        grad[second[i]] += w[i] * 0.25 * 2 * (v_bal[i] - v[i]) * x_t[i] / (n * d)  # commitment: v(x_t, y')
    return loss, grad


@pytest.mark.parametrize("weight", ["1-t", "constant", "eps"])
@pytest.mark.parametrize("shape", SHAPES)
def test_cbfm_loss_and_gradients_match_hand_derivation(shape, weight):
    # Labels of class 0 only, y' from classes 1 and 2 only: each token vector then receives the
    # gradient of one side of the stop-gradients, so a missing or misplaced detach shows.
    z, y = data(shape, n=30)
    method = ClassBalancedFM(tau=0.7, label_dropout=0.3, weight=weight)
    method.setup(N_CLASSES, Prior({"class_prior": torch.tensor([0.0, 0.4, 0.6])}))
    b = batch(shape, 64, seed=5, labels=np.zeros(64, dtype=np.int64))
    backbone = TokenScale(N_CLASSES + 1, shape)
    loss = method.loss(backbone, b)
    loss.backward()
    first, second = (c.numpy() for c in backbone.calls)
    assert set(first) == {0, 1} and set(second) == {2, 3}  # some dropped, some kept; y' in {1, 2}
    want_loss, want_grad = cbfm_by_hand(b, backbone.e.detach().numpy(), first, second, 0.7, weight)
    np.testing.assert_allclose(loss.item(), want_loss, rtol=1e-10)
    np.testing.assert_allclose(backbone.e.grad.numpy(), want_grad, rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("shape", SHAPES)
def test_cbfm_default_regulariser_is_cbdm_noise_space_regulariser(shape):
    """With the default weight, the velocity-space loss equals CBDM's noise-space one term for term.

    CBDM (Qin et al. 2023) regularises noise predictions with weight tau * t/T (t/T = noise level =
    1 - t here). On the linear path x_t = (1 - t) x0 + t x1 the noise prediction implied by a
    velocity is eps(y) = x_t - t v(y); the regulariser is written here in those terms, from scratch.
    """
    tau = 0.7
    method = ClassBalancedFM(tau=tau, label_dropout=0.0)
    assert method.weight == "eps"
    method.setup(N_CLASSES, Prior({"class_prior": torch.tensor([0.2, 0.3, 0.5])}))
    b = batch(shape, 48, seed=3)
    backbone = TokenScale(N_CLASSES + 1, shape)
    loss = method.loss(backbone, b)
    grad = torch.autograd.grad(loss, backbone.e)[0]
    first, second = backbone.calls  # the tokens of y and of y' that the loss drew
    x_t = (1 - b.t).view(-1, *[1] * len(shape)) * b.eps + b.t.view(-1, *[1] * len(shape)) * b.x1
    v = lambda tokens: x_t * backbone.e[tokens].reshape(x_t.shape)  # noqa: E731
    t = b.t.view(-1, *[1] * len(shape))
    eps_y, eps_bal = x_t - t * v(first), x_t - t * v(second)
    per_sample = lambda a, c: (a - c).pow(2).reshape(len(a), -1).mean(1)  # noqa: E731
    noise_space = per_sample(eps_y, eps_bal.detach()) + 0.25 * per_sample(eps_y.detach(), eps_bal)
    want = (v(first) - (b.x1 - b.eps)).pow(2).mean() + tau * ((1 - b.t) * noise_space).mean()
    want_grad = torch.autograd.grad(want, backbone.e)[0]
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-14)


def test_cbfm_drops_labels_at_the_configured_rate_and_sends_the_null_token():
    method = ClassBalancedFM(label_dropout=0.1)
    method.setup(N_CLASSES, Prior({"class_prior": torch.full((N_CLASSES,), 1 / 3)}))
    b = batch((2,), 20000, seed=6)
    backbone = TokenScale(N_CLASSES + 1, (2,))
    method.loss(backbone, b)
    first = backbone.calls[0].numpy()
    dropped = first == 0
    assert abs(dropped.mean() - 0.1) < 0.01  # 5 standard errors at n = 20000
    np.testing.assert_array_equal(first[~dropped], b.cond.label.numpy()[~dropped] + 1)


@pytest.mark.parametrize("target_prior", ["empirical", "uniform"])
def test_cbfm_draws_y_prime_from_the_target_prior(target_prior):
    y = np.repeat([0, 1, 2, 3], [600, 300, 100, 0])  # class 3 has no training samples
    method = ClassBalancedFM(target_prior=target_prior)
    method.setup(4, method.fit_prior(torch.zeros(len(y), 2), torch.tensor(y), 4, seed=0))
    np.testing.assert_allclose(method.prior.tensors["class_prior"].numpy(), [0.6, 0.3, 0.1, 0.0])
    backbone = TokenScale(5, (2,))
    method.loss(backbone, batch((2,), 20000, seed=7))
    counts = np.bincount(backbone.calls[1].numpy() - 1, minlength=4)
    probs = np.array([0.6, 0.3, 0.1, 0.0]) if target_prior == "empirical" else np.full(4, 0.25)
    if target_prior == "empirical":
        assert counts[3] == 0  # an empty class is never a balancing target
        counts, probs = counts[:3], probs[:3]
    assert chisquare(counts, probs * counts.sum()).pvalue > 1e-3


def test_cbfm_draws_are_reproducible_from_the_batch_generator():
    method = ClassBalancedFM()
    method.setup(N_CLASSES, Prior({"class_prior": torch.tensor([0.5, 0.3, 0.2])}))
    runs = []
    for _ in range(2):
        backbone = TokenScale(N_CLASSES + 1, (2,))
        runs.append((method.loss(backbone, batch((2,), 50, seed=8)).item(), backbone.calls))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


# -- configuration -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        (ConditionalPrior, {"sigma": 0.0}, "cpd.sigma must be > 0, got 0.0"),
        (ConditionalPrior, {"sigma": -1.0}, "cpd.sigma must be > 0, got -1.0"),
        (ConditionalPrior, {"sigma": float("nan")}, "cpd.sigma must be > 0"),
        (ClassBalancedFM, {"tau": -0.1}, "cbfm.tau"),
        (ClassBalancedFM, {"label_dropout": -0.1}, "cbfm.label_dropout"),
        (ClassBalancedFM, {"label_dropout": 1.0}, "cbfm.label_dropout"),
        (ClassBalancedFM, {"target_prior": "balanced"}, "cbfm.target_prior"),
        (ClassBalancedFM, {"weight": "t"}, "cbfm.weight"),
    ],
)
def test_bad_config_values_raise_bench_error(cls, kwargs, message):
    with pytest.raises(BenchError, match=message):
        cls(**kwargs)


def test_gin_binds_the_baselines_and_shipped_files_bind_every_default():
    from importlib.resources import files

    gin.clear_config()
    try:
        gin.parse_config(["cpd.sigma = 0.3", "cbfm.tau = 0.5", "cbfm.target_prior = 'uniform'"])
        assert ConditionalPrior().describe() == {"name": "cpd", "sigma": 0.3}
        assert ClassBalancedFM().describe() == {
            "name": "cbfm",
            "tau": 0.5,
            "label_dropout": 0.1,
            "target_prior": "uniform",
            "weight": "eps",
        }
        gin.clear_config()
        defaults = {"cpd": ConditionalPrior().describe(), "cbfm": ClassBalancedFM().describe()}
        for name, params in defaults.items():
            gin.parse_config_file(str(files("bench.gin") / "methods" / f"{name}.gin"))
            for key, value in params.items():
                if key != "name":  # every hyperparameter is bound explicitly, to its default
                    assert gin.query_parameter(f"{name}.{key}") == value
    finally:
        gin.clear_config()


# -- integration with the shared trainer and sampler ---------------------------------------
@functools.cache
def class_centres_after_training(name, tau=1.0):
    """Train on two imbalanced 2-D classes centred at x = -2 and x = +2, sample 100 per class,
    and return each class's mean generated x coordinate."""
    from bench.backbones.mlp import MLPBackbone
    from bench.config.sample import SampleConfig
    from bench.config.train import TrainConfig
    from bench.pipeline.sampler import generate
    from bench.pipeline.trainer import train

    g = torch.Generator().manual_seed(0)
    y = (torch.arange(300) % 3 == 0).long()  # 200 of class 0, 100 of class 1
    x = torch.randn(300, 2, generator=g) * 0.1 + torch.stack([y * 4.0 - 2.0, torch.zeros(300)], 1)
    method = ConditionalPrior() if name == "cpd" else ClassBalancedFM(tau=tau)
    method.setup(2, method.fit_prior(x, y, 2, seed=0))
    torch.manual_seed(0)
    backbone = MLPBackbone((2,), method.vocab_size, method.n_tokens, hidden=32, depth=2)
    cfg = TrainConfig(steps=150, batch_size=64, lr=3e-3, log_every=50)
    result = train(method, backbone, x, y, cfg, seed=0)
    assert result.loss_trace[-1][1] < result.loss_trace[0][1]
    out = generate(method, backbone, [100, 100], (2,), seed=0, cfg=SampleConfig(nfe=8))
    return tuple(out["z"][out["y"] == c, 0].mean().item() for c in (0, 1))


@pytest.mark.parametrize("name", ["cpd", "cbfm"])
def test_trains_and_samples_each_class_where_its_data_is(name):
    centres = class_centres_after_training(name, tau=0.0)  # cbfm with tau = 0: FM + label dropout
    np.testing.assert_allclose(centres, [-2.0, 2.0], atol=0.3)


def test_cbfm_default_keeps_every_class_where_its_data_is():
    # The faithful weight (1 - t) t^2 vanishes at the source, where class velocities must differ;
    # the old default '1-t' pulled the tail class toward the head (swd/tail 10x fm's on synthetic2d).
    np.testing.assert_allclose(
        class_centres_after_training("cbfm", ClassBalancedFM().tau), [-2.0, 2.0], atol=0.3
    )
