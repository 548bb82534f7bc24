"""Per-seed numbers out of an experiment's stored records, and the Markdown they are shown in.

The claims report (bench.paper.claims) reads every number through `seed_values`: one value per
generative seed, the record's plain metric (downstream metrics are already the mean over the
seed's classifiers), so each number in the report traces back to one record field.
"""

from __future__ import annotations

import math
import statistics

from bench.metrics.significance import ZERO_TOL
from bench.paper.claim_rules import number
from bench.report.collect import Experiment
from bench.report.tables import direction

# directions of the metrics the claims rest on, for records that do not state them
KNOWN_DIRECTIONS = {
    "fid/tail": False,
    "irs_inf/tail": True,
    "swd/tail": False,
    "bacc": True,
    "macro_f1": True,
}
DASH = "–"
ROUNDING = 1e-9  # a std this small relative to the mean is float rounding of equal values


def seed_values(exp: Experiment, dataset: str, method: str, metric: str) -> dict[int, float]:
    """{generative seed: value} of `metric` in the usable records of (dataset, method), finite values only."""
    out = {}
    for rec in exp.records(dataset, method):
        value = rec.get("metrics", {}).get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[int(rec["seed"])] = float(value)
    return out


def as_runs(values: dict[int, float]) -> dict:
    """{(seed,): value}: the run-dict form bench.metrics.significance pairs by generative seed."""
    return {(seed,): value for seed, value in values.items()}


def seed_differences(a: dict[int, float], b: dict[int, float]) -> dict[int, float]:
    """{seed: a - b} over the seeds both hold (rounding noise below ZERO_TOL set to 0, as the tests do)."""
    return {s: 0.0 if abs(a[s] - b[s]) <= ZERO_TOL else a[s] - b[s] for s in sorted(set(a) & set(b))}


def holds_metric(exp: Experiment, dataset: str, metric: str) -> bool:
    """A usable record of the dataset holds the metric, or grid.json declares it for the dataset."""
    if any(metric in r.get("metrics", {}) for r in exp.records(dataset)):
        return True
    return metric in exp.expected_metrics.get(dataset, {})


def higher_is_better(exp: Experiment, metric: str) -> bool:
    """The metric's direction as the records state it (else as the evaluators define it)."""
    stated = direction(exp, metric)
    return KNOWN_DIRECTIONS.get(metric, True) if stated is None else stated


def arrow(exp: Experiment, metric: str) -> str:
    return "↑" if higher_is_better(exp, metric) else "↓"


# ---- formatting -------------------------------------------------------------------------------


def mean_std(values, n_table: int | None = None) -> str:
    """'mean ± sample std' (4 and 3 significant digits); '(n = k)' when k differs from the table's n."""
    values = list(values)
    if not values:
        return DASH
    if len(values) == 1:
        text = number(values[0])
    else:
        mean, std = statistics.mean(values), statistics.stdev(values)
        std = 0.0 if std <= ROUNDING * abs(mean) else std  # equal values up to float rounding
        text = f"{number(mean)} ± {std:.3g}"
    return text if n_table is None or len(values) == n_table else f"{text} (n = {len(values)})"


def per_seed(values: dict[int, float]) -> str:
    """'seed 0: 1.23, seed 1: -0.4' in seed order."""
    return ", ".join(f"seed {s}: {number(v)}" for s, v in sorted(values.items())) or DASH


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A GitHub Markdown table (pipes in cells escaped), followed by a blank line."""
    lines = ["| " + " | ".join(map(_cell, header)) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(_cell, row)) + " |" for row in rows] + [""]


def _cell(text) -> str:
    return str(text).replace("|", "\\|")


def n_caption(counts) -> str:
    """'n = 3 generative seeds' (or a range) for a table whose cells hold `counts` seeds."""
    counts = sorted({c for c in counts if c})
    if not counts:
        return "no seeds"
    if len(counts) == 1:
        return f"n = {counts[0]} generative seed{'' if counts == [1] else 's'}"
    return f"n = {counts[-1]} generative seeds (a cell over fewer says so: n = {counts[0]} at least)"
