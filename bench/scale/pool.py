"""Cells side by side on one machine: `executor=inline` with `executor.cells_at_once` = k > 1.

Small cells do not use a machine's cores well one at a time: a 2-core laptop trains the quick
run's tiny FLUX 1.87x faster on 2 threads than on 1, and much of a cell (Python between small
ops, scikit-learn, the downstream CNN's early stopping, start-up) runs on one core whatever the
thread count. So k cells run at once, each in a worker process of its own with
cores // k torch threads (`threads_per_cell`), which keeps every core busy and, on a busy
machine, degrades like one-thread runs do (bench.runtime.threads). By default (`cells_at_once=None`) a
machine without a GPU runs min(cells, usable cores, MAX_AUTO) at once; with a GPU, under
torchrun, or with one cell, one at a time (cells would compete for one device).

Each worker rebuilds its cell from the spec and the run request (gin's configuration lives in
one process) through `execute_cell`, as the submitit jobs do, so a failing cell is a failed
outcome and the others go on; a worker that dies (killed, out of memory) breaks the pool: the
cells running at that moment fail, and a new pool runs the ones not yet started (not tested).
Work that several cells of a dataset share (its latent cache, feature extractor, no-augmentation
and remedy classifiers) is built under a file lock (bench.store.filelock.building): one cell
builds it, another waits and reuses it. The cells are started longest first (`longest_first`, by
their training FLOPs) so the last ones to finish are short. Bars are off in the workers; each
writes its stage and cell lines whole, labelled with its cell, to the same stderr.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from bench.errors import BenchError
from bench.runtime.threads import CORES_ENV, usable_cores

log = logging.getLogger(__name__)
ENV = "BENCH_CELLS_AT_ONCE"
MAX_AUTO = 4  # [our default] cells at once when not set: beyond 4, each cell's memory adds up for little gain


def cells_at_once(setting, n_cells: int, launched: bool = False, cuda: bool | None = None) -> int:
    """How many cells run side by side: the setting, else BENCH_CELLS_AT_ONCE (an integer >= 1;
    bench's own tests set 1), never more than there are cells; else 1 on a GPU machine or under a
    multi-process launch, else min(cells, usable cores, MAX_AUTO)."""
    if setting is None and os.environ.get(ENV, ""):
        value = os.environ[ENV]
        if not value.isdigit() or int(value) < 1:
            raise BenchError(f"{ENV}={value!r}: use an integer >= 1 (cells run side by side), or unset it")
        setting = int(value)
    if setting is not None:
        return max(1, min(int(setting), n_cells))
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if launched or cuda:
        return 1
    return max(1, min(n_cells, usable_cores(), MAX_AUTO))


def threads_per_cell(k: int) -> int:
    """torch threads of each of k cells side by side: an equal share of the usable cores."""
    return max(1, usable_cores() // k)


def longest_first(cells: list) -> list:
    """The cells in the order to start them: most training FLOPs first (LPT scheduling: the cells
    that finish last are short ones), grid order among equals and for cells with no estimate."""

    def cost(cell) -> float:
        footprint = getattr(cell, "footprint", None)
        return 0.0 if footprint is None else footprint.flops_per_step * cell.config.train.steps

    return [cell for _, cell in sorted(enumerate(cells), key=lambda ic: (-cost(ic[1]), ic[0]))]


def run_side_by_side(specs: list, request, k: int) -> list:
    """Run `specs` k at a time in worker processes (started in the order given); their
    CellOutcomes in that order. Cells whose record is already stored are answered here, without
    a worker (a rerun of a finished grid starts none)."""
    outcomes = stored_outcomes(specs, request)
    todo = [spec for spec in specs if spec not in outcomes]
    if todo:
        outcomes |= dict(zip(todo, _run_workers(todo, request, min(k, len(todo)))))
    return [outcomes[spec] for spec in specs]


def stored_outcomes(specs: list, request) -> dict:
    """{spec: its "ok" CellOutcome} of the cells whose current record is stored (logged as skipped)."""
    from bench.pipeline.assemble import build_cell
    from bench.pipeline.execute import CellOutcome
    from bench.pipeline.runner import stored_record

    out = {}
    for spec in specs:
        try:
            record = stored_record(build_cell(spec, request), request.results_dir)
        except (
            Exception
        ) as exc:  # e.g. unreadable data: the cell's worker fails it, isolated, with its reason
            log.debug("%s: no stored record checked (%s); running it", spec.label, exc)
            continue
        if record is not None:
            log.info("%s: record exists for this config and data, skipped", spec.label)
            out[spec] = CellOutcome(spec.label, "ok", record=record)
    return out


def _run_workers(specs: list, request, k: int) -> list:
    """The CellOutcomes of `specs`, run k at a time in worker processes."""
    from bench.pipeline.execute import CellOutcome

    threads = threads_per_cell(k)
    log.info(
        "%d cells, %d at a time in worker processes, %d torch thread(s) each (executor.cells_at_once)",
        len(specs),
        k,
        threads,
    )
    outcomes, pending = {}, list(range(len(specs)))
    while pending:
        died = _run_pool(specs, pending, request, k, threads, outcomes)
        for i in died:
            reason = "its worker process died (killed, or out of memory?); rerun `bench run` to retry it"
            log.error("%s failed: %s", specs[i].label, reason)
            outcomes[i] = CellOutcome(specs[i].label, "failed", reason=reason)
        pending = [i for i in pending if i not in outcomes]
    return [outcomes[i] for i in range(len(specs))]


def _run_pool(specs: list, pending: list, request, k: int, threads: int, outcomes: dict) -> list:
    """One pool over the pending cells, at most k submitted at a time (so every submitted cell is
    running); fills `outcomes` and returns the cells whose worker died (the pool is then left)."""
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch's threads
    queue, running = list(pending), {}
    with ProcessPoolExecutor(
        max_workers=k, mp_context=context, initializer=_worker_setup, initargs=(threads, _log_settings())
    ) as pool:
        try:
            while queue or running:
                while queue and len(running) < k:
                    i = queue.pop(0)
                    running[pool.submit(_worker_cell, specs[i], request)] = i
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    i = running.pop(future)
                    try:
                        outcomes[i] = future.result()
                    except BrokenProcessPool:
                        return [i, *running.values()]
                    _log_done(len(outcomes), len(specs), outcomes[i])
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return []


def _log_done(k: int, n: int, outcome) -> None:
    detail = f": {outcome.reason}" if outcome.reason else ""
    log.info("[%d/%d] %s: %s%s", k, n, outcome.label, outcome.status, detail)


def _log_settings() -> tuple:
    """(root level, bench level, format) of this process's logging, for the workers."""
    root, handlers = logging.getLogger(), logging.getLogger().handlers
    fmt = handlers[0].formatter._fmt if handlers and handlers[0].formatter else "%(message)s"
    return root.level, logging.getLogger("bench").getEffectiveLevel(), fmt


def _worker_setup(threads: int, log_settings: tuple) -> None:
    """A worker: its share of the cores (set before torch starts its thread pool), no bars,
    logging as in the parent."""
    os.environ["OMP_NUM_THREADS"] = os.environ[CORES_ENV] = str(threads)
    root_level, bench_level, fmt = log_settings
    logging.basicConfig(level=root_level, format=fmt)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(CellFormatter(fmt))
    logging.getLogger("bench").setLevel(bench_level)
    import torch

    from bench.runtime import progress

    torch.set_num_threads(threads)
    progress.set_bars(False)


class CellFormatter(logging.Formatter):
    """Log lines of a worker, each labelled with the cell it runs ("synthetic2d/fm/seed0: ..."):
    lines that do not name it already (a plugin's own, e.g. optprior's subclass sizes) get it
    in front, so lines of cells side by side can be told apart."""

    label = ""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        label = CellFormatter.label
        return text if not label or label in text.split(":", 1)[0] else f"{label}: {text}"


def _worker_cell(spec, request):
    """One cell in a worker (bench.pipeline.execute.execute_cell: locked, isolated)."""
    from bench.pipeline.execute import execute_cell

    CellFormatter.label = spec.label
    try:
        return execute_cell(spec, request)
    finally:
        CellFormatter.label = ""
