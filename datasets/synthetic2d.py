"""A 2-D long-tailed Gaussian mixture whose subclasses are known: the method's sanity benchmark."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from bench.config.checks import is_int, is_real, require
from bench.data.longtail import allocate, exponential_profile
from bench.dataset import Dataset, Split
from bench.errors import BenchError
from bench.registry import register_dataset

# Independent random streams, so loading "test" never depends on whether "train" was loaded.
_GEOMETRY, _TRAIN, _TEST, _FRESH, _VAL = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class ClassMixture:
    """The true distribution of one class: isotropic Gaussian subclasses with weights."""

    means: np.ndarray  # (K, 2) subclass centres
    stds: np.ndarray  # (K,) isotropic standard deviation of each subclass
    weights: np.ndarray  # (K,) subclass probabilities, summing to 1, largest first

    @property
    def n_subclasses(self) -> int:
        """Number of subclasses K."""
        return len(self.weights)

    def sample(self, counts: list[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw counts[k] points from subclass k; returns (x (N, 2), subclass (N,))."""
        k = np.repeat(np.arange(self.n_subclasses), counts)
        x = self.means[k] + self.stds[k, None] * rng.standard_normal((len(k), 2))
        return x, k


def class_mixtures(n_classes: int, max_subclasses: int, radius: float, rng) -> list[ClassMixture]:
    """Classes evenly spaced on a circle of `radius`; class c has 1 + c % max_subclasses subclasses.

    Subclass layout and widths scale with the gap between neighbouring classes so classes
    barely overlap whatever n_classes is; weights halve from one subclass to the next, which
    makes the smallest subclasses of tail classes rare (the case subclass priors are for).
    """
    spread = radius * math.sin(math.pi / n_classes)  # half the distance between class centres
    mixtures = []
    for c in range(n_classes):
        n_sub = 1 + c % max_subclasses
        theta = 2 * math.pi * c / n_classes
        centre = radius * np.array([math.cos(theta), math.sin(theta)])
        angles = rng.uniform(0, 2 * math.pi) + 2 * math.pi * np.arange(n_sub) / n_sub
        offset = 0.5 * spread if n_sub > 1 else 0.0
        means = centre + offset * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        stds = spread * rng.uniform(0.1, 0.2, size=n_sub)
        weights = 0.5 ** np.arange(n_sub)
        mixtures.append(ClassMixture(means, stds, weights / weights.sum()))
    return mixtures


@register_dataset("synthetic2d")
class Synthetic2D(Dataset):
    """Long-tailed 2-D mixture with ground-truth subclasses, far from an N(0, I) source.

    Train counts follow the exponential profile (class 0 the head); the test split is balanced
    (`n_test_per_class` per class). Subclass counts within a class are fixed by `allocate`, so
    every subclass of every class has at least one train and one test sample. `seed` is the
    data seed, independent of the training seed, so every grid cell sees the same data; with
    data_split.tie_to_seed the train, val and test draws come from the generative seed instead
    (the mixture's geometry stays that of `seed`).
    `mixture[c]` holds the true means, stds and weights of class c for evaluators and tests.
    """

    kind = "vector"
    draws_split = True
    val_split = "val"  # balanced like test, its own stream: for choosing settings (pipeline.eval_on=val)

    def __init__(
        self,
        n_classes: int = 8,
        n_max: int = 2000,
        imbalance_ratio: float = 100.0,
        n_test_per_class: int = 200,
        max_subclasses: int = 4,
        radius: float = 3.0,
        seed: int = 0,
    ):
        _check_settings(n_classes, n_max, imbalance_ratio, n_test_per_class, max_subclasses, radius, seed)
        self.n_max, self.imbalance_ratio, self.seed = n_max, imbalance_ratio, seed
        self.n_test_per_class, self.max_subclasses = n_test_per_class, max_subclasses
        self.radius = radius
        self.class_names = [f"class{c}" for c in range(n_classes)]
        self.train_counts = exponential_profile(n_max, n_classes, imbalance_ratio)
        self._check_counts()
        geometry_rng = np.random.default_rng([seed, _GEOMETRY])
        self.mixture = class_mixtures(n_classes, max_subclasses, radius, geometry_rng)

    def _check_counts(self) -> None:
        """Every subclass needs a train and a test sample: the counts must not fall below that."""
        for c, n in enumerate(self.train_counts):
            n_sub = 1 + c % self.max_subclasses
            if n < n_sub:
                raise BenchError(
                    f"synthetic2d: n_max={self.n_max} and imbalance_ratio={self.imbalance_ratio} leave "
                    f"class{c} {n} train sample(s), fewer than its {n_sub} subclasses; raise "
                    "synthetic2d.n_max or lower synthetic2d.imbalance_ratio"
                )
            if self.n_test_per_class < n_sub:
                raise BenchError(
                    f"synthetic2d.n_test_per_class={self.n_test_per_class} is fewer than the "
                    f"{n_sub} subclasses of class{c}; raise it or lower synthetic2d.max_subclasses"
                )

    def load(self, split: str) -> Split:
        """The train split (long-tailed profile), or the balanced test or validation split
        (`n_test_per_class` per class each, independent draws)."""
        if split == "train":
            return self._draw(self.train_counts, np.random.default_rng([self.split_seed(self.seed), _TRAIN]))
        streams = {"test": _TEST, "val": _VAL}
        if split in streams:
            balanced = [self.n_test_per_class] * self.n_classes
            return self._draw(balanced, np.random.default_rng([self.split_seed(self.seed), streams[split]]))
        raise BenchError(f"synthetic2d has splits 'train', 'val' and 'test', not {split!r}")

    def sample(self, n_per_class: int, seed: int = 0) -> Split:
        """A fresh balanced draw from the true mixture (an oracle generator for references)."""
        rng = np.random.default_rng([self.seed, _FRESH, seed])
        return self._draw([n_per_class] * self.n_classes, rng)

    def _draw(self, class_counts: list[int], rng: np.random.Generator) -> Split:
        xs, ys, ks = [], [], []
        for c, (n_c, mix) in enumerate(zip(class_counts, self.mixture)):
            x, k = mix.sample(allocate(n_c, mix.weights), rng)
            xs.append(x), ks.append(k), ys.append(np.full(len(k), c))
        order = rng.permutation(sum(class_counts))  # shuffled so no consumer relies on class order
        x, y, k = (np.concatenate(v)[order] for v in (xs, ys, ks))
        return Split(torch.from_numpy(x).float(), torch.from_numpy(y).long(), torch.from_numpy(k).long())

    def describe(self) -> dict:
        """Configuration plus the per-class train/test counts and subclass counts."""
        return {
            **super().describe(),
            "seed": self.seed,
            "n_max": self.n_max,
            "imbalance_ratio": self.imbalance_ratio,
            "radius": self.radius,
            "train_counts": list(self.train_counts),
            "test_counts": [self.n_test_per_class] * self.n_classes,
            "n_subclasses": [m.n_subclasses for m in self.mixture],
        }


def _check_settings(n_classes, n_max, ratio, n_test, max_subclasses, radius, seed) -> None:
    """One-line BenchErrors naming the gin setting that is out of range (or of the wrong type)."""
    checks = [
        (
            is_int(n_classes) and n_classes >= 2,
            f"synthetic2d.n_classes must be an integer >= 2, got {n_classes!r}",
        ),
        (is_int(n_max) and n_max >= 1, f"synthetic2d.n_max must be an integer >= 1, got {n_max!r}"),
        (is_real(ratio) and ratio >= 1, f"synthetic2d.imbalance_ratio must be a number >= 1, got {ratio!r}"),
        (
            is_int(max_subclasses) and max_subclasses >= 1,
            f"synthetic2d.max_subclasses must be an integer >= 1, got {max_subclasses!r}",
        ),
        (
            is_int(n_test) and n_test >= 1,
            f"synthetic2d.n_test_per_class must be an integer >= 1, got {n_test!r}",
        ),
        (is_real(radius) and radius > 0, f"synthetic2d.radius must be a number > 0, got {radius!r}"),
        (is_int(seed), f"synthetic2d.seed must be an integer, got {seed!r}"),
    ]
    require(checks)
