"""Classifiers and their protocol: metrics match sklearn, early stopping keeps the best weights,
training is reproducible, features have the documented width, and the small CNN learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score

from bench.classify.fit import (
    Protocol,
    RecallStats,
    RowConcat,
    balanced_accuracy,
    build_classifier,
    embed,
    fit,
    macro_f1,
    predict,
    stratified_holdout,
    validation_bacc,
)
from bench.errors import BenchError


def blobs(n_per_class: int, n_classes: int = 3, side: int = 8, seed: int = 0):
    """Images whose class is a bright square in one of n_classes positions, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    x = 0.3 * torch.rand(len(y), 1, side, side, generator=g)
    for c in range(n_classes):
        r = 2 * c % (side - 2)
        x[y == c, :, r : r + 3, r : r + 3] += 0.6
    return x.clamp(0, 1), y


def test_metrics_agree_with_sklearn_with_a_class_never_predicted():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 300)
    p = np.where((rng.random(300) < 0.6) & (y < 4), y, rng.integers(0, 4, 300))  # 4 never predicted
    assert 4 not in p
    # balanced accuracy by hand: the mean over the classes present of (correct / present)
    manual = np.mean([np.mean(p[y == c] == c) for c in np.unique(y)])
    assert balanced_accuracy(y, p) == pytest.approx(manual, abs=1e-12)
    manual_f1 = []
    for c in range(6):  # class 5 never occurs nor is predicted: F1 0 by convention
        tp, fp, fn = np.sum((p == c) & (y == c)), np.sum((p == c) & (y != c)), np.sum((p != c) & (y == c))
        manual_f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    assert macro_f1(y, p, 6) == pytest.approx(np.mean(manual_f1), abs=1e-12)
    assert macro_f1(y, p, 6) == pytest.approx(
        f1_score(y, p, labels=range(6), average="macro", zero_division=0), abs=1e-12
    )


@pytest.mark.parametrize("arch,dim", [("small_cnn", 128), ("densenet121", 1024), ("resnet50", 2048)])
@pytest.mark.slow
def test_embed_gives_pooled_penultimate_features(arch, dim):
    model = build_classifier(arch, 1, 4, seed=0)
    x = torch.rand(3, 1, 32, 32)
    features = embed(model, x, batch_size=2)
    assert features.shape == (3, dim) and features.dtype == np.float64
    with torch.no_grad():  # the head applied to the features gives the model's logits
        logits = model.head(torch.from_numpy(features).float())
        assert torch.allclose(logits, model.eval()(x), atol=1e-4)
    assert predict(model, x).tolist() == logits.argmax(1).tolist()


def test_unknown_arch_is_a_bench_error():
    with pytest.raises(BenchError, match="small_cnn"):
        build_classifier("vgg", 1, 2)


def test_fit_early_stops_and_restores_the_best_weights():
    x, y = blobs(20)
    vx, vy = blobs(10, seed=1)
    protocol = Protocol(lr=3e-2, batch_size=16, max_epochs=30, patience=2)
    model, history = fit(build_classifier("small_cnn", 1, 3, seed=0), x, y, vx, vy, protocol, seed=0)
    best = int(np.argmax(history.val_bacc))  # first maximum, as strict improvement keeps it
    assert history.best_epoch == best
    # stopped exactly `patience` epochs after the best one, well before max_epochs
    assert len(history.val_bacc) == best + 1 + protocol.patience < 30
    assert balanced_accuracy(vy.numpy(), predict(model, vx)) == history.best_val_bacc


@pytest.mark.parametrize("balanced", [False, True])
def test_training_is_deterministic_for_a_seed(balanced):
    x, y = blobs(10)
    protocol = Protocol(lr=1e-2, batch_size=8, max_epochs=2, patience=5, class_balanced_sampling=balanced)
    runs = [fit(build_classifier("small_cnn", 1, 3, seed=s), x, y, x, y, protocol, seed=s) for s in (0, 0, 1)]
    a, b, c = (embed(m, x) for m, _ in runs)
    assert np.array_equal(a, b) and runs[0][1].train_loss == runs[1][1].train_loss
    assert not np.array_equal(a, c)


def test_small_cnn_learns_phantom_lt_subset():
    from bench.datasets.phantom_lt import PhantomLT

    ds = PhantomLT(n_max=60, imbalance_ratio=4, n_val_per_class=6, n_test_per_class=6, size=16)
    train, val = ds.load("train"), ds.load("balanced-val")
    keep = train.y < 4  # four classes keep it fast: chance is 0.25
    protocol = Protocol(lr=3e-3, batch_size=32, max_epochs=8, patience=8)
    model, history = fit(
        build_classifier("small_cnn", 1, 4, seed=0),
        train.x[keep],
        train.y[keep],
        val.x[val.y < 4],
        val.y[val.y < 4],
        protocol,
        seed=0,
    )
    assert history.best_val_bacc >= 0.6


def test_stratified_holdout_keeps_every_class_in_train():
    y = torch.tensor([0] * 50 + [1] * 7 + [2] * 2 + [3])
    keep, held = stratified_holdout(y, 0.1, seed=0)
    assert sorted(keep.tolist() + held.tolist()) == list(range(len(y)))
    assert torch.bincount(y[held], minlength=4).tolist() == [5, 1, 1, 0]
    assert torch.equal(held, stratified_holdout(y, 0.1, seed=0)[1])


def test_row_concat_reads_rows_across_parts_in_order():
    a, b = torch.arange(6.0).reshape(3, 1, 1, 2), 10 + torch.arange(4.0).reshape(2, 1, 1, 2)
    rows = RowConcat([a, b])
    both = torch.cat([a, b])
    idx = torch.tensor([4, 0, 3, 2])
    assert len(rows) == 5 and rows.shape == (5, 1, 1, 2)
    assert torch.equal(rows[idx], both[idx]) and torch.equal(rows[1:4], both[1:4])


def test_fit_reads_lazy_image_files_mixed_with_tensors(tmp_path):
    from PIL import Image

    from bench.classify.fit import concat_rows
    from bench.data.imagefiles import ImageFiles, Preprocess

    x, y = blobs(4)
    paths = []
    for i, image in enumerate(x):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(paths[-1])
    files = ImageFiles(paths, [p.name for p in paths], Preprocess(size=8), "test")
    mixed = concat_rows([files, x])
    assert isinstance(mixed, RowConcat)
    assert torch.allclose(mixed[torch.tensor([1, 13])], torch.stack([x[1], x[1]]), atol=1 / 255)
    protocol = Protocol(batch_size=8, max_epochs=1, patience=1)
    model, history = fit(
        build_classifier("small_cnn", 1, 3, seed=0), mixed, torch.cat([y, y]), files, y, protocol, seed=0
    )
    assert len(history.train_loss) == 1 and np.isfinite(history.train_loss[0])
    assert embed(model, files, batch_size=5).shape == (12, 128)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_device_validation_accuracy_equals_sklearn_even_with_absent_classes(seed):
    """torchmetrics' per-class counts, batch by batch, give scikit-learn's balanced accuracy,
    including a class that is predicted but absent from the targets (not counted by either)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, 257)  # class 4 of 6 never occurs in the targets, nor does 5
    p = np.where(rng.random(257) < 0.5, y, rng.integers(0, 6, 257))
    assert 4 in p and 4 not in y
    stats = RecallStats(6, "cpu")
    for i in range(0, len(y), 64):  # batches, as validation streams them
        stats.update(torch.as_tensor(p[i : i + 64]), torch.as_tensor(y[i : i + 64]))
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        expected = balanced_accuracy_score(y, p)
    assert stats.balanced_accuracy() == pytest.approx(expected, abs=1e-12)


def test_validation_bacc_of_a_model_equals_sklearn_on_its_predictions():
    x, y = blobs(20, n_classes=4)
    model = build_classifier("small_cnn", 1, 4, seed=0)
    assert validation_bacc(model, x, y, batch_size=7) == pytest.approx(
        balanced_accuracy_score(y.numpy(), predict(model, x, batch_size=7)), abs=1e-12
    )
