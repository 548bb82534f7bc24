"""The plan of the downstream protocol's classifier runs: which runs, their names and their seeds.

A cell's runs (evaluators/downstream.py): `no_aug` (the real training split alone), each remedy on
the real data (`reweight`, `crt`, ...), `aug` (real plus synthetic data) and each remedy on top of
augmentation (`aug+<remedy>`). Every run is trained once per classifier seed; seed i of a cell is
a hash of (cell seed, i), so the runs of one seed pair with each other across runs and cells.

Every (run, seed index) is an independent task, so a cell on several processes shares them among
its ranks (bench.runtime.distributed.spread); `by_run` puts the tasks' results back in seed order.
"""

from __future__ import annotations

import numpy as np
import torch

from bench import registry
from bench.errors import BenchError
from bench.remedy import Remedy

NO_AUG = "no_aug"  # the run on the real training split alone
AUG = "aug"  # the run on real plus synthetic data
REMEDIES = ("reweight", "resample", "focal", "ldam_drw", "crt")  # the default remedies on real data
WITH_AUGMENTATION = ("reweight", "crt")  # the default remedies on top of augmentation

Task = tuple[str, int]  # (run name, classifier seed index)


def classifier_seed(cell_seed: int, i: int) -> int:
    """Seed of the i-th downstream classifier of a generative seed (stable across runs)."""
    return int(np.random.SeedSequence([cell_seed, i]).generate_state(1)[0])


def classifier_seeds(cell_seed: int, n_seeds: int) -> list[int]:
    """The seeds of a cell's `n_seeds` classifiers, shared by all its runs."""
    return [classifier_seed(cell_seed, i) for i in range(n_seeds)]


def combined(remedy: str) -> str:
    """The run name of a remedy on top of augmentation: `aug+<remedy>`."""
    return f"{AUG}+{remedy}"


def remedy_names(owner: str, setting: str, names) -> tuple[str, ...]:
    """A list of remedy names, each known, duplicates dropped (one line naming `owner.setting`
    otherwise, or the registry's did-you-mean for an unknown name)."""
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise BenchError(
            f"{owner}.{setting} must be a list of remedy names, e.g. ['reweight', 'crt'], got {names!r}"
        )
    for name in names:
        registry.remedies.get(name)  # unknown: one line with a did-you-mean
    return tuple(dict.fromkeys(names))


def on_augmentation(with_augmentation: tuple, remedies: tuple, combine_augmentations: bool) -> tuple:
    """The remedies run on top of augmentation: `with_augmentation`, then (with
    `combine_augmentations`) every classical image augmentation among `remedies` not yet in it
    (`Remedy.image_augmentation`): asking for MixUp on the real data asks whether generative
    augmentation beats it and whether the two add up, which needs both runs."""
    extra = (r for r in remedies if combine_augmentations and registry.remedies.get(r).image_augmentation)
    return tuple(dict.fromkeys((*with_augmentation, *extra)))


def set_up_remedy(name: str, y: torch.Tensor, n_classes: int) -> Remedy:
    """The remedy `name` as configured, set up with the class counts of the labels `y` it trains on."""
    remedy = registry.remedies.get(name)()
    remedy.setup(np.bincount(y.numpy(), minlength=n_classes))
    return remedy


def tasks(names, n_seeds: int) -> list[Task]:
    """One task per run name and seed index, run by run."""
    return [(name, i) for name in names for i in range(n_seeds)]


def by_run(names: list[str], done_tasks: list[Task], results: list[dict], n_seeds: int) -> dict:
    """{run name: its runs in seed order} of `names`, from each (name, seed index) task's {name: run}
    (a task may return several runs of its seed: a run and the heads retrained on it)."""
    out = {name: [None] * n_seeds for name in names}
    for (_, i), result in zip(done_tasks, results):
        for name, run in result.items():
            out[name][i] = run
    return out
