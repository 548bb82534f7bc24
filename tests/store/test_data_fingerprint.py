"""Caches and records are keyed by the data they were built from, not only by the settings.

The review's case: re-save the label CSV with its rows in another order (same count, same
settings) and the next run reused latents cached in the old order, paired with the new labels.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_bad_inputs import TINY_NIH_RUN, nih_tree

from bench.cli import main
from bench.data.imagefiles import ImageFiles, Preprocess
from bench.dataset import Split
from bench.store.fingerprint import split_fingerprint


def _split(x, y, ids=None) -> Split:
    return Split(x=torch.as_tensor(x, dtype=torch.float32), y=torch.as_tensor(y), ids=ids)


def test_a_reordered_edited_or_relabelled_split_gets_another_fingerprint():
    x, y, ids = np.arange(12.0).reshape(6, 2), [0, 0, 1, 1, 2, 2], list("abcdef")
    base = split_fingerprint(_split(x, y, ids))
    assert split_fingerprint(_split(x.copy(), list(y), list(ids))) == base  # same data, new objects
    order = [5, 4, 3, 2, 1, 0]
    assert split_fingerprint(_split(x[order], np.array(y)[order], [ids[i] for i in order])) != base
    assert split_fingerprint(_split(x, [0, 0, 1, 1, 2, 1], ids)) != base  # one label
    edited = x.copy()
    edited[2, 1] += 1e-6
    assert split_fingerprint(_split(edited, y, ids)) != base  # one value
    assert split_fingerprint(_split(x, y, list("abcdeg"))) != base  # one id


def test_image_files_are_fingerprinted_by_path_size_and_mtime_without_decoding(tmp_path):
    root = nih_tree(tmp_path)
    paths = sorted((root / "images").iterdir())
    files = ImageFiles(paths, [p.name for p in paths], Preprocess(size=8), "nih_lt")
    split = Split(x=files, y=torch.arange(len(paths)) % 2, ids=files.ids)
    base = split_fingerprint(split)
    assert split_fingerprint(Split(x=files.take(list(range(len(paths)))), y=split.y, ids=split.ids)) == base
    stamp = paths[2].stat()
    os.utime(paths[2], ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000_000))
    assert split_fingerprint(split) != base  # the file was rewritten (a new mtime)
    paths[3].write_bytes(b"not an image")  # nothing is decoded: a bad file still fingerprints
    assert isinstance(split_fingerprint(split), str)


def _nih_run(root: Path, res: Path) -> list[str]:
    return [
        "run",
        "datasets=[nih_lt]",
        "pipeline.encoder=pixel",
        "nih_lt.metadata_file=None",
        "nih_lt.size=8",
        f"nih_lt.root={root}",
        *TINY_NIH_RUN,
        f"results_dir={res}",
    ]


@pytest.mark.slow
def test_a_label_file_saved_in_another_order_re_encodes_and_reruns_the_cell(tmp_path, caplog):
    root, res = nih_tree(tmp_path), tmp_path / "res"
    train_csv = root / "nih-cxr-lt_single-label_train.csv"
    shutil.copy(train_csv, root / "nih-cxr-lt_single-label_balanced-test.csv")
    assert main(_nih_run(root, res)) == 0
    cell = res / "cpu_smoke" / "nih_lt" / "fm" / "seed0"  # presets/tiny.gin on real data: a CPU check
    first = json.loads((cell / "record.json").read_text())
    [cache] = (res / "cache" / "latents").iterdir()

    table = pd.read_csv(train_csv)
    table.iloc[::-1].to_csv(train_csv, index=False)  # same rows, same count, reversed
    caplog.clear()
    assert main(_nih_run(root, res)) == 0
    second = json.loads((cell / "record.json").read_text())
    assert second["data"]["train"] != first["data"]["train"]
    assert "train" in second["timings_s"]  # the cell ran again, it was not skipped
    assert "was built from other data" in caplog.text
    assert [p.name for p in (res / "cache" / "latents").iterdir()] == [cache.name]  # replaced in place
    # the cached rows follow the new order: labels and latents (images 10 * k for id k)
    reversed_table = table.iloc[::-1].reset_index(drop=True)
    labels = reversed_table.drop(columns="id").to_numpy().argmax(axis=1)
    assert np.array_equal(np.load(cache / "labels.npy"), labels)
    brightness = np.load(cache / "latents.npy").reshape(len(labels), -1).mean(axis=1)
    expected = [int(name[7]) for name in reversed_table["id"]]
    assert np.array_equal(np.argsort(brightness), np.argsort(expected))

    caplog.clear()
    assert main(_nih_run(root, res)) == 0  # unchanged data: the record is reused as it is
    assert "record exists for this config and data, skipped" in caplog.text
    assert json.loads((cell / "record.json").read_text())["created"] == second["created"]
