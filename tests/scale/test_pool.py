"""Cells side by side (bench.scale.pool): how many, in which order, shared work built once, and
the same records as one cell after another."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.errors import BenchError
from bench.runtime.threads import usable_cores
from bench.scale import pool

# an image grid of two methods on one dataset: both cells want the same no-augmentation and
# remedy classifiers, feature extractor and latent cache (shared work)
GRID = [
    "methods=[fm,cpd]",
    "datasets=[digits_lt]",
    "seeds=[0]",
    "train.steps=4",
    "train.batch_size=64",
    "train.threads=1",
    "pipeline.evaluators=['downstream','cond_accuracy','fid']",
    "digits_lt.n_test_per_class=5",
    "digits_lt.n_max=40",
    "sample.nfe=2",
    "downstream.n_seeds=2",
    "downstream.max_epochs=2",
    "downstream.patience=1",
    "downstream.remedies=['reweight','crt']",
    "features.epochs=1",
]
STAGE_LINE = re.compile(r"^digits_lt/(fm|cpd)/seed0: [\w/]+ done in [\d.]+ s$")


def test_cells_at_once_follows_the_setting_then_the_environment_then_the_machine(monkeypatch):
    monkeypatch.delenv(pool.ENV, raising=False)
    monkeypatch.setattr(pool, "usable_cores", lambda: 2)
    assert pool.cells_at_once(3, 8, cuda=False) == 3
    assert pool.cells_at_once(5, 2, cuda=False) == 2  # never more than there are cells
    assert pool.cells_at_once(None, 8, cuda=False) == 2  # the cores
    assert pool.cells_at_once(None, 1, cuda=False) == 1
    assert pool.cells_at_once(None, 8, cuda=True) == 1  # cells would share one GPU
    assert pool.cells_at_once(None, 8, launched=True, cuda=False) == 1
    monkeypatch.setattr(pool, "usable_cores", lambda: 64)
    assert pool.cells_at_once(None, 8, cuda=False) == pool.MAX_AUTO
    monkeypatch.setenv(pool.ENV, "1")
    assert pool.cells_at_once(None, 8, cuda=False) == 1
    assert pool.cells_at_once(2, 8, cuda=False) == 2  # the setting wins over the environment
    monkeypatch.setenv(pool.ENV, "two")
    with pytest.raises(BenchError, match="BENCH_CELLS_AT_ONCE='two': use an integer >= 1"):
        pool.cells_at_once(None, 8, cuda=False)


def test_threads_are_shared_out_and_bench_cores_caps_the_usable_cores(monkeypatch):
    monkeypatch.delenv("BENCH_CORES", raising=False)
    cores = usable_cores()
    assert pool.threads_per_cell(1) == cores and pool.threads_per_cell(10 * cores) == 1
    monkeypatch.setenv("BENCH_CORES", "1")
    assert usable_cores() == 1
    monkeypatch.setenv("BENCH_CORES", "junk")
    assert usable_cores() == cores


def test_longest_first_starts_the_cells_with_most_training_flops_first():
    def cell(name, flops, steps):
        footprint = None if flops is None else SimpleNamespace(flops_per_step=flops)
        return SimpleNamespace(
            name=name, footprint=footprint, config=SimpleNamespace(train=SimpleNamespace(steps=steps))
        )

    cells = [
        cell("a", 1.0, 100),
        cell("b", 10.0, 600),
        cell("c", None, 5),
        cell("d", 50.0, 100),
        cell("e", 10.0, 600),
    ]
    assert [c.name for c in pool.longest_first(cells)] == ["b", "e", "d", "a", "c"]  # ties: grid order


# a process that builds the shared artifact argv[1] unless it exists, logging its interval to argv[2]
BUILD_IN_TURN = """
import json, sys, time
from pathlib import Path
from bench.store.filelock import building
folder, log = Path(sys.argv[1]), sys.argv[2]
with building(folder):
    start = time.time()
    built = not folder.exists()
    if built:
        time.sleep(0.5)
        folder.mkdir()
    with open(log, "a") as f:
        f.write(json.dumps([start, time.time(), built]) + "\\n")
"""


def test_shared_work_is_built_by_one_process_while_the_others_wait(tmp_path):
    folder, log = tmp_path / "cache" / "shared", tmp_path / "log.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", BUILD_IN_TURN, str(folder), str(log)]) for _ in range(3)]
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    spans = sorted(json.loads(line) for line in log.read_text().splitlines())
    assert len(spans) == 3 and [built for *_, built in spans] == [True, False, False]
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:]))  # one at a time


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, bench_cli):
    """The grid one cell at a time, and both cells side by side."""
    root = tmp_path_factory.mktemp("pool")
    out = {}
    for name, k in (("one", "1"), ("side", "2")):
        out[name] = bench_cli(
            "run",
            *GRID,
            f"executor.cells_at_once={k}",
            f"results_dir={root / name}",
            cwd=root,
            env_extra={pool.ENV: "", "BENCH_CORES": "2"},
        )  # 1 thread a cell
        assert out[name].returncode == 0, out[name].stderr[-3000:]
    return root, out


def _record(root: Path, run: str, method: str) -> dict:
    return json.loads((root / run / "quick" / "digits_lt" / method / "seed0" / "record.json").read_text())


@pytest.mark.slow
def test_side_by_side_cells_give_the_records_of_one_cell_after_another(two_runs):
    root, out = two_runs
    assert "2 at a time in worker processes, 1 torch thread(s) each" in out["side"].stderr  # BENCH_CORES=2
    for method in ("fm", "cpd"):
        one, side = _record(root, "one", method), _record(root, "side", method)
        assert one["config_hash"] == side["config_hash"]
        assert one["metrics"] == side["metrics"]


def test_side_by_side_cells_train_the_shared_classifiers_once(two_runs):
    root, _ = two_runs
    reused = [
        json.loads((root / "side" / "quick" / "digits_lt" / m / "seed0" / "downstream.json").read_text())[
            "reused"
        ]
        for m in ("fm", "cpd")
    ]
    assert sorted(map(sorted, reused)) == [[], ["crt", "no_aug", "reweight"]]


def test_side_by_side_progress_lines_are_whole(two_runs):
    _, out = two_runs
    lines = out["side"].stderr.splitlines()
    stage_lines = [line for line in lines if " done in " in line]
    assert stage_lines and all(STAGE_LINE.match(line) for line in stage_lines), stage_lines
    assert {m for line in stage_lines for m in ("fm", "cpd") if f"/{m}/" in line} == {"fm", "cpd"}


@pytest.mark.slow
def test_a_rerun_of_a_finished_grid_starts_no_worker(two_runs, bench_cli):
    root, out = two_runs
    before = {m: _record(root, "side", m) for m in ("fm", "cpd")}
    again = bench_cli(
        "run",
        *GRID,
        "executor.cells_at_once=2",
        f"results_dir={root / 'side'}",
        cwd=root,
        env_extra={pool.ENV: "", "BENCH_CORES": "2"},
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "worker processes" not in again.stderr
    assert again.stderr.count("record exists for this config and data, skipped") == 2
    assert {m: _record(root, "side", m) for m in ("fm", "cpd")} == before  # nothing rewritten
