"""Dataset-scoped bindings: `phantom_lt/train.steps = 7` reaches phantom_lt's cells only, in order."""

from __future__ import annotations

import gin
from bench.config.scoped import localise, statements
from bench.pipeline.assemble import CellSpec, RunRequest, build_cell

DATASETS = ("phantom_lt", "synthetic2d", "digits_lt")


def test_statements_keep_continuation_lines_with_their_binding():
    text = "a.x = [1,\n    2]  # (\nb.y = 'a)b'\n# c/d.z = 1\ne.f = \\\n    3\n"
    assert statements(text) == [
        ["a.x = [1,", "    2]  # ("],
        ["b.y = 'a)b'"],
        ["# c/d.z = 1"],
        ["e.f = \\", "    3"],
    ]


def test_scopes_of_the_cells_dataset_are_removed_and_other_datasets_dropped():
    text = (
        "train.steps = 2000\n"
        "phantom_lt/train.steps = 600\n"
        "synthetic2d/pipeline.evaluators = ['swd',\n"
        "                                   'cond_accuracy']\n"
        "other_scope/train.lr = 0.1\n"
        "# phantom_lt/train.lr = 3\n"
    )
    assert localise(text, "phantom_lt", DATASETS) == (
        "train.steps = 2000\ntrain.steps = 600\nother_scope/train.lr = 0.1\n# phantom_lt/train.lr = 3\n"
    )
    assert localise(text, "synthetic2d", DATASETS) == (
        "train.steps = 2000\npipeline.evaluators = ['swd',\n                                   'cond_accuracy']\n"
        "other_scope/train.lr = 0.1\n# phantom_lt/train.lr = 3\n"
    )


def _steps(tmp_path, dataset: str, bindings=(), text: str = "") -> tuple[int, str]:
    files = []
    if text:
        path = tmp_path / "budgets.gin"
        path.write_text(text)
        files.append(str(path))
    cell = build_cell(
        CellSpec("claims", dataset, "fm", 0), RunRequest(gin_files=files, bindings=list(bindings))
    )
    return cell.config.train.steps, cell.config_hash


def test_a_scoped_binding_reaches_its_dataset_only_and_later_bindings_still_win(tmp_path):
    budgets = "phantom_lt/train.steps = 7\nsynthetic2d/train.steps = 9\n"
    assert _steps(tmp_path, "phantom_lt", text=budgets)[0] == 7
    assert _steps(tmp_path, "synthetic2d", text=budgets)[0] == 9
    assert _steps(tmp_path, "digits_lt", text=budgets)[0] == 1000  # its own gin file's value
    assert _steps(tmp_path, "phantom_lt", ["train.steps = 5"], text=budgets)[0] == 5  # command line last
    assert _steps(tmp_path, "phantom_lt", ["phantom_lt/train.steps = 3"])[0] == 3
    assert _steps(tmp_path, "synthetic2d", ["phantom_lt/train.steps = 3"])[0] == 3000


def test_a_scoped_binding_is_recorded_and_hashed_as_the_plain_binding_it_became(tmp_path):
    scoped = _steps(tmp_path, "phantom_lt", text="phantom_lt/train.steps = 7\n")[1]
    plain = _steps(tmp_path, "phantom_lt", ["train.steps = 7"])[1]
    assert scoped == plain
    assert "train.steps = 7" in gin.config_str() and "phantom_lt/" not in gin.config_str()


def test_the_quick_experiment_sets_each_datasets_own_budget():
    steps = {d: build_cell(CellSpec("quick", d, "fm", 0), RunRequest()).config.train.steps for d in DATASETS}
    assert steps == {"phantom_lt": 600, "synthetic2d": 1000, "digits_lt": 1000}
    assert build_cell(CellSpec("quick", "phantom_lt", "fm", 0), RunRequest()).dataset.size == 16


def test_the_quick_experiment_leaves_other_datasets_their_own_evaluators():
    def evaluators(dataset):
        return [ev.name for ev in build_cell(CellSpec("quick", dataset, "fm", 0), RunRequest()).evaluators]

    assert evaluators("synthetic2d") == [
        "swd",
        "sample_grid",
        "cond_accuracy",
        "knn_purity",
        "confounder",
        "geometry",
    ]
    assert "downstream" in evaluators("phantom_lt") and evaluators("digits_lt") == [
        "sample_grid",
        "cond_accuracy",
    ]
