"""The GPU check (`bench bench --only gpu`): on one GPU, in under 8 minutes, bench's estimates
against measurements, in one JSON file.

Parts (bench.perf.gpu_parts, bench.perf.gpu_fsdp), in order: the one-GPU preset's training step at
its real accumulation (peak memory, saved activations and FLOPs vs bench.pipeline.footprint; step
and optimiser time, MFU), bf16 sampling, the FLUX VAE's encode and decode, one ResNet-50 epoch
through the classifier's training loop, and a 1-process FSDP run. At full size each part runs in
its own child process with its own time limit (killed with its process group when it runs over),
so a part that fails or hangs records its error and the next one still runs, each starts from an
empty device (peak counters and allocator cache are its own), and the whole check stays inside its
budget. The suite's JSON holds every part's numbers and, per estimate, measured / estimated.

Without CUDA the full-size check measures nothing: it says that it needs a GPU and returns (the
suite exits 0). The "dry" size (`bench bench --only gpu --scale smoke`) runs every part in this
process with tiny models on the CPU, so the tests execute the check's code; its timings mean nothing.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import torch

from bench.perf import gpu_device as dev
from bench.perf.case import Measurement, python_command
from bench.perf.gpu_child import call, failure
from bench.perf.gpu_sizes import Sizes, sizes

log = logging.getLogger(__name__)

# part -> "module:function" taking (Sizes, workdir) and returning its dict; in the order they run
PARTS = {
    "train": "bench.perf.gpu_parts:train",
    "sampling": "bench.perf.gpu_parts:sampling",
    "vae": "bench.perf.gpu_parts:vae",
    "downstream": "bench.perf.gpu_parts:downstream",
    "fsdp": "bench.perf.gpu_fsdp:fsdp",
}
KEYS = ("gpu", "gpu_step_s", "gpu_mfu", "gpu_estimates")
NEEDS_GPU = "the GPU check needs a CUDA GPU and this run has none: nothing was measured"
MIN_PART_S = 20  # a part given less than this of the remaining budget is not started


def measure(scale: str, workdir: Path) -> Measurement:
    """The suite's case: the full-size check on a GPU, nothing without one; the dry check at smoke scale."""
    if scale == "full" and not torch.cuda.is_available():
        print(f"bench bench gpu: {NEEDS_GPU}", flush=True)
        return Measurement(dict.fromkeys(KEYS), {"skipped": NEEDS_GPU})
    size = "full" if scale == "full" else "dry"
    result = run_check(sizes(size), Path(workdir), isolate=size == "full")
    return Measurement(suite_keys(result), result)


def run_check(sz: Sizes, workdir: Path, isolate: bool, parts: dict | None = None) -> dict:
    """Every part of `parts` (default PARTS) at sizes `sz`, each in a time-limited child process
    when `isolate` (the child rebuilds `sizes(sz.name)`), else in this process; the check's result
    with the comparison of estimates."""
    parts = parts or PARTS
    workdir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + sz.budget_s if sz.budget_s else None
    result = {
        "size": sz.name,
        "device": dev.name() or "cpu",
        "torch": torch.__version__,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "budget_s": sz.budget_s,
        "limits_s": sz.limits_s,
        "parts": {},
    }
    for name, spec in parts.items():
        limit = part_limit(sz, name, deadline)
        result["parts"][name] = run_part(spec, sz, workdir / name, limit, isolate)
        for line in report_lines({name: result["parts"][name]}):
            log.info("gpu check: %s", line)
    result["comparisons"] = comparisons(result["parts"])
    return result


def part_limit(sz: Sizes, name: str, deadline: float | None) -> float | None:
    """Seconds `name` may run: its own limit, cut to what is left of the check's budget."""
    limit = sz.limits_s.get(name)
    if deadline is not None:
        left = deadline - time.monotonic()
        limit = left if limit is None else min(limit, left)
    return limit


def run_part(spec: str, sz: Sizes, workdir: Path, limit: float | None, isolate: bool) -> dict:
    """One part's dict, or {"error": one line, "traceback": ...} when it failed, timed out or had
    no time left; "seconds" is its wall time either way."""
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if limit is not None and limit < MIN_PART_S:
        return {
            "error": f"not started: {limit:.0f} s left of the check's budget (a part needs {MIN_PART_S} s)",
            "seconds": 0.0,
        }
    try:
        out = in_child(spec, sz.name, workdir, limit) if isolate else call(spec, sz, workdir)
    except Exception as exc:  # a failing part must not lose the others' numbers
        out = failure(exc)
    finally:
        if not isolate:
            dev.release()
    out["seconds"] = time.perf_counter() - t0
    return out


class PartTimeout(RuntimeError):
    """A part ran past its limit and was killed."""


def in_child(spec: str, size: str, workdir: Path, limit: float | None) -> dict:
    """Run the part in a fresh Python (its own CUDA context and peak counters); on timeout kill it
    and everything it started (its own session: DataLoader workers included)."""
    out, log_file = workdir / "part.json", workdir / "part.log"
    with open(log_file, "w") as stream:
        proc = subprocess.Popen(
            [*python_command(), "-m", "bench.perf.gpu_child", spec, size, str(workdir), str(out)],
            cwd=workdir,
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise PartTimeout(f"stopped after its {limit:.0f} s limit (log: {log_file})") from None
    if not out.is_file():
        tail = (log_file.read_text(errors="replace").strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"the part's process exited {proc.returncode} without a result: {tail}")
    return json.loads(out.read_text())


def comparisons(parts: dict) -> list[dict]:
    """Every part's measured-vs-estimated rows with their ratio (measured / estimated) and a verdict."""
    rows = []
    for name, part in parts.items():
        for r in part.get("compare", []):
            m, e = r.get("measured"), r.get("estimated")
            ratio = m / e if m is not None and e else None
            rows.append({"part": name, **r, "ratio": ratio, "verdict": verdict(ratio)})
    return rows


def verdict(ratio: float | None) -> str:
    """How far off an estimate is, in words: "estimate 1.90x low" when the measurement is larger."""
    if ratio is None:
        return "not compared (not measured or not estimated)"
    if 0.95 <= ratio <= 1.05:
        return f"estimate within 5% ({ratio:.2f}x)"
    return f"estimate {ratio:.2f}x low" if ratio > 1 else f"estimate {1 / ratio:.2f}x high"


def report_lines(parts: dict) -> list[str]:
    """One line per part error and per comparison: which estimate was off by how much."""
    lines = []
    for name, part in parts.items():
        if "error" in part:
            lines.append(f"{name}: failed: {part['error']}")
    for r in comparisons(parts):
        m, e = r["measured"], r["estimated"]
        lines.append(
            f"{r['what']}: measured {_fmt(m)} {r['unit']}, estimated {_fmt(e)} {r['unit']}: {r['verdict']}"
        )
    return lines


def _fmt(x) -> str:
    return "-" if x is None else f"{x:,.3g}" if abs(x) < 100 else f"{x:,.0f}"


def suite_keys(result: dict) -> dict:
    """The suite's top-level keys: GPU name, the preset step's seconds and MFU, each estimate's ratio."""
    train = result["parts"].get("train", {}).get("measured", {})
    return {
        "gpu": dev.name(),
        "gpu_step_s": train.get("steady_step_s"),
        "gpu_mfu": train.get("mfu"),
        "gpu_estimates": {r["what"]: r["ratio"] for r in result["comparisons"]},
    }
