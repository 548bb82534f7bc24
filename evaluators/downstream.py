"""Downstream classification: does adding the synthetic set help a classifier on the real test set?

The paper's protocol, per generative seed: `n_seeds` classifiers (seed i gets a hash of (cell
seed, i)) are trained on the real training split alone ("no augmentation", `/no_aug`) and, with the
same seed, on the real training split plus the cell's synthetic set (sampled at the augmentation
targets when sample.n_per_class='targets'); model selection by early stopping on balanced accuracy
over the dataset's val split (else a stratified 10% of train, seed 0, held out of both runs); both
are scored on the held-out eval split (balanced-test). Metrics are means over classifier seeds of
balanced accuracy (mean per-class recall) and macro-F1 over all classes (zero_division=0),
`bacc_gain` = bacc - bacc/no_aug, and the sample standard deviations over seeds (NaN for one seed).

The no-augmentation baseline does not depend on the method, so it is trained once per (dataset,
eval split, protocol, generative seed) and shared by that dataset's cells: stored under
`cell.shared` (results/cache/no_aug/<dataset>-<hash>/) with what it was trained on (protocol,
architecture, seeds, a digest of the train, validation and test data), and recomputed whenever
any of that differs, so a stale baseline is never paired with new augmented runs. Per-seed
scores, per-class recalls and training histories go to
`<cell>/downstream.json`. Defaults are sized for 32x32 images on a CPU (small_cnn);
gin/presets/downstream_paper.gin sets the paper's ResNet-50 protocol.
"""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import torch

from bench.store.artifacts import is_complete, stage_dir, write_json_atomic
from bench.checks import is_int
from bench.metrics.classifier import (
    Protocol, balanced_accuracy, build_classifier, concat_rows, default_device, fit, macro_f1, predict,
    selection_splits,
)
from bench.errors import BenchError
from bench.evaluator import Evaluator
from bench.store.fingerprint import split_fingerprint
from bench.evaluators.cond_accuracy import per_class_recall
from bench.registry import register_evaluator

log = logging.getLogger(__name__)
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
        aug_x, aug_y = concat_rows([train.x, synth.x]), torch.cat([train.y, synth.y.long()])
        seeds = [classifier_seed(cell.seed, i) for i in range(self.n_seeds)]
        no_aug, reused = self._no_aug_runs(cell, train, val, seeds)
        runs = {"no_aug": no_aug, "aug": [self._run(cell, aug_x, aug_y, val, seed) for seed in seeds]}
        write_json_atomic(cell.out_dir / "downstream.json", {
            "arch": self.arch, "protocol": self.protocol.describe(), "n_train": len(train),
            "n_synthetic": len(synth), "n_val": len(val), "n_test": len(cell.test), "runs": runs,
            "no_aug_from": str(cell.shared[0]) if reused else None})
        cell.details["downstream"] = per_seed(runs)
        return summarise(runs)

    def _no_aug_runs(self, cell, train, val, seeds: list[int]) -> tuple[list[dict], bool]:
        """The no-augmentation runs of these seeds, and whether they came from the shared store."""
        if cell.shared is None:
            return [self._run(cell, train.x, train.y, val, seed) for seed in seeds], False
        folder, key = cell.shared
        basis = self._no_aug_basis(cell, train, val, seeds)
        # the stored runs count only for the same basis: another one is replaced, never reused
        key = f"{key}-{hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:12]}"
        if is_complete(folder, key):
            stored = json.loads((folder / "runs.json").read_text(encoding="utf-8"))
            log.info("downstream: no-augmentation classifiers reused from %s", folder)
            return stored, True
        runs = [self._run(cell, train.x, train.y, val, seed) for seed in seeds]
        with stage_dir(folder, key, basis=basis) as tmp:
            write_json_atomic(tmp / "runs.json", runs)
        return runs, False

    def _no_aug_basis(self, cell, train, val, seeds: list[int]) -> dict:
        """What the no-augmentation runs depend on, compared before a stored set is reused."""
        return {"arch": self.arch, "protocol": self.protocol.describe(), "seeds": seeds,
                "data": {name: split_fingerprint(split) for name, split in
                         (("train", train), ("val", val), ("test", cell.test))}}

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
