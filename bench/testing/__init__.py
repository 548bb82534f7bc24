"""bench.testing: the plugin author's kit, one contract check per plugin kind.

From a plugin package's own pytest, one line checks a plugin against everything bench's pipeline
relies on, on tiny synthetic inputs, in a second or two on a CPU:

    from bench.testing import check_method
    def test_contract():
        check_method(MyMethod)

A broken plugin fails with a ContractFailure (an AssertionError) naming the plugin, the hook and
what was expected; one that needs the user's files is skipped with the settings it needs. bench's
own tests run these checks over every registered plugin (tests/core/test_plugin_contracts.py).
See docs/plugins/testing.md.
"""

from bench.testing.backbone_check import check_backbone
from bench.testing.dataset_check import check_dataset
from bench.testing.encoder_check import check_encoder
from bench.testing.evaluator_check import check_evaluator
from bench.testing.method_check import check_method
from bench.testing.plugin_check import CHECKS, check_plugin
from bench.testing.probe import ContractFailure
from bench.testing.remedy_check import check_remedy

__all__ = [
    "CHECKS",
    "ContractFailure",
    "check_backbone",
    "check_dataset",
    "check_encoder",
    "check_evaluator",
    "check_method",
    "check_plugin",
    "check_remedy",
]
