"""`check_plugin(kind, plugin)`: the contract check of any plugin kind, by the kind's name."""

from __future__ import annotations

from bench import registry
from bench.testing.backbone_check import check_backbone
from bench.testing.dataset_check import check_dataset
from bench.testing.encoder_check import check_encoder
from bench.testing.evaluator_check import check_evaluator
from bench.testing.method_check import check_method
from bench.testing.remedy_check import check_remedy

CHECKS = {
    "method": check_method,
    "dataset": check_dataset,
    "evaluator": check_evaluator,
    "remedy": check_remedy,
    "backbone": check_backbone,
    "encoder": check_encoder,
}


def check_plugin(kind: str, plugin, **options) -> None:
    """Run the contract check of `kind` ("method" or "methods", ..., the registry's kinds) on
    `plugin` (a class or a registered name); `options` go to that check (`settings=...`)."""
    plural = registry.REGISTRIES.get(kind)  # "remedies" -> its registry, whose kind is "remedy"
    check = CHECKS.get(plural.kind if plural is not None else kind)
    if check is None:
        raise ValueError(f"unknown plugin kind {kind!r}; use one of {', '.join(CHECKS)}")
    check(plugin, **options)
