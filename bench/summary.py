"""The end-of-run summary table (mean +- std over seeds), built from stored records only."""

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


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"


def summary_rows(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per (dataset, method), metrics averaged over seeds."""
    names = headline_metrics(records)
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        groups.setdefault((rec["dataset"], rec["method"]), []).append(rec)
    header = ["dataset", "method", "seeds"] + [_arrow(records, n) for n in names] + ["train s"]
    rows = []
    for (dataset, method), recs in groups.items():
        row = [dataset, method, str(len(recs))]
        row += [_cell([r["metrics"][n] for r in recs if n in r["metrics"]]) for n in names]
        row.append(_cell([r.get("train", {}).get("seconds", 0.0) for r in recs]))
        rows.append(row)
    return header, rows


def _arrow(records: list[dict], name: str) -> str:
    for rec in records:
        if name in rec.get("higher_is_better", {}):
            return f"{name} {'↑' if rec['higher_is_better'][name] else '↓'}"
    return name


def summary_table(records: list[dict], fmt: str = "github") -> str:
    """The summary as text (github-flavoured Markdown by default)."""
    if not records:
        return "(no finished cells)"
    header, rows = summary_rows(records)
    return tabulate(rows, headers=header, tablefmt=fmt, disable_numparse=True)
