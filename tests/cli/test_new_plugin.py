"""`bench new <kind> NAME`: the package it writes installs, registers, passes its own tests and runs.

The end-to-end test installs the generated packages with pip into a folder of its own (`--target`)
and runs `bench` with that folder on PYTHONPATH, where the entry points of its dist-info folders
are found: the shared environment is never changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bench.cli import main
from bench.new.scaffold import KINDS, class_name


def generate(kind: str, name: str, parent: Path) -> Path:
    """`bench new kind name --dir parent`, in-process; the package folder."""
    assert main(["new", kind, name, "--dir", str(parent)]) == 0
    return parent / name


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_package_holds_the_entry_point_module_gin_file_readme_and_tests(kind, tmp_path, capsys):
    tomllib = pytest.importorskip("tomllib")
    pkg = generate(kind, "toy", tmp_path)
    assert f"wrote {pkg}" in capsys.readouterr().out
    written = sorted(str(p.relative_to(pkg)) for p in pkg.rglob("*") if p.is_file())
    expected = ["README.md", "bench_toy/__init__.py", f"bench_toy/{kind}.py", "pyproject.toml"]
    expected += ["tests/test_contract.py", "tests/test_toy.py"] + (
        ["bench_toy/toy.gin"] if KINDS[kind].ships_gin else []
    )
    assert written == sorted(expected)
    project = tomllib.loads((pkg / "pyproject.toml").read_text())
    cls = class_name(kind, "toy")
    assert project["project"]["entry-points"][f"bench.{KINDS[kind].plural}"] == {
        "toy": f"bench_toy.{kind}:{cls}"
    }
    assert project["tool"]["setuptools"]["packages"] == ["bench_toy"]
    if KINDS[kind].ships_gin:  # shipped as package data, named by the class's gin_file
        assert project["tool"]["setuptools"]["package-data"] == {"bench_toy": ["*.gin"]}
        assert "toy." in (pkg / "bench_toy" / "toy.gin").read_text()
    for path in pkg.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")  # every file is Python, every placeholder filled
    assert f"check_{kind}({cls})" in (pkg / "tests" / "test_contract.py").read_text()
    assert "{{" not in "".join(p.read_text() for p in pkg.rglob("*") if p.is_file())


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_generated_code_passes_its_own_lint_settings(kind, tmp_path):
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (the test extra)")
    pkg = generate(kind, "toy_plugin", tmp_path)
    out = subprocess.run([ruff, "check", "--no-cache", "."], cwd=pkg, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _refused(capsys, *argv: str) -> str:
    """The one line `bench new` prints for refused input (exit 2)."""
    assert main(["new", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bench: error: "), err
    return err


def test_an_existing_folder_is_never_overwritten(tmp_path, capsys):
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "mine.txt").write_text("keep")
    err = _refused(capsys, "method", "toy", "--dir", str(tmp_path))
    assert "already exists" in err
    assert os.listdir(tmp_path / "toy") == ["mine.txt"] and sorted(os.listdir(tmp_path)) == ["toy"]


@pytest.mark.parametrize("name", ["1toy", "my-plugin", "class", "toy plugin", "tøy"])
def test_a_name_that_is_no_python_identifier_is_refused(name, tmp_path, capsys):
    assert "not a Python identifier" in _refused(capsys, "method", name, "--dir", str(tmp_path))
    assert os.listdir(tmp_path) == []  # nothing half-written, no staging folder left


@pytest.mark.parametrize(
    "kind, name, says",
    [
        ("method", "fm", "already a registered method (medaug-bench"),
        ("remedy", "focal", "already a registered remedy"),
        ("method", "mlp", "already a backbone"),  # one gin namespace: `mlp.hidden` would be ambiguous
        ("evaluator", "train", "one of bench's own gin scopes"),
    ],
)
def test_a_name_taken_by_a_plugin_or_a_bench_scope_is_refused(kind, name, says, tmp_path, capsys):
    assert says in _refused(capsys, kind, name, "--dir", str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_an_unknown_kind_is_refused_with_the_closest_one(tmp_path, capsys):
    err = _refused(capsys, "metod", "toy", "--dir", str(tmp_path))
    assert "unknown plugin kind 'metod'; did you mean 'method'?" in err
    assert "method, dataset, evaluator, remedy, backbone, encoder" in err
    assert os.listdir(tmp_path) == []


def test_a_dir_that_is_a_file_is_refused_and_a_missing_one_created(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert "is a file, not a folder" in _refused(capsys, "method", "toy", "--dir", str(tmp_path / "afile"))
    assert (generate("method", "toy", tmp_path / "new" / "deeper") / "pyproject.toml").is_file()


def test_a_plugin_named_contract_keeps_both_test_files(tmp_path):
    tests = generate("evaluator", "contract", tmp_path) / "tests"
    assert "check_evaluator(ContractEvaluator)" in (tests / "test_contract.py").read_text()
    assert "class_mean_gap" in (tests / "test_contract_own.py").read_text()


def test_a_plural_kind_is_accepted(tmp_path, capsys):
    assert (generate("remedies", "toy", tmp_path) / "bench_toy" / "remedy.py").is_file()


@pytest.mark.slow
def test_method_evaluator_and_remedy_install_list_pass_their_tests_and_run(bench_cli):
    """The acceptance path, outside the shared environment: pip --target, then bench with PYTHONPATH."""
    # a folder of its own, not tmp_path: tests/conftest.py would mark every tmp_path test here slow
    with tempfile.TemporaryDirectory(prefix="bench-new-") as tmp:
        _install_list_test_and_run(Path(tmp), bench_cli)


def _install_list_test_and_run(tmp_path: Path, bench_cli) -> None:
    names = {"method": "toy_method", "evaluator": "toy_gap", "remedy": "toy_adjust"}
    for kind, name in names.items():
        generate(kind, name, tmp_path)
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target"]
    out = subprocess.run(
        [*pip, str(target), *(str(tmp_path / n) for n in names.values())],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    env = {"PYTHONPATH": str(target)}

    listed = bench_cli("ls", cwd=tmp_path, env_extra=env)
    assert listed.returncode == 0, listed.stderr
    for kind, name in names.items():
        line = next(x for x in listed.stdout.splitlines() if x.split()[:1] == [name])
        assert f"bench-{name.replace('_', '-')} 0.1.0" in line and f"bench_{name}.{kind}:" in line

    tests = [str(tmp_path / n / "tests") for n in names.values()]
    own = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib", *tests],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, **env},
    )
    assert own.returncode == 0, own.stdout[-3000:] + own.stderr[-2000:]
    assert "9 passed" in own.stdout  # per package: the kit's contract check and two of its own

    run = bench_cli(
        "run",
        "methods=[toy_method]",
        "datasets=[synthetic2d,digits_lt]",
        "pipeline.evaluators=[toy_gap,downstream]",  # downstream applies to images only: digits_lt
        "downstream.remedies=[toy_adjust]",
        "downstream.with_augmentation=[toy_adjust]",
        "--gin_file",
        "presets/cpu_smoke.gin",
        f"results_dir={tmp_path / 'results'}",
        cwd=tmp_path,
        env_extra=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    cells = tmp_path / "results" / "quick"
    vector = json.loads((cells / "synthetic2d" / "toy_method" / "seed0" / "record.json").read_text())
    image = json.loads((cells / "digits_lt" / "toy_method" / "seed0" / "record.json").read_text())
    assert vector["plugins"]["method/toy_method"] == "bench-toy-method 0.1.0"
    assert vector["plugins"]["evaluator/toy_gap"] == "bench-toy-gap 0.1.0"
    for record in (vector, image):  # the evaluator's declared headline metric, a finite gap >= 0
        assert record["metric_info"]["toy_gap/all"]["headline"] is True
        assert 0.0 <= record["metrics"]["toy_gap/all"] < float("inf")
    for run_name in ("bacc/toy_adjust", "bacc/aug+toy_adjust"):  # the remedy alone and on augmentation
        assert 0.0 <= image["metrics"][run_name] <= 1.0
