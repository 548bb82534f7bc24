"""The downstream runs on real plus synthetic data: `aug`, then each remedy on top of it (`aug+<remedy>`).

They depend on the cell's synthetic set, so every cell trains its own. One task per (run,
classifier seed), shared among a launched cell's ranks; a remedy that retrains the head (cRT)
starts from the plain augmented classifier of its seed, in that classifier's task.
"""

from __future__ import annotations

import torch

from bench.classify.fit import plain
from bench.classify.run_trainer import RunTrainer
from bench.classify.runs import AUG, by_run, combined, set_up_remedy, tasks
from bench.dataset import Split
from bench.runtime import distributed


def augmented_runs(
    trainer: RunTrainer, x, y: torch.Tensor, val: Split, seeds: list[int], remedies: tuple[str, ...]
) -> dict:
    """{run name: its runs in seed order} of `aug` and `aug+<remedy>` for each of `remedies`, trained
    on the rows `x` (real then synthetic) labelled `y`, early-stopped on `val`."""
    set_up = {r: set_up_remedy(r, y, trainer.n_classes) for r in remedies}
    heads = {name: remedy for name, remedy in set_up.items() if remedy.retrains_head}

    def run(task: tuple[str, int]) -> dict:
        name, i = task
        if name == AUG:
            result, model = trainer.train(x, y, val, seeds[i], plain(trainer.protocol))
            return {AUG: result} | {
                combined(h): trainer.apply(remedy, x, y, val, seeds[i], model) for h, remedy in heads.items()
            }
        return {combined(name): trainer.train(x, y, val, seeds[i], set_up[name])[0]}

    todo = tasks((AUG, *(r for r in set_up if r not in heads)), len(seeds))
    return by_run([AUG, *map(combined, set_up)], todo, distributed.spread(todo, run), len(seeds))
