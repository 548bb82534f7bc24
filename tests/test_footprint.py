"""The training footprint `bench validate` prints and checks, against hand computations."""

from types import SimpleNamespace

import pytest
import torch

from bench.backbones.flux import FluxBackbone
from bench.backbones.mlp import MLPBackbone
from bench.pipeline.footprint import GIB, estimate, require_fit
from bench.errors import BenchError


def test_mlp_state_is_16_bytes_a_parameter_and_6_flops_a_parameter_and_sample():
    with torch.device("meta"):
        backbone = MLPBackbone((2,), 2, 1)
    n = sum(p.numel() for p in backbone.parameters())
    fp = estimate(backbone, batch_size=512, micro_batches=1, processes=1, mixed_precision="no")
    assert fp.parameters == n
    assert (fp.weights_gib, fp.gradients_gib, fp.optimiser_gib) == pytest.approx((4 * n / GIB, 4 * n / GIB, 8 * n / GIB))
    assert fp.activations_gib is None and "activations not estimated" in fp.describe()
    assert fp.flops_per_step == pytest.approx(6 * n * 512)


def test_flux_activations_and_flops_follow_tokens_width_and_layers():
    hp = dict(num_layers=2, num_single_layers=1, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
              pooled_projection_dim=32, axes_dims_rope=(4, 6, 6))
    with torch.device("meta"):
        backbone = FluxBackbone((1, 16, 16), 11, 1, **hp)
    n = sum(p.numel() for p in backbone.parameters())
    tokens, hidden, layers = 8 * 8 + 1, 2 * 16, 3  # 2x2 patches of a 16x16 latent, one condition token
    fp = estimate(backbone, batch_size=32, micro_batches=2, processes=2, mixed_precision="bf16")
    assert fp.batch == 8  # 32 split into 2 micro-batches on each of 2 processes
    assert fp.activations_gib == pytest.approx(8 * tokens * hidden * layers * 34 / GIB)
    assert fp.flops_per_step == pytest.approx(32 * (6 * n * tokens + 12 * layers * tokens**2 * hidden))
    fp32 = estimate(backbone, batch_size=32, micro_batches=2, processes=2, mixed_precision="no")
    assert fp32.activations_gib == pytest.approx(2 * fp.activations_gib)


def test_a_step_larger_than_the_device_is_refused_with_a_way_out():
    fp = SimpleNamespace(total_gib=200.0, describe=lambda: "x")
    require_fit("d/m/seed0", fp, 256.0, "GPU")
    with pytest.raises(BenchError, match=r"d/m/seed0 needs ~200 GiB .* more than the 80 GiB of GPU; use a smaller"):
        require_fit("d/m/seed0", fp, 80.0, "GPU")
