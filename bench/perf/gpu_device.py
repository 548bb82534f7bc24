"""The device the GPU check measures on, its clock and its memory counters.

CUDA when there is one, else the CPU (the check's dry run). On CUDA the clock is read after
`torch.cuda.synchronize()`, so it times finished work, and memory is PyTorch's caching allocator's
own count (`torch.cuda.memory_allocated` / `max_memory_allocated`: bytes held by live tensors, what
a training step's estimate predicts; `max_memory_reserved` adds the allocator's cached blocks). On
the CPU there is no per-tensor counter: memory readings are None, never a guess.
"""

from __future__ import annotations

import time

import torch

GIB = 2**30


def device() -> torch.device:
    """CUDA device 0 when available, else the CPU."""
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def sync() -> None:
    """Wait for queued device work, so the clock reads finished work."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def clock() -> float:
    """Seconds on the monotonic clock, after the device has finished its queued work."""
    sync()
    return time.perf_counter()


def reset_peak() -> None:
    """Start a new peak-memory window (CUDA only)."""
    if torch.cuda.is_available():
        sync()
        torch.cuda.reset_peak_memory_stats()


def allocated_gib() -> float | None:
    """GiB held by live tensors now (CUDA), None on the CPU."""
    return torch.cuda.memory_allocated() / GIB if torch.cuda.is_available() else None


def peak_gib() -> float | None:
    """Peak GiB held by live tensors since `reset_peak` (CUDA), None on the CPU."""
    if not torch.cuda.is_available():
        return None
    sync()
    return torch.cuda.max_memory_allocated() / GIB


def peak_reserved_gib() -> float | None:
    """Peak GiB the caching allocator reserved since `reset_peak` (CUDA), None on the CPU."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_reserved() / GIB


def name() -> str | None:
    """The GPU's name, None on the CPU."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def release() -> None:
    """Return cached device memory between measurements, so one part's cache does not count in
    the next one's reserved peak."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
