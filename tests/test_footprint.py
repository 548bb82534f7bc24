"""The training footprint `bench validate` prints and checks, against hand computations."""

from types import SimpleNamespace

import pytest
import torch

from bench.backbones.flux import FluxBackbone
from bench.backbones.mlp import MLPBackbone
from bench.pipeline.footprint import GIB, Footprint, devices_needed, estimate, require_fit
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


def test_a_step_larger_than_the_device_is_refused_with_ways_out():
    fp = Footprint(parameters=10 * 2**30, largest_unit=2**28, batch_size=8, micro_batches=1, processes=1,
                   mixed_precision="bf16")
    assert fp.total_gib == pytest.approx(160.0)  # 16 B a parameter, activations not estimated
    require_fit("d/m/seed0", fp, 256.0, "GPU")
    with pytest.raises(BenchError, match=r"d/m/seed0 needs ~160 GiB .* more than the 80 GiB of GPU; shard it "
                                         r"over 3 or more such devices \(train.sharding='fsdp' and "
                                         r"train.micro_batches=3 with executor.tasks_per_node=3.*use a smaller "
                                         r"backbone preset"):
        require_fit("d/m/seed0", fp, 80.0, "GPU")
    # 4 micro-batches: 3 devices would fit but cannot share them; 4 can
    assert devices_needed(Footprint(**{**fp.__dict__, "micro_batches": 4}), 80.0) == 4


def test_sharding_splits_the_state_and_adds_one_gathered_block():
    fp = Footprint(parameters=1000 * 2**20, largest_unit=100 * 2**20, batch_size=8, micro_batches=1, processes=1,
                   mixed_precision="bf16", sharded=True)
    assert fp.total_gib == pytest.approx(1000 * 16 / 1024)  # one process: nothing sharded, nothing gathered
    four = fp.on(4)
    assert (four.weights_gib, four.gradients_gib, four.optimiser_gib) == pytest.approx(
        (1000 * 4 / 4 / 1024, 1000 * 4 / 4 / 1024, 1000 * 8 / 4 / 1024))
    assert four.gathered_gib == pytest.approx(100 * 2 * 2 / 1024)  # bf16 weights + gradients of one block
    assert devices_needed(fp, four.total_gib) == 4


def test_activation_checkpointing_keeps_block_inputs_and_one_block():
    shape = (65, 32, 3)
    plain = Footprint(10, 10, 32, 2, 2, "bf16", shape=shape)
    recomputed = Footprint(10, 10, 32, 2, 2, "bf16", activation_checkpointing=True, shape=shape)
    assert recomputed.activations_gib == pytest.approx(8 * 65 * 32 * (3 * 2 + 34) / GIB)
    assert recomputed.activations_gib < plain.activations_gib
