"""Base class for datasets read from a user's local copy: label table + image files + metadata.

A plugin describes its layout in `index(split)`: one row per image with the columns `id`,
`path` (relative to `image_root`), `label` (class index), `subject` (patient id, for grouping)
and any metadata columns. This class does the rest the same way for every such dataset:
preprocessing settings, the bad-row / bad-image policies, checks that paths stay inside the
root, and the log of every skipped id (`skipped`), which the runner writes into the cell folder.

Settings are keyword-only and checked against COMMON_OPTIONS plus the plugin's `options`, so a
plugin declares its own settings as data (no constructor to copy) and a misspelt gin binding is
a one-line error with a suggestion rather than a TypeError from deep inside gin.
"""

from __future__ import annotations

import difflib
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.data.imagefiles import ImageFiles, Preprocess, unreadable
from bench.data.labels import check_policy, check_unique, one_hot_labels, read_csv
from bench.data.rootpath import missing_root, require_root, under_root
from bench.dataset import Dataset, Split
from bench.errors import BenchError

IMAGE_CHECKS = ("header", "exists", "decode")
# Settings every file-backed dataset takes (`<name>.size=128`, ...), with their defaults.
COMMON_OPTIONS = {
    "size": 64,
    "grayscale": True,
    "normalise": "unit",
    "crop": "center",
    "on_bad_row": "error",
    "on_bad_image": "error",
    "check_images": "header",
    "train_split": "train",
    "eval_split": "balanced-test",
    "val_split": "balanced-val",
}
INDEX_COLUMNS = ("id", "path", "label", "subject")


class ImageFileDataset(Dataset):
    """Shared machinery of the real-benchmark plugins (nih_lt, mimic_lt, ct_rate)."""

    kind = "image"
    layout = "see the dataset's documentation"  # one line, shown in every root/layout error
    splits: tuple[str, ...] = ()

    options: dict = {}  # a plugin's own settings and defaults; may also override COMMON_OPTIONS

    def __init__(self, root=None, **settings):
        known = {**COMMON_OPTIONS, **self.options}
        unknown = sorted(set(settings) - set(known))
        if unknown:
            hint = difflib.get_close_matches(unknown[0], known, n=1)
            raise BenchError(
                f"{self.name} has no setting {unknown[0]!r}"
                f"{f'; did you mean {hint[0]!r}?' if hint else ''} (settings: root, "
                f"{', '.join(sorted(known))})"
            )
        self.root_setting, self.settings = root, {**known, **settings}
        cfg = self.settings
        self.preprocess = Preprocess(cfg["size"], cfg["grayscale"], cfg["normalise"], cfg["crop"]).check(
            self.name
        )
        self.on_bad_row = check_policy(cfg["on_bad_row"], self.name, "on_bad_row")
        self.on_bad_image = check_policy(cfg["on_bad_image"], self.name, "on_bad_image")
        if cfg["check_images"] not in IMAGE_CHECKS:
            raise BenchError(
                f"{self.name}.check_images={cfg['check_images']!r} is not one of {list(IMAGE_CHECKS)}"
            )
        for key in ("train_split", "eval_split", "val_split"):
            self._check_split(cfg[key], key)
        self.check_images, self.train_split, self.eval_split, self.val_split = (
            cfg["check_images"],
            cfg["train_split"],
            cfg["eval_split"],
            cfg["val_split"],
        )
        self.skipped: list[dict] = []
        self._loaded: dict[str, Split] = {}

    # -- what a plugin provides ----------------------------------------------------------------
    def index(self, split: str) -> pd.DataFrame:
        """One row per usable image of `split` (columns INDEX_COLUMNS + metadata).

        Rows dropped under `on_bad_row='skip'` are reported with `self.skip(split, id, reason)`.
        """
        raise NotImplementedError

    @property
    def image_root(self) -> Path:
        """Folder that the `path` column is relative to (default: the dataset root)."""
        return self.root

    def missing_settings(self) -> list[str]:
        """`<name>.root` when it is unset (the local copy bench reads; nothing is downloaded)."""
        return [] if self.root_setting else [missing_root(self.name, self.layout)]

    # -- shared machinery ----------------------------------------------------------------------
    @cached_property
    def root(self) -> Path:
        """The configured root, checked to be a directory."""
        return require_root(self.root_setting, self.name, self.layout)

    def skip(self, split: str, ids, reason: str) -> None:
        """Log skipped ids (written to the cell folder as skipped.csv)."""
        self.skipped.extend({"split": split, "id": str(i), "reason": reason} for i in ids)

    def load(self, split: str) -> Split:
        """The split as lazy image files with labels, subjects and metadata (cached)."""
        self._check_split(split, "split")
        if split not in self._loaded:
            self._loaded[split] = self._build(split)
        return self._loaded[split]

    def _build(self, split: str) -> Split:
        table = self.index(split).reset_index(drop=True)
        absent = [c for c in INDEX_COLUMNS if c not in table.columns]
        if absent:
            raise RuntimeError(f"{self.name}.index() must return columns {absent}")
        paths = [under_root(self.image_root, p, self.name) for p in table["path"]]
        keep = self._usable_images(split, paths, table["id"].astype(str).tolist())
        table = table.iloc[keep].reset_index(drop=True)
        if table.empty:
            raise BenchError(f"{self.name}: split {split!r} has no usable images; check {self.name}.root")
        ids = table["id"].astype(str).tolist()
        meta = table.drop(columns=["path", "label"])
        return Split(
            ImageFiles([paths[i] for i in keep], ids, self.preprocess, self.name),
            torch.from_numpy(np.array(table["label"], dtype=np.int64)),
            meta=meta,
            ids=ids,
        )

    def _usable_images(self, split: str, paths: list[Path], ids: list[str]) -> list[int]:
        """Rows whose image passes the load-time check; the others raise or are skipped and logged."""
        bad = unreadable(paths, self.check_images)
        if bad and self.on_bad_image == "error":
            first = ", ".join(f"{ids[i]} ({why})" for i, why in bad[:5])
            raise BenchError(
                f"{self.name}: {len(bad)} image(s) of split {split!r} missing or unreadable "
                f"under {self.image_root}: {first}{' ...' if len(bad) > 5 else ''}; "
                f"fix the copy or set {self.name}.on_bad_image='skip' (skipped ids are logged)"
            )
        for i, why in bad:
            self.skip(split, [ids[i]], f"image {why}")
        dropped = {i for i, _ in bad}
        return [i for i in range(len(paths)) if i not in dropped]

    def read_single_label(self, path: Path, split: str, id_column: str, required: list[str]) -> pd.DataFrame:
        """A one-hot single-label CSV with a `label` column; bad rows raise or are skipped and logged."""
        table = read_csv(path, [id_column, *required, *self.class_names], self.name)
        check_unique(table[id_column], path, self.name)
        labels, keep, bad = one_hot_labels(
            table, list(self.class_names), id_column, path, self.name, self.on_bad_row
        )
        for row_id, reason in bad:
            self.skip(split, [row_id], reason)
        return table.assign(label=labels)[keep].reset_index(drop=True)

    def _check_split(self, split: str, key: str) -> None:
        if split not in self.splits:
            raise BenchError(
                f"{self.name}.{key}={split!r} is not a split of {self.name}; "
                f"choose one of {list(self.splits)}"
            )

    def describe(self) -> dict:
        """Configuration (root, preprocessing, policies, splits) for records and cache keys."""
        return {**super().describe(), "root": str(self.root_setting), **self.settings}
