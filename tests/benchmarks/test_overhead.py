"""Benchmark: bench's harness overhead per training step (issue 8, item 1).

Runs the suite's `overhead` case at full scale (bench.perf.overhead): phantom_lt's tiny-preset
FLUX step at its gin batch (32), through bench.pipeline.trainer.train and through a bare diffusers loop
with the same weights, optimiser, clipping, precision and threads, interleaved over repeats.
Asserts the target: bench's seconds per step are at most 1.05x the bare loop's. A few minutes on
2 CPU cores; when the target is missed the case's details carry a cProfile of bench's steps.

Skipped in the default run: `pytest tests/benchmarks --benchmark-only -k overhead`.
"""

from bench.perf.overhead import TARGET, measure


def test_harness_overhead_ratio(benchmark, tmp_path):
    m = benchmark.pedantic(measure, args=("full", tmp_path), rounds=1, iterations=1)
    ratio, d = m.keys["harness_overhead_ratio"], m.details
    benchmark.extra_info.update(
        m.keys,
        bench_s_per_step=d["bench_s_per_step"],
        bare_s_per_step=d["bare_s_per_step"],
        threads=d["threads"],
        batch_size=d["batch_size"],
        per_repeat_s=d["per_repeat_s"],
    )
    print(
        f"\nbench {d['bench_s_per_step']:.4f} s/step, bare {d['bare_s_per_step']:.4f} s/step, "
        f"ratio {ratio:.3f} (threads {d['threads']}, batch {d['batch_size']})"
    )
    print("\n".join(d.get("profile", [])))
    assert ratio <= TARGET
