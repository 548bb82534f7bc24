"""Grid cells: expanding a run request into (dataset x method x seed) and building each cell.

Building a cell parses its gin configuration and constructs every object it needs (dataset,
method, encoder, evaluators, and the backbone for the dataset's latent shape) without training
anything; `bench validate` stops there and `bench run` validates every cell before it writes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import gin
from bench import registry
from bench.config.cell_config import CellConfig
from bench.config.checks import is_int
from bench.config.data import AugmentationTargets
from bench.config.evaluation import DOMAIN, GenerativeSet
from bench.config.executor_settings import ExecutorConfig
from bench.config.gin_config import (
    check_user_files,
    experiment_file,
    gin_dir,
    parse,
    plugin_file,
)
from bench.config.grid_axes import GridConfig
from bench.data.split_seed import tie_split_seed
from bench.errors import BenchError
from bench.pipeline import stages
from bench.pipeline.footprint import (
    Footprint,
    device_memory,
    estimate,
    require_fit,
    require_shared_micro_batches,
)
from bench.pipeline.sampler import get_solver
from bench.runtime.distributed import world
from bench.store.gridfile import cell_label


@dataclass(frozen=True)
class CellSpec:
    """One grid cell."""

    experiment: str
    dataset: str
    method: str
    seed: int

    def folder(self, results_dir: Path) -> Path:
        """`<results_dir>/<experiment>/<dataset>/<method>/seed<k>`."""
        return Path(results_dir) / self.experiment / self.dataset / self.method / f"seed{self.seed}"

    @property
    def label(self) -> str:
        """Short name for messages and grid.json: dataset/method/seed<k>."""
        return cell_label(self.dataset, self.method, self.seed)


@dataclass
class RunRequest:
    """What the user asked for on the command line."""

    experiment: str = "quick"
    results_dir: Path = Path("results")
    gin_files: list = field(default_factory=list)
    bindings: list = field(default_factory=list)
    axes: dict = field(default_factory=dict)
    executor: str = "inline"  # where the cells run: inline, local or slurm (bench.scale.executors)
    executor_bindings: list = field(default_factory=list)  # `executor.*` gin bindings


@dataclass
class BuiltCell:
    """A cell with its configuration parsed and its objects constructed."""

    spec: CellSpec
    dataset: object
    method: object
    encoder: object
    backbone_cls: type
    evaluators: list
    config: CellConfig  # every settings object of the cell (pipeline, train, sample, ...)
    config_hash: str
    stage_hashes: dict
    # the fingerprints of the data the cell read (bench.store.fingerprint), once `key_by_data` ran
    data: dict | None = None
    # the stage hashes of the configuration alone: they name the shared cache folders, so a
    # dataset edited in place replaces its cache there instead of leaving a stale one beside it
    config_stage_hashes: dict = field(default_factory=dict)
    # one training step's parameters, memory per device and FLOPs (set by `validate`)
    footprint: Footprint | None = None

    def key_by_data(self, data: dict) -> None:
        """Fold the data fingerprints ({"train": ..., "eval": ...}) into the hashes of the stages
        that read the data (the table's `reads`, bench.pipeline.stages), so an artifact built from
        other data is never reused."""
        self.data, self.config_stage_hashes = dict(data), dict(self.stage_hashes)
        self.stage_hashes = stages.keyed_by_data(self.stage_hashes, self.data)

    @property
    def eval_split(self) -> str:
        """The split evaluators score against: the dataset's eval split, or its validation split
        when `pipeline.eval_on = 'val'` (a one-line error if the dataset has none)."""
        if self.config.pipeline.eval_on == "test":
            return self.dataset.eval_split
        if not getattr(self.dataset, "val_split", None):
            raise BenchError(
                f"pipeline.eval_on='val': dataset {self.spec.dataset} has no validation split; "
                "use pipeline.eval_on=test"
            )
        return self.dataset.val_split


def load_plugins() -> None:
    """Import every advertised plugin so each gin configurable exists before parsing (bench's own
    settings registered theirs with this module's first `bench.config` import)."""
    for reg in registry.REGISTRIES.values():
        reg.load_all()


def expand_grid(request: RunRequest) -> list[CellSpec]:
    """The cartesian product of the grid axes (experiment file, then command line)."""
    load_plugins()
    files = [gin_dir() / "base.gin", experiment_file(request.experiment)]
    parse(files + check_user_files(request.gin_files), request.bindings)
    grid = GridConfig()
    axes = {"methods": list(grid.methods), "datasets": list(grid.datasets), "seeds": list(grid.seeds)}
    axes.update(request.axes)
    for name in axes["methods"]:
        registry.methods.get(str(name))
    for name in axes["datasets"]:
        registry.datasets.get(str(name))
    seeds = [_seed(s) for s in axes["seeds"]]
    if not (axes["methods"] and axes["datasets"] and seeds):
        raise BenchError("empty grid: methods, datasets and seeds each need at least one value")
    return [
        CellSpec(request.experiment, str(d), str(m), s)
        for d, m, s in itertools.product(axes["datasets"], axes["methods"], seeds)
    ]


MAX_SEED = 2**31  # every RNG a cell seeds (torch, numpy, scikit-learn's random_state) accepts [0, 2**31)


def _seed(value) -> int:
    if not is_int(value) or value < 0:
        raise BenchError(f"seeds must be non-negative integers, got {value!r}")
    if value >= MAX_SEED:
        raise BenchError(
            f"seeds must be below 2**31 = {MAX_SEED} (the range every random generator accepts), got {value}"
        )
    return value


def config_files(spec: CellSpec, request: RunRequest) -> list[Path]:
    """The gin files of a cell, in override order."""
    files = [gin_dir() / "base.gin"]
    for kind, name, reg in (
        ("datasets", spec.dataset, registry.datasets),
        ("methods", spec.method, registry.methods),
    ):
        path = plugin_file(kind, name, reg.get(name))
        if path is not None:
            files.append(path)
    files.append(experiment_file(spec.experiment))
    return files + check_user_files(request.gin_files)


def build_dataset(name: str, request: RunRequest):
    """A dataset configured exactly as in a cell of `request` (no method), with its targets."""
    load_plugins()
    cls = registry.datasets.get(name)
    path = plugin_file("datasets", name, cls)
    files = [gin_dir() / "base.gin"] + ([path] if path is not None else [])
    parse(
        files + [experiment_file(request.experiment)] + check_user_files(request.gin_files),
        request.bindings,
        name,
        registry.datasets.names(),
    )
    return cls(), AugmentationTargets()


def build_cell(spec: CellSpec, request: RunRequest) -> BuiltCell:
    """Parse the cell's gin config and construct its objects (nothing is trained or written)."""
    load_plugins()
    parse(config_files(spec, request), request.bindings, spec.dataset, registry.datasets.names())
    dataset = registry.datasets.get(spec.dataset)()
    config = CellConfig.parsed(image=dataset.kind == "image")  # every settings object, built here only
    dataset = tie_split_seed(dataset, spec.seed, config.data_split)
    method = registry.methods.get(spec.method)()
    encoder = registry.encoders.get(config.pipeline.encoder)()
    backbone_cls = registry.backbones.get(config.pipeline.backbone)
    evaluators = [registry.evaluators.get(name)() for name in config.pipeline.evaluators]
    require_settings(spec, dataset, encoder)
    get_solver(config.sample.solver)
    return BuiltCell(
        spec,
        dataset,
        method,
        encoder,
        backbone_cls,
        evaluators,
        config,
        *_hashes(spec, dataset, method, encoder, evaluators, config.generative),
    )


def require_settings(spec: CellSpec, *plugins) -> None:
    """One error listing every setting the cell's plugins need and the user has not given (a
    dataset root, the VAE weights), instead of one per run: where each comes from is in
    docs/datasets.md."""
    missing = [item for plugin in plugins for item in plugin.missing_settings()]
    if missing:
        raise BenchError(
            f"{len(missing)} setting(s) not set for {spec.label}: {'; '.join(missing)}; where each "
            "comes from: docs/datasets.md#where-the-files-come-from"
        )


def _hashes(spec, dataset, method, encoder, evaluators, generative: GenerativeSet) -> tuple[str, dict]:
    """Config hash of the cell and of each stage (a stage depends only on what feeds it), from the
    table of stages (bench.pipeline.stages.TABLE: what each stage's hash takes).

    Only a cell with a generative set (`generative.n_total`) has the stage `generative`; the
    `generative.` bindings feed no other stage, so adding the set reuses the trained backbone
    and the synthetic set, and cells without it keep the hashes they had before the set existed.
    """
    return stages.config_hashes(stages.HashInputs(spec, dataset, method, encoder, evaluators, generative))


def validate(request: RunRequest) -> list[BuiltCell]:
    """Build every cell of the grid, and each cell's backbone, to surface config errors early.

    The backbone is built on the meta device: its architecture is checked without allocating
    weights (a FLUX.1-size transformer would take 48 GB).
    """
    import torch

    built = []
    evals_checked = set()
    for spec in expand_grid(request):
        cell = build_cell(spec, request)
        features = cell.config.features
        if features is not None and features.network != DOMAIN:  # a weight file that would not load
            from bench.metrics.pretrained import check_weights

            check_weights(features.network, features.weights)
        train = cell.dataset.load(cell.dataset.train_split)
        if cell.stage_hashes["encode"] not in evals_checked:  # a missing eval split fails here, not mid-grid
            cell.dataset.load(cell.eval_split)
            evals_checked.add(cell.stage_hashes["encode"])
        cell.method.check_data(train.counts(cell.dataset.n_classes).tolist())
        cell.method.setup(cell.dataset.n_classes)
        shape = tuple(cell.encoder.latent_shape(tuple(train.x.shape[1:])))
        with torch.device("meta"):
            backbone = make_backbone(cell, shape)
        cfg = cell.config.train
        if cfg.activation_checkpointing:  # a backbone that cannot recompute says so now, not mid-grid
            backbone.enable_activation_checkpointing()
        if cfg.compile and not backbone.repeated_blocks():  # refused now, not mid-grid; nothing compiled
            backbone.compile_blocks()
        # traced under fake tensors (bench.pipeline.step_trace), once per backbone config and micro-batch
        cell.footprint = estimate(
            backbone,
            cfg.batch_size,
            cfg.micro_batches,
            world(),
            cfg.mixed_precision,
            cfg.sharding,
            cfg.activation_checkpointing,
            ema=cfg.ema_decay > 0,
        )
        built.append(cell)
    return built


def place(cells: list[BuiltCell], config: ExecutorConfig) -> list[BuiltCell]:
    """The cells with their footprints on the processes they will train on: this launch's, or the
    executor's jobs of `executor.nodes` x `executor.tasks_per_node` processes."""
    processes = max(world(), config.processes)
    for cell in cells:
        if cell.footprint is not None:
            cell.footprint = cell.footprint.on(processes)
    return cells


def require_fits(cells: list[BuiltCell], config: ExecutorConfig) -> None:
    """Refuse (one line, with a way out) a grid whose cell cannot train on the devices it will run
    on (`executor.device_memory_gib`, else this machine's first GPU, else its RAM)."""
    place(cells, config)
    gib, what = device_memory(config.device_memory_gib)
    for cell in cells:
        if cell.footprint is not None:
            require_shared_micro_batches(cell.spec.label, cell.footprint)
            require_fit(cell.spec.label, cell.footprint, gib, what)


def make_backbone(cell: BuiltCell, shape: tuple, seed: int | None = None):
    """Construct the cell's backbone (seeded, so the untrained weights are reproducible)."""
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    return cell.backbone_cls(tuple(shape), cell.method.vocab_size, cell.method.n_tokens)


def plugin_origins(cell: BuiltCell) -> dict:
    """{"<kind>/<name>": "<distribution> <version>"} of every plugin the cell used: a third-party
    method or dataset is part of what a record was computed with."""
    pipe = cell.config.pipeline
    used = [
        (registry.methods, cell.spec.method),
        (registry.datasets, cell.spec.dataset),
        (registry.backbones, pipe.backbone),
        (registry.encoders, pipe.encoder),
        *((registry.evaluators, name) for name in pipe.evaluators),
    ]
    return {f"{reg.kind}/{name}": reg.origin(name) for reg, name in used}


def operative_config() -> str:
    """gin's operative config: the bindings the cell's objects actually used."""
    return gin.operative_config_str()


def full_config() -> str:
    """Every parsed binding of the cell, used or not (stages loaded from disk use none)."""
    return gin.config_str()
