"""Fixed-step ODE samplers and seeded generation of a synthetic set.

Each synthetic sample's noise comes from its own generator seeded by (cell seed, class, index),
so the synthetic set is the same whatever the batch size or the number of processes (under
`sample.precision='bf16'`, to bf16 rounding: GPU kernels may round differently at another batch).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch

from bench.config.sample import SampleConfig
from bench.errors import BenchError
from bench.pipeline import inference_memory as memory
from bench.pipeline.inference_precision import forward_precision, inference_scope
from bench.runtime import progress

log = logging.getLogger(__name__)
Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Trace = Callable[[torch.Tensor], None]  # receives every solver state x_t, t = 0 first, t = 1 last


class ConditionedVelocity:
    """The one wrapper through which solvers call a backbone: v(x, t) for fixed tokens.

    Under `precision='bf16'` each backbone call runs under bf16 autocast and its velocity comes
    back as fp32, so the solver's state stays fp32 whatever the forward's precision.
    """

    def __init__(
        self,
        backbone,
        tokens: torch.Tensor,
        guidance_scale: float = 1.0,
        tick: Callable[[], object] | None = None,
        precision: str = "fp32",
    ):
        self.backbone, self.tokens, self.guidance_scale = backbone, tokens, guidance_scale
        self.tick = tick  # called once per evaluation (a progress bar's update)
        self.precision = precision

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t.expand(x.shape[0])
        v = self._forward(x, tt, self.tokens)
        if self.tick is not None:
            self.tick()
        if self.guidance_scale == 1.0:
            return v
        v_null = self._forward(x, tt, torch.zeros_like(self.tokens))
        return v_null + self.guidance_scale * (v - v_null)

    def _forward(self, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        with forward_precision(self.precision, x.device):
            v = self.backbone(x, t, tokens)
        return v.float()


def euler(velocity: Velocity, x0: torch.Tensor, nfe: int, trace: Trace | None = None) -> torch.Tensor:
    """Explicit Euler from t = 0 to t = 1 in `nfe` equal steps.

    `trace`, if given, is called with every state: x0 first, then the state after each step.
    """
    x, h = x0, 1.0 / nfe
    _record(trace, x)
    for i in range(nfe):
        x = x + h * velocity(x, torch.tensor([i * h], device=x.device, dtype=x.dtype))
        _record(trace, x)
    return x


def heun(velocity: Velocity, x0: torch.Tensor, nfe: int, trace: Trace | None = None) -> torch.Tensor:
    """Heun's second-order method (trapezoidal predictor-corrector), 2 NFE per step.

    `trace` as for `euler` (nfe / 2 + 1 states: the predictor states are not part of the path).
    """
    if nfe % 2:
        raise BenchError(f"sample.nfe={nfe}: the heun solver needs an even number of evaluations")
    x, steps = x0, nfe // 2
    h = 1.0 / steps
    _record(trace, x)
    for i in range(steps):
        t0 = torch.tensor([i * h], device=x.device, dtype=x.dtype)
        v0 = velocity(x, t0)
        v1 = velocity(x + h * v0, t0 + h)
        x = x + 0.5 * h * (v0 + v1)
        _record(trace, x)
    return x


def _record(trace: Trace | None, x: torch.Tensor) -> None:
    """Hand one solver state to the trace callback, if any."""
    if trace is not None:
        trace(x)


SOLVERS = {"euler": euler, "heun": heun}


def get_solver(name: str):
    """The solver function called `name`, or a clear error."""
    if name not in SOLVERS:
        raise BenchError(f"unknown solver {name!r} (known: {', '.join(SOLVERS)}); set sample.solver")
    return SOLVERS[name]


def sample_seed(seed: int, label: int, index: int) -> int:
    """A 63-bit seed for sample `index` of class `label` in a cell with `seed`."""
    state = np.random.SeedSequence([seed, label, index]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def sample_noise(seed: int, labels: Sequence[int], indices: Sequence[int], shape) -> tuple:
    """Per-sample standard normal eps and uniform u, each from its own seeded generator."""
    eps, u = [], []
    g = torch.Generator()
    for c, i in zip(labels, indices):
        g.manual_seed(sample_seed(seed, int(c), int(i)))
        eps.append(torch.randn(tuple(shape), generator=g))
        u.append(torch.rand((), generator=g))
    return torch.stack(eps), torch.stack(u)


def plan(n_per_class: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels, per-class index) of every sample to draw, class by class."""
    labels = torch.cat([torch.full((int(n),), c, dtype=torch.long) for c, n in enumerate(n_per_class)])
    index = torch.cat([torch.arange(int(n)) for n in n_per_class])
    return labels, index


@torch.no_grad()
def generate(
    method,
    backbone,
    n_per_class: Sequence[int],
    latent_shape,
    seed: int,
    cfg: SampleConfig,
    device="cpu",
    rank: int = 0,
    world: int = 1,
) -> dict:
    """Draw `n_per_class[c]` latents of each class c; returns {"z", "y", "subclass"?, "paths"?, "paths_y"?}.

    With cfg.keep_paths > 0, `paths` (n, steps + 1, *latent_shape) holds the whole ODE path of the
    first keep_paths samples of each class and `paths_y` their labels; tracing copies states only,
    so `z` is the same with or without it. With `world` > 1 processes (torch.distributed
    initialised), process `rank` integrates every world-th batch and the batches are gathered on
    every rank: batches are the same as in one process, so the set is bit-identical to it.
    """
    labels, index = plan(n_per_class)
    backbone.eval()
    method.to(device)
    batch = sampling_batch(backbone, cfg, device, len(labels), world)
    if cfg.batch_size is None:  # chosen from each process's free memory: all must cut alike
        batch = _agreed(batch, world)
    starts = list(range(0, len(labels), batch))
    with (
        progress.bar(stage="sample", total=len(starts[rank::world]) * cfg.nfe, unit="eval") as bar,
        inference_scope(cfg.precision),
    ):
        mine = {
            s: _batch(method, backbone, labels, index, s, batch, latent_shape, seed, cfg, device, bar.update)
            for s in starts[rank::world]
        }
    if world > 1:
        import torch.distributed as dist

        shards: list = [None] * world
        dist.all_gather_object(shards, mine)
        mine = {s: b for shard in shards for s, b in shard.items()}
    batches = [mine[s] for s in starts]
    out = {
        "z": torch.cat([b["z"] for b in batches]) if batches else torch.empty(0, *latent_shape),
        "y": labels,
    }
    for key in ("subclass", "paths"):
        parts = [b[key] for b in batches if key in b]
        if parts:
            out[key] = torch.cat(parts)
    if "paths" in out:
        out["paths_y"] = labels[index < cfg.keep_paths]
    return out


@torch.no_grad()
def draw_sources(
    method, n_per_class: Sequence[int], latent_shape, seed: int, cfg: SampleConfig, device="cpu"
) -> dict:
    """The source draws x0 that `generate` would start its ODE from, with no network: {"z", "y", "subclass"?}.

    Same plan, per-sample noise and conditions as `generate` with the same arguments, so the
    first rows are exactly the x0 of a smaller synthetic set of the same cell; the source-only
    reference (`@source` metrics) scores them to show what the learned flow adds.
    """
    labels, index = plan(n_per_class)
    method.to(device)
    batch = cfg.batch_size or AUTO_CPU_BATCH  # no network runs: any batch fits
    parts = [
        _source_batch(method, labels[s : s + batch], index[s : s + batch], latent_shape, seed, device)
        for s in range(0, len(labels), batch)
    ]
    out = {
        "z": torch.cat([x0.float().cpu() for _, x0 in parts]) if parts else torch.empty(0, *latent_shape),
        "y": labels,
    }
    subclasses = [cond.subclass.cpu() for cond, _ in parts if cond.subclass is not None]
    if subclasses:
        out["subclass"] = torch.cat(subclasses)
    return out


def _source_batch(method, y: torch.Tensor, i: torch.Tensor, latent_shape, seed: int, device) -> tuple:
    """(condition, x0) of samples (class y, per-class index i) from their per-sample seeded noise."""
    eps, u = sample_noise(seed, y.tolist(), i.tolist(), latent_shape)
    cond = method.sampling_condition(y, u)
    return cond, method.sample_source(cond.to(device), eps.to(device))


def _batch(
    method,
    backbone,
    labels,
    index,
    start: int,
    batch: int,
    latent_shape,
    seed: int,
    cfg: SampleConfig,
    device,
    tick: Callable[[], object] | None = None,
) -> dict:
    """One batch of the plan, from its per-sample seeded noise: {"z", "subclass"?, "paths"?}."""
    y, i = labels[start : start + batch], index[start : start + batch]
    cond, x0 = _source_batch(method, y, i, latent_shape, seed, device)
    velocity = ConditionedVelocity(
        backbone, method.tokens(cond).to(device), cfg.guidance_scale, tick, cfg.precision
    )
    keep, states = i < cfg.keep_paths, []
    trace = _path_recorder(keep.to(x0.device), states) if bool(keep.any()) else None
    out = {"z": get_solver(cfg.solver)(velocity, x0, cfg.nfe, trace=trace).float().cpu()}
    if states:
        out["paths"] = torch.stack(states, dim=1)
    if cond.subclass is not None:
        out["subclass"] = cond.subclass.cpu()
    return out


def _path_recorder(rows: torch.Tensor, states: list) -> Trace:
    """A trace that appends the states of the selected `rows` (float32, on the CPU) to `states`."""
    return lambda x: states.append(x[rows].float().cpu())


def _agreed(batch: int, world: int) -> int:
    """The smallest of every process's batch: each may see other free memory, and all must cut the
    plan into the same batches (a batch is integrated by one rank and gathered by all)."""
    if world <= 1:
        return batch
    import torch.distributed as dist

    batches: list = [None] * world
    dist.all_gather_object(batches, batch)
    return min(batches)


AUTO_CPU_BATCH = 1024  # sample.batch_size=None off CUDA: a CPU gains nothing from a larger batch


def sampling_batch(backbone, cfg: SampleConfig, device, n: int, world: int = 1) -> int:
    """The batch `generate` integrates: `sample.batch_size`, or when it is None the largest
    batch whose traced peak (bench.pipeline.inference_memory) fits this CUDA device, at most each
    process's share of the `n` samples; AUTO_CPU_BATCH elsewhere."""
    if cfg.batch_size is not None:
        return cfg.batch_size
    share = max(1, -(-n // max(world, 1)))
    if torch.device(device).type != "cuda":
        return min(AUTO_CPU_BATCH, share)
    resident = sum(t.numel() * t.element_size() for t in [*backbone.parameters(), *backbone.buffers()])
    budget, peaks = memory.cuda_budget(device, resident), {}

    def peak(b: int) -> int:
        peaks[b] = sampling_peak_bytes(backbone, b, cfg.precision, cfg.solver, cfg.guidance_scale)
        return peaks[b]

    batch = memory.largest_batch(peak, budget, share)
    log.info(
        "sample.batch_size=None: batch %d (traced peak %.2f GiB, budget %.2f GiB)",
        batch,
        peaks.get(batch, 0) / memory.GIB,
        budget / memory.GIB,
    )
    return batch


# -- peak memory of sampling (traced by bench.pipeline.inference_memory) -------------------------
def sampling_peak_bytes(
    backbone,
    batch: int,
    precision: str = "fp32",
    solver: str = "euler",
    guidance_scale: float = 1.0,
    device: torch.device | None = None,
) -> int:
    """Peak bytes of one solver step of `backbone` on `batch` samples: the fp32 weights, the
    fp32 state, one step's velocity evaluations (2 for heun, 2 forwards each under guidance).

    `backbone` may be a real or a meta module: it is rebuilt from its `config()`.
    """
    kind, config = type(backbone), backbone.config()
    key = (
        "sampling",
        kind.__module__,
        kind.__qualname__,
        json.dumps(config, sort_keys=True, default=str),
        batch,
        precision,
        solver,
        guidance_scale,
        str(device or memory.trace_device()),
    )
    if key in memory.PEAKS:
        return memory.PEAKS[key]

    def run(model, dev):
        x0 = torch.empty((batch, *model.sample_shape), device=dev)
        tokens = torch.zeros((batch, model.n_tokens), dtype=torch.long, device=dev)
        velocity = ConditionedVelocity(model, tokens, guidance_scale, precision=precision)
        get_solver(solver)(velocity, x0, 2 if solver == "heun" else 1)

    def trace(dev):
        return memory.traced_peak(lambda: kind(**config).eval(), run, dev)

    memory.PEAKS[key] = trace(device) if device is not None else memory.with_cpu_fallback(trace)
    return memory.PEAKS[key]


def sampling_peak_gib(
    backbone, batch: int, precision: str = "fp32", solver: str = "euler", guidance_scale: float = 1.0
) -> float:
    """`sampling_peak_bytes` in GiB (for the run preview)."""
    return sampling_peak_bytes(backbone, batch, precision, solver, guidance_scale) / memory.GIB
