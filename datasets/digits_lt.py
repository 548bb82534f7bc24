"""scikit-learn's bundled 8x8 handwritten digits made long-tailed: a real image set with no download."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch

from bench.config.checks import is_int, is_real, require
from bench.data.longtail import exponential_profile
from bench.dataset import Dataset, Split
from bench.errors import BenchError
from bench.registry import register_dataset


@register_dataset("digits_lt")
class DigitsLT(Dataset):
    """Digits 0-9 as (1, 8, 8) images in [0, 1], train split long-tailed, test split balanced.

    The balanced test split (`n_test_per_class` per digit, drawn per class with the data
    `seed`) is taken first, so it is the same whatever the imbalance; the rest of each class is
    then subsampled to the exponential profile with class 0 (digit 0) as the head and
    `n_max` = all remaining digit-0 images unless set. `ids` are row indices into
    `sklearn.datasets.load_digits()`, so train and test can be checked for overlap. With
    data_split.tie_to_seed the splits are drawn from the generative seed instead of `seed`.
    """

    kind = "image"
    draws_split = True
    class_names = [str(c) for c in range(10)]

    def __init__(
        self,
        imbalance_ratio: float = 10.0,
        n_test_per_class: int = 40,
        n_max: int | None = None,
        seed: int = 0,
    ):
        checks = [
            (
                is_real(imbalance_ratio) and imbalance_ratio >= 1,
                f"digits_lt.imbalance_ratio must be a number >= 1, got {imbalance_ratio!r}",
            ),
            (
                is_int(n_test_per_class) and n_test_per_class >= 1,
                f"digits_lt.n_test_per_class must be an integer >= 1, got {n_test_per_class!r}",
            ),
            (
                n_max is None or (is_int(n_max) and n_max >= 1),
                f"digits_lt.n_max must be None (all digit-0 images) or an integer >= 1, got {n_max!r}",
            ),
            (is_int(seed), f"digits_lt.seed must be an integer, got {seed!r}"),
        ]
        require(checks)
        self.imbalance_ratio, self.n_test_per_class = imbalance_ratio, n_test_per_class
        self.n_max, self.seed = n_max, seed

    @cached_property
    def _data(self) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits  # ships with scikit-learn, no download

        digits = load_digits()
        return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)

    @cached_property
    def _indices(self) -> dict[str, np.ndarray]:
        """Row indices of each split, drawn once per configuration."""
        _, y = self._data
        rng = np.random.default_rng(self.split_seed(self.seed))
        pools = [rng.permutation(np.flatnonzero(y == c)) for c in range(self.n_classes)]
        if min(len(p) for p in pools) <= self.n_test_per_class:
            raise BenchError(f"digits_lt: n_test_per_class={self.n_test_per_class} leaves no train data")
        test = [p[: self.n_test_per_class] for p in pools]
        rest = [p[self.n_test_per_class :] for p in pools]
        counts = exponential_profile(self.n_max or len(rest[0]), self.n_classes, self.imbalance_ratio)
        if any(n > len(r) for n, r in zip(counts, rest)):
            raise BenchError(f"digits_lt: profile {counts} exceeds the images available; lower n_max")
        train = [r[:n] for n, r in zip(counts, rest)]
        return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}

    def load(self, split: str) -> Split:
        """The long-tailed train split or the balanced test split, as (N, 1, 8, 8) float32."""
        if split not in ("train", "test"):
            raise BenchError(f"digits_lt has splits 'train' and 'test', not {split!r}")
        images, labels = self._data
        idx = self._indices[split]
        x = torch.from_numpy(images[idx]).unsqueeze(1)
        return Split(x, torch.from_numpy(labels[idx]), ids=idx.tolist())

    def describe(self) -> dict:
        """Configuration plus the per-class train/test counts."""
        return {
            **super().describe(),
            "seed": self.seed,
            "imbalance_ratio": self.imbalance_ratio,
            "train_counts": self._counts("train"),
            "test_counts": self._counts("test"),
        }

    def _counts(self, split: str) -> list[int]:
        return np.bincount(self._data[1][self._indices[split]], minlength=self.n_classes).tolist()
