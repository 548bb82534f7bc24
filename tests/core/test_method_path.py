"""The Method's path hook (bench/path.py): fm unchanged bit for bit, and a third party's own path.

The pinned numbers were computed with bench before the hook existed (the base loss called
`linear_path` directly): fm's and cbfm's loss on a fixed batch, their loss after three steps of
bench's trainer and the set sampled from that backbone at NFE 4.
"""

import numpy as np
import pytest
import torch
from test_method_fm import Recorder  # a fixed-velocity backbone that records its inputs

from bench.config.sample import SampleConfig
from bench.config.train import TrainConfig
from bench.method import Condition, Method, TrainBatch
from bench.methods.cbfm import ClassBalancedFM
from bench.methods.cpd import ConditionalPrior
from bench.methods.fm import FlowMatching
from bench.path import LINEAR, AffinePath, LinearPath, PathSample, ProbabilityPath, Schedule, linear_path
from bench.pipeline.sampler import generate
from bench.pipeline.trainer import train
from bench.testing import check_method
from bench.testing.tiny import TinyBackbone, tiny_latents

# (loss on the fixed batch, training loss after 3 steps, sampled set) before the path hook
PINNED = {
    "fm": (
        float.fromhex("0x1.a9b1500000000p+0"),
        float.fromhex("0x1.a7a8e55555555p+3"),
        [
            [0.5299546122550964, -1.1764912605285645],
            [2.0702054500579834, -0.5982161164283752],
            [0.8543720245361328, -1.2510281801223755],
            [1.8061000108718872, 0.624656617641449],
            [-1.5226106643676758, -2.113598346710205],
            [-2.3707733154296875, 0.21363139152526855],
        ],
    ),
    "cbfm": (
        float.fromhex("0x1.b52a920000000p+0"),
        float.fromhex("0x1.73e8a55555555p+3"),
        [
            [0.5280373692512512, -1.1776962280273438],
            [2.0682244300842285, -0.5994212031364441],
            [0.8523976802825928, -1.2522006034851074],
            [1.8052337169647217, 0.624250054359436],
            [-1.5245362520217896, -2.112959861755371],
            [-2.3708553314208984, 0.2137679159641266],
        ],
    ),
}


def fixed_batch() -> TrainBatch:
    """Eight 2-D rows of three classes with their noise, times and generator."""
    g = torch.Generator().manual_seed(7)
    x1, eps, t = torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g), torch.rand(8, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0])
    return TrainBatch(x1, Condition(y), eps, t, torch.Generator().manual_seed(3))


def tiny_net() -> TinyBackbone:
    """The kit's tiny backbone for 2-D latents and three classes, from a fixed seed."""
    torch.manual_seed(0)
    return TinyBackbone((2,), 4, 1)


def set_up(method):
    """`method` after its offline stage on the kit's tiny latents."""
    z, y = tiny_latents((2,))
    method.setup(3, method.fit_prior(z, y, 3, 0))
    return method


@pytest.mark.parametrize("name", ["fm", "cbfm"])
def test_linear_methods_are_unchanged_by_the_path_hook(name):
    make = {"fm": FlowMatching, "cbfm": ClassBalancedFM}[name]
    loss, trained, sampled = PINNED[name]
    assert set_up(make()).loss(tiny_net(), fixed_batch()).item() == pytest.approx(loss, rel=1e-6, abs=0)
    method, net = set_up(make()), tiny_net()
    z, y = tiny_latents((2,))
    result = train(method, net, z, y, TrainConfig(steps=3, batch_size=16), 0)
    assert result.loss_trace[-1][1] == pytest.approx(trained, rel=1e-6, abs=0)
    out = generate(method, net, [3, 2, 1], (2,), 0, SampleConfig(nfe=4))
    np.testing.assert_allclose(out["z"].numpy(), np.array(sampled, dtype=np.float32), rtol=1e-6, atol=1e-7)


def test_fm_loss_is_bit_identical_to_the_hard_wired_linear_path():
    """The base loss through `path` against the pre-hook formula, written out: equal bits."""
    batch, method = fixed_batch(), set_up(FlowMatching())
    net = tiny_net()
    x0 = batch.eps
    tt = batch.t.reshape(-1, 1)
    x_t = (1 - tt) * x0 + tt * batch.x1
    old = (net(x_t, batch.t, (batch.cond.label + 1).unsqueeze(1)) - (batch.x1 - x0)).pow(2).mean()
    assert torch.equal(method.loss(net, batch), old)
    point = LINEAR.sample(x0, batch.x1, batch.t)
    assert torch.equal(point.x_t, linear_path(x0, batch.x1, batch.t).x_t)


def test_every_linear_method_has_the_linear_path():
    for method in (Method(), FlowMatching(), ClassBalancedFM(), ConditionalPrior()):
        assert isinstance(method.path, LinearPath)
    assert LINEAR.describe() == {"name": "linear"}
    assert FlowMatching().describe() == {"name": "fm"}  # records of fm do not change either


class Quadratic(AffinePath):
    """A third party's path: alpha = t^2, sigma = 1 - t^2."""

    name = "quadratic"

    def schedule(self, t):
        return Schedule(alpha=t.pow(2), sigma=1 - t.pow(2), d_alpha=2 * t, d_sigma=-2 * t)


class QuadraticFM(Method):
    """Vanilla FM on the quadratic path: the path is the method's only change."""

    name = "quadratic_fm"
    path = Quadratic()


def test_a_third_party_path_is_what_the_base_loss_trains_on():
    rng = np.random.default_rng(3)
    x1, eps, v = (torch.tensor(rng.normal(size=(6, 2))) for _ in range(3))
    t = torch.tensor(rng.uniform(size=6))
    method, net = QuadraticFM(), Recorder(v)
    method.setup(3)
    loss = method.loss(net, TrainBatch(x1, Condition(torch.tensor([0, 1, 2, 0, 1, 2])), eps, t))
    tn = t.numpy()[:, None]
    x_t = tn**2 * x1.numpy() + (1 - tn**2) * eps.numpy()
    u = 2 * tn * x1.numpy() - 2 * tn * eps.numpy()
    np.testing.assert_allclose(net.seen[0].numpy(), x_t)
    assert float(loss) == pytest.approx(np.mean((v.numpy() - u) ** 2), rel=1e-12)
    check_method(QuadraticFM)


def test_an_affine_path_with_the_linear_schedule_is_the_linear_path():
    class Straight(AffinePath):
        def schedule(self, t):
            return Schedule(t, 1 - t, torch.ones_like(t), -torch.ones_like(t))

    rng = np.random.default_rng(4)
    x0, x1 = (torch.tensor(rng.normal(size=(5, 1, 2, 2))) for _ in range(2))
    t = torch.tensor(rng.uniform(size=5))
    a, b = Straight().sample(x0, x1, t), linear_path(x0, x1, t)
    torch.testing.assert_close(a.x_t, b.x_t)
    torch.testing.assert_close(a.u, b.u)


class NaNVelocity(ProbabilityPath):
    """A broken path: its target velocity is NaN."""

    def sample(self, x0, x1, t):
        return PathSample(x0, x1, t, x_t=x1, u=x1 * float("nan"))


def test_the_contract_check_names_a_broken_path():
    class Broken(Method):
        name = "broken_path"
        path = NaNVelocity()

    class NotAPath(Method):
        name = "not_a_path"
        path = "vp"

    with pytest.raises(AssertionError, match="hook `path`.*u of NaN"):
        check_method(Broken)
    with pytest.raises(AssertionError, match="hook `path`.*ProbabilityPath"):
        check_method(NotAPath)


def test_a_path_must_implement_sample():
    with pytest.raises(NotImplementedError, match="sample"):
        ProbabilityPath().sample(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1))
    with pytest.raises(NotImplementedError, match="schedule"):
        AffinePath().sample(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1))
