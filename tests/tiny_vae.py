"""A tiny randomly initialised VAE in FLUX's layout, shared by the tests that need a local VAE folder."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL

SCALE, SHIFT = 0.3611, 0.1159  # written into the tiny VAE's config, as in FLUX.1-dev's


def tiny_flux_vae(sample_size: int = 16) -> AutoencoderKL:
    """A randomly initialised AutoencoderKL with FLUX's layout (16 latent channels, f = 8, no quant
    convs), tiny widths; seeded, so every call builds the same weights."""
    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=4,
        sample_size=sample_size,
        scaling_factor=SCALE,
        shift_factor=SHIFT,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).eval()


def saved_tiny_flux_vae(path: Path) -> Path:
    """The tiny VAE written to `path` with save_pretrained (safetensors), as a user's local copy."""
    tiny_flux_vae().save_pretrained(path)
    return path
