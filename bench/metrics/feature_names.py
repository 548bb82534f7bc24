"""Which numbers were computed on which features, and their names.

An evaluator's number depends on the feature network when the evaluator embedded images with it
(`CellContext.features`) and the metric's declaration does not say otherwise
(`Metric.on_features=False`: sample counts, latent-space scores). Such a number computed on a
pretrained network (bench.metrics.pretrained) takes the network into its name
(bench.evaluator.on_features: `fid/tail` -> `fid[inception_v3]/tail`), so the same metric on two
networks is two columns of every table; on the domain network it keeps its name, as it always had.
Either way the record's `metric_info` states the features (`FeatureExtractor.identity`).
"""

from __future__ import annotations

from bench.config.evaluation import DOMAIN
from bench.evaluator import declarations, family, on_features


def name_by_features(evaluator, metrics: dict, extractor) -> tuple[dict, dict]:
    """(`metrics` renamed for `extractor`'s network, {new name: the features it was computed on})
    for an evaluator that read the features; names declared `on_features=False` stay as they are."""
    declared = {m.name: m for m in declarations(evaluator)}
    renamed, computed_on = {}, {}
    for name, value in metrics.items():
        base = family(name, declared)
        if base is not None and not declared[base].on_features:
            renamed[name] = value
            continue
        new = name if extractor.network == DOMAIN else on_features(name, extractor.network)
        renamed[new], computed_on[new] = value, extractor.identity
    return renamed, computed_on
