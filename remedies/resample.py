"""resample: class-balanced re-sampling, every class drawn equally often in expectation.

Each epoch draws as many rows as the training set holds, with replacement, each with probability
proportional to 1 / n_class: PyTorch's WeightedRandomSampler with LongTailCXR's instance weights
n / n_c (its cRT and balanced-MixUp sampler), here for the whole training run: a remedy of its
own that LongTailCXR does not run [our default].
"""

from __future__ import annotations

import torch

from bench.registry import register_remedy
from bench.remedy import Remedy, class_balanced_order


@register_remedy("resample")
class Resample(Remedy):
    """Plain cross-entropy on class-balanced draws of the training rows."""

    def epoch_order(self, y: torch.Tensor, generator: torch.Generator, epoch: int) -> torch.Tensor:
        return class_balanced_order(y, generator)
