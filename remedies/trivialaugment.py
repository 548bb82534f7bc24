"""trivialaugment: TrivialAugment (Müller & Hutter, ICCV 2021), its Wide variant, per training image.

Each image of each mini-batch gets one operation drawn uniformly from the list and one magnitude
bin drawn uniformly from 31 (and a random sign for the signed operations): no hyper-parameter to
tune, which is why it stands here for the automatic-augmentation family rather than RandAugment,
whose number of operations N and magnitude M need a search per dataset that a benchmark
protocol cannot afford and TrivialAugment matches or beats (Müller & Hutter's Tab. 2). The list
and magnitude ranges are torchvision's `TrivialAugmentWide`'s, less `Color`, a no-op on
single-channel images (remedies/image_ops.py). Labels stay hard; the loss is cross-entropy. The
validation and test images are never augmented.
"""

from __future__ import annotations

import torch

from bench.registry import register_remedy
from bench.remedies.image_ops import N_BINS, OPS, apply_ops
from bench.remedy import Remedy


@register_remedy("trivialaugment")
class TrivialAugment(Remedy):
    """One uniformly drawn operation at a uniformly drawn magnitude per training image."""

    image_augmentation = True  # also on top of the synthetic set (bench.remedy.Remedy)

    def augment(self, x, target, generator, epoch, partner=None):
        n = len(x)
        ops = torch.randint(0, len(OPS), (n,), generator=generator)
        bins = torch.randint(0, N_BINS, (n,), generator=generator)
        signs = torch.randint(0, 2, (n,), generator=generator) * 2 - 1
        return apply_ops(x, ops, bins, signs), target
