"""What the downstream runs measure (bench.classify.scores), against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score

from bench.classify.fit import History, build_classifier, predict
from bench.classify.scores import per_seed, predictions, score, summarise
from bench.dataset import Split


def run(seed: int, bacc: float, f1: float, recall=(0.5, 0.5), pred=(0, 1)) -> dict:
    return {"seed": seed, "bacc": bacc, "macro_f1": f1, "recall": list(recall), "pred": list(pred)}


RUNS = {
    "no_aug": [run(7, 0.5, 0.4), run(8, 0.6, 0.5)],
    "crt": [run(7, 0.55, 0.45), run(8, 0.65, 0.6)],
    "aug": [run(7, 0.7, 0.6, (1.0, None)), run(8, 0.9, 0.7, (0.5, None))],
    "aug+crt": [run(7, 0.8, 0.75), run(8, 0.85, 0.8)],
}


def test_summarise_gives_seed_means_the_augmented_spread_and_the_gain():
    out = summarise(RUNS)
    assert out["bacc"] == pytest.approx(0.8) and out["macro_f1"] == pytest.approx(0.65)
    assert out["bacc_std"] == pytest.approx(math.sqrt(2 * 0.1**2))  # sample std of 0.7, 0.9
    assert out["macro_f1_std"] == pytest.approx(math.sqrt(2 * 0.05**2))
    assert out["bacc/no_aug"] == pytest.approx(0.55) and out["macro_f1/crt"] == pytest.approx(0.525)
    assert out["bacc/aug+crt"] == pytest.approx(0.825)
    assert out["bacc_gain"] == pytest.approx(0.8 - 0.55)
    assert set(out) == {
        "bacc",
        "macro_f1",
        "bacc_std",
        "macro_f1_std",
        "bacc_gain",
        *(f"{k}/{r}" for k in ("bacc", "macro_f1") for r in ("no_aug", "crt", "aug+crt")),
    }
    assert all(type(v) is float for v in out.values())


def test_one_classifier_seed_has_no_spread():
    out = summarise({"aug": [run(1, 0.7, 0.6)], "no_aug": [run(1, 0.5, 0.4)]})
    assert math.isnan(out["bacc_std"]) and math.isnan(out["macro_f1_std"])
    assert out["bacc_gain"] == pytest.approx(0.2)


def test_per_seed_keeps_every_seed_paired_and_recall_averaged_over_seeds():
    out = per_seed(RUNS)
    assert out["classifier_seeds"] == [7, 8]
    assert out["bacc"] == [0.7, 0.9] and out["macro_f1/aug+crt"] == [0.75, 0.8]
    assert out["bacc/no_aug"] == [0.5, 0.6]
    assert out["recall"] == [pytest.approx(0.75), None]  # class 1 absent from the test split: None
    assert out["recall/crt"] == [0.5, 0.5]


def test_per_seed_recall_skips_a_seed_that_lacks_a_class():
    out = per_seed({"aug": [run(1, 0, 0, (0.2, None)), run(2, 0, 0, (0.4, 0.6))]})
    assert out["recall"] == [pytest.approx(0.3), pytest.approx(0.6)]


def test_predictions_keep_the_labels_and_the_aug_and_no_aug_predictions_only():
    out = predictions(RUNS, torch.tensor([1, 0]))
    assert out == {"labels": [1, 0], "aug": [[0, 1], [0, 1]], "no_aug": [[0, 1], [0, 1]]}
    assert all(type(v) is int for v in out["labels"])
    assert predictions({"aug": RUNS["aug"]}, torch.tensor([0])) == {"labels": [0], "aug": [[0, 1], [0, 1]]}


def sklearn_recall(truth, pred, classes) -> dict:
    present = [c for c in classes if np.any(truth == c)]
    return dict(zip(present, recall_score(truth, pred, labels=present, average=None, zero_division=0)))


def test_score_of_one_classifier_matches_sklearn_on_its_predictions():
    g = torch.Generator().manual_seed(0)
    test = Split(torch.rand(20, 1, 8, 8, generator=g), torch.tensor([0, 1, 3] * 6 + [0, 1]))  # no class 2
    model = build_classifier("small_cnn", 1, 4, seed=0)
    history = History(train_loss=[1.0, 0.5], val_bacc=[0.3, 0.4], best_epoch=1)
    out = score(model, 5, history, test, 4, 8, sklearn_recall)
    pred = predict(model, test.x, 8)
    truth = test.y.numpy()
    assert out["seed"] == 5 and out["pred"] == pred.tolist() and all(type(p) is int for p in out["pred"])
    assert out["bacc"] == pytest.approx(balanced_accuracy_score(truth, pred), abs=1e-12)
    assert out["macro_f1"] == pytest.approx(
        f1_score(truth, pred, labels=range(4), average="macro", zero_division=0), abs=1e-12
    )
    assert out["recall"][2] is None  # absent from the test split
    assert out["recall"][:2] + out["recall"][3:] == pytest.approx(
        [np.mean(pred[truth == c] == c) for c in (0, 1, 3)], abs=1e-12
    )
    assert out["history"] == {
        "train_loss": [1.0, 0.5],
        "val_bacc": [0.3, 0.4],
        "best_epoch": 1,
        "best_val_bacc": 0.4,
    }
