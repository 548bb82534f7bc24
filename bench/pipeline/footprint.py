"""What one training step of a cell costs: parameters, memory per device, FLOPs. Estimates, from
the backbone built on the meta device (no weights allocated), printed by `bench validate` and
checked before anything runs, so a configuration that cannot fit its device is refused in one
line instead of failing hours later.

Memory per process for AdamW training (accelerate keeps fp32 master weights under mixed
precision): weights 4 B, gradients 4 B and the two AdamW moments 8 B per parameter, plus the
activations kept for the backward pass. For the FLUX transformer those are estimated as
34 B (16-bit) or 68 B (fp32) per token, hidden unit and layer per sample (Korthikanti et al. 2022,
"Reducing activation recomputation", without the attention-score term that PyTorch's fused
attention does not store), for the per-process micro-batch. With `train.activation_checkpointing`
only each block's input is kept (2 B or 4 B per token and hidden unit) plus one block's
activations while it is recomputed. With `train.sharding='fsdp'` each of the N processes holds
1/N of the weights, gradients and AdamW state, plus the largest block gathered whole (its
weights and gradients at the training precision) while it runs. FLOPs per step: 6 per parameter
and token (forward + backward), plus the attention products, 12 x layers x tokens^2 x hidden
(activation checkpointing adds one more forward, not counted).
Other backbones get the parameter-based terms only (activations not estimated: said so).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Optional

from bench.errors import BenchError

GIB = 2**30
BYTES_PER_PARAMETER = {"weights": 4, "gradients": 4, "optimiser": 8}  # fp32 AdamW


@dataclass(frozen=True)
class Footprint:
    """One training step of a cell on one of its `processes`."""

    parameters: int
    largest_unit: int  # parameters of the largest block (the part FSDP gathers whole)
    batch_size: int
    micro_batches: int
    processes: int
    mixed_precision: str
    sharded: bool = False
    activation_checkpointing: bool = False
    shape: Optional[tuple[int, int, int]] = None  # (tokens, hidden width, layers) of a transformer

    def on(self, processes: int) -> "Footprint":
        """The same step on `processes` processes (where the cell's job will run)."""
        return replace(self, processes=max(1, int(processes)))

    @property
    def batch(self) -> int:
        """Samples per process and micro-batch."""
        return max(1, self.batch_size // max(1, self.micro_batches) // max(1, self.processes))

    def _state_gib(self, part: str) -> float:
        share = self.processes if self.sharded else 1
        return self.parameters * BYTES_PER_PARAMETER[part] / share / GIB

    @property
    def weights_gib(self) -> float:
        return self._state_gib("weights")

    @property
    def gradients_gib(self) -> float:
        return self._state_gib("gradients")

    @property
    def optimiser_gib(self) -> float:
        return self._state_gib("optimiser")

    @property
    def gathered_gib(self) -> float:
        """FSDP: the largest block's weights and gradients, whole, at the training precision."""
        if not self.sharded or self.processes == 1:
            return 0.0
        return self.largest_unit * 2 * self._value_bytes / GIB

    @property
    def _value_bytes(self) -> int:
        return 2 if self.mixed_precision in ("fp16", "bf16") else 4

    @property
    def activations_gib(self) -> Optional[float]:
        if self.shape is None:
            return None
        tokens, hidden, layers = self.shape
        per_value = 17 * self._value_bytes  # 34 B at 16 bits, 68 B in fp32
        if self.activation_checkpointing:  # block inputs, plus one block recomputed
            return self.batch * tokens * hidden * (layers * self._value_bytes + per_value) / GIB
        return self.batch * tokens * hidden * layers * per_value / GIB

    @property
    def flops_per_step(self) -> float:
        if self.shape is None:
            return 6.0 * self.parameters * self.batch_size
        tokens, hidden, layers = self.shape
        return self.batch_size * (6.0 * self.parameters * tokens + 12.0 * layers * tokens**2 * hidden)

    @property
    def total_gib(self) -> float:
        return (self.weights_gib + self.gradients_gib + self.optimiser_gib + self.gathered_gib
                + (self.activations_gib or 0.0))

    def describe(self) -> str:
        """One line: parameters, memory per device by part, FLOPs per step."""
        act = "activations not estimated" if self.activations_gib is None else \
            f"activations {self.activations_gib:,.2f} at batch {self.batch}" + \
            (" recomputed" if self.activation_checkpointing else "")
        shard = f"sharded over {self.processes} processes, " if self.sharded and self.processes > 1 else ""
        gathered = f", gathered block {self.gathered_gib:,.2f}" if self.gathered_gib else ""
        return (f"{self.parameters / 1e6:,.1f} M parameters; ~{self.total_gib:,.2f} GiB per device ({shard}weights "
                f"{self.weights_gib:,.2f}, gradients {self.gradients_gib:,.2f}, AdamW {self.optimiser_gib:,.2f}"
                f"{gathered}, {act}); ~{self.flops_per_step / 1e9:,.1f} GFLOP per step")


def estimate(backbone, batch_size: int, micro_batches: int, processes: int, mixed_precision: str,
             sharding: str = "none", activation_checkpointing: bool = False) -> Footprint:
    """The footprint of training `backbone` (built on the meta device) at this batch."""
    from bench.pipeline.sharding import shard_units

    units = [sum(p.numel() for p in unit.parameters()) for unit in shard_units(backbone)]
    params = sum(p.numel() for p in backbone.parameters())
    return Footprint(params, max(units, default=params), batch_size, micro_batches, processes, mixed_precision,
                     sharding == "fsdp", bool(activation_checkpointing), _transformer_shape(backbone))


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
    """A one-line BenchError with ways out when the step cannot fit one device."""
    if footprint.total_gib > device_gib:
        raise BenchError(
            f"{label} needs ~{_gib(footprint.total_gib)} GiB per device to train ({footprint.describe()}), more "
            f"than the {_gib(device_gib)} GiB of {what}; {'; or '.join(ways_out(footprint, device_gib))}; "
            "or set executor.device_memory_gib if the cell will run on a larger device")


def ways_out(footprint: Footprint, device_gib: float) -> list[str]:
    """What would make the step fit: sharding over enough devices, recomputing activations, a
    smaller preset."""
    ways = []
    n = devices_needed(footprint, device_gib)
    if n is not None:
        micro = "" if footprint.micro_batches % n == 0 else f" and train.micro_batches={n}"
        ways.append(f"shard it over {n} or more such devices (train.sharding='fsdp'{micro} with "
                    f"executor.tasks_per_node={n}, or torchrun --nproc_per_node {n})")
    if footprint.activations_gib and not footprint.activation_checkpointing:
        ways.append("recompute activations (train.activation_checkpointing=True) or use more train.micro_batches")
    ways.append("use a smaller backbone preset (--gin_file presets/flux_1gpu.gin fits one 80 GB GPU, "
                "presets/tiny.gin a CPU)")
    return ways


def devices_needed(footprint: Footprint, device_gib: float, most: int = 1024) -> Optional[int]:
    """The fewest processes (one per device) over which the sharded step fits, if any up to `most`;
    among them, one that shares out `train.micro_batches` evenly where one does."""
    sharded = replace(footprint, sharded=True)
    fits = [n for n in range(max(2, footprint.processes + 1), most + 1) if sharded.on(n).total_gib <= device_gib]
    even = [n for n in fits if footprint.micro_batches % n == 0]
    return (even or fits or [None])[0]


def require_shared_micro_batches(label: str, footprint: Footprint) -> None:
    """Each process trains whole micro-batches: refuse a process count that does not divide them."""
    if footprint.micro_batches % footprint.processes:
        raise BenchError(f"{label}: train.micro_batches={footprint.micro_batches} cannot be shared by the "
                         f"{footprint.processes} processes it will run on; set train.micro_batches to a "
                         f"multiple of {footprint.processes}")
