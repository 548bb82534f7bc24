"""MedMNIST 2-D sets read from the medmnist package's own `.npz` files: real, laptop-sized images.

The files are the ones `medmnist` downloads (MedMNIST v2/v3, and MedMNIST+ for the larger sizes):
`<root>/<flag>.npz` holds 28x28 images and `<root>/<flag>_<size>.npz` 64, 128 or 224 pixel ones,
each with `{train,val,test}_{images,labels}`. Images are uint8, (N, H, W) for grayscale sets and
(N, H, W, 3) for RGB sets; labels are (N, 1) class indices. The medmnist package itself is never
imported and nothing is ever downloaded. Multi-label sets (ChestMNIST) and 3-D volumes are refused:
bench is single-label and 2-D.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.config.checks import is_real
from bench.data.imagefiles import Preprocess
from bench.data.longtail import exponential_profile
from bench.data.rootpath import missing_root, require_root
from bench.dataset import Dataset, Split
from bench.errors import BenchError
from bench.registry import register_dataset

log = logging.getLogger(__name__)

OWNER = "medmnist"
SPLITS = ("train", "val", "test")
FILE_SIZES = (28, 64, 128, 224)
KEYS = tuple(f"{split}_{part}" for split in SPLITS for part in ("images", "labels"))
MULTI_LABEL_FLAGS = ("chestmnist",)
LAYOUT = (
    "<root>/<flag>.npz for 28x28 images or <root>/<flag>_<size>.npz for 64/128/224, "
    "as downloaded by the medmnist package"
)

_ORGAN = [
    "bladder",
    "femur-left",
    "femur-right",
    "heart",
    "kidney-left",
    "kidney-right",
    "liver",
    "lung-left",
    "lung-right",
    "pancreas",
    "spleen",
]

# Official label names of the 2-D single-label flags, in class-index order (medmnist's INFO[flag]["label"]).
LABEL_NAMES: dict[str, list[str]] = {
    "pathmnist": [
        "adipose",
        "background",
        "debris",
        "lymphocytes",
        "mucus",
        "smooth muscle",
        "normal colon mucosa",
        "cancer-associated stroma",
        "colorectal adenocarcinoma epithelium",
    ],
    "dermamnist": [
        "actinic keratoses and intraepithelial carcinoma",
        "basal cell carcinoma",
        "benign keratosis-like lesions",
        "dermatofibroma",
        "melanoma",
        "melanocytic nevi",
        "vascular lesions",
    ],
    "octmnist": ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
    "pneumoniamnist": ["normal", "pneumonia"],
    "retinamnist": ["0", "1", "2", "3", "4"],  # ordinal diabetic-retinopathy grade
    "breastmnist": ["malignant", "normal, benign"],
    "bloodmnist": [
        "basophil",
        "eosinophil",
        "erythroblast",
        "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
        "lymphocyte",
        "monocyte",
        "neutrophil",
        "platelet",
    ],
    "tissuemnist": [
        "Collecting Duct, Connecting Tubule",
        "Distal Convoluted Tubule",
        "Glomerular endothelial cells",
        "Interstitial endothelial cells",
        "Leukocytes",
        "Podocytes",
        "Proximal Tubule Segments",
        "Thick Ascending Limb",
    ],
    "organamnist": _ORGAN,
    "organcmnist": _ORGAN,
    "organsmnist": _ORGAN,
}


def npz_name(flag: str, file_size: int) -> str:
    """File name the medmnist package uses for `flag` at `file_size` pixels."""
    return f"{flag}.npz" if file_size == 28 else f"{flag}_{file_size}.npz"


def fitted_profile(available: list[int], imbalance_ratio: float) -> list[int]:
    """Per-class target counts: the exponential profile scaled to what every class can supply.

    Classes take profile positions in order of their available count (largest = head, ties by
    index), and the head count n_max is the largest for which no class needs more images than it
    has, so subsampling only ever drops images. Raises when the tail class would get none.
    """
    n_classes = len(available)
    order = sorted(range(n_classes), key=lambda c: (-available[c], c))
    ranked = [available[c] for c in order]
    if n_classes == 1:
        n_max = ranked[0]
    else:  # round(n * r**(-k/(C-1))) <= a_k needs n <= (a_k + 0.5) * r**(k/(C-1)): an upper bound
        bound = min(
            math.floor((a + 0.5) * imbalance_ratio ** (k / (n_classes - 1))) + 1 for k, a in enumerate(ranked)
        )
        n_max = min(bound, ranked[0])
    while n_max > 1 and any(
        p > a for p, a in zip(exponential_profile(n_max, n_classes, imbalance_ratio), ranked)
    ):
        n_max -= 1  # the largest head that fits: a few steps down from the bound
    profile = exponential_profile(max(n_max, 1), n_classes, imbalance_ratio)
    if n_max < 1 or min(profile) < 1 or any(p > a for p, a in zip(profile, ranked)):
        natural = ranked[0] / max(ranked[-1], 1)
        raise BenchError(
            f"{OWNER}: imbalance_ratio={imbalance_ratio} cannot be met by subsampling the "
            f"train split (class counts {available}, natural ratio {natural:.1f}): the "
            "rarest class would get no image; lower medmnist.imbalance_ratio or set it "
            "to None for the natural distribution"
        )
    targets = [0] * n_classes
    for k, c in enumerate(order):
        targets[c] = profile[k]
    return targets


@register_dataset("medmnist")
class MedMNIST(Dataset):
    """A MedMNIST 2-D single-label set as (C, size, size) images in [0, 1].

    `flag` names the set (default 'dermamnist': 7 skin-lesion classes, naturally long-tailed);
    `file_size` picks which official file is read (28, 64, 128 or 224 pixels) and `size` is the
    model input size (default 28: the stored 28x28 pixels unchanged; use 32 or more for the
    flux_vae encoder, whose latents need sizes divisible by 8). `grayscale=None` keeps the stored
    channels (1 for grayscale sets, 3 for RGB); True/False converts. Splits are the official
    train / val / test; `imbalance_ratio=None` keeps the natural train distribution, a number
    subsamples train (by `seed`) to the exponential long-tail profile, see `fitted_profile`.
    `ids` are "<split>_<row>" with the row in the file's arrays.
    """

    kind = "image"
    train_split = "train"
    eval_split = "test"
    val_split = "val"

    def __init__(
        self,
        root=None,
        flag: str = "dermamnist",
        file_size: int = 28,
        size: int = 28,
        grayscale: bool | None = None,
        normalise: str = "unit",
        imbalance_ratio: float | None = None,
        seed: int = 0,
    ):
        if not isinstance(flag, str) or not re.fullmatch(r"[A-Za-z0-9_\-]+", flag):
            raise BenchError(f"{OWNER}.flag={flag!r} is not a MedMNIST flag name such as 'dermamnist'")
        if flag in MULTI_LABEL_FLAGS:
            raise BenchError(
                f"{OWNER}.flag={flag!r} is a multi-label set and bench is single-label; "
                f"choose a single-label flag such as {sorted(LABEL_NAMES)[:3]}"
            )
        if file_size not in FILE_SIZES:
            raise BenchError(f"{OWNER}.file_size={file_size!r} is not one of {list(FILE_SIZES)}")
        if grayscale not in (None, True, False):
            raise BenchError(f"{OWNER}.grayscale={grayscale!r} must be None (as stored), True or False")
        if imbalance_ratio is not None and not (is_real(imbalance_ratio) and imbalance_ratio >= 1):
            raise BenchError(
                f"{OWNER}.imbalance_ratio={imbalance_ratio!r} must be None (natural "
                "distribution) or a number >= 1"
            )
        self.root_setting, self.flag, self.file_size = root, flag, file_size
        self.grayscale, self.imbalance_ratio, self.seed = grayscale, imbalance_ratio, seed
        self.preprocess = Preprocess(size, bool(grayscale), normalise, "center").check(OWNER)
        self._labels: dict[str, np.ndarray] = {}
        self._loaded: dict[str, Split] = {}

    def missing_settings(self) -> list[str]:
        """`medmnist.root` when it is unset."""
        return [] if self.root_setting else [missing_root(OWNER, LAYOUT)]

    # -- the file -------------------------------------------------------------------------------
    @cached_property
    def path(self) -> Path:
        """The npz for this flag and file size; a one-line error naming it when it is absent."""
        root = require_root(self.root_setting, OWNER, LAYOUT)
        path = root / npz_name(self.flag, self.file_size)
        if not path.is_file():
            others = sorted(p.name for p in root.glob(f"{self.flag}*.npz"))
            found = f"; found {others}, set {OWNER}.file_size to match" if others else ""
            raise BenchError(
                f"{OWNER}: no {path.name} in {root} for flag={self.flag!r}, "
                f"file_size={self.file_size} (expected layout: {LAYOUT}){found}; "
                f"fix {OWNER}.root, {OWNER}.flag or {OWNER}.file_size"
            )
        return path

    def _read(self, key: str) -> np.ndarray:
        """One array of the npz (only that member is decompressed); bad files are one-line errors."""
        try:
            npz = np.load(self.path, allow_pickle=False)
        except Exception as exc:  # BadZipFile, OSError, ValueError (pickled / not numpy), EOFError
            raise self._corrupt(exc) from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise BenchError(
                f"{OWNER}: {self.path} holds a single array, not the npz archive of "
                f"{list(KEYS)}; is this the medmnist file for flag={self.flag!r}?"
            )
        with npz:
            missing = [k for k in KEYS if k not in npz.files]
            if missing:
                raise BenchError(
                    f"{OWNER}: {self.path.name} lacks key(s) {missing} (has {npz.files}); "
                    f"is this the medmnist file for flag={self.flag!r}?"
                )
            try:
                return np.asarray(npz[key])
            except Exception as exc:  # truncated or corrupt member: zlib.error, ValueError, EOFError
                raise self._corrupt(exc) from None

    def _corrupt(self, exc: Exception) -> BenchError:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        return BenchError(
            f"{OWNER}: cannot read {self.path} as a MedMNIST npz for flag={self.flag!r} "
            f"({type(exc).__name__}: {detail}); replace it with an intact copy"
        )

    # -- labels ---------------------------------------------------------------------------------
    def _raw_labels(self, split: str) -> np.ndarray:
        """(N,) int64 labels of `split`, checked to be single-label whole numbers (cached)."""
        if split not in self._labels:
            self._labels[split] = _single_labels(
                self._read(f"{split}_labels"), f"{self.path.name} {split}_labels"
            )
        return self._labels[split]

    @cached_property
    def class_names(self) -> list[str]:
        """The official names for known flags, else class_0..class_{K-1} with K from the labels."""
        if self.flag in LABEL_NAMES:
            return list(LABEL_NAMES[self.flag])
        k = int(max(self._raw_labels(s).max(initial=-1) for s in SPLITS)) + 1
        log.warning(
            "%s: flag %r has no table of label names; using class_0..class_%d from its labels",
            OWNER,
            self.flag,
            k - 1,
        )
        return [f"class_{c}" for c in range(k)]

    def labels(self, split: str) -> np.ndarray:
        """All labels of `split` in file order, checked to be valid class indices."""
        y = self._raw_labels(split)
        bad = np.flatnonzero((y < 0) | (y >= self.n_classes))
        if len(bad):
            raise BenchError(
                f"{OWNER}: {self.path.name} {split}_labels has {len(bad)} label(s) outside "
                f"0..{self.n_classes - 1} for flag={self.flag!r} (first rows {bad[:5].tolist()}, "
                f"values {y[bad[:5]].tolist()}); is medmnist.flag right for this file?"
            )
        return y

    # -- rows -----------------------------------------------------------------------------------
    @cached_property
    def natural_train_counts(self) -> list[int]:
        """Per-class counts of the official train split."""
        return np.bincount(self.labels("train"), minlength=self.n_classes).tolist()

    def rows(self, split: str) -> np.ndarray:
        """Row indices of `split` used by the benchmark: all, or the long-tailed train subsample."""
        if split != "train" or self.imbalance_ratio is None:
            return np.arange(len(self.labels(split)))
        return self._train_rows

    @cached_property
    def _train_rows(self) -> np.ndarray:
        y = self.labels("train")
        targets = fitted_profile(self.natural_train_counts, float(self.imbalance_ratio))
        rng = np.random.default_rng(self.seed)
        picked = [rng.permutation(np.flatnonzero(y == c))[:n] for c, n in enumerate(targets)]
        return np.sort(np.concatenate(picked))

    # -- Dataset interface ----------------------------------------------------------------------
    def load(self, split: str) -> Split:
        """The split as (N, C, size, size) float32 images with labels and "<split>_<row>" ids (cached)."""
        if split not in SPLITS:
            raise BenchError(f"{OWNER} has splits {list(SPLITS)}, not {split!r}")
        if split not in self._loaded:
            self._loaded[split] = self._build(split)
        return self._loaded[split]

    def _build(self, split: str) -> Split:
        y, rows = self.labels(split), self.rows(split)
        images = self._checked_images(split, len(y))
        stored_gray = images.ndim == 3
        preprocess = replace(
            self.preprocess, grayscale=stored_gray if self.grayscale is None else self.grayscale
        )
        x = np.stack([preprocess(Image.fromarray(images[r])) for r in rows])
        return Split(torch.from_numpy(x), torch.from_numpy(y[rows]), ids=[f"{split}_{r}" for r in rows])

    def _checked_images(self, split: str, n_labels: int) -> np.ndarray:
        """`split`'s uint8 images, checked against the official shapes and the label count."""
        images = self._read(f"{split}_images")
        where = f"{OWNER}: {self.path.name} {split}_images"
        s = self.file_size
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
            raise BenchError(
                f"{where} has shape {images.shape}; expected (N, {s}, {s}) grayscale or "
                f"(N, {s}, {s}, 3) RGB images (3-D MedMNIST volumes are not supported)"
            )
        if images.shape[1:3] != (s, s):
            raise BenchError(
                f"{where} holds {images.shape[1]}x{images.shape[2]} images but "
                f"file_size={s}; set {OWNER}.file_size to the file's size"
            )
        if images.dtype != np.uint8:
            raise BenchError(f"{where} has dtype {images.dtype}; MedMNIST files store uint8 pixels")
        if len(images) != n_labels:
            raise BenchError(
                f"{where} has {len(images)} images but {split}_labels has {n_labels} rows; "
                "replace the file with an intact copy"
            )
        if len(images) == 0:
            raise BenchError(f"{where} is empty; replace the file with an intact copy")
        return images

    def describe(self) -> dict:
        """Configuration plus the per-class train counts (natural ones too when subsampled)."""
        info = {
            **super().describe(),
            "root": str(self.root_setting),
            "flag": self.flag,
            "file": npz_name(self.flag, self.file_size),
            "preprocess": {**self.preprocess.describe(), "grayscale": self.grayscale},
            "imbalance_ratio": self.imbalance_ratio,
            "seed": self.seed,
            "train_counts": np.bincount(
                self.labels("train")[self.rows("train")], minlength=self.n_classes
            ).tolist(),
        }
        if self.imbalance_ratio is not None:
            info["natural_train_counts"] = self.natural_train_counts
        return info


def _single_labels(raw: np.ndarray, where: str) -> np.ndarray:
    """(N,) int64 from (N,) or (N, 1) whole-number labels; multi-label, NaN or fractions refused."""
    if raw.ndim == 2 and raw.shape[1] > 1:
        raise BenchError(
            f"{OWNER}: {where} has {raw.shape[1]} labels per image (multi-label, like "
            "ChestMNIST); bench is single-label, choose a single-label flag"
        )
    if raw.ndim not in (1, 2):
        raise BenchError(f"{OWNER}: {where} has shape {raw.shape}; expected (N, 1) class indices")
    y = raw.reshape(-1)
    if y.dtype == bool or not np.issubdtype(y.dtype, np.number):
        raise BenchError(f"{OWNER}: {where} has dtype {y.dtype}; expected integer class indices")
    if np.issubdtype(y.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if len(bad):
            raise BenchError(
                f"{OWNER}: {where} has {len(bad)} label(s) that are NaN, infinite or not "
                f"whole numbers (first rows {bad[:5].tolist()}); replace the file"
            )
    return y.astype(np.int64)
