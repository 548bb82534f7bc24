"""The harness-overhead and threads cases at smoke scale, and the bare loop's "same math" claim.

The overhead ratio means something only if the bare diffusers loop computes what bench computes:
the same loss, the same gradients and the same AdamW + clipping update from the same weights and
random draws. The tests check that against bench's own method.loss and trainer.
"""

import dataclasses
import math

import pytest
import torch

from bench.config.train import TrainConfig
from bench.method import Condition, TrainBatch
from bench.perf import overhead, thread_scaling
from bench.perf.case import median

ROWS = [0, 1600, 3000, 3722]  # train rows of four different phantom classes (class-major order)


@pytest.fixture(scope="module")
def setting():
    return overhead.phantom_setting(batch_size=4)


def positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_setting_is_phantom_lt_on_the_tiny_preset(setting):
    hp = setting.backbone.hyperparameters
    assert (hp["num_layers"], hp["num_single_layers"], hp["attention_head_dim"]) == (2, 2, 32)
    assert setting.backbone.sample_shape == (1, 32, 32) and setting.latents.shape[1:] == (1, 32, 32)
    assert setting.backbone.vocab_size == 11  # 10 phantom classes + the null token
    assert -1 <= setting.latents.min() and setting.latents.max() <= 1
    assert torch.bincount(setting.labels).tolist()[0] == 1500  # phantom_lt.n_max "No Finding" images
    assert (setting.cfg.batch_size, setting.cfg.lr, setting.cfg.grad_clip) == (4, 1e-3, 1.0)
    assert TrainConfig().steps == 2000  # the gin bindings were cleared afterwards
    assert overhead.phantom_setting().cfg.batch_size == 32  # phantom_lt.gin's batch


def test_bare_loss_and_gradients_equal_bench(setting):
    """Same weights, x1, noise and t: bench's FM loss on FluxBackbone equals the bare FLUX loss."""
    loop = overhead.BareLoop(setting.backbone, setting.cfg)
    g = torch.Generator().manual_seed(1)
    x1, labels = setting.latents[ROWS], setting.labels[ROWS]
    eps, t = torch.randn(x1.shape, generator=g), torch.rand(4, generator=g)
    assert len(set(labels.tolist())) == 4  # several classes, so the class tokens matter

    setting.backbone.zero_grad()
    batch = TrainBatch(x1=x1, cond=Condition(labels), eps=eps, t=t)
    bench_loss = setting.method.loss(setting.backbone, batch)
    bench_loss.backward()
    bare_loss = loop.loss(x1, labels, eps, 1 - t)
    bare_loss.backward()

    assert bare_loss.item() == pytest.approx(bench_loss.item(), abs=1e-5)
    ours = [p.grad for p in setting.backbone.parameters()]
    theirs = [p.grad for p in loop.parameters()]
    assert len(ours) == len(theirs)
    norm = lambda grads: torch.cat([g.flatten() for g in grads]).norm().item()  # noqa: E731
    assert norm(theirs) == pytest.approx(norm(ours), rel=1e-5) and norm(ours) > 0
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    setting.backbone.zero_grad()


def test_bare_step_updates_weights_as_bench_trainer(setting):
    """One train() step on a 4-row set against one bare step on the batch the trainer drew.

    The trainer's draws with the seed: the epoch permutation, then eps, then t (FM's U(0, 1)).
    """
    small = dataclasses.replace(setting, latents=setting.latents[ROWS], labels=setting.labels[ROWS])
    loop = overhead.BareLoop(small.backbone, small.cfg)
    g = torch.Generator().manual_seed(overhead.SEED)
    perm = torch.randperm(4, generator=g)
    eps, t = torch.randn(small.latents.shape, generator=g), torch.rand(4, generator=g)

    initial = [p.detach().clone() for p in small.backbone.parameters()]
    result = overhead.bench_run(small, threads=torch.get_num_threads())(1)
    bare = loop.step(loop.optimizer(), small.latents[perm], small.labels[perm], eps, 1 - t)

    assert bare == pytest.approx(result.loss_trace[0][1], abs=1e-5)
    for ours, theirs in zip(small.backbone.parameters(), loop.parameters()):
        torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)
    moved = [(a - b).abs().max().item() for a, b in zip(small.backbone.parameters(), initial)]
    assert max(moved) == pytest.approx(small.cfg.lr, rel=1e-3)  # AdamW's first step moves by ~lr


@pytest.mark.slow
def test_overhead_smoke_keys(tmp_path):
    before = torch.get_num_threads()
    m = overhead.measure("smoke", tmp_path)
    assert set(m.keys) == {"harness_overhead_ratio"} and positive(m.keys["harness_overhead_ratio"])
    d = m.details
    assert positive(d["bench_s_per_step"]) and positive(d["bare_s_per_step"])
    assert m.keys["harness_overhead_ratio"] == pytest.approx(d["bench_s_per_step"] / d["bare_s_per_step"])
    smoke = overhead.SCALES["smoke"]
    assert [len(d["per_repeat_s"][k]) for k in ("bench", "bare")] == [smoke.repeats] * 2
    assert d["bench_s_per_step"] == median(d["per_repeat_s"]["bench"])
    assert (d["threads"], d["batch_size"], d["parameters"]) == (before, smoke.batch_size, 1_800_196)
    assert ("profile" in d) == (m.keys["harness_overhead_ratio"] > overhead.TARGET)
    assert torch.get_num_threads() == before


@pytest.mark.slow
def test_threads_smoke_keys(tmp_path):
    before = torch.get_num_threads()
    m = thread_scaling.measure("smoke", tmp_path)
    out = m.keys["threads"]
    assert set(out) == {"1", "2", "best", "speedup_2_vs_1"}
    assert positive(out["1"]) and positive(out["2"]) and positive(out["speedup_2_vs_1"])
    assert out["best"] == (1 if out["1"] <= out["2"] else 2)
    assert out["speedup_2_vs_1"] == pytest.approx(out["1"] / out["2"])
    assert m.details["train_threads_default"]["bench/pipeline/trainer.py"] == TrainConfig().threads
    assert torch.get_num_threads() == before


def test_profile_lists_the_slowest_functions(setting):
    rows = overhead.profile_top(overhead.bare_run(setting, torch.get_num_threads()), 1, n=5)
    assert len(rows) == 5 and all("s self" in r for r in rows)
    selfs = [float(r.split("s self")[0]) for r in rows]
    assert selfs == sorted(selfs, reverse=True)


def test_the_overhead_case_recovers_known_step_times_from_whole_calls(monkeypatch, tmp_path):
    """With runs whose cost is known (a fake clock: a fixed setup plus a fixed time per step),
    the case reports exactly those per-step times and their ratio: the setup cancels in
    (T(k2) - T(k1)) / (k2 - k1), and the median over interleaved repeats keeps the value."""
    from types import SimpleNamespace

    import bench.perf.case as case

    clock = {"now": 0.0}
    monkeypatch.setattr(case.time, "perf_counter", lambda: clock["now"])

    def fake_run(setup_s: float, step_s: float):
        def run(steps: int):
            clock["now"] += setup_s + steps * step_s

        return lambda setting, threads: run

    setting = SimpleNamespace(
        cfg=SimpleNamespace(batch_size=4),
        backbone=SimpleNamespace(sample_shape=(1, 8, 8)),
        labels=[0] * 10,
        parameters=123,
    )
    monkeypatch.setattr(overhead, "phantom_setting", lambda batch_size=None: setting)
    monkeypatch.setattr(overhead, "bench_run", fake_run(setup_s=5.0, step_s=0.3))
    monkeypatch.setattr(overhead, "bare_run", fake_run(setup_s=1.0, step_s=0.2))
    m = overhead.measure("smoke", tmp_path)
    assert m.details["bench_s_per_step"] == pytest.approx(0.3, abs=1e-9)
    assert m.details["bare_s_per_step"] == pytest.approx(0.2, abs=1e-9)
    assert m.keys["harness_overhead_ratio"] == pytest.approx(1.5, abs=1e-9)
    assert "profile" in m.details  # above the 1.05 target: the slowest functions are listed


def test_the_threads_case_picks_the_faster_count_from_known_step_times(monkeypatch, tmp_path):
    """Fake runs costing 0.4 s a step on 1 thread and 0.25 s on 2 (plus setup): the case reports
    those, picks 2 and a speedup of 1.6."""
    from types import SimpleNamespace

    import bench.perf.case as case

    clock = {"now": 0.0}
    monkeypatch.setattr(case.time, "perf_counter", lambda: clock["now"])
    step_s = {1: 0.4, 2: 0.25}

    def fake_bench_run(setting, n):
        def run(steps: int):
            clock["now"] += 2.0 + steps * step_s[n]

        return run

    setting = SimpleNamespace(
        cfg=SimpleNamespace(batch_size=4),
        backbone=SimpleNamespace(sample_shape=(1, 8, 8)),
        labels=[0] * 10,
        parameters=123,
    )
    monkeypatch.setattr(thread_scaling, "phantom_setting", lambda batch_size=None: setting)
    monkeypatch.setattr(thread_scaling, "bench_run", fake_bench_run)
    out = thread_scaling.measure("smoke", tmp_path).keys["threads"]
    assert out["1"] == pytest.approx(0.4, abs=1e-9) and out["2"] == pytest.approx(0.25, abs=1e-9)
    assert out["best"] == 2 and out["speedup_2_vs_1"] == pytest.approx(1.6, abs=1e-9)
