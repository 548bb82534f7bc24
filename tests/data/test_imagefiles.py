"""Reading image files: preprocessing against hand computations, lazy indexing, load-time checks."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data.imagefiles import ImageFiles, Preprocess, flat_float64, unreadable
from bench.dataset import Split
from bench.errors import BenchError


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(array, mode=mode).save(path)
    return path


def test_unit_scaling_uses_the_stored_bit_depth(tmp_path):
    gray8 = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    gray16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    p8 = _save(tmp_path / "a.png", gray8)
    p16 = _save(tmp_path / "b.png", gray16)
    pre = Preprocess(size=8)
    with Image.open(p8) as im:
        np.testing.assert_allclose(pre(im)[0], gray8 / 255.0, atol=1e-6)
    with Image.open(p16) as im:
        np.testing.assert_allclose(pre(im)[0], gray16 / 65535.0, atol=1e-6)


def test_rgb_to_grayscale_follows_the_itu_r_601_luma(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    path = _save(tmp_path / "c.png", rgb)
    with Image.open(path) as im:
        gray = Preprocess(size=6)(im)[0]
        color = Preprocess(size=6, grayscale=False)(im)
    luma = rgb @ np.array([299, 587, 114]) / 1000 / 255
    np.testing.assert_allclose(gray, luma, atol=1 / 255)  # PIL rounds L to integers
    np.testing.assert_allclose(color, rgb.transpose(2, 0, 1) / 255.0, atol=1e-6)


def test_center_crop_and_resize_and_minmax(tmp_path):
    wide = np.zeros((8, 16), np.uint8)
    wide[:, 4:12] = 200  # the central 8 x 8 square is uniform
    path = _save(tmp_path / "w.png", wide)
    with Image.open(path) as im:
        centre = Preprocess(size=4)(im)
        squashed = Preprocess(size=4, crop="none")(im)
        stretched = Preprocess(size=8, crop="none", normalise="minmax")(im)
    np.testing.assert_allclose(centre, 200 / 255, atol=1e-6)
    # squashing keeps the black borders: the outer columns are darker than the centre ones
    assert squashed.shape == (1, 4, 4) and (squashed[0, :, 0] < squashed[0, :, 1] / 2).all()
    assert stretched.min() == 0.0 and stretched.max() == 1.0


def test_bad_preprocess_settings_are_one_line_errors():
    with pytest.raises(BenchError, match="size"):
        Preprocess(size=2).check("nih_lt")
    with pytest.raises(BenchError, match="normalise"):
        Preprocess(normalise="zscore").check("nih_lt")
    with pytest.raises(BenchError, match="crop"):
        Preprocess(crop="random").check("nih_lt")


@pytest.fixture
def files(tmp_path):
    paths = [_save(tmp_path / f"{i}.png", np.full((5, 5), i * 10, np.uint8)) for i in range(6)]
    return ImageFiles(paths, [f"id{i}" for i in range(6)], Preprocess(size=5), "toy")


def test_lazy_array_indexes_like_a_tensor(files):
    full = files[:]
    assert full.shape == files.shape == (6, 1, 5, 5)
    np.testing.assert_allclose(full[:, 0, 0, 0].numpy(), np.arange(6) * 10 / 255, atol=1e-6)
    assert torch.equal(files[2], full[2])
    assert torch.equal(files[1:4], full[1:4])
    mask = torch.tensor([True, False, True, False, False, True])
    assert torch.equal(files[mask], full[mask])
    assert torch.equal(files[torch.tensor([5, 0])], full[[5, 0]])
    assert files[torch.zeros(6, dtype=torch.bool)].shape == (0, 1, 5, 5)
    np.testing.assert_allclose(flat_float64(files), full.reshape(6, -1).double().numpy())


def test_split_subset_keeps_images_lazy(files):
    split = Split(files, torch.arange(6) % 2, ids=files.ids)
    sub = split.subset(split.y == 1)
    assert isinstance(sub.x, ImageFiles) and sub.x.ids == ["id1", "id3", "id5"] == sub.ids
    assert torch.equal(sub.x[:], files[:][1::2])
    eager = Split(files[:], split.y).subset(split.y == 1)  # tensors are indexed by row, as before
    assert torch.equal(eager.x, files[:][1::2])


def test_a_file_that_fails_to_decode_names_its_id(files):
    Path(files.paths[3]).write_bytes(Path(files.paths[3]).read_bytes()[:40])  # truncated PNG
    with pytest.raises(BenchError, match="cannot read image id3"):
        files[:]


def test_load_time_check_finds_missing_and_non_image_files(files, tmp_path):
    Path(files.paths[1]).unlink()
    Path(files.paths[4]).write_text("hello")
    assert unreadable(files.paths, "header") == [(1, "missing"), (4, "unreadable (UnidentifiedImageError)")]
    assert unreadable(files.paths, "exists") == [(1, "missing")]
