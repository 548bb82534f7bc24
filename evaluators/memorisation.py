"""Memorisation: are synthetic images closer to the training images than new real images are?

Every sample is reduced to d = the L2 distance to its nearest training sample (exact search, any
class), in the domain feature space (`cell.features`, `space='features'`) or on raw pixels
(`space='pixels'`, slow). Real held-out (test) samples show what "new" looks like, per class:

- `memo_copy_share`: the share of synthetic samples whose d lies below the `quantile` q of the test
  samples' d *of the same class* (a near-copy); lower is better. A set drawn like the test set
  gives about q by construction, whatever its class mix.
- `memo_copy_share_expected`: q itself, the value a memorisation-free set reaches.
- `memo_nn_ratio`: the median over synthetic samples of d / median(d of the test samples of their
  class); higher is better, about 1 for new data, below 1 closer to training than new data, 0 for
  exact copies.

The synthetic samples pooled are those of the augmented classes (`cell.augmented_classes`, or every
class with synthetic samples when the cell has no augmentation plan) whose class also has test
samples; classes without test samples are listed in out_dir/memorisation.json with the per-class
numbers. A class with few test samples has a coarse threshold: its quantile is interpolated
between the few distances it has.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bench.config.checks import is_real
from bench.data.imagefiles import as_tensor
from bench.errors import BenchError
from bench.evaluator import Evaluator, Metric
from bench.metrics.neighbours import nearest
from bench.registry import register_evaluator

SPACES = ("features", "pixels")
_REFERENCE_CHUNK = 1024  # training rows compared at once (pixel rows are read lazily per chunk)


def nearest_distances(queries: torch.Tensor, reference, chunk: int = _REFERENCE_CHUNK) -> np.ndarray:
    """Exact L2 distance of each query row (n, D) to its nearest row of `reference` (m, ...).

    `reference` may be a tensor, an array or a lazy image array, read `chunk` rows at a time.
    """
    return nearest(queries, reference, chunk)[0]


def copy_statistics(
    d_syn: np.ndarray,
    y_syn: np.ndarray,
    d_test: np.ndarray,
    y_test: np.ndarray,
    classes: list[int],
    quantile: float,
) -> dict:
    """Per-class thresholds from d_test; pooled copy share and NN ratio over the synthetic rows.

    Returns `copy_share`, `nn_ratio` (NaN when no class has both synthetic and test rows),
    `per_class` {c: {n_synthetic, n_test, threshold, copy_share, nn_ratio}} and `skipped` (classes
    with synthetic but no test samples).
    """
    below, ratios, per_class, skipped = [], [], {}, []
    for c in classes:
        syn, test = d_syn[y_syn == c], d_test[y_test == c]
        if len(syn) == 0:
            continue
        if len(test) == 0:
            skipped.append(int(c))
            continue
        threshold, median = float(np.quantile(test, quantile)), float(np.median(test))
        below.append(syn < threshold)
        ratios.append(syn / max(median, np.finfo(float).tiny))
        per_class[int(c)] = {
            "n_synthetic": len(syn),
            "n_test": len(test),
            "threshold": threshold,
            "copy_share": float(below[-1].mean()),
            "nn_ratio": float(np.median(ratios[-1])),
        }
    pooled = (
        (float(np.concatenate(below).mean()), float(np.median(np.concatenate(ratios))))
        if below
        else (float("nan"), float("nan"))
    )
    return {"copy_share": pooled[0], "nn_ratio": pooled[1], "per_class": per_class, "skipped": skipped}


@register_evaluator("memorisation")
class Memorisation(Evaluator):
    """Near-copy share and nearest-neighbour distance ratio of synthetic images vs real test images."""

    applies_to = ("image",)
    # memo_copy_share_expected is a reference value (q), not a score: it has no better direction
    metrics = (
        Metric("memo_copy_share", "copy share", False),
        Metric("memo_copy_share_expected", "copy share expected", None, on_features=False),  # q itself
        Metric("memo_nn_ratio", "NN distance ratio", True),
    )

    def __init__(self, space: str = "features", quantile: float = 0.05):
        if space not in SPACES:
            raise BenchError(f"memorisation.space must be one of {SPACES}, got {space!r}")
        if not (is_real(quantile) and 0.0 < quantile < 1.0):
            raise BenchError(f"memorisation.quantile must be in (0, 1), got {quantile}; e.g. 0.05")
        self.space, self.quantile = space, float(quantile)

    def evaluate(self, cell) -> dict[str, float]:
        """memo_copy_share, its expected value q and memo_nn_ratio over the augmented classes."""
        classes = cell.augmented_classes if cell.targets else sorted(set(cell.synthetic.y.tolist()))
        d_syn = self._distances(cell, "synthetic")
        d_test = self._distances(cell, "test")
        stats = copy_statistics(
            d_syn, cell.synthetic.y.numpy(), d_test, cell.test.y.numpy(), classes, self.quantile
        )
        metrics = {
            "memo_copy_share": stats["copy_share"],
            "memo_copy_share_expected": self.quantile,
            "memo_nn_ratio": stats["nn_ratio"],
        }
        details = {
            "metrics": metrics,
            "space": self.space,
            "quantile": self.quantile,
            "classes": classes,
            "per_class": {cell.class_names[c]: v for c, v in stats["per_class"].items()},
            "skipped_no_test": [cell.class_names[c] for c in stats["skipped"]],
        }
        out_dir = Path(cell.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "memorisation.json").write_text(json.dumps(details, indent=2))
        return metrics

    def _distances(self, cell, name: str) -> np.ndarray:
        """Nearest-training-sample distances of the named set's rows in the configured space (none
        for an empty set: a plan that augments no class gives NaN metrics, not a failed cell)."""
        if not len(cell.split(name).y):
            return np.zeros(0)
        if self.space == "features":
            return nearest_distances(torch.from_numpy(cell.features(name)), cell.features("train"))
        return nearest_distances(as_tensor(cell.split(name).x), cell.train.x)
