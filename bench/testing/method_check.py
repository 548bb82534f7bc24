"""`check_method`: a method plugin against what training and sampling call (bench/method.py).

On tiny long-tailed latents of two shapes, vectors (2,) and images (1, 4, 4), the method goes
through a cell as the pipeline runs it: `check_data` on the class counts, `fit_prior` (a Prior of
its `prior_class` that validates, saves and loads back, or None), `setup`, the conditions and their
tokens, `sample_time`, `sample_source`, the `path` (finite at the times drawn), a `loss` that is a
finite scalar whose gradient reaches the backbone, two training steps and sampling with bench's
own trainer and sampler.
"""

from __future__ import annotations

import tempfile

import torch

from bench.errors import BenchError
from bench.method import Condition, TrainBatch
from bench.path import PathSample, ProbabilityPath
from bench.prior import Prior
from bench.testing.probe import Probe, resolve
from bench.testing.tiny import IMAGE_LATENT, TRAIN_COUNTS, VECTOR_LATENT, TinyBackbone, tiny_latents

HOOKS = {
    "fit_prior": ("latents", "labels", "n_classes", "seed"),
    "check_data": ("train_counts",),
    "setup": ("n_classes", "prior"),
    "to": ("device",),
    "prior_class": (),
    "tokens": ("cond",),
    "training_condition": ("labels", "index"),
    "sampling_condition": ("labels", "u"),
    "sample_source": ("cond", "eps"),
    "sample_time": ("n", "generator"),
    "loss": ("backbone", "batch"),
    "describe": (),
}
N_PER_CLASS = [2, 1, 2]  # what sampling is asked for: every class, the tail too


def check_method(plugin, settings: dict | None = None, backbone: type | None = None) -> None:
    """Check a method class (or registered name) against the method contract; ContractFailure if not.

    `settings`: constructor keyword arguments that keep its offline stage tiny (`{"k_max": 2}`).
    `backbone`: the Backbone class to train and sample with (default: the kit's tiny one); shapes
    it refuses with a BenchError (the mlp backbone refuses images) are left out.
    """
    probe = Probe("method", resolve("method", plugin))
    probe.require_hooks(HOOKS)
    method = probe.construct(settings)
    probe.require_signatures(method, HOOKS)
    for hook in ("prior_version", "train_version"):
        value = getattr(method, hook, None)
        probe.expect(
            isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            hook,
            f"is {value!r}, expected an integer >= 1",
        )
    shapes = 0
    for shape in (VECTOR_LATENT, IMAGE_LATENT):
        net = _backbone(backbone, shape)
        if net is not None:
            _check_cell(probe, probe.construct(settings), shape, net)
            shapes += 1
    if not shapes:
        probe.fail("loss", f"was never tried: the backbone {backbone.__name__} refused every latent shape")


def _backbone(cls: type | None, shape: tuple):
    """A factory of the backbone for latents of `shape`, or None when `cls` refuses that shape."""
    cls = cls or TinyBackbone
    try:
        cls(shape, 4, 1)
    except BenchError:
        return None

    def build(vocab_size: int, n_tokens: int):
        torch.manual_seed(0)  # the same initial weights whatever ran before
        return cls(shape, vocab_size, n_tokens)

    return build


def _check_cell(probe: Probe, method, shape: tuple, make_backbone) -> None:
    """One tiny cell with latents of `shape`: offline stage, conditions, loss, training, sampling."""
    z, y = tiny_latents(shape)
    n_classes = len(TRAIN_COUNTS)
    probe.call("check_data", method.check_data, list(TRAIN_COUNTS))
    prior = _check_prior(probe, method, z, y, n_classes, shape)
    probe.call("setup", method.setup, n_classes, prior)
    moved = probe.call("to", method.to, "cpu")
    probe.expect(moved is method, "to", f"returned {type(moved).__name__}, expected the method itself")
    n_tokens = probe.call("n_tokens", getattr, method, "n_tokens")
    vocab = probe.call("vocab_size", getattr, method, "vocab_size")
    for hook, value, low, why in (
        ("n_tokens", n_tokens, 1, ""),
        ("vocab_size", vocab, n_classes + 1, " (a token per class and token 0, the null token)"),
    ):
        probe.expect(
            isinstance(value, int) and not isinstance(value, bool) and value >= low,
            hook,
            f"is {value!r} with {n_classes} classes, expected an integer >= {low}{why}",
        )
    idx = torch.arange(16)
    cond = probe.call("training_condition", method.training_condition, y[idx], idx)
    _check_condition(probe, "training_condition", cond, y[idx])
    _check_tokens(probe, method, cond, vocab, n_tokens)
    t = probe.call("sample_time", method.sample_time, 16, torch.Generator().manual_seed(0))
    probe.tensor("sample_time", t, shape=(16,), floating=True)
    probe.expect(bool(((t >= 0) & (t <= 1)).all()), "sample_time", "returned times outside [0, 1]")
    eps = torch.randn(16, *shape, generator=torch.Generator().manual_seed(1))
    x0 = probe.call("sample_source", method.sample_source, cond, eps)
    probe.tensor("sample_source", x0, shape=eps.shape, floating=True)
    _check_path(probe, method, x0, z[idx], t)
    _check_loss(
        probe,
        method,
        make_backbone(vocab, n_tokens),
        TrainBatch(z[idx], cond, eps, t, torch.Generator().manual_seed(2)),
    )
    labels = torch.tensor([c for c, n in enumerate(N_PER_CLASS) for _ in range(n)])
    u = torch.rand(len(labels), generator=torch.Generator().manual_seed(3))
    cond = probe.call("sampling_condition", method.sampling_condition, labels, u)
    _check_condition(probe, "sampling_condition", cond, labels)
    _check_tokens(probe, method, cond, vocab, n_tokens)
    _check_training_and_sampling(probe, method, make_backbone(vocab, n_tokens), z, y, shape)
    probe.jsonable("describe", probe.call("describe", method.describe), keys=("name",))


def _check_prior(probe: Probe, method, z, y, n_classes: int, shape: tuple):
    """`fit_prior`: None, or a Prior of `prior_class()` that validates and survives save + load."""
    prior = probe.call("fit_prior", method.fit_prior, z, y, n_classes, 0)
    if prior is None:
        return None
    kind = probe.call("prior_class", method.prior_class)
    probe.expect(
        isinstance(kind, type) and issubclass(kind, Prior),
        "prior_class",
        f"returned {kind!r}, expected a subclass of bench.prior.Prior",
    )
    probe.expect(
        isinstance(prior, kind),
        "fit_prior",
        f"returned a {type(prior).__name__}, expected None or a {kind.__name__}",
    )
    probe.call("fit_prior", prior.validate, shape, n_classes, len(z))
    with tempfile.TemporaryDirectory() as folder:
        probe.call("fit_prior", prior.save, folder)
        loaded = probe.call("prior_class", kind.load, folder)
        probe.call("prior_class", loaded.validate, shape, n_classes, len(z))
    return prior


def _check_path(probe: Probe, method, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> None:
    """`path` is a bench.path.ProbabilityPath whose sample at the times `sample_time` drew is a
    PathSample with finite x_t and u shaped like the data. A duck-typed method without `path`
    (one that is no bench.Method and has a loss of its own) is left alone: only the base loss reads it."""
    if not hasattr(method, "path"):
        return
    path = method.path
    probe.expect(
        isinstance(path, ProbabilityPath),
        "path",
        f"is a {type(path).__name__}, expected a bench.path.ProbabilityPath",
    )
    point = probe.call("path", path.sample, x0, x1, t)
    probe.expect(
        isinstance(point, PathSample),
        "path",
        f"sample returned a {type(point).__name__}, expected a bench.path.PathSample",
    )
    for field in ("x_t", "u"):
        probe.tensor("path", getattr(point, field), shape=x1.shape, what=f"sample gave {field} of")


def _check_condition(probe: Probe, hook: str, cond, labels: torch.Tensor) -> None:
    """A Condition holding `labels` and, if any, one int64 subclass per row."""
    probe.expect(
        isinstance(cond, Condition),
        hook,
        f"returned a {type(cond).__name__}, expected a bench.method.Condition",
    )
    probe.tensor(hook, cond.label, shape=labels.shape, dtype=torch.int64, what="returned a label of")
    probe.expect(
        torch.equal(cond.label, labels), hook, "returned a condition whose labels are not the labels given"
    )
    if cond.subclass is not None:
        probe.tensor(
            hook, cond.subclass, shape=labels.shape, dtype=torch.int64, what="returned a subclass of"
        )
        probe.expect(bool((cond.subclass >= 0).all()), hook, "returned a negative subclass")


def _check_tokens(probe: Probe, method, cond, vocab: int, n_tokens: int) -> None:
    """(B, n_tokens) integer tokens within the vocabulary."""
    tokens = probe.call("tokens", method.tokens, cond)
    probe.tensor("tokens", tokens, shape=(len(cond.label), n_tokens))
    probe.expect(
        not tokens.is_floating_point(), "tokens", f"returned dtype {tokens.dtype}, expected integer tokens"
    )
    lo, hi = int(tokens.min()), int(tokens.max())
    probe.expect(
        lo >= 0 and hi < vocab,
        "tokens",
        f"returned tokens in [{lo}, {hi}], expected them in [0, vocab_size={vocab})",
    )


def _check_loss(probe: Probe, method, backbone, batch: TrainBatch) -> None:
    """A finite scalar whose gradient reaches the backbone's parameters."""
    loss = probe.call("loss", method.loss, backbone, batch)
    probe.tensor("loss", loss, shape=(), floating=True)
    probe.expect(
        loss.requires_grad,
        "loss",
        "returned a loss with no gradient, expected one that backpropagates to the backbone",
    )
    probe.call("loss", loss.backward)
    grads = [p.grad for p in backbone.parameters() if p.requires_grad]
    probe.expect(
        any(g is not None and bool(g.abs().sum() > 0) for g in grads),
        "loss",
        "returned a loss whose gradient never reaches the backbone's parameters, expected one that trains it",
    )
    probe.expect(
        all(g is None or bool(torch.isfinite(g).all()) for g in grads),
        "loss",
        "returned a loss whose gradient holds NaN or infinite values",
    )


def _check_training_and_sampling(probe: Probe, method, backbone, z, y, shape: tuple) -> None:
    """Two steps of bench's trainer and sampling with its sampler: finite losses, samples of the
    data's shape for the requested labels."""
    from bench.config.sample import SampleConfig
    from bench.config.train import TrainConfig
    from bench.pipeline.sampler import draw_sources, generate
    from bench.pipeline.trainer import train

    result = probe.call("loss", train, method, backbone, z, y, TrainConfig(steps=2, batch_size=16), 0)
    losses = [v for _, v in result.loss_trace]
    probe.expect(
        losses and all(torch.isfinite(torch.tensor(v)) for v in losses),
        "loss",
        f"gave the training losses {losses}, expected finite ones",
    )
    cfg = SampleConfig(nfe=2)
    out = probe.call("sample_source", generate, method, backbone, N_PER_CLASS, shape, 0, cfg)
    n = sum(N_PER_CLASS)
    probe.tensor("sample_source", out["z"], shape=(n, *shape), what="led sampling to samples of")
    probe.expect(
        out["y"].tolist() == [c for c, k in enumerate(N_PER_CLASS) for _ in range(k)],
        "sampling_condition",
        "changed the labels sampling asked for",
    )
    sources = probe.call("sample_source", draw_sources, method, N_PER_CLASS, shape, 0, cfg)
    probe.tensor("sample_source", sources["z"], shape=(n, *shape), what="drew sources of")
