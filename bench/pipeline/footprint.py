"""What one training step of a cell costs: parameters, memory per device, FLOPs. Estimates, from
the backbone built on the meta device (no weights allocated), printed by `bench validate` and
checked before anything runs, so a configuration that cannot fit its device is refused in one
line instead of failing hours later.

Memory per process for AdamW training (accelerate keeps fp32 master weights under mixed
precision): weights 4 B, gradients 4 B and the two AdamW moments 8 B per parameter, plus the
activations kept for the backward pass. For the FLUX transformer those are estimated as
34 B (16-bit) or 68 B (fp32) per token, hidden unit and layer per sample (Korthikanti et al. 2022,
"Reducing activation recomputation", without the attention-score term that PyTorch's fused
attention does not store), for the per-process micro-batch. FLOPs per step: 6 per parameter and
token (forward + backward), plus the attention products, 12 x layers x tokens^2 x hidden.
Other backbones get the parameter-based terms only (activations not estimated: said so).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from bench.errors import BenchError

GIB = 2**30
BYTES_PER_PARAMETER = {"weights": 4, "gradients": 4, "optimiser": 8}  # fp32 AdamW


@dataclass
class Footprint:
    """One training step of a cell on one process."""

    parameters: int
    batch: int  # samples per process and micro-batch
    weights_gib: float
    gradients_gib: float
    optimiser_gib: float
    activations_gib: Optional[float]  # None: not estimated for this backbone
    flops_per_step: float

    @property
    def total_gib(self) -> float:
        return self.weights_gib + self.gradients_gib + self.optimiser_gib + (self.activations_gib or 0.0)

    def describe(self) -> str:
        """One line: parameters, memory per device by part, FLOPs per step."""
        act = "activations not estimated" if self.activations_gib is None else \
            f"activations {self.activations_gib:,.2f} at batch {self.batch}"
        return (f"{self.parameters / 1e6:,.1f} M parameters; ~{self.total_gib:,.2f} GiB per device (weights "
                f"{self.weights_gib:,.2f}, gradients {self.gradients_gib:,.2f}, AdamW {self.optimiser_gib:,.2f}, "
                f"{act}); ~{self.flops_per_step / 1e9:,.1f} GFLOP per step")


def estimate(backbone, batch_size: int, micro_batches: int, processes: int, mixed_precision: str) -> Footprint:
    """The footprint of training `backbone` (built on the meta device) at this batch."""
    params = sum(p.numel() for p in backbone.parameters())
    batch = max(1, batch_size // max(1, micro_batches) // max(1, processes))
    state = {part: params * size / GIB for part, size in BYTES_PER_PARAMETER.items()}
    shape = _transformer_shape(backbone)
    if shape is None:
        activations, flops = None, 6.0 * params * batch_size
    else:
        tokens, hidden, layers = shape
        per_value = 34 if mixed_precision in ("fp16", "bf16") else 68
        activations = batch * tokens * hidden * layers * per_value / GIB
        flops = batch_size * (6.0 * params * tokens + 12.0 * layers * tokens**2 * hidden)
    return Footprint(params, batch, state["weights"], state["gradients"], state["optimiser"], activations, flops)


def _transformer_shape(backbone) -> Optional[tuple[int, int, int]]:
    """(tokens, hidden width, layers) of a FLUX backbone; None for others."""
    hp = getattr(backbone, "hyperparameters", None)
    shape = getattr(backbone, "sample_shape", None)
    if not hp or "num_attention_heads" not in hp or shape is None or len(shape) != 3:
        return None
    tokens = (shape[1] // 2) * (shape[2] // 2) + int(getattr(backbone, "n_tokens", 0))
    return tokens, hp["num_attention_heads"] * hp["attention_head_dim"], hp["num_layers"] + hp["num_single_layers"]


def device_memory(configured: Optional[float]) -> tuple[float, str]:
    """(GiB, what it is) of one device a cell trains on: `executor.device_memory_gib` if set,
    else the first GPU's memory, else this machine's RAM."""
    if configured is not None:
        return float(configured), "executor.device_memory_gib"
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return props.total_memory / GIB, f"GPU {props.name}"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, "this machine's RAM (no GPU)"


def _gib(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.2f}"


def require_fit(label: str, footprint: Footprint, device_gib: float, what: str) -> None:
    """A one-line BenchError with a way out when the step cannot fit one device."""
    if footprint.total_gib > device_gib:
        raise BenchError(
            f"{label} needs ~{_gib(footprint.total_gib)} GiB per device to train ({footprint.describe()}), more "
            f"than the {_gib(device_gib)} GiB of {what}; use a smaller backbone preset (e.g. --gin_file "
            "presets/tiny.gin), a smaller train.batch_size or more train.micro_batches, or set "
            "executor.device_memory_gib if the cell will run on a larger device")
