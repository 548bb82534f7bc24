"""The training footprint `bench validate` prints and checks: how the traced step composes over
processes, DDP and FSDP, against hand computations from the trace's parts."""

import re

import pytest
import torch

import gin
from bench.backbones.flux import FluxBackbone
from bench.backbones.mlp import MLPBackbone
from bench.errors import BenchError
from bench.pipeline.footprint import (
    GIB,
    Footprint,
    devices_needed,
    estimate,
    micro_batches_needed,
    require_fit,
)

HP = dict(
    num_layers=1,
    num_single_layers=2,
    attention_head_dim=32,
    num_attention_heads=2,
    joint_attention_dim=32,
    pooled_projection_dim=32,
    axes_dims_rope=(8, 12, 12),
)


@pytest.fixture(scope="module")
def flux():
    with torch.device("meta"):
        return FluxBackbone((4, 16, 16), 11, 1, **HP)


def test_mlp_is_traced_too_state_16_bytes_a_parameter():
    with torch.device("meta"):
        backbone = MLPBackbone((2,), 2, 1)
    n = sum(p.numel() for p in backbone.parameters())
    fp = estimate(backbone, batch_size=512, micro_batches=1, processes=1, mixed_precision="no")
    assert fp.parameters == n
    state = (fp.weights_gib, fp.gradients_gib, fp.optimiser_gib)
    assert state == pytest.approx((4 * n / GIB, 4 * n / GIB, 8 * n / GIB))
    assert fp.activations_gib > 0 and fp.total_gib > 16 * n / GIB
    assert fp.flops_per_step > 0


def test_an_untraceable_backbone_gets_the_parameter_terms_and_says_so():
    class Opaque(torch.nn.Module):  # no sample_shape: the trace cannot feed it
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 4)

    fp = estimate(Opaque(), batch_size=8, micro_batches=1, processes=1, mixed_precision="no")
    assert fp.trace is None and fp.total_gib == pytest.approx(16 * 20 / GIB)
    assert "activations not estimated (its step does not trace under fake tensors" in fp.describe()
    assert fp.flops_per_step == 6 * 20 * 8


@pytest.mark.slow
def test_one_process_is_the_trace_and_accumulation_holds_every_gradient(flux):
    one = estimate(flux, batch_size=32, micro_batches=1, processes=1, mixed_precision="bf16")
    acc = estimate(flux, batch_size=64, micro_batches=2, processes=1, mixed_precision="bf16")
    assert one.batch == acc.batch == 32 and one.trace is acc.trace  # same micro-batch: one (cached) trace
    peaks = sum(one.trace.first.values()), sum(one.trace.optimiser_step.values())
    assert one.total_gib * GIB == pytest.approx(max(peaks))
    assert acc.total_gib * GIB == pytest.approx(sum(acc.trace.accumulating.values()))
    assert acc.trace.accumulating["gradients"] == acc.trace.gradients > acc.trace.first["gradients"]
    assert acc.flops_per_step == pytest.approx(2 * one.flops_per_step)
    # the bf16 copies of the weights are told apart, and only exist under autocast
    assert one.weight_copies_gib > 0
    assert estimate(flux, 32, 1, 1, "no").weight_copies_gib == 0


def test_sharded_activations_are_a_whole_micro_batch_per_rank(flux):
    """`executor.tasks_per_node=8 train.sharding='fsdp'`: 8 micro-batches of 32, one per rank."""
    fp = estimate(
        flux, batch_size=256, micro_batches=8, processes=1, mixed_precision="bf16", sharding="fsdp"
    ).on(8)
    assert fp.batch == 32 and not fp.accumulating
    assert fp.activations_gib * GIB == fp.trace.activations_most  # the traced micro-batch of 32, whole
    assert fp.trace.rows == 32
    n = fp.parameters
    assert fp.weights_gib == pytest.approx(4 * n / 8 / GIB) and fp.optimiser_gib == pytest.approx(
        8 * n / 8 / GIB
    )
    # one micro-batch per rank: no gradient shards yet at the activations' peak
    expected = 12 * n / 8 / GIB + fp.activations_gib + fp.gathered_gib
    assert fp.total_gib == pytest.approx(max(expected, fp.optimiser_step_gib))
    two = fp.on(4)  # two micro-batches per rank: the first one's gradient shards are held
    assert two.total_gib == pytest.approx(
        max(16 * n / 4 / GIB + two.activations_gib + two.gathered_gib, two.optimiser_step_gib)
    )


def test_gathered_units_are_two_bf16_blocks_their_gradients_and_the_fp32_reduce_copy():
    fp = Footprint(
        parameters=1000 * 2**20,
        largest_unit=100 * 2**20,
        batch_size=8,
        micro_batches=1,
        processes=4,
        mixed_precision="bf16",
        sharded=True,
        root_parameters=10 * 2**20,
    )
    assert fp.gathered_gib == pytest.approx((100 * (2 * 2 + 2 + 4) + 10 * 2) / 1024)
    assert (fp.weights_gib, fp.gradients_gib, fp.optimiser_gib) == pytest.approx(
        (1000 * 4 / 4 / 1024, 1000 * 4 / 4 / 1024, 1000 * 8 / 4 / 1024)
    )
    fp32 = Footprint(**{**fp.__dict__, "mixed_precision": "no"})
    assert fp32.gathered_gib == pytest.approx((100 * (2 * 4 + 4) + 10 * 4) / 1024)


def test_ddp_fsdp_and_checkpointing_order(flux):
    args = dict(batch_size=64, micro_batches=2, mixed_precision="bf16")
    single = estimate(flux, processes=1, **args)
    ddp = estimate(flux, processes=2, **args)
    copies = estimate(flux, processes=2, bucket_view=False, **args)
    fsdp = estimate(flux, processes=2, sharding="fsdp", **args)
    recomputed = estimate(flux, processes=1, activation_checkpointing=True, **args)
    # DDP over 2: one micro-batch each, gradients born in the backward; buckets only as copies
    assert ddp.total_gib < single.total_gib
    assert copies.total_gib == pytest.approx(ddp.total_gib + ddp.parameters * 4 / GIB)
    assert fsdp.weights_gib == pytest.approx(single.weights_gib / 2)
    assert fsdp.activations_gib >= ddp.activations_gib  # no fewer activations than the unsharded rank
    assert recomputed.activations_gib < 0.5 * single.activations_gib
    assert recomputed.flops_per_step > 1.2 * single.flops_per_step  # the second forward counted
    ema = estimate(flux, processes=1, ema=True, **args)
    assert ema.total_gib == pytest.approx(single.total_gib + single.parameters * 4 / GIB)


def test_a_step_larger_than_the_device_is_refused_with_ways_out():
    fp = Footprint(
        parameters=10 * 2**30,
        largest_unit=2**28,
        batch_size=8,
        micro_batches=1,
        processes=1,
        mixed_precision="bf16",
    )
    assert fp.total_gib == pytest.approx(160.0)  # 16 B a parameter: not traced, activations not estimated
    require_fit("d/m/seed0", fp, 256.0, "GPU")
    # 3 devices would hold the state, but cannot share a batch of 8: 4 devices, 4 micro-batches
    with pytest.raises(
        BenchError,
        match=r"d/m/seed0 needs ~160 GiB .* more than the 80 GiB of GPU; shard it "
        r"over 4 or more such devices \(train.sharding='fsdp' and "
        r"train.micro_batches=4 with executor.tasks_per_node=4.*use a smaller "
        r"backbone preset \(--gin_file presets/flux_1gpu.gin",
    ):
        require_fit("d/m/seed0", fp, 80.0, "GPU")
    assert devices_needed(Footprint(**{**fp.__dict__, "batch_size": 6, "micro_batches": 3}), 80.0) == (3, 3)


@pytest.mark.slow
def test_ways_out_of_a_traced_step_name_checkpointing_and_smaller_micro_batches(flux):
    fp = estimate(flux, batch_size=256, micro_batches=1, processes=1, mixed_precision="bf16")
    state = fp.micro_batch_gib - fp.activations_gib
    device = state + 0.3 * fp.activations_gib  # the activations of a third of the batch fit beside the state
    with pytest.raises(BenchError) as refused:
        require_fit("d/m/seed0", fp, device, "GPU")
    message = str(refused.value)
    assert "\n" not in message
    recomputed = fp.recomputed()
    assert recomputed.activation_checkpointing and recomputed.activations_gib < fp.activations_gib
    assert "train.activation_checkpointing=True" in message
    micro = micro_batches_needed(fp, device)
    assert micro == 4 and "train.micro_batches=4: 64 rows each" in message
    # a quarter of the rows: a quarter of the activations
    four = estimate(flux, batch_size=256, micro_batches=4, processes=1, mixed_precision="bf16")
    assert four.activations_gib == pytest.approx(fp.activations_gib / 4, rel=0.1)
    # a small model is not told to use the preset it could only grow into
    assert "presets/flux_1gpu.gin" not in message and "fewer flux.num_layers" in message


def test_sharding_way_out_picks_micro_batches_the_devices_share(flux):
    """Sharded ranks run whole micro-batches: the suggestion shares the batch and fits, activations
    of the smaller micro-batch included."""
    fp = estimate(flux, batch_size=64, micro_batches=1, processes=1, mixed_precision="bf16")
    device = 0.5 * fp.total_gib
    n, micro = devices_needed(fp, device)
    assert micro % n == 0 and 64 % micro == 0 and micro >= 1
    sharded = estimate(
        flux, batch_size=64, micro_batches=micro, processes=n, mixed_precision="bf16", sharding="fsdp"
    )
    assert sharded.total_gib <= device * 1.1  # the traced micro-batch agrees with the scaled one


@pytest.mark.slow
def test_validate_prints_a_whole_micro_batch_of_activations_per_sharded_rank(capsys):
    """`bench validate ... executor.tasks_per_node=8 train.sharding='fsdp'`: phantom_lt's batch of 32
    in 8 micro-batches, one per rank: each rank's activations are those of 4 rows, as on one process."""
    from bench.cli import main

    common = [
        "validate",
        "datasets=[phantom_lt]",
        "methods=[fm]",
        "seeds=[0]",
        "train.micro_batches=8",
        "train.mixed_precision='bf16'",
        "budget.trace_inference=False",
        "flux.patch_size=2",
    ]  # 64 tokens (the quick run's 4 x 4 patches: too few activations to print)
    try:
        assert main([*common, "executor=local", "executor.tasks_per_node=8", "train.sharding='fsdp'"]) == 0
        sharded = capsys.readouterr().out
        assert main(common) == 0
        single = capsys.readouterr().out
    finally:
        gin.clear_config()  # the parsed bindings (flux.patch_size among them) stay out of later tests
    pattern = r"activations ([\d.]+) of a micro-batch of (\d+)"
    assert "sharded over 8 processes" in sharded
    (act_sharded, rows_sharded), (act_single, rows_single) = (
        re.findall(pattern, sharded)[0],
        re.findall(pattern, single)[0],
    )
    assert rows_sharded == rows_single == "4"
    assert float(act_sharded) >= float(act_single) > 0  # a sharded rank holds no fewer activations
