"""Optional extras: the packages a plain `pip install medaug-bench` leaves out, and the one-line
error that names the extra to install when the user selects a feature that needs one.

A plain install runs the quick comparison, the embedded datasets and the real datasets' loaders;
three features need more, each checked when the user selects it (`bench validate` / `bench run`
before anything is written, `bench prepare ct_rate` before it reads a volume), so a missing package
is never met hours into a run:

- `ct`: nibabel, to read CT-RATE's NIfTI volumes (`bench prepare ct_rate`);
- `paper`: MONAI, for the paper protocol's classifiers (DenseNet-121 domain features,
  ResNet-50 downstream: `features.arch` / `downstream.arch` 'densenet121' or 'resnet50', the real
  datasets' default);
- `slurm`: submitit, for `executor=local` and `executor=slurm`.

`pip install 'medaug-bench[all]'` installs every extra; the `test` extra does too, so the full
test suite covers these paths.
"""

from __future__ import annotations

import importlib.util
import sys

from bench.errors import BenchError

DISTRIBUTION = "medaug-bench"
EXTRA = {"nibabel": "ct", "monai": "paper", "submitit": "slurm"}  # module -> the extra that installs it
MONAI_ARCHS = ("densenet121", "resnet50")  # bench.classify.fit's MONAI networks


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it (MONAI takes seconds to import).

    A module set to None in sys.modules counts as missing, as `import` would treat it."""
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_extra(module: str, feature: str) -> None:
    """A one-line BenchError naming the extra to install when `feature` needs a missing `module`."""
    if not installed(module):
        raise missing_extra(module, feature)


def missing_extra(module: str, feature: str) -> BenchError:
    """The error for `feature` needing `module`: `ct_rate needs nibabel: pip install '...[ct]'`."""
    return BenchError(f"{feature} needs {module}: pip install '{DISTRIBUTION}[{EXTRA[module]}]'")


def require_network(arch: str, setting: str) -> None:
    """MONAI for a classifier architecture that is one of MONAI's networks (`setting` names it)."""
    if arch in MONAI_ARCHS:
        require_extra("monai", f"{setting}={arch!r}")
