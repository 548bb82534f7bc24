"""Report figures from stored records: which panels each figure gets, the values it draws, valid PNGs,
and the trajectory figure from a real synthetic2d run."""

import json

import numpy as np
import pytest
from PIL import Image
from records_fixture import complete_record
from safetensors.numpy import save_file

import gin
from bench.report.collect import load_experiment
from bench.report.figures import (
    Figure,
    all_figures,
    augmented,
    class_bacc_bars,
    geometry_histograms,
    missing_classes,
    recall_changes,
    recall_series,
    sample_grid_panels,
    sample_grids,
    stored_paths,
    trajectories,
    trajectory_panels,
)
from bench.store.artifacts import write_json_atomic
from bench.store.gridfile import GRID, GridFile

CLASSES = ["Head", "Mid", "Rare"]
PLAN = [
    {"name": "Head", "count": 500, "ratio": 1.0, "group": "Head", "synthetic": 0},
    {"name": "Mid", "count": 60, "ratio": 0.12, "group": "MT", "synthetic": 30},
    {"name": "Rare", "count": 3, "ratio": 0.006, "group": "ULT", "synthetic": 22},
]
RED, GREEN = (255, 0, 0), (0, 160, 0)


def _hist(rng, lo, hi, n=200, bins=10) -> dict:
    counts, edges = np.histogram(rng.uniform(lo, hi, n), bins=bins, range=(lo, hi))
    return {"counts": counts.tolist(), "edges": edges.tolist()}


def _geometry(rng, own: bool) -> dict:
    """details["geometry"] with the N(0, I) reference and, if `own`, the method's source."""
    sources = {"gauss": "standard", **({"method": "class_mean"} if own else {})}
    return {
        "bins": 10,
        "histograms": {
            key: {"source": name, "n": 200, "path_length": _hist(rng, 0, 5), "alignment": _hist(rng, -1, 1)}
            for key, name in sources.items()
        },
    }


def _downstream(recall: list, no_aug: list) -> dict:
    return {
        "classifier_seeds": [1, 2],
        "bacc": [0.5, 0.6],
        "macro_f1": [0.4, 0.5],
        "bacc/no_aug": [0.4, 0.5],
        "macro_f1/no_aug": [0.3, 0.4],
        "recall": recall,
        "recall/no_aug": no_aug,
    }


def _write_cell(root, dataset, method, seed, grid, details=None, png=None, paths=None, hash_on_disk=None):
    """A cell folder with a record (config hash as declared unless `hash_on_disk`) and optional files."""
    folder = root / dataset / method / f"seed{seed}"
    folder.mkdir(parents=True)
    declared = f"h-{dataset}-{method}-{seed}"
    grid.add(dataset, method, seed, declared)
    record = {
        "status": "ok",
        "experiment": "figs",
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "config_hash": hash_on_disk or declared,
        "class_names": CLASSES,
        "augmentation": PLAN,
        "details": details or {},
        "metrics": {},
        "created": f"2024-01-0{seed + 1}T00:00:00",
    }
    (folder / "record.json").write_text(json.dumps(complete_record(record)))
    if png is not None:
        Image.new("RGB", (300, 200), png).save(folder / "samples.png")
    if paths is not None:
        (folder / "samples").mkdir()
        save_file(
            {"z": paths[0][:, -1], "y": paths[1], "paths": paths[0], "paths_y": paths[1]},
            folder / "samples" / "samples.safetensors",
        )


def _paths(rng, n_per_class=5, steps=4) -> tuple:
    """Straight paths from N(0, I) to class centres (1, 0), (0, 1), (-1, 0)."""
    y = np.repeat(np.arange(3), n_per_class)
    x0 = rng.standard_normal((len(y), 2)).astype(np.float32)
    x1 = np.array([[1, 0], [0, 1], [-1, 0]], np.float32)[y] * 4
    t = np.linspace(0, 1, steps + 1, dtype=np.float32)[None, :, None]
    return (1 - t) * x0[:, None] + t * x1[:, None], y.astype(np.int64)


RECALL = {
    ("fm", 0): ([0.9, 0.5, None], [0.95, 0.3, None]),
    ("fm", 1): ([0.8, 0.7, 0.2], [0.9, 0.4, 0.1]),
    ("cpd", 1): ([0.85, 0.6, 0.4], [0.9, 0.4, 0.1]),
}


@pytest.fixture
def experiment(tmp_path):
    """img: fm seeds 0, 1 ok; cpd seed 0 failed, seed 1 ok; optprior refused (rerun under another config).
    vec: fm and cpd with stored paths and geometry histograms; optprior with neither of its own."""
    root, grid, rng = tmp_path / "figs", GridFile("figs"), np.random.default_rng(0)
    for (method, seed), (recall, no_aug) in RECALL.items():
        _write_cell(
            root,
            "img",
            method,
            seed,
            grid,
            {"downstream": _downstream(recall, no_aug)},
            png=RED if method == "fm" else GREEN,
        )
    grid.add("img", "cpd", 0, "h-img-cpd-0")
    (root / "img" / "cpd" / "seed0").mkdir(parents=True)
    (root / "img" / "cpd" / "seed0" / "failure.json").write_text(json.dumps({"reason": "OOM"}))
    for seed in (0, 1):
        _write_cell(root, "img", "optprior", seed, grid, png=GREEN, hash_on_disk="other")
    for method in ("fm", "cpd"):
        _write_cell(root, "vec", method, 0, grid, {"geometry": _geometry(rng, own=True)}, paths=_paths(rng))
    _write_cell(root, "vec", "optprior", 0, grid, {"geometry": _geometry(rng, own=False)})
    write_json_atomic(root / GRID, grid.to_json())
    return load_experiment(root)


def _image(path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


def test_sample_grids_stack_each_methods_lowest_usable_seed_one_per_row(experiment, tmp_path):
    assert sample_grid_panels(experiment, "img") == [
        ("fm (seed 0)", experiment.cells[("img", "fm", 0)].folder / "samples.png"),
        ("cpd (seed 1)", experiment.cells[("img", "cpd", 1)].folder / "samples.png"),
        ("optprior: missing", None),
    ]
    figs = sample_grids(experiment, tmp_path / "out")
    assert [f.path.name for f in figs] == ["samples_img.png"]  # vec has no samples.png
    tail = experiment.cells[("img", "fm", 0)].folder / "samples_tail.png"  # the tail rows, when drawn
    Image.new("RGB", (300, 100), 50).save(tail)
    assert sample_grid_panels(experiment, "img")[0] == ("fm (seed 0)", tail)
    tail.unlink()
    assert figs[0].section == "samples"
    img = _image(figs[0].path)
    h, w, _ = img.shape
    assert 280 <= w <= 320 and h > 2 * 200  # each panel at its own width (300 px), stacked
    red = (img[..., 0] > 200) & (img[..., 1] < 50) & (img[..., 2] < 50)
    green = (img[..., 0] < 50) & (img[..., 1] > 120) & (img[..., 2] < 50)
    rows = lambda mask: np.nonzero(mask.any(axis=1))[0]  # noqa: E731
    assert rows(red).max() < rows(green).min()  # fm above cpd, in the method axis's order
    assert red.sum() > 0.8 * 300 * 200 and green.sum() > 0.8 * 300 * 200  # drawn at full size
    assert rows(green).max() < h - 10  # the missing method's row is a short one below


def test_trajectories_draw_the_stored_paths_of_vector_cells(experiment, tmp_path):
    panels = trajectory_panels(experiment, "vec")
    assert [title for title, _, _ in panels] == ["fm (seed 0)", "cpd (seed 0)", "optprior: no stored paths"]
    paths, labels = stored_paths(experiment.cells[("vec", "fm", 0)])
    assert paths.shape == (15, 5, 2) and labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert np.allclose(paths[:, -1], np.array([[4, 0], [0, 4], [-4, 0]])[labels])
    figs = trajectories(experiment, tmp_path / "out")
    assert [f.path.name for f in figs] == ["trajectories_vec.png"]
    img = _image(figs[0].path).astype(int)
    assert img.shape[1] > 3 * 300 and img.shape[0] > 300
    for colour in ((31, 119, 180), (255, 127, 14), (44, 160, 44)):  # tab10: one per class
        assert (np.abs(img - colour).sum(axis=2) < 30).sum() > 20, colour


def test_class_bars_average_recall_over_seeds_and_take_one_baseline_per_seed(experiment, tmp_path):
    series = {s.label: s for s in recall_series(experiment, "img")}
    assert list(series) == ["no augmentation", "fm (n = 2)", "cpd (n = 1)"]  # optprior is refused
    np.testing.assert_allclose(series["fm (n = 2)"].values, [0.85, 0.6, 0.2])  # None: absent in seed 0
    np.testing.assert_allclose(series["cpd (n = 1)"].values, [0.85, 0.6, 0.4])
    np.testing.assert_allclose(series["no augmentation"].values, [(0.95 + 0.9) / 2, (0.3 + 0.4) / 2, 0.1])
    # the spread: one row per generative seed, a missing value NaN, never 0
    np.testing.assert_allclose(series["fm (n = 2)"].table, [[0.9, 0.5, np.nan], [0.8, 0.7, 0.2]])
    assert series["fm (n = 2)"].seeds == (0, 1) and series["no augmentation"].seeds == (0, 1)
    changes = {c.label: c for c in recall_changes(list(series.values()))}
    # paired by seed: fm seed 0 - no_aug seed 0, fm seed 1 - no_aug seed 1
    np.testing.assert_allclose(changes["fm (n = 2)"].table, [[-0.05, 0.2, np.nan], [-0.1, 0.3, 0.1]])
    np.testing.assert_allclose(changes["cpd (n = 1)"].table, [[-0.05, 0.2, 0.3]])
    assert missing_classes(list(series.values())) == []
    assert augmented(experiment.records("img")[0]) == {1: "MT", 2: "ULT"}
    figs = class_bacc_bars(experiment, tmp_path / "out")
    assert [f.path.name for f in figs] == ["class_recall_img.png"] and "Shaded" in figs[0].caption
    assert '"n/a" marks a class with no value' in figs[0].caption and "dots each seed" in figs[0].caption
    img = _image(figs[0].path)
    assert img.shape[1] >= 600 and img.shape[0] >= 400


def test_a_class_without_any_value_is_marked_missing_not_drawn_as_zero(experiment, tmp_path):
    """A class absent from every seed's test set: NaN in every series, listed by missing_classes (each
    drawn with an n/a label instead of a bar), and the bars of the other classes unchanged."""
    for method, seed in RECALL:
        folder = experiment.cells[("img", method, seed)].folder
        record = json.loads((folder / "record.json").read_text())
        downstream = record["details"]["downstream"]
        downstream["recall"] = downstream["recall"][:2] + [None]
        downstream["recall/no_aug"] = downstream["recall/no_aug"][:2] + [None]
        (folder / "record.json").write_text(json.dumps(record))
    series = recall_series(load_experiment(experiment.folder), "img")
    assert missing_classes(series) == [(0, 2), (1, 2), (2, 2)]
    assert all(np.isnan(s.values[2]) and np.isfinite(s.values[:2]).all() for s in series)
    assert missing_classes(recall_changes(series)) == [(0, 2), (1, 2)]


def test_geometry_histograms_show_each_computable_source_and_the_reference(experiment, tmp_path):
    figs = geometry_histograms(experiment, tmp_path / "out")
    assert [f.path.name for f in figs] == ["geometry_vec.png"]
    assert "No histogram of its own source for: optprior." in figs[0].caption
    img = _image(figs[0].path)
    assert img.shape[1] >= 800 and img.shape[0] >= 300


@pytest.mark.slow
def test_all_figures_and_nothing_when_the_records_hold_nothing(experiment, tmp_path):
    figs = all_figures(experiment, tmp_path / "out")
    assert [f.path.name for f in figs] == [
        "samples_img.png",
        "trajectories_vec.png",
        "class_recall_img.png",
        "geometry_vec.png",
    ]
    assert all(isinstance(f, Figure) and f.title and f.caption and f.path.is_file() for f in figs)
    again = all_figures(experiment, tmp_path / "again")
    assert [f.path.read_bytes() for f in again] == [f.path.read_bytes() for f in figs]  # deterministic
    bare, grid = tmp_path / "bare", GridFile("bare")
    _write_cell(bare, "img", "fm", 0, grid)
    write_json_atomic(bare / GRID, grid.to_json())
    assert all_figures(load_experiment(bare), tmp_path / "none") == []
    assert not (tmp_path / "none").exists()


@pytest.mark.slow
def test_trajectories_from_a_real_synthetic2d_run(tmp_path):
    """The runner stores paths from sample.keep_paths (synthetic2d.gin); the figure is drawn from them."""
    from bench.pipeline.assemble import RunRequest
    from bench.scale.grid import run_grid

    axes = {"datasets": ["synthetic2d"], "methods": ["fm"], "seeds": [0]}
    request = RunRequest(
        results_dir=tmp_path / "res",
        axes=axes,
        bindings=[
            "train.steps=30",
            "synthetic2d.n_max=400",
            "synthetic2d.n_test_per_class=20",
            "sample.nfe=4",
            "sample.keep_paths=3",
            "sample.init_reference=False",
            "pipeline.evaluators=['swd', 'geometry']",
        ],
    )
    try:
        result = run_grid(request)
    finally:
        gin.clear_config()
    assert not result.failures, result.failures
    exp = load_experiment(tmp_path / "res" / "quick")
    cell = exp.cells[("synthetic2d", "fm", 0)]
    paths, labels = stored_paths(cell)
    assert paths.shape == (3 * 8, 4 + 1, 2) and labels.tolist() == sorted(labels.tolist())
    assert np.bincount(labels).tolist() == [3] * 8
    from safetensors.numpy import load_file

    stored = load_file(cell.folder / "samples" / "samples.safetensors")
    first = np.concatenate([np.nonzero(stored["y"] == c)[0][:3] for c in range(8)])
    np.testing.assert_array_equal(paths[:, -1], stored["z"][first])  # the path ends at the sample
    figs = trajectories(exp, tmp_path / "out") + geometry_histograms(exp, tmp_path / "out")
    assert [f.path.name for f in figs] == ["trajectories_synthetic2d.png", "geometry_synthetic2d.png"]
    assert _image(figs[0].path).shape[0] > 300
