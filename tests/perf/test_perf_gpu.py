"""The GPU eager-vs-compiled case (bench.perf.gpu, the suite's `gpu_compile`): its FLOP count, peak
table, preset reader and smoke run. The GPU check itself (`gpu`) is tested in test_perf_gpu_check.py."""

import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import gin
from bench.backbones.flux import FluxBackbone
from bench.config.gin_config import gin_dir
from bench.perf import gpu


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return gpu.measure("smoke", tmp_path_factory.mktemp("gpu"))


@pytest.mark.slow
def test_smoke_keys_are_cpu_step_times_without_mfu(smoke):
    assert set(smoke.keys) == {"gpu_compile_step_s", "gpu_compile_mfu"}
    assert smoke.keys["gpu_compile_mfu"] == {"eager": None, "compiled": None}
    for mode in gpu.MODES:
        seconds = smoke.keys["gpu_compile_step_s"][mode]
        assert math.isfinite(seconds) and seconds > 0
    assert smoke.details["device"] == "cpu" and smoke.details["peak_flops"] is None


def test_smoke_runs_train_both_modes_through_sdpa(smoke):
    sc, details = gpu.SCALES["smoke"], smoke.details
    for mode in gpu.MODES:
        run = details["runs"][mode]
        assert len(run["step_s"]) == sc.warmup_steps + sc.timed_steps
        assert run["steady_step_s"] == smoke.keys["gpu_compile_step_s"][mode]
        assert run["attention_processors"] == ["FluxAttnProcessor"]
        # the trained step really ran a fused aten SDPA kernel (the CPU flash kernel here)
        assert "aten::_scaled_dot_product_flash_attention_for_cpu" in run["attention_ops"]
        assert run["train_config"]["mixed_precision"] == "bf16"
        assert run["transformer_config"]["num_layers"] == sc.depth[0]
        assert run["transformer_config"]["num_single_layers"] == sc.depth[1]
        assert run["peak_memory_gib"] > 0
    assert details["compile_s"] == details["runs"]["compiled"]["first_step_s"] > 0
    # 16 x 8 x 8 latents -> 4 x 4 patches of 2 x 2, plus vanilla FM's one class token
    assert (details["image_tokens"], details["text_tokens"]) == (16, 1)


def test_smoke_flops_and_parameters_describe_the_trained_model(smoke):
    details = smoke.details
    config = details["runs"]["eager"]["transformer_config"]
    assert details["flops_per_step"] == gpu.flux_train_flops(config, details["batch"], 16, 1)
    # the count is right on a published model: FLUX.1-dev's transformer has 11,901,408,320 parameters;
    # bench builds it without the guidance embedder (256 -> 3072 -> 3072 MLP: 256 * 3072 + 3072 +
    # 3072 * 3072 + 3072 = 10,229,760 of them)
    flux1 = gpu.preset_hyperparameters(gin_dir() / "presets" / "flux1.gin")
    assert gpu._preset_parameters(flux1, 64) == 11_901_408_320 - 10_229_760
    # the case's preset is the one-GPU one: ~2.2B
    assert details["preset_parameters"] == gpu._preset_parameters(gpu.preset_hyperparameters(), 64)
    assert 2.2e9 < details["preset_parameters"] < 2.3e9
    ratio = details["flops_per_step_preset_depth"] / details["flops_per_step"]
    for mode in gpu.MODES:
        estimate = details["step_s_preset_depth_estimate"][mode]
        assert estimate == pytest.approx(smoke.keys["gpu_compile_step_s"][mode] * ratio)


def test_flop_formula_matches_torch_flop_counter():
    """FlopCounterMode counts the matmuls torch runs for a tiny FLUX forward and backward.

    The math SDPA backend spells attention as matmuls the counter sees (it has no formula for the
    CPU flash kernel). Distinct sizes everywhere (depths 2 / 3, widths 64 / 48 / 40, 2 text
    tokens) catch swapped terms.
    """
    torch.manual_seed(0)
    batch, text_tokens = 3, 2
    backbone = FluxBackbone(
        (4, 16, 8),
        vocab_size=5,
        n_tokens=text_tokens,
        num_layers=2,
        num_single_layers=3,
        attention_head_dim=16,
        num_attention_heads=4,
        joint_attention_dim=48,
        pooled_projection_dim=40,
        axes_dims_rope=(4, 6, 6),
    )
    x, t = torch.randn(batch, 4, 16, 8), torch.rand(batch)
    tokens = torch.randint(0, 5, (batch, text_tokens))
    with sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as forward:
            backbone(x, t, tokens)
        with FlopCounterMode(display=False) as step:
            backbone(x, t, tokens).pow(2).mean().backward()
    config, image_tokens = backbone.transformer.config, 8 * 4
    assert forward.get_total_flops() == gpu.flux_forward_flops(config, batch, image_tokens, text_tokens)
    model_flops = gpu.flux_train_flops(config, batch, image_tokens, text_tokens)
    assert step.get_total_flops() == pytest.approx(model_flops, rel=0.01)
    # the whole gap: two layers whose inputs need no gradient (the noisy latents' x_embedder, the
    # sinusoidal timestep features' first linear) skip their input-gradient matmul in backward
    d = 4 * 16
    skipped = batch * (2 * 16 * d * image_tokens + 2 * gpu.TIMESTEP_CHANNELS * d)
    assert model_flops - step.get_total_flops() == skipped


def test_flop_formula_scales_like_a_transformer():
    config = dict(
        num_layers=1,
        num_single_layers=0,
        attention_head_dim=128,
        num_attention_heads=24,
        joint_attention_dim=4096,
        pooled_projection_dim=768,
        in_channels=64,
    )
    one = gpu.flux_forward_flops(config, 1, 256, 1)
    assert gpu.flux_forward_flops(config, 5, 256, 1) == 5 * one
    assert gpu.flux_train_flops(config, 1, 256, 1) == 3 * one
    # one more double block: 24 d^2 per token, 4 s^2 d of attention, 24 d^2 of modulation per sample
    d, s = 3072, 257
    deeper = gpu.flux_forward_flops({**config, "num_layers": 2}, 1, 256, 1)
    assert deeper - one == 24 * d * d * s + 4 * s * s * d + 24 * d * d


@pytest.mark.parametrize(
    "name, flops",
    [
        ("NVIDIA H100 80GB HBM3", 989.4e12),
        ("NVIDIA H100 SXM5 80GB", 989.4e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H200", 989.4e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A100 80GB PCIe", 312e12),
        ("NVIDIA H100 NVL", None),
        ("NVIDIA H200 NVL", None),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_peak_flops_by_device_name(name, flops):
    peak, source = gpu.peak_bf16_flops(name)
    assert peak == flops
    if flops is None:
        assert name in source and "PEAK_BF16_FLOPS" in source
    else:
        assert f"{flops / 1e12:g} TFLOP/s" in source


def test_preset_reader_agrees_with_gin():
    ours = gpu.preset_hyperparameters()
    # the preset also binds train.*, sample.*, ...: only its flux.* bindings are compared
    gin.parse_config_file(str(gin_dir() / gpu.PRESET), skip_unknown=True)
    try:
        theirs = {name: gin.query_parameter(f"flux.{name}") for name in ours}
    finally:
        gin.clear_config()
    assert ours == theirs
    assert ours["num_layers"] == 8 and ours["num_single_layers"] == 16  # the one-GPU preset, whole
    assert gpu.SCALES["full"].depth == (ours["num_layers"], ours["num_single_layers"])


def test_full_scale_without_cuda_records_none_and_why(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu.subprocess, "run", lambda *a, **k: pytest.fail("no child process without CUDA"))
    result = gpu.measure("full", tmp_path)
    assert result.keys == {
        "gpu_compile_step_s": {"eager": None, "compiled": None},
        "gpu_compile_mfu": {"eager": None, "compiled": None},
    }
    assert result.details == {"skipped": "no CUDA device in this run"}
    assert list(tmp_path.iterdir()) == []
