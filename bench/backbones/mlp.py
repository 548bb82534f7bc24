"""MLP backbone: a small class-conditional velocity field for vector data (the 2-D benchmark)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bench.backbone import Backbone
from bench.errors import BenchError
from bench.registry import register_backbone

WEIGHTS_NAME = "model.safetensors"


class FourierTime(nn.Module):
    """Sinusoidal features of t in [0, 1], so the MLP can bend its field sharply in time."""

    def __init__(self, n_features: int, max_frequency: float = 64.0):
        super().__init__()
        if n_features % 2:
            raise BenchError(f"mlp.time_features must be even (sin + cos pairs), got {n_features}")
        # Geometric frequencies from 1 to max_frequency cycles over [0, 1]: slow and fast trends.
        cycles = torch.logspace(0, math.log10(max_frequency), n_features // 2)
        self.register_buffer("omega", 2 * math.pi * cycles, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) times -> (B, n_features) features."""
        angles = t.reshape(-1, 1) * self.omega
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


@register_backbone("mlp")
class MLPBackbone(Backbone):
    """v(x_t, t, tokens) = MLP(W [x_t, fourier(t)] + sum of token embeddings), SiLU throughout.

    `depth` counts the hidden layers of width `hidden` (the input projection is the first).
    """

    def __init__(
        self,
        sample_shape,
        vocab_size: int,
        n_tokens: int,
        hidden: int = 256,
        depth: int = 3,
        time_features: int = 32,
    ):
        super().__init__()
        sample_shape = tuple(int(s) for s in sample_shape)
        if len(sample_shape) != 1:
            raise BenchError(
                f"mlp backbone needs vector samples of shape (D,), got {sample_shape}; "
                "use the flux backbone for images"
            )
        if depth < 1:
            raise BenchError(f"mlp.depth must be at least 1, got {depth}")
        self._bind_config(
            sample_shape, vocab_size, n_tokens, hidden=hidden, depth=depth, time_features=time_features
        )
        dim = sample_shape[0]
        self.time_embedding = FourierTime(time_features)
        self.input_projection = nn.Linear(dim + time_features, hidden)
        self.token_embedding = nn.Embedding(self.vocab_size, hidden)
        layers: list[nn.Module] = []
        for _ in range(depth - 1):
            layers += [nn.SiLU(), nn.Linear(hidden, hidden)]
        self.trunk = nn.Sequential(*layers, nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Velocity (B, D) toward data at time t (B,) for condition tokens (B, n_tokens)."""
        t = t.reshape(-1).expand(x_t.shape[0]).to(x_t.dtype)
        h = self.input_projection(torch.cat([x_t, self.time_embedding(t)], dim=-1))
        return self.trunk(h + self.token_embedding(tokens).sum(dim=1))

    def save_pretrained(self, directory) -> None:
        """Write config.json + model.safetensors to `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(tensors, directory / WEIGHTS_NAME)
        self.write_config(directory)

    @classmethod
    def from_pretrained(cls, directory) -> MLPBackbone:
        """Rebuild the backbone `save_pretrained` wrote, offline."""
        model = cls(**cls.read_config(directory))
        model.load_state_dict(load_file(Path(directory) / WEIGHTS_NAME))
        return model
