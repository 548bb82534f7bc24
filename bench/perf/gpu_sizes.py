"""What the GPU check runs, at two sizes: "full" (the one-GPU preset as a real dataset's cell runs
it, on one GPU in under 8 minutes) and "dry" (tiny models, seconds on a CPU, so tests execute every
line of the check; its timings mean nothing).

Full size follows gin/presets/flux_1gpu.gin: 8 + 16 blocks, 16 heads x 128, bf16, micro-batches of
32 accumulated 8 times (base.gin's batch of 256), on 16 x 32 x 32 FLUX VAE latents (256 x 256
images: 256 patch tokens, plus vanilla FM's one class token). The VAE is FLUX.1-dev's architecture
(its config.json, below) with random weights: throughput does not depend on the weights, and
nothing is downloaded. The downstream network is the paper's ResNet-50 on 256 x 256 grayscale
images, as nih_lt stores them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

N_CLASSES = 8  # classes of the random data; vanilla FM adds one class token per sample

# FLUX.1-dev's vae/config.json (black-forest-labs/FLUX.1-dev), the architecture bench.encoders.flux_vae
# loads from the user's copy: 16 latent channels, 8x down, no quant convs, attention in the mid blocks
FLUX_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=16,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    norm_num_groups=32,
    act_fn="silu",
    sample_size=1024,
    mid_block_add_attention=True,
    use_quant_conv=False,
    use_post_quant_conv=False,
    force_upcast=True,
    scaling_factor=0.3611,
    shift_factor=0.1159,
)
TINY_VAE_CONFIG = dict(
    FLUX_VAE_CONFIG, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4, sample_size=64
)
TINY_FLUX = dict(
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=32,
    pooled_projection_dim=32,
    axes_dims_rope=(4, 4, 8),
)


@dataclass(frozen=True)
class Sizes:
    """One size of the check: every part's model, data and step counts, and its time limit."""

    name: str
    flux: dict  # FluxBackbone hyperparameters (the preset's, or tiny)
    latent_shape: tuple[int, int, int]
    micro_batch: int  # rows per micro-batch
    micro_batches: int  # accumulated per optimiser step
    warmup_steps: int  # training steps before the timed ones
    timed_steps: int
    samples: int  # synthetic samples drawn (sampling part), `sample_batch` at a time
    sample_batch: int
    nfe: int  # Euler steps per sample
    vae: dict  # AutoencoderKL config
    image_size: int  # side of the VAE's and the downstream network's images
    vae_images: int
    vae_batch: int
    downstream_arch: str  # the paper's resnet50 (dry: small_cnn, the same loop in a fraction of the time)
    downstream_images: int  # one epoch over these many random uint8 images
    downstream_batch: int
    fsdp_micro_batch: int  # the FSDP run: the preset at a small batch, a few steps
    fsdp_steps: int
    limits_s: dict = field(default_factory=dict)  # part -> seconds it may run (full size only)
    budget_s: float | None = None  # the whole check's seconds (full size only)

    @property
    def batch_size(self) -> int:
        """The optimiser step's batch: `micro_batches` micro-batches of `micro_batch` rows."""
        return self.micro_batch * self.micro_batches


def preset_flux() -> dict:
    """The one-GPU preset's `flux.*` bindings (gin/presets/flux_1gpu.gin)."""
    from bench.perf.gpu import preset_hyperparameters

    return preset_hyperparameters()


def sizes(name: str) -> Sizes:
    """The "full" or "dry" sizes."""
    if name == "full":
        # limits sum to 450 s with every child's start-up inside them: under 8 minutes with the
        # suite's own start (the parent process: seconds)
        return Sizes(
            "full",
            preset_flux(),
            (16, 32, 32),
            micro_batch=32,
            micro_batches=8,
            warmup_steps=1,
            timed_steps=3,
            samples=512,
            sample_batch=256,
            nfe=8,
            vae=FLUX_VAE_CONFIG,
            image_size=256,
            vae_images=256,
            vae_batch=32,
            downstream_arch="resnet50",
            downstream_images=4096,
            downstream_batch=256,
            fsdp_micro_batch=8,
            fsdp_steps=3,
            limits_s={"train": 150, "sampling": 60, "vae": 60, "downstream": 75, "fsdp": 105},
            budget_s=450,
        )
    if name == "dry":
        return Sizes(
            "dry",
            TINY_FLUX,
            (16, 8, 8),
            micro_batch=2,
            micro_batches=2,
            warmup_steps=1,
            timed_steps=1,
            samples=4,
            sample_batch=2,
            nfe=2,
            vae=TINY_VAE_CONFIG,
            image_size=64,
            vae_images=4,
            vae_batch=2,
            downstream_arch="small_cnn",
            downstream_images=8,
            downstream_batch=4,
            fsdp_micro_batch=2,
            fsdp_steps=2,
        )
    raise ValueError(f"unknown size {name!r} (known: full, dry)")
