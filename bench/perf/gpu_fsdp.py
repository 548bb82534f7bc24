"""The GPU check's 1-process FSDP run: bench's sharding on a single-rank process group.

bench.pipeline.sharding (FSDP2 units per FLUX block, bf16 gathers over fp32 master shards) is what
`train.sharding='fsdp'` trains with on several GPUs. On one GPU the trainer has nothing to shard
and trains unsharded, so this part starts torch.distributed itself (a one-rank NCCL group; gloo on
the CPU) and steps the sharded model with the trainer's recipe (bf16 autocast per micro-batch,
summed micro-batch gradients, clipping, AdamW): the NCCL path, the FSDP hooks and the final gather
all run on the GPU, which CI (gloo on CPUs) cannot show. Measured: time to shard, per-step time,
peak memory vs `bench.pipeline.footprint.estimate(..., sharding='fsdp')` on one process, and the
time and peak of gathering the full weights into the plain backbone at the end of training.
"""

from __future__ import annotations

import contextlib
import math
import socket
from pathlib import Path

import torch

from bench.perf import gpu_device as dev
from bench.perf.case import median
from bench.perf.gpu_parts import PRECISION, flux_backbone, fm_method, footprint_of, footprint_terms, row
from bench.perf.gpu_sizes import N_CLASSES, Sizes


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now (the group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def single_rank_group(device: torch.device):
    """torch.distributed initialised with one rank (NCCL on CUDA, gloo on the CPU), destroyed after.
    Refuses to run inside a process that already has a group (it would not be this part's)."""
    import torch.distributed as dist

    if dist.is_initialized():
        raise RuntimeError(
            "torch.distributed is already initialised: the FSDP part needs its own one-rank group"
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        yield backend
    finally:
        dist.destroy_process_group()


def sharded_step(model, optimizer, method, latents, labels, sz: Sizes, generator) -> float:
    """One optimiser step over `micro_batches` micro-batches of `fsdp_micro_batch` rows, as the
    trainer takes it; the mean loss."""
    from bench.method import TrainBatch

    device, m, b = dev.device(), sz.micro_batches, sz.fsdp_micro_batch
    rows = torch.randint(0, len(latents), (m * b,), generator=generator)
    eps = torch.randn((m * b, *latents.shape[1:]), generator=generator)
    t = method.sample_time(m * b, generator)
    total = 0.0
    for k in range(m):
        part = rows[k * b : (k + 1) * b]
        x1 = latents[part].to(device)
        cond = method.training_condition(labels[part], part).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = method.loss(
                model,
                TrainBatch(
                    x1=x1,
                    cond=cond,
                    eps=eps[k * b : (k + 1) * b],
                    t=t[k * b : (k + 1) * b],
                    generator=generator,
                ),
            )
        (loss / m).backward()
        total += float(loss.detach())
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total / m


def fsdp(sz: Sizes, workdir: Path) -> dict:
    """Shard the preset backbone over a one-rank group, train `fsdp_steps` steps, gather it back."""
    from bench.pipeline import sharding

    device, m = dev.device(), sz.micro_batches
    batch = sz.fsdp_micro_batch * m
    fp = footprint_of(sz, batch, m, "fsdp")
    method = fm_method()
    g = torch.Generator().manual_seed(0)
    latents = torch.randn((2 * batch, *sz.latent_shape), generator=g)
    labels = torch.randint(0, N_CLASSES, (len(latents),), generator=g)
    with single_rank_group(device) as backend:
        backbone = flux_backbone(
            sz, method, "cpu"
        )  # built on the CPU, as a cell's backbone is before sharding
        dev.reset_peak()
        t0 = dev.clock()
        model = sharding.shard(backbone, device, PRECISION)
        shard_s = dev.clock() - t0
        # as the trainer builds it (bench.pipeline.trainer._adamw): fused on a GPU, the footprint's assumption
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=1e-4, fused=True if device.type == "cuda" else None
        )
        step_s, losses = [], []
        for _ in range(sz.fsdp_steps):
            t0 = dev.clock()
            losses.append(sharded_step(model, optimizer, method, latents, labels, sz, g))
            step_s.append(dev.clock() - t0)
        peak = dev.peak_gib()
        dev.reset_peak()
        t0 = dev.clock()
        sharding.gather_into(model, backbone)
        gather_s, gather_peak = dev.clock() - t0, dev.peak_gib()
    measured = {
        "shard_s": shard_s,
        "step_s": step_s,
        "steady_step_s": median(step_s[1:] or step_s),
        "peak_gib": peak,
        "gather_s": gather_s,
        "gather_peak_gib": gather_peak,
        "gathered_on": str(next(backbone.parameters()).device),
        "gathered_finite": all(bool(torch.isfinite(p).all()) for p in backbone.parameters()),
        "losses": losses,
        "finite": all(map(math.isfinite, losses)),
    }
    compare = [
        row(
            "1-process FSDP step peak memory",
            "GiB",
            peak,
            fp.total_gib,
            "footprint total_gib (sharding='fsdp', 1 process)",
        )
    ]
    return {
        "measured": measured,
        "estimated": footprint_terms(fp),
        "compare": compare,
        "details": {
            "backend": backend,
            "world_size": 1,
            "micro_batch": sz.fsdp_micro_batch,
            "micro_batches": m,
            "steps": sz.fsdp_steps,
            "sharding": "bench.pipeline.sharding.shard (FSDP2, bf16 gathers, "
            "fp32 reduce), stepped by this part (the trainer does not shard one process)",
            "gather": "bench.pipeline.sharding.gather_into (the plain backbone, on the CPU) at the "
            "end of training",
        },
    }
