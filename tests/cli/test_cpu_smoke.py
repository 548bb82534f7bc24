"""presets/cpu_smoke.gin: the headline command through the real NIH loader on a laptop.

`bench run methods=[optprior,cbfm] datasets=[nih_lt] nih_lt.root=DIR --gin_file
presets/cpu_smoke.gin` on a fabricated NIH-CXR-LT tree (all 20 classes, long-tailed, two visible
subtypes per class so optprior finds subclasses) finishes, and its records hold the paper's
metrics: FID, IRS, balanced accuracy, macro-F1 and (optprior) kNN purity.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import gin
from bench.cli import main
from bench.datasets.nih_lt import NIHLT

TRAIN_PER_CLASS = (24, 18, 14, 12, 10, 9, 8, 7, 6, 6, 5, 5, 5, 4, 4, 4, 4, 4, 4, 4)


def nih_tree(root: Path) -> Path:
    """Label CSVs (train, balanced-val, balanced-test) and 20 x 20 PNGs; no Data_Entry file."""
    rng, classes, k = np.random.default_rng(0), NIHLT.class_names, 0
    (root / "images").mkdir(parents=True)
    for split, counts in (
        ("train", TRAIN_PER_CLASS),
        ("balanced-val", (4,) * 20),
        ("balanced-test", (4,) * 20),
    ):
        labels = [c for c, n in enumerate(counts) for _ in range(n)]
        ids = [f"{k + i:08d}_000.png" for i in range(len(labels))]
        k += len(labels)
        onehot = pd.DataFrame(np.eye(len(classes), dtype=int)[labels], columns=classes)
        pd.concat([pd.DataFrame({"id": ids}), onehot], axis=1).to_csv(
            root / f"nih-cxr-lt_single-label_{split}.csv", index=False
        )
        for j, (name, c) in enumerate(zip(ids, labels)):
            image = rng.random((20, 20)) * 30 + 20 * (c % 5)
            image[:, :10] += 120 * (j % 2)  # the subtype: left half bright or dark
            Image.fromarray(image.clip(0, 255).astype(np.uint8), mode="L").save(root / "images" / name)
    return root


@pytest.mark.slow
def test_the_headline_command_runs_on_a_fabricated_nih_tree_with_the_cpu_preset(tmp_path):
    root, res = nih_tree(tmp_path / "nih"), tmp_path / "res"
    try:
        code = main(
            [
                "run",
                "methods=[optprior,cbfm]",
                "datasets=[nih_lt]",
                f"nih_lt.root={root}",
                "nih_lt.metadata_file=None",
                "--gin_file",
                "presets/cpu_smoke.gin",
                f"results_dir={res}",
            ]
        )
    finally:
        gin.clear_config()
    assert code == 0
    records = {
        m: json.loads((res / "cpu_smoke" / "nih_lt" / m / "seed0" / "record.json").read_text())
        for m in ("optprior", "cbfm")
    }
    for method, record in records.items():
        metrics = record["metrics"]
        for key in (
            "fid/tail",
            "irs_inf/tail",
            "bacc",
            "macro_f1",
            "kid/tail",
            "bacc/no_aug",
            "bacc/crt",
            "bacc/ldam_drw",
            "macro_f1/aug+reweight",
        ):
            assert key in metrics and np.isfinite(metrics[key]), (method, key)
        assert record["n"]["train"] == sum(TRAIN_PER_CLASS) and record["encoder"] == "pixel"
    assert "knn_purity/latent" in records["optprior"]["metrics"]  # optprior induced subclasses
    assert max(records["optprior"]["method_info"]["k"]) == 2
