"""Run cells through the five stages: encode, fit_prior, train, sample, evaluate.

The sample stage draws the synthetic set, optionally the untrained backbone's reference
(`samples_init/`) and, when `generative.n_total` is set, the generative-metrics set
(`samples_generative/`, bench.metrics.generative). Before evaluation the method's source draws for the
scored set are redrawn with no network (`@source` metrics: the source alone, no flow). Each stage
writes an artifact folder atomically with
a manifest naming its config hash; a stage whose artifact is complete for the same hash is
skipped, so a rerun only does what is missing. The record is written last.

Launched on several processes (bench.runtime.distributed), every rank loads the data, trains (DDP) and
samples (sharded); rank 0 alone writes the artifacts and the record, and every check-then-write goes
through `main_first` / `on_main` so all ranks take one branch. Evaluation uses every rank: each
decodes the synthetic set and the evaluators that share their work (downstream's classifier runs)
run on all of them; rank 0 then runs the others while the rest wait without a collective (`evaluate`).
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from bench.config.evaluation import DOMAIN
from bench.context import CellContext
from bench.data.image_cache import prepare as prepare_images
from bench.data.imagefiles import ImageFiles
from bench.data.targets import augmentation_plan, plan_records
from bench.dataset import Split
from bench.evaluator import metric_info, split_network
from bench.metrics.feature_names import name_by_features
from bench.metrics.generative import per_class
from bench.pipeline import sharding, stages, tracking
from bench.pipeline.assemble import BuiltCell, full_config, make_backbone, operative_config, plugin_origins
from bench.pipeline.inference_precision import forward_precision, inference_scope
from bench.pipeline.latent_cache import cache_folder, cached_latents
from bench.pipeline.sampler import draw_sources, generate
from bench.pipeline.trainer import train
from bench.runtime import distributed, progress
from bench.store.artifacts import discard, is_complete, read_manifest, stage_dir, write_text_atomic
from bench.store.fingerprint import split_fingerprint
from bench.store.records import build_record, git_hash, read_record, record_problem, write_record

log = logging.getLogger(__name__)


class Timings(dict):
    """Seconds per stage, filled by the `stage` context manager; with a cell `label`, each
    finished stage is also logged as one line with its duration (bench.runtime.progress)."""

    def __init__(self, label: str = ""):
        super().__init__()
        self.label = label

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        yield
        seconds = time.perf_counter() - t0
        self[name] = round(self.get(name, 0.0) + seconds, 4)
        if self.label and distributed.is_main():
            log.info(progress.stage_line(self.label, name, seconds))


def device() -> torch.device:
    """This process's device (its own GPU under a multi-GPU launch), else the CPU."""
    return distributed.device()


def run_cell(cell: BuiltCell, results_dir: Path) -> dict:
    """Run (or resume) one cell and return its record; with `train.log_with`, the main process
    logs its training, config and record to experiment trackers (bench.pipeline.tracking)."""
    with tracking.opened(cell, cell.spec.folder(results_dir)) as tracker:
        return _run_cell(cell, results_dir, tracker)


def _run_cell(cell: BuiltCell, results_dir: Path, tracker) -> dict:
    """`run_cell`'s stages; `tracker` (a tracking.CellTracker on the main process, or None) is sent
    the training's scalars and sample grids and, once written, the record."""
    folder = cell.spec.folder(results_dir)
    finished = tracker.finished if tracker is not None else (lambda record: record)
    times, t_start = Timings(cell.spec.label), time.perf_counter()
    ds = cell.dataset
    with times.stage("load"):
        train_split, test_split = ds.load(ds.train_split), ds.load(cell.eval_split)
    cell.key_by_data({"train": split_fingerprint(train_split), "eval": split_fingerprint(test_split)})
    cached = distributed.agree(read_record(folder) if distributed.is_main() else None)
    if is_current(cached, cell):
        log.info("%s: record exists for this config and data, skipped", cell.spec.label)
        return cached
    distributed.on_main(lambda: write_skipped(folder, getattr(ds, "skipped", [])))
    if isinstance(train_split.x, ImageFiles):  # real images: decoded once per split, then memory-mapped
        with times.stage("image_cache"):
            distributed.main_first(lambda: prepare_images(ds, Path(results_dir)))
    with times.stage(stages.timer("encode")):
        z = distributed.main_first(lambda: encode_stage(cell, train_split, Path(results_dir)))
    with times.stage(stages.timer("prior")):
        prior = distributed.main_first(lambda: prior_stage(cell, folder, z, train_split.y))
    cell.method.setup(ds.n_classes, prior)
    if cell.config.pipeline.stop_after == "prior":
        return distributed.on_main(
            lambda: finished(
                prior_only_record(cell, folder, (train_split, test_split), z, prior, times, t_start)
            )
        )
    plan = augmentation_plan(cell.config.targets, train_split.counts(ds.n_classes).tolist(), ds.class_names)
    n_per_class, shape = _n_per_class(cell, test_split, plan), tuple(z.shape[1:])
    backbone, train_info = train_stage(cell, folder, z, train_split.y, times, tracker)
    with times.stage(stages.timer("sample")):
        synth = samples_stage(
            cell,
            stages.artifact("sample", cell=folder),
            lambda: backbone,
            shape,
            n_per_class,
            stages.key(cell, "sample"),
        )
    generative = generative_stage(cell, folder, lambda: backbone, shape, plan, times)
    init = None
    if cell.config.sample.init_reference:
        untrained = lambda: make_backbone(cell, shape, seed=cell.spec.seed).to(device())  # noqa: E731
        with times.stage(stages.timer("sample_init")):
            init = samples_stage(
                cell,
                stages.artifact("sample_init", cell=folder),
                untrained,
                shape,
                n_per_class,
                stages.key(cell, "sample_init"),
            )

    def scored_sets() -> tuple:
        """Rank 0: every set the evaluators score, decoded; the other ranks: the synthetic set alone,
        which the evaluators that spread over the ranks (downstream's classifiers) train on."""
        if not distributed.is_main():
            return decode(cell, synth), None, None, None
        with times.stage("source"):
            source = source_set(cell, shape, n_per_class if generative is None else generative)
        with times.stage("decode"):
            return tuple(decode(cell, s) for s in (synth, init, generative, source))

    synth_x, init_x, generative_x, source_x = distributed.together(scored_sets)
    ctx = CellContext(
        ds,
        train_split,
        test_split,
        synth_x,
        folder,
        cell.spec.seed,
        init_x,
        generative=generative_x,
        synthetic_source=source_x,
        latents=z,
        prior=prior,
        targets=plan,
        shared=(
            stages.artifact(
                "no_aug",
                results=results_dir,
                dataset=cell.spec.dataset,
                key=stages.folder_key(cell, "no_aug"),
            ),
            stages.key(cell, "no_aug"),
        ),
        timer=lambda name: times.stage(f"evaluate/{name}"),
        extractor=feature_extractor(cell, train_split, Path(results_dir)) if ds.kind == "image" else None,
    )  # domain features: an image CNN
    with times.stage(stages.timer("evaluate")):  # every rank: see `evaluate`
        metrics, higher = evaluate(cell, ctx, times)

    def record() -> dict:  # rank 0 only
        times["total"] = round(time.perf_counter() - t_start, 4)
        extra = {
            "eval_split": cell.eval_split,
            "synthetic_per_class": list(n_per_class),
            "source_per_class": source_x.counts(ds.n_classes).tolist(),  # the @source subset
            "augmentation": plan_records(plan),
            "skipped": len(getattr(ds, "skipped", [])),
        }
        if generative is not None:
            extra["generative_per_class"] = ctx.generative.counts(ds.n_classes).tolist()
        return finished(_finish(cell, folder, metrics, higher, times, train_info, ctx, extra))

    return distributed.on_main(record)


def stored_record(cell: BuiltCell, results_dir: Path) -> dict | None:
    """The cell's record when one is stored for this configuration and data (what `run_cell`
    would return at once), else None. Reads the splits to fingerprint them; `cell` is unchanged."""
    keyed, ds = copy.copy(cell), cell.dataset
    train_split, test_split = ds.load(ds.train_split), ds.load(cell.eval_split)
    keyed.key_by_data({"train": split_fingerprint(train_split), "eval": split_fingerprint(test_split)})
    record = read_record(cell.spec.folder(results_dir))
    return record if is_current(record, keyed) else None


def is_current(record: dict | None, cell: BuiltCell) -> bool:
    """Whether a stored record was written by this configuration from this data.

    A record from before data fingerprints existed cannot show which data it saw: it is redone.
    """
    if not record or record.get("status") != "ok" or record.get("config_hash") != cell.config_hash:
        return False
    problem = record_problem(record)
    if problem:
        log.warning(
            "%s: the stored record is malformed (%s); running the cell again", cell.spec.label, problem
        )
        return False
    if record.get("data") != cell.data:
        log.info(
            "%s: the stored record was computed from other data (or before bench recorded which); "
            "running the cell again",
            cell.spec.label,
        )
        return False
    return True


def _n_per_class(cell: BuiltCell, test_split: Split, plan: list) -> list[int]:
    """Synthetic samples per class: held-out counts, augmentation targets, or a fixed number."""
    n = cell.config.sample.n_per_class
    if n == "targets":
        return [t.synthetic for t in plan]
    if n is not None:
        return [int(n)] * cell.dataset.n_classes
    return test_split.counts(cell.dataset.n_classes).tolist()


def source_set(cell: BuiltCell, shape: tuple, scored) -> dict:
    """The method's source draws for the set the generative metrics score (`scored`: its
    per-class counts, or that set itself), drawn exactly as the sampler starts from them.

    No network runs: these are the `@source` reference, what the source alone gives before any
    flow. Cheap to redraw, so they are not stored. Each class keeps its first
    `source.max_per_class` draws (bench.config.sample.SourceSubset; the record's `source_per_class`).
    """
    counts = (
        scored
        if isinstance(scored, list)
        else torch.bincount(scored["y"], minlength=cell.dataset.n_classes).tolist()
    )
    kept = cell.config.source.counts(counts)
    if kept != list(counts):
        log.info(
            "%s: @source scores %d of the %d source draws (source.max_per_class=%s)",
            cell.spec.label,
            sum(kept),
            sum(counts),
            cell.config.source.max_per_class,
        )
    return draw_sources(cell.method, kept, shape, cell.spec.seed, cell.config.sample, device=device())


def generative_stage(cell: BuiltCell, folder: Path, get_backbone, shape: tuple, plan: list, times: Timings):
    """The generative-metrics set (`<cell>/samples_generative/`), or None when the cell has none.

    Its size per class comes from `generative.n_total` and `generative.allocation` over the
    augmentation plan; it has its own stage hash, so it is sampled once and reused.
    """
    n_per_class = per_class(cell.config.generative, plan)
    if n_per_class is None:
        return None
    with times.stage(stages.timer("generative")):
        return samples_stage(
            cell,
            stages.artifact("generative", cell=folder),
            get_backbone,
            shape,
            n_per_class,
            stages.key(cell, "generative"),
        )


def feature_extractor(cell: BuiltCell, train_split: Split, results_dir: Path):
    """A zero-argument builder of the cell's domain feature extractor, run on first use only.

    Evaluators that need no features never train or load it; the trained extractor is cached
    once per (dataset configuration, feature configuration) under results/cache/features/, and
    the features of the real splits under results/cache/real_features/ (FeatureExtractor.embed_split).
    """

    @functools.cache
    def build():
        from bench.metrics.features import build_extractor

        config, ds = cell.config.features, cell.dataset
        real_features = Path(results_dir) / "cache" / "real_features"
        if config.network != DOMAIN:  # a pretrained network from the user's weight file
            from bench.metrics.pretrained import pretrained_extractor

            return pretrained_extractor(config).with_cache(real_features)
        folder = stages.artifact(
            "features",
            results=results_dir,
            dataset=cell.spec.dataset,
            arch=config.arch,
            key=stages.folder_key(cell, "features"),
        )  # one folder per configuration
        key = stages.key(cell, "features")
        val = ds.load(ds.val_split) if getattr(ds, "val_split", None) else None
        extractor = build_extractor(config, ds, train_split, val, folder, key, seed=0)
        # the real splits' features, shared by every cell that uses this extractor on the same data
        return extractor.with_cache(real_features)

    return build


def write_skipped(folder: Path, skipped: list[dict]) -> None:
    """Log every id the dataset left out (bad rows, bad images) as <cell>/skipped.csv."""
    if skipped:
        table = pd.DataFrame(skipped, columns=["split", "id", "reason"])
        write_text_atomic(folder / "skipped.csv", table.to_csv(index=False))
        log.warning("%d sample(s) skipped by the dataset; ids in %s", len(skipped), folder / "skipped.csv")


def encode_stage(cell: BuiltCell, split: Split, results_dir: Path) -> torch.Tensor:
    """Latents of the training split, memory-mapped from the (dataset, encoder, resolution) cache."""
    key = stages.key(cell, "encode")
    name = stages.folder_key(cell, "encode")  # the folder of this configuration, any data
    folder = cache_folder(results_dir, cell.spec.dataset, cell.encoder.name, tuple(split.x.shape[1:]), name)
    return cached_latents(
        folder,
        key,
        cell.encoder,
        split.x,
        split.y,
        split.ids,
        info={"dataset": cell.spec.dataset, "encoder": cell.encoder.name, "data": cell.data},
    )


def prior_stage(cell: BuiltCell, folder: Path, z: torch.Tensor, y: torch.Tensor):
    """The method's offline prior for this seed, fitted once and reused."""
    key, target = stages.key(cell, "prior"), stages.artifact("prior", cell=folder)
    shape, n_classes = tuple(z.shape[1:]), cell.dataset.n_classes
    stored = _load_complete(
        target, key, lambda: cell.method.prior_class().load(target).validate(shape, n_classes, len(z))
    )
    if stored is not None:
        return stored
    prior = cell.method.fit_prior(z, y, cell.dataset.n_classes, cell.spec.seed)
    if prior is not None:
        with stage_dir(target, key, method=cell.spec.method) as tmp:
            prior.save(tmp)
    return prior


def train_stage(cell: BuiltCell, folder: Path, z, y, times: Timings, tracker=None):
    """The trained backbone (loaded if this config already trained it) and its training info;
    `tracker` (bench.pipeline.tracking) follows the training when it runs here."""
    key, target = stages.key(cell, "train"), stages.artifact("train", cell=folder)
    loaded = distributed.main_first(
        lambda: _load_complete(
            target, key, lambda: _finite_weights(cell.backbone_cls.from_pretrained(target))
        )
    )
    if loaded is not None:
        # built on the meta device (no weights) only so gin's operative config names the backbone's
        # settings, as it does when the backbone is trained here: a resumed cell's record is complete
        with torch.device("meta"):
            make_backbone(cell, tuple(z.shape[1:]))
        return loaded.to(device()), read_manifest(target)["train"]
    # sharded training takes its initial weights from rank 0: the other ranks build no full copy
    with sharding.build_device(cell.config.train.sharding):
        backbone = make_backbone(cell, tuple(z.shape[1:]), seed=cell.spec.seed)
    with times.stage(stages.timer("train")):
        result = train(
            cell.method,
            backbone,
            z,
            y,
            cell.config.train,
            cell.spec.seed,
            checkpoint_dir=stages.working("train", cell=folder),
            config_hash=key,
            tracker=tracker,
        )
    info = {
        "steps": result.steps,
        "batch_size": result.batch_size,
        "seconds": round(result.seconds, 3),
        "loss_trace": result.loss_trace,
        "resumed_from": result.resumed_from,
        "converged": None if result.convergence is None else result.convergence["converged"],
        "convergence": result.convergence,
        "n_parameters": sum(p.numel() for p in backbone.parameters()),
        "backbone_config": dict(getattr(backbone, "hyperparameters", {})),  # e.g. FLUX's width, patch size
        "processes": distributed.world(),
    }
    distributed.on_main(lambda: _save_backbone(backbone, target, key, info))
    return backbone.to(device()), info


def _save_backbone(backbone, target: Path, key: str, info: dict) -> None:
    """Write the trained backbone as a complete stage, then drop the resumable checkpoints."""
    with stage_dir(target, key, train=info) as tmp:
        backbone.save_pretrained(tmp)
    # the backbone is complete: resumable state is no longer needed
    discard(stages.working("train", cell=target.parent))


def samples_stage(cell: BuiltCell, target: Path, get_backbone, shape: tuple, n_per_class, key: str) -> dict:
    """Generate (or reload) a synthetic set of latents: {"z", "y", "subclass"?, "paths"?}.

    `get_backbone` is called only when the samples must be generated; on several processes every
    rank integrates its share of the batches and rank 0 writes the set.
    """
    out = distributed.main_first(
        lambda: _load_complete(
            target, key, lambda: _valid_samples(load_file(target / "samples.safetensors"), shape, n_per_class)
        )
    )
    if out is None:
        out = generate(
            cell.method,
            get_backbone(),
            n_per_class,
            shape,
            cell.spec.seed,
            cell.config.sample,
            device=device(),
            rank=distributed.rank(),
            world=distributed.world(),
        )
        distributed.on_main(lambda: _save_samples(cell, target, key, out))
    return out


def _finite_weights(backbone):
    """The loaded backbone, or a ValueError if a weight is NaN or infinite (a damaged file)."""
    for name, param in backbone.named_parameters():
        if not bool(torch.isfinite(param).all()):
            raise ValueError(f"weight {name} holds a NaN or infinite value")
    return backbone


def _valid_samples(out: dict, shape: tuple, n_per_class) -> dict:
    """A stored synthetic set, or a ValueError unless it has the expected size, latent shape and
    finite values (a damaged file is regenerated, never evaluated)."""
    z, y = out.get("z"), out.get("y")
    if z is None or y is None:
        raise ValueError("the synthetic set lacks 'z' or 'y'")
    n = sum(int(k) for k in n_per_class)
    if len(z) != n or len(y) != n or tuple(z.shape[1:]) != tuple(shape):
        raise ValueError(
            f"the synthetic set holds {tuple(z.shape)} latents and {len(y)} labels, "
            f"expected {n} of shape {tuple(shape)}"
        )
    if not bool(torch.isfinite(z).all()):
        raise ValueError("the synthetic set holds a NaN or infinite value")
    return out


def _save_samples(cell: BuiltCell, target: Path, key: str, out: dict) -> None:
    """Write a synthetic set as a complete stage."""
    with stage_dir(target, key, solver=cell.config.sample.solver, nfe=cell.config.sample.nfe) as tmp:
        save_file({k: v.contiguous() for k, v in out.items()}, tmp / "samples.safetensors")


DECODE_CHUNK = 4096  # latents handed to the encoder at a time; it splits them into its own batches


def decode(cell: BuiltCell, out: dict | None) -> Split | None:
    """A synthetic set decoded to data space by the encoder's decoder, at `sample.precision`
    (bf16 autocast on the encoder's device, TF32 on; bench.pipeline.inference_precision)."""
    if out is None:
        return None
    if not len(out["z"]):
        return Split(x=out["z"], y=out["y"], subclass=out.get("subclass"))
    precision, z = cell.config.sample.precision, out["z"]
    with inference_scope(precision), forward_precision(precision, cell.encoder.compute_device()):
        x = torch.cat(
            [cell.encoder.decode(z[i : i + DECODE_CHUNK]).float() for i in range(0, len(z), DECODE_CHUNK)]
        )
    return Split(x=x, y=out["y"], subclass=out.get("subclass"))


def _load_complete(target: Path, key: str, load):
    """A stage's content when it is complete for `key` and readable, else None."""
    return _load_or_discard(target, load) if is_complete(target, key) else None


def _load_or_discard(target: Path, load):
    """A complete stage's content, or None (the folder discarded, so the stage is redone) when a
    file in it cannot be read: a damaged artifact must not fail every rerun."""
    try:
        return load()
    except Exception as exc:  # safetensors, JSON and diffusers raise various types on damaged files
        log.warning(
            "%s is damaged (%s: %s); redoing this stage",
            target,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        discard(target)
        return None


def evaluate(
    cell: BuiltCell, ctx: CellContext, times: Timings | None = None, chosen: list | None = None
) -> tuple[dict, dict]:
    """Run every evaluator that applies to the dataset's kind; merge their metrics.

    Each evaluator's seconds go to `times` as `evaluate/<name>` (the first to use the feature
    extractor also pays for building it). On several processes the evaluators that share their
    work among the ranks (`spreads_over_ranks`: downstream's classifier runs) run first, on every
    rank; the others then run on rank 0 alone while the other ranks wait for it by polling, in no
    collective (bench.runtime.distributed.on_main). Every rank returns the metrics, merged in the
    evaluators' order. `chosen`: run only these of the cell's evaluators.
    """
    times = Timings() if times is None else times
    evaluators = []
    for ev in cell.evaluators if chosen is None else chosen:
        if cell.dataset.kind in ev.applies_to:
            evaluators.append(ev)
        elif distributed.is_main():
            log.info(
                "%s: evaluator %s does not apply to %s data, skipped",
                cell.spec.label,
                ev.name,
                cell.dataset.kind,
            )

    def run(ev) -> dict:
        before = ctx.feature_reads
        with times.stage(f"evaluate/{ev.name}"):
            out = {k: float(v) for k, v in ev.evaluate(ctx).items()}
        if ctx.feature_reads == before:
            return out
        out, computed_on = name_by_features(ev, out, ctx.extractor())  # named after its features
        ctx.feature_metrics.update(computed_on)
        return out

    # every rank, and a failure on one rank fails the others too (they may be past its last collective)
    outputs = {
        i: distributed.together(lambda ev=ev: run(ev))
        for i, ev in enumerate(evaluators)
        if getattr(ev, "spreads_over_ranks", False)
    }
    outputs |= distributed.on_main(
        lambda: {i: run(ev) for i, ev in enumerate(evaluators) if i not in outputs}
    )
    metrics, higher = {}, {}
    for i, ev in enumerate(evaluators):
        metrics.update(outputs[i])
        plain = {k: split_network(k)[0] for k in outputs[i]}  # `fid[inception_v3]/tail`: `fid/tail`'s
        higher.update({k: ev.higher_is_better[p] for k, p in plain.items() if p in ev.higher_is_better})
    return metrics, higher


def prior_only_record(
    cell: BuiltCell, folder: Path, splits: tuple, z, prior, times: Timings, t_start: float
) -> dict:
    """The record of a cell stopped after its offline stage (`pipeline.stop_after = 'prior'`): the
    metrics of the evaluators that read no samples (the prior's geometry and Bayes risk), nothing trained."""
    train_split, test_split = splits
    ctx = CellContext(
        cell.dataset,
        train_split,
        test_split,
        None,
        folder,
        cell.spec.seed,
        latents=z,
        prior=prior,
        timer=lambda name: times.stage(f"evaluate/{name}"),
    )
    readers = [ev for ev in cell.evaluators if not getattr(ev, "reads_samples", True)]
    skipped = [ev.name for ev in cell.evaluators if ev not in readers]
    if skipped:
        log.info(
            "%s: stopped after the prior; evaluators that score samples skipped: %s",
            cell.spec.label,
            ", ".join(skipped),
        )
    with times.stage("evaluate"):
        metrics, higher = evaluate(cell, ctx, times, readers)
    times["total"] = round(time.perf_counter() - t_start, 4)
    extra = {
        "eval_split": cell.eval_split,
        "stop_after": "prior",
        "skipped_evaluators": skipped,
        "skipped": len(getattr(cell.dataset, "skipped", [])),
    }
    return _finish(cell, folder, metrics, higher, times, {}, ctx, extra)


def _finish(cell, folder, metrics, higher, times, train_info, ctx, extra_info: dict) -> dict:
    """Write operative_config.gin and the record (last, atomically)."""
    operative = operative_config()
    write_text_atomic(
        folder / "operative_config.gin",
        f"# bench cell {cell.spec.label}, git {git_hash()}\n# config_hash {cell.config_hash}\n{operative}",
    )
    n = {
        "train": len(ctx.train),
        "test": len(ctx.test),
        "synthetic": 0 if ctx.synthetic is None else len(ctx.synthetic),
    }
    if ctx.generative is not None:
        n["generative"] = len(ctx.generative)
    extra = {
        "class_names": ctx.class_names,
        "train_counts": ctx.train.counts(cell.dataset.n_classes).tolist(),
        **extra_info,
        "dataset_info": cell.dataset.describe(),
        "method_info": cell.method.describe(),
        # which versions of the method's offline stage and training wrote it (bench.method.Method)
        "stage_versions": {"prior": cell.method.prior_version, "train": cell.method.train_version},
        "backbone": cell.config.pipeline.backbone,
        "plugins": plugin_origins(cell),
        # the declarations (bench.evaluator.Metric), with the features each number was computed on
        "metric_info": metric_info(cell.evaluators, metrics, ctx.feature_metrics),
        "encoder": cell.encoder.name,
        "sampler": {"solver": cell.config.sample.solver, "nfe": cell.config.sample.nfe},
        "train": train_info,
        "stage_hashes": cell.stage_hashes,
        "data": cell.data,
        "details": ctx.details,
        "config": full_config(),
        "settings": cell.config.to_json(),  # every settings object's values (bench.config.cell_config)
    }
    record = build_record(cell.spec, metrics, higher, n, cell.config_hash, operative, times, extra)
    write_record(folder, record)
    log.info(progress.cell_line(cell.spec.label, times.get("total", 0.0), metrics, record["metric_info"]))
    return record
