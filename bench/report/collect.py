"""Read an experiment folder's stored records against its declared grid (for tables and figures).

Every cell of the grid gets a status: `ok` (a record of the expected configuration), `missing`
(no record; the note says why when the cell left a failure.json), or `refused` (a record written
under another configuration than the grid's, or, for folders without grid.json, a seed whose
configuration differs from the newest seed of the same dataset and method). Reports show every
non-ok cell as a dash with its note; nothing is dropped silently.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from bench.config.gin_config import digest
from bench.errors import BenchError
from bench.store.gridfile import GridFile, cell_label, read_grid
from bench.store.records import RECORD, read_record, record_problem

log = logging.getLogger(__name__)
OK, MISSING, REFUSED = "ok", "missing", "refused"


@dataclass
class CellResult:
    """One grid cell as found on disk."""

    dataset: str
    method: str
    seed: int
    folder: Path
    record: dict | None = None
    status: str = MISSING
    note: str = ""
    problem: str = ""  # how the stored record breaks the record schema (bench.store.schema)

    @property
    def label(self) -> str:
        return cell_label(self.dataset, self.method, self.seed)


@dataclass
class Experiment:
    """The cells of one experiment folder, with the axes in the order of the experiment config."""

    name: str
    folder: Path
    datasets: list
    methods: list
    seeds: list
    cells: dict = field(default_factory=dict)  # (dataset, method, seed) -> CellResult
    has_grid: bool = True
    expected_metrics: dict = field(default_factory=dict)  # dataset -> {metric: higher_is_better}
    parts: list = field(
        default_factory=list
    )  # experiments united into this one (bench.paper.claim_experiments)

    def records(self, dataset: str | None = None, method: str | None = None) -> list[dict]:
        """The usable records (status ok), in dataset, method, seed order, optionally filtered."""
        return [c.record for c in self.results(dataset, method) if c.status == OK]

    def results(self, dataset: str | None = None, method: str | None = None) -> list[CellResult]:
        """Every cell of the grid, usable or not, in dataset, method, seed order."""
        return [
            self.cells[(d, m, s)]
            for d in self.datasets
            for m in self.methods
            for s in self.seeds
            if (d, m, s) in self.cells and dataset in (None, d) and method in (None, m)
        ]

    def problems(self) -> list[CellResult]:
        """Cells that are missing or refused."""
        return [c for c in self.results() if c.status != OK]

    def methods_of(self, dataset: str) -> list[str]:
        """Methods with at least one cell (usable or not) on `dataset`, in config order."""
        return [m for m in self.methods if any(k[:2] == (dataset, m) for k in self.cells)]


def load_experiment(folder: Path, warn: bool = True, require: bool = True, strict: bool = True) -> Experiment:
    """Collect the records of `<results_dir>/<experiment>` (a clear error if it holds none, unless
    `require` is off: one part of several, bench.paper.claim_experiments); `warn` logs every
    missing or refused cell. `strict`: a record that breaks the record schema is an error naming
    its file and field (reports); else its cell is set aside with that note (the summary a run
    writes, whose own records stand)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BenchError(f"{folder}: no such results folder; pass an experiment folder such as results/quick")
    grid = read_grid(folder)
    found = _found_records(folder)
    if grid is None and not found:
        below = sorted(p.name for p in folder.iterdir() if (p / "grid.json").is_file())
        hint = f" (experiments here: {', '.join(below)})" if below else ""
        raise BenchError(
            f"{folder} holds no bench records; pass an experiment folder such as results/quick{hint}"
        )
    exp = _from_grid(folder, grid) if grid else _from_records(folder, found)
    if strict:
        refuse_invalid(exp)
    if require:
        require_a_record(exp)
    for cell in exp.problems() if warn else []:
        log.warning("%s: %s", cell.label, cell.note)
    return exp


def refuse_invalid(exp: Experiment) -> None:
    """One error naming the first record (file and field) that breaks the record schema."""
    invalid = [c for c in exp.results() if c.problem]
    if invalid:
        more = f"; {len(invalid) - 1} more record(s) break it too" if len(invalid) > 1 else ""
        raise BenchError(
            f"{invalid[0].folder / RECORD}: {invalid[0].problem}{more}; the record does not match "
            "bench's record schema (docs/records.md): fix or delete it, or rerun the cell with `bench run`"
        )


def require_a_record(exp: Experiment) -> None:
    """One error naming the first problem when no cell is usable (instead of a warning per cell)."""
    problems = exp.problems()
    if exp.records() or not problems:
        return
    first, more = problems[0], f"; {len(problems) - 1} more cell(s) like it" if len(problems) > 1 else ""
    raise BenchError(
        f"{exp.folder}: no cell has a usable record ({first.label}: {first.note}{more}); "
        "run them with `bench run` first"
    )


def _found_records(folder: Path) -> dict:
    """(dataset, method, seed) -> record folder for every record.json under the experiment."""
    out = {}
    for path in sorted(folder.glob(f"*/*/seed*/{RECORD}")):
        seed = path.parent.name[len("seed") :]
        if seed.isdigit():
            out[(path.parent.parent.parent.name, path.parent.parent.name, int(seed))] = path.parent
    return out


def _from_grid(folder: Path, grid: GridFile) -> Experiment:
    """Cells as declared by grid.json, each checked against its expected config hash."""
    exp = Experiment(
        grid.experiment,
        folder,
        list(grid.datasets),
        list(grid.methods),
        list(grid.seeds),
        expected_metrics=grid.metrics,
    )
    for d in grid.datasets:
        for m in grid.methods:
            for s in grid.seeds:
                expected = grid.expected(d, m, s)
                if expected is not None:
                    exp.cells[(d, m, s)] = _check(CellResult(d, m, s, folder / d / m / f"seed{s}"), expected)
    return exp


def _check(cell: CellResult, expected: str | None = None) -> CellResult:
    """Set the cell's record and status from its folder (hash checked unless `expected` is None)."""
    record = read_record(cell.folder)
    problem = None if record is None else record_problem(record)
    if record is None:
        cell.note = _why_missing(cell.folder)
    elif problem:
        cell.problem = problem
        cell.note = f"{cell.folder / RECORD} breaks the record schema ({problem}); rerun the cell"
    elif expected is not None and record.get("config_hash") != expected:
        cell.status = REFUSED
        cell.note = (
            f"record has config {record.get('config_hash')} but the grid expects {expected} (the "
            "cell was rerun with another configuration); rerun `bench run` or delete the record"
        )
    else:
        cell.record, cell.status = record, OK
    return cell


def _why_missing(folder: Path) -> str:
    """'no record' plus the failure reason when the cell recorded one."""
    if (folder / RECORD).exists():
        return f"{folder / RECORD} is unreadable (truncated, not JSON or not a JSON object); rerun the cell"
    try:
        reason = json.loads((folder / "failure.json").read_text(encoding="utf-8"))["reason"]
        return f"no record: the cell failed ({reason})"
    except (OSError, ValueError, KeyError, TypeError):
        return "no record: the cell has not run (or was deleted)"


def _from_records(folder: Path, found: dict) -> Experiment:
    """Without grid.json: axes in first-seen order; seeds must share their row's configuration."""
    first = next(iter(read_record(p) or {} for p in found.values()))
    exp = Experiment(first.get("experiment", folder.name), folder, [], [], [], has_grid=False)
    for (d, m, s), path in found.items():
        for axis, value in ((exp.datasets, d), (exp.methods, m), (exp.seeds, s)):
            if value not in axis:
                axis.append(value)
        exp.cells[(d, m, s)] = _check(CellResult(d, m, s, path))
    for d in exp.datasets:
        for m in exp.methods:
            _refuse_odd_configs([c for c in exp.results(d, m) if c.status == OK])
    exp.seeds.sort()
    return exp


def config_fingerprint(record: dict) -> str:
    """Hash of a record's configuration without the grid axes: equal across seeds of one row."""
    lines = [ln for ln in str(record.get("config", "")).splitlines() if not ln.startswith("grid.")]
    return digest("\n".join(lines))


def _refuse_odd_configs(cells: list[CellResult]) -> None:
    """Refuse the seeds whose configuration differs from the newest seed's."""
    if len(cells) < 2:
        return
    newest = max(cells, key=lambda c: c.record.get("created", ""))
    reference = config_fingerprint(newest.record)
    for cell in cells:
        if config_fingerprint(cell.record) != reference:
            cell.status, cell.record = REFUSED, None
            cell.note = (
                f"its configuration differs from {newest.label}'s (newest); rerun it with the "
                "same configuration or delete it"
            )
