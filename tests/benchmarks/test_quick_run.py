"""Benchmark: a bare `bench run` (the quick experiment), cold, end to end (issue 8).

The same case `bench bench` runs (bench/perf/quickrun.py). Target: <= 600 s on 2 cores.
Skipped in the default run: `pytest tests/benchmarks --benchmark-only -k quick_run`.
"""

from bench.perf import quickrun


def test_quick_run(benchmark, tmp_path):
    m = benchmark.pedantic(quickrun.measure, args=("full", tmp_path), rounds=1, iterations=1)
    benchmark.extra_info.update(m.keys, **m.details)
    assert m.keys["quick_run_stages_s"]["train"] > 0
    assert m.keys["quick_run_s"] <= 600
