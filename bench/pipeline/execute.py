"""Run one grid cell with its failure isolated: the unit every executor dispatches.

`execute_cell` locks the cell folder (bench.store.lock), so concurrent runs on one results folder
never run a cell twice: a cell another live run holds is skipped with status "locked" and that
run finishes it. It then removes what killed runs left in the folder, builds the cell from its
spec (parsing its gin config in the current process, so it also works inside a submitit job),
runs it, and turns any failure into a `CellOutcome` with a one-line reason and a `failure.json`
in the cell folder, so one failing cell never stops the others (bad data found while the cell
runs included). Configuration errors (a BenchError while the cell is built) propagate: they
concern the whole grid.

On several processes (bench.runtime.distributed) rank 0 takes the lock and writes failure.json; every
rank learns whether the cell is locked and ends with the same outcome.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass

from bench.errors import BenchError
from bench.pipeline.assemble import CellSpec, RunRequest, build_cell
from bench.pipeline.runner import run_cell
from bench.runtime import distributed
from bench.store.artifacts import remove_leftovers, write_json_atomic
from bench.store.lock import CellLock, CellLocked

log = logging.getLogger(__name__)
FAILURE = "failure.json"


@dataclass
class CellOutcome:
    """What happened to one cell: "ok" (with its record), "failed" or "locked" (with a reason).

    "locked" is no failure: another live run holds the cell and will finish it.
    """

    label: str
    status: str
    record: dict | None = None
    reason: str = ""


def execute_cell(spec: CellSpec, request: RunRequest) -> CellOutcome:
    """Lock, build and run one cell; a failure is recorded in failure.json and returned, not raised."""
    folder = spec.folder(request.results_dir)
    lock, busy = _lock(folder) if distributed.is_main() else (None, None)
    busy = distributed.agree(busy)
    if busy:
        log.warning("%s: %s; skipped", spec.label, busy)
        return CellOutcome(spec.label, "locked", reason=busy)
    try:
        distributed.on_main(lambda: remove_leftovers(folder, recursive=True))
        return _run(spec, request, folder)
    finally:
        if lock is not None:
            lock.release()


def _lock(folder) -> tuple[CellLock | None, str | None]:
    """The cell's lock, or why another live run holds it."""
    try:
        return CellLock.acquire(folder), None
    except CellLocked as busy:
        return None, str(busy)


def _run(spec: CellSpec, request: RunRequest, folder) -> CellOutcome:
    """Run the locked cell, isolating any failure that is not a configuration error.

    A BenchError while the cell is built is bad configuration, which concerns the whole grid
    (validation normally catches it first); one while it runs is a problem of this cell's data
    (a NaN image, a file that vanished): the cell fails and the others go on.
    """
    cell = build_cell(spec, request)
    try:
        record = run_cell(cell, request.results_dir)
    except Exception as exc:  # one failing cell must not stop the others
        first = str(exc).splitlines()[0] if str(exc).strip() else ""
        reason = first if isinstance(exc, BenchError) else f"{type(exc).__name__}: {first}"
        log.error("%s: failed: %s", spec.label, reason)
        if distributed.is_main():
            write_json_atomic(
                folder / FAILURE, {"status": "failed", "reason": reason, "traceback": traceback.format_exc()}
            )
        return CellOutcome(spec.label, "failed", reason=reason)
    if distributed.is_main():
        (folder / FAILURE).unlink(missing_ok=True)
    return CellOutcome(spec.label, "ok", record=record)
