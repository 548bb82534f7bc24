"""Pixel encoder: flow matching directly in data space, with an affine rescaling."""

from __future__ import annotations

import torch

from bench.encoder import Encoder
from bench.errors import BenchError
from bench.registry import register_encoder


@register_encoder("pixel")
class PixelEncoder(Encoder):
    """z = x * scale + shift; the defaults map [0, 1] images to [-1, 1] like a VAE's input range.

    Vector datasets bind `pixel.scale = 1.0` and `pixel.shift = 0.0` to keep data as it is.
    """

    def __init__(self, scale: float = 2.0, shift: float = -1.0):
        if scale == 0:
            raise BenchError("pixel.scale must be non-zero (decode divides by it); set pixel.scale=1.0")
        self.scale = float(scale)
        self.shift = float(shift)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents z = x * scale + shift, same shape as x."""
        return x * self.scale + self.shift

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Data x = (z - shift) / scale, the exact inverse of `encode`."""
        return (z - self.shift) / self.scale

    def latent_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The latent of one sample has the sample's own shape."""
        return tuple(sample_shape)

    def cache_key(self) -> dict:
        """Name and affine parameters: the latents depend on nothing else."""
        return {"name": self.name, "scale": self.scale, "shift": self.shift}
