"""Benchmark: the classifiers' real-image pipeline (issue 24, item 7).

A small_cnn epoch (batch 64, 1 torch thread) over N fabricated 1024 x 1024 8-bit PNGs (a gradient
plus noise, like a radiograph's file size; BENCH_IMAGES_N, default 256) resized to 64 x 64:
decoded every epoch vs read from the uint8 image cache (bench.data.image_cache), each with 0 and
2 DataLoader workers (`loader.workers`); the reading alone (bench.classify.batches.device_batches
over the epoch's blocks, no model) too, and the cache's build time and bytes per image.

Skipped in the default run: `pytest tests/benchmarks --benchmark-only -k image_pipeline -s`.
"""

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

N = int(os.environ.get("BENCH_IMAGES_N", 256))
SIDE, SIZE = 1024, 64


@pytest.fixture(scope="module")
def png_paths(tmp_path_factory) -> list[Path]:
    folder, rng = tmp_path_factory.mktemp("pngs"), np.random.default_rng(0)
    base = np.add.outer(np.arange(SIDE), np.arange(SIDE)) / (2 * SIDE) * 200
    paths = [folder / f"{i}.png" for i in range(N)]
    for path in paths:
        Image.fromarray((base + rng.normal(0, 12, (SIDE, SIDE))).clip(0, 255).astype(np.uint8)).save(path)
    return paths


def _epoch_seconds(x, y, workers: int, reps: int = 2) -> float:
    import gin
    from bench.classify.fit import Protocol, _epoch, build_classifier, plain

    protocol, best = Protocol(batch_size=64), float("inf")
    model = build_classifier("small_cnn", 1, 4, seed=0)
    optimizer, generator = torch.optim.Adam(model.parameters()), torch.Generator().manual_seed(0)
    with gin.unlock_config():
        gin.bind_parameter("loader.workers", workers)
    try:
        for epoch in range(reps):
            t0 = time.perf_counter()
            _epoch(model, optimizer, x, y, protocol, generator, torch.device("cpu"), plain(protocol), epoch)
            best = min(best, time.perf_counter() - t0)
    finally:
        gin.clear_config()
    return best


def _read_seconds(x, workers: int, reps: int = 3) -> float:
    from bench.classify.batches import device_batches
    from bench.config.loader import LoaderConfig

    blocks = [
        b.sort().values for b in torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).split(64)
    ]
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for _xb in device_batches(x, blocks, torch.device("cpu"), LoaderConfig(workers=workers)):
            pass
        best = min(best, time.perf_counter() - t0)
    return best


def test_image_cache_and_loader_epoch_times(benchmark, png_paths, tmp_path):
    from bench.data.image_cache import IMAGES, attach
    from bench.data.imagefiles import ImageFiles, Preprocess

    torch.set_num_threads(1)
    files = lambda: ImageFiles(png_paths, [p.name for p in png_paths], Preprocess(size=SIZE), "bench")  # noqa: E731
    y = torch.arange(N) % 4

    def run() -> dict:
        stats, decoded, cached = {}, files(), files()
        t0 = time.perf_counter()
        attach(tmp_path / f"cache{len(list(tmp_path.iterdir()))}", cached)
        stats["cache_build_s"] = time.perf_counter() - t0
        stats["cache_bytes_per_image"] = cached.cache.nbytes / N
        for name, x in (("decoded", decoded), ("cached", cached)):
            for workers in (0, 2):
                stats[f"epoch_s/{name}/workers{workers}"] = _epoch_seconds(x, y, workers)
                stats[f"read_s/{name}/workers{workers}"] = _read_seconds(x, workers)
        return stats

    stats = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(
        stats, n=N, png_kb=np.mean([p.stat().st_size for p in png_paths]) / 1e3, load=os.getloadavg()[0]
    )
    for key, value in benchmark.extra_info.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    assert stats["cache_bytes_per_image"] == SIZE * SIZE and IMAGES
