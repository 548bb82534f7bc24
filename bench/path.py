"""The linear (rectified) probability path shared by every method."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PathSample:
    """A point on the path between a source sample x0 and a data sample x1 at time t."""

    x0: torch.Tensor
    x1: torch.Tensor
    t: torch.Tensor  # (B,)
    x_t: torch.Tensor  # (1 - t) x0 + t x1
    u: torch.Tensor  # target velocity x1 - x0 (the displacement d)


def expand_time(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape (B,) times so they broadcast against a batch shaped like `like`."""
    return t.reshape(-1, *([1] * (like.dim() - 1)))


def linear_path(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample:
    """x_t = (1 - t) x0 + t x1 with target u = x1 - x0 (t = 0 source, t = 1 data)."""
    tt = expand_time(t, x1)
    return PathSample(x0=x0, x1=x1, t=t, x_t=(1 - tt) * x0 + tt * x1, u=x1 - x0)
