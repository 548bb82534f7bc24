"""The classifiers' input pipeline (bench.classify.batches): DataLoader workers read the same blocks
in the same order as the plain loop, so a seeded CPU run trains bit-identical weights either way;
uint8 image-cache rows become the same floats; the settings are checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_classifier import blobs

import gin
from bench.classify.batches import device_batches
from bench.classify.batches import loader_workers as workers_for
from bench.classify.fit import Protocol, build_classifier, concat_rows, embed, fit
from bench.config.loader import LoaderConfig
from bench.data.image_cache import attach
from bench.data.imagefiles import ImageFiles, Preprocess
from bench.errors import BenchError


@pytest.fixture
def loader_workers():
    """Bind `loader.workers` for one test (gin's global config, cleared afterwards)."""

    def bind(n: int) -> None:
        with gin.unlock_config():
            gin.bind_parameter("loader.workers", n)

    yield bind
    gin.clear_config()


def _png_files(tmp_path: Path, x: torch.Tensor) -> ImageFiles:
    paths = []
    for i, image in enumerate(x):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(paths[-1])
    return ImageFiles(paths, [p.name for p in paths], Preprocess(size=x.shape[-1]), "test")


def _fit(train_x, y, val_x, vy):
    protocol = Protocol(lr=1e-2, batch_size=8, max_epochs=2, patience=5, class_balanced_sampling=True)
    return fit(build_classifier("small_cnn", 1, 3, seed=0), train_x, y, val_x, vy, protocol, seed=0)


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.slow
def test_dataloader_workers_train_the_same_weights_as_the_plain_loop(tmp_path, loader_workers, cached):
    x, y = blobs(10)
    vx, vy = blobs(5, seed=1)
    files = _png_files(tmp_path, x)
    if cached:
        attach(tmp_path / "cache", files)
    mixed = concat_rows([files, vx])  # real files with in-memory rows, as augmented training reads them
    y_mixed = torch.cat([y, vy])
    plain_model, plain_history = _fit(mixed, y_mixed, files, y)
    loader_workers(2)
    model, history = _fit(mixed, y_mixed, files, y)
    assert history.train_loss == plain_history.train_loss and history.val_bacc == plain_history.val_bacc
    for (name, a), b in zip(plain_model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    assert np.array_equal(embed(model, files, batch_size=7), embed(plain_model, files, batch_size=7))


def test_worker_blocks_are_the_plain_blocks_in_order(tmp_path):
    x, _ = blobs(6)
    files = _png_files(tmp_path, x)
    attach(tmp_path / "cache", files)
    blocks = [torch.tensor([4, 9, 2]), slice(0, 5), torch.tensor([17])]
    cpu = torch.device("cpu")
    plain = list(device_batches(files, blocks, cpu, LoaderConfig(workers=0)))
    read = list(device_batches(files, blocks, cpu, LoaderConfig(workers=2, prefetch_factor=1)))
    assert [b.dtype for b in read] == [torch.float32] * 3
    assert all(torch.equal(a, b) for a, b in zip(plain, read))
    assert torch.equal(read[0], files[[4, 9, 2]]) and torch.equal(read[1], files[0:5])


def test_automatic_workers_and_bad_settings():
    assert workers_for(LoaderConfig(), torch.device("cpu")) == 0
    assert workers_for(LoaderConfig(workers=3), torch.device("cpu")) == 3
    assert workers_for(LoaderConfig(), torch.device("cuda")) >= 1
    with pytest.raises(BenchError, match="loader.workers"):
        LoaderConfig(workers=-1).check()
    with pytest.raises(BenchError, match="loader.prefetch_factor"):
        LoaderConfig(prefetch_factor=0).check()
