"""FLUX backbone: diffusers' FluxTransformer2DModel wrapped in bench's velocity convention.

The adapter alone knows FLUX's conventions: latents travel as p x p patches (FLUX's 2 x 2 by
default; `flux.patch_size`) with rotary position ids, conditions are a short token sequence plus a
pooled vector, and FLUX's time runs backwards (sigma = 1 is noise) with a target of noise - data.
Bench's t = 0 is noise and its target is data - noise, so `forward` feeds timestep = 1 - t and
negates the output.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bench.backbone import Backbone
from bench.errors import BenchError
from bench.registry import register_backbone

CONDITIONING_NAME = "conditioning.safetensors"
TRANSFORMER_DIR = "transformer"


def pack_patches(x: torch.Tensor, patch: int = 2) -> torch.Tensor:
    """(B, C, H, W) latents -> (B, H/p * W/p, p*p*C) tokens, FluxPipeline's packing order (p = 2
    is FLUX's own 2x2 packing; a larger p is space-to-depth: p*p/4 times fewer tokens)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // patch) * (w // patch), c * patch * patch)


def unpack_patches(
    tokens: torch.Tensor, channels: int, height: int, width: int, patch: int = 2
) -> torch.Tensor:
    """Inverse of `pack_patches`: (B, H/p * W/p, p*p*C) tokens -> (B, C, H, W) latents."""
    b = tokens.shape[0]
    x = tokens.reshape(b, height // patch, width // patch, channels, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, channels, height, width)


def image_ids(height: int, width: int, patch: int = 2) -> torch.Tensor:
    """Rotary ids (H/p * W/p, 3) of the patches: channel 1 = patch row, channel 2 = column."""
    rows, cols = torch.meshgrid(torch.arange(height // patch), torch.arange(width // patch), indexing="ij")
    ids = torch.zeros(height // patch, width // patch, 3)
    ids[..., 1], ids[..., 2] = rows, cols
    return ids.reshape(-1, 3)


def check_flux_config(sample_shape, attention_head_dim: int, axes_dims_rope, patch_size: int = 2) -> None:
    """Reject shapes and rope splits that diffusers would only fail on deep inside attention."""
    if len(sample_shape) != 3:
        raise BenchError(
            f"flux backbone needs latents of shape (C, H, W), got sample_shape {tuple(sample_shape)}; "
            "use the mlp backbone for vector data"
        )
    _, h, w = sample_shape
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise BenchError(f"flux.patch_size must be a positive integer, got {patch_size!r}")
    if h % patch_size or w % patch_size:
        raise BenchError(
            f"{patch_size}x{patch_size} patch packing (flux.patch_size) needs latent height and width "
            f"divisible by {patch_size}, got {h}x{w}; resize the images, pick another encoder or another patch size"
        )
    if sum(axes_dims_rope) != attention_head_dim or any(d % 2 for d in axes_dims_rope):
        raise BenchError(
            f"flux.axes_dims_rope {tuple(axes_dims_rope)} must be even numbers summing to "
            f"flux.attention_head_dim = {attention_head_dim}; change one of the two"
        )


@register_backbone("flux")
class FluxBackbone(Backbone):
    """Class-conditional velocity field on (C, H, W) latents, built on FluxTransformer2DModel.

    Each condition token gets a learned text-stream embedding (the encoder_hidden_states FLUX
    attends to) and a learned pooled embedding, averaged over tokens, that modulates every block.
    Defaults are the smallest config that runs (diffusers' own test config). `patch_size` p packs
    p x p latent pixels into one token (FLUX: 2); the same pixels in p*p/4 times fewer tokens cost
    about as many times fewer FLOPs a step (the quick run's phantom_lt uses 4: gin/experiments/quick.gin).
    """

    config_name = "backbone.json"  # config.json belongs to the diffusers transformer folder

    def __init__(
        self,
        sample_shape,
        vocab_size: int,
        n_tokens: int,
        num_layers: int = 1,
        num_single_layers: int = 1,
        attention_head_dim: int = 16,
        num_attention_heads: int = 2,
        joint_attention_dim: int = 32,
        pooled_projection_dim: int = 32,
        axes_dims_rope=(4, 4, 8),
        patch_size: int = 2,
    ):
        super().__init__()
        sample_shape = tuple(int(s) for s in sample_shape)
        axes_dims_rope = tuple(int(d) for d in axes_dims_rope)
        check_flux_config(sample_shape, attention_head_dim, axes_dims_rope, patch_size)
        self._bind_config(
            sample_shape,
            vocab_size,
            n_tokens,
            num_layers=num_layers,
            num_single_layers=num_single_layers,
            attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads,
            joint_attention_dim=joint_attention_dim,
            pooled_projection_dim=pooled_projection_dim,
            axes_dims_rope=list(axes_dims_rope),
            **({} if patch_size == 2 else {"patch_size": patch_size}),  # FLUX's 2: stored configs unchanged
        )
        self.transformer = self._build_transformer()
        self.token_embedding = nn.Embedding(self.vocab_size, joint_attention_dim)
        self.pooled_embedding = nn.Embedding(self.vocab_size, pooled_projection_dim)
        self._register_ids()

    def _build_transformer(self):
        from diffusers import FluxTransformer2DModel  # slow import; only when a FLUX is built

        return FluxTransformer2DModel(
            patch_size=1,
            in_channels=self.patch_size**2 * self.sample_shape[0],
            guidance_embeds=False,
            **{k: v for k, v in self.hyperparameters.items() if k != "patch_size"},
        )

    @property
    def patch_size(self) -> int:
        """Latent pixels per token side (FLUX's 2 unless `flux.patch_size` says otherwise)."""
        return int(self.hyperparameters.get("patch_size", 2))

    def _register_ids(self) -> None:
        # Fixed by the shape, so built once; non-persistent keeps them out of checkpoints.
        _, h, w = self.sample_shape
        self.register_buffer("img_ids", image_ids(h, w, self.patch_size), persistent=False)
        self.register_buffer("txt_ids", torch.zeros(self.n_tokens, 3), persistent=False)

    def repeated_blocks(self) -> list:
        """FLUX's double-stream and single-stream transformer blocks (`train.compile` compiles them)."""
        return [*self.transformer.transformer_blocks, *self.transformer.single_transformer_blocks]

    def conditioning(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Condition tokens (B, n_tokens) -> (encoder_hidden_states, pooled_projections)."""
        return self.token_embedding(tokens), self.pooled_embedding(tokens).mean(dim=1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Velocity (B, C, H, W) toward data at bench time t (B,) for condition tokens."""
        c, h, w = self.sample_shape
        encoder_hidden_states, pooled = self.conditioning(tokens)
        sigma = 1.0 - t.reshape(-1).expand(x_t.shape[0])  # FLUX: sigma = 1 is noise
        v_flux = self.transformer(
            hidden_states=pack_patches(x_t, self.patch_size),
            encoder_hidden_states=encoder_hidden_states,
            pooled_projections=pooled,
            timestep=sigma,
            img_ids=self.img_ids,
            txt_ids=self.txt_ids,
            return_dict=False,
        )[0]
        return -unpack_patches(v_flux, c, h, w, self.patch_size)  # FLUX predicts noise - data

    def save_pretrained(self, directory) -> None:
        """Write the transformer (plain-diffusers loadable), the embeddings and backbone.json."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(directory / TRANSFORMER_DIR)
        embeddings = {
            "token_embedding.weight": self.token_embedding.weight,
            "pooled_embedding.weight": self.pooled_embedding.weight,
        }
        tensors = {k: v.detach().contiguous().cpu() for k, v in embeddings.items()}
        save_file(tensors, directory / CONDITIONING_NAME)
        self.write_config(directory)

    @classmethod
    def from_pretrained(cls, directory) -> FluxBackbone:
        """Rebuild the backbone `save_pretrained` wrote, offline, without a throwaway random init."""
        from diffusers import FluxTransformer2DModel

        directory = Path(directory)
        config = cls.read_config(directory)
        # Build on the meta device so a paper-size model is not allocated twice.
        with torch.device("meta"):
            model = cls(**config)
        # safetensors only (what save_pretrained writes): a pickled .bin could run code while it loads
        model.transformer = FluxTransformer2DModel.from_pretrained(
            directory / TRANSFORMER_DIR, use_safetensors=True
        )
        embeddings = load_file(directory / CONDITIONING_NAME)
        model.token_embedding.load_state_dict({"weight": embeddings["token_embedding.weight"]}, assign=True)
        model.pooled_embedding.load_state_dict({"weight": embeddings["pooled_embedding.weight"]}, assign=True)
        model._register_ids()
        return model
