"""The preprocessed image cache: each file-backed split decoded once, kept as memory-mapped uint8.

Real images (NIH/MIMIC PNG and JPEG files of about 1024 x 1024) would otherwise be decoded and
resized again for every epoch of every classifier (the feature network, each downstream seed,
remedy and augmented run). `prepare` writes every split a cell reads, once per (dataset root,
split, preprocessing), to
`results/cache/images/<dataset>-<split>-<size>px-<channels>ch-<hash>/images.npy`: an
(N, C, size, size) uint8 array of `quantise(preprocess(image))`, in the split's row order, read
back memory-mapped, so a 100k-image split never sits in RAM and a mini-batch is a page-cache
gather. Its values are the on-the-fly preprocessing rounded to 1/255 levels (within 0.5 / 255).

Like the latent cache (bench.pipeline.latent_cache) the folder appears only when complete
(bench.store.artifacts.stage_dir) and is keyed by the files' identity (path, size, modification
time, in order, as bench.store.fingerprint does) and the preprocessing: an edited, added or
reordered image rebuilds it in the same folder; a damaged file (unreadable, another length or
shape) is rebuilt rather than trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from bench.data.imagefiles import ImageFiles, quantise
from bench.errors import BenchError
from bench.runtime import progress
from bench.runtime.threads import usable_cores
from bench.store.artifacts import discard, is_complete, read_manifest, stage_dir
from bench.store.filelock import building
from bench.store.fingerprint import file_identity

log = logging.getLogger(__name__)
IMAGES = "images.npy"
VERSION = 1  # of the stored format and rounding: a change rebuilds every cache
BUILD_BATCH = 256  # images decoded per write: resident memory while building stays at one batch


def cache_folder(results_dir: Path, dataset: str, split: str, files: ImageFiles, root: str) -> Path:
    """`<results>/cache/images/<dataset>-<split>-<size>px-<C>ch-<hash of root + preprocessing>`.

    The folder depends on the configuration only, so an edited dataset replaces its cache in
    place instead of leaving a stale one beside it.
    """
    p = files.preprocess
    name = _digest({"root": root, "split": split, **p.describe()})[:12]
    return Path(results_dir) / "cache" / "images" / f"{dataset}-{split}-{p.size}px-{p.channels}ch-{name}"


def cache_key(files: ImageFiles) -> str:
    """The key of the cached content: format version, preprocessing, every file's identity in order."""
    h = hashlib.sha256(
        json.dumps({"version": VERSION, **files.preprocess.describe()}, sort_keys=True).encode()
    )
    for path in files.paths:
        h.update(file_identity(path).encode())
    return h.hexdigest()[:16]


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def cached_images(folder: Path, files: ImageFiles, threads: int | None = None) -> np.ndarray:
    """The (N, C, size, size) uint8 cache of `files`, built (decoding on `threads` threads, default
    every usable core) when missing, stale or damaged, then memory-mapped read-only. Cells side by
    side build it once (bench.store.filelock.building)."""
    with building(folder):
        return _cached_images(folder, files, threads)


def _cached_images(folder: Path, files: ImageFiles, threads: int | None) -> np.ndarray:
    key = cache_key(files)
    if is_complete(folder, key):
        cached = _readable(folder, files)
        if cached is not None:
            return cached
        discard(folder)  # stage_dir keeps a folder that is complete for the key: drop it first
    elif read_manifest(folder) is not None:
        log.info("image cache %s was built from other files; decoding them again", folder)
    with stage_dir(
        folder,
        key,
        n=len(files),
        shape=list(files.shape[1:]),
        owner=files.owner,
        preprocess=files.preprocess.describe(),
    ) as tmp:
        _write(tmp / IMAGES, files, threads or usable_cores())
    return np.load(Path(folder) / IMAGES, mmap_mode="r")


def attach(folder: Path, files: ImageFiles, threads: int | None = None) -> ImageFiles:
    """`files`, reading from now on from its cache in `folder` (built first when needed)."""
    files.use_cache(cached_images(folder, files, threads), np.arange(len(files)))
    return files


def prepare(dataset, results_dir: Path) -> list[Path]:
    """Build (or find) and attach the image cache of every split of `dataset` that a cell reads:
    the training, evaluation and validation splits. Datasets whose splits are not image files
    (the embedded benchmarks hold tensors) are left alone. Returns the cache folders.

    Run before a cell's stages (under `distributed.main_first` on several processes: rank 0
    builds, the other ranks then attach the complete cache).
    """
    names = [getattr(dataset, key, None) for key in ("train_split", "eval_split", "val_split")]
    folders = []
    for split in dict.fromkeys(n for n in names if n):
        try:
            files = dataset.load(split).x
        except BenchError as exc:  # an unusable validation split fails where it is needed, if it is
            log.info("image cache: split %r of %s not cached (%s)", split, dataset.name, exc)
            continue
        if not isinstance(files, ImageFiles):
            return folders
        root = str(dataset.describe().get("root", ""))
        folders.append(cache_folder(results_dir, dataset.name, split, files, root))
        attach(folders[-1], files)
    return folders


def _readable(folder: Path, files: ImageFiles) -> np.ndarray | None:
    """The cached array, or None (logged) when it is unreadable or of another length or shape."""
    try:
        array = np.load(Path(folder) / IMAGES, mmap_mode="r")
    except (OSError, ValueError) as exc:
        log.warning("image cache %s is unreadable (%s); decoding the images again", folder, exc)
        return None
    if array.dtype != np.uint8 or tuple(array.shape) != tuple(files.shape):
        log.warning(
            "image cache %s holds %s %s, the split needs %s uint8; decoding the images again",
            folder,
            tuple(array.shape),
            array.dtype,
            tuple(files.shape),
        )
        return None
    return array


def _write(path: Path, files: ImageFiles, threads: int) -> None:
    """Decode `files` batch by batch into a new uint8 .npy file (sequential writes, one batch resident)."""
    uncached = ImageFiles(files.paths, files.ids, files.preprocess, files.owner)  # never read a stale cache
    n = len(uncached)
    bar = progress.bar(
        range(0, n, BUILD_BATCH), f"image cache ({files.owner})", unit="batch", disable=n < 8 * BUILD_BATCH
    )
    with open(path, "wb") as f:
        np.lib.format.write_array_header_2_0(
            f, {"descr": "|u1", "fortran_order": False, "shape": tuple(uncached.shape)}
        )
        for i in bar:
            rows = uncached.raw(slice(i, i + BUILD_BATCH), threads=threads).numpy()
            _require_finite(rows, uncached, i)
            f.write(np.ascontiguousarray(quantise(rows)).tobytes())


def _require_finite(rows: np.ndarray, files: ImageFiles, start: int) -> None:
    """A NaN or infinite pixel is bad data, not a level: uint8 has no NaN, so quantising would hide
    it (as 0) from every check after the cache. One line naming the first such image."""
    bad = ~np.isfinite(rows.reshape(len(rows), -1)).all(axis=1)
    if bad.any():
        i = start + int(np.flatnonzero(bad)[0])
        raise BenchError(
            f"{files.owner}: image {files.ids[i]} ({files.paths[i]}) holds a NaN or infinite "
            "value; replace or remove the file"
        )
