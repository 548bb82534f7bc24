"""Paper tables from stored records: values, best marks, significance, missing cells, formats."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from bench.cli import main
from bench.collect import load_experiment
from bench.render import combined, latex_document, render
from bench.table import MISSING, NOT_APPLICABLE
from bench.tables import TableOptions, build_tables
from records_fixture import bacc_runs, fid_value, make_experiment, no_aug_runs

GOLDEN = Path(__file__).parent / "golden"
METHODS = ("fm", "optprior_sub", "optprior")


def tables_by_name(folder, **options):
    return {t.name: t for t in build_tables(load_experiment(folder), TableOptions(**options))}


def row(table, label):
    return next(entries for labels, entries in table.rows if labels[0] == label)


def broken_experiment(tmp_path):
    """Two datasets; one seed deleted, one cell refused, one (dataset, method) never run."""
    folder = make_experiment(tmp_path, datasets=("phantom_lt", "nih_lt"), methods=METHODS)
    (folder / "phantom_lt/optprior/seed2/record.json").unlink()
    path = folder / "phantom_lt/fm/seed1/record.json"
    rec = json.loads(path.read_text())
    rec["config_hash"] = "stale"
    path.write_text(json.dumps(rec))
    shutil.rmtree(folder / "nih_lt/optprior_sub")
    return folder


@pytest.mark.parametrize("fmt", ["md", "latex", "csv"])
def test_golden_files(tmp_path, fmt):
    """The rendered tables of a fixed fixture, byte for byte (BENCH_UPDATE_GOLDEN=1 rewrites them)."""
    tables = build_tables(load_experiment(broken_experiment(tmp_path)))
    text = combined(tables, fmt, "bench experiment exp")
    golden = GOLDEN / f"tables.{ {'md': 'md', 'latex': 'tex', 'csv': 'csv'}[fmt] }"
    if os.environ.get("BENCH_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_downstream_entries_are_means_over_generative_and_classifier_seeds(tmp_path):
    t = tables_by_name(make_experiment(tmp_path, methods=METHODS))["downstream"]
    runs = [v for s in range(3) for v in bacc_runs("optprior", s)]
    bacc = row(t, "optprior")[0]
    assert len(bacc.values) == 9
    assert bacc.mean == pytest.approx(np.mean(runs)) and bacc.std == pytest.approx(np.std(runs, ddof=1))
    no_aug = row(t, "no augmentation")[0]
    assert no_aug.mean == pytest.approx(np.mean([v for s in range(3) for v in no_aug_runs(s)]))
    assert bacc.best and not row(t, "fm")[0].best  # higher is better


def test_lower_is_better_columns_bold_the_smallest_and_state_n(tmp_path):
    t = tables_by_name(make_experiment(tmp_path, methods=METHODS))["generative"]
    fid_col = [j for j, c in enumerate(t.columns) if c.title == "FID tail"][0]
    assert t.columns[fid_col].higher_is_better is False and t.columns[fid_col].subtitle == "n = 150"
    best = [labels[0] for labels, entries in t.rows if entries[fid_col].best]
    assert best == ["optprior"]
    assert row(t, "fm")[fid_col].mean == pytest.approx(np.mean([fid_value("fm", s) for s in range(3)]))


def test_significance_marks_agree_with_scipy(tmp_path):
    folder = make_experiment(tmp_path, methods=("fm", "cbfm", "optprior"))
    rng = np.random.default_rng(7)
    shift = {"fm": 0.0, "cbfm": 0.002, "optprior": 0.05}
    for path in sorted(folder.glob("*/*/seed*/record.json")):
        rec = json.loads(path.read_text())
        d = rec["details"]["downstream"]
        d["bacc/no_aug"] = (0.5 + rng.normal(0, 0.01, 3)).tolist()
        d["bacc"] = (np.array(d["bacc/no_aug"]) + shift[rec["method"]] + rng.normal(0, 0.01, 3)).tolist()
        path.write_text(json.dumps(rec))
    t = tables_by_name(folder)["downstream"]

    def runs(method, key):
        return np.array([v for s in range(3) for v in json.loads(
            (folder / f"phantom_lt/{method}/seed{s}/record.json").read_text())["details"]["downstream"][key]])

    for method in ("fm", "cbfm", "optprior"):
        marks = row(t, method)[0].marks
        p_no_aug = stats.wilcoxon(runs(method, "bacc"), runs(method, "bacc/no_aug")).pvalue
        assert ("*" in marks) == (p_no_aug < 0.05), (method, p_no_aug)
        if method != "fm":
            p_fm = stats.wilcoxon(runs(method, "bacc"), runs("fm", "bacc")).pvalue
            assert ("†" in marks) == (p_fm < 0.05), (method, p_fm)
    assert "†" in row(t, "optprior")[0].marks and "†" not in row(t, "cbfm")[0].marks
    assert any("Wilcoxon" in n for n in t.notes)


def test_missing_cells_are_dashes_with_notes_and_partial_means_are_marked(tmp_path):
    tables = tables_by_name(broken_experiment(tmp_path))
    t = tables["downstream"]
    nih = [j for j, c in enumerate(t.columns) if c.group == "nih_lt"]
    assert all(row(t, "optprior_sub")[j].state == MISSING for j in nih)
    partial = row(t, "optprior")[0]
    assert "§" in partial.marks and len(partial.values) == 6
    assert partial.mean == pytest.approx(np.mean([v for s in (0, 1) for v in bacc_runs("optprior", s)]))
    notes = "\n".join(t.notes)
    assert "nih_lt/optprior_sub: seed0, seed1, seed2: no record" in notes
    assert "phantom_lt/optprior: mean over 2 of 3 seeds; seed2: no record" in notes
    assert "phantom_lt/fm: mean over 2 of 3 seeds; seed1: record has config stale" in notes
    md = render(t, "md")
    assert "| –" in md and "nih_lt/optprior_sub" in md


def test_tables_appear_only_when_the_records_hold_their_metrics(tmp_path):
    tables = tables_by_name(make_experiment(tmp_path, methods=("fm",)))
    assert "ablation" not in tables and "confounder" not in tables
    assert {"datasets", "generative", "downstream", "geometry", "all_phantom_lt"} <= set(tables)
    ablation = tables_by_name(make_experiment(tmp_path / "b", methods=METHODS))["ablation"]
    assert [labels for labels, _ in ablation.rows] == [["fm", "", ""], ["optprior_sub", "✓", ""],
                                                       ["optprior", "✓", "✓"]]
    assert row(ablation, "fm")[1].state == NOT_APPLICABLE  # fm has no subclasses to score


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed on this machine")
def test_latex_document_compiles_with_pdflatex(tmp_path):
    tables = build_tables(load_experiment(broken_experiment(tmp_path)))
    (tmp_path / "tables.tex").write_text(latex_document(tables, "bench experiment exp"))
    out = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "tables.tex"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:]
    assert (tmp_path / "tables.pdf").stat().st_size > 1000


def test_cli_writes_files_and_prints_markdown(tmp_path, capsys):
    folder = make_experiment(tmp_path, methods=METHODS)
    assert main(["tables", str(folder), "--format", "latex", "--out", str(tmp_path / "T")]) == 0
    written = sorted(p.name for p in (tmp_path / "T").iterdir())
    assert "tables.tex" in written and "downstream.tex" in written and "ablation.tex" in written
    assert (tmp_path / "T" / "tables.tex").read_text().startswith(r"\documentclass{article}")
    capsys.readouterr()
    assert main(["tables", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "### Downstream classification" in out and "| no augmentation" in out


def test_cli_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    assert main(["tables", str(tmp_path / "missing"), "--out", str(tmp_path / "T")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such results folder" in err
    folder = make_experiment(tmp_path, methods=("fm",))
    assert main(["tables", str(folder), "--alpha", "2", "--out", str(tmp_path / "T")]) == 2
    assert "--alpha must be between 0 and 1" in capsys.readouterr().err
    assert not (tmp_path / "T").exists()


def test_a_dataset_whose_every_record_is_gone_keeps_its_columns_with_dashes(tmp_path):
    """grid.json names the metrics the dataset's evaluators return, so its columns survive."""
    folder = make_experiment(tmp_path, datasets=("synthetic2d", "phantom_lt"), methods=("fm",), seeds=(0,))
    (folder / "phantom_lt/fm/seed0/record.json").unlink()
    tables = tables_by_name(folder)
    gen = tables["generative"]
    cols = [c for c in gen.columns if c.group == "phantom_lt"]
    assert [c.title for c in cols] == ["FID tail", "IRS tail"] and cols[0].higher_is_better is False
    assert all(e.state == MISSING for e, c in zip(row(gen, "fm"), gen.columns) if c.group == "phantom_lt")
    assert "– phantom_lt/fm: seed0: no record: the cell has not run (or was deleted)" in gen.notes
    down = tables["downstream"]
    assert [e.state for e, c in zip(row(down, "no augmentation"), down.columns) if c.group == "phantom_lt"] \
        == [MISSING, MISSING]
