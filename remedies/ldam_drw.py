"""ldam_drw: the LDAM loss with deferred re-weighting (Cao et al. 2019), as LongTailCXR runs it.

LDAM subtracts a class margin from the true class's logit before a scaled cross-entropy,
m_c = max_margin * n_c^(-1/4) / max_c' n_c'^(-1/4), loss = CE(scale * (z - m_y e_y), y), so rare
classes must win by more. Deferred re-weighting (DRW): for the first `drw_epoch` epochs the loss is
unweighted; from then on it is weighted by the class-balanced "effective number" weights
(1 - beta) / (1 - beta^n_c) and the learning rate is multiplied by `lr_factor`, and early stopping's
patience restarts (training never stops before the deferred phase has begun).

LongTailCXR (its `--loss ldam --drw --rw_method cb` run): max_margin 0.5, scale 30, beta 0.9999,
DRW after epoch 10 with the learning rate x 0.1, on raw (not normalised) logits. Those are the
defaults here; with bench's short CPU protocol (downstream.max_epochs) set `ldam_drw.drw_epoch` below it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from bench.config.checks import is_int, is_real
from bench.errors import BenchError
from bench.registry import register_remedy
from bench.remedy import Remedy, effective_number_weights


def ldam_margins(counts, max_margin: float) -> np.ndarray:
    """Per-class margins proportional to n_c^(-1/4), the largest equal to `max_margin`; 0 for an empty class."""
    counts = np.asarray(counts, dtype=np.float64)
    margins = np.zeros_like(counts)
    present = counts > 0
    margins[present] = counts[present] ** -0.25
    return margins * (max_margin / margins.max())


@register_remedy("ldam_drw")
class LDAMDRW(Remedy):
    """Label-distribution-aware margins, then class-balanced weights from `drw_epoch` on."""

    def __init__(
        self,
        max_margin: float = 0.5,
        scale: float = 30.0,
        drw_epoch: int = 10,
        beta: float = 0.9999,
        lr_factor: float = 0.1,
    ):
        for name, value in (("max_margin", max_margin), ("scale", scale), ("lr_factor", lr_factor)):
            if not is_real(value) or value <= 0:
                raise BenchError(f"ldam_drw.{name}={value!r}: use a number > 0")
        if not is_int(drw_epoch) or drw_epoch < 0:
            raise BenchError(f"ldam_drw.drw_epoch={drw_epoch!r}: use an epoch index >= 0")
        if not is_real(beta) or not 0 < beta < 1:
            raise BenchError(f"ldam_drw.beta={beta!r}: use a number in (0, 1) (LongTailCXR: 0.9999)")
        self.max_margin, self.scale, self.drw_epoch = float(max_margin), float(scale), int(drw_epoch)
        self.beta, self.lr_factor = float(beta), float(lr_factor)

    @property
    def min_epochs(self) -> int:
        """Training reaches the deferred phase before early stopping may end it."""
        return self.drw_epoch + 1

    def check(self, protocol) -> None:
        if self.drw_epoch >= protocol.max_epochs:
            raise BenchError(
                f"ldam_drw.drw_epoch={self.drw_epoch} never comes within downstream.max_epochs="
                f"{protocol.max_epochs}; set ldam_drw.drw_epoch below it (LongTailCXR: 10 of 60)"
            )

    def setup(self, counts) -> None:
        super().setup(counts)
        self._margins = torch.as_tensor(ldam_margins(self.counts, self.max_margin), dtype=torch.float32)
        self._weights = torch.as_tensor(effective_number_weights(self.counts, self.beta), dtype=torch.float32)

    def begin_epoch(self, epoch: int, optimizer: torch.optim.Optimizer) -> bool:
        if epoch != self.drw_epoch:
            return False
        for group in optimizer.param_groups:  # the deferred phase: lower learning rate, weighted loss
            group["lr"] *= self.lr_factor
        return True

    def loss(self, logits: torch.Tensor, target: torch.Tensor, epoch: int) -> torch.Tensor:
        margin = self._margins.to(logits.device)[target]
        shifted = logits - F.one_hot(target, logits.shape[1]).to(logits.dtype) * margin[:, None]
        weight = self._weights.to(logits.device) if epoch >= self.drw_epoch else None
        return F.cross_entropy(self.scale * shifted, target, weight=weight)
