"""The training loop, readable top to bottom: flow matching on the shared backbone.

Every method trains with the same optimiser, schedule and batches; only `method.loss` (and the
source and conditions it uses) differs. All random draws come from one CPU generator seeded by
the cell seed, so a run is reproducible on any device.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import gin
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from bench.artifacts import is_complete, read_manifest, stage_dir
from bench.errors import CellFailed
from bench.method import TrainBatch

log = logging.getLogger(__name__)


@gin.configurable("train")
@dataclass
class TrainConfig:
    """Optimiser and schedule shared by every method."""

    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    ema_decay: float = 0.0  # 0 disables EMA; e.g. 0.999 samples from the EMA weights
    mixed_precision: str = "no"  # "no", "fp16" or "bf16" (accelerate)
    checkpoint_every: int = 0  # steps between resumable checkpoints; 0 = none
    log_every: int = 100  # steps per entry of the recorded loss trace
    threads: int = 0  # torch CPU threads; 0 keeps torch's default


@dataclass
class TrainResult:
    """What training reports into the record."""

    steps: int
    seconds: float
    loss_trace: list = field(default_factory=list)  # [(step, mean loss over the window)]
    resumed_from: Optional[int] = None


class EpochSampler:
    """Mini-batch indices from seeded epoch permutations (every sample once per epoch)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        self.n, self.batch_size, self.generator = n, min(batch_size, n), generator
        self._perm, self._pos = torch.randperm(n, generator=generator), 0

    def next(self) -> torch.Tensor:
        """The next batch of row indices."""
        if self._pos + self.batch_size > self.n:
            self._perm, self._pos = torch.randperm(self.n, generator=self.generator), 0
        idx = self._perm[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return idx

    def state_dict(self) -> dict:
        """The current permutation and position, as tensors (for safetensors checkpoints)."""
        return {"perm": self._perm, "pos": torch.tensor([self._pos])}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where `state_dict` was taken."""
        self._perm, self._pos = state["perm"], int(state["pos"][0])


def train(method, backbone, latents, labels, cfg: TrainConfig, seed: int,
          checkpoint_dir: Optional[Path] = None, config_hash: str = "") -> TrainResult:
    """Train `backbone` in place with `method`'s loss on (latents, labels)."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.mixed_precision)
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(cfg.warmup_steps, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    model, optimizer = accelerator.prepare(backbone, optimizer)
    method.to(accelerator.device)
    ema = _make_ema(backbone, cfg.ema_decay)
    generator = torch.Generator().manual_seed(seed)
    batches = EpochSampler(len(labels), cfg.batch_size, generator)
    start = _resume(checkpoint_dir, config_hash, accelerator.unwrap_model(model), optimizer,
                    scheduler, generator, batches)
    result = TrainResult(steps=cfg.steps, seconds=0.0, resumed_from=start or None)
    window: list[float] = []
    t0 = time.perf_counter()
    for step in tqdm(range(start, cfg.steps), desc="train", initial=start, total=cfg.steps,
                     disable=None, leave=False):
        loss = _step(method, model, accelerator, optimizer, scheduler, ema, batches, generator,
                     latents, labels, cfg)
        window.append(loss)
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            result.loss_trace.append((step + 1, sum(window) / len(window)))
            window = []
        if checkpoint_dir and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
            _save_checkpoint(checkpoint_dir, config_hash, step + 1, accelerator.unwrap_model(model),
                             optimizer, scheduler, generator, batches)
    if ema is not None:
        ema.copy_to(backbone.parameters())
    result.seconds = time.perf_counter() - t0
    return result


def _step(method, model, accelerator, optimizer, scheduler, ema, batches, generator,
          latents, labels, cfg) -> float:
    """One optimisation step; stops the cell on a non-finite loss."""
    idx = batches.next()
    x1 = latents[idx].to(accelerator.device)
    cond = method.training_condition(labels[idx], idx).to(accelerator.device)
    eps = torch.randn(x1.shape, generator=generator)
    t = method.sample_time(len(idx), generator)
    with accelerator.autocast():
        loss = method.loss(model, TrainBatch(x1=x1, cond=cond, eps=eps, t=t, generator=generator))
    value = float(loss.detach())
    if not math.isfinite(value):
        raise CellFailed(f"non-finite training loss ({value}); lower train.lr or enable train.grad_clip")
    accelerator.backward(loss)
    if cfg.grad_clip > 0:
        accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if ema is not None:
        ema.step(model.parameters())
    return value


def _make_ema(backbone, decay: float):
    """diffusers' EMAModel over the backbone parameters, or None when disabled."""
    if decay <= 0:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(backbone.parameters(), decay=decay)


# -- checkpoints ---------------------------------------------------------------------------
def _save_checkpoint(folder: Path, config_hash: str, step: int, model, optimizer, scheduler,
                     generator, batches) -> None:
    """Write a resumable checkpoint atomically, then drop older ones."""
    target = Path(folder) / f"step_{step:08d}"
    with stage_dir(target, config_hash, step=step) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                   tmp / "optimizer.pt")
        save_file({"rng": generator.get_state(), **batches.state_dict()},
                  tmp / "trainer_state.safetensors")
    for old in sorted(Path(folder).glob("step_*"))[:-1]:
        if old != target and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def _resume(folder, config_hash, model, optimizer, scheduler, generator, batches) -> int:
    """Load the newest complete checkpoint for this config; return its step (0 if none)."""
    if not folder or not Path(folder).is_dir():
        return 0
    done = [p for p in sorted(Path(folder).glob("step_*")) if is_complete(p, config_hash)]
    if not done:
        return 0
    latest = done[-1]
    model.load_state_dict(load_file(latest / "model.safetensors"))
    states = torch.load(latest / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(states["optimizer"])
    scheduler.load_state_dict(states["scheduler"])
    state = load_file(latest / "trainer_state.safetensors")
    generator.set_state(state["rng"])
    batches.load_state_dict(state)
    step = int(read_manifest(latest)["step"])
    log.info("resumed training from %s (step %d)", latest, step)
    return step
