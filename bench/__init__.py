"""bench: a benchmark harness for generative augmentation of long-tailed medical images.

The public plugin API is re-exported here. Attributes are resolved lazily so that
`import bench` (and `bench ls`) stays fast and never imports torch.
"""

from pathlib import Path as _Path


def _in_source_checkout() -> None:
    """Resolve bench.methods, bench.datasets, bench.evaluators, bench.remedies and bench.gin in a source checkout.

    In a wheel, setuptools' package-dir puts the repository's top-level methods/, datasets/,
    evaluators/ and gin/ folders inside the bench package. Where bench is imported from the
    repository itself (a plain `pip install -e .`, or `python -c ...` run at the repository root)
    they sit beside bench/ instead: the repository root joins this package's search path, so the
    same names resolve there. The root never joins sys.path, so its datasets/ folder cannot shadow
    Hugging Face `datasets`.
    """
    root = _Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "methods").is_dir() and str(root) not in __path__:
        __path__.append(str(root))


_in_source_checkout()

from bench.runtime.threads import set_defaults  # noqa: E402

set_defaults()  # before anything imports torch: OpenMP reads its wait policy once (bench.runtime.threads)

from bench.registry import (  # noqa: E402
    register_backbone,
    register_dataset,
    register_encoder,
    register_evaluator,
    register_method,
    register_remedy,
)

__version__ = "0.1.0"

_LAZY = {
    "Method": "bench.method",
    "Dataset": "bench.dataset",
    "Split": "bench.dataset",
    "Evaluator": "bench.evaluator",
    "Metric": "bench.evaluator",
    "Backbone": "bench.backbone",
    "Encoder": "bench.encoder",
    "Condition": "bench.method",
    "Prior": "bench.prior",
    "Remedy": "bench.remedy",
}

__all__ = [
    "Method",
    "Dataset",
    "Split",
    "Evaluator",
    "Metric",
    "Backbone",
    "Encoder",
    "Condition",
    "Prior",
    "Remedy",
    "register_method",
    "register_dataset",
    "register_evaluator",
    "register_backbone",
    "register_encoder",
    "register_remedy",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
