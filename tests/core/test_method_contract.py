"""Contract test over every registered method: train two steps and sample on the tiny FLUX."""

import pytest
import torch

import gin
from bench import registry
from bench.backbones.flux import FluxBackbone
from bench.config.gin_config import gin_dir, parse
from bench.config.sample import SampleConfig
from bench.config.train import TrainConfig
from bench.method import TrainBatch
from bench.pipeline.assemble import load_plugins
from bench.pipeline.sampler import generate
from bench.pipeline.trainer import train

BUILTIN = ["fm", "cbfm", "cpd", "optprior", "optprior_sub", "optprior_opt"]
SMALL = ["optprior.steps = 5", "optprior.min_size = 4", "optprior.risk_samples = 20", "optprior.k_max = 3"]


def test_every_builtin_method_is_registered():
    assert set(BUILTIN) <= set(registry.methods.names())


@pytest.fixture
def latents():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    z = torch.randn(60, 1, 4, 4, generator=g) + y.reshape(-1, 1, 1, 1).float()
    return z, y


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.slow
def test_method_trains_and_samples_on_tiny_flux(name, latents):
    z, y = latents
    load_plugins()
    parse([gin_dir() / "presets" / "tiny.gin"], SMALL)
    method = registry.methods.get(name)()
    method.setup(3, method.fit_prior(z, y, 3, seed=0))
    torch.manual_seed(0)
    backbone = FluxBackbone((1, 4, 4), method.vocab_size, method.n_tokens)

    idx = torch.arange(8)
    cond = method.training_condition(y[idx], idx)
    batch = TrainBatch(z[idx], cond, torch.randn(8, 1, 4, 4), torch.rand(8), torch.Generator().manual_seed(1))
    loss = method.loss(backbone, batch)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in backbone.transformer.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)

    result = train(method, backbone, z, y, TrainConfig(steps=2, batch_size=16), seed=0)
    assert all(torch.isfinite(torch.tensor(v)) for _, v in result.loss_trace)
    out = generate(method, backbone, [2, 1, 2], (1, 4, 4), seed=0, cfg=SampleConfig(nfe=2))
    assert out["z"].shape == (5, 1, 4, 4) and torch.isfinite(out["z"]).all()
    gin.clear_config()
