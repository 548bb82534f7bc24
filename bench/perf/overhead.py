"""Harness overhead (issue 8, item 1): a training step through bench against a bare diffusers loop.

Both loops train phantom_lt's model, FLUX on its pixel latents with the tiny preset (the gin files
base.gin < datasets/phantom_lt.gin, which includes presets/tiny.gin, fix the sizes, batch, lr,
weight decay and gradient clipping), in fp32 on the same number of torch threads, from the same
initial weights. Bench's step is `bench.pipeline.trainer.train` with vanilla flow matching (accelerate, the
epoch sampler, seeded draws, `method.loss`, clipping, the loss trace). The bare step is the loop a
diffusers user writes by hand: draw rows, noise and sigma, mix, pack, call FluxTransformer2DModel,
MSE against noise - data, backward, clip, AdamW. Only the harness machinery differs, so
`harness_overhead_ratio` = bench's seconds per step / the bare loop's (target <= 1.05).

Timing: a loop's per-step time is (T(k2 steps) - T(k1 steps)) / (k2 - k1) of two whole calls,
which cancels the one-off setup of each call (Accelerator and optimiser creation alike). The two
loops alternate in several repeats (order flipped every repeat) and each reports the median, so
the noise of a shared machine hits both alike.
"""

from __future__ import annotations

import contextlib
import cProfile
import dataclasses
import pstats
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import gin
from bench.backbones.flux import FluxBackbone, image_ids, pack_patches
from bench.config.train import TrainConfig
from bench.perf.case import Measurement, median, timed
from bench.pipeline.trainer import TrainResult, train

TARGET = 1.05  # bench may cost at most 5% more per step than the bare loop
SEED = 0


@dataclass(frozen=True)
class Scale:
    """How much is timed: batch (None = phantom_lt.gin's), the two call lengths and the repeats."""

    batch_size: int | None
    k1: int
    k2: int
    repeats: int


SCALES = {"full": Scale(None, 2, 12, 5), "smoke": Scale(2, 1, 3, 2)}


@dataclass
class Setting:
    """phantom_lt's training problem: tiny-preset FLUX, FM, pixel-shaped latents, its TrainConfig."""

    backbone: FluxBackbone
    method: object  # bench.methods.fm.FlowMatching, set up for phantom_lt's classes
    latents: torch.Tensor  # (N, 1, S, S) in [-1, 1], N = phantom_lt's train split size
    labels: torch.Tensor  # (N,) phantom_lt's long-tailed train class counts
    cfg: TrainConfig  # phantom_lt's optimiser settings, in fp32 without EMA, warm-up or accumulation

    @property
    def parameters(self) -> int:
        """Trainable parameters of the model (transformer and condition embeddings)."""
        return sum(p.numel() for p in self.backbone.parameters())


@contextlib.contextmanager
def gin_parsed(names: Sequence[str]) -> Iterator[None]:
    """bench's gin files `names` (relative to gin/) parsed for the block, the config cleared after.

    Clearing keeps the bindings from leaking into later code that builds a TrainConfig().
    """
    from bench.config.gin_config import gin_dir, parse
    from bench.pipeline.assemble import load_plugins

    load_plugins()
    parse([gin_dir() / name for name in names], [])
    try:
        yield
    finally:
        gin.clear_config()


def phantom_setting(batch_size: int | None = None) -> Setting:
    """The setting both loops train, built as a phantom_lt cell builds it (seeded weights).

    The latents are uniform in [-1, 1] rather than rendered phantoms: the step's cost depends only
    on their shape. `batch_size` replaces the gin batch (smoke scale).
    """
    from bench.datasets.phantom_lt import PhantomLT
    from bench.encoders.pixel import PixelEncoder
    from bench.methods.fm import FlowMatching

    with gin_parsed(["base.gin", "datasets/phantom_lt.gin"]):
        dataset, encoder, method, cfg = PhantomLT(), PixelEncoder(), FlowMatching(), TrainConfig()
        method.setup(dataset.n_classes)
        shape = encoder.latent_shape((1, dataset.size, dataset.size))
        torch.manual_seed(SEED)
        backbone = FluxBackbone(shape, method.vocab_size, method.n_tokens)
    counts = torch.tensor(dataset.split_counts[dataset.train_split])
    labels = torch.repeat_interleave(torch.arange(dataset.n_classes), counts)
    g = torch.Generator().manual_seed(SEED)
    latents = encoder.encode(torch.rand((len(labels), *shape), generator=g))
    cfg = dataclasses.replace(
        cfg,
        batch_size=batch_size or cfg.batch_size,
        mixed_precision="no",
        ema_decay=0.0,
        warmup_steps=0,
        micro_batches=1,
        checkpoint_every=0,
    )
    return Setting(backbone, method, latents, labels, cfg)


def device() -> torch.device:
    """Where both loops run: the device bench's Accelerator picks."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class BareLoop:
    """A hand-written diffusers training loop on a copy of the backbone's weights.

    The model is FluxTransformer2DModel plus the two embedding tables that turn class tokens into
    its text stream and pooled vector; everything else is plain torch in FLUX's own convention
    (sigma = 1 is noise, the target is noise - data).
    """

    def __init__(self, backbone: FluxBackbone, cfg: TrainConfig):
        from diffusers import FluxTransformer2DModel

        dev = device()
        self.cfg, self.sample_shape = cfg, backbone.sample_shape
        self.transformer = FluxTransformer2DModel.from_config(backbone.transformer.config).to(dev)
        self.transformer.load_state_dict(backbone.transformer.state_dict())
        self.token_embedding = _embedding_copy(backbone.token_embedding).to(dev)
        self.pooled_embedding = _embedding_copy(backbone.pooled_embedding).to(dev)
        _, h, w = backbone.sample_shape
        self.img_ids = image_ids(h, w).to(dev)
        self.txt_ids = torch.zeros(backbone.n_tokens, 3, device=dev)

    def parameters(self) -> list[nn.Parameter]:
        """Every trained tensor: the transformer's and both embedding tables'."""
        modules = (self.transformer, self.token_embedding, self.pooled_embedding)
        return [p for m in modules for p in m.parameters()]

    def loss(
        self, x1: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor
    ) -> torch.Tensor:
        """Rectified-flow MSE at noise level sigma (B,) for class labels (token = label + 1)."""
        s = sigma.reshape(-1, 1, 1, 1)
        noisy = (1 - s) * x1 + s * noise
        tokens = (labels + 1).unsqueeze(1)
        prediction = self.transformer(
            hidden_states=pack_patches(noisy),
            encoder_hidden_states=self.token_embedding(tokens),
            pooled_projections=self.pooled_embedding(tokens).mean(dim=1),
            timestep=sigma,
            img_ids=self.img_ids,
            txt_ids=self.txt_ids,
            return_dict=False,
        )[0]
        return F.mse_loss(prediction, pack_patches(noise - x1))

    def optimizer(self) -> torch.optim.Optimizer:
        """AdamW over every trained tensor, with the setting's lr and weight decay."""
        return torch.optim.AdamW(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def step(
        self,
        optimizer: torch.optim.Optimizer,
        x1: torch.Tensor,
        labels: torch.Tensor,
        noise: torch.Tensor,
        sigma: torch.Tensor,
    ) -> float:
        """One optimisation step on a batch (moved to the device here): loss, backward, clip, AdamW."""
        dev = device()
        loss = self.loss(x1.to(dev), labels.to(dev), noise.to(dev), sigma.to(dev))
        loss.backward()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.parameters(), self.cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def train(
        self, latents: torch.Tensor, labels: torch.Tensor, steps: int, generator: torch.Generator
    ) -> list[float]:
        """`steps` steps on random batches of (latents, labels) with a fresh AdamW; each step's loss."""
        b, optimizer = self.cfg.batch_size, self.optimizer()
        losses = []
        for _ in range(steps):
            rows = torch.randint(len(labels), (b,), generator=generator)
            noise = torch.randn((b, *self.sample_shape), generator=generator)
            sigma = torch.rand(b, generator=generator)
            losses.append(self.step(optimizer, latents[rows], labels[rows], noise, sigma))
        return losses


def _embedding_copy(embedding: nn.Embedding) -> nn.Embedding:
    """A trainable embedding table with the same weights."""
    return nn.Embedding.from_pretrained(embedding.weight.detach().clone(), freeze=False)


Run = Callable[[int], object]  # run(k) trains k steps, one-off setup included


def bench_run(setting: Setting, threads: int) -> Run:
    """k steps through bench.pipeline.trainer.train on `threads` torch threads (weights carry over)."""

    def run(steps: int) -> TrainResult:
        cfg = dataclasses.replace(setting.cfg, steps=steps, threads=threads)
        return train(setting.method, setting.backbone, setting.latents, setting.labels, cfg, SEED)

    return run


def bare_run(setting: Setting, threads: int) -> Run:
    """k steps of the bare loop on `threads` torch threads (its own copy of the initial weights)."""
    loop, generator = BareLoop(setting.backbone, setting.cfg), torch.Generator().manual_seed(SEED)

    def run(steps: int) -> list[float]:
        torch.set_num_threads(threads)
        return loop.train(setting.latents, setting.labels, steps, generator)

    return run


def seconds_per_step(run: Run, k1: int, k2: int) -> float:
    """(T(k2) - T(k1)) / (k2 - k1), after an untimed k1 call that warms caches and thread pools."""
    run(k1)
    return (timed(run, k2)[0] - timed(run, k1)[0]) / (k2 - k1)


def interleaved(runs: dict[str, Run], scale: Scale) -> dict[str, list[float]]:
    """Per-step seconds of every run in each of `scale.repeats` rounds, order flipped each round."""
    names = list(runs)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(scale.repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            out[name].append(seconds_per_step(runs[name], scale.k1, scale.k2))
    return out


def profile_top(run: Run, steps: int, n: int = 10) -> list[str]:
    """The `n` functions with the most self time over `steps` steps of `run` (cProfile)."""
    profiler = cProfile.Profile()
    profiler.runcall(run, steps)
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (calls, ncalls, self, cumulative, _)
    top = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:n]
    return [
        f"{tt:8.4f}s self {ct:8.4f}s cum {nc:7d} calls  {Path(f).name}:{line}({name})"
        for (f, line, name), (_, nc, tt, ct, _) in top
    ]


def measure(scale: str, workdir: Path) -> Measurement:
    """harness_overhead_ratio: bench's median seconds per step / the bare loop's."""
    sc, threads = SCALES[scale], torch.get_num_threads()
    setting = phantom_setting(sc.batch_size)
    try:
        runs = {"bench": bench_run(setting, threads), "bare": bare_run(setting, threads)}
        times = interleaved(runs, sc)
        bench_s, bare_s = median(times["bench"]), median(times["bare"])
        ratio = bench_s / bare_s
        details = {
            "bench_s_per_step": bench_s,
            "bare_s_per_step": bare_s,
            "per_repeat_s": times,
            "repeats": sc.repeats,
            "k1": sc.k1,
            "k2": sc.k2,
            "threads": threads,
            "batch_size": setting.cfg.batch_size,
            "sample_shape": list(setting.backbone.sample_shape),
            "train_rows": len(setting.labels),
            "parameters": setting.parameters,
            "precision": "fp32",
            "device": str(device()),
            "target": TARGET,
            "timing": "per step = (T(k2 steps) - T(k1 steps)) / (k2 - k1) of whole calls, "
            "cancelling each call's setup; median over interleaved repeats",
        }
        if not ratio <= TARGET:  # also a NaN ratio
            details["profile"] = profile_top(runs["bench"], sc.k2)
    finally:
        torch.set_num_threads(threads)
    return Measurement({"harness_overhead_ratio": ratio}, details)
