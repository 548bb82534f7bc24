"""Classifier runs shared by every cell of a dataset: the no-augmentation classifiers and the
long-tail remedies trained on the real data alone (bench.classify.baselines, for the
downstream evaluator).

They depend on the dataset, its splits, the classifier protocol and the classifier seeds, never on
the generative method, so each is trained once per dataset (and generative seed's classifier
seeds) and reused by every method's cell. One folder per unit (`no_aug`, `reweight`, ...) under the
dataset's shared folder, each a complete stage (bench.store.artifacts) whose key hashes what its
runs depend on: the shared basis (architecture, protocol, seeds, data fingerprints) plus the
unit's own settings. A unit stored for another basis is replaced, never reused, so a stale
baseline is never paired with new augmented runs. The no-augmentation unit also keeps each
classifier's weights (safetensors), so a remedy that starts from it (cRT) can be added later
without retraining it. On several processes each weight file is written by the rank that trained
the classifier (`save_weights`, into the cell's own folder) and moved into the unit by rank 0,
which writes the unit once every rank's runs are in (bench.classify.baselines).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bench.store.artifacts import is_complete, stage_dir, write_json_atomic

log = logging.getLogger(__name__)
RUNS = "runs.json"


class BaselineStore:
    """The shared units of one dataset under `folder`, keyed by `key` and `basis`."""

    def __init__(self, folder: Path, key: str, basis: dict):
        self.folder, self.key, self.basis = Path(folder), key, basis

    def unit_key(self, unit: str, settings: dict) -> str:
        """The stage key of a unit: the dataset key and a digest of the basis and the unit's settings."""
        text = json.dumps({**self.basis, "unit": unit, "settings": settings}, sort_keys=True)
        return f"{self.key}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"

    def load(self, unit: str, settings: dict) -> list[dict] | None:
        """The stored runs of `unit` for these settings, or None (missing, incomplete or stale)."""
        folder = self.folder / unit
        if not is_complete(folder, self.unit_key(unit, settings)):
            return None
        try:
            runs = json.loads((folder / RUNS).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("downstream: %s is unreadable (%s); retrained", folder / RUNS, exc)
            return None
        return runs if isinstance(runs, list) else None

    def save(
        self, unit: str, settings: dict, runs: list[dict], models: list[torch.nn.Module | Path] | None = None
    ) -> None:
        """Store `unit`'s runs and its classifiers' weights (each a model, or a file `save_weights`
        wrote, moved in) as one complete stage."""
        with stage_dir(
            self.folder / unit, self.unit_key(unit, settings), basis=self.basis, settings=settings
        ) as tmp:
            write_json_atomic(tmp / RUNS, runs)
            for i, model in enumerate(models or []):
                target = tmp / f"model_{i}.safetensors"
                if isinstance(model, torch.nn.Module):
                    save_weights(model, target)
                else:
                    shutil.move(str(model), str(target))  # a rename on one file system

    def model(self, unit: str, settings: dict, i: int, build: Callable[[], torch.nn.Module]):
        """The i-th stored classifier of `unit` (`build()` makes it, the weights are loaded into it),
        or None when the unit or its weight file is missing or does not fit."""
        folder = self.folder / unit
        if not is_complete(folder, self.unit_key(unit, settings)):
            return None
        model = build()
        try:
            model.load_state_dict(load_file(str(folder / f"model_{i}.safetensors")))
        except Exception as exc:  # missing file, wrong shapes, damaged safetensors alike
            log.warning("downstream: %s classifier %d unusable (%s); retrained", unit, i, exc)
            return None
        return model


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """A classifier's weights as safetensors at `path`, written under another name and renamed, so a
    reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)
