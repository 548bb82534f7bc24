"""The downstream runs on real data (bench.classify.baselines) and with the synthetic set
(bench.classify.augmented), driven directly: which classifiers are trained, which are read from
the baseline store, and what the store is keyed by. The plugin-level behaviour (metrics, files,
shared across a dataset's cells) is tested in tests/plugins/evaluators/test_downstream.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bench.classify.run_trainer as run_trainer
from bench import registry
from bench.classify.augmented import augmented_runs
from bench.classify.baselines import PARTS, baseline_runs, baseline_store
from bench.classify.fit import Protocol
from bench.classify.run_trainer import RunTrainer
from bench.classify.runs import classifier_seeds
from bench.dataset import Split
from bench.store.fingerprint import split_fingerprint

PROTOCOL = Protocol(lr=1e-2, batch_size=16, max_epochs=2, patience=1)
SEEDS = classifier_seeds(0, 2)


def blobs(counts, seed: int) -> Split:
    """Three classes of 8x8 images, a bright square at a class-specific place."""
    g = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    x = 0.3 * torch.rand(len(y), 1, 8, 8, generator=g)
    for c in range(3):
        x[y == c, :, 2 * c : 2 * c + 3, 2 * c : 2 * c + 3] += 0.6
    return Split(x.clamp(0, 1), y)


TRAIN, VAL, TEST = blobs([24, 10, 4], 0), blobs([3, 3, 2], 1), blobs([6, 6, 6], 2)


def recall(truth, pred, classes) -> dict:
    return {c: float(np.mean(pred[truth == c] == c)) for c in classes if np.any(truth == c)}


def trainer() -> RunTrainer:
    return RunTrainer("small_cnn", PROTOCOL, 3, TEST, recall)


@pytest.fixture
def trained(monkeypatch):
    """{'fit': remedies of the classifiers trained, 'head': remedies of the heads retrained}."""
    registry.remedies.load_all()
    calls = {"fit": [], "head": []}
    real_fit, real_head = run_trainer.fit, run_trainer.retrain_head
    monkeypatch.setattr(
        run_trainer, "fit", lambda *a, **k: calls["fit"].append(a[-1].name) or real_fit(*a, **k)
    )
    monkeypatch.setattr(
        run_trainer, "retrain_head", lambda *a, **k: calls["head"].append(a[-1].name) or real_head(*a, **k)
    )
    return calls


def store(tmp_path, val: Split = VAL):
    return baseline_store(
        (tmp_path / "shared", "digits"),
        "small_cnn",
        PROTOCOL,
        SEEDS,
        {"train": TRAIN, "val": val, "test": TEST},
    )


def test_the_store_is_keyed_by_architecture_protocol_seeds_and_every_split(tmp_path):
    assert baseline_store(None, "small_cnn", PROTOCOL, SEEDS, {"train": TRAIN}) is None
    shared = store(tmp_path)
    assert shared.folder == tmp_path / "shared" and shared.key == "digits"
    assert shared.basis == {
        "arch": "small_cnn",
        "protocol": PROTOCOL.describe(),
        "seeds": SEEDS,
        "data": {
            "train": split_fingerprint(TRAIN),
            "val": split_fingerprint(VAL),
            "test": split_fingerprint(TEST),
        },
    }
    other_val = store(tmp_path, blobs([3, 3, 2], 5))
    assert other_val.unit_key("no_aug", {}) != shared.unit_key("no_aug", {})


def test_runs_on_real_data_are_trained_once_then_read_from_the_store(tmp_path, trained):
    shared = store(tmp_path)
    runs, reused = baseline_runs(trainer(), shared, TRAIN, VAL, SEEDS, ("reweight", "crt"), tmp_path / "a")
    assert reused == [] and list(runs) == ["no_aug", "reweight", "crt"]
    assert all([r["seed"] for r in runs[name]] == SEEDS for name in runs)
    # per seed: the plain classifier and reweight trained, cRT retrains the plain one's head
    assert sorted(trained["fit"]) == ["remedy"] * 2 + ["reweight"] * 2 and trained["head"] == ["crt"] * 2
    assert not (tmp_path / "a" / PARTS).exists()  # the weights moved into the store
    assert sorted(p.name for p in (shared.folder / "no_aug").glob("model_*")) == [
        "model_0.safetensors",
        "model_1.safetensors",
    ]

    again, reused = baseline_runs(
        trainer(), shared, TRAIN, VAL, SEEDS, ("reweight", "crt", "focal"), tmp_path / "b"
    )
    assert reused == ["no_aug", "reweight", "crt"] and len(trained["fit"]) == 4 + 2  # focal's two only
    assert len(trained["head"]) == 2
    assert {k: again[k] for k in runs} == runs


def test_a_head_remedy_added_later_starts_from_the_stored_classifiers(tmp_path, trained):
    shared = store(tmp_path)
    first, _ = baseline_runs(trainer(), shared, TRAIN, VAL, SEEDS, (), tmp_path / "a")
    runs, reused = baseline_runs(trainer(), shared, TRAIN, VAL, SEEDS, ("crt",), tmp_path / "b")
    assert reused == ["no_aug"] and trained["fit"] == ["remedy"] * 2 and trained["head"] == ["crt"] * 2
    alone, _ = baseline_runs(trainer(), None, TRAIN, VAL, SEEDS, ("crt",), tmp_path / "c")
    assert runs == alone and runs["no_aug"] == first["no_aug"]  # the stored classifiers are the same


def test_augmented_runs_train_aug_and_each_remedy_with_crt_on_the_aug_classifier(trained):
    x, y = torch.cat([TRAIN.x, TEST.x]), torch.cat([TRAIN.y, TEST.y])
    runs = augmented_runs(trainer(), x, y, VAL, SEEDS, ("crt", "reweight"))
    assert list(runs) == ["aug", "aug+crt", "aug+reweight"]
    assert all([r["seed"] for r in runs[name]] == SEEDS for name in runs)
    assert sorted(trained["fit"]) == ["remedy"] * 2 + ["reweight"] * 2 and trained["head"] == ["crt"] * 2
    assert runs["aug"] != runs["aug+crt"]
