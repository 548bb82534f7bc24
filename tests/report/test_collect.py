"""Reading an experiment folder against its grid: order, missing, refused and broken cells."""

import json

import pytest
from records_fixture import make_experiment

from bench.errors import BenchError
from bench.report.collect import MISSING, OK, REFUSED, load_experiment
from bench.store.gridfile import GridFile, read_grid


def test_cells_follow_the_grid_order_not_the_folder_order(tmp_path):
    exp = load_experiment(
        make_experiment(tmp_path, datasets=("zeta", "alpha"), methods=("optprior", "fm"), seeds=(2, 0))
    )
    assert exp.datasets == ["zeta", "alpha"] and exp.methods == ["optprior", "fm"] and exp.seeds == [2, 0]
    assert [(c.dataset, c.method, c.seed) for c in exp.results()][:3] == [
        ("zeta", "optprior", 2),
        ("zeta", "optprior", 0),
        ("zeta", "fm", 2),
    ]
    assert all(c.status == OK for c in exp.results()) and len(exp.records()) == 8


def test_missing_failed_corrupt_and_refused_cells_are_reported(tmp_path):
    folder = make_experiment(tmp_path, methods=("fm", "optprior"), seeds=(0, 1))
    (folder / "phantom_lt/fm/seed0/record.json").unlink()
    (folder / "phantom_lt/fm/seed0/failure.json").write_text(json.dumps({"reason": "ValueError: nan loss"}))
    (folder / "phantom_lt/fm/seed1/record.json").write_text('{"truncated": ')
    rec = json.loads((folder / "phantom_lt/optprior/seed1/record.json").read_text())
    rec["config_hash"] = "another"
    (folder / "phantom_lt/optprior/seed1/record.json").write_text(json.dumps(rec))
    exp = load_experiment(folder)
    cells = {(c.method, c.seed): c for c in exp.results()}
    assert cells["fm", 0].status == MISSING and "ValueError: nan loss" in cells["fm", 0].note
    assert cells["fm", 1].status == MISSING and "unreadable" in cells["fm", 1].note
    assert cells["optprior", 1].status == REFUSED and "another" in cells["optprior", 1].note
    assert cells["optprior", 0].status == OK
    assert [c.label for c in exp.problems()] == [
        "phantom_lt/fm/seed0",
        "phantom_lt/fm/seed1",
        "phantom_lt/optprior/seed1",
    ]


def test_without_grid_json_a_seed_with_another_configuration_is_refused(tmp_path):
    folder = make_experiment(tmp_path, methods=("fm",), seeds=(0, 1, 2), grid=False)
    path = folder / "phantom_lt/fm/seed0/record.json"
    rec = json.loads(path.read_text())
    rec["config"] = "train.steps = 99999\nmethod = 'fm'"
    path.write_text(json.dumps(rec))
    exp = load_experiment(folder)
    assert not exp.has_grid and exp.seeds == [0, 1, 2]
    status = {c.seed: c.status for c in exp.results()}
    assert status == {0: REFUSED, 1: OK, 2: OK}


def test_grid_file_merges_later_runs_in_first_seen_order(tmp_path):
    class Cell:
        def __init__(self, d, m, s, h):
            self.spec = type("S", (), {"dataset": d, "method": m, "seed": s})
            self.config_hash = h

    from bench.store.gridfile import declare_cells

    declare_cells(tmp_path, "exp", [Cell("a", "fm", 0, "h1"), Cell("b", "fm", 0, "h2")])
    declare_cells(tmp_path, "exp", [Cell("a", "cbfm", 1, "h3"), Cell("a", "fm", 0, "h4")])
    grid = read_grid(tmp_path / "exp")
    assert grid.datasets == ["a", "b"] and grid.methods == ["fm", "cbfm"] and grid.seeds == [0, 1]
    assert grid.expected("a", "fm", 0) == "h4" and grid.expected("a", "cbfm", 1) == "h3"
    assert grid.expected("b", "cbfm", 1) is None


def test_bad_folders_are_one_line_errors(tmp_path):
    with pytest.raises(BenchError, match="no such results folder"):
        load_experiment(tmp_path / "nope")
    make_experiment(tmp_path, name="quick")
    with pytest.raises(BenchError, match=r"holds no bench records.*experiments here: quick"):
        load_experiment(tmp_path)
    (tmp_path / "quick" / "grid.json").write_text("{not json")
    with pytest.raises(BenchError, match="grid.json is unreadable"):
        load_experiment(tmp_path / "quick")
    assert GridFile("x").to_json()["cells"] == {}
