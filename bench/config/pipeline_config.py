"""The `pipeline` settings: which backbone, encoder and evaluators a cell uses, the split it is
scored on and where it stops (set per dataset in its gin file)."""

from __future__ import annotations

from collections.abc import Sequence

from bench.config.checks import USE, Settings, setting, settings

EVAL_ON = ("test", "val")
# a list where one name is meant, or a bare string where a list is (it would be iterated letter by
# letter: "unknown evaluator 's'"), is refused with an example
ONE_NAME = "{key} takes one name, got {value}; e.g. {key}={default}"
STOP_AFTER = (
    "None (every stage) or 'prior' (the offline stage alone, recorded by the evaluators that read no samples)"
)


@settings("pipeline", wording=USE)
class PipelineConfig(Settings):
    """Which backbone, encoder and evaluators a cell uses (set per dataset in its gin file)."""

    backbone: str = setting("mlp", message=ONE_NAME)
    encoder: str = setting("pixel", message=ONE_NAME)
    evaluators: Sequence[str] = setting(
        ("swd",),
        message="{key} takes a list of names, got {value}; e.g. "
        "pipeline.evaluators=[swd] (`bench ls evaluators` lists them)",
    )
    # The split evaluators score against: "test" (the dataset's held-out eval split) or "val"
    # (its validation split), so settings such as cbfm.tau are chosen without touching test.
    eval_on: str = setting(
        "test",
        choices=EVAL_ON,
        what="'test' (held-out split) or 'val' (validation split, for choosing settings)",
    )
    # "prior": stop each cell after the method's offline stage and record only what the evaluators
    # that read no samples (`Evaluator.reads_samples = False`: geometry) measure from the prior; for
    # analyses of the prior alone (claims (a) and (b)) at many seeds without training a flow.
    stop_after: str | None = setting(None, choices=("prior",), what=STOP_AFTER)
