"""CBFM: the class-balancing regulariser of CBDM (Qin et al., CVPR 2023) ported to velocities.

Besides the flow-matching regression, each conditional sample's velocity is pulled toward the
velocity the model predicts at the same (x_t, t) for a label y' drawn from a target class prior,
and vice versa with a quarter weight (the "commitment" term). This shares what the model learns
for frequent classes with rare ones. Labels are dropped with a small probability so that the
model also learns the unconditional velocity that classifier-free guidance needs.
"""

from __future__ import annotations

import torch

from bench.config.checks import is_real, require
from bench.errors import BenchError
from bench.method import Condition, Method, TrainBatch
from bench.prior import Prior
from bench.registry import register_method
from bench.runtime.transfer import to_device

TARGET_PRIORS = ("empirical", "uniform")
WEIGHTS = ("1-t", "constant", "eps")
COMMITMENT = 0.25  # CBDM's weight on the term that moves v(x_t, y') toward v(x_t, y)


@register_method("cbfm")
class ClassBalancedFM(Method):
    """Vanilla FM plus CBDM's class-balancing regulariser and label dropout."""

    def __init__(
        self,
        tau: float = 0.03,
        label_dropout: float = 0.1,
        target_prior: str = "empirical",
        weight: str = "eps",
    ):
        super().__init__()
        require(
            [
                (is_real(tau) and tau >= 0, f"cbfm.tau must be >= 0, got {tau!r}"),
                (
                    is_real(label_dropout) and 0 <= label_dropout < 1,
                    f"cbfm.label_dropout must be in [0, 1), got {label_dropout!r}",
                ),
                (
                    target_prior in TARGET_PRIORS,
                    f"cbfm.target_prior must be one of {TARGET_PRIORS}, got {target_prior!r}",
                ),
                (weight in WEIGHTS, f"cbfm.weight must be one of {WEIGHTS}, got {weight!r}"),
            ]
        )
        self.tau, self.label_dropout = float(tau), float(label_dropout)
        self.target_prior, self.weight = target_prior, weight

    def fit_prior(self, latents: torch.Tensor, labels: torch.Tensor, n_classes: int, seed: int):
        """The empirical class prior counts / n of the training labels."""
        counts = torch.bincount(labels, minlength=n_classes).double()
        return Prior(
            tensors={"class_prior": (counts / counts.sum()).float()},
            info={"class_counts": counts.long().tolist()},
        )

    def balancing_prior(self) -> torch.Tensor:
        """The class probabilities y' is drawn from: empirical or uniform."""
        if self.target_prior == "uniform":
            return torch.full((self.n_classes,), 1.0 / self.n_classes)
        if self.prior is None:
            raise BenchError("cbfm has no fitted prior; call fit_prior and setup before training")
        return self.prior.tensors["class_prior"]

    def _prior_on_cpu(self) -> torch.Tensor:
        """`balancing_prior` on the CPU, where y' is drawn: read from the device once per prior, not
        at every training step (each read waits for the device)."""
        probs = self.balancing_prior()
        if getattr(self, "_cpu_prior", (None,))[0] is not probs:
            self._cpu_prior = (probs, probs.detach().cpu())
        return self._cpu_prior[1]

    def time_weight(self, t: torch.Tensor) -> torch.Tensor:
        """w(t): CBDM weights toward noise, which is t = 0 in our convention.

        "eps" is CBDM's noise-space regulariser rewritten exactly in velocities: the implied noise
        prediction is x_t - t v, so ||eps(y) - eps(y')||^2 = t^2 ||v(y) - v(y')||^2, giving
        w(t) = (1 - t) t^2. It vanishes at pure noise, where velocities of different classes
        differ most (they point at different class means) and noise predictions do not.
        """
        if self.weight == "1-t":
            return 1 - t
        if self.weight == "eps":
            return (1 - t) * t.pow(2)
        return torch.ones_like(t)

    def loss(self, backbone, batch: TrainBatch) -> torch.Tensor:
        """FM regression plus tau * w(t) * (balancing + 1/4 commitment) on conditional samples."""
        n, device = len(batch.x1), batch.x1.device
        # Draw order is fixed (dropout, then y') so a seeded generator reproduces a run. Both are
        # drawn on the CPU and copied without waiting for the device (bench.runtime.transfer).
        keep = to_device(torch.rand(n, generator=batch.generator) >= self.label_dropout, device)
        y_bal = to_device(sample_categorical(self._prior_on_cpu(), n, batch.generator), device)
        x0 = self.sample_source(batch.cond, batch.eps.to(batch.x1))
        path = self.path.sample(x0, batch.x1, batch.t.to(batch.x1))
        label = torch.where(keep, batch.cond.label, torch.full_like(batch.cond.label, -1))
        v = backbone(path.x_t, path.t, self.tokens(Condition(label, batch.cond.subclass)).to(device))
        v_bal = backbone(path.x_t, path.t, self.tokens(Condition(y_bal)).to(device))
        fm = (v - path.u).pow(2).mean()
        balance = sample_mse(v, v_bal.detach()) + COMMITMENT * sample_mse(v.detach(), v_bal)
        return fm + self.tau * (self.time_weight(path.t) * keep * balance).mean()

    def describe(self) -> dict:
        """Name and regulariser settings."""
        return {
            **super().describe(),
            "tau": self.tau,
            "label_dropout": self.label_dropout,
            "target_prior": self.target_prior,
            "weight": self.weight,
        }


def sample_categorical(probs: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n class indices drawn from `probs` by inverting the CDF at U(0, 1) draws (on the CPU)."""
    cdf = torch.cumsum(probs.detach().double().cpu(), 0)
    u = torch.rand(n, generator=generator, dtype=torch.float64) * cdf[-1]
    # right=True skips zero-probability classes; the clamp guards u landing on cdf[-1].
    return torch.searchsorted(cdf, u, right=True).clamp(max=len(probs) - 1)


def sample_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared difference over the latent elements, shape (B,)."""
    return (a - b).pow(2).reshape(len(a), -1).mean(1)
