"""Fixed-step ODE samplers and seeded generation of a synthetic set.

Each synthetic sample's noise comes from its own generator seeded by (cell seed, class, index),
so the synthetic set is the same whatever the batch size or the number of processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import gin
import numpy as np
import torch

from bench.runtime import progress
from bench.checks import is_int, is_real
from bench.errors import BenchError

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Trace = Callable[[torch.Tensor], None]  # receives every solver state x_t, t = 0 first, t = 1 last


@gin.configurable("sample")
@dataclass
class SampleConfig:
    """How synthetic samples are drawn."""

    solver: str = "euler"  # "euler" (1 NFE per step) or "heun" (2 NFE per step)
    nfe: int = 32  # number of function evaluations of the velocity field
    # None: as many as the held-out split has of each class; "targets": the augmentation targets
    # (bench.data.targets: only ULT/LT/MT classes); an int: that many for every class
    n_per_class: Optional[Union[int, str]] = None
    batch_size: int = 1024
    guidance_scale: float = 1.0  # classifier-free guidance; 1.0 = plain conditional sampling
    # also sample the untrained backbone, as a sanity floor (`@init` metrics); opt-in: it costs
    # as much as the real synthetic set. The source-only reference (`@source`) is always scored.
    init_reference: bool = False
    # store the whole ODE path of the first `keep_paths` samples of each class (for trajectory
    # figures of low-dimensional data): every solver state from t = 0 to t = 1
    keep_paths: int = 0

    def __post_init__(self):
        if not is_int(self.nfe) or self.nfe < 1:
            raise BenchError(f"sample.nfe={self.nfe!r}: use an integer >= 1 (velocity evaluations per sample)")
        if self.solver == "heun" and self.nfe % 2:
            raise BenchError(f"sample.nfe={self.nfe}: the heun solver needs an even number of evaluations")
        if not is_int(self.batch_size) or self.batch_size < 1:
            raise BenchError(f"sample.batch_size={self.batch_size!r}: use an integer >= 1")
        if not is_real(self.guidance_scale):
            raise BenchError(f"sample.guidance_scale={self.guidance_scale!r}: use a finite number (1.0 = no guidance)")
        if not is_int(self.keep_paths) or self.keep_paths < 0:
            raise BenchError(f"sample.keep_paths={self.keep_paths!r}: use a non-negative integer (the number "
                             "of samples per class whose ODE path is stored; 0 stores none)")


class ConditionedVelocity:
    """The one wrapper through which solvers call a backbone: v(x, t) for fixed tokens."""

    def __init__(self, backbone, tokens: torch.Tensor, guidance_scale: float = 1.0,
                 tick: Optional[Callable[[], object]] = None):
        self.backbone, self.tokens, self.guidance_scale = backbone, tokens, guidance_scale
        self.tick = tick  # called once per evaluation (a progress bar's update)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t.expand(x.shape[0])
        v = self.backbone(x, tt, self.tokens)
        if self.tick is not None:
            self.tick()
        if self.guidance_scale == 1.0:
            return v
        v_null = self.backbone(x, tt, torch.zeros_like(self.tokens))
        return v_null + self.guidance_scale * (v - v_null)


def euler(velocity: Velocity, x0: torch.Tensor, nfe: int, trace: Optional[Trace] = None) -> torch.Tensor:
    """Explicit Euler from t = 0 to t = 1 in `nfe` equal steps.

    `trace`, if given, is called with every state: x0 first, then the state after each step.
    """
    x, h = x0, 1.0 / nfe
    _record(trace, x)
    for i in range(nfe):
        x = x + h * velocity(x, torch.tensor([i * h], device=x.device, dtype=x.dtype))
        _record(trace, x)
    return x


def heun(velocity: Velocity, x0: torch.Tensor, nfe: int, trace: Optional[Trace] = None) -> torch.Tensor:
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


def _record(trace: Optional[Trace], x: torch.Tensor) -> None:
    """Hand one solver state to the trace callback, if any."""
    if trace is not None:
        trace(x)


SOLVERS = {"euler": euler, "heun": heun}


def get_solver(name: str):
    """The solver function called `name`, or a clear error."""
    if name not in SOLVERS:
        raise BenchError(f"unknown solver {name!r} (known: {', '.join(SOLVERS)}); set sample.solver")
    return SOLVERS[name]


def check_n_per_class(value) -> None:
    """A one-line error unless `value` is None, "targets" or a non-negative integer."""
    ok = value is None or value == "targets" or (is_int(value) and value >= 0)
    if not ok:
        raise BenchError(f"sample.n_per_class={value!r}: use None (held-out counts), 'targets' "
                         "(augmentation targets) or a non-negative integer")


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
def generate(method, backbone, n_per_class: Sequence[int], latent_shape, seed: int,
             cfg: SampleConfig, device="cpu", rank: int = 0, world: int = 1) -> dict:
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
    starts = list(range(0, len(labels), cfg.batch_size))
    with progress.bar(stage="sample", total=len(starts[rank::world]) * cfg.nfe, unit="eval") as bar:
        mine = {s: _batch(method, backbone, labels, index, s, latent_shape, seed, cfg, device, bar.update)
                for s in starts[rank::world]}
    if world > 1:
        import torch.distributed as dist

        shards: list = [None] * world
        dist.all_gather_object(shards, mine)
        mine = {s: b for shard in shards for s, b in shard.items()}
    batches = [mine[s] for s in starts]
    out = {"z": torch.cat([b["z"] for b in batches]) if batches else torch.empty(0, *latent_shape), "y": labels}
    for key in ("subclass", "paths"):
        parts = [b[key] for b in batches if key in b]
        if parts:
            out[key] = torch.cat(parts)
    if "paths" in out:
        out["paths_y"] = labels[index < cfg.keep_paths]
    return out


@torch.no_grad()
def draw_sources(method, n_per_class: Sequence[int], latent_shape, seed: int, cfg: SampleConfig,
                 device="cpu") -> dict:
    """The source draws x0 that `generate` would start its ODE from, with no network: {"z", "y", "subclass"?}.

    Same plan, per-sample noise and conditions as `generate` with the same arguments, so the
    first rows are exactly the x0 of a smaller synthetic set of the same cell; the source-only
    reference (`@source` metrics) scores them to show what the learned flow adds.
    """
    labels, index = plan(n_per_class)
    method.to(device)
    parts = [_source_batch(method, labels[s : s + cfg.batch_size], index[s : s + cfg.batch_size],
                           latent_shape, seed, device) for s in range(0, len(labels), cfg.batch_size)]
    out = {"z": torch.cat([x0.float().cpu() for _, x0 in parts]) if parts else torch.empty(0, *latent_shape),
           "y": labels}
    subclasses = [cond.subclass.cpu() for cond, _ in parts if cond.subclass is not None]
    if subclasses:
        out["subclass"] = torch.cat(subclasses)
    return out


def _source_batch(method, y: torch.Tensor, i: torch.Tensor, latent_shape, seed: int, device) -> tuple:
    """(condition, x0) of samples (class y, per-class index i) from their per-sample seeded noise."""
    eps, u = sample_noise(seed, y.tolist(), i.tolist(), latent_shape)
    cond = method.sampling_condition(y, u)
    return cond, method.sample_source(cond.to(device), eps.to(device))


def _batch(method, backbone, labels, index, start: int, latent_shape, seed: int, cfg: SampleConfig,
           device, tick: Optional[Callable[[], object]] = None) -> dict:
    """One batch of the plan, from its per-sample seeded noise: {"z", "subclass"?, "paths"?}."""
    y, i = labels[start : start + cfg.batch_size], index[start : start + cfg.batch_size]
    cond, x0 = _source_batch(method, y, i, latent_shape, seed, device)
    velocity = ConditionedVelocity(backbone, method.tokens(cond).to(device), cfg.guidance_scale, tick)
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
