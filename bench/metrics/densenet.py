"""DenseNet-121 in torchvision's layout, as torchxrayvision uses it for chest X-ray features.

The field's published chest X-ray FIDs embed images with torchxrayvision's DenseNet-121 (Cohen et
al. 2022, `xrv.models.DenseNet`): torchvision's DenseNet-BC-121 (Huang et al. 2017; growth 32,
blocks 6-12-24-16, 64 initial features, bottleneck 4 x growth, compression 0.5) with one input
channel and 18 pathology outputs. Built here from that published definition, with the module names
of both (`features.conv0`, `features.denseblock1.denselayer1.norm1`, `features.transition1.conv`,
`features.norm5`, `classifier`), so a state dict saved from either loads unchanged.

Features (`DenseNet121.features_of`): the 1024-d global average of the last block's activations
after the final batch norm and a ReLU, the classifier's input (torchxrayvision's `features2`).
Preprocessing (`xrv_preprocess`): torchxrayvision's, on bench's [0, 1] images.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

GROWTH = 32
BLOCKS = (6, 12, 24, 16)
INIT_FEATURES = 64
BOTTLENECK = 4  # the 1x1 convolution's width in units of the growth rate
XRV_SIZE = 224
XRV_RANGE = 1024.0  # torchxrayvision's intensities lie in [-1024, 1024]


def _norm_relu_conv(c_in: int, c_out: int, kernel: int, index: str = "") -> list:
    """BN -> ReLU -> bias-free convolution (a dense layer's half, a transition's start)."""
    return [
        (f"norm{index}", nn.BatchNorm2d(c_in)),
        (f"relu{index}", nn.ReLU()),
        (f"conv{index}", nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False)),
    ]


class DenseLayer(nn.Sequential):
    """One bottleneck layer: BN-ReLU-1x1 conv to 4k channels, BN-ReLU-3x3 conv to k; its output is
    concatenated to its input."""

    def __init__(self, c_in: int):
        width = BOTTLENECK * GROWTH
        super().__init__(
            OrderedDict(_norm_relu_conv(c_in, width, 1, "1") + _norm_relu_conv(width, GROWTH, 3, "2"))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The input with the layer's k new channels appended."""
        return torch.cat([x, super().forward(x)], 1)


class Transition(nn.Sequential):
    """Between blocks: BN-ReLU-1x1 conv halving the channels, then 2x2 average pooling."""

    def __init__(self, c_in: int):
        super().__init__(OrderedDict(_norm_relu_conv(c_in, c_in // 2, 1) + [("pool", nn.AvgPool2d(2, 2))]))


class DenseNet121(nn.Module):
    """DenseNet-121 with `in_channels` inputs and, when `n_classes` is given, a linear classifier."""

    dim = 1024

    def __init__(self, in_channels: int = 1, n_classes: int | None = None):
        super().__init__()
        layers = [
            ("conv0", nn.Conv2d(in_channels, INIT_FEATURES, 7, stride=2, padding=3, bias=False)),
            ("norm0", nn.BatchNorm2d(INIT_FEATURES)),
            ("relu0", nn.ReLU()),
            ("pool0", nn.MaxPool2d(3, stride=2, padding=1)),
        ]
        channels = INIT_FEATURES
        for b, n_layers in enumerate(BLOCKS, start=1):
            block = nn.Sequential()
            for i in range(n_layers):
                block.add_module(f"denselayer{i + 1}", DenseLayer(channels + i * GROWTH))
            layers.append((f"denseblock{b}", block))
            channels += n_layers * GROWTH
            if b < len(BLOCKS):
                layers.append((f"transition{b}", Transition(channels)))
                channels //= 2
        layers.append(("norm5", nn.BatchNorm2d(channels)))
        self.features = nn.Sequential(OrderedDict(layers))
        if n_classes is not None:
            self.classifier = nn.Linear(channels, n_classes)

    def features_of(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1024) pooled penultimate activations: final norm, ReLU, global average."""
        return F.adaptive_avg_pool2d(F.relu(self.features(x)), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (needs a classifier)."""
        return self.classifier(self.features_of(x))


def center_square(x: torch.Tensor) -> torch.Tensor:
    """The central square crop of (N, C, H, W) images (torchxrayvision's XRayCenterCrop)."""
    h, w = x.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return x[..., top : top + side, left : left + side]


def xrv_preprocess(x: torch.Tensor) -> torch.Tensor:
    """bench's [0, 1] images as torchxrayvision reads them: one channel (the mean of RGB), the
    central square, 224 x 224 (bilinear, torchxrayvision's own resize of other sizes), intensities
    scaled to [-1024, 1024]."""
    x = x.float().clamp(0, 1)
    if x.shape[1] != 1:
        x = x.mean(1, keepdim=True)
    x = center_square(x)
    if tuple(x.shape[-2:]) != (XRV_SIZE, XRV_SIZE):
        x = F.interpolate(x, size=(XRV_SIZE, XRV_SIZE), mode="bilinear", align_corners=False)
    return (2 * x - 1) * XRV_RANGE
