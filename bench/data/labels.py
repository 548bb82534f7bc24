"""Reading label and metadata CSVs with checks, and decoding one-hot single-label rows.

Every failure is one line that names the file and what to do. Rows that cannot be used are
either an error (the default) or skipped with their ids returned, so the caller can log them:
nothing is dropped silently.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import BenchError

BAD_ROW_POLICIES = ("error", "skip")


def read_csv(path: Path, required: list[str], owner: str, **kwargs) -> pd.DataFrame:
    """A CSV (optionally gzipped) that must exist, parse and hold the `required` columns."""
    if not Path(path).is_file():
        raise BenchError(f"{owner}: missing file {path}; check {owner}.root and the layout")
    try:
        table = pd.read_csv(path, **kwargs)
    except Exception as exc:  # pandas raises many types for corrupt / non-CSV / truncated gzip
        raise BenchError(
            f"{owner}: cannot read {path} as CSV ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); "
            "replace it with an intact copy"
        ) from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise BenchError(
            f"{owner}: {path.name} lacks required column(s) {missing} "
            f"(has {list(table.columns)[:8]}{' ...' if table.shape[1] > 8 else ''}); "
            "is this the right file?"
        )
    return table


def check_policy(value: str, owner: str, key: str) -> str:
    """`value` if it is a known bad-row/bad-image policy, else a one-line error."""
    if value not in BAD_ROW_POLICIES:
        raise BenchError(f"{owner}.{key}={value!r} is not one of {list(BAD_ROW_POLICIES)}")
    return value


def one_hot_labels(
    table: pd.DataFrame, class_names: list[str], id_column: str, path: Path, owner: str, on_bad_row: str
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Class index of every row of a single-label one-hot table, found by column name.

    Returns (labels, keep, bad): labels (N,) int64 with -1 on bad rows, keep (N,) bool, and
    bad as (id, reason) pairs. A bad row has a label that is not 0/1, or zero or several
    positive labels; with `on_bad_row='error'` any bad row raises, listing the first ids.
    """
    values = table[class_names].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    invalid = ~np.isin(values, (0.0, 1.0)).all(axis=1)  # NaN, blanks, -1 "uncertain", 2, text
    positives = np.where(invalid[:, None], 0, values).sum(axis=1)
    bad = invalid | (positives != 1)
    reasons = np.where(
        invalid, "label not 0/1", np.where(positives == 0, "no positive label", "several positive labels")
    )
    ids = table[id_column].astype(str).to_numpy()
    bad_rows = [(ids[i], reasons[i]) for i in np.flatnonzero(bad)]
    if bad_rows and on_bad_row == "error":
        first = ", ".join(f"{i} ({r})" for i, r in bad_rows[:5])
        raise BenchError(
            f"{owner}: {len(bad_rows)} row(s) of {Path(path).name} are not single-label: "
            f"{first}{' ...' if len(bad_rows) > 5 else ''}; fix the file or set "
            f"{owner}.on_bad_row='skip' (skipped ids are logged)"
        )
    labels = np.where(bad, -1, np.argmax(np.nan_to_num(values), axis=1)).astype(np.int64)
    return labels, ~bad, bad_rows


def check_unique(ids: pd.Series, path: Path, owner: str) -> None:
    """Refuse a label file that lists the same image twice (it would be counted twice)."""
    dup = ids[ids.duplicated()]
    if len(dup):
        raise BenchError(
            f"{owner}: {Path(path).name} lists {len(dup)} id(s) more than once "
            f"(first: {list(dup.astype(str)[:3])}); remove the duplicates"
        )


def find_file(folders: list[Path], names: list[str]) -> Path | None:
    """The first existing `folder / name`, trying every name in each folder in order."""
    return next((f / n for f in folders for n in names if (f / n).is_file()), None)
