"""reweight: cross-entropy with inverse-frequency class weights n / (K n_c).

LongTailCXR's `--rw_method sklearn` (scikit-learn's 'balanced' class weights) with the plain
cross-entropy loss; PyTorch's weighted mean (the batch's weighted losses over its weights), as there.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from bench.registry import register_remedy
from bench.remedy import Remedy, inverse_frequency_weights


@register_remedy("reweight")
class Reweight(Remedy):
    """Each class's loss weighted by n / (K n_c): rare classes count as much as common ones."""

    def setup(self, counts) -> None:
        super().setup(counts)
        self._weights = torch.as_tensor(inverse_frequency_weights(self.counts), dtype=torch.float32)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, epoch: int) -> torch.Tensor:
        return F.cross_entropy(logits, target, weight=self._weights.to(logits.device))
