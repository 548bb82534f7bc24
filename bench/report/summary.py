"""The end-of-run summary: one table per dataset, mean +- std over seeds, from stored records.

What `bench run` prints is the *headline* summary: per dataset, methods as rows and only the
metrics a comparison is read from: those the records' evaluators declare headline metrics
(`bench.evaluator.Metric`, by rank; for the built-ins tail and pooled FID, KID, IRS, SWD, coverage,
conditional accuracy, downstream balanced accuracy / macro-F1 and its gain over no augmentation;
records written before metrics declared themselves get these: bench.report.declarations), followed
by one line for each number a reader could misread (`reading_notes`). Columns are titled by metric
name with its direction arrow.
References and diagnostics (per-class values, geometry, Bayes risk, probes) are in the full
summary (`full=True`, summary.md) and the `bench report` tables.

Each method gets one row of its metrics; below it, when its records hold them, a
"<method> (source only)" row with the `<metric>@source` values (the method's source samples
decoded with no flow) and a "<method> (untrained)" row with the `<metric>@init` values (the
untrained network), each under its plain metric's column, never interleaved with the main
metrics. Metrics equal to another one in every record (values and direction) share one column,
titled "a = b". A method whose training did not converge in some seed is marked ‡, with a note
under its dataset's table.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from tabulate import tabulate

from bench.report.declarations import headline_columns as declared_headline
from bench.report.protocol import protocol_line

# metric-name suffix -> label of the reference line it belongs to, in display order
VARIANTS = {"@source": "source only", "@init": "untrained"}
UNCONVERGED = "‡"
SMALL_FID_N = (
    2048  # below this many images per set FID's upward small-sample bias is large (Chong & Forsyth 2020)
)


def split_variant(name: str) -> tuple[str, str | None]:
    """(plain metric, variant suffix or None): 'fid/tail@source' -> ('fid/tail', '@source')."""
    for suffix in VARIANTS:
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return name, None


def headline_metrics(records: Iterable[dict]) -> list[str]:
    """Plain metric names to show: no per-class breakdowns, variants under their plain name; first-seen order."""
    names: list[str] = []
    for rec in records:
        for name in rec.get("metrics", {}):
            base = split_variant(name)[0]
            if "/class/" not in base and base not in names:
                names.append(base)
    return names


def mean_std(values: list[float]) -> str:
    """'m' for one value, 'm ± s' (sample std) for several, '-' for none."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"


def _direction(records: list[dict], name: str) -> bool | None:
    for rec in records:
        if name in rec.get("higher_is_better", {}):
            return bool(rec["higher_is_better"][name])
    return None


def _arrow(records: list[dict], name: str) -> str:
    higher = _direction(records, name)
    return name if higher is None else f"{name} {'↑' if higher else '↓'}"


def merged_metrics(records: list[dict], names: list[str]) -> list[list[str]]:
    """Groups of metrics identical in every record (all variants too) and of one direction, first-seen order."""
    groups: dict = {}
    for name in names:
        key = (
            _direction(records, name),
            tuple(tuple(r["metrics"].get(name + s) for s in ("", *VARIANTS)) for r in records),
        )
        groups.setdefault(key, []).append(name)
    return list(groups.values())


def convergence_text(records: list[dict]) -> str:
    """'seed0, seed2 (smoothed loss changed by 4.1%, 3% over the last 20% of steps (200 of 1,000), threshold 2%)'."""
    seeds = ", ".join(f"seed{r.get('seed')}" for r in records)
    stats = [(r.get("train") or {}).get("convergence") or {} for r in records]
    changes = [f"{100 * s['rel_change']:.2g}%" for s in stats if _is_number(s.get("rel_change"))]
    if not changes:
        return seeds
    threshold = stats[0].get("threshold")
    limit = f", threshold {100 * threshold:.2g}%" if _is_number(threshold) else ""
    return f"{seeds} (smoothed loss changed by {', '.join(changes)}{_window_text(records[0])}{limit})"


def _window_text(record: dict) -> str:
    """' over the last 20% of steps (200 of 1,000)': the convergence window, a step count
    (bench.pipeline.convergence)."""
    train = record.get("train") or {}
    window, steps = (train.get("convergence") or {}).get("window"), train.get("steps")
    if not _is_number(window):
        return ""
    if window < 1:  # a fraction of the steps
        return f" over the last {100 * window:.3g}% of steps"
    if _is_number(steps) and steps > 0:
        return f" over the last {100 * window / steps:.3g}% of steps ({window:,} of {steps:,})"
    return f" over the last {window:,} steps"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def unconverged(records: list[dict]) -> list[dict]:
    """Records whose training stated it did not converge (None or missing: not known, not listed)."""
    return [r for r in records if (r.get("train") or {}).get("converged") is False]


def headline_columns(records: list[dict]) -> list[str]:
    """The headline metrics some record has (bench.report.declarations); every plain metric if none."""
    return declared_headline(records) or headline_metrics(records)


def summary_rows(records: list[dict], names: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows for one dataset's records: one row per method (plus its reference lines),
    over seeds; `names` picks the metrics (default: every plain metric)."""
    groups = merged_metrics(records, headline_metrics(records) if names is None else names)
    by_method: dict[str, list[dict]] = {}
    for rec in records:
        by_method.setdefault(rec["method"], []).append(rec)
    header = ["method", "seeds"] + [" = ".join(_arrow(records, n) for n in g) for g in groups] + ["train s"]
    rows = []
    for method, recs in by_method.items():
        label = method + (f" {UNCONVERGED}" if unconverged(recs) else "")
        row = [label, str(len(recs))] + [_cell(recs, g[0]) for g in groups]
        rows.append(row + [mean_std([r.get("train", {}).get("seconds", 0.0) for r in recs])])
        for suffix, what in VARIANTS.items():
            holding = [r for r in recs if any(g[0] + suffix in r["metrics"] for g in groups)]
            if holding:
                rows.append(
                    [f"{method} ({what})", str(len(holding))]
                    + [_cell(recs, g[0] + suffix, blank="") for g in groups]
                    + [""]
                )
    return header, rows


def _cell(recs: list[dict], name: str, blank: str = "-") -> str:
    values = [r["metrics"][name] for r in recs if name in r["metrics"]]
    return mean_std(values) if values else blank


def transposed(header: list[str], rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """Methods as columns and metrics as rows: readable when there are many metrics."""
    return ["metric"] + [r[0] for r in rows], [[h] + [r[i] for r in rows] for i, h in enumerate(header) if i]


def summary_notes(records: list[dict]) -> list[str]:
    """One line per method whose training did not converge in some seed."""
    by_method: dict[str, list[dict]] = {}
    for rec in unconverged(records):
        by_method.setdefault(rec["method"], []).append(rec)
    return [
        f"{UNCONVERGED} {m}: training did not converge for {convergence_text(recs)}"
        for m, recs in by_method.items()
    ]


def summary_table(records: list[dict], fmt: str = "github", max_columns: int = 10, full: bool = False) -> str:
    """The summary as text: one table per dataset, since datasets have different metrics.

    The headline metrics only, with the reading notes, unless `full`: then every plain metric,
    transposed (one row per metric) when there are more than `max_columns`.
    """
    if not records:
        return "(no finished cells)"
    by_dataset: dict[str, list[dict]] = {}
    for rec in records:
        by_dataset.setdefault(rec["dataset"], []).append(rec)
    blocks = []
    for dataset, recs in by_dataset.items():
        header, rows = summary_rows(recs, None if full else headline_columns(recs))
        if len(header) > max_columns + 3:
            header, rows = transposed(header, rows)
        table = tabulate(rows, headers=header, tablefmt=fmt, disable_numparse=True)
        notes = summary_notes(recs) + ([] if full else reading_notes(recs))
        protocol = protocol_line(recs)  # how these cells were trained and scored (bench.report.protocol)
        blocks.append(
            f"### {dataset}\n\n"
            + (f"{protocol}\n\n" if protocol else "")
            + table
            + "".join(f"\n\n{n}" for n in notes)
        )
    return "\n\n".join(blocks)


# ---- what a surprising number means --------------------------------------------------------------


def reading_notes(records: list[dict]) -> list[str]:
    """One line per number of one dataset's headline table that a reader could misread."""
    by_method: dict[str, list[dict]] = {}
    for rec in records:
        by_method.setdefault(rec["method"], []).append(rec)
    notes = [
        _seeds_note(records),
        _small_fid_note(records),
        _negative_gain_note(by_method),
        _remedy_note(records, by_method),
        *(_source_note(m, recs, headline_columns(records)) for m, recs in by_method.items()),
    ]
    return [n for n in notes if n]


def _mean(records: list[dict], name: str) -> float | None:
    values = [r["metrics"][name] for r in records if _is_number(r.get("metrics", {}).get(name))]
    return statistics.mean(values) if values else None


def _seeds_note(records: list[dict]) -> str | None:
    if max(sum(r["method"] == m for r in records) for m in {r["method"] for r in records}) > 1:
        return None
    return (
        "One generative seed per method: no ± and no significance test; differences may be seed "
        "noise (run seeds=[0,1,2] and `bench tables` to compare)."
    )


def _small_fid_note(records: list[dict]) -> str | None:
    n = _mean(records, "n/fid")
    if n is None or n >= SMALL_FID_N:
        return None
    return (
        f"fid on {n:,.0f} images per set (n/fid): FID is biased upwards at this size, so compare "
        "methods with each other at equal n, never with published FIDs."
    )


def _negative_gain_note(by_method: dict[str, list[dict]]) -> str | None:
    worse = {m: _mean(recs, "bacc_gain") for m, recs in by_method.items()}
    worse = {m: g for m, g in worse.items() if g is not None and g < 0}
    if not worse:
        return None
    base = _mean([r for recs in by_method.values() for r in recs], "bacc/no_aug")
    named = ", ".join(f"{m} ({g:+.3g})" for m, g in worse.items())
    return (
        f"bacc_gain < 0 for {named}: adding its synthetic images lowered balanced accuracy below the "
        f"classifiers trained without them" + (f" (bacc/no_aug {base:.3g})" if base is not None else "") + "."
    )


AUG_PREFIX = "aug+"  # `<metric>/aug+<remedy>`: a remedy on top of the method's synthetic set


def remedies_in(records: Iterable[dict]) -> tuple[list[str], list[str]]:
    """(remedies run on real data alone, remedies run on top of augmentation) that the records hold
    as `bacc/<remedy>` and `bacc/aug+<remedy>` (the downstream evaluator's keys), each sorted."""
    names = {k[len("bacc/") :] for r in records for k in r.get("metrics", {}) if k.startswith("bacc/")}
    names -= {"no_aug"}
    alone = sorted(n for n in names if not n.startswith(AUG_PREFIX) and "@" not in n)
    return alone, sorted(n[len(AUG_PREFIX) :] for n in names if n.startswith(AUG_PREFIX))


def _remedy_note(records: list[dict], by_method: dict[str, list[dict]]) -> str | None:
    """The best cheap long-tail remedy on real data alone (`bacc/<remedy>`) and the methods above it."""
    remedies = {n: _mean(records, f"bacc/{n}") for n in remedies_in(records)[0]}
    remedies = {n: v for n, v in remedies.items() if v is not None}
    if not remedies:
        return None
    best = max(remedies, key=remedies.get)
    above = [m for m, recs in by_method.items() if (_mean(recs, "bacc") or float("-inf")) > remedies[best]]
    return (
        f"best long-tail remedy without synthetic images: {best} (bacc {remedies[best]:.3g}); "
        + (f"methods above it: {', '.join(above)}" if above else "no method's synthetic images beat it")
        + " (every remedy and method + remedy: `bench tables`, downstream table)."
    )


def _source_note(method: str, records: list[dict], columns: list[str]) -> str | None:
    """When the source alone beats the flow on the first headline metric that has a source line."""
    name = next((c for c in columns if _mean(records, c + "@source") is not None), None)
    higher = _direction(records, name) if name else None
    flow, source = (_mean(records, name), _mean(records, name + "@source")) if name else (None, None)
    if higher is None or flow is None or source is None or (source > flow) != higher or source == flow:
        return None
    return (
        f"{method}: its source alone scores better than after the flow on {name} ({source:.4g} vs "
        f"{flow:.4g}): the learned flow makes these samples worse, not better."
    )
