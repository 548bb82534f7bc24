"""Case `quick_run`: a bare `bench run` (the quick experiment) end to end, cold, with stage times.

The run is the command a new user types first: a fresh results folder (no latent, feature or
stage cache), in a child process, timed by the wall clock from start to exit. Per-stage seconds
are the records' `timings_s` summed over the cells (train, sample, evaluate/<evaluator>, ...),
`quick_run_cells_s` their cells' totals summed; cells run side by side (bench.scale.pool), so
`quick_run_side_by_side` = cells' seconds / wall seconds says how many ran at once on average
(start-up, validation, the summary and the report run outside any cell). Then the same command
runs again on the finished folder (`quick_rerun_s`): every cell is reused, so it costs start-up,
validation, the summary and the report only.
Targets on 2 cores: the first run <= 300 s, the rerun <= 10 % of it.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from bench.perf.case import Measurement, python_command
from bench.store.gridfile import cell_label

ARGS = {
    "full": [],
    "smoke": [
        "datasets=[synthetic2d]",
        "methods=[fm]",
        "train.steps=30",
        "synthetic2d.n_max=400",
        "synthetic2d.n_test_per_class=40",
    ],
}


def measure(scale: str, workdir: Path) -> Measurement:
    """Time `bench run` into an empty folder; per-stage seconds from the records it wrote."""
    results = Path(workdir) / "quick_run"
    if results.exists() and any(results.iterdir()):
        raise RuntimeError(f"{results} is not empty: the quick run must start cold")
    command = [*python_command(), "-m", "bench", "run", *ARGS[scale], f"results_dir={results}"]
    wall, rerun = _timed_run(command), _timed_run(command)
    cells = {}
    for path in sorted(results.glob("*/*/*/*/record.json")):
        record = json.loads(path.read_text())
        cells[cell_label(record["dataset"], record["method"], record["seed"])] = record["timings_s"]
    stages = stage_totals(cells.values())
    busy = sum(timings.get("total", 0.0) for timings in cells.values())
    return Measurement(
        keys={
            "quick_run_s": wall,
            "quick_run_stages_s": stages,
            "quick_run_cells_s": busy,
            "quick_run_side_by_side": busy / wall,
            "quick_rerun_s": rerun,
            "quick_rerun_ratio": rerun / wall,
        },
        details={"command": " ".join(["bench", "run", *ARGS[scale]]), "cells": cells},
    )


def _timed_run(command: list[str]) -> float:
    """Wall seconds of one `bench run` child; a failed run is an error."""
    t0 = time.perf_counter()
    child = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if child.returncode != 0:
        raise RuntimeError(
            f"bench run failed (exit {child.returncode}): {(child.stderr.strip().splitlines() or [''])[-1]}"
        )
    return wall


def stage_totals(cells) -> dict:
    """Seconds per stage summed over cells; `evaluate/<name>` kept apart from their `evaluate` sum."""
    totals: dict = {}
    for timings in cells:
        for stage, seconds in timings.items():
            if stage != "total":
                totals[stage] = totals.get(stage, 0.0) + seconds
    return totals
