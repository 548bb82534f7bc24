"""The method interface, which is also vanilla flow matching.

A method decides four things and nothing else: the source distribution x0, the conditioning
tokens, the probability path between source and data (`path`, linear unless a method says
otherwise) and the training loss. Everything else (backbone, optimiser, schedule, sampler, data)
is shared, so methods compare on equal terms. A plugin subclasses `Method` and overrides only
the hooks it changes, in the torchcfm style; a subclass that overrides nothing *is* vanilla FM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.path import LINEAR, ProbabilityPath


@dataclass
class Condition:
    """What a sample is conditioned on: its class and, for subclass methods, its subclass."""

    label: torch.Tensor  # (B,) int64 class index
    subclass: torch.Tensor | None = None  # (B,) int64 subclass within the class

    def to(self, device) -> Condition:
        """The same condition with its tensors on `device`."""
        sub = None if self.subclass is None else self.subclass.to(device)
        return Condition(self.label.to(device), sub)


@dataclass
class TrainBatch:
    """One training batch: data latents, their conditions and the random draws for the loss."""

    x1: torch.Tensor  # data latents
    cond: Condition
    eps: torch.Tensor  # standard normal, shaped like x1
    t: torch.Tensor  # (B,) in [0, 1]
    generator: torch.Generator | None = None  # CPU generator for any further draws a loss needs


class Method:
    """Vanilla flow matching: class-token conditioning, an N(0, I) source and the linear path."""

    name = "fm"
    # The probability path the base loss trains on (bench/path.py): x_t and its target velocity u
    # for source x0, data x1 and time t, in bench's convention (t = 0 source, t = 1 data,
    # u = d x_t / dt). A method with another path sets this (a class attribute, or an instance
    # attribute in __init__ when the path has settings, as methods/vpfm.py does); the base `loss`
    # then trains on it and the sampler integrates the learned velocity unchanged.
    path: ProbabilityPath = LINEAR
    # What a method's stored artifacts hold. Raise `prior_version` when `fit_prior` computes something
    # new or different (its sources, or the analysis numbers it records), `train_version` when the
    # loss or the conditioning changes: the stage is redone on the next run (its hash changes), the
    # record says which versions wrote it (`stage_versions`), and `bench claims` refuses to mix
    # records of one method written by different versions. Version 1 keeps the hashes bench had
    # before versions existed.
    prior_version = 1
    train_version = 1

    def __init__(self):
        self.n_classes = 0
        self.prior = None

    # -- offline stage ------------------------------------------------------------------
    def fit_prior(self, latents: torch.Tensor, labels: torch.Tensor, n_classes: int, seed: int):
        """Fit the method's offline prior on training latents; vanilla FM has none."""
        return None

    def check_data(self, train_counts: list) -> None:
        """Refuse, before any training, a configuration the training split cannot support."""

    def setup(self, n_classes: int, prior=None) -> None:
        """Bind the number of classes and a fitted (or loaded) prior before training/sampling."""
        self.n_classes = n_classes
        self.prior = prior

    def to(self, device) -> Method:
        """Move the prior's tensors to `device` (training and sampling index them there)."""
        if self.prior is not None:
            self.prior = self.prior.to(device)
        return self

    def prior_class(self):
        """The Prior class this method stores, so a cached prior can be loaded."""
        from bench.prior import Prior

        return Prior

    # -- conditioning -------------------------------------------------------------------
    @property
    def n_tokens(self) -> int:
        """Condition tokens per sample."""
        return 1

    @property
    def vocab_size(self) -> int:
        """Size of the token vocabulary; token 0 is the null (unconditional) token."""
        return self.n_classes + 1

    def tokens(self, cond: Condition) -> torch.Tensor:
        """Integer tokens (B, n_tokens) for a condition: one class token, 1 + class index."""
        return (cond.label + 1).unsqueeze(1)

    def training_condition(self, labels: torch.Tensor, index: torch.Tensor) -> Condition:
        """Condition of training samples with these labels and training-set row indices."""
        return Condition(labels)

    def sampling_condition(self, labels: torch.Tensor, u: torch.Tensor) -> Condition:
        """Condition for generating samples of `labels`; `u` are per-sample U(0,1) draws."""
        return Condition(labels)

    # -- source and loss ----------------------------------------------------------------
    def sample_source(self, cond: Condition, eps: torch.Tensor) -> torch.Tensor:
        """Source samples x0 from standard normal draws `eps`: the N(0, I) source."""
        return eps

    def sample_time(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Training times t ~ U(0, 1)."""
        return torch.rand(n, generator=generator)

    def loss(self, backbone, batch: TrainBatch) -> torch.Tensor:
        """Conditional flow-matching regression on the method's path: E || v(x_t, t, c) - u ||^2
        (u = x1 - x0 on the linear path)."""
        x0 = self.sample_source(batch.cond, batch.eps.to(batch.x1))
        path = self.path.sample(x0, batch.x1, batch.t.to(batch.x1))
        v = backbone(path.x_t, path.t, self.tokens(batch.cond).to(batch.x1.device))
        return (v - path.u).pow(2).mean()

    def describe(self) -> dict:
        """A JSON-able description of the method configuration, stored in records."""
        return {"name": self.name}
