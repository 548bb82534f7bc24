"""Case `busy`: training speed on an idle and on a loaded machine, per thread setting (issue 15).

On a shared machine a run competes with other processes for the cores. OpenMP threads that
*spin* while they wait for work (libgomp's default, `OMP_WAIT_POLICY` unset or ACTIVE) then burn
the time slices the other threads need, and a step can take many times longer than on one
thread. This case times the same training (vanilla FM on synthetic2d-sized data, the MLP
backbone, `bench.pipeline.trainer.train`) in a fresh child process per setting, because the wait policy
is read once when the OpenMP runtime starts:

- torch threads: 1, 2 and 0 (torch's default, all cores);
- OMP_WAIT_POLICY: unset, ACTIVE, PASSIVE;
- load: none, and `2 x cores` busy-looping processes started by the case (a load of about 3x
  the cores, like a shared 2-core machine at load 6).

Per setting it reports the median seconds per step over the repeats (per-step time =
(T(k2 steps) - T(k1 steps)) / (k2 - k1) in one child, which cancels start-up), and the defaults
bench uses (`bench.runtime.threads`), so the choice they encode is checked on every run of the suite.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.perf.case import Measurement, median, python_command

POLICIES = ("unset", "ACTIVE", "PASSIVE")
THREADS = (1, 2, 0)


@dataclass(frozen=True)
class Scale:
    """Steps of the two timed calls, repeats per setting, rows of the training data."""

    k1: int
    k2: int
    repeats: int
    rows: int


SCALES = {"full": Scale(50, 250, 2, 2000), "smoke": Scale(2, 6, 1, 256)}


def child(threads: int, k1: int, k2: int, rows: int) -> float:
    """Seconds per training step in this process (run in a child: see the module docstring)."""
    import torch

    from bench.backbones.mlp import MLPBackbone
    from bench.config.train import TrainConfig
    from bench.method import Method
    from bench.pipeline.trainer import train

    g = torch.Generator().manual_seed(0)
    y = torch.arange(rows) % 8
    x = torch.randn(rows, 2, generator=g) + 3 * torch.stack([torch.cos(y * 0.785), torch.sin(y * 0.785)], 1)

    def run(steps: int) -> float:
        torch.manual_seed(0)
        method = Method()
        method.setup(n_classes=8)
        backbone = MLPBackbone((2,), method.vocab_size, method.n_tokens)
        cfg = TrainConfig(steps=steps, batch_size=512, threads=threads, checkpoint_minutes=0)
        return train(method, backbone, x, y, cfg, seed=0).seconds

    return (run(k2) - run(k1)) / (k2 - k1)


def _spin() -> None:
    """A busy loop: one process of the synthetic load."""
    while True:
        pass


@contextmanager
def load(n: int) -> Iterator[None]:
    """n busy-looping processes for the duration of the block (0: none)."""
    procs = [multiprocessing.get_context("spawn").Process(target=_spin, daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
            p.join()


def timed_child(threads: int, policy: str, sc: Scale) -> float:
    """Seconds per step of `child` in a fresh interpreter with the given wait policy."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy != "unset":
        env["OMP_WAIT_POLICY"] = policy
    env["BENCH_KEEP_OMP"] = "1"  # bench must not set its own default in the child
    code = (
        f"from bench.perf.busy import child; import json; "
        f"print(json.dumps(child({threads}, {sc.k1}, {sc.k2}, {sc.rows})))"
    )
    out = subprocess.run([*python_command(), "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def measure(scale: str, workdir: Path) -> Measurement:
    """busy: median seconds per step per (load, wait policy, threads), and bench's defaults."""
    from bench.runtime.threads import defaults

    sc, cores = SCALES[scale], os.cpu_count() or 1
    loads = {"idle": 0, "loaded": 2 * cores}
    table: dict = {}
    for name, n in loads.items():
        with load(n):
            for policy, threads in itertools.product(POLICIES, THREADS):
                times = [timed_child(threads, policy, sc) for _ in range(sc.repeats)]
                table.setdefault(name, {}).setdefault(policy, {})[str(threads)] = median(times)
    keys = {"busy": table}
    details = {
        "cores": cores,
        "load_processes": loads,
        "k1": sc.k1,
        "k2": sc.k2,
        "repeats": sc.repeats,
        "rows": sc.rows,
        "batch_size": 512,
        "backbone": "mlp (defaults)",
        "bench_defaults": defaults(),
        "timing": "per step = (T(k2) - T(k1)) / (k2 - k1) in one fresh child; median over repeats; "
        "threads 0 = torch's default (all cores)",
    }
    return Measurement(keys, details)
