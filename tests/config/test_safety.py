"""Safety properties of bench: no code execution from files, no path that leaves its folder.

- Loading: every `torch.load` passes `weights_only=True`; nothing unpickles (no pickle, dill,
  joblib, shelve or marshal; no `allow_pickle=True`, no `read_pickle`); no `eval` / `exec`, no
  shell. Checked statically over bench's source (ast, so comments and strings do not count),
  and behaviourally: a finished run's results folder holds no pickle at all.
- Paths: a label file's paths stay inside the dataset root (bench.data.rootpath), an experiment name
  stays inside gin/experiments and results_dir, and grid.json cannot point reports elsewhere.
"""

from __future__ import annotations

import ast
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import gin
from bench.cli import main
from bench.config.gin_config import experiment_file
from bench.data.rootpath import under_root
from bench.errors import BenchError
from bench.store.gridfile import GRID, read_grid

REPO = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("bench", "datasets", "methods", "evaluators")
UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


# -- the static scan ---------------------------------------------------------------------------
def _dotted(node: ast.AST) -> str:
    """`torch.load` for the expression torch.load, '' for anything that is not a dotted name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _keyword(call: ast.Call, name: str):
    """The constant value of keyword `name` of `call`; missing: None; not a constant: '?'."""
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "?"
    return None


def _call_problem(call: ast.Call) -> str | None:
    name = _dotted(call.func)
    last = name.rsplit(".", 1)[-1]
    if name == "torch.load" and _keyword(call, "weights_only") is not True:
        return "torch.load without weights_only=True"
    if (
        last == "load"
        and name.split(".")[0] in ("np", "numpy")
        and _keyword(call, "allow_pickle") not in (None, False)
    ):
        return "np.load with allow_pickle"
    if last == "read_pickle":
        return "read_pickle"
    if name in ("eval", "exec", "compile", "__import__"):
        return f"builtin {name}()"
    if name in ("os.system", "os.popen") or _keyword(call, "shell") not in (None, False):
        return "a shell command"
    if name in ("yaml.load", "yaml.unsafe_load") and _keyword(call, "Loader") in (None, "?"):
        return "yaml.load without a safe Loader"
    return None


def problems(source: str, filename: str = "<source>") -> list[str]:
    """`file:line: what` for every unsafe load, unpickler import, eval/exec or shell call."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            bad = [a.name for a in node.names if a.name.split(".")[0] in UNPICKLERS]
        elif isinstance(node, ast.ImportFrom):
            bad = [node.module] if (node.module or "").split(".")[0] in UNPICKLERS else []
        elif isinstance(node, ast.Call):
            bad = [p] if (p := _call_problem(node)) else []
        else:
            bad = []
        found += [f"{filename}:{node.lineno}: {what}" for what in bad]
    return found


def source_files() -> list[Path]:
    files = [p for d in SOURCE_DIRS for p in sorted((REPO / d).rglob("*.py"))]
    if not files:
        pytest.skip(f"bench's source folders {SOURCE_DIRS} are not next to the tests")
    return files


@pytest.mark.parametrize(
    "snippet,flagged",
    [
        ("torch.load(p)", "torch.load without weights_only=True"),
        ("torch.load(p, weights_only=False)", "torch.load without weights_only=True"),
        ("torch.load(p, weights_only=flag)", "torch.load without weights_only=True"),
        ("torch.load(p, map_location='cpu', weights_only=True)", None),
        ("np.load(p, allow_pickle=True)", "np.load with allow_pickle"),
        ("numpy.load(p, allow_pickle=ok)", "np.load with allow_pickle"),
        ("np.load(p, mmap_mode='r')", None),
        ("np.load(p, allow_pickle=False)", None),
        ("import pickle", "pickle"),
        ("from joblib import load", "joblib"),
        ("import dill as d", "dill"),
        ("pd.read_pickle(p)", "read_pickle"),
        ("eval(text)", "builtin eval()"),
        ("exec(code)", "builtin exec()"),
        ("model.eval()", None),
        ("ast.literal_eval(text)", None),
        ("subprocess.run(cmd, shell=True)", "a shell command"),
        ("subprocess.run(['git', 'status'])", None),
        ("os.system(cmd)", "a shell command"),
        ("yaml.load(f)", "yaml.load without a safe Loader"),
        ("# torch.load(p) in a comment\nx = 'pickle.load(f)'", None),
    ],
)
def test_the_scan_flags_unsafe_calls_and_only_those(snippet, flagged):
    found = problems(snippet)
    if flagged is None:
        assert found == []
    else:
        assert len(found) == 1 and flagged in found[0], found


def test_bench_source_has_no_unpickling_eval_or_shell():
    found = [
        p for f in source_files() for p in problems(f.read_text(encoding="utf-8"), str(f.relative_to(REPO)))
    ]
    assert found == [], "\n".join(found)


def test_a_results_folder_holds_no_pickle(tmp_path):
    """Every file a finished cell leaves is readable without pickle (checkpoints: test_trainer.py)."""
    res = tmp_path / "res"
    try:
        code = main(
            [
                "run",
                "datasets=[synthetic2d]",
                "methods=[fm]",
                "train.steps=2",
                "sample.nfe=1",
                "synthetic2d.n_max=400",
                "synthetic2d.n_test_per_class=10",
                "pipeline.evaluators=[swd]",
                f"results_dir={res}",
            ]
        )
    finally:
        gin.clear_config()  # leave no parsed (and locked) gin config to later tests
    assert code == 0
    files = [p for p in res.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".json", ".safetensors", ".npy", ".gin"}
    for path in files:
        assert path.read_bytes()[:1] != b"\x80", f"{path} starts like a pickle (protocol 2+)"
        if zipfile.is_zipfile(path):  # torch.save's format: a zip holding data.pkl
            assert not any(n.endswith(".pkl") for n in zipfile.ZipFile(path).namelist()), path
        if path.suffix == ".npy":
            np.load(path, allow_pickle=False)  # raises on object arrays
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))


# -- paths from data ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "relative",
    [
        "../secret.png",
        "a/../../secret.png",
        "/etc/passwd",
        "..",
        ".",
        "",
        "..\\..\\secret.png",
        "a/b/../../../secret.png",
    ],
)
def test_label_file_paths_cannot_leave_the_dataset_root(tmp_path, relative):
    with pytest.raises(BenchError, match="escapes the dataset root.*relative to the root"):
        under_root(tmp_path, relative, "nih_lt")


@pytest.mark.parametrize(
    "relative,inside",
    [
        ("images/a.png", "images/a.png"),
        ("a/../b.png", "b.png"),
        ("./x/y.png", "x/y.png"),
        ("x\\y.png", "x/y.png"),
    ],
)
def test_paths_inside_the_root_are_joined_normalised(tmp_path, relative, inside):
    assert under_root(tmp_path, relative, "nih_lt") == tmp_path / inside


@pytest.mark.parametrize("name", ["../base", "../datasets/synthetic2d", "sub/quick", "/tmp/x", "..", ""])
def test_an_experiment_name_cannot_be_a_path(name):
    # `../base` names an existing gin file, and the experiment is also a folder under results_dir
    with pytest.raises(BenchError, match=r"must be a name, not a path \(known: .*quick"):
        experiment_file(name)


@pytest.mark.parametrize(
    "field,value",
    [("datasets", "../../elsewhere"), ("methods", ".."), ("datasets", "a/b"), ("methods", None)],
)
def test_grid_json_cannot_send_reports_outside_the_experiment(tmp_path, field, value):
    grid = {"experiment": "quick", "methods": ["fm"], "datasets": ["synthetic2d"], "seeds": [0], "cells": {}}
    grid[field] = [value]
    (tmp_path / GRID).write_text(json.dumps(grid))
    with pytest.raises(
        BenchError,
        match=r"(not a folder name|is unreadable).*; rerun `bench run` for this "
        r"experiment: it rebuilds the file from the records",
    ):
        read_grid(tmp_path)
