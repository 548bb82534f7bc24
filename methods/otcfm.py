"""OT-CFM: flow matching on a class-conditional minibatch optimal-transport coupling.

Tong et al. (TMLR 2024, "Improving and generalizing flow-based generative models with minibatch
optimal transport"): instead of pairing each data point x1 with an independent source draw x0,
every training batch re-pairs them by the optimal transport plan for the squared Euclidean cost,
so the straight conditional paths cross less and the learned flow is straighter. Here the pairing
is within each class of the batch (a class-conditional flow must map a class's source to that
class's data), the source is N(0, I) and the loss is vanilla flow matching on the re-paired batch.

Couplings (`otcfm.coupling`):

- 'exact': per class, the assignment problem on the squared Euclidean cost
  (scipy.optimize.linear_sum_assignment). With as many sources as data points and uniform weights
  the exact OT plan is a permutation, so every data point keeps its row and condition and gets one
  source draw. torchcfm (`ExactOptimalTransportConditionalFlowMatcher`, POT's `emd`) instead draws
  B pairs with replacement from the plan; using the permutation itself is that draw's expectation
  without its duplicates. Cost O(n_c^3) per class per batch on the CPU, after one device-to-host copy
  of the (B, B) cost matrix: the step waits there for the device (docs/methods.md).
- 'sinkhorn': the entropic plan (log-domain Sinkhorn, `otcfm.reg` on the cost divided by its largest
  within-class entry, as torchcfm's `normalize_cost`, `otcfm.sinkhorn_iters` fixed iterations), then
  each data point draws its source from its column of the plan (torchcfm samples pairs from the
  plan; drawing per data point keeps each x1 with its condition). Runs on the device with U(0, 1)
  draws from the batch's CPU generator: no host sync.

`otcfm.batch_size` is the OT minibatch: each training (micro-)batch is cut into consecutive chunks of
that many rows (its rows are drawn at random, so each chunk is a random minibatch) and each chunk
is coupled on its own; it bounds the exact solver's cost whatever train.batch_size is.

`fit_prior` records the coupling's transport geometry (path length ||x1 - x0||, alignment, radial
spread) on the training latents in random OT minibatches of `batch_size`, next to the independent N(0, I)
coupling with the same rows and noise, so the `geometry` evaluator reports it like optprior's.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from bench.config.checks import is_int, is_real, require
from bench.method import Method, TrainBatch
from bench.prior import Prior
from bench.priors.displacement import displacement_geometry
from bench.registry import register_method
from bench.runtime.transfer import to_device

COUPLINGS = ("exact", "sinkhorn")
GEOMETRY_ROWS = 4096  # training rows the recorded geometry uses at most (the geometry evaluator's default)
STATS = ("alignment", "radial_std", "radial_cv", "path_length")


@register_method("otcfm")
class OTConditionalFM(Method):
    """Vanilla FM whose batches pair data and N(0, I) draws by a class-wise minibatch OT plan."""

    def __init__(
        self,
        coupling: str = "exact",
        reg: float = 0.01,
        sinkhorn_iters: int = 200,
        batch_size: int = 256,
    ):
        super().__init__()
        require(
            [
                (coupling in COUPLINGS, f"otcfm.coupling must be one of {COUPLINGS}, got {coupling!r}"),
                (is_real(reg) and reg > 0, f"otcfm.reg must be > 0, got {reg!r}; set e.g. otcfm.reg = 0.01"),
                (
                    is_int(sinkhorn_iters) and sinkhorn_iters >= 1,
                    f"otcfm.sinkhorn_iters must be an integer >= 1, got {sinkhorn_iters!r}",
                ),
                (
                    is_int(batch_size) and batch_size >= 1,
                    f"otcfm.batch_size (the OT minibatch) must be an integer >= 1, got {batch_size!r}; e.g. 256",
                ),
            ]
        )
        self.coupling, self.reg = coupling, float(reg)
        self.sinkhorn_iters, self.batch_size = int(sinkhorn_iters), int(batch_size)

    # -- coupling -----------------------------------------------------------------------
    def pair(self, x0: torch.Tensor, x1: torch.Tensor, labels: torch.Tensor, generator=None) -> torch.Tensor:
        """For every data row j the index of the source row it is paired with: within its class and
        its OT minibatch (consecutive chunks of `batch_size` rows, each coupled on its own)."""
        chunks = [slice(s, s + self.batch_size) for s in range(0, len(x1), self.batch_size)]
        if self.coupling == "exact":
            costs = [squared_cost(x0[c], x1[c]) for c in chunks]  # queued on the device, then one wait
            src = [exact_pairing(cost, labels[c]) + c.start for cost, c in zip(costs, chunks)]
            return to_device(torch.cat(src), x1.device)
        u = to_device(torch.rand(len(x1), generator=generator, dtype=torch.float64), x1.device)
        plans = [
            sinkhorn_plan(squared_cost(x0[c], x1[c]), labels[c], self.reg, self.sinkhorn_iters)
            for c in chunks
        ]
        return torch.cat([sample_columns(plan, u[c]) + c.start for plan, c in zip(plans, chunks)])

    def loss(self, backbone, batch: TrainBatch) -> torch.Tensor:
        """The vanilla loss on the batch whose source draws are re-paired by the OT plan."""
        eps = batch.eps.to(batch.x1)
        x0 = self.sample_source(batch.cond, eps)
        src = self.pair(x0, batch.x1, batch.cond.label, batch.generator)
        return super().loss(backbone, replace(batch, eps=eps[src]))

    # -- offline stage: the coupling's geometry -----------------------------------------
    def fit_prior(self, latents: torch.Tensor, labels: torch.Tensor, n_classes: int, seed: int):
        """The transport geometry of this coupling ("optimised") and of the independent N(0, I)
        coupling ("standard") on at most GEOMETRY_ROWS training rows, in batches of `batch_size`."""
        generator = torch.Generator().manual_seed(seed)
        n = len(latents)
        rows = torch.randperm(n, generator=generator)[: min(n, GEOMETRY_ROWS)]
        size = min(self.batch_size, len(rows))
        rows = rows[: len(rows) // size * size]  # whole OT minibatches of random rows, as in training
        x1 = latents[rows].reshape(len(rows), -1).float()
        y = labels[rows].long()
        eps = torch.randn(x1.shape, generator=generator)
        paired = eps[self.pair(eps, x1, y, generator)]
        geometry = {
            stage: {k: v for k, v in displacement_geometry(x1 - x0, y).items() if k in STATS}
            for stage, x0 in (("optimised", paired), ("standard", eps))
        }
        return Prior(
            info={"geometry": geometry, "coupling": self.coupling, "batch_size": size, "rows": len(rows)}
        )

    def describe(self) -> dict:
        """Name and coupling settings."""
        return {
            **super().describe(),
            "coupling": self.coupling,
            "reg": self.reg,
            "sinkhorn_iters": self.sinkhorn_iters,
            "batch_size": self.batch_size,
        }


def squared_cost(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """(B, B) squared Euclidean distances ||x0_i - x1_j||^2 of the flattened rows, in float32
    (also under autocast)."""
    a, b = x0.reshape(len(x0), -1).float(), x1.reshape(len(x1), -1).float()
    with torch.autocast(a.device.type, enabled=False):  # mixed precision would round the costs
        return (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2 * a @ b.T).clamp(min=0)


def exact_pairing(cost: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per class, the source row of each data row under the optimal assignment for `cost` (B, B)
    (rows sources, columns data), as CPU int64. Copying the cost to the host waits for the device."""
    cost, labels = cost.double().cpu().numpy(), labels.cpu().numpy()
    src = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        sources, data = linear_sum_assignment(cost[np.ix_(members, members)])
        src[members[data]] = members[sources]
    return torch.from_numpy(src)


def sinkhorn_plan(cost: torch.Tensor, labels: torch.Tensor, reg: float, iters: int) -> torch.Tensor:
    """The entropic OT plan (B, B) for `cost` with uniform marginals and zero across classes
    (float64, on the cost's device), by log-domain Sinkhorn on the cost scaled by its largest
    within-class entry.

    Uniform marginals 1/B on a block-diagonal support are the classes' own problems side by side
    (each class holds as many sources as data points). The last update is the columns', so every
    data column sums to 1/B.
    """
    same = labels.reshape(-1, 1) == labels.reshape(1, -1)
    cost = cost.double()
    scale = torch.where(same, cost, torch.zeros_like(cost)).amax().clamp(min=1e-12)
    log_k = torch.where(same, -cost / (scale * reg), torch.full_like(cost, float("-inf")))
    log_m = -math.log(len(cost))
    f = torch.zeros(len(cost), dtype=torch.float64, device=cost.device)
    g = torch.zeros_like(f)
    for _ in range(iters):
        f = log_m - torch.logsumexp(log_k + g.unsqueeze(0), dim=1)
        g = log_m - torch.logsumexp(log_k + f.unsqueeze(1), dim=0)
    return torch.exp(f.unsqueeze(1) + log_k + g.unsqueeze(0))


def sample_columns(plan: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """For each column j a row i drawn with probability plan[i, j] / sum_i plan[i, j], by inverting
    the column's CDF at u_j in [0, 1); rows of zero mass are never drawn."""
    cdf = torch.cumsum(plan.T, dim=1)
    return (cdf <= (u * cdf[:, -1]).unsqueeze(1)).sum(1).clamp(max=plan.shape[0] - 1)
