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
  train only a freshly initialised last layer on its frozen features;
- `augment`: batch-level augmentation of each mini-batch before the forward pass, the images the
  classifier sees and their targets: int64 labels, or soft targets (rows of class probabilities)
  that `loss` then receives (MixUp, CutMix, TrivialAugment);
- `partner_order`: a second stream of rows, paired batch by batch with `epoch_order`'s and handed
  to `augment` as `partner` (balanced MixUp's class-balanced batch).

The defaults of `augment` and `partner_order` touch nothing and draw nothing from the generator,
so a remedy that overrides neither trains exactly as before they existed.

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
    # a classical image augmentation (MixUp, CutMix, ...), an alternative to generative augmentation:
    # named in downstream.remedies, it also runs on top of the synthetic set (`aug+<name>`) unless
    # downstream.combine_augmentations=False (evaluators/downstream.py)
    image_augmentation = False
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
        """The mean loss of one mini-batch: `target` int64 labels (B,), or soft targets (B, K) from
        `augment`, for which cross-entropy is -sum_k t_k log softmax(logits)_k, averaged."""
        return F.cross_entropy(logits, target)

    def begin_epoch(self, epoch: int, optimizer: torch.optim.Optimizer) -> bool:
        """Called before epoch `epoch` (0-based); True when it starts a new phase (patience restarts)."""
        return False

    def partner_order(self, y: torch.Tensor, generator: torch.Generator, epoch: int) -> torch.Tensor | None:
        """Row indices of a second stream of mini-batches, as many as `epoch_order`'s, split the same
        way and paired with its batches in order (each handed to `augment` as `partner`); None: none."""
        return None

    def augment(
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        generator: torch.Generator,
        epoch: int,
        partner: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, targets) the classifier trains on for one mini-batch of images `x` (B, C, H, W)
        in [0, 1] and int64 labels `target` (B,): the labels, or soft targets (B, K) whose rows sum
        to 1. `partner`: the paired (images, labels) of `partner_order`'s stream. Default: unchanged."""
        return x, target

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


def soft_targets(target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(B, K) float32 one-hot rows of int64 labels; soft targets pass through as float32."""
    if target.dim() == 2:
        return target.float()
    return F.one_hot(target, n_classes).float()


def beta_draw(a: float, b: float, generator: torch.Generator) -> float:
    """One draw of Beta(a, b), its randomness taken from `generator` (torch's Beta sampler takes
    none): numpy's sampler seeded by a 62-bit integer drawn from it."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(a, b))


def convex_mix(
    x: torch.Tensor, x_other: torch.Tensor, t: torch.Tensor, t_other: torch.Tensor, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """lam * (x, t) + (1 - lam) * (x_other, t_other): MixUp's images and soft targets."""
    return lam * x + (1.0 - lam) * x_other, lam * t + (1.0 - lam) * t_other


def _jsonable(value) -> bool:
    return isinstance(value, (bool, int, float, str)) or value is None
