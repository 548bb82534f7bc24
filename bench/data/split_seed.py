"""The data split's seed tied to the generative seed: replication that varies the split too.

By default every generative seed of a dataset sees the same split (drawn once from the dataset's
own data seed, e.g. `digits_lt.seed`): a seed varies what is trained and sampled, never which
images are trained on or scored. `data_split.tie_to_seed = True` draws each cell's splits from its
generative seed instead, so seed k of every method shares one split and the splits differ across
seeds; test-set and training-set sampling then enter the seed-to-seed spread. Only datasets that
draw their split from a seed (`Dataset.draws_split`: digits_lt, synthetic2d, phantom_lt) accept
it; a dataset with an official fixed split refuses it (one line). Off (the default) nothing
changes: no dataset description, config hash or split differs from before the setting existed.
"""

from __future__ import annotations

from bench.config.data import DataSplit
from bench.errors import BenchError


def tie_split_seed(dataset, seed: int, config: DataSplit):
    """`dataset` with its splits drawn from `seed` when `config.tie_to_seed` is on (else as it is);
    a dataset whose split is fixed refuses with one line."""
    if not config.tie_to_seed:
        return dataset
    if not dataset.draws_split:
        raise BenchError(
            f"data_split.tie_to_seed=True: {dataset.name} has a fixed (official) split that cannot "
            "vary with the generative seed; drop the setting for it (it applies to datasets that draw "
            "their split: digits_lt, synthetic2d, phantom_lt)"
        )
    dataset.tied_split_seed = int(seed)
    return dataset
