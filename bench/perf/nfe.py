"""NFE to match: how few Euler steps each method needs for the tail quality of vanilla FM at 64.

The paper argues that optprior's optimised subclass sources give shorter, straighter paths, so
fewer solver steps should reach a given quality. Per dataset, every method's cell is trained
once by bench's own grid (artifacts cached in `workdir`, so a rerun reuses them); then each
trained backbone draws its synthetic set again at NFE = 1, 2, 4, ..., 64 (Euler, the cell's
seed, so only the step count changes) and the cell's own evaluator scores each set. The tail
metric is lower-is-better: `swd/tail` (sliced Wasserstein over the tail classes) on
synthetic2d, `fid/tail` (mean per-class FID over the augmented classes) on phantom_lt.

A method matches at the smallest NFE whose quality is <= FM@64 * (1 + tol); one that never
does within the largest NFE gets None, and `details["best"]` says how close it came.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import gin
from bench.config.overrides import parse_overrides
from bench.context import CellContext
from bench.data.targets import augmentation_plan
from bench.errors import BenchError
from bench.perf.case import SCALES, Measurement
from bench.pipeline.assemble import BuiltCell, RunRequest, build_cell, expand_grid
from bench.pipeline.runner import (
    Timings,
    decode,
    device,
    encode_stage,
    feature_extractor,
    prior_stage,
    train_stage,
)
from bench.pipeline.sampler import generate
from bench.report.figures import DPI, PANEL_IN
from bench.scale.grid import run_grid
from bench.store.records import read_record

log = logging.getLogger(__name__)

METHODS = ("fm", "cbfm", "cpd", "optprior")
REFERENCE_METHOD = "fm"
TAIL_METRIC = {"synthetic2d": "swd/tail", "phantom_lt": "fid/tail"}
TOL = 0.05
SEED = 0
FIGURE = "nfe_curve.png"


@dataclass(frozen=True)
class Scale:
    """What one scale trains and samples: datasets, NFE grid and per-dataset `key=value` overrides."""

    datasets: tuple[str, ...]
    nfes: tuple[int, ...]
    overrides: dict  # dataset -> overrides on top of the quick experiment and the dataset's gin file

    @property
    def reference_nfe(self) -> int:
        """FM's step count that defines the quality to match: the largest NFE of the grid."""
        return max(self.nfes)


# No untrained-backbone reference set: the curves never use it. phantom_lt scores FID only (the
# quick experiment's other evaluators, downstream among them, would dominate the time).
_NO_INIT = ("sample.init_reference=False",)
SCALE_SETTINGS = {
    "full": Scale(
        ("synthetic2d", "phantom_lt"),
        (1, 2, 4, 8, 16, 32, 64),
        {"synthetic2d": _NO_INIT, "phantom_lt": (*_NO_INIT, "pipeline.evaluators=[fid]")},
    ),
    # seconds: 50 training and prior steps on a 400-point synthetic2d; the grid's own set at NFE 4
    "smoke": Scale(
        ("synthetic2d",),
        (1, 2, 4, 8),
        {
            "synthetic2d": (
                *_NO_INIT,
                "train.steps=50",
                "synthetic2d.n_max=400",
                "synthetic2d.n_test_per_class=50",
                "optprior.steps=50",
                "optprior.risk_samples=0",
                "sample.nfe=4",
            )
        },
    ),
}


def nfe_to_match(curve: dict[int, float], reference: float, tol: float = TOL) -> int | None:
    """The smallest NFE whose (lower-is-better) quality is <= reference * (1 + tol), else None."""
    matching = [nfe for nfe, value in curve.items() if value <= reference * (1 + tol)]
    return min(matching) if matching else None


def grid_request(dataset: str, scale: Scale, workdir: Path) -> RunRequest:
    """The quick experiment's grid of every method on `dataset` (seed SEED), results in `workdir`."""
    overrides = parse_overrides(
        [
            f"datasets=[{dataset}]",
            f"methods=[{','.join(METHODS)}]",
            f"seeds=[{SEED}]",
            *scale.overrides[dataset],
        ]
    )
    return RunRequest(
        experiment="quick", results_dir=Path(workdir), bindings=overrides.bindings, axes=overrides.axes
    )


def train_grid(request: RunRequest) -> None:
    """Run (or resume: finished cells are skipped) the grid; a failed cell fails the case."""
    result = run_grid(request)
    if result.failures:
        label, reason = next(iter(result.failures.items()))
        raise BenchError(f"nfe case: grid cell {label} failed ({reason}); see {request.results_dir}")


@dataclass
class TrainedCell:
    """A finished cell's objects and data, loaded from its artifacts, ready to sample and score."""

    cell: BuiltCell
    train: object
    test: object
    latents: object
    prior: object
    backbone: object
    record: dict
    extractor: object

    @property
    def n_per_class(self) -> list[int]:
        """The synthetic set's size per class, as the grid drew it (so sets compare with the record's)."""
        return self.record["synthetic_per_class"]


def load_trained(cell: BuiltCell, results_dir: Path) -> TrainedCell:
    """The cell's latents, prior and trained backbone from the stages the grid completed."""
    ds, folder = cell.dataset, cell.spec.folder(results_dir)
    record = read_record(folder)
    if not record or record.get("config_hash") != cell.config_hash:
        raise BenchError(f"nfe case: {folder} has no record of this configuration; rerun the case")
    train, test = ds.load(ds.train_split), ds.load(ds.eval_split)
    z = encode_stage(cell, train, results_dir)
    prior = prior_stage(cell, folder, z, train.y)
    cell.method.setup(ds.n_classes, prior)
    backbone, _ = train_stage(cell, folder, z, train.y, Timings())
    return TrainedCell(
        cell, train, test, z, prior, backbone, record, feature_extractor(cell, train, results_dir)
    )


def tail_quality(trained: TrainedCell, metric: str, nfe: int, out_dir: Path) -> float:
    """`metric` of the set the cell's backbone draws with `nfe` Euler steps, by the cell's evaluator."""
    cell, ds = trained.cell, trained.cell.dataset
    cfg = dataclasses.replace(cell.config.sample, solver="euler", nfe=nfe, keep_paths=0)
    out = generate(
        cell.method,
        trained.backbone,
        trained.n_per_class,
        tuple(trained.latents.shape[1:]),
        cell.spec.seed,
        cfg,
        device=device(),
    )
    plan = augmentation_plan(cell.config.targets, trained.train.counts(ds.n_classes).tolist(), ds.class_names)
    ctx = CellContext(
        ds,
        trained.train,
        trained.test,
        decode(cell, out),
        out_dir,
        cell.spec.seed,
        latents=trained.latents,
        prior=trained.prior,
        targets=plan,
        extractor=trained.extractor,
    )
    return float(evaluator_of(cell, metric).evaluate(ctx)[metric])


def evaluator_of(cell: BuiltCell, metric: str):
    """The cell's evaluator that computes `metric` (named by the metric's prefix)."""
    name = metric.split("/")[0]
    for ev in cell.evaluators:
        if ev.name == name:
            return ev
    raise BenchError(f"nfe case: {cell.spec.label} has no evaluator {name!r}; add it to pipeline.evaluators")


def dataset_curves(request: RunRequest, metric: str, nfes: tuple, out_dir: Path) -> tuple[dict, dict]:
    """{method: {nfe: quality}} of every cell of the grid, and {method: the record's own point}."""
    curves, record_points = {}, {}
    for spec in expand_grid(request):
        trained = load_trained(build_cell(spec, request), Path(request.results_dir))
        curves[spec.method] = {
            nfe: tail_quality(trained, metric, nfe, out_dir / spec.method / f"nfe{nfe}") for nfe in nfes
        }
        record_points[spec.method] = {
            "nfe": trained.record["sampler"]["nfe"],
            "value": trained.record["metrics"].get(metric),
        }
        log.info("nfe case: %s %s %s", spec.label, metric, curves[spec.method])
    return curves, record_points


def summarise(curves: dict, reference_nfe: int, tol: float) -> tuple[dict, dict, dict]:
    """Per dataset: the FM reference value, every method's NFE to match, and its best point."""
    references, matches, best = {}, {}, {}
    for dataset, by_method in curves.items():
        references[dataset] = by_method[REFERENCE_METHOD][reference_nfe]
        matches[dataset] = {m: nfe_to_match(c, references[dataset], tol) for m, c in by_method.items()}
        best[dataset] = {
            m: dict(zip(("nfe", "value"), min(c.items(), key=lambda kv: kv[1]))) for m, c in by_method.items()
        }
    return references, matches, best


def plot_curves(curves: dict, references: dict, reference_nfe: int, path: Path) -> Path:
    """Quality vs NFE: one panel per dataset, one line per method, FM@reference dashed."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(PANEL_IN * len(curves), PANEL_IN), dpi=DPI, layout="constrained")
    for ax, (dataset, by_method) in zip(fig.subplots(1, len(curves), squeeze=False)[0], curves.items()):
        for method, curve in by_method.items():
            ax.plot(list(curve), list(curve.values()), marker="o", label=method)
        ax.axhline(
            references[dataset], linestyle="--", color="0.4", label=f"{REFERENCE_METHOD} @ {reference_nfe}"
        )
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(curve), [str(nfe) for nfe in curve])
        ax.set(title=dataset, xlabel="NFE (Euler steps)", ylabel=f"{TAIL_METRIC[dataset]} (lower is better)")
        ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def measure(scale: str, workdir: Path, tol: float = TOL) -> Measurement:
    """Train every (dataset, method) cell once, draw the quality-vs-NFE curves and find each NFE to match."""
    if scale not in SCALES:
        raise BenchError(f"nfe case: unknown scale {scale!r}; use one of {', '.join(SCALES)}")
    setting, workdir = SCALE_SETTINGS[scale], Path(workdir)
    curves, record_points, seconds = {}, {}, {}
    try:
        for dataset in setting.datasets:
            request, t0 = grid_request(dataset, setting, workdir), time.perf_counter()
            train_grid(request)
            t1 = time.perf_counter()
            curves[dataset], record_points[dataset] = dataset_curves(
                request, TAIL_METRIC[dataset], setting.nfes, workdir / "nfe" / dataset
            )
            seconds[dataset] = {"grid": round(t1 - t0, 2), "curves": round(time.perf_counter() - t1, 2)}
    finally:
        gin.clear_config()  # leave no cell's configuration behind for whatever runs next
    references, matches, best = summarise(curves, setting.reference_nfe, tol)
    figure = plot_curves(curves, references, setting.reference_nfe, workdir / FIGURE)
    details = {
        "tol": tol,
        "rule": "smallest NFE with quality <= reference * (1 + tol); None: never within "
        "the NFE grid (see best)",
        "metric": {d: TAIL_METRIC[d] for d in setting.datasets},
        "reference_method": REFERENCE_METHOD,
        "reference_nfe": setting.reference_nfe,
        "reference": references,
        "curves": curves,
        "best": best,
        "record_points": record_points,
        "seconds": seconds,
        "settings": {
            "scale": scale,
            "experiment": "quick",
            "methods": list(METHODS),
            "seed": SEED,
            "solver": "euler",
            "nfes": list(setting.nfes),
            "overrides": setting.overrides,
        },
    }
    return Measurement(keys={"nfe_to_match": matches}, details=details, files=[figure])
