"""Encoder interface: data space <-> the latent space where flow matching runs."""

from __future__ import annotations

import torch


class Encoder:
    """Base class for encoders: deterministic `encode`, and `decode` back to data space.

    `latent_shape(sample_shape)` gives the shape of one latent for one data sample.
    `cache_key()` identifies the encoder configuration for the on-disk latent cache.
    """

    name = "encoder"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents for a batch of data samples."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Data samples for a batch of latents."""
        raise NotImplementedError

    def latent_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one latent given the shape of one data sample."""
        raise NotImplementedError

    def compute_device(self) -> torch.device:
        """The device `encode` / `decode` compute on, which autocast must target (a caller's bf16
        decode: bench.pipeline.runner.decode); the CPU unless the encoder moves data elsewhere."""
        return torch.device("cpu")

    def missing_settings(self) -> list[str]:
        """Settings the user must give before this encoder can run (see Dataset.missing_settings)."""
        return []

    def cache_key(self) -> dict:
        """JSON-able identity of this encoder's configuration."""
        return {"name": self.name}
