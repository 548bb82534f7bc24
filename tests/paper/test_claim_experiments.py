"""The claims protocol's records: prior-only cells, stage versions, and several experiments read as one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from records_fixture import complete_record

from bench.cli import main
from bench.errors import BenchError
from bench.paper.claim_experiments import load_claims, stage_versions
from bench.store.gridfile import GridFile


def record(dataset, method, seed, metrics, versions=(1, 1), experiment="part") -> dict:
    return complete_record(
        {
            "schema_version": 1,
            "status": "ok",
            "experiment": experiment,
            "dataset": dataset,
            "method": method,
            "seed": seed,
            "metrics": metrics,
            "higher_is_better": {k: False for k in metrics},
            "config_hash": f"{experiment}-{dataset}-{method}-{seed}",
            "git_hash": "abc",
            "created": "2026-12-07T00:00:00+0000",
            "stage_versions": {"prior": versions[0], "train": versions[1]},
            "config": "",
        }
    )


def write_part(root: Path, name: str, records: list[dict]) -> Path:
    """An experiment folder `root/name` with grid.json and the given records."""
    folder, grid = root / name, GridFile(name)
    for r in records:
        grid.add(r["dataset"], r["method"], r["seed"], r["config_hash"], metrics={})
        cell = folder / r["dataset"] / r["method"] / f"seed{r['seed']}"
        cell.mkdir(parents=True, exist_ok=True)
        (cell / "record.json").write_text(json.dumps(r))
    (folder / "grid.json").write_text(json.dumps(grid.to_json()))
    return folder


def test_a_folder_of_experiments_is_read_as_their_union(tmp_path):
    write_part(
        tmp_path,
        "prior",
        [record("toy", "optprior", s, {"geom_x": 1.0 + s}, (2, 1), "prior") for s in range(4)],
    )
    write_part(
        tmp_path,
        "flows",
        [
            record(
                "toy",
                m,
                s,
                {"swd/tail": 0.1 * s} | ({"geom_x": 1.0 + s} if m == "optprior" else {}),
                (2, 1) if m == "optprior" else (1, 1),
            )
            for m in ("fm", "optprior")
            for s in range(2)
        ],
    )
    exp = load_claims(tmp_path)
    assert exp.parts == ["flows", "prior"] and exp.seeds == [0, 1, 2, 3]
    assert len(exp.records("toy", "optprior")) == 4 and len(exp.records("toy", "fm")) == 2
    seed1 = next(r for r in exp.records("toy", "optprior") if r["seed"] == 1)
    assert seed1["metrics"] == {"swd/tail": 0.1, "geom_x": 2.0}  # both records' metrics, one cell


def test_two_records_of_one_cell_that_disagree_are_refused_naming_the_metric(tmp_path):
    write_part(tmp_path, "prior", [record("toy", "optprior", 0, {"geom_x": 1.0})])
    write_part(tmp_path, "flows", [record("toy", "optprior", 0, {"geom_x": 1.5, "swd/tail": 0.2})])
    with pytest.raises(BenchError, match="geom_x.*disagree"):
        load_claims(tmp_path)


def test_records_of_one_method_from_different_stage_versions_are_refused(tmp_path):
    folder = write_part(
        tmp_path,
        "only",
        [record("toy", "optprior", 0, {"m": 1.0}, (2, 1)), record("toy", "optprior", 1, {"m": 1.0}, (1, 1))],
    )
    with pytest.raises(BenchError, match=r"optprior.*prior v2, train v1: toy/optprior/seed0.*prior v1"):
        load_claims(folder)
    older = json.loads((folder / "toy/optprior/seed1/record.json").read_text())
    del older["stage_versions"]  # written before versions existed
    (folder / "toy/optprior/seed1/record.json").write_text(json.dumps(older))
    assert stage_versions(older) == "not recorded"
    with pytest.raises(BenchError, match="not recorded"):
        load_claims(folder)


@pytest.mark.slow
def test_a_prior_only_cell_records_the_prior_and_trains_nothing(tmp_path):
    """`pipeline.stop_after = 'prior'`: the geometry evaluator's metrics, the stage versions, no backbone."""
    code = main(
        [
            "run",
            "methods=[optprior]",
            "datasets=[synthetic2d]",
            "seeds=[0]",
            "experiment=claims_prior",
            f"results_dir={tmp_path}",
            "optprior.steps=20",
            "optprior.risk_samples=50",
            "optprior.risk_partitions=3",
            "optprior.kappa_sweep=()",
        ]
    )
    assert code == 0
    cell = tmp_path / "claims_prior" / "synthetic2d" / "optprior" / "seed0"
    rec = json.loads((cell / "record.json").read_text())
    assert rec["stop_after"] == "prior" and rec["n"]["synthetic"] == 0
    assert rec["stage_versions"] == {"prior": 2, "train": 1}
    assert "geom_alignment/prior_init" in rec["metrics"] and "bayes_risk/standard/reduction" in rec["metrics"]
    assert not any(k.startswith("swd") for k in rec["metrics"]) and not (cell / "backbone").exists()
    assert (cell / "prior").is_dir()


def test_stop_after_takes_only_prior(capsys):
    assert main(["validate", "methods=[fm]", "datasets=[synthetic2d]", "pipeline.stop_after='train'"]) == 2
    assert "pipeline.stop_after='train'" in capsys.readouterr().err


def test_a_part_that_has_not_run_yet_lists_its_cells_as_missing_and_an_empty_folder_is_refused(tmp_path):
    write_part(tmp_path, "prior", [record("toy", "optprior", 0, {"geom_x": 1.0})])
    pending, grid = tmp_path / "flows", GridFile("flows")
    grid.add("toy", "fm", 0, "flows-toy-fm-0", metrics={})
    pending.mkdir()
    (pending / "grid.json").write_text(json.dumps(grid.to_json()))
    exp = load_claims(tmp_path)
    assert exp.parts == ["flows", "prior"] and len(exp.records()) == 1
    assert [c.label for c in exp.problems()] == ["toy/fm/seed0"]
    (tmp_path / "prior/toy/optprior/seed0/record.json").unlink()
    with pytest.raises(BenchError, match="no cell has a usable record"):
        load_claims(tmp_path)


def test_a_fresh_out_takes_the_analysis_of_the_document_generated_from_the_same_records(
    tmp_path, monkeypatch
):
    from bench.paper.claims import write_claims

    monkeypatch.chdir(tmp_path)
    write_part(tmp_path / "res", "prior", [record("toy", "optprior", 0, {"geom_x": 1.0})])
    (tmp_path / "docs").mkdir()
    write_claims(Path("res"), Path("docs/claims.md"))
    block = "<!-- analysis -->\nFrom the tables: nothing yet.\n<!-- /analysis -->"
    document = Path("docs/claims.md")
    document.write_text(document.read_text().replace("<!-- analysis -->\n<!-- /analysis -->", block))
    fresh, _ = write_claims(Path("res"), tmp_path / "elsewhere" / "b.md")
    a, b = document.read_text().splitlines(), fresh.read_text().splitlines()
    assert "\n".join(b).count(block) == 1
    assert [x for x, y in zip(a, b) if x != y] == [a[2]] and a[2].startswith(
        "Generated on "
    )  # only the date line
    write_part(tmp_path / "other", "prior", [record("toy", "optprior", 0, {"geom_x": 1.0})])
    unrelated, _ = write_claims(Path("other"), tmp_path / "c.md")  # docs/claims.md is not its document
    assert block not in unrelated.read_text()
