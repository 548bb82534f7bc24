"""CPD: flow matching from a class-conditional Gaussian source centred on the class mean.

Issachar et al. (TMLR 2025): x0 = m_c + sigma * eps, with m_c the mean training latent of class c,
so every class's flow starts near its own data and travels a shorter, less crossing path.
Conditioning and loss are vanilla flow matching.
"""

from __future__ import annotations

import torch

from bench.config.checks import is_real
from bench.errors import BenchError
from bench.method import Condition, Method
from bench.prior import Prior, class_means
from bench.registry import register_method


@register_method("cpd")
class ConditionalPrior(Method):
    """Vanilla FM with the source N(m_c, sigma^2 I) of the sample's class c."""

    def __init__(self, sigma: float = 0.7):
        super().__init__()
        if not (is_real(sigma) and sigma > 0):
            raise BenchError(f"cpd.sigma must be > 0, got {sigma!r}; set e.g. cpd.sigma = 0.7")
        self.sigma = float(sigma)

    def fit_prior(self, latents: torch.Tensor, labels: torch.Tensor, n_classes: int, seed: int):
        """The class means m_c of the training latents (deterministic, so `seed` is unused)."""
        return Prior(
            tensors={"class_mean": class_means(latents, labels, n_classes)}, info={"sigma": self.sigma}
        )

    def sample_source(self, cond: Condition, eps: torch.Tensor) -> torch.Tensor:
        """x0 = m_y + sigma * eps for each sample's class y."""
        if self.prior is None:
            raise BenchError("cpd has no fitted prior; call fit_prior and setup before training")
        means = self.prior.tensors["class_mean"].to(eps)
        return means[cond.label.to(eps.device)] + self.sigma * eps

    def describe(self) -> dict:
        """Name and source spread."""
        return {**super().describe(), "sigma": self.sigma}
