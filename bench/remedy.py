"""The remedy interface: a classical long-tail remedy for the downstream classifier.

A remedy changes how the downstream classifier is trained, never the data it sees or how it is
selected and scored: the same architecture, splits, seeds, optimiser, early stopping on validation
balanced accuracy and test scoring as the no-augmentation classifiers (bench.classify.fit.fit).
A plugin subclasses `Remedy` and overrides only the hooks it changes; one that overrides nothing
trains plain cross-entropy, i.e. the no-augmentation classifier itself. The hooks:

- `epoch_order`: which training rows an epoch visits, in which order (class-balanced re-sampling);
- `loss`: the loss of a mini-batch's logits (re-weighting, focal, LDAM), given the epoch;
- `begin_epoch`: a phase change at an epoch (deferred re-weighting's switch); returning True
  restarts early stopping's patience, and `min_epochs` keeps training from stopping before it;
- `retrains_head`: decoupled classifier re-training (cRT): start from the plain classifier and
  train only a freshly initialised last layer on its frozen features.

`setup(counts)` gives the class counts of the training set the remedy is applied to (the real
training split, or real plus synthetic when combined with augmentation). Registered remedies are
gin-configurable under their name (`focal.gamma=1.0`); `describe()` is what their stored runs
depend on.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F


class Remedy:
    """Plain cross-entropy over a permutation of the rows each epoch (no remedy)."""

    name = "remedy"
    retrains_head = False  # cRT: train only a fresh last layer on the plain classifier's features
    min_epochs = 0  # early stopping never stops training before this many epochs

    def check(self, protocol) -> None:
        """Refuse, in one line, a training protocol (bench.classify.fit.Protocol) it cannot follow."""

    def setup(self, counts) -> None:
        """Remember the per-class training counts (index = class) the remedy is applied to."""
        self.counts = np.asarray(counts, dtype=np.int64)

    def epoch_order(self, y: torch.Tensor, generator: torch.Generator, epoch: int) -> torch.Tensor:
        """Row indices one epoch visits, in order: a seeded permutation."""
        return torch.randperm(len(y), generator=generator)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, epoch: int) -> torch.Tensor:
        """The mean loss of one mini-batch."""
        return F.cross_entropy(logits, target)

    def begin_epoch(self, epoch: int, optimizer: torch.optim.Optimizer) -> bool:
        """Called before epoch `epoch` (0-based); True when it starts a new phase (patience restarts)."""
        return False

    def describe(self) -> dict:
        """The settings its classifiers depend on (JSON)."""
        return {
            "remedy": self.name,
            **{
                k: v
                for k, v in vars(self).items()
                if not k.startswith("_") and k != "counts" and _jsonable(v)
            },
        }


def class_balanced_order(y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """len(y) rows drawn with replacement, each with probability proportional to 1 / n_class: every
    class is drawn equally often in expectation (PyTorch's WeightedRandomSampler, as LongTailCXR)."""
    weights = 1.0 / torch.bincount(y).double()[y]
    return torch.multinomial(weights, len(y), replacement=True, generator=generator)


def inverse_frequency_weights(counts) -> np.ndarray:
    """n / (K n_c) per class (scikit-learn's 'balanced' class weights, LongTailCXR's `sklearn`
    re-weighting); 0 for a class with no rows, which no loss term can reach."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    out = np.zeros_like(counts)
    out[present] = counts[present].sum() / (present.sum() * counts[present])
    return out


def effective_number_weights(counts, beta: float) -> np.ndarray:
    """Class-balanced weights (Cui et al. 2019): (1 - beta) / (1 - beta^n_c), scaled to sum to the
    number of classes present (LongTailCXR's `cb`); 0 for a class with no rows."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    out = np.zeros_like(counts)
    out[present] = (1.0 - beta) / (1.0 - np.power(beta, counts[present]))
    return out / out.sum() * present.sum()


def _jsonable(value) -> bool:
    return isinstance(value, (bool, int, float, str)) or value is None
