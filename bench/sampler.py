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

from bench.checks import is_int
from bench.errors import BenchError

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@gin.configurable("sample")
@dataclass
class SampleConfig:
    """How synthetic samples are drawn."""

    solver: str = "euler"  # "euler" (1 NFE per step) or "heun" (2 NFE per step)
    nfe: int = 32  # number of function evaluations of the velocity field
    # None: as many as the held-out split has of each class; "targets": the augmentation targets
    # (bench.targets: only ULT/LT/MT classes); an int: that many for every class
    n_per_class: Optional[Union[int, str]] = None
    batch_size: int = 1024
    guidance_scale: float = 1.0  # classifier-free guidance; 1.0 = plain conditional sampling
    init_reference: bool = True  # also sample the untrained backbone, as a reference


class ConditionedVelocity:
    """The one wrapper through which solvers call a backbone: v(x, t) for fixed tokens."""

    def __init__(self, backbone, tokens: torch.Tensor, guidance_scale: float = 1.0):
        self.backbone, self.tokens, self.guidance_scale = backbone, tokens, guidance_scale

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = t.expand(x.shape[0])
        v = self.backbone(x, tt, self.tokens)
        if self.guidance_scale == 1.0:
            return v
        v_null = self.backbone(x, tt, torch.zeros_like(self.tokens))
        return v_null + self.guidance_scale * (v - v_null)


def euler(velocity: Velocity, x0: torch.Tensor, nfe: int) -> torch.Tensor:
    """Explicit Euler from t = 0 to t = 1 in `nfe` equal steps."""
    x, h = x0, 1.0 / nfe
    for i in range(nfe):
        x = x + h * velocity(x, torch.tensor([i * h], device=x.device, dtype=x.dtype))
    return x


def heun(velocity: Velocity, x0: torch.Tensor, nfe: int) -> torch.Tensor:
    """Heun's second-order method (trapezoidal predictor-corrector), 2 NFE per step."""
    if nfe % 2:
        raise BenchError(f"sample.nfe={nfe}: the heun solver needs an even number of evaluations")
    x, steps = x0, nfe // 2
    h = 1.0 / steps
    for i in range(steps):
        t0 = torch.tensor([i * h], device=x.device, dtype=x.dtype)
        v0 = velocity(x, t0)
        v1 = velocity(x + h * v0, t0 + h)
        x = x + 0.5 * h * (v0 + v1)
    return x


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
             cfg: SampleConfig, device="cpu") -> dict:
    """Draw `n_per_class[c]` latents of each class c; returns {"z", "y", "subclass"?}."""
    solver = get_solver(cfg.solver)
    labels, index = plan(n_per_class)
    zs, subs = [], []
    backbone.eval()
    method.to(device)
    for start in range(0, len(labels), cfg.batch_size):
        y, i = labels[start : start + cfg.batch_size], index[start : start + cfg.batch_size]
        eps, u = sample_noise(seed, y.tolist(), i.tolist(), latent_shape)
        cond = method.sampling_condition(y, u)
        x0 = method.sample_source(cond.to(device), eps.to(device))
        velocity = ConditionedVelocity(backbone, method.tokens(cond).to(device), cfg.guidance_scale)
        zs.append(solver(velocity, x0, cfg.nfe).float().cpu())
        if cond.subclass is not None:
            subs.append(cond.subclass.cpu())
    out = {"z": torch.cat(zs) if zs else torch.empty(0, *latent_shape), "y": labels}
    if subs:
        out["subclass"] = torch.cat(subs)
    return out
