"""The plugin author's kit (bench.testing) on deliberately broken plugins: each fails the matching
check with a message naming the plugin, the broken hook and what was expected; sound ones pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.dataset import Dataset, Split
from bench.evaluator import Evaluator, Metric
from bench.method import Method
from bench.remedy import Remedy
from bench.testing import (
    ContractFailure,
    check_backbone,
    check_dataset,
    check_encoder,
    check_evaluator,
    check_method,
    check_plugin,
    check_remedy,
)
from bench.testing.tiny import TinyBackbone


def fails(check, plugin, *hooks_and_words, **options) -> str:
    """The ContractFailure message of `check(plugin)`, which must hold every one of `hooks_and_words`."""
    with pytest.raises(ContractFailure) as err:
        check(plugin, **options)
    message = str(err.value)
    assert isinstance(err.value, AssertionError)
    for word in hooks_and_words:
        assert word in message, (word, message)
    return message


# -- methods ---------------------------------------------------------------------------------------
class PerSampleLoss(Method):
    name = "per_sample"

    def loss(self, backbone, batch):
        return super().loss(backbone, batch) * torch.ones(len(batch.x1))  # forgot the mean


class DetachedLoss(Method):
    name = "detached"

    def loss(self, backbone, batch):
        return (batch.x1 - batch.eps).pow(2).mean()  # never calls the backbone


class WrongSource(Method):
    name = "wrong_source"

    def sample_source(self, cond, eps):
        return eps.flatten(1)[:, :1]


class NaNSource(Method):
    name = "nan_source"

    def sample_source(self, cond, eps):
        return eps * float("nan")


class NoLoss:
    """A duck-typed method (no bench.method.Method base) that forgot `loss`."""

    name = "no_loss"
    prior_version = train_version = 1
    n_tokens, vocab_size = 1, 4
    fit_prior = check_data = setup = prior_class = tokens = Method.fit_prior
    to = training_condition = sampling_condition = sample_source = sample_time = describe = Method.to


class ShortTokens(Method):
    name = "short_tokens"

    def tokens(self, cond):
        return torch.zeros(len(cond.label), 3, dtype=torch.long)  # n_tokens says 1


def test_vanilla_method_passes_with_the_kit_backbone_and_by_name():
    check_method(Method)
    check_method("fm")
    check_plugin("methods", "cpd")


def test_a_loss_of_the_wrong_shape_names_the_hook_and_the_shape():
    message = fails(check_method, PerSampleLoss, "method 'per_sample'", "hook `loss`", "shape (16,)")
    assert message.endswith("expected a scalar")


def test_a_loss_that_never_reaches_the_backbone_fails():
    fails(check_method, DetachedLoss, "method 'detached'", "hook `loss`", "backpropagates to the backbone")


def test_a_source_of_the_wrong_shape_or_with_nan_fails():
    fails(check_method, WrongSource, "hook `sample_source`", "shape (16, 1)", "expected shape (16, 2)")
    fails(check_method, NaNSource, "hook `sample_source`", "NaN")


def test_a_missing_hook_is_named_with_its_signature():
    fails(check_method, NoLoss, "method 'no_loss'", "hook `loss` missing", "loss(backbone, batch)")


def test_tokens_that_disagree_with_n_tokens_fail():
    fails(check_method, ShortTokens, "hook `tokens`", "shape (16, 3)", "expected shape (16, 1)")


def test_a_hook_with_the_wrong_signature_is_named():
    class TwoArgs(Method):
        name = "two_args"

        def sample_time(self, n):  # the generator is missing
            return torch.rand(n)

    fails(check_method, TwoArgs, "hook `sample_time`", "sample_time(n, generator)")


def test_a_constructor_that_refuses_its_defaults_is_reported():
    fails(check_method, "optprior", "method 'optprior'", "hook `check_data`", "k_max")


# -- evaluators ------------------------------------------------------------------------------------
SCORE = (Metric("score", "score", True),)


def evaluator(returned: dict) -> type:
    """An evaluator declaring `score` that returns `returned`."""

    class Returns(Evaluator):
        name = "returns"
        metrics = SCORE

        def evaluate(self, cell):
            return returned

    return Returns


def test_a_sound_evaluator_and_its_families_pass():
    check_evaluator(
        evaluator({"score": 1.0, "score@source": np.float32(2.0), "score/tail": torch.tensor(3.0)})
    )


@pytest.mark.parametrize(
    "returned, words",
    [
        ({"score": "high"}, ["'score' = 'high' (a str)", "expected a float"]),
        ({"score": None}, ["'score' = None", "expected a float"]),
        ({"score": float("nan")}, ["'score' = nan", "expected a finite float"]),
        ({"score": 1.0, "other": 2.0}, ["'other'", "no Metric declares", "declared: ['score']"]),
    ],
)
def test_a_non_float_a_nan_or_an_undeclared_metric_fails(returned, words):
    fails(check_evaluator, evaluator(returned), "evaluator 'returns'", "hook `evaluate`", *words)


def test_an_evaluator_returning_a_list_or_without_evaluate_fails():
    class ReturnsList(Evaluator):
        metrics = (Metric("score", "score", True),)

        def evaluate(self, cell):
            return [1.0]

    fails(
        check_evaluator,
        ReturnsList,
        "evaluator 'ReturnsList'",
        "hook `evaluate`",
        "a list",
        "expected a dict",
    )

    class Forgot(Evaluator):
        metrics = (Metric("score", "score", True),)

    fails(check_evaluator, Forgot, "hook `evaluate` missing", "NotImplementedError")


def test_an_evaluator_is_run_on_each_kind_it_applies_to():
    seen = []

    class Kinds(Evaluator):
        metrics = (Metric("n", "n", None),)

        def evaluate(self, cell):
            seen.append((cell.dataset.kind, tuple(cell.train.x.shape[1:])))
            return {"n": float(len(cell.synthetic))}

    check_evaluator(Kinds)
    assert seen == [("vector", (2,)), ("image", (1, 8, 8))]


# -- remedies --------------------------------------------------------------------------------------
class NoOrder:
    """A duck-typed remedy without `epoch_order`."""

    name = "no_order"
    retrains_head, min_epochs = False, 0
    check = setup = loss = begin_epoch = describe = Remedy.check


class RowsOutOfRange(Remedy):
    name = "out_of_range"

    def epoch_order(self, y, generator, epoch):
        return torch.randperm(len(y), generator=generator) + 1


class UnseededOrder(Remedy):
    name = "unseeded"

    def epoch_order(self, y, generator, epoch):
        return torch.randperm(len(y))  # ignores the generator


class LossPerRow(Remedy):
    name = "per_row"

    def loss(self, logits, target, epoch):
        return torch.nn.functional.cross_entropy(logits, target, reduction="none")


def test_sound_remedies_pass():
    check_remedy(Remedy)
    check_plugin("remedies", "focal")


def test_a_remedy_missing_its_hook_fails():
    fails(
        check_remedy,
        NoOrder,
        "remedy 'no_order'",
        "hook `epoch_order` missing",
        "epoch_order(y, generator, epoch)",
    )


def test_a_remedy_with_bad_rows_loss_or_randomness_fails():
    fails(check_remedy, RowsOutOfRange, "hook `epoch_order`", "values in [1, 60]", "expected them in [0, 59]")
    fails(check_remedy, UnseededOrder, "hook `epoch_order`", "same generator seed")
    fails(check_remedy, LossPerRow, "remedy 'per_row'", "hook `loss`", "shape (60,)", "expected a scalar")


# -- datasets --------------------------------------------------------------------------------------
class Toy(Dataset):
    """Three classes of 2-D points; subclasses override one thing to break it."""

    name, kind, class_names = "toy", "vector", ["a", "b", "c"]

    def load(self, split):
        y = torch.arange(30) % 3
        return Split(torch.randn(30, 2, generator=torch.Generator().manual_seed(0)) + y[:, None], y)


class LabelsOutOfRange(Toy):
    name = "out_of_range"

    def load(self, split):
        out = super().load(split)
        return Split(out.x, out.y + 1)  # labels 1..3 for three classes


class FloatLabels(Toy):
    name = "float_labels"

    def load(self, split):
        out = super().load(split)
        return Split(out.x, out.y.float())


class NaNImages(Toy):
    name, kind = "nan_images", "image"

    def load(self, split):
        x = torch.zeros(30, 1, 4, 4)
        x[3] = float("nan")
        return Split(x, torch.arange(30) % 3)


class Unseeded(Toy):
    name = "unseeded"

    def load(self, split):
        return Split(torch.randn(30, 2), torch.arange(30) % 3)


class NeedsFiles(Toy):
    name = "needs_files"

    def __init__(self, root=None):
        self.root = root

    def missing_settings(self):
        return [] if self.root else ["needs_files.root=DIR (your local copy)"]


def test_a_sound_dataset_passes_and_one_needing_files_is_skipped_with_the_reason():
    check_dataset(Toy)
    with pytest.raises(pytest.skip.Exception, match=r"needs_files.root=DIR .*settings=") as skipped:
        check_dataset(NeedsFiles)
    assert "dataset 'needs_files': not checked" in str(skipped.value)
    check_dataset(NeedsFiles, settings={"root": "here"})


def test_labels_out_of_range_name_the_hook_and_the_range():
    fails(
        check_dataset, LabelsOutOfRange, "dataset 'out_of_range'", "hook `load`", "values in [1, 3]", "[0, 2]"
    )


def test_float_labels_nan_samples_and_unseeded_splits_fail():
    fails(check_dataset, FloatLabels, "hook `load`", "dtype torch.float32", "expected torch.int64")
    fails(check_dataset, NaNImages, "dataset 'nan_images'", "hook `load`", "NaN")
    fails(check_dataset, Unseeded, "hook `load`", "the same data")


def test_a_dataset_without_load_is_missing_that_hook():
    class Empty(Dataset):
        class_names = ["a", "b"]

    fails(check_dataset, Empty, "hook `load` missing")


# -- backbones and encoders ------------------------------------------------------------------------
class FlatVelocity(TinyBackbone):
    name = "flat"

    def forward(self, x_t, t, tokens):
        return super().forward(x_t, t, tokens).flatten(1)


class IgnoresTokens(TinyBackbone):
    name = "ignores_tokens"

    def forward(self, x_t, t, tokens):
        return super().forward(x_t, t, torch.zeros_like(tokens))


class ForgetsWeights(TinyBackbone):
    name = "forgets"

    @classmethod
    def from_pretrained(cls, directory):
        return cls(**cls.read_config(directory))  # a fresh random init, not the saved weights


def test_backbones():
    check_backbone(TinyBackbone)
    check_backbone("mlp")
    fails(
        check_backbone,
        FlatVelocity,
        "backbone 'flat'",
        "hook `forward`",
        "shape (3, 256)",
        "expected shape (3, 4, 8, 8)",
    )
    fails(check_backbone, IgnoresTokens, "hook `forward`", "depend on tokens")
    fails(check_backbone, ForgetsWeights, "hook `from_pretrained`", "differ")


def test_encoders():
    from bench.encoders.pixel import PixelEncoder

    check_encoder(PixelEncoder)

    class Noisy(PixelEncoder):
        name = "noisy"

        def encode(self, x):
            return super().encode(x) + 0.01 * torch.randn_like(x)

    fails(check_encoder, Noisy, "encoder 'noisy'", "hook `encode`", "deterministic")

    class Lossy(PixelEncoder):
        name = "lossy"

        def decode(self, z):
            return super().decode(z)[:, :1]

    fails(check_encoder, Lossy, "hook `decode`", "shape (4, 1)", "expected shape (4, 2)")
    with pytest.raises(pytest.skip.Exception, match="flux_vae.path=DIR"):
        check_encoder("flux_vae")


def test_check_plugin_dispatches_every_kind_and_refuses_others():
    check_plugin("remedy", Remedy)
    with pytest.raises(ValueError, match="unknown plugin kind 'widget'"):
        check_plugin("widget", Remedy)
    with pytest.raises(ContractFailure, match="method 'fmm': not registered .*did you mean 'fm'"):
        check_plugin("method", "fmm")
