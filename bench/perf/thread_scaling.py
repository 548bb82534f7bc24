"""Torch threads for a training step (issue 8, item 6): 1 against 2 on phantom_lt's tiny-preset step.

The step is the one of bench.perf.overhead, trained through bench.pipeline.trainer.train with
TrainConfig(threads=n); the two thread counts alternate over repeats and each reports its median
seconds per step. The lead sets `train.threads`'s default from the full measurement; this case only
reports the current defaults beside the numbers. torch's thread count is restored afterwards
(train() sets it and leaves it).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from bench.config.train import TrainConfig
from bench.perf.case import Measurement, median
from bench.perf.overhead import SCALES, bench_run, gin_parsed, interleaved, phantom_setting

THREADS = (1, 2)


def current_defaults() -> dict:
    """train.threads as bench/pipeline/trainer.py declares it and as gin/base.gin leaves it (0 = torch's)."""
    declared = next(f.default for f in dataclasses.fields(TrainConfig) if f.name == "threads")
    with gin_parsed(["base.gin"]):
        configured = TrainConfig().threads
    return {
        "bench/pipeline/trainer.py": declared,
        "gin/base.gin": configured,
        "meaning_of_0": "torch's default thread count",
    }


def measure(scale: str, workdir: Path) -> Measurement:
    """threads: median seconds per step on 1 and 2 threads, the faster one and 2's speedup over 1."""
    sc, before = SCALES[scale], torch.get_num_threads()
    setting = phantom_setting(sc.batch_size)
    try:
        times = interleaved({str(n): bench_run(setting, n) for n in THREADS}, sc)
    finally:
        torch.set_num_threads(before)
    s = {name: median(values) for name, values in times.items()}
    best = min(THREADS, key=lambda n: s[str(n)])
    keys = {"threads": {**s, "best": best, "speedup_2_vs_1": s["1"] / s["2"]}}
    details = {
        "per_repeat_s": times,
        "repeats": sc.repeats,
        "k1": sc.k1,
        "k2": sc.k2,
        "batch_size": setting.cfg.batch_size,
        "sample_shape": list(setting.backbone.sample_shape),
        "parameters": setting.parameters,
        "cpu_count": os.cpu_count(),
        "torch_threads_before": before,
        "train_threads_default": current_defaults(),
        "timing": "per step = (T(k2 steps) - T(k1 steps)) / (k2 - k1) of whole train() calls; "
        "median over interleaved repeats",
    }
    return Measurement(keys, details)
