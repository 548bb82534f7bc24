"""phantom_lt: a procedurally generated long-tailed chest-X-ray phantom, bench's default image benchmark.

Ten CXR-like classes with hidden subtypes, patients, and acquisition confounders (view and
scanner) that are partly aligned with the subtypes: what NIH-CXR-LT has, but known exactly,
CPU-sized and rendered in about a second (bench.datasets.phantom_lt.phantom draws the pictures).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from bench.config.checks import is_int, is_real, require
from bench.data.longtail import allocate, exponential_profile
from bench.dataset import Dataset, Split
from bench.datasets.phantom_lt.phantom import (
    CATALOGUE,
    SCANNERS,
    acquire,
    acquisition_probabilities,
    around,
    draw_patients,
    grid,
    image_anatomy,
    local,
    render_anatomy,
)
from bench.errors import BenchError
from bench.registry import register_dataset

SPLITS = ("train", "balanced-val", "balanced-test")
_NOISE = 0  # sub-stream of a split's seed that draws only pixel noise


@dataclass
class _Generated:
    """One split as numpy arrays plus its metadata table (patient order)."""

    x: np.ndarray  # (N, 1, S, S) float32
    y: np.ndarray  # (N,) int64
    subclass: np.ndarray  # (N,) int64
    meta: pd.DataFrame
    ids: list[str]


@register_dataset("phantom_lt")
class PhantomLT(Dataset):
    """Long-tailed CXR phantom: (1, size, size) images in [0, 1] with subtypes, patients and metadata.

    Splits follow LongTailCXR: "train" follows the exponential profile (`n_max` "No Finding"
    images down to n_max / `imbalance_ratio` for the rarest class); "balanced-val" and
    "balanced-test" hold `n_val_per_class` / `n_test_per_class` images per class. Each split
    has its own patients (1 to `max_images_per_patient` images each, sharing the patient's
    build), so splits are patient-disjoint, and its own random stream, so loading one never
    depends on loading another. Subtype shares inside a class are fixed (see
    bench.datasets.phantom_lt.phantom.CATALOGUE) and every subtype occurs in every split. `confounding` in [0, 1]
    sets how strongly a subtype shifts the odds of an AP view and of its preferred scanner;
    `noise` scales every scanner's noise level. `seed` is the data seed (with
    data_split.tie_to_seed, the generative seed draws the splits instead).
    """

    kind = "image"
    draws_split = True
    train_split = "train"
    eval_split = "balanced-test"
    val_split = "balanced-val"
    class_names = [f.name for f in CATALOGUE]
    subtype_names = [[s.name for s in f.subtypes] for f in CATALOGUE]

    def __init__(
        self,
        seed: int = 0,
        size: int = 32,
        n_max: int = 1500,
        imbalance_ratio: float = 100.0,
        n_val_per_class: int = 15,
        n_test_per_class: int = 30,
        noise: float = 1.0,
        confounding: float = 0.6,
        max_images_per_patient: int = 4,
    ):
        _check_settings(
            seed,
            size,
            n_max,
            imbalance_ratio,
            n_val_per_class,
            n_test_per_class,
            noise,
            confounding,
            max_images_per_patient,
        )
        self.seed, self.size, self.n_max, self.imbalance_ratio = seed, size, n_max, imbalance_ratio
        self.n_val_per_class, self.n_test_per_class = n_val_per_class, n_test_per_class
        self.noise, self.confounding, self.max_images_per_patient = noise, confounding, max_images_per_patient
        self.split_counts = {
            "train": exponential_profile(n_max, self.n_classes, imbalance_ratio),
            "balanced-val": [n_val_per_class] * self.n_classes,
            "balanced-test": [n_test_per_class] * self.n_classes,
        }
        self._check_tail()
        self._cache: dict[str, _Generated] = {}

    def load(self, split: str) -> Split:
        """One split as fresh tensors (the cache is never handed out, so callers may modify them)."""
        if split not in SPLITS:
            raise BenchError(f"phantom_lt has splits {list(SPLITS)}, not {split!r}")
        if split not in self._cache:
            self._cache[split] = self._generate(split)
        g = self._cache[split]
        return Split(
            torch.tensor(g.x), torch.tensor(g.y), torch.tensor(g.subclass), g.meta.copy(), list(g.ids)
        )

    def subtype_counts(self, split: str) -> list[list[int]]:
        """Images per subtype of each class in `split` (known without rendering)."""
        return [allocate(n, f.weights) for n, f in zip(self.split_counts[split], CATALOGUE)]

    def describe(self) -> dict:
        """Configuration plus per-class counts of each split, subtype names and train subtype counts."""
        return {
            **super().describe(),
            "seed": self.seed,
            "size": self.size,
            "n_max": self.n_max,
            "imbalance_ratio": self.imbalance_ratio,
            "noise": self.noise,
            "confounding": self.confounding,
            "max_images_per_patient": self.max_images_per_patient,
            "train_counts": self.split_counts["train"],
            "val_counts": self.split_counts["balanced-val"],
            "test_counts": self.split_counts["balanced-test"],
            "subtypes": self.subtype_names,
            "train_subtype_counts": self.subtype_counts("train"),
        }

    # -- generation ---------------------------------------------------------------------------
    def _generate(self, split: str) -> _Generated:
        """Labels, patients, acquisition and pixels of one split from its own random stream."""
        stream = SPLITS.index(split) + 1
        seed = self.split_seed(self.seed)
        rng = np.random.default_rng([seed, stream])
        y, sub = self._labels(split)
        order = rng.permutation(len(y))  # images reach patients in random class order
        y, sub = y[order], sub[order]
        patient = self._patients(len(y), rng)
        patients = draw_patients(int(patient[-1]) + 1, rng)
        ap, scanner = self._acquisition(y, sub, rng)
        exposure = around(1.0, 0.03, len(y), rng)  # technique varies from film to film
        anatomy = image_anatomy(patients, patient, ap, rng)
        density = self._render(anatomy, y, sub, rng)
        noise_rng = np.random.default_rng([seed, stream, _NOISE])
        x = acquire(density, scanner, exposure, self.noise, noise_rng)
        meta, ids = self._records(stream, patients, patient, ap, scanner)
        return _Generated(x[:, None], y, sub, meta, ids)

    @staticmethod
    def _records(stream: int, patients, patient: np.ndarray, ap, scanner) -> tuple[pd.DataFrame, list[str]]:
        """The metadata table and image ids ("P00042_001": the patient's second image).

        Patient numbers interleave by split (train 0, 3, 6, ...; balanced-val 1, 4, ...), so
        ids never collide across splits and do not depend on the other splits' sizes.
        """
        numbers = len(SPLITS) * np.arange(int(patient[-1]) + 1) + stream - 1
        subject = np.array([f"P{k:05d}" for k in numbers])[patient]
        meta = pd.DataFrame(
            {
                "subject": subject,
                "sex": patients.sex[patient],
                "age": patients.age[patient],
                "view": np.where(ap, "AP", "PA"),
                "scanner": np.array([s.name for s in SCANNERS])[scanner],
            }
        )
        visit = np.arange(len(patient)) - np.searchsorted(patient, patient)  # patient is sorted
        return meta, [f"{s}_{k:03d}" for s, k in zip(subject, visit)]

    def _labels(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Class and subtype of every image, class-major, subtype counts fixed by `allocate`."""
        counts = self.subtype_counts(split)
        y = np.concatenate([np.full(sum(k), c) for c, k in enumerate(counts)]).astype(np.int64)
        sub = np.concatenate([np.repeat(np.arange(len(k)), k) for k in counts]).astype(np.int64)
        return y, sub

    def _patients(self, n: int, rng) -> np.ndarray:
        """Patient index of each of n images, non-decreasing (a patient's images are adjacent).

        Images per patient are 1..max_images_per_patient with halving odds; the last patient
        is cut short where the split ends.
        """
        sizes = np.arange(1, self.max_images_per_patient + 1)
        odds = 0.5 ** (sizes - 1)
        per_patient = rng.choice(sizes, size=n, p=odds / odds.sum())
        return np.repeat(np.arange(n), per_patient)[:n]

    def _acquisition(self, y: np.ndarray, sub: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
        """AP view (bool) and scanner index per image, drawn with the subtype's leanings."""
        k_max = max(len(f.subtypes) for f in CATALOGUE)
        p_ap = np.zeros((self.n_classes, k_max))
        p_scanner = np.zeros((self.n_classes, k_max, len(SCANNERS)))
        for c, finding in enumerate(CATALOGUE):
            k = len(finding.subtypes)
            p_ap[c, :k], p_scanner[c, :k] = acquisition_probabilities(finding, self.confounding)
        ap = rng.random(len(y)) < p_ap[y, sub]
        cumulative = np.cumsum(p_scanner[y, sub], axis=1)
        scanner = np.minimum((rng.random(len(y))[:, None] > cumulative).sum(1), len(SCANNERS) - 1)
        return ap, scanner

    def _render(self, anatomy, y: np.ndarray, sub: np.ndarray, rng) -> np.ndarray:
        """Density maps: anatomy changed by each class's finding, then findings overlaid."""
        rows = [np.flatnonzero(y == c) for c in range(self.n_classes)]
        for c, finding in enumerate(CATALOGUE):
            if finding.adjust is not None:
                anatomy = anatomy.put(rows[c], finding.adjust(anatomy.take(rows[c]), sub[rows[c]], rng))
        u, v = grid(self.size)
        density = render_anatomy(u, v, anatomy)
        for c, finding in enumerate(CATALOGUE):
            if finding.overlay is not None:
                part = anatomy.take(rows[c])
                lu, lv = local(u, v, part)
                density[rows[c]] += finding.overlay(lu, lv, part, sub[rows[c]], rng)
        return density

    def _check_tail(self) -> None:
        """Every class needs at least one train image per subtype."""
        for name, n, finding in zip(self.class_names, self.split_counts["train"], CATALOGUE):
            if n < len(finding.subtypes):
                raise BenchError(
                    f"phantom_lt: n_max={self.n_max} and imbalance_ratio={self.imbalance_ratio} leave "
                    f"{name!r} {n} train image(s), fewer than its {len(finding.subtypes)} subtypes; "
                    f"raise phantom_lt.n_max or lower phantom_lt.imbalance_ratio"
                )


def _check_settings(seed, size, n_max, ratio, n_val, n_test, noise, confounding, max_images) -> None:
    """One-line BenchErrors naming the gin setting that is out of range."""
    k_max = max(len(f.subtypes) for f in CATALOGUE)
    checks = [
        (is_int(seed), f"phantom_lt.seed must be an integer, got {seed!r}"),
        (
            is_int(size) and 16 <= size <= 1024 and size % 2 == 0,
            f"phantom_lt.size must be an even integer in [16, 1024] (2x2 patches need even sides; a synthetic "
            f"phantom gains nothing beyond), got {size!r}",
        ),
        (is_int(n_max) and n_max >= 1, f"phantom_lt.n_max must be an integer >= 1, got {n_max!r}"),
        (is_real(ratio) and ratio >= 1, f"phantom_lt.imbalance_ratio must be a number >= 1, got {ratio!r}"),
        (
            is_int(n_val) and n_val >= k_max,
            f"phantom_lt.n_val_per_class must be an integer >= {k_max} (one per subtype), got {n_val!r}",
        ),
        (
            is_int(n_test) and n_test >= k_max,
            f"phantom_lt.n_test_per_class must be an integer >= {k_max} (one per subtype), got {n_test!r}",
        ),
        (is_real(noise) and noise >= 0, f"phantom_lt.noise must be a number >= 0, got {noise!r}"),
        (
            is_real(confounding) and 0 <= confounding <= 1,
            f"phantom_lt.confounding must be in [0, 1], got {confounding!r}",
        ),
        (
            is_int(max_images) and max_images >= 1,
            f"phantom_lt.max_images_per_patient must be an integer >= 1, got {max_images!r}",
        ),
    ]
    require(checks)
