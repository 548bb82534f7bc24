"""Host-to-device copies that do not wait for the device.

A copy from ordinary (pageable) host memory to a GPU, or any blocking copy, first waits for all
the work queued on the device: in a training loop that empties the queue the CPU had filled ahead.
Copied from pinned memory without blocking, it is queued like a kernel instead; PyTorch's pinned
memory cache keeps the buffer until the copy has run. On the CPU these are plain (no-op) moves.
"""

from __future__ import annotations

import torch


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`x` on `device`: through pinned memory without blocking from the CPU to a GPU; `x` itself
    when it is there already."""
    device = torch.device(device)
    if device.type != "cuda" or x.device.type != "cpu":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


def gather(data: torch.Tensor, rows: torch.Tensor, device: torch.device) -> torch.Tensor:
    """data[rows] on `device`; from CPU data bound for a GPU, gathered straight into pinned memory
    (one copy fewer than gathering, then pinning)."""
    device = torch.device(device)
    if device.type != "cuda" or data.device.type != "cpu":
        return data[to_device(rows, data.device)].to(device)
    out = torch.empty((len(rows), *data.shape[1:]), dtype=data.dtype, pin_memory=True)
    return torch.index_select(data, 0, rows, out=out).to(device, non_blocking=True)
