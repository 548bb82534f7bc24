"""Benchmark: the number of Euler steps each method needs to match vanilla FM's tail quality at 64.

Runs the suite's `nfe` case at full scale (bench.perf.nfe): the quick experiment's synthetic2d and
phantom_lt with every method (fm, cbfm, cpd, optprior), trained once by bench's grid, then each
backbone sampled at NFE 1, 2, 4, ..., 64 and scored by `swd/tail` / `fid/tail`. The paper argues
optprior's paths are shorter and straighter, so it should match with fewer steps; this records
the numbers (nfe_to_match, the curves and the figure) and asserts every method has an entry.
Tens of minutes on 2 CPU cores.

Skipped in the default run: `pytest tests/benchmarks --benchmark-only -k nfe`.
"""

from bench.perf.nfe import FIGURE, METHODS, SCALE_SETTINGS, measure


def test_nfe_to_match(benchmark, tmp_path):
    m = benchmark.pedantic(measure, args=("full", tmp_path), rounds=1, iterations=1)
    matches = m.keys["nfe_to_match"]
    benchmark.extra_info.update(
        m.keys,
        reference=m.details["reference"],
        curves=m.details["curves"],
        tol=m.details["tol"],
        seconds=m.details["seconds"],
    )
    print(f"\nnfe_to_match (tol {m.details['tol']}): {matches}\nFM@64: {m.details['reference']}")
    full = SCALE_SETTINGS["full"]
    assert set(matches) == set(full.datasets)
    for _dataset, by_method in matches.items():
        assert set(by_method) == set(METHODS)
        assert all(nfe is None or nfe in full.nfes for nfe in by_method.values())
        assert by_method["fm"] is not None  # FM at 64 steps matches itself
    assert m.files == [tmp_path / FIGURE] and m.files[0].stat().st_size > 0
