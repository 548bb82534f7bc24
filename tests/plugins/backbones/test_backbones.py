"""Backbones: FLUX adapter against plain diffusers and numpy references; MLP shape, I/O and fit."""

from __future__ import annotations

import math
from importlib import resources

import numpy as np
import pytest
import torch

import bench.config  # noqa: F401 -- registers `sample` and `train`, which the presets bind
import gin
from bench.backbones.flux import FluxBackbone, image_ids, pack_patches, unpack_patches
from bench.backbones.mlp import MLPBackbone
from bench.errors import BenchError

VOCAB, N_TOKENS = 7, 2


def numpy_pack(x: np.ndarray) -> np.ndarray:
    """Reference packing by explicit indexing: token (i, j), slot c*4 + dy*2 + dx = x[c, 2i + dy, 2j + dx]."""
    b, c, h, w = x.shape
    out = np.zeros((b, (h // 2) * (w // 2), 4 * c), dtype=x.dtype)
    for i in range(h // 2):
        for j in range(w // 2):
            for ch in range(c):
                for dy in range(2):
                    for dx in range(2):
                        out[:, i * (w // 2) + j, ch * 4 + dy * 2 + dx] = x[:, ch, 2 * i + dy, 2 * j + dx]
    return out


def numpy_unpack(tokens: np.ndarray, c: int, h: int, w: int) -> np.ndarray:
    """Reference inverse of numpy_pack, by the same explicit indexing."""
    out = np.zeros((tokens.shape[0], c, h, w), dtype=tokens.dtype)
    for i in range(h // 2):
        for j in range(w // 2):
            for ch in range(c):
                for dy in range(2):
                    for dx in range(2):
                        out[:, ch, 2 * i + dy, 2 * j + dx] = tokens[:, i * (w // 2) + j, ch * 4 + dy * 2 + dx]
    return out


def make_backbone(kind: str) -> torch.nn.Module:
    """A small seeded backbone of each kind with its natural sample shape."""
    torch.manual_seed(0)
    if kind == "flux":
        return FluxBackbone((3, 4, 6), VOCAB, N_TOKENS).eval()
    return MLPBackbone((5,), VOCAB, N_TOKENS, hidden=32, depth=2, time_features=8).eval()


def inputs(model, batch: int = 3, seed: int = 1):
    """Seeded (x_t, t, tokens) matching the model's sample shape."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *model.sample_shape, generator=g)
    t = torch.rand(batch, generator=g)
    tokens = torch.randint(0, VOCAB, (batch, N_TOKENS), generator=g)
    return x, t, tokens


@pytest.fixture
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


# -- FLUX adapter ------------------------------------------------------------------------


def test_pack_matches_numpy_reference_and_round_trips():
    x = torch.randn(2, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    packed = pack_patches(x)
    assert packed.shape == (2, 6, 12)
    np.testing.assert_array_equal(packed.numpy(), numpy_pack(x.numpy()))
    unpacked = unpack_patches(packed, 3, 4, 6)
    np.testing.assert_array_equal(unpacked.numpy(), numpy_unpack(packed.numpy(), 3, 4, 6))
    assert torch.equal(unpacked, x)


def test_larger_patches_are_space_to_depth_tokens():
    """p x p packing: token (i, j) holds x[c, p i + dy, p j + dx] at slot c p^2 + dy p + dx."""
    x = torch.randn(2, 3, 8, 12, generator=torch.Generator().manual_seed(1))
    for p in (1, 2, 4):
        packed = pack_patches(x, p)
        assert packed.shape == (2, (8 // p) * (12 // p), 3 * p * p)
        ref = np.zeros(packed.shape, dtype=np.float32)
        for i, j, c, dy, dx in np.ndindex(8 // p, 12 // p, 3, p, p):
            ref[:, i * (12 // p) + j, c * p * p + dy * p + dx] = x[:, c, p * i + dy, p * j + dx].numpy()
        np.testing.assert_array_equal(packed.numpy(), ref)
        assert torch.equal(unpack_patches(packed, 3, 8, 12, p), x)
    ids = image_ids(8, 12, 4).numpy()
    np.testing.assert_array_equal(
        ids, np.array([[0, i, j] for i in range(2) for j in range(3)], dtype=np.float32)
    )


def test_flux_with_patch_size_four_runs_on_a_quarter_of_the_tokens(tmp_path):
    torch.manual_seed(0)
    model = FluxBackbone((1, 8, 8), VOCAB, N_TOKENS, patch_size=4)
    assert model.transformer.config.in_channels == 16 and tuple(model.img_ids.shape) == (4, 3)
    x, t, tokens = inputs(model)
    out = model(x, t, tokens)
    assert out.shape == x.shape and torch.isfinite(out).all()
    model.save_pretrained(tmp_path)
    back = FluxBackbone.from_pretrained(tmp_path)
    assert back.patch_size == 4 and torch.equal(back(x, t, tokens), out)
    assert (
        "patch_size" not in FluxBackbone((1, 8, 8), VOCAB, N_TOKENS).hyperparameters
    )  # FLUX's 2: config as before


def test_image_ids_hold_patch_row_and_column():
    ids = image_ids(4, 6).numpy()
    expected = np.array([[0, i, j] for i in range(2) for j in range(3)], dtype=np.float32)
    np.testing.assert_array_equal(ids, expected)
    model = make_backbone("flux")
    np.testing.assert_array_equal(model.img_ids.numpy(), expected)
    assert torch.equal(model.txt_ids, torch.zeros(N_TOKENS, 3))


def test_flux_adapter_equals_manual_transformer_call():
    model = make_backbone("flux")
    x, t, tokens = inputs(model)
    with torch.no_grad():
        flux_out = model.transformer(
            hidden_states=torch.from_numpy(numpy_pack(x.numpy())),
            encoder_hidden_states=model.token_embedding.weight[tokens],
            pooled_projections=model.pooled_embedding.weight[tokens].mean(dim=1),
            timestep=1 - t,
            img_ids=torch.tensor([[0.0, i, j] for i in range(2) for j in range(3)]),
            txt_ids=torch.zeros(N_TOKENS, 3),
        ).sample
        expected = -numpy_unpack(flux_out.numpy(), 3, 4, 6)
        np.testing.assert_allclose(model(x, t, tokens).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_flux_rejects_bad_shapes_and_rope_split():
    with pytest.raises(BenchError, match="2x2 patch packing .* divisible by 2, got 5x6"):
        FluxBackbone((3, 5, 6), VOCAB, N_TOKENS)
    with pytest.raises(BenchError, match="4x4 patch packing .* divisible by 4, got 4x6"):
        FluxBackbone((3, 4, 6), VOCAB, N_TOKENS, axes_dims_rope=(4, 4, 8), patch_size=4)
    for bad in (0, 2.0, True):
        with pytest.raises(BenchError, match="flux.patch_size must be a positive integer"):
            FluxBackbone((3, 4, 6), VOCAB, N_TOKENS, patch_size=bad)
    with pytest.raises(BenchError, match=r"axes_dims_rope \(4, 4, 4\) must be even numbers summing to"):
        FluxBackbone((3, 4, 6), VOCAB, N_TOKENS, axes_dims_rope=(4, 4, 4))
    with pytest.raises(BenchError, match=r"needs latents of shape \(C, H, W\)"):
        FluxBackbone((2,), VOCAB, N_TOKENS)


def test_flux_transformer_loads_with_plain_diffusers(tmp_path):
    from diffusers import FluxTransformer2DModel

    model = make_backbone("flux")
    model.save_pretrained(tmp_path)
    plain = FluxTransformer2DModel.from_pretrained(tmp_path / "transformer", local_files_only=True)
    x, t, tokens = inputs(model)
    kwargs = dict(
        hidden_states=pack_patches(x),
        encoder_hidden_states=model.token_embedding(tokens),
        pooled_projections=model.pooled_embedding(tokens).mean(dim=1),
        timestep=1 - t,
        img_ids=model.img_ids,
        txt_ids=model.txt_ids,
    )
    with torch.no_grad():
        assert torch.equal(plain(**kwargs).sample, model.transformer(**kwargs).sample)


def test_presets_bind_flux_hyperparameters(clean_gin):
    presets = resources.files("bench.gin") / "presets"
    gin.parse_config_file(str(presets / "tiny.gin"))
    tiny = FluxBackbone((1, 8, 8), 11, 1)
    assert tiny.transformer.config.num_layers == 2
    assert tuple(tiny.transformer.config.axes_dims_rope) == (8, 12, 12)
    x, t, tokens = torch.randn(2, 1, 8, 8), torch.rand(2), torch.randint(0, 11, (2, 1))
    assert tiny(x, t, tokens).shape == x.shape
    gin.clear_config()
    gin.parse_config_file(str(presets / "flux1.gin"))
    with torch.device("meta"):  # the shape of FLUX.1-dev without allocating 48 GB
        full = FluxBackbone((16, 64, 64), 11, 1)
    n_transformer = sum(p.numel() for p in full.transformer.parameters())
    assert 11.8e9 < n_transformer < 12.0e9  # FLUX.1-dev's transformer: ~11.9B parameters


# -- both backbones ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flux", "mlp"])
def test_velocity_has_input_shape(kind):
    model = make_backbone(kind)
    x, t, tokens = inputs(model)
    with torch.no_grad():
        assert model(x, t, tokens).shape == x.shape


@pytest.mark.parametrize("kind", ["flux", "mlp"])
def test_conditioning_changes_velocity(kind):
    model = make_backbone(kind)
    x, t, tokens = inputs(model)
    other = (tokens + 1) % VOCAB
    with torch.no_grad():
        gap = (model(x, t, tokens) - model(x, t, other)).abs().amax(dim=tuple(range(1, x.dim())))
    assert bool((gap > 1e-4).all())


@pytest.mark.parametrize("kind", ["flux", "mlp"])
def test_save_load_gives_identical_outputs(kind, tmp_path):
    model = make_backbone(kind)
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    assert loaded.config() == model.config()
    x, t, tokens = inputs(model)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, tokens), model(x, t, tokens))


@pytest.mark.parametrize("kind", ["flux", "mlp"])
def test_from_pretrained_missing_folder_says_what_to_do(kind, tmp_path):
    cls = FluxBackbone if kind == "flux" else MLPBackbone
    with pytest.raises(BenchError, match="written by save_pretrained"):
        cls.from_pretrained(tmp_path / "nowhere")


# -- MLP ---------------------------------------------------------------------------------


def test_mlp_rejects_image_shapes():
    with pytest.raises(BenchError, match=r"vector samples of shape \(D,\)"):
        MLPBackbone((1, 8, 8), VOCAB, N_TOKENS)


def gaussian_bayes_risk(s: float) -> float:
    """Per-coordinate minimum FM loss, N(0, 1) -> N(m, s^2): E_t[Var(u) - Cov(u, x_t)^2 / Var(x_t)]."""
    t = (np.arange(100_000) + 0.5) / 100_000
    var_xt = (1 - t) ** 2 + (t * s) ** 2
    cov = t * s**2 - (1 - t)
    return float(np.mean(1 + s**2 - cov**2 / var_xt))


@pytest.mark.slow
def test_mlp_fit_approaches_bayes_risk():
    """Four well-separated Gaussian classes: the trained loss must get near the closed-form floor."""
    torch.manual_seed(0)
    s, angles = 0.3, torch.arange(4) * math.pi / 2
    means = 3 * torch.stack([angles.cos(), angles.sin()], dim=1)

    def fm_loss(model, generator, n):
        c = torch.randint(0, 4, (n,), generator=generator)
        x1 = means[c] + s * torch.randn(n, 2, generator=generator)
        x0, t = torch.randn(n, 2, generator=generator), torch.rand(n, generator=generator)
        x_t = (1 - t[:, None]) * x0 + t[:, None] * x1
        return ((model(x_t, t, (c + 1)[:, None]) - (x1 - x0)) ** 2).mean()

    model = MLPBackbone((2,), 5, 1)
    with torch.no_grad():
        before = fm_loss(model, torch.Generator().manual_seed(1), 20_000).item()
    optimizer, g = torch.optim.Adam(model.parameters(), lr=1e-3), torch.Generator().manual_seed(2)
    for _ in range(300):
        optimizer.zero_grad()
        fm_loss(model, g, 512).backward()
        optimizer.step()
    with torch.no_grad():
        after = fm_loss(model, torch.Generator().manual_seed(1), 20_000).item()
    floor = gaussian_bayes_risk(s)  # = 0.471 for s = 0.3
    assert before > 5 * floor
    assert floor - 0.02 < after < floor + 0.1
