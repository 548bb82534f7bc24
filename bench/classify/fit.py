"""Image classifiers and their training protocol, shared by the downstream evaluator and FID features.

Three architectures: 'small_cnn' (about 100k parameters, for CPU runs on the embedded benchmarks),
and MONAI's 2-D 'densenet121' (1024-d pooled features, the paper's domain feature network) and
'resnet50' (2048-d, the paper's downstream classifier). All take images in [0, 1] and map them to
[-1, 1] inside the model, so callers never normalise. The penultimate features are the input of
the final linear layer (`head`), captured with a forward pre-hook: the global-average-pooled
vector for every architecture.

`fit` is the LongTailCXR protocol: Adam, cross-entropy on mini-batches, model selection by
balanced accuracy on a validation set with early stopping after `patience` epochs without
improvement, and the best weights restored. A long-tail remedy (bench.remedy) changes the epoch's
rows, the loss or a phase of it, or each mini-batch's images and (soft) targets before the forward
pass (MixUp, CutMix, TrivialAugment; balanced MixUp's paired second batch), never the selection;
`retrain_head` is decoupled re-training (cRT) of the last layer on frozen features. Everything
random comes from seeded generators, so a run on the CPU is reproducible bit for bit.

Mini-batches come through bench.classify.batches: DataLoader workers, pinned memory and uint8
image-cache rows where configured, the same values either way; on CUDA the networks run in
channels_last with cuDNN's autotuner, training and prediction under bf16 autocast, features in
float32. The loss is read from the device once per epoch, not once per batch.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from bench.classify.batches import autocast, device_batches, prepare_model
from bench.config.checks import is_int
from bench.config.extras import missing_extra
from bench.dataset import Dataset, Split
from bench.errors import BenchError
from bench.remedy import Remedy, class_balanced_order
from bench.runtime import progress

ARCHS = ("small_cnn", "densenet121", "resnet50")
_HEAD = {"small_cnn": "fc", "densenet121": "class_layers.out", "resnet50": "fc"}


class SmallCNN(nn.Module):
    """A CPU-sized CNN: a stride-2 conv stem, three conv-BN-ReLU stages (max-pool after the first
    two), global average pooling and a linear head. Widths 16, 32, 64, 128: ~99k parameters,
    128-d features, any input side >= 8 (32x32 inputs end at 4x4 before pooling)."""

    def __init__(self, in_channels: int, n_classes: int, widths=(16, 32, 64, 128)):
        super().__init__()
        layers, c_in = [], in_channels
        for i, c_out in enumerate(widths):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=2 if i == 0 else 1, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]
            if 0 < i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class Classifier(nn.Module):
    """An architecture behind the [0, 1] -> [-1, 1] input map (values outside [0, 1] are clipped,
    as generated samples may overshoot)."""

    def __init__(self, arch: str, net: nn.Module):
        super().__init__()
        self.arch, self.net = arch, net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.clamp(0.0, 1.0) * 2.0 - 1.0)

    @property
    def head(self) -> nn.Linear:
        """The final linear layer; its input is the pooled penultimate feature vector."""
        return self.net.get_submodule(_HEAD[self.arch])


def build_classifier(arch: str, in_channels: int, n_classes: int, seed: int | None = None) -> Classifier:
    """A freshly initialised classifier; with `seed`, the initial weights depend on it only.

    resnet50 uses a stride-2 7x7 stem like torchvision's ImageNet ResNet-50 (MONAI's default stride
    is 1, four times the compute at the same resolution). No pretrained weights are loaded.
    """
    if arch not in ARCHS:
        raise BenchError(f"unknown classifier arch {arch!r}; use one of {list(ARCHS)}")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return Classifier(arch, _make_net(arch, in_channels, n_classes))


def _make_net(arch: str, in_channels: int, n_classes: int) -> nn.Module:
    if arch == "small_cnn":
        return SmallCNN(in_channels, n_classes)
    try:
        from monai.networks.nets import DenseNet121, resnet50
    except ImportError:
        raise missing_extra("monai", f"classifier arch {arch!r}") from None

    if arch == "densenet121":
        return DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=n_classes)
    return resnet50(spatial_dims=2, n_input_channels=in_channels, num_classes=n_classes, conv1_t_stride=2)


def default_device() -> torch.device:
    """CUDA when available, else the CPU (bit-for-bit reproducibility holds on the CPU only)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _batches(x, batch_size: int, device: torch.device):
    """Consecutive row blocks of a tensor, lazy ImageFiles or RowConcat, as float tensors on `device`."""
    yield from device_batches(x, [slice(i, i + batch_size) for i in range(0, len(x), batch_size)], device)


@torch.no_grad()
def embed(model: Classifier, x, batch_size: int = 256) -> np.ndarray:
    """(N, d) float64 penultimate features (the pooled input of the final linear layer).

    Computed in float32 even on CUDA (no autocast): the metrics compare feature statistics, and
    one pass over a set is cheap next to training."""
    model.eval()
    prepare_model(model)
    captured: list[torch.Tensor] = []
    hook = model.head.register_forward_pre_hook(
        lambda _m, args: captured.append(args[0].detach().float().cpu())
    )
    try:
        for xb in _batches(x, batch_size, _device(model)):
            model(xb)
    finally:
        hook.remove()
    if not captured:
        return np.zeros((0, model.head.in_features))
    return torch.cat(captured).double().numpy()


@torch.no_grad()
def predict(model: Classifier, x, batch_size: int = 256) -> np.ndarray:
    """(N,) int64 predicted class of every row."""
    model.eval()
    prepare_model(model)
    device = _device(model)
    with autocast(device):
        out = [model(xb).argmax(1).cpu() for xb in _batches(x, batch_size, device)]
    return torch.cat(out).numpy().astype(np.int64) if out else np.zeros(0, np.int64)


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall over the classes present in y_true (sklearn's balanced accuracy)."""
    from sklearn.metrics import (
        balanced_accuracy_score,  # scikit-learn loads when used, not with the plugin (a fast CLI)
    )

    return float(balanced_accuracy_score(y_true, y_pred))


class RecallStats:
    """Per-class true positives and support, accumulated on the model's device by torchmetrics'
    MulticlassStatScores, batch by batch: validation runs every epoch, so its predictions never
    leave the GPU. `balanced_accuracy` is scikit-learn's: mean recall over the classes present in
    the targets (a class predicted but absent does not count), checked against it in the tests."""

    def __init__(self, n_classes: int, device):
        # sync_on_compute=False: torchmetrics would otherwise all-gather the counts of every launched rank,
        # each validating its own classifier (bench.runtime.distributed.spread)
        from torchmetrics.classification import MulticlassStatScores  # loads when used (a fast CLI)

        self.stats = MulticlassStatScores(num_classes=n_classes, average=None, sync_on_compute=False).to(
            device
        )

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.stats.update(pred, target.to(pred.device))

    def balanced_accuracy(self) -> float:
        tp, _fp, _tn, _fn, support = self.stats.compute().unbind(-1)
        present = support > 0
        return (
            float((tp[present].double() / support[present]).mean()) if bool(present.any()) else float("nan")
        )


@torch.no_grad()
def validation_bacc(model: nn.Module, x, y: torch.Tensor, batch_size: int = 256) -> float:
    """Balanced accuracy of `model` (a Classifier, or a last layer on features) on (x, y),
    computed on the model's device (RecallStats)."""
    model.eval()
    device = _device(model)
    n_classes = model.out_features if isinstance(model, nn.Linear) else model.head.out_features
    stats = RecallStats(n_classes, device)
    with autocast(device):
        for i, xb in enumerate(_batches(x, batch_size, device)):
            stats.update(model(xb).argmax(1), y[i * batch_size : (i + 1) * batch_size])
    return stats.balanced_accuracy()


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """F1 averaged over all `n_classes` classes; a class never predicted nor present scores 0."""
    from sklearn.metrics import f1_score  # scikit-learn loads when used, not with the plugin (a fast CLI)

    return float(f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro", zero_division=0))


@dataclass
class Protocol:
    """How a classifier is trained (defaults sized for 32x32 images on 2 CPU cores)."""

    lr: float = 1e-3
    batch_size: int = 64
    max_epochs: int = 15
    patience: int = 4  # epochs without a better validation balanced accuracy before stopping
    weight_decay: float = 0.0
    class_balanced_sampling: bool = False  # draw each epoch's rows with probability 1 / n_class

    def check(self, owner: str) -> Protocol:
        """Self, or a one-line error naming the bad setting."""
        for name in ("batch_size", "max_epochs", "patience"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise BenchError(f"{owner}.{name} must be an integer >= 1, got {value!r}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise BenchError(
                f"{owner}.lr must be > 0 and {owner}.weight_decay >= 0, "
                f"got {self.lr!r} and {self.weight_decay!r}"
            )
        return self

    def describe(self) -> dict:
        """JSON-able settings."""
        return asdict(self)


@dataclass
class History:
    """Per-epoch mean training loss and validation balanced accuracy; the epoch kept (0-based)."""

    train_loss: list = field(default_factory=list)
    val_bacc: list = field(default_factory=list)
    best_epoch: int = -1

    @property
    def best_val_bacc(self) -> float:
        """Validation balanced accuracy of the restored weights."""
        return self.val_bacc[self.best_epoch] if self.val_bacc else float("nan")

    def to_dict(self) -> dict:
        """JSON-able record."""
        return {**asdict(self), "best_val_bacc": self.best_val_bacc}


class _Balanced(Remedy):
    """`class_balanced_sampling=True`: plain cross-entropy on class-balanced draws."""

    def epoch_order(self, y: torch.Tensor, generator: torch.Generator, epoch: int) -> torch.Tensor:
        return class_balanced_order(y, generator)


def plain(protocol: Protocol) -> Remedy:
    """The protocol's own training: cross-entropy over permutations, or over class-balanced draws."""
    return _Balanced() if protocol.class_balanced_sampling else Remedy()


def fit(
    model: Classifier,
    train_x,
    train_y: torch.Tensor,
    val_x,
    val_y: torch.Tensor,
    protocol: Protocol,
    seed: int,
    remedy: Remedy | None = None,
) -> tuple[Classifier, History]:
    """Train in place with early stopping on validation balanced accuracy; restore the best weights.

    `train_x` / `val_x` are tensors or lazy ImageFiles (indexed one mini-batch at a time). `remedy`
    (set up with the training counts) chooses each epoch's rows and the loss; default `plain`.
    """
    remedy = remedy or plain(protocol)
    prepare_model(model)
    device = _device(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=protocol.lr, weight_decay=protocol.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    history = early_stopping(
        model,
        optimizer,
        protocol,
        remedy,
        lambda epoch: _epoch(model, optimizer, train_x, train_y, protocol, generator, device, remedy, epoch),
        lambda: validation_bacc(model, val_x, val_y, protocol.batch_size),
    )
    return model, history


def retrain_head(
    model: Classifier,
    train_x,
    train_y: torch.Tensor,
    val_x,
    val_y: torch.Tensor,
    protocol: Protocol,
    seed: int,
    remedy: Remedy,
) -> tuple[Classifier, History]:
    """Decoupled re-training (cRT): a copy of `model` whose last layer is re-initialised (from
    `seed`) and trained alone on the frozen penultimate features, under `remedy` and the protocol's
    optimiser and early stopping. The features are computed once, in evaluation mode."""
    features = [torch.from_numpy(embed(model, x, protocol.batch_size)).float() for x in (train_x, val_x)]
    old = model.head
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(old.in_features, old.out_features).to(_device(model))
    optimizer = torch.optim.Adam(head.parameters(), lr=protocol.lr, weight_decay=protocol.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    history = early_stopping(
        head,
        optimizer,
        protocol,
        remedy,
        lambda epoch: _epoch(
            head, optimizer, features[0], train_y, protocol, generator, _device(head), remedy, epoch
        ),
        lambda: validation_bacc(head, features[1], val_y, protocol.batch_size),
    )
    out = copy.deepcopy(model)
    out.head.load_state_dict(head.state_dict())
    return out, history


def early_stopping(
    module: nn.Module, optimizer, protocol: Protocol, remedy: Remedy, train_epoch, validate
) -> History:
    """Epochs of `train_epoch(epoch)` until `patience` epochs bring no better `validate()` (not
    before `remedy.min_epochs`; a remedy's new phase restarts the count); the best weights restored."""
    history, best_state, waited = History(), None, 0
    for epoch in progress.bar(range(protocol.max_epochs), "classifier", unit="epoch"):
        if remedy.begin_epoch(epoch, optimizer):
            waited = 0
        history.train_loss.append(train_epoch(epoch))
        history.val_bacc.append(validate())
        if best_state is None or history.val_bacc[-1] > history.best_val_bacc:
            history.best_epoch, best_state, waited = epoch, copy.deepcopy(module.state_dict()), 0
        else:
            waited += 1
            if waited >= protocol.patience and epoch + 1 >= remedy.min_epochs:
                break
    module.load_state_dict(best_state)
    return history


def _epoch(
    model, optimizer, x, y: torch.Tensor, protocol: Protocol, generator, device, remedy: Remedy, epoch: int
) -> float:
    """One pass of mini-batches over the remedy's rows; returns the mean loss. Batches of one row
    are skipped (batch norm needs two values per channel once the spatial size is 1x1). The
    losses stay on the device until the epoch ends (no host sync per batch)."""
    model.train()
    order = remedy.epoch_order(y, generator, epoch).split(protocol.batch_size)
    partner = remedy.partner_order(y, generator, epoch)  # None but for a remedy mixing in a second stream
    # sorted reads are kinder to lazy image files; the order within a batch is irrelevant
    blocks = [idx.sort().values for idx in order if len(idx) >= 2]
    partners = _partner_batches(remedy, x, y, partner, order, device)
    losses = []
    for idx, xb, paired in zip(blocks, device_batches(x, blocks, device), partners):
        xb, target = remedy.augment(xb, y[idx].to(device, non_blocking=True), generator, epoch, paired)
        with autocast(device):
            logits = model(xb)
        # the remedies' losses (margins, focal weights) in float32 whatever the autocast
        loss = remedy.loss(logits.float(), target, epoch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    # float64 mean of the float32 losses, as numpy computed it from the per-batch .item() values
    return float(np.mean(torch.stack(losses).cpu().double().numpy())) if losses else float("nan")


def _partner_batches(remedy: Remedy, x, y: torch.Tensor, partner, order: tuple, device):
    """(images, labels) of the remedy's partner stream `partner` for each batch of `order` (the
    epoch's split rows) that is trained on, in the order drawn (read sorted, then put back: the
    pairing follows the draw, not the row index); None for every batch when `partner` is None."""
    if partner is None:
        return itertools.repeat(None)
    if len(partner) != sum(map(len, order)):
        raise BenchError(
            f"remedy {remedy.name!r}: partner_order gave {len(partner)} rows and epoch_order "
            f"{sum(map(len, order))}; give one partner row per row"
        )
    # each block sorted for reading, and `back` the permutation that restores the drawn order
    parts = [
        (p.sort().values, p.sort().indices.argsort())
        for p, idx in zip(partner.split(list(map(len, order))), order)
        if len(idx) >= 2
    ]
    return (
        (xb[back.to(xb.device)], y[rows[back]].to(device, non_blocking=True))
        for (rows, back), xb in zip(parts, device_batches(x, [rows for rows, _ in parts], device))
    )


def stratified_holdout(
    y: torch.Tensor, fraction: float = 0.1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep, held) sorted row indices: round(fraction * n_c) rows of each class held out, at least
    one for classes with two or more rows and never a class's last row; deterministic for a seed."""
    rng = np.random.default_rng(seed)
    held = []
    for c in torch.unique(y).tolist():
        rows = np.flatnonzero(y.numpy() == c)
        k = min(max(round(fraction * len(rows)), 1), len(rows) - 1)
        held.extend(rng.choice(rows, size=k, replace=False).tolist())
    held_mask = np.zeros(len(y), bool)
    held_mask[held] = True
    return torch.from_numpy(np.flatnonzero(~held_mask)), torch.from_numpy(np.flatnonzero(held_mask))


def selection_splits(dataset: Dataset, train: Split, val: Split | None = None) -> tuple[Split, Split]:
    """(fit, val) for model selection: the given or the dataset's own validation split with all of
    train, else a stratified 10% of train held out (seed 0) and the rest to fit on."""
    if val is not None:
        return train, val
    if dataset.val_split:
        return train, dataset.load(dataset.val_split)
    keep, held = stratified_holdout(train.y)
    return train.subset(keep), train.subset(held)


class RowConcat:
    """Rows of several tensors / lazy ImageFiles as one indexable array, read only when indexed."""

    def __init__(self, parts: list):
        self.parts = [p for p in parts if len(p)]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple:
        """(N, C, H, W) of the rows together (the parts share C, H, W)."""
        return (len(self), *tuple(self.parts[0].shape[1:]))

    def __getitem__(self, index) -> torch.Tensor:
        rows = torch.arange(len(self))[index] if isinstance(index, slice) else torch.as_tensor(index)
        part = np.searchsorted(self.offsets, rows.numpy(), side="right") - 1
        where = [np.flatnonzero(part == p) for p in np.unique(part)]
        blocks = [self.parts[part[w[0]]][rows[w] - int(self.offsets[part[w[0]]])].float() for w in where]
        if not blocks:
            return torch.empty(0)
        data = torch.cat(blocks)
        out = torch.empty_like(data)
        out[torch.from_numpy(np.concatenate(where))] = data
        return out


def concat_rows(parts: list):
    """One tensor when every part is a tensor, else a lazy RowConcat."""
    if all(isinstance(p, torch.Tensor) for p in parts):
        return torch.cat([p.float() for p in parts])
    return RowConcat(parts)
