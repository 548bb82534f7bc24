"""The hot training loop: the same numbers as a plain loop, few host reads, NaN still caught.

The reference here re-implements, in the plainest form, the loop the trainer ran before it stopped
reading the loss every step and drew each batch ahead (issue 24): one CPU generator drawing, per
step, the batch indices, the noise, the times and (with several micro-batches) one seed per
micro-batch, in that order, and the loss drawing any further randomness after them. The trainer
must reproduce its weights, loss trace and convergence verdict bit for bit on the CPU. (The reference
was checked to agree bit for bit with the trainer of commit 34992a5, before the change, on the
four cases below.)
"""

import math
import sys
from pathlib import Path

import pytest
import torch

import bench
from bench.backbones.mlp import MLPBackbone
from bench.config.train import TrainConfig
from bench.errors import BenchError, CellFailed
from bench.method import Condition, Method, TrainBatch
from bench.pipeline.convergence import convergence
from bench.pipeline.trainer import train


def two_class_data(n=200):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = torch.randn(n, 2, generator=g) * 0.1 + torch.stack([y * 4.0 - 2.0, torch.zeros(n)], 1)
    return x, y


class DrawingMethod(Method):
    """Vanilla FM whose loss also draws from the batch generator (as cbfm's label dropout does), so
    the order of every draw from the one generator matters."""

    def loss(self, backbone, batch):
        keep = (torch.rand(len(batch.x1), generator=batch.generator) >= 0.2).float()
        x0 = batch.eps
        x_t = (1 - batch.t)[:, None] * x0 + batch.t[:, None] * batch.x1
        v = backbone(x_t, batch.t, self.tokens(batch.cond))
        return ((v - (batch.x1 - x0)).pow(2).mean(1) * keep).mean()


def fresh(method_cls=Method):
    torch.manual_seed(0)
    method = method_cls()
    method.setup(n_classes=2)
    return method, MLPBackbone((2,), method.vocab_size, method.n_tokens, hidden=16, depth=2)


def reference_run(method, model, x, y, cfg: TrainConfig, seed: int):
    """(loss trace, per-step losses) of the plain loop, training `model` in place."""
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True
    )  # as bench's
    warmup = max(cfg.warmup_steps, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    g = torch.Generator().manual_seed(seed)
    batch, m = min(cfg.batch_size, len(y)), cfg.micro_batches
    perm, pos = torch.randperm(len(y), generator=g), 0
    trace, window, history = [], [], []
    for step in range(1, cfg.steps + 1):
        if pos + batch > len(y):
            perm, pos = torch.randperm(len(y), generator=g), 0
        idx, pos = perm[pos : pos + batch], pos + batch
        eps = torch.randn((batch, *x.shape[1:]), generator=g)
        t = method.sample_time(batch, g)
        seeds = torch.randint(0, 2**62, (m,), generator=g).tolist() if m > 1 else None
        total, size = torch.zeros(()), batch // m
        for k in range(m):
            rows = slice(k * size, (k + 1) * size)
            gen = torch.Generator().manual_seed(seeds[k]) if seeds else g
            loss = method.loss(
                model, TrainBatch(x[idx[rows]], Condition(y[idx[rows]]), eps[rows], t[rows], gen)
            )
            (loss * (1 / m) if m > 1 else loss).backward()
            total = total + loss.detach().float()
        value = float(total / m) if m > 1 else float(total)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        window.append(value)
        history.append(value)
        if step % cfg.log_every == 0 or step == cfg.steps:
            trace.append((step, sum(window) / len(window)))
            window = []
    return trace, history


def weights(module):
    return torch.cat([p.detach().flatten() for p in module.parameters()])


@pytest.mark.parametrize(
    "method_cls,micro_batches,sync_every",
    [(Method, 1, 10), (DrawingMethod, 1, 7), (DrawingMethod, 2, 1), (Method, 4, 100)],
)
def test_the_loop_reproduces_the_plain_loop_bit_for_bit(method_cls, micro_batches, sync_every):
    x, y = two_class_data()
    # 200 rows in batches of 48: a new epoch permutation every 4 steps, mid-run
    cfg = TrainConfig(
        steps=37,
        batch_size=48,
        lr=3e-3,
        warmup_steps=5,
        log_every=6,
        micro_batches=micro_batches,
        sync_every=sync_every,
    )
    m, b = fresh(method_cls)
    result = train(m, b, x, y, cfg, seed=4)
    m, ref = fresh(method_cls)
    trace, history = reference_run(m, ref, x, y, cfg, seed=4)
    assert torch.equal(weights(b), weights(ref))
    assert result.loss_trace == trace  # every entry the mean of its log_every steps, exactly
    assert result.convergence == convergence(history, cfg.convergence_window, cfg.convergence_tol)


class NaNAt(Method):
    """Vanilla FM whose loss turns NaN from training step `at` on; counts the steps it ran."""

    def __init__(self, at):
        super().__init__()
        self.at, self.calls = at, 0

    def loss(self, backbone, batch):
        self.calls += 1
        loss = super().loss(backbone, batch)
        return loss * float("nan") if self.calls >= self.at else loss


# (sync_every, checkpoint_every, the step whose read finds the NaN of step 23): the first read at
# or after step 23, every sync_every steps and before every checkpoint
@pytest.mark.parametrize(
    "sync_every,checkpoint_every,stop", [(1, 5, 23), (4, 5, 24), (10, 5, 25), (10, 0, 30)]
)
def test_a_nan_stops_training_within_sync_every_steps_and_names_its_step(
    tmp_path, sync_every, checkpoint_every, stop
):
    x, y = two_class_data()
    cfg = TrainConfig(
        steps=60,
        batch_size=48,
        lr=3e-3,
        log_every=5,
        checkpoint_every=checkpoint_every,
        checkpoint_minutes=0,
        sync_every=sync_every,
    )
    method = NaNAt(23)
    method.setup(n_classes=2)
    _, b = fresh()
    with pytest.raises(CellFailed) as failure:
        train(method, b, x, y, cfg, seed=1, checkpoint_dir=tmp_path, config_hash="h")
    # the same one-line error as when every step was read, naming the step whose loss was NaN
    assert str(failure.value) == (
        "non-finite training loss (nan) at step 23; lower train.lr or enable train.grad_clip"
    )
    assert method.calls == stop  # one loss per step: training ran up to the read and no further
    # a checkpoint is written only after its steps' losses were read finite: step 25's never is
    assert [p.name for p in tmp_path.iterdir()] == (["step_00000020"] if checkpoint_every else [])


class Reads:
    """Counts the tensor-to-Python reads (each a host sync on a GPU) that bench's own code makes
    while it is active; torch's own (the CPU AdamW loop reads its CPU step counters) are not bench's."""

    NAMES = ("item", "tolist", "cpu", "numpy", "__float__", "__bool__", "__int__")
    OURS = (str(Path(bench.__file__).parent), str(Path(bench.__file__).parents[1] / "methods"))

    def __init__(self, monkeypatch):
        self.count = 0
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                self.count += sys._getframe(1).f_code.co_filename.startswith(self.OURS)
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


def test_the_loss_is_read_once_per_sync_every_steps(monkeypatch):
    x, y = two_class_data()
    m, b = fresh()
    cfg = TrainConfig(
        steps=40, batch_size=48, lr=3e-3, log_every=20, micro_batches=2, sync_every=10, checkpoint_minutes=0
    )
    reads = Reads(monkeypatch)
    train(m, b, x, y, cfg, seed=0)
    # one read of the 10 pending losses per 10 steps, plus per step the micro-batch seeds drawn
    # on the CPU (`tolist` of a CPU tensor, no device involved)
    assert reads.count == 40 // 10 + 40


def test_sync_every_and_compile_are_checked():
    with pytest.raises(BenchError, match=r"train.sync_every=0: use an integer >= 1"):
        TrainConfig(sync_every=0)
    with pytest.raises(BenchError, match=r"train.compile='yes': use True or False"):
        TrainConfig(compile="yes")
    assert not math.isnan(TrainConfig().sync_every)


def test_compile_compiles_each_repeated_block_and_changes_no_number(monkeypatch):
    """train.compile hands every FLUX block's forward to torch.compile and restores the eager ones
    after training. torch.compile is stubbed (its CPU compilation takes minutes); the real one
    sharing one compiled graph per block class is checked by hand (docs/performance.md)."""
    from bench.backbones.flux import FluxBackbone

    compiled = []

    def stub(fn, **kwargs):
        compiled.append(fn.__self__)
        return fn

    monkeypatch.setattr(torch, "compile", stub)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 4, 4, 4, generator=g), torch.arange(24) % 2

    def flux():
        method, _ = fresh()
        return method, FluxBackbone(
            (4, 4, 4), method.vocab_size, method.n_tokens, num_layers=2, num_single_layers=1
        )

    cfg = TrainConfig(steps=3, batch_size=8, log_every=1)
    (m1, eager), (m2, comp) = flux(), flux()
    train(m1, eager, x, y, cfg, seed=0)
    train(m2, comp, x, y, TrainConfig(**{**cfg.__dict__, "compile": True}), seed=0)
    blocks = comp.repeated_blocks()
    assert len(blocks) == 3 and compiled == blocks
    assert all("forward" not in block.__dict__ for block in blocks)  # eager again for sampling
    assert torch.equal(weights(comp), weights(eager))


def test_compile_refuses_a_backbone_without_repeated_blocks():
    x, y = two_class_data()
    m, b = fresh()
    with pytest.raises(
        BenchError, match=r"train.compile=True: the MLPBackbone backbone has no repeated blocks"
    ):
        train(m, b, x, y, TrainConfig(steps=1, batch_size=8, compile=True), seed=0)


def test_gpu_settings_fused_adamw_and_ddp_bucket_views():
    from bench.pipeline.trainer import _accelerator, _adamw

    assert _accelerator("no").ddp_handler.gradient_as_bucket_view
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert _adamw(p, TrainConfig(), torch.device("cpu")).defaults["fused"]  # fused on the CPU too (issue 26)
    assert _adamw(p, TrainConfig(), torch.device("cuda")).defaults["fused"]  # (torch fuses CPU tensors too)
    assert not _adamw(p, TrainConfig(), torch.device("cpu"), sharded=True).defaults["fused"]  # FSDP on gloo


def test_copies_to_the_cpu_are_the_tensors_themselves():
    from bench.runtime.transfer import gather, to_device

    x = torch.arange(12.0).reshape(6, 2)
    assert to_device(x, torch.device("cpu")) is x
    assert torch.equal(gather(x, torch.tensor([4, 1]), torch.device("cpu")), x[[4, 1]])


def test_sync_every_feeds_no_hash():
    import gin
    from bench.config.gin_config import bindings_text

    gin.clear_config()
    try:
        gin.parse_config("train.sync_every = 3\ntrain.steps = 7")
        assert "train.steps" in bindings_text() and "sync_every" not in bindings_text()  # same numbers
    finally:
        gin.clear_config()
