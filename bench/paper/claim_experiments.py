"""The records a claims report judges: one experiment folder, or a folder of several experiments.

The claims protocol (docs/claims.md) sizes each claim differently: the prior's claims (a) and (b)
need many seeds but no flow, the flow claims (c) and (d) fewer seeds of the methods they compare.
So `results/claims` may hold one experiment per part (`claims_prior/`, `claims_vectors/`, ...,
each with its grid.json) rather than one grid.json of its own. `load_claims` reads them as one
experiment: the union of their cells. A cell present in two of them (optprior's seed 0 fitted by
the prior-only run and by the flow run) becomes one cell whose metrics are the union of both
records'; a metric both hold must agree (the prior fit is deterministic), else the report is
refused, naming the cell and the metric.

`check_stage_versions` refuses records of one method written by different versions of its offline
stage or training (`record["stage_versions"]`, bench.method.Method.prior_version / train_version):
a report that mixed them would compare two methods under one name.
"""

from __future__ import annotations

import math
from pathlib import Path

from bench.errors import BenchError
from bench.report.collect import OK, CellResult, Experiment, load_experiment, require_a_record

AGREE = 1e-9  # relative tolerance of a metric two records of one cell both hold (float rounding)
UNSTATED = "not recorded"


def load_claims(folder: Path) -> Experiment:
    """The experiment in `folder`, or the union of the experiments in its sub-folders (see module)."""
    folder = Path(folder)
    parts = sorted(p for p in folder.iterdir() if (p / "grid.json").is_file()) if folder.is_dir() else []
    if parts and (folder / "grid.json").is_file():
        raise BenchError(
            f"{folder} holds an experiment of its own (grid.json) and the experiments "
            f"{', '.join(p.name for p in parts)} below it; run that one with another results_dir "
            "(e.g. `bench run experiment=claims results_dir=results/claims3`) and delete its cells here"
        )
    if not parts:
        exp = load_experiment(folder)
    else:
        exp = merge([load_experiment(p, require=False) for p in parts], folder)  # a part may not have run yet
        require_a_record(exp)
    check_stage_versions(exp)
    return exp


def merge(parts: list[Experiment], folder: Path) -> Experiment:
    """One experiment holding every cell of `parts` (axes in first-seen order, seeds sorted)."""
    exp = Experiment(folder.name, folder, [], [], [], parts=[p.name for p in parts])
    for part in parts:
        for axis, values in (
            (exp.datasets, part.datasets),
            (exp.methods, part.methods),
            (exp.seeds, part.seeds),
        ):
            axis += [v for v in values if v not in axis]
        for dataset, metrics in part.expected_metrics.items():
            exp.expected_metrics.setdefault(dataset, {}).update(metrics)
        for key, cell in part.cells.items():
            exp.cells[key] = _combine(exp.cells[key], cell) if key in exp.cells else cell
    exp.seeds.sort()
    return exp


def _combine(a: CellResult, b: CellResult) -> CellResult:
    """One cell from two records of it: the usable one, or both records' metrics united (checked)."""
    if b.status != OK:
        return a
    if a.status != OK:
        return b
    base, other = (a, b) if len(a.record.get("metrics", {})) >= len(b.record.get("metrics", {})) else (b, a)
    metrics = dict(base.record["metrics"])
    for name, value in other.record["metrics"].items():
        if name in metrics and not _agree(metrics[name], value):
            raise BenchError(
                f"{a.label}: {name} is {metrics[name]!r} in {base.folder} but {value!r} in "
                f"{other.folder}; two runs of one cell disagree: rerun both at one commit"
            )
        metrics.setdefault(name, value)
    higher = {**other.record.get("higher_is_better", {}), **base.record.get("higher_is_better", {})}
    record = {**base.record, "metrics": metrics, "higher_is_better": higher}
    return CellResult(base.dataset, base.method, base.seed, base.folder, record, OK, base.note)


def _agree(x, y) -> bool:
    if isinstance(x, (int, float)) and isinstance(y, (int, float)):
        if math.isnan(x) and math.isnan(y):
            return True
        return abs(x - y) <= AGREE * max(abs(x), abs(y), 1e-300)
    return x == y


def stage_versions(record: dict) -> str:
    """'prior v2, train v1' of a record (UNSTATED for a record written before versions existed)."""
    v = record.get("stage_versions")
    if not isinstance(v, dict):
        return UNSTATED
    return f"prior v{v.get('prior')}, train v{v.get('train')}"


def check_stage_versions(exp: Experiment) -> None:
    """Refuse a method whose usable records were written by different versions of its stages."""
    for method in exp.methods:
        seen: dict[str, list[str]] = {}
        for cell in exp.results(method=method):
            if cell.status == OK:
                seen.setdefault(stage_versions(cell.record), []).append(cell.label)
        if len(seen) > 1:
            found = "; ".join(
                f"{v}: {', '.join(labels[:3])}{' ...' if len(labels) > 3 else ''}"
                for v, labels in seen.items()
            )
            raise BenchError(
                f"{exp.folder}: the records of {method} were written by different versions of its "
                f"offline stage or training ({found}); rerun the older cells with `bench run` at one "
                "commit so every record is current"
            )
