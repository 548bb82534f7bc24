"""Benchmark: the FLUX.1-width training step on a CUDA device, eager vs torch.compile, and its MFU.

Runs the suite's own case at full scale (bench.perf.gpu: 4 + 8 blocks of FLUX.1 width, batch 32
of 16 x 32 x 32 latents, bf16 autocast, bench.pipeline.trainer). Skipped without CUDA, and in the default
run: `pytest tests/benchmarks --benchmark-only -k gpu`.
"""

import math

import pytest
import torch

from bench.perf.gpu import MODES, measure

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

FUSED_SDPA = ("flash", "efficient", "cudnn")  # aten SDPA kernels other than the math fallback


def test_gpu_training_step(benchmark, tmp_path):
    result = benchmark.pedantic(measure, args=("full", tmp_path), rounds=1, iterations=1)
    details = result.details
    benchmark.extra_info.update(result.keys, compile_s=details["compile_s"],
                                flops_per_step=details["flops_per_step"],
                                step_s_preset_depth_estimate=details["step_s_preset_depth_estimate"],
                                peak_memory_gib={m: details["runs"][m].get("peak_memory_gib") for m in MODES})
    print(f"\n{result.keys['gpu']}: step s {result.keys['gpu_step_s']}, MFU {result.keys['gpu_mfu']}, "
          f"compile {details['compile_s']:.1f} s, peak {details['peak_flops_source']}")
    assert result.keys["gpu"] == torch.cuda.get_device_name()
    for mode in MODES:
        run = details["runs"][mode]
        assert "error" not in run, run
        assert math.isfinite(result.keys["gpu_step_s"][mode]) and result.keys["gpu_step_s"][mode] > 0
        # the step attends through a fused SDPA kernel, not the math fallback
        assert any(kind in op for op in run["attention_ops"] for kind in FUSED_SDPA), run["attention_ops"]
        mfu = result.keys["gpu_mfu"][mode]  # None on a GPU missing from PEAK_BF16_FLOPS
        assert mfu is None if details["peak_flops"] is None else 0 < mfu < 1
