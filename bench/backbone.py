"""Backbone interface: a velocity field v(x_t, t, tokens) in bench's time convention.

Convention everywhere in bench: t = 0 is the source (noise), t = 1 is data,
x_t = (1 - t) x0 + t x1 and the target velocity is u = x1 - x0. Adapters around models that
use another convention (FLUX: sigma = 1 is noise) convert inside `forward` and nowhere else.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from bench.errors import BenchError


class Backbone(nn.Module):
    """Base class for backbones.

    Constructed as `Backbone(sample_shape, vocab_size, n_tokens, **hyperparameters)`:
    `sample_shape` is the shape of one latent (e.g. (2,) or (16, 32, 32)); conditions are
    `n_tokens` integer tokens per sample from a vocabulary of `vocab_size` (token 0 is the
    null / unconditional token).
    """

    name = "backbone"
    config_name = "config.json"  # where save_pretrained writes `config()`

    def _bind_config(self, sample_shape, vocab_size: int, n_tokens: int, **hyperparameters) -> None:
        """Remember the constructor arguments so `config()` can rebuild the module."""
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.vocab_size, self.n_tokens = int(vocab_size), int(n_tokens)
        self.hyperparameters = hyperparameters

    def config(self) -> dict:
        """Everything `from_pretrained` needs to rebuild this module (JSON-able)."""
        return dict(
            sample_shape=list(self.sample_shape),
            vocab_size=self.vocab_size,
            n_tokens=self.n_tokens,
            **self.hyperparameters,
        )

    def write_config(self, directory: Path) -> None:
        """Write `config()` as JSON into `directory`."""
        (Path(directory) / self.config_name).write_text(json.dumps(self.config(), indent=2) + "\n")

    @classmethod
    def read_config(cls, directory: Path) -> dict:
        """The constructor arguments stored by `write_config`, or a clear error."""
        path = Path(directory) / cls.config_name
        if not path.is_file():
            raise BenchError(
                f"no {cls.config_name} in {directory}; point at a folder written by save_pretrained"
            )
        return json.loads(path.read_text())

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Velocity at (x_t, t) for condition tokens (B, n_tokens); t has shape (B,)."""
        raise NotImplementedError

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Alias of forward, named as in the design notes."""
        return self(x_t, t, tokens)

    def enable_activation_checkpointing(self) -> None:
        """Recompute activations in the backward pass instead of storing them
        (`train.activation_checkpointing`): the gradient checkpointing of the diffusers models inside."""
        models = [m for m in self.modules() if getattr(m, "_supports_gradient_checkpointing", False)]
        if not models:
            raise BenchError(
                f"train.activation_checkpointing=True: the {type(self).__name__} backbone cannot recompute "
                "its activations; set train.activation_checkpointing=False"
            )
        for model in models:
            model.enable_gradient_checkpointing()

    def repeated_blocks(self) -> list:
        """The blocks the backbone repeats (a transformer's layers), for `compile_blocks`; none here."""
        return []

    def compile_blocks(self) -> None:
        """torch.compile each repeated block's forward (`train.compile`). Block by block, not the whole
        model: blocks of one class share their compiled code (torch.compile takes the parameters as
        inputs), so compiling takes no longer for 57 blocks than for 2, and the calls around the
        blocks stay eager, so FSDP's per-block hooks and activation checkpointing work unchanged."""
        blocks = self.repeated_blocks()
        if not blocks:
            raise BenchError(
                f"train.compile=True: the {type(self).__name__} backbone has no repeated blocks to "
                "compile; set train.compile=False"
            )
        for block in blocks:
            block.forward = torch.compile(block.forward)

    def uncompile_blocks(self) -> None:
        """Undo `compile_blocks` (the class's own forward again), e.g. before sampling at other shapes."""
        for block in self.repeated_blocks():
            block.__dict__.pop("forward", None)

    def save_pretrained(self, directory) -> None:
        """Write config.json + safetensors weights to `directory`."""
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, directory) -> Backbone:
        """Load what `save_pretrained` wrote, offline."""
        raise NotImplementedError
