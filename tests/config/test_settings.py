"""bench's settings: registered by `import bench.config` alone, checked from their declarations, and
built together once per cell (CellConfig), whose values the record stores."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from collections.abc import Sequence

import pytest
from records_fixture import complete_record

import gin
from bench.config.cell_config import CellConfig
from bench.config.checks import USE, Check, Settings, setting, settings
from bench.config.data import AugmentationTargets, DataSplit
from bench.config.evaluation import FeatureConfig, GenerativeSet
from bench.config.executor_settings import ExecutorConfig
from bench.config.grid_axes import GridConfig
from bench.config.loader import LoaderConfig
from bench.config.pipeline_config import PipelineConfig
from bench.config.sample import SampleConfig, SourceSubset
from bench.config.throughput import Assumptions
from bench.config.train import TrainConfig
from bench.errors import BenchError
from bench.pipeline.assemble import CellSpec, RunRequest, build_cell
from bench.store.records import record_problem

SETTINGS = {
    "pipeline": PipelineConfig,
    "grid": GridConfig,
    "train": TrainConfig,
    "sample": SampleConfig,
    "source": SourceSubset,
    "targets": AugmentationTargets,
    "data_split": DataSplit,
    "generative": GenerativeSet,
    "features": FeatureConfig,
    "loader": LoaderConfig,
    "budget": Assumptions,
    "executor": ExecutorConfig,
}


def test_importing_bench_config_registers_every_setting_without_torch():
    code = (
        "import sys, gin, bench.config; "
        "print(sorted({c.name for _, c in gin.config._REGISTRY.items()})); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out = out.stdout.split("\n")
    assert set(SETTINGS) <= set(ast.literal_eval(out[0]))
    assert out[1] == "False"


# one parameter of each scope, and a gin value other than its default
BOUND = {
    "pipeline": ("encoder", "'other'"),
    "grid": ("seeds", "[3]"),
    "train": ("steps", "7"),
    "sample": ("nfe", "4"),
    "source": ("max_per_class", "5"),
    "targets": ("lt_to", "0.2"),
    "data_split": ("tie_to_seed", "True"),
    "generative": ("n_total", "10"),
    "features": ("arch", "'resnet50'"),
    "loader": ("workers", "2"),
    "budget": ("mfu", "0.5"),
    "executor": ("nodes", "2"),
}


@pytest.mark.parametrize("scope", sorted(SETTINGS))
def test_each_scope_is_its_dataclass_and_takes_its_bindings(scope):
    cls, (name, value) = SETTINGS[scope], BOUND[scope]
    assert cls.scope == scope
    default = getattr(cls(), name)  # the defaults pass their own checks
    gin.parse_config(f"{scope}.{name} = {value}")
    assert getattr(cls(), name) == ast.literal_eval(value) != default


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        # the wordings the catalogue of bad inputs (docs/bad-inputs.md) and the tests assert
        (TrainConfig, {"steps": "abc"}, "train.steps='abc': use an integer >= 1"),
        (TrainConfig, {"lr": float("nan")}, "train.lr=nan: use a finite number > 0"),
        (TrainConfig, {"mixed_precision": "fp64"}, "train.mixed_precision='fp64': use one of no, fp16, bf16"),
        (TrainConfig, {"sync_every": 0}, "train.sync_every=0: use an integer >= 1"),
        (TrainConfig, {"compile": "yes"}, "train.compile='yes': use True or False"),
        (TrainConfig, {"steps": True}, "train.steps=True: use an integer >= 1"),  # bool is not an integer
        (
            TrainConfig,
            {"ema_decay": 1.0},
            "train.ema_decay=1.0: use a finite number in [0, 1) (0 disables EMA)",
        ),
        (
            TrainConfig,
            {"convergence_window": 0.6},
            "train.convergence_window=0.6: use a finite number in (0, 0.5] (a fraction of the steps)",
        ),
        (SampleConfig, {"nfe": 0}, "sample.nfe=0: use an integer >= 1 (velocity evaluations per sample)"),
        (
            SampleConfig,
            {"batch_size": 0},
            "sample.batch_size=0: use an integer >= 1, or None (the largest batch that fits the GPU)",
        ),
        (
            SampleConfig,
            {"precision": "fp16"},
            "sample.precision='fp16': use one of fp32, bf16 "
            "('bf16': autocast on the GPU, ~10x faster; 'fp32': exact)",
        ),
        (
            SourceSubset,
            {"max_per_class": 1},
            "source.max_per_class=1: use an integer >= 2 (source draws per class the @source reference scores), "
            "or None (all of them)",
        ),
        (Assumptions, {"mfu": 1.5}, "budget.mfu=1.5: use a fraction of the peak in (0, 1], e.g. 0.35"),
        (
            GenerativeSet,
            {"allocation": "equal"},
            "generative.allocation='equal': use one of targets, uniform, train",
        ),
        (
            PipelineConfig,
            {"backbone": ["mlp"]},
            "pipeline.backbone takes one name, got ['mlp']; e.g. pipeline.backbone=mlp",
        ),
        (
            PipelineConfig,
            {"stop_after": "train"},
            "pipeline.stop_after='train': use None (every stage) or 'prior' (the offline stage alone, recorded by "
            "the evaluators that read no samples)",
        ),
        (ExecutorConfig, {"nodes": 0}, "executor.nodes must be a positive integer, got 0"),
        (
            ExecutorConfig,
            {"slurm_extra": [1]},
            "executor.slurm_extra must be a dict of Slurm parameters, e.g. {'qos': 'high'}; got [1]",
        ),
        (
            LoaderConfig,
            {"workers": -1},
            "loader.workers must be an integer >= 0, or None (automatic), got -1",
        ),
        (FeatureConfig, {"epochs": 0}, "features.epochs must be an integer >= 1, got 0"),
        (
            AugmentationTargets,
            {"reference": "max"},
            "targets.reference must be one of largest_finding, largest, got 'max'",
        ),
        (DataSplit, {"tie_to_seed": 1}, "data_split.tie_to_seed takes True or False, got 1"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_gin_parameter(cls, kwargs, message):
    with pytest.raises(BenchError) as err:
        cls(**kwargs)
    assert str(err.value).split("\n  In call to configurable")[0] == message  # gin adds its context line


@pytest.mark.parametrize(
    "check, words",
    [
        (Check(minimum=1), "an integer >= 1"),
        (Check(above=0), "an integer > 0"),
        (Check(maximum=3), "an integer <= 3"),
        (Check(minimum=0, below=1), "an integer in [0, 1)"),
        (Check(above=0, maximum=0.5), "an integer in (0, 0.5]"),
        (Check(choices=("a", "b")), "one of a, b"),
        (Check(what="a name", note="n"), "a name (n)"),
        (Check(), "an integer"),
    ],
)
def test_a_check_says_what_it_takes(check, words):
    assert check.describe("an integer", optional=False) == words


def test_bounds_are_inclusive_or_exclusive_as_declared_and_none_only_where_optional():
    is_number = lambda v: isinstance(v, (int, float))  # noqa: E731
    closed, half_open = Check(minimum=0, maximum=1), Check(above=0, below=1)
    assert [closed.accepts(v, is_number, False) for v in (0, 1, -0.1, 1.1)] == [True, True, False, False]
    assert [half_open.accepts(v, is_number, False) for v in (0, 1, 0.5)] == [False, False, True]
    assert Check().accepts(None, is_number, True) and not Check().accepts(None, is_number, False)
    assert not Check(choices=("x",)).accepts(["x"], is_number, False)


def test_a_declared_class_checks_its_declared_fields_only_and_cross_field_rules_stay_its_own():
    @settings("settings_example", wording=USE)
    class Example(Settings):
        count: int = setting(1, minimum=1)
        names: Sequence[str] = setting(("a",))
        cap: float | None = setting(None, above=0, none="no cap")
        free: str = 3  # declared without `setting`: not checked

        def __post_init__(self):
            super().__post_init__()
            if self.cap is not None and self.cap < self.count:
                raise BenchError("settings_example.cap must be at least settings_example.count")

    assert Example().free == 3 and Example(cap=2.5).cap == 2.5
    for kwargs, message in (
        ({"count": 0}, "settings_example.count=0: use an integer >= 1"),
        ({"names": "ab"}, "settings_example.names='ab': use a list of names"),
        ({"cap": -1.0}, "settings_example.cap=-1.0: use a finite number > 0, or None (no cap)"),
        ({"count": 3, "cap": 2.0}, "settings_example.cap must be at least settings_example.count"),
    ):
        with pytest.raises(BenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
            Example(**kwargs)
    changed = Example()
    changed.count = 0
    with pytest.raises(BenchError, match="settings_example.count=0"):
        changed.check()  # a value changed in place is checked again on request


def test_a_checked_field_needs_an_annotation_the_checks_know():
    with pytest.raises(TypeError, match="annotated with one of int"):

        @settings("settings_unknown")
        class Unknown(Settings):
            value: list = setting(None)


def test_a_cell_builds_its_settings_once_from_its_configuration():
    cell = build_cell(
        CellSpec("quick", "synthetic2d", "fm", 0),
        RunRequest(bindings=["train.steps = 7", "sample.nfe = 4", "source.max_per_class = 3"]),
    )
    config = cell.config
    assert (config.train.steps, config.sample.nfe, config.source.max_per_class) == (7, 4, 3)
    assert config.pipeline == PipelineConfig() and config.targets == AugmentationTargets()
    assert config.features is None  # a vector cell embeds no images
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train = TrainConfig()
    image = build_cell(CellSpec("quick", "phantom_lt", "fm", 0), RunRequest(bindings=["features.epochs = 2"]))
    assert image.config.features.epochs == 2


def test_the_settings_are_plain_json_as_the_record_stores_them():
    request = RunRequest(bindings=["targets.untouched = ['X']"])
    cell = build_cell(CellSpec("quick", "phantom_lt", "fm", 0), request)
    stored = json.loads(json.dumps(cell.config.to_json()))
    assert stored == cell.config.to_json()  # lists, not tuples: what a read record gives back
    assert set(stored) == {f.name for f in dataclasses.fields(CellConfig)}
    assert stored["targets"]["untouched"] == ["X"] and stored["pipeline"]["evaluators"] == list(
        cell.config.pipeline.evaluators
    )
    assert stored["train"] == dataclasses.asdict(cell.config.train)
    base = complete_record({"dataset": "phantom_lt", "method": "fm", "seed": 0, "metrics": {}})
    assert record_problem({**base, "settings": stored}) is None
    assert "`settings` is a string" in record_problem({**base, "settings": "train.steps=3"})


def test_a_cells_record_stores_its_settings(tmp_path):
    from bench.pipeline.runner import run_cell

    tiny = [
        "train.steps = 2",
        "sample.nfe = 1",
        "sample.init_reference = False",
        "synthetic2d.n_max = 400",
        "synthetic2d.n_test_per_class = 10",
        "pipeline.evaluators = ['swd']",
        "source.max_per_class = 4",
    ]
    cell = build_cell(CellSpec("quick", "synthetic2d", "fm", 0), RunRequest(bindings=tiny))
    record = run_cell(cell, tmp_path)
    stored = json.loads((cell.spec.folder(tmp_path) / "record.json").read_text())["settings"]
    assert stored == record["settings"] == json.loads(json.dumps(cell.config.to_json()))
    assert (stored["train"]["steps"], stored["sample"]["nfe"], stored["source"]["max_per_class"]) == (2, 1, 4)
    assert "train.steps = 2" in record["config"]  # the parsed gin text keeps its own field
