"""A figure of real vs generated images per class, for eyeballing a cell (no metrics)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.checks import is_int
from bench.errors import BenchError
from bench.evaluator import Evaluator
from bench.registry import register_evaluator

BLANK = 1.0  # white: padding, the gap between blocks, and missing samples
DPI = 100
MIN_TILE_PX = 48  # on-screen size of one tile, whatever the image resolution
MARGINS = (150, 40, 10, 10)  # left (row labels; at least), top (block titles), right, bottom, in pixels
LABEL_CHAR_PX = 8  # width budget per row-label character at the default 10 pt font and DPI


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


def save_figure(
    mosaic: np.ndarray, labels: list[str], n_columns: int, size: tuple[int, int], path: Path
) -> None:
    """Save the mosaic as a PNG with row labels and "real" / "generated" block titles.

    The figure is sized in pixels (integer upscaling of the mosaic plus MARGINS at DPI, no
    tight bbox), so its layout is predictable: height = margins + rows * tile pixels.
    """
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    scale = -(-MIN_TILE_PX // (size[0] + 1))  # integer upscaling keeps image pixels square and sharp
    left, top, right, bottom = MARGINS
    left = max(left, 10 + LABEL_CHAR_PX * max((len(s) for s in labels), default=0))  # long class names
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
    fig.savefig(path, dpi=DPI)


@register_evaluator("sample_grid")
class SampleGrid(Evaluator):
    """Writes `samples.png`: one row per class, real held-out images left, generated right.

    Rows are labelled with the class name and its train count; the first `n_columns` samples
    of each class are shown, nearest-upscaled to at least MIN_TILE_PX so 8x8 digits stay legible.
    """

    applies_to = ("image",)
    higher_is_better: dict[str, bool] = {}

    def __init__(self, n_columns: int = 8):
        if not is_int(n_columns) or n_columns < 1:
            raise BenchError(f"sample_grid.n_columns must be an integer >= 1, got {n_columns!r}")
        self.n_columns = n_columns

    def evaluate(self, cell) -> dict[str, float]:
        """Draw the figure into `cell.out_dir / "samples.png"`; returns no metrics."""
        n_classes = cell.dataset.n_classes
        real = [to_tiles(cell.test.x[cell.test.y == c], self.n_columns) for c in range(n_classes)]
        synthetic = cell.synthetic
        fake = [to_tiles(synthetic.x[synthetic.y == c], self.n_columns) for c in range(n_classes)]
        size = tuple(cell.test.x.shape[2:])
        counts = cell.train.counts(n_classes).tolist()
        labels = [f"{name} (n={n})" for name, n in zip(cell.class_names, counts)]
        out_dir = Path(cell.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        mosaic = grid_mosaic(real, fake, self.n_columns, size)
        save_figure(mosaic, labels, self.n_columns, size, out_dir / "samples.png")
        return {}
