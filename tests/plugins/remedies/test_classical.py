"""The classical augmentations as remedies (remedies/mixup.py, cutmix.py, trivialaugment.py,
balanced_mixup.py, image_ops.py) against closed forms and their distributions, the `augment` /
`partner_order` hooks of bench's training loop, and a downstream run that records and tabulates them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps
from torch import nn
from torch.nn import functional as F

import gin
from bench import registry
from bench.classify.fit import Protocol, _epoch
from bench.cli import main
from bench.remedies import image_ops
from bench.remedies.cutmix import cutmix_batch, cutmix_box
from bench.remedies.mixup import mixup_batch
from bench.remedy import Remedy, beta_draw, class_balanced_order

COUNTS = np.array([300, 60, 12])
K = len(COUNTS)


def remedy(name: str, counts=COUNTS, **settings) -> Remedy:
    out = registry.remedies.get(name)(**settings)
    out.setup(counts)
    return out


def images(n: int = 8, side: int = 12, seed: int = 0) -> torch.Tensor:
    """(n, 1, side, side) images on the 256 levels, as the datasets store them."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, side, side), generator=g).float() / 255.0


# -- MixUp and CutMix against closed forms ---------------------------------------------------------
def test_mixup_is_the_convex_combination_with_the_permuted_batch():
    x, y = images(6), torch.tensor([0, 1, 2, 0, 1, 2])
    perm, lam = torch.tensor([3, 5, 0, 1, 2, 4]), 0.3
    mixed, soft = mixup_batch(x, y, K, lam, perm)
    xn, onehot = x.numpy(), np.eye(K)[y.numpy()]
    assert mixed.numpy() == pytest.approx(0.3 * xn + 0.7 * xn[perm.numpy()], abs=1e-6)
    assert soft.numpy() == pytest.approx(0.3 * onehot + 0.7 * onehot[perm.numpy()], abs=1e-6)
    assert soft.sum(1).numpy() == pytest.approx(np.ones(6))
    assert 0 <= float(mixed.min()) and float(mixed.max()) <= 1


def test_cutmix_pastes_the_box_and_lambda_is_one_minus_its_area():
    x, y = images(4, side=10), torch.tensor([0, 1, 2, 2])
    perm = torch.tensor([1, 2, 3, 0])
    box = cutmix_box(10, 10, lam=0.64, centre=(5, 4))  # cut sqrt(0.36) * 10 = 6 -> rows 2..8, cols 1..7
    assert box == (2, 8, 1, 7)
    mixed, soft, lam = cutmix_batch(x, y, K, box, perm)
    expected = x.clone().numpy()
    expected[:, :, 2:8, 1:7] = x.numpy()[perm.numpy()][:, :, 2:8, 1:7]
    assert np.array_equal(mixed.numpy(), expected)
    assert lam == pytest.approx(1 - 36 / 100)
    onehot = np.eye(K)[y.numpy()]
    assert soft.numpy() == pytest.approx(lam * onehot + (1 - lam) * onehot[perm.numpy()])
    assert cutmix_box(10, 10, 0.64, centre=(0, 9)) == (0, 3, 6, 10)  # clipped at the border


def test_cutmix_remedy_weighs_labels_by_the_pasted_area():
    cut = remedy("cutmix")
    x = torch.arange(4.0)[:, None, None, None].expand(4, 1, 16, 16) / 4  # each image one value
    y = torch.tensor([0, 1, 2, 0])
    for seed in range(20):
        mixed, soft = cut.augment(x, y, torch.Generator().manual_seed(seed), 0)
        kept = (mixed == x).float().mean(dim=(1, 2, 3))  # the fraction of each image not pasted over
        # the soft target's weight on the image's own label is the kept area (its own class counted once
        # more where the partner shares it)
        own = soft[torch.arange(4), y]
        partner_same = (soft > 0).sum(1) == 1
        assert torch.allclose(own[~partner_same], kept[~partner_same], atol=1e-6)
        assert torch.allclose(soft.sum(1), torch.ones(4))


def test_beta_draws_follow_their_distribution():
    g = torch.Generator().manual_seed(0)
    for a, b in ((0.2, 0.2), (0.2, 1.0), (1.0, 1.0)):  # mixup, balanced mixup, cutmix
        draws = np.array([beta_draw(a, b, g) for _ in range(4000)])
        mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
        assert draws.mean() == pytest.approx(mean, abs=4 * np.sqrt(var / 4000))
        assert draws.var() == pytest.approx(var, rel=0.12)
        assert 0 <= draws.min() and draws.max() <= 1


def test_the_loss_on_soft_targets_is_cross_entropy_on_the_mixed_targets():
    g = torch.Generator().manual_seed(3)
    logits, y_a = torch.randn(16, K, generator=g), torch.randint(0, K, (16,), generator=g)
    y_b = torch.randint(0, K, (16,), generator=g)
    lam = 0.35
    soft = lam * F.one_hot(y_a, K).float() + (1 - lam) * F.one_hot(y_b, K).float()
    for name in ("mixup", "cutmix", "balanced_mixup", "trivialaugment"):
        loss = float(remedy(name).loss(logits, soft, 0))
        # LongTailCXR's mixup_criterion, and the soft cross-entropy in numpy
        assert loss == pytest.approx(
            float(lam * F.cross_entropy(logits, y_a) + (1 - lam) * F.cross_entropy(logits, y_b)), rel=1e-5
        )
        z = logits.double().numpy()
        logp = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
        assert loss == pytest.approx(-(soft.double().numpy() * logp).sum(1).mean(), rel=1e-5)


# -- balanced MixUp: a class-balanced partner batch through the training loop ------------------------
class _Spy:
    """Wraps a remedy's augment and keeps every (target, partner) it was handed."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def augment(self, x, target, generator, epoch, partner=None):
        self.seen.append((x.clone(), target.clone(), partner))
        return self.inner.augment(x, target, generator, epoch, partner)


def test_balanced_mixups_partner_batch_is_class_balanced_and_paired_by_draw():
    y = torch.from_numpy(np.repeat(np.arange(K), COUNTS))  # rows sorted by class
    x = (torch.arange(len(y)).float() / len(y))[:, None, None, None].expand(
        -1, 1, 4, 4
    )  # row id in the pixels
    spy = _Spy(remedy("balanced_mixup"))
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, K))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    g = torch.Generator().manual_seed(0)
    for epoch in range(4):
        _epoch(model, optimizer, x, y, Protocol(batch_size=32), g, torch.device("cpu"), spy, epoch)
    partner_y = torch.cat([p[1] for _, _, p in spy.seen])
    own_y = torch.cat([t for _, t, _ in spy.seen])
    assert len(partner_y) == len(own_y) == 4 * len(y)
    freq = np.bincount(partner_y.numpy(), minlength=K) / len(partner_y)
    assert freq == pytest.approx(np.full(K, 1 / K), abs=0.04)  # 1,488 draws: sd ~0.012
    assert np.bincount(own_y.numpy(), minlength=K) == pytest.approx(4 * COUNTS)  # instance sampling
    for _, _, (px, py) in spy.seen:
        rows = (px[:, 0, 0, 0] * len(y)).round().long()
        assert torch.equal(y[rows], py)  # each partner image with its own label
    # paired by the draw, not sorted by row index: the partner's label order within a batch varies
    assert any(not torch.equal(p[1], p[1].sort().values) for _, _, p in spy.seen)


def test_balanced_mixup_mixes_towards_the_balanced_batch_with_beta_alpha_1():
    bal = remedy("balanced_mixup")
    x, xb = torch.zeros(4, 1, 2, 2), torch.ones(4, 1, 2, 2)
    y, yb = torch.zeros(4, dtype=torch.long), torch.full((4,), 2)
    g = torch.Generator().manual_seed(1)
    lams = []
    for _ in range(3000):
        mixed, soft = bal.augment(x, y, g, 0, (xb, yb))
        lam = float(mixed[0, 0, 0, 0])  # the balanced batch's weight
        assert soft[:, 2].numpy() == pytest.approx(np.full(4, lam), abs=1e-6)
        assert soft[:, 0].numpy() == pytest.approx(np.full(4, 1 - lam), abs=1e-6)
        lams.append(lam)
    assert np.mean(lams) == pytest.approx(0.2 / 1.2, abs=0.015)  # Beta(0.2, 1): mean 1/6


def test_class_balanced_partner_order_counts():
    y = torch.from_numpy(np.repeat(np.arange(K), COUNTS))
    order = remedy("balanced_mixup").partner_order(y, torch.Generator().manual_seed(0), 0)
    assert len(order) == len(y)
    draws = torch.cat([class_balanced_order(y, torch.Generator().manual_seed(s)) for s in range(10)])
    assert np.bincount(y[draws].numpy(), minlength=K) / len(draws) == pytest.approx(
        np.full(K, 1 / K), abs=0.02
    )


# -- the existing remedies train exactly as before the hooks ---------------------------------------
@pytest.mark.parametrize("name", ["reweight", "resample", "focal", "ldam_drw"])
def test_remedies_without_augment_train_as_the_loop_before_the_hooks(name):
    g0 = torch.Generator().manual_seed(0)
    y = torch.randint(0, K, (90,), generator=g0)
    x = torch.rand(90, 1, 4, 4, generator=g0)
    protocol = Protocol(batch_size=16)
    r = remedy(name, np.bincount(y.numpy(), minlength=K), **({"drw_epoch": 1} if name == "ldam_drw" else {}))

    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(16, K))

    a, b = model(), model()
    opt_a, opt_b = torch.optim.Adam(a.parameters(), 1e-2), torch.optim.Adam(b.parameters(), 1e-2)
    ga, gb = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for epoch in range(3):
        _epoch(a, opt_a, x, y, protocol, ga, torch.device("cpu"), r, epoch)
        # the loop as it was: the epoch's sorted blocks, the loss of the hard labels
        for idx in r.epoch_order(y, gb, epoch).split(16):
            if len(idx) < 2:
                continue
            idx = idx.sort().values
            loss = r.loss(b(x[idx]).float(), y[idx], epoch)
            opt_b.zero_grad(set_to_none=True)
            loss.backward()
            opt_b.step()
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    x0, y0 = x[:4], y[:4]
    assert Remedy().augment(x0, y0, ga, 0) == (x0, y0) and Remedy().partner_order(y, ga, 0) is None


# -- TrivialAugment's operations ---------------------------------------------------------------------
@pytest.mark.parametrize("name", list(image_ops.OPS))
def test_trivialaugment_ops_keep_shape_and_range(name):
    x = images(6, side=11)
    values, signed, fn = image_ops.OPS[name]
    for b in (0, 7, 15, 30):
        for sign in (1, -1):
            out = fn(x, image_ops.magnitude(name, torch.full((6,), b), torch.full((6,), sign)))
            assert out.shape == x.shape and out.dtype == x.dtype
            assert float(out.min()) >= 0 and float(out.max()) <= 1


@pytest.mark.parametrize(
    "name", [n for n in image_ops.OPS if n not in ("solarize", "autocontrast", "equalize")]
)
def test_trivialaugment_magnitude_0_is_the_identity(name):
    x = images(5, side=9)
    out = image_ops.OPS[name][2](
        x, image_ops.magnitude(name, torch.zeros(5, dtype=torch.long), torch.ones(5))
    )
    assert torch.allclose(out, x, atol=1e-6)


def test_trivialaugment_ops_against_closed_forms_and_pil():
    x = images(3, side=9)
    one = torch.ones(3)
    shifted = image_ops.translate_x(x, 3 * one)
    assert torch.equal(shifted[..., 3:], x[..., :-3]) and not shifted[..., :3].any()
    assert torch.equal(image_ops.translate_y(x, -2 * one)[..., :-2, :], x[..., 2:, :])
    assert torch.equal(image_ops.rotate(x, 90 * one), torch.rot90(x, 1, dims=(2, 3)))
    assert torch.equal(image_ops.shear_x(x, one)[..., 0, :], x[..., 0, :])  # the top row stays
    levels = (x * 255).round().long()
    assert torch.equal(image_ops.posterize(x, 4 * one), (levels & 0xF0).float() / 255)
    assert torch.equal(image_ops.solarize(x, 0.5 * one), torch.where(x >= 0.5, 1 - x, x))
    assert torch.allclose(image_ops.brightness(x, -0.5 * one), x * 0.5)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(image_ops.contrast(x, 0.5 * one), (1.5 * x - 0.5 * mean).clamp(0, 1))
    for i in range(3):
        pil = Image.fromarray(levels[i, 0].numpy().astype(np.uint8), mode="L")

        def ours(out, i=i):
            return (out[i, 0] * 255).round().numpy()

        assert np.array_equal(ours(image_ops.equalize(x)), np.asarray(ImageOps.equalize(pil), dtype=float))
        sharp = np.asarray(ImageEnhance.Sharpness(pil).enhance(1.8), dtype=float)
        assert np.abs(ours(image_ops.sharpness(x, 0.8 * one)) - sharp).max() <= 1
        auto = np.asarray(ImageOps.autocontrast(pil), dtype=float)
        assert np.abs(ours(image_ops.autocontrast(x)) - auto).max() <= 1


def test_trivialaugment_draws_one_op_and_magnitude_per_image():
    ta = remedy("trivialaugment")
    x, y = images(64, side=8), torch.arange(64) % K
    out, target = ta.augment(x, y, torch.Generator().manual_seed(0), 0)
    assert target is y and out.shape == x.shape
    g = torch.Generator().manual_seed(0)
    ops = torch.randint(0, len(image_ops.OPS), (64,), generator=g)
    bins = torch.randint(0, image_ops.N_BINS, (64,), generator=g)
    signs = torch.randint(0, 2, (64,), generator=g) * 2 - 1
    for i in (0, 17, 40):
        name = list(image_ops.OPS)[int(ops[i])]
        m = image_ops.magnitude(name, bins[i : i + 1], signs[i : i + 1])
        assert torch.equal(out[i : i + 1], image_ops.OPS[name][2](x[i : i + 1], m))
    assert len(set(ops.tolist())) == len(image_ops.OPS)  # all 13 drawn among 64 images (seed 0)


# -- which remedies run on top of the synthetic set ---------------------------------------------------


def downstream(**settings):
    return registry.evaluators.get("downstream")(**settings)


def test_augmentations_named_as_remedies_also_run_on_the_synthetic_set():
    """remedies=[mixup, cutmix] asks whether generative augmentation beats them and whether the two
    add up: aug+mixup and aug+cutmix run; long-tail remedies only where with_augmentation names them."""
    assert downstream(remedies=["mixup", "cutmix"], with_augmentation=[]).with_augmentation == (
        "mixup",
        "cutmix",
    )
    assert downstream(
        remedies=["reweight", "mixup", "crt", "trivialaugment", "balanced_mixup"]
    ).with_augmentation == (
        "reweight",
        "crt",
        "mixup",
        "trivialaugment",
        "balanced_mixup",
    )
    assert downstream(
        remedies=["cutmix", "focal"], with_augmentation=["mixup", "cutmix"]
    ).with_augmentation == (
        "mixup",
        "cutmix",
    )
    assert downstream(remedies=["mixup"], combine_augmentations=False).with_augmentation == (
        "reweight",
        "crt",
    )
    assert downstream(remedies=["focal", "resample"], with_augmentation=[]).with_augmentation == ()
    ev = downstream(remedies=["mixup"], with_augmentation=[])
    assert {"bacc/mixup", "bacc/aug+mixup"} <= set(ev.higher_is_better)
    assert ev.describe()["with_augmentation"] == ["mixup"]


def test_a_plugin_remedy_opts_in_with_image_augmentation(monkeypatch):
    class Flip(Remedy):
        name = "flipaug_t"
        image_augmentation = True

        def augment(self, x, target, generator, epoch, partner=None):
            return x.flip(-1), target

    monkeypatch.setitem(registry.remedies._classes, "flipaug_t", Flip)
    assert downstream(remedies=["flipaug_t"], with_augmentation=["crt"]).with_augmentation == (
        "crt",
        "flipaug_t",
    )
    monkeypatch.setattr(Flip, "image_augmentation", False)
    assert downstream(remedies=["flipaug_t"], with_augmentation=["crt"]).with_augmentation == ("crt",)


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_combine_augmentations_must_be_a_bool(value):
    with pytest.raises(Exception, match=r"downstream.combine_augmentations must be True or False"):
        downstream(combine_augmentations=value)


# -- a downstream run records and tabulates them ----------------------------------------------------
@pytest.mark.slow
def test_a_downstream_run_records_mixup_and_cutmix_and_the_table_shows_them(tmp_path, capsys):
    res = tmp_path / "res"
    try:
        code = main(
            [
                "run",
                "methods=[fm]",
                "datasets=[digits_lt]",
                "pipeline.evaluators=[downstream]",
                "downstream.remedies=[mixup,cutmix]",  # no with_augmentation: quick's ['crt'] stays
                "--gin_file",
                "presets/cpu_smoke.gin",
                "downstream.max_epochs=1",
                "train.steps=5",
                f"results_dir={res}",
            ]
        )
    finally:
        gin.clear_config()
    assert code == 0
    (path,) = res.glob("**/record.json")
    metrics = json.loads(path.read_text())["metrics"]
    for key in (
        "bacc/mixup",
        "bacc/cutmix",
        "bacc/aug+mixup",
        "bacc/aug+cutmix",
        "macro_f1/aug+cutmix",
        "bacc/aug+crt",
    ):
        assert key in metrics and np.isfinite(metrics[key]), key
    assert "bacc/crt" not in metrics  # a long-tail remedy runs where it is named, no more
    capsys.readouterr()
    assert main(["tables", str(path.parents[3])]) == 0
    table = capsys.readouterr().out.split("### Downstream classification")[1].split("###")[0]
    for row in ("mixup (real data only)", "cutmix (real data only)", "fm + mixup", "fm + cutmix"):
        assert row in table, row
