"""What a person watching a run sees: bars in a terminal, one line per stage and per cell in a log.

In a terminal (stderr is a TTY) every long loop (training steps, sampling evaluations, encoding
batches, classifier epochs) shows a tqdm bar with its rate and ETA, titled with the cell it
belongs to ("[3/8] phantom_lt/cbfm/seed0 train"); a bar disappears when its loop ends. In a log
(stderr redirected to a file, a Slurm job) bars are off, since their carriage returns make a log
unreadable; the runner writes instead one line per finished stage with its duration
(`stage_line`) and one line per finished cell with its headline metric (`cell_line`: the first
metric its evaluators declare a headline, `bench.evaluator.Metric`), both at
INFO, so both kinds of output say which stage runs and how long things take. Cells that run
side by side in worker processes (bench.scale.pool) switch their bars off (`set_bars`): two
processes redrawing bars on one terminal garble it; their stage and cell lines carry the cell's
label and are each written whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tqdm.auto import tqdm

from bench.evaluator import headline_names

_cell = {"title": "", "bars": True}  # "[i/N] dataset/method/seed<k>" of the cell running in this process


def set_cell(title: str) -> None:
    """Name the cell whose bars follow (the executors call this before each cell)."""
    _cell["title"] = title


def set_bars(on: bool) -> None:
    """Allow (default) or forbid progress bars in this process."""
    _cell["bars"] = bool(on)


def bar(
    iterable: Iterable | None = None,
    stage: str = "",
    total: int | None = None,
    unit: str = "it",
    initial: int = 0,
    disable: bool = False,
):
    """A tqdm bar titled with the current cell and `stage`; off when stderr is no terminal, and
    on every process but rank 0 of a multi-process cell (one bar per loop on the screen)."""
    from bench.runtime import distributed

    title = f"{_cell['title']} {stage}".strip()
    off = disable or not distributed.is_main() or not _cell["bars"]
    return tqdm(
        iterable,
        desc=title,
        total=total,
        unit=unit,
        initial=initial,
        leave=False,
        dynamic_ncols=True,
        disable=True if off else None,
    )


def seconds_text(seconds: float) -> str:
    """'0.4 s', '12 s', '3 min 05 s'."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 600:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def stage_line(label: str, stage: str, seconds: float) -> str:
    """'phantom_lt/fm/seed0: train done in 3 min 05 s'."""
    return f"{label}: {stage} done in {seconds_text(seconds)}"


def headline(metrics: dict, info: Mapping | None = None) -> str | None:
    """The cell's headline metric as 'fid/tail 10.8 (source only 13.1)': the first of the metrics that
    `info` (the record's `metric_info`, its evaluators' declarations) makes a headline, as the run's
    summary orders them; None when it has none."""
    name = next((m for m in headline_names(info or {}) if m in metrics), None)
    if name is None:
        return None
    source = metrics.get(f"{name}@source")
    return f"{name} {metrics[name]:.4g}" + (f" (source only {source:.4g})" if source is not None else "")


def cell_line(label: str, seconds: float, metrics: dict, info: Mapping | None = None) -> str:
    """'phantom_lt/fm/seed0: finished in 58 s; fid/tail 58.6 (source only 5256)' (`info`: see `headline`)."""
    head = headline(metrics, info)
    return f"{label}: finished in {seconds_text(seconds)}" + (f"; {head}" if head else "")
