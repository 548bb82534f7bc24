"""A stored experiment with what the report page shows: records with provenance, source-only values and
long-tail remedies (records_fixture.py's values), and each cell's samples.png drawn by the sample_grid
evaluator's own layout code from random tiles. No training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from records_fixture import CLASSES, fid_value, make_experiment

from bench.evaluators.sample_grid import grid_mosaic, save_figure

COMMIT = "0123456789abcdef0123456789abcdef01234567"
VERSIONS = {"python": "3.11.7", "medaug-bench": "0.1.0", "torch": "2.13.0+cpu", "numpy": "2.4.6"}
REMEDIES = {"ros": 0.005, "crt": 0.02}  # bacc/<remedy> = bacc/no_aug + this
SOURCE_FID = 8.0  # fid/tail@source = fid/tail + this: the flow improves on its source
TILE = (28, 28)
TRAIN_COUNTS = (1000, 500, 20, 5)  # records_fixture's train_counts


def samples_png(folder: Path, seed: int, n_columns: int = 8) -> None:
    """A samples.png as the sample_grid evaluator draws it: real tiles left, generated right, per class."""
    rng = np.random.default_rng(seed)
    real = [[rng.uniform(0, 0.5, (*TILE, 3)) for _ in range(n_columns)] for _ in CLASSES]
    fake = [[rng.uniform(0.5, 1, (*TILE, 3)) for _ in range(n_columns)] for _ in CLASSES[2:]]
    fake = [[], []] + fake  # the two head classes are not augmented
    notes = ["none: not augmented\n(Head class)"] * 2 + [None, None]
    labels = [f"{name} (n={n})" for name, n in zip(CLASSES, TRAIN_COUNTS)]  # as the evaluator labels rows
    save_figure(
        grid_mosaic(real, fake, n_columns, TILE), labels, n_columns, TILE, folder / "samples.png", notes
    )


def add_provenance(record: dict) -> None:
    """The fields a real record holds about its origin (bench.store.records, bench.pipeline.runner)."""
    seed, method = record["seed"], record["method"]
    record |= {
        "git_hash": COMMIT + ("+dirty" if seed == 2 else ""),
        "versions": dict(VERSIONS),
        "host": {"hostname": "vm", "platform": "Linux", "device": "cpu", "torch_threads": 1},
        "stage_hashes": {"encode": "e" * 16, "train": f"{method}-{seed}".ljust(16, "0")},
        "data": {"train": "d" * 16, "eval": "f" * 16},
    }
    # what else a written record holds (the record schema asks for them); set only where absent
    plan = record.get("augmentation") or []
    for key, value in {
        "operative_config": record.get("config", ""),
        "synthetic_per_class": [p.get("synthetic", 0) for p in plan],
        "source_per_class": [p.get("synthetic", 0) for p in plan],
        "timings_s": {"train": 60.0, "total": 65.0},
        "eval_split": "test",
        "skipped": 0,
        "dataset_info": {"name": record["dataset"], "kind": "image", "n_classes": len(CLASSES)},
        "stage_versions": {"prior": 1, "train": 1},
        "backbone": "flux",
        "plugins": {f"method/{method}": "medaug-bench 0.1.0"},
        "encoder": "pixel",
        "sampler": {"solver": "euler", "nfe": 8},
        "train": {},
    }.items():
        record.setdefault(key, value)


def page_experiment(root: Path, methods=("fm", "cbfm", "optprior"), seeds=(0, 1, 2), samples=True) -> Path:
    """make_experiment's records plus provenance, `fid/tail@source`, two remedies and samples.png."""
    folder = make_experiment(root, methods=methods, seeds=seeds)
    for path in sorted(folder.glob("*/*/seed*/record.json")):
        rec = json.loads(path.read_text())
        add_provenance(rec)
        m = rec["metrics"]
        m["fid/tail@source"] = fid_value(rec["method"], rec["seed"]) + SOURCE_FID
        for remedy, gain in REMEDIES.items():
            m[f"bacc/{remedy}"] = m["bacc/no_aug"] + gain
            rec["higher_is_better"][f"bacc/{remedy}"] = True
        path.write_text(json.dumps(rec))
        if samples:
            samples_png(path.parent, rec["seed"] + 10 * methods.index(rec["method"]))
    return folder
