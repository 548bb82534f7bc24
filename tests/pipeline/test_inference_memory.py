"""The inference memory model (bench.pipeline.inference_memory) and the batch it chooses."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker

from bench.backbones.flux import FluxBackbone
from bench.backbones.mlp import MLPBackbone
from bench.config.sample import SampleConfig
from bench.encoders import flux_vae as vae_memory
from bench.encoders.flux_vae import FluxVAEEncoder
from bench.errors import BenchError
from bench.pipeline import inference_memory as memory
from bench.pipeline import sampler
from bench.pipeline.sampler import AUTO_CPU_BATCH, ConditionedVelocity, euler, sampling_batch

CPU = torch.device("cpu")
FLUX = dict(
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=32,
    pooled_projection_dim=32,
    axes_dims_rope=(4, 6, 6),
)
# the FLUX.1 VAE's layout (down/up blocks, mid attention, no quant convs) at a tiny width
VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(8, 16),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    layers_per_block=1,
    norm_num_groups=4,
    use_quant_conv=False,
    use_post_quant_conv=False,
)


def tiny_flux() -> FluxBackbone:
    return FluxBackbone((4, 8, 8), 4, 1, **FLUX).eval()


def small_mlp() -> MLPBackbone:
    """Traced in milliseconds: for the tests of what is done with the peaks."""
    return MLPBackbone((16,), 4, 1, hidden=256, depth=3).eval()


def solver_step(batch: int, precision: str):
    """What sampling_peak_bytes traces: one Euler step of `batch` samples."""

    def run(model, device):
        x0 = torch.empty((batch, *model.sample_shape), device=device)
        tokens = torch.zeros((batch, model.n_tokens), dtype=torch.long, device=device)
        euler(ConditionedVelocity(model, tokens, precision=precision), x0, 1)

    return run


def memtracker_peak(build, run) -> int:
    """PyTorch's own MemTracker on the same fake trace: the independent reference."""
    with torch.device("meta"):
        model = build()
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = model.to_empty(device=CPU)
        tracker = MemTracker()
        tracker.track_external(model)
        with tracker, torch.no_grad():
            run(model, CPU)
    return tracker.get_tracker_snapshot("peak")[CPU]["Total"]


@pytest.mark.parametrize("precision,batch", [("fp32", 3), ("bf16", 40)])
@pytest.mark.slow
def test_sampling_trace_equals_pytorchs_memtracker(precision, batch):
    run = solver_step(batch, precision)
    ours = memory.traced_peak(tiny_flux, run, CPU, block=1)
    assert ours == memtracker_peak(tiny_flux, run)
    # the public estimate is that trace with CUDA's 512-byte blocks: a little more, never less
    estimate = sampler.sampling_peak_bytes(tiny_flux(), batch, precision, device=CPU)
    assert ours <= estimate <= ours + 512 * 200


def test_sampling_trace_equals_a_real_run():
    """Fake tensors change nothing about which tensors exist: the real CPU run tracked alike."""
    torch.manual_seed(0)
    model, run = tiny_flux(), solver_step(5, "fp32")
    with memory.PeakTracker(block=1) as tracker, torch.no_grad():
        tracker.track_module(model)
        run(model, CPU)
    assert tracker.peak == memory.traced_peak(tiny_flux, run, CPU, block=1)


def test_bf16_needs_less_and_the_peak_grows_with_the_batch():
    model = small_mlp()
    peak = {
        (p, b): sampler.sampling_peak_bytes(model, b, p, device=CPU)
        for p in ("fp32", "bf16")
        for b in (8, 4096)
    }
    weights = sum(p.numel() * 4 for p in model.parameters())
    assert peak["fp32", 8] > weights  # fp32 weights stay resident under autocast (its cache is off)
    # bf16 halves the activations, and adds a transient bf16 copy of the weight of the layer that
    # runs: more at a batch of 8 (the copy outweighs the activations), less at a large batch
    assert peak["bf16", 8] > peak["fp32", 8] and peak["bf16", 4096] < peak["fp32", 4096]
    assert peak["fp32", 8] < peak["fp32", 4096] and peak["bf16", 8] < peak["bf16", 4096]
    assert (
        sampler.sampling_peak_bytes(model, 4096, "fp32", "heun", device=CPU) > peak["fp32", 4096]
    )  # holds v0


@pytest.mark.parametrize("mode,precision", [("encode", "fp32"), ("decode", "bf16")])
@pytest.mark.slow
def test_vae_trace_equals_pytorchs_memtracker(mode, precision):
    from bench.pipeline.inference_precision import forward_precision

    batch, shape = 3, (1, 16, 16)

    def run(vae, device):
        shell = FluxVAEEncoder(batch_size=batch, device="cpu")
        shell._vae, shell._channels, shell._factors = vae, 1, (0.5, 0.1)
        with forward_precision(precision, device):
            if mode == "decode":
                shell._decode_chunk(torch.empty(batch, 4, 8, 8))
            else:
                shell._encode_chunk(torch.empty(batch, *shape))

    build = lambda: AutoencoderKL.from_config(VAE).eval()  # noqa: E731
    reference = memtracker_peak(build, run)
    assert memory.traced_peak(build, run, CPU, block=1) == reference
    estimate = vae_memory.vae_peak_bytes(VAE, shape, batch, precision, mode, device=CPU)
    assert reference <= estimate <= reference + 512 * 400


def staircase(b: int) -> int:
    """A convex piecewise-linear peak, like a trace's: 1000 + 7 b, then 30 b past b = 200."""
    return 1000 + 7 * b + max(0, 23 * (b - 200))


@pytest.mark.parametrize("budget", [1007, 2000, 2400, 5000, 10_000, 40_000])
def test_largest_batch_is_the_largest_that_fits(budget):
    true = max(b for b in range(1, 5001) if staircase(b) <= budget)
    calls = []
    chosen = memory.largest_batch(lambda b: calls.append(b) or staircase(b), budget, cap=5000)
    assert staircase(chosen) <= budget
    assert true - max(1, chosen // 64) <= chosen <= true
    assert len(calls) <= 16  # traces cost seconds at the real size: few of them


def test_largest_batch_respects_the_cap_and_refuses_what_cannot_fit():
    assert memory.largest_batch(staircase, 10**9, cap=300) == 300
    with pytest.raises(BenchError, match="one sample needs"):
        memory.largest_batch(staircase, 1000, cap=300)


def test_budget_keeps_a_margin():
    gib = memory.GIB
    assert memory.budget_bytes(80 * gib) == 72 * gib  # 10 %
    assert memory.budget_bytes(16 * gib, 1 * gib) == 13 * gib  # at least 2 GiB
    assert memory.margin_bytes(80 * gib) == 8 * gib


def test_sampling_batch_uses_the_setting_else_the_trace(monkeypatch):
    model = small_mlp()
    assert sampling_batch(model, SampleConfig(batch_size=7), CPU, 100) == 7
    assert sampling_batch(model, SampleConfig(batch_size=None), CPU, 100) == 100
    assert sampling_batch(model, SampleConfig(batch_size=None), CPU, 10**6) == AUTO_CPU_BATCH
    # on CUDA: the largest batch whose traced peak fits the device's budget, at most each rank's share
    budget = sampler.sampling_peak_bytes(model, 300, "bf16")
    monkeypatch.setattr(memory, "cuda_budget", lambda device, resident=0: budget)
    chosen = sampling_batch(model, SampleConfig(batch_size=None, precision="bf16"), "cuda", 10**4)
    assert sampler.sampling_peak_bytes(model, chosen, "bf16") <= budget
    assert chosen >= 300 - 300 // 64  # 300 fits: the answer is within 1/64 of it or above
    assert sampling_batch(model, SampleConfig(batch_size=None), "cuda", 60, world=4) == 15


def test_vae_chunk_is_the_setting_else_a_fixed_cpu_chunk():
    assert FluxVAEEncoder(batch_size=5).chunk_size("decode", (1, 16, 16), 100) == 5
    assert FluxVAEEncoder(device="cpu").chunk_size("decode", (1, 16, 16), 100) == FluxVAEEncoder.CPU_BATCH
    with pytest.raises(BenchError, match="flux_vae.batch_size must be >= 1 or None"):
        FluxVAEEncoder(batch_size=0)
