"""The numeric precision of inference (sampling and VAE decoding): fp32, or bf16 autocast.

`sample.precision` picks it. Under 'bf16' every backbone (or VAE) forward runs under
`torch.autocast(bfloat16)` over the fp32 weights, as training under `train.mixed_precision='bf16'`
does, so a model is sampled at the precision it was trained at; the ODE state x_t and the time t
stay fp32 (the solver integrates in fp32, only the velocity is evaluated in bf16). Autocast's
weight cache is disabled: it would keep a bf16 copy of every weight for as long as the region
lasts (half the fp32 weights again: 22 GiB for the paper-size model); casting each weight when
it is used costs one read of the weights per forward, little beside the forward's FLOPs. On CUDA
'bf16' also lets the fp32 matmuls and convolutions that autocast leaves in fp32 use TF32.
'fp32' is exact fp32, TF32 off (cuDNN's convolutions included, which PyTorch lets use TF32 by
default): the reference the bf16 path is tested against (tests/pipeline/test_inference_precision.py).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch

from bench.config.sample import PRECISIONS  # sample.precision
from bench.errors import BenchError


def check_precision(precision: str, setting: str = "sample.precision") -> None:
    """A one-line error unless `precision` is one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise BenchError(
            f"{setting}={precision!r}: use one of {', '.join(PRECISIONS)} "
            "('bf16': autocast on the GPU, ~10x faster; 'fp32': exact)"
        )


def device_type(device) -> str:
    """'cuda' or 'cpu' (autocast's device type) of a device, a device name or a tensor."""
    if isinstance(device, torch.Tensor):
        return device.device.type
    return torch.device(device).type


def forward_precision(precision: str, device):
    """The context one forward runs in: bf16 autocast (weight cache off) on `device`'s type, or nothing."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type(device), dtype=torch.bfloat16, cache_enabled=False)


@contextmanager
def tf32(enabled: bool):
    """CUDA fp32 matmuls and convolutions in TF32 (`enabled`) or in full fp32 (not) while the block
    runs, restored after. (PyTorch's own default lets cuDNN convolutions use TF32 and matmuls not.)

    Set through `allow_tf32`: torch 2.13 reads it back either way, while after a `fp32_precision =
    'tf32'` a read of `allow_tf32` (accelerate's, say) raises on "mixed legacy and new APIs".
    A no-op when CUDA is not available.
    """
    if not torch.cuda.is_available():
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.allow_tf32, cudnn.allow_tf32)
    matmul.allow_tf32 = cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


def inference_scope(precision: str):
    """The context a whole inference stage runs in: on CUDA, TF32 on under 'bf16', off under 'fp32'."""
    check_precision(precision)
    return tf32(precision == "bf16")
