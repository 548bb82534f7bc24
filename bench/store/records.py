"""One JSON record per cell: what ran, with which config, on what, and what it measured."""

from __future__ import annotations

import platform
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path

from bench.store.artifacts import read_json_object, write_json_atomic

RECORD = "record.json"
SCHEMA_VERSION = 1
DISTRIBUTION = "medaug-bench"  # bench's own distribution name (pyproject.toml)
PACKAGES = (
    DISTRIBUTION,
    "torch",
    "diffusers",
    "accelerate",
    "gin-config",
    "numpy",
    "scipy",
    "scikit-learn",
    "pandas",
)


def versions() -> dict:
    """Python and package versions relevant to reproducing a cell."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_hash() -> str | None:
    """The commit of the bench source tree (with '+dirty' if modified), or None outside git."""
    src = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=src,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def host() -> dict:
    """Where the cell ran."""
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
    }


def build_record(
    spec,
    metrics: dict,
    higher_is_better: dict,
    n: dict,
    config_hash: str,
    operative_config: str,
    timings: dict,
    extra: dict,
) -> dict:
    """Assemble the record dict (the results schema, version SCHEMA_VERSION)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "ok",
        "experiment": spec.experiment,
        "dataset": spec.dataset,
        "method": spec.method,
        "seed": spec.seed,
        "metrics": metrics,
        "higher_is_better": higher_is_better,
        "n": n,
        "config_hash": config_hash,
        "operative_config": operative_config,
        "versions": versions(),
        "git_hash": git_hash(),
        "host": host(),
        "timings_s": timings,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }


def write_record(folder: Path, record: dict) -> Path:
    """Write record.json atomically into the cell folder."""
    path = Path(folder) / RECORD
    write_json_atomic(path, record)
    return path


def read_record(folder: Path) -> dict | None:
    """The cell's record, or None if it has none, it is unreadable or it is not a JSON object."""
    return read_json_object(Path(folder) / RECORD)


# fields a usable record must hold, and fields it may hold, with their JSON types
_FIELDS = {"status": str, "metrics": dict}
_OPTIONAL = {
    "dataset": str,
    "method": str,
    "config_hash": str,
    "created": str,
    "higher_is_better": dict,
    "timings_s": dict,
    "n": dict,
    "train": dict,
    "metric_info": dict,  # {metric: bench.evaluator.Metric.info()}; records before it have none
    "settings": dict,  # the cell's settings objects (bench.config.cell_config.CellConfig.to_json)
}


def record_problem(record: dict) -> str | None:
    """Why a record of status "ok" cannot be used (a field missing or of the wrong type), or None.

    Reports, the run summary and the rerun check read these fields; a record edited by hand or
    written by a broken tool is set aside with this reason (and its cell rerun), never a crash.
    """
    for key, kind in [*_FIELDS.items(), *((k, t) for k, t in _OPTIONAL.items() if k in record)]:
        if not isinstance(record.get(key), kind):
            found = "missing" if key not in record else f"a {type(record[key]).__name__}"
            return f"its {key!r} is {found}, not a{'n object' if kind is dict else ' string'}"
    if "seed" in record and (not isinstance(record["seed"], int) or isinstance(record["seed"], bool)):
        return "its 'seed' is not an integer"
    bad = [k for k, v in record["metrics"].items() if isinstance(v, bool) or not isinstance(v, (int, float))]
    if bad:
        return f"metric {bad[0]!r} is not a number"
    return None
