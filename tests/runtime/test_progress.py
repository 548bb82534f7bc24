"""Progress a person can follow: bars in a terminal, a line per stage and per cell in a log."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from bench.evaluator import Metric
from bench.pipeline.assemble import CellSpec, RunRequest, build_cell
from bench.pipeline.runner import run_cell
from bench.runtime import progress


@pytest.fixture(autouse=True)
def clean():
    progress.set_cell("")
    yield
    progress.set_cell("")


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_titled_with_the_cell_and_stage_with_rate_and_eta(monkeypatch):
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    progress.set_cell("[3/8] phantom_lt/cbfm/seed0")
    for _ in progress.bar(range(5), "train", unit="step"):
        pass
    shown = screen.getvalue()
    assert "[3/8] phantom_lt/cbfm/seed0 train" in shown and "/5 " in shown  # of 5 steps
    assert "step/s" in shown or "s/step" in shown  # the rate; tqdm shows the ETA as [elapsed<left]
    assert "<" in shown


def test_a_log_gets_no_bar(monkeypatch):
    log_file = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", log_file)
    for _ in progress.bar(range(5), "train"):
        pass
    assert log_file.getvalue() == ""


def test_lines_name_the_cell_the_stage_its_duration_and_the_headline_metric():
    assert progress.stage_line("d/fm/seed0", "train", 3.21) == "d/fm/seed0: train done in 3.2 s"
    assert progress.stage_line("d/fm/seed0", "train", 185.4) == "d/fm/seed0: train done in 185 s"
    assert progress.stage_line("d/fm/seed0", "train", 725.0) == "d/fm/seed0: train done in 12 min 05 s"
    metrics = {"fid/pooled": 3.0, "fid/tail": 10.84, "fid/tail@source": 13.1, "bacc": 0.5}
    # declared in another order than their ranks: the line names the lowest rank the cell holds
    info = {
        m.name: m.info()
        for m in (
            Metric("bacc", "bAcc", True, headline=True, rank=90),
            Metric("fid/pooled", "FID pooled", False, headline=True, rank=20),
            Metric("fid/tail", "FID tail", False, headline=True, rank=10),
        )
    }
    assert (
        progress.cell_line("d/fm/seed0", 58.2, metrics, info)
        == "d/fm/seed0: finished in 58 s; fid/tail 10.84 (source only 13.1)"
    )
    assert progress.headline({"fid/pooled": 3.0, "bacc": 0.5}, info) == "fid/pooled 3"
    swd = {
        m.name: m.info()
        for m in (Metric("swd", "SWD", False), Metric("swd/tail", "SWD tail", False, headline=True))
    }
    assert progress.headline({"swd": 0.2, "swd/tail": 0.15}, swd) == "swd/tail 0.15"
    assert progress.headline(metrics) is None  # no declarations: no headline
    assert progress.cell_line("d/fm/seed0", 1.0, {"other": 1.0}, info) == "d/fm/seed0: finished in 1.0 s"


def test_a_run_logs_one_line_per_stage_and_one_per_cell(tmp_path, caplog):
    bindings = [
        "train.steps = 3",
        "train.batch_size = 64",
        "sample.nfe = 2",
        "synthetic2d.n_max = 200",
        "synthetic2d.imbalance_ratio = 10.0",
        "synthetic2d.n_test_per_class = 20",
    ]
    cell = build_cell(CellSpec("quick", "synthetic2d", "fm", 0), RunRequest(bindings=bindings))
    with caplog.at_level(logging.INFO, logger="bench"):
        record = run_cell(cell, tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.name == "bench.pipeline.runner"]
    for stage in ("load", "encode", "train", "sample", "evaluate/swd", "evaluate"):
        assert sum(line.startswith(f"synthetic2d/fm/seed0: {stage} done in ") for line in lines) == 1, stage
    finished = [line for line in lines if " finished in " in line]
    assert len(finished) == 1
    assert finished[0].endswith(
        f"swd/tail {record['metrics']['swd/tail']:.4g} "
        f"(source only {record['metrics']['swd/tail@source']:.4g})"
    )
