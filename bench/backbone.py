"""Backbone interface: a velocity field v(x_t, t, tokens) in bench's time convention.

Convention everywhere in bench: t = 0 is the source (noise), t = 1 is data,
x_t = (1 - t) x0 + t x1 and the target velocity is u = x1 - x0. Adapters around models that
use another convention (FLUX: sigma = 1 is noise) convert inside `forward` and nowhere else.
"""

from __future__ import annotations

import torch
from torch import nn


class Backbone(nn.Module):
    """Base class for backbones.

    Constructed as `Backbone(sample_shape, vocab_size, n_tokens, **hyperparameters)`:
    `sample_shape` is the shape of one latent (e.g. (2,) or (16, 32, 32)); conditions are
    `n_tokens` integer tokens per sample from a vocabulary of `vocab_size` (token 0 is the
    null / unconditional token).
    """

    name = "backbone"

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Velocity at (x_t, t) for condition tokens (B, n_tokens); t has shape (B,)."""
        raise NotImplementedError

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Alias of forward, named as in the design notes."""
        return self(x_t, t, tokens)

    def save_pretrained(self, directory) -> None:
        """Write config.json + safetensors weights to `directory`."""
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, directory) -> "Backbone":
        """Load what `save_pretrained` wrote, offline."""
        raise NotImplementedError
