"""Report figures, drawn from an experiment's stored records and cell files only (nothing is rerun).

Each figure function takes an `Experiment` (bench.report.collect) and an output folder, writes one PNG per
dataset it has something to show for, and returns a `Figure` for each (an empty list when the
records support no such figure). Methods keep the colour of their position in the experiment's
method axis in every figure. Drawing uses matplotlib's object API on the Agg canvas (no pyplot, no
display, no global state), so the same records give the same PNGs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.report.collect import OK, CellResult, Experiment
from bench.report.headline import Panel, headline_panels

DPI = 100
PANEL_IN = 4.0  # width and height of one trajectory or histogram panel, in inches
MAX_PANEL_IN = 12.0  # widest a sample grid panel gets, in inches (about a laptop page's width)
TITLE_IN = 0.35  # height of a stacked panel's title, in inches
NO_AUG_COLOUR = "0.6"
SAMPLES_PNG = "samples.png"
TAIL_PNG = (
    "samples_tail.png"  # the augmented classes alone (sample_grid); cells written before it: SAMPLES_PNG
)
HEADLINE, SAMPLES, OTHER = "headline", "samples", "figures"  # the index page's figure sections
SAMPLES_FILE = Path("samples") / "samples.safetensors"


@dataclass(frozen=True)
class Figure:
    """One PNG of the report, with what to show above and below it."""

    path: Path
    title: str
    caption: str
    section: str = OTHER  # where the index page shows it: HEADLINE, SAMPLES or the other figures


def all_figures(exp: Experiment, out: Path) -> list[Figure]:
    """Every figure the records support, in report order."""
    return [
        fig
        for make in (headline_figures, sample_grids, trajectories, class_bacc_bars, geometry_histograms)
        for fig in make(exp, out)
    ]


def _usable_cell(exp: Experiment, dataset: str, method: str) -> CellResult | None:
    """The cell with the lowest seed that has a usable record, or None."""
    cells = [c for c in exp.results(dataset, method) if c.status == OK]
    return min(cells, key=lambda c: c.seed) if cells else None


def method_colour(exp: Experiment, method: str):
    """The method's colour (tab10 by its position in the experiment's method axis)."""
    from matplotlib import colormaps

    return colormaps["tab10"](exp.methods.index(method) % 10)


def class_colours(n_classes: int) -> list:
    """One distinct colour per class (tab10, tab20, then a sampled continuous map)."""
    from matplotlib import colormaps

    if n_classes <= 10:
        return [colormaps["tab10"](c) for c in range(n_classes)]
    if n_classes <= 20:
        return [colormaps["tab20"](c) for c in range(n_classes)]
    return [colormaps["viridis"](c / (n_classes - 1)) for c in range(n_classes)]


def _new_figure(width_in: float, height_in: float):
    """A matplotlib Figure not attached to pyplot (Agg canvas on save)."""
    from matplotlib.figure import Figure as MplFigure

    return MplFigure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")


def _save(fig, out: Path, name: str) -> Path:
    """Write `fig` as out/name and return the path."""
    path = Path(out) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _class_names(record: dict, n_classes: int) -> list[str]:
    """The record's class names, or class indices when it lacks them or they do not fit."""
    names = record.get("class_names") or []
    return [str(n) for n in names] if len(names) == n_classes else [str(c) for c in range(n_classes)]


# --- the headline ----------------------------------------------------------------------------

SEED_OFFSET = 0.22  # how far above its mean a method's seed dots sit, in rows
ROW_IN = 0.42  # height of one method's row in a headline panel, in inches
LEVEL_STYLES = {"no augmentation": ("0.45", "--"), "best remedy": ("0.15", ":")}
LEVELS_CAPTION = (
    " On the downstream metric, dashed: classifiers trained without augmentation; dotted: the best"
    " long-tail remedy on real data alone (mean over seeds)."
)  # only where a panel draws those lines


def headline_figures(exp: Experiment, out: Path) -> list[Figure]:
    """Per dataset: its tail metric and its downstream metric (bench.report.headline), one panel each
    with one row per method: each generative seed a dot, the mean with its sample std as a bar, the
    source-only mean as a hollow marker, no augmentation and the best remedy as vertical lines."""
    figures = []
    for dataset in exp.datasets:
        panels = headline_panels(exp, dataset)
        if not panels:
            continue
        methods = exp.methods_of(dataset)
        fig = _new_figure(5.2 * len(panels) + 1.2, 1.5 + ROW_IN * len(methods))
        for ax, panel in zip(fig.subplots(1, len(panels), squeeze=False, sharey=True)[0], panels):
            _headline_panel(ax, exp, panel, methods)
        handles, labels = [], []
        for ax in fig.axes:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        if handles:
            fig.legend(
                handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize="small"
            )
        ns = sorted({a.values.n for p in panels for a in p.arms if a.values.n})
        n = "no usable seed" if not ns else f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}-{ns[-1]}"
        figures.append(
            Figure(
                _save(fig, out, f"headline_{dataset}.png"),
                f"{dataset}: the headline",
                f"Each method's headline metrics over generative seeds ({n} per method, stated per row): "
                "dots are the seeds, the bar their mean with one sample std either side. Hollow grey "
                "diamond: the method's source-only value (its source samples decoded with no flow, mean "
                "over seeds)." + (LEVELS_CAPTION if any(p.levels for p in panels) else ""),
                section=HEADLINE,
            )
        )
    return figures


def _headline_panel(ax, exp: Experiment, panel: Panel, methods: list[str]) -> None:
    """One metric: a row per method (first on top), references as vertical lines."""
    for row, method in enumerate(methods):
        arm = next((a for a in panel.arms if a.method == method), None)
        y = -row
        if arm is None or not arm.values.n:
            ax.text(
                0.5,
                y,
                f"{method}: no usable record",
                transform=ax.get_yaxis_transform(),
                ha="center",
                va="center",
                color="0.4",
                fontsize="small",
            )
            continue
        colour = method_colour(exp, method)
        seeds = list(arm.values.by_seed.values())
        # the seeds just above the mean's bar, so that neither hides the other
        ax.scatter(
            seeds, [y + SEED_OFFSET] * len(seeds), s=16, color=colour, alpha=0.7, linewidths=0, zorder=3
        )
        ax.errorbar(
            arm.values.mean,
            y,
            xerr=arm.values.std or 0.0,
            fmt="o",
            ms=7,
            color=colour,
            capsize=4,
            lw=1.5,
            zorder=4,
        )
        if arm.source.n:
            ax.scatter(
                [arm.source.mean],
                [y],
                s=55,
                marker="D",
                facecolors="none",
                edgecolors="0.35",
                linewidths=1.2,
                zorder=4,
                label="source only (no flow)",
            )
    for level in panel.levels:
        colour, style = LEVEL_STYLES["best remedy" if level.label.startswith("best remedy") else level.label]
        ax.axvline(level.values.mean, color=colour, ls=style, lw=1.3, label=level.label, zorder=2)
    arrow = (
        ""
        if panel.higher_is_better is None
        else (" (higher is better)" if panel.higher_is_better else " (lower is better)")
    )
    ax.set_xlabel(panel.title + arrow)
    ax.set_yticks([-r for r in range(len(methods))], [_row_label(panel, m) for m in methods])
    ax.set_ylim(-len(methods) + 0.5, 0.5)
    ax.margins(x=0.08)  # no dot on the frame
    ax.grid(axis="x", color="0.9", zorder=0)


def _row_label(panel: Panel, method: str) -> str:
    """'optprior (n = 3)': the method and how many seeds its row rests on."""
    arm = next((a for a in panel.arms if a.method == method), None)
    return f"{method} (n = {arm.values.n})" if arm is not None and arm.values.n else method


# --- generated samples ------------------------------------------------------------------------


def sample_grid_panels(exp: Experiment, dataset: str) -> list[tuple[str, Path | None]]:
    """(panel title, PNG or None) per method of `dataset`, from its lowest usable seed: its tail
    classes' grid (samples_tail.png), else its full grid (samples.png)."""
    panels = []
    for method in exp.methods_of(dataset):
        cell = _usable_cell(exp, dataset, method)
        found = (
            [cell.folder / name for name in (TAIL_PNG, SAMPLES_PNG) if (cell.folder / name).is_file()]
            if cell
            else []
        )
        if cell is None:
            panels.append((f"{method}: missing", None))
        elif not found:
            panels.append((f"{method}: no {SAMPLES_PNG}", None))
        else:
            panels.append((f"{method} (seed {cell.seed})", found[0]))
    return panels


def sample_grids(exp: Experiment, out: Path) -> list[Figure]:
    """Per dataset: each method's samples.png (sample_grid evaluator, lowest usable seed), one row per
    method, stacked, so that each is as wide as the page (side by side, four methods made a strip
    too thin to read); a method without one is a short row saying why."""
    from matplotlib.image import imread

    figures = []
    for dataset in exp.datasets:
        panels = [(title, imread(png) if png else None) for title, png in sample_grid_panels(exp, dataset)]
        images = [img for _, img in panels if img is not None]
        if not images:
            continue
        width = min(MAX_PANEL_IN, max(img.shape[1] for img in images) / DPI)
        heights = [width * img.shape[0] / img.shape[1] if img is not None else 0.3 for _, img in panels]
        fig = _new_figure(width, sum(heights) + TITLE_IN * len(panels))
        axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=heights)[:, 0]
        for ax, (title, img) in zip(axes, panels):
            ax.set_title(title, loc="left", fontsize="medium", fontweight="bold")
            ax.axis("off")
            if img is not None:
                ax.imshow(img)
        figures.append(
            Figure(
                _save(fig, out, f"samples_{dataset}.png"),
                f"{dataset}: generated samples",
                "Each method's sample grid (lowest usable seed), one method per row: per augmented (tail) "
                "class, real held-out images on the left and generated ones on the right (every class: "
                "samples.png in the cell's folder).",
                section=SAMPLES,
            )
        )
    return figures


# --- trajectories -----------------------------------------------------------------------------


def stored_paths(cell: CellResult) -> tuple[np.ndarray, np.ndarray] | None:
    """(paths (n, steps + 1, D), labels (n,)) a vector cell stored with sample.keep_paths, else None."""
    from safetensors import safe_open

    file = cell.folder / SAMPLES_FILE
    if not file.is_file():
        return None
    with safe_open(str(file), framework="numpy") as f:
        if "paths" not in f.keys() or "paths_y" not in f.keys():
            return None
        paths, labels = f.get_tensor("paths"), f.get_tensor("paths_y")
    if paths.ndim != 3 or paths.shape[2] < 2 or len(paths) == 0:
        return None  # only vector data with at least two coordinates is drawn
    return paths, labels


def trajectory_panels(exp: Experiment, dataset: str) -> list[tuple[str, CellResult | None, tuple | None]]:
    """(panel title, cell, (paths, labels) or None) per method of `dataset`, lowest usable seed."""
    panels = []
    for method in exp.methods_of(dataset):
        cell = _usable_cell(exp, dataset, method)
        data = stored_paths(cell) if cell is not None else None
        title = (
            f"{method}: missing"
            if cell is None
            else f"{method}: no stored paths"
            if data is None
            else f"{method} (seed {cell.seed})"
        )
        panels.append((title, cell, data))
    return panels


def trajectories(exp: Experiment, out: Path) -> list[Figure]:
    """Per vector dataset: one panel per method of its stored ODE paths, coloured by class."""
    figures = []
    for dataset in exp.datasets:
        panels = trajectory_panels(exp, dataset)
        drawn = [(cell, data) for _, cell, data in panels if data is not None]
        if not drawn:
            continue
        n_classes = max(
            len(drawn[0][0].record.get("class_names") or []),
            1 + max(int(labels.max()) for _, (_, labels) in drawn),
        )
        names, colours = _class_names(drawn[0][0].record, n_classes), class_colours(n_classes)
        fig = _new_figure(PANEL_IN * len(panels) + 1.5, PANEL_IN + 0.4)
        axes = fig.subplots(1, len(panels), squeeze=False, sharex=True, sharey=True)[0]
        for ax, (title, _, data) in zip(axes, panels):
            ax.set_title(title)
            ax.set_aspect("equal", adjustable="box")
            if data is None:
                ax.set_axis_off()
            else:
                _draw_paths(ax, *data, colours)
        _path_legend(fig, names, colours)
        dims = max(paths.shape[2] for _, (paths, _) in drawn)
        coords = "" if dims == 2 else f" (first two of {dims} coordinates)"
        figures.append(
            Figure(
                _save(fig, out, f"trajectories_{dataset}.png"),
                f"{dataset}: sampling trajectories",
                f"ODE paths from the source (t = 0, grey dots) to generated samples (t = 1, coloured dots) in "
                f"latent space{coords}, coloured by class; the samples stored with sample.keep_paths, "
                "lowest usable seed of each method.",
            )
        )
    return figures


def _draw_paths(ax, paths: np.ndarray, labels: np.ndarray, colours: list) -> None:
    """Paths as class-coloured lines, their starts as grey dots and their ends as class-coloured dots."""
    for c in np.unique(labels):
        p = paths[labels == c]
        ax.plot(p[:, :, 0].T, p[:, :, 1].T, color=colours[int(c)], lw=0.6, alpha=0.45)
        ax.scatter(
            p[:, -1, 0], p[:, -1, 1], s=9, color=colours[int(c)], edgecolors="k", linewidths=0.2, zorder=3
        )
    ax.scatter(paths[:, 0, 0], paths[:, 0, 1], s=4, color="0.35", zorder=3)


def _path_legend(fig, names: list[str], colours: list) -> None:
    """Class colours plus the start / end markers, right of the panels."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=col, lw=2, label=name) for name, col in zip(names, colours)]
    handles += [
        Line2D([], [], ls="", marker="o", ms=3, color="0.35", label="start (t = 0)"),
        Line2D([], [], ls="", marker="o", ms=4, color="w", markeredgecolor="k", label="end (t = 1)"),
    ]
    fig.legend(handles=handles, loc="outside right center", fontsize="small")


# --- downstream per-class recall ---------------------------------------------------------------

NOT_AVAILABLE = "n/a"  # drawn where a class has no value (absent from every seed's test set)


@dataclass(frozen=True)
class RecallSeries:
    """Per-class recall of one bar series: one row per generative seed (NaN: no value that seed)."""

    label: str
    seeds: tuple  # the generative seed of each row
    table: np.ndarray  # (n seeds, n classes)
    colour: object

    @property
    def values(self) -> np.ndarray:
        """Per-class mean over the seeds that have a value (NaN where none has)."""
        counts = np.isfinite(self.table).sum(axis=0)
        total = np.nansum(self.table, axis=0)
        return np.where(counts > 0, total / np.maximum(counts, 1), np.nan)


def _recall_table(lists: list[list], n_classes: int) -> np.ndarray:
    """Recall lists as a (seeds, n_classes) float array: None, and classes a list lacks, are NaN."""
    table = np.full((len(lists), n_classes), np.nan)
    for i, values in enumerate(lists):
        table[i, : len(values)] = [np.nan if v is None else v for v in values]
    return table


def recall_series(exp: Experiment, dataset: str) -> list[RecallSeries]:
    """ "no augmentation" (one row per cell seed), then each method (one row per usable seed)."""
    cells = [
        c for c in exp.results(dataset) if c.status == OK and "downstream" in (c.record.get("details") or {})
    ]
    if not cells:
        return []
    no_aug = {}
    for c in cells:  # the baseline depends on the cell seed only: one per seed
        no_aug.setdefault(c.seed, c.record["details"]["downstream"].get("recall/no_aug"))
    no_aug = {s: r for s, r in no_aug.items() if r}
    mine = {
        m: [(c.seed, c.record["details"]["downstream"].get("recall")) for c in cells if c.method == m]
        for m in exp.methods_of(dataset)
    }
    mine = {m: [(s, r) for s, r in rows if r] for m, rows in mine.items()}
    lists = list(no_aug.values()) + [r for rows in mine.values() for _, r in rows]
    n_classes = max((len(r) for r in lists), default=0)
    series = []
    if no_aug:
        series.append(
            RecallSeries(
                "no augmentation",
                tuple(no_aug),
                _recall_table(list(no_aug.values()), n_classes),
                NO_AUG_COLOUR,
            )
        )
    for method, rows in mine.items():
        if rows:
            series.append(
                RecallSeries(
                    f"{method} (n = {len(rows)})",
                    tuple(s for s, _ in rows),
                    _recall_table([r for _, r in rows], n_classes),
                    method_colour(exp, method),
                )
            )
    return series


def recall_changes(series: list[RecallSeries]) -> list[RecallSeries]:
    """Each method's per-seed recall minus no augmentation's of the same seed (paired by seed);
    empty when there is no no-augmentation series."""
    if not series or series[0].label != "no augmentation":
        return []
    base = dict(zip(series[0].seeds, series[0].table))
    out = []
    for s in series[1:]:
        pairs = [(seed, row - base[seed]) for seed, row in zip(s.seeds, s.table) if seed in base]
        if pairs:
            out.append(
                RecallSeries(s.label, tuple(p[0] for p in pairs), np.array([p[1] for p in pairs]), s.colour)
            )
    return out


def missing_classes(series: list[RecallSeries]) -> list[tuple[int, int]]:
    """(series index, class) of every bar without a value: drawn as NOT_AVAILABLE, never as zero."""
    return [(i, int(c)) for i, s in enumerate(series) for c in np.nonzero(~np.isfinite(s.values))[0]]


def augmented(record: dict) -> dict[int, str]:
    """Class index -> group (ULT / LT / MT) of the classes the record's augmentation plan augments."""
    return {
        c: str(t.get("group", ""))
        for c, t in enumerate(record.get("augmentation") or [])
        if (t.get("synthetic") or 0) > 0
    }


def class_bacc_bars(exp: Experiment, out: Path) -> list[Figure]:
    """Per dataset with downstream details: per-class recall without augmentation and per method,
    each generative seed a dot on its bar, a class without a value marked n/a."""
    figures = []
    for dataset in exp.datasets:
        series = recall_series(exp, dataset)
        if not series:
            continue
        n_classes = series[0].table.shape[1]
        record = next(r for r in exp.records(dataset) if "downstream" in (r.get("details") or {}))
        marks = augmented(record)
        names = [
            f"{n} [{marks[c]}]" if c in marks else n for c, n in enumerate(_class_names(record, n_classes))
        ]
        fig = _new_figure(max(6.0, 1.5 + n_classes * (0.2 + 0.12 * len(series))), 7.5)
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1))
        _recall_bars(top, series, marks, n_classes)
        top.set_ylim(0, 1.05)
        top.set_ylabel("per-class recall")
        fig.legend(
            *top.get_legend_handles_labels(),
            loc="outside upper center",
            ncols=min(len(series), 4),
            fontsize="small",
        )
        changes = recall_changes(series)
        if changes:  # the changes a method makes, zoomed
            _recall_bars(bottom, changes, marks, n_classes, offset=1, of=len(series))
            span = np.nanmax(np.abs(np.concatenate([c.table.ravel() for c in changes] + [np.array([0.01])])))
            bottom.set_ylim(-1.15 * span, 1.15 * span)
            bottom.axhline(0, color="k", lw=0.8)
            bottom.set_ylabel("recall change vs no augmentation")
        else:
            bottom.set_axis_off()
        bottom.set_xticks(np.arange(n_classes), names, rotation=45, ha="right", rotation_mode="anchor")
        bottom.tick_params(labelbottom=True)
        figures.append(
            Figure(
                _save(fig, out, f"class_recall_{dataset}.png"),
                f"{dataset}: per-class balanced accuracy",
                "Per-class recall on the real test set (its mean over classes is the balanced accuracy) of "
                "the downstream classifier trained without augmentation and with each method's synthetic "
                "set, averaged over classifier seeds: bars are the mean over the n generative seeds, "
                "black dots each seed's value (top); each method's change against no augmentation, "
                "paired by seed, on its own scale (bottom). Shaded classes (group in brackets) are the "
                f'ones the augmentation plan gives synthetic images; "{NOT_AVAILABLE}" marks a class '
                "with no value (absent from the test set), which is not a zero.",
            )
        )
    return figures


def _recall_bars(ax, series: list, marks: dict, n_classes: int, offset: int = 0, of: int = 0) -> None:
    """Grouped per-class bars of `series` (mean over seeds) with each seed's value as a dot and
    NOT_AVAILABLE where a class has no value, shading the augmented classes; bar i of `of` per class
    (the change panel skips the baseline's slot with offset 1, so bars line up with the top panel)."""
    of = of or len(series)
    width, x = 0.8 / of, np.arange(n_classes)
    for c in marks:
        ax.axvspan(c - 0.45, c + 0.45, color="0.92", zorder=0)
    for i, s in enumerate(series, offset):
        centre = x - 0.4 + width * (i + 0.5)
        ax.bar(centre, np.nan_to_num(s.values), width, label=s.label, color=s.colour)
        n = len(s.table)
        spread = np.linspace(-width / 4, width / 4, n) if n > 1 else np.zeros(1)
        for row, dx in zip(s.table, spread):
            ax.scatter(centre + dx, row, s=7, color="k", zorder=3, linewidths=0)
        for c in np.nonzero(~np.isfinite(s.values))[0]:
            ax.text(
                centre[c], 0, NOT_AVAILABLE, rotation=90, ha="center", va="bottom", fontsize=8, color="0.25"
            )
    ax.set_xlim(-0.6, n_classes - 0.4)


# --- transport geometry ------------------------------------------------------------------------


def _histograms(record: dict) -> dict:
    """The geometry evaluator's histograms of a record (empty if it has none)."""
    return ((record.get("details") or {}).get("geometry") or {}).get("histograms") or {}


def _stairs(ax, hist: dict, **style) -> None:
    """Draw a stored {"counts", "edges"} histogram as a density step line."""
    counts, edges = np.asarray(hist["counts"], float), np.asarray(hist["edges"], float)
    total = counts.sum()
    density = counts / (total * np.diff(edges)) if total > 0 else counts
    ax.stairs(density, edges, **style)


def geometry_histograms(exp: Experiment, out: Path) -> list[Figure]:
    """Per dataset with geometry details: path length and alignment histograms of each method's
    source coupling (lowest usable seed), with the N(0, I) reference once."""
    figures = []
    for dataset in exp.datasets:
        cells = {m: _usable_cell(exp, dataset, m) for m in exp.methods_of(dataset)}
        hists = {
            m: _histograms(c.record) for m, c in cells.items() if c is not None and _histograms(c.record)
        }
        if not hists:
            continue
        reference = next((h["gauss"] for h in hists.values() if "gauss" in h), None)
        fig = _new_figure(2 * PANEL_IN + 1.5, PANEL_IN * 0.8)
        axes = fig.subplots(1, 2)
        for ax, stat, xlabel in zip(
            axes, ("path_length", "alignment"), ("path length ||x1 - x0||", "alignment <dhat, u_class>")
        ):
            if reference is not None:
                _stairs(ax, reference[stat], color="k", ls="--", zorder=3, label="N(0, I) reference")
            for method, h in hists.items():
                if "method" in h:
                    _stairs(
                        ax,
                        h["method"][stat],
                        color=method_colour(exp, method),
                        lw=1.5,
                        label=f"{method} ({h['method'].get('source', 'source')})",
                    )
            ax.set_xlabel(xlabel)
            ax.set_ylabel("density")
        axes[0].set_xscale("log")  # N(0, I)'s paths are ~sqrt(D) long, learned sources' often 10x shorter
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right center", fontsize="small")
        absent = [
            m if cells[m] is not None else f"{m} (missing)" for m in cells if "method" not in hists.get(m, {})
        ]
        note = f" No histogram of its own source for: {', '.join(absent)}." if absent else ""
        figures.append(
            Figure(
                _save(fig, out, f"geometry_{dataset}.png"),
                f"{dataset}: transport geometry",
                "Distribution over training rows of the source-to-data path length rho = ||x1 - x0|| and of "
                "the alignment of the direction with its class's mean direction, for each method's source "
                f"coupling (lowest usable seed) and the standard normal source; path lengths on a log axis.{note}",
            )
        )
    return figures
