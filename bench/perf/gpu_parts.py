"""The GPU check's measurements, each against bench's own estimate where bench makes one.

Every part is `part(sizes, workdir) -> dict` with "measured" (what it timed or counted),
"estimated" (bench's figures for the same thing), "compare" (rows of measured vs estimated that
the check turns into ratios) and "details" (settings). Each runs bench's own code, not a copy:

- train: `bench.pipeline.trainer.train` on the one-GPU preset at its real accumulation (8
  micro-batches of 32, bf16): peak memory (`torch.cuda.max_memory_allocated`) vs
  `bench.pipeline.footprint.estimate`; the memory one micro-batch's forward keeps for its backward
  vs the estimate's activations and autocast weight copies; FLOPs counted by torch's
  FlopCounterMode on one micro-batch (x 8) vs the estimate's FLOPs per step; step time, optimiser
  time apart (global optimiser-step hooks), and MFU = the estimate's FLOPs per step / step time /
  the GPU's dense bf16 peak; step time vs the GPU-hours model's (bench.pipeline.budget: assumed
  peak x MFU).
- sampling: `bench.pipeline.sampler.generate` (Euler) in bf16 on a random-weight preset backbone:
  peak vs bench.pipeline.inference_memory's traced peak, time vs the GPU-hours model.
- vae: `bench.encoders.flux_vae.FluxVAEEncoder` on a random-weight AutoencoderKL of FLUX.1-dev's
  architecture, saved to the scratch folder (nothing downloaded): encode and decode throughput,
  peaks vs inference_memory's.
- downstream: one `bench.classify.fit.fit` epoch of the paper's ResNet-50 on random uint8
  images from a memory-mapped image cache (the DataLoader path): time vs the GPU-hours model,
  peak vs bench.pipeline.classifier_memory's traced training step.
The 1-process FSDP run is bench.perf.gpu_fsdp.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from bench.perf import gpu_device as dev
from bench.perf.case import median
from bench.perf.gpu_sizes import N_CLASSES, Sizes

PRECISION = "bf16"


# -- shared pieces --------------------------------------------------------------------------------
def flux_backbone(sz: Sizes, method, device) -> torch.nn.Module:
    """The check's FluxBackbone (random weights, seeded) built directly on `device` ("meta" for
    estimates: no memory)."""
    from bench.backbones.flux import FluxBackbone

    torch.manual_seed(0)
    with torch.device(device):
        return FluxBackbone(sz.latent_shape, method.vocab_size, method.n_tokens, **sz.flux)


def fm_method(cls=None):
    """Vanilla flow matching (or a subclass), set up for the check's N_CLASSES classes."""
    from bench.methods.fm import FlowMatching

    method = (cls or FlowMatching)()
    method.setup(N_CLASSES)
    return method


def footprint_of(sz: Sizes, batch_size: int, micro_batches: int, sharding: str):
    """bench's estimate (bench.pipeline.footprint) of one bf16 training step of the check's
    backbone on one process, built on the meta device as `bench validate` builds it."""
    from bench.pipeline import footprint

    method = fm_method()
    meta = flux_backbone(sz, method, "meta")
    return footprint.estimate(
        meta,
        batch_size=batch_size,
        micro_batches=micro_batches,
        processes=1,
        mixed_precision=PRECISION,
        sharding=sharding,
        activation_checkpointing=False,
    )


def footprint_terms(fp) -> dict:
    """Every GiB term and the FLOPs a Footprint reports, by name (whatever terms it has)."""
    names = [n for n in dir(fp) if n.endswith("_gib") and not n.startswith("_")]
    terms = {n: getattr(fp, n) for n in names}
    terms["flops_per_step"] = fp.flops_per_step
    return {k: v for k, v in terms.items() if v is None or isinstance(v, (int, float))}


def _sum(*terms) -> float | None:
    """The sum of estimate terms, None if any is missing."""
    return None if any(t is None for t in terms) else float(sum(terms))


def row(what: str, unit: str, measured, estimated, estimate_of: str) -> dict:
    """One measured-vs-estimated row of the check's comparison."""
    return {
        "what": what,
        "unit": unit,
        "measured": measured,
        "estimated": estimated,
        "estimate_of": estimate_of,
    }


def on_gpu(seconds: float | None) -> float | None:
    """A time to hold against bench's GPU throughput assumptions: None off CUDA (a dry run's CPU
    seconds say nothing about them; they stay in "measured")."""
    return seconds if torch.cuda.is_available() else None


def peak_flops() -> tuple[float | None, str]:
    """(dense bf16 peak FLOP/s of this GPU, its source); None on the CPU or an unlisted GPU."""
    from bench.perf.gpu import peak_bf16_flops

    name = dev.name()
    return peak_bf16_flops(name) if name else (None, "CPU run: no MFU")


def tokens(sz: Sizes) -> tuple[int, int]:
    """(image tokens, text tokens) per sample: 2 x 2 latent patches, one class token."""
    _, h, w = sz.latent_shape
    return (h // 2) * (w // 2), 1


def transformer_config(backbone) -> dict:
    """The FluxTransformer2DModel's config with its input width, as bench.perf.gpu's FLOP formula takes it."""
    return dict(backbone.transformer.config)


# -- (a) + (b): the training step --------------------------------------------------------------
def _clocked_method(micro_batches: int, probe_call: int):
    """Vanilla FM whose loss stamps the clock at the first micro-batch of every step (one device
    sync per step, where the trainer's own loop may have none); at call `probe_call` (1-based) it
    also records the device memory that the forward kept for backward."""
    from bench.methods.fm import FlowMatching

    class Clocked(FlowMatching):
        """`stamps[k]`: when step k's first loss call began (device synced); `saved_gib`: memory
        the probed forward added (activations saved for backward, autocast's bf16 weight copies)."""

        def __init__(self):
            super().__init__()
            self.calls, self.stamps = 0, []
            self.saved_gib: float | None = None

        def loss(self, backbone, batch):
            self.calls += 1
            if (self.calls - 1) % micro_batches == 0:
                self.stamps.append(dev.clock())
            before = dev.allocated_gib()  # the allocator's own count: exact without a sync
            out = super().loss(backbone, batch)
            if self.calls == probe_call and before is not None:
                self.saved_gib = dev.allocated_gib() - before
            return out

    return fm_method(Clocked)


@contextlib.contextmanager
def optimiser_clock(pre: list, post: list):
    """Stamp the clock (device synced) before and after every optimiser step in the process
    (torch's global optimiser-step hooks: they see the AdamW inside accelerate's wrapper)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    handles = [
        register_optimizer_step_pre_hook(lambda *_: pre.append(dev.clock())),
        register_optimizer_step_post_hook(lambda *_: post.append(dev.clock())),
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def counted_flops(backbone, sz: Sizes) -> int:
    """FLOPs of one micro-batch's bf16 forward + backward as torch's FlopCounterMode counts them.

    On CUDA the fused attention kernels have counting formulas; on the CPU (dry run) attention
    runs as the math backend's matmuls so that the counter sees it."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from bench.method import TrainBatch

    device, method = dev.device(), fm_method()
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn((sz.micro_batch, *sz.latent_shape), generator=g).to(device)
    y = torch.randint(0, N_CLASSES, (sz.micro_batch,), generator=g)
    batch = TrainBatch(
        x1=x1,
        cond=method.training_condition(y, torch.arange(len(y))).to(device),
        eps=torch.randn(x1.shape, generator=g).to(device),
        t=torch.rand(sz.micro_batch, generator=g).to(device),
        generator=g,
    )
    kernels = contextlib.nullcontext() if device.type == "cuda" else sdpa_kernel(SDPBackend.MATH)
    with kernels, FlopCounterMode(display=False) as counter:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = method.loss(backbone, batch)
        loss.backward()
    backbone.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def train(sz: Sizes, workdir: Path) -> dict:
    """The one-GPU preset's training step through bench's trainer: memory, FLOPs, time, MFU."""
    from bench.config.train import TrainConfig
    from bench.pipeline.trainer import train as bench_train

    m, steps = sz.micro_batches, sz.warmup_steps + sz.timed_steps
    fp = footprint_of(sz, sz.batch_size, m, "none")
    method = _clocked_method(m, probe_call=(steps - 1) * m + 1)  # the last step's first micro-batch
    backbone = flux_backbone(sz, method, dev.device())
    g = torch.Generator().manual_seed(0)
    latents = torch.randn((2 * sz.batch_size, *sz.latent_shape), generator=g)
    labels = torch.randint(0, N_CLASSES, (len(latents),), generator=g)
    cfg = TrainConfig(
        steps=steps,
        batch_size=sz.batch_size,
        micro_batches=m,
        lr=1e-4,
        mixed_precision=PRECISION,
        log_every=steps,
        checkpoint_minutes=0,
    )
    pre, post = [], []
    dev.reset_peak()
    with optimiser_clock(pre, post):
        bench_train(method, backbone, latents, labels, cfg, seed=0)
    end = dev.clock()
    peak, reserved = dev.peak_gib(), dev.peak_reserved_gib()
    starts = method.stamps + [end]
    step_s = [b - a for a, b in zip(starts, starts[1:])]
    optimiser_s = [b - a for a, b in zip(pre, post)]
    counted = counted_flops(backbone, sz) * m
    steady, optimiser = median(step_s[sz.warmup_steps :]), median(optimiser_s[sz.warmup_steps :])
    peak_flops_s, peak_source = peak_flops()
    rate, rate_words = assumed_rate("mfu")
    mfu = fp.flops_per_step / steady / peak_flops_s if peak_flops_s else None
    measured = {
        "peak_gib": peak,
        "peak_reserved_gib": reserved,
        "forward_saved_gib": method.saved_gib,
        "flops_per_step_counted": counted,
        "step_s": step_s,
        "steady_step_s": steady,
        "optimiser_s": optimiser_s,
        "steady_optimiser_s": optimiser,
        "forward_backward_s": steady - optimiser,
        "mfu": mfu,
        "mfu_counted_flops": counted / steady / peak_flops_s if peak_flops_s else None,
    }
    compare = [
        row("training step peak memory", "GiB", peak, fp.total_gib, "footprint total_gib"),
        row(
            "one micro-batch's forward (activations + autocast weight copies)",
            "GiB",
            method.saved_gib,
            _sum(fp.activations_gib, fp.weight_copies_gib),
            "footprint activations_gib + weight_copies_gib",
        ),
        row(
            "FLOPs per training step",
            "GFLOP",
            counted / 1e9,
            fp.flops_per_step / 1e9,
            "footprint flops_per_step",
        ),
        row(
            "training step seconds",
            "s",
            on_gpu(steady),
            fp.flops_per_step / rate,
            f"GPU-hours model: footprint flops_per_step at {rate_words}",
        ),
    ]
    return {
        "measured": measured,
        "estimated": footprint_terms(fp),
        "compare": compare,
        "details": {
            "model": "FluxBackbone " + str(sz.flux),
            "latent_shape": list(sz.latent_shape),
            "micro_batch": sz.micro_batch,
            "micro_batches": m,
            "warmup_steps": sz.warmup_steps,
            "timed_steps": sz.timed_steps,
            "parameters": sum(p.numel() for p in backbone.parameters()),
            "precision": "bf16 autocast (accelerate), fp32 master weights and AdamW",
            "peak_flops": peak_flops_s,
            "peak_flops_source": peak_source,
            "mfu_from": "footprint flops_per_step / steady step s / peak bf16 FLOP/s",
            "timing": "step: between the loss calls that open consecutive steps (device synced); "
            "optimiser: the AdamW step alone, from global optimiser-step hooks; "
            f"steady = median of the {sz.timed_steps} steps after {sz.warmup_steps} warm-up",
            "forward_saved": "device memory allocated across the forward of the last step's first "
            "micro-batch (saved activations and autocast's bf16 weight copies)",
        },
    }


# -- bench's throughput assumptions (bench.pipeline.budget) --------------------------------------
def assumed_rate(kind: str = "mfu") -> tuple[float, str]:
    """(FLOP/s, in words) that `bench run`'s GPU-hour estimates assume: the budget's peak x its
    MFU for the transformer (`kind='mfu'`) or the CNNs (`'cnn_mfu'`), at their defaults."""
    from bench.config.throughput import Assumptions

    a = Assumptions()
    fraction = getattr(a, kind)
    return a.peak_tflops * 1e12 * fraction, f"budget: {a.peak_tflops:g} TFLOP/s x {kind} {fraction:g}"


# -- (c): bf16 sampling --------------------------------------------------------------------------
def sample_config(nfe: int, batch: int):
    """The sampler's settings: Euler, `nfe` steps, `batch` samples at a time, bf16 (sample.precision)."""
    from bench.config.sample import SampleConfig

    return SampleConfig(nfe=nfe, batch_size=batch, precision=PRECISION)


def spread(n: int, classes: int = N_CLASSES) -> list[int]:
    """`n` samples over `classes` classes, as evenly as possible."""
    return [n // classes + (c < n % classes) for c in range(classes)]


def sampling(sz: Sizes, workdir: Path) -> dict:
    """Euler sampling of the preset backbone (random weights) in bf16: samples and evaluations per
    second, peak memory, against bench's traced sampling peak and its GPU-hour throughput."""
    from bench.perf.gpu import flux_forward_flops
    from bench.pipeline.sampler import generate, sampling_peak_gib

    method, device = fm_method(), dev.device()
    backbone = flux_backbone(sz, method, device).requires_grad_(False)
    estimated_peak = sampling_peak_gib(backbone, sz.sample_batch, PRECISION, "euler")
    # kernels chosen and the allocator warmed on one batch of one step
    generate(
        method,
        backbone,
        spread(sz.sample_batch),
        sz.latent_shape,
        0,
        sample_config(1, sz.sample_batch),
        device=device,
    )
    dev.reset_peak()
    t0 = dev.clock()
    out = generate(
        method,
        backbone,
        spread(sz.samples),
        sz.latent_shape,
        0,
        sample_config(sz.nfe, sz.sample_batch),
        device=device,
    )
    seconds = dev.clock() - t0
    image_tokens, text_tokens = tokens(sz)
    flops = flux_forward_flops(transformer_config(backbone), sz.samples, image_tokens, text_tokens) * sz.nfe
    fp = footprint_of(sz, sz.batch_size, sz.micro_batches, "none")
    # as bench.pipeline.budget counts sampling: a forward is a third of a training step's FLOPs per sample
    budget_flops = sz.samples * sz.nfe * fp.flops_per_step / (3 * sz.batch_size)
    rate, rate_words = assumed_rate("mfu")
    peak_flops_s, _ = peak_flops()
    peak = dev.peak_gib()
    measured = {
        "seconds": seconds,
        "samples_per_s": sz.samples / seconds,
        "evaluations_per_s": sz.samples * sz.nfe / seconds,
        "peak_gib": peak,
        "model_tflops_per_s": flops / seconds / 1e12,
        "mfu": flops / seconds / peak_flops_s if peak_flops_s else None,
        "finite": bool(torch.isfinite(out["z"]).all()),
    }
    compare = [
        row(
            "sampling peak memory",
            "GiB",
            peak,
            estimated_peak,
            "sampler.sampling_peak_gib (traced one Euler step)",
        ),
        row("sampling seconds", "s", on_gpu(seconds), budget_flops / rate, f"GPU-hours model ({rate_words})"),
    ]
    return {
        "measured": measured,
        "estimated": {"peak_gib": estimated_peak, "seconds": budget_flops / rate},
        "compare": compare,
        "details": {
            "samples": sz.samples,
            "batch": sz.sample_batch,
            "nfe": sz.nfe,
            "solver": "euler",
            "precision": f"sample.precision='{PRECISION}'",
            "flops": flops,
            "flops_from": "bench.perf.gpu.flux_forward_flops x NFE (one forward per evaluation)",
        },
    }


# -- (d): the VAE ----------------------------------------------------------------------------------
def vae_encoder(sz: Sizes, workdir: Path):
    """bench's FLUX VAE encoder on a random-weight AutoencoderKL of the sizes' config, saved under
    `workdir` (the encoder loads only local files), its weights fp32 as bench's default."""
    from diffusers import AutoencoderKL

    from bench.encoders.flux_vae import FluxVAEEncoder

    torch.manual_seed(0)
    folder = Path(workdir) / "random_flux_vae"
    AutoencoderKL(**sz.vae).save_pretrained(folder)
    return FluxVAEEncoder(path=str(folder), batch_size=sz.vae_batch)


def vae(sz: Sizes, workdir: Path) -> dict:
    """Encode and decode `vae_images` grayscale images of `image_size` under bf16 autocast (as
    bench decodes at sample.precision='bf16'): images per second and peaks, against bench's traced peaks."""
    from bench.encoders.flux_vae import vae_peak_gib
    from bench.pipeline.inference_precision import forward_precision, inference_scope

    encoder = vae_encoder(sz, workdir)
    device = encoder.torch_device()
    shape = (1, sz.image_size, sz.image_size)
    estimated = {
        mode: vae_peak_gib(encoder.config(), shape, sz.vae_batch, PRECISION, mode)
        for mode in ("encode", "decode")
    }
    x = torch.rand((sz.vae_images, *shape), generator=torch.Generator().manual_seed(0))
    with inference_scope(PRECISION), forward_precision(PRECISION, device):
        encoder.decode(encoder.encode(x[: sz.vae_batch]))  # load, choose kernels, warm the allocator
        dev.reset_peak()
        t0 = dev.clock()
        z = encoder.encode(x)
        encode_s, encode_peak = dev.clock() - t0, dev.peak_gib()
        dev.reset_peak()
        t0 = dev.clock()
        images = encoder.decode(z)
        decode_s, decode_peak = dev.clock() - t0, dev.peak_gib()
    measured = {
        "encode_s": encode_s,
        "encode_images_per_s": sz.vae_images / encode_s,
        "encode_peak_gib": encode_peak,
        "decode_s": decode_s,
        "decode_images_per_s": sz.vae_images / decode_s,
        "decode_peak_gib": decode_peak,
        "latent_shape": list(z.shape[1:]),
        "finite": bool(torch.isfinite(images).all()),
    }
    how = "flux_vae.vae_peak_gib (traced one chunk)"
    compare = [
        row("VAE encode peak memory", "GiB", encode_peak, estimated["encode"], how),
        row("VAE decode peak memory", "GiB", decode_peak, estimated["decode"], how),
    ]
    return {
        "measured": measured,
        "estimated": {f"{m}_peak_gib": v for m, v in estimated.items()},
        "compare": compare,
        "details": {
            "images": sz.vae_images,
            "image_size": sz.image_size,
            "batch": sz.vae_batch,
            "weights_dtype": encoder.dtype,
            "precision": f"bf16 autocast ({PRECISION}), TF32 on",
            "config": dict(sz.vae),
            "time_estimate": "none: bench's GPU-hours do not count the VAE",
            "weights": "random (FLUX.1-dev's architecture; throughput does not depend on them)",
        },
    }


# -- (e): one downstream epoch ---------------------------------------------------------------------
def cached_images(sz: Sizes, workdir: Path):
    """`downstream_images` random grayscale images as bench reads a real split: an ImageFiles whose
    rows come from a memory-mapped uint8 image cache (bench.data.image_cache's format), so the
    classifier's batches go through its DataLoader path (workers, pinned memory) as on real data."""
    import numpy as np

    from bench.data.imagefiles import ImageFiles, Preprocess

    n, side = sz.downstream_images, sz.image_size
    path = Path(workdir) / "images.npy"
    array = torch.randint(
        0, 256, (n, 1, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    np.save(path, array.numpy())
    ids = [f"random{i:06d}" for i in range(n)]
    files = ImageFiles([Path(workdir) / f"{i}.png" for i in ids], ids, Preprocess(size=side), "gpu_check")
    files.use_cache(np.load(path, mmap_mode="r"), np.arange(n))  # no file is ever decoded
    return files


def downstream(sz: Sizes, workdir: Path) -> dict:
    """One epoch of the paper's ResNet-50 (`downstream_arch`; bench.classify.fit.fit,
    max_epochs=1) on random uint8 images, a sixteenth of them held out for its validation pass;
    against bench's GPU-hours model of a downstream epoch."""
    from bench.classify.batches import loader_workers
    from bench.classify.fit import Protocol, build_classifier, fit
    from bench.config.loader import LoaderConfig
    from bench.pipeline.budget import cnn_forward_flops
    from bench.pipeline.classifier_memory import classifier_step_gib

    n, side = sz.downstream_images, sz.image_size
    files = cached_images(sz, workdir)
    y = torch.randint(0, N_CLASSES, (n,), generator=torch.Generator().manual_seed(1))
    held = max(2, n // 16)
    train_rows, val_rows = torch.arange(held, n), torch.arange(held)
    device = dev.device()
    model = build_classifier(sz.downstream_arch, 1, N_CLASSES, seed=0).to(device)
    protocol = Protocol(lr=1e-4, batch_size=sz.downstream_batch, max_epochs=1, patience=1)
    dev.reset_peak()
    t0 = dev.clock()
    _, history = fit(
        model, files.take(train_rows), y[train_rows], files.take(val_rows), y[val_rows], protocol, seed=0
    )
    seconds = dev.clock() - t0
    rate, rate_words = assumed_rate("cnn_mfu")
    # as bench.pipeline.budget counts a downstream epoch: 3 forwards per training image
    estimated_s = 3 * cnn_forward_flops(sz.downstream_arch, (1, side, side), N_CLASSES) * (n - held) / rate
    estimated_peak = classifier_step_gib(
        sz.downstream_arch, 1, N_CLASSES, side, sz.downstream_batch, PRECISION
    )
    peak = dev.peak_gib()
    measured = {
        "epoch_s": seconds,
        "images_per_s": (n - held) / seconds,
        "peak_gib": peak,
        "train_loss": history.train_loss[0],
    }
    return {
        "measured": measured,
        "estimated": {"epoch_s": estimated_s, "peak_gib": estimated_peak},
        "compare": [
            row(
                f"downstream {sz.downstream_arch} epoch",
                "s",
                on_gpu(seconds),
                estimated_s,
                f"GPU-hours model ({rate_words})",
            ),
            row(
                f"downstream {sz.downstream_arch} peak memory",
                "GiB",
                peak,
                estimated_peak,
                "classifier_memory.classifier_step_gib (traced training step)",
            ),
        ],
        "details": {
            "arch": sz.downstream_arch,
            "images": n - held,
            "validation_images": held,
            "image_size": side,
            "channels": 1,
            "batch": sz.downstream_batch,
            "stored": "uint8 image cache (memory-mapped)",
            "loader_workers": loader_workers(LoaderConfig(), device),
            "timed": "the whole fit call: one training epoch, its validation pass, the best-weights copy",
        },
    }
