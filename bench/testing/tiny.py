"""The kit's tiny synthetic inputs: long-tailed latents, a tiny backbone, a tiny dataset and cell.

Everything is built from fixed seeds in a fraction of a second on a CPU, so a check is
deterministic and fast whatever the plugin. Three classes, long-tailed (30, 18, 12 training rows),
each with two well-separated clusters, so priors, subclass fits and classifiers have something
to find. Vector data are 2-D, images 1 x 8 x 8 in [0, 1] (latents 1 x 4 x 4 for methods).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bench.backbone import Backbone
from bench.context import CellContext
from bench.data.targets import ClassTarget
from bench.dataset import Dataset, Split
from bench.prior import Prior

CLASS_NAMES = ["head", "middle", "tail"]
TRAIN_COUNTS = (30, 18, 12)
TEST_PER_CLASS = 12
SYNTHETIC = (0, 12, 18)  # the augmentation plan: the tail classes get synthetic rows
VECTOR_LATENT = (2,)
IMAGE_LATENT = (1, 4, 4)
IMAGE = (1, 8, 8)


def tiny_labels(counts=TRAIN_COUNTS) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels, cluster) of a split with counts[c] rows of class c, classes interleaved; the rows of
    a class alternate between its two clusters."""
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    k = torch.cat([torch.arange(n) % 2 for n in counts])
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(len(y)))
    return y[order], k[order]


def tiny_latents(
    shape=VECTOR_LATENT, counts=TRAIN_COUNTS, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents (N, *shape), labels (N,)): class c's two clusters at +-1 around 3 c, spread 0.3."""
    y, k = tiny_labels(counts)
    g = torch.Generator().manual_seed(seed)
    centre = (3.0 * y + 2.0 * k - 1.0).reshape(-1, *([1] * len(shape)))
    return centre + 0.3 * torch.randn(len(y), *shape, generator=g), y


def tiny_images(y: torch.Tensor, k: torch.Tensor, seed: int) -> torch.Tensor:
    """(N, 1, 8, 8) images in [0, 1]: a bright 3x3 square at a place set by class and cluster."""
    g = torch.Generator().manual_seed(seed)
    x = 0.2 * torch.rand(len(y), *IMAGE, generator=g)
    for i, (c, s) in enumerate(zip(y.tolist(), k.tolist())):
        r, col = 2 * c, 1 + 3 * s
        x[i, :, r : r + 3, col : col + 3] += 0.7
    return x.clamp(0, 1)


class TinyDataset(Dataset):
    """Three long-tailed classes of 2-D vectors or 8x8 images, with subclasses and patient metadata."""

    name = "tiny"
    class_names = list(CLASS_NAMES)

    def __init__(self, kind: str = "vector"):
        self.kind = kind

    def load(self, split: str) -> Split:
        counts = TRAIN_COUNTS if split == "train" else (TEST_PER_CLASS,) * len(CLASS_NAMES)
        seed = {"train": 1, "test": 2}.get(split, 3)
        y, k = tiny_labels(counts)
        if self.kind == "image":
            x = tiny_images(y, k, seed)
        else:
            x, y = tiny_latents(VECTOR_LATENT, counts, seed)
        return Split(x, y, k, tiny_meta(len(y), split), [f"{split}{i}" for i in range(len(y))])


def tiny_meta(n: int, split: str) -> pd.DataFrame:
    """Per-row metadata as the real datasets give it: two images per patient, sex, age, view."""
    rng = np.random.default_rng(len(split))
    return pd.DataFrame(
        {
            "subject": [f"{split}-p{i // 2}" for i in range(n)],
            "sex": rng.choice(["F", "M"], n),
            "age": rng.integers(20, 80, n),
            "view": rng.choice(["AP", "PA"], n),
        }
    )


def tiny_cell(kind: str, out_dir: Path, with_samples: bool = True) -> CellContext:
    """A finished cell of the tiny dataset of `kind`: real splits, a synthetic set for the tail
    classes (noisy copies of training rows, with their clusters as subclasses), the untrained and
    source-only references, latents, a prior holding each row's subclass, the augmentation plan and a
    flattening feature extractor. `with_samples=False`: the cell of a run stopped after its prior."""
    dataset = TinyDataset(kind)
    Path(out_dir).mkdir(parents=True, exist_ok=True)  # the runner's cell folder exists when evaluators run
    train, test = dataset.load("train"), dataset.load("test")
    latents = train.x * 2 - 1 if kind == "image" else train.x.clone()
    prior = Prior(tensors={"assignment": train.subclass.clone()}, info={})
    targets = [
        ClassTarget(name, n, n / max(TRAIN_COUNTS), "Head" if s == 0 else "LT", s)
        for name, n, s in zip(CLASS_NAMES, TRAIN_COUNTS, SYNTHETIC)
    ]
    extractor = _FlatFeatures()
    sets = dict(synthetic=None)
    if with_samples:
        sets = dict(
            synthetic=_synthetic(train, 0.05, seed=4),
            synthetic_init=_synthetic(train, 1.0, seed=5),
            synthetic_source=_synthetic(train, 2.0, seed=6),
        )
    return CellContext(
        dataset,
        train,
        test,
        out_dir=Path(out_dir),
        seed=0,
        latents=latents,
        prior=prior,
        targets=targets,
        extractor=lambda: extractor,
        **sets,
    )


def _synthetic(train: Split, noise: float, seed: int) -> Split:
    """SYNTHETIC[c] rows of each class c: training rows of c plus `noise` times Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.cat([(train.y == c).nonzero().flatten().repeat(n)[:n] for c, n in enumerate(SYNTHETIC) if n])
    x = train.x[rows] + noise * torch.randn(train.x[rows].shape, generator=g)
    if train.x.dim() > 2:  # images stay images
        x = x.clamp(0, 1)
    return Split(x, train.y[rows].clone(), train.subclass[rows].clone())


class _FlatFeatures:
    """A feature extractor that flattens: features = pixels (the domain network's stand-in)."""

    def embed(self, x) -> np.ndarray:
        x = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
        return x.reshape(len(x), -1).double().numpy()


class TinyBackbone(Backbone):
    """A one-hidden-layer velocity field for latents of any shape: the kit's stand-in for FLUX."""

    name = "tiny"

    def __init__(self, sample_shape, vocab_size: int, n_tokens: int, hidden: int = 16):
        super().__init__()
        self._bind_config(sample_shape, vocab_size, n_tokens, hidden=hidden)
        size = math.prod(self.sample_shape)
        self.inp = nn.Linear(size + 2, hidden)
        self.token_embedding = nn.Embedding(self.vocab_size, hidden)
        self.out = nn.Linear(hidden, size)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b = x_t.shape[0]
        t = t.reshape(-1).expand(b).to(x_t.dtype)
        angle = 2 * math.pi * t
        h = self.inp(torch.cat([x_t.reshape(b, -1), angle.sin()[:, None], angle.cos()[:, None]], dim=1))
        return self.out(torch.tanh(h + self.token_embedding(tokens).sum(dim=1))).reshape(x_t.shape)

    def save_pretrained(self, directory) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().contiguous() for k, v in self.state_dict().items()},
            directory / "model.safetensors",
        )
        self.write_config(directory)

    @classmethod
    def from_pretrained(cls, directory) -> TinyBackbone:
        model = cls(**cls.read_config(directory))
        model.load_state_dict(load_file(Path(directory) / "model.safetensors"))
        return model
