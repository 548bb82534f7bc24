"""`bench bench`: run the performance cases and write one JSON file (and its Markdown summary).

Every case measures against a reference in the same run (bench/perf/case.py). The JSON holds the
cases' keys at the top level, each target with its verdict under "targets", the details of each
case under "details", and the machine it ran on; a case that fails is recorded under "errors"
(its keys None) and the others still run.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import platform
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.errors import BenchError
from bench.perf.case import SCALES, timed
from bench.store.artifacts import write_text_atomic

log = logging.getLogger(__name__)

# case name -> module with measure(scale, workdir); in the order
CASES = {
    "overhead": "bench.perf.overhead",
    "offline": "bench.perf.offline",
    "fid": "bench.perf.frechet",
    "quick_run": "bench.perf.quickrun",
    "nfe": "bench.perf.nfe",
    "threads": "bench.perf.thread_scaling",
    "busy": "bench.perf.busy",
    "gpu": "bench.perf.gpu_check",
    "gpu_compile": "bench.perf.gpu",
}
# the keys each case must write (None when it failed or does not apply)
KEYS = {
    "overhead": ["harness_overhead_ratio"],
    "offline": ["offline_stage_s", "offline_stage_peak_gib"],
    "fid": ["fid_speedup_vs_sqrtm", "fid_rel_diff"],
    "quick_run": [
        "quick_run_s",
        "quick_run_stages_s",
        "quick_run_cells_s",
        "quick_run_side_by_side",
        "quick_rerun_s",
        "quick_rerun_ratio",
    ],
    "nfe": ["nfe_to_match"],
    "threads": ["threads"],
    "busy": ["busy"],
    "gpu": ["gpu", "gpu_step_s", "gpu_mfu", "gpu_estimates"],
    "gpu_compile": ["gpu_compile_step_s", "gpu_compile_mfu"],
}


@dataclass(frozen=True)
class Target:
    """A number a key must not exceed ("<=") or fall below (">=")."""

    op: str
    value: float

    def met(self, x: float) -> bool:
        return x <= self.value if self.op == "<=" else x >= self.value

    def miss(self, x: float) -> str:
        """How far `x` is from the target, in words ("" when met)."""
        if self.met(x):
            return ""
        factor = x / self.value if self.op == "<=" else self.value / x if x else float("inf")
        return f"{factor:.2f}x {'over' if self.op == '<=' else 'under'} the target"


TARGETS = {
    "harness_overhead_ratio": Target("<=", 1.05),
    "offline_stage_s": Target("<=", 600.0),
    "offline_stage_peak_gib": Target("<=", 6.0),
    "fid_speedup_vs_sqrtm": Target(">=", 5.0),
    "fid_rel_diff": Target("<=", 1e-6),
    "quick_run_s": Target("<=", 300.0),
    "quick_rerun_ratio": Target("<=", 0.10),
}


def check_cases(names: list[str]) -> list[str]:
    """The cases to run, in suite order; a one-line error for an unknown name."""
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise BenchError(f"unknown benchmark case(s) {', '.join(unknown)} (known: {', '.join(CASES)})")
    return [n for n in CASES if n in names]


def run_suite(names: list[str], scale: str, workdir: Path, out: Path) -> dict:
    """Run the cases and return the result; `out` (JSON) is rewritten atomically after every
    case, so an interrupted suite keeps the numbers of the cases that finished."""
    if scale not in SCALES:
        raise BenchError(f"unknown scale {scale!r} (known: {', '.join(SCALES)})")
    result = {
        "scale": scale,
        "machine": machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "targets": {},
        "details": {},
        "seconds": {},
        "errors": {},
        "files": [],
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    for name in check_cases(names):
        log.info("bench bench: %s (%s)", name, scale)
        run_case(name, scale, Path(workdir) / name, result, Path(out).parent)
        result["targets"] = verdicts(result)
        write_text_atomic(Path(out), json.dumps(result, indent=2, default=float) + "\n")
    return result


def run_case(name: str, scale: str, case_dir: Path, result: dict, files_dir: Path) -> None:
    """One case into `result`: its keys, details and seconds, or its error with its keys None."""
    case_dir.mkdir(parents=True, exist_ok=True)
    try:
        seconds, m = timed(importlib.import_module(CASES[name]).measure, scale, case_dir)
    except Exception as exc:  # one failing case must not lose the others' numbers
        result["errors"][name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        result["details"][name] = {"traceback": traceback.format_exc()}
        result.update({k: None for k in KEYS[name]})
        log.error("bench bench: %s failed: %s", name, result["errors"][name])
        return
    result.update(m.keys)
    result["details"][name], result["seconds"][name] = m.details, seconds
    for f in m.files:  # figures travel with the JSON
        shutil.copy2(f, files_dir / Path(f).name)
        result["files"].append(Path(f).name)


def verdicts(result: dict) -> dict:
    """Each target's value, verdict and miss for the keys that were measured."""
    out = {}
    for key, target in TARGETS.items():
        value = result.get(key)
        if value is not None:
            out[key] = {
                "target": f"{target.op} {target.value:g}",
                "value": value,
                "met": target.met(value),
                "miss": target.miss(value),
            }
    return out


def machine() -> dict:
    """What the numbers were measured on."""
    return {
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }
