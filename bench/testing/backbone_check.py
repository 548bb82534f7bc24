"""`check_backbone`: a backbone plugin against what training, sampling and stored runs need (bench/backbone.py).

Built as `Backbone(sample_shape, vocab_size, n_tokens, **settings)` for vector latents (3,) and
image latents (4, 8, 8) (a shape it refuses with a BenchError is left out; at least one must be
taken), it must be a torch module whose `forward(x_t, t, tokens)` returns a finite velocity of
x_t's shape and dtype, depends on x_t, t and the tokens, and passes a gradient to its parameters;
`config()` is JSON, and `save_pretrained` then `from_pretrained` rebuilds a module that gives the
same velocities.
"""

from __future__ import annotations

import json
import tempfile

import torch

from bench.backbone import Backbone
from bench.errors import BenchError
from bench.testing.probe import Probe, resolve

HOOKS = {"forward": ("x_t", "t", "tokens"), "save_pretrained": ("directory",), "config": ()}
CLASS_HOOKS = {"from_pretrained": ("directory",)}
SHAPES = ((3,), (4, 8, 8))
VOCAB, N_TOKENS, BATCH = 4, 2, 3


def check_backbone(plugin, settings: dict | None = None, sample_shape: tuple | None = None) -> None:
    """Check a backbone class (or registered name) against the backbone contract; ContractFailure if
    not. `settings`: hyperparameters that keep it tiny; `sample_shape`: check this latent shape only."""
    probe = Probe("backbone", resolve("backbone", plugin))
    probe.require_hooks(
        {**HOOKS, **CLASS_HOOKS}, base=Backbone, written=("forward", "save_pretrained", "from_pretrained")
    )
    probe.expect(
        issubclass(probe.cls, torch.nn.Module),
        "__init__",
        "builds no torch.nn.Module, expected a subclass of bench.backbone.Backbone (training needs its parameters)",
    )
    probe.require_signatures(probe.cls, CLASS_HOOKS)
    taken = []
    for shape in [tuple(sample_shape)] if sample_shape else SHAPES:
        try:
            torch.manual_seed(0)
            model = probe.cls(shape, VOCAB, N_TOKENS, **(settings or {}))
        except BenchError:  # this backbone is for the other kind of latents
            continue
        except Exception as exc:
            probe.fail("__init__", f"raised {type(exc).__name__}: {exc} for sample_shape {shape}")
        probe.require_signatures(model, HOOKS)
        _check_forward(probe, model, shape)
        _check_round_trip(probe, model, shape)
        taken.append(shape)
    probe.expect(
        bool(taken),
        "__init__",
        f"refused every sample_shape tried ({list(SHAPES)}); pass check_backbone(..., sample_shape=...)",
    )


def _inputs(shape: tuple, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, *shape, generator=g)
    t = torch.rand(BATCH, generator=g)
    tokens = torch.randint(1, VOCAB, (BATCH, N_TOKENS), generator=g)
    return x, t, tokens


def _check_forward(probe: Probe, model, shape: tuple) -> None:
    """A finite velocity of x_t's shape, moved by x_t, t and tokens, with a gradient to the parameters."""
    x, t, tokens = _inputs(shape)
    model.train()
    v = probe.call("forward", model, x, t, tokens)
    probe.tensor("forward", v, shape=x.shape, dtype=x.dtype)
    probe.call("forward", v.pow(2).mean().backward)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    probe.expect(
        any(g is not None and bool(g.abs().sum() > 0) for g in grads),
        "forward",
        "returned a velocity that no parameter's gradient reaches, expected one training can fit",
    )
    model.eval()
    with torch.no_grad():
        base = model(x, t, tokens)
        for name, moved in (
            ("x_t", (x + 1, t, tokens)),
            ("t", (x, 1 - t, tokens)),
            ("tokens", (x, t, tokens.flip(0))),
        ):
            probe.expect(
                not torch.allclose(model(*moved), base),
                "forward",
                f"returned the same velocity for another {name}, expected it to depend on {name}",
            )


def _check_round_trip(probe: Probe, model, shape: tuple) -> None:
    """config() is JSON; save_pretrained + from_pretrained rebuilds the same velocities, offline."""
    config = probe.call("config", model.config)
    probe.jsonable("config", config)
    x, t, tokens = _inputs(shape, seed=1)
    with tempfile.TemporaryDirectory() as folder:
        probe.call("save_pretrained", model.save_pretrained, folder)
        loaded = probe.call("from_pretrained", type(model).from_pretrained, folder)
    probe.expect(
        isinstance(loaded, type(model)),
        "from_pretrained",
        f"returned a {type(loaded).__name__}, expected a {type(model).__name__}",
    )
    probe.expect(
        json.dumps(loaded.config(), sort_keys=True) == json.dumps(config, sort_keys=True),
        "from_pretrained",
        f"rebuilt config {loaded.config()}, expected the saved {config}",
    )
    model.eval(), loaded.eval()
    with torch.no_grad():
        same = torch.allclose(loaded(x, t, tokens), model(x, t, tokens), atol=1e-5, rtol=1e-4)
    probe.expect(same, "from_pretrained", "rebuilt a module whose velocities differ from the saved one's")
