"""CT-RATE: the prepare step on a fabricated official tree of small NIfTI phantoms, and the dataset.

Every volume is the same 24 x 24 x 20 phantom (air -1024 HU, a 40 HU body ellipse, a 1000 HU
marker at the anterior body wall) whose two -850 HU lungs fill slices 6..13, plus a tiny lung
apex (4 voxels) in slices 4..5 that is below the lung-range threshold. So the lung range is 6..13,
its central half 7.75..11.25, and three bin centres 8.33, 9.5, 10.67 round to slices 8, 10, 11.
"""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from bench.datasets.ct_rate import CTRate
from bench.datasets.ct_rate.ctrate import (
    ABNORMALITIES,
    MANIFEST_COLUMNS,
    lung_window,
    prepare_ct_rate,
    slice_image,
)
from bench.errors import BenchError
from bench.registry import datasets

SHAPE = (24, 24, 20)
LUNG_Z, CENTRAL_SLICES = range(6, 14), [8, 10, 11]
LUNG_VOXEL, BODY_VOXEL, AIR_VOXEL, MARKER_VOXEL = (6, 10), (11, 5), (0, 0), (11, 17)
# VolumeName -> positive abnormalities; two volumes with several positives are excluded.
LABELS = {
    "train_1_a_1": [],
    "train_1_a_2": ["Emphysema"],
    "train_2_a_1": ["Emphysema"],
    "train_3_a_1": ["Emphysema", "Atelectasis"],
    "train_3_b_1": ["Cardiomegaly"],
    "train_3_c_1": [],
    "train_4_a_1": [],
    "valid_1_a_1": [],
    "valid_2_a_1": ["Bronchiectasis"],
    "valid_2_b_1": ["Emphysema"],
    "valid_3_a_1": ["Lung nodule", "Pleural effusion"],
}
SELECTED = {k: (v[0] if v else "No Finding") for k, v in LABELS.items() if len(v) <= 1}


def phantom() -> np.ndarray:
    x, y = np.meshgrid(np.arange(24), np.arange(24), indexing="ij")
    hu = np.full(SHAPE, -1024.0, np.float32)
    hu[((x - 11.5) / 10) ** 2 + ((y - 11.5) / 8) ** 2 <= 1] = 40.0
    hu[11:13, 17:19, :] = 1000.0  # marker: large y = anterior in an RAS affine
    for z in LUNG_Z:
        hu[5:10, 8:16, z] = hu[14:19, 8:16, z] = -850.0
    hu[6:8, 10:12, 4:6] = -850.0  # apex: 4 voxels per slice, under a quarter of 80
    return hu


def window_value(hu: float) -> int:
    """Hand computation of the lung window: [-1350, 150] HU -> [0, 255], rounded."""
    return int(np.floor(np.clip((hu + 1350) / 1500, 0, 1) * 255 + 0.5))


def write_volume(path, affine=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(phantom(), np.eye(4) if affine is None else affine), str(path))


def volume_file(root, stem):
    split, pid, scan, _ = stem.split("_")
    return root / "dataset" / f"{split}_fixed" / f"{split}_{pid}" / f"{split}_{pid}_{scan}" / f"{stem}.nii.gz"


@pytest.fixture
def tree(tmp_path):
    """A CT-RATE root in the official layout; label columns deliberately in reverse order."""
    root = tmp_path / "CT-RATE"
    for split, meta_name in (("train", "train_metadata.csv"), ("valid", "validation_metadata.csv")):
        stems = [s for s in LABELS if s.startswith(split)]
        for stem in stems:
            write_volume(volume_file(root, stem))
        labels = pd.DataFrame({c: [int(c in LABELS[s]) for s in stems] for c in reversed(ABNORMALITIES)})
        labels["VolumeName"] = [f"{s}.nii.gz" for s in stems]
        (root / "dataset" / "multi_abnormality_labels").mkdir(parents=True, exist_ok=True)
        labels.to_csv(
            root / "dataset" / "multi_abnormality_labels" / f"{split}_predicted_labels.csv", index=False
        )
        meta = pd.DataFrame(
            {
                "VolumeName": [f"{s}.nii.gz" for s in stems[1:]],  # first one has none
                "Manufacturer": "Philips",
                "SeriesDescription": "HRCT",
                "PatientSex": "F",
                "PatientAge": "057Y",
                "XYSpacing": "[0.75, 0.75]",
                "ZSpacing": 1.5,
            }
        )
        (root / "dataset" / "metadata").mkdir(parents=True, exist_ok=True)
        meta.to_csv(root / "dataset" / "metadata" / meta_name, index=False)
    return root


def prepare(root, out, **kwargs) -> dict:
    return prepare_ct_rate(root, out, size=24, log=lambda _: None, **kwargs)


def files_state(out) -> dict:
    return {
        p.relative_to(out): p.stat().st_mtime_ns
        for p in out.rglob("*")
        if p.is_file() and p.parent.name in ("train", "valid", "parts")
    }


# -- prepare ---------------------------------------------------------------------------------
def test_prepare_writes_single_label_central_lung_slices(tree, tmp_path):
    out = tmp_path / "out"
    summary = prepare(tree, out)
    assert {
        k: summary[k] for k in ("volumes", "excluded_multi", "done", "skipped", "missing", "failed", "slices")
    } == dict(volumes=11, excluded_multi=2, done=9, skipped=0, missing=0, failed=0, slices=27)
    manifest = pd.read_csv(out / "manifest.csv")
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert {v[:-7]: lab for v, lab in zip(manifest["VolumeName"], manifest["label"])} == SELECTED
    assert (
        manifest.groupby("VolumeName")["slice"].apply(sorted)
        == pd.Series({f"{s}.nii.gz": CENTRAL_SLICES for s in SELECTED})
    ).all()
    assert summary["class_counts"]["train"]["Emphysema"] == 6
    assert summary["class_counts"]["train"]["No Finding"] == 9
    assert summary["class_counts"]["valid"]["Bronchiectasis"] == 3
    assert sum(summary["class_counts"]["valid"].values()) == 9
    row = manifest.set_index("id").loc["train_1_a_2_s10"]
    assert (row["path"], row["subject"], row["split"]) == (
        "slices/train/train_1_a_2_s10.png",
        "train_1",
        "train",
    )
    assert (row["sex"], row["age"], row["manufacturer"], row["xy_spacing"], row["z_spacing"]) == (
        "F",
        57,
        "Philips",
        0.75,
        1.5,
    )
    no_meta = manifest.set_index("id").loc["train_1_a_1_s8"]  # absent from the metadata CSV
    assert no_meta[["sex", "age", "manufacturer"]].isna().all()
    for rel in manifest["path"]:
        with Image.open(out / rel) as im:
            assert (im.mode, im.size) == ("L", (24, 24))
    assert pd.read_csv(out / "failed.csv").empty


def test_pngs_hold_the_lung_window_with_anterior_up(tree, tmp_path):
    out = tmp_path / "out"
    prepare(tree, out)
    png = np.asarray(Image.open(out / "slices/train/train_2_a_1_s10.png"))
    # RAS affine: array axis 0 runs toward the patient's right, axis 1 toward anterior, so the
    # display (rows -> posterior, columns -> patient left) shows voxel (x, y) at (23 - y, 23 - x).
    at = lambda v: png[23 - v[1], 23 - v[0]]  # noqa: E731
    assert at(LUNG_VOXEL) == window_value(-850) == 85
    assert at(BODY_VOXEL) == window_value(40) == 236
    assert at(AIR_VOXEL) == window_value(-1024) == 55
    assert at(MARKER_VOXEL) == 255 and np.argwhere(png == 255)[:, 0].max() < 12  # marker at the top
    hu = phantom()[:, :, 10]
    lps = slice_image(hu, np.diag([-1.0, -1.0, 1.0, 1.0]), 24)  # axes run toward left / posterior
    assert np.array_equal(lps, np.vectorize(window_value)(hu.T))
    assert np.argwhere(lps == 255)[:, 0].min() >= 12  # marker (anterior) is now at the bottom


def test_lung_window_and_resize_against_hand_values():
    hu = np.array([[-2000, -1350, -600], [-225, 150, 900]], np.float32)
    assert np.allclose(lung_window(hu), [[0, 0, 0.5], [0.75, 1, 1]])
    # (40, 20) array -> (20, 40) displayed -> 10 air rows above and below -> 8 x 8, 5 px per pixel
    flat = slice_image(np.full((40, 20), -225, np.float32), np.eye(4), 8)
    assert flat.shape == (8, 8) and flat[4, 4] == window_value(-225) == 191
    assert (flat[0] == 0).all() and (flat[:, 0] == flat[:, 4]).all()


def test_rerun_skips_finished_volumes(tree, tmp_path):
    out = tmp_path / "out"
    prepare(tree, out)
    before, manifest = files_state(out), (out / "manifest.csv").read_text()
    summary = prepare(tree, out)
    assert (summary["done"], summary["skipped"], summary["slices"]) == (0, 9, 27)
    assert files_state(out) == before
    assert (out / "manifest.csv").read_text() == manifest


def test_interrupted_volume_is_redone_on_rerun(tree, tmp_path):
    out = tmp_path / "out"
    prepare(tree, out)
    manifest = (out / "manifest.csv").read_text()
    (out / "parts" / "valid_2_b_1.csv").unlink()  # as if killed before the volume finished
    (out / "slices/valid/valid_2_b_1_s11.png").unlink()
    summary = prepare(tree, out)
    assert (summary["done"], summary["skipped"]) == (1, 8)
    assert (out / "manifest.csv").read_text() == manifest
    assert (out / "slices/valid/valid_2_b_1_s11.png").is_file()


def test_corrupt_and_missing_volumes_are_reported_and_the_rest_done(tree, tmp_path):
    out = tmp_path / "out"
    bad, gone = volume_file(tree, "train_2_a_1"), volume_file(tree, "valid_1_a_1")
    bad.write_bytes(gzip.compress(b"not a nifti header" * 30))
    gone.unlink()
    summary = prepare(tree, out)
    assert (summary["done"], summary["failed"], summary["missing"], summary["slices"]) == (7, 1, 1, 21)
    failed = pd.read_csv(out / "failed.csv").set_index("VolumeName")
    assert sorted(failed.index) == ["train_2_a_1.nii.gz", "valid_1_a_1.nii.gz"]
    assert failed.loc["valid_1_a_1.nii.gz", "reason"] == "file not found"
    assert "train_2_a_1" not in (out / "manifest.csv").read_text()
    write_volume(bad)  # the user replaces the file: the rerun does just that volume
    summary = prepare(tree, out)
    assert (summary["done"], summary["skipped"], summary["failed"], summary["missing"]) == (1, 7, 0, 1)
    assert summary["slices"] == 24


def test_layout_errors_name_the_missing_file(tree, tmp_path):
    (tree / "dataset/multi_abnormality_labels/valid_predicted_labels.csv").unlink()
    with pytest.raises(BenchError, match=r"missing .*valid_predicted_labels\.csv \(expected layout"):
        prepare(tree, tmp_path / "out")
    with pytest.raises(BenchError, match=r"elsewhere is not a directory \(expected layout: .*_fixed"):
        prepare(tmp_path / "elsewhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match=r"missing .*empty/multi_abnormality_labels/train_predicted"):
        prepare(tmp_path / "empty", tmp_path / "out")


def test_label_values_other_than_0_1_are_an_error(tree, tmp_path):
    path = tree / "dataset/multi_abnormality_labels/train_predicted_labels.csv"
    labels = pd.read_csv(path)
    labels.loc[labels["VolumeName"] == "train_4_a_1.nii.gz", "Hiatal hernia"] = 2
    labels.to_csv(path, index=False)
    with pytest.raises(BenchError, match="1 row.* not 0/1 \\(first: train_4_a_1.nii.gz\\)"):
        prepare(tree, tmp_path / "out")


def test_root_may_be_the_dataset_folder_and_settings_are_fixed_per_output(tree, tmp_path):
    out = tmp_path / "out"
    assert prepare(tree / "dataset", out, slices_per_volume=1)["slices"] == 9
    with pytest.raises(BenchError, match="prepared with other settings"):
        prepare(tree, out, slices_per_volume=3)
    with pytest.raises(BenchError, match="--slices-per-volume must be an integer >= 1"):
        prepare(tree, out, slices_per_volume=0)


@pytest.mark.slow
def test_process_pool_gives_the_same_output(tree, tmp_path):
    prepare(tree, tmp_path / "serial")
    summary = prepare(tree, tmp_path / "pool", workers=2)
    assert summary["done"] == 9
    serial, pool = tmp_path / "serial", tmp_path / "pool"
    assert (serial / "manifest.csv").read_text() == (pool / "manifest.csv").read_text()
    for rel in pd.read_csv(serial / "manifest.csv")["path"]:
        assert (serial / rel).read_bytes() == (pool / rel).read_bytes()


# -- the ct_rate dataset ---------------------------------------------------------------------
@pytest.fixture
def prepared(tree, tmp_path):
    out = tmp_path / "out"
    prepare(tree, out)
    return out


def test_dataset_classes_splits_and_counts(prepared):
    data = datasets.get("ct_rate")(root=str(prepared), size=16, val_fraction=0.0)
    assert data.class_names == ["No Finding", "Cardiomegaly", "Emphysema"]  # CT-RATE label order
    assert "Bronchiectasis" in data.dropped_classes  # only in the test split
    train, test = data.load("train"), data.load("test")
    assert train.counts(3).tolist() == [9, 3, 6] and test.counts(3).tolist() == [3, 0, 3]
    assert [s["reason"] for s in data.skipped] == [
        "class 'Bronchiectasis' has fewer than min_count=1 train slices"
    ] * 3
    assert train.x.shape == (18, 1, 16, 16)
    x = train.x[:]
    assert x.dtype == torch.float32 and x.shape == (18, 1, 16, 16) and 0 <= x.min() < x.max() <= 1
    assert set(test.meta["subject"]) == {"valid_1", "valid_2"}
    assert list(test.meta["age"].dropna().unique()) == [57]


def test_min_count_drops_rare_train_classes(prepared):
    data = datasets.get("ct_rate")(root=str(prepared), val_fraction=0.0, min_count=4)
    assert data.class_names == ["No Finding", "Emphysema"]
    assert data.load("train").counts(2).tolist() == [9, 6]
    assert sum(s["reason"].startswith("class 'Cardiomegaly'") for s in data.skipped) == 3


def test_validation_part_is_patient_disjoint_and_deterministic(prepared):
    make = lambda: datasets.get("ct_rate")(root=str(prepared), size=24)  # noqa: E731
    data = make()
    train, val = data.load("train"), data.load("val")
    train_subjects, val_subjects = set(train.meta["subject"]), set(val.meta["subject"])
    assert len(val_subjects) == 1 and not train_subjects & val_subjects  # 10% of 4, at least 1
    assert train_subjects | val_subjects == {"train_1", "train_2", "train_3", "train_4"}
    assert make().val_subjects == data.val_subjects
    first = val.ids[0]
    png = np.asarray(Image.open(prepared / "slices/train" / f"{first}.png"), np.float32) / 255
    assert np.allclose(val.x[0][0].numpy(), png)  # same size: the stored pixels, scaled to [0, 1]


def test_bad_manifest_rows_follow_on_bad_row(prepared):
    manifest = pd.read_csv(prepared / "manifest.csv")
    manifest.loc[0, "label"] = "Pneumothorax"
    manifest.to_csv(prepared / "manifest.csv", index=False)
    with pytest.raises(BenchError, match="not a CT-RATE class .*on_bad_row='skip'"):
        datasets.get("ct_rate")(root=str(prepared), val_fraction=0.0).load("train")
    data = datasets.get("ct_rate")(root=str(prepared), val_fraction=0.0, on_bad_row="skip")
    assert len(data.load("train")) == 17
    assert {
        "split": "train",
        "id": manifest.loc[0, "id"],
        "reason": "label is not a CT-RATE class",
    } in data.skipped


def test_dataset_errors_are_one_line(tmp_path):
    with pytest.raises(BenchError, match="has no manifest.csv; write it with `bench prepare ct_rate"):
        datasets.get("ct_rate")(root=str(tmp_path)).load("train")
    with pytest.raises(BenchError, match="val_fraction must be a number in"):
        datasets.get("ct_rate")(root=str(tmp_path), val_fraction=1.0)
    with pytest.raises(BenchError, match="not a split of ct_rate"):
        datasets.get("ct_rate")(root=str(tmp_path), eval_split="valid")


# -- command line ----------------------------------------------------------------------------
@pytest.mark.slow
def test_prepare_and_stats_from_the_command_line(tree, tmp_path, bench_cli):
    out = tmp_path / "slices"
    done = bench_cli(
        "prepare", "ct_rate", "--root", str(tree), "--out", str(out), "--size", "24", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert (out / "manifest.csv").is_file() and f"ct_rate.root={out}" in done.stdout
    stats = bench_cli(
        "data", "stats", "datasets=[ct_rate]", f"ct_rate.root={out}", "ct_rate.size=24", cwd=tmp_path
    )
    assert stats.returncode == 0, stats.stderr
    ds = CTRate(root=str(out), size=24)
    rows = [
        [c.strip() for c in ln.strip("|").split("|")]
        for ln in stats.stdout.splitlines()[4:]
        if ln.startswith("|")
    ]
    assert [r[1] for r in rows] == ds.class_names
    assert [int(r[2]) for r in rows] == ds.load("train").counts(ds.n_classes).tolist()
    assert [int(r[7]) for r in rows] == ds.load("test").counts(ds.n_classes).tolist()
    assert f"{len(ds.skipped)} skipped" in stats.stdout
    bad = bench_cli(
        "prepare", "ct_rate", "--root", str(tmp_path / "nowhere"), "--out", str(out), cwd=tmp_path
    )
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1 and lines[0].startswith("bench: error:"), bad.stderr
