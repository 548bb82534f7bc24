"""focal: the focal loss (Lin et al. 2017), -(1 - p_t)^gamma log p_t averaged over the batch.

LongTailCXR's `--loss focal` with its default gamma = 2 and no class weights (alpha None). At
gamma = 0 it is cross-entropy; larger gamma down-weights the examples the classifier already gets
right, which on long-tailed data are mostly the head classes'.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from bench.config.checks import is_real
from bench.errors import BenchError
from bench.registry import register_remedy
from bench.remedy import Remedy


@register_remedy("focal")
class Focal(Remedy):
    """Cross-entropy scaled by (1 - p_t)^gamma per example."""

    def __init__(self, gamma: float = 2.0):
        if not is_real(gamma) or gamma < 0:
            raise BenchError(f"focal.gamma={gamma!r}: use a number >= 0 (LongTailCXR: 2)")
        self.gamma = float(gamma)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, epoch: int) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
        return (-(1.0 - log_p.exp()).pow(self.gamma) * log_p).mean()
