"""Run a whole grid: validate every cell first, then run them on an executor, isolating failures."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from bench.pipeline.assemble import RunRequest, require_fits, validate
from bench.report.collect import load_experiment
from bench.report.summary import summary_table
from bench.runtime import distributed
from bench.scale.executors import get_executor
from bench.scale.pool import longest_first
from bench.store.artifacts import write_text_atomic
from bench.store.gridfile import declare_cells

log = logging.getLogger(__name__)


@dataclass
class GridResult:
    """Records of the finished cells and messages of the failed ones."""

    records: list = field(default_factory=list)
    failures: dict = field(default_factory=dict)  # cell label -> one-line reason
    summary_path: Path | None = None
    comparison: list = field(default_factory=list)  # every usable record of the experiment on disk


def run_grid(request: RunRequest) -> GridResult:
    """Validate the whole grid and the executor, then run the cells on it (bench.scale.executors).

    Nothing is written or submitted on bad input; every executor gives the same GridResult. On
    several processes (bench.runtime.distributed) all go through the cells together; rank 0 writes the files.
    """
    executor = get_executor(request)
    cells = validate(request)
    require_fits(cells, executor.config)
    distributed.on_main(lambda: print_preview(cells, request))
    distributed.on_main(lambda: declare_cells(request.results_dir, request.experiment, cells))
    specs = [cell.spec for cell in cells]
    result = GridResult()
    for spec, outcome in zip(specs, executor.run(specs, [c.spec for c in longest_first(cells)])):
        if outcome.status == "ok":
            result.records.append(outcome.record)
        elif outcome.status == "failed":
            result.failures[spec.label] = outcome.reason
        else:  # e.g. "locked": another bench process is running this cell
            log.warning("%s not run here (%s): %s", spec.label, outcome.status, outcome.reason)
    distributed.on_main(lambda: write_summary(result, Path(request.results_dir) / request.experiment))
    return result


def print_preview(cells: list, request: RunRequest) -> None:
    """The grid this run will train, with each cell's estimated GPU-hours, peak memory and disk
    (bench.pipeline.preview), printed before anything trains."""
    from bench.pipeline.preview import describe, grid_preview

    views, assumptions = describe(cells, request)
    print(grid_preview(views, assumptions, request.experiment), flush=True)


def write_summary(result: GridResult, experiment_dir: Path) -> None:
    """summary.md of every usable record of the experiment on disk, not only this run's: several
    processes may share a grid (each skips the cells another one holds)."""
    records = load_experiment(experiment_dir, warn=False, strict=False).records() if result.records else []
    result.comparison = records
    if records:
        result.summary_path = experiment_dir / "summary.md"
        write_text_atomic(
            result.summary_path,
            "## Headline metrics\n\n"
            + summary_table(records)
            + "\n\n## All metrics\n\n"
            + summary_table(records, full=True)
            + "\n",
        )
