"""Where a command may write: checked before it computes anything, so a bad `--out` is one line.

A folder output (`bench tables --out`, `bench report --out`, `bench prepare --out`) must be a
folder or not exist yet; a file output (`bench claims --out`, `bench bench --out`) must be a
regular file or not exist yet: writing atomically "to" /dev/null would replace the device node.
In both cases the nearest existing folder on the way must be writable. Nothing is created here.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.errors import BenchError


def output_folder(path, flag: str = "--out") -> Path:
    """`path` if a folder may be written there, else a one-line BenchError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BenchError(f"{flag} {path} is a file, not a folder; pass a folder (it is created if absent)")
    _require_writable_parent(path, flag)
    return path


def output_file(path, flag: str = "--out") -> Path:
    """`path` if a file may be (re)written there, else a one-line BenchError."""
    path = Path(path)
    if path.is_dir():
        raise BenchError(f"{flag} {path} is a folder; pass a file name, e.g. {path / 'out'}")
    if path.exists() and not path.is_file():
        raise BenchError(f"{flag} {path} is not a regular file (a device or pipe); pass a file name")
    _require_writable_parent(path.parent if not path.exists() else path, flag)
    return path


def _require_writable_parent(path: Path, flag: str) -> None:
    """The nearest existing folder at or above `path` must be a folder bench can write into."""
    probe = path.absolute()
    while not probe.exists():
        probe = probe.parent
    folder = probe if probe.is_dir() else probe.parent
    if not probe.is_dir() and probe != path.absolute():
        raise BenchError(f"{flag} {path}: {probe} is a file, not a folder; pass a path under a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BenchError(f"{flag} {path}: cannot write in {folder} (permission denied); pass a writable path")
