"""The real-vs-generated figure: file, pixel layout, and no metrics."""

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from bench.context import CellContext
from bench.dataset import Dataset, Split
from bench.datasets.digits_lt import DigitsLT
from bench.evaluators.sample_grid import MARGINS, MIN_TILE_PX, SampleGrid, grid_mosaic, to_tiles
from bench.registry import evaluators

SIZE = 8
SCALE = -(-MIN_TILE_PX // (SIZE + 1))  # screen pixels per mosaic pixel


class Flat(Dataset):
    """n classes of constant images, so every tile's colour is known."""

    kind = "image"

    def __init__(self, n_classes: int):
        self.class_names = [f"c{i}" for i in range(n_classes)]


def _constant_split(value: float, per_class: list[int], channels: int = 1) -> Split:
    y = torch.repeat_interleave(torch.arange(len(per_class)), torch.tensor(per_class))
    return Split(torch.full((len(y), channels, SIZE, SIZE), value), y)


def _draw(tmp_path: Path, n_classes: int, real_per_class=None, fake_per_class=None, channels=1):
    real = _constant_split(0.0, real_per_class or [8] * n_classes, channels)  # black
    fake = _constant_split(0.5, fake_per_class or [8] * n_classes, channels)  # grey
    out = tmp_path / f"cell{n_classes}"
    cell = CellContext(Flat(n_classes), real, real, fake, out, 0)
    assert SampleGrid().evaluate(cell) == {}
    return mpimg.imread(out / "samples.png")[..., :3]


def _tile_centre(row: int, col: int) -> tuple[int, int]:
    """Pixel at the centre of tile (row, col) of the mosaic, in PNG coordinates."""
    left, top = MARGINS[0], MARGINS[1]
    cell = (SIZE + 1) * SCALE
    return top + SCALE + row * cell + cell // 2, left + SCALE + col * cell + cell // 2


def test_png_rows_scale_with_the_number_of_classes(tmp_path):
    heights = {n: _draw(tmp_path, n).shape[0] for n in (2, 4, 6)}
    widths = {_draw(tmp_path, n).shape[1] for n in (2, 6)}
    row_px = (SIZE + 1) * SCALE
    assert heights[4] - heights[2] == heights[6] - heights[4] == 2 * row_px
    assert len(widths) == 1 and row_px >= MIN_TILE_PX


def test_png_layout_real_left_gap_generated_right_blanks_for_missing(tmp_path):
    image = _draw(tmp_path, 3, real_per_class=[8, 3, 8], fake_per_class=[8, 8, 0])
    grey = lambda p: image[p].mean()  # noqa: E731
    for row in range(3):
        assert grey(_tile_centre(row, 8)) == pytest.approx(1.0, abs=0.01)  # the gap column is blank
    assert all(grey(_tile_centre(0, col)) < 0.05 for col in range(8))  # real: black tiles
    assert all(abs(grey(_tile_centre(0, 9 + col)) - 0.5) < 0.05 for col in range(8))  # generated: grey
    assert [grey(_tile_centre(1, col)) < 0.05 for col in range(8)] == [True] * 3 + [False] * 5
    # no generated samples: a blank block but for its caption (dark text across the row's middle)
    assert sum(grey(_tile_centre(2, 9 + col)) > 0.99 for col in range(8)) >= 2
    block = image[
        _tile_centre(2, 9)[0] - 5 : _tile_centre(2, 9)[0] + 5, _tile_centre(2, 9)[1] : _tile_centre(2, 16)[1]
    ]
    assert block.mean(axis=2).min() < 0.6


def test_an_empty_generated_block_says_why():
    from types import SimpleNamespace

    from bench.data.targets import ClassTarget
    from bench.evaluators.sample_grid import empty_notes

    synthetic = _constant_split(0.5, [0, 4, 0])
    targets = [
        ClassTarget("a", 900, 0.9, "Head", 0),
        ClassTarget("b", 10, 0.01, "LT", 4),
        ClassTarget("c", 10, 0.01, "LT", 4),
    ]
    cell = SimpleNamespace(synthetic=synthetic, targets=targets)
    assert empty_notes(cell, 3) == ["none: not augmented\n(Head class)", None, "no generated samples"]
    assert empty_notes(SimpleNamespace(synthetic=synthetic, targets=None), 3)[0] == "no generated samples"


def test_vector_cells_get_a_scatter_of_real_and_generated_points_per_class(tmp_path):
    from bench.datasets.synthetic2d import Synthetic2D

    data = Synthetic2D(n_max=200, imbalance_ratio=10.0, n_test_per_class=20)
    test = data.load("test")
    cell = CellContext(data, data.load("train"), test, test, tmp_path, 0)
    assert SampleGrid().evaluate(cell) == {}
    image = mpimg.imread(tmp_path / "samples.png")
    assert image.shape[1] > image.shape[0] > 300  # two panels side by side and a legend


def test_rgb_images_keep_their_colour(tmp_path):
    real = Split(torch.zeros(2, 3, SIZE, SIZE), torch.tensor([0, 1]))
    real.x[:, 0] = 1.0  # pure red
    cell = CellContext(Flat(2), real, real, real, tmp_path, 0)
    SampleGrid().evaluate(cell)
    pixel = mpimg.imread(tmp_path / "samples.png")[_tile_centre(1, 0)][:3]
    np.testing.assert_allclose(pixel, [1.0, 0.0, 0.0], atol=0.01)


def test_tiles_are_clamped_and_grey_is_repeated_to_rgb():
    tiles = to_tiles(torch.tensor([-1.0, 0.25, 2.0]).reshape(1, 1, 1, 3), n=5)
    assert len(tiles) == 1 and tiles[0].shape == (1, 3, 3)
    np.testing.assert_array_equal(tiles[0][0], [[0, 0, 0], [0.25, 0.25, 0.25], [1, 1, 1]])


def test_mosaic_places_tiles_in_their_cells():
    black, grey = np.zeros((2, 2, 3)), np.full((2, 2, 3), 0.5)
    mosaic = grid_mosaic([[black], [black, black]], [[grey, grey], []], n_columns=2, size=(2, 2))
    assert mosaic.shape == (2 * 3 + 1, 5 * 3 + 1, 3)
    assert (mosaic[1:3, 1:3] == 0).all() and (mosaic[1:3, 4:6] == 1).all()  # row 0: one real tile
    assert (mosaic[1:3, 10:12] == 0.5).all() and (mosaic[1:3, 13:15] == 0.5).all()
    assert (mosaic[4:6, 4:6] == 0).all() and (mosaic[4:6, 10:] == 1).all()  # row 1: nothing generated


def test_digits_figure_has_one_row_per_digit(tmp_path):
    digits = DigitsLT()
    train, test = digits.load("train"), digits.load("test")
    cell = CellContext(digits, train, test, train, tmp_path, 0)
    assert SampleGrid(n_columns=4).evaluate(cell) == {}
    image = mpimg.imread(tmp_path / "samples.png")
    assert image.shape[0] == MARGINS[1] + MARGINS[3] + (10 * (SIZE + 1) + 1) * SCALE
    assert evaluators.get("sample_grid") is SampleGrid


def test_long_class_names_fit_inside_the_figure(tmp_path):
    """Row labels are measured, not guessed: the rendered label of a long class name (NIH-CXR-LT's
    "Pneumomediastinum", and longer) starts inside the figure, whatever its letters."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from bench.evaluators.sample_grid import DPI, label_width_px

    labels = ["Pneumomediastinum", "Subcutaneous Emphysema", "WWWWWWWWWWWWWWWWWWWW", "iiii"]
    fig = Figure(dpi=DPI)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.5, 0.1, 0.4, 0.8))
    ax.set_yticks(range(len(labels)), labels)
    canvas.draw()
    rendered = [t.get_window_extent(canvas.get_renderer()).width for t in ax.get_yticklabels()]
    measured = [label_width_px([s]) for s in labels]
    assert np.allclose(measured, rendered, atol=2)  # within two pixels of what matplotlib draws
    assert measured[2] > 3 * measured[3]  # proportional font: W is wider than i


def test_the_tail_figure_holds_the_augmented_classes_alone(tmp_path):
    """samples_tail.png: the rows of the classes with generated images, in the same layout, so it is
    samples.png without the head classes' rows (what the report stacks per method)."""
    full = _draw(tmp_path, 5, fake_per_class=[0, 0, 8, 8, 8])  # two head classes, three augmented
    tail = mpimg.imread(tmp_path / "cell5" / "samples_tail.png")[..., :3]
    row_px = (SIZE + 1) * SCALE
    assert full.shape[1] == tail.shape[1] and full.shape[0] - tail.shape[0] == 2 * row_px
    for row in range(3):  # tail row r is full row r + 2, tile for tile
        for col in (0, 9):
            assert np.allclose(tail[_tile_centre(row, col)], full[_tile_centre(row + 2, col)])
    assert abs(tail[_tile_centre(0, 9)].mean() - 0.5) < 0.05  # generated: grey


def test_with_nothing_generated_the_tail_figure_shows_every_class(tmp_path):
    full = _draw(tmp_path, 3, fake_per_class=[0, 0, 0])
    assert mpimg.imread(tmp_path / "cell3" / "samples_tail.png").shape[:2] == full.shape[:2]
