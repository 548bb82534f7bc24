"""`bench data stats`: the paper's dataset table, computed by loading each dataset as a run would.

Counts come from the same `load()` a cell uses (same gin configuration, same bad-row and
bad-image policies), so what this prints is exactly what training would see.
"""

from __future__ import annotations

from tabulate import tabulate

from bench.config.data import AugmentationTargets
from bench.data.targets import augmentation_plan


def dataset_stats(dataset, targets: AugmentationTargets) -> dict:
    """Per-class train counts, groups, synthetic targets and subjects of one configured dataset."""
    train = dataset.load(dataset.train_split)
    evals = dataset.load(dataset.eval_split)
    n = dataset.n_classes
    counts = train.counts(n).tolist()
    plan = augmentation_plan(targets, counts, dataset.class_names)
    subjects = _subjects(train, n)
    nonzero = [c for c in counts if c > 0]
    return {
        "name": dataset.name,
        "classes": plan,
        "eval_split": dataset.eval_split,
        "eval_counts": evals.counts(n).tolist(),
        "subjects_per_class": subjects[0],
        "subjects": subjects[1],
        "imbalance_ratio": max(nonzero) / min(nonzero),
        "skipped": len(getattr(dataset, "skipped", [])),
    }


def _subjects(split, n_classes: int) -> tuple[list, int | None]:
    """Distinct subjects per class and overall, or Nones when the dataset has no patient ids."""
    meta = split.meta
    if meta is None or "subject" not in meta.columns:
        return [None] * n_classes, None
    frame = meta.assign(label=split.y.numpy())
    per_class = frame.groupby("label")["subject"].nunique()
    return [int(per_class.get(c, 0)) for c in range(n_classes)], int(frame["subject"].nunique())


def markdown(stats: dict) -> str:
    """One dataset's table as Markdown, with a summary line above it."""
    plan = stats["classes"]
    total_train = sum(t.count for t in plan)
    total_synth = sum(t.synthetic for t in plan)
    subjects = "n/a" if stats["subjects"] is None else f"{stats['subjects']:,}"
    head = (
        f"### {stats['name']}: {len(plan)} classes, {total_train:,} train samples, "
        f"{subjects} subjects, imbalance ratio {stats['imbalance_ratio']:.1f}, "
        f"{total_synth:,} synthetic (augmentation targets)"
        + (f", {stats['skipped']:,} skipped (see the cell's skipped.csv)" if stats["skipped"] else "")
    )
    rows = [
        [c, t.name, t.count, f"{t.ratio:.4f}", t.group, t.synthetic, "n/a" if s is None else s, e]
        for c, (t, s, e) in enumerate(zip(plan, stats["subjects_per_class"], stats["eval_counts"]))
    ]
    columns = ["#", "class", "train", "n/n_ref", "group", "synthetic", "subjects", stats["eval_split"]]
    return head + "\n\n" + tabulate(rows, headers=columns, tablefmt="github") + "\n"
