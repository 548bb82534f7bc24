"""The FID Inception-v3: the network behind torchmetrics' FrechetInceptionDistance, and its input.

torchmetrics computes FID with torch-fidelity's `FeatureExtractorInceptionV3` (the same network as
pytorch-fid's `FIDInceptionA/C/E`): Inception-v3 (Szegedy et al. 2016) ported from TensorFlow's
2015-12-05 graph, with the weights `pt_inception-2015-12-05` (a 1008-way classifier). It differs
from torchvision's Inception-v3 where TensorFlow's graph does: batch-norm epsilon 1e-3, average
pools in the A, C and first E blocks that leave the padding out of the mean, a max pool in the
last E block's pooling branch, no auxiliary classifier. Built here from that published definition
with the weight file's module names (`Conv2d_1a_3x3.conv`, `Mixed_5b.branch5x5_1.bn`, ..., `fc`),
so a converted weight file loads unchanged.

Features (`FIDInceptionV3.features_of`): the 2048-d pool3 activations (global average of the last
block). Preprocessing (`fid_preprocess`): torchmetrics' for float images with `normalize=True`
(to uint8 by truncation), then torch-fidelity's: bilinear resize to 299 x 299 as TensorFlow 1.x
does it (`resize_like_tf1`), scaled to [-1, 1] by (x - 128) / 128; grayscale replicated to RGB.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FID_SIZE = 299
FID_CLASSES = 1008


class BasicConv2d(nn.Module):
    """Bias-free convolution, batch norm (eps 1e-3, TensorFlow's), ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU(BN(conv(x)))."""
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool whose mean leaves out the zero padding (TensorFlow's)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _chain(x: torch.Tensor, *convs: nn.Module) -> torch.Tensor:
    """`x` through `convs` in order."""
    for conv in convs:
        x = conv(x)
    return x


def _row(c_in: int, c_out: int) -> BasicConv2d:
    """A 1 x 7 convolution (same size)."""
    return BasicConv2d(c_in, c_out, (1, 7), padding=(0, 3))


def _col(c_in: int, c_out: int) -> BasicConv2d:
    """A 7 x 1 convolution (same size)."""
    return BasicConv2d(c_in, c_out, (7, 1), padding=(3, 0))


class InceptionA(nn.Module):
    """35 x 35 block: 1x1, 5x5, double 3x3 and pooled branches (64 + 64 + 96 + `pool_features`)."""

    def __init__(self, c_in: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, 1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The four branches concatenated."""
        return torch.cat(
            [
                self.branch1x1(x),
                _chain(x, self.branch5x5_1, self.branch5x5_2),
                _chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
                self.branch_pool(_tf_avg_pool(x)),
            ],
            1,
        )


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: strided 3x3, strided double 3x3 and max-pool branches."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The three branches concatenated (384 + 96 + c_in)."""
        return torch.cat(
            [
                self.branch3x3(x),
                _chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
                F.max_pool2d(x, 3, stride=2),
            ],
            1,
        )


class InceptionC(nn.Module):
    """17 x 17 block with factorised 7x7 convolutions of width `c7` (4 x 192 outputs)."""

    def __init__(self, c_in: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7_2 = _row(c7, c7)
        self.branch7x7_3 = _col(c7, 192)
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7dbl_2 = _col(c7, c7)
        self.branch7x7dbl_3 = _row(c7, c7)
        self.branch7x7dbl_4 = _col(c7, c7)
        self.branch7x7dbl_5 = _row(c7, 192)
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The four branches concatenated."""
        double = (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4)
        return torch.cat(
            [
                self.branch1x1(x),
                _chain(x, self.branch7x7_1, self.branch7x7_2, self.branch7x7_3),
                _chain(x, *double, self.branch7x7dbl_5),
                self.branch_pool(_tf_avg_pool(x)),
            ],
            1,
        )


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: 3x3 and 7x7-then-3x3 strided branches and a max pool."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7x3_2 = _row(192, 192)
        self.branch7x7x3_3 = _col(192, 192)
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The three branches concatenated (320 + 192 + c_in)."""
        seven = (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4)
        return torch.cat(
            [_chain(x, self.branch3x3_1, self.branch3x3_2), _chain(x, *seven), F.max_pool2d(x, 3, stride=2)],
            1,
        )


class InceptionE(nn.Module):
    """8 x 8 block with split 1x3 / 3x1 branches (320 + 768 + 768 + 192 = 2048 outputs); its pooling
    branch averages (`max_pool=False`, Mixed_7b) or, as in TensorFlow's graph, takes the max (Mixed_7c)."""

    def __init__(self, c_in: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(c_in, 320, 1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The branches concatenated, each split branch as its two halves."""
        single = self.branch3x3_1(x)
        double = _chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(single),
                self.branch3x3_2b(single),
                self.branch3x3dbl_3a(double),
                self.branch3x3dbl_3b(double),
                self.branch_pool(pooled),
            ],
            1,
        )


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3; `with_fc` adds the 1008-way classifier the weight file holds."""

    dim = 2048

    def __init__(self, with_fc: bool = True):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        if with_fc:
            self.fc = nn.Linear(2048, FID_CLASSES)

    def features_of(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2048) pool3 features of preprocessed (N, 3, 299, 299) input in [-1, 1]."""
        x = _chain(x, self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3)
        x = _chain(F.max_pool2d(x, 3, stride=2), self.Conv2d_3b_1x1, self.Conv2d_4a_3x3)
        x = _chain(F.max_pool2d(x, 3, stride=2), self.Mixed_5b, self.Mixed_5c, self.Mixed_5d)
        x = _chain(x, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e)
        x = _chain(x, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The 1008 logits (needs `fc`)."""
        return self.fc(self.features_of(x))


def tf1_axis(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TensorFlow 1.x bilinear sampling along one axis (align_corners=False, no half-pixel
    centres): output i reads input i * n_in / n_out; (lower index, upper index, upper weight)."""
    position = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    lower = position.floor().long().clamp(max=n_in - 1)
    upper = (lower + 1).clamp(max=n_in - 1)
    return lower, upper, (position - lower).float()


def resize_like_tf1(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) resized to size x size as TensorFlow 1.x's resize_bilinear does (torch-fidelity's
    `interpolate_bilinear_2d_like_tensorflow1x`); torch's own bilinear modes sample elsewhere."""
    rows, cols = tf1_axis(x.shape[-2], size), tf1_axis(x.shape[-1], size)
    lo, hi, w = (t.to(x.device) for t in rows)
    x = x[..., lo, :] + (x[..., hi, :] - x[..., lo, :]) * w[:, None]
    lo, hi, w = (t.to(x.device) for t in cols)
    return x[..., lo] + (x[..., hi] - x[..., lo]) * w


def fid_preprocess(x: torch.Tensor) -> torch.Tensor:
    """bench's [0, 1] images as torchmetrics' FID reads float images (`normalize=True`): RGB
    (grayscale replicated), uint8 by truncation, 299 x 299 as TensorFlow 1.x resizes, (x - 128) / 128."""
    x = x.float().clamp(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = (x * 255).to(torch.uint8).float()
    return (resize_like_tf1(x, FID_SIZE) - 128) / 128
