"""Downstream classification: does adding the synthetic set help a classifier on the real test set?

The paper's protocol, per generative seed: `n_seeds` classifiers (seed i gets a hash of (cell
seed, i)) are trained on the real training split alone ("no augmentation", `/no_aug`) and, with the
same seed, on the real training split plus the cell's synthetic set (sampled at the augmentation
targets when sample.n_per_class='targets'); model selection by early stopping on balanced accuracy
over the dataset's val split (else a stratified 10% of train, seed 0, held out of both runs); both
are scored on the held-out eval split (balanced-test). Metrics are means over classifier seeds of
balanced accuracy (mean per-class recall) and macro-F1 over all classes (zero_division=0),
`bacc_gain` = bacc - bacc/no_aug, and the sample standard deviations over seeds (NaN for one seed).

The no-augmentation baseline does not depend on the method, but it is recomputed in every cell:
simple and certainly consistent with the augmented runs (same data, split, protocol and seeds),
at twice the cost. Per-seed scores, per-class recalls and training histories go to
`<cell>/downstream.json`. Defaults are sized for 32x32 images on a CPU (small_cnn);
gin/presets/downstream_paper.gin sets the paper's ResNet-50 protocol.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.artifacts import write_json_atomic
from bench.checks import is_int
from bench.classifier import (
    Protocol, balanced_accuracy, build_classifier, concat_rows, default_device, fit, macro_f1, predict,
    selection_splits,
)
from bench.errors import BenchError
from bench.evaluator import Evaluator
from bench.evaluators.cond_accuracy import per_class_recall
from bench.registry import register_evaluator

NO_AUG = "/no_aug"
MEANS = ("bacc", "macro_f1", f"bacc{NO_AUG}", f"macro_f1{NO_AUG}", "bacc_gain")
STDS = ("bacc_std", "macro_f1_std")


def classifier_seed(cell_seed: int, i: int) -> int:
    """Seed of the i-th downstream classifier of a generative seed (stable across runs)."""
    return int(np.random.SeedSequence([cell_seed, i]).generate_state(1)[0])


@register_evaluator("downstream")
class Downstream(Evaluator):
    """Balanced accuracy and macro-F1 on real test data, with and without the synthetic set."""

    applies_to = ("image",)
    higher_is_better = {**{k: True for k in MEANS}, **{k: False for k in STDS}}

    def __init__(self, arch: str = "small_cnn", n_seeds: int = 3, lr: float = 1e-3, batch_size: int = 64,
                 max_epochs: int = 15, patience: int = 4, weight_decay: float = 0.0,
                 class_balanced_sampling: bool = False):
        if not is_int(n_seeds) or n_seeds < 1:
            raise BenchError(f"downstream.n_seeds must be an integer >= 1, got {n_seeds!r}")
        self.arch, self.n_seeds = arch, n_seeds
        self.protocol = Protocol(lr, batch_size, max_epochs, patience, weight_decay,
                                 class_balanced_sampling).check("downstream")

    def evaluate(self, cell) -> dict[str, float]:
        """Train 2 x n_seeds classifiers, score them on cell.test, write downstream.json."""
        train, val = selection_splits(cell.dataset, cell.train)
        synth = cell.synthetic
        if tuple(synth.x.shape[1:]) != tuple(train.x.shape[1:]):
            raise BenchError(f"downstream: synthetic images have shape {tuple(synth.x.shape[1:])} but real "
                             f"ones {tuple(train.x.shape[1:])}; the synthetic set must be decoded to "
                             "data space")
        sets = {"no_aug": (train.x, train.y),
                "aug": (concat_rows([train.x, synth.x]), torch.cat([train.y, synth.y.long()]))}
        runs = {name: [] for name in sets}
        for i in range(self.n_seeds):
            seed = classifier_seed(cell.seed, i)
            for name, (x, y) in sets.items():
                runs[name].append(self._run(cell, x, y, val, seed))
        write_json_atomic(cell.out_dir / "downstream.json", {
            "arch": self.arch, "protocol": self.protocol.describe(), "n_train": len(train),
            "n_synthetic": len(synth), "n_val": len(val), "n_test": len(cell.test), "runs": runs})
        cell.details["downstream"] = per_seed(runs)
        return summarise(runs)

    def _run(self, cell, x, y: torch.Tensor, val, seed: int) -> dict:
        """One classifier: train with early stopping on `val`, score on the test split."""
        n_classes = cell.dataset.n_classes
        model = build_classifier(self.arch, int(x.shape[1]), n_classes, seed=seed).to(default_device())
        model, history = fit(model, x, y, val.x, val.y, self.protocol, seed)
        truth, pred = cell.test.y.numpy(), predict(model, cell.test.x, self.protocol.batch_size)
        recall = per_class_recall(truth, pred, range(n_classes))
        return {"seed": seed, "bacc": balanced_accuracy(truth, pred),
                "macro_f1": macro_f1(truth, pred, n_classes),
                "recall": [recall.get(c) for c in range(n_classes)], "history": history.to_dict()}


def per_seed(runs: dict[str, list[dict]]) -> dict:
    """What tables need beyond the means: every classifier seed's scores (paired by index between
    the augmented and the no-augmentation runs) and the per-class recall averaged over seeds."""
    def recall(name: str) -> list:
        table = np.array([[np.nan if v is None else v for v in r["recall"]] for r in runs[name]], dtype=float)
        return [None if np.isnan(col).all() else float(np.nanmean(col)) for col in table.T]

    out = {"classifier_seeds": [r["seed"] for r in runs["aug"]]}
    for name, suffix in (("aug", ""), ("no_aug", NO_AUG)):
        out |= {f"{key}{suffix}": [float(r[key]) for r in runs[name]] for key in ("bacc", "macro_f1")}
        out[f"recall{suffix}"] = recall(name)
    return out


def summarise(runs: dict[str, list[dict]]) -> dict[str, float]:
    """Seed means (and sample standard deviations) of the augmented and no-augmentation runs."""
    def scores(name: str, key: str) -> np.ndarray:
        return np.array([r[key] for r in runs[name]], dtype=float)

    def std(v: np.ndarray) -> float:
        return float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")

    out = {"bacc": scores("aug", "bacc").mean(), "macro_f1": scores("aug", "macro_f1").mean(),
           f"bacc{NO_AUG}": scores("no_aug", "bacc").mean(),
           f"macro_f1{NO_AUG}": scores("no_aug", "macro_f1").mean(),
           "bacc_std": std(scores("aug", "bacc")), "macro_f1_std": std(scores("aug", "macro_f1"))}
    out["bacc_gain"] = out["bacc"] - out[f"bacc{NO_AUG}"]
    return {k: float(v) for k, v in out.items()}
