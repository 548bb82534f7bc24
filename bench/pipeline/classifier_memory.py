"""Peak memory of one training step of a downstream or feature classifier (ResNet-50,
DenseNet-121, the small CNN), traced under fake tensors like the generative step
(`bench.pipeline.step_trace`), so a cell's peak across its stages can be stated before it runs.

The step is `bench.classify.fit._epoch`'s: forward under bf16 autocast (while the previous
step's gradients are still held: `zero_grad` comes after the forward), the float32 loss,
backward, the Adam step (foreach: one parameter-sized temporary). Input images at
(batch, in_channels, size, size) in float32 count; BatchNorm's running statistics count with the
weights. Traced with CPU autocast (the GPU path's bf16 convolutions); kernels' workspaces
(cuDNN's autotuner may pick algorithms with large ones) and the CUDA context are not counted.
"""

from __future__ import annotations

import functools
import warnings

import torch

from bench.pipeline.live_bytes import LiveBytes

GIB = 2**30


@functools.lru_cache(maxsize=32)
def classifier_step_gib(
    arch: str, in_channels: int, n_classes: int, size: int, batch: int, precision: str = "bf16"
) -> float:
    """GiB at the peak of one training step of `arch` on `batch` images of size x size
    (`precision`: 'bf16' autocast as on a GPU, or 'no' for float32)."""
    with warnings.catch_warnings():  # the CPU trace's warnings are not the user's
        warnings.simplefilter("ignore")
        return _traced_gib(arch, in_channels, n_classes, size, batch, precision)


def _traced_gib(arch: str, in_channels: int, n_classes: int, size: int, batch: int, precision: str) -> float:
    from torch._subclasses.fake_tensor import FakeTensorMode

    from bench.classify.fit import build_classifier

    mode = FakeTensorMode()
    with mode:
        model = build_classifier(arch, in_channels, n_classes)
        model.train()
        optimiser = torch.optim.Adam(model.parameters(), foreach=True)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        optimiser.step()  # Adam's moments exist from the first step on
    tracker = LiveBytes()
    tracker.adopt(
        [
            *model.parameters(),
            *model.buffers(),
            *(p.grad for p in model.parameters()),
            *(t for s in optimiser.state.values() for t in s.values() if isinstance(t, torch.Tensor)),
        ]
    )
    with mode, tracker:
        x = torch.randn(batch, in_channels, size, size)
        y = torch.randint(0, n_classes, (batch,))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    peak, _, _ = tracker.sweep(lambda r: "all")
    return peak / GIB
