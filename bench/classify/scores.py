"""What the downstream protocol's classifier runs measure, and their summary over classifier seeds.

One run (a run name and a classifier seed) is scored on the real test split: balanced accuracy
(mean per-class recall), macro-F1 over all classes (zero_division=0), each class's recall and the
predicted class ids in test-set order. A cell's metrics are the seed means of every run, the
sample standard deviations of the augmented run (NaN for one seed) and `bacc_gain` = bacc -
bacc/no_aug; its details keep every seed's scores, paired by index between runs, for the tables'
significance tests, and the predictions a test-image bootstrap recomputes them from
(bench.metrics.hierarchical_bootstrap).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from bench.classify.fit import Classifier, History, balanced_accuracy, macro_f1, predict
from bench.classify.runs import AUG, NO_AUG
from bench.dataset import Split

Recall = Callable[[np.ndarray, np.ndarray, range], dict]  # (truth, predicted, classes) -> {class: recall}


def score(
    model: Classifier,
    seed: int,
    history: History,
    test: Split,
    n_classes: int,
    batch_size: int,
    recall: Recall,
) -> dict:
    """One run's record: its seed, test bAcc, macro-F1, per-class recall (None for a class absent
    from the test split), training history and test predictions. `recall` computes the per-class
    recall (passed in: it belongs to the evaluators, above this wing)."""
    truth, pred = test.y.numpy(), predict(model, test.x, batch_size)
    per_class = recall(truth, pred, range(n_classes))
    return {
        "seed": seed,
        "bacc": balanced_accuracy(truth, pred),
        "macro_f1": macro_f1(truth, pred, n_classes),
        "recall": [per_class.get(c) for c in range(n_classes)],
        "history": history.to_dict(),
        "pred": [int(p) for p in pred],
    }


def per_seed(runs: dict[str, list[dict]]) -> dict:
    """What tables need beyond the means: every classifier seed's scores (paired by index between
    all runs of the cell) and the per-class recall averaged over seeds, per run name."""

    def recall(name: str) -> list:
        table = np.array([[np.nan if v is None else v for v in r["recall"]] for r in runs[name]], dtype=float)
        return [None if np.isnan(col).all() else float(np.nanmean(col)) for col in table.T]

    out = {"classifier_seeds": [r["seed"] for r in runs[AUG]]}
    for name in runs:
        suffix = "" if name == AUG else f"/{name}"
        out |= {f"{key}{suffix}": [float(r[key]) for r in runs[name]] for key in ("bacc", "macro_f1")}
        out[f"recall{suffix}"] = recall(name)
    return out


def predictions(runs: dict[str, list[dict]], labels: torch.Tensor) -> dict:
    """The test labels (test-set order) and, per classifier seed, the predicted class ids of the
    augmented (`aug`) and no-augmentation (`no_aug`) runs: what a test-image bootstrap recomputes
    bAcc and macro-F1 from. Ints only, a few thousand per cell on digits_lt."""
    return {
        "labels": [int(v) for v in labels.tolist()],
        **{name: [r["pred"] for r in runs[name]] for name in (AUG, NO_AUG) if name in runs},
    }


def summarise(runs: dict[str, list[dict]]) -> dict[str, float]:
    """Seed means of every run (and the sample standard deviations of the augmented one)."""

    def scores(name: str, key: str) -> np.ndarray:
        return np.array([r[key] for r in runs[name]], dtype=float)

    def std(v: np.ndarray) -> float:
        return float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")

    out = {
        "bacc": scores(AUG, "bacc").mean(),
        "macro_f1": scores(AUG, "macro_f1").mean(),
        "bacc_std": std(scores(AUG, "bacc")),
        "macro_f1_std": std(scores(AUG, "macro_f1")),
    }
    for name in (n for n in runs if n != AUG):
        out |= {f"{key}/{name}": scores(name, key).mean() for key in ("bacc", "macro_f1")}
    out["bacc_gain"] = out["bacc"] - out[f"bacc/{NO_AUG}"]
    return {k: float(v) for k, v in out.items()}
