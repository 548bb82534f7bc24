"""What each cell of a grid will cost before it trains: GPU-hours, peak memory and disk.

`bench validate` prints these per cell and `bench run` prints the grid with them before anything
trains, so nobody starts a 40-hour job by accident. Every figure is an estimate from the cell's
configuration and its dataset's split sizes, never a measurement (docs/gpu.md says which were
checked on hardware):

- GPU-hours = FLOPs / sustained throughput, the throughput being an assumed peak x MFU
  (`budget.peak_tflops`, default 989: an H100 SXM's dense bf16 peak; `budget.mfu`, default 0.35,
  for the transformer; `budget.cnn_mfu`, default 0.08, for the CNNs) [our defaults]. Counted:
  training (the footprint's FLOPs per step x `train.steps`), sampling (one forward per sample and
  ODE step, twice with classifier-free guidance, the forward taken as a third of a training
  step's FLOPs per sample), the domain feature network (trained once per dataset, at most
  `features.epochs`; embedding the synthetic and generative sets per cell) and the downstream
  classifiers (at most `downstream.max_epochs` each: early stopping usually ends them sooner, so
  this term is an upper bound; the real-data runs are shared by a dataset's cells of one seed and
  counted on the first of them). CNN FLOPs are counted by torch's FlopCounterMode on the meta
  device. Not counted: VAE encoding (once per dataset) and decoding, the prior fit (CPU), kNN /
  IRS / memorisation searches, image decoding, and activation checkpointing's extra forward.
- Peak memory per device: the training step's footprint (bench.pipeline.footprint), and one
  sampling step's and the VAE decoder's peaks traced under fake tensors
  (bench.pipeline.inference_memory), and one training step's peak of the feature network and of
  the downstream classifier at their batch sizes (bench.pipeline.classifier_memory);
  `budget.trace_inference=False` skips these traces.
- Disk: resumable checkpoints (fp32 weights and AdamW state, two while the newer is written;
  removed once the backbone is saved), the saved backbone (fp32), the sample sets (fp32 latents),
  and per dataset (shared by its cells, marked [dataset]) the latent cache (fp32) and the uint8
  image cache (bench.data.image_cache) of the splits a cell reads.

The `budget.*` settings say how fast a device is assumed to be, never what a cell computes: they
feed no hash (bench.config.gin_config.NEVER_HASHED).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from dataclasses import dataclass, field

from bench.config.throughput import Assumptions
from bench.data.targets import augmentation_plan
from bench.metrics.generative import per_class

GIB = 2**30
FP32 = 4
CHECKPOINT_BYTES = 4 + 8  # fp32 weights + the two AdamW moments, per parameter
CHECKPOINTS = "checkpoints while training"  # the disk item removed once the backbone is saved
CPU_SIZED_GPU_HOURS = 0.01  # below this a cell is CPU-sized: `bench run` prints no estimate for it


@dataclass(frozen=True)
class DatasetFacts:
    """What a cell's estimate needs of its dataset: split sizes and sample shapes."""

    n_train: int
    n_eval: int
    n_val: int
    image_shape: tuple  # (C, H, W)
    latent_shape: tuple
    train_counts: tuple  # per class


@dataclass
class CellEstimate:
    """One cell's estimated GPU-hours (by term), peak memory per device and disk (GiB, by item)."""

    label: str
    gpu_hours: dict = field(default_factory=dict)
    peak_gib: dict = field(default_factory=dict)
    disk_gib: dict = field(default_factory=dict)
    shared: set = field(default_factory=set)  # the terms shared by the dataset's cells
    processes: int = 1

    @property
    def total_gpu_hours(self) -> float:
        return sum(v for v in self.gpu_hours.values() if math.isfinite(v))

    @property
    def cpu_sized(self) -> bool:
        return self.total_gpu_hours < CPU_SIZED_GPU_HOURS

    def describe(self) -> str:
        """One line: GPU-hours by term, peak memory, disk by item."""

        def part(name, value):
            shown = f"{value:,.2f}" if math.isfinite(value) else "not estimated"
            return f"{name} {shown}" + (" [dataset]" if name in self.shared else "")

        hours = ", ".join(part(k, v) for k, v in self.gpu_hours.items())
        wall = (
            f", ~{self.total_gpu_hours / self.processes:,.1f} h on {self.processes} GPUs"
            if self.processes > 1
            else ""
        )
        peak = ", ".join(f"{k} {v:,.1f}" for k, v in self.peak_gib.items())
        disk = ", ".join(part(k, v) for k, v in self.disk_gib.items())
        return (
            f"~{self.total_gpu_hours:,.2f} GPU-h ({hours}{wall}); peak GiB per device: {peak}; "
            f"disk ~{sum(self.disk_gib.values()):,.1f} GiB ({disk})"
        )


def facts(cell) -> DatasetFacts:
    """Split sizes and shapes of the cell's dataset (the loaders' own indexes, no image decoded)."""
    ds = cell.dataset
    train = ds.load(ds.train_split)
    n_eval = len(ds.load(cell.eval_split))
    n_val = 0
    if getattr(ds, "val_split", None) and ds.val_split not in (ds.train_split, cell.eval_split):
        try:
            n_val = len(ds.load(ds.val_split))
        except Exception:  # noqa: BLE001 - a dataset without that split: held out of train instead
            n_val = 0
    image = tuple(int(s) for s in train.x.shape[1:])
    latent = tuple(int(s) for s in cell.encoder.latent_shape(image))
    return DatasetFacts(
        len(train), n_eval, n_val, image, latent, tuple(int(c) for c in train.counts(ds.n_classes).tolist())
    )


@functools.cache
def cnn_forward_flops(arch: str, image_shape: tuple, n_classes: int) -> float:
    """FLOPs of one image's forward pass through a bench classifier (FlopCounterMode, meta device);
    NaN where the network cannot take the image (a DenseNet-121 on 8 x 8 pixels): not estimated."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bench.classify.fit import build_classifier

    try:
        with torch.device("meta"):  # eval mode: train-mode batch norm refuses one image's 1 x 1 map
            model = build_classifier(arch, image_shape[0], n_classes).eval()
            x = torch.empty(1, *image_shape)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    except Exception:  # noqa: BLE001 - the cell says so when it runs; the estimate leaves the term out
        return math.nan
    return float(counter.get_total_flops())


def sample_counts(cell, f: DatasetFacts) -> tuple[int, int]:
    """(synthetic set, generative set) sizes of the cell, as the runner will sample them."""
    plan = augmentation_plan(cell.config.targets, list(f.train_counts), cell.dataset.class_names)
    n = cell.config.sample.n_per_class
    if n == "targets":
        synthetic = sum(t.synthetic for t in plan)
    elif n is not None:
        synthetic = int(n) * cell.dataset.n_classes
    else:
        synthetic = f.n_eval
    with _quiet("bench.metrics.generative"):  # its notes are logged once, when the cell runs
        generative = sum(per_class(cell.config.generative, plan) or [])
    return synthetic, generative


@contextlib.contextmanager
def _quiet(logger: str):
    """A logger silenced below WARNING for the duration."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def estimate(
    cell, f: DatasetFacts, features_cfg, assumptions: Assumptions, first_of_dataset: bool, first_of_seed: bool
) -> CellEstimate:
    """The cell's estimate; `first_of_*` put the work a dataset's cells share on its first cell."""
    fp = cell.footprint
    out = CellEstimate(cell.spec.label, processes=getattr(fp, "processes", 1) or 1)
    synthetic, generative = sample_counts(cell, f)
    if cell.config.sample.init_reference:
        synthetic *= 2  # the untrained backbone samples the same set again
    transformer = assumptions.peak_tflops * 1e12 * assumptions.mfu
    cnn = assumptions.peak_tflops * 1e12 * assumptions.cnn_mfu
    if fp is not None:
        out.gpu_hours["train"] = fp.flops_per_step * cell.config.train.steps / transformer / 3600
        forward = fp.flops_per_step / (3 * max(1, fp.batch_size))  # forward + backward = 3 forwards
        guidance = 2 if cell.config.sample.guidance_scale != 1.0 else 1
        out.gpu_hours["sampling"] = (
            (synthetic + generative) * cell.config.sample.nfe * guidance * forward / transformer / 3600
        )
    names = {ev.name: ev for ev in cell.evaluators}
    n_classes = cell.dataset.n_classes
    if (
        cell.dataset.kind == "image"
        and names.keys() & {"fid", "kid", "irs", "knn_purity", "memorisation"}
        and features_cfg is not None
        and not features_cfg.path
    ):
        per_image = cnn_forward_flops(features_cfg.arch, f.image_shape, n_classes)
        source = generative or synthetic  # the @source draws are sized like the set FID / IRS score
        flops = per_image * (synthetic + generative + source)
        if first_of_dataset:
            flops += per_image * (3 * features_cfg.epochs * f.n_train + f.n_train + f.n_eval)
            out.shared.add("features")
        out.gpu_hours["features"] = flops / cnn / 3600
    if "downstream" in names:
        out.gpu_hours["downstream"] = (
            _downstream_flops(names["downstream"], f, synthetic, first_of_seed) / cnn / 3600
        )
    if fp is not None:
        out.peak_gib["train"] = fp.total_gib
    if not out.cpu_sized:  # the embedded quick run's cells are not traced
        out.peak_gib.update(_inference_peaks(cell, f, assumptions, features_cfg))
    _disk(out, cell, f, synthetic, generative, first_of_dataset)
    return out


def _downstream_flops(ev, f: DatasetFacts, synthetic: int, shared: bool) -> float:
    """Upper bound: every classifier runs `max_epochs` (3 forwards per image and epoch)."""
    from bench import registry

    def full(names) -> int:  # cRT re-trains a head on frozen features: not counted
        return sum(1 for n in names if not getattr(registry.remedies.get(n), "retrains_head", False))

    per_epoch = 3 * cnn_forward_flops(ev.arch, f.image_shape, len(f.train_counts)) * ev.protocol.max_epochs
    flops = ev.n_seeds * (1 + full(ev.with_augmentation)) * (f.n_train + synthetic) * per_epoch
    if shared:  # no augmentation and the remedies on real data: once per dataset and seed
        flops += ev.n_seeds * (1 + full(ev.remedies)) * f.n_train * per_epoch
    return flops


def _inference_peaks(cell, f: DatasetFacts, assumptions: Assumptions, features_cfg=None) -> dict:
    """Peaks of sampling (one solver step) and of the VAE's decoding, traced under fake tensors by
    bench.pipeline.inference_memory at the configured batch (at batch 1 where the batch is chosen
    to fit the device at run time: the peak then grows to the device's budget by design). Traced
    once per dataset and backbone size (methods differ only in their token table); a peak that
    cannot be traced is left out, never fatal."""
    if not assumptions.trace_inference:
        return {}
    peaks = {}
    try:
        from bench.pipeline.sampler import sampling_peak_gib
    except ImportError:
        return peaks
    cfg = cell.config.sample
    precision = getattr(cfg, "precision", "fp32")
    if cell.footprint is not None and hasattr(cell.backbone_cls, "config"):  # a backbone the tracer rebuilds
        batch = cfg.batch_size or 1
        key = (
            "sampling",
            cell.stage_hashes["encode"],
            cell.config.pipeline.backbone,
            batch,
            precision,
            cfg.solver,
            cfg.guidance_scale,
        )
        peaks[f"sampling@{batch}"] = _traced(
            key,
            lambda: sampling_peak_gib(
                _meta_backbone(cell, f), batch, precision, cfg.solver, cfg.guidance_scale
            ),
        )
    encoder = cell.encoder
    if callable(getattr(encoder, "peak_gib", None)):  # an encoder that traces its own peak (flux_vae)
        batch = getattr(encoder, "batch_size", None) or 1
        key = ("vae", cell.stage_hashes["encode"], batch, precision)
        peaks[f"vae decode@{batch}"] = _traced(
            key, lambda: encoder.peak_gib(f.image_shape, batch, precision, "decode")
        )
    peaks.update(_classifier_peaks(cell, f, features_cfg))
    return {k: v for k, v in peaks.items() if v is not None}


def _classifier_peaks(cell, f: DatasetFacts, features_cfg) -> dict:
    """One training step's peak of the feature network and of the downstream classifier at their
    batch sizes (bench.pipeline.classifier_memory, bf16 autocast as on a GPU)."""
    try:
        from bench.pipeline.classifier_memory import classifier_step_gib
    except ImportError:
        return {}
    channels, size = f.image_shape[0], f.image_shape[-1]
    n_classes = cell.dataset.n_classes
    nets = {}
    if features_cfg is not None and not features_cfg.path:
        nets[f"features {features_cfg.arch}@{features_cfg.batch_size}"] = (
            features_cfg.arch,
            features_cfg.batch_size,
        )
    down = next((ev for ev in cell.evaluators if ev.name == "downstream"), None)
    if down is not None:
        nets[f"downstream {down.arch}@{down.protocol.batch_size}"] = (down.arch, down.protocol.batch_size)
    return {
        name: _traced(
            ("cnn", arch, channels, n_classes, size, batch),
            lambda a=arch, b=batch: classifier_step_gib(a, channels, n_classes, size, b),
        )
        for name, (arch, batch) in nets.items()
    }


_TRACES: dict = {}


def _traced(key, trace) -> float | None:
    """A traced peak in GiB, memoised for this process; None when the trace fails."""
    if key not in _TRACES:
        try:
            _TRACES[key] = float(trace())
        except Exception:  # noqa: BLE001 - an estimate that cannot be made is left out
            _TRACES[key] = None
    return _TRACES[key]


def _meta_backbone(cell, f: DatasetFacts):
    """The cell's backbone on the meta device (no weights allocated)."""
    import torch

    with torch.device("meta"):  # as cells.make_backbone builds it (not imported: cells imports this module)
        return cell.backbone_cls(tuple(f.latent_shape), cell.method.vocab_size, cell.method.n_tokens)


def _disk(out: CellEstimate, cell, f: DatasetFacts, synthetic: int, generative: int, first: bool) -> None:
    params = getattr(cell.footprint, "parameters", 0) or 0
    ema = FP32 if cell.config.train.ema_decay else 0
    latent = math.prod(f.latent_shape) * FP32
    out.disk_gib[CHECKPOINTS] = 2 * params * (CHECKPOINT_BYTES + ema) / GIB
    out.disk_gib["backbone"] = params * FP32 / GIB
    out.disk_gib["samples"] = (synthetic + generative) * latent / GIB
    if first:
        out.disk_gib["latent cache"] = f.n_train * latent / GIB
        if getattr(cell.dataset, "preprocess", None) is not None:  # file-backed: the uint8 image cache
            out.disk_gib["image cache"] = (f.n_train + f.n_eval + f.n_val) * math.prod(f.image_shape) / GIB
        out.shared |= {"latent cache", "image cache"}
