"""Where an experiment's numbers come from, as its records state it, for the report page.

Every record stores (bench.store.records, bench.pipeline.runner): the commit of the bench source
tree (`git_hash`, `+dirty` when the tree had uncommitted changes), the package versions
(`versions`), where it ran (`host`: device, host name, platform), its config hash and the hash of
each stage it ran or reused (`stage_hashes`; `data`: the data split's), the versions of the method's
stages (`stage_versions`) and when it was written (`created`). This module reads them into a compact
summary (what all usable records share, what varies and how often) and one row per cell; the index
page shows the summary and folds the rows (bench.report.index). Records written before a field
existed lack it: the summary counts them instead of guessing.
"""

from __future__ import annotations

from collections import Counter

from bench.report.collect import OK, Experiment

DIRTY = "+dirty"
UNKNOWN = "not recorded"
SHORT = 12  # characters of a commit hash shown in the per-cell rows
CELL_HEADER = ["cell", "created", "commit", "device", "config hash", "stage hashes", "data hashes"]


def commit_text(git_hash: str | None) -> str:
    """'<hash> (clean tree)', '<hash> (uncommitted changes: +dirty)' or 'not recorded'."""
    if not git_hash:
        return UNKNOWN
    if git_hash.endswith(DIRTY):
        return f"{git_hash[: -len(DIRTY)]} (uncommitted changes: {DIRTY})"
    return f"{git_hash} (clean tree)"


def _counted(values: list, what: str = "cell") -> str:
    """'a (3 cells), b (1 cell)', most frequent first; one value alone without a count."""
    counts = Counter(values)
    if len(counts) == 1:
        return str(next(iter(counts)))
    return ", ".join(f"{v} ({k} {what}{'s' if k != 1 else ''})" for v, k in counts.most_common())


def versions_text(records: list[dict]) -> str:
    """'python 3.11.7, torch 2.13.0+cpu, ...' (a package whose version differs lists each with its count)."""
    names: list[str] = []
    for r in records:
        names += [n for n in (r.get("versions") or {}) if n not in names]
    if not names:
        return UNKNOWN
    parts = []
    for name in names:
        values = [
            str((r.get("versions") or {}).get(name) or "not installed") for r in records if r.get("versions")
        ]
        parts.append(f"{name} {_counted(values)}")
    return ", ".join(parts)


def stage_hash_text(records: list[dict]) -> str:
    """Per stage, how many distinct hashes the records hold: 'encode: 1 (shared), train: 9'."""
    stages: list[str] = []
    for r in records:
        stages += [s for s in (r.get("stage_hashes") or {}) if s not in stages]
    if not stages:
        return UNKNOWN
    parts = []
    for s in stages:
        distinct = {(r.get("stage_hashes") or {}).get(s) for r in records} - {None}
        parts.append(
            f"{s}: {len(distinct)}" + (" (shared)" if len(distinct) == 1 and len(records) > 1 else "")
        )
    return ", ".join(parts)


def summary_items(exp: Experiment) -> list[tuple[str, str]]:
    """(label, text) of what the usable records state, for the page's compact block."""
    records = exp.records()
    if not records:
        return [("records", "no usable record")]
    with_hash = [r for r in records if r.get("git_hash")]
    created = sorted(r["created"] for r in records if r.get("created"))
    missing = len(records) - len(with_hash)
    items = [
        (
            "commit",
            (_counted([commit_text(r["git_hash"]) for r in with_hash]) if with_hash else UNKNOWN)
            + (f"; {missing} record(s) state none" if with_hash and missing else ""),
        ),
        ("packages", versions_text(records)),
        ("device", _counted([(r.get("host") or {}).get("device") or UNKNOWN for r in records])),
        (
            "config hashes",
            f"{len({r.get('config_hash') for r in records})} distinct over {len(records)} usable cell(s)",
        ),
        ("stage hashes", stage_hash_text(records)),
    ]
    if created:
        items.append(
            ("written", created[0] if created[0] == created[-1] else f"{created[0]} to {created[-1]}")
        )
    return items


def short_summary(exp: Experiment) -> str:
    """One sentence for the top of the page: 'Commit 0123456789ab (6 cells), 0123456789ab+dirty (3
    cells); device cpu.'"""
    records = exp.records()
    if not records:
        return "No usable record: no provenance."
    commits = [_short(r.get("git_hash")) for r in records]
    devices = [(r.get("host") or {}).get("device") or UNKNOWN for r in records]
    return f"Commit {_counted(commits)}; device {_counted(devices)} (details: Provenance)."


def _short(git_hash: str | None) -> str:
    """The first SHORT characters of a commit, '+dirty' kept; UNKNOWN for none."""
    if not git_hash:
        return UNKNOWN
    return git_hash[:SHORT] + (DIRTY if git_hash.endswith(DIRTY) else "")


def _pairs(mapping: dict | None) -> str:
    """'encode=466875f6, train=6aa8a0fd' (each hash's first 8 characters)."""
    return ", ".join(f"{k}={str(v)[:8]}" for k, v in (mapping or {}).items()) or UNKNOWN


def cell_rows(exp: Experiment) -> list[list[str]]:
    """One row per usable cell (CELL_HEADER), in grid order."""
    rows = []
    for c in exp.results():
        if c.status != OK:
            continue
        r = c.record
        rows.append(
            [
                c.label,
                str(r.get("created") or UNKNOWN),
                _short(r.get("git_hash")),
                str((r.get("host") or {}).get("device") or UNKNOWN),
                str(r.get("config_hash") or UNKNOWN),
                _pairs(r.get("stage_hashes")),
                _pairs(r.get("data")),
            ]
        )
    return rows
