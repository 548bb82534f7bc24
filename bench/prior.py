"""A fitted offline prior: named tensors (safetensors) plus JSON-able facts, saved together."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

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
    def load(cls, folder: Path) -> "Prior":
        """Read what `save` wrote."""
        folder = Path(folder)
        tensors = load_file(folder / TENSORS) if (folder / TENSORS).exists() else {}
        return cls(tensors=tensors, info=json.loads((folder / INFO).read_text()))

    def to(self, device) -> "Prior":
        """The same prior with its tensors on `device`."""
        return type(self)({k: v.to(device) for k, v in self.tensors.items()}, self.info)


def _to_list(obj):
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(type(obj).__name__)
