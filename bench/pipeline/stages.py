"""The stages of a cell as one table: what each hashes, reads, writes and shares.

Every stage hash, the cell's config hash, the splits folded into them, the artifact folders and the
record's stage timers are derived from `TABLE` (bench.pipeline.assemble, .runner, .latent_cache);
docs/architecture.md shows it as `markdown_table()` renders it. The columns of a `Stage`:

- `name`: its key in `BuiltCell.stage_hashes` and the record's `stage_hashes` (`evaluate`: the cell's
  `config_hash`, which the record holds as such; `sample_init`: no key, see `suffix`).
- `upstream`: the stages whose hashes open this one's digest, so a change upstream redoes it.
- `include` / `exclude`: the gin bindings hashed, as selectors: a literal prefix (`"sample."`) or
  a `Selector` computed from the cell (its dataset's and encoder's scopes, the method's lineage,
  every evaluator's name). `include=None`: every binding but the excluded ones.
- `terms`: what the digest takes after the bindings (`Term`s: `dataset.describe()`, the seed, ...);
  a term may give nothing (a version marker at version 1), so old hashes stay what they were.
- `suffix`: set for a stage hashed as its upstream's hash plus this text (no digest of its own).
- `when`: the stage exists only when this holds (else it has no hash and is not run).
- `reads`: the splits whose fingerprints `key_by_data` folds into its hash (bench.store.fingerprint).
- `artifact`: where its output lives, a template: `{results}` the results folder, `{cell}` the
  cell folder, `{key}` the stage's configuration hash (a shared folder is named by the
  configuration alone, so an edited dataset replaces its cache instead of leaving one beside it);
  `working`: what it keeps while it runs.
- `shared`: who shares the artifact (`CELL`: the cell alone).
- `timer`: its entry in the record's `timings_s` (None: timed inside `evaluate`).
- `about`: one line for the docs.

The digest of a stage is `digest(*upstream hashes, bindings_text(include, exclude), *terms)`: the
order of the parts is part of every stored hash, so a new stage goes anywhere in the table but an
existing stage's columns never change (docs/architecture.md: adding a stage).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from bench import registry
from bench.config.gin_config import bindings_text, digest


class HashInputs(NamedTuple):
    """What a cell's hashes are computed from (bench.pipeline.assemble.build_cell's objects)."""

    spec: object
    dataset: object
    method: object
    encoder: object
    evaluators: list
    generative: object


@dataclass(frozen=True)
class Selector:
    """Gin binding prefixes computed from the cell (`label` is how the docs show them)."""

    label: str
    prefixes: Callable[[HashInputs], list]


@dataclass(frozen=True)
class Term:
    """Parts of a digest after the bindings, computed from the cell (none, one or several)."""

    label: str
    parts: Callable[[HashInputs], tuple]


@dataclass(frozen=True)
class Condition:
    """When an optional stage exists."""

    label: str
    holds: Callable[[HashInputs], bool]


def _lineage(c: HashInputs) -> list:
    """The method's scope and those of its registered bases (optprior_sub reads optprior.*)."""
    return [f"{k.name}." for k in type(c.method).__mro__ if "name" in vars(k)]


def _every_evaluator(c: HashInputs) -> list:
    """Every evaluator's scope, the cell's and all registered ones: an experiment that binds
    downstream.* for its image datasets must not change the hashes of its vector cells."""
    return sorted({*(f"{ev.name}." for ev in c.evaluators), *(f"{n}." for n in registry.evaluators.names())})


def _version(stage: str, attr: str) -> Term:
    """`<stage>_version=<v>` when the method's version of that stage is not 1 (1 adds nothing)."""

    def parts(c):
        v = getattr(c.method, attr)
        return (f"{stage}_version={v}",) if v != 1 else ()

    return Term(f"`{stage}_version=<v>` if not 1", parts)


def _evaluator_versions(c: HashInputs) -> tuple:
    """{name: version} of the evaluators above version 1: a changed evaluator re-evaluates."""
    versions = {ev.name: ev.version for ev in c.evaluators if ev.version != 1}
    return (versions,) if versions else ()


DATASET = Selector("`<dataset>.`", lambda c: [f"{c.dataset.name}."])
ENCODER = Selector("`<encoder>.`", lambda c: [f"{c.encoder.name}."])
LINEAGE = Selector("`<method>.` and its registered bases'", _lineage)
EVALUATORS = Selector("every evaluator's `<name>.`", _every_evaluator)

DESCRIBE = Term("`dataset.describe()`", lambda c: (c.dataset.describe(),))
CACHE_KEY = Term("`encoder.cache_key()`", lambda c: (c.encoder.cache_key(),))
SEED = Term("seed", lambda c: (c.spec.seed,))
# the CellSpec's repr: its fields, their order and its class name are in every config hash
SPEC = Term("the cell (experiment, dataset, method, seed)", lambda c: (c.spec,))
PRIOR_VERSION = _version("prior", "prior_version")
TRAIN_VERSION = _version("train", "train_version")
EVALUATOR_VERSIONS = Term("evaluator versions other than 1", _evaluator_versions)

GENERATIVE = Condition("`generative.n_total` set", lambda c: c.generative.enabled)

CELL = "cell"  # the `shared` of an artifact in the cell folder


@dataclass(frozen=True)
class Stage:
    """One row of the table (the columns: this module's docstring)."""

    name: str
    artifact: str
    shared: str = CELL
    upstream: tuple = ()
    include: tuple | None = None
    exclude: tuple = ("grid.",)
    terms: tuple = ()
    suffix: str | None = None
    when: Condition | None = None
    reads: tuple = ()
    working: str | None = None
    timer: str | None = None
    about: str = ""


# bindings no stage before evaluation reads: the grid, evaluation and its references
# (source.: which draws @source scores, bench.config.sample.SourceSubset)
_EVALUATION = (
    "grid.",
    "pipeline.evaluators",
    "pipeline.eval_on",
    "generative.",
    "features.",
    "source.",
    EVALUATORS,
)

# in the order of the record's `stage_hashes`; `sample_init` and `evaluate` have no key there
TABLE = (
    Stage(
        "encode",
        "{results}/cache/latents/{dataset}-{encoder}-{resolution}-{key}",
        shared="(dataset, encoder, resolution)",
        include=(DATASET, ENCODER, "pipeline.encoder"),
        terms=(DESCRIBE, CACHE_KEY),
        reads=("train",),
        timer="encode",
        about="the training split's latents (`latents.npy`, memory-mapped)",
    ),
    Stage(
        "prior",
        "{cell}/prior",
        upstream=("encode",),
        include=(LINEAGE,),
        terms=(SEED, PRIOR_VERSION),
        reads=("train",),
        timer="fit_prior",
        about="the method's offline prior (prior.safetensors + prior.json)",
    ),
    Stage(
        "train",
        "{cell}/backbone",
        upstream=("prior",),
        exclude=_EVALUATION + ("sample.",),
        terms=(SEED, TRAIN_VERSION),
        reads=("train",),
        working="{cell}/checkpoints",
        timer="train",
        about="the trained backbone (`save_pretrained`)",
    ),
    # the held-out counts (sample.n_per_class = None) come from the split evaluators score on, so
    # sampling reads the eval split too
    Stage(
        "sample",
        "{cell}/samples",
        upstream=("train",),
        include=("sample.", "targets.", "pipeline.eval_on"),
        reads=("train", "eval"),
        timer="sample",
        about="the synthetic set's latents",
    ),
    Stage(
        "sample_init",
        "{cell}/samples_init",
        upstream=("sample",),
        suffix="-init",
        timer="sample_init",
        about="the untrained backbone's reference set (opt-in: `sample.init_reference`)",
    ),
    Stage(
        "features",
        "{results}/cache/features/{dataset}-{arch}-{key}",
        shared="dataset",
        include=(DATASET, "features."),
        terms=(DESCRIBE,),
        reads=("train",),
        about="the domain feature extractor (image datasets; bench.metrics.features)",
    ),
    # the classifiers on real data alone see the dataset, the split scored on, the downstream
    # protocol and the seed (their seeds derive from it), never the method; they fingerprint their
    # own splits (evaluators/downstream.py)
    Stage(
        "no_aug",
        "{results}/cache/downstream/{dataset}-{key}",
        shared="(dataset, seed)",
        include=(DATASET, "downstream.", "pipeline.eval_on"),
        terms=(DESCRIBE, SEED),
        about="downstream's classifier runs on real data (bench.classify.baseline_store)",
    ),
    # the sampler settings and the plan, not the synthetic set's size: adding the set reuses the
    # trained backbone and the synthetic set, and cells without it keep their hashes
    Stage(
        "generative",
        "{cell}/samples_generative",
        upstream=("train",),
        include=("sample.", "targets.", "generative."),
        exclude=("grid.", "sample.n_per_class", "sample.init_reference"),
        when=GENERATIVE,
        reads=("train", "eval"),
        timer="sample_generative",
        about="the set FID / IRS score instead of the synthetic set (bench.metrics.generative)",
    ),
    Stage(
        "evaluate",
        "{cell}/record.json",
        upstream=("sample",),
        terms=(SPEC, EVALUATOR_VERSIONS),
        timer="evaluate",
        about="the record, `operative_config.gin` and the evaluators' files",
    ),
)
STAGES = {stage.name: stage for stage in TABLE}
CELL_HASH = "evaluate"  # the stage whose hash is the cell's config_hash


def _prefixes(selectors, c: HashInputs) -> list:
    """The binding prefixes of literal and computed selectors, in order."""
    return [p for s in selectors for p in ([s] if isinstance(s, str) else s.prefixes(c))]


def stage_digest(stage: Stage, hashes: dict, c: HashInputs) -> str:
    """A stage's hash: its upstream hashes, its bindings, its terms (this order is in every hash)."""
    include = None if stage.include is None else _prefixes(stage.include, c)
    bindings = bindings_text(exclude=_prefixes(stage.exclude, c), include=include)
    terms = (p for t in stage.terms for p in t.parts(c))
    return digest(*(hashes[u] for u in stage.upstream), bindings, *terms)


def config_hashes(c: HashInputs) -> tuple[str, dict]:
    """The cell's config hash and its stage hashes, walking the table (under the cell's parsed gin)."""
    hashes = {}
    for stage in TABLE:
        if stage.suffix is None and (stage.when is None or stage.when.holds(c)):
            hashes[stage.name] = stage_digest(stage, hashes, c)
    return hashes.pop(CELL_HASH), hashes


def keyed_by_data(hashes: dict, data: dict) -> dict:
    """The stage hashes with the fingerprints of the splits each stage reads folded in."""
    return {
        name: digest(h, *(data[s] for s in STAGES[name].reads)) if STAGES[name].reads else h
        for name, h in hashes.items()
    }


def key(cell, name: str) -> str:
    """A stage's hash in a built cell (keyed by its data once `key_by_data` ran)."""
    stage = STAGES[name]
    if stage.suffix is not None:
        return key(cell, stage.upstream[0]) + stage.suffix
    return cell.stage_hashes[name]


def folder_key(cell, name: str) -> str:
    """The hash a shared folder is named by: the configuration's, whatever the data."""
    return cell.config_stage_hashes.get(name, key(cell, name))


def timer(name: str) -> str:
    """A stage's entry in the record's `timings_s`."""
    return STAGES[name].timer


def artifact(name: str, **fields) -> Path:
    """Where a stage's output lives: its template filled in (`results`, `cell`, `key`, ...)."""
    return Path(STAGES[name].artifact.format(**fields))


def working(name: str, **fields) -> Path:
    """What a stage keeps while it runs (the training checkpoints)."""
    return Path(STAGES[name].working.format(**fields))


def resolution(sample_shape: tuple) -> str:
    """`<H>x<W>` of an image sample (C, H, W), `vec` of a vector: readable in a cache's name."""
    return "x".join(str(s) for s in sample_shape[1:]) or "vec"


# -- the docs' table --------------------------------------------------------------------------------
def _shown(template: str | None) -> str:
    """A path template as the docs show it: `results/...`, `<cell>/...`."""
    return (
        ""
        if template is None
        else f"`{template.replace('{results}', 'results')}`".replace("{", "<").replace("}", ">")
    )


def _labels(selectors) -> str:
    """Selectors as the docs show them: a literal prefix in backquotes, a computed one by its label."""
    return ", ".join(f"`{s}`" if isinstance(s, str) else s.label for s in selectors)


def _hash_cell(stage: Stage) -> str:
    """How the docs describe a stage's hash."""
    if stage.suffix is not None:
        return f"{stage.upstream[0]} hash + `{stage.suffix}`"
    parts = [f"{u} hash" for u in stage.upstream]
    if stage.include is not None:
        parts.append(f"bindings {_labels(stage.include)}")
    else:
        parts.append("every binding")
    excluded = [x for x in stage.exclude if x != "grid."]
    if excluded:
        parts[-1] += f" except {_labels(excluded)}"
    parts += [t.label for t in stage.terms]
    return " + ".join(parts) + (f" (only when {stage.when.label})" if stage.when else "")


def markdown_table() -> str:
    """The table as docs/architecture.md shows it (a test checks the doc holds exactly this)."""
    rows = [
        "| stage | artifact | shared by | hash (`grid.` bindings never enter) | data read |",
        "|---|---|---|---|---|",
    ]
    for s in TABLE:
        where = _shown(s.artifact) + (f" (while running: {_shown(s.working)})" if s.working else "")
        reads = f"as {s.upstream[0]}" if s.suffix is not None else ", ".join(s.reads) or "-"
        name = s.name + (f" (timed as `{s.timer}`)" if s.timer not in (None, s.name) else "")
        rows.append(f"| {name} | {s.about}: {where} | {s.shared} | {_hash_cell(s)} | {reads} |")
    return "\n".join(rows) + "\n"


DOC_BEGIN = "<!-- stages: generated by bench.pipeline.stages.markdown_table(); edit TABLE, not this -->"
DOC_END = "<!-- end of stages -->"


def doc_table(text: str) -> str | None:
    """The table a document holds between the markers, or None if it has no markers."""
    if DOC_BEGIN not in text or DOC_END not in text:
        return None
    return text.split(DOC_BEGIN, 1)[1].split(DOC_END, 1)[0].strip("\n") + "\n"


def update_doc(path) -> None:
    """Rewrite the table between the markers of `path` (docs/architecture.md) from `TABLE`."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if doc_table(text) is None:
        raise ValueError(f"{path} has no stage table markers ({DOC_BEGIN} ... {DOC_END})")
    head, rest = text.split(DOC_BEGIN, 1)
    tail = rest.split(DOC_END, 1)[1]
    path.write_text(f"{head}{DOC_BEGIN}\n{markdown_table()}{DOC_END}{tail}", encoding="utf-8")
