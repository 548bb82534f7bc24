"""The long-tail remedies (remedies/, bench.remedy) against independent computations, their training
hooks in bench.classify.fit, and the downstream evaluator's remedy runs: shared once per
dataset and classifier seed, on top of augmentation per cell."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight
from test_downstream import Blobs, cell, noisy_tail_copies
from torch.nn import functional as F

from bench import registry
from bench.classify.fit import Protocol, build_classifier, early_stopping, embed, fit, plain, retrain_head
from bench.errors import BenchError
from bench.evaluators.downstream import Downstream
from bench.remedy import Remedy, class_balanced_order, effective_number_weights, inverse_frequency_weights

COUNTS = np.array([500, 120, 30, 6])


def remedy(name: str, counts=COUNTS, **settings) -> Remedy:
    out = registry.remedies.get(name)(**settings)
    out.setup(counts)
    return out


def batch(seed: int = 0, n: int = 64, k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * 3, torch.randint(0, k, (n,), generator=g)


def log_softmax_np(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


# -- the losses and samplers against independent computations ---------------------------------------
def test_reweight_uses_sklearns_balanced_weights_in_a_weighted_mean():
    labels = np.repeat(np.arange(4), COUNTS)
    expected = compute_class_weight("balanced", classes=np.arange(4), y=labels)
    assert inverse_frequency_weights(COUNTS) == pytest.approx(expected)
    logits, y = batch()
    nll = -log_softmax_np(logits.double().numpy())[np.arange(len(y)), y.numpy()]
    w = expected[y.numpy()]
    assert float(remedy("reweight").loss(logits, y, 0)) == pytest.approx((w * nll).sum() / w.sum(), rel=1e-5)


def test_focal_is_cross_entropy_at_gamma_0_and_down_weights_easy_examples():
    logits, y = batch(1)
    assert float(remedy("focal", gamma=0.0).loss(logits, y, 0)) == pytest.approx(
        float(F.cross_entropy(logits, y)), rel=1e-6
    )
    logp = log_softmax_np(logits.double().numpy())[np.arange(len(y)), y.numpy()]
    expected = np.mean(-((1 - np.exp(logp)) ** 2) * logp)
    assert float(remedy("focal").loss(logits, y, 0)) == pytest.approx(
        expected, rel=1e-5
    )  # LongTailCXR: gamma 2
    with pytest.raises(BenchError, match="focal.gamma=-1"):
        registry.remedies.get("focal")(gamma=-1)


def test_ldam_margins_follow_n_to_the_minus_quarter_and_drw_switches_at_its_epoch():
    ldam = remedy("ldam_drw", drw_epoch=3)
    margins = ldam._margins.double().numpy()
    assert margins.max() == pytest.approx(0.5)  # LongTailCXR's max_m
    assert margins / margins[0] == pytest.approx((COUNTS / COUNTS[0]) ** -0.25)
    logits, y = batch(2)
    shifted = logits.double().numpy().copy()
    shifted[np.arange(len(y)), y.numpy()] -= margins[y.numpy()]
    nll = -log_softmax_np(30.0 * shifted)[np.arange(len(y)), y.numpy()]
    assert float(ldam.loss(logits, y, 2)) == pytest.approx(nll.mean(), rel=1e-5)  # before DRW: unweighted
    cb = (1 - 0.9999) / (1 - 0.9999**COUNTS)
    cb = cb / cb.sum() * 4
    assert effective_number_weights(COUNTS, 0.9999) == pytest.approx(cb)
    w = cb[y.numpy()]
    assert float(ldam.loss(logits, y, 3)) == pytest.approx((w * nll).sum() / w.sum(), rel=1e-5)
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    assert [ldam.begin_epoch(e, optimizer) for e in range(5)] == [False, False, False, True, False]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)  # x 0.1 once, at the switch
    assert ldam.min_epochs == 4
    with pytest.raises(BenchError, match="ldam_drw.drw_epoch=10 never comes within downstream.max_epochs=5"):
        Downstream(max_epochs=5, remedies=["ldam_drw"], with_augmentation=[])


def test_class_balanced_draws_converge_to_uniform_class_frequencies():
    y = torch.from_numpy(np.repeat(np.arange(4), COUNTS))
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([class_balanced_order(y, g) for _ in range(40)])
    freq = np.bincount(y[draws].numpy(), minlength=4) / len(draws)
    assert freq == pytest.approx(np.full(4, 0.25), abs=0.01)  # 26,240 draws: sd ~0.003
    natural = np.bincount(y[remedy("reweight").epoch_order(y, g, 0)].numpy(), minlength=4) / len(y)
    assert natural == pytest.approx(COUNTS / COUNTS.sum())  # the other remedies keep the data's frequencies
    assert np.bincount(y[remedy("resample").epoch_order(y, g, 0)].numpy(), minlength=4).min() > 50


def test_an_empty_class_gets_no_weight_and_no_margin():
    counts = np.array([10, 0, 5])
    assert inverse_frequency_weights(counts)[1] == 0 and effective_number_weights(counts, 0.99)[1] == 0
    assert remedy("ldam_drw", counts)._margins[1] == 0


# -- training hooks ---------------------------------------------------------------------------------
def test_plain_training_is_the_remedy_that_overrides_nothing():
    ds = Blobs()
    train, test = ds.load("train"), ds.load("test")
    protocol = Protocol(lr=1e-2, batch_size=16, max_epochs=2, patience=1)
    a, _ = fit(build_classifier("small_cnn", 1, 3, seed=1), train.x, train.y, test.x, test.y, protocol, 5)
    b, _ = fit(
        build_classifier("small_cnn", 1, 3, seed=1), train.x, train.y, test.x, test.y, protocol, 5, Remedy()
    )
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert type(plain(Protocol(class_balanced_sampling=True))).epoch_order is not Remedy.epoch_order


def test_early_stopping_waits_for_a_remedys_phase_and_restarts_its_patience():
    class Phase(Remedy):
        min_epochs = 6

        def begin_epoch(self, epoch, optimizer):
            return epoch == 5

    module = torch.nn.Linear(1, 1)
    scores = iter([0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    history = early_stopping(
        module, None, Protocol(max_epochs=10, patience=2), Phase(), lambda e: 0.0, lambda: next(scores)
    )
    # plain patience 2 would stop after epoch 2; the phase starts at 5 and gets its own 2 epochs
    assert len(history.val_bacc) == 7 and history.best_epoch == 0
    history = early_stopping(
        module,
        None,
        Protocol(max_epochs=10, patience=2),
        Remedy(),
        lambda e: 0.0,
        iter([0.9, 0.1, 0.1, 0.1]).__next__,
    )
    assert len(history.val_bacc) == 3


def test_crt_retrains_only_the_last_layer_on_frozen_features():
    ds = Blobs()
    train, test = ds.load("train"), ds.load("test")
    protocol = Protocol(lr=1e-2, batch_size=16, max_epochs=3, patience=2)
    base, _ = fit(build_classifier("small_cnn", 1, 3, seed=1), train.x, train.y, test.x, test.y, protocol, 5)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    crt = remedy("crt", np.bincount(train.y.numpy()))
    out, history = retrain_head(base, train.x, train.y, test.x, test.y, protocol, 7, crt)
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())  # the base is untouched
    head = {f"net.{k}" for k in ("fc.weight", "fc.bias")}
    changed = {k for k, v in out.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == head  # features (and batch-norm statistics) frozen
    assert np.array_equal(embed(out, test.x), embed(base, test.x))
    assert 0 < len(history.val_bacc) <= 3


# -- the downstream evaluator ------------------------------------------------------------------------
FAST = dict(max_epochs=3, patience=1, batch_size=16, lr=1e-2)


@pytest.fixture
def drw_at_1():
    import gin

    registry.remedies.load_all()
    gin.bind_parameter("ldam_drw.drw_epoch", 1)
    yield
    gin.clear_config()


@pytest.mark.slow
def test_remedies_are_trained_once_per_dataset_and_seed_and_combined_per_cell(
    tmp_path, drw_at_1, monkeypatch
):
    import bench.classify.run_trainer as downstream

    calls = {"fit": [], "head": []}
    real_fit, real_head = downstream.fit, downstream.retrain_head
    monkeypatch.setattr(
        downstream, "fit", lambda *a, **k: calls["fit"].append(type(a[-1]).__name__) or real_fit(*a, **k)
    )
    monkeypatch.setattr(
        downstream, "retrain_head", lambda *a, **k: calls["head"].append(1) or real_head(*a, **k)
    )
    evaluator = Downstream(n_seeds=2, **FAST)
    shared, timings, metrics = (tmp_path / "shared" / "blobs-k", "k"), [], []
    for i, synthetic in enumerate([noisy_tail_copies(0), noisy_tail_copies(1)]):  # two methods' cells
        ctx = cell(tmp_path / f"method{i}", synthetic)
        ctx.shared, times = shared, {}
        ctx.timer = lambda name, times=times: _stopwatch(times, name)
        metrics.append(evaluator.evaluate(ctx))
        timings.append(times)
    names = ("reweight", "resample", "focal", "ldam_drw", "crt")
    for m in metrics:
        for run in ("no_aug", *names, "aug+reweight", "aug+crt"):
            assert 0.0 <= m[f"bacc/{run}"] <= 1.0 and 0.0 <= m[f"macro_f1/{run}"] <= 1.0
        assert set(m) == set(evaluator.higher_is_better)
    for name in ("no_aug", *names):  # shared: the second method's cell holds the first one's runs
        assert metrics[1][f"bacc/{name}"] == metrics[0][f"bacc/{name}"]
    # first cell: 2 seeds x (no_aug, reweight, resample, focal, ldam_drw) + 2 x (aug, aug+reweight);
    # the second: its own 2 x (aug, aug+reweight) only; cRT retrains heads: 2 shared + 2 per cell
    assert len(calls["fit"]) == 2 * 5 + 2 * 2 + 2 * 2 and len(calls["head"]) == 2 + 2 + 2
    assert json.loads((tmp_path / "method1" / "downstream.json").read_text())["reused"] == ["no_aug", *names]
    assert timings[1]["downstream/baselines"] < timings[0]["downstream/baselines"] / 10


def test_a_remedy_added_later_starts_from_the_stored_no_aug_classifiers(tmp_path, drw_at_1, monkeypatch):
    import bench.classify.run_trainer as downstream

    shared = (tmp_path / "shared" / "blobs-k", "k")
    first = cell(tmp_path / "a", noisy_tail_copies(0))
    first.shared = shared
    plain_only = Downstream(n_seeds=1, remedies=[], with_augmentation=[], **FAST).evaluate(first)
    fits = []
    real_fit = downstream.fit
    monkeypatch.setattr(downstream, "fit", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    second = cell(tmp_path / "b", noisy_tail_copies(0))
    second.shared = shared
    with_crt = Downstream(n_seeds=1, remedies=["crt"], with_augmentation=[], **FAST).evaluate(second)
    assert len(fits) == 1  # the augmented classifier only: cRT's stage 1 is the stored no-aug one
    assert with_crt["bacc/no_aug"] == plain_only["bacc/no_aug"] and "bacc/crt" in with_crt


def test_unknown_or_malformed_remedy_lists_are_one_line_errors():
    with pytest.raises(BenchError, match="unknown remedy 'reweigh'; did you mean 'reweight'"):
        Downstream(remedies=["reweigh"])
    with pytest.raises(BenchError, match="downstream.with_augmentation must be a list of remedy names"):
        Downstream(with_augmentation="crt")


def _stopwatch(times: dict, name: str):
    import contextlib
    import time

    @contextlib.contextmanager
    def watch():
        t0 = time.perf_counter()
        yield
        times[name] = times.get(name, 0.0) + time.perf_counter() - t0

    return watch()


@pytest.fixture
def clean_gin():
    """Building cells parses their gin configuration: leave none behind for other tests."""
    import gin

    gin.clear_config()
    yield
    gin.clear_config()


def test_a_new_downstream_version_re_evaluates_stored_records_but_keeps_their_training(
    monkeypatch, clean_gin
):
    """Records written before the remedies existed hold no remedy runs: the evaluator's version is in
    the cell's config hash (so they are evaluated again) and in no stage that trains or samples."""
    from bench.pipeline.assemble import CellSpec, RunRequest, build_cell

    spec, vector = CellSpec("quick", "phantom_lt", "fm", 0), CellSpec("quick", "synthetic2d", "fm", 0)
    now, vector_now = build_cell(spec, RunRequest()), build_cell(vector, RunRequest())
    monkeypatch.setattr(Downstream, "version", 1)
    before, vector_before = build_cell(spec, RunRequest()), build_cell(vector, RunRequest())
    assert now.config_hash != before.config_hash
    assert {k: now.stage_hashes[k] for k in ("encode", "prior", "train", "sample")} == {
        k: before.stage_hashes[k] for k in ("encode", "prior", "train", "sample")
    }
    assert vector_now.config_hash == vector_before.config_hash  # no downstream: the hash it always had
