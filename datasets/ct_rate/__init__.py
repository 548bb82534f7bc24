"""CT-RATE axial chest-CT slices of single-pathology volumes, read from `bench prepare ct_rate` output."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from bench.data.filedataset import ImageFileDataset
from bench.data.labels import check_unique, read_csv
from bench.datasets.ct_rate.ctrate import ABNORMALITIES, CLASS_NAMES, NO_FINDING, OWNER, SPLITS
from bench.errors import BenchError
from bench.registry import register_dataset

MANIFEST = "manifest.csv"
REQUIRED = ["id", "path", "label", "subject", "split"]


@register_dataset("ct_rate")
class CTRate(ImageFileDataset):
    """Slices listed in `root/manifest.csv`, where `root` is the `--out` folder of the prepare step.

    Classes: "No Finding" plus, in CT-RATE's label order, every abnormality with at least
    `min_count` slices in the `train` split; slices of the other abnormalities are skipped and
    logged (`dropped_classes` names them). Splits, all grouped by patient (`subject`):
    `test` is CT-RATE's own `valid` split; `val` is a `val_fraction` of the CT-RATE train
    patients, drawn by a `split_seed`-seeded shuffle of their sorted ids; `train` is the rest.
    Settings besides the common ones: `min_count` (default 1), `val_fraction` (0.1), `split_seed` (0).
    """

    layout = (
        "the --out folder of `bench prepare ct_rate --root CT-RATE --out FOLDER`: "
        "manifest.csv and slices/{train,valid}/*.png"
    )
    splits = ("train", "val", "test")
    options = {
        "min_count": 1,
        "val_fraction": 0.1,
        "split_seed": 0,
        "train_split": "train",
        "eval_split": "test",
        "val_split": "val",
    }

    def __init__(self, root=None, **settings):
        super().__init__(root, **settings)
        min_count, val_fraction = self.settings["min_count"], self.settings["val_fraction"]
        if not isinstance(min_count, int) or min_count < 1:
            raise BenchError(f"{OWNER}.min_count must be an integer >= 1, got {min_count!r}")
        if not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
            raise BenchError(f"{OWNER}.val_fraction must be a number in [0, 1), got {val_fraction!r}")

    @cached_property
    def manifest(self) -> pd.DataFrame:
        """The prepare step's manifest, one row per slice."""
        path = self.root / MANIFEST
        if not path.is_file():
            raise BenchError(
                f"{OWNER}: {self.root} has no {MANIFEST}; write it with `bench prepare "
                f"ct_rate --root CT-RATE --out {self.root}` (expected layout: {self.layout})"
            )
        table = read_csv(path, REQUIRED, OWNER, dtype={c: str for c in REQUIRED})
        check_unique(table["id"], path, OWNER)
        odd = sorted(set(table["split"].astype(str)) - set(SPLITS))
        if odd:  # rows of another split would be dropped silently by `rows`
            raise BenchError(
                f"{OWNER}: {path} has rows of split {odd[0]!r} ({(table['split'] == odd[0]).sum()} "
                f"row(s)); its split column takes {' or '.join(map(repr, SPLITS))} "
                "(CT-RATE's train and valid folders): fix the column or rewrite it with `bench prepare`"
            )
        return table

    @cached_property
    def val_subjects(self) -> frozenset[str]:
        """The CT-RATE train patients held out as `val` (deterministic for a given split_seed)."""
        subjects = np.unique(self.manifest.loc[self.manifest["split"] == "train", "subject"].to_numpy())
        fraction, seed = self.settings["val_fraction"], self.settings["split_seed"]
        n = round(fraction * len(subjects))
        if fraction > 0 and len(subjects) > 1:
            n = min(max(n, 1), len(subjects) - 1)
        return frozenset(np.random.default_rng(seed).permutation(subjects)[:n].tolist())

    def rows(self, split: str) -> pd.DataFrame:
        """Manifest rows of `split`, labels still as names."""
        table = self.manifest
        if split == "test":
            return table[table["split"] == "valid"].reset_index(drop=True)
        train = table[table["split"] == "train"]
        in_val = train["subject"].isin(self.val_subjects)
        return train[in_val if split == "val" else ~in_val].reset_index(drop=True)

    @cached_property
    def _classes(self) -> tuple[list[str], list[str]]:
        counts = self.rows("train")["label"].value_counts()
        kept = [c for c in ABNORMALITIES if counts.get(c, 0) >= self.settings["min_count"]]
        return [NO_FINDING, *kept], [c for c in ABNORMALITIES if c not in kept]

    @property
    def class_names(self) -> list[str]:
        """ "No Finding" and the abnormalities with at least `min_count` train slices."""
        return self._classes[0]

    @property
    def dropped_classes(self) -> list[str]:
        """Abnormalities left out for having fewer than `min_count` train slices."""
        return self._classes[1]

    def index(self, split: str) -> pd.DataFrame:
        """Rows of `split` with class indices; unknown labels per on_bad_row, dropped classes skipped."""
        table = self.rows(split)
        labels = table["label"].fillna("")
        unknown = ~labels.isin(CLASS_NAMES)
        if unknown.any():
            first = table.loc[unknown, ["id", "label"]].iloc[0]
            if self.on_bad_row == "error":
                raise BenchError(
                    f"{OWNER}: {int(unknown.sum())} row(s) of {self.root / MANIFEST} have a "
                    f"label that is not a CT-RATE class (first: {first['id']}, "
                    f"{first['label']!r}); rerun `bench prepare ct_rate` or set "
                    f"{OWNER}.on_bad_row='skip' (skipped ids are logged)"
                )
            self.skip(split, table.loc[unknown, "id"], "label is not a CT-RATE class")
        for name in self.dropped_classes:
            self.skip(
                split,
                table.loc[labels == name, "id"],
                f"class {name!r} has fewer than min_count={self.settings['min_count']} train slices",
            )
        keep = labels.isin(self.class_names)
        table = table[keep].drop(columns=["split"]).copy()
        table["label"] = labels[keep].map({c: i for i, c in enumerate(self.class_names)}).astype(np.int64)
        return table.reset_index(drop=True)

    def describe(self) -> dict:
        """Settings plus the classes kept and dropped (read from the manifest)."""
        return {
            **super().describe(),
            "class_names": self.class_names,
            "dropped_classes": self.dropped_classes,
        }
