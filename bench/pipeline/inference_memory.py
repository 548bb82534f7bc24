"""Peak device memory of inference, traced under fake tensors, and the largest batch that fits.

The sampler and the VAE pick their batch with this tracer when the user leaves it unset
(`sample.batch_size=None`, `flux_vae.batch_size=None`), and `bench run`'s preview reports the
same figures (`bench.pipeline.sampler.sampling_peak_gib`, `FluxVAEEncoder.peak_gib` in
bench.encoders.flux_vae: each traced by the code that knows what it runs, so this module imports
neither). Nothing is guessed from a formula: the model
is rebuilt on the meta device, materialised as fake tensors (shapes and dtypes, no memory) and
the very code that runs at inference is run once on them, bench's own solver step
(`sampler.ConditionedVelocity` + `euler` / `heun`) or the VAE encoder's chunk
(`FluxVAEEncoder._decode_chunk` / `_encode_chunk`), at the given batch and precision, under
`torch.no_grad`. `PeakTracker` adds up the bytes of every tensor storage alive after each op
(rounded up to the CUDA caching allocator's 512-byte blocks) and keeps the maximum: weights,
inputs, the activations still referenced, and the outputs. Pinned in tests/pipeline/test_inference_memory.py
to PyTorch's own `MemTracker` on the same trace (equal to the byte with 1-byte blocks), and to the
same code run on real CPU tensors.

What a trace cannot see is left to the margin (`MARGIN_FRACTION` of the device, at least
`MARGIN_MIN_GIB`): cuBLAS / cuDNN workspaces, the caching allocator's fragmentation, other
libraries' buffers. Under CUDA the trace runs on fake CUDA tensors, so autocast applies CUDA's
op policy; without CUDA (a CPU login node previewing a GPU job) it runs on fake CPU tensors
under CPU autocast, whose policy differs for a few ops (normalisations).
"""

from __future__ import annotations

import logging
import math
import warnings
import weakref
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only
from torch.utils.weak import WeakIdKeyDictionary

from bench.errors import BenchError

log = logging.getLogger(__name__)

GIB = 2**30
BLOCK = 512  # the CUDA caching allocator rounds every allocation up to 512 bytes
MARGIN_FRACTION = 0.10  # [our default] of the device's memory kept free for what a trace cannot see
MARGIN_MIN_GIB = 2.0  # [our default] and at least this much


class PeakTracker(TorchDispatchMode):
    """Live and peak bytes of the tensor storages that ops create, plus those `track`ed.

    A storage is counted once, from the first op that returns it until Python frees it (a weak
    reference's callback), so views and in-place ops add nothing. Use inside a FakeTensorMode:
    `with FakeTensorMode(): with PeakTracker() as t: ...`.
    """

    def __init__(self, block: int = BLOCK):
        super().__init__()
        self.block = block  # allocation granularity: sizes are rounded up to a multiple
        self.live = self.peak = 0
        self._sizes = WeakIdKeyDictionary()  # storage -> bytes counted
        self._refs = []  # the weak references (their callbacks uncount freed storages)

    def track(self, tensor: torch.Tensor) -> None:
        """Count `tensor`'s storage (once) as alive from now on."""
        storage = tensor.untyped_storage()
        if storage in self._sizes:
            return
        size = math.ceil(storage.nbytes() / self.block) * self.block
        self._sizes[storage] = size
        self._refs.append(weakref.ref(storage, lambda _ref, n=size: self._free(n)))
        self.live += size
        self.peak = max(self.peak, self.live)

    def track_module(self, module: torch.nn.Module) -> None:
        """Count every parameter and buffer of `module`."""
        for tensor in [*module.parameters(), *module.buffers()]:
            self.track(tensor)

    def _free(self, size: int) -> None:
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, self.track, out)
        return out


# traced peaks of this process, by what determines them (a batch search and the run preview
# trace the same points again)
PEAKS: dict = {}


def trace_device() -> torch.device:
    """The device fake tensors are made on: CUDA's where CUDA is available, else the CPU's."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def traced_peak(
    build: Callable[[], torch.nn.Module],
    run: Callable[[torch.nn.Module, torch.device], None],
    device: torch.device | None = None,
    block: int = BLOCK,
) -> int:
    """Peak bytes of `run(model, device)` on a fake copy of the module `build()` returns.

    `build` is called on the meta device (no weights are allocated, no initialiser runs); the
    model is then given fake storage on `device`. `run` creates its inputs and runs the code
    whose memory is wanted, under torch.no_grad.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    device = trace_device() if device is None else torch.device(device)
    with torch.device("meta"):
        model = build()
    # quiet: a kernel's notes on the fake run (bf16 input to an fp32 norm's fused kernel under CPU
    # autocast) are about the trace, not the user's job, and would add lines to validate's output
    with FakeTensorMode(allow_non_fake_inputs=True), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = model.to_empty(device=device)
        with PeakTracker(block) as tracker, torch.no_grad():
            tracker.track_module(model)
            run(model, device)
    return tracker.peak


def with_cpu_fallback(trace: Callable[[torch.device | None], int]) -> int:
    """`trace()` on the default trace device; on a CUDA machine, a failed CUDA trace is retried on
    the CPU (logged) rather than failing the stage it sizes."""
    try:
        return trace(None)
    except BenchError:
        raise
    except Exception as exc:  # fake CUDA tensors lack a kernel's meta function: trace the CPU path
        if trace_device().type != "cuda":
            raise
        log.warning(
            "memory trace on fake CUDA tensors failed (%s: %s); traced on the CPU instead",
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        return trace(torch.device("cpu"))


# -- the batch that fits ------------------------------------------------------------------------
def margin_bytes(total_bytes: int) -> int:
    """Memory kept free of a device with `total_bytes`: MARGIN_FRACTION of it, at least MARGIN_MIN_GIB."""
    return int(max(MARGIN_FRACTION * total_bytes, MARGIN_MIN_GIB * GIB))


def budget_bytes(total_bytes: int, used_by_others: int = 0) -> int:
    """What a traced peak may reach on a device of `total_bytes` where `used_by_others` bytes
    (other tensors, other processes, the CUDA context) are taken: total - others - margin."""
    return int(total_bytes - used_by_others - margin_bytes(total_bytes))


def cuda_budget(device, resident: int = 0) -> int:
    """The budget on a live CUDA device, for a trace that counts `resident` bytes already there
    (the model's weights): total - margin - everything allocated that is not those bytes."""
    device = torch.device(device)
    free, total = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return budget_bytes(total, total - free - cached - resident)


def largest_batch(peak: Callable[[int], int], budget: int, cap: int) -> int:
    """The largest batch b <= cap with peak(b) <= budget, to within 1/64 of it; peaks memoised.

    A traced peak is convex and piecewise affine in the batch (each tensor's bytes are a constant
    plus a multiple of the batch, and the peak is their running maximum), so a line through two
    fitting batches, extended, crosses the budget at or beyond the answer, and a line through a
    fitting and a failing batch crosses it at or before: the search takes the two in turn (and a
    bisection when neither shrinks the interval to half), a few traces for a 1/64 answer.
    A one-line BenchError when even a batch of 1 does not fit.
    """
    cache: dict[int, int] = {}

    def p(b: int) -> int:
        if b not in cache:
            cache[b] = peak(b)
        return cache[b]

    def crossing(b0: int, b1: int) -> int:
        """Where the line through (b0, p(b0)) and (b1, p(b1)) reaches the budget (floored)."""
        slope = (p(b1) - p(b0)) / (b1 - b0)
        return b1 + int((budget - p(b1)) / slope) if slope > 0 else 2 * b1

    if p(1) > budget:
        raise BenchError(
            f"one sample needs {p(1) / GIB:.2f} GiB at inference, over the "
            f"{budget / GIB:.2f} GiB available: use a larger GPU or a smaller model"
        )
    if cap <= 1 or p(cap) <= budget:
        return max(1, cap)
    fits, hi = [1], cap  # batches that fit, in increasing order; the smallest known not to fit
    p(2) <= budget and fits.append(2)  # noqa: B018 -- a second fitting point for the first line
    step = 0
    while hi - fits[-1] > max(1, fits[-1] // 64):
        lo = fits[-1]
        if step % 2 == 0 and len(fits) > 1:
            guess = crossing(fits[-2], lo)  # beyond the answer (convexity): a new upper bound
        else:
            guess = crossing(lo, hi)  # before it: a new lower bound
        if not lo < guess < hi or (step % 3 == 2 and hi - lo > 4):
            guess = (lo + hi) // 2
        guess = min(max(guess, lo + 1), hi - 1)
        if p(guess) <= budget:
            fits.append(guess)
        else:
            hi = guess
        step += 1
    return fits[-1]
