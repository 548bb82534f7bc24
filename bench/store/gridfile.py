"""`grid.json`: the experiment's declared grid, so reports know what should exist.

`bench run` writes it into `<results_dir>/<experiment>/` after validating the grid and before any
cell runs. Reports read it for the order of rows and columns (the order of the experiment config)
and for the config hash each cell must have: a cell without a record is reported missing, and a
record written under another configuration is refused rather than mixed into the tables.

Runs that add cells to an experiment (`bench run methods=[cbfm]` after `methods=[fm]`) extend
the file: axes keep their first-seen order and each cell keeps the hash of its latest run.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import BenchError
from bench.store.artifacts import write_json_atomic
from bench.store.filelock import exclusive
from bench.store.records import read_record
from bench.store.schema import check, first_problem

log = logging.getLogger(__name__)
GRID = "grid.json"
GRID_LOCK = ".grid.lock"
REBUILD = "; rerun `bench run` for this experiment: it rebuilds the file from the records"


@dataclass
class GridFile:
    """Axes in config order and the expected config hash of every cell (label -> hash)."""

    experiment: str
    methods: list = field(default_factory=list)
    datasets: list = field(default_factory=list)
    seeds: list = field(default_factory=list)
    cells: dict = field(default_factory=dict)
    # dataset -> {metric: higher_is_better} its evaluators can return, so reports keep a column
    # (with dashes and a note) even when no record of the dataset survives
    metrics: dict = field(default_factory=dict)

    def add(
        self, dataset: str, method: str, seed: int, config_hash: str, metrics: dict | None = None
    ) -> None:
        """Declare one cell (appending new axis values at the end) and its evaluators' metrics."""
        for axis, value in ((self.datasets, dataset), (self.methods, method), (self.seeds, seed)):
            if value not in axis:
                axis.append(value)
        self.cells[cell_label(dataset, method, seed)] = config_hash
        self.metrics.setdefault(dataset, {}).update(metrics or {})

    def expected(self, dataset: str, method: str, seed: int) -> str | None:
        """The config hash the cell was last run with, or None if the grid never had it."""
        return self.cells.get(cell_label(dataset, method, seed))

    def to_json(self) -> dict:
        return {
            "experiment": self.experiment,
            "methods": self.methods,
            "datasets": self.datasets,
            "seeds": self.seeds,
            "cells": self.cells,
            "metrics": self.metrics,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


def cell_label(dataset: str, method: str, seed: int) -> str:
    """`dataset/method/seed<k>`, the label used in messages and in grid.json."""
    return f"{dataset}/{method}/seed{seed}"


def read_grid(experiment_dir: Path) -> GridFile | None:
    """The grid of an experiment folder, None when it has no grid.json; a corrupt file, or one that
    breaks the grid schema (bench/store/schemas/grid.schema.json), is an error naming the field."""
    path = Path(experiment_dir) / GRID
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchError(f"{path} is unreadable ({type(exc).__name__}: {exc}){REBUILD}") from None
    problem = first_problem(data, "grid")  # names become folders: `..` would read outside the experiment
    if problem:
        raise BenchError(f"{path} is unreadable ({problem}){REBUILD}")
    return GridFile(
        data["experiment"],
        list(data["methods"]),
        list(data["datasets"]),
        list(data["seeds"]),
        dict(data["cells"]),
        dict(data.get("metrics", {})),
    )


def _is_folder_name(name) -> bool:
    """A single path component: a string without separators that is not '.' or '..'."""
    return isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\")


def evaluator_metrics(cell) -> dict:
    """{metric: higher_is_better} of the cell's evaluators that apply to its dataset's kind."""
    kind = getattr(getattr(cell, "dataset", None), "kind", None)
    return {
        name: bool(higher)
        for ev in getattr(cell, "evaluators", [])
        if kind in ev.applies_to
        for name, higher in ev.higher_is_better.items()
    }


def declare_cells(results_dir: Path, experiment: str, cells: list) -> Path:
    """Merge the validated cells (bench.pipeline.assemble.BuiltCell) into the experiment's grid.json.

    The read, merge and write happen under an exclusive lock (`.grid.lock`, bench.store.filelock), so
    two runs declaring different grids in one folder at once both end up in the file. A
    damaged grid.json is rebuilt from the records on disk (with a warning), not a dead end.
    """
    folder = Path(results_dir) / experiment
    try:  # the run's first write: an unusable results_dir fails here, before any cell
        folder.mkdir(parents=True, exist_ok=True)
        with exclusive(folder / GRID_LOCK):
            grid = _readable_grid(folder, experiment)
            for cell in cells:
                spec = cell.spec
                grid.add(spec.dataset, spec.method, spec.seed, cell.config_hash, evaluator_metrics(cell))
            data = grid.to_json()
            check(data, "grid", f"{folder / GRID} not written: the grid breaks bench's grid schema")
            write_json_atomic(folder / GRID, data)
    except OSError as exc:
        raise BenchError(
            f"cannot write {folder / GRID} ({exc.strerror or type(exc).__name__}); "
            "set results_dir=DIR to a writable folder"
        ) from None
    return folder / GRID


def _readable_grid(folder: Path, experiment: str) -> GridFile:
    """The experiment's grid, an empty one, or (grid.json damaged) one rebuilt from its records."""
    try:
        grid = read_grid(folder)
    except BenchError as exc:
        log.warning("%s; rebuilding it from the records in %s", str(exc).split(REBUILD)[0], folder)
        return grid_from_records(folder, experiment)
    if grid is not None and grid.experiment != experiment:
        log.warning("%s names experiment %r; rebuilding it from the records", folder / GRID, grid.experiment)
        return grid_from_records(folder, experiment)
    return grid or GridFile(experiment)


def grid_from_records(folder: Path, experiment: str) -> GridFile:
    """A grid declaring every cell that has a usable record under `folder` (dataset/method/seedK)."""
    grid = GridFile(experiment)
    for path in sorted(Path(folder).glob("*/*/seed*/record.json")):
        record = read_record(path.parent)
        try:
            dataset, method, seed = record["dataset"], record["method"], int(record["seed"])
            config_hash = str(record["config_hash"])
        except (TypeError, KeyError, ValueError):
            continue
        if not (_is_folder_name(dataset) and _is_folder_name(method)):
            continue
        higher = record.get("higher_is_better")
        grid.add(
            dataset,
            method,
            seed,
            config_hash,
            {str(k): bool(v) for k, v in higher.items()} if isinstance(higher, dict) else {},
        )
    return grid
