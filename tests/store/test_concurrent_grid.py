"""Runs that share a results folder: concurrent declarations of grid.json all survive.

grid.json is read, merged and rewritten by every `bench run`; without a lock the last writer
drops what the others declared (a stress test kept 342 of 600 cells). bench.store.gridfile does the
merge under an exclusive lock (bench.store.filelock).
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.store.gridfile import GRID, declare_cells

TINY = (
    "datasets=[synthetic2d]",
    "train.steps=2",
    "sample.nfe=1",
    "sample.init_reference=False",
    "sample.keep_paths=0",
    "synthetic2d.n_max=400",
    "synthetic2d.n_test_per_class=10",
    "pipeline.evaluators=[swd]",
)


def _cell(method: str, seed: int) -> SimpleNamespace:
    """What declare_cells reads from a built cell."""
    spec = SimpleNamespace(dataset="synthetic2d", method=method, seed=seed)
    return SimpleNamespace(spec=spec, config_hash=f"h-{method}-{seed}", evaluators=[], dataset=None)


def _declare_many(results: str, method: str, n: int) -> None:
    for seed in range(n):
        declare_cells(Path(results), "exp", [_cell(method, seed)])


def test_two_processes_declaring_cells_at_once_keep_every_cell(tmp_path):
    n = 150
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_declare_many, args=(str(tmp_path), m, n)) for m in ("fm", "cpd")]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
        assert w.exitcode == 0
    grid = json.loads((tmp_path / "exp" / GRID).read_text())
    expected = {f"synthetic2d/{m}/seed{s}": f"h-{m}-{s}" for m in ("fm", "cpd") for s in range(n)}
    assert grid["cells"] == expected
    assert sorted(grid["methods"]) == ["cpd", "fm"] and sorted(grid["seeds"]) == list(range(n))


@pytest.mark.slow
def test_two_bench_runs_with_different_grids_on_one_folder_both_land(tmp_path):
    exe = Path(sys.executable).with_name("bench")
    res = tmp_path / "res"
    runs = [
        subprocess.Popen(
            [str(exe), "run", f"methods=[{m}]", *TINY, f"results_dir={res}"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in ("fm", "cpd")
    ]
    for run in runs:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err
    grid = json.loads((res / "quick" / GRID).read_text())
    assert set(grid["cells"]) == {"synthetic2d/fm/seed0", "synthetic2d/cpd/seed0"}
    tables = subprocess.run(
        [str(exe), "tables", str(res / "quick"), "--format", "md"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tables.returncode == 0, tables.stderr
    rows = [line.split("|")[1].strip() for line in tables.stdout.splitlines() if line.startswith("| ")]
    assert "fm" in rows and "cpd" in rows, tables.stdout
