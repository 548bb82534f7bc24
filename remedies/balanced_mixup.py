"""balanced_mixup: Balanced-MixUp (Galdran et al., MICCAI 2021), with LongTailCXR's alpha.

Each mini-batch drawn the usual way (instance sampling, a permutation of the rows) is paired with
a batch of the same size drawn class-balanced (with replacement, P(row) ∝ 1 / n_class, PyTorch's
WeightedRandomSampler with LongTailCXR's weights n / n_c), and the two are mixed:
x = (1 - lambda) x_instance + lambda x_balanced, targets likewise, lambda ~ Beta(alpha, 1) once
per batch (Galdran et al.'s paper and code, agaldran/balanced_mixup), trained with cross-entropy
on the soft targets. alpha = 0.2 is LongTailCXR's `--bal_mixup --mixup_alpha 0.2`; with
Beta(0.2, 1), E[lambda] = 1/6: mostly the instance batch, a little of the balanced one.

LongTailCXR's own loop differs in two ways, which are not followed: it draws lambda from
Beta(alpha, alpha), and it reads the balanced images and labels from the instance batch
(`batch[0]` twice), which mixes every image with itself, i.e. plain training.
"""

from __future__ import annotations

import torch

from bench.errors import BenchError
from bench.registry import register_remedy
from bench.remedies.mixup import beta_parameter
from bench.remedy import Remedy, beta_draw, class_balanced_order, convex_mix, soft_targets


@register_remedy("balanced_mixup")
class BalancedMixUp(Remedy):
    """The instance-sampled batch mixed with a class-balanced one, lambda ~ Beta(alpha, 1)."""

    image_augmentation = True  # also on top of the synthetic set (bench.remedy.Remedy)

    def __init__(self, alpha: float = 0.2):
        self.alpha = beta_parameter("balanced_mixup.alpha", alpha, "LongTailCXR: 0.2")

    def partner_order(self, y: torch.Tensor, generator: torch.Generator, epoch: int) -> torch.Tensor:
        return class_balanced_order(y, generator)

    def augment(self, x, target, generator, epoch, partner=None):
        if partner is None:
            raise BenchError(
                "balanced_mixup: no class-balanced partner batch; it trains through bench's loop (fit)"
            )
        x_bal, y_bal = partner
        k = len(self.counts)
        lam = beta_draw(self.alpha, 1.0, generator)  # the weight of the class-balanced batch
        return convex_mix(x_bal, x, soft_targets(y_bal, k), soft_targets(target, k), lam)
