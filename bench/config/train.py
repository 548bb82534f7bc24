"""The `train` settings: optimiser and schedule shared by every method (bench.pipeline.trainer)."""

from __future__ import annotations

from collections.abc import Sequence

from bench.config.checks import USE, Settings, require, setting, settings
from bench.config.extras import installed

PRECISIONS = ("no", "fp16", "bf16")  # accelerate's mixed precision
SHARDINGS = ("none", "fsdp")
# the experiment trackers `train.log_with` may name (accelerate's), each with the package it needs
# and the optional extra of medaug-bench that installs it (bench.pipeline.tracking)
TRACKERS = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
}
# The convergence rule's defaults (bench.pipeline.convergence).
FRACTION = 0.2  # [our default] the window: the last 20 % of steps
# [our default] converged when the last 20 % of steps lowered the loss by < 5 %. Measured: synthetic2d
# at its 3,000 steps drifts down 1-3 % over the last 20 % (sample metrics no longer move), while
# phantom_lt at its former 300 steps was still falling by tens of percent; 5 % separates the two.
TOL = 0.05


@settings("train", wording=USE)
class TrainConfig(Settings):
    """Optimiser and schedule shared by every method; checked at `bench validate` time, before
    anything trains."""

    steps: int = setting(2000, minimum=1)
    batch_size: int = setting(256, minimum=1)
    lr: float = setting(1e-3, above=0)
    weight_decay: float = setting(0.0, minimum=0)
    warmup_steps: int = setting(0, minimum=0)
    grad_clip: float = setting(1.0, minimum=0)  # max global grad norm; 0 disables clipping
    # e.g. 0.999 samples from the EMA weights
    ema_decay: float = setting(0.0, minimum=0, below=1, note="0 disables EMA")
    mixed_precision: str = setting("no", choices=PRECISIONS)
    checkpoint_every: int = setting(0, minimum=0)  # steps between resumable checkpoints; 0 = none
    # minutes of training between resumable checkpoints (on by default, so a killed long training
    # resumes instead of restarting; short trainings never write one); 0 = none
    checkpoint_minutes: float = setting(10.0, minimum=0, note="0 writes no time-based checkpoint")
    log_every: int = setting(100, minimum=1)  # steps per entry of the recorded loss trace
    threads: int = setting(0, minimum=0)  # torch CPU threads; 0 keeps torch's default
    # equal parts of each batch whose gradients are summed (accumulation); N processes share them
    # out, so micro_batches must be a multiple of N. 2 trains bit-identical weights on 1 or 2 processes
    micro_batches: int = setting(1, minimum=1)
    # training counts as converged when the mean loss of the last `convergence_window` of the steps
    # is less than `convergence_tol` (relative) below that of the window before (bench.pipeline.convergence)
    convergence_window: float = setting(FRACTION, above=0, maximum=0.5, note="a fraction of the steps")
    convergence_tol: float = setting(TOL, above=0, note="a relative change")
    # 'fsdp' shards weights, gradients and AdamW state across the cell's processes (FSDP2, one unit
    # per transformer block; bench.pipeline.sharding); 'none' keeps a whole copy per process (DDP)
    sharding: str = setting("none", choices=SHARDINGS)
    # recompute each block's activations in the backward pass instead of keeping them: less memory
    # for about a third more compute, same results (FLUX backbones; not part of the config hash)
    activation_checkpointing: bool = setting(False)
    # steps between reads of the loss on the host (each read waits for the device to finish its
    # queued work): the loss trace and convergence rule see every step's loss all the same, and a
    # non-finite loss stops training at the read after it, within this many steps. 10 matches the
    # interval at which several processes already agree on the checkpoint clock (one collective
    # per 10 steps) and costs under 1% of a run's steps if a NaN must be found. Not hashed.
    sync_every: int = setting(10, minimum=1)
    # torch.compile each repeated block of the backbone (FLUX's transformer blocks; a backbone
    # without them says so): faster steps after a compilation of about a minute. Part of the
    # config hash: compiled kernels round differently (weights 1.6e-6 apart after 6 tiny CPU steps)
    compile: bool = setting(False)
    # experiment trackers, through accelerate (bench.pipeline.tracking, docs/tracking.md): None, one of
    # TRACKERS or a list of them. Logging changes no result, so these three feed no hash
    log_with: Sequence[str] | None = setting(
        None, what="a tracker name or a list of them (tensorboard, wandb, mlflow)", none="no tracker"
    )
    # steps between the tracker's scalars (loss, learning rate, gradient norm, step time, samples/s)
    track_every: int = setting(10, minimum=1)
    # steps between sample grids in the tracker (a few samples per class; vector data: a scatter)
    track_images_every: int = setting(0, minimum=0, note="0 logs no sample grid")

    def __post_init__(self):
        if isinstance(self.log_with, str):  # one tracker named alone: a list of one
            self.log_with = [self.log_with]
        super().__post_init__()
        require(_tracker_checks(self.log_with))
        # what sharded training supports: bf16 (not fp16, whose loss scaler FSDP does not share)
        # and no EMA (its shadow weights would need sharding too)
        fsdp = self.sharding == "fsdp"
        require(
            [
                (
                    self.batch_size % self.micro_batches == 0,
                    f"train.batch_size={self.batch_size} does not split into "
                    f"train.micro_batches={self.micro_batches} equal parts; use a multiple",
                ),
                (
                    not (fsdp and self.mixed_precision == "fp16"),
                    "train.sharding='fsdp' trains in bf16, not fp16: set train.mixed_precision='bf16'",
                ),
                (
                    not (fsdp and self.ema_decay > 0),
                    "train.sharding='fsdp' does not keep an EMA of the sharded weights yet: "
                    "set train.ema_decay=0 or train.sharding='none'",
                ),
            ]
        )


def _tracker_checks(names) -> list[tuple[bool, str]]:
    """Each tracker of `train.log_with` known, and its package installed (a one-line error naming
    the extra that installs it, before anything trains)."""
    checks = []
    for name in names or ():
        known = name in TRACKERS
        checks.append((known, f"train.log_with={name!r}: use None or any of {', '.join(TRACKERS)}"))
        if known:
            package, extra = TRACKERS[name]
            checks.append(
                (
                    tracker_installed(package),
                    f"train.log_with={name!r} needs the {package} package: pip install 'medaug-bench[{extra}]'",
                )
            )
    return checks


def tracker_installed(package: str) -> bool:
    """Whether a tracker's package can be imported (looked up, not imported: wandb and mlflow are slow
    to import, and the config is checked in every cell's validation)."""
    return installed(package)
