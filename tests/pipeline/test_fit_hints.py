"""The ways out of a cell that does not fit its device name what would help next: never the
one-GPU preset when it is the preset in use, the preset for a model clearly larger than it, and the
CPU check preset where there is no GPU."""

import pytest
import torch

from bench.backbones.flux import FluxBackbone
from bench.errors import BenchError
from bench.perf.gpu_sizes import preset_flux
from bench.pipeline.footprint import (
    NO_GPU,
    ONE_GPU_PRESET_PARAMETERS,
    Footprint,
    devices_needed,
    estimate,
    require_fit,
)


def refusal(footprint: Footprint, device_gib: float, what: str = "GPU") -> str:
    with pytest.raises(BenchError) as refused:
        require_fit("nih_lt/fm/seed0", footprint, device_gib, what)
    message = str(refused.value)
    assert "\n" not in message
    return message


def untraced(parameters: float) -> Footprint:
    """A step of `parameters` whose activations are not estimated: 16 B a parameter."""
    return Footprint(
        parameters=int(parameters),
        largest_unit=int(parameters) // 24,
        batch_size=256,
        micro_batches=8,
        processes=1,
        mixed_precision="bf16",
    )


def test_the_one_gpu_preset_in_use_is_not_suggested_sharding_is():
    message = refusal(untraced(ONE_GPU_PRESET_PARAMETERS), 24.0)
    assert "presets/flux_1gpu.gin" not in message
    assert "train.sharding='fsdp'" in message and "smaller backbone than this one" in message
    assert "tiny.gin" not in message  # a CPU preset helps no GPU job


def test_a_model_larger_than_the_one_gpu_preset_is_pointed_at_it():
    message = refusal(untraced(11.9e9), 80.0)  # presets/flux1.gin unsharded: ~177 GiB of state
    assert "--gin_file presets/flux_1gpu.gin" in message
    assert untraced(ONE_GPU_PRESET_PARAMETERS).total_gib < 80  # and the preset does fit there


def test_without_a_gpu_the_cpu_check_preset_is_named():
    message = refusal(untraced(ONE_GPU_PRESET_PARAMETERS), 7.5, f"{NO_GPU} (no GPU)")
    assert "--gin_file presets/cpu_smoke.gin" in message and "flux_1gpu" not in message


@pytest.mark.slow
def test_the_traced_one_gpu_preset_on_a_40_gib_gpu_gets_ways_out_that_fit():
    """The real preset (traced under fake tensors) on a 40 GiB card: each suggestion, estimated
    again as the user would configure it, fits; the preset itself is not among them."""
    with torch.device("meta"):
        flux = FluxBackbone((16, 32, 32), 21, 1, **preset_flux())
    step = dict(batch_size=256, micro_batches=8, mixed_precision="bf16")
    fp = estimate(flux, processes=1, **step)
    assert fp.total_gib > 40
    message = refusal(fp, 40.0)
    assert "presets/flux_1gpu.gin" not in message
    assert "train.activation_checkpointing=True" in message
    assert estimate(flux, processes=1, activation_checkpointing=True, **step).total_gib <= 40
    n, micro = devices_needed(fp, 40.0)
    assert f"shard it over {n} or more" in message
    sharded = estimate(flux, processes=n, sharding="fsdp", **{**step, "micro_batches": micro})
    assert (
        sharded.total_gib <= 40 * 1.05
    )  # traced at the shared micro-batch: within rounding of the scaled one
