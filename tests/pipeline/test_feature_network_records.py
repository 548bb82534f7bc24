"""The runner names each number after the features it was computed on and its record says so
(bench.pipeline.runner.evaluate, bench.metrics.feature_names), with a stand-in extractor: the
wiring, not the networks (tests/metrics/test_feature_networks.py)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from bench.context import CellContext
from bench.dataset import Split
from bench.evaluator import Evaluator, Metric, metric_info
from bench.pipeline.runner import evaluate


class Spread(Evaluator):
    """Reads the features: their mean spread, and the number of rows (which no features change)."""

    name = "spread"
    metrics = (Metric("spread", "spread", False), Metric("n/spread", "rows", None, on_features=False))

    def evaluate(self, cell):
        features = cell.features("train")
        return {"spread": float(features.std()), "n/spread": float(len(features))}


class Count(Evaluator):
    """Reads no features."""

    name = "count"
    metrics = (Metric("count", "count", True),)

    def evaluate(self, cell):
        return {"count": float(len(cell.train))}


class Extractor:
    """A stand-in feature network: the images' pixels, scaled."""

    def __init__(self, network: str, identity: str):
        self.network, self.identity = network, identity

    def embed(self, x) -> np.ndarray:
        return 2 * x.reshape(len(x), -1).double().numpy()


def evaluated(network: str, identity: str) -> tuple[dict, dict, dict]:
    """(metrics, higher_is_better, metric_info) of the two evaluators on one tiny cell."""
    images = Split(torch.arange(24.0).reshape(6, 1, 2, 2) / 24, torch.tensor([0, 0, 0, 1, 1, 1]))
    extractor = Extractor(network, identity)
    ctx = CellContext(
        SimpleNamespace(kind="image"), images, images, images, None, 0, extractor=lambda: extractor
    )
    cell = SimpleNamespace(
        evaluators=[Spread(), Count()], dataset=SimpleNamespace(kind="image"), spec=SimpleNamespace(label="c")
    )
    metrics, higher = evaluate(cell, ctx)
    return metrics, higher, metric_info(cell.evaluators, metrics, ctx.feature_metrics)


def test_a_pretrained_networks_numbers_carry_its_name_and_the_record_its_weights():
    metrics, higher, info = evaluated("inception_v3", "inception_v3 sha256:0123456789abcdef")
    assert set(metrics) == {"spread[inception_v3]", "n/spread", "count"}
    assert metrics["n/spread"] == 6 and metrics["count"] == 6
    assert higher == {"spread[inception_v3]": False, "count": True}
    assert info["spread[inception_v3]"]["features"] == "inception_v3 sha256:0123456789abcdef"
    assert info["spread[inception_v3]"]["label"] == "spread [inception_v3]"
    assert "features" not in info["n/spread"] and "features" not in info["count"]


def test_the_domain_networks_numbers_keep_their_names_and_the_record_says_domain():
    metrics, higher, info = evaluated("domain", "domain small_cnn@digits_lt")
    assert set(metrics) == {"spread", "n/spread", "count"}
    assert higher == {"spread": False, "count": True}
    assert info["spread"] == {
        "label": "spread",
        "higher_is_better": False,
        "headline": False,
        "unit": "",
        "rank": 1000,
        "features": "domain small_cnn@digits_lt",
    }
