"""What one training step of a cell costs on each device: memory by part, and FLOPs, from a trace
of the configured backbone (`bench.pipeline.step_trace`: fake tensors, nothing allocated), printed
by `bench validate` and checked before anything runs, so a configuration that cannot fit its
device is refused in one line, with the change that makes it fit, instead of failing hours later.

The trace runs one micro-batch of `train.batch_size // train.micro_batches` rows (each process
trains whole micro-batches: sharding never splits one) through the loss, backward and the AdamW
step, on one unsharded process, and reads what is live at the peak: fp32 weights (accelerate
keeps fp32 master weights under mixed precision), gradients, AdamW's two moments, autocast's
bf16 weight copies, and the activations and temporaries. Under gradient accumulation (more than
one micro-batch per process) every gradient is held through the later micro-batches; with one,
they are born during the backward. The step's peak is the larger of the micro-batch's and the
AdamW step's (fused AdamW, as the trainer uses on a GPU; the foreach path adds a
parameter-sized temporary, `fused_adamw=False`).

Composed from the trace, per device:
- one process, or DDP over N: the trace, plus a second copy of the gradients for DDP's buckets
  unless `gradient_as_bucket_view` (the trainer sets it: `bucket_view=True`), plus an fp32 EMA
  copy of the weights when `train.ema_decay > 0`;
- FSDP over N (`train.sharding='fsdp'`): weights, gradients and AdamW state / N (the gradient
  shards at the activations' peak only under accumulation); activations of a whole micro-batch
  (no autocast copies: FSDP gathers bf16 weights itself); the largest unit's weights gathered
  twice (the unit that runs and the next, prefetched), its unsharded gradients and, under bf16,
  their fp32 copy for the reduce-scatter; the root unit's weights, unsharded from forward to
  backward. (Conservative: FSDPMemTracker sees less gathered at the peak, tests/pipeline/test_footprint_fsdp.py.)

Measured against independent fake-tensor traces (PyTorch's MemTracker / FSDPMemTracker): the
one-GPU preset's step 57.73 GiB vs 57.67; FLUX.1 size over 8 FSDP ranks 91.11 vs 88.57
(docs/performance.md).
FLOPs per step: `FlopCounterMode`'s count of the traced micro-batch (forward + backward, and
activation checkpointing's second forward, since it runs) times `train.micro_batches`.

Not counted: kernels' workspaces, the CUDA context and allocator fragmentation (a few GiB on a
GPU), the training data when it is resident on the device, and collective buffers. A backbone
that cannot run under fake tensors gets the parameter terms only, and says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from bench.errors import BenchError
from bench.pipeline.step_trace import StepTrace, trace_step

GIB = 2**30
BYTES_PER_PARAMETER = {"weights": 4, "gradients": 4, "optimiser": 8}  # fp32 AdamW
ONE_GPU_PRESET_PARAMETERS = 2.24e9  # presets/flux_1gpu.gin at 16 x 32 x 32 latents
NO_GPU = "this machine's RAM"  # the device a cell is checked against where there is no GPU


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
    trace: StepTrace | None = None  # None: not traced (the backbone does not run under fake tensors)
    root_parameters: int = 0  # parameters outside every FSDP unit (the root unit)
    bucket_view: bool = True  # DDP's gradient_as_bucket_view (the trainer's setting)
    ema: bool = False  # train.ema_decay > 0: an fp32 copy of the weights
    untraced: str = ""  # why there is no trace
    fused_adamw: bool = True  # the trainer's fused AdamW on a GPU (no foreach temporary)
    scale: float = 1.0  # activations relative to the trace's micro-batch (`ways_out`'s smaller micro-batches)
    backbone: object = field(default=None, compare=False, repr=False)  # the meta backbone, to trace variants

    def on(self, processes: int) -> Footprint:
        """The same step on `processes` processes (where the cell's job will run)."""
        return replace(self, processes=max(1, int(processes)))

    @property
    def batch(self) -> int:
        """Rows of one micro-batch: what a process holds activations for, however many processes."""
        return max(1, self.batch_size // max(1, self.micro_batches))

    @property
    def accumulating(self) -> bool:
        """Whether a process runs more than one micro-batch a step (gradients held across them)."""
        return self.micro_batches // max(1, self.processes) > 1

    @property
    def _shards(self) -> int:
        return self.processes if self.sharded else 1

    def _state_gib(self, part: str) -> float:
        return self.parameters * BYTES_PER_PARAMETER[part] / self._shards / GIB

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
    def _peak_parts(self) -> dict | None:
        """The traced micro-batch's parts at its peak (bytes), unsharded."""
        if self.trace is None:
            return None
        return self.trace.accumulating if self.accumulating else self.trace.first

    @property
    def weight_copies_gib(self) -> float:
        """Autocast's low-precision copies of the weights live at the peak (none under FSDP,
        which gathers bf16 weights itself: `gathered_gib`)."""
        if self.sharded or self._peak_parts is None:
            return 0.0
        return self._peak_parts["weight_copies"] / GIB

    @property
    def activations_gib(self) -> float | None:
        """Activations and temporaries of one whole micro-batch at the peak."""
        if self.trace is None:
            return None
        if self.sharded:
            return self.scale * self.trace.activations_most / GIB
        return self.scale * self._peak_parts["activations"] / GIB

    @property
    def gathered_gib(self) -> float:
        """FSDP: the largest unit's weights gathered for the unit that runs and the next
        (prefetched), its unsharded gradients (and their fp32 copy for the reduce-scatter under
        bf16), and the root unit's weights, unsharded from forward to backward."""
        if not self.sharded:
            return 0.0
        low = self.mixed_precision == "bf16"
        value = 2 if low else 4
        per_unit = 2 * value + value + (4 if low else 0)
        return (self.largest_unit * per_unit + self.root_parameters * value) / GIB

    @property
    def ddp_buckets_gib(self) -> float:
        """DDP's gradient buckets: a second copy of the gradients unless they are views of them."""
        if self.sharded or self.processes == 1 or self.bucket_view:
            return 0.0
        return self.parameters * 4 / GIB

    @property
    def ema_gib(self) -> float:
        return self.parameters * 4 / GIB if self.ema and not self.sharded else 0.0

    @property
    def optimiser_step_gib(self) -> float | None:
        """The peak of the AdamW step (its temporaries included), on this device."""
        if self.trace is None:
            return None
        step = StepTrace.total(self.trace.optimiser_step) / GIB
        return step / self._shards + self.ddp_buckets_gib + self.ema_gib

    @property
    def micro_batch_gib(self) -> float:
        """The peak of a micro-batch's forward and backward on this device."""
        if self.trace is None:  # parameter terms only
            return self.weights_gib + self.gradients_gib + self.optimiser_gib + self.gathered_gib
        if (
            self.sharded
        ):  # the gradient shards exist at the activations' peak only if held from earlier micro-batches
            held = self.gradients_gib if self.accumulating else 0.0
            return self.weights_gib + held + self.optimiser_gib + self.activations_gib + self.gathered_gib
        traced = StepTrace.total(self._peak_parts) / GIB - self._peak_parts["activations"] / GIB
        return traced + self.activations_gib + self.ddp_buckets_gib + self.ema_gib

    def recomputed(self) -> Footprint | None:
        """The same step with activation checkpointing (traced again), if the backbone can recompute."""
        if self.backbone is None or self.trace is None:
            return None
        try:
            trace = trace_step(self.backbone, self.trace.rows, self.mixed_precision, True, self.fused_adamw)
        except Exception:  # noqa: BLE001 -- a backbone without checkpointing: not a way out
            return None
        return replace(self, activation_checkpointing=True, trace=trace)

    @property
    def total_gib(self) -> float:
        """The step's peak per device: its micro-batch's or its AdamW step's, whichever is larger."""
        return max(self.micro_batch_gib, self.optimiser_step_gib or 0.0)

    @property
    def flops_per_step(self) -> float:
        """FLOPs of the whole step (every micro-batch, all processes), counted by the trace."""
        if self.trace is None:
            return 6.0 * self.parameters * self.batch_size
        return float(self.trace.flops) * self.batch_size / self.trace.rows

    def describe(self) -> str:
        """One line: parameters, memory per device by part, FLOPs per step."""
        shard = f"sharded over {self.processes} processes, " if self.sharded else ""
        if self.trace is None:
            act = f"activations not estimated ({self.untraced or 'not traced'})"
        else:
            act = f"activations {self.activations_gib:,.2f} of a micro-batch of {self.batch}" + (
                " recomputed" if self.activation_checkpointing else ""
            )
        extra = [
            f"{what} {gib:,.2f}"
            for what, gib in (
                ("autocast weight copies", self.weight_copies_gib),
                ("gathered units", self.gathered_gib),
                ("DDP buckets", self.ddp_buckets_gib),
                ("EMA", self.ema_gib),
            )
            if gib
        ]
        step = "" if self.optimiser_step_gib is None else f"; AdamW step {self.optimiser_step_gib:,.2f}"
        flops = "counted" if self.trace is not None else "6 per parameter and sample"
        return (
            f"{self.parameters / 1e6:,.1f} M parameters; ~{self.total_gib:,.2f} GiB per device ({shard}weights "
            f"{self.weights_gib:,.2f}, gradients {self.gradients_gib:,.2f}, AdamW {self.optimiser_gib:,.2f}, "
            + "".join(f"{e}, " for e in extra)
            + f"{act}{step}); ~{self.flops_per_step / 1e9:,.1f} GFLOP "
            f"per step ({flops})"
        )


def estimate(
    backbone,
    batch_size: int,
    micro_batches: int,
    processes: int,
    mixed_precision: str,
    sharding: str = "none",
    activation_checkpointing: bool = False,
    ema: bool = False,
    bucket_view: bool = True,
    fused_adamw: bool = True,
) -> Footprint:
    """The footprint of training `backbone` (built on the meta device) at this batch: one
    micro-batch traced under fake tensors (cached per backbone config and micro-batch)."""
    from bench.pipeline.sharding import shard_units

    units = [sum(p.numel() for p in unit.parameters()) for unit in shard_units(backbone)]
    params = sum(p.numel() for p in backbone.parameters())
    rows = max(1, batch_size // max(1, micro_batches))
    trace, why = None, ""
    try:
        trace = trace_step(backbone, rows, mixed_precision, activation_checkpointing, fused_adamw)
    except Exception as error:  # noqa: BLE001 -- any backbone that fake tensors cannot run: parameter terms
        why = f"its step does not trace under fake tensors: {type(error).__name__}"
    return Footprint(
        params,
        max(units, default=0),
        batch_size,
        micro_batches,
        processes,
        mixed_precision,
        sharding == "fsdp",
        bool(activation_checkpointing),
        trace,
        params - sum(units),
        bucket_view,
        ema,
        why,
        fused_adamw,
        backbone=backbone,
    )


def device_memory(configured: float | None) -> tuple[float, str]:
    """(GiB, what it is) of one device a cell trains on: `executor.device_memory_gib` if set,
    else the first GPU's memory, else this machine's RAM."""
    if configured is not None:
        return float(configured), "executor.device_memory_gib"
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return props.total_memory / GIB, f"GPU {props.name}"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, f"{NO_GPU} (no GPU)"


def _gib(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.2f}"


def require_fit(label: str, footprint: Footprint, device_gib: float, what: str) -> None:
    """A one-line BenchError with ways out when the step cannot fit one device."""
    if footprint.total_gib > device_gib:
        raise BenchError(
            f"{label} needs ~{_gib(footprint.total_gib)} GiB per device to train ({footprint.describe()}), more "
            f"than the {_gib(device_gib)} GiB of {what}; {'; or '.join(ways_out(footprint, device_gib, what))}; "
            "or set executor.device_memory_gib if the cell will run on a larger device"
        )


def ways_out(footprint: Footprint, device_gib: float, what: str = "") -> list[str]:
    """What would make the step fit: sharding over enough devices (with the micro-batches that
    lets them share), recomputing activations (alone or with sharding), smaller micro-batches, a
    smaller backbone (`smaller_backbone`: never the preset in use). `what` names the device."""
    ways = []
    shard = devices_needed(footprint, device_gib)
    if shard is not None:
        ways.append(_shard_text(footprint, *shard))
    recomputed = (
        footprint.recomputed()
        if footprint.activations_gib and not footprint.activation_checkpointing
        else None
    )
    if recomputed is not None and recomputed.total_gib <= device_gib:
        ways.append(
            f"recompute activations (train.activation_checkpointing=True: ~{_gib(recomputed.total_gib)} GiB)"
        )
    elif recomputed is not None and _fewer(devices_needed(recomputed, device_gib), shard):
        ways.append(
            "recompute activations (train.activation_checkpointing=True) and "
            + _shard_text(recomputed, *devices_needed(recomputed, device_gib))
        )
    elif recomputed is not None and micro_batches_needed(recomputed, device_gib) is not None:
        ways.append(
            "recompute activations (train.activation_checkpointing=True) and train smaller micro-batches "
            f"(train.micro_batches={micro_batches_needed(recomputed, device_gib)})"
        )
    micro = micro_batches_needed(footprint, device_gib)
    if micro is not None:
        ways.append(
            f"train smaller micro-batches (train.micro_batches={micro}: {footprint.batch_size // micro} rows "
            "each, same batch)"
        )
    ways.append(smaller_backbone(footprint, what))
    return ways


def smaller_backbone(footprint: Footprint, what: str = "") -> str:
    """The smaller backbone worth naming: the one-GPU preset for a model clearly above it; for
    one at or below it (the preset itself included) fewer or narrower blocks, since suggesting
    the preset in use would change nothing; on a machine without a GPU, the CPU check preset."""
    if footprint.parameters > 1.1 * ONE_GPU_PRESET_PARAMETERS:
        return (
            "use a smaller backbone preset (--gin_file presets/flux_1gpu.gin, ~2.2B parameters, fits one "
            "80 GB GPU)"
        )
    if what.startswith(NO_GPU):
        return (
            "check the data on this CPU with a tiny backbone (--gin_file presets/cpu_smoke.gin) and train "
            "on a GPU"
        )
    return (
        "use a smaller backbone than this one (fewer flux.num_layers or flux.num_single_layers, or fewer "
        "flux.num_attention_heads)"
    )


def _fewer(devices: tuple[int, int] | None, than: tuple[int, int] | None) -> bool:
    """Whether a sharding (devices, micro-batches) exists and needs fewer devices than `than`."""
    return devices is not None and (than is None or devices[0] < than[0])


def _shard_text(footprint: Footprint, n: int, micro: int) -> str:
    micro_text = "" if micro == footprint.micro_batches else f" and train.micro_batches={micro}"
    return (
        f"shard it over {n} or more such devices (train.sharding='fsdp'{micro_text} with "
        f"executor.tasks_per_node={n}, or torchrun --nproc_per_node {n})"
    )


def _with_micro_batches(footprint: Footprint, micro: int) -> Footprint:
    """The step split into `micro` micro-batches: the traced activations scaled to its rows
    (activations are proportional to a micro-batch's rows)."""
    rows = max(1, footprint.batch_size // micro)
    return replace(footprint, micro_batches=micro, scale=footprint.scale * rows / footprint.batch)


def devices_needed(footprint: Footprint, device_gib: float, most: int = 1024) -> tuple[int, int] | None:
    """(devices, train.micro_batches): the fewest processes (one per device) over which the sharded
    step fits, if any up to `most`, with the fewest micro-batches they can share (a multiple of
    the devices dividing the batch, no fewer than configured) at which it fits."""
    sharded = replace(footprint, sharded=True)
    for n in range(max(2, footprint.processes + 1), most + 1):
        for micro in range(footprint.micro_batches, footprint.batch_size + 1):
            if micro % n or footprint.batch_size % micro:
                continue
            if _with_micro_batches(sharded, micro).on(n).total_gib <= device_gib:
                return n, micro
    return None


def micro_batches_needed(footprint: Footprint, device_gib: float) -> int | None:
    """The fewest `train.micro_batches` (dividing the batch, shared by the processes) at which the
    step fits on its processes; None if none does or activations are not estimated."""
    if not footprint.activations_gib:
        return None
    for micro in range(footprint.micro_batches + 1, footprint.batch_size + 1):
        if footprint.batch_size % micro or micro % footprint.processes:
            continue
        if _with_micro_batches(footprint, micro).total_gib <= device_gib:
            return micro
    return None


def require_shared_micro_batches(label: str, footprint: Footprint) -> None:
    """Each process trains whole micro-batches: refuse a process count that does not divide them."""
    if footprint.micro_batches % footprint.processes:
        raise BenchError(
            f"{label}: train.micro_batches={footprint.micro_batches} cannot be shared by the "
            f"{footprint.processes} processes it will run on; set train.micro_batches to a "
            f"multiple of {footprint.processes}"
        )
