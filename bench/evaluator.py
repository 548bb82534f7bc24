"""Evaluator plugin interface: read a finished cell, return named metrics, each declared by a `Metric`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

VARIANT = "@"  # `<metric>@<set>`: the same measurement of a reference set (`fid/tail@source`)
PART = "/"  # `<metric>/<part>`: a breakdown (per class, per remedy, per stage: `bacc/no_aug`)
# `<stem>[<network>]...`: computed on a pretrained feature network (`fid[inception_v3]/tail@source`)
NETWORK_OPEN, NETWORK_CLOSE = "[", "]"
DEFAULT_RANK = 1000  # after every built-in headline metric (ranks 10 to 110)


@dataclass(frozen=True)
class Metric:
    """One metric an evaluator returns: its name in records, its title in reports, its better side.

    - `name`: the plain metric as `evaluate` returns it (`"fid/tail"`). The declaration also covers
      its family, which needs no declaration of its own: variants `<name>@<set>` (`fid/tail@source`,
      `fid/tail@init`) and breakdowns `<name>/<part>` (`bacc/no_aug`, `bacc/aug+crt`,
      `swd/class/<class>` under `swd/class`); a name belongs to its longest declared prefix.
    - `label`: how tables title it (`"FID tail"`); the all-metrics table shows it beside the name.
    - `higher_is_better`: True or False; None for a number with no better side (a sample count, a
      reference level), which tables never rank.
    - `headline`: shown in the run's printed comparison (the summary `bench run` prints and the
      headline table of summary.md) and in each cell's progress line, which names the cell's first
      headline metric.
    - `unit`: `""` for a score or ratio, else e.g. `"s"` or `"GiB"`, shown after the label.
    - `rank`: where a headline metric stands among the others, ascending. The built-ins use 10
      (`fid/tail`) to 110 (`bacc_gain`) in steps of 10 (docs/evaluators.md lists them); the default
      puts a plugin's headline metrics after them, `rank=15` right after FID tail. Equal ranks keep
      the order of the run's evaluators, then the order of declaration.
    - `on_features`: the number depends on the feature network whenever its evaluator embeds
      images with it (`cell.features`); False for what never does (a sample count, a latent-space
      score). Such a number is named after a pretrained network it was computed on (`on_features`
      the function) and its record entry says which features it used.
    """

    name: str
    label: str
    higher_is_better: bool | None
    headline: bool = False
    unit: str = ""
    rank: int = DEFAULT_RANK
    on_features: bool = True

    @property
    def title(self) -> str:
        """The label with its unit: 'train time (s)'."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    def info(self) -> dict:
        """The declaration as the record stores it (`record["metric_info"][name]`)."""
        return {
            "label": self.label,
            "higher_is_better": self.higher_is_better,
            "headline": self.headline,
            "unit": self.unit,
            "rank": self.rank,
        }

    @classmethod
    def from_info(cls, name: str, info: Mapping) -> Metric:
        """A declaration read back from a record; missing or malformed fields take their defaults."""
        higher = info.get("higher_is_better")
        rank = info.get("rank")
        return cls(
            name,
            str(info.get("label") or name),
            None if higher is None else bool(higher),
            bool(info.get("headline", False)),
            str(info.get("unit") or ""),
            rank if isinstance(rank, (int, float)) and not isinstance(rank, bool) else DEFAULT_RANK,
        )


def directions(metrics: Iterable[Metric], suffixes: Iterable[str] = ("",)) -> dict[str, bool]:
    """`{name + suffix: higher_is_better}` of every declared metric that has a better side: an
    evaluator's `higher_is_better`, listing the family members it returns under `suffixes`."""
    suffixes = tuple(suffixes)
    return {
        m.name + s: m.higher_is_better for m in metrics if m.higher_is_better is not None for s in suffixes
    }


def family(name: str, declared: Mapping) -> str | None:
    """The declared name whose family holds `name`: itself, else (a variant) that of the name before
    its `@`, else its longest declared `/`-prefix; None when nothing declared covers it."""
    if name in declared:
        return name
    if VARIANT in name:
        return family(name.rsplit(VARIANT, 1)[0], declared)
    parts = name.split(PART)
    return next((p for i in range(len(parts) - 1, 0, -1) if (p := PART.join(parts[:i])) in declared), None)


def declarations(evaluator) -> tuple[Metric, ...]:
    """The evaluator's `metrics`; for one that only sets a `higher_is_better` dict (written before
    metrics declared themselves), one declaration per name: label = name, not a headline."""
    declared = tuple(getattr(evaluator, "metrics", ()) or ())
    if declared:
        return declared
    higher = getattr(evaluator, "higher_is_better", None) or {}
    return tuple(Metric(str(n), str(n), bool(h)) for n, h in higher.items())


def on_features(name: str, network: str) -> str:
    """The name of a metric computed on the pretrained feature network `network`: the network in
    brackets after the name's stem (`fid/tail@source` -> `fid[inception_v3]/tail@source`), so it
    never shares a table column with the same metric on other features."""
    cut = min((i for i in (name.find(PART), name.find(VARIANT)) if i >= 0), default=len(name))
    return f"{name[:cut]}{NETWORK_OPEN}{network}{NETWORK_CLOSE}{name[cut:]}"


def split_network(name: str) -> tuple[str, str | None]:
    """(the name without its feature network, the network or None): the inverse of `on_features`."""
    cut = min((i for i in (name.find(PART), name.find(VARIANT)) if i >= 0), default=len(name))
    stem = name[:cut]
    if not stem.endswith(NETWORK_CLOSE) or NETWORK_OPEN not in stem:
        return name, None
    open_at = stem.index(NETWORK_OPEN)
    return stem[:open_at] + name[cut:], stem[open_at + 1 : -1]


def metric_info(
    evaluators: Iterable, names: Iterable[str], features: Mapping[str, str] | None = None
) -> dict[str, dict]:
    """`record["metric_info"]`: the declarations (`Metric.info`) whose family holds one of `names`
    (the record's metrics), in the evaluators' order, then their order of declaration.

    `features` maps each metric computed on a feature network to what it was computed on
    (bench.metrics.features: `FeatureExtractor.identity`); its family's entry states it as
    `"features"`. A family on a pretrained network is declared under its own name
    (`fid[inception_v3]/tail`), its label followed by the network in brackets."""
    declared: dict[str, Metric] = {}
    for ev in evaluators:
        for m in declarations(ev):
            declared.setdefault(m.name, m)
    used: dict[str, dict[str | None, str | None]] = {}  # family -> {network: features}
    for n in names:
        plain, network = split_network(n)
        base = family(plain, declared)
        if base is not None:
            seen = used.setdefault(base, {})
            seen[network] = seen.get(network) or (features or {}).get(n)
    info = {}
    for name, m in declared.items():
        for network, computed_on in used.get(name, {}).items():
            entry = m.info()
            if network is not None:
                entry["label"] = f"{m.label} {NETWORK_OPEN}{network}{NETWORK_CLOSE}"
            if computed_on:
                entry["features"] = computed_on
            info[name if network is None else on_features(name, network)] = entry
    return info


def headline_names(info: Mapping[str, Mapping]) -> list[str]:
    """The headline metrics of a `metric_info` mapping, by rank, equal ranks in their order there."""
    found = [Metric.from_info(n, i) for n, i in info.items() if isinstance(i, Mapping) and i.get("headline")]
    return [m.name for m in sorted(found, key=lambda m: m.rank)]  # sorted() is stable: ties keep their order


class Evaluator:
    """Base class for evaluators.

    `evaluate(cell)` receives a `bench.context.CellContext` (dataset, real splits, synthetic set,
    output folder) and returns a flat dict of float metrics. `metrics` declares them (`Metric`:
    label, direction, headline, unit; one declaration covers a metric's `@` variants and `/`
    breakdowns), so reports title and rank them from the records alone. `higher_is_better` maps
    every metric name the evaluator can return to its direction, so tables can mark the best entry;
    a subclass that declares `metrics` gets it from them (`directions`; an evaluator returning family
    members lists them with `directions(metrics, suffixes)`), and an older plugin that sets only the
    dict still works: its names are declared with label = name (`declarations`).
    `applies_to` says which dataset kinds it handles ("vector", "image"); the runner skips it
    elsewhere. `version` says what its records hold: raise it when the evaluator computes something
    new or different, and every stored record it wrote is evaluated again on the next run (the
    trained backbone and the samples are reused). `spreads_over_ranks`: on a cell launched on
    several processes, `evaluate` runs on every rank and shares its work among them through
    bench.runtime.distributed (the downstream classifiers); the others run on rank 0 alone.
    """

    name = "evaluator"
    applies_to: tuple[str, ...] = ("vector", "image")
    metrics: tuple[Metric, ...] = ()
    higher_is_better: dict[str, bool] = {}
    spreads_over_ranks = False
    version = 1
    # False: evaluate() reads only the data, the latents and the prior, never the synthetic sets, so
    # it also runs on a cell stopped after its offline stage (`pipeline.stop_after = 'prior'`)
    reads_samples = True

    def __init_subclass__(cls, **kwargs):
        """A subclass that declares `metrics` and no `higher_is_better` gets the directions of its metrics."""
        super().__init_subclass__(**kwargs)
        if "metrics" in cls.__dict__ and "higher_is_better" not in cls.__dict__:
            cls.higher_is_better = directions(cls.metrics)

    def evaluate(self, cell) -> dict[str, float]:
        """Metrics for one cell."""
        raise NotImplementedError
