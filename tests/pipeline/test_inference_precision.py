"""Sampling in bf16 (sample.precision='bf16') against the fp32 reference, on the CPU.

Tolerance: bf16 must cost less than a tenth of the metric's own sampling noise. The noise floor
is the distance between two fp32 sets of the same size drawn with different seeds (what the
metric reads between two equally good sample sets). bf16's effect is measured twice against it:
the distance between the fp32 and the bf16 set of the *same* seed (per-sample rounding error,
accumulated over the ODE), and the change bf16 makes to the distance to the data (what a
reader of the metric would see). Measured on this test's model (2-D, 4 classes x 300, Euler
32 steps): same-seed SWD 0.016 of the floor and the change of SWD to the data 0.003 of it;
same-seed Frechet distance 0.0003 of its floor and the change to the data 0.016 of it
(per-sample error: rms 8e-4, max 3e-3, on data of std 1.4). The test asks for 0.1.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.backbones.flux import FluxBackbone
from bench.backbones.mlp import MLPBackbone
from bench.config.sample import SampleConfig
from bench.errors import BenchError
from bench.evaluators.fid import fid
from bench.evaluators.swd import random_directions, sliced_wasserstein
from bench.method import Method
from bench.pipeline import inference_precision
from bench.pipeline.sampler import ConditionedVelocity, draw_sources, generate

CENTRES = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
TOLERANCE = 0.1  # of the fp32 seed-to-seed distance (see the module docstring)


def mixture(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n points of a 4-class 2-D Gaussian mixture (std 0.3 around each class centre)."""
    y = torch.randint(0, len(CENTRES), (n,), generator=generator)
    return CENTRES[y] + 0.3 * torch.randn(n, 2, generator=generator), y


@pytest.fixture(scope="module")
def trained_mlp():
    """A small MLP velocity field trained by conditional flow matching on the mixture (~1 s)."""
    torch.manual_seed(0)
    method = Method()
    method.setup(len(CENTRES))
    backbone = MLPBackbone((2,), method.vocab_size, 1, hidden=64, depth=2)
    optimizer = torch.optim.Adam(backbone.parameters(), 1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        x1, y = mixture(128, g)
        x0, t = torch.randn(128, 2, generator=g), torch.rand(128, generator=g)
        x_t = (1 - t[:, None]) * x0 + t[:, None] * x1
        loss = (backbone(x_t, t, (y + 1)[:, None]) - (x1 - x0)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return method, backbone


def per_class(a: dict, b_x: torch.Tensor, b_y: torch.Tensor, distance) -> float:
    """Mean over the classes of distance(a's samples of the class, as many of b's)."""
    values = []
    for c in range(len(CENTRES)):
        mine = a["z"][a["y"] == c]
        values.append(distance(mine.double().numpy(), b_x[b_y == c][: len(mine)].double().numpy()))
    return float(np.mean(values))


def test_bf16_sampling_is_within_a_tenth_of_the_sampling_noise_of_fp32(trained_mlp):
    method, backbone = trained_mlp
    n = [300] * len(CENTRES)
    sets = {
        (p, s): generate(method, backbone, n, (2,), s, SampleConfig(nfe=32, precision=p))
        for p in ("fp32", "bf16")
        for s in (1, 2)
    }
    data_x, data_y = mixture(4000, torch.Generator().manual_seed(99))
    directions = random_directions(200, 2, 0)
    swd = lambda a, b: sliced_wasserstein(a, b, directions)  # noqa: E731
    fp32, bf16, other = sets["fp32", 1], sets["bf16", 1], sets["fp32", 2]
    assert bf16["z"].dtype == torch.float32 and torch.equal(bf16["y"], fp32["y"])
    assert not torch.equal(bf16["z"], fp32["z"])  # bf16 really ran
    for distance in (swd, fid):
        floor = per_class(fp32, other["z"], other["y"], distance)
        same_seed = per_class(bf16, fp32["z"], fp32["y"], distance)
        to_data = {p: per_class(sets[p, 1], data_x, data_y, distance) for p in ("fp32", "bf16")}
        assert same_seed < TOLERANCE * floor, (distance, same_seed, floor)
        assert abs(to_data["bf16"] - to_data["fp32"]) < TOLERANCE * floor, (distance, to_data, floor)
    # the flow learned something: its samples are far closer to the data than the source is
    source = draw_sources(method, n, (2,), 1, SampleConfig())
    assert per_class(fp32, data_x, data_y, swd) < 0.5 * per_class(source, data_x, data_y, swd)


def test_bf16_flux_sampling_stays_close_to_fp32():
    """The transformer path (RMSNorm, RoPE, attention under autocast): per-sample rounding error
    of the whole ODE well under the flow's own displacement, on a tiny random FLUX (measured:
    rms 0.0048 against a displacement of 0.63, 0.8 %; the test asks for < 5 %)."""
    torch.manual_seed(0)
    method = Method()
    method.setup(3)
    backbone = FluxBackbone(
        (4, 8, 8),
        method.vocab_size,
        1,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=(4, 6, 6),
    )
    n = [8] * 3
    z = {
        p: generate(method, backbone, n, (4, 8, 8), 3, SampleConfig(nfe=4, precision=p))["z"]
        for p in ("fp32", "bf16")
    }
    x0 = draw_sources(method, n, (4, 8, 8), 3, SampleConfig())["z"]
    error = (z["bf16"] - z["fp32"]).pow(2).mean().sqrt()
    displacement = (z["fp32"] - x0).pow(2).mean().sqrt()
    assert 0 < error < 0.05 * displacement, (float(error), float(displacement))


class Recorder(torch.nn.Module):
    """A backbone that notes whether autocast was on and what dtype its input came in."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)
        self.seen = []

    def forward(self, x, t, tokens):
        self.seen.append((torch.is_autocast_enabled("cpu"), x.dtype, t.dtype))
        return self.layer(x)


@pytest.mark.parametrize(
    "precision,autocast,out_dtype", [("fp32", False, torch.float32), ("bf16", True, torch.bfloat16)]
)
def test_velocity_runs_under_autocast_and_returns_fp32(precision, autocast, out_dtype):
    net = Recorder()
    velocity = ConditionedVelocity(net, torch.ones(3, 1, dtype=torch.long), precision=precision)
    x = torch.randn(3, 2)
    v = velocity(x, torch.tensor([0.5]))
    assert net.seen == [(autocast, torch.float32, torch.float32)]  # the state and the time stay fp32
    assert v.dtype == torch.float32
    with inference_precision.forward_precision(precision, x):
        assert net.layer(x).dtype == out_dtype


def test_unknown_precision_is_one_line():
    with pytest.raises(BenchError, match=r"sample.precision='fp16': use one of fp32, bf16"):
        SampleConfig(precision="fp16")


def test_tf32_is_on_under_bf16_off_under_fp32_and_restored_after(monkeypatch):
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (matmul.allow_tf32, cudnn.allow_tf32)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with inference_precision.inference_scope("bf16"):
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (True, True)
        assert (matmul.fp32_precision, cudnn.conv.fp32_precision) == ("tf32", "tf32")  # the new API agrees
    assert (matmul.allow_tf32, cudnn.allow_tf32) == before
    with inference_precision.inference_scope("fp32"):  # exact: not even cuDNN's default TF32 convolutions
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (False, False)
    assert (matmul.allow_tf32, cudnn.allow_tf32) == before


class RecordingDecoder:
    """An encoder whose decoder notes whether bf16 autocast was on and returns a bf16 tensor."""

    def __init__(self):
        self.seen = []

    def compute_device(self):
        return torch.device("cpu")

    def decode(self, z):
        self.seen.append((torch.is_autocast_enabled("cpu"), len(z)))
        return torch.nn.functional.linear(z, torch.eye(z.shape[1]))  # bf16 under autocast


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sets_are_decoded_at_the_sample_precision(precision):
    from types import SimpleNamespace

    from bench.pipeline import runner

    encoder = RecordingDecoder()
    cell = SimpleNamespace(encoder=encoder, config=SimpleNamespace(sample=SampleConfig(precision=precision)))
    z = torch.randn(5000, 3)
    split = runner.decode(cell, {"z": z, "y": torch.zeros(5000, dtype=torch.long)})
    assert encoder.seen == [
        (precision == "bf16", runner.DECODE_CHUNK),
        (precision == "bf16", 5000 - runner.DECODE_CHUNK),
    ]
    assert split.x.dtype == torch.float32 and torch.allclose(split.x, z, atol=2e-2)
