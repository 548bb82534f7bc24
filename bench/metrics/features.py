"""The domain-specific feature extractor behind FID, IRS and kNN purity.

The paper computes image metrics in the feature space of a DenseNet-121 trained on the dataset's
real training split. `build_extractor` trains such a classifier (`features.arch`: 'small_cnn' on
CPU by default, 'densenet121' for the paper) once per (dataset configuration, feature
configuration) and caches it, or loads the user's weights from `features.path`. Features are the
pooled penultimate activations (bench.classify.fit.embed): 128-d for small_cnn, 1024-d for
densenet121, 2048-d for resnet50.

Features of the real splits (train, test) are the same in every cell of a dataset that shares
the extractor: `FeatureExtractor.embed_split` stores them once under
`results/cache/real_features/<extractor digest>-<split key>/features.npy` (the extractor digest
covers its architecture, weights and device type; the split key the data fingerprint,
bench.store.fingerprint, the preprocessing and whether the rows come from the uint8 image
cache), so the second cell of a grid reads them instead of running the network over the split.

What `features.path` accepts:
- a folder written by bench (a trained-extractor cache folder): `manifest.json` with `arch`,
  `in_channels` and `n_classes`, and `model.safetensors`; `features.arch` is then ignored;
- a `.safetensors` state-dict file for the architecture named by `features.arch` (set
  features.arch='densenet121' for MONAI DenseNet121 weights), with MONAI's / bench's key names
  (a leading "module." is stripped), the dataset's number of image channels, and any number of
  classes (read from the head's weight). bench reads no pickle: a torch.save file (`.pt` / `.pth` /
  `.bin`) is refused with the one-line conversion to run once (docs/evaluators.md, "Feature networks").
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from bench.classify.fit import (
    ARCHS,
    Classifier,
    Protocol,
    build_classifier,
    default_device,
    embed,
    fit,
    selection_splits,
)
from bench.config.evaluation import FeatureConfig
from bench.dataset import Dataset, Split
from bench.errors import BenchError
from bench.store.artifacts import discard, is_complete, read_manifest, stage_dir
from bench.store.filelock import building
from bench.store.fingerprint import split_fingerprint

WEIGHTS = "model.safetensors"
FEATURES = "features.npy"
_HEAD_WEIGHT = {"small_cnn": "fc.weight", "densenet121": "class_layers.out.weight", "resnet50": "fc.weight"}


def training_protocol(config: FeatureConfig) -> Protocol:
    """The training protocol of a trained extractor."""
    return Protocol(
        lr=config.lr,
        batch_size=config.batch_size,
        max_epochs=config.epochs,
        patience=config.patience,
        class_balanced_sampling=config.class_balanced,
    ).check("features")


class FeatureExtractor:
    """A classifier used as an embedding: `embed(x)` gives (N, dim) float64 pooled features."""

    def __init__(self, model: Classifier, name: str, batch_size: int = 256, cache_dir: Path | None = None):
        self.model, self.name, self.batch_size = model.eval(), name, batch_size
        self.cache_dir = None if cache_dir is None else Path(cache_dir)

    network = "domain"  # bench.config.evaluation.NETWORKS

    @property
    def identity(self) -> str:
        """What the features were computed on, as records state it (`metric_info[...]["features"]`):
        the architecture and a digest of every weight and buffer, the same whether this cell trained
        the network or loaded it, on any device."""
        return f"{self.network} {self.model.arch} weights:{self.weights_digest}"

    @cached_property
    def weights_digest(self) -> str:
        """SHA-256 (16 hex digits) of the architecture and every weight and buffer."""
        return _state_hash(hashlib.sha256(self.model.arch.encode()), self.model).hexdigest()[:16]

    def with_cache(self, cache_dir: Path) -> FeatureExtractor:
        """Self, storing the features of real splits under `cache_dir` (`embed_split`)."""
        self.cache_dir = Path(cache_dir)
        return self

    @cached_property
    def digest(self) -> str:
        """What this extractor computes: architecture, every weight and buffer, device type."""
        h = hashlib.sha256(f"{self.model.arch}|{next(self.model.parameters()).device.type}".encode())
        return _state_hash(h, self.model).hexdigest()[:16]

    @property
    def dim(self) -> int:
        """Feature dimension."""
        return self.model.head.in_features

    def embed(self, x) -> np.ndarray:
        """Features of a tensor or lazy ImageFiles in [0, 1], read one batch at a time."""
        return embed(self.model, x, self.batch_size)

    def embed_split(self, split: Split) -> np.ndarray:
        """Features of a real split, read from the cross-cell cache when this extractor already
        embedded the same data (see the module docstring); computed and stored otherwise."""
        if self.cache_dir is None:
            return self.embed(split.x)
        key = split_key(split)
        folder = self.cache_dir / f"{self.digest}-{key}"
        with building(folder):  # computed once by cells side by side
            return self._stored_or_embedded(split, folder, key)

    def _stored_or_embedded(self, split: Split, folder: Path, key: str) -> np.ndarray:
        """The features stored in `folder` for `key`, else computed and stored there."""
        if is_complete(folder, key):
            try:
                stored = np.load(folder / FEATURES)
                if stored.shape == (len(split), self.dim):
                    return stored
            except (OSError, ValueError):
                pass
            discard(folder)  # damaged or of another shape: computed again
        features = self.embed(split.x)
        with stage_dir(folder, key, extractor=self.name, n=len(split), dim=self.dim) as tmp:
            np.save(tmp / FEATURES, features)
        return features


def _state_hash(h, model: torch.nn.Module):
    """`h` updated with every entry of the model's state dict: name, dtype, shape and bytes, by name."""
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h


def split_key(split: Split) -> str:
    """The data a split's features depend on: its fingerprint, and for lazy image files the
    preprocessing and whether they are read from the uint8 image cache."""
    x = split.x
    reading = (
        {"preprocess": x.preprocess.describe(), "uint8_cache": x.cache is not None}
        if hasattr(x, "preprocess")
        else {}
    )
    extra = hashlib.sha256(json.dumps(reading, sort_keys=True).encode()).hexdigest()[:8]
    return f"{split_fingerprint(split)}-{extra}"


def build_extractor(
    config: FeatureConfig,
    dataset: Dataset,
    train: Split,
    val: Split | None,
    cache_folder: Path,
    key: str,
    seed: int = 0,
) -> FeatureExtractor:
    """The configured extractor: user weights, the complete cache in `cache_folder`, or a new one.

    A new extractor is a `config.arch` classifier trained on `train`, early-stopped on `val` (or,
    when None, the dataset's val split, else a stratified 10% of train held out). It is saved with
    bench.store.artifacts.stage_dir under `cache_folder` for the hash `key`; the manifest records the
    architecture, the training history and `val_bacc`, its real validation balanced accuracy (how
    well the feature network knows the classes).
    """
    in_channels = int(train.x.shape[1])
    if config.path:
        return load_extractor(config, in_channels)
    if config.arch not in ARCHS:
        raise BenchError(f"features.arch={config.arch!r} is not one of {list(ARCHS)}")
    cache_folder = Path(cache_folder)
    with building(cache_folder):  # cells side by side train it once; the others wait and load it
        return _trained_extractor(config, dataset, train, val, cache_folder, key, seed, in_channels)


def _trained_extractor(
    config, dataset, train, val, cache_folder: Path, key: str, seed: int, in_channels: int
) -> FeatureExtractor:
    """The extractor stored in `cache_folder` for `key`, else trained and stored there."""
    if is_complete(cache_folder, key):
        return _load_folder(cache_folder)
    protocol = training_protocol(config)
    fit_split, val_split = selection_splits(dataset, train, val)
    model = build_classifier(config.arch, in_channels, dataset.n_classes, seed=seed).to(default_device())
    model, history = fit(model, fit_split.x, fit_split.y, val_split.x, val_split.y, protocol, seed)
    info = {
        "arch": config.arch,
        "in_channels": in_channels,
        "n_classes": dataset.n_classes,
        "dim": model.head.in_features,
        "val_bacc": history.best_val_bacc,
        "dataset": dataset.name,
        "features": asdict(config),
        "history": history.to_dict(),
    }
    with stage_dir(cache_folder, key, **info) as staging:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()},
            str(staging / WEIGHTS),
        )
    return FeatureExtractor(model, f"{config.arch}@{dataset.name}")


def load_extractor(config: FeatureConfig, in_channels: int) -> FeatureExtractor:
    """The extractor stored at `config.path` (a bench folder or a state-dict file)."""
    path = Path(config.path).expanduser()
    if path.is_dir():
        return _load_folder(path)
    if not path.is_file():
        raise BenchError(
            f"features.path={config.path!r} does not exist; give a bench feature folder "
            "(manifest.json + model.safetensors) or a state-dict file (.safetensors/.pt/.pth)"
        )
    if config.arch not in ARCHS:
        raise BenchError(f"features.arch={config.arch!r} is not one of {list(ARCHS)}")
    state = _read_state_dict(path)
    head = _HEAD_WEIGHT[config.arch]
    if head not in state:
        raise BenchError(
            f"features.path={config.path!r} has no {head!r}: not a {config.arch} state dict; "
            f"set features.arch to the weights' architecture ({', '.join(ARCHS)})"
        )
    model = build_classifier(config.arch, in_channels, int(state[head].shape[0]))
    _load_weights(model, state, path, f"{config.arch} with in_channels={in_channels}")
    return FeatureExtractor(model.to(default_device()), f"{config.arch}:{path.name}")


def _load_folder(folder: Path) -> FeatureExtractor:
    """A bench-written extractor folder."""
    manifest = read_manifest(folder)
    complete = manifest and {"arch", "in_channels", "n_classes"} <= set(manifest)
    if not complete or not (folder / WEIGHTS).is_file():
        raise BenchError(
            f"features.path: {folder} is not a bench feature folder (needs manifest.json with "
            f"arch, in_channels, n_classes and {WEIGHTS}); point features.path at one or at a "
            "state-dict file"
        )
    model = build_classifier(manifest["arch"], manifest["in_channels"], manifest["n_classes"])
    _load_weights(model, load_file(str(folder / WEIGHTS)), folder / WEIGHTS, manifest["arch"])
    return FeatureExtractor(model.to(default_device()), f"{manifest['arch']}:{folder.name}")


def _read_state_dict(path: Path) -> dict:
    """Tensors of a .safetensors file, without a 'module.' prefix (DataParallel / DDP checkpoints).

    Only safetensors: a torch.save file is a pickle, which can run code when read."""
    if path.suffix != ".safetensors":
        raise BenchError(
            f"features.path={str(path)!r} is not a .safetensors file; bench reads no pickle: convert it once "
            'with python -c "import torch; from safetensors.torch import save_file; '
            f"save_file(torch.load('{path.name}', map_location='cpu', weights_only=True), "
            f"'{path.stem}.safetensors')\" (docs/evaluators.md, 'Feature networks')"
        )
    try:
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 -- any unreadable file is the same user error
        raise BenchError(
            f"features.path={str(path)!r} cannot be read as a safetensors state dict "
            f"({type(exc).__name__}); give a .safetensors file of the network's weights"
        ) from None
    return {k.removeprefix("module."): v for k, v in state.items()}


def _load_weights(model: Classifier, state: dict, path: Path, what: str) -> None:
    """Load `state` into the network strictly; a mismatch is a one-line error."""
    try:
        model.net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise BenchError(
            f"features.path: {path} does not fit a {what} ({detail}); check features.arch "
            "and that the weights match the dataset's image channels"
        ) from None
