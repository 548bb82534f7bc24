"""Loading every plugin (what each `bench` command does first) leaves the heavy libraries unloaded.

scikit-learn and torchmetrics cost about 2 s of a `bench` process's start, scipy.ndimage 0.3 s;
they load where a prior is fitted, an evaluator scores or a CT volume is masked, so `bench
validate`, a typo's one-line error and a rerun of a finished grid answer sooner.
"""

import subprocess
import sys

CODE = (
    "import sys; from bench.pipeline.assemble import load_plugins; load_plugins(); "
    "print(sorted(m for m in ('sklearn', 'torchmetrics', 'scipy.ndimage') if m in sys.modules))"
)


def test_loading_every_plugin_imports_neither_sklearn_nor_torchmetrics_nor_scipy_ndimage():
    out = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
