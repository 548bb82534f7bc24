"""Encoders against independent references: numpy for pixel, plain diffusers for the FLUX VAE."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from tiny_vae import SCALE, SHIFT, tiny_flux_vae

import gin
from bench.encoders.flux_vae import FLUX_SCALING_FACTOR, FLUX_SHIFT_FACTOR, FluxVAEEncoder
from bench.encoders.pixel import PixelEncoder
from bench.errors import BenchError
from bench.registry import encoders


@pytest.fixture(scope="module")
def saved_vae(tmp_path_factory):
    """(directory the tiny VAE was saved to, the in-memory reference model)."""
    vae = tiny_flux_vae()
    path = tmp_path_factory.mktemp("flux") / "vae"
    vae.save_pretrained(path)
    return path, vae


def copy_with_config(src, dst, **changes):
    """Copy a saved VAE to `dst`, setting config keys (None deletes the key)."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    for key, value in changes.items():
        config.pop(key) if value is None else config.__setitem__(key, value)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def images(n=2, channels=3, size=16, seed=0):
    """Deterministic images in [0, 1]."""
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def reference_latents(vae, x, scale=SCALE, shift=SHIFT):
    """(posterior mean of 2x - 1 - shift) * scale, computed directly with diffusers."""
    return (vae.encode(2 * x - 1).latent_dist.mean - shift) * scale


@torch.no_grad()
def reference_images(vae, latent, scale=SCALE, shift=SHIFT):
    """Decode latent / scale + shift with diffusers and map [-1, 1] back to [0, 1]."""
    return ((vae.decode(latent / scale + shift).sample + 1) / 2).clamp(0, 1)


# -- FLUX VAE -------------------------------------------------------------------------------


def test_encode_matches_diffusers_posterior_mean(saved_vae):
    path, vae = saved_vae
    encoder = FluxVAEEncoder(path=str(path), device="cpu")
    x = images()
    z = encoder.encode(x)
    torch.testing.assert_close(z, reference_latents(vae, x), rtol=1e-5, atol=1e-6)
    assert torch.equal(z, encoder.encode(x))  # the mean, not a posterior sample
    assert z.dtype == torch.float32 and not z.requires_grad


def test_batched_equals_unbatched(saved_vae):
    path, _ = saved_vae
    x = images(n=5, seed=1)
    whole = FluxVAEEncoder(path=str(path), device="cpu", batch_size=16)
    chunked = FluxVAEEncoder(path=str(path), device="cpu", batch_size=2)
    z = whole.encode(x)
    torch.testing.assert_close(chunked.encode(x), z, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(chunked.decode(z), whole.decode(z), rtol=1e-6, atol=1e-6)


def test_latent_shape_matches_output(saved_vae):
    path, _ = saved_vae
    encoder = FluxVAEEncoder(path=str(path), device="cpu")
    assert encoder.latent_shape((3, 16, 16)) == tuple(encoder.encode(images())[0].shape) == (16, 2, 2)


def test_latent_shape_non_square_and_indivisible(saved_vae):
    path, _ = saved_vae
    encoder = FluxVAEEncoder(path=str(path), device="cpu")
    x = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(2))
    assert encoder.latent_shape((3, 24, 32)) == tuple(encoder.encode(x).shape[1:]) == (16, 3, 4)
    with pytest.raises(BenchError, match="divisible by 8"):
        encoder.latent_shape((3, 20, 16))


def test_decode_matches_diffusers(saved_vae):
    path, vae = saved_vae
    encoder = FluxVAEEncoder(path=str(path), device="cpu")
    latent = encoder.encode(images())
    decoded = encoder.decode(latent)
    assert decoded.shape == (2, 3, 16, 16)
    torch.testing.assert_close(decoded, reference_images(vae, latent), rtol=1e-5, atol=1e-6)


def test_grayscale_is_repeated_to_rgb_and_restored(saved_vae):
    path, vae = saved_vae
    encoder = FluxVAEEncoder(path=str(path), device="cpu")
    gray = images(channels=1, seed=3)
    latent = encoder.encode(gray)
    torch.testing.assert_close(latent, reference_latents(vae, gray.repeat(1, 3, 1, 1)), rtol=1e-5, atol=1e-6)
    decoded = encoder.decode(latent)
    assert decoded.shape == (2, 1, 16, 16)
    expected = reference_images(vae, latent).mean(dim=1, keepdim=True)
    torch.testing.assert_close(decoded, expected, rtol=1e-5, atol=1e-6)


def test_latent_shape_sets_channels_for_decode(saved_vae):
    path, _ = saved_vae
    encoder = FluxVAEEncoder(path=str(path), device="cpu")
    encoder.latent_shape((1, 16, 16))
    assert encoder.decode(torch.zeros(1, 16, 2, 2)).shape == (1, 1, 16, 16)


def test_wrong_channel_count_is_a_bench_error(saved_vae):
    path, _ = saved_vae
    with pytest.raises(BenchError, match="1- or 3-channel"):
        FluxVAEEncoder(path=str(path), device="cpu").encode(torch.rand(1, 2, 16, 16))


@pytest.mark.parametrize("path", [None, "", "does/not/exist"])
def test_missing_path_tells_user_what_to_set(path):
    encoder = FluxVAEEncoder(path=path, device="cpu")
    for call in (
        lambda: encoder.encode(images()),
        lambda: encoder.latent_shape((3, 16, 16)),
        encoder.cache_key,
    ):
        with pytest.raises(BenchError, match=r"flux_vae\.path=/local/dir"):
            call()


def test_directory_without_vae_config(tmp_path):
    with pytest.raises(BenchError, match=r"no VAE config\.json.*flux_vae\.path=/local/dir"):
        FluxVAEEncoder(path=str(tmp_path)).encode(images())


def test_model_root_hints_at_vae_subfolder(saved_vae, tmp_path):
    path, vae = saved_vae
    shutil.copytree(path, tmp_path / "vae")
    with pytest.raises(BenchError, match="subfolder='vae'"):
        FluxVAEEncoder(path=str(tmp_path)).latent_shape((3, 16, 16))
    encoder = FluxVAEEncoder(path=str(tmp_path), subfolder="vae", device="cpu")
    torch.testing.assert_close(
        encoder.encode(images()), reference_latents(vae, images()), rtol=1e-5, atol=1e-6
    )


def test_config_without_weights_is_a_bench_error(saved_vae, tmp_path):
    path, _ = saved_vae
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(BenchError, match=r"cannot load the VAE.*flux_vae\.path=/local/dir"):
        FluxVAEEncoder(path=str(tmp_path), device="cpu").encode(images())


def test_a_vae_saved_as_a_pickle_is_refused_never_unpickled(tmp_path):
    """Only safetensors weights load: a pickled .bin could run code while it loads."""
    tiny_flux_vae().save_pretrained(tmp_path / "vae", safe_serialization=False)
    assert [p.suffix for p in (tmp_path / "vae").glob("diffusion_pytorch_model.*")] == [".bin"]
    with pytest.raises(BenchError, match=r"cannot load the VAE"):
        FluxVAEEncoder(path=str(tmp_path / "vae"), device="cpu").encode(images())
    tiny_flux_vae().save_pretrained(tmp_path / "safe")  # the same model as safetensors loads
    assert FluxVAEEncoder(path=str(tmp_path / "safe"), device="cpu").encode(images()).shape[0] == len(
        images()
    )


def test_every_weight_loader_of_bench_asks_for_safetensors():
    """diffusers falls back to a pickled .bin where its defaults allow it; bench's loaders never let it."""
    import ast
    from pathlib import Path

    import bench

    calls = []
    for path in Path(bench.__file__).resolve().parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            f = getattr(node, "func", None)
            if isinstance(node, ast.Call) and isinstance(f, ast.Attribute) and f.attr == "from_pretrained":
                if isinstance(f.value, ast.Name) and f.value.id in (
                    "AutoencoderKL",
                    "FluxTransformer2DModel",
                ):
                    safe = any(
                        k.arg == "use_safetensors" and getattr(k.value, "value", None) is True
                        for k in node.keywords
                    )
                    calls.append((path.name, node.lineno, safe))
    assert calls and all(safe for *_, safe in calls), calls


def test_config_of_another_model_is_rejected(saved_vae, tmp_path):
    path, _ = saved_vae
    other = copy_with_config(path, tmp_path / "t", _class_name="FluxTransformer2DModel")
    with pytest.raises(BenchError, match="not an AutoencoderKL"):
        FluxVAEEncoder(path=str(other)).encode(images())


def test_missing_factors_fall_back_to_flux_constants(saved_vae, tmp_path, caplog):
    path, vae = saved_vae
    bare = copy_with_config(path, tmp_path / "bare", scaling_factor=None, shift_factor=None)
    encoder = FluxVAEEncoder(path=str(bare), device="cpu")
    with caplog.at_level(logging.INFO, logger="bench.encoders.flux_vae"):
        latent = encoder.encode(images())
    assert encoder.factors() == (FLUX_SCALING_FACTOR, FLUX_SHIFT_FACTOR) == (0.3611, 0.1159)
    assert "FLUX default" in caplog.text
    torch.testing.assert_close(latent, reference_latents(vae, images(), 0.3611, 0.1159), rtol=1e-5, atol=1e-6)


def test_factors_in_config_are_used(saved_vae, tmp_path):
    path, vae = saved_vae
    custom = copy_with_config(path, tmp_path / "custom", scaling_factor=0.5, shift_factor=-0.25)
    encoder = FluxVAEEncoder(path=str(custom), device="cpu")
    latent = encoder.encode(images())
    torch.testing.assert_close(latent, reference_latents(vae, images(), 0.5, -0.25), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        encoder.decode(latent), reference_images(vae, latent, 0.5, -0.25), rtol=1e-5, atol=1e-6
    )


def test_cache_key_identifies_weights_factors_and_dtype(saved_vae, tmp_path):
    path, _ = saved_vae
    key = FluxVAEEncoder(path=str(path)).cache_key()
    assert json.loads(json.dumps(key)) == key
    assert key["path"] == str(path.resolve()) and key["dtype"] == "float32"
    assert (key["scaling_factor"], key["shift_factor"]) == (SCALE, SHIFT)
    custom = copy_with_config(path, tmp_path / "custom", scaling_factor=0.5)
    assert FluxVAEEncoder(path=str(custom)).cache_key()["scaling_factor"] == 0.5
    assert FluxVAEEncoder(path=str(path), dtype="bfloat16").cache_key() != key


def test_bad_dtype_is_a_bench_error():
    with pytest.raises(BenchError, match="flux_vae.dtype"):
        FluxVAEEncoder(path="x", dtype="float8")


# -- pixel ------------------------------------------------------------------------------------


def test_pixel_maps_unit_interval_to_symmetric_and_back():
    x = images(n=3, channels=1, seed=4)
    encoder = PixelEncoder()
    z = encoder.encode(x)
    np.testing.assert_allclose(z.numpy(), 2.0 * x.numpy() - 1.0, rtol=1e-6, atol=1e-7)
    ends = encoder.encode(torch.tensor([0.0, 1.0]))
    assert ends.tolist() == [-1.0, 1.0]
    torch.testing.assert_close(encoder.decode(z), x)
    assert encoder.latent_shape((1, 16, 16)) == (1, 16, 16)


def test_pixel_vector_binding_is_identity():
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(5)) * 3
    encoder = PixelEncoder(scale=1.0, shift=0.0)
    assert torch.equal(encoder.encode(x), x) and torch.equal(encoder.decode(x), x)
    assert encoder.cache_key() != PixelEncoder().cache_key()


def test_pixel_is_registered_and_gin_configurable():
    assert encoders.get("pixel") is PixelEncoder and encoders.get("flux_vae") is FluxVAEEncoder
    try:
        gin.parse_config(["pixel.scale = 1.0", "pixel.shift = 0.0"])
        encoder = PixelEncoder()
        assert (encoder.scale, encoder.shift) == (1.0, 0.0)
    finally:
        gin.clear_config()


@pytest.mark.slow
def test_unset_batch_size_picks_on_cuda_the_largest_chunk_that_fits(saved_vae, monkeypatch):
    """flux_vae.batch_size=None: the chunk comes from the traced peak and the device's budget
    (the CUDA device and its budget faked here), per mode and precision; the result is unchanged."""
    from bench.encoders import flux_vae as vae_memory
    from bench.pipeline import inference_memory as memory

    path, vae = saved_vae
    encoder = FluxVAEEncoder(path=str(path), device="cpu")
    z = encoder.encode(images(n=40, channels=1))
    expected = encoder.decode(z)  # CPU: chunks of CPU_BATCH
    shape = (1, 16, 16)
    budget = vae_memory.vae_peak_bytes(
        encoder.config(), shape, 12, "fp32", "decode", device=torch.device("cpu")
    )
    monkeypatch.setattr(memory, "cuda_budget", lambda device, resident=0: budget)
    monkeypatch.setattr(vae_memory, "MAX_VAE_BATCH", 64)  # fewer traces (each ~0.5 s)
    monkeypatch.setattr(encoder, "compute_device", lambda: torch.device("cuda"))  # computes on the CPU still
    monkeypatch.setattr(
        encoder, "_decode_chunk", lambda z, run=encoder._decode_chunk: seen.append(len(z)) or run(z)
    )
    seen = []
    chunk = encoder.chunk_size("decode", shape, 1000)
    assert 12 - 12 // 64 <= chunk < 40
    assert vae_memory.vae_peak_bytes(encoder.config(), shape, chunk, "fp32", "decode") <= budget
    assert torch.allclose(encoder.decode(z), expected, atol=1e-6)
    assert seen == [chunk] * (40 // chunk) + ([40 % chunk] if 40 % chunk else [])
