"""Dataset plugin interface: a labelled, long-tailed train split and a held-out split."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Split:
    """One split in data space: samples, class labels and optional ground truth."""

    # (N, D) vectors or (N, C, H, W) images, float32; file-backed datasets give a lazy
    # bench.data.imagefiles.ImageFiles that reads rows only when sliced
    x: torch.Tensor
    y: torch.Tensor  # (N,) int64 class index
    subclass: torch.Tensor | None = None  # (N,) ground-truth subclass within its class, if known
    meta: object | None = None  # pandas.DataFrame of per-sample metadata, row-aligned with x
    ids: list | None = None  # sample identifiers (file names, patient ids, ...)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def counts(self, n_classes: int) -> torch.Tensor:
        """Number of samples per class (length n_classes)."""
        return torch.bincount(self.y, minlength=n_classes)

    def subset(self, mask: torch.Tensor) -> Split:
        """The rows where `mask` (bool or index tensor) selects, with every field kept aligned."""
        idx = mask.nonzero().squeeze(1) if mask.dtype == torch.bool else mask
        pick = lambda v: None if v is None else v[idx]  # noqa: E731
        meta = None if self.meta is None else self.meta.iloc[idx.numpy()].reset_index(drop=True)
        ids = None if self.ids is None else [self.ids[i] for i in idx.tolist()]
        x = self.x[idx] if isinstance(self.x, torch.Tensor) else self.x.take(idx)  # lazy stays lazy
        return Split(x, self.y[idx], pick(self.subclass), meta, ids)


class Dataset:
    """Base class for dataset plugins.

    A plugin sets `class_names` and `kind` ("vector" or "image") and implements `load(split)`.
    `train_split` is what generators and priors are fitted on; `eval_split` is held out and
    used by evaluators as the reference distribution; `val_split`, when the dataset has one
    (LongTailCXR's balanced-val), is for model selection (downstream classifiers' early stopping).
    """

    name = "dataset"
    kind = "vector"
    train_split = "train"
    eval_split = "test"
    val_split: str | None = None
    class_names: list[str] = []
    # True where the splits are drawn from a seed (embedded datasets), so data_split.tie_to_seed can
    # draw them from the generative seed (bench.data.split_seed); False: an official fixed split
    draws_split = False
    tied_split_seed: int | None = None  # set by bench.data.split_seed.tie_split_seed, else None

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def load(self, split: str) -> Split:
        """Return `split` as tensors; deterministic for a given configuration."""
        raise NotImplementedError

    def missing_settings(self) -> list[str]:
        """Settings the user must give before this dataset can load, each as `key=VALUE (what it
        is)`; validation reports all of a grid's at once. Embedded datasets need none."""
        return []

    def split_seed(self, data_seed: int) -> int:
        """The seed a drawing dataset draws its splits from: its data seed, or the generative seed
        when data_split.tie_to_seed tied them (`tied_split_seed`)."""
        return data_seed if self.tied_split_seed is None else self.tied_split_seed

    def describe(self) -> dict:
        """A JSON-able description of the configuration, stored in records (`split_seed` only when
        the split is tied to the generative seed, so untied descriptions and hashes are unchanged)."""
        tied = {} if self.tied_split_seed is None else {"split_seed": self.tied_split_seed}
        return {"name": self.name, "kind": self.kind, "n_classes": self.n_classes, **tied}
