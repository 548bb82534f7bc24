"""The preprocessed uint8 image cache: the on-the-fly values to within 1/255 quantisation, built
once and reused, rebuilt when an image is edited or the file is damaged, shared by subsets."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data.image_cache import IMAGES, attach, cache_key, cached_images, prepare
from bench.data.imagefiles import ImageFiles, Preprocess
from bench.store.artifacts import read_manifest

HALF_LEVEL = 0.5 / 255 + 1e-6  # rounding to the nearest of 256 levels, plus float32 division error


def _files(tmp_path: Path, preprocess: Preprocess, n: int = 7) -> ImageFiles:
    """n non-square 8-bit PNGs of random pixels (so resizing gives values between the levels)."""
    rng, paths = np.random.default_rng(0), []
    for i in range(n):
        paths.append(tmp_path / f"{i}.png")
        shape = (23, 31) if preprocess.grayscale else (23, 31, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(paths[-1])
    return ImageFiles(paths, [p.name for p in paths], preprocess, "toy")


@pytest.mark.parametrize(
    "preprocess",
    [
        Preprocess(size=12),
        Preprocess(size=9, grayscale=False),
        Preprocess(size=12, normalise="minmax", crop="none"),
    ],
)
def test_cached_rows_are_the_on_the_fly_rows_rounded_to_255_levels(tmp_path, preprocess):
    files = _files(tmp_path, preprocess)
    fly = files[:]  # decoded from the files, float32, not quantised
    assert not torch.equal(fly * 255, (fly * 255).round())  # resizing leaves values between the levels
    attach(tmp_path / "cache", files)
    cached = files[:]
    assert cached.dtype == torch.float32 and cached.shape == fly.shape
    assert (cached - fly).abs().max() <= HALF_LEVEL
    # exactly the nearest level, computed independently of the cache code
    np.testing.assert_array_equal(files.raw(slice(None)).numpy(), np.rint(fly.numpy() * 255).astype(np.uint8))
    assert files.raw(2).dtype == torch.uint8 and torch.equal(files[2], cached[2])


def test_built_once_then_reused_and_shared_by_subsets(tmp_path):
    files = _files(tmp_path, Preprocess(size=8))
    folder = tmp_path / "cache"
    cached_images(folder, files)
    stamp = os.stat(folder / IMAGES).st_mtime_ns
    again = ImageFiles(files.paths, files.ids, files.preprocess, "toy")
    attach(folder, again)
    assert os.stat(folder / IMAGES).st_mtime_ns == stamp  # read, not rebuilt
    whole = again[:]
    sub = again.take(torch.tensor([5, 1, 4]))
    assert sub.cache is again.cache and torch.equal(sub[:], whole[[5, 1, 4]])
    assert torch.equal(sub.take([2, 0])[:], whole[[4, 5]])
    mask = torch.zeros(len(again), dtype=torch.bool)
    mask[[0, 6]] = True
    assert torch.equal(again[mask], whole[[0, 6]])
    # a pickled copy (a spawned DataLoader worker's) reopens the memory map instead of carrying pixels
    blob = pickle.dumps(sub)
    assert len(blob) < 2000 and torch.equal(pickle.loads(blob)[:], sub[:])


def test_an_edited_image_rebuilds_the_cache(tmp_path):
    files = _files(tmp_path, Preprocess(size=8))
    folder = tmp_path / "cache"
    attach(folder, files)
    old_key = read_manifest(folder)["config_hash"]
    Image.fromarray(np.full((23, 31), 200, np.uint8)).save(files.paths[3])
    st = os.stat(files.paths[3])
    os.utime(files.paths[3], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later edit, whatever the clock
    edited = ImageFiles(files.paths, files.ids, files.preprocess, "toy")
    assert cache_key(edited) != old_key
    attach(folder, edited)
    assert read_manifest(folder)["config_hash"] == cache_key(edited)
    np.testing.assert_allclose(edited[3].numpy(), 200 / 255, atol=HALF_LEVEL)
    assert torch.equal(edited[[0, 1, 2]], files[[0, 1, 2]])  # the untouched rows are unchanged


def test_a_damaged_cache_file_is_rebuilt(tmp_path):
    files = _files(tmp_path, Preprocess(size=8))
    folder = tmp_path / "cache"
    expected = attach(folder, files)[:]
    with open(folder / IMAGES, "r+b") as f:
        f.truncate(200)  # header and a few pixels left
    again = attach(folder, ImageFiles(files.paths, files.ids, files.preprocess, "toy"))
    assert torch.equal(again[:], expected)


def test_a_nan_image_is_a_one_line_error_not_a_level_and_leaves_no_cache(tmp_path):
    """uint8 has no NaN: quantising would turn the bad pixel into level 0 and hide it from every
    later check, so the build refuses the image instead."""
    from bench.errors import BenchError

    files = _files(tmp_path, Preprocess(size=8), n=4)
    pixels = np.full((23, 31), 0.5, np.float32)
    pixels[2, 3] = np.nan
    Image.fromarray(pixels, mode="F").save(tmp_path / "2.tif")
    os.replace(tmp_path / "2.tif", files.paths[2])
    with pytest.raises(BenchError, match=r"toy: image 2.png .* NaN or infinite value; replace or remove"):
        attach(tmp_path / "cache", files)
    assert not (tmp_path / "cache" / IMAGES).exists()


def test_prepare_caches_every_split_a_cell_reads(tmp_path):
    from test_cpu_smoke import nih_tree

    from bench.datasets.nih_lt import NIHLT

    root = nih_tree(tmp_path / "nih")
    ds = NIHLT(root=str(root), metadata_file=None, size=16)
    fly = {s: ds.load(s).x[:] for s in ("train", "balanced-test", "balanced-val")}
    folders = prepare(ds, tmp_path / "res")
    assert sorted(f.name.split("-16px")[0] for f in folders) == [
        "nih_lt-balanced-test",
        "nih_lt-balanced-val",
        "nih_lt-train",
    ]
    for split, values in fly.items():
        x = ds.load(split).x
        assert x.cache is not None and (x[:] - values).abs().max() <= HALF_LEVEL
    # another cell's dataset object finds the caches complete and reads the same bytes
    other = NIHLT(root=str(root), metadata_file=None, size=16)
    assert prepare(other, tmp_path / "res") == folders
    assert torch.equal(other.load("train").x.raw(slice(None)), ds.load("train").x.raw(slice(None)))
