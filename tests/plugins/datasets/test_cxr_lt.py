"""NIH-CXR-LT and MIMIC-CXR-LT read from fabricated trees in the official layouts.

The label files are written in LongTailCXR's format; NIH metadata comes from the real
Data_Entry_2017_v2020.csv and the MIMIC label files are the real balanced-val / balanced-test
CSVs (../shared/data). Images are tiny stand-ins written by the tests.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.datasets.mimic_lt import MIMICLT
from bench.datasets.nih_lt import NIHLT
from bench.errors import BenchError


def shared_data() -> Path:
    """The project's real official-format files: $BENCH_SHARED_DATA, else the first `shared/data`
    inside this checkout or in a folder above it (the CI clone may sit at either place)."""
    if os.environ.get("BENCH_SHARED_DATA"):
        return Path(os.environ["BENCH_SHARED_DATA"])
    here = Path(__file__).resolve().parent
    found = (p / "shared" / "data" for p in here.parents if (p / "shared" / "data").is_dir())
    return next(found, Path("shared/data"))


SHARED = shared_data()
DATA_ENTRY = SHARED / "nih" / "Data_Entry_2017_v2020.csv.gz"
MIMIC_LABELS = SHARED / "mimic-cxr-lt"
needs_shared = pytest.mark.skipif(
    not DATA_ENTRY.is_file(),
    reason="the project's shared/data not found next to or inside this checkout; set BENCH_SHARED_DATA=PATH",
)


def _png(path: Path, value: int = 128, size=(12, 12), mode="L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, dtype=np.uint8), mode="L").convert(mode).save(path)


def _one_hot(ids: list[str], labels: list[int], classes: list[str], id_col: str = "id") -> pd.DataFrame:
    onehot = np.zeros((len(ids), len(classes)), dtype=int)
    onehot[np.arange(len(ids)), labels] = 1
    return pd.concat([pd.DataFrame({id_col: ids}), pd.DataFrame(onehot, columns=classes)], axis=1)


@pytest.fixture(scope="module")
def data_entry() -> pd.DataFrame:
    return pd.read_csv(DATA_ENTRY)


@pytest.fixture
def nih_root(tmp_path, data_entry) -> tuple[Path, dict]:
    """120 real image ids with made-up single labels (known counts), images in two folders."""
    rng = np.random.default_rng(0)
    rows = data_entry.iloc[:150]
    classes = NIHLT.class_names
    splits = {"train": rows.iloc[:100], "balanced-test": rows.iloc[100:140]}
    truth = {}
    for split, part in splits.items():
        labels = rng.integers(0, len(classes), len(part)).tolist()
        ids = part["Image Index"].tolist()
        _one_hot(ids, labels, classes).to_csv(tmp_path / f"nih-cxr-lt_single-label_{split}.csv", index=False)
        truth[split] = (ids, labels)
        for k, name in enumerate(ids):
            _png(tmp_path / f"images_00{1 + k % 2}" / "images" / name, value=k)
    shutil.copy(DATA_ENTRY, tmp_path / "Data_Entry_2017_v2020.csv.gz")
    return tmp_path, truth


# -- NIH -----------------------------------------------------------------------------------
@needs_shared
@pytest.mark.slow
def test_nih_counts_groups_and_metadata_join_the_real_data_entry(nih_root, data_entry):
    root, truth = nih_root
    ds = NIHLT(root=str(root), size=12)
    train = ds.load("train")
    ids, labels = truth["train"]
    assert train.ids == ids
    np.testing.assert_array_equal(train.counts(20).numpy(), np.bincount(labels, minlength=20))
    expected = data_entry.set_index("Image Index").loc[ids]
    assert train.meta["subject"].tolist() == expected["Patient ID"].astype(str).tolist()
    assert train.meta["sex"].tolist() == expected["Patient Gender"].tolist()
    assert train.meta["age"].tolist() == expected["Patient Age"].tolist()
    assert train.meta["view"].tolist() == expected["View Position"].tolist()
    # several images share a patient in the real file (00000001_000.png, _001, _002 ...)
    assert train.meta["subject"].value_counts().max() > 1
    assert ds.load("balanced-test").ids == truth["balanced-test"][0]


@needs_shared
@pytest.mark.slow
def test_nih_images_are_read_from_both_folder_layouts_and_scaled_to_unit_range(nih_root):
    root, truth = nih_root
    train = NIHLT(root=str(root), size=12).load("train")
    assert train.x.shape == (100, 1, 12, 12)
    x = train.x[:4]  # the PNGs hold the constant value k
    np.testing.assert_allclose(x.numpy().reshape(4, -1).mean(1), np.arange(4) / 255.0, atol=1e-6)
    flat = root / "flat"
    for name in truth["train"][0][:3]:
        _png(flat / name, 255)
    # an explicit image_dir wins over the default search
    assert (
        NIHLT(root=str(root), size=12, image_dir="flat", on_bad_image="skip").load("train").x[:1].max() == 1.0
    )


@needs_shared
def test_nih_accepts_the_nih_lt_prefix_and_a_labels_folder(nih_root):
    root, truth = nih_root
    (root / "labels").mkdir()
    for split in ("train", "balanced-test"):
        (root / f"nih-cxr-lt_single-label_{split}.csv").rename(
            root / "labels" / f"nih-lt_single-label_{split}.csv"
        )
    assert len(NIHLT(root=str(root)).load("train")) == 100


@needs_shared
def test_nih_without_metadata_derives_the_patient_from_the_file_name(nih_root):
    root, truth = nih_root
    train = NIHLT(root=str(root), metadata_file=None).load("train")
    assert train.meta["subject"].tolist() == [i.split("_")[0] for i in truth["train"][0]]


@needs_shared
def test_nih_bad_rows_error_with_ids_or_are_skipped_and_logged(nih_root):
    root, truth = nih_root
    path = root / "nih-cxr-lt_single-label_train.csv"
    table = pd.read_csv(path)
    table.loc[3, NIHLT.class_names] = 0  # no positive label
    table.loc[7, ["Mass", "Hernia"]] = 1  # several (at least two)
    table.to_csv(path, index=False)
    bad = {table.loc[3, "id"], table.loc[7, "id"]}
    with pytest.raises(BenchError, match="not single-label") as err:
        NIHLT(root=str(root)).load("train")
    assert all(i in str(err.value) for i in bad) and "on_bad_row='skip'" in str(err.value)
    ds = NIHLT(root=str(root), on_bad_row="skip")
    assert len(ds.load("train")) == 98
    assert {r["id"] for r in ds.skipped} == bad
    assert {r["reason"] for r in ds.skipped} == {"no positive label", "several positive labels"}


@needs_shared
@pytest.mark.slow
def test_nih_missing_and_corrupt_images_error_or_skip(nih_root):
    root, truth = nih_root
    ids = truth["train"][0]
    gone, corrupt = ids[5], ids[9]
    next(root.glob(f"images_*/images/{gone}")).unlink()
    next(root.glob(f"images_*/images/{corrupt}")).write_bytes(b"not a png")
    with pytest.raises(BenchError, match="missing or unreadable") as err:
        NIHLT(root=str(root)).load("train")
    assert gone in str(err.value) and corrupt in str(err.value)
    ds = NIHLT(root=str(root), on_bad_image="skip")
    split = ds.load("train")
    assert len(split) == 98 and gone not in split.ids and corrupt not in split.ids
    assert {r["id"] for r in ds.skipped} == {gone, corrupt}


@needs_shared
def test_nih_layout_errors_are_one_line_and_name_what_is_expected(tmp_path, nih_root):
    with pytest.raises(BenchError, match=r"nih_lt.root is not set.*nih_lt.root=PATH"):
        NIHLT().load("train")
    with pytest.raises(BenchError, match="is not a directory"):
        NIHLT(root=str(tmp_path / "nowhere")).load("train")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BenchError, match="no nih-cxr-lt_single-label_train.csv.*expected layout"):
        NIHLT(root=str(empty)).load("train")
    root, _ = nih_root
    pd.DataFrame({"id": ["a.png"], "Mass": [1]}).to_csv(
        root / "nih-cxr-lt_single-label_train.csv", index=False
    )
    with pytest.raises(BenchError, match="lacks required column") as err:
        NIHLT(root=str(root)).load("train")
    assert "No Finding" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(BenchError, match="did you mean 'size'"):
        NIHLT(root=str(root), sise=32)
    with pytest.raises(BenchError, match="not a split of nih_lt"):
        NIHLT(root=str(root), eval_split="valid")


# -- MIMIC ---------------------------------------------------------------------------------
@pytest.fixture
def mimic_root(tmp_path) -> Path:
    """The real balanced-val / balanced-test label files with tiny JPGs at their paths."""
    for split in ("balanced-val", "balanced-test"):
        name = f"mimic-cxr-lt_single-label_{split}.csv"
        shutil.copy(MIMIC_LABELS / name, tmp_path / name)
        for k, rel in enumerate(pd.read_csv(tmp_path / name)["path"]):
            path = tmp_path / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 10), k % 256, np.uint8)).save(path, quality=95)
    return tmp_path


@needs_shared
def test_mimic_real_balanced_files_have_15_and_30_images_per_class(mimic_root):
    ds = MIMICLT(root=str(mimic_root), size=8, train_split="balanced-val", eval_split="balanced-test")
    val, test = ds.load("balanced-val"), ds.load("balanced-test")
    assert val.counts(19).tolist() == [15] * 19
    assert test.counts(19).tolist() == [30] * 19
    raw = pd.read_csv(mimic_root / "mimic-cxr-lt_single-label_balanced-test.csv")
    # classes are found by name, not by the file's own column order
    expected = raw[MIMICLT.class_names].to_numpy().argmax(1)
    np.testing.assert_array_equal(test.y.numpy(), expected)
    assert test.meta["subject"].tolist() == raw["subject_id"].astype(str).tolist()
    assert test.ids == raw["dicom_id"].tolist()
    assert test.x[:2].shape == (2, 1, 8, 8)  # 10 x 8 JPG centre-cropped to 8 x 8


@needs_shared
def test_mimic_view_position_joins_from_the_jpg_metadata(mimic_root):
    raw = pd.read_csv(mimic_root / "mimic-cxr-lt_single-label_balanced-val.csv")
    views = np.where(np.arange(len(raw)) % 3 == 0, "AP", "PA")
    meta = pd.DataFrame({"dicom_id": raw["dicom_id"], "subject_id": raw["subject_id"], "ViewPosition": views})
    meta.iloc[1:].to_csv(mimic_root / "mimic-cxr-2.0.0-metadata.csv", index=False)  # first one unknown
    split = MIMICLT(root=str(mimic_root), train_split="balanced-val").load("balanced-val")
    assert split.meta["view"].iloc[0] is None
    assert split.meta["view"].iloc[1:].tolist() == views[1:].tolist()


@needs_shared
def test_mimic_paths_escaping_the_root_are_refused(mimic_root):
    name = mimic_root / "mimic-cxr-lt_single-label_balanced-val.csv"
    table = pd.read_csv(name)
    table.loc[0, "path"] = "../../etc/passwd"
    table.to_csv(name, index=False)
    with pytest.raises(BenchError, match="escapes the dataset root"):
        MIMICLT(root=str(mimic_root), train_split="balanced-val").load("balanced-val")
    table.loc[0, "path"] = "/etc/passwd"
    table.to_csv(name, index=False)
    with pytest.raises(BenchError, match="escapes the dataset root"):
        MIMICLT(root=str(mimic_root), train_split="balanced-val").load("balanced-val")


@needs_shared
def test_mimic_corrupt_label_file_is_one_clear_error(mimic_root):
    (mimic_root / "mimic-cxr-lt_single-label_balanced-val.csv").write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(BenchError, match="cannot read|lacks required"):
        MIMICLT(root=str(mimic_root), train_split="balanced-val").load("balanced-val")


@needs_shared
def test_mimic_nan_label_is_a_bad_row(mimic_root):
    name = mimic_root / "mimic-cxr-lt_single-label_balanced-val.csv"
    table = pd.read_csv(name)
    table["Edema"] = table["Edema"].astype(float)
    table.loc[4, "Edema"] = np.nan
    table.to_csv(name, index=False)
    ds = MIMICLT(root=str(mimic_root), train_split="balanced-val", on_bad_row="skip")
    assert len(ds.load("balanced-val")) == len(table) - 1
    assert ds.skipped == [
        {"split": "balanced-val", "id": table.loc[4, "dicom_id"], "reason": "label not 0/1"}
    ]


# -- end to end ----------------------------------------------------------------------------
@needs_shared
@pytest.mark.slow
def test_nih_cell_runs_from_image_files_and_logs_skipped_ids(nih_root, bench_cli, tmp_path):
    import json

    from bench.config.data import AugmentationTargets
    from bench.config.gin_config import gin_dir
    from bench.data.targets import augmentation_plan

    root, truth = nih_root
    corrupt = truth["train"][0][11]
    next(root.glob(f"images_*/images/{corrupt}")).write_bytes(b"broken")
    res = tmp_path / "res"
    out = bench_cli(
        "run",
        "datasets=[nih_lt]",
        "methods=[fm]",
        f"nih_lt.root={root}",
        "nih_lt.size=16",
        "nih_lt.on_bad_image=skip",
        "pipeline.encoder=pixel",
        "pipeline.evaluators=[sample_grid]",
        "train.steps=3",
        "sample.nfe=2",
        "sample.n_per_class=targets",
        "sample.init_reference=False",
        "--gin_file",
        str(gin_dir() / "presets" / "tiny.gin"),
        f"results_dir={res}",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    cell = res / "cpu_smoke" / "nih_lt" / "fm" / "seed0"  # presets/tiny.gin on real data: a CPU check
    skipped = pd.read_csv(cell / "skipped.csv")
    assert skipped.to_dict("records") == [
        {"split": "train", "id": corrupt, "reason": "image unreadable (UnidentifiedImageError)"}
    ]
    rec = json.loads((cell / "record.json").read_text())
    ids, labels = truth["train"]
    counts = np.bincount([lab for i, lab in zip(ids, labels) if i != corrupt], minlength=20).tolist()
    assert rec["train_counts"] == counts and rec["n"]["train"] == 99 and rec["skipped"] == 1
    plan = augmentation_plan(AugmentationTargets(), counts, NIHLT.class_names)
    assert rec["synthetic_per_class"] == [t.synthetic for t in plan]
    assert [a["group"] for a in rec["augmentation"]] == [t.group for t in plan]
    assert rec["n"]["synthetic"] == sum(t.synthetic for t in plan)
    latents = list((res / "cache" / "latents").glob("nih_lt-pixel-16x16-*/latents.npy"))
    assert len(latents) == 1 and np.load(latents[0], mmap_mode="r").shape == (99, 1, 16, 16)


@needs_shared
@pytest.mark.slow
def test_validate_checks_the_paper_size_backbone_without_allocating_it(nih_root, bench_cli, tmp_path):
    # nih_lt.gin uses the one-GPU preset (2.2B parameters, 9 GB of float32 weights), the paper's
    # flux1 preset is FLUX.1 size (48 GB): validate builds both on the meta device, so this passes
    # on a 24 GB machine and writes nothing (footprints are estimated: the default fits an 80 GiB
    # device, FLUX.1 size only a 1,000 GiB one)
    root, _ = nih_root
    args = (
        "validate",
        "datasets=[nih_lt]",
        "methods=[fm]",
        "seeds=[0]",
        f"nih_lt.root={root}",
        "nih_lt.size=32",
        "pipeline.encoder=pixel",
        f"results_dir={tmp_path / 'res'}",
        "budget.trace_inference=False",
    )
    out = bench_cli(*args, "executor.device_memory_gib=80", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "1 cell(s) valid" in out.stdout and "2,238.6 M parameters" in out.stdout
    paper = (*args, "--gin_file", "presets/flux1.gin")
    out = bench_cli(*paper, "executor.device_memory_gib=1000", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "1 cell(s) valid" in out.stdout and "11,890.9 M parameters" in out.stdout
    # the same preset on an 80 GiB device is refused in one line: tests/cli/test_bad_inputs.py's
    # flux1-on-one-80gb-gpu case
    assert not (tmp_path / "res").exists()
