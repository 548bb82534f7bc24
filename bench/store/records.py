"""One JSON record per cell: what ran, with which config, on what, and what it measured."""

from __future__ import annotations

import platform
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path

from bench.store.artifacts import plain_json, read_json_object, write_json_atomic
from bench.store.schema import check, first_problem

RECORD = "record.json"
SCHEMA_VERSION = 2  # 2: the published schema; records of version 1 (before it) still read
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


# tracked files that do not change what a cell computes: results (committed records are rewritten
# by the very run that reproduces them), documentation
NOT_CODE = (":(top,exclude)results", ":(top,exclude)docs", ":(top,exclude,glob)**/*.md", ":(top,exclude)*.md")


def git_hash(src: Path | None = None) -> str | None:
    """The commit of the bench source tree, with '+dirty' if a tracked file that can change a
    result (code, gin files, packaging; not results/, docs/ or Markdown) is modified; None
    outside git. `src`: a folder of the checkout (default: this package's)."""
    src = src or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=src, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":/", *NOT_CODE],
            cwd=src,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def host() -> dict:
    """Where the cell ran: with the CPU model, torch's CPU kernel level and its thread count,
    because on the CPU a cell's numbers are bit for bit the same only where these three are
    (docs/reproducibility.md: one cell at 1 and at 2 threads differs in 35 of its 37 metrics)."""
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "device": device,
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
    }


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what `platform` knows of it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    """Write record.json atomically into the cell folder, after checking it against the record
    schema: a record that does not match is a bug in bench or a plugin, refused (SchemaViolation,
    one line naming the field) before anything is written."""
    path = Path(folder) / RECORD
    where = f"{path} not written: the record breaks bench's record schema (a bug in bench or a plugin)"
    check(plain_json(record), "record", where)
    write_json_atomic(path, record)
    return path


def read_record(folder: Path) -> dict | None:
    """The cell's record, or None if it has none, it is unreadable or it is not a JSON object."""
    return read_json_object(Path(folder) / RECORD)


def record_problem(record) -> str | None:
    """Why a stored record cannot be used (the first field that breaks the record schema,
    bench/store/schemas/record.schema.json, and how many more), or None.

    The runner reruns a cell whose stored record has a problem; reports refuse it
    (bench.report.collect).
    """
    return first_problem(record, "record")
