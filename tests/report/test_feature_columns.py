"""Numbers on different feature networks never share a table column (bench.metrics.feature_names,
bench.report.tables.refuse_mixed_features): their names, their records' declarations, the tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from records_fixture import fid_value, make_experiment

from bench.errors import BenchError
from bench.evaluator import metric_info, on_features, split_network
from bench.evaluators.fid import FID
from bench.evaluators.knn_purity import KNNPurity
from bench.metrics.feature_names import name_by_features
from bench.paper.paper_tables import paper_options, paper_tables
from bench.report.collect import load_experiment
from bench.store.schema import schema

XRV = "xrv_densenet121 sha256:aaaaaaaaaaaaaaaa"


class Extractor:
    """What name_by_features reads of a feature extractor."""

    def __init__(self, network: str, identity: str):
        self.network, self.identity = network, identity


@pytest.mark.parametrize(
    ("name", "tagged"),
    [
        ("fid/tail", "fid[inception_v3]/tail"),
        ("fid/tail@source", "fid[inception_v3]/tail@source"),
        ("knn_purity_gap/features", "knn_purity_gap[inception_v3]/features"),
        ("memo_nn_ratio", "memo_nn_ratio[inception_v3]"),
        ("memo_nn_ratio@init", "memo_nn_ratio[inception_v3]@init"),
    ],
)
def test_a_pretrained_network_goes_into_the_names_stem_and_comes_back_out(name, tagged):
    assert on_features(name, "inception_v3") == tagged
    assert split_network(tagged) == (name, "inception_v3")
    assert split_network(name) == (name, None)


def test_numbers_on_a_pretrained_network_are_renamed_but_counts_are_not():
    metrics = {"fid/tail": 3.0, "fid/tail@source": 9.0, "n/fid": 40.0}
    renamed, computed_on = name_by_features(FID(), metrics, Extractor("xrv_densenet121", XRV))
    assert renamed == {
        "fid[xrv_densenet121]/tail": 3.0,
        "fid[xrv_densenet121]/tail@source": 9.0,
        "n/fid": 40.0,
    }
    assert computed_on == {"fid[xrv_densenet121]/tail": XRV, "fid[xrv_densenet121]/tail@source": XRV}


def test_numbers_on_the_domain_network_keep_their_names_and_say_their_features():
    metrics = {"knn_purity/features": 0.6, "knn_purity/latent": 0.5}
    renamed, computed_on = name_by_features(KNNPurity(), metrics, Extractor("domain", "domain small_cnn@x"))
    assert renamed == metrics  # the default keeps every name (and so every stored record's)
    assert computed_on == {"knn_purity/features": "domain small_cnn@x"}  # the latent space is not features


def test_the_record_declares_each_network_under_its_own_name_with_its_features():
    names = ["fid/tail", "fid/tail@source", "n/fid", "fid[xrv_densenet121]/tail"]
    info = metric_info([FID()], names, {"fid/tail": "domain small_cnn@x", "fid[xrv_densenet121]/tail": XRV})
    assert list(info) == ["fid/tail", "fid[xrv_densenet121]/tail", "n/fid"]
    assert info["fid/tail"]["features"] == "domain small_cnn@x" and info["fid/tail"]["label"] == "FID tail"
    tagged = info["fid[xrv_densenet121]/tail"]
    assert tagged["label"] == "FID tail [xrv_densenet121]" and tagged["features"] == XRV
    assert tagged["higher_is_better"] is False and tagged["headline"] is True
    assert "features" not in info["n/fid"]
    from jsonschema import Draft202012Validator

    Draft202012Validator(schema("record")["properties"]["metric_info"]).validate(info)


def with_xrv(folder: Path, identity=lambda rec: XRV) -> None:
    """Every record also holds FID tail on xrv features (the domain value + 100), declared as a run does."""
    for path in sorted(folder.glob("*/*/seed*/record.json")):
        rec = json.loads(path.read_text())
        rec["metrics"]["fid[xrv_densenet121]/tail"] = rec["metrics"]["fid/tail"] + 100
        rec["higher_is_better"]["fid[xrv_densenet121]/tail"] = False
        features = {"fid/tail": "domain small_cnn@phantom_lt", "fid[xrv_densenet121]/tail": identity(rec)}
        rec["metric_info"] = metric_info([FID()], rec["metrics"], features)
        path.write_text(json.dumps(rec))


def test_a_table_on_two_feature_networks_has_a_column_for_each(tmp_path):
    folder = make_experiment(tmp_path, methods=("fm", "optprior"), seeds=(0, 1))
    with_xrv(folder)
    tables = {t.name: t for t in paper_tables(load_experiment(folder), paper_options())}
    generative = tables["generative"]
    titles = [c.title for c in generative.columns]
    domain, xrv = titles.index("FID tail"), titles.index("FID tail [xrv_densenet121]")
    for labels, entries in generative.rows:
        if labels[0] in ("fm", "optprior"):
            expected = np.mean([fid_value(labels[0], s) for s in (0, 1)])
            assert entries[domain].values and np.mean(entries[domain].values) == pytest.approx(expected)
            assert np.mean(entries[xrv].values) == pytest.approx(expected + 100)
    assert "A network in brackets" in generative.caption
    rows = [labels[0].split(" ")[0] for labels, _ in tables["all_phantom_lt"].rows]  # 'fid/tail ↓'
    assert "fid/tail" in rows and "fid[xrv_densenet121]/tail" in rows


def test_one_metric_on_two_weight_files_is_refused_naming_both(tmp_path):
    folder = make_experiment(tmp_path, methods=("fm", "optprior"), seeds=(0, 1))
    other = "xrv_densenet121 sha256:bbbbbbbbbbbbbbbb"
    with_xrv(folder, lambda rec: other if rec["method"] == "optprior" else XRV)
    with pytest.raises(
        BenchError, match=r"records of phantom_lt computed fid\[xrv_densenet121\]/tail on"
    ) as err:
        paper_tables(load_experiment(folder), paper_options())
    message = str(err.value)
    assert XRV in message and other in message and "phantom_lt/optprior/seed0" in message
    assert "\n" not in message
