"""bench: a benchmark harness for generative augmentation of long-tailed medical images.

The public plugin API is re-exported here. Attributes are resolved lazily so that
`import bench` (and `bench ls`) stays fast and never imports torch.
"""

from bench.threads import set_defaults

set_defaults()  # before anything imports torch: OpenMP reads its wait policy once (bench.threads)

from bench.registry import (  # noqa: E402
    register_backbone,
    register_dataset,
    register_encoder,
    register_evaluator,
    register_method,
)

__version__ = "0.1.0"

_LAZY = {
    "Method": "bench.method",
    "Dataset": "bench.dataset",
    "Split": "bench.dataset",
    "Evaluator": "bench.evaluator",
    "Backbone": "bench.backbone",
    "Encoder": "bench.encoder",
    "Condition": "bench.method",
    "Prior": "bench.prior",
}

__all__ = [
    "Method",
    "Dataset",
    "Split",
    "Evaluator",
    "Backbone",
    "Encoder",
    "Condition",
    "Prior",
    "register_method",
    "register_dataset",
    "register_evaluator",
    "register_backbone",
    "register_encoder",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
