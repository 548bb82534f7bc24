"""TrivialAugment's image operations on batches of single-channel images in [0, 1], in torch.

TrivialAugment Wide's list (Müller & Hutter 2021; torchvision's `TrivialAugmentWide`, whose
magnitude ranges and conventions these follow) less `Color`, a saturation change that leaves a
single-channel image as it is: 13 operations. Each takes images (B, C, H, W) and one magnitude per
image (B,) and returns images of the same shape, in [0, 1]:

- geometric (nearest-neighbour resampling, pixels from outside the image filled with 0):
  `shear_x` / `shear_y` (shear factor, about the top-left corner), `translate_x` / `translate_y`
  (whole pixels), `rotate` (degrees, about the centre);
- intensity: `brightness`, `contrast` (blend with the image's mean), `sharpness` (blend with
  PIL's smoothing filter, border pixels kept), each by a factor 1 + magnitude; `posterize` (bits
  kept of 8), `solarize` (pixels >= threshold inverted), `autocontrast` (min..max stretched to
  0..1 per image and channel), `equalize` (PIL's histogram equalisation on 256 levels);
- `identity`.

A magnitude of 0 (bin 0) is the identity for every operation but `solarize` (threshold 1: pure
white pixels are inverted, as in torchvision) and the three without a magnitude.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

N_BINS = 31  # TrivialAugment Wide's magnitude bins: one drawn uniformly per image


def _affine(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Each image resampled at source (column, row) = matrix (B, 2, 3) @ (column, row, 1) of its
    output pixel, nearest neighbour, 0 outside."""
    b, c, h, w = x.shape
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    grid = torch.stack([cols, rows, torch.ones_like(rows)], -1).reshape(1, h * w, 3).to(matrix)
    src = (grid @ matrix.transpose(1, 2)).round().long()
    col, row = src[..., 0], src[..., 1]
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    flat = (row.clamp(0, h - 1) * w + col.clamp(0, w - 1)).to(x.device)
    out = x.reshape(b, c, h * w).gather(2, flat[:, None, :].expand(b, c, -1))
    return (out * inside.to(x.device)[:, None]).reshape(b, c, h, w)


def _matrix(a, b_, c, d, e, f) -> torch.Tensor:
    """(B, 2, 3) matrices from per-image rows (a, b_, c) and (d, e, f)."""
    return torch.stack([torch.stack([a, b_, c], -1), torch.stack([d, e, f], -1)], 1).double()


def shear_x(x, m):
    """Column shifted by -m * row: shear factor m about the top-left corner."""
    z, one = torch.zeros_like(m), torch.ones_like(m)
    return _affine(x, _matrix(one, -m, z, z, one, z))


def shear_y(x, m):
    """Row shifted by -m * column."""
    z, one = torch.zeros_like(m), torch.ones_like(m)
    return _affine(x, _matrix(one, z, z, -m, one, z))


def translate_x(x, m):
    """Shifted by int(m) pixels along the columns (torchvision truncates)."""
    z, one = torch.zeros_like(m), torch.ones_like(m)
    return _affine(x, _matrix(one, z, -m.trunc(), z, one, z))


def translate_y(x, m):
    """Shifted by int(m) pixels along the rows."""
    z, one = torch.zeros_like(m), torch.ones_like(m)
    return _affine(x, _matrix(one, z, z, z, one, -m.trunc()))


def rotate(x, m):
    """Rotated by m degrees about the image centre."""
    h, w = x.shape[-2:]
    theta = m.double() * math.pi / 180.0
    cos, sin = theta.cos(), theta.sin()
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    return _affine(x, _matrix(cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy))


def _blend(x, degenerate, factor):
    """factor x + (1 - factor) degenerate, clipped to [0, 1] (PIL's ImageEnhance)."""
    f = factor.to(x)[:, None, None, None]
    return (f * x + (1.0 - f) * degenerate).clamp(0.0, 1.0)


def brightness(x, m):
    """Scaled by 1 + m (a blend with black)."""
    return _blend(x, torch.zeros_like(x), 1.0 + m)


def contrast(x, m):
    """A blend with the image's mean intensity by factor 1 + m."""
    return _blend(x, x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x), 1.0 + m)


def sharpness(x, m):
    """A blend with PIL's SMOOTH filter (3x3, centre 5, others 1, / 13; border pixels kept) by factor 1 + m."""
    c = x.shape[1]
    kernel = torch.ones(3, 3, dtype=x.dtype, device=x.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / 13.0).expand(c, 1, 3, 3)
    smooth = x.clone()
    smooth[..., 1:-1, 1:-1] = F.conv2d(x, kernel, groups=c)
    return _blend(x, smooth, 1.0 + m)


def _levels(x):
    """The images as integer levels 0..255."""
    return (x * 255.0).round().clamp(0, 255).long()


def posterize(x, m):
    """Only the m highest of 8 bits of each level kept."""
    mask = (256 - 2 ** (8 - m.long())).to(x.device)[:, None, None, None]
    return (_levels(x) & mask).to(x.dtype) / 255.0


def solarize(x, m):
    """Pixels >= threshold m inverted (1 - x)."""
    return torch.where(x >= m.to(x)[:, None, None, None], 1.0 - x, x)


def autocontrast(x, m=None):
    """Each image and channel stretched from its min..max to 0..1 (unchanged where flat)."""
    low, high = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
    span = high - low
    return torch.where(span > 0, (x - low) / torch.where(span > 0, span, 1.0), x)


def equalize(x, m=None):
    """PIL's ImageOps.equalize per image and channel: levels mapped through the lookup table
    (step // 2 + pixels below the level) // step, step = (pixels but those of the top level) // 255."""
    levels = _levels(x)
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            out[i, c] = _equalize_plane(levels[i, c]).to(x.dtype) / 255.0
    return out


def _equalize_plane(levels: torch.Tensor) -> torch.Tensor:
    hist = torch.bincount(levels.flatten(), minlength=256)
    top = int(hist.nonzero().max())
    step = (int(hist.sum()) - int(hist[top])) // 255
    if step == 0:
        return levels
    below = torch.cat([torch.zeros(1, dtype=hist.dtype, device=hist.device), hist.cumsum(0)[:-1]])
    lut = ((step // 2 + below) // step).clamp(max=255)
    return lut[levels]


def identity(x, m=None):
    """The image unchanged."""
    return x


def _linear(top: float) -> torch.Tensor:
    return torch.linspace(0.0, top, N_BINS, dtype=torch.float64)


# name -> (the magnitude of each bin, signed: a random sign per image, the operation)
OPS = {
    "identity": (torch.zeros(N_BINS, dtype=torch.float64), False, identity),
    "shear_x": (_linear(0.99), True, shear_x),
    "shear_y": (_linear(0.99), True, shear_y),
    "translate_x": (_linear(32.0), True, translate_x),
    "translate_y": (_linear(32.0), True, translate_y),
    "rotate": (_linear(135.0), True, rotate),
    "brightness": (_linear(0.99), True, brightness),
    "contrast": (_linear(0.99), True, contrast),
    "sharpness": (_linear(0.99), True, sharpness),
    "posterize": (8 - (torch.arange(N_BINS) / ((N_BINS - 1) / 6)).round().double(), False, posterize),
    "solarize": (torch.linspace(1.0, 0.0, N_BINS, dtype=torch.float64), False, solarize),
    "autocontrast": (torch.zeros(N_BINS, dtype=torch.float64), False, autocontrast),
    "equalize": (torch.zeros(N_BINS, dtype=torch.float64), False, equalize),
}


def magnitude(name: str, bins: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """Per-image magnitudes of operation `name` at magnitude bins `bins`, signed where it is."""
    values, signed, _ = OPS[name]
    out = values[bins]
    return out * signs.double() if signed else out


def apply_ops(x: torch.Tensor, ops: torch.Tensor, bins: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """Image i through operation list(OPS)[ops[i]] at bin bins[i] with sign signs[i] (+-1)."""
    out = x.clone()
    for k, name in enumerate(OPS):
        rows = (ops == k).nonzero().flatten()
        if len(rows):
            fn = OPS[name][2]
            out[rows.to(x.device)] = fn(
                x[rows.to(x.device)], magnitude(name, bins[rows], signs[rows]).to(x.device)
            )
    return out
