"""The training loop: it learns, it is deterministic, and it resumes exactly from a checkpoint."""

import pytest
import torch

from bench.artifacts import MANIFEST
from bench.backbones.mlp import MLPBackbone
from bench.errors import CellFailed
from bench.method import Method
from bench.trainer import TrainConfig, train


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
    assert [l for _, l in r1.loss_trace] == pytest.approx([l for _, l in r2.loss_trace], rel=1e-6)
    assert torch.allclose(weights(b1), weights(b2), atol=1e-6)


def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path):
    x, y = two_class_data()
    full_cfg = TrainConfig(steps=60, batch_size=64, lr=3e-3, checkpoint_every=20, log_every=10)
    m, ref = fresh()
    train(m, ref, x, y, full_cfg, seed=1)

    ckpt = tmp_path / "ckpt"
    m, part = fresh()
    train(m, part, x, y, TrainConfig(**{**full_cfg.__dict__, "steps": 40}), seed=1,
          checkpoint_dir=ckpt, config_hash="h")
    assert sorted(p.name for p in ckpt.iterdir()) == ["step_00000040"]  # older ones dropped
    assert (ckpt / "step_00000040" / MANIFEST).is_file()

    m, resumed = fresh(seed=99)  # different init: everything must come from the checkpoint
    result = train(m, resumed, x, y, full_cfg, seed=1, checkpoint_dir=ckpt, config_hash="h")
    assert result.resumed_from == 40
    assert torch.allclose(weights(resumed), weights(ref), atol=1e-6)


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
