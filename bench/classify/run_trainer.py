"""One classifier run of the downstream protocol: a fresh classifier trained under a remedy (or the
last layer of a trained one retrained, cRT), then scored on the cell's real test split.

Every run of a cell shares the architecture, the training protocol (bench.classify.fit.Protocol),
the test split and the way it is scored, so `RunTrainer` holds them once; a run's own inputs are
its training rows, the validation split its early stopping selects on, its seed and its remedy.
The classifier is built on this process's device (bench.runtime.distributed.device), so the runs a
launched cell shares among its ranks each train on their rank's device.
"""

from __future__ import annotations

import torch

from bench.classify.fit import Classifier, Protocol, build_classifier, fit, retrain_head
from bench.classify.scores import Recall, score
from bench.dataset import Split
from bench.remedy import Remedy
from bench.runtime import distributed


class RunTrainer:
    """Trains and scores a cell's classifier runs: `arch` under `protocol`, scored on `test`
    (`n_classes` classes; `recall` computes the per-class recall, see bench.classify.scores)."""

    def __init__(self, arch: str, protocol: Protocol, n_classes: int, test: Split, recall: Recall):
        self.arch, self.protocol, self.n_classes = arch, protocol, n_classes
        self.test, self.recall = test, recall

    def classifier(self, x, seed: int) -> Classifier:
        """A fresh classifier for images shaped like `x`'s, initialised from `seed`."""
        model = build_classifier(self.arch, int(x.shape[1]), self.n_classes, seed=seed)
        return model.to(distributed.device())

    def train(self, x, y: torch.Tensor, val: Split, seed: int, remedy: Remedy) -> tuple[dict, Classifier]:
        """One classifier: train with early stopping on `val` under `remedy`, score on the test split;
        the run's record and the trained classifier (a base for cRT)."""
        model, history = fit(self.classifier(x, seed), x, y, val.x, val.y, self.protocol, seed, remedy)
        return self.score(model, seed, history), model

    def apply(self, remedy: Remedy, x, y: torch.Tensor, val: Split, seed: int, base: Classifier) -> dict:
        """One remedy run: re-train `base`'s last layer (cRT), or train a fresh classifier with it."""
        if remedy.retrains_head:
            model, history = retrain_head(base, x, y, val.x, val.y, self.protocol, seed, remedy)
            return self.score(model, seed, history)
        return self.train(x, y, val, seed, remedy)[0]

    def score(self, model: Classifier, seed: int, history) -> dict:
        """The run's record, scored on the test split."""
        return score(model, seed, history, self.test, self.n_classes, self.protocol.batch_size, self.recall)
