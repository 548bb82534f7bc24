"""The registry: decorators, entry points, broken plugins, did-you-mean, import hygiene."""

import subprocess
import sys
import textwrap

import pytest

import bench
from bench.errors import BenchError
from bench.registry import Registry, methods


def test_public_api_exports_base_classes_and_decorators():
    from bench.method import Method

    assert bench.Method is Method
    for name in ("Dataset", "Evaluator", "register_method", "register_dataset", "register_evaluator"):
        assert getattr(bench, name) is not None


def test_builtin_method_resolves_and_unknown_name_suggests():
    assert methods.get("fm").name == "fm"
    with pytest.raises(BenchError, match=r"unknown method 'fn'; did you mean 'fm'\?"):
        methods.get("fn")


def test_decorator_registers_gin_configurable_class():
    import gin

    reg = Registry("widget", "bench.test_widgets")

    @reg.register("knob")
    class Knob:
        def __init__(self, size=1):
            self.size = size

    assert reg.get("knob") is Knob and reg.names() == ["knob"]
    gin.clear_config()
    gin.parse_config(["knob.size = 7"])
    assert Knob().size == 7
    gin.clear_config()
    assert reg.infos()[0].distribution == "(registered in-process)"


@pytest.mark.slow
def test_hf_datasets_is_not_shadowed():
    """bench.datasets and Hugging Face `datasets` import side by side in one process."""
    code = textwrap.dedent("""
        import bench.datasets, datasets
        assert bench.datasets.__name__ == 'bench.datasets'
        assert hasattr(datasets, 'load_dataset'), datasets.__file__
        import bench.methods, bench.evaluators
        print('ok')
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_import_bench_and_ls_do_not_import_torch():
    code = (
        "import sys; from bench.cli import main; rc = main(['ls']); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "fm" in out.stdout and "synthetic2d" in out.stdout
