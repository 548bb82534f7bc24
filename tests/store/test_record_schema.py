"""The results contract: record.json and grid.json against their packaged JSON Schemas.

Records written by real runs and every committed record match; a record or grid of the wrong
shape is refused by the writer (nothing written) and by `bench tables` (exit 2, the field named);
docs/records.md is the schemas' own descriptions.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from records_fixture import make_experiment

from bench import registry
from bench.cli import main
from bench.errors import BenchError
from bench.store.gridfile import GRID, GridFile, declare_cells, read_grid
from bench.store.records import RECORD, SCHEMA_VERSION, read_record, write_record
from bench.store.schema import SchemaViolation, doc_tables, markdown, problems, schema, schema_path

ROOT = Path(__file__).resolve().parents[2]
TINY = (
    "datasets=[synthetic2d]",
    "train.steps=2",
    "sample.nfe=1",
    "sample.keep_paths=0",
    "synthetic2d.n_max=400",
    "synthetic2d.n_test_per_class=10",
    "pipeline.evaluators=[swd,geometry]",
)


def tables(folder: Path, capsys) -> tuple[int, list[str]]:
    """`bench tables FOLDER` in-process: its exit code and its stderr lines."""
    code = main(["tables", str(folder), "--format", "md"])
    return code, capsys.readouterr().err.splitlines()


def one_cell(tmp_path: Path, edit) -> Path:
    """A one-cell experiment whose record `edit` changes; the record's path."""
    folder = make_experiment(tmp_path, methods=("fm",), seeds=(0,))
    path = folder / "phantom_lt" / "fm" / "seed0" / RECORD
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))
    return path


def test_the_schemas_are_valid_draft_2020_12_and_describe_every_field():
    from jsonschema import Draft202012Validator

    for kind in ("record", "grid"):
        Draft202012Validator.check_schema(schema(kind))
        assert schema(kind)["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema_path(kind).is_file()
        rows = markdown(kind).splitlines()[2:]
        assert rows and all(row.split(" | ")[3].strip(" |") for row in rows), "a field without description"


@pytest.mark.slow
def test_every_record_a_run_writes_matches_the_schema(tmp_path, capsys):
    """A full cell and a cell stopped after its prior, through `bench run`: both records (version
    2, every required field) and grid.json match, and every top-level key is one the schema lists."""
    res = tmp_path / "res"
    assert main(["run", *TINY, "methods=[fm]", f"results_dir={res}"]) == 0
    assert main(["run", *TINY, "methods=[optprior]", "pipeline.stop_after=prior", f"results_dir={res}"]) == 0
    capsys.readouterr()
    records = [read_record(p.parent) for p in sorted(res.glob(f"quick/*/*/seed*/{RECORD}"))]
    assert [r["method"] for r in records] == ["fm", "optprior"]
    assert records[1]["stop_after"] == "prior" and "augmentation" not in records[1]
    for record in records:
        assert record["schema_version"] == SCHEMA_VERSION == 2
        assert problems(record, "record") == []
        assert set(record) <= set(schema("record")["properties"])
        assert {"metric_info", "settings", "data", "plugins"} <= set(record)
        # what CPU numerics depend on (docs/reproducibility.md), read independently of bench
        assert record["host"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
        assert record["host"]["torch_threads"] == torch.get_num_threads()
        assert record["host"]["cpu"] == (platform_cpu() or record["host"]["cpu"])
    assert problems(json.loads((res / "quick" / GRID).read_text()), "grid") == []


def platform_cpu() -> str | None:
    """The model name lscpu-style tools read from /proc/cpuinfo (None where there is none)."""
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        return None
    names = re.findall(r"^model name\s*:\s*(.+)$", info.read_text(errors="replace"), flags=re.M)
    return names[0].strip() if names else None


def test_a_record_without_the_cpu_fields_still_matches():
    """cpu and cpu_capability came after schema version 2: records written before them stay valid."""
    record = json.loads(next(ROOT.glob("results/claims/**/record.json")).read_text())
    record["host"].pop("cpu", None), record["host"].pop("cpu_capability", None)
    assert problems(record, "record") == []
    assert problems({**record, "host": {**record["host"], "cpu_capability": 2}}, "record") != []


def test_every_committed_record_and_grid_matches_the_schema():
    """results/claims' records, written by an earlier bench (schema_version 1), still read."""
    paths = sorted((ROOT / "results").glob(f"**/{RECORD}"))
    assert len(paths) >= 138
    bad = {str(p): problems(json.loads(p.read_text()), "record") for p in paths}
    assert {p: found for p, found in bad.items() if found} == {}
    grids = sorted((ROOT / "results").glob(f"**/{GRID}"))
    assert len(grids) >= 3
    assert {str(p): problems(json.loads(p.read_text()), "grid") for p in grids} == {str(p): [] for p in grids}


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda r: r["metrics"].update({"fid/tail": "12.5"}),
            r"field `metrics.fid/tail` is a string \('12.5'\), expected a number",
        ),
        (
            lambda r: r["metrics"].update({"bacc": True}),
            r"field `metrics.bacc` is a boolean \(true\), expected a number",
        ),
        (lambda r: r["metrics"].update({"bacc": None}), r"field `metrics.bacc` is null, expected a number"),
        (lambda r: r.update(settings=[1, 2]), r"field `settings` is a list, expected an object"),
        (lambda r: r.pop("config_hash"), r"field `config_hash` is missing"),
        (lambda r: r.update(seed="0"), r"field `seed` is a string \('0'\), expected an integer"),
        (
            lambda r: r["augmentation"][2].update(group="tail"),
            r"field `augmentation\[2\].group` is 'tail', expected 'ULT' or",
        ),
        (lambda r: r.update(fid_tail=3.0), r"field `fid_tail` is not in the schema"),
        (lambda r: r.update(status="failed"), r"field `status` is 'failed', expected 'ok'"),
        (
            lambda r: r.update(schema_version=2),
            r"field `(metric_info|settings)` is missing \(and 1 more problem\(s\)\)",
        ),
    ],
    ids=[
        "metric-a-string",
        "metric-a-bool",
        "metric-null",
        "settings-a-list",
        "missing",
        "seed",
        "nested",
        "unknown-field",
        "status",
        "v2-incomplete",
    ],
)
def test_bench_tables_refuses_a_record_of_the_wrong_shape_naming_file_and_field(
    tmp_path, capsys, edit, message
):
    path = one_cell(tmp_path, edit)
    code, err = tables(path.parents[3], capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"bench: error: {path}: field ")
    assert re.search(message, err[0]), err[0]
    assert "fix or delete it, or rerun the cell with `bench run`" in err[0]


def test_one_bad_record_among_good_ones_is_refused_and_counted(tmp_path, capsys):
    folder = make_experiment(tmp_path, methods=("fm", "optprior"), seeds=(0, 1))
    for method in ("optprior", "fm"):
        path = folder / "phantom_lt" / method / "seed1" / RECORD
        path.write_text(
            json.dumps({**json.loads(path.read_text()), "n": {"train": -1, "test": 1, "synthetic": 1}})
        )
    code, err = tables(folder, capsys)
    first = folder / "phantom_lt" / "fm" / "seed1" / RECORD  # grid order: dataset, method, seed
    assert code == 2 and err[0].startswith(f"bench: error: {first}: field `n.train` is an integer (-1): ")
    assert "; 1 more record(s) break it too;" in err[0]


def test_bench_claims_and_bench_report_refuse_it_too(tmp_path, capsys):
    path = one_cell(tmp_path, lambda r: r.update(details=[]))
    for command in ("report", "claims"):
        assert main([command, str(path.parents[3]), "--out", str(tmp_path / command)]) == 2
        assert f"{path}: field `details` is a list, expected an object" in capsys.readouterr().err
        out = tmp_path / command
        assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]  # nothing written


def test_the_writer_refuses_a_bad_record_and_leaves_no_file(tmp_path):
    good = json.loads(one_cell(tmp_path / "src", lambda r: None).read_text())
    folder = tmp_path / "cell"
    folder.mkdir()
    for bad in ({**good, "metrics": {"fid/tail": "low"}}, {**good, "host": {"hostname": "x"}}):
        with pytest.raises(
            SchemaViolation, match=r"record\.json not written: .* field `(metrics\.fid/tail|host\.platform)`"
        ):
            write_record(folder, bad)
        assert list(folder.iterdir()) == []  # no record.json, no temporary file
    assert write_record(folder, good) == folder / RECORD and read_record(folder) == good


@pytest.mark.slow
def test_a_plugin_whose_describe_breaks_the_schema_fails_its_cell_and_writes_no_record(
    tmp_path, monkeypatch, capsys
):
    """A method whose describe() is not an object: the cell fails, naming `method_info`."""
    monkeypatch.setattr(registry.methods.get("fm"), "describe", lambda self: ["fm"])
    res = tmp_path / "res"
    assert main(["run", *TINY, "methods=[fm]", f"results_dir={res}"]) == 1
    cell = res / "quick" / "synthetic2d" / "fm" / "seed0"
    assert not (cell / RECORD).exists()
    reason = json.loads((cell / "failure.json").read_text())["reason"]
    assert (
        "record.json not written" in reason and "field `method_info` is a list, expected an object" in reason
    )
    capsys.readouterr()


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda g: g.update(seeds=["0"]), r"field `seeds\[0\]` is a string \('0'\), expected an integer"),
        (lambda g: g.update(methods=[".."]), r"field `methods\[0\]` is '\.\.', not a folder name"),
        (lambda g: g["cells"].update({"x": "h"}), r"field `cells` has a key 'x', not a cell label"),
        (lambda g: g.pop("cells"), r"field `cells` is missing"),
    ],
)
def test_a_grid_of_the_wrong_shape_is_refused_naming_the_field(tmp_path, capsys, edit, message):
    folder = make_experiment(tmp_path, methods=("fm",), seeds=(0,))
    grid = json.loads((folder / GRID).read_text())
    edit(grid)
    (folder / GRID).write_text(json.dumps(grid))
    with pytest.raises(BenchError, match=message + r".*rerun `bench run` for this experiment"):
        read_grid(folder)
    code, err = tables(folder, capsys)
    assert code == 2 and f"{folder / GRID} is unreadable (field" in err[0]


def test_the_grid_writer_refuses_a_grid_that_breaks_the_schema(tmp_path, monkeypatch):
    monkeypatch.setattr(GridFile, "to_json", lambda self: {"experiment": "quick", "seeds": [0]})
    with pytest.raises(
        SchemaViolation, match=r"grid\.json not written: .*field `methods` is missing \(and 2 more"
    ):
        declare_cells(tmp_path, "quick", [])
    assert not (tmp_path / "quick" / GRID).exists()


def test_docs_records_md_is_the_schemas_field_tables():
    """Regenerate with `python -c "from bench.store.schema import update_doc; update_doc('docs/records.md')"`."""
    found = doc_tables(ROOT / "docs" / "records.md")
    assert found == {"record": markdown("record"), "grid": markdown("grid")}
    every = [row.split(" | ")[0].strip("| `") for row in markdown("record").splitlines()[2:]]
    assert set(schema("record")["properties"]) <= set(every)


def test_reading_records_does_not_import_jsonschema_until_one_is_checked():
    """bench's start stays cheap: the modules that read records import jsonschema only to check."""
    code = (
        "import sys, bench.cli, bench.store.records, bench.store.gridfile, bench.report.collect;"
        "print('jsonschema' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_git_hash_is_dirty_for_code_and_config_not_for_results_or_docs(tmp_path):
    """Rerunning an experiment whose records are committed rewrites them: that must not mark the
    new records `+dirty`; a changed source or gin file must."""
    from bench.store.records import git_hash

    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
        )

    files = {
        "bench/core.py": "x = 1\n",
        "gin/experiments/e.gin": "grid.seeds = [0]\n",
        "results/e/e/d/m/seed0/record.json": "{}\n",
        "docs/e.md": "# e\n",
        "README.md": "# r\n",
        "bench/README.md": "# b\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "init")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True
    ).stdout.strip()
    src = tmp_path / "bench"
    for name in ("results/e/e/d/m/seed0/record.json", "docs/e.md", "README.md", "bench/README.md"):
        (tmp_path / name).write_text("changed\n")
    (tmp_path / "results/new.json").write_text("{}\n")  # untracked
    assert git_hash(src) == head
    (tmp_path / "results/e/e/d/m/seed0/record.json").unlink()  # a rerun deletes and rewrites it
    assert git_hash(src) == head
    for name in ("gin/experiments/e.gin", "bench/core.py"):
        (tmp_path / name).write_text("changed\n")
        assert git_hash(src) == head + "+dirty", name
        git("checkout", "--", name)
    assert git_hash(src) == head
