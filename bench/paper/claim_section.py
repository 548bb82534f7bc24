"""A section of the claims report (one claim: sentence, rule, verdicts, body) and the datasets a
claim is judged on; shared by bench.paper.claims and the claim modules it assembles
(bench.paper.claim_a, bench.paper.claim_b), so that none of them imports another back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.paper.claim_rules import Verdict, combine
from bench.report.collect import Experiment

CLAIM_DATASETS = ("synthetic2d", "phantom_lt", "digits_lt")


@dataclass
class Section:
    """One claim: its sentence, rule, verdicts (dataset -> Verdict, None: out of scope) and body."""

    key: str
    title: str
    claim: str
    rule: str
    verdicts: dict
    body: list = field(default_factory=list)
    trained: bool = False  # rests on trained networks: unconverged training qualifies it

    @property
    def overall(self) -> Verdict:
        return combine({d: v for d, v in self.verdicts.items() if v is not None})


def datasets_of(exp: Experiment) -> list[str]:
    """The experiment's datasets, then the claims' datasets it never ran."""
    return list(exp.datasets) + [d for d in CLAIM_DATASETS if d not in exp.datasets]
