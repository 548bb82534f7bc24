"""The training loop, readable top to bottom: flow matching on the shared backbone.

Every method trains with the same optimiser, schedule and batches; only `method.loss` (and the
source and conditions it uses) differs. All random draws come from one CPU generator seeded by
the cell seed, so a run is reproducible on any device. A checkpoint (every `train.checkpoint_minutes`
of training, by default 10, and/or every `train.checkpoint_every` steps) holds the whole
TrainState, so a killed run resumes from it and continues bit for bit. With `train.sharding='fsdp'`
the model is sharded across the processes (bench.pipeline.sharding) and so are its checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from safetensors.torch import load_file, save_file

from bench.config.train import TrainConfig
from bench.errors import BenchError, CellFailed
from bench.method import TrainBatch
from bench.pipeline import sharding
from bench.pipeline.convergence import convergence
from bench.runtime import distributed, progress
from bench.runtime.transfer import gather, to_device
from bench.store.artifacts import discard, is_complete, load_state, save_state, stage_dir

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What training reports into the record."""

    steps: int
    seconds: float
    loss_trace: list = field(default_factory=list)  # [(step, mean loss over the window)]
    resumed_from: int | None = None
    convergence: dict | None = None  # bench.pipeline.convergence: did the loss reach a plateau?
    batch_size: int | None = None  # the batch that ran: train.batch_size, or the whole set if smaller


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


@dataclass
class TrainState:
    """Everything later steps or the record depend on, so a checkpoint restores a run exactly.

    The weights are the model's; the rest (optimizer and schedule, EMA, mixed-precision scaler,
    RNGs, the epoch sampler's position, the loss trace with its unfinished log window and the
    seconds spent) goes through `state_dict`, stored without pickle (bench.store.artifacts.save_state).
    """

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: object
    generator: torch.Generator
    batches: EpochSampler
    step: int = 0
    loss_trace: list = field(default_factory=list)  # [(step, mean loss over the window)]
    window: list = field(default_factory=list)  # losses since the last trace entry
    history: list = field(default_factory=list)  # every step's loss, for the convergence check
    seconds: float = 0.0
    sharded: bool = False  # FSDP: weights and AdamW state live in shards (bench.pipeline.sharding)
    shard_writer: sharding.AsyncShardWriter | None = None  # sharded checkpoints, written in the background
    checkpoint_seconds: float = 0.0  # how long the last checkpoint held training up (CheckpointClock)

    @property
    def weights(self) -> dict:
        """The model's whole state dict (unwrapped from accelerate; unsharded training only: a
        sharded model's weights are gathered by `sharding.gather_into`)."""
        return self.accelerator.unwrap_model(self.model).state_dict()

    def state_dict(self) -> dict:
        """The non-weight state, as nested dicts of tensors and JSON values."""
        scaler = self.accelerator.scaler
        out = {
            "step": self.step,
            "scheduler": self.scheduler.state_dict(),
            "rng": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "sampler": self.batches.state_dict(),
            "loss_trace": self.loss_trace,
            "window": self.window,
            "history": self.history,
            "seconds": self.seconds,
        }
        if not self.sharded:  # sharded AdamW state is written with the weight shards
            out["optimizer"] = self.optimizer.state_dict()
        if self.ema is not None:
            out["ema"] = self.ema.state_dict()
        if scaler is not None and scaler.is_enabled():
            out["scaler"] = scaler.state_dict()
        if torch.cuda.is_available():
            out["cuda_rng"] = torch.cuda.get_rng_state_all()
        return out

    # what every checkpoint holds (`state_dict` above); "ema" too when EMA is on
    REQUIRED = ("scheduler", "rng", "torch_rng", "sampler", "step", "seconds", "loss_trace", "window")

    def check_state(self, state, weights: dict | None) -> None:
        """ValueError unless a checkpoint can be loaded whole: every key present, the weights
        those of this model (same names and shapes) and finite. Checked before anything is
        loaded, so a damaged checkpoint is skipped without leaving a half-restored state.
        Sharded weights (`weights` None) are checked as they are read (bench.pipeline.sharding)."""
        if not isinstance(state, dict):
            raise ValueError(f"trainer state is a {type(state).__name__}, not a mapping")
        expected = (
            self.REQUIRED
            + (() if self.sharded else ("optimizer",))
            + (("ema",) if self.ema is not None else ())
        )
        missing = [k for k in expected if k not in state]
        if missing:
            raise ValueError(f"trainer state lacks {', '.join(missing)}")
        if weights is None:
            return
        own = self.accelerator.unwrap_model(self.model).state_dict()
        wrong = sorted(set(own) ^ set(weights)) or [
            k for k in own if tuple(own[k].shape) != tuple(weights[k].shape)
        ]
        if wrong:
            raise ValueError(f"weights do not match the model ({wrong[0]})")
        if not all(bool(torch.isfinite(w).all()) for w in weights.values() if w.is_floating_point()):
            raise ValueError("a weight is NaN or infinite")

    def load_state_dict(self, state: dict, weights: dict | None) -> None:
        """Continue exactly where `state_dict` (and the weights) were taken; sharded weights and
        AdamW state are loaded from their shards beforehand (`_resume`)."""
        if not self.sharded:
            self.accelerator.unwrap_model(self.model).load_state_dict(weights)
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        self.batches.load_state_dict(state["sampler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
            self.ema.to(self.accelerator.device)
        if "scaler" in state and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step, self.seconds = int(state["step"]), float(state["seconds"])
        self.loss_trace = [tuple(entry) for entry in state["loss_trace"]]
        self.window = list(state["window"])
        self.history = list(state.get("history", []))  # absent from checkpoints of older versions


def train(
    method,
    backbone,
    latents,
    labels,
    cfg: TrainConfig,
    seed: int,
    checkpoint_dir: Path | None = None,
    config_hash: str = "",
    tracker=None,
) -> TrainResult:
    """Train `backbone` in place with `method`'s loss on (latents, labels).

    With `checkpoint_dir`, a checkpoint is written every `cfg.checkpoint_every` steps and after
    every `cfg.checkpoint_minutes` of training (`CheckpointClock`), and a rerun resumes from the
    newest complete one for `config_hash`, continuing bit for bit as if never interrupted
    (weights and loss trace). A non-finite loss raises CellFailed at the next read of the losses
    (every `cfg.sync_every` steps and before every checkpoint) and keeps the last good checkpoint.
    Launched on several processes (torchrun, accelerate), accelerate wraps the backbone in DDP:
    each rank trains on its micro-batches of every global batch (`micro_batch_rows`) and the
    ranks keep identical weights; only the main process writes checkpoints.

    With `cfg.log_with`, every process computes the gradient norm of every `cfg.track_every`-th
    step and reads the losses at every `cfg.track_images_every`-th too; the main process hands
    them to `tracker` (bench.pipeline.tracking.CellTracker; None elsewhere), which logs them
    after each read of the losses. Nothing else changes: the weights are those of an untracked run.
    """
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if cfg.compile:
        backbone.compile_blocks()  # a backbone without repeated blocks says so (bench.backbone)
    state = _setup(backbone, cfg, seed, len(labels))
    if state.batches.batch_size < cfg.batch_size:
        log.warning(
            "train.batch_size=%d exceeds the %d training samples: every step uses %d of them, a "
            "multiple of train.micro_batches=%d (recorded as the batch size that ran)",
            cfg.batch_size,
            len(labels),
            state.batches.batch_size,
            cfg.micro_batches,
        )
    method.to(state.accelerator.device)
    resumed_from = _resume(checkpoint_dir, config_hash, state)
    if tracker is not None:
        tracker.begin(state.step)  # before the clock: a wandb login is no training
        if cfg.track_images_every and (state.sharded or cfg.compile):
            log.info(
                "train.track_images_every: no sample grids while training %s (sampling would %s)",
                "sharded" if state.sharded else "compiled",
                "need every process" if state.sharded else "recompile the blocks",
            )
    t0, seconds_before = time.perf_counter(), state.seconds
    clock = CheckpointClock(cfg, enabled=checkpoint_dir is not None, cost=lambda: state.checkpoint_seconds)
    draws, losses = None, []  # the next step's batch drawn ahead; losses not yet read on the host
    for step in progress.bar(
        range(state.step, cfg.steps), "train", total=cfg.steps, unit="step", initial=state.step
    ):
        if draws is None:
            draws = _draw(method, state, latents, labels, cfg)
        tracked = _tracked(cfg, cfg.track_every, step + 1)  # the same on every process
        lr = state.optimizer.param_groups[0]["lr"] if tracked else 0.0  # before the schedule moves it
        loss, grad_norm = _step(method, state, draws, cfg, tracked)
        losses.append(loss)
        if tracked and tracker is not None:
            tracker.step_done(step + 1, lr, grad_norm)
        state.step, draws = step + 1, None
        checkpoint = clock.due(state.step)
        images = _tracked(cfg, cfg.track_images_every, state.step) and not (state.sharded or cfg.compile)
        if not checkpoint and state.step < cfg.steps:  # a checkpoint holds the generator before them
            draws = _draw(method, state, latents, labels, cfg)  # while the device runs this step
        if checkpoint or images or state.step % cfg.sync_every == 0 or state.step == cfg.steps:
            _read_losses(losses, state, cfg)  # raises on a non-finite loss, before any checkpoint
            if tracker is not None:
                tracker.losses_read(state.step, state.history, state.batches.batch_size)
        if checkpoint:
            state.seconds = seconds_before + time.perf_counter() - t0
            _checkpoint(checkpoint_dir, config_hash, state)
        if images and tracker is not None:
            tracker.log_images(state.step, state.accelerator.unwrap_model(state.model), latents, labels)
    if cfg.compile:  # sampling runs the blocks eagerly, at its own batch sizes and precision
        backbone.uncompile_blocks()
    if state.ema is not None:
        state.ema.copy_to(backbone.parameters())
    if state.shard_writer is not None:  # the last checkpoint on disk before anyone moves on
        state.shard_writer.close()
    if state.sharded:  # the trained shards, gathered into the plain backbone on every process
        sharding.gather_into(state.model, backbone)
    seconds = seconds_before + time.perf_counter() - t0
    return TrainResult(
        cfg.steps,
        seconds,
        list(state.loss_trace),
        resumed_from,
        convergence(state.history, cfg.convergence_window, cfg.convergence_tol),
        batch_size=state.batches.batch_size,
    )


class CheckpointClock:
    """When to write a checkpoint: every `checkpoint_every` steps, and once `checkpoint_minutes`
    of wall time have passed since the last one (or the start of this process's training).

    The time rule also keeps checkpoints under BUDGET (2 %) of the training time: the next one is
    due no sooner than the last one's measured cost (`cost()`: the seconds it held training up)
    divided by BUDGET, since the last one began. A sharded checkpoint holds training up only while
    the shards are copied to host memory (they are written in the background), so the 10 minutes
    rule; a large unsharded one, written synchronously, stretches the interval to stay in budget.
    Checkpoints asked for by step (`checkpoint_every`) are written when asked, whatever they cost.

    The time rule is decided on the main process and shared (`distributed.agree`), so all ranks
    checkpoint at the same step whatever their clocks say; with several processes it is looked at
    every AGREE_EVERY steps only, so the shared decision costs one small broadcast per that many steps.
    """

    AGREE_EVERY = 10
    BUDGET = 0.02  # the most of the training time that time-based checkpoints may hold it up

    def __init__(self, cfg: TrainConfig, enabled: bool = True, cost: Callable[[], float] = lambda: 0.0):
        self.every = cfg.checkpoint_every if enabled else 0
        self.seconds = 60.0 * cfg.checkpoint_minutes if enabled else 0.0
        self.cost = cost
        self._last = time.perf_counter()

    def interval(self) -> float:
        """Seconds from the start of one time-based checkpoint to the next: the configured minutes,
        or longer where the last checkpoint's cost would exceed BUDGET of them."""
        return max(self.seconds, self.cost() / self.BUDGET)

    def due(self, step: int) -> bool:
        """Whether to checkpoint after `step`; restarts the timer when it says yes."""
        by_steps = bool(self.every) and step % self.every == 0
        look = bool(self.seconds) and (distributed.world() == 1 or step % self.AGREE_EVERY == 0)
        by_time = look and distributed.agree(time.perf_counter() - self._last >= self.interval())
        if by_steps or by_time:
            self._last = time.perf_counter()
        return by_steps or by_time


def _setup(backbone, cfg: TrainConfig, seed: int, n: int) -> TrainState:
    """The model (DDP through accelerate, or sharded), optimiser, warm-up schedule, EMA, seeded
    generator and sampler of a fresh run."""
    accelerator = _accelerator(cfg.mixed_precision)
    if cfg.activation_checkpointing:
        backbone.enable_activation_checkpointing()  # a backbone that cannot says so (bench.backbone)
    sharded = cfg.sharding == "fsdp" and accelerator.num_processes > 1
    if cfg.sharding == "fsdp" and not sharded:
        log.info("train.sharding='fsdp' on one process: nothing to shard, training unsharded")
    if sharded:
        model = sharding.shard(backbone, accelerator.device, cfg.mixed_precision)
        optimizer = _adamw(model.parameters(), cfg, accelerator.device, sharded=True)
    else:
        optimizer = _adamw(backbone.parameters(), cfg, accelerator.device)
        model, optimizer = accelerator.prepare(backbone, optimizer)
    warmup = max(cfg.warmup_steps, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    generator = torch.Generator().manual_seed(seed)
    return TrainState(
        accelerator,
        model,
        optimizer,
        scheduler,
        _make_ema(backbone, cfg.ema_decay),
        generator,
        EpochSampler(n, runnable_batch(cfg, n), generator),
        sharded=sharded,
    )


def runnable_batch(cfg: TrainConfig, n: int) -> int:
    """train.batch_size, or for a smaller training set the most of its n rows that split into
    train.micro_batches equal parts."""
    if cfg.batch_size <= n:
        return cfg.batch_size
    if n < cfg.micro_batches:
        raise BenchError(
            f"the {n} training samples cannot fill train.micro_batches={cfg.micro_batches} parts; "
            f"set train.micro_batches to at most {n}"
        )
    return n // cfg.micro_batches * cfg.micro_batches


def _accelerator(mixed_precision: str) -> Accelerator:
    """An Accelerator at this cell's precision. accelerate fixes the precision once per process and
    refuses another; a grid whose cells train at different precisions (the real datasets' bf16
    preset beside an fp32 dataset) resets that part of its state between them. The process state
    (devices, torch.distributed) is kept."""
    from accelerate.state import AcceleratorState

    held = AcceleratorState._shared_state
    if held and held.get("_mixed_precision") != mixed_precision:
        AcceleratorState._reset_state()
    # DDP's gradients as views into its all-reduce buckets: one copy of the gradients, not two
    buckets = DistributedDataParallelKwargs(gradient_as_bucket_view=True)
    return Accelerator(
        cpu=not torch.cuda.is_available(), mixed_precision=mixed_precision, kwargs_handlers=[buckets]
    )


def _adamw(params, cfg: TrainConfig, device: torch.device, sharded: bool = False) -> torch.optim.AdamW:
    """AdamW, fused: one kernel over all parameters instead of a Python loop of small ops per
    parameter. On a GPU it also avoids the foreach path's parameter-sized temporaries and reads
    no step counter back to the host; on the CPU it took the tiny FLUX's optimiser step (110
    tensors) from 14.7 to 4.5 ms (1 thread, issue 26). The same update to float rounding; CPU
    results before issue 26 were computed with the per-parameter loop. Sharded weights (DTensors
    of FSDP on gloo) keep torch's default there."""
    fused = None if sharded and device.type != "cuda" else True
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


@dataclass
class Draws:
    """One step's batch and randomness, drawn ahead of it: this rank's rows on the device."""

    x1: torch.Tensor  # latents of this rank's rows
    labels: torch.Tensor
    index: torch.Tensor  # their training-set row indices
    eps: torch.Tensor
    t: torch.Tensor
    parts: list  # (micro-batch number, its rows among the above), `micro_batch_rows`
    seeds: list | None  # one generator seed per micro-batch when there are several


def _draw(method, state: TrainState, latents, labels, cfg: TrainConfig) -> Draws:
    """The next step's batch indices, noise, times and micro-batch seeds, from the run's generator.

    The draws are those of the whole global batch, in this fixed order, on every rank (so all
    ranks stay in step); only this rank's rows go to the device. `train` calls it right after the
    previous step, while the device still runs that step, and after the step's loss has drawn
    whatever it draws from the same generator: the order of draws, hence every number, is that of
    a loop drawing at the start of each step.
    """
    generator, m, device = state.generator, cfg.micro_batches, state.accelerator.device
    full = state.batches.next()
    eps = torch.randn((len(full), *latents.shape[1:]), generator=generator)
    t = method.sample_time(len(full), generator)
    # a loss that draws randomness gets one generator per micro-batch, whichever rank runs it
    seeds = torch.randint(0, 2**62, (m,), generator=generator).tolist() if m > 1 else None
    parts = micro_batch_rows(len(full), m, state.accelerator.process_index, state.accelerator.num_processes)
    mine = slice(parts[0][1].start, parts[-1][1].stop)  # a rank's micro-batches are contiguous
    local = [(k, slice(rows.start - mine.start, rows.stop - mine.start)) for k, rows in parts]
    rows = full[mine]
    # pinned, non-blocking copies (bench.runtime.transfer). The latents stay on the host: resident on the
    # GPU they would take the training set's size of device memory, to save one batch-sized copy
    # per step that overlaps the step before
    return Draws(
        gather(latents, rows, device),
        to_device(labels[rows], device),
        to_device(rows, device),
        to_device(eps[mine], device),
        to_device(t[mine], device),
        local,
        seeds,
    )


def _tracked(cfg: TrainConfig, every: int, step: int) -> bool:
    """Whether a tracker (`train.log_with`) is sent something at `step`, every `every` steps (0: never)."""
    return bool(cfg.log_with) and every > 0 and step % every == 0


def _step(
    method, state: TrainState, draws: Draws, cfg: TrainConfig, want_norm: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One optimisation step over the global batch; returns this rank's summed micro-batch losses,
    on the device, unread (`_read_losses` reads them every `train.sync_every` steps), and the
    gradient norm before clipping (on the device; None unless clipping or `want_norm`).

    Each rank trains on its micro-batches (`micro_batch_rows`), each loss scaled so the gradients
    sum to the batch mean's; DDP averages over ranks. Nothing here waits for the device: a
    non-finite loss is found at the next read, which stops the cell before any checkpoint.
    """
    accelerator, m = state.accelerator, cfg.micro_batches
    scale, total = accelerator.num_processes / m, None
    for j, (k, rows) in enumerate(draws.parts):
        last = j == len(draws.parts) - 1
        with contextlib.nullcontext() if last or state.sharded else accelerator.no_sync(state.model):
            gen = torch.Generator().manual_seed(draws.seeds[k]) if draws.seeds else state.generator
            loss = _micro_loss(
                method,
                state,
                draws.x1[rows],
                draws.labels[rows],
                draws.index[rows],
                draws.eps[rows],
                draws.t[rows],
                gen,
            )
            accelerator.backward(loss * scale if scale != 1 else loss)
        part = loss.detach().float()
        total = part if total is None else total + part
    grad_norm = None
    if cfg.grad_clip > 0 and state.sharded:  # the norm of the whole gradient, over every shard
        grad_norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip)
    elif cfg.grad_clip > 0:
        grad_norm = accelerator.clip_grad_norm_(state.model.parameters(), cfg.grad_clip)
    elif want_norm:
        grad_norm = _grad_norm(state)
    if want_norm and hasattr(grad_norm, "full_tensor"):  # a DTensor (sharded): one norm for all shards
        grad_norm = grad_norm.full_tensor()
    state.optimizer.step()
    state.scheduler.step()
    # DDP: the gradients are views into its all-reduce buckets (`_accelerator`); zeroed in place they
    # stay so, where set to None the next micro-batches would allocate a second copy beside them
    state.optimizer.zero_grad(set_to_none=not _ddp(state))
    if state.ema is not None:
        state.ema.step(state.model.parameters())
    return total, grad_norm


def _grad_norm(state: TrainState) -> torch.Tensor:
    """The global gradient norm without clipping (a tracker's, `train.grad_clip=0`): read from the
    gradients, which stay untouched; unscaled under fp16's loss scaling."""
    grads = [p.grad for p in state.model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    scaler = state.accelerator.scaler
    if scaler is not None and scaler.is_enabled():
        norm = norm / scaler.get_scale()
    return norm


def _ddp(state: TrainState) -> bool:
    """Whether accelerate wrapped the model in DDP (several processes, unsharded)."""
    return state.accelerator.num_processes > 1 and not state.sharded


def _read_losses(losses: list, state: TrainState, cfg: TrainConfig) -> None:
    """Read the unread steps' losses on the host (one wait for the device, and with several
    processes one all-reduce, for all of them) and file them as each step would have: the window
    of the loss trace, the history the convergence rule reads, a trace entry every `log_every`
    steps. The first non-finite one stops the cell, named by its step. Empties `losses`."""
    if not losses:
        return
    totals, m = torch.stack(losses), cfg.micro_batches
    if state.accelerator.num_processes > 1:
        totals = state.accelerator.reduce(totals, "sum")
    values = (totals / m if m > 1 else totals).tolist()  # the float32 mean, as a step's float() read it
    first = state.step - len(values) + 1
    losses.clear()
    for step, value in enumerate(values, first):
        if not math.isfinite(value):
            raise CellFailed(
                f"non-finite training loss ({value}) at step {step}; lower train.lr or enable train.grad_clip"
            )
        state.window.append(value)
        state.history.append(value)
        if step % cfg.log_every == 0 or step == cfg.steps:
            state.loss_trace.append((step, sum(state.window) / len(state.window)))
            state.window = []


def _micro_loss(method, state: TrainState, x1, y, idx, eps, t, generator) -> torch.Tensor:
    """`method.loss` on one micro-batch (rows `idx` of the data). The loop hands its tensors over
    on the device already (`_draw`); CPU ones are moved there."""
    device = state.accelerator.device
    cond = method.training_condition(y, idx).to(device)
    with state.accelerator.autocast():
        return method.loss(
            state.model, TrainBatch(x1=x1.to(device), cond=cond, eps=eps, t=t, generator=generator)
        )


def micro_batch_rows(batch: int, parts: int, rank: int, world: int) -> list[tuple[int, slice]]:
    """The (index, rows) of the contiguous equal micro-batches of a global batch that `rank` of
    `world` processes trains on: micro-batches k*world/parts ... go to rank k*world // parts."""
    if batch % parts:
        raise BenchError(
            f"a batch of {batch} does not split into train.micro_batches={parts} "
            "equal parts; use a train.batch_size (at most the training-set size) that does"
        )
    if parts % world:
        raise BenchError(
            f"train.micro_batches={parts} cannot be shared by {world} processes; "
            f"set train.micro_batches to a multiple of {world}"
        )
    size, per_rank = batch // parts, parts // world
    return [(k, slice(k * size, (k + 1) * size)) for k in range(rank * per_rank, (rank + 1) * per_rank)]


def _make_ema(backbone, decay: float):
    """diffusers' EMAModel over the backbone parameters, or None when disabled."""
    if decay <= 0:
        return None
    from diffusers.training_utils import EMAModel

    return EMAModel(backbone.parameters(), decay=decay)


# -- checkpoints ---------------------------------------------------------------------------
def _checkpoint(folder: Path, config_hash: str, state: TrainState) -> None:
    """Write a checkpoint: the main process alone (every process holds the same weights; the others
    wait until it is complete), or every process its shards, in the background (sharded training).
    Records how long training was held up (`state.checkpoint_seconds`, for CheckpointClock)."""
    start = time.perf_counter()
    if state.sharded:
        _save_sharded_checkpoint(folder, config_hash, state)
    else:
        if state.accelerator.is_main_process:
            _save_checkpoint(folder, config_hash, state)
        state.accelerator.wait_for_everyone()
    state.checkpoint_seconds = time.perf_counter() - start
    log.debug("checkpoint of step %d held training up for %.3f s", state.step, state.checkpoint_seconds)


def _save_checkpoint(folder: Path, config_hash: str, state: TrainState) -> None:
    """Write a resumable checkpoint atomically (safetensors + JSON), then drop older ones.

    Weights that are no longer finite stop the cell instead: a checkpoint is always good.
    """
    weights = state.weights
    if not all(bool(w.isfinite().all()) for w in weights.values() if w.is_floating_point()):
        raise CellFailed(
            f"non-finite weights after step {state.step}; lower train.lr or enable train.grad_clip"
        )
    target = Path(folder) / f"step_{state.step:08d}"
    with stage_dir(target, config_hash, step=state.step) as tmp:
        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / "model.safetensors"))
        save_state(tmp, "trainer_state", state.state_dict())
    _drop_older(folder, target)


def _save_sharded_checkpoint(folder: Path, config_hash: str, state: TrainState) -> None:
    """Every process stages its shards for the main process's staging folder and writes them in the
    background (`sharding.AsyncShardWriter`); the main process adds the trainer state now, and its
    writer thread publishes the folder (manifest, then rename: atomic as ever) once every shard is
    on disk, then drops the older checkpoints. A kill before that leaves the previous checkpoint."""
    if state.shard_writer is None:  # a collective, at the same step on every rank
        state.shard_writer = sharding.AsyncShardWriter()
    state.shard_writer.wait()  # the previous checkpoint published (or its error raised) first
    if not sharding.all_true(sharding.local_weights_finite(state.model)):
        raise CellFailed(
            f"non-finite weights after step {state.step}; lower train.lr or enable train.grad_clip"
        )
    main, target = state.accelerator.is_main_process, Path(folder) / f"step_{state.step:08d}"
    staged = contextlib.ExitStack()  # the main process's staging folder, open until the writer ends it
    try:
        tmp = (
            staged.enter_context(stage_dir(target, config_hash, step=state.step, sharded=True))
            if main
            else None
        )
        tmp = Path(distributed.agree(str(tmp) if main else None))
        if main:
            save_state(tmp, "trainer_state", state.state_dict())
        state.shard_writer.start(
            tmp,
            state.model,
            state.optimizer,
            lambda error: _end_staged(staged, folder, target, error) if main else None,
        )
    except BaseException as exc:
        staged.__exit__(type(exc), exc, exc.__traceback__)  # the staging folder removed
        raise


def _end_staged(
    staged: contextlib.ExitStack, folder: Path, target: Path, error: BaseException | None
) -> None:
    """Publish a staged sharded checkpoint (manifest, rename) and drop the older ones, or on
    `error` remove its staging folder. Runs in the main process's writer thread."""
    if error is not None:
        staged.__exit__(type(error), error, error.__traceback__)
        return
    staged.close()
    _drop_older(folder, target)


def _drop_older(folder: Path, target: Path) -> None:
    """Discard the checkpoints before `target`: only the newest is needed to resume."""
    for old in sorted(Path(folder).glob("step_*")):
        if old != target and old.is_dir():
            discard(old)


def _resume(folder, config_hash: str, state: TrainState) -> int | None:
    """Load the newest complete, readable checkpoint for this config into `state`; its step or None.

    A checkpoint without a manifest (interrupted while written) or of another config is ignored;
    one whose files cannot be read or do not validate (TrainState.check_state) is skipped with a
    warning for an older one, or training starts afresh.
    """
    if not folder or not Path(folder).is_dir():
        return None
    done = [p for p in sorted(Path(folder).glob("step_*")) if is_complete(p, config_hash)]
    for latest in reversed(done):
        try:  # read everything before touching `state`, so a damaged file changes nothing
            saved = _read_checkpoint(latest, state)
        except Exception as exc:  # safetensors, JSON and OS errors alike
            log.warning(
                "checkpoint %s is unreadable (%s: %s); skipped",
                latest,
                type(exc).__name__,
                (str(exc).splitlines() or [""])[0],
            )
            continue
        state.load_state_dict(*saved)
        log.info("resumed training from %s (step %d)", latest, state.step)
        return state.step
    return None


def _read_checkpoint(folder: Path, state: TrainState) -> tuple:
    """(trainer state, weights) of a checkpoint, checked whole; for sharded training the weights
    and AdamW state are restored from the shards here (None in their place), once every process
    has read and checked its part."""
    if not state.sharded:
        saved = load_state(folder, "trainer_state"), load_file(str(folder / "model.safetensors"))
        state.check_state(*saved)
        return saved
    trainer_state, error = None, None
    try:
        trainer_state = load_state(folder, "trainer_state")
        state.check_state(trainer_state, None)
    except Exception as exc:
        error = exc
    if not sharding.all_true(error is None):  # every process skips this checkpoint together
        raise error or ValueError("another process could not read its part")
    sharding.load_shards(folder, state.model, state.optimizer)
    return trainer_state, None
