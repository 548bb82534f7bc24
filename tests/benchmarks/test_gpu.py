"""Benchmarks on a CUDA device: the GPU check and the preset's step eager vs torch.compile.

- test_gpu_check: `bench bench --only gpu`'s case at full size (bench.perf.gpu_check): the one-GPU
  preset's training step at 8 micro-batches of 32 (peak memory, forward memory and FLOPs vs
  bench.pipeline.footprint; step, optimiser time and MFU), bf16 sampling, the FLUX VAE, one
  ResNet-50 epoch through the DataLoader and a 1-process FSDP run, each against bench's estimates,
  in under 8 minutes. Every part must run; the ratios are reported, not asserted (they are what the
  check is for).
- test_gpu_training_step: the preset's micro-batch step eager vs compiled (bench.perf.gpu).

Skipped without CUDA, and in the default run: `pytest tests/benchmarks --benchmark-only -k gpu`.
"""

import math
import time

import pytest
import torch

from bench.perf import gpu, gpu_check

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

FUSED_SDPA = ("flash", "efficient", "cudnn")  # aten SDPA kernels other than the math fallback


def test_gpu_check(benchmark, tmp_path):
    t0 = time.perf_counter()
    result = benchmark.pedantic(gpu_check.measure, args=("full", tmp_path), rounds=1, iterations=1)
    seconds = time.perf_counter() - t0
    details = result.details
    benchmark.extra_info.update(result.keys, seconds=seconds)
    print("\n" + "\n".join(gpu_check.report_lines(details["parts"])))
    assert seconds < 8 * 60
    assert result.keys["gpu"] == torch.cuda.get_device_name()
    for name, part in details["parts"].items():
        assert "error" not in part, (name, part.get("traceback", part["error"]))
    for row in details["comparisons"]:  # on a GPU every estimate is compared
        assert row["ratio"] is not None and math.isfinite(row["ratio"]) and row["ratio"] > 0, row
    train = details["parts"]["train"]["measured"]
    assert 0 < train["steady_optimiser_s"] < train["steady_step_s"]
    mfu = result.keys["gpu_mfu"]  # None on a GPU missing from PEAK_BF16_FLOPS
    assert mfu is None if details["parts"]["train"]["details"]["peak_flops"] is None else 0 < mfu < 1
    assert details["parts"]["fsdp"]["details"]["backend"] == "nccl"


def test_gpu_training_step(benchmark, tmp_path):
    result = benchmark.pedantic(gpu.measure, args=("full", tmp_path), rounds=1, iterations=1)
    details = result.details
    benchmark.extra_info.update(
        result.keys,
        compile_s=details["compile_s"],
        flops_per_step=details["flops_per_step"],
        step_s_preset_depth_estimate=details["step_s_preset_depth_estimate"],
        peak_memory_gib={m: details["runs"][m].get("peak_memory_gib") for m in gpu.MODES},
    )
    print(
        f"\n{details['device']}: step s {result.keys['gpu_compile_step_s']}, MFU {result.keys['gpu_compile_mfu']}, "
        f"compile {details['compile_s']:.1f} s, peak {details['peak_flops_source']}"
    )
    assert details["device"] == torch.cuda.get_device_name()
    for mode in gpu.MODES:
        run = details["runs"][mode]
        assert "error" not in run, run
        step = result.keys["gpu_compile_step_s"][mode]
        assert math.isfinite(step) and step > 0
        # the step attends through a fused SDPA kernel, not the math fallback
        assert any(kind in op for op in run["attention_ops"] for kind in FUSED_SDPA), run["attention_ops"]
        mfu = result.keys["gpu_compile_mfu"][mode]  # None on a GPU missing from PEAK_BF16_FLOPS
        assert mfu is None if details["peak_flops"] is None else 0 < mfu < 1
