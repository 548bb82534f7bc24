"""Image files as a lazy array: preprocessing on read, so 100k images never sit in RAM at once.

`ImageFiles` looks like an (N, C, H, W) tensor to the code that batches over it (`len`, `shape`,
`x[i:j]`, `x[mask]`), but reads, decodes and preprocesses only the rows asked for, on a few
threads (Pillow releases the GIL while decoding).

With a preprocessed image cache attached (bench.data.image_cache, built once per dataset split
and preprocessing), rows come from a memory-mapped uint8 array instead: `raw(index)` gives them as
uint8 (a quarter of the bytes to move to a GPU), `x[index]` as float32 through `to_float`, the one
uint8 -> float conversion every path uses, so the values never depend on where they are converted.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.errors import BenchError
from bench.runtime.threads import read_threads

NORMALISE = ("unit", "minmax")
MAX_SIZE = 8192  # 256 MiB per float32 RGB image: beyond it a typo, not a resolution anyone trains at
# A file that cannot become an image: damaged, not an image, or a decompression bomb (a small file
# that declares more than Pillow's Image.MAX_IMAGE_PIXELS, 89.5 M pixels: Pillow warns up to twice
# that and raises beyond; both are a bad image here, never a half-hour decode or a full RAM).
BAD_IMAGE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning)
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
CROP = ("center", "none")
UINT8_LEVELS = 255.0  # a cached image stores round(255 * value): within 0.5 / 255 of the float value


@dataclass(frozen=True)
class Preprocess:
    """How a stored image becomes a model input: square crop, resize, channels, scaling.

    `normalise='unit'` divides by the maximum of the stored bit depth (255 for 8-bit, 65535 for
    16-bit PNGs), keeping acquisition intensity differences; `'minmax'` rescales every image to
    [0, 1]. `crop='center'` takes the central square before resizing (MIMIC JPGs are not square);
    `'none'` squashes the whole image.
    """

    size: int = 64
    grayscale: bool = True
    normalise: str = "unit"
    crop: str = "center"

    def check(self, owner: str) -> Preprocess:
        """Self, or a one-line error naming the bad setting."""
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 4:
            raise BenchError(f"{owner}.size must be an integer >= 4, got {self.size!r}")
        if self.size > MAX_SIZE:
            gib = self.size**2 * self.channels * 4 / 2**30
            raise BenchError(
                f"{owner}.size={self.size} would need {gib:,.1f} GiB per image; use at most "
                f"{MAX_SIZE} (the real datasets' images are at most a few thousand pixels wide)"
            )
        if self.normalise not in NORMALISE:
            raise BenchError(f"{owner}.normalise={self.normalise!r} is not one of {list(NORMALISE)}")
        if self.crop not in CROP:
            raise BenchError(f"{owner}.crop={self.crop!r} is not one of {list(CROP)}")
        return self

    @property
    def channels(self) -> int:
        """1 for grayscale, else 3."""
        return 1 if self.grayscale else 3

    def __call__(self, image: Image.Image) -> np.ndarray:
        """(C, size, size) float32 array in [0, 1] from a decoded PIL image."""
        if image.format == "JPEG":
            image.draft("L" if self.grayscale else "RGB", (self.size, self.size))  # fast JPEG downscale
        array, scale = _as_float(image, self.grayscale)
        pil = [Image.fromarray(array[..., c], mode="F") for c in range(array.shape[-1])]
        out = np.stack(
            [np.asarray(self._square(p).resize((self.size, self.size), Image.BILINEAR)) for p in pil]
        )
        out = out / scale if self.normalise == "unit" else _minmax(out)
        return np.clip(out, 0.0, 1.0).astype(np.float32)

    def _square(self, image: Image.Image) -> Image.Image:
        if self.crop == "none" or image.width == image.height:
            return image
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        return image.crop((left, top, left + side, top + side))

    def describe(self) -> dict:
        """JSON-able settings (part of the latent cache key)."""
        return asdict(self)


def _as_float(image: Image.Image, grayscale: bool) -> tuple[np.ndarray, float]:
    """(H, W, C) float32 pixels and the full-scale value of the stored bit depth."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float32)[..., None]
        scale = 65535.0 if image.mode != "F" else max(float(array.max()), 1.0)
        return (array if grayscale else np.repeat(array, 3, axis=-1)), scale
    array = np.asarray(image.convert("L" if grayscale else "RGB"), dtype=np.float32)
    return (array[..., None] if grayscale else array), 255.0


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def quantise(x: np.ndarray) -> np.ndarray:
    """float rows in [0, 1] as uint8 levels (rounded: within 0.5 / 255 of the float value)."""
    return np.round(np.clip(x, 0.0, 1.0) * UINT8_LEVELS).astype(np.uint8)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """float32 rows in [0, 1]: uint8 cache levels divided by 255, any other tensor as float."""
    return x.float() / UINT8_LEVELS if x.dtype == torch.uint8 else x.float()


class ImageFiles:
    """A lazy (N, C, size, size) float32 array backed by image files (or by their uint8 cache).

    `cache` / `cache_rows`: the memory-mapped uint8 array of a preprocessed image cache and the
    row of it holding each of this array's images (bench.data.image_cache.attach sets them).
    """

    def __init__(
        self,
        paths: list[Path],
        ids: list[str],
        preprocess: Preprocess,
        owner: str,
        cache: np.ndarray | None = None,
        cache_rows: np.ndarray | None = None,
    ):
        if len(paths) != len(ids):
            raise ValueError("paths and ids must align")
        self.paths, self.ids, self.preprocess, self.owner = list(paths), list(ids), preprocess, owner
        self.cache, self.cache_rows = None, None
        if cache is not None:
            self.use_cache(cache, np.arange(len(paths)) if cache_rows is None else cache_rows)

    def use_cache(self, cache: np.ndarray, rows: np.ndarray) -> None:
        """Read row i from `cache[rows[i]]` (uint8, (N, C, size, size)) from now on."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) != len(self) or tuple(cache.shape[1:]) != self.shape[1:] or cache.dtype != np.uint8:
            raise ValueError(
                f"an image cache of {cache.shape} {cache.dtype} with {len(rows)} rows does not fit "
                f"{self.shape}"
            )
        self.cache, self.cache_rows = cache, rows

    def __getstate__(self) -> dict:
        """Pickled with its cache's file name, never its pixels (DataLoader workers that are
        spawned, not forked, receive the array by pickle: it reopens the memory map)."""
        state = dict(self.__dict__)
        if isinstance(self.cache, np.memmap) and self.cache.filename:
            state["cache"] = ("memmap", str(self.cache.filename))
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state.get("cache"), tuple):
            state["cache"] = np.load(state["cache"][1], mmap_mode="r")
        self.__dict__.update(state)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Shape of the array this stands for."""
        p = self.preprocess
        return (len(self), p.channels, p.size, p.size)

    def take(self, index) -> ImageFiles:
        """The lazy subset at `index` (ints, an index tensor or a bool mask); nothing is read."""
        rows = _rows(index, len(self))
        return ImageFiles(
            [self.paths[i] for i in rows],
            [self.ids[i] for i in rows],
            self.preprocess,
            self.owner,
            self.cache,
            None if self.cache is None else self.cache_rows[rows],
        )

    def __getitem__(self, index) -> torch.Tensor:
        """Read and preprocess the selected rows: an int gives (C, H, W), anything else (n, C, H, W)."""
        return to_float(self.raw(index))

    def raw(self, index, threads: int | None = None) -> torch.Tensor:
        """The selected rows as stored: uint8 levels from the cache when one is attached (convert
        with `to_float`), else decoded float32 (on `threads` threads, default `read_threads()`)."""
        if isinstance(index, int):
            return torch.from_numpy(
                np.array(self.cache[self.cache_rows[index]]) if self.cache is not None else self.read(index)
            )
        rows = _rows(index, len(self))
        if self.cache is not None:
            return (
                torch.from_numpy(np.asarray(self.cache[self.cache_rows[rows]]))
                if rows
                else torch.empty((0, *self.shape[1:]), dtype=torch.uint8)
            )
        if not rows:
            return torch.empty((0, *self.shape[1:]))
        with ThreadPoolExecutor(min(threads or read_threads(), len(rows))) as pool:
            return torch.from_numpy(np.stack(list(pool.map(self.read, rows))))

    def read(self, i: int) -> np.ndarray:
        """Row i as a (C, H, W) array; a file that cannot be decoded is a one-line error."""
        try:
            with Image.open(self.paths[i]) as image:
                return self.preprocess(image)
        except BAD_IMAGE as exc:
            raise BenchError(
                f"{self.owner}: cannot read image {self.ids[i]} ({self.paths[i]}): "
                f"{exc}; replace or remove the file, or set {self.owner}.check_images='decode' "
                f"and {self.owner}.on_bad_image='skip' to leave out every image that does not "
                "decode"
            ) from None


def _rows(index, n: int) -> list[int]:
    """Row numbers selected by a slice, int sequence, index tensor/array or bool mask."""
    if isinstance(index, slice):
        return list(range(n))[index]
    arr = index.numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise IndexError(f"bool mask of shape {arr.shape} for {n} rows")
        return np.flatnonzero(arr).tolist()
    return [int(i) % n if i < 0 else int(i) for i in arr.reshape(-1)]


def unreadable(paths: list[Path], check: str) -> list[tuple[int, str]]:
    """(row, reason) of files that are missing or, with check='header' / 'decode', not an image.

    'header' opens each file far enough to parse its header (cheap: no pixel data is decoded),
    which catches empty, truncated-at-start and non-image files before anything is written;
    'decode' decodes every pixel, which also catches a file truncated after its header.
    """

    def probe(i: int) -> tuple[int, str] | None:
        p = paths[i]
        if not p.is_file():
            return (i, "missing")
        if check in ("header", "decode"):
            try:
                with Image.open(p) as image:
                    if check == "decode":
                        image.load()
                    else:
                        image.size  # noqa: B018 -- parsing the header is the check
            except BAD_IMAGE as exc:
                return (i, f"unreadable ({type(exc).__name__})")
        return None

    with ThreadPoolExecutor(read_threads()) as pool:
        return [r for r in pool.map(probe, range(len(paths))) if r is not None]


def as_tensor(x) -> torch.Tensor:
    """A real tensor for code that needs all rows at once (small evaluation splits)."""
    return x[:] if isinstance(x, ImageFiles) else x


def flat_float64(x) -> np.ndarray:
    """(N, D) float64 numpy rows of a tensor or lazy image array, for scikit-learn / scipy."""
    x = as_tensor(x)
    return x.detach().cpu().reshape(len(x), -1).double().numpy()
