"""How the classifiers get their mini-batches and run on a GPU: workers, pinned memory, bf16.

Every classifier loop (bench.classify.fit: training epochs, validation, prediction,
features) asks `device_batches(x, index_batches, device)` for `x[idx]` of each index block, as
float32 on the device. `x` is a tensor, a lazy ImageFiles (decoded files, or their uint8 image
cache) or a RowConcat of both. Two paths give the same values:

- plain: each block read in this process (in-memory tensors always; lazy arrays on the CPU by
  default, where a worker process would take the cores the model needs);
- a torch DataLoader over the same blocks, in the same order, with `loader.workers` processes
  reading ahead (`loader.prefetch_factor` blocks each) and, on CUDA, pinned memory and
  non-blocking copies, so decoding and the host-to-device copy overlap the GPU's work. Cached
  images travel as uint8 (a quarter of the bytes) and become float on the device through the one
  conversion every path uses (bench.data.imagefiles.to_float).

No randomness is involved in reading, so both paths feed bit-identical batches: a seeded run on
the CPU gives the same weights either way (tested). On CUDA the CNNs also run in channels_last
layout with cuDNN's autotuner and, while training and predicting, under bf16 autocast
(`autocast(device)`); features for the metrics are computed in float32 (bench.classify.fit.embed).
On the CPU all three are no-ops.

`loader.*` settings say how data is read, never what is computed: they feed no config hash.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import nullcontext

import torch
from torch import nn

from bench.config.loader import LoaderConfig
from bench.data.imagefiles import to_float
from bench.runtime.threads import usable_cores

MAX_WORKERS = 8  # reading processes per GPU: enough to keep a ResNet-50 fed from PNGs at 256 px


def loader_workers(config: LoaderConfig, device: torch.device) -> int:
    """Reading processes for a loop on `device`: `loader.workers`, or the automatic choice."""
    if config.workers is not None:
        return int(config.workers)
    if device.type != "cuda":
        return 0  # measured: a worker on the CPU path is slower (docs/performance.md)
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(MAX_WORKERS, usable_cores() // local - 1))


def device_batches(
    x, index_batches: Iterable, device: torch.device, config: LoaderConfig | None = None
) -> Iterator[torch.Tensor]:
    """`x[idx]` for each idx (a slice or an index tensor) of `index_batches`, as float32 on `device`
    (channels_last 4-D tensors on CUDA), read ahead by DataLoader workers when configured."""
    config = config or LoaderConfig()  # checked when built
    workers = 0 if isinstance(x, torch.Tensor) else loader_workers(config, device)
    pin = device.type == "cuda" and config.pin_memory and not isinstance(x, torch.Tensor)
    if workers == 0 and not pin:
        for idx in index_batches:
            yield on_device(read_rows(x, idx), device)
        return
    loader = torch.utils.data.DataLoader(
        _Rows(x),
        batch_sampler=list(index_batches),
        collate_fn=_as_is,
        num_workers=workers,
        pin_memory=pin,
        prefetch_factor=config.prefetch_factor if workers else None,
    )
    for xb in loader:
        yield on_device(xb, device)


def read_rows(x, idx) -> torch.Tensor:
    """Rows `idx` of `x` as stored: uint8 from an image cache, float otherwise (on the CPU)."""
    raw = getattr(x, "raw", None)
    return raw(idx) if raw is not None else x[idx]


def on_device(xb: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host batch as float32 on `device` (uint8 converted there); channels_last on CUDA."""
    xb = to_float(xb.to(device, non_blocking=xb.is_pinned()))
    if device.type == "cuda" and xb.dim() == 4:
        xb = xb.contiguous(memory_format=torch.channels_last)
    return xb


def prepare_model(model: nn.Module) -> nn.Module:
    """On CUDA: channels_last weights and cuDNN's autotuner (the CNNs' input sizes are fixed);
    on the CPU the model is returned unchanged (bit-for-bit reproducibility holds there)."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        model.to(memory_format=torch.channels_last)
    return model


def autocast(device: torch.device):
    """bf16 autocast on CUDA (convolutions and matmuls in bf16, losses in float32); nothing on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


class _Rows(torch.utils.data.Dataset):
    """`x` as a map-style dataset whose unit is a whole block of rows (one read per block)."""

    def __init__(self, x):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitems__(self, idx) -> torch.Tensor:
        return read_rows(self.x, idx)

    def __getitem__(self, idx) -> torch.Tensor:
        return read_rows(self.x, idx)


def _as_is(batch):
    """The DataLoader's collate: a block is already one tensor."""
    return batch
