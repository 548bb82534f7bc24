"""The training loop: it learns, it is deterministic, and it resumes exactly from a checkpoint."""

import shutil

import pytest
import torch

from bench.backbones.mlp import MLPBackbone
from bench.config.train import TrainConfig
from bench.errors import BenchError, CellFailed
from bench.method import Method
from bench.pipeline.trainer import train
from bench.store.artifacts import MANIFEST, load_state, save_state


def two_class_data(n=256):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = torch.randn(n, 2, generator=g) * 0.1 + torch.stack([y * 4.0 - 2.0, torch.zeros(n)], 1)
    return x, y


def fresh(seed=0):
    torch.manual_seed(seed)
    method = Method()
    method.setup(n_classes=2)
    return method, MLPBackbone((2,), method.vocab_size, method.n_tokens, hidden=32, depth=2)


def weights(module):
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_training_lowers_the_loss_and_is_deterministic():
    x, y = two_class_data()
    cfg = TrainConfig(steps=120, batch_size=64, lr=3e-3, log_every=20)
    (m1, b1), (m2, b2) = fresh(), fresh()
    r1, r2 = train(m1, b1, x, y, cfg, seed=3), train(m2, b2, x, y, cfg, seed=3)
    assert r1.loss_trace[-1][1] < 0.7 * r1.loss_trace[0][1]
    assert [loss for _, loss in r1.loss_trace] == pytest.approx([loss for _, loss in r2.loss_trace], rel=1e-6)
    assert torch.allclose(weights(b1), weights(b2), atol=1e-6)


class Crash(Exception):
    """Stands in for a kill: raised from inside a training step."""


class FailingMethod(Method):
    """Vanilla FM whose loss raises `error` (or returns NaN) from its `at`-th call on."""

    def __init__(self, at: int, error=None):
        super().__init__()
        self.at, self.error, self.calls = at, error, 0

    def loss(self, backbone, batch):
        self.calls += 1
        if self.calls >= self.at:
            if self.error is not None:
                raise self.error
            return super().loss(backbone, batch) * float("nan")  # a diverged loss, graph and all
        return super().loss(backbone, batch)


def failing(at, error=None, seed=0):
    method, backbone = fresh(seed)
    bad = FailingMethod(at, error)
    bad.setup(n_classes=2)
    return bad, backbone


# log_every does not divide checkpoint_every (the checkpoint falls inside a log window) and the
# warm-up outlasts the first checkpoint, so the schedule must be restored too
RESUME_CFG = TrainConfig(steps=60, batch_size=48, lr=3e-3, warmup_steps=30, checkpoint_every=20, log_every=15)


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resume_after_a_crash_continues_bit_exactly(tmp_path, ema_decay):
    x, y = two_class_data()
    cfg = TrainConfig(**{**RESUME_CFG.__dict__, "ema_decay": ema_decay})
    m, ref = fresh()
    straight = train(m, ref, x, y, cfg, seed=1)

    ckpt = tmp_path / "ckpt"
    m, part = failing(at=33, error=Crash())  # dies in step 33, after the checkpoint of step 20
    with pytest.raises(Crash):
        train(m, part, x, y, cfg, seed=1, checkpoint_dir=ckpt, config_hash="h")
    assert sorted(p.name for p in ckpt.iterdir()) == ["step_00000020"]

    m, resumed = fresh(seed=99)  # another init: everything must come from the checkpoint
    result = train(m, resumed, x, y, cfg, seed=1, checkpoint_dir=ckpt, config_hash="h")
    assert result.resumed_from == 20
    assert torch.equal(weights(resumed), weights(ref))
    assert result.loss_trace == straight.loss_trace  # incl. the window 16-30 split by the crash
    assert [s for s, _ in result.loss_trace] == [15, 30, 45, 60]


class FakeTime:
    """Stands in for bench.pipeline.trainer's `time`: the clock moves only when a training step runs."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


class SlowMethod(FailingMethod):
    """Each training step takes 25 s of the fake clock; raises Crash from its `at`-th step."""

    def __init__(self, clock, at=10**9):
        super().__init__(at, Crash())
        self.clock = clock

    def loss(self, backbone, batch):
        self.clock.now += 25.0
        return super().loss(backbone, batch)


def test_time_based_checkpoints_let_a_killed_training_resume(tmp_path, monkeypatch):
    import bench.pipeline.trainer

    clock = FakeTime()
    monkeypatch.setattr(bench.pipeline.trainer, "time", clock)
    x, y = two_class_data()
    cfg = TrainConfig(steps=12, batch_size=48, lr=3e-3, log_every=5, checkpoint_minutes=1.0)
    assert cfg.checkpoint_every == 0  # time alone decides
    m, ref = fresh()
    straight = train(m, ref, x, y, cfg, seed=1)  # no folder: never checkpoints

    slow = SlowMethod(clock, at=8)  # a minute passes every 2.4 steps: checkpoints after steps 3 and 6
    slow.setup(n_classes=2)
    _, part = fresh()
    with pytest.raises(Crash):
        train(slow, part, x, y, cfg, seed=1, checkpoint_dir=tmp_path, config_hash="h")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000006"]

    m, resumed = fresh(seed=99)
    result = train(m, resumed, x, y, cfg, seed=1, checkpoint_dir=tmp_path, config_hash="h")
    assert result.resumed_from == 6 and result.loss_trace == straight.loss_trace
    assert torch.equal(weights(resumed), weights(ref))


def test_checkpoint_minutes_must_be_a_non_negative_number():
    with pytest.raises(BenchError, match="train.checkpoint_minutes"):
        TrainConfig(checkpoint_minutes=-1)
    assert TrainConfig(checkpoint_minutes=0).checkpoint_minutes == 0


def test_checkpoints_hold_no_pickle_and_only_the_newest_is_kept(tmp_path):
    x, y = two_class_data()
    m, b = fresh()
    train(
        m,
        b,
        x,
        y,
        TrainConfig(**{**RESUME_CFG.__dict__, "ema_decay": 0.9}),
        seed=1,
        checkpoint_dir=tmp_path,
        config_hash="h",
    )
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000060"]  # no staging or trash left
    files = sorted(p.name for p in (tmp_path / "step_00000060").iterdir())
    assert files == [MANIFEST, "model.safetensors", "trainer_state.json", "trainer_state.safetensors"]


def test_state_is_stored_without_pickle_and_read_back_equal(tmp_path):
    state = {
        "step": 7,
        "state": {
            0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 3)},
            1: {"n": torch.arange(4, dtype=torch.int64)},
        },
        "param_groups": [
            {"betas": (0.9, 0.999), "lr": 0.1 + 0.2, "fused": None, "amsgrad": False, "params": [0, 1]}
        ],
        "rng": torch.Generator().manual_seed(5).get_state(),
        "loss_trace": [(15, 1 / 3)],
        "window": [float("inf"), 2.5e-310],
        "__odd": "key",
    }
    save_state(tmp_path, "s", state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.safetensors"]
    back = load_state(tmp_path, "s")
    assert back.keys() == state.keys() and back["state"].keys() == {0, 1}  # int keys kept
    assert torch.equal(back["state"][0]["exp_avg"], state["state"][0]["exp_avg"])
    assert back["state"][0]["step"].shape == () and back["state"][1]["n"].dtype == torch.int64
    assert torch.equal(back["rng"], state["rng"])
    assert back["param_groups"] == state["param_groups"]  # tuples, None, bool, exact floats
    assert back["loss_trace"] == [(15, 1 / 3)] and back["window"] == state["window"]
    assert back["__odd"] == "key" and back["step"] == 7


@pytest.mark.parametrize("damage", ["killed while written", "damaged on disk"])
def test_a_broken_newest_checkpoint_is_skipped(tmp_path, damage, caplog):
    x, y = two_class_data()
    m, ref = fresh()
    straight = train(m, ref, x, y, RESUME_CFG, seed=1)
    m, b = fresh()
    train(
        m,
        b,
        x,
        y,
        TrainConfig(**{**RESUME_CFG.__dict__, "steps": 40}),
        seed=1,
        checkpoint_dir=tmp_path,
        config_hash="h",
    )
    broken = tmp_path / "step_00000050"  # newer than the good one, with truncated weights
    shutil.copytree(tmp_path / "step_00000040", broken)
    (broken / "model.safetensors").write_bytes(b"\0" * 10)
    if damage == "killed while written":
        (broken / MANIFEST).unlink()
    m, resumed = fresh()
    result = train(m, resumed, x, y, RESUME_CFG, seed=1, checkpoint_dir=tmp_path, config_hash="h")
    assert result.resumed_from == 40 and torch.equal(weights(resumed), weights(ref))
    assert (f"checkpoint {broken} is unreadable" in caplog.text) == (damage == "damaged on disk")
    assert result.loss_trace[-1] == straight.loss_trace[-1]


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    x, y = two_class_data()
    m, ref = fresh()
    straight = train(m, ref, x, y, RESUME_CFG, seed=1)
    m, b = failing(at=47)  # NaN loss in step 47
    with pytest.raises(CellFailed, match=r"non-finite training loss \(nan\) at step 47"):
        train(m, b, x, y, RESUME_CFG, seed=1, checkpoint_dir=tmp_path, config_hash="h")
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000040"]
    m, resumed = fresh()
    result = train(m, resumed, x, y, RESUME_CFG, seed=1, checkpoint_dir=tmp_path, config_hash="h")
    assert result.resumed_from == 40 and result.loss_trace == straight.loss_trace
    assert torch.equal(weights(resumed), weights(ref))


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    x, y = two_class_data()
    m, b = fresh()
    cfg = TrainConfig(steps=5, batch_size=64, grad_clip=0, checkpoint_every=1)
    cfg.lr = float("inf")  # past TrainConfig's own check, as a diverging run would be
    with pytest.raises(CellFailed, match="non-finite weights after step 1"):
        train(m, b, x, y, cfg, seed=0, checkpoint_dir=tmp_path, config_hash="h")
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_of_another_config_is_ignored(tmp_path):
    x, y = two_class_data()
    cfg = TrainConfig(steps=20, batch_size=64, checkpoint_every=10)
    m, b = fresh()
    train(m, b, x, y, cfg, seed=1, checkpoint_dir=tmp_path, config_hash="old")
    m, b = fresh()
    assert train(m, b, x, y, cfg, seed=1, checkpoint_dir=tmp_path, config_hash="new").resumed_from is None


def test_non_finite_loss_stops_the_cell():
    x, y = two_class_data()
    x[0, 0] = float("nan")
    m, b = fresh()
    with pytest.raises(CellFailed, match="non-finite training loss"):
        train(m, b, x, y, TrainConfig(steps=50, batch_size=256), seed=0)


def test_ema_weights_are_used_when_enabled():
    x, y = two_class_data()
    cfg = TrainConfig(steps=30, batch_size=64, lr=3e-3)
    (m1, plain), (m2, ema) = fresh(), fresh()
    train(m1, plain, x, y, cfg, seed=2)
    train(m2, ema, x, y, TrainConfig(**{**cfg.__dict__, "ema_decay": 0.9}), seed=2)
    init = weights(fresh()[1])
    # the EMA lags behind the raw weights: it ends between the init and the trained weights
    assert 0 < (weights(ema) - init).norm() < (weights(plain) - init).norm()


def test_micro_batches_accumulate_the_whole_batch_gradient():
    x, y = two_class_data()
    cfg = TrainConfig(steps=1, batch_size=64, lr=1e-2, grad_clip=0, log_every=1)
    (m1, whole), (m4, parts) = fresh(), fresh()
    init = weights(fresh()[1])
    r1 = train(m1, whole, x, y, cfg, seed=5)
    r4 = train(m4, parts, x, y, TrainConfig(**{**cfg.__dict__, "micro_batches": 4}), seed=5)
    # the first step draws the same batch, times and noise; four quarter-batch losses scaled by
    # 1/4 give the batch-mean gradient up to float rounding, and their mean is the batch loss
    assert (weights(whole) - init).abs().max() > 1e-3
    assert torch.allclose(weights(parts), weights(whole), atol=1e-6)
    assert r4.loss_trace[0][1] == pytest.approx(r1.loss_trace[0][1], rel=1e-6)


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"micro_batches": 0}, "train.micro_batches=0: use an integer >= 1"),
        (
            {"batch_size": 64, "micro_batches": 3},
            "train.batch_size=64 does not split into train.micro_batches=3",
        ),
    ],
)
def test_bad_micro_batches_are_one_line_errors(settings, message):
    with pytest.raises(BenchError, match=message):
        TrainConfig(**settings)
