"""Conditional accuracy moves the right way: real samples score high, noise scores at chance."""

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score

from bench.context import CellContext
from bench.dataset import Split
from bench.datasets.digits_lt import DigitsLT
from bench.evaluators.cond_accuracy import ConditionalAccuracy, per_class_recall


def test_per_class_recall_mean_is_sklearn_balanced_accuracy():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    recalls = per_class_recall(y, p, range(4))
    assert abs(np.mean(list(recalls.values())) - balanced_accuracy_score(y, p)) < 1e-12


def test_real_samples_score_high_and_noise_scores_near_chance(tmp_path):
    ds = DigitsLT()
    train, test = ds.load("train"), ds.load("test")
    g = torch.Generator().manual_seed(0)
    noise = Split(x=torch.rand(test.x.shape, generator=g), y=test.y)
    cell = CellContext(ds, train, test, synthetic=test, out_dir=tmp_path, seed=0, synthetic_init=noise)
    m = ConditionalAccuracy().evaluate(cell)
    assert m["cond_acc/all"] == m["cond_acc/real"] > 0.85
    assert m["cond_acc/tail"] > 0.6
    assert m["cond_acc/all@init"] < 0.25  # 10 classes: chance is 0.1
