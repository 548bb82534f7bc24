"""A report table, independent of its output format: entries with runs, marks and notes.

An `Entry` holds the runs behind one number (key -> value, keyed (generative seed,) or
(generative seed, classifier index); keys pair runs across rows for the significance tests), or
a fixed text (dataset statistics), or nothing: `MISSING` (a grid cell
without a usable record: shown as a dash, explained in the table's notes) or `NOT_APPLICABLE`
(the record exists but its evaluators produce no such metric for this method: "n/a").
`mark_best` bolds the best mean of each column (or row, for tables with metrics as rows)
according to the metric's direction; ties at the displayed precision are all bold. An entry's
mean and std are over its generative seeds (classifier runs averaged within each seed first);
an entry with `ranked` False (a source-only or untrained reference line) is never bold or marked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.metrics.significance import seed_means

MISSING, NOT_APPLICABLE = "missing", "n/a"
MARK_NO_AUG, MARK_FM, MARK_PARTIAL = "*", "†", "§"
MARK_UNCONVERGED = "‡"  # a cell's training did not converge
MARK_UNRELIABLE = "?"  # a Bayes-risk Monte-Carlo estimate flagged unreliable


@dataclass
class Entry:
    """One table cell."""

    runs: dict = field(default_factory=dict)  # pairing key -> value
    text: str | None = None  # a fixed text instead of mean +- std
    state: str | None = None  # None, MISSING or NOT_APPLICABLE
    marks: str = ""  # MARK_* symbols
    best: bool = False
    decimals: int = 3
    ranked: bool = True  # False: a reference line, never bold and never tested

    @property
    def values(self) -> list[float]:
        """One value per generative seed (the mean of its classifier runs), in seed order."""
        return [v for _, v in sorted(seed_means(self.runs).items())]

    @property
    def mean(self) -> float | None:
        v = self.values
        return sum(v) / len(v) if v else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation over generative seeds (None for fewer than two)."""
        v = self.values
        if len(v) < 2:
            return None
        m = sum(v) / len(v)
        return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))

    def number(self) -> str | None:
        """'m' or 'm ± s' at the entry's precision (None for text, missing or n/a entries)."""
        if self.text is not None or self.state or self.mean is None:
            return None
        m = f"{self.mean:.{self.decimals}f}"
        return m if self.std is None else f"{m} ± {self.std:.{self.decimals}f}"


@dataclass
class Column:
    """A column: its title, the metric direction (None: no best entry) and a subtitle (n = ...)."""

    title: str
    higher_is_better: bool | None = None
    subtitle: str = ""
    group: str = ""  # a spanning header above the column (the dataset), "" for none


@dataclass
class Table:
    """Rows of entries under columns, with labels, a caption and notes below."""

    name: str  # file stem
    title: str
    caption: str
    row_header: list  # titles of the label columns
    columns: list  # Column
    rows: list = field(default_factory=list)  # (labels: list[str], entries: list[Entry])
    notes: list = field(default_factory=list)
    row_directions: list | None = None  # per-row direction when metrics are rows

    def add_row(self, labels: list, entries: list) -> None:
        self.rows.append((list(labels), list(entries)))

    def add_note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)

    def groups(self) -> list[tuple[str, int]]:
        """Consecutive column groups as (title, span)."""
        out: list[tuple[str, int]] = []
        for col in self.columns:
            if out and out[-1][0] == col.group:
                out[-1] = (col.group, out[-1][1] + 1)
            else:
                out.append((col.group, 1))
        return out


def decimals_for(values: list[float]) -> int:
    """Decimals that show about three significant digits of the largest magnitude."""
    top = max((abs(v) for v in values if v is not None and math.isfinite(v)), default=0.0)
    return 0 if top >= 100 else 1 if top >= 10 else 2 if top >= 1 else 3


def set_precision(table: Table) -> None:
    """One precision per column (per row for metrics-as-rows tables)."""
    by_row = table.row_directions is not None
    lines = (
        [entries for _, entries in table.rows]
        if by_row
        else [[entries[j] for _, entries in table.rows] for j in range(len(table.columns))]
    )
    for line in lines:
        ranked = [e.mean for e in line if e.mean is not None and e.ranked]
        # reference lines (source only, untrained) follow the precision of the entries they are read against
        d = decimals_for(ranked or [e.mean for e in line if e.mean is not None])
        for e in line:
            e.decimals = d


def mark_best(table: Table) -> None:
    """Bold the best mean (at display precision) in each column, or each row for metrics as rows."""
    set_precision(table)
    if table.row_directions is not None:
        for (_, entries), higher in zip(table.rows, table.row_directions):
            _bold(entries, higher)
    else:
        for j, col in enumerate(table.columns):
            _bold([entries[j] for _, entries in table.rows], col.higher_is_better)


def _bold(entries: list[Entry], higher: bool | None) -> None:
    scored = [e for e in entries if e.number() is not None and e.ranked]
    if higher is None or len(scored) < 2:
        return
    shown = [round(e.mean, e.decimals) for e in scored]
    best = max(shown) if higher else min(shown)
    for e, s in zip(scored, shown):
        e.best = s == best
