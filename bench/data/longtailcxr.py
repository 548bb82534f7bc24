"""What NIH-CXR-LT and MIMIC-CXR-LT share: LongTailCXR's splits and single-label CSV files.

LongTailCXR (Holste et al. 2022) publishes `<prefix>_single-label_{train,balanced-val,test,
balanced-test}.csv` per dataset; its own code reads them under a shorter prefix (`nih-lt_`,
`mimic-lt_`), so both spellings are accepted, in the root or a `labels/` or `LongTailCXR/` folder.
"""

from __future__ import annotations

from pathlib import Path

from bench.data.filedataset import ImageFileDataset
from bench.data.labels import find_file
from bench.errors import BenchError


class LongTailCXRDataset(ImageFileDataset):
    """Base of nih_lt and mimic_lt: splits, the `labels_dir` setting and label-file lookup."""

    splits = ("train", "balanced-val", "test", "balanced-test")
    options = {"labels_dir": None}
    label_prefixes: tuple[str, ...] = ()  # official first, e.g. ("nih-cxr-lt", "nih-lt")

    def label_file(self, split: str) -> Path:
        """The split's label CSV, or a one-line error naming the file, the folders and the layout."""
        names = [f"{prefix}_single-label_{split}.csv" for prefix in self.label_prefixes]
        setting = self.settings["labels_dir"]
        folders = (
            [self.root / setting] if setting else [self.root, self.root / "labels", self.root / "LongTailCXR"]
        )
        found = find_file(folders, names)
        if found is None:
            raise BenchError(
                f"{self.name}: no {' or '.join(names)} in {', '.join(map(str, folders))} "
                f"(expected layout: {self.layout}); set {self.name}.root or "
                f"{self.name}.labels_dir"
            )
        return found
