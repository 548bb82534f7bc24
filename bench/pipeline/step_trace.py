"""One training step of a backbone, traced under fake tensors: memory by part, and FLOPs.

The backbone `bench validate` builds on the meta device is copied onto fake CPU tensors
(`FakeTensorMode`: shapes and dtypes, no memory), AdamW is given its state, and one micro-batch
runs the way the trainer runs it (`Method.loss`, the flow-matching loss, under
`torch.autocast(bf16)` when `train.mixed_precision='bf16'`, then backward), followed by the
AdamW step. `LiveBytes` counts every storage the step creates and frees; `FlopTally` counts the
FLOPs with `FlopCounterMode`'s formulas (matmuls, convolutions, attention; activation
checkpointing's second forward included, since it runs).
Nothing here knows FLUX beyond its two depth settings: any backbone that runs under fake tensors
is traced. A FLUX deeper than 8 blocks is traced at one and two blocks of each stack and
extrapolated linearly in depth (`_by_depth`; exact for every part but the most activations held
under recomputation, which tests hold to 10 %): fake tensors cost ~1 ms an operator, so the
one-GPU preset takes seconds, not half a minute. Results are cached per backbone config.

From the one trace come the two peaks a step has: a rank's first micro-batch (gradients are born
during its backward) and a later one under gradient accumulation (every gradient held all
along, each new one a temporary added in place). Autocast's low-precision weight copies are told
apart (a `_to_copy` of a weight), so a sharded rank, whose weights are cast by FSDP instead, can
leave them out (`bench.pipeline.footprint`).

Not seen by the trace: a kernel's internal workspace (cuBLAS, flash attention's), the CUDA
caching allocator's rounding and fragmentation, and the CUDA context itself. The op lists of CPU
autocast (traced here) and CUDA autocast differ slightly (CUDA keeps layer norms in fp32); the
GPU check (`bench bench --only gpu`) measures the gap on a real device.
"""

from __future__ import annotations

import copy
import functools
import json
import warnings
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench.pipeline.live_bytes import LiveBytes, Storage

PARTS = ("weights", "gradients", "optimiser", "weight_copies", "activations")


@dataclass(frozen=True)
class StepTrace:
    """Bytes of one unsharded process's training step, by part, and the FLOPs of a micro-batch."""

    rows: int  # rows of the traced micro-batch
    weights: int  # parameters and buffers
    gradients: int
    optimiser: int  # AdamW's two moments (and step counts)
    largest_gradient: int  # one parameter's gradient: the temporary an accumulating backward adds in place
    first: dict  # part -> bytes at the peak of a micro-batch that starts without gradients
    accumulating: dict  # the same for a later micro-batch, every gradient held
    activations_most: int  # the most activations + temporaries held at once (no weight copies)
    optimiser_step: dict  # part -> bytes at the peak of the AdamW step
    flops: int  # forward + backward of the micro-batch (recomputation included)

    @staticmethod
    def total(parts: dict) -> int:
        return sum(parts.values())


def trace_step(
    backbone,
    rows: int,
    mixed_precision: str = "no",
    activation_checkpointing: bool = False,
    fused_adamw: bool = True,
) -> StepTrace:
    """Trace one micro-batch of `rows` samples through forward, backward and the AdamW step.
    Cached by the backbone's class and config, so a grid of cells traces each shape once."""
    config = json.dumps(backbone.config(), sort_keys=True) if hasattr(backbone, "config") else None
    if config is None:
        return _trace(backbone, rows, mixed_precision, activation_checkpointing, fused_adamw)
    return _cached(
        type(backbone),
        config,
        rows,
        mixed_precision,
        bool(activation_checkpointing),
        fused_adamw,
        _Held(backbone),
    )


class _Held:
    """Carries the backbone into the cache without making it part of the key."""

    def __init__(self, backbone):
        self.backbone = backbone

    def __hash__(self):
        return 0

    def __eq__(self, other):
        return isinstance(other, _Held)


@functools.lru_cache(maxsize=32)
def _cached(cls, config, rows, mixed_precision, activation_checkpointing, fused_adamw, held) -> StepTrace:
    backbone = held.backbone
    depth = (
        {k: backbone.hyperparameters.get(k) for k in DEPTHS} if hasattr(backbone, "hyperparameters") else {}
    )
    if all(isinstance(v, int) and v >= 1 for v in depth.values()) and depth and sum(depth.values()) > 8:
        return _by_depth(backbone, depth, rows, mixed_precision, activation_checkpointing, fused_adamw)
    return _trace(backbone, rows, mixed_precision, activation_checkpointing, fused_adamw)


DEPTHS = ("num_layers", "num_single_layers")  # FLUX's two stacks of repeated blocks


def _by_depth(
    backbone, depth: dict, rows, mixed_precision, activation_checkpointing, fused_adamw
) -> StepTrace:
    """The trace of a deep backbone from three shallow ones, one block of each kind, then a second
    of either: every part of the step is a sum over blocks plus what sits around them, so it is
    linear in each stack's depth (tests/pipeline/test_step_trace.py holds it to the full trace). Traces
    about 8 blocks instead of 24 (one-GPU preset) or 57 (FLUX.1): fake tensors cost ~1 ms an op."""

    def shallow(**blocks):
        with torch.device("meta"):
            model = type(backbone)(**{**backbone.config(), **blocks})
        return _trace(model, rows, mixed_precision, activation_checkpointing, fused_adamw)

    ones = {k: 1 for k in depth}
    base = shallow(**ones)
    slopes = {k: shallow(**{**ones, k: 2}) for k in depth}
    largest = 4 * max(p.numel() for p in backbone.parameters() if p.requires_grad)

    def extrapolate(get):
        return get(base) + sum((depth[k] - 1) * (get(t) - get(base)) for k, t in slopes.items())

    def parts(name):
        return {p: int(extrapolate(lambda t, p=p: getattr(t, name)[p])) for p in PARTS}

    accumulating = parts("accumulating")
    accumulating["activations"] += largest - base.largest_gradient  # the in-place add's temporary
    state = (int(extrapolate(lambda t, f=f: getattr(t, f))) for f in ("weights", "gradients", "optimiser"))
    return StepTrace(
        rows,
        *state,
        largest,
        parts("first"),
        accumulating,
        int(extrapolate(lambda t: t.activations_most)),
        parts("optimiser_step"),
        int(extrapolate(lambda t: t.flops)),
    )


def _trace(
    backbone, rows: int, mixed_precision: str, activation_checkpointing: bool, fused_adamw: bool
) -> StepTrace:
    # what the traced ops warn about (e.g. CPU autocast's bf16 input to an fp32 RMSNorm weight) is
    # about the CPU trace, not the user's job: not shown
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _trace_quietly(backbone, rows, mixed_precision, activation_checkpointing, fused_adamw)


def _trace_quietly(
    backbone, rows: int, mixed_precision: str, activation_checkpointing: bool, fused_adamw: bool
) -> StepTrace:
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode()
    model, optimiser = _fake_model_and_optimiser(backbone, mode, activation_checkpointing, fused_adamw)
    params = [p for p in model.parameters() if p.requires_grad]
    tracker = LiveBytes()
    tracker.adopt(list(model.parameters()) + list(model.buffers()))
    weights = {id(r) for r in tracker.records()}
    state = [t for s in optimiser.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    tracker.adopt(state)
    moments = {id(r) for r in tracker.records()} - weights
    counter = FlopTally()
    with mode, tracker:
        with counter:
            loss = _micro_loss(model, rows, mixed_precision)
            loss.backward()
        del loss
        backward_end = tracker.clock
        grads = {id(tracker.storages[tracker.key(p.grad)]) for p in params}
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
    sizes = {i: r.nbytes for r in tracker.records() for i in [id(r)]}

    def part(r: Storage) -> str:
        if id(r) in weights:
            return "weights"
        if id(r) in moments:
            return "optimiser"
        if id(r) in grads:
            return "gradients"
        if r.origin == "cast" and id(r.source) in weights:
            return "weight_copies"
        return "activations"

    _, first, _ = tracker.sweep(part, end=backward_end + 1)
    _, without, most = tracker.sweep(lambda r: None if id(r) in grads else part(r), end=backward_end + 1)
    gradients = sum(sizes[i] for i in grads)
    largest = max((sizes[i] for i in grads), default=0)
    accumulating = {**without, "gradients": gradients, "activations": without.get("activations", 0) + largest}
    _, step, _ = tracker.sweep(part, start=backward_end + 1)
    return StepTrace(
        rows,
        sum(sizes[i] for i in weights),
        gradients,
        sum(sizes[i] for i in moments),
        largest,
        _parts(first),
        _parts(accumulating),
        most.get("activations", 0),
        _parts(step),
        counter.flops,
    )


def _cpu_attention(func, args) -> int | None:
    """FLOPs of the CPU flash-attention kernels, which FlopCounterMode has no formula for (it
    counts the CUDA kernels, and the math backend's matmuls): the same formulas as the CUDA
    ones, so the count is the step's on the GPU it trains on, not zero attention on a CPU."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    name = func._overloadpacket.__name__
    if name == "_scaled_dot_product_flash_attention_for_cpu":
        return sdpa_flop_count(*(a.shape for a in args[:3]))
    if name == "_scaled_dot_product_flash_attention_for_cpu_backward":
        return sdpa_backward_flop_count(*(a.shape for a in args[:4]))
    return None


class FlopTally(TorchDispatchMode):
    """The FLOPs `torch.utils.flop_counter.FlopCounterMode` counts (its formulas), without its
    module tracking, which keeps activation checkpointing's recomputed tensors alive; attention
    included on the CPU too (`_cpu_attention`)."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.utils.flop_counter import flop_registry

        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.flops += int(count(*args, **kwargs, out_val=out))
        else:
            self.flops += _cpu_attention(func, args) or 0
        return out


def _parts(parts: dict) -> dict:
    return {p: int(parts.get(p, 0)) for p in PARTS}


def _fake_model_and_optimiser(backbone, mode, activation_checkpointing: bool, fused_adamw: bool):
    """A copy of the (meta) backbone on fake CPU tensors, and AdamW holding its state, as after a
    first step."""
    meta = copy.deepcopy(backbone)
    with mode:
        # `to_empty` would pass the meta tensors themselves to the fake mode, which refuses them
        model = meta._apply(lambda t: torch.empty(t.shape, dtype=t.dtype, device="cpu"))
        if activation_checkpointing:
            model.enable_activation_checkpointing()
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimiser = torch.optim.AdamW(
            params, lr=1e-4, fused=fused_adamw, foreach=None if fused_adamw else True
        )
        for p in params:
            p.grad = torch.zeros_like(p)
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
    return model, optimiser


def _micro_loss(model, rows: int, mixed_precision: str) -> torch.Tensor:
    """The flow-matching loss of one micro-batch (as `bench.pipeline.trainer._micro_loss`), its
    inputs made here so that they count."""
    from bench.method import Condition, Method, TrainBatch

    class Tokens(Method):
        """Vanilla flow matching with as many condition tokens as the backbone takes (a method
        with subclass tokens feeds two)."""

        def tokens(self, cond):
            return torch.ones(len(cond.label), int(getattr(model, "n_tokens", 1)), dtype=torch.long)

    shape = tuple(model.sample_shape)
    x1, eps = torch.randn(rows, *shape), torch.randn(rows, *shape)
    batch = TrainBatch(
        x1=x1, cond=Condition(torch.zeros(rows, dtype=torch.long)), eps=eps, t=torch.rand(rows)
    )
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        return Tokens().loss(model, batch)
