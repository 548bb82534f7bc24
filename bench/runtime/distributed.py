"""One cell on several processes: every rank trains and samples, rank 0 alone touches the files.

bench runs a cell on N processes when it is launched on N (`torchrun --nproc_per_node N -m bench
run ...`, `accelerate launch`, or the N tasks per cell that `executor.tasks_per_node` asks submitit
for). The processes go through the grid together; training is accelerate's DDP and sampling
shards its batches (bench.pipeline.sampler.generate). Everything that reads-then-writes a folder (the
latent cache, the prior, the trained backbone, the samples, the record) is done by rank 0 first
(`main_first`) or by rank 0 only (`on_main`), so two processes never write one artifact and every
rank takes the same branch. A failure on rank 0 inside these helpers is sent to every rank and
raised there too, so no rank is left waiting in a collective that another has abandoned.

One process is the same code path with every helper a plain call.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import traceback
from datetime import timedelta
from typing import Callable, TypeVar

import torch

from bench.errors import BenchError, CellFailed

T = TypeVar("T")
TIMEOUT_ENV = "BENCH_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 6 * 3600  # rank 0 evaluates while the others wait: FID on 50,000 samples is long


@functools.cache
def state():
    """accelerate's process state, initialising torch.distributed when launched on several processes.

    The collective timeout comes from BENCH_DIST_TIMEOUT_S (seconds, default 6 h): the other ranks
    wait for rank 0 while it evaluates a cell.
    """
    from accelerate import PartialState

    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
    return PartialState(cpu=not torch.cuda.is_available(), timeout=timeout)


def launched() -> bool:
    """Whether this process was started as one of several (torchrun, accelerate, submitit tasks)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world() -> int:
    """The number of processes running the grid together."""
    return state().num_processes if launched() else 1


def rank() -> int:
    """This process's index among them (0 is the main process)."""
    return state().process_index if launched() else 0


def is_main() -> bool:
    """Whether this is rank 0, the process that writes the files."""
    return rank() == 0


def device() -> torch.device:
    """This process's device: its own GPU under a multi-GPU launch, else CUDA or the CPU."""
    if launched():
        return state().device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def agree(value: T) -> T:
    """Rank 0's `value` on every rank (small, picklable values only)."""
    if world() == 1:
        return value
    import torch.distributed as dist

    box = [value if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only; every rank returns its result (keep it small) or raises its error."""
    if world() == 1:
        return fn()
    outcome, error = ("ok", None), None
    if is_main():
        try:
            outcome = ("ok", fn())
        except Exception as exc:  # sent to the other ranks, then re-raised here unchanged
            outcome, error = _as_message(exc), exc
    outcome = agree(outcome)
    if error is not None:
        raise error
    return _unpack(outcome)


def main_first(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0, then on the other ranks; each returns its own result.

    For stages that build a file when it is missing and read it otherwise: rank 0 builds it, the
    others then find it complete and read it. A failure on rank 0 is raised on every rank.
    """
    if world() == 1:
        return fn()
    result = None
    if is_main():
        try:
            result = fn()
        except Exception as exc:
            agree(_as_message(exc))
            raise
        agree(("ok", None))
        return result
    _unpack(agree(None))
    return fn()


def finish(wait: bool = True) -> None:
    """Close the process group (after waiting for every rank, unless this rank is failing): a
    process that exits with gloo's threads running aborts ("terminate called without an active
    exception"). A failing rank does not wait: it exits, and the launcher stops the others."""
    if launched() and torch.distributed.is_initialized():
        if wait:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def leave(code: int) -> int:
    """End a launched rank with `code` once its work is done, skipping the interpreter's teardown.

    After `finish`, gloo's transport threads can still abort the teardown ("terminate called
    without an active exception", exit -6): CI saw it once under `torchrun -m bench run` after
    every record was written, and the launcher then failed the whole run. A launched process
    therefore flushes its streams and logs and exits at once; one process returns `code` as usual.
    """
    if not launched():
        return code
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _as_message(exc: Exception) -> tuple:
    """An exception as a picklable message for the other ranks."""
    kind = "input" if isinstance(exc, BenchError) else "failed"
    reason = f"{exc}" if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
    return kind, (reason.splitlines() or [""])[0], traceback.format_exc()


def _unpack(outcome: tuple):
    """The value of an ("ok", value) message, or the error rank 0 raised."""
    if outcome[0] == "ok":
        return outcome[1]
    if outcome[0] == "input":
        raise BenchError(outcome[1])
    raise CellFailed(f"on rank 0: {outcome[1]}")
