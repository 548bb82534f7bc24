"""The end-of-run summary: one table per dataset, mean +- std over seeds, from stored records."""

from __future__ import annotations

import statistics
from typing import Iterable

from tabulate import tabulate


def headline_metrics(records: Iterable[dict]) -> list[str]:
    """Metric names to show: everything except per-class breakdowns, in first-seen order."""
    names: list[str] = []
    for rec in records:
        for name in rec.get("metrics", {}):
            if "/class/" not in name and name not in names:
                names.append(name)
    return names


def mean_std(values: list[float]) -> str:
    """'m' for one value, 'm ± s' (sample std) for several, '-' for none."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"


def _arrow(records: list[dict], name: str) -> str:
    for rec in records:
        if name in rec.get("higher_is_better", {}):
            return f"{name} {'↑' if rec['higher_is_better'][name] else '↓'}"
    return name


def summary_rows(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows for one dataset's records: one row per method, averaged over seeds."""
    names = headline_metrics(records)
    by_method: dict[str, list[dict]] = {}
    for rec in records:
        by_method.setdefault(rec["method"], []).append(rec)
    header = ["method", "seeds"] + [_arrow(records, n) for n in names] + ["train s"]
    rows = []
    for method, recs in by_method.items():
        row = [method, str(len(recs))]
        row += [mean_std([r["metrics"][n] for r in recs if n in r["metrics"]]) for n in names]
        row.append(mean_std([r.get("train", {}).get("seconds", 0.0) for r in recs]))
        rows.append(row)
    return header, rows


def transposed(header: list[str], rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """Methods as columns and metrics as rows: readable when there are many metrics."""
    return ["metric"] + [r[0] for r in rows], [[h] + [r[i] for r in rows] for i, h in enumerate(header) if i]


def summary_table(records: list[dict], fmt: str = "github", max_columns: int = 10) -> str:
    """The summary as text: one table per dataset, since datasets have different metrics.

    With more than `max_columns` metrics the table is transposed (one row per metric).
    """
    if not records:
        return "(no finished cells)"
    by_dataset: dict[str, list[dict]] = {}
    for rec in records:
        by_dataset.setdefault(rec["dataset"], []).append(rec)
    blocks = []
    for dataset, recs in by_dataset.items():
        header, rows = summary_rows(recs)
        if len(header) > max_columns + 3:
            header, rows = transposed(header, rows)
        table = tabulate(rows, headers=header, tablefmt=fmt, disable_numparse=True)
        blocks.append(f"### {dataset}\n\n{table}")
    return "\n\n".join(blocks)
