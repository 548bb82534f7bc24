"""mixup: MixUp (Zhang et al., ICLR 2018), as LongTailCXR's `--mixup --mixup_alpha 0.2`.

Each mini-batch is mixed with a random permutation of itself, one lambda per batch drawn from
Beta(alpha, alpha): x = lambda x + (1 - lambda) x[perm], targets lambda e_y + (1 - lambda) e_y[perm]
(one-hot rows), trained with cross-entropy on the soft targets, which equals LongTailCXR's
lambda CE(y) + (1 - lambda) CE(y[perm]). alpha = 0.2 is LongTailCXR's run (Zhang et al. use 0.1 to
0.4 on ImageNet). Every batch is mixed, as in both.
"""

from __future__ import annotations

import torch

from bench.config.checks import is_real
from bench.errors import BenchError
from bench.registry import register_remedy
from bench.remedy import Remedy, beta_draw, convex_mix, soft_targets


def beta_parameter(key: str, value, source: str) -> float:
    """A Beta concentration setting (MixUp's and CutMix's alpha) as a float: a number > 0, else one
    line naming the setting `key` and where its default comes from (`source`)."""
    if not is_real(value) or value <= 0:
        raise BenchError(f"{key}={value!r}: use a number > 0 ({source})")
    return float(value)


def mixup_batch(
    x: torch.Tensor, target: torch.Tensor, n_classes: int, lam: float, perm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp of a batch with its permutation `perm` at weight `lam`: (images, soft targets)."""
    t = soft_targets(target, n_classes)
    perm = perm.to(x.device)
    return convex_mix(x, x[perm], t, t[perm], lam)


@register_remedy("mixup")
class MixUp(Remedy):
    """Convex combinations of image pairs and of their one-hot labels, lambda ~ Beta(alpha, alpha)."""

    image_augmentation = True  # also on top of the synthetic set (bench.remedy.Remedy)

    def __init__(self, alpha: float = 0.2):
        self.alpha = beta_parameter("mixup.alpha", alpha, "LongTailCXR: 0.2")

    def augment(self, x, target, generator, epoch, partner=None):
        lam = beta_draw(self.alpha, self.alpha, generator)
        perm = torch.randperm(len(x), generator=generator)
        return mixup_batch(x, target, len(self.counts), lam, perm)
