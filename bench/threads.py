"""CPU thread defaults that hold up on a busy machine; imported first by `bench` (no torch here).

OpenMP, which torch's CPU kernels run on, lets idle threads *spin* while they wait for work by
default. On a machine whose cores are busy with other processes, the spinning threads take the
time slices the working threads need: measured on a 2-core machine at load ~4 (`bench bench
--only busy`, docs/performance.md), 200 synthetic2d steps took 15.7-19.7 s on 2 threads with the
ACTIVE policy against 4.4-5.6 s with PASSIVE (1 thread: 4.4-5.7 s either way). So bench sets
`OMP_WAIT_POLICY=PASSIVE` unless the user set it: the variable is read once, when the OpenMP
runtime starts, so it must be in the environment before torch is imported (bench's own modules
import torch lazily; a program that imports torch before bench keeps its own setting).
`BENCH_KEEP_OMP=1` leaves the environment alone (the `busy` benchmark compares policies).

torch's intra-op thread count stays torch's default (all cores) unless `train.threads` is set:
with passive waiting, all cores are fastest on an idle machine and close to one thread on a
loaded one. Image files are decoded by at most `read_threads()` threads, never more than the
cores this process may use.
"""

from __future__ import annotations

import os

WAIT_POLICY = "PASSIVE"
MAX_READ_THREADS = 4  # image decoding threads (Pillow releases the GIL) on a machine with many cores


def set_defaults() -> None:
    """Put bench's OpenMP wait policy into the environment unless the user chose one."""
    if os.environ.get("BENCH_KEEP_OMP") != "1":
        os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def read_threads() -> int:
    """Threads that decode image files: one per usable core, at most MAX_READ_THREADS."""
    return min(MAX_READ_THREADS, usable_cores())


def defaults() -> dict:
    """What this process runs with, for benchmark records."""
    return {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "unset"), "torch_threads": "torch default (all cores)",
            "read_threads": read_threads(), "usable_cores": usable_cores()}
