"""Feature extractor (train once, cache, user weights) and the downstream evaluator on tiny data."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import bench.metrics.features as features
import gin
from bench.classify.fit import build_classifier, embed
from bench.classify.runs import classifier_seed
from bench.config.evaluation import FeatureConfig
from bench.context import CellContext
from bench.dataset import Dataset, Split
from bench.errors import BenchError
from bench.evaluators.downstream import Downstream
from bench.metrics.features import build_extractor
from bench.store.artifacts import read_manifest

FAST = dict(epochs=2, batch_size=16, patience=1)


class Blobs(Dataset):
    """Three classes of 8x8 images (a bright square at a class-specific place), long-tailed train."""

    name, kind, class_names = "blobs", "image", ["a", "b", "c"]
    counts = {"train": [24, 10, 4], "test": [6, 6, 6]}

    def load(self, split: str) -> Split:
        g = torch.Generator().manual_seed(len(split))
        y = torch.cat([torch.full((n,), c) for c, n in enumerate(self.counts[split])])
        x = 0.3 * torch.rand(len(y), 1, 8, 8, generator=g)
        for c in range(3):
            x[y == c, :, 2 * c : 2 * c + 3, 2 * c : 2 * c + 3] += 0.6
        return Split(x.clamp(0, 1), y)


def count_fits(monkeypatch, module) -> list:
    """A list that grows by one per classifier training `module` does (through its `fit`)."""
    calls = []
    real_fit = module.fit
    monkeypatch.setattr(module, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    return calls


@pytest.fixture
def fit_calls(monkeypatch):
    """Count the classifier trainings done by bench.metrics.features."""
    return count_fits(monkeypatch, features)


def test_extractor_is_trained_once_and_cached(tmp_path, fit_calls):
    ds = Blobs()
    train, folder = ds.load("train"), tmp_path / "blobs-small_cnn-abc"
    first = build_extractor(FeatureConfig(**FAST), ds, train, None, folder, "abc")
    second = build_extractor(FeatureConfig(**FAST), ds, train, None, folder, "abc")
    assert len(fit_calls) == 1
    assert first.dim == second.dim == 128
    assert np.array_equal(first.embed(train.x), second.embed(train.x))
    manifest = read_manifest(folder)
    assert manifest["config_hash"] == "abc" and 0.0 <= manifest["val_bacc"] <= 1.0
    assert manifest["val_bacc"] == max(manifest["history"]["val_bacc"])
    build_extractor(FeatureConfig(**FAST), ds, train, None, folder, "other-key")
    assert len(fit_calls) == 2  # another configuration hash retrains
    reloaded = build_extractor(FeatureConfig(path=str(folder)), ds, train, None, tmp_path / "unused", "k")
    assert np.array_equal(
        reloaded.embed(train.x),
        build_extractor(FeatureConfig(**FAST), ds, train, None, folder, "other-key").embed(train.x),
    )


def test_user_densenet_state_dict_is_loaded(tmp_path):
    ds = Blobs()
    net = build_classifier("densenet121", 1, 7, seed=3)
    save_file(
        {f"module.{k}": v.contiguous() for k, v in net.net.state_dict().items()}, tmp_path / "w.safetensors"
    )
    extractor = build_extractor(
        FeatureConfig(arch="densenet121", path=str(tmp_path / "w.safetensors")),
        ds,
        ds.load("train"),
        None,
        tmp_path / "cache",
        "k",
    )
    x = torch.rand(2, 1, 32, 32)  # DenseNet121's transitions need sides >= 32
    assert extractor.dim == 1024
    assert np.allclose(extractor.embed(x), embed(net, x), atol=1e-5)


@pytest.mark.parametrize(
    "what", ["missing", "empty_dir", "wrong_arch", "wrong_channels", "not_weights", "pickle"]
)
def test_bad_feature_path_is_one_line_bench_error(tmp_path, what):
    ds = Blobs()
    path = tmp_path / "w.safetensors"
    arch = "densenet121"
    if what == "empty_dir":
        path = tmp_path / "folder"
        path.mkdir()
    elif what == "not_weights":
        path.write_text("not a tensor file")
    elif what == "pickle":  # a torch.save file, even of the right weights: bench reads no pickle
        path = tmp_path / "w.pt"
        torch.save(build_classifier("small_cnn", 1, 3).net.state_dict(), path)
        arch = "small_cnn"
    elif what != "missing":
        in_channels = 3 if what == "wrong_channels" else 1
        save_file(build_classifier("small_cnn", in_channels, 3).net.state_dict(), str(path))
        arch = "densenet121" if what == "wrong_arch" else "small_cnn"
    with pytest.raises(BenchError) as err:
        build_extractor(
            FeatureConfig(arch=arch, path=str(path)), ds, ds.load("train"), None, tmp_path / "c", "k"
        )
    assert "\n" not in str(err.value) and "features." in str(err.value)


PLAIN = dict(
    remedies=[], with_augmentation=[]
)  # the no-augmentation protocol alone (remedies: test_remedies.py)


def cell(tmp_path, synthetic: Split, seed: int = 0) -> CellContext:
    ds = Blobs()
    return CellContext(ds, ds.load("train"), ds.load("test"), synthetic, tmp_path, seed)


def noisy_tail_copies(seed: int) -> Split:
    """Synthetic set: copies of the real tail-class images with pixel noise."""
    train = Blobs().load("train")
    tail = train.subset(train.y > 0)
    g = torch.Generator().manual_seed(seed)
    return Split((tail.x + 0.1 * torch.randn(tail.x.shape, generator=g)).clamp(0, 1), tail.y)


def test_downstream_returns_every_metric_and_writes_per_seed_details(tmp_path):
    evaluator = Downstream(n_seeds=2, max_epochs=2, patience=1, batch_size=16, lr=1e-2, **PLAIN)
    metrics = evaluator.evaluate(cell(tmp_path, noisy_tail_copies(0)))
    assert set(metrics) == set(evaluator.higher_is_better)
    assert not evaluator.higher_is_better["bacc_std"] and evaluator.higher_is_better["bacc_gain"]
    for k in ("bacc", "macro_f1", "bacc/no_aug", "macro_f1/no_aug"):
        assert 0.0 <= metrics[k] <= 1.0
    assert metrics["bacc_gain"] == pytest.approx(metrics["bacc"] - metrics["bacc/no_aug"])
    details = json.loads((tmp_path / "downstream.json").read_text())
    aug = details["runs"]["aug"]
    assert [r["seed"] for r in aug] == [classifier_seed(0, 0), classifier_seed(0, 1)]
    assert details["n_synthetic"] == 14 and details["n_val"] == 4  # 10% of 24, 10 and 4 rows
    baccs = [r["bacc"] for r in aug]
    assert metrics["bacc"] == pytest.approx(np.mean(baccs))
    assert metrics["bacc_std"] == pytest.approx(np.std(baccs, ddof=1))
    assert [np.mean(r["recall"]) for r in aug] == pytest.approx(baccs)  # test has every class


def test_details_keep_test_predictions_that_reproduce_every_seed_metric(tmp_path):
    from sklearn.metrics import balanced_accuracy_score, f1_score

    evaluator = Downstream(n_seeds=2, max_epochs=2, patience=1, batch_size=16, lr=1e-2, **PLAIN)
    ctx = cell(tmp_path, noisy_tail_copies(0))
    evaluator.evaluate(ctx)
    details = json.loads(json.dumps(ctx.details["downstream"]))  # as record.json holds it
    pred = details["predictions"]
    assert pred["labels"] == Blobs().load("test").y.tolist()
    for name, suffix in (("aug", ""), ("no_aug", "/no_aug")):
        assert len(pred[name]) == 2 and all(
            len(p) == 18 and all(type(v) is int for v in p) for p in pred[name]
        )
        assert [balanced_accuracy_score(pred["labels"], p) for p in pred[name]] == pytest.approx(
            details[f"bacc{suffix}"]
        )
        assert [
            f1_score(pred["labels"], p, average="macro", labels=[0, 1, 2], zero_division=0)
            for p in pred[name]
        ] == pytest.approx(details[f"macro_f1{suffix}"])


def test_a_stored_no_aug_unit_without_predictions_is_retrained(tmp_path, classifier_fits):
    evaluator = Downstream(n_seeds=1, max_epochs=2, patience=1, batch_size=16, lr=1e-2, **PLAIN)
    shared = (tmp_path / "cache", "k")
    first = cell(tmp_path / "a", noisy_tail_copies(0))
    first.shared = shared
    evaluator.evaluate(first)
    runs_file = shared[0] / "no_aug" / "runs.json"
    old = [{k: v for k, v in r.items() if k != "pred"} for r in json.loads(runs_file.read_text())]
    runs_file.write_text(json.dumps(old))  # as written before predictions were kept
    second = cell(tmp_path / "b", noisy_tail_copies(0))
    second.shared = shared
    evaluator.evaluate(second)
    assert len(classifier_fits) == 2 + 2  # no_aug retrained alongside the augmented run
    assert (
        second.details["downstream"]["predictions"]["no_aug"]
        == first.details["downstream"]["predictions"]["no_aug"]
    )


def test_no_aug_baseline_does_not_depend_on_the_synthetic_set(tmp_path):
    evaluator = Downstream(n_seeds=1, max_epochs=2, patience=1, batch_size=16, lr=1e-2, **PLAIN)
    empty = Split(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
    runs = [
        evaluator.evaluate(cell(tmp_path / str(i), s))
        for i, s in enumerate([noisy_tail_copies(0), noisy_tail_copies(1), empty])
    ]
    assert runs[0]["bacc/no_aug"] == runs[1]["bacc/no_aug"] == runs[2]["bacc/no_aug"]
    assert runs[0]["macro_f1/no_aug"] == runs[1]["macro_f1/no_aug"] == runs[2]["macro_f1/no_aug"]
    assert runs[2]["bacc"] == runs[2]["bacc/no_aug"]  # nothing added: the same classifier
    assert np.isnan(runs[0]["bacc_std"])  # one classifier seed has no sample spread


class Reordered(Blobs):
    """Blobs with its training rows in another order: another data digest."""

    def load(self, split: str) -> Split:
        data = super().load(split)
        return data.subset(torch.arange(len(data) - 1, -1, -1)) if split == "train" else data


@pytest.fixture
def classifier_fits(monkeypatch):
    """Count the classifiers the downstream evaluator trains (each run's `fit`, in bench.classify)."""
    import bench.classify.run_trainer as run_trainer

    return count_fits(monkeypatch, run_trainer)


def test_no_aug_classifiers_are_trained_once_per_dataset_and_seed(tmp_path, classifier_fits):
    evaluator = Downstream(n_seeds=2, max_epochs=2, patience=1, batch_size=16, lr=1e-2, **PLAIN)
    shared = (tmp_path / "cache" / "downstream" / "blobs-k", "k")
    alone = evaluator.evaluate(cell(tmp_path / "alone", noisy_tail_copies(0)))  # computes its own
    assert len(classifier_fits) == 4
    methods = []
    for i, synthetic in enumerate([noisy_tail_copies(0), noisy_tail_copies(1)]):  # two methods' cells
        ctx = cell(tmp_path / f"method{i}", synthetic)
        ctx.shared = shared
        methods.append(evaluator.evaluate(ctx))
    assert len(classifier_fits) == 4 + 4 + 2  # the second cell trains only its augmented classifiers
    assert {k: v for k, v in methods[0].items()} == pytest.approx(alone, nan_ok=True)
    for key in ("bacc/no_aug", "macro_f1/no_aug"):
        assert methods[1][key] == alone[key]
    second = json.loads((tmp_path / "method1" / "downstream.json").read_text())
    assert second["shared_from"] == str(shared[0]) and second["reused"] == ["no_aug"]
    assert second["runs"]["no_aug"] == json.loads((shared[0] / "no_aug" / "runs.json").read_text())


def test_a_stored_no_aug_baseline_of_other_data_or_protocol_is_not_reused(tmp_path, classifier_fits):
    shared = (tmp_path / "no_aug", "k")
    fast = dict(max_epochs=2, patience=1, batch_size=16, lr=1e-2, **PLAIN)

    def run(ds, evaluator, name):
        ctx = CellContext(
            ds, ds.load("train"), ds.load("test"), noisy_tail_copies(0), tmp_path / name, 0, shared=shared
        )
        evaluator.evaluate(ctx)
        details = json.loads((tmp_path / name / "downstream.json").read_text())
        return details["shared_from"] if details["reused"] else None

    assert run(Blobs(), Downstream(n_seeds=1, **fast), "a") is None and len(classifier_fits) == 2
    assert run(Reordered(), Downstream(n_seeds=1, **fast), "b") is None  # same hash, reordered rows
    assert run(Reordered(), Downstream(n_seeds=1, **{**fast, "lr": 2e-2}), "c") is None  # another protocol
    assert run(Reordered(), Downstream(n_seeds=2, **{**fast, "lr": 2e-2}), "d") is None  # more seeds
    assert len(classifier_fits) == 2 + 2 + 2 + 4
    assert run(Reordered(), Downstream(n_seeds=2, **{**fast, "lr": 2e-2}), "e") == str(shared[0])


def test_downstream_rejects_bad_settings_and_mismatched_synthetic_shapes(tmp_path):
    with pytest.raises(BenchError, match="downstream.n_seeds"):
        Downstream(n_seeds=0)
    with pytest.raises(BenchError, match="downstream.patience"):
        Downstream(patience=0)
    wrong = Split(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(BenchError, match="synthetic images have shape"):
        Downstream(n_seeds=1, **PLAIN).evaluate(cell(tmp_path, wrong))


def test_paper_preset_binds_the_longtailcxr_protocol():
    gin.clear_config()
    try:
        gin.parse_config_file(str(resources.files("bench.gin") / "presets" / "downstream_paper.gin"))
        evaluator = Downstream()
        assert evaluator.arch == "resnet50" and evaluator.n_seeds == 3
        p = evaluator.protocol
        assert (p.lr, p.batch_size, p.max_epochs, p.patience) == (1e-4, 256, 60, 15)
    finally:
        gin.clear_config()


def test_the_test_split_never_reaches_fitting_or_model_selection(tmp_path, monkeypatch):
    """Every classifier is fitted and early-stopped on rows of the training split (and the
    synthetic set) only: no test image is among its training or validation rows."""
    import bench.classify.run_trainer as downstream

    seen = []
    real_fit = downstream.fit

    def spy(model, x, y, val_x, val_y, protocol, seed, remedy=None):
        seen.append(
            (torch.as_tensor(x[:]).reshape(len(y), -1), torch.as_tensor(val_x[:]).reshape(len(val_y), -1))
        )
        return real_fit(model, x, y, val_x, val_y, protocol, seed, remedy)

    monkeypatch.setattr(downstream, "fit", spy)
    ctx = cell(tmp_path, noisy_tail_copies(0))
    Downstream(n_seeds=2, max_epochs=1, patience=1, batch_size=16, **PLAIN).evaluate(ctx)
    test_rows = ctx.test.x.reshape(len(ctx.test), -1)
    assert len(seen) == 4  # two seeds, with and without augmentation
    for train_rows, val_rows in seen:
        for rows in (train_rows, val_rows):
            # no row of the test split is equal to a row the classifier was fitted or selected on
            assert not torch.cdist(rows, test_rows).min(dim=1).values.eq(0).any()
        # and validation is held out of the classifier's own training rows
        assert not torch.cdist(val_rows, train_rows).min(dim=1).values.eq(0).any()
