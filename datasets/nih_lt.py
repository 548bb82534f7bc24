"""NIH-CXR-LT (Holste et al. 2022): NIH ChestX-ray14 relabelled as a 20-class single-label long tail.

Read from a user's local copy in the official layout, with no conversion: LongTailCXR's label
CSVs (`nih-cxr-lt_single-label_<split>.csv`, or the `nih-lt_` names its code reads), NIH's PNGs
(flat, or in the `images_NNN/images/` folders of the Kaggle/Box download) and NIH's
`Data_Entry_2017_v2020.csv` for patient id (the grouping unit), sex, age and view position.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import pandas as pd

from bench.data.labels import find_file, read_csv
from bench.data.longtailcxr import LongTailCXRDataset
from bench.errors import BenchError
from bench.registry import register_dataset

DATA_ENTRY = "Data_Entry_2017_v2020.csv"
# what to say when the metadata is missing: the dataset runs without it, patients from file names
WITHOUT_METADATA = (
    "nih_lt.metadata_file=None to run without it (patient ids from the file names; no sex, age or view)"
)
_META = {
    "Patient ID": "subject",
    "Patient Gender": "sex",
    "Patient Age": "age",
    "View Position": "view",
    "Follow-up #": "follow_up",
}


@register_dataset("nih_lt")
class NIHLT(LongTailCXRDataset):
    """NIH-CXR-LT with LongTailCXR's splits: train, balanced-val, test, balanced-test.

    Settings besides the common ones (`nih_lt.root`, `.size`, ...): `labels_dir` (default: the
    root, `root/labels` or `root/LongTailCXR`, first that holds the CSVs), `image_dir` (default:
    found under the root), `metadata_file` (default `Data_Entry_2017_v2020.csv` in the root, a
    `.gz` copy also read; None derives the patient id from the file name `<patient>_<followup>.png`
    and leaves sex, age and view empty).
    """

    class_names = [
        "No Finding",
        "Infiltration",
        "Atelectasis",
        "Effusion",
        "Nodule",
        "Mass",
        "Pneumothorax",
        "Consolidation",
        "Pleural_Thickening",
        "Cardiomegaly",
        "Fibrosis",
        "Edema",
        "Tortuous Aorta",
        "Emphysema",
        "Pneumonia",
        "Calcification of the Aorta",
        "Pneumoperitoneum",
        "Hernia",
        "Subcutaneous Emphysema",
        "Pneumomediastinum",
    ]
    label_prefixes = ("nih-cxr-lt", "nih-lt")
    options = {**LongTailCXRDataset.options, "image_dir": None, "metadata_file": DATA_ENTRY}
    layout = (
        "ROOT/nih-cxr-lt_single-label_{train,balanced-val,test,balanced-test}.csv "
        "(or nih-lt_...), ROOT/images/*.png or ROOT/images_*/images/*.png, "
        f"ROOT/{DATA_ENTRY}"
    )

    def index(self, split: str):
        """Label rows joined with their image path and NIH metadata."""
        path = self.label_file(split)
        table = self.read_single_label(path, split, "id", [])
        table = table.assign(path=[self._image_paths.get(i, f"images/{i}") for i in table["id"]])
        return self._join_metadata(table, split)

    @cached_property
    def _image_paths(self) -> dict[str, str]:
        """File name -> path relative to the root, for every PNG in the image folders."""
        setting = self.settings["image_dir"]
        folders = (
            [self.root / setting]
            if setting
            else [self.root / "images", *sorted(self.root.glob("images_*/images")), self.root]
        )
        paths = {}
        for folder in folders:
            if folder.is_dir():
                with os.scandir(folder) as entries:
                    for e in entries:
                        if e.name.endswith(".png"):
                            paths.setdefault(e.name, os.path.relpath(e.path, self.root))
        return paths

    def _join_metadata(self, table: pd.DataFrame, split: str) -> pd.DataFrame:
        name = self.settings["metadata_file"]
        if name is None:
            subject = table["id"].str.split("_").str[0]
            return table.assign(subject=subject, sex=None, age=None, view=None)
        file = find_file([self.root], [name, f"{name}.gz"]) or (self.root / name)
        if not file.is_file():
            raise BenchError(
                f"nih_lt: missing metadata file {file} (nor {file.name}.gz); put NIH's {DATA_ENTRY} in "
                f"nih_lt.root, point nih_lt.metadata_file at it, or set {WITHOUT_METADATA}"
            )
        meta = read_csv(file, ["Image Index", *_META], self.name)
        meta = meta.rename(columns=_META).drop_duplicates("Image Index").set_index("Image Index")
        known = table["id"].isin(meta.index)
        if not known.all():
            self._missing_metadata(table.loc[~known, "id"].tolist(), split, file)
            table = table[known]
        joined = table.join(meta[list(_META.values())], on="id")
        return joined.assign(subject=joined["subject"].astype(str)).reset_index(drop=True)

    def _missing_metadata(self, ids: list[str], split: str, file: Path) -> None:
        if self.on_bad_row == "error":
            raise BenchError(
                f"nih_lt: {len(ids)} image(s) of split {split!r} have no row in {file.name} "
                f"(first: {ids[:5]}); use the full Data_Entry file, set nih_lt.on_bad_row='skip', or set "
                f"{WITHOUT_METADATA}"
            )
        self.skip(split, ids, f"no row in {file.name}")
