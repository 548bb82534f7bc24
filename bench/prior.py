"""A fitted offline prior: named tensors (safetensors) plus JSON-able facts, saved together."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bench.errors import BenchError

TENSORS = "prior.safetensors"
INFO = "prior.json"


@dataclass
class Prior:
    """What a method's offline stage produces and its training and sampling reuse.

    `tensors` hold the parameters (class means, subclass sources, ...); `info` holds what the
    records and tables report (selected K, EBIC curves, loss traces, decisions). Subclasses add
    typed accessors but keep this storage, so every prior saves and loads the same way.
    """

    tensors: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def save(self, folder: Path) -> None:
        """Write prior.safetensors and prior.json into `folder`."""
        folder = Path(folder)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}, folder / TENSORS)
        (folder / INFO).write_text(json.dumps(self.info, indent=2, default=_to_list))

    @classmethod
    def load(cls, folder: Path) -> Prior:
        """Read what `save` wrote."""
        folder = Path(folder)
        tensors = load_file(folder / TENSORS) if (folder / TENSORS).exists() else {}
        return cls(tensors=tensors, info=json.loads((folder / INFO).read_text()))

    def validate(self, latent_shape: tuple, n_classes: int, n_rows: int) -> Prior:
        """This prior, if it can be the fit of `n_rows` latents of `latent_shape` in `n_classes`
        classes; a ValueError naming what is wrong otherwise (a damaged stored prior is refitted).

        Checked here: facts form a JSON object, every floating tensor is finite, and a
        `class_mean` has one row per class of the latent size. Subclasses add their tensors' shapes.
        """
        if not isinstance(self.info, dict):
            raise ValueError(f"prior.json holds a {type(self.info).__name__}, not an object")
        for name, tensor in self.tensors.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"prior tensor {name!r} holds a NaN or infinite value")
        mean = self.tensors.get("class_mean")
        if mean is not None and (len(mean) != n_classes or mean[0].numel() != _size(latent_shape)):
            raise ValueError(
                f"prior tensor 'class_mean' is of shape {tuple(mean.shape)}, expected "
                f"{n_classes} rows of {_size(latent_shape)} values"
            )
        return self

    def require_shape(self, name: str, shape: tuple) -> None:
        """ValueError unless tensor `name` exists with exactly `shape`."""
        tensor = self.tensors.get(name)
        if tensor is None or tuple(tensor.shape) != tuple(shape):
            found = "missing" if tensor is None else f"of shape {tuple(tensor.shape)}"
            raise ValueError(f"prior tensor {name!r} is {found}, expected {tuple(shape)}")

    def to(self, device) -> Prior:
        """The same prior with its tensors on `device`."""
        return type(self)({k: v.to(device) for k, v in self.tensors.items()}, self.info)


def _size(shape: tuple) -> int:
    """Number of values in one latent of `shape`."""
    return int(torch.Size(shape).numel())


def require_finite(latents: torch.Tensor, ids=None) -> None:
    """Raise a BenchError naming the samples whose latents hold NaN or infinity."""
    bad = (~torch.isfinite(latents.reshape(len(latents), -1)).all(dim=1)).nonzero().flatten().tolist()
    if bad:
        names = [str(ids[i]) if ids is not None else str(i) for i in bad[:5]]
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise BenchError(
            f"{len(bad)} latent(s) are NaN or infinite (samples {', '.join(names)}{more}); "
            "check those images and the encoder, then delete the latent cache"
        )


MEAN_CHUNK_ELEMENTS = 2**22  # values per float64 chunk in class_means (32 MB)


def class_means(latents: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """m_c: the mean training latent of each class, shape (n_classes, *latent_shape).

    A class without training samples gets a zero mean (the standard source's centre).
    Non-finite latents are refused, naming the rows, since one would poison its class mean.
    """
    require_finite(latents)
    flat = latents.reshape(len(latents), -1)
    sums = torch.zeros(n_classes, flat.shape[1], dtype=torch.float64)
    step = max(1, MEAN_CHUNK_ELEMENTS // max(1, flat.shape[1]))
    for start in range(0, len(flat), step):  # float64 a chunk at a time, not a float64 copy of all
        sums.index_add_(0, labels[start : start + step], flat[start : start + step].double())
    counts = torch.bincount(labels, minlength=n_classes).clamp(min=1).unsqueeze(1)
    return (sums / counts).float().reshape(n_classes, *latents.shape[1:])


def _to_list(obj):
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(type(obj).__name__)
