"""The protocol line above a dataset's comparison: how its cells were trained, sampled and scored.

A reader must see at once when a comparison does not follow the paper's protocol: the quick run
trains a tiny FLUX for a few hundred steps and scores augmentation with a reduced downstream
protocol, so its numbers are not the paper's. The line is built from the records alone (training
steps and batch, the backbone's patch size, the sampler, the downstream protocol the evaluator
recorded), so `bench report` on stored results prints the same line as `bench run`; the downstream
part is compared with the paper's preset (gin/presets/downstream_paper.gin).
"""

from __future__ import annotations

import ast
import re
from functools import cache

PAPER_PRESET = "presets/downstream_paper.gin"
_BINDING = re.compile(r"^downstream\.(\w+)\s*=\s*(.+?)\s*$")


def protocol_line(records: list[dict]) -> str | None:
    """'Protocol: ...' for one dataset's records, or None when they hold nothing to state."""
    parts = [p for p in (_training(records), _sampler(records), _downstream(records)) if p]
    return f"Protocol: {'; '.join(parts)}." if parts else None


def _agreed(values: list):
    """The one value every record gives, else None (records that differ say nothing common)."""
    distinct = {repr(v) for v in values}
    return values[0] if values and len(distinct) == 1 else None


def _training(records: list[dict]) -> str | None:
    train = [r.get("train") or {} for r in records]
    steps, batch = _agreed([t.get("steps") for t in train]), _agreed([t.get("batch_size") for t in train])
    if steps is None:
        return None
    text = f"{steps:,} training steps" + (f" of batch {batch}" if batch else "")
    patch = _agreed([(t.get("backbone_config") or {}).get("patch_size", 2) for t in train])
    if _agreed([r.get("backbone") for r in records]) == "flux" and patch:
        text += f", FLUX {patch} x {patch} patches"
    return text


def _sampler(records: list[dict]) -> str | None:
    sampler = _agreed([r.get("sampler") for r in records])
    return f"{sampler['solver']} sampler, {sampler['nfe']} steps" if sampler else None


def _downstream(records: list[dict]) -> str | None:
    protocol = _agreed([((r.get("details") or {}).get("downstream") or {}).get("protocol") for r in records])
    if not protocol:
        return None
    text = (
        f"downstream {protocol['arch']}, {protocol['n_seeds']} classifier seed(s), <= {protocol['max_epochs']} "
        f"epochs (patience {protocol['patience']}), remedies {', '.join(protocol['remedies']) or 'none'}, "
        f"with augmentation {', '.join(protocol['with_augmentation']) or 'none'}"
    )
    differs = sorted(k for k, v in paper_downstream().items() if protocol.get(k) != v)
    if differs:
        text += f" (not the paper's protocol: {', '.join(differs)} differ from {PAPER_PRESET})"
    return text


@cache
def paper_downstream() -> dict:
    """The downstream settings the paper's preset binds ({name: value})."""
    from bench.config.gin_config import gin_dir

    out = {}
    for line in (gin_dir() / PAPER_PRESET).read_text().splitlines():
        match = _BINDING.match(line.split("#", 1)[0].strip())
        if match:
            out[match[1]] = ast.literal_eval(match[2])
    return out
