"""The memory-mapped latent cache: same values as encoding directly, reused, atomic, NaN-safe."""

import numpy as np
import pytest
import torch

from bench.encoders.pixel import PixelEncoder
from bench.errors import BenchError
from bench.pipeline.latent_cache import LATENTS, cache_folder, cached_latents
from bench.store.artifacts import MANIFEST


class CountingEncoder(PixelEncoder):
    """The pixel encoder, counting how many samples it encoded."""

    def __init__(self):
        super().__init__()
        self.seen = 0

    def encode(self, x):
        self.seen += len(x)
        return super().encode(x)


def test_cache_equals_direct_encoding_and_is_memory_mapped(tmp_path):
    x, y = torch.rand(103, 1, 4, 4), torch.arange(103) % 3
    enc = CountingEncoder()
    folder = cache_folder(tmp_path, "toy", "pixel", (1, 4, 4), "k1")
    assert folder.name == "toy-pixel-4x4-k1"
    z = cached_latents(folder, "k1", enc, x, y, batch_size=10)
    assert torch.equal(z, enc.encode(x)) and enc.seen == 2 * 103
    on_disk = np.load(folder / LATENTS, mmap_mode="r")
    assert isinstance(on_disk, np.memmap) and on_disk.shape == (103, 1, 4, 4)
    np.testing.assert_array_equal(np.load(folder / "labels.npy"), y.numpy())


def test_a_complete_cache_is_reused_and_an_incomplete_one_redone(tmp_path):
    x, y = torch.rand(20, 1, 2, 2), torch.zeros(20, dtype=torch.long)
    folder = tmp_path / "c"
    enc = CountingEncoder()
    cached_latents(folder, "k", enc, x, y)
    cached_latents(folder, "k", enc, x, y)
    assert enc.seen == 20  # the second call read the cache
    (folder / MANIFEST).unlink()  # e.g. a run killed while renaming
    z = cached_latents(folder, "k", enc, x, y)
    assert enc.seen == 40 and torch.equal(z, x * 2 - 1)
    cached_latents(folder, "other", enc, x, y)  # another config hash: re-encoded
    assert enc.seen == 60


def test_writing_to_the_returned_latents_leaves_the_cache_intact(tmp_path):
    x, y = torch.rand(8, 3), torch.zeros(8, dtype=torch.long)
    z = cached_latents(tmp_path / "c", "k", PixelEncoder(), x, y)
    z.zero_()  # copy-on-write map: in memory only
    assert torch.equal(cached_latents(tmp_path / "c", "k", PixelEncoder(), x, y), x * 2 - 1)


def test_nan_latents_name_the_sample_and_leave_no_cache(tmp_path):
    x, y = torch.rand(30, 2), torch.zeros(30, dtype=torch.long)
    x[17, 1] = float("nan")
    ids = [f"img{i}" for i in range(30)]
    with pytest.raises(BenchError, match="img17"):
        cached_latents(tmp_path / "c", "k", PixelEncoder(), x, y, ids=ids, batch_size=8)
    assert not (tmp_path / "c").exists() and list(tmp_path.iterdir()) == []
