"""Downstream classification: does adding the synthetic set help a classifier on the real test set,
and does it beat the cheap long-tail remedies?

The paper's protocol, per generative seed: `n_seeds` classifiers (seed i gets a hash of (cell
seed, i)) are trained on the real training split alone ("no augmentation", `/no_aug`) and, with the
same seed, on the real training split plus the cell's synthetic set (sampled at the augmentation
targets when sample.n_per_class='targets'); model selection by early stopping on balanced accuracy
over the dataset's val split (else a stratified 10% of train, seed 0, held out of both runs); both
are scored on the held-out eval split (balanced-test). Metrics are means over classifier seeds of
balanced accuracy (mean per-class recall) and macro-F1 over all classes (zero_division=0),
`bacc_gain` = bacc - bacc/no_aug, and the sample standard deviations over seeds (NaN for one seed).

Classical long-tail remedies (bench.remedy; `remedies`, default all five built-in: reweight,
resample, focal, ldam_drw, crt) are trained the same way on the real data alone, with the same
classifier seeds: `bacc/<remedy>`, `macro_f1/<remedy>`. `with_augmentation` names remedies also
applied on top of augmentation (real plus synthetic data; cRT from the augmented classifier):
`bacc/aug+<remedy>`, `macro_f1/aug+<remedy>`. Every run of one classifier seed pairs with the others
of that seed in the tables' significance tests.

The no-augmentation and remedy classifiers do not depend on the method, so they are trained once
per (dataset, eval split, protocol, classifier seeds) and shared by that dataset's cells
(bench.metrics.baseline_store, under `cell.shared`), each unit recomputed whenever what it was trained
on differs; the time they take shows as the stage `evaluate/downstream/baselines` (near zero when
reused). Per-seed scores, per-class recalls and training histories go to `<cell>/downstream.json`.
Defaults are sized for 32x32 images on a CPU (small_cnn); gin/presets/downstream_paper.gin sets the
paper's ResNet-50 protocol.
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import torch

from bench import registry
from bench.checks import is_int
from bench.errors import BenchError
from bench.evaluator import Evaluator
from bench.evaluators.cond_accuracy import per_class_recall
from bench.metrics.baseline_store import BaselineStore
from bench.metrics.classifier import (
    Protocol, balanced_accuracy, build_classifier, concat_rows, default_device, fit, macro_f1, plain, predict,
    retrain_head, selection_splits,
)
from bench.registry import register_evaluator
from bench.store.artifacts import write_json_atomic
from bench.store.fingerprint import split_fingerprint

log = logging.getLogger(__name__)
NO_AUG = "/no_aug"
AUG = "aug"
REMEDIES = ("reweight", "resample", "focal", "ldam_drw", "crt")
WITH_AUGMENTATION = ("reweight", "crt")
MEANS = ("bacc", "macro_f1", f"bacc{NO_AUG}", f"macro_f1{NO_AUG}", "bacc_gain")
STDS = ("bacc_std", "macro_f1_std")


def classifier_seed(cell_seed: int, i: int) -> int:
    """Seed of the i-th downstream classifier of a generative seed (stable across runs)."""
    return int(np.random.SeedSequence([cell_seed, i]).generate_state(1)[0])


def combined(remedy: str) -> str:
    """The run name of a remedy on top of augmentation: `aug+<remedy>`."""
    return f"{AUG}+{remedy}"


@register_evaluator("downstream")
class Downstream(Evaluator):
    """Balanced accuracy and macro-F1 on real test data: no augmentation, the remedies, with the
    synthetic set, and the synthetic set with remedies."""

    applies_to = ("image",)
    version = 2  # 2: the long-tail remedies and their combinations with augmentation

    def __init__(self, arch: str = "small_cnn", n_seeds: int = 3, lr: float = 1e-3, batch_size: int = 64,
                 max_epochs: int = 15, patience: int = 4, weight_decay: float = 0.0,
                 class_balanced_sampling: bool = False, remedies=REMEDIES, with_augmentation=WITH_AUGMENTATION):
        if not is_int(n_seeds) or n_seeds < 1:
            raise BenchError(f"downstream.n_seeds must be an integer >= 1, got {n_seeds!r}")
        self.arch, self.n_seeds = arch, n_seeds
        self.protocol = Protocol(lr, batch_size, max_epochs, patience, weight_decay,
                                 class_balanced_sampling).check("downstream")
        self.remedies = _names("remedies", remedies)
        self.with_augmentation = _names("with_augmentation", with_augmentation)
        for name in {*self.remedies, *self.with_augmentation}:
            registry.remedies.get(name)().check(self.protocol)
        runs = [f"/{r}" for r in self.remedies] + [f"/{combined(r)}" for r in self.with_augmentation]
        self.higher_is_better = {**{k: True for k in MEANS}, **{k: False for k in STDS},
                                 **{f"{m}{r}": True for m in ("bacc", "macro_f1") for r in runs}}

    def evaluate(self, cell) -> dict[str, float]:
        """Train the classifiers, score them on cell.test, write downstream.json."""
        train, val = selection_splits(cell.dataset, cell.train)
        synth = cell.synthetic
        if tuple(synth.x.shape[1:]) != tuple(train.x.shape[1:]):
            raise BenchError(f"downstream: synthetic images have shape {tuple(synth.x.shape[1:])} but real "
                             f"ones {tuple(train.x.shape[1:])}; the synthetic set must be decoded to "
                             "data space")
        seeds = [classifier_seed(cell.seed, i) for i in range(self.n_seeds)]
        store = self._store(cell, train, val, seeds)
        with cell.timed("downstream/baselines"):
            runs, reused = self._baselines(cell, store, train, val, seeds)
        aug_x, aug_y = concat_rows([train.x, synth.x]), torch.cat([train.y, synth.y.long()])
        runs |= self._augmented(cell, aug_x, aug_y, val, seeds)
        write_json_atomic(cell.out_dir / "downstream.json", {
            "arch": self.arch, "protocol": self.protocol.describe(), "n_train": len(train),
            "n_synthetic": len(synth), "n_val": len(val), "n_test": len(cell.test), "runs": runs,
            "shared_from": str(store.folder) if store else None, "reused": reused})
        cell.details["downstream"] = per_seed(runs)
        return summarise(runs)

    # -- the runs ------------------------------------------------------------------------------
    def _baselines(self, cell, store, train, val, seeds: list[int]) -> tuple[dict, list[str]]:
        """The runs on real data alone: no augmentation and each remedy, from the store when it
        holds them for this basis (their names listed as reused), else trained and stored."""
        runs, reused = {}, []
        runs["no_aug"], models = self._no_aug(cell, store, train, val, seeds)
        if models is None:
            reused.append("no_aug")
        for name in self.remedies:
            remedy = self._remedy(name, train.y, cell.dataset.n_classes)
            stored = store.load(name, remedy.describe()) if store else None
            if stored is not None:
                runs[name] = stored
                reused.append(name)
                continue
            if remedy.retrains_head and models is None:
                models = self._no_aug_models(cell, store, train, val, seeds)
            runs[name] = [self._apply(cell, remedy, train.x, train.y, val, seed, models[i] if models else None)
                          for i, seed in enumerate(seeds)]
            if store:
                store.save(name, remedy.describe(), runs[name])
        if reused:
            log.info("downstream: %s classifiers reused from %s", ", ".join(reused), store.folder)
        return runs, reused

    def _no_aug(self, cell, store, train, val, seeds: list[int]) -> tuple[list[dict], Optional[list]]:
        """The no-augmentation runs, and their classifiers when trained here (None: from the store)."""
        stored = store.load("no_aug", {}) if store else None
        if stored is not None:
            return stored, None
        trained = [self._train(cell, train.x, train.y, val, seed, plain(self.protocol)) for seed in seeds]
        runs, models = [r for r, _ in trained], [m for _, m in trained]
        if store:
            store.save("no_aug", {}, runs, models)
        return runs, models

    def _no_aug_models(self, cell, store, train, val, seeds: list[int]) -> list:
        """The stored no-augmentation classifiers (cRT's stage 1), retrained when their weights are lost."""
        models = store.models("no_aug", {}, lambda i: self._classifier(cell, train.x, seeds[i])) if store else None
        return models or [self._train(cell, train.x, train.y, val, s, plain(self.protocol))[1] for s in seeds]

    def _augmented(self, cell, x, y: torch.Tensor, val, seeds: list[int]) -> dict:
        """The runs on real plus synthetic data: plain, then each remedy on top of it."""
        runs = {AUG: [], **{combined(r): [] for r in self.with_augmentation}}
        remedies = {r: self._remedy(r, y, cell.dataset.n_classes) for r in self.with_augmentation}
        for seed in seeds:
            run, model = self._train(cell, x, y, val, seed, plain(self.protocol))
            runs[AUG].append(run)
            for name, remedy in remedies.items():
                runs[combined(name)].append(self._apply(cell, remedy, x, y, val, seed, model))
        return runs

    def _apply(self, cell, remedy, x, y, val, seed: int, base) -> dict:
        """One remedy run: re-train `base`'s last layer (cRT), or train a fresh classifier with it."""
        if remedy.retrains_head:
            model, history = retrain_head(base, x, y, val.x, val.y, self.protocol, seed, remedy)
            return self._score(cell, model, seed, history)
        return self._train(cell, x, y, val, seed, remedy)[0]

    def _train(self, cell, x, y: torch.Tensor, val, seed: int, remedy) -> tuple[dict, object]:
        """One classifier: train with early stopping on `val` under `remedy`, score on the test split."""
        model = self._classifier(cell, x, seed)
        model, history = fit(model, x, y, val.x, val.y, self.protocol, seed, remedy)
        return self._score(cell, model, seed, history), model

    def _classifier(self, cell, x, seed: int):
        """A fresh classifier for images shaped like `x`'s, initialised from `seed`."""
        return build_classifier(self.arch, int(x.shape[1]), cell.dataset.n_classes, seed=seed).to(default_device())

    def _score(self, cell, model, seed: int, history) -> dict:
        n_classes = cell.dataset.n_classes
        truth, pred = cell.test.y.numpy(), predict(model, cell.test.x, self.protocol.batch_size)
        recall = per_class_recall(truth, pred, range(n_classes))
        return {"seed": seed, "bacc": balanced_accuracy(truth, pred), "macro_f1": macro_f1(truth, pred, n_classes),
                "recall": [recall.get(c) for c in range(n_classes)], "history": history.to_dict()}

    def _remedy(self, name: str, y: torch.Tensor, n_classes: int):
        """The remedy `name` as configured, set up with the class counts of the labels `y` it trains on."""
        remedy = registry.remedies.get(name)()
        remedy.setup(np.bincount(y.numpy(), minlength=n_classes))
        return remedy

    def _store(self, cell, train, val, seeds: list[int]):
        """Where this dataset's runs on real data are shared (None: trained in every cell)."""
        if cell.shared is None:
            return None
        folder, key = cell.shared
        basis = {"arch": self.arch, "protocol": self.protocol.describe(), "seeds": seeds,
                 "data": {name: split_fingerprint(split) for name, split in
                          (("train", train), ("val", val), ("test", cell.test))}}
        return BaselineStore(folder, key, basis)


def _names(setting: str, names) -> tuple[str, ...]:
    """A list of remedy names, each known (one line with the known ones otherwise)."""
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise BenchError(f"downstream.{setting} must be a list of remedy names, e.g. ['reweight', 'crt'], "
                         f"got {names!r}")
    for name in names:
        registry.remedies.get(name)  # unknown: one line with a did-you-mean
    return tuple(dict.fromkeys(names))


def per_seed(runs: dict[str, list[dict]]) -> dict:
    """What tables need beyond the means: every classifier seed's scores (paired by index between
    all runs of the cell) and the per-class recall averaged over seeds, per run name."""
    def recall(name: str) -> list:
        table = np.array([[np.nan if v is None else v for v in r["recall"]] for r in runs[name]], dtype=float)
        return [None if np.isnan(col).all() else float(np.nanmean(col)) for col in table.T]

    out = {"classifier_seeds": [r["seed"] for r in runs[AUG]]}
    for name in runs:
        suffix = "" if name == AUG else f"/{name}"
        out |= {f"{key}{suffix}": [float(r[key]) for r in runs[name]] for key in ("bacc", "macro_f1")}
        out[f"recall{suffix}"] = recall(name)
    return out


def summarise(runs: dict[str, list[dict]]) -> dict[str, float]:
    """Seed means of every run (and the sample standard deviations of the augmented one)."""
    def scores(name: str, key: str) -> np.ndarray:
        return np.array([r[key] for r in runs[name]], dtype=float)

    def std(v: np.ndarray) -> float:
        return float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")

    out = {"bacc": scores(AUG, "bacc").mean(), "macro_f1": scores(AUG, "macro_f1").mean(),
           "bacc_std": std(scores(AUG, "bacc")), "macro_f1_std": std(scores(AUG, "macro_f1"))}
    for name in (n for n in runs if n != AUG):
        out |= {f"{key}/{name}": scores(name, key).mean() for key in ("bacc", "macro_f1")}
    out["bacc_gain"] = out["bacc"] - out[f"bacc{NO_AUG}"]
    return {k: float(v) for k, v in out.items()}
