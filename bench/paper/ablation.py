"""The paper's ablation table (Tab. 7): subclasses (Sub.) x optimised sources (Opt.), on the generic tables.

Rows are the methods that play an ablation role, each with its check marks: a record's
`method_info` states the role (`subclasses`, `learned_source`); a method without any usable record
takes the role its name has in the paper's ablation grid (`ABLATION_ROLES`), so its row shows
dashes rather than disappearing. Columns: downstream bAcc and the kNN purity gap of the induced
subclasses over random partitions, in feature and latent space, titled by their declared labels.
"""

from __future__ import annotations

from bench.report.collect import Experiment
from bench.report.tables import TableOptions, has_metric, method_table, runs_caption
from bench.report.tabular import Table

CHECK = "✓"
ABLATION_METRICS = ("bacc", "knn_purity_gap/features", "knn_purity_gap/latent")
# (subclasses, learned source) of the paper's ablation methods, for cells without a record
ABLATION_ROLES = {
    "fm": (False, False),
    "optprior_sub": (True, False),
    "optprior_opt": (False, True),
    "optprior": (True, True),
}


def ablation_table(exp: Experiment, options: TableOptions) -> Table | None:
    """Tab. 7: Sub x Opt ablation rows with downstream bAcc and kNN purity gaps (None with fewer than
    two methods in an ablation role, or none of its metrics)."""
    roles = {m: r for m in exp.methods if (r := ablation_role(exp, m)) is not None}
    if len(roles) < 2 or not any(has_metric(exp, m) for m in ABLATION_METRICS):
        return None
    built = method_table(
        exp,
        "ablation",
        "Ablation: subclasses (Sub.) and optimised sources (Opt.)",
        runs_caption(
            "Downstream balanced accuracy and the kNN purity gap of induced "
            "subclasses over random partitions, in feature and latent space."
        ),
        ABLATION_METRICS,
        lambda e: list(roles),
    )
    if built is None:
        return None
    table, _ = built
    table.row_header = ["Method", "Sub.", "Opt."]
    table.rows = [
        ([labels[0]] + [CHECK if on else "" for on in roles[labels[0]]], entries)
        for labels, entries in table.rows
    ]
    return table


def ablation_role(exp: Experiment, method: str) -> tuple[bool, bool] | None:
    """(subclasses, learned source) from the method's first record that states them, else its paper role."""
    for rec in exp.records(method=method):
        info = rec.get("method_info") or {}
        if "subclasses" in info:
            return bool(info["subclasses"]), bool(info.get("learned_source"))
    return ABLATION_ROLES.get(method)
