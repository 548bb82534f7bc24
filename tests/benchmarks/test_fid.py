"""Benchmark: the Fréchet distance at d = 2,048 against the scipy.linalg.sqrtm route (issue 8).

The same case `bench bench` runs (bench/perf/frechet.py). Targets: >= 5x faster, relative
difference <= 1e-6. Skipped in the default run: `pytest tests/benchmarks --benchmark-only -k fid`.
"""

from bench.perf import frechet


def test_frechet_distance_vs_sqrtm(benchmark, tmp_path):
    m = benchmark.pedantic(frechet.measure, args=("full", tmp_path), rounds=1, iterations=1)
    benchmark.extra_info.update(m.keys, **m.details)
    assert m.keys["fid_rel_diff"] <= 1e-6
    assert m.keys["fid_speedup_vs_sqrtm"] >= 5
