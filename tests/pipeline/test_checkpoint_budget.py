"""Time-based checkpoints cost at most CheckpointClock.BUDGET (2 %) of the training time: the
interval stretches to the last checkpoint's measured cost / BUDGET, and stays the configured
minutes when checkpoints are cheap. Fake clock: each step takes 25 s, each checkpoint a set cost."""

import pytest
import torch

from bench.backbones.mlp import MLPBackbone
from bench.config.train import TrainConfig
from bench.method import Method
from bench.pipeline.trainer import CheckpointClock, train

STEP_SECONDS = 25.0


class FakeTime:
    """Stands in for bench.pipeline.trainer's `time`: it moves only when a step or a checkpoint runs."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


class TimedMethod(Method):
    """A method whose every training step takes STEP_SECONDS of the fake clock."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock

    def loss(self, backbone, batch):
        self.clock.now += STEP_SECONDS
        return super().loss(backbone, batch)


def checkpoint_starts(tmp_path, monkeypatch, cost: float, steps: int) -> list[float]:
    """The fake times at which the checkpoints of a run with checkpoint_minutes=1 began."""
    import bench.pipeline.trainer as trainer

    clock, starts = FakeTime(), []
    monkeypatch.setattr(trainer, "time", clock)
    save = trainer._save_checkpoint

    def costly_save(*args):
        starts.append(clock.now)
        clock.now += cost
        save(*args)

    monkeypatch.setattr(trainer, "_save_checkpoint", costly_save)
    torch.manual_seed(0)
    method = TimedMethod(clock)
    method.setup(n_classes=2)
    backbone = MLPBackbone((2,), method.vocab_size, method.n_tokens, hidden=8, depth=1)
    x, y = torch.randn(64, 2), torch.arange(64) % 2
    cfg = TrainConfig(steps=steps, batch_size=16, lr=1e-3, log_every=10, checkpoint_minutes=1.0)
    train(method, backbone, x, y, cfg, seed=0, checkpoint_dir=tmp_path, config_hash="h")
    return starts


def test_cheap_checkpoints_keep_the_configured_interval(tmp_path, monkeypatch):
    starts = checkpoint_starts(tmp_path, monkeypatch, cost=0.5, steps=12)  # 0.5 s / 2 % = 25 s < 60 s
    # one minute of steps (3 of 25 s) plus the half second the previous checkpoint took
    assert starts == [75.0, 150.5, 226.0, 301.5]


def test_costly_checkpoints_stretch_the_interval_to_the_budget(tmp_path, monkeypatch):
    cost = 30.0  # every minute would spend 40 % of the time checkpointing
    starts = checkpoint_starts(tmp_path, monkeypatch, cost=cost, steps=140)
    assert starts[0] == 75.0  # the first one's cost is not known before it is written
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(gaps) >= 2 and all(gap >= cost / CheckpointClock.BUDGET for gap in gaps)
    # and no later than needed: within one step of the budget's interval
    assert all(gap < cost / CheckpointClock.BUDGET + STEP_SECONDS for gap in gaps)


def test_the_interval_is_the_larger_of_the_minutes_and_the_budget():
    clock = CheckpointClock(TrainConfig(checkpoint_minutes=10.0), cost=lambda: 1.0)
    assert clock.interval() == 600.0  # 1 s / 2 % = 50 s: the 10 minutes rule
    clock = CheckpointClock(TrainConfig(checkpoint_minutes=10.0), cost=lambda: 30.0)
    assert clock.interval() == pytest.approx(1500.0)
