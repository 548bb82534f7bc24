"""Paper tables from stored records: values, best marks, significance, missing cells, formats."""

import itertools
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from records_fixture import bacc_runs, fid_value, make_experiment, no_aug_runs
from scipy import stats

from bench.cli import main
from bench.paper.paper_tables import paper_options, paper_tables
from bench.report.collect import load_experiment
from bench.report.render import combined, csv_rows, latex_document, render
from bench.report.tables import downstream_table
from bench.report.tabular import MISSING, NOT_APPLICABLE

GOLDEN = Path(__file__).parent / "golden"
METHODS = ("fm", "optprior_sub", "optprior")


def tables_by_name(folder, **options):
    return {t.name: t for t in paper_tables(load_experiment(folder), paper_options(**options))}


def row(table, label):
    return next(entries for labels, entries in table.rows if labels[0] == label)


def edit_records(folder, change):
    """Apply change(record) to every record.json of an experiment folder."""
    for path in sorted(Path(folder).glob("*/*/seed*/record.json")):
        rec = json.loads(path.read_text())
        change(rec)
        path.write_text(json.dumps(rec))


def column(table, title, group="phantom_lt"):
    return next(j for j, c in enumerate(table.columns) if c.title == title and c.group == group)


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
    tables = paper_tables(load_experiment(broken_experiment(tmp_path)))
    text = combined(tables, fmt, "bench experiment exp")
    golden = GOLDEN / f"tables.{ {'md': 'md', 'latex': 'tex', 'csv': 'csv'}[fmt] }"
    if os.environ.get("BENCH_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_the_golden_tables_hold_the_hand_computed_fid_of_every_usable_cell():
    """The golden files are rewritten from the code's own output; this pins what they must say
    about FID, from the fixture's formula alone: the mean and sample SD over the usable seeds
    (broken_experiment: phantom_lt fm seed 1 refused, optprior seed 2 deleted, nih_lt
    optprior_sub never run)."""
    import pandas as pd

    usable = {
        ("phantom_lt", "fm"): [0, 2],
        ("phantom_lt", "optprior"): [0, 1],
        ("phantom_lt", "optprior_sub"): [0, 1, 2],
        ("nih_lt", "fm"): [0, 1, 2],
        ("nih_lt", "optprior"): [0, 1, 2],
    }
    golden = pd.read_csv(GOLDEN / "tables.csv")
    fid = golden[(golden["table"] == "generative") & (golden["column"] == "FID tail")]
    for (dataset, method), seeds in usable.items():
        entry = fid[(fid["row"] == method) & (fid["group"] == dataset)].iloc[0]
        values = [fid_value(method, s) for s in seeds]
        assert entry["n_runs"] == len(seeds)
        assert entry["mean"] == pytest.approx(np.mean(values)) and entry["std"] == pytest.approx(
            np.std(values, ddof=1)
        )
    missing = fid[(fid["row"] == "optprior_sub") & (fid["group"] == "nih_lt")].iloc[0]
    assert missing["state"] == "missing" and missing["n_runs"] == 0
    tex = (GOLDEN / "tables.tex").read_text()
    assert r"\mathcal{N}(0, I)" in tex and "textasciicircum" not in tex


def test_downstream_entries_are_means_over_generative_seeds_of_classifier_means(tmp_path):
    t = tables_by_name(make_experiment(tmp_path, methods=METHODS))["downstream"]
    per_seed = [np.mean(bacc_runs("optprior", s)) for s in range(3)]
    bacc = row(t, "optprior")[0]
    assert len(bacc.values) == 3 and bacc.values == pytest.approx(per_seed)
    assert bacc.mean == pytest.approx(np.mean(per_seed)) and bacc.std == pytest.approx(
        np.std(per_seed, ddof=1)
    )
    no_aug = row(t, "no augmentation")[0]
    assert no_aug.mean == pytest.approx(np.mean([np.mean(no_aug_runs(s)) for s in range(3)]))
    assert bacc.best and not row(t, "fm")[0].best  # higher is better
    assert "over n = 3 generative seeds (downstream: classifier seeds averaged within each" in t.caption
    n_runs = {r[1]: r[6] for r in csv_rows(t) if r[3] == "bAcc"}
    assert n_runs == {"no augmentation": 3, "fm": 3, "optprior_sub": 3, "optprior": 3}


def test_lower_is_better_columns_bold_the_smallest_and_state_n(tmp_path):
    t = tables_by_name(make_experiment(tmp_path, methods=METHODS))["generative"]
    fid_col = [j for j, c in enumerate(t.columns) if c.title == "FID tail"][0]
    assert t.columns[fid_col].higher_is_better is False and t.columns[fid_col].subtitle == "n = 150"
    best = [labels[0] for labels, entries in t.rows if entries[fid_col].best]
    assert best == ["optprior"]
    assert row(t, "fm")[fid_col].mean == pytest.approx(np.mean([fid_value("fm", s) for s in range(3)]))


def noisy_downstream(folder, shift, seed=7, n_classifiers=3):
    """Per-classifier bAcc: no augmentation 0.5 + noise, each method shifted by shift[method] + noise."""
    rng = np.random.default_rng(seed)

    def change(rec):
        d = rec["details"]["downstream"]
        d["bacc/no_aug"] = (0.5 + rng.normal(0, 0.01, n_classifiers)).tolist()
        d["bacc"] = (
            np.array(d["bacc/no_aug"]) + shift[rec["method"]] + rng.normal(0, 0.01, n_classifiers)
        ).tolist()

    edit_records(folder, change)


def seed_level(folder, method, key, seeds):
    """Per-generative-seed means of a record's per-classifier list, read back independently."""
    return np.array(
        [
            np.mean(
                json.loads((folder / f"phantom_lt/{method}/seed{s}/record.json").read_text())["details"][
                    "downstream"
                ][key]
            )
            for s in seeds
        ]
    )


def t_test_p(d):
    """Two-sided one-sample t-test of mean 0, by hand (t statistic, t(n - 1) tail)."""
    d = np.asarray(d, dtype=float)
    t_stat = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
    return 2 * stats.t.sf(abs(t_stat), df=len(d) - 1)


def brute_force_p(d):
    flips = np.array(list(itertools.product([1, -1], repeat=len(d))))
    return np.mean(np.abs(flips @ d) >= abs(d.sum()) - 1e-12)


@pytest.mark.parametrize("test", ["permutation", "ttest"])
def test_significance_marks_follow_seed_level_tests(tmp_path, test):
    seeds = range(8)
    folder = make_experiment(tmp_path, methods=("fm", "cbfm", "optprior"), seeds=seeds)
    noisy_downstream(folder, {"fm": 0.0, "cbfm": 0.002, "optprior": 0.05})
    t = tables_by_name(folder, test=test)["downstream"]
    for method in ("fm", "cbfm", "optprior"):
        marks = row(t, method)[0].marks
        d = seed_level(folder, method, "bacc", seeds) - seed_level(folder, method, "bacc/no_aug", seeds)
        p = brute_force_p(d) if test == "permutation" else t_test_p(d)
        assert ("*" in marks) == (p < 0.05), (method, p)
        if method != "fm":
            d = seed_level(folder, method, "bacc", seeds) - seed_level(folder, "fm", "bacc", seeds)
            p = brute_force_p(d) if test == "permutation" else t_test_p(d)
            assert ("†" in marks) == (p < 0.05), (method, p)
    assert "*" in row(t, "optprior")[0].marks and "†" in row(t, "optprior")[0].marks
    assert any("n = 8 seeds" in n for n in t.notes)
    sig = tables_by_name(folder, test=test)["significance"]
    line = next(
        entries for labels, entries in sig.rows if labels[2:] == ["bAcc", "optprior", "no augmentation"]
    )
    assert line[0].text == "8" and len(line[1].text.split(", ")) == 8


def test_three_generative_seeds_get_no_mark_however_many_classifier_seeds(tmp_path):
    """The acceptance check: 3 seeds x 50 classifiers, huge consistent within-seed differences, mixed signs."""
    folder = make_experiment(tmp_path, methods=("fm", "optprior"))
    shift = {0: 0.3, 1: -0.2, 2: 0.4}
    rng = np.random.default_rng(0)

    def change(rec):
        d = rec["details"]["downstream"]
        d["bacc/no_aug"] = (0.5 + rng.normal(0, 1e-4, 50)).tolist()
        sign = 1 if rec["method"] == "optprior" else -1
        d["bacc"] = (
            np.array(d["bacc/no_aug"]) + sign * shift[rec["seed"]] + rng.normal(0, 1e-4, 50)
        ).tolist()

    edit_records(folder, change)
    for test in ("permutation", "ttest", "wilcoxon"):
        tables = tables_by_name(folder, test=test)
        t = tables["downstream"]
        assert not any(m in e.marks for _, entries in t.rows for e in entries for m in "*†"), test
    t = tables_by_name(folder)["downstream"]
    note = next(n for n in t.notes if n.startswith("* differs"))
    assert "n = 3 seeds" in note and "smallest attainable p is 2/2^3 = 0.25" in note
    assert "no mark can appear" in note and "at least 6 seeds" in note
    assert len(row(t, "optprior")[0].values) == 3
    assert "p ≥ 0.004" not in note and "nine" not in note


def test_eight_generative_seeds_with_large_positive_differences_get_a_mark(tmp_path):
    folder = make_experiment(tmp_path, methods=("fm", "optprior"), seeds=range(8))
    noisy_downstream(folder, {"fm": 0.1, "optprior": 0.2}, n_classifiers=2)
    t = tables_by_name(folder)["downstream"]
    assert (
        "*" in row(t, "fm")[0].marks
        and "*" in row(t, "optprior")[0].marks
        and "†" in row(t, "optprior")[0].marks
    )
    note = next(n for n in t.notes if n.startswith("* differs"))
    assert "2/2^8 = 0.00781" in note and "no mark can appear" not in note


def test_missing_cells_are_dashes_with_notes_and_partial_means_are_marked(tmp_path):
    tables = tables_by_name(broken_experiment(tmp_path))
    t = tables["downstream"]
    nih = [j for j, c in enumerate(t.columns) if c.group == "nih_lt"]
    assert all(row(t, "optprior_sub")[j].state == MISSING for j in nih)
    partial = row(t, "optprior")[0]
    assert "§" in partial.marks and len(partial.values) == 2
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
    assert [labels for labels, _ in ablation.rows] == [
        ["fm", "", ""],
        ["optprior_sub", "✓", ""],
        ["optprior", "✓", "✓"],
    ]
    assert row(ablation, "fm")[1].state == NOT_APPLICABLE  # fm has no subclasses to score


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed on this machine")
def test_latex_document_compiles_with_pdflatex(tmp_path):
    tables = paper_tables(load_experiment(broken_experiment(tmp_path)))
    (tmp_path / "tables.tex").write_text(latex_document(tables, "bench experiment exp"))
    out = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "tables.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
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
    assert [
        e.state for e, c in zip(row(down, "no augmentation"), down.columns) if c.group == "phantom_lt"
    ] == [MISSING, MISSING]


def add_source_metrics(rec):
    """@source (and @init) metrics: the source-only FID of optprior better than any trained row."""
    source_fid = 1.0 if rec["method"] == "optprior" else 120.0 + rec["seed"]
    rec["metrics"] |= {"fid/tail@source": source_fid, "irs_inf/tail@source": 0.01, "fid/tail@init": 300.0}
    rec["higher_is_better"] |= {"fid/tail@source": False, "irs_inf/tail@source": True, "fid/tail@init": False}


def test_source_only_lines_sit_under_their_method_unmarked_and_never_bold(tmp_path):
    folder = make_experiment(tmp_path, methods=("fm", "optprior"), seeds=range(8))
    edit_records(folder, add_source_metrics)
    tables = tables_by_name(folder)
    gen = tables["generative"]
    assert [labels[0] for labels, _ in gen.rows] == [
        "fm",
        "fm (source only)",
        "optprior",
        "optprior (source only)",
    ]
    fid = column(gen, "FID tail")
    source = row(gen, "optprior (source only)")[fid]
    assert source.mean == 1.0 and not source.best and source.marks == "" and not source.ranked
    assert row(gen, "fm (source only)")[fid].mean == pytest.approx(np.mean([120.0 + s for s in range(8)]))
    assert row(gen, "optprior")[fid].best and "†" in row(gen, "optprior")[fid].marks  # 8 seeds, all better
    assert not any(r[3] == "optprior (source only)" for r in _significance_rows(tables))
    all_rows = [labels[0] for labels, _ in tables["all_phantom_lt"].rows]
    i = all_rows.index("fid/tail ↓")
    assert all_rows[i + 1 : i + 3] == ["fid/tail ↓ (source only)", "fid/tail ↓ (untrained)"]
    assert not any(e.best for e in row(tables["all_phantom_lt"], "fid/tail ↓ (source only)"))
    assert "| optprior (source only) |" in render(gen, "md").replace("  ", " ").replace("  ", " ")


def _significance_rows(tables):
    return [labels for labels, _ in tables["significance"].rows]


def not_converged(rec):
    """optprior seeds 0 and 2 did not converge; fm seed 1 is an old record without the fields."""
    if rec["method"] == "optprior":
        change = {0: 0.041, 1: 0.002, 2: 0.03}[rec["seed"]]
        rec["train"] = {
            "seconds": 1.0,
            "steps": 100,
            "converged": change < 0.01,
            "convergence": {"rel_change": change, "threshold": 0.01, "window": 20},
        }
    elif rec["seed"] != 1:
        rec["train"] = {
            "converged": True,
            "convergence": {"rel_change": 0.001, "threshold": 0.01, "window": 20},
        }
    add_source_metrics(rec)


def test_entries_of_cells_whose_training_did_not_converge_are_marked_with_a_note(tmp_path):
    folder = make_experiment(tmp_path, methods=("fm", "optprior"))
    edit_records(folder, not_converged)
    tables = tables_by_name(folder)
    note = (
        "‡ phantom_lt/optprior: training did not converge for seed0, seed2 (smoothed loss changed by "
        "4.1%, 3% over the last 20% of steps (20 of 100), threshold 1%)"
    )
    for name in ("generative", "downstream", "all_phantom_lt"):
        t = tables[name]
        assert note in t.notes, name
        marked = {e.marks for labels, entries in t.rows for e in entries if "‡" in e.marks}
        assert marked, name
    gen = tables["generative"]
    assert all("‡" in e.marks for e in row(gen, "optprior")) and not any(
        "‡" in e.marks for e in row(gen, "fm")
    )
    assert not any("‡" in e.marks for e in row(gen, "optprior (source only)"))  # no flow, no training
    assert all("‡" in e.marks for e in row(tables["downstream"], "optprior"))
    assert not any("‡" in e.marks for _, entries in tables["geometry"].rows for e in entries)
    assert r"$^{\ddagger}$" in render(gen, "latex") and "‡" in render(gen, "md")


def bayes_risk(rec):
    """optprior records a Bayes risk per source; seed 1's learned-source estimate is unreliable."""
    if rec["method"] != "optprior":
        return
    for source, reduction in (("standard", 0.2), ("learned", 0.3)):
        bad = source == "learned" and rec["seed"] == 1
        values = {
            "risk_class": 1.0,
            "risk_subclass": 1.0 - reduction,
            "reduction": reduction,
            "ess": 1.25 if bad else 40.0,
            "identity_gap": 0.35 if bad else 0.001,
            "reliable": 0.0 if bad else 1.0,
        }
        rec["metrics"] |= {f"bayes_risk/{source}/{k}": v for k, v in values.items()}
        rec["higher_is_better"] |= {
            f"bayes_risk/{source}/{k}": k in ("reduction", "ess", "reliable") for k in values
        }


def test_bayes_risk_reduction_column_marks_unreliable_estimates(tmp_path):
    folder = make_experiment(tmp_path, methods=("fm", "optprior"))
    edit_records(folder, bayes_risk)
    tables = tables_by_name(folder)
    geo = tables["geometry"]
    j = column(geo, "Bayes-risk reduction")
    assert geo.columns[j].higher_is_better is True
    assert [labels[0] for labels, _ in geo.rows] == ["N(0, I)", "fm", "optprior"]
    gauss, fm, opt = row(geo, "N(0, I)")[j], row(geo, "fm")[j], row(geo, "optprior")[j]
    assert gauss.mean == pytest.approx(0.2) and "?" not in gauss.marks
    assert fm.state == NOT_APPLICABLE and opt.mean == pytest.approx(0.3) and "?" in opt.marks
    assert (
        "? phantom_lt/optprior, learned source: unreliable Monte-Carlo estimate for seed1 (effective "
        "posterior size 1.25, identity gap 0.35)"
    ) in geo.notes
    everything = tables["all_phantom_lt"]
    assert "?" in row(everything, "bayes_risk/learned/reduction ↑")[1].marks
    assert "?" in row(everything, "bayes_risk/learned/risk_class ↓")[1].marks
    assert "?" not in row(everything, "bayes_risk/learned/ess ↑")[1].marks
    assert "?" not in row(everything, "bayes_risk/standard/reduction ↑")[1].marks


def test_cli_offers_the_seed_level_tests(tmp_path, capsys):
    folder = make_experiment(tmp_path, methods=METHODS)
    for test, name in (
        ("permutation", "sign-flip permutation test"),
        ("ttest", "paired t-test"),
        ("wilcoxon", "Wilcoxon signed-rank test"),
    ):
        assert main(["tables", str(folder), "--test", test]) == 0
        assert name in capsys.readouterr().out
    assert main(["tables", str(folder)]) == 0
    assert "sign-flip permutation test" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["tables", str(folder), "--test", "bootstrap"])
    assert exc.value.code == 2


def add_remedy_runs(folder):
    """Shared remedy runs (the same in every method's record of a seed) and reweight on top of augmentation."""

    def change(rec):
        s, d = rec["seed"], rec["details"]["downstream"]
        for name, base in (("reweight", 0.52), ("crt", 0.56)):
            d[f"bacc/{name}"] = [base + 0.01 * s + 0.001 * i for i in range(3)]
            rec["metrics"][f"bacc/{name}"] = float(np.mean(d[f"bacc/{name}"]))
        d["bacc/aug+reweight"] = [b + 0.03 for b in d["bacc"]]
        rec["metrics"]["bacc/aug+reweight"] = float(np.mean(d["bacc/aug+reweight"]))

    edit_records(folder, change)


def test_remedies_form_a_block_above_the_methods_and_combinations_follow_each_method(tmp_path):
    folder = make_experiment(tmp_path, methods=("fm", "optprior"))
    add_remedy_runs(folder)
    log = []
    t = downstream_table(load_experiment(folder), paper_options(), log)
    assert [labels[0] for labels, _ in t.rows] == [
        "no augmentation",
        "crt (real data only)",
        "reweight (real data only)",
        "fm",
        "fm + reweight",
        "optprior",
        "optprior + reweight",
    ]
    crt = row(t, "crt (real data only)")[0]
    assert crt.mean == pytest.approx(
        np.mean([np.mean([0.56 + 0.01 * s + 0.001 * i for i in range(3)]) for s in range(3)])
    )
    combined = row(t, "optprior + reweight")[0]
    assert combined.mean == pytest.approx(
        np.mean([np.mean(bacc_runs("optprior", s)) + 0.03 for s in range(3)])
    )
    assert row(tables_by_name(folder)["downstream"], "optprior + reweight")[
        0
    ].best  # the table's highest bAcc
    # every row is tested against no augmentation; only the methods' own rows against fm
    against = {(where[2], ref) for name, *where, ref, _ in log if name == "downstream" and where[1] == "bAcc"}
    assert ("crt (real data only)", "no augmentation") in against
    assert ("optprior + reweight", "no augmentation") in against
    assert {w for w, ref in against if ref == "fm"} == {"optprior"}
    assert "long-tail remedy on real data alone" in t.caption
