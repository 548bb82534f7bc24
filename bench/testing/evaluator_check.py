"""`check_evaluator`: an evaluator plugin against what the runner and the reports read of it.

Its declarations (`metrics`: Metric objects with distinct names, or an older plugin's
`higher_is_better` dict), `applies_to`, `version`, `reads_samples`; then `evaluate` on the kit's
tiny finished cell of each kind it applies to (bench.testing.tiny.tiny_cell: real splits, a
synthetic set with its references, latents, a subclass prior, the augmentation plan, features),
and, for an evaluator that reads no samples, on a cell stopped after its prior. Every call must
return a dict of finite floats whose names its declarations cover (bench.evaluator.family: the
name, its `@` variants and `/` breakdowns), so the records can title and rank them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.evaluator import Evaluator, Metric, declarations, family
from bench.testing.probe import Probe, resolve
from bench.testing.tiny import tiny_cell

HOOKS = {"evaluate": ("cell",)}
KINDS = ("vector", "image")


def check_evaluator(plugin, settings: dict | None = None) -> None:
    """Check an evaluator class (or registered name) against the evaluator contract; ContractFailure
    if not. `settings`: constructor keyword arguments that keep it fast (fewer seeds, epochs)."""
    probe = Probe("evaluator", resolve("evaluator", plugin))
    probe.require_hooks(HOOKS, base=Evaluator, written=("evaluate",))
    evaluator = probe.construct(settings)
    probe.require_signatures(evaluator, HOOKS)
    declared = _check_declarations(probe, evaluator)
    kinds = [k for k in KINDS if k in evaluator.applies_to]
    for kind in kinds:
        with tempfile.TemporaryDirectory() as folder:
            _check_metrics(probe, evaluator, tiny_cell(kind, Path(folder) / "cell"), declared, kind)
        if not evaluator.reads_samples:
            with tempfile.TemporaryDirectory() as folder:
                cell = tiny_cell(kind, Path(folder) / "cell", with_samples=False)
                _check_metrics(probe, evaluator, cell, declared, f"{kind}, stopped after the prior")


def _check_declarations(probe: Probe, evaluator) -> dict:
    """The declared metrics by name; fails on a malformed declaration or attribute."""
    raw = getattr(evaluator, "metrics", ())
    probe.expect(
        isinstance(raw, (tuple, list)) and all(isinstance(m, Metric) for m in raw),
        "metrics",
        f"is {raw!r}, expected a tuple of bench.evaluator.Metric",
    )
    higher = getattr(evaluator, "higher_is_better", {})
    probe.expect(
        isinstance(higher, dict), "higher_is_better", f"is {higher!r}, expected a dict of name -> bool"
    )
    declared = {m.name: m for m in declarations(evaluator)}
    probe.expect(
        len(declared) == len(declarations(evaluator)),
        "metrics",
        "declares a metric name twice, expected distinct names",
    )
    for m in declared.values():
        probe.expect(
            m.higher_is_better in (True, False, None),
            "metrics",
            f"declares {m.name!r} with higher_is_better={m.higher_is_better!r}, expected True, False or None",
        )
    kinds = evaluator.applies_to
    probe.expect(
        isinstance(kinds, (tuple, list)) and bool(kinds) and set(kinds) <= set(KINDS),
        "applies_to",
        f"is {kinds!r}, expected a non-empty tuple of {KINDS}",
    )
    version = evaluator.version
    probe.expect(
        isinstance(version, int) and not isinstance(version, bool) and version >= 1,
        "version",
        f"is {version!r}, expected an integer >= 1",
    )
    for flag in ("reads_samples", "spreads_over_ranks"):
        value = getattr(evaluator, flag)
        probe.expect(isinstance(value, bool), flag, f"is {value!r}, expected True or False")
    return declared


def _check_metrics(probe: Probe, evaluator, cell, declared: dict, where: str) -> None:
    """`evaluate(cell)`: a dict of finite floats, every name covered by a declaration."""
    out = probe.call("evaluate", evaluator.evaluate, cell)
    probe.expect(
        isinstance(out, dict),
        "evaluate",
        f"returned a {type(out).__name__} on the tiny {where} cell, expected a dict",
    )
    for key, value in out.items():
        probe.expect(isinstance(key, str), "evaluate", f"returned the metric name {key!r}, expected a string")
        probe.finite_number("evaluate", key, value)
        probe.expect(
            family(key, declared) is not None,
            "evaluate",
            f"returned {key!r}, which no Metric declares (declared: {sorted(declared)}); declare it in "
            "`metrics`, or name it as a variant `<name>@<set>` or breakdown `<name>/<part>` of one",
        )
