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
`bacc/aug+<remedy>`, `macro_f1/aug+<remedy>`. A classical image augmentation named in `remedies`
(MixUp, CutMix, TrivialAugment, balanced MixUp: `Remedy.image_augmentation`) also runs on top of
augmentation unless `combine_augmentations=False`, so `remedies=[mixup]` gives `bacc/mixup` and
`bacc/aug+mixup`: whether generative augmentation beats MixUp and whether the two add up. Every
run of one classifier seed pairs with the others of that seed in the tables' significance tests.

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

This plugin states the protocol and its metrics; the machinery is bench.classify's: the plan of
runs and their seeds (`runs`), one run trained and scored (`run_trainer`), the runs on real data
(`baselines`) and with the synthetic set (`augmented`), and their summary (`scores`).
"""

from __future__ import annotations

import torch

from bench import registry
from bench.classify.augmented import augmented_runs
from bench.classify.baselines import baseline_runs, baseline_store, shared_lock
from bench.classify.fit import Protocol, concat_rows, selection_splits
from bench.classify.run_trainer import RunTrainer
from bench.classify.runs import (
    REMEDIES,
    WITH_AUGMENTATION,
    classifier_seeds,
    combined,
    on_augmentation,
    remedy_names,
)
from bench.classify.scores import per_seed, predictions, summarise
from bench.config.checks import is_int
from bench.config.extras import require_network
from bench.errors import BenchError
from bench.evaluator import Evaluator, Metric, directions
from bench.evaluators.cond_accuracy import per_class_recall
from bench.registry import register_evaluator
from bench.runtime import distributed
from bench.store.artifacts import write_json_atomic

NO_AUG = "/no_aug"
# bacc and macro_f1 also come per run on real data alone and with remedies: `<metric>/no_aug`,
# `<metric>/<remedy>`, `<metric>/aug+<remedy>` (breakdowns: their declaration covers them)
SCORES = (
    Metric("bacc", "bAcc", True, headline=True, rank=90),
    Metric("macro_f1", "macro-F1", True, headline=True, rank=100),
)
METRICS = (
    *SCORES,
    Metric("bacc_gain", "bAcc gain", True, headline=True, rank=110),
    Metric("bacc_std", "bAcc std", False),
    Metric("macro_f1_std", "macro-F1 std", False),
)


@register_evaluator("downstream")
class Downstream(Evaluator):
    """Balanced accuracy and macro-F1 on real test data: no augmentation, the remedies, with the
    synthetic set, and the synthetic set with remedies."""

    applies_to = ("image",)
    spreads_over_ranks = True  # its classifier runs are shared among a launched cell's ranks
    version = 2  # 2: the long-tail remedies and their combinations with augmentation
    metrics = METRICS

    def __init__(
        self,
        arch: str = "small_cnn",
        n_seeds: int = 3,
        lr: float = 1e-3,
        batch_size: int = 64,
        max_epochs: int = 15,
        patience: int = 4,
        weight_decay: float = 0.0,
        class_balanced_sampling: bool = False,
        remedies=REMEDIES,
        with_augmentation=WITH_AUGMENTATION,
        combine_augmentations: bool = True,
    ):
        if not is_int(n_seeds) or n_seeds < 1:
            raise BenchError(f"downstream.n_seeds must be an integer >= 1, got {n_seeds!r}")
        require_network(arch, "downstream.arch")  # MONAI's ResNet-50 / DenseNet-121: the `paper` extra
        self.arch, self.n_seeds = arch, n_seeds
        self.protocol = Protocol(
            lr, batch_size, max_epochs, patience, weight_decay, class_balanced_sampling
        ).check("downstream")
        self.remedies = remedy_names("downstream", "remedies", remedies)
        if not isinstance(combine_augmentations, bool):
            raise BenchError(
                f"downstream.combine_augmentations must be True or False, got {combine_augmentations!r}"
            )
        self.with_augmentation = on_augmentation(
            remedy_names("downstream", "with_augmentation", with_augmentation),
            self.remedies,
            combine_augmentations,
        )
        for name in {*self.remedies, *self.with_augmentation}:
            registry.remedies.get(name)().check(self.protocol)
        runs = [f"/{r}" for r in self.remedies] + [f"/{combined(r)}" for r in self.with_augmentation]
        self.higher_is_better = {
            **directions(SCORES),
            **directions(SCORES, [NO_AUG]),
            **directions(METRICS[2:]),
            **directions(SCORES, runs),
        }

    def describe(self) -> dict:
        """The protocol the classifiers were trained by (what a comparison's header states)."""
        return {
            "arch": self.arch,
            "n_seeds": self.n_seeds,
            **self.protocol.describe(),
            "remedies": list(self.remedies),
            "with_augmentation": list(self.with_augmentation),
        }

    def evaluate(self, cell) -> dict[str, float]:
        """Train the classifiers, score them on cell.test, write downstream.json.

        Launched on several processes, every rank calls this (`spreads_over_ranks`): the classifier
        runs are shared among the ranks (bench.runtime.distributed.spread), each on its own device,
        and every rank returns the metrics; rank 0 alone writes the files."""
        train, val = selection_splits(cell.dataset, cell.train)
        synth = cell.synthetic
        if tuple(synth.x.shape[1:]) != tuple(train.x.shape[1:]):
            raise BenchError(
                f"downstream: synthetic images have shape {tuple(synth.x.shape[1:])} but real "
                f"ones {tuple(train.x.shape[1:])}; the synthetic set must be decoded to "
                "data space"
            )
        seeds = classifier_seeds(cell.seed, self.n_seeds)
        trainer = RunTrainer(self.arch, self.protocol, cell.dataset.n_classes, cell.test, per_class_recall)
        store = baseline_store(
            cell.shared, self.arch, self.protocol, seeds, {"train": train, "val": val, "test": cell.test}
        )
        with cell.timed("downstream/baselines"), shared_lock(store):
            runs, reused = baseline_runs(trainer, store, train, val, seeds, self.remedies, cell.out_dir)
        aug_x, aug_y = concat_rows([train.x, synth.x]), torch.cat([train.y, synth.y.long()])
        runs |= augmented_runs(trainer, aug_x, aug_y, val, seeds, self.with_augmentation)
        distributed.on_main(
            lambda: write_json_atomic(
                cell.out_dir / "downstream.json",
                {
                    "arch": self.arch,
                    "protocol": self.protocol.describe(),
                    "n_train": len(train),
                    "n_synthetic": len(synth),
                    "n_val": len(val),
                    "n_test": len(cell.test),
                    "runs": runs,
                    "shared_from": str(store.folder) if store else None,
                    "reused": reused,
                },
            )
        )
        cell.details["downstream"] = per_seed(runs) | {
            "predictions": predictions(runs, cell.test.y),
            "protocol": self.describe(),
        }
        return summarise(runs)
