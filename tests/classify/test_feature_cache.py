"""Real-set features are computed once per (extractor, data) and reused by the next cell: the
second cell runs no network over the real splits, gets the same features, and a change of data,
of the image cache or of the extractor's weights computes them again."""

from __future__ import annotations

import numpy as np
import torch
from test_classifier import blobs
from test_classifier_loader import _png_files

from bench.classify.fit import build_classifier, embed
from bench.context import CellContext
from bench.data.image_cache import attach
from bench.data.imagefiles import ImageFiles
from bench.dataset import Split
from bench.metrics.features import FeatureExtractor


class CountingExtractor(FeatureExtractor):
    """A small-CNN extractor that counts the rows its network embeds."""

    def __init__(self, cache_dir, seed: int = 0):
        super().__init__(
            build_classifier("small_cnn", 1, 3, seed=seed), "small_cnn@toy", batch_size=8, cache_dir=cache_dir
        )
        self.rows = 0

    def embed(self, x) -> np.ndarray:
        self.rows += len(x)
        return super().embed(x)


def _cell(extractor, train: Split, test: Split, synthetic: Split, tmp_path) -> CellContext:
    return CellContext(None, train, test, synthetic, tmp_path, 0, extractor=lambda: extractor)


def test_a_second_cell_reuses_the_real_features_of_the_first(tmp_path):
    x, y = blobs(6)
    tx, ty = blobs(3, seed=1)
    sx, sy = blobs(2, seed=2)
    train, test = Split(_png_files(tmp_path, x), y), Split(tx, ty)
    cache = tmp_path / "real_features"
    first, second = CountingExtractor(cache), CountingExtractor(cache)  # two cells, same weights
    assert first.digest == second.digest
    a = _cell(first, train, test, Split(sx, sy), tmp_path)
    files = train.x  # the next cell loads the same files anew
    same_files = ImageFiles(files.paths, files.ids, files.preprocess, files.owner)
    b = _cell(second, Split(same_files, y), Split(tx.clone(), ty), Split(sx + 0.1, sy), tmp_path)
    for name in ("train", "test", "synthetic"):
        a.features(name)
    assert first.rows == len(train) + len(test) + len(sx)
    assert np.array_equal(b.features("train"), a.features("train"))
    assert np.array_equal(b.features("test"), a.features("test"))
    assert second.rows == 0  # read from the cache: no network ran over the real splits
    np.testing.assert_array_equal(b.features("train"), embed(first.model, train.x))
    b.features("synthetic")
    assert second.rows == len(sx)  # generated sets belong to their cell: never cached


def test_other_data_image_cache_or_weights_compute_the_features_again(tmp_path):
    x, y = blobs(5)
    cache = tmp_path / "real_features"
    files = _png_files(tmp_path, x)
    split = Split(files, y)
    base = CountingExtractor(cache)
    base.embed_split(split)
    fly = base.embed_split(split)
    assert base.rows == len(y)  # the second call was a read
    attach(tmp_path / "images", files)  # now read as uint8 cache rows: other values, another key
    quantised = base.embed_split(split)
    assert base.rows == 2 * len(y) and quantised.shape == fly.shape
    edited = Split(files.take(torch.arange(4)), y[:4])
    base.embed_split(edited)
    assert base.rows == 2 * len(y) + 4
    other = CountingExtractor(cache, seed=1)  # other weights
    assert other.digest != base.digest
    other.embed_split(split)
    assert other.rows == len(y)
