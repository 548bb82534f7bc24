"""Every registered plugin of every kind against its contract (bench.testing), read from the registry.

The parameters are the registry's names (entry points and in-process registrations), so a plugin
package installed into the environment gets its contract test here with nothing to add. Built-in
plugins whose defaults are sized for real runs get tiny settings below; the ones that read the
user's files get tiny fabricated copies (a FLUX-layout VAE saved with save_pretrained, NIH-CXR-LT
and MIMIC-CXR-LT trees, a MedMNIST npz); any other that needs files (ct_rate, whose files come
from `bench prepare`) is skipped by the kit, naming what it needs. The old per-method contract
(two steps on the tiny FLUX, then sampling) is kept as the slow
`test_method_trains_and_samples_on_tiny_flux`, over every registered method too.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tiny_vae import saved_tiny_flux_vae

from bench import registry
from bench.testing import CHECKS, check_method, check_plugin

OPTPRIOR = dict(steps=5, min_size=4, risk_samples=20, k_max=3, risk_gmm_samples=50, risk_partitions=2)
TINY = {  # (kind, name) -> constructor settings that keep a built-in's check to about a second
    ("method", "optprior"): OPTPRIOR,
    ("method", "optprior_sub"): OPTPRIOR,
    ("method", "optprior_opt"): OPTPRIOR,
    ("evaluator", "downstream"): dict(
        n_seeds=2, max_epochs=2, patience=1, remedies=("crt",), with_augmentation=("reweight",)
    ),
    ("evaluator", "confounder"): dict(n_splits=2, n_permutations=1),
    ("dataset", "phantom_lt"): dict(
        size=16, n_max=200, imbalance_ratio=10.0, n_val_per_class=4, n_test_per_class=4
    ),
    ("dataset", "synthetic2d"): dict(n_max=200, imbalance_ratio=10.0, n_test_per_class=20),
}
# over a second even tiny (flux_vae: importing diffusers and saving a VAE)
SLOW = {
    ("evaluator", "downstream"),
    ("evaluator", "confounder"),
    ("method", "optprior"),
    ("backbone", "flux"),
    ("encoder", "flux_vae"),
}
BUILTIN = ["fm", "cbfm", "cpd", "optprior", "optprior_sub", "optprior_opt", "vpfm"]


def every_plugin() -> list:
    """(kind, name) of every registered plugin, one pytest parameter each."""
    params = []
    for reg in registry.REGISTRIES.values():
        for name in reg.names():
            marks = [pytest.mark.slow] if (reg.kind, name) in SLOW else []
            params.append(pytest.param(reg.kind, name, id=f"{reg.kind}-{name}", marks=marks))
    return params


def files(kind: str, name: str, folder) -> dict | None:
    """Settings pointing a file-reading built-in at a tiny fabricated copy of its files, else None."""
    if (kind, name) == ("encoder", "flux_vae"):
        return dict(path=str(saved_tiny_flux_vae(folder / "vae")))
    if (kind, name) == ("dataset", "nih_lt"):
        return dict(root=str(_tiny_nih(folder / "nih")), metadata_file=None, size=12)
    if (kind, name) == ("dataset", "mimic_lt"):
        return dict(root=str(_tiny_mimic(folder / "mimic")), metadata_file=None, size=12)
    if (kind, name) == ("dataset", "medmnist"):
        return dict(root=str(_tiny_medmnist(folder / "medmnist")), flag="pneumoniamnist")
    return None


def test_every_kind_has_a_check_and_the_builtins_are_registered():
    assert {reg.kind for reg in registry.REGISTRIES.values()} == set(CHECKS)
    assert set(BUILTIN) <= set(registry.methods.names())


@pytest.mark.parametrize("kind,name", every_plugin())
def test_registered_plugin_meets_its_contract(kind, name):
    # a folder of its own rather than tmp_path, whose session-scoped factory would make the conftest
    # count every test here as sharing the slow ones' fixture (and leave them out of `-m "not slow"`)
    with tempfile.TemporaryDirectory() as folder:
        check_plugin(kind, name, settings=files(kind, name, Path(folder)) or TINY.get((kind, name)))


@pytest.mark.parametrize("name", [p.values[1] for p in every_plugin() if p.values[0] == "method"])
@pytest.mark.slow
def test_method_trains_and_samples_on_tiny_flux(name):
    """The method contract with the FLUX backbone (diffusers' smallest config) instead of the kit's."""
    from bench.backbones.flux import FluxBackbone

    check_method(name, settings=TINY.get(("method", name)), backbone=FluxBackbone)


# -- tiny copies of the files the real-data plugins read -------------------------------------------


def _tiny_nih(root):
    """NIH-CXR-LT's layout: LongTailCXR's four single-label CSVs over 20 classes, 12x12 PNGs."""
    from bench.datasets.nih_lt import NIHLT

    def rows(split_index: int, n: int) -> pd.DataFrame:
        ids = [f"{split_index:04d}{i:04d}_000.png" for i in range(n)]
        return pd.DataFrame({"id": ids, "_file": [f"images/{i}" for i in ids]})

    return _cxr_lt(root, "nih-cxr-lt", NIHLT.class_names, rows)


def _tiny_mimic(root):
    """MIMIC-CXR-LT's layout: the four single-label CSVs (subject, study, dicom, path), 12x12 JPEGs."""
    from bench.datasets.mimic_lt import MIMICLT

    def rows(split_index: int, n: int) -> pd.DataFrame:
        subject = [10000000 + 100 * split_index + i // 2 for i in range(n)]  # two images per patient
        study = [50000000 + 100 * split_index + i for i in range(n)]
        dicom = [f"d{split_index}-{i}" for i in range(n)]
        path = [f"files/p10/p{p}/s{s}/{d}.jpg" for p, s, d in zip(subject, study, dicom)]
        return pd.DataFrame(
            {"subject_id": subject, "study_id": study, "dicom_id": dicom, "path": path, "_file": path}
        )

    return _cxr_lt(root, "mimic-cxr-lt", MIMICLT.class_names, rows)


def _cxr_lt(root, prefix: str, classes: list, rows):
    """LongTailCXR's single-label CSVs `<prefix>_single-label_<split>.csv`, two images per class per
    split (id columns from `rows(split index, n)`, images written at its `_file` column)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for s, split in enumerate(("train", "balanced-val", "test", "balanced-test")):
        labels = np.arange(2 * len(classes)) % len(classes)
        ids = rows(s, len(labels))
        onehot = pd.DataFrame(np.eye(len(classes), dtype=int)[labels], columns=classes)
        table = pd.concat([ids.drop(columns="_file"), onehot], axis=1)
        table.to_csv(root / f"{prefix}_single-label_{split}.csv", index=False)
        for file in ids["_file"]:
            (root / file).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8), mode="L").save(root / file)
    return root


def _tiny_medmnist(root):
    """pneumoniamnist.npz: MedMNIST's six arrays, two classes of 28x28 uint8 images."""
    rng = np.random.default_rng(1)
    arrays = {}
    for split, counts in (("train", [30, 80]), ("val", [5, 9]), ("test", [6, 10])):
        labels = rng.permutation(np.repeat(np.arange(2), counts)).astype(np.uint8)[:, None]
        arrays[f"{split}_images"] = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = labels
    root.mkdir(parents=True)
    np.savez_compressed(root / "pneumoniamnist.npz", **arrays)
    return root
