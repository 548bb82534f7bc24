"""Hydra-style overrides become grid axes, run options and valid gin bindings."""

import pytest

import gin
from bench.config.overrides import parse_overrides, split_executor_bindings, to_gin_literal, to_python
from bench.errors import BenchError


def test_axes_options_and_bindings_are_separated():
    ov = parse_overrides(
        [
            "methods=[fm,cbfm]",
            "datasets=[nih_lt]",
            "seeds=[0,1,2]",
            "results_dir=/tmp/r",
            "experiment=paper",
            "train.steps=10",
        ]
    )
    assert ov.axes == {"methods": ["fm", "cbfm"], "datasets": ["nih_lt"], "seeds": [0, 1, 2]}
    assert ov.options == {"results_dir": "/tmp/r", "experiment": "paper"}
    assert ov.bindings == ["train.steps = 10"]


def test_executor_is_a_run_option_and_its_settings_are_kept_apart_from_the_cells():
    ov = parse_overrides(
        ["executor=slurm", "executor.partition=gpu", "train.steps=10", "executor.slurm_extra={'qos':'high'}"]
    )
    assert ov.options == {"executor": "slurm"}
    cells, executor = split_executor_bindings(ov.bindings + ["executor.mem_gb = 64", "sample.nfe = 8"])
    assert cells == ["train.steps = 10", "sample.nfe = 8"]
    assert executor == [
        "executor.partition = 'gpu'",
        "executor.slurm_extra = {'qos': 'high'}",
        "executor.mem_gb = 64",
    ]


def test_single_axis_value_becomes_a_list():
    assert parse_overrides(["seeds=3"]).axes == {"seeds": [3]}


@pytest.mark.parametrize(
    "value,expected",
    [
        ("3", 3),
        ("1e-3", 1e-3),
        ("true", True),
        ("False", False),
        ("null", None),
        ("/data/nih", "/data/nih"),
        ("'quoted'", "quoted"),
        ("[a, 2, [b]]", ["a", 2, ["b"]]),
        ("(4,4,8)", (4, 4, 8)),
        ("abc_def", "abc_def"),
    ],
)
def test_values_parse_like_hydra(value, expected):
    assert to_python(value) == expected


def test_gin_literals_parse_in_gin():
    @gin.configurable("ovr_probe")
    def probe(a=None, b=None, c=None, d=None):
        return a, b, c, d

    gin.clear_config()
    gin.parse_config(
        [
            f"ovr_probe.a = {to_gin_literal('/data/x y')}",
            f"ovr_probe.b = {to_gin_literal('[fm,2]')}",
            f"ovr_probe.c = {to_gin_literal('(4,4,8)')}",
            f"ovr_probe.d = {to_gin_literal('0.5')}",
        ]
    )
    assert probe() == ("/data/x y", ["fm", 2], (4, 4, 8), 0.5)
    gin.clear_config()


@pytest.mark.parametrize(
    "arg", ["foo", "=3", "methods=", "methods=[fm", "train.lr=(1,", "notakey=3", "a b=1", "x.y=[a,'b]"]
)
def test_malformed_overrides_raise_one_line(arg):
    with pytest.raises(BenchError) as err:
        parse_overrides([arg])
    assert "\n" not in str(err.value)
