"""The summary table: mean +- std over seeds, per dataset, direction arrows."""

import statistics

from bench.report.summary import reading_notes, summary_table


def rec(dataset, method, seed, **metrics):
    return {
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "metrics": metrics,
        "higher_is_better": {"swd/all": False, "acc": True},
        "train": {"seconds": 1.0},
    }


def test_seeds_are_averaged_and_datasets_get_their_own_table():
    records = [
        rec("a", "fm", 0, **{"swd/all": 1.0}),
        rec("a", "fm", 1, **{"swd/all": 2.0}),
        rec("a", "fm", 2, **{"swd/all": 4.0}),
        rec("b", "fm", 0, acc=0.5),
    ]
    text = summary_table(records)
    std = statistics.stdev([1.0, 2.0, 4.0])
    assert f"2.333 ± {std:.2g}" in text
    assert "### a" in text and "### b" in text
    table_a, table_b = text.split("### b")
    assert "swd/all ↓" in table_a and "acc" not in table_a
    assert "acc ↑" in table_b and "swd/all" not in table_b


def test_many_metrics_are_transposed_to_one_row_per_metric():
    from bench.report.summary import summary_table

    recs = [
        {
            "method": m,
            "dataset": "d",
            "seed": s,
            "metrics": {f"m{i}": i + s for i in range(12)},
            "higher_is_better": {"m1": True},
            "train": {"seconds": 1.0},
        }
        for m in ("fm", "optprior")
        for s in (0, 1)
    ]
    lines = summary_table(recs).splitlines()
    assert lines[2].split("|")[1:4] == [" metric   ", " fm          ", " optprior    "]
    row = next(ln for ln in lines if ln.startswith("| m1 ↑"))
    assert "1.5 ± 0.71" in row  # mean and sample std over the two seeds (1 and 2)
    assert summary_table(recs, max_columns=20).splitlines()[2].startswith("| method")


def _records():
    """fm and optprior x 3 seeds with source-only and untrained metrics; optprior seeds 0, 2 not converged."""
    out = []
    for m in ("fm", "optprior"):
        for s in range(3):
            metrics = {
                "fid/tail": 50.0 - s,
                "fid/tail@source": 120.0 + s,
                "fid/tail@init": 300.0,
                "n/fid": 150.0,
                "n/irs": 150.0,
                "swd/tail": 0.5 + s,
            }
            train = {"seconds": 1.0, "steps": 100}
            if m == "optprior":
                change = {0: 0.05, 1: 0.001, 2: 0.02}[s]
                train |= {
                    "converged": change < 0.01,
                    "convergence": {"rel_change": change, "threshold": 0.01, "window": 20},
                }
            out.append(
                {
                    "dataset": "d",
                    "method": m,
                    "seed": s,
                    "metrics": metrics,
                    "train": train,
                    "higher_is_better": {"fid/tail": False, "fid/tail@source": False, "swd/tail": False},
                }
            )
    return out


def test_source_only_and_untrained_lines_sit_under_their_method_in_the_plain_metric_column():
    from bench.report.summary import summary_rows

    header, rows = summary_rows(_records())
    assert header == ["method", "seeds", "fid/tail ↓", "n/fid = n/irs", "swd/tail ↓", "train s"]
    assert [r[0] for r in rows] == [
        "fm",
        "fm (source only)",
        "fm (untrained)",
        "optprior ‡",
        "optprior (source only)",
        "optprior (untrained)",
    ]
    source = rows[1]
    assert source[2] == f"121 ± {statistics.stdev([120.0, 121.0, 122.0]):.2g}" and source[3:] == ["", "", ""]
    assert rows[2][2] == "300 ± 0"
    assert not any("@" in h for h in header)


def test_cells_whose_training_did_not_converge_get_a_note():
    text = summary_table(_records())
    assert "| optprior ‡" in text
    assert (
        "‡ optprior: training did not converge for seed0, seed2 (smoothed loss changed by 5%, 2% over the "
        "last 20% of steps (20 of 100), threshold 1%)"
    ) in text
    assert "fm:" not in text  # records without convergence fields are not listed


def _image_records(gain_cpd=-0.02, n_fid=150.0, seeds=(0,)):
    """fm, cpd and optprior on one image dataset, with references and diagnostics too."""
    out = []
    for m, fid, source in (("fm", 58.6, 5256.0), ("cpd", 31.0, 12.0), ("optprior", 10.8, 13.1)):
        for s in seeds:
            metrics = {
                "fid/tail": fid + s,
                "fid/tail@source": source,
                "fid/pooled": fid / 2,
                "n/fid": n_fid,
                "bacc": 0.6 + (gain_cpd if m == "cpd" else 0.01),
                "bacc/no_aug": 0.6,
                "bacc_gain": gain_cpd if m == "cpd" else 0.01,
                "memo_copy_share_expected": 0.05,
                "geom_alignment": 0.4,
                "fid/class/3": 70.0,
            }
            out.append(
                {
                    "dataset": "phantom_lt",
                    "method": m,
                    "seed": s,
                    "metrics": metrics,
                    "train": {"seconds": 2.0},
                    "higher_is_better": {
                        "fid/tail": False,
                        "fid/pooled": False,
                        "bacc": True,
                        "bacc_gain": True,
                    },
                }
            )
    return out


def test_the_headline_summary_has_methods_as_rows_and_only_comparison_metrics():
    text = summary_table(_image_records())
    header = next(line for line in text.splitlines() if line.startswith("| method"))
    assert [h.strip() for h in header.strip("|").split("|")] == [
        "method",
        "seeds",
        "fid/tail ↓",
        "fid/pooled ↓",
        "bacc ↑",
        "bacc_gain ↑",
        "train s",
    ]
    rows = [
        line.split("|")[1].strip()
        for line in text.splitlines()
        if line.startswith("| ") and "---" not in line
    ]
    assert rows[1:] == [
        "fm",
        "fm (source only)",
        "cpd",
        "cpd (source only)",
        "optprior",
        "optprior (source only)",
    ]
    for hidden in ("memo_copy_share_expected", "geom_alignment", "class/3", "n/fid"):
        assert hidden not in header
    full = summary_table(_image_records(), full=True)
    assert "memo_copy_share_expected" in full and "geom_alignment" in full


def test_surprising_numbers_get_one_line_each():
    notes = reading_notes(_image_records())
    assert len(notes) == 4
    assert notes[0].startswith("One generative seed per method")
    assert notes[1].startswith("fid on 150 images per set (n/fid)")
    assert notes[2] == (
        "bacc_gain < 0 for cpd (-0.02): adding its synthetic images lowered balanced accuracy "
        "below the classifiers trained without them (bacc/no_aug 0.6)."
    )
    assert notes[3].startswith(
        "cpd: its source alone scores better than after the flow on fid/tail (12 vs 31)"
    )
    # optprior's source (13.1) is worse than its flow (10.8), fm's far worse: no line for them
    assert not any(n.startswith(("optprior:", "fm:")) for n in notes)
    assert all("\n" not in n for n in notes)
    quiet = reading_notes(_image_records(gain_cpd=0.01, n_fid=5000.0, seeds=(0, 1, 2)))
    assert quiet == [quiet[0]] and quiet[0].startswith("cpd: its source alone")


def test_the_best_remedy_and_the_methods_above_it_get_one_line():
    shared = {"bacc/no_aug": 0.60, "bacc/reweight": 0.64, "bacc/crt": 0.70, "bacc/aug+reweight": 0.75}
    records = [
        rec("phantom_lt", "fm", 0, bacc=0.62, **shared),
        rec("phantom_lt", "optprior", 0, bacc=0.72, **shared),
    ]
    notes = [n for n in reading_notes(records) if n.startswith("best long-tail remedy")]
    assert notes == [
        "best long-tail remedy without synthetic images: crt (bacc 0.7); methods above it: optprior "
        "(every remedy and method + remedy: `bench tables`, downstream table)."
    ]
    records[1]["metrics"]["bacc"] = 0.69
    assert "no method's synthetic images beat it" in [n for n in reading_notes(records) if "remedy" in n][0]
