"""MIMIC-CXR-LT (Holste et al. 2022): MIMIC-CXR-JPG relabelled as a 19-class single-label long tail.

LongTailCXR's label CSVs (`mimic-cxr-lt_single-label_<split>.csv`, or `mimic-lt_...`) hold
subject_id, study_id, dicom_id, `path` (relative to the MIMIC-CXR-JPG root) and the 19 class
columns in an order of their own, so classes are found by name. The view position comes from
MIMIC-CXR-JPG's `mimic-cxr-2.0.0-metadata.csv` when present; subject_id is the grouping unit.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from bench.data.labels import find_file, read_csv
from bench.data.longtailcxr import LongTailCXRDataset
from bench.registry import register_dataset

METADATA = "mimic-cxr-2.0.0-metadata.csv"
log = logging.getLogger(__name__)


@register_dataset("mimic_lt")
class MIMICLT(LongTailCXRDataset):
    """MIMIC-CXR-LT with LongTailCXR's splits: train, balanced-val, test, balanced-test.

    Settings besides the common ones: `labels_dir` (default: the root, `root/labels` or
    `root/LongTailCXR`), `image_root` (the MIMIC-CXR-JPG folder that `path` is relative to;
    default the root), `metadata_file` (default `mimic-cxr-2.0.0-metadata.csv` in the image root,
    `.gz` accepted; missing file = empty view column, logged; None = do not look).
    """

    class_names = [
        "No Finding",
        "Lung Opacity",
        "Cardiomegaly",
        "Atelectasis",
        "Pleural Effusion",
        "Support Devices",
        "Edema",
        "Pneumonia",
        "Pneumothorax",
        "Lung Lesion",
        "Fracture",
        "Enlarged Cardiomediastinum",
        "Consolidation",
        "Pleural Other",
        "Calcification of the Aorta",
        "Tortuous Aorta",
        "Pneumoperitoneum",
        "Subcutaneous Emphysema",
        "Pneumomediastinum",
    ]
    label_prefixes = ("mimic-cxr-lt", "mimic-lt")
    options = {**LongTailCXRDataset.options, "image_root": None, "metadata_file": METADATA}
    layout = (
        "ROOT/mimic-cxr-lt_single-label_{train,balanced-val,test,balanced-test}.csv "
        "(or mimic-lt_...), images at ROOT/<path> (files/pNN/pSUBJECT/sSTUDY/DICOM.jpg), "
        f"optional ROOT/{METADATA}"
    )
    _ID_COLUMNS = ["subject_id", "study_id", "dicom_id", "path"]

    @property
    def image_root(self) -> Path:
        """The MIMIC-CXR-JPG root that label paths are relative to."""
        setting = self.settings["image_root"]
        return Path(setting).expanduser() if setting else self.root

    def index(self, split: str) -> pd.DataFrame:
        """Label rows with id = dicom_id, subject = subject_id, and the view when known."""
        table = self.read_single_label(self.label_file(split), split, "dicom_id", self._ID_COLUMNS)
        table = table.assign(
            id=table["dicom_id"].astype(str),
            subject=table["subject_id"].astype(str),
            study=table["study_id"].astype(str),
        )
        table = table[["id", "path", "label", "subject", "study"]]
        return table.assign(view=self._views(table["id"]))

    def _views(self, ids: pd.Series) -> pd.Series:
        """ViewPosition per dicom_id from the MIMIC-CXR-JPG metadata, or None where unknown."""
        name = self.settings["metadata_file"]
        file = find_file([self.image_root, self.root], [name, f"{name}.gz"]) if name else None
        if file is None:
            if name:
                log.info("mimic_lt: no %s in %s; the view column stays empty", name, self.image_root)
            return pd.Series([None] * len(ids), index=ids.index, dtype=object)
        meta = read_csv(file, ["dicom_id", "ViewPosition"], self.name)
        views = meta.drop_duplicates("dicom_id").set_index("dicom_id")["ViewPosition"]
        return ids.map(views).astype(object).where(ids.isin(views.index), None)
