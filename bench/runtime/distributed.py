"""One cell on several processes: every rank trains and samples, rank 0 alone touches the files.

bench runs a cell on N processes when it is launched on N (`torchrun --nproc_per_node N -m bench
run ...`, `accelerate launch`, or the N tasks per cell that `executor.tasks_per_node` asks submitit
for). The processes go through the grid together; training is accelerate's DDP and sampling
shards its batches (bench.pipeline.sampler.generate). Everything that reads-then-writes a folder (the
latent cache, the prior, the trained backbone, the samples, the record) is done by rank 0 first
(`main_first`) or by rank 0 only (`on_main`), so two processes never write one artifact and every
rank takes the same branch. A failure on rank 0 inside these helpers is sent to every rank and
raised there too, so no rank is left waiting in a collective that another has abandoned.

Evaluation uses every rank: `spread` shares independent tasks (the downstream evaluator's
classifier runs) among the ranks and gives every rank all the results, and `together` runs a step
on every rank (each its own part) and fails it on all of them if it fails on one. A rank that waits
for others (rank 0's part of `on_main` / `main_first`, a slower rank's share) waits by polling the
process group's store (`_rendezvous`), never in a collective: the collective that follows finds
every rank there, so its timeout only has to cover work of similar length on every rank, and an
evaluation of any length on rank 0 is never cut by the watchdog.

One process is the same code path with every helper a plain call.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TypeVar

import torch

from bench.errors import BenchError, CellFailed

T = TypeVar("T")
R = TypeVar("R")
TIMEOUT_ENV = "BENCH_DIST_TIMEOUT_S"
# a collective only waits for work of similar length on every rank (a training step, a share of
# the sampling): longer waits for one rank go through `_rendezvous`, which has no timeout
DEFAULT_TIMEOUT_S = 30 * 60
POLL_MAX_S = 1.0  # the longest sleep between two looks at the store while waiting for other ranks
_rounds = itertools.count()  # every rank counts its rendezvous alike: the n-th names one store key


@functools.cache
def state():
    """accelerate's process state, initialising torch.distributed when launched on several processes.

    The collective timeout comes from BENCH_DIST_TIMEOUT_S (seconds, default 30 min): no collective
    waits for one rank's long work (see `_rendezvous`), so a collective that outlasts it is a hang.
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
    _rendezvous()  # the other ranks wait here for fn, polling, not in the broadcast
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
            _rendezvous()
            agree(_as_message(exc))
            raise
        _rendezvous()
        agree(("ok", None))
        return result
    _rendezvous()
    _unpack(agree(None))
    return fn()


def together(fn: Callable[[], T]) -> T:
    """Run `fn` on every rank (each may do its own part); each returns its own result.

    When `fn` fails on any rank, every rank raises: the failing rank its own error, the others the
    first failing rank's reason, so all ranks leave the step (and the cell) together.
    """
    if world() == 1:
        return fn()
    return _on_every_rank(fn, share=False)[0]


def spread(tasks: Sequence[T], run: Callable[[T], R], cost: Callable[[T], float] | None = None) -> list[R]:
    """`run(task)` for every task, shared among the ranks; every rank returns all results in task order.

    For independent tasks of one step (the downstream classifier runs): each rank runs the share
    `shares` gives it on its own device, then the small, picklable results are gathered to every
    rank. `cost(task)` (default 1) balances the shares. A task that fails on any rank fails the step
    on every rank (see `together`); its rank stops its share at the failure.
    """
    tasks = list(tasks)
    if world() == 1:
        return [run(task) for task in tasks]
    mine = shares([cost(t) if cost else 1.0 for t in tasks], world())[rank()]
    results: dict = {}
    for part in _on_every_rank(lambda: {i: run(tasks[i]) for i in mine}, share=True)[1]:
        results.update(part)
    return [results[i] for i in range(len(tasks))]


def shares(costs: Sequence[float], n: int) -> list[list[int]]:
    """Task indices per rank (each list ascending): the costliest task first, each to the rank with
    the least cost so far (ties: the lower rank). Deterministic, so every rank computes the same."""
    load, out = [0.0] * n, [[] for _ in range(n)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(n), key=lambda r: (load[r], r))
        load[r] += costs[i]
        out[r].append(i)
    return [sorted(part) for part in out]


def finish(wait: bool = True) -> None:
    """Close the process group (after waiting for every rank, unless this rank is failing): a
    process that exits with gloo's threads running aborts ("terminate called without an active
    exception"). A failing rank does not wait: it exits, and the launcher stops the others."""
    if launched() and torch.distributed.is_initialized():
        if wait:
            _rendezvous()  # a rank still finishing its last cell is waited for without the timeout
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


def _rendezvous() -> None:
    """Return once every rank has called this (its n-th call on every rank), waiting without a collective.

    Each rank adds one to a counter in the process group's store and sleeps between looks at it
    (1 ms, doubling to POLL_MAX_S): a rank that waits hours for another's work (rank 0 evaluating)
    holds no collective that a watchdog times out, and a rank 0 that dies takes the store's server
    (or the launcher takes every rank) down with it, so the wait ends in an error, not a hang.
    """
    from torch.distributed.distributed_c10d import _get_default_store

    store, n = _get_default_store(), next(_rounds)
    key, delay = f"bench/rendezvous/{n}", 0.001
    store.add(key, 1)
    while store.add(key, 0) < world():
        time.sleep(delay)
        delay = min(2 * delay, POLL_MAX_S)
    if is_main() and n > 0:  # every rank has left the previous round's loop: its key is no longer read
        with contextlib.suppress(Exception):
            store.delete_key(f"bench/rendezvous/{n - 1}")


def _on_every_rank(fn: Callable[[], T], share: bool) -> tuple[T, list]:
    """(this rank's result of `fn`, every rank's result when `share` else Nones), once every rank
    ran `fn`; a failure on any rank is raised on every rank (see `together`)."""
    error = None
    try:
        result = fn()
        outcome = ("ok", result if share else None)
    except Exception as exc:  # sent to the other ranks, then re-raised here unchanged
        result, error, outcome = None, exc, _as_message(exc)[:2]  # the traceback stays on this rank
    outcomes = _exchange(outcome)
    if error is not None:
        raise error
    _raise_first(outcomes)
    return result, [o[1] for o in outcomes]


def _exchange(value) -> list:
    """Every rank's `value` (small, picklable), indexed by rank, on every rank; no rank waits in the collective."""
    import torch.distributed as dist

    _rendezvous()
    out = [None] * world()
    dist.all_gather_object(out, value)
    return out


def _raise_first(outcomes: list) -> None:
    """Raise the reason of the first rank whose outcome is a failure message (nothing when all are "ok")."""
    for source, outcome in enumerate(outcomes):
        _unpack(outcome, source)


def _as_message(exc: Exception) -> tuple:
    """An exception as a picklable message for the other ranks."""
    kind = "input" if isinstance(exc, BenchError) else "failed"
    reason = f"{exc}" if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
    return kind, (reason.splitlines() or [""])[0], traceback.format_exc()


def _unpack(outcome: tuple, source: int = 0):
    """The value of an ("ok", value) message, or the error that rank `source` raised."""
    if outcome[0] == "ok":
        return outcome[1]
    if outcome[0] == "input":
        raise BenchError(outcome[1])
    raise CellFailed(f"on rank {source}: {outcome[1]}")
