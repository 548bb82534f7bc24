"""CT-RATE prepare step: single-pathology axial chest-CT slices plus a manifest CSV, written once.

Input (the official CT-RATE release, Hamamci et al. 2024; `root` is the folder holding
`dataset/`, or `dataset/` itself):

- volumes `dataset/{train,valid}_fixed/<split>_<pid>/<split>_<pid>_<scan>/<VolumeName>`, e.g.
  `train_fixed/train_1/train_1_a/train_1_a_1.nii.gz`; the `_fixed` release is already in HU, so
  only the NIfTI header's own scaling is applied (never the metadata's RescaleSlope/Intercept);
- labels `dataset/multi_abnormality_labels/{train,valid}_predicted_labels.csv`: `VolumeName` and
  the 18 0/1 `ABNORMALITIES` columns, read by name;
- metadata `dataset/metadata/{train,validation}_metadata.csv` (`valid_metadata.csv` accepted):
  only `VolumeName` is required; the columns of `METADATA` are copied when present.

Selection (bench's documented default; the paper's own slice rule is lost, NOTES section 4): a
volume with exactly one positive abnormality has that class, one with none is "No Finding", and
a volume with several positives is excluded (counted in the summary, not an error).

Slice rule, per volume: a voxel is lung-like if its HU lies in `LUNG_HU` and it is inside the
body, where the body is every voxel above `BODY_HU` plus everything it encloses within the axial
plane (so the lungs count as inside while the air around the patient does not). The lung range
is the span of axial slices `vol[:, :, k]` whose lung-like area is at least
`LUNG_RANGE_FRACTION` of the largest; `slices_per_volume` slices are taken at the centres of
equal bins of the central `CENTRAL_FRACTION` of that range (fewer if rounding makes them
coincide). A volume without lung-like voxels fails with that reason.

Image rule, per slice: reoriented from the NIfTI affine so that anterior is up and the patient's
right is on the image left (the radiological view; slices whose in-plane axes are not
left-right/anterior-posterior are kept as stored), lung window (level -600, width 1500 HU:
[-1350, 150] HU mapped linearly to [0, 1], clipped), padded to a square with air, resized to
`size` x `size` (bilinear), rounded to 8-bit grayscale PNG.

Output under `out`: `slices/<split>/<stem>_s<k>.png` (stem = VolumeName without `.nii.gz`, k =
slice index), `manifest.csv` (`MANIFEST_COLUMNS`; `label` is the class name), `failed.csv`
(volumes of the last run that were missing, unreadable or without lungs) and `prepare.json`
(the settings; a rerun with other settings is refused). Every PNG is written to a temporary name
and renamed; a volume's rows go last into `parts/<stem>.csv`, which marks it done, so a rerun
skips finished volumes and redoes interrupted or failed ones; `manifest.csv` is rebuilt from the
parts atomically at the end of every run.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import re
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from bench.config.extras import require_extra
from bench.data.labels import check_unique, one_hot_labels, read_csv
from bench.errors import BenchError
from bench.store.artifacts import FILE_MODE, write_json_atomic, write_text_atomic

OWNER = "ct_rate"
ABNORMALITIES = [
    "Medical material",
    "Arterial wall calcification",
    "Cardiomegaly",
    "Pericardial effusion",
    "Coronary artery wall calcification",
    "Hiatal hernia",
    "Lymphadenopathy",
    "Emphysema",
    "Atelectasis",
    "Lung nodule",
    "Lung opacity",
    "Pulmonary fibrotic sequela",
    "Pleural effusion",
    "Mosaic attenuation pattern",
    "Peribronchial thickening",
    "Consolidation",
    "Bronchiectasis",
    "Interlobular septal thickening",
]
NO_FINDING = "No Finding"
CLASS_NAMES = [NO_FINDING, *ABNORMALITIES]
SPLITS = ("train", "valid")
LAYOUT = (
    "<root>/dataset/ with multi_abnormality_labels/{train,valid}_predicted_labels.csv, "
    "metadata/{train,validation}_metadata.csv and {train,valid}_fixed/<split>_<pid>/"
    "<split>_<pid>_<scan>/<split>_<pid>_<scan>_<recon>.nii.gz"
)

LUNG_HU = (-950.0, -500.0)  # lung parenchyma; air outside the body is below, soft tissue above
BODY_HU = -300.0  # soft tissue, bone and the table
LUNG_RANGE_FRACTION = 0.25  # a slice is in the lung range if its lung area >= this x the largest
CENTRAL_FRACTION = 0.5  # slices come from the central half of the lung range
WINDOW_LEVEL, WINDOW_WIDTH = -600.0, 1500.0  # lung window, HU
AREA_GRID = 128  # lung areas are measured on an in-plane grid of about this size (speed)
FORMAT = 1  # bump when the slice or image rule changes: old outputs are then refused

# manifest column <- metadata CSV column
METADATA = {
    "sex": "PatientSex",
    "age": "PatientAge",
    "manufacturer": "Manufacturer",
    "model": "ManufacturerModelName",
    "kernel": "ConvolutionKernel",
    "xy_spacing": "XYSpacing",
    "z_spacing": "ZSpacing",
}
MANIFEST_COLUMNS = ["id", "path", "label", "VolumeName", "subject", "split", "slice", *METADATA]
FAILED_COLUMNS = ["VolumeName", "split", "path", "reason"]
VOLUME_NAME = re.compile(r"(train|valid)_([^_/]+)_([^_/]+)_([^_/]+)\.nii\.gz")


@dataclass(frozen=True)
class VolumeJob:
    """One selected volume: where it is, its class and the manifest fields it contributes."""

    name: str  # VolumeName, e.g. train_1_a_1.nii.gz
    split: str  # train / valid (CT-RATE's own splits)
    label: str  # class name
    source: Path
    meta: dict = field(default_factory=dict)

    @property
    def stem(self) -> str:
        """VolumeName without `.nii.gz`."""
        return self.name[: -len(".nii.gz")]

    @property
    def subject(self) -> str:
        """Patient id, `<split>_<pid>`."""
        return "_".join(self.stem.split("_")[:2])


# -- the official layout ---------------------------------------------------------------------


def dataset_folder(root: Path) -> Path:
    """The `dataset/` folder of a CT-RATE copy whose root is `root` or `root/dataset`."""
    root = Path(os.path.expanduser(str(root)))
    if not root.is_dir():
        raise BenchError(f"{OWNER}: --root {root} is not a directory (expected layout: {LAYOUT})")
    return root / "dataset" if (root / "dataset").is_dir() else root


def split_files(base: Path, split: str) -> dict[str, Path]:
    """The label CSV, metadata CSV and volume folder of `split`, checked to exist."""
    meta_names = (
        ["train_metadata.csv"] if split == "train" else ["validation_metadata.csv", "valid_metadata.csv"]
    )
    meta = next(
        (base / "metadata" / n for n in meta_names if (base / "metadata" / n).is_file()),
        base / "metadata" / meta_names[0],
    )
    files = {
        "labels": base / "multi_abnormality_labels" / f"{split}_predicted_labels.csv",
        "metadata": meta,
        "volumes": base / f"{split}_fixed",
    }
    for kind, path in files.items():
        if not (path.is_dir() if kind == "volumes" else path.is_file()):
            raise BenchError(
                f"{OWNER}: missing {path} (expected layout: {LAYOUT}); "
                "point --root at the folder that holds dataset/"
            )
    return files


def read_jobs(base: Path, split: str) -> tuple[list[VolumeJob], int]:
    """The single-label volumes of `split` (labels by column name) and the number excluded."""
    files = split_files(base, split)
    labels = read_csv(files["labels"], ["VolumeName", *ABNORMALITIES], OWNER)
    check_unique(labels["VolumeName"], files["labels"], OWNER)
    values = labels[ABNORMALITIES].apply(pd.to_numeric, errors="coerce")
    labels[NO_FINDING] = (values.sum(axis=1, skipna=False) == 0).astype(int)
    index, keep, bad = one_hot_labels(labels, CLASS_NAMES, "VolumeName", files["labels"], OWNER, "skip")
    invalid = [(i, r) for i, r in bad if r != "several positive labels"]
    if invalid:
        raise BenchError(
            f"{OWNER}: {len(invalid)} row(s) of {files['labels'].name} have labels that "
            f"are not 0/1 (first: {invalid[0][0]}); replace it with an intact copy"
        )
    meta = read_csv(files["metadata"], ["VolumeName"], OWNER, dtype=str, keep_default_na=False)
    check_unique(meta["VolumeName"], files["metadata"], OWNER)
    meta = meta.set_index("VolumeName")
    jobs = []
    for name, cls in zip(labels["VolumeName"].astype(str)[keep], index[keep]):
        row = meta.loc[name] if name in meta.index else None
        jobs.append(
            VolumeJob(
                name, split, CLASS_NAMES[cls], volume_path(files["volumes"], name), metadata_fields(row)
            )
        )
    return jobs, len(bad)


def volume_path(volumes: Path, name: str) -> Path:
    """`<split>_fixed/<split>_<pid>/<split>_<pid>_<scan>/<name>` (the name alone if malformed)."""
    parts = name.split("_")
    if len(parts) < 4:
        return volumes / name
    return volumes / "_".join(parts[:2]) / "_".join(parts[:3]) / name


def metadata_fields(row) -> dict:
    """The METADATA fields of one metadata CSV row (blank where the column or value is absent)."""
    raw = {
        key: ("" if row is None or col not in row.index else str(row[col]).strip())
        for key, col in METADATA.items()
    }
    raw["age"] = age_years(raw["age"])
    for key in ("xy_spacing", "z_spacing"):
        raw[key] = first_number(raw[key])
    return raw


def age_years(value: str) -> str:
    """DICOM age string ("057Y", "006M", "57") as whole years, or "" if unparsable."""
    match = re.fullmatch(r"(\d+)\s*([YMWD]?)", value.strip().upper())
    if not match:
        return ""
    per_year = {"": 1, "Y": 1, "M": 12, "W": 52, "D": 365}[match[2]]
    return str(int(match[1]) // per_year)


def first_number(value: str) -> str:
    """First number of a spacing field ("[0.75, 0.75]" -> "0.75"), or ""."""
    found = re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", value)
    return found[0] if found else ""


# -- the slice and image rules ---------------------------------------------------------------


def lung_area(hu: np.ndarray) -> np.ndarray:
    """Lung-like area of every axial slice (voxels on the AREA_GRID grid) of an (X, Y, Z) HU volume."""
    from scipy import ndimage  # loads when a volume is masked, not with the plugin (a fast CLI)

    step = max(1, min(hu.shape[:2]) // AREA_GRID)
    hu = hu[::step, ::step, :]
    plane = np.zeros((3, 3, 3), bool)
    plane[:, :, 1] = ndimage.generate_binary_structure(2, 1)  # connect within a slice only
    regions, _ = ndimage.label(hu <= BODY_HU, structure=plane)
    edge = np.concatenate(
        [regions[0].ravel(), regions[-1].ravel(), regions[:, 0].ravel(), regions[:, -1].ravel()]
    )
    outside = np.isin(regions, np.unique(edge[edge > 0]))
    lung = ~outside & (hu >= LUNG_HU[0]) & (hu <= LUNG_HU[1])
    return lung.sum(axis=(0, 1))


def pick_slices(area: np.ndarray, k: int) -> list[int]:
    """Up to k slice indices evenly spread over the central part of the lung range ([] if no lung)."""
    if area.size == 0 or area.max() <= 0:
        return []
    in_range = np.flatnonzero(area >= LUNG_RANGE_FRACTION * area.max())
    lo, hi = in_range[0], in_range[-1]
    margin = (1.0 - CENTRAL_FRACTION) / 2
    positions = lo + (hi - lo) * (margin + CENTRAL_FRACTION * (np.arange(k) + 0.5) / k)
    return sorted(set(np.floor(positions + 0.5).astype(int).tolist()))


def lung_window(hu: np.ndarray) -> np.ndarray:
    """HU mapped through the lung window to float32 in [0, 1]."""
    lo = WINDOW_LEVEL - WINDOW_WIDTH / 2
    return np.clip((hu.astype(np.float32) - lo) / WINDOW_WIDTH, 0.0, 1.0)


def anterior_up(image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """An axial slice `vol[:, :, k]` turned so rows run anterior -> posterior and columns
    patient right -> left; returned as stored if its axes are not in the axial plane."""
    from nibabel.orientations import io_orientation

    ornt = io_orientation(affine)[:2]  # per array axis: (world axis 0=R/L 1=A/P 2=S/I, +1 toward R/A/S)
    if sorted(ornt[:, 0].astype(int).tolist()) != [0, 1]:
        return image
    if int(ornt[0, 0]) != 1:
        image, ornt = image.T, ornt[::-1]
    if ornt[0, 1] > 0:  # rows ran toward anterior
        image = image[::-1, :]
    if ornt[1, 1] > 0:  # columns ran toward the patient's right
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


def slice_image(hu: np.ndarray, affine: np.ndarray, size: int) -> np.ndarray:
    """One axial HU slice as a (size, size) uint8 image: oriented, windowed, squared, resized."""
    image = lung_window(anterior_up(hu, affine))
    h, w = image.shape
    side = max(h, w)
    square = np.zeros((side, side), np.float32)  # air is 0 in the window
    square[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = image
    resized = np.asarray(Image.fromarray(square).resize((size, size), Image.BILINEAR))
    return np.clip(np.floor(resized * 255.0 + 0.5), 0, 255).astype(np.uint8)


# -- one volume, written atomically ----------------------------------------------------------


def prepare_volume(job: VolumeJob, out: Path, size: int, slices_per_volume: int) -> tuple[str, int, str]:
    """Write one volume's slices, then its part file; ("done"|"missing"|"failed", n, reason)."""
    if not VOLUME_NAME.fullmatch(job.name) or not job.name.startswith(job.split + "_"):
        return "failed", 0, f"VolumeName does not follow {job.split}_<pid>_<scan>_<recon>.nii.gz"
    if not job.source.is_file():
        return "missing", 0, "file not found"
    try:
        import nibabel

        image = nibabel.load(str(job.source))
        hu = np.asanyarray(image.dataobj)  # header scaling only: the _fixed files are in HU
        if hu.ndim != 3:
            return "failed", 0, f"expected a 3-D volume, got shape {hu.shape}"
        chosen = pick_slices(lung_area(hu), slices_per_volume)
        if not chosen:
            return "failed", 0, "no lung-like voxels found"
        rows = [write_slice(job, k, slice_image(hu[:, :, k], image.affine, size), out) for k in chosen]
    except Exception as exc:  # corrupt gzip, truncated data, bad header: reported, never fatal
        return "failed", 0, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    write_text_atomic(part_file(out, job), csv_text(MANIFEST_COLUMNS, rows))
    return "done", len(rows), ""


def write_slice(job: VolumeJob, k: int, pixels: np.ndarray, out: Path) -> list:
    """Write one PNG atomically; its manifest row."""
    rel = f"slices/{job.split}/{job.stem}_s{k}.png"
    path = out / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(pixels, mode="L").save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return [
        f"{job.stem}_s{k}",
        rel,
        job.label,
        job.name,
        job.subject,
        job.split,
        k,
        *(job.meta.get(key, "") for key in METADATA),
    ]


def part_file(out: Path, job: VolumeJob) -> Path:
    """The file whose presence marks `job` as done."""
    return out / "parts" / f"{job.stem}.csv"


def csv_text(columns: list[str], rows: list[list]) -> str:
    """CSV text with a header line."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


# -- the whole run ---------------------------------------------------------------------------


def prepare_ct_rate(
    root: Path,
    out: Path,
    size: int = 256,
    slices_per_volume: int = 3,
    workers: int = 1,
    log: Callable[[str], None] = print,
) -> dict:
    """Write CT-RATE's single-pathology slices and manifest under `out` (see the module docstring).

    Returns a summary: volumes listed, excluded (several positives), done this run, skipped
    (done before), missing, failed, slices in the manifest and per-split class counts.
    """
    require_extra("nibabel", "bench prepare ct_rate (CT-RATE's NIfTI volumes)")  # before anything is read
    check_settings(size, slices_per_volume, workers)
    base = dataset_folder(root)
    jobs, excluded = [], 0
    for split in SPLITS:
        split_jobs, split_excluded = read_jobs(base, split)
        jobs += split_jobs
        excluded += split_excluded
    out = Path(out)
    claim_output(out, size, slices_per_volume)
    todo = [j for j in jobs if not part_file(out, j).is_file()]
    log(
        f"{OWNER}: {len(jobs)} single-label volumes ({excluded} with several findings excluded), "
        f"{len(jobs) - len(todo)} already done, {len(todo)} to do"
    )
    results = run_jobs(todo, out, size, slices_per_volume, workers, log)
    problems = [[j.name, j.split, str(j.source), r[2]] for j, r in zip(todo, results) if r[0] != "done"]
    write_text_atomic(out / "failed.csv", csv_text(FAILED_COLUMNS, problems))
    manifest = rebuild_manifest(out, jobs)
    summary = {
        "volumes": len(jobs) + excluded,
        "excluded_multi": excluded,
        "done": sum(r[0] == "done" for r in results),
        "skipped": len(jobs) - len(todo),
        "missing": sum(r[0] == "missing" for r in results),
        "failed": sum(r[0] == "failed" for r in results),
        "slices": len(manifest),
        "class_counts": {
            s: {
                c: int(n)
                for c, n in manifest.loc[manifest["split"] == s, "label"]
                .value_counts()
                .reindex(CLASS_NAMES, fill_value=0)
                .items()
            }
            for s in SPLITS
        },
        "manifest": str(out / "manifest.csv"),
        "failed_csv": str(out / "failed.csv"),
    }
    log(
        f"{OWNER}: {summary['done']} done, {summary['skipped']} skipped, {summary['missing']} missing, "
        f"{summary['failed']} failed (listed in {out / 'failed.csv'}); {len(manifest)} slices in "
        f"{out / 'manifest.csv'}"
    )
    return summary


def check_settings(size: int, slices_per_volume: int, workers: int) -> None:
    """One-line errors for settings that cannot work."""
    for key, value, least in (
        ("--size", size, 4),
        ("--slices-per-volume", slices_per_volume, 1),
        ("--workers", workers, 1),
    ):
        if not isinstance(value, int) or value < least:
            raise BenchError(f"{OWNER}: {key} must be an integer >= {least}, got {value!r}")


def claim_output(out: Path, size: int, slices_per_volume: int) -> None:
    """Record the settings in out/prepare.json; refuse an `out` prepared with other settings."""
    settings = {
        "format": FORMAT,
        "size": size,
        "slices_per_volume": slices_per_volume,
        "window": [WINDOW_LEVEL, WINDOW_WIDTH],
        "lung_hu": list(LUNG_HU),
    }
    path = out / "prepare.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = None
        if old != settings:
            raise BenchError(
                f"{OWNER}: {out} was prepared with other settings ({path}: {old}); "
                "use a new --out, or delete that folder to start over"
            )
        return
    write_json_atomic(path, settings)


def run_jobs(
    todo: list[VolumeJob],
    out: Path,
    size: int,
    slices_per_volume: int,
    workers: int,
    log: Callable[[str], None],
) -> list[tuple[str, int, str]]:
    """prepare_volume on every job (in a process pool if workers > 1); results in job order."""
    every = max(1, len(todo) // 20)
    results: list = [None] * len(todo)

    def record(i: int, result: tuple[str, int, str], n_finished: int) -> None:
        results[i] = result
        if result[0] == "failed":  # missing files are only counted: partial downloads are common
            log(f"{OWNER}: {todo[i].name}: {result[0]} ({result[2]})")
        if n_finished % every == 0 or n_finished == len(todo):
            log(f"{OWNER}: {n_finished}/{len(todo)} volumes")

    if workers == 1 or len(todo) <= 1:
        for i, job in enumerate(todo):
            record(i, prepare_volume(job, out, size, slices_per_volume), i + 1)
        return results
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {
            pool.submit(prepare_volume, job, out, size, slices_per_volume): i for i, job in enumerate(todo)
        }
        for n, future in enumerate(as_completed(futures), 1):
            record(futures[future], future.result(), n)
    return results


def rebuild_manifest(out: Path, jobs: list[VolumeJob]) -> pd.DataFrame:
    """Concatenate the part files of the finished `jobs` into out/manifest.csv (atomically)."""
    header = csv_text(MANIFEST_COLUMNS, [])
    body = []
    for job in jobs:
        path = part_file(out, job)
        if path.is_file():
            text = path.read_text()
            if not text.startswith(header):
                raise BenchError(
                    f"{OWNER}: {path} does not have the manifest columns of this "
                    "bench version; delete it (its volume is redone on the next run)"
                )
            body.append(text[len(header) :])
    text = header + "".join(body)
    write_text_atomic(out / "manifest.csv", text)
    return pd.read_csv(io.StringIO(text), dtype={"label": str, "split": str})
