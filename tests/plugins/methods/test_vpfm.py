"""vpfm: the variance-preserving path against its closed form on a Gaussian case, and transport.

The schedule is recomputed here in numpy from Lipman et al. (2023)'s VP path in bench's time
(alpha_t = exp(-T(1 - t) / 2), T(s) = beta_min s + (beta_max - beta_min) s^2 / 2,
sigma_t = sqrt(1 - alpha_t^2)); the velocity against finite differences of the path; and bench's
sampler, driven by the exact marginal velocity field of Gaussian class data, against the exact
transport map, for the VP path and the linear path alike.
"""

import math

import numpy as np
import pytest
import torch

from bench.config.sample import SampleConfig
from bench.errors import BenchError
from bench.method import Condition, TrainBatch
from bench.methods.fm import FlowMatching
from bench.methods.vpfm import VPFlowMatching, VPPath
from bench.path import AffinePath, Schedule
from bench.pipeline.sampler import draw_sources, generate

TIMES = [0.0, 0.05, 0.3, 0.5, 0.7, 0.9, 0.99, 1 - 1e-5]


def alpha_np(t, beta_min=0.1, beta_max=20.0):
    """alpha_t of the VP path in bench's time, from the integrated noise rate."""
    s = 1 - np.asarray(t, dtype=np.float64)
    return np.exp(-0.5 * (beta_min * s + 0.5 * (beta_max - beta_min) * s**2))


def test_schedule_matches_the_closed_form_and_preserves_variance():
    t = torch.tensor(TIMES, dtype=torch.float64)
    c = VPPath().schedule(t)
    np.testing.assert_allclose(c.alpha.numpy(), alpha_np(TIMES), rtol=1e-12)
    # 1e-9: 1 - alpha^2 cancels in numpy near t = 1, where the path computes it as -expm1(-T)
    np.testing.assert_allclose(c.sigma.numpy(), np.sqrt(1 - alpha_np(TIMES) ** 2), rtol=1e-9)
    np.testing.assert_allclose((c.alpha**2 + c.sigma**2).numpy(), 1.0, rtol=1e-12)
    assert bool((c.alpha[1:] > c.alpha[:-1]).all())  # noise to data: alpha rises, sigma falls
    other = VPPath(beta_min=0.5, beta_max=5.0).schedule(t)
    np.testing.assert_allclose(other.alpha.numpy(), alpha_np(TIMES, 0.5, 5.0), rtol=1e-12)


def test_the_ends_of_the_path():
    x0, x1 = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    ends = VPPath().sample(x0, x1, torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(ends.x_t[2:], x1[2:], rtol=0, atol=0)  # t = 1: the data exactly
    # t = 0: alpha_0 = exp(-T(1) / 2) = exp(-5.025), small but not 0; sigma_0 = sqrt(1 - alpha_0^2)
    alpha0 = math.exp(-0.5 * (0.1 + 0.5 * 19.9))
    assert alpha0 == pytest.approx(0.006571, rel=1e-3)
    torch.testing.assert_close(ends.x_t[:2], alpha0 * x1[:2] + math.sqrt(1 - alpha0**2) * x0[:2])
    # the velocity is finite up to the training ceiling, infinite at t = 1 itself
    c = VPPath().schedule(torch.tensor([1 - 1e-5, 1.0], dtype=torch.float64))
    assert abs(float(c.d_sigma[0])) == pytest.approx(math.sqrt(0.1 / 4e-5), rel=2e-3)  # ~50
    assert math.isinf(float(c.d_sigma[1]))


@pytest.mark.parametrize("t", [0.0, 0.05, 0.3, 0.5, 0.7, 0.9, 0.99, 0.9999])
def test_the_target_velocity_is_the_time_derivative_of_the_path(t):
    g = torch.Generator().manual_seed(int(t * 1e4))
    x0, x1 = (torch.randn(5, 1, 2, 2, generator=g, dtype=torch.float64) for _ in range(2))
    path, h = VPPath(), 1e-6 * min(1.0, 1 - t if t < 1 else 1.0)
    at = path.sample(x0, x1, torch.full((5,), t, dtype=torch.float64))
    lo, hi = (path.sample(x0, x1, torch.full((5,), t + d, dtype=torch.float64)) for d in (-h, h))
    torch.testing.assert_close(at.u, (hi.x_t - lo.x_t) / (2 * h), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("t", [0.0, 0.3, 0.7, 0.95])
def test_x_t_of_gaussian_data_has_the_closed_form_mean_and_variance(t):
    """x1 ~ N(mu, s^2), x0 ~ N(0, 1): x_t ~ N(alpha_t mu, alpha_t^2 s^2 + sigma_t^2)."""
    g = torch.Generator().manual_seed(0)
    n, mu, s = 200_000, torch.tensor([3.0, -1.0]), torch.tensor([0.5, 2.0])
    x1 = (mu + s * torch.randn(n, 2, generator=g)).double()
    x0 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x_t = VPPath().sample(x0, x1, torch.full((n,), t, dtype=torch.float64)).x_t.numpy()
    a = alpha_np(t)
    mean, var = a * mu.numpy(), a**2 * s.numpy() ** 2 + (1 - a**2)
    np.testing.assert_allclose(x_t.mean(0), mean, atol=5 * np.sqrt(var.max() / n))
    np.testing.assert_allclose(x_t.var(0), var, rtol=5 * np.sqrt(2 / n))


def test_the_loss_regresses_the_vp_velocity():
    rng = np.random.default_rng(2)
    x1, eps, v = (torch.tensor(rng.normal(size=(6, 2))) for _ in range(3))
    t = torch.tensor(rng.uniform(size=6))

    class Fixed(torch.nn.Module):
        def forward(self, x_t, t, tokens):
            self.x_t = x_t
            return v

    method, net = VPFlowMatching(), Fixed()
    method.setup(2)
    loss = method.loss(net, TrainBatch(x1, Condition(torch.tensor([0, 1, 0, 1, 0, 1])), eps, t))
    a = alpha_np(t.numpy())[:, None]
    beta = 0.1 + (1 - t.numpy()[:, None]) * 19.9
    sigma, d_alpha = np.sqrt(1 - a**2), 0.5 * beta * a
    u = d_alpha * x1.numpy() - a * d_alpha / sigma * eps.numpy()
    np.testing.assert_allclose(net.x_t.numpy(), a * x1.numpy() + sigma * eps.numpy(), rtol=1e-12)
    assert float(loss) == pytest.approx(np.mean((v.numpy() - u) ** 2), rel=1e-10)


def test_training_times_stop_short_of_the_data_end():
    method = VPFlowMatching(t_eps=1e-3)
    t = method.sample_time(10_000, torch.Generator().manual_seed(0))
    plain = torch.rand(10_000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(t, (1 - 1e-3) * plain)  # the same draws, scaled: fm's stream
    assert float(t.min()) >= 0 and float(t.max()) < 1 - 1e-3
    assert VPFlowMatching().describe() == {
        "name": "vpfm",
        "path": {"name": "vp", "beta_min": 0.1, "beta_max": 20.0},
        "t_eps": 1e-5,
    }


@pytest.mark.parametrize(
    "settings,words",
    [
        ({"beta_min": -0.1}, "vpfm.beta_min must be >= 0"),
        ({"beta_max": 0.05}, "vpfm.beta_max must be > 0 and >= vpfm.beta_min"),
        ({"beta_max": float("nan")}, "vpfm.beta_max"),
        ({"t_eps": 0}, "vpfm.t_eps must be in (0, 1)"),
        ({"t_eps": "1e-5"}, "vpfm.t_eps"),
    ],
)
def test_bad_settings_are_refused_in_one_line(settings, words):
    with pytest.raises(BenchError) as err:
        VPFlowMatching(**settings)
    assert str(err.value).splitlines()[0].startswith(words)  # gin adds the configurable below


# -- transport: bench's sampler with the exact velocity of Gaussian class data -----------------------
class LinearSchedule(AffinePath):
    """The linear path written as an affine one, so one closed form serves both paths."""

    def schedule(self, t):
        return Schedule(t, 1 - t, torch.ones_like(t), -torch.ones_like(t))


MU = torch.tensor([[2.0, -1.0], [-3.0, 0.5]], dtype=torch.float64)  # class means
SD = torch.tensor([[0.5, 1.5], [1.0, 0.3]], dtype=torch.float64)  # class standard deviations


class GaussianField(torch.nn.Module):
    """The marginal velocity E[u | x_t = x, class] of data N(MU_c, SD_c^2) on an affine path:
    alpha' mu + (alpha alpha' s^2 + sigma sigma') / (alpha^2 s^2 + sigma^2) (x - alpha mu)."""

    def __init__(self, path: AffinePath):
        super().__init__()
        self.path = path

    def forward(self, x, t, tokens):
        c = self.path.schedule(t.double()[:, None])
        mu, s = MU[tokens[:, 0] - 1], SD[tokens[:, 0] - 1]
        slope = (c.alpha * c.d_alpha * s**2 + c.sigma * c.d_sigma) / (c.alpha**2 * s**2 + c.sigma**2)
        return (c.d_alpha * mu + slope * (x.double() - c.alpha * mu)).to(x.dtype)


def transport_map(path: AffinePath, x0: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The exact flow of GaussianField from t = 0 to 1: the affine map between the t = 0 and t = 1
    marginals, m_1 + s_1 / s_0 (x - m_0), per dimension."""
    c = path.schedule(torch.zeros(1, dtype=torch.float64))
    mu, s = MU[y], SD[y]
    m0, s0 = c.alpha * mu, torch.sqrt(c.alpha**2 * s**2 + c.sigma**2)
    return mu + s / s0 * (x0.double() - m0)


@pytest.mark.parametrize("make", [FlowMatching, VPFlowMatching], ids=["fm", "vpfm"])
def test_the_sampler_transports_the_source_to_gaussian_data(make):
    """bench's Euler sampler at 256 NFE follows the exact flow sample by sample, and the samples'
    class moments are the data's. On the VP path the flow starts from N(0, I), not the path's own
    t = 0 marginal N(alpha_0 mu, alpha_0^2 s^2 + sigma_0^2): the map includes that offset."""
    method = make()
    method.setup(2)
    path = LinearSchedule() if make is FlowMatching else method.path
    n, cfg = 2000, SampleConfig(nfe=256)
    out = generate(method, GaussianField(path), [n, n], (2,), 0, cfg)
    z, y = out["z"].double(), out["y"]
    x0 = draw_sources(method, [n, n], (2,), 0, cfg)["z"]  # the draws the sampler started from
    torch.testing.assert_close(z, transport_map(path, x0, y), atol=0.05, rtol=0)
    for c in range(2):  # Monte Carlo tolerance on the moments, plus the Euler error above
        rows = z[y == c]
        torch.testing.assert_close(
            rows.mean(0), MU[c], atol=float(5 * SD[c].max() / math.sqrt(n)) + 0.03, rtol=0
        )
        torch.testing.assert_close(rows.std(0), SD[c], atol=0.03, rtol=5 * math.sqrt(0.5 / n))
