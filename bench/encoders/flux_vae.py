"""The frozen FLUX.1 VAE as an encoder: deterministic latents from a local directory, never a download."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from bench.encoder import Encoder
from bench.errors import BenchError
from bench.pipeline import inference_memory as memory
from bench.pipeline.inference_precision import forward_precision
from bench.registry import register_encoder

log = logging.getLogger(__name__)

# FLUX.1 VAE latent normalisation (NOTES section 1), used when a config does not carry its own.
FLUX_SCALING_FACTOR = 0.3611
FLUX_SHIFT_FACTOR = 0.1159
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PATH_HINT = (
    "set flux_vae.path=/local/dir pointing at the FLUX.1-dev `vae` folder "
    "(config.json + weights); nothing is downloaded"
)


@register_encoder("flux_vae")
class FluxVAEEncoder(Encoder):
    """FLUX.1 AutoencoderKL: latent = (posterior mean - shift_factor) * scaling_factor.

    Images are (N, C, H, W) in [0, 1] with C = 1 (repeated to RGB) or the VAE's input channels;
    decoded images come back in [0, 1] with the channel count last seen by `encode` or
    `latent_shape`. The VAE is loaded on first use and runs frozen, in chunks of `batch_size`;
    None (the default) picks on CUDA the largest chunk whose traced peak fits the GPU's free
    memory (bench.pipeline.inference_memory), at the precision in effect (a caller's bf16
    autocast, e.g. the runner decoding under `sample.precision='bf16'`), and CPU_BATCH elsewhere.
    """

    CPU_BATCH = 16  # batch_size=None off CUDA

    def __init__(
        self,
        path: str | None = None,
        batch_size: int | None = None,
        device: str = "auto",
        dtype: str = "float32",
        subfolder: str | None = None,
    ):
        if dtype not in DTYPES:
            raise BenchError(f"flux_vae.dtype={dtype!r} is not supported; use one of {', '.join(DTYPES)}")
        if batch_size is not None and int(batch_size) < 1:
            raise BenchError(
                f"flux_vae.batch_size must be >= 1 or None (the largest that fits), got {batch_size}"
            )
        self.path = path
        self.batch_size = None if batch_size is None else int(batch_size)
        self._chunks: dict = {}  # (mode, precision, shape, budget) -> the chunk chosen for batch_size=None
        self.device = device
        self.dtype = dtype
        self.subfolder = subfolder
        self._config: dict | None = None
        self._factors: tuple[float, float] | None = None
        self._vae = None
        self._channels: int | None = None  # C of the data samples, so decode can restore it

    def missing_settings(self) -> list[str]:
        """`flux_vae.path` when it is unset (the FLUX.1 VAE weights are the user's local copy)."""
        return (
            []
            if self.path
            else [
                "flux_vae.path=DIR (the FLUX.1-dev `vae` folder: config.json + weights; "
                "nothing is downloaded)"
            ]
        )

    # -- configuration (read without loading weights) -------------------------------------
    def vae_dir(self) -> Path:
        """Resolved directory holding the VAE's config.json; BenchError with the fix if absent."""
        if not self.path:
            raise BenchError(f"flux_vae.path is not set; {PATH_HINT}")
        root = Path(self.path).expanduser().resolve()
        vae_dir = root / self.subfolder if self.subfolder else root
        if not (vae_dir / "config.json").is_file():
            nested = (vae_dir / "vae" / "config.json").is_file()
            extra = (
                " (it has a vae/ subfolder: point there or set flux_vae.subfolder='vae')" if nested else ""
            )
            raise BenchError(f"no VAE config.json in {vae_dir}{extra}; {PATH_HINT}")
        return vae_dir

    def config(self) -> dict:
        """The VAE's config.json as written on disk (diffusers defaults not filled in)."""
        if self._config is None:
            vae_dir = self.vae_dir()
            try:
                config = json.loads((vae_dir / "config.json").read_text())
            except (OSError, ValueError) as exc:
                raise BenchError(f"cannot read {vae_dir / 'config.json'} ({exc}); {PATH_HINT}") from exc
            kind = config.get("_class_name", "AutoencoderKL")
            if kind != "AutoencoderKL":
                raise BenchError(f"{vae_dir} holds a {kind}, not an AutoencoderKL; {PATH_HINT}")
            self._config = config
        return self._config

    def factors(self) -> tuple[float, float]:
        """(scaling_factor, shift_factor) from the config, else the FLUX constants; logged once."""
        if self._factors is None:
            config = self.config()
            scale, shift = config.get("scaling_factor"), config.get("shift_factor")
            # diffusers would fill a missing scaling_factor with SD's 0.18215, wrong for FLUX
            self._factors = (
                FLUX_SCALING_FACTOR if scale is None else float(scale),
                FLUX_SHIFT_FACTOR if shift is None else float(shift),
            )
            log.info(
                "flux_vae: scaling_factor=%g (%s), shift_factor=%g (%s)",
                self._factors[0],
                "FLUX default" if scale is None else "config",
                self._factors[1],
                "FLUX default" if shift is None else "config",
            )
        return self._factors

    # -- the model --------------------------------------------------------------------------
    def torch_device(self) -> torch.device:
        """The device the VAE runs on; "auto" picks CUDA when available."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            return torch.device(self.device)
        except RuntimeError as exc:
            raise BenchError(
                f"flux_vae.device={self.device!r} is not a torch device; use auto, cpu or cuda"
            ) from exc

    def compute_device(self) -> torch.device:
        """Where the VAE computes (Encoder hook: autocast must target this device type)."""
        return self.torch_device()

    def vae(self):
        """The frozen AutoencoderKL, loaded from disk on first call."""
        if self._vae is None:
            from diffusers import AutoencoderKL  # heavy import, only when the VAE is really used

            vae_dir = self.vae_dir()
            self.factors()
            try:
                vae = AutoencoderKL.from_pretrained(
                    # safetensors only: a pickled .bin could run code while it loads
                    str(vae_dir),
                    local_files_only=True,
                    torch_dtype=DTYPES[self.dtype],
                    use_safetensors=True,
                )
            except (OSError, ValueError) as exc:
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise BenchError(f"cannot load the VAE from {vae_dir} ({first_line}); {PATH_HINT}") from exc
            self._vae = vae.to(self.torch_device()).eval().requires_grad_(False)
        return self._vae

    def downsampling(self) -> int:
        """Spatial factor f between image and latent: one halving per down block after the first."""
        return 2 ** (len(self.vae().config.block_out_channels) - 1)

    # -- Encoder interface --------------------------------------------------------------------
    def latent_shape(self, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(latent_channels, H // f, W // f) for one (C, H, W) image; H and W must divide by f."""
        if len(sample_shape) != 3:
            raise BenchError(f"flux_vae encodes (C, H, W) images, got sample shape {tuple(sample_shape)}")
        channels, height, width = sample_shape
        self._check_channels(channels)
        f = self.downsampling()
        if height % f or width % f:
            raise BenchError(
                f"flux_vae needs H and W divisible by {f}, got {height}x{width}; resize or crop the dataset"
            )
        self._channels = channels
        return (self.vae().config.latent_channels, height // f, width // f)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents (N, latent_channels, H/f, W/f), float32 on x's device, from images in [0, 1]."""
        if x.dim() != 4:
            raise BenchError(f"flux_vae encodes (N, C, H, W) images, got shape {tuple(x.shape)}")
        self._check_channels(x.shape[1])
        self._channels = x.shape[1]
        chunk_size = self.chunk_size("encode", tuple(x.shape[1:]), len(x))
        return torch.cat([self._encode_chunk(chunk).to(x.device) for chunk in x.split(chunk_size)])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1], float32 on z's device, with the data's channel count."""
        if not len(z):
            return torch.cat([self._decode_chunk(z).to(z.device)])
        f = self.downsampling()
        image_shape = (self._channels or self.vae().config.in_channels, z.shape[2] * f, z.shape[3] * f)
        chunk_size = self.chunk_size("decode", image_shape, len(z))
        return torch.cat([self._decode_chunk(chunk).to(z.device) for chunk in z.split(chunk_size)])

    def chunk_size(self, mode: str, image_shape: tuple, n: int) -> int:
        """Images per VAE call: `batch_size`, or for None the largest chunk that fits (on CUDA,
        searched once per mode, precision, image shape and GiB of budget; capped at the `n` images
        of the call)."""
        if self.batch_size is not None:
            return self.batch_size
        device = self.compute_device()
        if device.type != "cuda":
            return self.CPU_BATCH
        precision = "bf16" if torch.is_autocast_enabled("cuda") else "fp32"
        resident = sum(t.numel() * t.element_size() for t in self.vae().parameters())
        budget = memory.cuda_budget(device, resident)
        key = (mode, precision, tuple(image_shape), budget // memory.GIB)  # again if the free memory changed
        if key not in self._chunks:
            self._chunks[key] = memory.largest_batch(
                lambda b: vae_peak_bytes(self.config(), image_shape, b, precision, mode, dtype=self.dtype),
                budget,
                MAX_VAE_BATCH,
            )
            log.info("flux_vae.batch_size=None: %s in chunks of %d (%s)", mode, self._chunks[key], precision)
        return max(1, min(self._chunks[key], n))

    def peak_gib(
        self, image_shape: tuple, batch: int, precision: str = "fp32", mode: str = "decode"
    ) -> float:
        """Traced peak GiB of encoding or decoding `batch` images of `image_shape` (C, H, W) at
        `precision` (the run preview's figure)."""
        return vae_peak_gib(self.config(), image_shape, batch, precision, mode, dtype=self.dtype)

    def cache_key(self) -> dict:
        """Which weights, normalisation and precision produced the latents."""
        scale, shift = self.factors()
        return {
            "name": self.name,
            "path": str(self.vae_dir()),
            "scaling_factor": scale,
            "shift_factor": shift,
            "dtype": self.dtype,
        }

    # -- helpers ------------------------------------------------------------------------------
    def _check_channels(self, channels: int) -> None:
        in_channels = self.vae().config.in_channels
        if channels not in (1, in_channels):
            raise BenchError(f"flux_vae takes 1- or {in_channels}-channel images, got {channels} channels")

    @torch.no_grad()
    def _encode_chunk(self, x: torch.Tensor) -> torch.Tensor:
        vae = self.vae()
        scale, shift = self.factors()
        x = x.float().expand(-1, vae.config.in_channels, -1, -1)  # grayscale -> RGB, no-op otherwise
        x = (x * 2 - 1).to(self.torch_device(), DTYPES[self.dtype])
        mean = vae.encode(x).latent_dist.mean  # the posterior mean: deterministic latents
        return ((mean.float() - shift) * scale).contiguous()

    @torch.no_grad()
    def _decode_chunk(self, latent: torch.Tensor) -> torch.Tensor:
        vae = self.vae()
        scale, shift = self.factors()
        z = (latent.float() / scale + shift).to(self.torch_device(), DTYPES[self.dtype])
        image = ((vae.decode(z).sample.float() + 1) / 2).clamp(0, 1)
        if self._channels == 1:
            image = image.mean(dim=1, keepdim=True)
        return image


# -- peak memory of a chunk, traced by bench.pipeline.inference_memory -----------------------
MAX_VAE_BATCH = 1024  # the largest VAE chunk chosen for flux_vae.batch_size=None


def vae_peak_bytes(
    vae_config: dict,
    image_shape: tuple,
    batch: int,
    precision: str = "fp32",
    mode: str = "decode",
    device: torch.device | None = None,
    dtype: str = "float32",
) -> int:
    """Peak bytes of the FLUX VAE encoding (`mode='encode'`) or decoding `batch` images of
    `image_shape` (C, H, W): the weights (at `dtype`, flux_vae.dtype), the chunk's input and
    output and the network's activations, through `FluxVAEEncoder`'s own chunk code.

    `vae_config` is the VAE's config.json (`FluxVAEEncoder.config()`, read without weights).
    """
    from diffusers import AutoencoderKL

    if mode not in ("encode", "decode"):
        raise ValueError(f"mode must be 'encode' or 'decode', got {mode!r}")
    config = {k: v for k, v in vae_config.items() if not k.startswith("_")}
    channels, height, width = image_shape
    key = (
        "vae",
        json.dumps(config, sort_keys=True, default=str),
        tuple(image_shape),
        batch,
        precision,
        mode,
        str(device or memory.trace_device()),
        dtype,
    )
    if key in memory.PEAKS:
        return memory.PEAKS[key]

    def run(vae, dev):
        shell = FluxVAEEncoder(batch_size=batch, device=str(dev), dtype=dtype)
        shell._vae, shell._channels = vae, channels
        shell._factors = (
            config.get("scaling_factor") or FLUX_SCALING_FACTOR,
            config.get("shift_factor") or FLUX_SHIFT_FACTOR,
        )
        f = 2 ** (len(vae.config.block_out_channels) - 1)
        with forward_precision(precision, dev):
            if mode == "decode":
                shell._decode_chunk(
                    torch.empty(batch, vae.config.latent_channels, height // f, width // f, device=dev)
                )
            else:
                shell._encode_chunk(torch.empty(batch, channels, height, width, device=dev))

    def trace(dev):
        def build():
            vae = AutoencoderKL.from_config(config).eval()
            return vae if dtype == "float32" else vae.to(DTYPES[dtype])

        return memory.traced_peak(build, run, dev)

    memory.PEAKS[key] = trace(device) if device is not None else memory.with_cpu_fallback(trace)
    return memory.PEAKS[key]


def vae_peak_gib(
    vae_config: dict,
    image_shape: tuple,
    batch: int,
    precision: str = "fp32",
    mode: str = "decode",
    dtype: str = "float32",
) -> float:
    """`vae_peak_bytes` in GiB (for the run preview)."""
    return vae_peak_bytes(vae_config, image_shape, batch, precision, mode, dtype=dtype) / memory.GIB
