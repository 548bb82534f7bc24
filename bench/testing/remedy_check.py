"""`check_remedy`: a long-tail remedy plugin against what the downstream classifier calls (bench/remedy.py).

Its hooks one by one on the tiny training labels (counts 30, 18, 12): `check` accepts a protocol
long enough for its phases, `setup` takes the counts, `epoch_order` gives row indices in range and
the same ones for the same generator, `loss` is a finite scalar that backpropagates to the logits,
`begin_epoch` answers True or False, `describe` is JSON naming it, `partner_order` gives None or
one row index per row, `augment` returns images of the batch's shape and int64 labels or soft
targets whose rows sum to 1, the same for the same generator; then a tiny classifier trained
with it by bench's own training loop (`fit`, or `retrain_head` for a remedy that re-trains the
head of a plainly trained classifier), whose every epoch's loss is finite.
"""

from __future__ import annotations

import torch

from bench.testing.probe import Probe, resolve
from bench.testing.tiny import TRAIN_COUNTS, TinyDataset

HOOKS = {
    "check": ("protocol",),
    "setup": ("counts",),
    "epoch_order": ("y", "generator", "epoch"),
    "loss": ("logits", "target", "epoch"),
    "begin_epoch": ("epoch", "optimizer"),
    "partner_order": ("y", "generator", "epoch"),
    "augment": ("x", "target", "generator", "epoch", "partner"),
    "describe": (),
}


def check_remedy(plugin, settings: dict | None = None) -> None:
    """Check a remedy class (or registered name) against the remedy contract; ContractFailure if not.
    `settings`: constructor keyword arguments."""
    from bench.classify.fit import Protocol

    probe = Probe("remedy", resolve("remedy", plugin))
    probe.require_hooks(HOOKS)
    remedy = probe.construct(settings)
    probe.require_signatures(remedy, HOOKS)
    retrains, min_epochs = getattr(remedy, "retrains_head", None), getattr(remedy, "min_epochs", None)
    probe.expect(isinstance(retrains, bool), "retrains_head", f"is {retrains!r}, expected True or False")
    image_aug = getattr(remedy, "image_augmentation", None)
    probe.expect(
        isinstance(image_aug, bool), "image_augmentation", f"is {image_aug!r}, expected True or False"
    )
    probe.expect(
        isinstance(min_epochs, int) and not isinstance(min_epochs, bool) and min_epochs >= 0,
        "min_epochs",
        f"is {min_epochs!r}, expected an integer >= 0",
    )
    protocol = Protocol(batch_size=16, max_epochs=max(3, min_epochs + 1), patience=1)
    probe.call("check", remedy.check, protocol)
    train = TinyDataset("image").load("train")
    probe.call("setup", remedy.setup, torch.bincount(train.y, minlength=len(TRAIN_COUNTS)).numpy())
    _check_order(probe, remedy, train.y)
    _check_loss(probe, remedy, train.y)
    _check_augment(probe, remedy, train)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    answer = probe.call("begin_epoch", remedy.begin_epoch, 0, optimizer)
    probe.expect(isinstance(answer, bool), "begin_epoch", f"returned {answer!r}, expected True or False")
    probe.jsonable("describe", probe.call("describe", remedy.describe))
    _check_training(probe, settings, protocol, train)


def _check_order(probe: Probe, remedy, y: torch.Tensor) -> None:
    """Row indices (int64, 1-D, in range), the same for equally seeded generators."""
    for epoch in (0, 1):
        order = probe.call("epoch_order", remedy.epoch_order, y, torch.Generator().manual_seed(epoch), epoch)
        probe.expect(
            isinstance(order, torch.Tensor) and order.dim() == 1 and len(order) > 0,
            "epoch_order",
            f"returned {_shape(order)}, expected a 1-D tensor of row indices",
        )
        probe.labels("epoch_order", order, len(order), len(y), what="returned row indices with")
        again = remedy.epoch_order(y, torch.Generator().manual_seed(epoch), epoch)
        probe.expect(
            torch.equal(order, again),
            "epoch_order",
            "returned other rows for the same generator seed, expected its draws to come from `generator` alone",
        )


def _check_loss(probe: Probe, remedy, y: torch.Tensor) -> None:
    """A finite scalar loss of a mini-batch's logits, differentiable in them."""
    logits = torch.randn(
        len(y), len(TRAIN_COUNTS), generator=torch.Generator().manual_seed(0)
    ).requires_grad_()
    for epoch in (0, 1):
        loss = probe.call("loss", remedy.loss, logits, y, epoch)
        probe.tensor("loss", loss, shape=(), floating=True)
        probe.expect(
            loss.requires_grad,
            "loss",
            "returned a loss with no gradient, expected one that backpropagates to the logits",
        )
        (grad,) = torch.autograd.grad(loss, logits)
        probe.expect(
            bool(torch.isfinite(grad).all()),
            "loss",
            "returned a loss whose gradient holds NaN or infinite values",
        )


def _check_augment(probe: Probe, remedy, train) -> None:
    """A mini-batch's images keep their shape and finite values; its targets are int64 labels
    (B,) or soft targets (B, K) with rows of non-negative values summing to 1; equally seeded
    generators give the same batch. `partner`: the paired batch when `partner_order` gives rows."""
    n, k = 16, len(TRAIN_COUNTS)
    order = probe.call("partner_order", remedy.partner_order, train.y, torch.Generator().manual_seed(0), 0)
    partner = None
    if order is not None:
        probe.labels("partner_order", order, len(train.y), len(train.y), what="returned row indices with")
        partner = (train.x[order[:n]], train.y[order[:n]])
    x, y = train.x[:n], train.y[:n]
    outs = [
        probe.call("augment", remedy.augment, x, y, torch.Generator().manual_seed(0), 0, partner)
        for _ in (0, 1)
    ]
    probe.expect(
        all(isinstance(o, tuple) and len(o) == 2 for o in outs),
        "augment",
        "returned something other than (images, targets)",
    )
    (images, target), (again_x, again_t) = outs
    probe.tensor("augment", images, shape=tuple(x.shape), floating=True, what="returned images with")
    if target.dim() == 1:
        probe.labels("augment", target, n, k, what="returned labels with")
    else:
        probe.tensor("augment", target, shape=(n, k), floating=True, what="returned soft targets with")
        probe.expect(
            bool((target >= 0).all()) and torch.allclose(target.sum(1), torch.ones(n), atol=1e-5),
            "augment",
            "returned soft targets whose rows are not probabilities summing to 1",
        )
    probe.expect(
        torch.equal(images, again_x) and torch.equal(target, again_t),
        "augment",
        "returned another batch for the same generator seed, expected its draws to come from `generator` alone",
    )


def _check_training(probe: Probe, settings, protocol, train) -> None:
    """A tiny classifier trained under the remedy (set up afresh) by bench's loop: finite losses."""
    from bench.classify.fit import build_classifier, fit, retrain_head

    remedy = probe.construct(settings)
    remedy.setup(torch.bincount(train.y, minlength=len(TRAIN_COUNTS)).numpy())
    val = TinyDataset("image").load("test")
    model = build_classifier("small_cnn", 1, len(TRAIN_COUNTS), seed=0)
    if remedy.retrains_head:
        model, _ = fit(model, train.x, train.y, val.x, val.y, protocol, 0)
        _, history = probe.call(
            "retrains_head", retrain_head, model, train.x, train.y, val.x, val.y, protocol, 0, remedy
        )
    else:
        _, history = probe.call("loss", fit, model, train.x, train.y, val.x, val.y, protocol, 0, remedy)
    probe.expect(
        bool(history.train_loss) and all(torch.isfinite(torch.tensor(v)) for v in history.train_loss),
        "loss",
        f"gave the epoch losses {history.train_loss} training a tiny classifier, expected finite ones",
    )


def _shape(value) -> str:
    return f"shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"
