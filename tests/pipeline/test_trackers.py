"""Experiment trackers (bench.pipeline.tracking, `train.log_with`): what they are sent, and that
sending it changes nothing a run computes.

TensorBoard is exercised offline: a tiny synthetic2d cell writes its event files, read back with
TensorBoard's own EventAccumulator and compared with what bench computed (the loss trace, the
record, the files beside it). wandb and MLflow are not installed in the test environment; their
missing-package error is checked with the package lookup patched.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import bench.config.train as train_config
from bench.backbones.mlp import MLPBackbone
from bench.config.train import TrainConfig
from bench.errors import BenchError
from bench.method import Method, TrainBatch
from bench.pipeline import tracking
from bench.pipeline.assemble import CellSpec, RunRequest, build_cell
from bench.pipeline.trainer import EpochSampler, train

TB = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


# -- the trainer's side, with the accelerate end replaced by a recorder ------------------------------
class Recorder:
    """Stands in for accelerate's Accelerator: keeps what `log` was given, per step."""

    trackers = ()

    def __init__(self):
        self.logged: dict[int, dict] = {}

    def log(self, values: dict, step: int) -> None:
        self.logged.setdefault(step, {}).update(values)


def recording_tracker(cfg: TrainConfig, folder: Path) -> tracking.CellTracker:
    cell = SimpleNamespace(config=SimpleNamespace(train=cfg), spec=None)
    tracker = tracking.CellTracker(cell, folder)
    tracker.accelerator = Recorder()  # `start` hands this out instead of building one
    return tracker


def two_class_data(n=96):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    return torch.randn(n, 2, generator=g) * 0.1 + torch.stack([y * 4.0 - 2.0, torch.zeros(n)], 1), y


def fresh():
    torch.manual_seed(0)
    method = Method()
    method.setup(n_classes=2)
    return method, MLPBackbone((2,), method.vocab_size, method.n_tokens, hidden=16, depth=2)


def run(cfg: TrainConfig, tracker=None):
    x, y = two_class_data()
    method, model = fresh()
    result = train(method, model, x, y, cfg, seed=3, tracker=tracker)
    return result, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("grad_clip", [0.0, 1.0])
def test_each_logging_step_sends_its_loss_lr_and_grad_norm_and_nothing_changes(tmp_path, grad_clip):
    settings = dict(steps=12, batch_size=32, lr=1e-2, warmup_steps=8, log_every=1, sync_every=5)
    cfg = TrainConfig(**settings, grad_clip=grad_clip, log_with="tensorboard", track_every=4)
    tracker = recording_tracker(cfg, tmp_path)
    result, weights = run(cfg, tracker)
    plain_result, plain_weights = run(TrainConfig(**settings, grad_clip=grad_clip))

    logged = tracker.accelerator.logged
    assert sorted(logged) == [4, 8, 12]
    losses = dict(result.loss_trace)  # log_every=1: every step's own loss
    for step, values in logged.items():
        assert values["train/loss"] == losses[step]
        assert values["train/lr"] == pytest.approx(1e-2 * min(1.0, step / 8))  # the warm-up, step by step
        assert math.isfinite(values["train/grad_norm"]) and values["train/grad_norm"] > 0
        assert values["train/samples_per_second"] == pytest.approx(32 / values["train/step_seconds"])
    # tracking changed nothing: the same weights, losses and convergence verdict, bit for bit
    assert all(torch.equal(weights[k], plain_weights[k]) for k in weights)
    assert result.loss_trace == plain_result.loss_trace and result.convergence == plain_result.convergence


@pytest.mark.parametrize("grad_clip", [0.0, 1.0])
def test_the_logged_gradient_norm_is_that_of_the_steps_gradient(tmp_path, grad_clip):
    cfg = TrainConfig(steps=1, batch_size=32, grad_clip=grad_clip, log_with="tensorboard", track_every=1)
    tracker = recording_tracker(cfg, tmp_path)
    run(cfg, tracker)
    # the first step by hand: the draws in the trainer's order, the loss, its gradient's global norm
    x, y = two_class_data()
    method, model = fresh()
    g = torch.Generator().manual_seed(3)
    rows = EpochSampler(len(y), 32, g).next()
    eps, t = torch.randn((32, 2), generator=g), method.sample_time(32, g)
    cond = method.training_condition(y[rows], rows)
    method.loss(model, TrainBatch(x1=x[rows], cond=cond, eps=eps, t=t, generator=g)).backward()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert tracker.accelerator.logged[1]["train/grad_norm"] == pytest.approx(float(norm), rel=1e-5)


# -- settings, hashes, errors ------------------------------------------------------------------------
def test_log_with_takes_a_name_or_a_list_and_refuses_others():
    assert TrainConfig(log_with="tensorboard").log_with == ["tensorboard"]
    assert TrainConfig(log_with=["tensorboard"]).log_with == ["tensorboard"]
    assert TrainConfig().log_with is None  # off by default
    with pytest.raises(
        BenchError, match=r"train.log_with='comet': use None or any of tensorboard, wandb, mlflow"
    ):
        TrainConfig(log_with="comet")
    with pytest.raises(BenchError, match=r"train.track_every=0: use an integer >= 1"):
        TrainConfig(track_every=0)


@pytest.mark.parametrize("name", ["tensorboard", "wandb", "mlflow"])
def test_a_missing_tracker_package_names_the_extra(monkeypatch, name):
    monkeypatch.setattr(train_config, "tracker_installed", lambda package: package != name)
    expected = f"train.log_with='{name}' needs the {name} package: pip install 'medaug-bench[{name}]'"
    with pytest.raises(BenchError) as error:
        TrainConfig(log_with=["tensorboard", "wandb", "mlflow"])
    assert str(error.value).splitlines()[0] == expected


@pytest.mark.slow
def test_a_missing_tracker_is_refused_at_validation_before_anything_runs(monkeypatch, tmp_path, capsys):
    from bench.cli import main

    monkeypatch.setattr(train_config, "tracker_installed", lambda package: False)
    monkeypatch.chdir(tmp_path)
    code = main(["validate", "datasets=[synthetic2d]", "methods=[fm]", "train.log_with=wandb"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == (
        "bench: error: train.log_with='wandb' needs the wandb package: pip install 'medaug-bench[wandb]'"
    )
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_tracker_settings_enter_no_hash():
    spec = CellSpec("quick", "synthetic2d", "fm", 0)
    plain = build_cell(spec, RunRequest())
    tracked = build_cell(
        spec,
        RunRequest(
            bindings=[
                "train.log_with = ['tensorboard']",
                "train.track_every = 3",
                "train.track_images_every = 7",
            ]
        ),
    )
    assert tracked.config.train.log_with == ["tensorboard"] and tracked.config.train.track_every == 3
    assert tracked.config_hash == plain.config_hash
    assert tracked.stage_hashes == plain.stage_hashes


# -- the sample grid ---------------------------------------------------------------------------------
def test_the_mosaic_puts_each_class_on_its_own_row():
    labels = torch.tensor([0, 1, 1, 2, 0])
    images = torch.stack([torch.full((1, 4, 4), 0.2 * (k + 1)) for k in labels.tolist()])
    out = tracking.mosaic(images, labels, 3)
    scale = -(-tracking.MIN_TILE_PX // 4)
    assert out.dtype == np.uint8 and out.shape == (3 * 5 * scale + scale, 2 * 5 * scale + scale, 3)
    for k in range(3):  # the first tile of row k holds class k's grey level
        y0, x0 = (k * 5 + 1) * scale, scale
        assert (out[y0 : y0 + 4 * scale, x0 : x0 + 4 * scale] == round(0.2 * (k + 1) * 255)).all()
    assert (out[(2 * 5 + 1) * scale :, 6 * scale :] == 255).all()  # class 2 has one sample: blank after it


# -- a whole cell, TensorBoard read back -------------------------------------------------------------
TINY = [
    "train.steps = 20",
    "train.log_every = 1",
    "sample.nfe = 2",
    "sample.init_reference = False",
    "synthetic2d.n_max = 400",
    "synthetic2d.n_test_per_class = 10",
    "pipeline.evaluators = ['swd']",
    "source.max_per_class = 4",
]
TRACKED = ["train.log_with = 'tensorboard'", "train.track_every = 5", "train.track_images_every = 10"]


@pytest.fixture(scope="module")
def cells():
    """{"tracked" / "plain": (record, cell folder)} of the same tiny cell, with and without TensorBoard.
    (A folder of its own, not tmp_path_factory: that session fixture would mark every test using
    tmp_path here slow, tests/conftest.py.)"""
    from bench.pipeline.runner import run_cell

    with tempfile.TemporaryDirectory() as tmp:
        out = {}
        for name, extra in (("tracked", TRACKED), ("plain", [])):
            root = Path(tmp) / name
            cell = build_cell(CellSpec("quick", "synthetic2d", "fm", 0), RunRequest(bindings=TINY + extra))
            out[name] = (run_cell(cell, root), cell.spec.folder(root))
        yield out


def events(folder: Path):
    acc = TB.EventAccumulator(
        str(folder / "tracker" / "bench-quick"), size_guidance={"scalars": 0, "images": 0, "tensors": 0}
    )
    acc.Reload()
    return acc


@pytest.mark.slow
def test_a_tracked_cell_trains_and_scores_exactly_as_an_untracked_one(cells):
    (tracked, folder), (plain, plain_folder) = cells["tracked"], cells["plain"]
    assert (folder / "tracker").is_dir() and not (plain_folder / "tracker").exists()
    assert tracked["config_hash"] == plain["config_hash"]
    assert tracked["stage_hashes"] == plain["stage_hashes"]
    assert tracked["metrics"] == plain["metrics"]
    assert tracked["train"]["loss_trace"] == plain["train"]["loss_trace"]
    weights, plain_weights = (
        load_file(str(f / "backbone" / "model.safetensors")) for f in (folder, plain_folder)
    )
    assert all(torch.equal(weights[k], plain_weights[k]) for k in weights)


@pytest.mark.slow
def test_tensorboard_holds_the_scalars_the_grids_the_config_and_the_record(cells):
    record, folder = cells["tracked"]
    acc = events(folder)
    losses = dict(record["train"]["loss_trace"])  # log_every=1: each step's loss
    scalars = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    assert sorted(scalars["train/loss"]) == [5, 10, 15, 20]
    for step, value in scalars["train/loss"].items():
        assert value == pytest.approx(losses[step], rel=1e-7)  # stored as float32, which it was
    for tag in ("train/lr", "train/grad_norm", "train/step_seconds", "train/samples_per_second"):
        assert sorted(scalars[tag]) == [5, 10, 15, 20] and all(v > 0 for v in scalars[tag].values())
    assert [(i.step, i.width, i.height) for i in acc.Images("samples")] == [(10, 400, 320), (20, 400, 320)]
    # at the end: every finite metric of the record, and its two files as text
    for name, value in record["metrics"].items():
        assert scalars[f"record/{name}"] == {20: pytest.approx(value, rel=1e-6)}
    for name in ("operative_config.gin", "record.json"):
        (event,) = acc.Tensors(f"{name}/text_summary")
        text = event.tensor_proto.string_val[0].decode()
        assert text.replace("\n    ", "\n").strip() == (folder / name).read_text().strip()
    assert json.loads((folder / "record.json").read_text())["metrics"] == record["metrics"]
    (hparams,) = (folder / "tracker" / "bench-quick").glob("*/hparams.yml")
    assert (
        "train.steps: 20" in hparams.read_text()
        and "train.log_with: '[\"tensorboard\"]'" in hparams.read_text()
    )
