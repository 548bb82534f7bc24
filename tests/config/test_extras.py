"""Optional extras (bench.config.extras): with nibabel, MONAI or submitit missing, the feature that
needs one is refused in one line naming the extra, when the user selects it and before anything
is written; everything else still runs. A missing package is simulated by setting its entry in
sys.modules to None (what `import` then treats as not installed)."""

import subprocess
import sys

import pytest

import gin
from bench.cli import main
from bench.config.extras import EXTRA, installed, require_extra
from bench.errors import BenchError


def missing(monkeypatch, module: str) -> None:
    """`module` and its submodules cannot be imported (a submodule already imported would be found)."""
    for name in [m for m in sys.modules if m.startswith(f"{module}.")] + [module]:
        monkeypatch.setitem(sys.modules, name, None)


def refused(args: list[str], capsys) -> str:
    """`bench ARGS`: exit 2 and the one line it printed."""
    try:
        assert main(args) == 2
    finally:
        gin.clear_config()
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    return err[0]


def test_installed_tells_present_absent_and_simulated_absent_modules(monkeypatch):
    assert installed("json") and not installed("no_such_module_bench_28")
    missing(monkeypatch, "json")
    assert not installed("json")


def test_require_extra_names_the_extra_of_each_optional_module(monkeypatch):
    assert EXTRA == {"nibabel": "ct", "monai": "paper", "submitit": "slurm"}
    for module, extra in EXTRA.items():
        missing(monkeypatch, module)
        with pytest.raises(BenchError, match=rf"^X needs {module}: pip install 'medaug-bench\[{extra}\]'$"):
            require_extra(module, "X")


@pytest.mark.slow
def test_prepare_ct_rate_without_nibabel_names_the_ct_extra_and_writes_nothing(monkeypatch, tmp_path, capsys):
    missing(monkeypatch, "nibabel")
    out = tmp_path / "slices"
    line = refused(["prepare", "ct_rate", "--root", str(tmp_path), "--out", str(out)], capsys)
    assert line == (
        "bench: error: bench prepare ct_rate (CT-RATE's NIfTI volumes) needs nibabel: "
        "pip install 'medaug-bench[ct]'"
    )
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "binding, setting",
    [
        ("downstream.arch=resnet50", "downstream.arch='resnet50'"),
        ("features.arch=densenet121", "features.arch='densenet121'"),
    ],
)
def test_a_monai_network_without_monai_is_refused_at_validate(
    binding, setting, monkeypatch, tmp_path, capsys
):
    missing(monkeypatch, "monai")
    monkeypatch.chdir(tmp_path)
    line = refused(
        ["validate", "datasets=[digits_lt]", "methods=[fm]", "pipeline.evaluators=[downstream]", binding],
        capsys,
    )
    assert line == f"bench: error: {setting} needs monai: pip install 'medaug-bench[paper]'"
    assert list(tmp_path.iterdir()) == []


def test_building_a_monai_network_without_monai_names_the_extra(monkeypatch):
    from bench.classify.fit import build_classifier

    missing(monkeypatch, "monai")
    with pytest.raises(BenchError, match=r"classifier arch 'densenet121' needs monai: .*\[paper\]"):
        build_classifier("densenet121", 1, 3)
    assert build_classifier("small_cnn", 1, 3) is not None  # bench's own network needs nothing


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "slurm"])
def test_a_submitit_executor_without_submitit_is_refused_at_validate(executor, monkeypatch, tmp_path, capsys):
    missing(monkeypatch, "submitit")
    monkeypatch.chdir(tmp_path)
    line = refused(["validate", "datasets=[synthetic2d]", "methods=[fm]", f"executor={executor}"], capsys)
    assert line == f"bench: error: executor={executor} needs submitit: pip install 'medaug-bench[slurm]'"
    line = refused(
        [
            "validate",
            "datasets=[synthetic2d]",
            "methods=[fm]",
            "executor=inline",
            "executor.slurm_extra={'qos':'x'}",
        ],
        capsys,
    )
    assert line == "bench: error: executor.slurm_extra needs submitit: pip install 'medaug-bench[slurm]'"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_bench_imports_and_validates_inline_without_any_optional_package(tmp_path):
    """A fresh interpreter where nibabel, MONAI and submitit cannot be imported: bench's executors
    module imports and an inline `bench validate` of the embedded data passes."""
    code = (
        "import sys\n"
        "for m in ('nibabel', 'monai', 'submitit'): sys.modules[m] = None\n"
        "import bench.scale.executors\n"
        "from bench.cli import main\n"
        "sys.exit(main(['validate', 'datasets=[synthetic2d,digits_lt]', 'methods=[fm]']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 cell(s) valid" in done.stdout
