"""Small stored experiments for the report tests: record.json files and grid.json, no training.

Values are a deterministic function of (dataset, method, seed) so tests can recompute every
table entry independently.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.store.gridfile import GridFile

CLASSES = ["No Finding", "Effusion", "Mass", "Pneumomediastinum"]
HIGHER = {
    "fid/tail": False,
    "irs_inf/tail": True,
    "bacc": True,
    "macro_f1": True,
    "bacc/no_aug": True,
    "macro_f1/no_aug": True,
    "knn_purity_gap/features": True,
    "probe_gap": False,
    "probe_bacc": False,
    "probe_perm_bacc": False,
    "probe_near_chance": True,
    "geom_alignment": True,
    "geom_alignment_gauss": True,
    "geom_path_length": False,
    "geom_path_length_gauss": False,
}
OFFSET = {"fm": 0.0, "cbfm": 0.01, "optprior": 0.05, "optprior_sub": 0.03, "optprior_opt": 0.02}
ROLES = {"optprior": (True, True), "optprior_sub": (True, False), "optprior_opt": (False, True)}


def bacc_runs(method: str, seed: int, n_classifiers: int = 3) -> list[float]:
    """Per-classifier balanced accuracies of one cell."""
    return [0.50 + OFFSET[method] + 0.01 * seed + 0.002 * i for i in range(n_classifiers)]


def no_aug_runs(seed: int, n_classifiers: int = 3) -> list[float]:
    return [0.49 + 0.01 * seed + 0.002 * i for i in range(n_classifiers)]


def fid_value(method: str, seed: int) -> float:
    return 50.0 - 100 * OFFSET[method] + seed


# what a record written by `bench run` always holds (bench/store/schemas/record.schema.json) beyond
# what the report tests set: neutral values, so a test's record passes the schema reports check
FILLER = {
    "schema_version": 1,
    "status": "ok",
    "experiment": "exp",
    "higher_is_better": {},
    "n": {"train": 0, "test": 0, "synthetic": 0},
    "config_hash": "h",
    "operative_config": "",
    "versions": {"python": "3.11.7"},
    "git_hash": None,
    "host": {"hostname": "test", "platform": "test", "device": "cpu", "torch_threads": 1},
    "timings_s": {"total": 1.0},
    "created": "2026-01-01T00:00:00+0000",
    "class_names": [],
    "train_counts": [],
    "eval_split": "test",
    "skipped": 0,
    "dataset_info": {},
    "method_info": {},
    "stage_versions": {"prior": 1, "train": 1},
    "backbone": "mlp",
    "plugins": {},
    "encoder": "pixel",
    "sampler": {"solver": "euler", "nfe": 1},
    "train": {},
    "stage_hashes": {},
    "data": {"train": "d", "eval": "d"},
    "details": {},
    "config": "",
}
FULL_RUN = {"synthetic_per_class": [], "source_per_class": [], "augmentation": []}


def complete_record(record: dict) -> dict:
    """`record` with every field the record schema requires that it lacks set to a neutral value."""
    rest = {"skipped_evaluators": []} if "stop_after" in record else FULL_RUN
    return {**FILLER, **rest, **record}


def make_record(dataset: str, method: str, seed: int, config_hash: str, experiment: str = "exp") -> dict:
    """A record with the fields tables and figures read."""
    bacc, no_aug = bacc_runs(method, seed), no_aug_runs(seed)
    metrics = {
        "fid/tail": fid_value(method, seed),
        "n/fid": 150.0,
        "irs_inf/tail": 0.1 + OFFSET[method],
        "bacc": sum(bacc) / 3,
        "macro_f1": sum(bacc) / 3 - 0.05,
        "bacc/no_aug": sum(no_aug) / 3,
        "macro_f1/no_aug": sum(no_aug) / 3 - 0.05,
        "geom_alignment": 0.1 + OFFSET[method],
        "geom_alignment_gauss": 0.1,
        "geom_path_length": 30.0 - seed,
        "geom_path_length_gauss": 31.0,
    }
    info = {"name": method}
    if method in ROLES:
        info |= {"subclasses": ROLES[method][0], "learned_source": ROLES[method][1]}
        metrics |= {
            "knn_purity_gap/features": 0.2 + OFFSET[method],
            "probe_bacc": 0.7,
            "probe_perm_bacc": 0.4,
            "probe_gap": 0.3 + seed / 100,
            "probe_near_chance": 0.25,
        }
    details = {
        "downstream": {
            "classifier_seeds": [11, 12, 13],
            "bacc": bacc,
            "macro_f1": [b - 0.05 for b in bacc],
            "bacc/no_aug": no_aug,
            "macro_f1/no_aug": [b - 0.05 for b in no_aug],
            "recall": [0.9, 0.6, 0.3 + OFFSET[method], None],
            "recall/no_aug": [0.9, 0.6, 0.3, None],
        }
    }
    plan = [
        {"name": c, "count": n, "ratio": n / 500, "group": g, "synthetic": s}
        for c, n, g, s in zip(CLASSES, [1000, 500, 20, 5], ["untouched", "Head", "LT", "ULT"], [0, 0, 30, 20])
    ]
    return complete_record(
        {
            "schema_version": 1,
            "status": "ok",
            "experiment": experiment,
            "dataset": dataset,
            "method": method,
            "seed": seed,
            "metrics": metrics,
            "higher_is_better": {k: v for k, v in HIGHER.items() if k in metrics},
            "n": {"train": 1525, "test": 60, "synthetic": 50},
            "config_hash": config_hash,
            "class_names": CLASSES,
            "train_counts": [1000, 500, 20, 5],
            "augmentation": plan,
            "method_info": info,
            "details": details,
            "config": f"train.steps = 10\nmethod = '{method}'",
            "created": f"2026-11-26T00:00:0{seed}+0000",
        }
    )


def make_experiment(
    root: Path,
    datasets=("phantom_lt",),
    methods=("fm", "optprior"),
    seeds=(0, 1, 2),
    name: str = "exp",
    grid: bool = True,
) -> Path:
    """Write an experiment folder with one record per cell (and grid.json) and return it."""
    folder = Path(root) / name
    g = GridFile(name)
    for d in datasets:
        for m in methods:
            for s in seeds:
                h = f"h-{d}-{m}-{s}"
                g.add(d, m, s, h, metrics=dict(HIGHER))
                cell = folder / d / m / f"seed{s}"
                cell.mkdir(parents=True, exist_ok=True)
                (cell / "record.json").write_text(json.dumps(make_record(d, m, s, h, name)))
    if grid:
        (folder / "grid.json").write_text(json.dumps(g.to_json()))
    return folder
