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
