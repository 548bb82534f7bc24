"""Conditional accuracy: does a classifier trained on real data recognise each generated class?

A multinomial logistic regression (class-balanced, on flattened samples) is fitted on the real
training split; `cond_acc/all` is the balanced accuracy of its predictions on the synthetic set
against the classes the samples were generated for, `cond_acc/tail` the same over the rarest
third of classes. `cond_acc/real` scores the real held-out split: the ceiling to compare with.
Cheap and CPU-friendly; a sanity check of conditioning, not a fidelity metric like FID.
"""

from __future__ import annotations

import numpy as np

from bench.config.checks import is_int, is_real
from bench.context import INIT, SOURCE
from bench.data.imagefiles import flat_float64
from bench.data.longtail import tail_classes
from bench.errors import BenchError
from bench.evaluator import Evaluator, Metric, directions
from bench.registry import register_evaluator


def per_class_recall(y_true: np.ndarray, y_pred: np.ndarray, classes) -> dict[int, float]:
    """Recall of each class in `classes` that occurs in y_true (scikit-learn's recall_score)."""
    from sklearn.metrics import recall_score  # scikit-learn loads when used, not with the plugin (a fast CLI)

    present = [int(c) for c in classes if np.any(np.asarray(y_true) == c)]
    if not present:
        return {}
    return dict(
        zip(present, map(float, recall_score(y_true, y_pred, labels=present, average=None, zero_division=0)))
    )


@register_evaluator("cond_accuracy")
class ConditionalAccuracy(Evaluator):
    """Balanced accuracy of a real-data classifier on generated samples, overall and on the tail."""

    metrics = (
        Metric("cond_acc/all", "cond. acc.", True),
        Metric("cond_acc/tail", "cond. acc. tail", True, headline=True, rank=80),
        Metric("cond_acc/real", "cond. acc. real", True),
    )  # the ceiling: real held-out data
    higher_is_better = directions(metrics[:2], ("", INIT, SOURCE)) | directions(metrics[2:])

    def __init__(self, C: float = 1.0, max_iter: int = 2000):
        if not is_real(C) or C <= 0:
            raise BenchError(f"cond_accuracy.C must be a number > 0 (inverse L2 strength), got {C!r}")
        if not is_int(max_iter) or max_iter < 1:
            raise BenchError(f"cond_accuracy.max_iter must be an integer >= 1, got {max_iter!r}")
        self.C, self.max_iter = C, max_iter

    def evaluate(self, cell) -> dict[str, float]:
        """cond_acc/{all,tail} for the trained model and each reference set, and the real ceiling."""
        from sklearn.linear_model import (
            LogisticRegression,  # scikit-learn loads when used, not with the plugin (a fast CLI)
        )
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        clf = make_pipeline(
            StandardScaler(), LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight="balanced")
        )
        clf.fit(flat_float64(cell.train.x), cell.train.y.numpy())
        tail = tail_classes(cell.train.counts(cell.dataset.n_classes))
        metrics = {"cond_acc/real": self._score(clf, cell.test, range(cell.dataset.n_classes))}
        for suffix, name in cell.scored_sets("synthetic"):
            split = cell.split(name)
            metrics[f"cond_acc/all{suffix}"] = self._score(clf, split, range(cell.dataset.n_classes))
            metrics[f"cond_acc/tail{suffix}"] = self._score(clf, split, tail)
        return metrics

    @staticmethod
    def _score(clf, split, classes) -> float:
        recalls = per_class_recall(split.y.numpy(), clf.predict(flat_float64(split.x)), classes)
        return float(np.mean(list(recalls.values()))) if recalls else float("nan")
