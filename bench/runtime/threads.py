"""CPU thread defaults that hold up on a busy machine; imported first by `bench` (no torch here).

OpenMP, which torch's CPU kernels run on, lets idle threads *spin* while they wait for work by
default. On a machine whose cores are busy with other processes, the spinning threads take the
time slices the working threads need, and a run collapses; told to sleep instead
(`OMP_WAIT_POLICY=PASSIVE`), they wake up later, which costs time on an idle machine. Measured
on 2 cores (`bench bench --only busy`, docs/performance.md), seconds per synthetic2d step with
torch's default threads: idle 0.007 unset / 0.015 PASSIVE; with 4 busy processes 0.110 unset /
0.039 PASSIVE (one thread: 0.012 idle, 0.030 loaded). So bench picks the policy from the load
when it starts: PASSIVE when the 1-minute load average is at least half the usable cores (other
work is there), else OpenMP's own default; a policy the user set is kept. The variable is read
once, when the OpenMP runtime starts, so it must be set before torch is imported (bench's own
modules import torch lazily; a program that imports torch before bench keeps its own setting).
`BENCH_KEEP_OMP=1` leaves the environment alone (the `busy` benchmark compares policies).

torch's intra-op thread count stays torch's default (all cores) unless `train.threads` is set;
`train.threads=1` is the safe choice when several runs share the cores. Image files are decoded
by at most `read_threads()` threads, never more than the cores this process may use.
"""

from __future__ import annotations

import os

WAIT_POLICY = "PASSIVE"
MAX_READ_THREADS = 4  # image decoding threads (Pillow releases the GIL) on a machine with many cores


BUSY_SHARE = 0.5  # a 1-minute load average of at least this share of the cores counts as busy


def set_defaults() -> None:
    """Put bench's OpenMP wait policy into the environment unless the user chose one."""
    if os.environ.get("BENCH_KEEP_OMP") == "1" or "OMP_WAIT_POLICY" in os.environ:
        return
    if wait_policy(_load(), usable_cores()) is not None:
        os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY


def wait_policy(load: float, cores: int):
    """PASSIVE on a busy machine (load >= BUSY_SHARE x cores), None (OpenMP's default) otherwise."""
    return WAIT_POLICY if load >= BUSY_SHARE * cores else None


def _load() -> float:
    """The 1-minute load average (0 where the OS does not tell it)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


CORES_ENV = "BENCH_CORES"  # a cell's share of the cores when cells run side by side (bench.scale.pool)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it), at most
    BENCH_CORES when set: a worker running one of several cells side by side gets its share, so
    its own thread pools (image decoding, per-class GMM fits) do not oversubscribe the machine."""
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        cores = max(1, os.cpu_count() or 1)
    share = os.environ.get(CORES_ENV, "")
    return min(cores, int(share)) if share.isdigit() and int(share) >= 1 else cores


def read_threads() -> int:
    """Threads that decode image files: one per usable core, at most MAX_READ_THREADS."""
    return min(MAX_READ_THREADS, usable_cores())


def defaults() -> dict:
    """What this process runs with, for benchmark records."""
    return {
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "torch_threads": "torch default (all cores)",
        "read_threads": read_threads(),
        "usable_cores": usable_cores(),
    }
