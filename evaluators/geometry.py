"""Transport geometry of a cell's source-to-data coupling in latent space (paper Tab. 2, NOTES 1.8).

With d = x1 - x0 (x1 a training latent, x0 its source draw) the statistics are those of
`bench.priors.displacement.displacement_geometry`, grouped by the groups the velocity field is conditioned on:

- `geom_alignment`: mean cosine of dhat to its group's unit prototype (higher is better),
- `geom_radial_std` / `geom_radial_cv`: sample-weighted within-group std of rho = ||d|| and its
  coefficient of variation (the radial spread; lower is better),
- `geom_path_length`: E||x1 - x0|| (lower is better),
- `geom_angular_overlap`: closeness of dhat to sibling subclasses' prototypes (only with subclasses;
  lower is better).

Which coupling the plain names describe depends on the prior:

- a prior that recorded its own geometry (`prior.info["geometry"]`, optprior): the recorded values,
  computed by the method on all its training latents with its subclass groups, every source scored
  by one rule (`bench.priors.source_geometry`: prototypes = each group's mean direction on a
  held-out noise draw; mean over `optprior.geometry_draws` scoring draws); `geom_<stat>` is the
  stage "optimised" (the source it samples from), `geom_<stat>/prior_init` the initial source,
  `geom_<stat>/prior_standard` N(0, I) and `geom_<stat>/prior_matched` the isotropic class-mean
  source whose spread matches the optimised path length per class, all with the same subclass
  groups; `geom_<stat>/prior_optimised_kappa<k>` the sources optimised with hinge margin k
  (`optprior.kappa_sweep`; directions declared for k in SWEEP_KAPPAS). Each has its standard error
  over the draws, `geom_<stat>_se<suffix>` (e.g. `geom_radial_cv_se/prior_init`; lower is better),
  and the optimised stages `geom_alignment_learned<suffix>`, the alignment to their learned
  prototypes (higher is better). Older records hold the stages' single-draw values without SE
  (in-sample prototypes for N(0, I) and the init). No tail breakdown is recorded.
- a class-mean prior that states its spread (`tensors["class_mean"]`, `info["sigma"]`, cpd):
  x0 ~ N(m_c, sigma^2 I), grouped by class, computed here, also over the tail (`geom_<stat>/tail`).
- no prior (fm, cbfm): x0 ~ N(0, I), grouped by class, computed here with `/tail`.

Always computed, for comparison across methods: `geom_<stat>_gauss` and `geom_<stat>_gauss/tail`,
the standard source N(0, I) grouped by class (identical for every method of a dataset: it depends on
the latents and the evaluator's seed only). `tail` = `bench.data.longtail.tail_classes` of the train
counts; tail statistics use the tail classes' rows only. Computed numbers use at most `max_rows`
rows (a seeded uniform subsample; the tail gets its own subsample of tail rows).

Claim (b) of the paper is against N(0, I): optimised sources raise alignment and cut radial spread
without norm inflation. So whenever the plain `geom_<stat>` and N(0, I) grouped the same way are both
there (`/prior_standard` for a recorded prior, else `_gauss`, same rows and noise), the evaluator adds
`geom_alignment_gain_vs_standard` = alignment - its N(0, I) value (higher is better) and
`geom_radial_std_ratio_vs_standard`, `geom_radial_cv_ratio_vs_standard`,
`geom_path_length_ratio_vs_standard` = value / its N(0, I) value (lower is better; a path-length
ratio above 1 is norm inflation), with `/tail` versions where both sides have a tail.

A prior that recorded a Bayes-risk estimate (`prior.info["bayes_risk"]`, per source "standard" /
"learned") adds `bayes_risk/<source>/<key>` for key in risk_class, risk_subclass (lower is better),
reduction (higher is better: how much subclass conditioning lowers the risk, Eq. 2) and their
standard errors `<key>_se` (lower is better), plus the estimate's reliability
(`bench.priors.bayes_risk.reliable`): `bayes_risk/<source>/ess` (effective posterior size, 1 / mean over
draws of sum_j w_j^2; higher is better), `bayes_risk/<source>/identity_gap` (largest relative
violation of the law of total variance over the draws; lower is better) and
`bayes_risk/<source>/reliable` (1.0 or 0.0; judged here by the same rule for a record without it).
That estimate is the risk of the empirical training distribution and collapses in high dimension
(issue 25); the Gaussian-mixture estimate (`bench.priors.bayes_risk_gmm`, recorded under
`info["bayes_risk"]["gmm"][source]`) adds `bayes_risk/gmm/<source>/<key>` and `<key>_se` for the
same keys and directions (no reliability numbers: nothing collapses). Claim (a)'s null, the
induced partition against size-matched random partitions scored with the same draws
(`info["bayes_risk"]["random_partitions"]`, standard source), adds
`bayes_risk/random/standard/reduction_mean` and `reduction_std` (the random partitions' GMM
reductions; lower is better: the part of the reduction any partition gets), `excess` (induced
minus random mean; higher is better), `p_rank` ((1 + #{random >= induced}) / (1 + R); lower is
better) and `n_partitions` (R).
Everything, with the recorded dicts, goes to out_dir/geometry.json.

For figures, `cell.details["geometry"]["histograms"]` holds, per computed source ("method" for the
method's own source, "gauss" for N(0, I)), fixed-bin histograms over all (subsampled) rows of the
path length rho = ||x1 - x0|| (`bins` bins from 0 to the largest rho of either source: shared
edges) and of the alignment <dhat, u_group> (`bins` bins on [-1, 1]), as counts and bin edges.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.config.checks import is_int
from bench.data.longtail import tail_classes
from bench.errors import BenchError
from bench.evaluator import Evaluator, Metric, family
from bench.priors.bayes_risk import reliable
from bench.priors.displacement import displacement_geometry, per_sample_geometry
from bench.registry import register_evaluator

STATS = ("alignment", "radial_std", "radial_cv", "path_length", "angular_overlap")
STAGES = {
    "optimised": "",
    "init": "/prior_init",
    "standard": "/prior_standard",
    "matched": "/prior_matched",
}  # recorded stage -> suffix
SWEEP = (
    "optimised_kappa"  # optprior.kappa_sweep's stages optimised_kappa<k> -> suffix /prior_optimised_kappa<k>
)
SWEEP_KAPPAS = (0.5, 0.7, 0.9)  # the swept margins whose metrics are declared (others are recorded too)
SE = "_se"  # geom_<stat>_se<suffix>: the standard error over the recorded noise draws
LEARNED = "alignment_learned"  # a recorded stage's alignment against its learned prototypes
GAUSS = "_gauss"
TAIL = "/tail"
RISK_KEYS = ("risk_class", "risk_subclass", "reduction")
RISK_SOURCES = ("standard", "learned")
GMM = "gmm"  # info["bayes_risk"]["gmm"][source]: the Gaussian-mixture estimate (bench.priors.bayes_risk_gmm)
RANDOM = "random_partitions"  # info["bayes_risk"][RANDOM]: the size-matched random-partition null
# random-partition metric bayes_risk/random/standard/<name> -> (key in the recorded dict, higher is better)
RANDOM_KEYS = {
    "reduction_mean": ("reduction_mean", False),
    "reduction_std": ("reduction_std", False),
    "excess": ("excess", True),
    "p_rank": ("p_rank", False),
    "n_partitions": ("n_partitions", True),
}
# reliability metric -> (key in the recorded Bayes-risk dict, higher is better)
RISK_RELIABILITY = {"ess": ("ess", True), "identity_gap": ("max_identity_gap", False)}
# comparison vs N(0, I) -> (stat, "gain" = difference or "ratio", higher is better)
VS_STANDARD = {
    "alignment_gain": ("alignment", "gain", True),
    "radial_std_ratio": ("radial_std", "ratio", False),
    "radial_cv_ratio": ("radial_cv", "ratio", False),
    "path_length_ratio": ("path_length", "ratio", False),
}
HISTOGRAM_KEYS = {"": "method", GAUSS: "gauss"}  # metric suffix of a source -> its key in the details
STAT_LABELS = {
    "alignment": "alignment",
    "radial_std": "radial std",
    "radial_cv": "radial CV",
    "path_length": "path length",
    "angular_overlap": "angular overlap",
}
RISK_LABELS = {
    "risk_class": "Bayes risk (class)",
    "risk_subclass": "Bayes risk (subclass)",
    "reduction": "Bayes-risk reduction",
    "ess": "Bayes-risk ESS",
    "identity_gap": "Bayes-risk identity gap",
    "reliable": "Bayes-risk reliable",
}
SOURCE_LABELS = {"standard": "N(0, I)", "learned": "learned"}
RANDOM_LABELS = {
    "reduction_mean": "random-partition reduction mean",
    "reduction_std": "random-partition reduction std",
    "excess": "reduction excess over random partitions",
    "p_rank": "random-partition p rank",
    "n_partitions": "random partitions",
}


def _stat_direction(stat: str) -> bool:
    """Only directional alignment is better when higher."""
    return stat == "alignment"


def _metrics() -> tuple[Metric, ...]:
    """The declarations: one per statistic and source (its `/tail` and `/prior_<stage>` breakdowns
    inherit it) and one per Bayes-risk number."""
    out = []
    for stat in STATS:
        label, higher = STAT_LABELS[stat], _stat_direction(stat)
        out += [
            Metric(f"geom_{stat}", label, higher),
            Metric(f"geom_{stat}{GAUSS}", f"{label} N(0, I)", higher),
            Metric(f"geom_{stat}{SE}", f"{label} SE", False),
        ]
    out += [
        Metric(f"geom_{LEARNED}", "alignment to learned prototypes", True),
        Metric(f"geom_{LEARNED}{SE}", "alignment to learned prototypes SE", False),
    ]
    out += [
        Metric(f"geom_{name}_vs_standard", f"{name.replace('_', ' ')} vs N(0, I)", higher)
        for name, (_, _, higher) in VS_STANDARD.items()
    ]
    for source in RISK_SOURCES:
        where = SOURCE_LABELS[source]
        for key in RISK_KEYS:
            out += [
                Metric(f"bayes_risk/{source}/{key}", f"{RISK_LABELS[key]}, {where}", key == "reduction"),
                Metric(f"bayes_risk/{source}/{key}_se", f"{RISK_LABELS[key]} SE, {where}", False),
            ]
        out += [
            Metric(f"bayes_risk/{source}/{key}", f"{RISK_LABELS[key]}, {where}", higher)
            for key, (_, higher) in RISK_RELIABILITY.items()
        ]
        out.append(Metric(f"bayes_risk/{source}/reliable", f"{RISK_LABELS['reliable']}, {where}", True))
        for key in RISK_KEYS:
            gmm, what = f"bayes_risk/{GMM}/{source}/{key}", f"GMM {RISK_LABELS[key]}"
            out += [
                Metric(gmm, f"{what}, {where}", key == "reduction"),
                Metric(f"{gmm}_se", f"{what} SE, {where}", False),
            ]
    out += [
        Metric(f"bayes_risk/random/standard/{name}", RANDOM_LABELS[name], higher)
        for name, (_, higher) in RANDOM_KEYS.items()
    ]
    return tuple(out)


METRICS = _metrics()


def _names() -> dict[str, bool]:
    """Every metric name the evaluator can return, with the direction of its declaration."""
    declared = {m.name: m.higher_is_better for m in METRICS}
    return {name: declared[family(name, declared)] for name in _returned()}


def _returned() -> list[str]:
    """Every metric name the evaluator can return (the kappa sweep: the declared margins only)."""
    recorded = (*STAGES.values(), *(f"/prior_{SWEEP}{k:g}" for k in SWEEP_KAPPAS))
    names = []
    for stat in STATS:
        names += [f"geom_{stat}{suffix}" for suffix in ("", TAIL, GAUSS, GAUSS + TAIL, *recorded)]
        names += [f"geom_{stat}{SE}{suffix}" for suffix in recorded]
    for suffix in ("", *recorded[len(STAGES) :]):
        names += [f"geom_{LEARNED}{suffix}", f"geom_{LEARNED}{SE}{suffix}"]
    names += [f"geom_{name}_vs_standard{part}" for name in VS_STANDARD for part in ("", TAIL)]
    return names + [m.name for m in METRICS if m.name.startswith("bayes_risk/")]


@dataclass
class Source:
    """The source a coupling draws x0 from: N(mean[g], diag(sigma[g])^2) for group g (mean None = 0).

    Groups are classes, unless `groups` gives each training row its group (optprior's subclass
    g = c * K + k); `prototypes` (G, D) are then the unit directions alignment is measured against.
    """

    name: str
    mean: torch.Tensor | None = None  # (G, D) group centres
    sigma: float | torch.Tensor = 1.0  # a scalar or (G, D) per-group scales
    groups: torch.Tensor | None = None  # (N,) group of every training row; None: its class
    prototypes: torch.Tensor | None = None

    def group_of(self, rows: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Group of the training rows `rows` whose classes are `labels`."""
        return labels if self.groups is None else self.groups[rows]

    def draw(self, group: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x0 for rows of `group` from standard normal `eps` (n, D)."""
        sigma = (
            self.sigma
            if not torch.is_tensor(self.sigma)
            else self.sigma.reshape(len(self.sigma), -1).to(eps)[group]
        )
        x0 = sigma * eps
        return x0 if self.mean is None else x0 + self.mean.reshape(len(self.mean), -1).to(eps)[group]


STANDARD = Source("standard")


def coupling_displacements(
    latents: torch.Tensor, group: torch.Tensor, source: Source, seed: int
) -> torch.Tensor:
    """d = x1 - x0 (n, D), x0 drawn from `source` with a generator seeded by `seed`.

    float32 here (latents can have 16k dimensions); bench.priors.displacement reduces in float64.
    """
    x1 = latents.reshape(len(latents), -1).float()
    eps = torch.randn(x1.shape, generator=torch.Generator().manual_seed(seed))
    return x1 - source.draw(group, eps)


def coupling_geometry(latents: torch.Tensor, labels: torch.Tensor, source: Source, seed: int) -> dict:
    """displacement_geometry of the coupling's displacements grouped by class."""
    return displacement_geometry(coupling_displacements(latents, labels, source, seed), labels)


def histogram(values: torch.Tensor, lo: float, hi: float, bins: int) -> dict:
    """{"counts", "edges"} of `bins` equal bins on [lo, hi] (the last bin closed), as JSON lists."""
    counts, edges = np.histogram(values.cpu().numpy(), bins=bins, range=(lo, hi))
    return {"counts": counts.tolist(), "edges": edges.tolist()}


def geometry_histograms(samples: dict[str, tuple], bins: int) -> dict:
    """Per source key, from its (source name, rho, alignment): histograms of rho (edges shared by
    all sources, from 0 to the largest rho) and of the alignment (on [-1, 1])."""
    top = max(float(rho.max()) for _, rho, _ in samples.values())
    top = top if top > 0 else 1.0
    return {
        key: {
            "source": name,
            "n": len(rho),
            "path_length": histogram(rho, 0.0, top, bins),
            "alignment": histogram(cos.clamp(-1.0, 1.0), -1.0, 1.0, bins),
        }
        for key, (name, rho, cos) in samples.items()
    }


def method_source(prior) -> Source | None:
    """The source the plain `geom_*` names describe when the prior recorded no geometry."""
    if prior is None:
        return STANDARD
    tensors, info = getattr(prior, "tensors", {}) or {}, getattr(prior, "info", {}) or {}
    if "class_mean" in tensors and isinstance(info.get("sigma"), (int, float)):
        return Source("class_mean", tensors["class_mean"], float(info["sigma"]))
    return None  # a prior whose source this evaluator cannot reconstruct: gauss reference only


def subclass_source(prior, labels: torch.Tensor, n_classes: int) -> Source | None:
    """optprior's own coupling, grouped by subclass g = c * K + k with its prototypes: its learned
    subclass sources, or N(0, I) when sources are not learned. None without induced subclasses."""
    tensors, info = getattr(prior, "tensors", {}) or {}, getattr(prior, "info", {}) or {}
    if not {"mu", "log_sigma", "assignment", "prototype"} <= set(tensors) or len(tensors["mu"]) % n_classes:
        return None
    groups = labels * (len(tensors["mu"]) // n_classes) + torch.as_tensor(tensors["assignment"]).long()
    if not info.get("learned_source", True):
        return Source("standard (subclasses)", groups=groups, prototypes=tensors["prototype"])
    return Source("subclass", tensors["mu"], tensors["log_sigma"].exp(), groups, tensors["prototype"])


def recorded_metrics(info: dict) -> dict[str, float]:
    """geom_<stat>[_se]<stage suffix> from info["geometry"] and bayes_risk/... from info["bayes_risk"]."""
    out = {}
    geometry = info.get("geometry") or {}
    stages = STAGES | {stage: f"/prior_{stage}" for stage in geometry if stage.startswith(SWEEP)}
    for stage, suffix in stages.items():
        values = geometry.get(stage) or {}
        out |= {
            f"geom_{s}{se}{suffix}": float(values[s + se])
            for s in (*STATS, LEARNED)
            for se in ("", SE)
            if _number(values.get(s + se))
        }
    for source in RISK_SOURCES:
        values = (info.get("bayes_risk") or {}).get(source) or {}
        out |= risk_metrics(f"bayes_risk/{source}/", values)
        values = ((info.get("bayes_risk") or {}).get(GMM) or {}).get(source) or {}
        out |= risk_metrics(f"bayes_risk/{GMM}/{source}/", values)
    values = (info.get("bayes_risk") or {}).get(RANDOM) or {}
    out |= {
        f"bayes_risk/random/standard/{name}": float(values[key])
        for name, (key, _) in RANDOM_KEYS.items()
        if _number(values.get(key))
    }
    return out


def risk_metrics(prefix: str, values: dict) -> dict[str, float]:
    """One source's recorded Bayes-risk numbers and their reliability (when recorded), as `prefix<key>` metrics."""
    number = _number
    out = {
        f"{prefix}{key}": float(values[key])
        for key in (k + se for k in RISK_KEYS for se in ("", "_se"))
        if number(values.get(key))
    }
    out |= {
        f"{prefix}{name}": float(values[key])
        for name, (key, _) in RISK_RELIABILITY.items()
        if number(values.get(key))
    }
    if isinstance(values.get("reliable"), bool):
        out[f"{prefix}reliable"] = float(values["reliable"])
    elif number(values.get("ess")) and number(values.get("max_identity_gap")):
        out[f"{prefix}reliable"] = float(reliable(values["ess"], values["max_identity_gap"]))
    return out


def _number(value) -> bool:
    """A recorded int or float (not a bool, not None)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def vs_standard(metrics: dict[str, float], reference: str) -> dict[str, float]:
    """geom_<comparison>_vs_standard(/tail) of the plain geom_<stat> against N(0, I) grouped the same way.

    `reference` is the N(0, I) metrics' suffix: "/prior_standard" (recorded by the prior) or "_gauss".
    """
    out = {}
    for part in ("", TAIL) if reference == GAUSS else ("",):  # a prior records no tail
        for name, (stat, kind, _) in VS_STANDARD.items():
            own, ref = metrics.get(f"geom_{stat}{part}"), metrics.get(f"geom_{stat}{reference}{part}")
            if own is None or ref is None or (kind == "ratio" and ref == 0):
                continue
            out[f"geom_{name}_vs_standard{part}"] = own - ref if kind == "gain" else own / ref
    return out


@register_evaluator("geometry")
class TransportGeometry(Evaluator):
    """Directional alignment, radial spread and path length of the cell's source coupling (Tab. 2)."""

    metrics = METRICS
    higher_is_better = _names()
    reads_samples = False  # the prior and the training latents only: runs on prior-only cells too

    def __init__(self, max_rows: int = 4096, seed: int = 0, bins: int = 40):
        if not is_int(bins) or bins < 1:
            raise BenchError(f"geometry.bins={bins!r}: use an integer >= 1 (bins of the figures' histograms)")
        self.max_rows, self.seed, self.bins = max_rows, seed, bins

    def evaluate(self, cell) -> dict[str, float]:
        """Recorded prior numbers, the method's coupling when computable, and the N(0, I) reference."""
        info = getattr(cell.prior, "info", None) or {}
        tail = tail_classes(cell.train.counts(cell.dataset.n_classes))
        sources = {GAUSS: STANDARD}
        source = None if "geometry" in info else method_source(cell.prior)
        if source is not None:
            sources[""] = source
        computed, samples = self._computed(cell, tail, sources) if cell.latents is not None else ({}, {})
        own = subclass_source(cell.prior, cell.train.y, cell.dataset.n_classes) if source is None else None
        if own is not None and cell.latents is not None:  # metrics recorded by the prior: histogram only
            samples[HISTOGRAM_KEYS[""]] = self._per_sample(cell, own)
        metrics = recorded_metrics(info)
        for name, geo in computed.items():  # name = geom<suffix><part>
            suffix = name[len("geom") :]
            metrics |= {f"geom_{s}{suffix}": float(geo[s]) for s in STATS if s in geo}
        metrics |= vs_standard(metrics, STAGES["standard"] if "geometry" in info else GAUSS)
        details = {
            "metrics": metrics,
            "tail_classes": tail,
            "max_rows": self.max_rows,
            "seed": self.seed,
            "computed": computed,
            "recorded": {k: info[k] for k in ("geometry", "bayes_risk") if k in info},
        }
        out_dir = Path(cell.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "geometry.json").write_text(json.dumps(details, indent=2, default=str))
        if samples:
            cell.details["geometry"] = {
                "bins": self.bins,
                "max_rows": self.max_rows,
                "histograms": geometry_histograms(samples, self.bins),
            }
        return metrics

    def _computed(self, cell, tail: list[int], sources: dict) -> tuple[dict[str, dict], dict[str, tuple]]:
        """displacement_geometry per source (by metric suffix) over all rows and the tail rows, and
        (source name, per-sample rho, per-sample alignment) of the all-rows part by histogram key."""
        labels = cell.train.y
        if len(cell.latents) != len(labels):
            raise BenchError(
                f"geometry: the cell has {len(cell.latents)} latents for {len(labels)} training "
                "rows; delete the latent cache so it is rebuilt for this training split"
            )
        masks = {"": torch.ones(len(labels), dtype=torch.bool), TAIL: torch.isin(labels, torch.tensor(tail))}
        out, samples = {}, {}
        for suffix, src in sources.items():
            for part, mask in masks.items():
                if mask.any():
                    rows = self._rows(mask)
                    d = coupling_displacements(cell.latents[rows], labels[rows], src, self.seed)
                    out[f"geom{suffix}{part}"] = {
                        "source": src.name,
                        **displacement_geometry(d, labels[rows]),
                    }
                    if part == "":
                        samples[HISTOGRAM_KEYS[suffix]] = (src.name, *per_sample_geometry(d, labels[rows]))
        return out, samples

    def _per_sample(self, cell, src: Source) -> tuple:
        """(source name, rho, alignment) per sample of a subclass-grouped source, over all rows."""
        rows = self._rows(torch.ones(len(cell.train.y), dtype=torch.bool))
        group = src.group_of(rows, cell.train.y[rows])
        d = coupling_displacements(cell.latents[rows], group, src, self.seed)
        return (src.name, *per_sample_geometry(d, group, src.prototypes))

    def _rows(self, mask: torch.Tensor) -> torch.Tensor:
        """At most max_rows rows of `mask`, picked uniformly with the seed (all of them if fewer)."""
        rows = mask.nonzero().squeeze(1)
        if len(rows) > self.max_rows:
            pick = torch.randperm(len(rows), generator=torch.Generator().manual_seed(self.seed))
            rows = rows[pick[: self.max_rows].sort().values]
        return rows
