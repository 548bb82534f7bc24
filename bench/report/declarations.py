"""What the records declare about their metrics (`record["metric_info"]`, bench.evaluator.Metric).

A record written since metrics declared themselves holds, per declared metric, its label, its
direction, whether it is a headline metric (and its rank among them) and its unit; the reports read
these, never the evaluators. A record written before holds none: its headline metrics are then the
built-in ones of `LEGACY_HEADLINE` and its column titles those of `LEGACY_LABELS`, both exactly as
the built-in evaluators now declare them, so old and new records read the same.
"""

from __future__ import annotations

from collections.abc import Iterable

from bench.evaluator import VARIANT, Metric, family, split_network

# records without `metric_info`: the built-in headline metrics in the order of their ranks (10, 20, ...)
LEGACY_HEADLINE = (
    "fid/tail",
    "fid/pooled",
    "kid/tail",
    "irs_adjusted/tail",
    "swd/tail",
    "swd/all",
    "coverage/tail",
    "cond_acc/tail",
    "bacc",
    "macro_f1",
    "bacc_gain",
)
LEGACY_RANK = 10  # LEGACY_HEADLINE[i] has rank LEGACY_RANK * (i + 1), as its evaluator declares it
# records without `metric_info`: the labels the paper's tables title the built-in metrics with
LEGACY_LABELS = {
    "fid/tail": "FID tail",
    "fid/pooled": "FID pooled",
    "irs_inf/tail": "IRS tail",
    "irs_adjusted/tail": "IRS adj. tail",
    "swd/tail": "SWD tail",
    "coverage/tail": "coverage tail",
    "bacc": "bAcc",
    "macro_f1": "macro-F1",
    "geom_alignment": "alignment",
    "geom_radial_std": "radial std",
    "geom_radial_cv": "radial CV",
    "geom_path_length": "path length",
    "probe_bacc": "bAcc",
    "probe_perm_bacc": "PermbAcc",
    "probe_gap": "gap",
    "probe_near_chance": "NearChance",
    "knn_purity_gap/features": "kNN gap (features)",
    "knn_purity_gap/latent": "kNN gap (latent)",
}


def declared(records: Iterable[dict]) -> dict[str, Metric]:
    """Every metric the records declare, the first record's declaration of each name winning."""
    out: dict[str, Metric] = {}
    for rec in records:
        info = rec.get("metric_info")
        for name, entry in info.items() if isinstance(info, dict) else ():
            if isinstance(entry, dict):
                out.setdefault(name, Metric.from_info(name, entry))
    return out


def metric_title(records: Iterable[dict], name: str) -> str:
    """A metric's title in the paper's tables: its declared label (and unit), else its legacy label,
    else its name."""
    metrics = declared(records)
    return metrics[name].title if name in metrics else LEGACY_LABELS.get(name, name)


def declared_label(records: Iterable[dict], name: str) -> str | None:
    """The label (and unit) the records declare for a metric: its own, or for a breakdown
    `<metric>/<part>` its metric's with the part ('bAcc (no_aug)'); None when undeclared."""
    metrics, plain = declared(records), name.rsplit(VARIANT, 1)[0]
    base = family(plain, metrics)
    if base is None:
        return None
    part = plain[len(base) + 1 :]
    return metrics[base].title + (f" ({part})" if part else "")


def headline_columns(records: list[dict]) -> list[str]:
    """The headline metrics some record holds, by rank: those declared so (`metric_info`), and for
    records without declarations the built-in ones (`LEGACY_HEADLINE`); equal ranks in first-seen order."""
    ranks: dict[str, float] = {}
    for rec in records:
        info = rec.get("metric_info")
        if isinstance(info, dict):
            for name, entry in info.items():
                if isinstance(entry, dict) and entry.get("headline"):
                    ranks.setdefault(name, Metric.from_info(name, entry).rank)
        else:
            for i, name in enumerate(LEGACY_HEADLINE):
                ranks.setdefault(name, LEGACY_RANK * (i + 1))
    held = [n for n in ranks if any(n in r.get("metrics", {}) for r in records)]
    return sorted(held, key=ranks.get)  # stable: equal ranks keep their first-seen order


def with_networks(records: list[dict], metrics: Iterable[str]) -> list[str]:
    """Each metric followed by the same metric on every pretrained feature network the records hold
    (`fid/tail`, `fid[inception_v3]/tail`, ...; bench.evaluator.on_features), in first-seen order."""
    held = list(dict.fromkeys(name for rec in records for name in rec.get("metrics", {})))
    out = []
    for metric in metrics:
        out.append(metric)
        out += [n for n in held if split_network(n) == (metric, split_network(n)[1]) and n != metric]
    return out


def mixed_features(records: list[dict]) -> str | None:
    """The first metric whose records say it was computed on two different features (another
    weight file of the same network, another domain network), described; None when none is."""
    seen: dict[str, tuple[str, str]] = {}  # declared metric -> (features, first record saying so)
    for rec in records:
        info = rec.get("metric_info")
        for name, entry in info.items() if isinstance(info, dict) else ():
            features = entry.get("features") if isinstance(entry, dict) else None
            if not isinstance(features, str):
                continue
            where = f"{rec.get('dataset')}/{rec.get('method')}/seed{rec.get('seed')}"
            first = seen.setdefault(name, (features, where))
            if first[0] != features:
                return f"{name} on {first[0]!r} ({first[1]}) and on {features!r} ({where})"
    return None
