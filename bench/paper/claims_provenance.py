"""Where a claims report comes from and what qualifies it: the commands that regenerate it, the
commits and wall time of its records, the grid's missing cells, training adequacy, the report's
figures, and the hand-written analysis block that survives regeneration.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bench.paper.claim_records import md_table
from bench.report.collect import OK, Experiment
from bench.report.index import grid_summary, relative_link
from bench.report.summary import unconverged

ANALYSIS_START, ANALYSIS_END = "<!-- analysis -->", "<!-- /analysis -->"
# the figures `bench report` writes per dataset (bench.report.figures), each only when the records support it
FIGURES = (
    ("samples", "generated samples"),
    ("trajectories", "sampling trajectories"),
    ("class_recall", "per-class balanced accuracy"),
    ("geometry", "transport geometry"),
)


# ---- regeneration ---------------------------------------------------------------------------------


def commands(results: Path, out: Path, test: str, alpha: float, parts: tuple = ()) -> list[str]:
    """The commands that rerun the experiment (one per part when `results` unites several experiments,
    bench.paper.claim_experiments) and rewrite its report and this document."""
    results = Path(results)
    options = (f" --test {test}" if test != "permutation" else "") + (
        f" --alpha {alpha:g}" if alpha != 0.05 else ""
    )
    claims = f"bench claims {results.as_posix()} --out {Path(out).as_posix()}{options}"
    if parts:  # each part's `bench run` writes its own report (<results>/<part>/report/)
        return [*(f"bench run experiment={p} results_dir={results.as_posix()}" for p in parts), claims]
    run = f"bench run experiment={results.name}" + (
        f" results_dir={results.parent.as_posix()}" if results.parent.as_posix() != "results" else ""
    )
    return [run, f"bench report {results.as_posix()} --out {(results / 'report').as_posix()}", claims]


def commits(exp: Experiment) -> list[str]:
    """'`<git hash>` (k cells)' per commit the usable records were written at, most cells first."""
    counts = Counter(r.get("git_hash") or "unknown (not a git checkout)" for r in exp.records())
    return [f"`{h}` ({k} cell{'s' if k != 1 else ''})" for h, k in counts.most_common()]


def wall_time(records: list[dict]) -> tuple[float, int]:
    """(sum of timings_s["total"], how many records state none)."""
    times = [(r.get("timings_s") or {}).get("total") for r in records]
    return sum(t for t in times if isinstance(t, (int, float))), sum(
        not isinstance(t, (int, float)) for t in times
    )


def earlier_training(records: list[dict]) -> tuple[float, int]:
    """(seconds, cells) of training that an earlier process did for records that resumed or reused it.

    `timings_s` holds the time of the process that wrote the record; a cell that resumed a killed
    training, or reused a saved backbone, did the rest before. `train.seconds` is cumulative over
    resumptions, so the difference is that earlier part (its other stages' time is not known).
    """
    gaps = [
        float((r.get("train") or {}).get("seconds") or 0.0)
        - float((r.get("timings_s") or {}).get("train") or 0.0)
        for r in records
    ]
    gaps = [g for g in gaps if g > 1.0]
    return sum(gaps), len(gaps)


def duration(seconds: float) -> str:
    """'12,345 s (3 h 25 min)'."""
    minutes = round(seconds / 60)
    return f"{seconds:,.0f} s ({minutes // 60} h {minutes % 60} min)"


def regenerate_lines(runs: list[str]) -> list[str]:
    """A generated document's "How to regenerate" section: the runs, then its own command."""
    return [
        "## How to regenerate",
        "",
        "```bash",
        *runs,
        "```",
        "",
        'then the command on the "Generated" line above.',
        "",
    ]


def provenance_lines(exp: Experiment) -> list[str]:
    """Commits, creation dates and wall time (total and per dataset) of the usable records."""
    created = sorted(r["created"] for r in exp.records() if r.get("created"))
    lines = [
        f"- Records: {len(exp.records())} usable cell(s) of `{exp.folder.as_posix()}`, written at "
        f"commit(s) {', '.join(commits(exp))}"
        + (f", created {created[0]} to {created[-1]}." if created else ".")
    ]
    total, unstated = wall_time(exp.records())
    lines.append(
        f'- Wall time (sum of the records\' `timings_s["total"]`): {duration(total)}'
        + (f"; {unstated} record(s) state none" if unstated else "")
        + "."
    )
    earlier, cells = earlier_training(exp.records())
    if cells:
        lines.append(
            f"  Not included: {duration(earlier)} of training done by an earlier process for {cells} cell(s) "
            'that resumed or reused it (`train.seconds` minus `timings_s["train"]`).'
        )
    for d in exp.datasets:
        seconds, none = wall_time(exp.records(d))
        lines.append(
            f"  - {d}: {duration(seconds)} over {len(exp.records(d))} cell(s)"
            + (f" ({none} without a time)" if none else "")
        )
    return lines + [host_line(exp.records()), ""]


def host_line(records: list[dict]) -> str:
    """Where the records ran: device, CPU and its kernel level, torch build and threads per cell,
    each layout with its cell count; on the CPU a rerun matches bit for bit only on the same."""
    layouts = Counter(layout(r) for r in records)
    return (
        "- Run on: "
        + "; ".join(f"{text} ({n} cell(s))" for text, n in layouts.most_common())
        + ". A rerun gives the same numbers bit for bit only with the same code, packages, CPU kernels and "
        "thread count (docs/reproducibility.md)."
    )


def layout(record: dict) -> str:
    """'CPU AMD EPYC (AVX512), torch 2.13.0+cpu, 1 thread' from a record's host and versions."""
    host = record.get("host") or {}
    device = host.get("device", "?")
    cpu = host.get("cpu", "model not recorded")
    level = host.get("cpu_capability", "kernel level not recorded")
    where = f"CPU {cpu} ({level})" if device == "cpu" else f"{device}, CPU {cpu} ({level})"
    threads = host.get("torch_threads", "?")
    torch = (record.get("versions") or {}).get("torch", "?")
    return f"{where}, torch {torch}, {threads} thread{'s' if threads != 1 else ''}"


# ---- the grid ---------------------------------------------------------------------------------------


def grid_lines(exp: Experiment, methods: tuple, datasets: tuple) -> list[str]:
    """Cell counts, a dataset x method status table and every cell without a usable record."""
    all_methods = list(exp.methods) + [m for m in methods if m not in exp.methods]
    all_datasets = list(exp.datasets) + [d for d in datasets if d not in exp.datasets]
    rows = [[d] + [_status(exp, d, m) for m in all_methods] for d in all_datasets]
    lines = [grid_summary(exp), "", *md_table(["dataset", *all_methods], rows)]
    missing = [f"- `{c.label}` ({c.status}): {c.note}" for c in exp.problems()]
    undeclared = [
        f"- `{d}/{m}`: not in the experiment's grid (never run)"
        for d in all_datasets
        for m in all_methods
        if not exp.results(d, m)
    ]
    if missing or undeclared:
        lines += [
            "Cells without a usable record (verdicts use only the cells that exist):",
            "",
            *missing,
            *undeclared,
            "",
        ]
    else:
        lines += ["Every cell of the grid has a usable record.", ""]
    return lines


def _status(exp: Experiment, dataset: str, method: str) -> str:
    cells = exp.results(dataset, method)
    return f"{sum(c.status == OK for c in cells)}/{len(cells)} ok" if cells else "not run"


# ---- training adequacy ---------------------------------------------------------------------------------


def unconverged_datasets(exp: Experiment) -> list[str]:
    """Datasets with a usable cell whose training did not converge."""
    return [d for d in exp.datasets if unconverged(exp.records(d))]


def adequacy_lines(exp: Experiment) -> list[str]:
    """Cells whose training did not converge, with the loss change that decided it."""
    trained = [r for r in exp.records() if r.get("stop_after") != "prior"]  # prior-only cells train nothing
    bad = unconverged(trained)
    unknown = sum((r.get("train") or {}).get("converged") is None for r in trained)
    lines = [
        "A cell's training counts as converged when its smoothed loss changed by less than the "
        'threshold over the last window of steps (`record["train"]["convergence"]`).'
        + (
            f" {unknown} usable cell(s) state no convergence (too few steps or older records)."
            if unknown
            else ""
        ),
        "",
    ]
    if not bad:
        return lines + ["No usable cell reports that its training did not converge.", ""]
    rows = [[r["dataset"], r["method"], str(r["seed"]), *_convergence(r)] for r in bad]
    lines += md_table(
        ["dataset", "method", "seed", "loss change (rel_change)", "threshold", "window (steps)"], rows
    )
    return lines + [
        f"These qualify the verdicts of claims (c) and (d) on {', '.join(unconverged_datasets(exp))} "
        "(marked ‡): a flow trained further might score differently. Claims (a) and (b) are "
        "properties of the prior, fitted before training, and do not depend on it.",
        "",
    ]


def _convergence(record: dict) -> list[str]:
    stats = (record.get("train") or {}).get("convergence") or {}
    window = stats.get("window")
    return [
        _percent(stats.get("rel_change")),
        _percent(stats.get("threshold")),
        str(window) if window is not None else "n/a",
    ]


def _percent(value) -> str:
    return f"{100 * value:.4g}%" if isinstance(value, (int, float)) else "n/a"


# ---- figures ------------------------------------------------------------------------------------------------


def part_figure_lines(results: Path, parts: list[str]) -> list[str]:
    """Where the figures of a folder of experiments are: each part's own report, written by its
    `bench run` and not committed, so the document links none (it must not depend on which exist)."""
    where = ", ".join(f"`{(Path(results) / p / 'report').as_posix()}/index.html`" for p in parts)
    return [
        f"Each part's `bench run` writes its report with the figures: {where}. They are outputs, not "
        "committed; this document links none, so that it is the same wherever it is regenerated.",
        "",
    ]


def figure_lines(report_dir: Path, out_dir: Path, datasets: list[str]) -> list[str]:
    """Relative links to the figures `bench report` wrote under report_dir/figures (none are drawn here)."""
    figures = [
        (report_dir / "figures" / f"{kind}_{d}.png", f"{d}: {what}")
        for kind, what in FIGURES
        for d in datasets
    ]
    found = [(path, title) for path, title in figures if path.is_file()]
    index = report_dir / "index.md"
    lines = [
        f"Written by `bench report` (open [its index]({relative_link(index, out_dir)}) for every table)."
        if index.is_file()
        else f"`{report_dir.as_posix()}` holds no report yet: run the `bench report` "
        "command above to draw the figures.",
        "",
    ]
    return lines + [f"- [{title}]({relative_link(path, out_dir)})" for path, title in found] + [""]


# ---- the hand-written analysis --------------------------------------------------------------------------------


def analysis_block(out: Path) -> list[str]:
    """The lines from ANALYSIS_START to ANALYSIS_END of an existing report, verbatim; else an empty block."""
    try:
        lines = Path(out).read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError):
        return [ANALYSIS_START, ANALYSIS_END]
    start = _marker(lines, ANALYSIS_START, 0)
    end = _marker(lines, ANALYSIS_END, start + 1) if start is not None else None
    return lines[start : end + 1] if end is not None else [ANALYSIS_START, ANALYSIS_END]


def _marker(lines: list[str], marker: str, start: int) -> int | None:
    """Index of the first line from `start` that is `marker` (surrounding blanks ignored)."""
    return next((i for i in range(start, len(lines)) if lines[i].strip() == marker), None)
