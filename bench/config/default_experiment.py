"""The experiment a `bench run` gets when the user names none: chosen from what it runs.

The experiment is also the results folder (`results/<experiment>/`), so it must say what the
results are. The embedded datasets run the quick run on a CPU (`quick`). The real benchmarks
(nih_lt, mimic_lt, ct_rate) bring the paper's evaluation protocol whatever the experiment
(gin/presets/paper_protocol.gin) and by default the one-GPU transformer (presets/flux_1gpu.gin):
their results are `paper_1gpu`, never `quick`. A `--gin_file` of bench's own that changes what a
real-data run is names its experiment instead: the CPU presets presets/cpu_smoke.gin and
presets/tiny.gin -> `cpu_smoke` (a check of the data and the pipeline on a CPU: tiny model, small
networks, short budgets, one seed; experiments/cpu_smoke.gin), presets/flux1.gin (the paper's
FLUX.1 size) -> `paper`, the experiment with that very configuration. A grid mixing embedded and
real datasets is refused in one line: its cells would belong to two experiments with two
protocols; run them as two commands, or name one experiment for all (`experiment=NAME`, whose
folder then holds both).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.errors import BenchError

EMBEDDED = "quick"
REAL = "paper_1gpu"
# the datasets whose own gin file brings the paper's protocol (presets/paper_protocol.gin)
PAPER_PROTOCOL_DATASETS = ("nih_lt", "mimic_lt", "ct_rate")
# bench's own --gin_files that change what a real-data run is, and the experiment they make it
# (bench's CPU presets make a real-data run a CPU check: experiment cpu_smoke, which applies
# presets/cpu_smoke.gin's small networks and short budgets under the user's own bindings)
PRESET_EXPERIMENTS = {
    "presets/cpu_smoke.gin": "cpu_smoke",
    "presets/tiny.gin": "cpu_smoke",
    "presets/flux1.gin": "paper",
}


def default_experiment(datasets: Sequence | None, gin_files: Sequence[str] = (), strict: bool = True) -> str:
    """The experiment of a run with no `experiment=`: `quick` unless every dataset named on the
    command line is a real benchmark, then `paper_1gpu` (or the experiment a bench preset among
    `gin_files` names). A mix is a BenchError when `strict` (bench run / validate), else `quick`."""
    names = [str(d) for d in datasets or []]
    real = [d for d in names if d in PAPER_PROTOCOL_DATASETS]
    if not real:
        return EMBEDDED
    embedded = [d for d in names if d not in PAPER_PROTOCOL_DATASETS]
    if embedded:
        if not strict:
            return EMBEDDED
        raise BenchError(
            f"datasets=[{','.join(names)}] mixes datasets of the quick run ({', '.join(embedded)}: experiment "
            f"{EMBEDDED}) with real benchmarks run under the paper's protocol ({', '.join(real)}: experiment "
            f"{_real_experiment(gin_files)}); run them as two commands, or name one experiment for all "
            "(experiment=NAME)"
        )
    return _real_experiment(gin_files)


def _real_experiment(gin_files: Sequence[str]) -> str:
    """`paper_1gpu`, or the experiment of the last bench preset among the user's gin files."""
    from bench.config.gin_config import gin_dir

    chosen = REAL
    for given in gin_files:
        path = Path(given) if Path(given).is_file() else gin_dir() / given
        for preset, experiment in PRESET_EXPERIMENTS.items():
            if path.is_file() and path.resolve() == (gin_dir() / preset).resolve():
                chosen = experiment
    return chosen
