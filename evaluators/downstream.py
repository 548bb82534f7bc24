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
The record's details also keep, for the augmented and no-augmentation runs, every classifier seed's
predicted class ids in test-set order and the test labels once (`predictions`), so an interval can
resample test images as well as seeds (bench.metrics.hierarchical_bootstrap); a stored
no-augmentation unit written before predictions were kept is retrained.

Classical long-tail remedies (bench.remedy; `remedies`, default all five built-in: reweight,
resample, focal, ldam_drw, crt) are trained the same way on the real data alone, with the same
classifier seeds: `bacc/<remedy>`, `macro_f1/<remedy>`. `with_augmentation` names remedies also
applied on top of augmentation (real plus synthetic data; cRT from the augmented classifier):
`bacc/aug+<remedy>`, `macro_f1/aug+<remedy>`. Every run of one classifier seed pairs with the others
of that seed in the tables' significance tests.

The no-augmentation and remedy classifiers do not depend on the method, so they are trained once
per (dataset, eval split, protocol, classifier seeds) and shared by that dataset's cells
(bench.classify.baseline_store, under `cell.shared`), each unit recomputed whenever what it was trained
on differs; the time they take shows as the stage `evaluate/downstream/baselines` (near zero when
reused). Per-seed scores, per-class recalls and training histories go to `<cell>/downstream.json`.

Every run (a run name and a classifier seed) is an independent task, so a cell launched on several
processes shares them among its ranks (bench.runtime.distributed.spread): each rank trains its
share on its own device, the scores are gathered to every rank, and the results are those of one
process, since every run depends on its seed alone. A run that retrains another's head (cRT) goes
in that run's task. The no-augmentation weights the store keeps are written by the rank that trained
them and moved into the store by rank 0, which writes every file.
Defaults are sized for 32x32 images on a CPU (small_cnn); gin/presets/downstream_paper.gin sets the
paper's ResNet-50 protocol.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from bench import registry
from bench.config.checks import is_int
from bench.errors import BenchError
from bench.evaluator import Evaluator
from bench.evaluators.cond_accuracy import per_class_recall
from bench.classify.baseline_store import BaselineStore, save_weights
from bench.classify.fit import (
    Protocol, balanced_accuracy, build_classifier, concat_rows, fit, macro_f1, plain, predict, retrain_head,
    selection_splits,
)
from bench.registry import register_evaluator
from bench.runtime import distributed
from bench.store.artifacts import write_json_atomic
from bench.store.filelock import building
from bench.store.fingerprint import split_fingerprint

log = logging.getLogger(__name__)
NO_AUG = "/no_aug"
AUG = "aug"
REMEDIES = ("reweight", "resample", "focal", "ldam_drw", "crt")
WITH_AUGMENTATION = ("reweight", "crt")
STORED = "stored no_aug"  # the task that retrains heads on the stored no-augmentation classifier
PARTS = "downstream.parts"  # in the cell folder: no-aug weights each rank leaves for the store
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
    spreads_over_ranks = True  # its classifier runs are shared among a launched cell's ranks
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

    def describe(self) -> dict:
        """The protocol the classifiers were trained by (what a comparison's header states)."""
        return {"arch": self.arch, "n_seeds": self.n_seeds, **self.protocol.describe(),
                "remedies": list(self.remedies), "with_augmentation": list(self.with_augmentation)}

    def evaluate(self, cell) -> dict[str, float]:
        """Train the classifiers, score them on cell.test, write downstream.json.

        Launched on several processes, every rank calls this (`spreads_over_ranks`): the classifier
        runs are shared among the ranks (bench.runtime.distributed.spread), each on its own device,
        and every rank returns the metrics; rank 0 alone writes the files."""
        train, val = selection_splits(cell.dataset, cell.train)
        synth = cell.synthetic
        if tuple(synth.x.shape[1:]) != tuple(train.x.shape[1:]):
            raise BenchError(f"downstream: synthetic images have shape {tuple(synth.x.shape[1:])} but real "
                             f"ones {tuple(train.x.shape[1:])}; the synthetic set must be decoded to "
                             "data space")
        seeds = [classifier_seed(cell.seed, i) for i in range(self.n_seeds)]
        store = self._store(cell, train, val, seeds)
        with cell.timed("downstream/baselines"), _shared(store):
            runs, reused = self._baselines(cell, store, train, val, seeds)
        aug_x, aug_y = concat_rows([train.x, synth.x]), torch.cat([train.y, synth.y.long()])
        runs |= self._augmented(cell, aug_x, aug_y, val, seeds)
        distributed.on_main(lambda: write_json_atomic(cell.out_dir / "downstream.json", {
            "arch": self.arch, "protocol": self.protocol.describe(), "n_train": len(train),
            "n_synthetic": len(synth), "n_val": len(val), "n_test": len(cell.test), "runs": runs,
            "shared_from": str(store.folder) if store else None, "reused": reused}))
        cell.details["downstream"] = per_seed(runs) | {"predictions": predictions(runs, cell.test.y),
                                                       "protocol": self.describe()}
        return summarise(runs)

    # -- the runs ------------------------------------------------------------------------------
    def _baselines(self, cell, store, train, val, seeds: list[int]) -> tuple[dict, list[str]]:
        """The runs on real data alone: no augmentation and each remedy, from the store when it
        holds them for this basis (their names listed as reused), else trained and stored.

        One task per (run, seed); a remedy that retrains the no-augmentation classifier's head (cRT)
        runs in that classifier's task (or, when the store holds it, in a task that loads it)."""
        remedies = {name: self._remedy(name, train.y, cell.dataset.n_classes) for name in self.remedies}
        units = {"no_aug": {}, **{name: remedy.describe() for name, remedy in remedies.items()}}
        # rank 0 reads the store: every rank plans the same tasks, whatever another job writes meanwhile
        stored = distributed.on_main(lambda: {u: store.load(u, s) if store else None for u, s in units.items()})
        if stored["no_aug"] is not None and not all("pred" in r for r in stored["no_aug"]):
            stored["no_aug"] = None  # stored before predictions were kept: retrained to record them
        missing = [u for u in units if stored[u] is None]
        heads = {n: remedies[n] for n in missing if n != "no_aug" and remedies[n].retrains_head}
        bases = ["no_aug"] if "no_aug" in missing else [STORED] if heads else []
        fresh = [n for n in missing if n != "no_aug" and n not in heads]
        parts = cell.out_dir / PARTS

        def run(task: tuple[str, int]) -> dict:
            name, i = task
            if name in ("no_aug", STORED):
                return self._no_aug_and_heads(cell, store, train, val, seeds, i, heads, name == STORED, parts)
            return {name: self._train(cell, train.x, train.y, val, seeds[i], remedies[name])[0]}

        tasks = [(name, i) for name in (*bases, *fresh) for i in range(len(seeds))]
        trained = _by_run(missing, tasks, distributed.spread(tasks, run), len(seeds))
        runs = {u: trained[u] if stored[u] is None else stored[u] for u in units}
        if store and missing:
            distributed.on_main(lambda: self._save(store, units, missing, runs, parts))
        reused = [u for u in units if stored[u] is not None]
        if reused:
            log.info("downstream: %s classifiers reused from %s", ", ".join(reused), store.folder)
        return runs, reused

    def _no_aug_and_heads(self, cell, store, train, val, seeds: list[int], i: int, heads: dict,
                          from_store: bool, parts: Path) -> dict:
        """Seed i's no-augmentation run (trained; its weights left in `parts` for the store) and the
        remedies that retrain its head; `from_store`: only the latter, from the stored classifier
        (retrained when its weights are lost)."""
        seed, out = seeds[i], {}
        model = store.model("no_aug", {}, i, lambda: self._classifier(cell, train.x, seed)) if from_store else None
        if model is None:
            run, model = self._train(cell, train.x, train.y, val, seed, plain(self.protocol))
            if not from_store:
                out["no_aug"] = run
                if store:
                    save_weights(model, parts / f"no_aug_{i}.safetensors")
        return out | {name: self._apply(cell, remedy, train.x, train.y, val, seed, model)
                      for name, remedy in heads.items()}

    def _save(self, store, units: dict, missing: list[str], runs: dict, parts: Path) -> None:
        """Store the units trained here (rank 0, once every rank's runs are in); the no-augmentation
        unit with the weight files its ranks left in `parts`."""
        for unit in missing:
            models = [parts / f"no_aug_{i}.safetensors" for i in range(self.n_seeds)] if unit == "no_aug" else None
            store.save(unit, units[unit], runs[unit], models)
        shutil.rmtree(parts, ignore_errors=True)

    def _augmented(self, cell, x, y: torch.Tensor, val, seeds: list[int]) -> dict:
        """The runs on real plus synthetic data: plain, then each remedy on top of it (one task per
        run and seed; a remedy that retrains the head runs in the plain classifier's task)."""
        remedies = {r: self._remedy(r, y, cell.dataset.n_classes) for r in self.with_augmentation}
        heads = {name: remedy for name, remedy in remedies.items() if remedy.retrains_head}

        def run(task: tuple[str, int]) -> dict:
            name, i = task
            if name == AUG:
                result, model = self._train(cell, x, y, val, seeds[i], plain(self.protocol))
                return {AUG: result} | {combined(h): self._apply(cell, remedy, x, y, val, seeds[i], model)
                                        for h, remedy in heads.items()}
            return {combined(name): self._train(cell, x, y, val, seeds[i], remedies[name])[0]}

        tasks = [(name, i) for name in (AUG, *(r for r in remedies if r not in heads)) for i in range(len(seeds))]
        return _by_run([AUG, *map(combined, remedies)], tasks, distributed.spread(tasks, run), len(seeds))

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
        return build_classifier(self.arch, int(x.shape[1]), cell.dataset.n_classes, seed=seed).to(distributed.device())

    def _score(self, cell, model, seed: int, history) -> dict:
        n_classes = cell.dataset.n_classes
        truth, pred = cell.test.y.numpy(), predict(model, cell.test.x, self.protocol.batch_size)
        recall = per_class_recall(truth, pred, range(n_classes))
        return {"seed": seed, "bacc": balanced_accuracy(truth, pred), "macro_f1": macro_f1(truth, pred, n_classes),
                "recall": [recall.get(c) for c in range(n_classes)], "history": history.to_dict(),
                "pred": [int(p) for p in pred]}

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


def _shared(store):
    """The lock of the shared runs on real data while they are read or trained, so cells running
    side by side (bench.scale.pool) train them once: the second waits, then reuses them. A cell on
    several processes takes none (its ranks meet in collectives while training them)."""
    if store is None or distributed.world() > 1:
        return contextlib.nullcontext()
    return building(store.folder)


def _names(setting: str, names) -> tuple[str, ...]:
    """A list of remedy names, each known (one line with the known ones otherwise)."""
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise BenchError(f"downstream.{setting} must be a list of remedy names, e.g. ['reweight', 'crt'], "
                         f"got {names!r}")
    for name in names:
        registry.remedies.get(name)  # unknown: one line with a did-you-mean
    return tuple(dict.fromkeys(names))


def _by_run(names: list[str], tasks: list[tuple[str, int]], done: list[dict], n_seeds: int) -> dict:
    """{run name: its runs in seed order} of `names`, from each (name, seed index) task's {name: run}."""
    out = {name: [None] * n_seeds for name in names}
    for (_, i), result in zip(tasks, done):
        for name, run in result.items():
            out[name][i] = run
    return out


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


def predictions(runs: dict[str, list[dict]], labels: torch.Tensor) -> dict:
    """The test labels (test-set order) and, per classifier seed, the predicted class ids of the
    augmented (`aug`) and no-augmentation (`no_aug`) runs: what a test-image bootstrap recomputes
    bAcc and macro-F1 from. Ints only, a few thousand per cell on digits_lt."""
    return {"labels": [int(v) for v in labels.tolist()],
            **{name: [r["pred"] for r in runs[name]] for name in (AUG, "no_aug") if name in runs}}


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
