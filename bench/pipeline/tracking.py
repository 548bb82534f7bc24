"""Experiment trackers (TensorBoard, Weights & Biases, MLflow) through accelerate's tracking API.

`train.log_with` names them (off by default). The main process alone logs, into `<cell>/tracker/`
(TensorBoard's event files, wandb's local files): every `train.track_every` steps the step's loss,
learning rate and gradient norm with the step time and samples per second; every
`train.track_images_every` steps a small sample grid (`preview`); at the end of the cell its
settings' values (hparams at the start), the record's metrics, operative_config.gin and record.json.

Logging changes no result: the trainer reads the loss on the host only where it already does
(every `train.sync_every` steps; the tracker is handed those reads, so a step's logged loss is the
one the loss trace and convergence rule saw), keeps the logging steps' gradient norms on the
device until then, and samples the grids from seeded generators of their own with the RNG state
forked. The tracker settings feed no hash (bench.config.gin_config.NEVER_HASHED), so turning a
tracker on reuses every stored stage. docs/tracking.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from bench.pipeline.inference_precision import forward_precision, inference_scope
from bench.pipeline.sampler import generate
from bench.runtime import distributed

log = logging.getLogger(__name__)

FOLDER = "tracker"  # under the cell folder: TensorBoard's event files, wandb's local run
IMAGES_PER_CLASS = 4  # tiles per class row of an image grid
MIN_TILE_PX = 32  # small images (8x8 digits) are enlarged, by an integer factor, to at least this
POINTS_PER_CLASS = 64  # generated points per class of a vector scatter
REAL_POINTS = 2000  # training points drawn in grey behind a scatter, at most
FILES = ("operative_config.gin", "record.json")  # sent to the tracker when the cell ends


@dataclasses.dataclass
class Pending:
    """A logging step whose loss the host has not read yet: its learning rate and gradient norm."""

    step: int
    lr: float
    grad_norm: torch.Tensor | None  # on the device, unread


class CellTracker:
    """One cell's run in the trackers of `train.log_with`: started on first use, closed by `opened`.

    The trainer calls `step_done` for each logging step, `losses_read` after each read of the
    losses, `log_images` on the steps it samples a grid; the runner calls `finished` with the record.
    """

    def __init__(self, cell, folder: Path):
        self.cell, self.folder = cell, Path(folder)
        self.names = list(cell.config.train.log_with)
        self.accelerator = None
        self.pending: list[Pending] = []
        self.last_step = 0
        self._clock: tuple[float, int] | None = None  # (time, step) of the last read of the losses

    # -- the run ---------------------------------------------------------------------------
    def start(self):
        """The Accelerator holding the trackers, built and `init_trackers`-ed on first use."""
        if self.accelerator is None:
            from accelerate import Accelerator

            logs = self.folder / FOLDER
            logs.mkdir(parents=True, exist_ok=True)
            # no mixed_precision: the process's accelerate state is the trainer's (bench.pipeline.trainer)
            self.accelerator = Accelerator(
                cpu=not torch.cuda.is_available(), log_with=self.names, project_dir=str(logs)
            )
            spec = self.cell.spec
            self.accelerator.init_trackers(
                f"bench-{spec.experiment}",
                config=hparams(self.cell),
                init_kwargs={
                    "wandb": {"name": spec.label, "dir": str(logs), "group": spec.experiment},
                    "mlflow": {"run_name": spec.label},
                },
            )
        return self.accelerator

    def close(self) -> None:
        """Finish every tracker (closes TensorBoard's writer, ends the wandb / MLflow run).

        Not `Accelerator.end_training`: it also destroys the process group, which later cells of a
        multi-process grid still use."""
        if self.accelerator is not None:
            for tracker in self.accelerator.trackers:
                tracker.finish()
            self.accelerator = None

    # -- during training -------------------------------------------------------------------
    def begin(self, step: int) -> None:
        """Training starts (or resumes) at `step`: the trackers are started, the step clock set."""
        self.start()
        self._clock = (time.perf_counter(), step)

    def step_done(self, step: int, lr: float, grad_norm: torch.Tensor | None) -> None:
        """A logging step ran: keep what the host cannot read yet without waiting for the device."""
        self.pending.append(Pending(step, lr, grad_norm))

    def losses_read(self, step: int, history: list, batch: int) -> None:
        """The losses up to `step` were read (`history`: every step's loss, the last one `step`'s):
        log the pending steps with the time per step since the previous read."""
        now = time.perf_counter()
        since, first = self._clock or (now, step)
        seconds = (now - since) / max(step - first, 1)
        self._clock = (now, step)
        for entry in self.pending:
            values = {
                "train/loss": history[len(history) - 1 - (step - entry.step)],
                "train/lr": entry.lr,
                "train/step_seconds": seconds,
                "train/samples_per_second": batch / seconds if seconds > 0 else 0.0,
            }
            if entry.grad_norm is not None:
                values["train/grad_norm"] = float(entry.grad_norm)
            self.start().log(values, step=entry.step)
            self.last_step = entry.step
        self.pending.clear()

    def log_images(self, step: int, model, latents, labels) -> None:
        """A sample grid of the model as it is at `step`; the time it takes is left out of step time."""
        image = preview(self.cell, model, latents, labels)
        for tracker in self.start().trackers:
            _log_image(tracker, "samples", image, step)
        self.last_step = max(self.last_step, step)
        if self._clock is not None:
            self._clock = (time.perf_counter(), self._clock[1])

    # -- the end of the cell ---------------------------------------------------------------
    def finished(self, record: dict) -> dict:
        """Send the record's metrics, operative_config.gin and record.json; returns the record.

        The record is on disk by now: a tracker that fails here (a server gone) is a warning, not a
        failed cell."""
        try:
            self._send_record(record)
        except Exception as exc:  # whatever a tracker's client raises
            log.warning(
                "%s: the record could not be sent to %s (%s: %s); it is in %s",
                self.cell.spec.label,
                ", ".join(self.names),
                type(exc).__name__,
                (str(exc).splitlines() or [""])[0],
                self.folder,
            )
        return record

    def _send_record(self, record: dict) -> None:
        step = max(self.last_step, int((record.get("train") or {}).get("steps") or 0))
        metrics = {
            f"record/{name}": float(value)
            for name, value in (record.get("metrics") or {}).items()
            if isinstance(value, (int, float)) and math.isfinite(value)
        }
        accelerator = self.start()
        if metrics:
            accelerator.log(metrics, step=step)
        files = [self.folder / name for name in FILES if (self.folder / name).is_file()]
        for tracker in accelerator.trackers:
            _log_files(tracker, files, self.folder, step)


@contextlib.contextmanager
def opened(cell, folder: Path):
    """The cell's CellTracker on the main process when `train.log_with` names a tracker, else None;
    closed when the block ends, on an error too (what was logged stays)."""
    tracker = CellTracker(cell, folder) if cell.config.train.log_with and distributed.is_main() else None
    try:
        yield tracker
    finally:
        if tracker is not None:
            tracker.close()


def hparams(cell) -> dict:
    """The cell and its settings' values as flat `scope.name` scalars (what TensorBoard's hparams,
    wandb's config and MLflow's params take); lists and dicts as JSON text."""
    spec = cell.spec
    out = {"experiment": spec.experiment, "dataset": spec.dataset, "method": spec.method, "seed": spec.seed}
    out["config_hash"] = cell.config_hash
    for scope, values in cell.config.to_json().items():
        for name, value in (values or {}).items():
            plain = isinstance(value, (bool, int, float, str))
            out[f"{scope}.{name}"] = value if plain else json.dumps(value)  # None: "null"
    return out


# -- what each tracker is sent, where accelerate has no common call --------------------------
def _log_image(tracker, tag: str, image: np.ndarray, step: int) -> None:
    """One RGB uint8 (H, W, 3) image at `step`, as each tracker takes images."""
    if tracker.name == "tensorboard":
        tracker.log_images({tag: image[None]}, step=step, dataformats="NHWC")
    elif tracker.name == "wandb":
        tracker.log_images({tag: [image]}, step=step)
    elif tracker.name == "mlflow":
        import mlflow

        mlflow.log_image(image, key=tag, step=step)


def _log_files(tracker, files: list, folder: Path, step: int) -> None:
    """The cell's config and record: TensorBoard text, wandb run files, MLflow artifacts."""
    if tracker.name == "tensorboard":
        for path in files:
            text = path.read_text()
            tracker.writer.add_text(path.name, "    " + text.replace("\n", "\n    "), global_step=step)
        tracker.writer.flush()
    elif tracker.name == "wandb":
        for path in files:
            tracker.run.save(str(path), base_path=str(folder), policy="now")
    elif tracker.name == "mlflow":
        for path in files:
            tracker.log_artifact(str(path))


# -- the sample grid ---------------------------------------------------------------------------
def preview(cell, model, latents, labels) -> np.ndarray:
    """An RGB uint8 image of a few generated samples per class from `model` as it is now: a mosaic
    (one row per class) for image data, a scatter over the training points for vector data.

    Sampled as the sample stage samples (sample.solver, nfe, precision) from per-sample seeded
    noise of the cell seed, so every grid of a run shows the same draws; the global RNG state and
    the model's train / eval mode are restored, so training continues as if it had not happened.
    """
    vector = cell.dataset.kind == "vector"
    n_classes = cell.dataset.n_classes
    n_per_class = [POINTS_PER_CLASS if vector else IMAGES_PER_CLASS] * n_classes
    cfg = dataclasses.replace(cell.config.sample, batch_size=sum(n_per_class), keep_paths=0)
    device = next(model.parameters()).device
    was_training = model.training
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            out = generate(
                cell.method, model, n_per_class, tuple(latents.shape[1:]), cell.spec.seed, cfg, device
            )
    finally:
        model.train(was_training)
    x = _decode(cell, out["z"])
    if vector:
        rows = torch.randperm(len(latents), generator=torch.Generator().manual_seed(0))[:REAL_POINTS]
        real = _decode(cell, torch.as_tensor(latents[rows.numpy()]).float())
        return scatter(real, x, out["y"], cell.dataset.class_names)
    return mosaic(x, out["y"], n_classes)


def _decode(cell, z: torch.Tensor) -> torch.Tensor:
    """Latents decoded to data space at `sample.precision`, as the evaluation decodes them."""
    precision = cell.config.sample.precision
    with inference_scope(precision), forward_precision(precision, cell.encoder.compute_device()):
        return cell.encoder.decode(z).float().cpu()


def mosaic(images: torch.Tensor, labels: torch.Tensor, n_classes: int) -> np.ndarray:
    """(C, H, W) images in [0, 1] laid out one row per class with a one-pixel white gap: uint8 RGB,
    enlarged by an integer factor (nearest pixel) so a tile is at least MIN_TILE_PX high."""
    c, h, w = images.shape[1:]
    per_row = max(int((labels == k).sum()) for k in range(n_classes))
    out = np.ones((n_classes * (h + 1) + 1, per_row * (w + 1) + 1, 3), dtype=np.float32)
    tiles = images.clamp(0, 1).permute(0, 2, 3, 1).numpy()
    if c == 1:
        tiles = np.repeat(tiles, 3, axis=3)
    for k in range(n_classes):
        for j, tile in enumerate(tiles[(labels == k).numpy()][:per_row, ..., :3]):
            out[k * (h + 1) + 1 : (k + 1) * (h + 1), j * (w + 1) + 1 : (j + 1) * (w + 1)] = tile
    scale = -(-MIN_TILE_PX // h)
    out = np.repeat(np.repeat(out, scale, axis=0), scale, axis=1)
    return (out * 255).round().astype(np.uint8)


def scatter(real: torch.Tensor, generated: torch.Tensor, labels: torch.Tensor, names: list) -> np.ndarray:
    """Generated points coloured by class over the training points in grey (the first two
    coordinates), on axes fixed by the training points so the grids of a run line up: uint8 RGB."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4), dpi=80, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    real, generated = _two_columns(real), _two_columns(generated)
    ax.scatter(real[:, 0], real[:, 1], s=2, color="0.8")
    for k, name in enumerate(names):
        rows = (labels == k).numpy()
        ax.scatter(generated[rows, 0], generated[rows, 1], s=5, label=str(name))
    pad = 0.1 * (real.max(0) - real.min(0) + 1e-6)
    ax.set_xlim(real[:, 0].min() - pad[0], real[:, 0].max() + pad[0])
    ax.set_ylim(real[:, 1].min() - pad[1], real[:, 1].max() + pad[1])
    ax.legend(fontsize="x-small", markerscale=2, loc="upper right")
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _two_columns(points: torch.Tensor) -> np.ndarray:
    """The first two coordinates of each point (a second column of zeros for 1-D data)."""
    flat = points.flatten(1).numpy()
    return flat[:, :2] if flat.shape[1] >= 2 else np.concatenate([flat, np.zeros_like(flat)], axis=1)


def tracker_folder(folder: Path) -> Path:
    """Where a cell's local tracker files go."""
    return Path(folder) / FOLDER
