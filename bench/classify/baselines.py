"""The downstream runs on real data alone: no augmentation and each remedy, shared by a dataset's cells.

They do not depend on the generative method, so when the cell names a shared folder they are read
from the baseline store (bench.classify.baseline_store) when it holds them for this basis (the
architecture, protocol, classifier seeds and the data of the train, val and test splits), else
trained here and stored. A no-augmentation unit stored before predictions were kept is retrained.

One task per (run, classifier seed), shared among a launched cell's ranks; a remedy that retrains
the no-augmentation classifier's head (cRT) runs in that classifier's task, or, when the store
holds it, in a task that loads it (retrained when its weights are lost). The no-augmentation
weights the store keeps are left in the cell's `PARTS` folder by the rank that trained them and
moved into the store by rank 0, which writes every file once every rank's runs are in.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path

from bench.classify.baseline_store import BaselineStore, save_weights
from bench.classify.fit import Protocol, plain
from bench.classify.run_trainer import RunTrainer
from bench.classify.runs import NO_AUG, by_run, set_up_remedy, tasks
from bench.dataset import Split
from bench.runtime import distributed
from bench.store.filelock import building
from bench.store.fingerprint import split_fingerprint

log = logging.getLogger(__name__)
STORED = "stored no_aug"  # the task that retrains heads on the stored no-augmentation classifier
PARTS = "downstream.parts"  # in the cell folder: no-aug weights each rank leaves for the store


def baseline_store(
    shared: tuple | None, arch: str, protocol: Protocol, seeds: list[int], splits: dict[str, Split]
) -> BaselineStore | None:
    """Where a dataset's runs on real data are shared (`shared`: the cell's (folder, key); None:
    trained in every cell), for the basis they depend on: `splits` are the train, val and test ones."""
    if shared is None:
        return None
    folder, key = shared
    basis = {
        "arch": arch,
        "protocol": protocol.describe(),
        "seeds": seeds,
        "data": {name: split_fingerprint(split) for name, split in splits.items()},
    }
    return BaselineStore(folder, key, basis)


def shared_lock(store: BaselineStore | None):
    """The lock of the shared runs on real data while they are read or trained, so cells running
    side by side (bench.scale.pool) train them once: the second waits, then reuses them. A cell on
    several processes takes none (its ranks meet in collectives while training them)."""
    if store is None or distributed.world() > 1:
        return contextlib.nullcontext()
    return building(store.folder)


def baseline_runs(
    trainer: RunTrainer,
    store: BaselineStore | None,
    train: Split,
    val: Split,
    seeds: list[int],
    remedies: tuple[str, ...],
    cell_dir: Path,
) -> tuple[dict, list[str]]:
    """{run name: its runs in seed order} of no_aug and each of `remedies` on the real data, and the
    names of those the store held (reused)."""
    set_up = {name: set_up_remedy(name, train.y, trainer.n_classes) for name in remedies}
    units = {NO_AUG: {}, **{name: remedy.describe() for name, remedy in set_up.items()}}
    stored = _stored(store, units)
    missing = [u for u in units if stored[u] is None]
    heads = {n: set_up[n] for n in missing if n != NO_AUG and set_up[n].retrains_head}
    bases = [NO_AUG] if NO_AUG in missing else [STORED] if heads else []
    fresh = [n for n in missing if n != NO_AUG and n not in heads]
    parts = cell_dir / PARTS

    def run(task: tuple[str, int]) -> dict:
        name, i = task
        if name in (NO_AUG, STORED):
            return _no_aug_and_heads(trainer, store, train, val, seeds, i, heads, name == STORED, parts)
        return {name: trainer.train(train.x, train.y, val, seeds[i], set_up[name])[0]}

    todo = tasks((*bases, *fresh), len(seeds))
    trained = by_run(missing, todo, distributed.spread(todo, run), len(seeds))
    runs = {u: trained[u] if stored[u] is None else stored[u] for u in units}
    if store and missing:
        distributed.on_main(lambda: _save(store, units, missing, runs, parts, len(seeds)))
    reused = [u for u in units if stored[u] is not None]
    if reused:
        log.info("downstream: %s classifiers reused from %s", ", ".join(reused), store.folder)
    return runs, reused


def _stored(store: BaselineStore | None, units: dict) -> dict:
    """{unit: its stored runs, or None}; rank 0 reads the store, so every rank plans the same tasks
    whatever another job writes meanwhile. A no-augmentation unit without predictions is None."""
    stored = distributed.on_main(lambda: {u: store.load(u, s) if store else None for u, s in units.items()})
    if stored[NO_AUG] is not None and not all("pred" in r for r in stored[NO_AUG]):
        stored[NO_AUG] = None  # stored before predictions were kept: retrained to record them
    return stored


def _no_aug_and_heads(
    trainer: RunTrainer,
    store: BaselineStore | None,
    train: Split,
    val: Split,
    seeds: list[int],
    i: int,
    heads: dict,
    from_store: bool,
    parts: Path,
) -> dict:
    """Seed i's no-augmentation run (trained; its weights left in `parts` for the store) and the
    remedies that retrain its head; `from_store`: only the latter, from the stored classifier
    (retrained when its weights are lost)."""
    seed, out = seeds[i], {}
    model = store.model(NO_AUG, {}, i, lambda: trainer.classifier(train.x, seed)) if from_store else None
    if model is None:
        run, model = trainer.train(train.x, train.y, val, seed, plain(trainer.protocol))
        if not from_store:
            out[NO_AUG] = run
            if store:
                save_weights(model, parts / f"{NO_AUG}_{i}.safetensors")
    return out | {
        name: trainer.apply(remedy, train.x, train.y, val, seed, model) for name, remedy in heads.items()
    }


def _save(
    store: BaselineStore, units: dict, missing: list[str], runs: dict, parts: Path, n_seeds: int
) -> None:
    """Store the units trained here (rank 0, once every rank's runs are in); the no-augmentation
    unit with the weight files its ranks left in `parts`."""
    for unit in missing:
        models = [parts / f"{NO_AUG}_{i}.safetensors" for i in range(n_seeds)] if unit == NO_AUG else None
        store.save(unit, units[unit], runs[unit], models)
    shutil.rmtree(parts, ignore_errors=True)
