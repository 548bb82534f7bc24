"""Fault injection: every artifact a run leaves on disk, damaged three ways, heals on the rerun.

A finished run's folders are caches of its stages. For each artifact kind (latent cache, prior,
backbone, training checkpoint, synthetic samples, record, grid.json, cell lock) the damage is a
truncated file, valid JSON of the wrong type, and content of the wrong shape or with NaN. The
rerun must exit 0 without a traceback and write a record whose metrics equal the undisturbed
run's, bit for bit (CPU training is deterministic): a damaged artifact is discarded and rebuilt,
never trusted and never a dead end that fails every rerun the same way.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import bench.pipeline.runner
import gin
from bench.cli import main

RUN = (
    "run",
    "datasets=[synthetic2d]",
    "methods=[cpd]",
    "train.steps=4",
    "train.checkpoint_every=2",
    "sample.nfe=2",
    "sample.init_reference=False",
    "sample.keep_paths=0",
    "synthetic2d.n_max=400",
    "synthetic2d.n_test_per_class=10",
    "pipeline.evaluators=[swd]",
)
CELL = Path("quick/synthetic2d/cpd/seed0")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished run's results folder, its last training checkpoint kept (the runner normally
    deletes checkpoints once the backbone is saved) so that checkpoints can be damaged too."""
    res = tmp_path_factory.mktemp("finished") / "res"
    with pytest.MonkeyPatch.context() as mp:
        keep = bench.pipeline.runner.discard
        mp.setattr(
            bench.pipeline.runner, "discard", lambda p: None if Path(p).name == "checkpoints" else keep(p)
        )
        assert main([*RUN, f"results_dir={res}"]) == 0
    gin.clear_config()
    assert list((res / CELL / "checkpoints").glob("step_*")), "the fixture needs a checkpoint"
    return res


def _one(res: Path, pattern: str) -> Path:
    found = sorted(res.glob(pattern))
    assert found, pattern
    return found[-1]


# -- ways to damage a file -------------------------------------------------------------------
def truncate(pattern: str) -> Callable[[Path], None]:
    def damage(res: Path) -> None:
        path = _one(res, pattern)
        path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])

    return damage


def empty(pattern: str) -> Callable[[Path], None]:
    return lambda res: _one(res, pattern).write_bytes(b"")


def json_of(pattern: str, value) -> Callable[[Path], None]:
    """Replace a JSON file with valid JSON of another type or shape."""
    return lambda res: _one(res, pattern).write_text(json.dumps(value))


def edit_json(pattern: str, edit: Callable[[object], object]) -> Callable[[Path], None]:
    def damage(res: Path) -> None:
        path = _one(res, pattern)
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))

    return damage


def edit_tensors(pattern: str, edit: Callable[[dict], dict]) -> Callable[[Path], None]:
    """Rewrite a safetensors file with `edit` applied (same file name, manifest untouched)."""

    def damage(res: Path) -> None:
        path = _one(res, pattern)
        save_file({k: v.contiguous() for k, v in edit(load_file(str(path))).items()}, str(path))

    return damage


def nan_first(tensors: dict) -> dict:
    """A NaN in the first floating tensor."""
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    bad = tensors[name].clone()
    bad.view(-1)[0] = float("nan")
    return {**tensors, name: bad}


def wider(name: str) -> Callable[[dict], dict]:
    """Tensor `name` with one more column (a latent or weight of another width)."""

    def edit(tensors: dict) -> dict:
        t = tensors[name]
        return {**tensors, name: torch.cat([t, t[..., :1]], dim=-1)}

    return edit


def fewer_rows(name: str) -> Callable[[dict], dict]:
    return lambda tensors: {**tensors, name: tensors[name][:-1]}


def latents_edit(edit: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def damage(res: Path) -> None:
        path = _one(res, "cache/latents/*/latents.npy")
        z = np.load(path)
        np.save(path, edit(z))

    return damage


def with_nan(z: np.ndarray) -> np.ndarray:
    z = z.copy()
    z[3, 0] = np.nan
    return z


def drop(*rels: str) -> Callable[[Path], None]:
    def damage(res: Path) -> None:
        for rel in rels:
            path = res / rel
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)

    return damage


RECORD, BACKBONE = f"{CELL}/record.json", f"{CELL}/backbone"
CHECKPOINT = f"{CELL}/checkpoints/step_*"
# (id, damage, what else is removed so that the damaged artifact is read by the rerun)
FAULTS = [
    ("latents-truncated", truncate("cache/latents/*/latents.npy"), [RECORD]),
    ("latents-manifest-a-list", json_of("cache/latents/*/manifest.json", [1, 2]), [RECORD]),
    ("latents-nan", latents_edit(with_nan), [RECORD]),
    ("latents-wrong-width", latents_edit(lambda z: np.concatenate([z, z[:, :1]], axis=1)), [RECORD]),
    ("prior-truncated", truncate(f"{CELL}/prior/prior.safetensors"), [RECORD]),
    ("prior-json-a-list", json_of(f"{CELL}/prior/prior.json", [1]), [RECORD]),
    ("prior-nan", edit_tensors(f"{CELL}/prior/prior.safetensors", nan_first), [RECORD]),
    (
        "prior-wrong-shape",
        edit_tensors(f"{CELL}/prior/prior.safetensors", fewer_rows("class_mean")),
        [RECORD],
    ),
    ("backbone-truncated", truncate(f"{BACKBONE}/*.safetensors"), [RECORD]),
    ("backbone-config-a-list", json_of(f"{BACKBONE}/config.json", [1]), [RECORD]),
    ("backbone-manifest-a-string", json_of(f"{BACKBONE}/manifest.json", "ok"), [RECORD]),
    ("backbone-nan", edit_tensors(f"{BACKBONE}/*.safetensors", nan_first), [RECORD]),
    ("checkpoint-truncated", truncate(f"{CHECKPOINT}/model.safetensors"), [RECORD, BACKBONE]),
    ("checkpoint-state-a-list", json_of(f"{CHECKPOINT}/trainer_state.json", [1]), [RECORD, BACKBONE]),
    (
        "checkpoint-state-missing-key",
        edit_json(
            f"{CHECKPOINT}/trainer_state.json",
            lambda s: {"state": {k: v for k, v in s["state"].items() if k != "optimizer"}},
        ),
        [RECORD, BACKBONE],
    ),
    ("checkpoint-nan", edit_tensors(f"{CHECKPOINT}/model.safetensors", nan_first), [RECORD, BACKBONE]),
    ("samples-truncated", truncate(f"{CELL}/samples/samples.safetensors"), [RECORD]),
    ("samples-manifest-a-string", json_of(f"{CELL}/samples/manifest.json", "x"), [RECORD]),
    (
        "samples-nan",
        edit_tensors(
            f"{CELL}/samples/samples.safetensors", lambda t: {**t, "z": nan_first({"z": t["z"]})["z"]}
        ),
        [RECORD],
    ),
    ("samples-wrong-shape", edit_tensors(f"{CELL}/samples/samples.safetensors", fewer_rows("z")), [RECORD]),
    ("record-truncated", truncate(RECORD), []),
    ("record-a-list", json_of(RECORD, [1, 2]), []),
    ("record-metrics-a-string", edit_json(RECORD, lambda r: {**r, "metrics": "good"}), []),
    ("grid-truncated", truncate("quick/grid.json"), [RECORD]),
    ("grid-a-list", json_of("quick/grid.json", [1]), [RECORD]),
    (
        "grid-wrong-shape",
        edit_json("quick/grid.json", lambda g: {**g, "methods": "cpd", "cells": [1]}),
        [RECORD],
    ),
    ("lock-empty", lambda res: (res / CELL / ".lock").write_bytes(b""), [RECORD]),
    ("lock-a-list", lambda res: (res / CELL / ".lock").write_text("[1]"), [RECORD]),
    ("lock-garbage", lambda res: (res / CELL / ".lock").write_bytes(b"\x00\xffgarbage"), [RECORD]),
    ("lock-no-pid", lambda res: (res / CELL / ".lock").write_text('{"host": "elsewhere"}'), [RECORD]),
]


def same(a: dict, b: dict) -> bool:
    """Equal metrics, NaN equal to NaN (as JSON writes them)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.parametrize("damage,removed", [pytest.param(d, r, id=i) for i, d, r in FAULTS])
@pytest.mark.slow
def test_a_damaged_artifact_heals_and_the_rerun_equals_an_undisturbed_run(
    finished, tmp_path, damage, removed, capsys
):
    res = tmp_path / "res"
    shutil.copytree(finished, res, symlinks=True)
    undisturbed = json.loads((res / RECORD).read_text())
    damage(res)
    drop(*removed)(res)
    code = main([*RUN, f"results_dir={res}"])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err, err
    record = json.loads((res / RECORD).read_text())
    assert record["status"] == "ok"
    assert same(record["metrics"], undisturbed["metrics"]), (record["metrics"], undisturbed["metrics"])
    grid = json.loads((res / "quick" / "grid.json").read_text())
    assert grid["cells"] == {"synthetic2d/cpd/seed0": undisturbed["config_hash"]}
    assert not (res / CELL / ".lock").exists()
