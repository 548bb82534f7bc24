"""A figure of real vs generated samples per class, for eyeballing a cell (no metrics).

Image cells get a mosaic (one row per class, real held-out images left, generated right); a class
the augmentation plan gives no synthetic images (a head class) has an empty generated block with
a caption saying so. `samples_tail.png` holds the rows of the augmented (tail) classes alone, the
figure a report shows: real vs generated where there is something to compare, short enough to read
at page width on NIH-CXR-LT's 20 classes. Vector cells get a scatter of real held-out and generated points coloured
by class (the first two principal axes of the real data beyond two dimensions), every class in
the legend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.config.checks import is_int
from bench.errors import BenchError
from bench.evaluator import Evaluator
from bench.registry import register_evaluator

BLANK = 1.0  # white: padding, the gap between blocks, and missing samples
DPI = 100
MIN_TILE_PX = 48  # on-screen size of one tile, whatever the image resolution
MARGINS = (150, 40, 10, 10)  # left (row labels; at least), top (block titles), right, bottom, in pixels


def to_tiles(images: torch.Tensor, n: int) -> list[np.ndarray]:
    """The first `n` images as (H, W, 3) arrays clamped to [0, 1]; grayscale repeated to RGB."""
    if images.shape[1] not in (1, 3):
        raise BenchError(f"sample_grid shows 1- or 3-channel images, got {images.shape[1]} channels")
    x = images[:n].detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return [np.repeat(t, 3, axis=2) if t.shape[2] == 1 else t for t in x]


def grid_mosaic(
    real: list[list[np.ndarray]], fake: list[list[np.ndarray]], n_columns: int, size: tuple[int, int]
) -> np.ndarray:
    """One RGB array: row c holds up to n_columns real tiles, a one-tile gap, then fake tiles.

    Every tile sits in an (H + 1) x (W + 1) cell, the extra pixel being a BLANK separator;
    missing tiles stay BLANK, so a class with few samples shows as a short row.
    """
    h, w = size[0] + 1, size[1] + 1
    out = np.full((len(real) * h + 1, (2 * n_columns + 1) * w + 1, 3), BLANK)
    for row, (reals, fakes) in enumerate(zip(real, fake)):
        placed = list(enumerate(reals[:n_columns])) + list(enumerate(fakes[:n_columns], n_columns + 1))
        for col, tile in placed:
            out[row * h + 1 : (row + 1) * h, col * w + 1 : (col + 1) * w] = tile
    return out


def label_width_px(labels: list[str]) -> int:
    """Width in pixels of the widest row label, as matplotlib's Agg renderer draws it at DPI.

    Measured with the renderer that writes the PNG rather than a per-character guess, which cut
    long names such as "Pneumomediastinum" at the figure's left edge."""
    from matplotlib import rcParams
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    font = FontProperties(size=rcParams["ytick.labelsize"])
    renderer = RendererAgg(1, 1, DPI)
    widths = [renderer.get_text_width_height_descent(s, font, ismath=False)[0] for s in labels]
    return int(np.ceil(max(widths, default=0.0)))


def save_figure(
    mosaic: np.ndarray,
    labels: list[str],
    n_columns: int,
    size: tuple[int, int],
    path: Path,
    notes: list[str | None] | None = None,
) -> None:
    """Save the mosaic as a PNG with row labels and "real" / "generated" block titles.

    The figure is sized in pixels (integer upscaling of the mosaic plus MARGINS at DPI, no
    tight bbox), so its layout is predictable: height = margins + rows * tile pixels.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    scale = -(-MIN_TILE_PX // (size[0] + 1))  # integer upscaling keeps image pixels square and sharp
    left, top, right, bottom = MARGINS
    left = max(left, 16 + label_width_px(labels))  # room for the longest class name
    img_h, img_w = mosaic.shape[0] * scale, mosaic.shape[1] * scale
    fig_w, fig_h = left + img_w + right, top + img_h + bottom
    fig = Figure(figsize=(fig_w / DPI, fig_h / DPI), dpi=DPI)
    ax = fig.add_axes((left / fig_w, bottom / fig_h, img_w / fig_w, img_h / fig_h))
    ax.imshow(mosaic, interpolation="nearest", aspect="auto")
    ax.set_xticks([])
    ax.set_yticks([(size[0] + 1) * (r + 0.5) for r in range(len(labels))], labels)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    block = (size[1] + 1) * n_columns
    for x, title in ((block / 2, "real"), (block * 1.5 + size[1] + 1, "generated")):
        ax.text(x, -2, title, ha="center", va="bottom")
    for row, note in enumerate(notes or []):
        if note:  # an empty generated block, captioned with why
            ax.text(
                block * 1.5 + size[1] + 1,
                (size[0] + 1) * (row + 0.5),
                note,
                ha="center",
                va="center",
                fontsize=8,
                color="0.35",
            )
    fig.savefig(path, dpi=DPI)


def empty_notes(cell, n_classes: int) -> list[str | None]:
    """Per class, why its generated block is empty (None where it has samples)."""
    counts = cell.synthetic.counts(n_classes).tolist()
    targets = cell.targets or []
    notes = []
    for c in range(n_classes):
        if counts[c]:
            notes.append(None)
        elif c < len(targets) and targets[c].synthetic == 0:
            notes.append(f"none: not augmented\n({targets[c].group} class)")
        else:
            notes.append("no generated samples")
    return notes


def save_scatter(cell, path: Path) -> None:
    """Real held-out (left) and generated (right) points per class, on shared axes."""
    from matplotlib.figure import Figure

    real, fake = cell.test.x.float().flatten(1).numpy(), cell.synthetic.x.float().flatten(1).numpy()
    axes_names = ("x1", "x2")
    if real.shape[1] > 2:  # the real data's two principal axes
        centre = real.mean(0)
        basis = np.linalg.svd(real - centre, full_matrices=False)[2][:2].T
        real, fake = (real - centre) @ basis, (fake - centre) @ basis
        axes_names = ("principal axis 1", "principal axis 2")
    fig = Figure(figsize=(10, 4.6), dpi=DPI, layout="constrained")
    panels = fig.subplots(1, 2, sharex=True, sharey=True)
    colours = _class_colours(len(cell.class_names))
    for ax, points, labels, title in (
        (panels[0], real, cell.test.y, "real (held out)"),
        (panels[1], fake, cell.synthetic.y, "generated"),
    ):
        for c, name in enumerate(cell.class_names):
            rows = (labels == c).numpy()
            ax.scatter(
                points[rows, 0], points[rows, 1], s=4, color=colours[c], label=f"{name} ({int(rows.sum())})"
            )
        ax.set_title(title)
        ax.set_xlabel(axes_names[0])
    panels[0].set_ylabel(axes_names[1])
    fig.legend(
        *panels[1].get_legend_handles_labels(),
        loc="outside right center",
        fontsize="small",
        markerscale=3,
        title="class (n)",
    )
    fig.savefig(path, dpi=DPI)


def _class_colours(n: int) -> list:
    """n distinguishable colours (tab10, then tab20 beyond 10 classes)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


@register_evaluator("sample_grid")
class SampleGrid(Evaluator):
    """Writes `samples.png`: one row per class, real held-out images left, generated right.

    Rows are labelled with the class name and its train count; the first `n_columns` samples
    of each class are shown, nearest-upscaled to at least MIN_TILE_PX so 8x8 digits stay legible.
    An empty generated block says why; vector data get a scatter per class instead (module doc).
    """

    applies_to = ("image", "vector")
    metrics = ()  # figures only: no metrics

    def __init__(self, n_columns: int = 8):
        if not is_int(n_columns) or n_columns < 1:
            raise BenchError(f"sample_grid.n_columns must be an integer >= 1, got {n_columns!r}")
        self.n_columns = n_columns

    def evaluate(self, cell) -> dict[str, float]:
        """Draw the figures into `cell.out_dir`: `samples.png` (every class) and, for images,
        `samples_tail.png` (the augmented classes); returns no metrics."""
        out_dir = Path(cell.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if cell.dataset.kind == "vector":
            save_scatter(cell, out_dir / "samples.png")
            return {}
        n_classes = cell.dataset.n_classes
        real = [to_tiles(cell.test.x[cell.test.y == c], self.n_columns) for c in range(n_classes)]
        synthetic = cell.synthetic
        fake = [to_tiles(synthetic.x[synthetic.y == c], self.n_columns) for c in range(n_classes)]
        size = tuple(cell.test.x.shape[2:])
        counts = cell.train.counts(n_classes).tolist()
        labels = [f"{name} (n={n})" for name, n in zip(cell.class_names, counts)]
        notes = empty_notes(cell, n_classes)
        self._save(real, fake, labels, notes, range(n_classes), size, out_dir / "samples.png")
        tail = [c for c in range(n_classes) if notes[c] is None]  # the classes with generated images
        self._save(real, fake, labels, notes, tail or range(n_classes), size, out_dir / "samples_tail.png")
        return {}

    def _save(self, real, fake, labels, notes, rows, size, path: Path) -> None:
        """The mosaic of the classes `rows`, with their labels and notes, as a PNG at `path`."""
        rows = list(rows)
        mosaic = grid_mosaic([real[c] for c in rows], [fake[c] for c in rows], self.n_columns, size)
        save_figure(mosaic, [labels[c] for c in rows], self.n_columns, size, path, [notes[c] for c in rows])
