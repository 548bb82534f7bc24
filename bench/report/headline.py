"""The answer an experiment gives, per dataset, as the numbers the report's headline figure draws.

Two panels per dataset, each only when the records hold its metric:

- the **tail metric**: the first headline metric by rank (bench.report.declarations: what the
  evaluators declare with `Metric(headline=True)`) whose name is a tail one (`fid/tail`,
  `swd/tail`, ...), else the first headline metric that is not a downstream one. Each method's
  value per generative seed, and its source-only value (`<metric>@source`: the method's source
  samples decoded with no flow) where the records hold it;
- the **downstream metric**: the first headline metric with a no-augmentation breakdown
  (`bacc` with `bacc/no_aug`), each method's value per generative seed, with two reference levels:
  no augmentation and the best long-tail remedy on real data alone (`bacc/<remedy>`, the best mean
  in the metric's direction; bench.report.summary.remedies_in).

The unit is the generative seed, as in the tables: one value per usable record (a downstream value
is the record's own mean over its classifier seeds). Nothing here draws (bench.report.figures does).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from bench.report.collect import Experiment
from bench.report.declarations import metric_title
from bench.report.summary import headline_columns, remedies_in

NO_AUG = "/no_aug"
SOURCE = "@source"
TAIL = "/tail"


@dataclass(frozen=True)
class Values:
    """One number per generative seed (seed -> value), with its mean and sample std."""

    by_seed: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.by_seed)

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.by_seed.values()) if self.by_seed else None

    @property
    def std(self) -> float | None:
        """Sample std over seeds (None with fewer than two)."""
        return statistics.stdev(self.by_seed.values()) if self.n > 1 else None


@dataclass(frozen=True)
class Arm:
    """One method on one metric: its values, and its source-only values (empty when not recorded)."""

    method: str
    values: Values
    source: Values = field(default_factory=Values)


@dataclass(frozen=True)
class Level:
    """A reference level drawn across the methods (no augmentation, the best remedy)."""

    label: str
    values: Values


@dataclass(frozen=True)
class Panel:
    """One metric of one dataset's headline figure."""

    metric: str
    title: str
    higher_is_better: bool | None
    arms: list
    levels: list = field(default_factory=list)


def _values(records: list[dict], metric: str) -> Values:
    """The metric of each record by its generative seed (records of one (dataset, method))."""
    return Values(
        {
            r["seed"]: float(r["metrics"][metric])
            for r in records
            if isinstance(r.get("metrics", {}).get(metric), (int, float))
        }
    )


def _shared(records: list[dict], metric: str) -> Values:
    """A metric every method's record of a seed shares (real data only): the first record's per seed."""
    out: dict = {}
    for r in records:
        value = r.get("metrics", {}).get(metric)
        if isinstance(value, (int, float)):
            out.setdefault(r["seed"], float(value))
    return Values(out)


def _direction(records: list[dict], metric: str) -> bool | None:
    for r in records:
        if metric in r.get("higher_is_better", {}):
            return bool(r["higher_is_better"][metric])
    return None


def headline_metrics(records: list[dict]) -> tuple[str | None, str | None]:
    """(tail metric, downstream metric) of one dataset's records; None where they hold none."""
    columns = headline_columns(records)
    downstream = [m for m in columns if any(m + NO_AUG in r.get("metrics", {}) for r in records)]
    # not the downstream metrics nor what derives from them (bacc_gain)
    others = [m for m in columns if not any(m.startswith(d) for d in downstream)]
    tail = next((m for m in others if TAIL in m), others[0] if others else None)
    return tail, downstream[0] if downstream else None


def best_remedy(records: list[dict], metric: str, higher: bool | None) -> tuple[str, Values] | None:
    """(remedy, its values) of the long-tail remedy on real data alone with the best mean, or None."""
    scored = [(r, _shared(records, f"{metric}/{r}")) for r in remedies_in(records)[0]]
    scored = [(r, v) for r, v in scored if v.n]
    if not scored:
        return None
    pick = max if higher is not False else min
    return pick(scored, key=lambda rv: rv[1].mean)


def _panel(exp: Experiment, dataset: str, metric: str, downstream: bool) -> Panel:
    records = exp.records(dataset)
    higher = _direction(records, metric)
    arms = [
        Arm(m, _values(exp.records(dataset, m), metric), _values(exp.records(dataset, m), metric + SOURCE))
        for m in exp.methods_of(dataset)
    ]
    levels = []
    if downstream:
        levels.append(Level("no augmentation", _shared(records, metric + NO_AUG)))
        best = best_remedy(records, metric, higher)
        if best is not None:
            levels.append(Level(f"best remedy: {best[0]}", best[1]))
    return Panel(metric, metric_title(records, metric), higher, arms, [lv for lv in levels if lv.values.n])


def headline_panels(exp: Experiment, dataset: str) -> list[Panel]:
    """The dataset's headline panels (tail metric, then downstream metric), those it has."""
    records = exp.records(dataset)
    if not records:
        return []
    tail, downstream = headline_metrics(records)
    return [
        _panel(exp, dataset, metric, is_downstream)
        for metric, is_downstream in ((tail, False), (downstream, True))
        if metric is not None
    ]
