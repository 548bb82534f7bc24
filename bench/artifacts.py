"""Atomic artifacts: every stage writes into a staging folder and renames it into place.

A stage's folder is complete only when its `manifest.json` (written last, inside the staging
folder) names the stage's config hash; a folder without it, or with another hash, is redone.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

MANIFEST = "manifest.json"


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write JSON to `path` via a temporary file in the same folder and os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False, default=_json_default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write text to `path` atomically (temporary file + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_manifest(folder: Path) -> Optional[dict]:
    """The manifest of a stage folder, or None if absent or unreadable."""
    try:
        return json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def is_complete(folder: Path, config_hash: str) -> bool:
    """True if `folder` holds a finished stage for exactly this config hash."""
    manifest = read_manifest(folder)
    return manifest is not None and manifest.get("config_hash") == config_hash


@contextmanager
def stage_dir(folder: Path, config_hash: str, **info) -> Iterator[Path]:
    """Yield a staging folder; on success write the manifest and rename it to `folder`."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.staging-"))
    try:
        yield staging
        write_json_atomic(staging / MANIFEST, {"config_hash": config_hash, **info})
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
