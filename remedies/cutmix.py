"""cutmix: CutMix (Yun et al., ICCV 2019), as the authors' code (clovaai/CutMix-PyTorch) runs it.

With probability `prob` a mini-batch is mixed with a random permutation of itself: lambda ~
Beta(alpha, alpha) (alpha = 1: uniform) sets a box of sides W sqrt(1 - lambda), H sqrt(1 - lambda)
(truncated to pixels) around a uniformly drawn centre, clipped to the image; the box of the
permuted image is pasted into each image, and lambda is corrected to the area kept,
1 - box area / (W H), which weighs the two one-hot labels of the soft target. One box per batch.
alpha = 1 (the paper's CIFAR and ImageNet runs); prob = 1, every batch (their ImageNet ResNet-50
run; CIFAR used 0.5). LongTailCXR runs no CutMix.
"""

from __future__ import annotations

import math

import torch

from bench.config.checks import is_real
from bench.errors import BenchError
from bench.registry import register_remedy
from bench.remedies.mixup import beta_parameter
from bench.remedy import Remedy, beta_draw, soft_targets


def cutmix_box(height: int, width: int, lam: float, centre: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the box for `lam` centred at `centre` (row, column), clipped."""
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    r, c = centre
    top, bottom = min(max(r - cut_h // 2, 0), height), min(max(r + cut_h // 2, 0), height)
    left, right = min(max(c - cut_w // 2, 0), width), min(max(c + cut_w // 2, 0), width)
    return top, bottom, left, right


def cutmix_batch(
    x: torch.Tensor, target: torch.Tensor, n_classes: int, box: tuple[int, int, int, int], perm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The batch with `box` pasted from its permutation `perm`: (images, soft targets, lambda kept),
    lambda = 1 - box area / image area."""
    top, bottom, left, right = box
    perm = perm.to(x.device)
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = x[perm][:, :, top:bottom, left:right]
    lam = 1.0 - (bottom - top) * (right - left) / (x.shape[-2] * x.shape[-1])
    t = soft_targets(target, n_classes)
    return mixed, lam * t + (1.0 - lam) * t[perm], lam


@register_remedy("cutmix")
class CutMix(Remedy):
    """A box of a permuted image pasted into each image, the labels mixed by area."""

    image_augmentation = True  # also on top of the synthetic set (bench.remedy.Remedy)

    def __init__(self, alpha: float = 1.0, prob: float = 1.0):
        alpha = beta_parameter("cutmix.alpha", alpha, "Yun et al.: 1.0")
        if not is_real(prob) or not 0 <= prob <= 1:
            raise BenchError(
                f"cutmix.prob={prob!r}: use a probability in [0, 1] (Yun et al.: 1.0 on ImageNet)"
            )
        self.alpha, self.prob = float(alpha), float(prob)

    def augment(self, x, target, generator, epoch, partner=None):
        if float(torch.rand((), generator=generator)) >= self.prob:
            return x, target
        lam = beta_draw(self.alpha, self.alpha, generator)
        perm = torch.randperm(len(x), generator=generator)
        height, width = x.shape[-2:]
        centre = tuple(int(torch.randint(0, n, (), generator=generator)) for n in (height, width))
        mixed, soft, _ = cutmix_batch(
            x, target, len(self.counts), cutmix_box(height, width, lam, centre), perm
        )
        return mixed, soft
