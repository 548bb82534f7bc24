"""crt: decoupled classifier re-training (Kang et al. 2020), as LongTailCXR's `--decoupling_method cRT`.

Stage 1 is the plain cross-entropy classifier (the no-augmentation one, trained once and reused;
combined with augmentation, the augmented one). Stage 2 freezes its features, re-initialises the
last linear layer and trains only that layer with class-balanced re-sampling, under the same
optimiser, learning rate, epochs and early stopping. The frozen features are computed once
(network in evaluation mode, so batch-norm statistics stay those of stage 1, as in Kang et al.;
LongTailCXR's loop leaves them in training mode), which makes stage 2 cost little.
"""

from __future__ import annotations

import torch

from bench.registry import register_remedy
from bench.remedy import Remedy, class_balanced_order


@register_remedy("crt")
class CRT(Remedy):
    """A fresh last layer trained on frozen features with class-balanced sampling."""

    retrains_head = True

    def epoch_order(self, y: torch.Tensor, generator: torch.Generator, epoch: int) -> torch.Tensor:
        return class_balanced_order(y, generator)
