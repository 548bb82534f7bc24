"""What a validated grid will do, in words: each cell's results folder, evaluation protocol and
estimated cost (bench.pipeline.budget), printed by `bench validate` per cell and by `bench run`
before it trains.

The protocol line is written for a reader to grep: the feature network (`feature network
densenet121`), the downstream network and its classifier seeds (`downstream network resnet50, 3
classifier seeds`), the generative samples and the split they are scored against (`50,000
generative samples vs the train split`) and the generative seeds (`generative seeds [0, 1, 2]`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bench.config.throughput import Assumptions
from bench.pipeline.budget import CHECKPOINTS, CellEstimate, estimate, facts

log = logging.getLogger(__name__)


@dataclass
class CellView:
    """A validated cell as the user reads it before it runs."""

    label: str
    folder: Path
    protocol: str
    estimate: CellEstimate


def describe(cells: list, request) -> tuple[list[CellView], Assumptions]:
    """Every cell's folder, protocol and estimate, with the throughput assumed (from the last cell's
    configuration: `budget.*` set on the command line or in a --gin_file apply to all)."""
    from bench import registry
    from bench.config.gin_config import parse
    from bench.pipeline.assemble import config_files

    seeds: dict = {}
    for cell in cells:
        seeds.setdefault((cell.spec.dataset, cell.spec.method), []).append(cell.spec.seed)
    known, seen_datasets, seen_seeds, views = {}, set(), set(), []
    assumptions = Assumptions()
    for cell in cells:
        spec = cell.spec
        # the cell's own configuration again, for its `budget.*` (not part of the cell's CellConfig)
        parse(config_files(spec, request), request.bindings, spec.dataset, registry.datasets.names())
        features_cfg, assumptions = cell.config.features, Assumptions()
        key = cell.stage_hashes["encode"]
        first_dataset = key not in seen_datasets
        first_seed = (key, spec.seed) not in seen_seeds
        seen_datasets.add(key)
        seen_seeds.add((key, spec.seed))
        try:
            if key not in known:
                known[key] = facts(cell)
            view = CellView(
                spec.label,
                spec.folder(request.results_dir),
                protocol(cell, seeds[(spec.dataset, spec.method)], features_cfg, known[key]),
                estimate(cell, known[key], features_cfg, assumptions, first_dataset, first_seed),
            )
        except Exception as exc:  # noqa: BLE001 - a plugin the estimates do not know: said, never fatal
            log.warning("%s: no estimate (%s: %s)", spec.label, type(exc).__name__, exc)
            view = CellView(
                spec.label,
                spec.folder(request.results_dir),
                f"not described ({type(exc).__name__})",
                CellEstimate(spec.label),
            )
        views.append(view)
    return views, assumptions


def protocol(cell, seeds: list, features_cfg, f) -> str:
    """The cell's evaluation protocol in words (see the module docstring)."""
    from bench.pipeline.budget import sample_counts

    names = {ev.name: ev for ev in cell.evaluators}
    parts = []
    if cell.dataset.kind == "image" and features_cfg is not None and features_cfg.network != "domain":
        parts.append(f"feature network {features_cfg.network} (weights {features_cfg.weights})")
    elif cell.dataset.kind == "image" and features_cfg is not None:
        parts.append(
            f"feature network {features_cfg.arch}"
            + (f" (weights {features_cfg.path})" if features_cfg.path else "")
        )
    ds = names.get("downstream")
    if ds is not None:
        parts.append(f"downstream network {ds.arch}, {ds.n_seeds} classifier seed{'s' * (ds.n_seeds != 1)}")
    else:
        parts.append("no downstream classifier")
    synthetic, generative = sample_counts(cell, f)
    reference = getattr(names.get("fid"), "reference", None)
    against = f" vs the {reference} split" if reference else ""
    if generative:
        parts.append(f"{generative:,} generative samples{against}")
    else:
        parts.append(
            f"no separate generative set (metrics score the {synthetic:,} synthetic samples{against})"
        )
    parts.append(f"{synthetic:,} synthetic (augmentation) samples")
    parts.append(f"generative seed{'s' * (len(seeds) != 1)} {sorted(seeds)}")
    return "; ".join(parts)


def validate_lines(view: CellView) -> list[str]:
    """The lines `bench validate` prints under a cell's `ok` line."""
    e = view.estimate
    cost = e.describe() if e.gpu_hours or e.disk_gib else "not available (the warning above says why)"
    return [f"    results: {view.folder}", f"    protocol: {view.protocol}", f"    estimate: {cost}"]


def grid_preview(views: list[CellView], assumptions: Assumptions, experiment: str) -> str:
    """`bench run`'s table of the grid before it trains: one row per cell with its GPU-hours, peak
    memory and disk; CPU-sized cells (the embedded quick run) in one line instead."""
    big = [v for v in views if not v.estimate.cpu_sized]
    head = f"experiment {experiment}: {len(views)} cell(s)"
    if not big:
        return f"{head}, each CPU-sized (< {0.01:g} GPU-h estimated): no GPU estimate printed"
    width = max(len(v.label) for v in big)
    rows = [
        f"{head}; estimates {assumptions.describe()} (docs/gpu.md):",
        f"  {'cell':<{width}}  {'GPU-h':>8}  {'peak GiB':>8}  {'disk GiB':>8}  results",
    ]
    for v in big:
        e = v.estimate
        rows.append(
            f"  {v.label:<{width}}  {e.total_gpu_hours:>8,.1f}  {max(e.peak_gib.values(), default=0):>8,.1f}  "
            f"{sum(e.disk_gib.values()):>8,.1f}  {v.folder}"
        )
    total = sum(v.estimate.total_gpu_hours for v in big)
    # checkpoints live only while their cell trains: kept files add up, checkpoints do not
    checkpoints = [v.estimate.disk_gib.get(CHECKPOINTS, 0.0) for v in big]
    kept = sum(sum(v.estimate.disk_gib.values()) for v in big) - sum(checkpoints)
    rows.append(
        f"  {'total':<{width}}  {total:>8,.1f}  {'':>8}  {kept:>8,.1f}  kept, plus up to "
        f"{max(checkpoints):,.1f} GiB of checkpoints per cell while it trains (`bench validate` "
        "itemises every cell)"
    )
    if len(big) < len(views):
        rows.append(f"  and {len(views) - len(big)} CPU-sized cell(s)")
    return "\n".join(rows)
