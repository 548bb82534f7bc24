"""The summary table: mean +- std over seeds, per dataset, direction arrows."""

import statistics

from bench.summary import summary_table


def rec(dataset, method, seed, **metrics):
    return {"dataset": dataset, "method": method, "seed": seed, "metrics": metrics,
            "higher_is_better": {"swd/all": False, "acc": True}, "train": {"seconds": 1.0}}


def test_seeds_are_averaged_and_datasets_get_their_own_table():
    records = [rec("a", "fm", 0, **{"swd/all": 1.0}), rec("a", "fm", 1, **{"swd/all": 2.0}),
               rec("a", "fm", 2, **{"swd/all": 4.0}), rec("b", "fm", 0, acc=0.5)]
    text = summary_table(records)
    std = statistics.stdev([1.0, 2.0, 4.0])
    assert f"2.333 ± {std:.2g}" in text
    assert "### a" in text and "### b" in text
    table_a, table_b = text.split("### b")
    assert "swd/all ↓" in table_a and "acc" not in table_a
    assert "acc ↑" in table_b and "swd/all" not in table_b


def test_many_metrics_are_transposed_to_one_row_per_metric():
    from bench.summary import summary_table

    recs = [{"method": m, "dataset": "d", "seed": s, "metrics": {f"m{i}": i + s for i in range(12)},
             "higher_is_better": {"m1": True}, "train": {"seconds": 1.0}}
            for m in ("fm", "optprior") for s in (0, 1)]
    lines = summary_table(recs).splitlines()
    assert lines[2].split("|")[1:4] == [" metric   ", " fm          ", " optprior    "]
    row = next(ln for ln in lines if ln.startswith("| m1 ↑"))
    assert "1.5 ± 0.71" in row  # mean and sample std over the two seeds (1 and 2)
    assert summary_table(recs, max_columns=20).splitlines()[2].startswith("| method")
