"""Paths inside a dataset root: relative paths from label files must not escape the root."""

from __future__ import annotations

import os
from pathlib import Path

from bench.errors import BenchError


def missing_root(owner: str, layout: str) -> str:
    """How to set an unset dataset root, as one item of the missing-settings message."""
    return f"{owner}.root=PATH (your local copy; expected layout: {layout})"


def require_root(root, owner: str, layout: str) -> Path:
    """The dataset root as a Path, or a one-line error saying how to set it and what it holds."""
    if root is None or str(root) == "":
        raise BenchError(
            f"{owner}.root is not set; point it at your local copy with "
            f"{owner}.root=PATH (expected layout: {layout})"
        )
    path = Path(os.path.expanduser(str(root)))
    if not path.is_dir():
        raise BenchError(
            f"{owner}.root={root} is not a directory (expected layout: {layout}); fix {owner}.root"
        )
    return path


def under_root(root: Path, relative: str, owner: str) -> Path:
    """`root / relative`, refusing absolute paths and `..` that would leave the root.

    The check is lexical: a dataset may keep its images behind a symlink inside its root, but a
    label file cannot name a file outside it.
    """
    rel = str(relative).replace("\\", "/")
    norm = os.path.normpath(rel)
    if os.path.isabs(rel) or norm == ".." or norm.startswith("../") or norm == ".":
        raise BenchError(
            f"{owner}: path {relative!r} in a label file escapes the dataset root "
            f"{root}; label files must hold paths relative to the root"
        )
    return root / norm


def first_missing(paths: list[Path]) -> Path | None:
    """The first path in `paths` that is not a file, or None."""
    return next((p for p in paths if not p.is_file()), None)
