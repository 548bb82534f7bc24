"""The on-disk latent cache: one memory-mapped float32 array per (dataset, encoder, resolution).

Latents are appended batch by batch to a `.npy` file and read back memory-mapped, so a 100k-image
training split is never held in RAM at once: training gathers its minibatches from the page
cache. The folder appears only when complete (artifacts.stage_dir), so an interrupted encode
leaves nothing that looks finished.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from bench.pipeline import stages
from bench.prior import require_finite
from bench.runtime import progress
from bench.store.artifacts import discard, is_complete, read_manifest, stage_dir
from bench.store.filelock import building

log = logging.getLogger(__name__)
LATENTS, LABELS = "latents.npy", "labels.npy"


def cache_folder(results_dir: Path, dataset: str, encoder: str, sample_shape: tuple, key: str) -> Path:
    """`<results>/cache/latents/<dataset>-<encoder>-<H>x<W>-<key>` (resolution readable in the name):
    the encode stage's artifact (bench.pipeline.stages)."""
    return stages.artifact(
        "encode",
        results=results_dir,
        dataset=dataset,
        encoder=encoder,
        resolution=stages.resolution(sample_shape),
        key=key,
    )


def load_latents(folder: Path) -> torch.Tensor:
    """The cached latents as a tensor over a copy-on-write memory map (nothing is read up front)."""
    return torch.from_numpy(np.load(Path(folder) / LATENTS, mmap_mode="c"))


def cached_latents(
    folder: Path,
    key: str,
    encoder,
    x,
    y: torch.Tensor,
    ids=None,
    batch_size: int = 256,
    info: dict | None = None,
) -> torch.Tensor:
    """Latents of `x` (a tensor or a lazy ImageFiles), encoded once per `key` and then reused.

    `info` goes into the cache's manifest (which dataset and encoder made it). Cells running side
    by side encode it once (bench.store.filelock.building): the others wait and load it.
    """
    with building(folder):
        return _cached_latents(folder, key, encoder, x, y, ids, batch_size, info)


def _cached_latents(folder: Path, key: str, encoder, x, y, ids, batch_size: int, info: dict | None):
    if is_complete(folder, key):
        cached = _readable(folder, len(y), _expected_shape(encoder, x))
        if cached is not None:
            return cached
        discard(folder)  # stage_dir keeps a folder that is complete for the key: drop it first
    elif read_manifest(folder) is not None:
        log.info(
            "latent cache %s was built from other data (or before bench fingerprinted it); encoding again",
            folder,
        )
    with stage_dir(folder, key, n=len(y), **(info or {})) as tmp:
        _encode_into(tmp / LATENTS, encoder, x, ids, batch_size)
        np.save(tmp / LABELS, y.numpy())
    return load_latents(folder)


def _readable(folder: Path, n: int, shape: tuple | None) -> torch.Tensor | None:
    """The cached latents, or None (with a warning) if the file is damaged: unreadable, of another
    length or latent shape, or holding a non-finite value.

    A cache can always be rebuilt, so a truncated or overwritten file is encoded again rather
    than failing every run that reads it. The finiteness check reads the file once, in chunks
    (training reads it many times over).
    """
    try:
        z = load_latents(folder)
    except (OSError, ValueError) as exc:
        log.warning("latent cache %s is unreadable (%s); encoding again", folder, exc)
        return None
    problem = None
    if len(z) != n:
        problem = f"holds {len(z)} latents for {n} samples"
    elif shape is not None and tuple(z.shape[1:]) != tuple(shape):
        problem = f"holds latents of shape {tuple(z.shape[1:])}, the encoder gives {tuple(shape)}"
    elif not _all_finite(z):
        problem = "holds a NaN or infinite value"
    if problem:
        log.warning("latent cache %s %s; encoding again", folder, problem)
        return None
    return z


def _all_finite(z: torch.Tensor, rows: int = 4096) -> bool:
    """Whether every latent is finite, checked `rows` at a time (bounded memory)."""
    return all(bool(torch.isfinite(z[i : i + rows]).all()) for i in range(0, len(z), rows))


def _expected_shape(encoder, x) -> tuple | None:
    """The latent shape the encoder gives one sample of `x`, or None if it cannot say."""
    try:
        return tuple(encoder.latent_shape(tuple(x.shape[1:])))
    except Exception:  # an encoder plugin without latent_shape: length and finiteness still checked
        return None


def _encode_into(path: Path, encoder, x, ids, batch_size: int) -> None:
    """Encode `x` batch by batch, appending each batch to a new .npy file at `path`.

    Plain sequential writes (no writable memory map) keep the resident memory at one batch; the
    .npy header is written once the first batch gives the latent shape.
    """
    n, f = len(x), None
    bar = progress.bar(range(0, n, batch_size), "encode", unit="batch", disable=n < 16 * batch_size)
    try:
        for i in bar:
            z = encoder.encode(x[i : i + batch_size]).float()
            require_finite(z, None if ids is None else ids[i : i + batch_size])
            if f is None:
                f = open(path, "wb")
                header = {"descr": "<f4", "fortran_order": False, "shape": (n, *z.shape[1:])}
                np.lib.format.write_array_header_2_0(f, header)
            f.write(z.numpy().astype("<f4", copy=False).tobytes())
    finally:
        if f is not None:
            f.close()
    if f is None:
        raise ValueError("cannot cache the latents of an empty split")
