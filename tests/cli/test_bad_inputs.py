"""The bad-input catalogue: every wrong thing a user can type or leave on disk, and bench's answer.

bench's rule: bad input gets ONE line on stderr, `bench: error: <what is wrong>; <what to do>`,
a non-zero exit (2 for user input) and writes nothing: no record, no half-written folder. Each
case below is (arguments, files it needs, expected exit, a regex the line must match); the regex
holds the part of the message that tells the user what to do.

Cases run `bench.cli.main` in-process (a subprocess per case would cost seconds of torch import
each). stderr is what the console script would print: the captured stream, plus the log records
the CLI's logging setup would show (bench's at INFO, other libraries' at WARNING) and Python
warnings, one line each. Every case runs in a fresh folder (also the working directory), which
is listed before and after to prove nothing was written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from records_fixture import make_experiment

from bench.cli import main
from bench.config.gin_config import gin_dir

# A synthetic2d cell that trains and samples in about a second (used where a case needs a run).
TINY_RUN = (
    "datasets=[synthetic2d]",
    "methods=[fm]",
    "train.steps=2",
    "sample.nfe=1",
    "sample.init_reference=False",
    "sample.keep_paths=0",
    "synthetic2d.n_max=400",
    "synthetic2d.n_test_per_class=10",
    "pipeline.evaluators=[swd]",
)
CELL = Path("quick/synthetic2d/fm/seed0")
# `bench run`'s progress: "[i/n] dataset/method/seed" before each cell, "<cell>: <stage> done in <t>"
# after each stage and "<cell>: finished in <t>; <metric>" after each cell (bench.runtime.progress)
PROGRESS = re.compile(r"^(\[\d+/\d+\] \S+|\S+: \S+ done in .+|\S+: finished in .+|\S+: failed: .+)$")


# -- running the CLI as a user would see it ----------------------------------------------------
@dataclass
class Outcome:
    """Exit status, stdout and the lines a user would see on stderr."""

    code: int
    out: str
    err: list


def run_cli(args: list[str], capsys, caplog) -> Outcome:
    """`bench ARGS` in-process; SystemExit (argparse) becomes its code like in the console script."""
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code
    cap = capsys.readouterr()
    shown = [
        r
        for r in caplog.records
        if r.levelno >= (logging.INFO if r.name.startswith("bench") else logging.WARNING)
    ]
    err = cap.err.splitlines() + [r.getMessage() for r in shown] + [str(w.message) for w in caught]
    return Outcome(code, cap.out, [line for line in err if line.strip()])


def listing(folder: Path) -> dict:
    """Every file under `folder` with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


# -- files the dataset cases need -------------------------------------------------------------
def _png(path: Path, value: int = 100, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8), mode="L").save(path)


def _one_hot(ids: list[str], labels: list[int], classes: list[str]) -> pd.DataFrame:
    onehot = np.eye(len(classes), dtype=int)[labels]
    return pd.concat([pd.DataFrame({"id": ids}), pd.DataFrame(onehot, columns=classes)], axis=1)


def nih_tree(tmp: Path) -> Path:
    """A 6-image NIH-CXR-LT root (train split only, images/ flat); `nih_lt.metadata_file=None`."""
    from bench.datasets.nih_lt import NIHLT

    root = tmp / "nih"
    root.mkdir()
    ids = [f"0000000{k}_000.png" for k in range(6)]
    _one_hot(ids, [0, 0, 0, 1, 1, 2], NIHLT.class_names).to_csv(
        root / "nih-cxr-lt_single-label_train.csv", index=False
    )
    for k, name in enumerate(ids):
        _png(root / "images" / name, 10 * k)
    return root


def _nih_edit(edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = nih_tree(tmp) / "nih-cxr-lt_single-label_train.csv"
        edit(pd.read_csv(path)).to_csv(path, index=False)

    return setup


def _nan_label(table: pd.DataFrame) -> pd.DataFrame:
    table["Effusion"] = table["Effusion"].astype(float)
    table.loc[2, "Effusion"] = np.nan
    return table


def _nih_partial_metadata(tmp: Path) -> None:
    """An NIH tree whose Data_Entry file has rows for 3 of its 6 training images."""
    root = nih_tree(tmp)
    ids = pd.read_csv(root / "nih-cxr-lt_single-label_train.csv")["id"][:3]
    rows = {"Image Index": ids, "Patient ID": [1, 2, 3], "Patient Gender": "F", "Patient Age": 50}
    pd.DataFrame({**rows, "View Position": "PA", "Follow-up #": 0}).to_csv(
        root / "Data_Entry_2017_v2020.csv", index=False
    )


def _nih_image(write: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        write(nih_tree(tmp) / "images" / "00000003_000.png")

    return setup


def _truncated_body(path: Path) -> None:
    """A PNG whose header is intact and whose pixel data stops early (passes the header check)."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    shutil.copy(
        path.parents[1] / "nih-cxr-lt_single-label_train.csv",
        path.parents[1] / "nih-cxr-lt_single-label_balanced-test.csv",
    )


def mimic_tree(tmp: Path, path: str) -> Path:
    """A MIMIC-CXR-LT root whose first label row points at `path` (the others at real files)."""
    from bench.datasets.mimic_lt import MIMICLT

    root = tmp / "mimic"
    rows = []
    for k in range(4):
        rel = path if k == 0 else f"files/p10/p1000000{k}/s5000000{k}/d{k}.jpg"
        rows.append({"subject_id": 10000000 + k, "study_id": 50000000 + k, "dicom_id": f"d{k}", "path": rel})
        _png(root / f"files/p10/p1000000{k}/s5000000{k}/d{k}.jpg")
    table = pd.DataFrame(rows)
    labels = _one_hot(table["dicom_id"].tolist(), [0, 0, 1, 1], MIMICLT.class_names).drop(columns="id")
    pd.concat([table, labels], axis=1).to_csv(root / "mimic-cxr-lt_single-label_train.csv", index=False)
    return root


def ct_manifest_split(tmp: Path, split: str) -> None:
    """A prepared CT-RATE folder whose one manifest row has split `split`."""
    ct_manifest(tmp)
    table = pd.read_csv(tmp / "ct" / "manifest.csv")
    table["split"] = split
    table.to_csv(tmp / "ct" / "manifest.csv", index=False)


def ct_manifest(tmp: Path, columns: list | None = None, path: str = "slices/train/a.png") -> None:
    """A prepared CT-RATE folder whose manifest.csv has `columns` (default: the required ones)."""
    root = tmp / "ct"
    _png(root / "slices/train/a.png")
    row = {"id": "a", "path": path, "label": "No Finding", "subject": "train_1", "split": "train"}
    pd.DataFrame([row])[columns or list(row)].to_csv(root / "manifest.csv", index=False)


def medmnist_npz(tmp: Path, **changes) -> None:
    """A 2-class pneumoniamnist.npz, with arrays replaced by `changes`."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).astype(np.uint8)[:, None]
    arrays.update(changes)
    (tmp / "med").mkdir()
    np.savez(tmp / "med" / "pneumoniamnist.npz", **{k: v for k, v in arrays.items() if v is not None})


def _nan_images() -> np.ndarray:
    images = np.random.default_rng(0).random((12, 28, 28))
    images[3, 4, 5] = np.nan
    return images


def _write(rel: str, text) -> Callable[[Path], None]:
    """Setup writing `text` (str or bytes) to tmp/rel."""

    def setup(tmp: Path) -> None:
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)

    return setup


def _bomb_png(path: Path) -> None:
    """A 100-byte PNG declaring 20000 x 20000 pixels (a decompression bomb): header only."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _evil_module(tmp: Path) -> None:
    """evilmod.py in the case folder: importing it would write a file (the listing would show it)."""
    (tmp / "evilmod.py").write_text("from pathlib import Path\nPath('pwned').write_text('x')\n")


def _gin_and_evil(name: str, text: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        _evil_module(tmp)
        (tmp / name).write_text(text)

    return setup


def _one_record(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    """A one-cell stored experiment `{tmp}/exp` whose record is changed by `edit`."""

    def setup(tmp: Path) -> None:
        folder = make_experiment(tmp, methods=("fm",), seeds=(0,))
        path = folder / "phantom_lt" / "fm" / "seed0" / "record.json"
        record = json.loads(path.read_text())
        edit(record)
        path.write_text(json.dumps(record))

    return setup


def _experiment(tmp: Path) -> None:
    make_experiment(tmp, methods=("fm",), seeds=(0,))


# -- the catalogue ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One bad input: `bench ARGS` (with {tmp} for the case folder) after `setup(tmp)`."""

    id: str
    args: tuple
    message: str  # regex for the stderr line after "bench: error: "
    code: int = 2
    setup: Callable[[Path], None] | None = None
    xfail: str = ""  # why bench does not pass yet (strict: passing it fails the test)
    leaves: tuple = ()  # files (relative to the case folder) the command may write before it fails


NIH = (
    "validate",
    "datasets=[nih_lt]",
    "pipeline.encoder=pixel",
    "nih_lt.metadata_file=None",
    "nih_lt.size=8",
    "nih_lt.root={tmp}/nih",
)
MIMIC = (
    "validate",
    "datasets=[mimic_lt]",
    "pipeline.encoder=pixel",
    "mimic_lt.metadata_file=None",
    "mimic_lt.size=8",
    "mimic_lt.root={tmp}/mimic",
)
CT = ("validate", "datasets=[ct_rate]", "pipeline.encoder=pixel", "ct_rate.size=8", "ct_rate.root={tmp}/ct")
TINY_NIH_RUN = (
    "methods=[fm]",
    "train.steps=2",
    "sample.nfe=1",
    "sample.init_reference=False",
    "pipeline.evaluators=[swd]",
    "--gin_file",
    str(gin_dir() / "presets" / "tiny.gin"),
)
MED = ("validate", "datasets=[medmnist]", "medmnist.flag=pneumoniamnist", "medmnist.root={tmp}/med")

CASES = [
    # command line and names
    Case("no-command", (), r"required: command \(see `bench --help`\)"),
    Case("unknown-command", ("trian",), r"invalid choice: 'trian' \(choose from .*run"),
    Case("unknown-flag", ("validate", "--gin-file", "x.gin"), r"unrecognized arguments: --gin-file"),
    Case("ls-unknown-kind", ("ls", "method"), r"invalid choice: 'method' \(choose from 'methods'"),
    Case(
        "new-unknown-kind", ("new", "metod", "toy"), r"unknown plugin kind 'metod'; did you mean 'method'\?"
    ),
    Case(
        "new-bad-name", ("new", "method", "my-plugin"), r"plugin name 'my-plugin' is not a Python identifier"
    ),
    Case("new-name-taken", ("new", "method", "fm"), r"'fm' is already a registered method \(medaug-bench"),
    Case(
        "new-folder-exists",
        ("new", "method", "toy"),
        r"toy already exists; choose another NAME or --dir",
        setup=lambda tmp: (tmp / "toy").mkdir(),
    ),
    Case(
        "features-weights-missing",
        (
            "validate",
            "datasets=[digits_lt]",
            "features.network=inception_v3",
            "features.weights={tmp}/none.safetensors",
        ),
        r"features.weights=.* does not exist; convert the published weights",
    ),
    Case(
        "features-weights-pickle",
        (
            "validate",
            "datasets=[digits_lt]",
            "features.network=xrv_densenet121",
            "features.weights={tmp}/xrv.pt",
        ),
        r"not a \.safetensors file \(bench reads no pickle\)",
        setup=_write("xrv.pt", b"PK\x03\x04 a torch.save zip"),
    ),
    Case(
        "tracker-unknown",
        ("validate", "datasets=[synthetic2d]", "train.log_with=comet"),
        r"train.log_with='comet': use None or any of tensorboard, wandb, mlflow",
    ),
    Case(
        "unknown-method",
        ("validate", "methods=[fmm]"),
        r"unknown method 'fmm'; did you mean 'fm'\?.*see `bench ls`",
    ),
    Case(
        "unknown-dataset", ("validate", "datasets=[nih]"), r"unknown dataset 'nih'; did you mean 'nih_lt'\?"
    ),
    Case(
        "unknown-evaluator",
        ("validate", "pipeline.evaluators=[fidd]"),
        r"unknown evaluator 'fidd'; did you mean 'fid'\?",
    ),
    Case(
        "unknown-backbone",
        ("validate", "pipeline.backbone=flx"),
        r"unknown backbone 'flx'; did you mean 'flux'\?",
    ),
    Case(
        "unknown-encoder",
        ("validate", "pipeline.encoder=vae"),
        r"unknown encoder 'vae'; did you mean .*\(known: flux_vae, pixel",
    ),
    Case(
        "unknown-experiment",
        ("validate", "experiment=papr"),
        r"unknown experiment 'papr'; did you mean 'paper'\? \(known: .*paper",
    ),
    Case(
        "experiment-path-escape",
        ("validate", "experiment=../base"),
        r"experiment '../base' must be a name, not a path \(known: .*quick",
    ),
    Case(
        "evaluators-not-a-list",
        ("validate", "pipeline.evaluators=swd"),
        r"pipeline\.evaluators takes a list of names, got 'swd'; e\.g\. pipeline\.evaluators=\[swd\]",
    ),
    Case(
        "backbone-a-list",
        ("validate", "pipeline.backbone=[mlp]"),
        r"pipeline\.backbone takes one name, got \['mlp'\]; e\.g\. pipeline\.backbone=mlp",
    ),
    # malformed overrides
    Case("seeds-word", ("validate", "seeds=[a]"), r"seeds must be non-negative integers, got 'a'"),
    Case("seeds-float", ("validate", "seeds=[1.5]"), r"seeds must be non-negative integers, got 1\.5"),
    Case("empty-value", ("validate", "methods="), r"malformed override 'methods=': empty value.*e\.g\."),
    Case("empty-list", ("validate", "methods=[]"), r"empty grid: .*at least one value"),
    Case("no-key", ("validate", "=x"), r"malformed override '=x'.*e\.g\. "),
    Case(
        "no-equals",
        ("validate", "methods"),
        r"malformed override 'methods': expected key=value, e\.g\. methods=\[fm,cbfm\]",
    ),
    Case("unbalanced", ("validate", "datasets=[synthetic2d"), r"unbalanced brackets"),
    Case("list-as-results-dir", ("validate", "results_dir=[a,b]"), r"results_dir.*one folder"),
    Case(
        "bare-key", ("validate", "steps=3"), r"neither a grid axis .* nor a gin binding `scope\.param=value`"
    ),
    # gin: syntax, names, types, ranges
    Case(
        "gin-file-missing",
        ("validate", "--gin_file", "missing.gin"),
        r"--gin_file missing.gin: no such file \(bench's own: presets/ .*cpu_smoke.*; experiments/ .*quick",
    ),
    Case(
        "gin-file-near-miss",
        ("validate", "--gin_file", "presets/cpu_smok.gin"),
        r"--gin_file presets/cpu_smok.gin: no such file; did you mean 'presets/cpu_smoke\.gin'\? \(bench's own: "
        r"presets/ .*flux_1gpu.*; experiments/ .*paper_1gpu",
    ),
    Case(
        "gin-file-folder-forgotten",
        ("validate", "--gin_file", "flux_1gpu.gin"),
        r"--gin_file flux_1gpu.gin: no such file; did you mean 'presets/flux_1gpu\.gin'\?",
    ),
    Case(
        "gin-file-syntax",
        ("validate", "--gin_file", "{tmp}/bad.gin"),
        r"bad gin configuration: Unable to parse value\. \(bad\.gin, line 2\)",
        setup=_write("bad.gin", "train.lr = 1e-3\ntrain.steps = \n"),
    ),
    Case(
        "gin-file-binary",
        ("validate", "--gin_file", "{tmp}/bin.gin"),
        r"--gin_file .*bin\.gin: not a readable UTF-8 text file \(UnicodeDecodeError\); pass a \.gin file",
        setup=_write("bin.gin", b"\x00\xff\xfe\x01"),
    ),
    Case(
        "gin-file-include-missing",
        ("validate", "--gin_file", "{tmp}/inc.gin"),
        r"bad gin configuration: Unable to open file: nope\.gin; an include is read from the current folder or from "
        r"\S+gin$",
        setup=_write("inc.gin", "include 'nope.gin'\n"),
    ),
    Case(
        "gin-param-syntax",
        ("validate", "--gin_param", "train.steps = (("),
        r"bad gin configuration: EOF in multi-line statement \(line \d\); check the brackets and quotes",
    ),
    Case(
        "gin-unknown-configurable",
        ("validate", "trian.steps=3"),
        r"No configurable matching 'trian'; did you mean 'train'\?",
    ),
    Case(
        "gin-unknown-parameter",
        ("validate", "train.stepz=3"),
        r"doesn't have a parameter named 'stepz'; did you mean 'steps'\?",
    ),
    Case(
        "gin-unknown-reference",
        ("validate", "train.steps=@nope"),
        r"bad gin configuration: No configurable matching reference '@nope'",
    ),
    Case(
        "dataset-setting-type",
        ("validate", "synthetic2d.n_max=abc"),
        r"synthetic2d\.n_max must be an integer >= 1, got 'abc'",
    ),
    Case(
        "dataset-too-small",
        ("validate", "synthetic2d.n_max=50"),
        r"synthetic2d: .*class6 1 train sample\(s\), fewer than its 3 subclasses; raise synthetic2d\.n_max or lower",
    ),
    Case(
        "digits-setting-type",
        ("validate", "datasets=[digits_lt]", "digits_lt.imbalance_ratio=x"),
        r"digits_lt\.imbalance_ratio must be a number >= 1, got 'x'",
    ),
    Case(
        "evaluator-setting-range",
        ("validate", "pipeline.evaluators=[knn_purity]", "knn_purity.n_draws=0"),
        r"knn_purity\.n_draws must be an integer >= 1, got 0",
    ),
    Case(
        "evaluator-setting-type",
        ("validate", "swd.n_projections=abc"),
        r"swd\.n_projections must be an integer >= 1, got 'abc'",
    ),
    Case(
        "evaluator-list-setting",
        ("validate", "pipeline.evaluators=[confounder]", "confounder.columns=sex"),
        r"confounder\.columns must be None or a list .*e\.g\. confounder\.columns=\[sex,view\]",
    ),
    Case("method-setting-type", ("validate", "methods=[cbfm]", "cbfm.tau=x"), r"cbfm\.tau .*'x'"),
    Case("train-steps-negative", ("validate", "train.steps=-1"), r"train\.steps.*-1"),
    Case("train-steps-word", ("validate", "train.steps=abc"), r"train\.steps.*'abc'"),
    Case("train-lr-nan", ("validate", "train.lr=nan"), r"train\.lr.*nan"),
    Case(
        "train-mixed-precision",
        ("validate", "train.mixed_precision=fp64"),
        r"train\.mixed_precision.*'fp64'.*(no|fp16|bf16)",
    ),
    Case(
        "train-sharding-unknown",
        ("validate", "train.sharding=zero3"),
        r"train\.sharding='zero3': use one of none, fsdp",
    ),
    Case(
        "train-sharding-fp16",
        ("validate", "train.sharding=fsdp", "train.mixed_precision=fp16"),
        r"train\.sharding='fsdp' trains in bf16, not fp16: set train\.mixed_precision='bf16'",
    ),
    Case(
        "activation-checkpointing-mlp",
        ("validate", "datasets=[synthetic2d]", "methods=[fm]", "train.activation_checkpointing=True"),
        r"train\.activation_checkpointing=True: the MLPBackbone backbone cannot recompute its activations",
    ),
    Case(
        "compile-mlp",
        ("validate", "datasets=[synthetic2d]", "methods=[fm]", "train.compile=True"),
        r"train\.compile=True: the MLPBackbone backbone has no repeated blocks to compile",
    ),
    Case("sync-every-zero", ("validate", "train.sync_every=0"), r"train\.sync_every=0: use an integer >= 1"),
    Case("sample-nfe-zero", ("validate", "sample.nfe=0"), r"sample\.nfe.*0"),
    Case(
        "heun-odd-nfe",
        ("validate", "sample.solver=heun", "sample.nfe=3"),
        r"sample\.nfe=3: the heun solver needs an even number",
    ),
    Case(
        "sample-solver",
        ("validate", "sample.solver=rk9"),
        r"unknown solver 'rk9' \(known: euler, heun\); set sample\.solver",
    ),
    Case(
        "sample-n-per-class",
        ("validate", "sample.n_per_class=-3"),
        r"sample\.n_per_class=-3: use None .*'targets'",
    ),
    # datasets on disk
    Case(
        "nih-root-unset",
        ("validate", "datasets=[nih_lt]", "pipeline.encoder=pixel"),
        r"1 setting\(s\) not set for nih_lt/fm/seed0: nih_lt\.root=PATH \(your local copy; expected layout: ",
    ),
    Case(
        "nih-root-and-vae-unset",
        ("validate", "methods=[optprior,cbfm]", "datasets=[nih_lt]"),
        r"2 setting\(s\) not set for nih_lt/optprior/seed0: nih_lt\.root=PATH .*; flux_vae\.path=DIR \(the "
        r"FLUX\.1-dev `vae` folder.*; where each comes from: docs/datasets\.md#where-the-files-come-from",
    ),
    Case(
        "nih-root-missing",
        ("validate", "datasets=[nih_lt]", "pipeline.encoder=pixel", "nih_lt.root={tmp}/nowhere"),
        r"nih_lt\.root=.*nowhere is not a directory \(expected layout: .*\); fix nih_lt\.root",
    ),
    Case(
        "nih-no-label-file",
        NIH,
        r"nih_lt: no nih-cxr-lt_single-label_train\.csv .*set nih_lt\.root or nih_lt\.labels_dir",
        setup=lambda tmp: (tmp / "nih").mkdir(),
    ),
    Case(
        "nih-wrong-columns",
        NIH,
        r"lacks required column\(s\) \['Effusion'\].*right file",
        setup=_nih_edit(lambda t: t.drop(columns="Effusion")),
    ),
    Case(
        "nih-nan-label",
        NIH,
        r"1 row\(s\) of .* not single-label: 00000002_000\.png \(label not 0/1\); .*on_bad_row='skip'",
        setup=_nih_edit(_nan_label),
    ),
    Case(
        "nih-duplicate-id",
        NIH,
        r"lists 1 id\(s\) more than once .*remove the duplicates",
        setup=_nih_edit(lambda t: pd.concat([t, t.iloc[:1]])),
    ),
    Case(
        "nih-corrupt-image",
        NIH,
        r"1 image\(s\) of split 'train' missing or unreadable .*00000003_000\.png .*on_bad_image='skip'",
        setup=_nih_image(lambda p: p.write_bytes(b"not a png")),
    ),
    Case(
        "nih-missing-image",
        NIH,
        r"00000003_000\.png \(missing\).*on_bad_image='skip'",
        setup=_nih_image(lambda p: p.unlink()),
    ),
    Case(
        "nih-corrupt-csv",
        NIH,
        r"cannot read .*\.csv as CSV .*replace it with an intact copy",
        setup=_write("nih/nih-cxr-lt_single-label_train.csv", b"\x1f\x8b\x08\x00garbage"),
    ),
    Case(
        "nih-truncated-image-decode",
        (*NIH, "nih_lt.check_images=decode"),
        r"00000003_000\.png \(unreadable \(OSError\)\); .*on_bad_image='skip'",
        setup=_nih_image(_truncated_body),
    ),
    Case(
        "nih-truncated-image-run",
        ("run", *NIH[1:], *TINY_NIH_RUN),
        r"cell nih_lt/fm/seed0 failed: nih_lt: cannot read image 00000003_000\.png .*check_images='decode' and "
        r"nih_lt\.on_bad_image='skip' .*\(details: \S+failure\.json",
        code=1,
        setup=_nih_image(_truncated_body),
        leaves=(
            "res/cpu_smoke/grid.json",
            "res/cpu_smoke/.grid.lock",
            "res/cpu_smoke/nih_lt/fm/seed0/failure.json",
        ),
    ),
    Case("nih-no-eval-split", NIH, r"no nih-cxr-lt_single-label_balanced-test\.csv", setup=nih_tree),
    Case(
        "nih-metadata-missing",
        tuple(a for a in NIH if a != "nih_lt.metadata_file=None"),
        r"nih_lt: missing metadata file .*Data_Entry_2017_v2020\.csv .*or set nih_lt\.metadata_file=None to run "
        r"without it",
        setup=nih_tree,
    ),
    Case(
        "nih-metadata-rows-missing",
        tuple(a for a in NIH if a != "nih_lt.metadata_file=None"),
        r"nih_lt: 3 image\(s\) of split 'train' have no row in Data_Entry_2017_v2020\.csv .*"
        r"nih_lt\.on_bad_row='skip', or set nih_lt\.metadata_file=None to run without it",
        setup=_nih_partial_metadata,
    ),
    Case(
        "nih-bad-setting",
        (*NIH, "nih_lt.on_bad_row=ignore"),
        r"nih_lt\.on_bad_row='ignore' is not one of \['error', 'skip'\]",
        setup=nih_tree,
    ),
    Case(
        "mimic-path-escapes",
        MIMIC,
        r"mimic_lt: path '\.\./\.\./etc/passwd' in a label file escapes the dataset root",
        setup=lambda tmp: mimic_tree(tmp, "../../etc/passwd"),
    ),
    Case(
        "mimic-absolute-path",
        MIMIC,
        r"mimic_lt: path '/etc/passwd' in a label file escapes the dataset root",
        setup=lambda tmp: mimic_tree(tmp, "/etc/passwd"),
    ),
    Case(
        "ct-no-manifest",
        CT,
        r"has no manifest\.csv; write it with `bench prepare ct_rate",
        setup=lambda tmp: (tmp / "ct").mkdir(),
    ),
    Case(
        "ct-wrong-columns",
        CT,
        r"manifest\.csv lacks required column\(s\) \['subject'\]",
        setup=lambda tmp: ct_manifest(tmp, ["id", "path", "label", "split"]),
    ),
    Case(
        "ct-path-escapes",
        CT,
        r"ct_rate: path '\.\./outside\.png' in a label file escapes the dataset root",
        setup=lambda tmp: ct_manifest(tmp, path="../outside.png"),
    ),
    Case(
        "medmnist-no-file",
        MED,
        r"no pneumoniamnist\.npz in .*fix medmnist\.root",
        setup=lambda tmp: (tmp / "med").mkdir(),
    ),
    Case(
        "medmnist-missing-key",
        MED,
        r"medmnist: .*test_labels",
        setup=lambda tmp: medmnist_npz(tmp, test_labels=None),
    ),
    Case(
        "medmnist-nan-images",
        MED,
        r"medmnist: .*uint8",
        setup=lambda tmp: medmnist_npz(tmp, train_images=_nan_images()),
    ),
    # other subcommands
    Case(
        "stats-no-datasets",
        ("data", "stats"),
        r"bench data stats takes datasets=\[name,\.\.\.\].*e\.g\. bench data stats",
    ),
    Case(
        "stats-missing-root",
        ("data", "stats", "datasets=[nih_lt]", "nih_lt.root={tmp}/nowhere"),
        r"is not a directory.*fix nih_lt\.root",
    ),
    Case(
        "prepare-missing-root",
        ("prepare", "ct_rate", "--root", "{tmp}/nowhere", "--out", "{tmp}/out"),
        r"--root .*nowhere is not a directory \(expected layout: <root>/dataset/",
    ),
    Case(
        "prepare-bad-size",
        ("prepare", "ct_rate", "--root", "{tmp}", "--out", "{tmp}/out", "--size", "x"),
        r"argument --size: invalid int value: 'x'",
    ),
    Case(
        "tables-no-folder",
        ("tables", "{tmp}/nowhere"),
        r"no such results folder; pass an experiment folder such as results/quick",
    ),
    Case(
        "tables-no-records",
        ("tables", "{tmp}/empty"),
        r"holds no bench records; pass an experiment folder",
        setup=lambda tmp: (tmp / "empty" / "stray").mkdir(parents=True),
    ),
    Case(
        "tables-bad-alpha", ("tables", "{tmp}", "--alpha", "2"), r"--alpha must be between 0 and 1, got 2\.0"
    ),
    Case(
        "tables-corrupt-grid",
        ("tables", "{tmp}/quick"),
        r"grid\.json is unreadable .*rerun `bench run` for this experiment: it rebuilds the file",
        setup=_write("quick/grid.json", '{"experiment": "quick", "meth'),
    ),
    Case(
        "tables-truncated-record",
        ("tables", "{tmp}/quick"),
        r"no cell has a usable record .*record\.json is unreadable .*`bench run`",
        setup=_write("quick/synthetic2d/fm/seed0/record.json", '{"status": "ok", "metr'),
    ),
    Case("report-no-folder", ("report", "{tmp}/nowhere"), r"no such results folder"),
    # code in configuration files: refused before gin sees it (evilmod.py would write 'pwned')
    Case(
        "gin-file-import",
        ("validate", "--gin_file", "{tmp}/evil.gin"),
        r"--gin_file \S+evil\.gin, line 2: `import evilmod` refused: a configuration may not import code",
        setup=_gin_and_evil("evil.gin", "train.lr = 1e-3\nimport evilmod\n"),
    ),
    Case(
        "gin-file-from-import",
        ("validate", "--gin_file", "{tmp}/evil.gin"),
        r"`from evilmod import x` refused: a configuration may not import code",
        setup=_gin_and_evil("evil.gin", "from evilmod import x\n"),
    ),
    Case(
        "gin-file-import-as",
        ("validate", "--gin_file", "{tmp}/evil.gin"),
        r"`import evilmod as e` refused",
        setup=_gin_and_evil("evil.gin", "import evilmod as e\n"),
    ),
    Case(
        "gin-param-import",
        ("validate", "--gin_param", "import evilmod"),
        r"binding 'import evilmod': `import evilmod` refused: .*entry point",
        setup=_evil_module,
    ),
    Case("gin-param-import-this", ("validate", "--gin_param", "import this"), r"`import this` refused"),
    Case(
        "gin-include-import",
        ("validate", "--gin_file", "{tmp}/outer.gin"),
        r"--gin_file \S*inner\.gin, line 1: `import evilmod` refused",
        setup=lambda tmp: (
            _gin_and_evil("inner.gin", "import evilmod\n")(tmp),
            (tmp / "outer.gin").write_text(f"include '{tmp / 'inner.gin'}'\n"),
        ),
    ),
    Case(
        "gin-file-dev-zero",
        ("validate", "--gin_file", "/dev/zero"),
        r"--gin_file /dev/zero: not a regular file; pass a \.gin file",
    ),
    Case("gin-file-a-folder", ("validate", "--gin_file", "{tmp}"), r"not a regular file; pass a \.gin file"),
    # scopes name datasets
    Case(
        "unknown-scope-binding",
        ("validate", "foo/train.steps=500"),
        r"binding 'foo/train\.steps = 500': unknown scope 'foo': a scope names one dataset",
    ),
    Case(
        "scope-typo",
        ("validate", "phantom_l/train.steps=500"),
        r"unknown scope 'phantom_l'.*did you mean 'phantom_lt'\?",
    ),
    Case(
        "nested-scope-override",
        ("validate", "phantom_lt/foo/train.steps=500"),
        r"'phantom_lt/foo/train\.steps' is not a valid key",
    ),
    Case(
        "nested-scope",
        ("validate", "--gin_param", "phantom_lt/foo/train.steps = 5"),
        r"unknown scope 'phantom_lt/foo'",
    ),
    Case(
        "unknown-scope-gin-param", ("validate", "--gin_param", "foo/train.steps = 5"), r"unknown scope 'foo'"
    ),
    Case(
        "unknown-scope-file",
        ("validate", "--gin_file", "{tmp}/s.gin"),
        r"--gin_file \S+s\.gin, line 1: unknown scope 'synthetic'.*did you mean 'synthetic2d'",
        setup=_write("s.gin", "synthetic/train.steps = 5\n"),
    ),
    # values that are not plain literals
    # (the {tmp} formatting of arguments halves braces: "{{{{1}}}}" is typed as {{1}})
    Case(
        "set-literal",
        ("validate", "train.steps={{{{1}}}}"),
        r"malformed value '\{\{1\}\}': not a plain literal",
    ),
    Case("set-value", ("validate", "train.steps={{1}}"), r"malformed value '\{1\}': a set; give a list"),
    Case(
        "deep-brackets",
        ("validate", "train.steps=" + "[" * 3000 + "]" * 3000),
        r"malformed value: lists nested more than 16 deep",
    ),
    Case(
        "unary-minus-flood",
        ("validate", "train.steps=" + "-" * 200000 + "1"),
        r"malformed value '-{37}\.\.\.': not a plain literal",
    ),
    Case("float-overflow", ("validate", "train.lr=1e999"), r"malformed value '1e999': overflows to infinity"),
    Case(
        "gin-param-deep-brackets",
        ("validate", "--gin_param", "train.steps = " + "(" * 3000 + ")" * 3000),
        r"bad gin configuration: a value nested too deep to parse; check the brackets",
    ),
    # validate checks what run would reject
    Case("seed-overflow", ("validate", "seeds=[18446744073709551616]"), r"seeds must be below 2\*\*31"),
    Case("executor-unknown", ("validate", "executor=k8s"), r"unknown executor 'k8s' \(known: .*inline"),
    Case(
        "executor-parallelism-zero",
        ("validate", "executor=local", "executor.array_parallelism=0"),
        r"executor\.array_parallelism.*0",
    ),
    Case(
        "executor-slurm-extra-list",
        ("validate", "executor=local", "executor.slurm_extra=[1,2]"),
        r"executor\.slurm_extra",
    ),
    Case(
        "flux1-on-one-80gb-gpu",
        (
            "validate",
            "datasets=[phantom_lt]",
            "methods=[fm]",
            "--gin_file",
            str(gin_dir() / "presets" / "flux1.gin"),
            "executor.device_memory_gib=80",
        ),
        r"phantom_lt/fm/seed0 needs ~\d+ GiB per device to train \(11,890\.9 M parameters; .*more than the 80 GiB "
        r"of executor\.device_memory_gib; shard it over \d+ or more such devices \(train\.sharding='fsdp'.*"
        r"use a smaller backbone preset \(--gin_file presets/flux_1gpu\.gin",
    ),
    Case(
        "micro-batches-not-shared",
        (
            "validate",
            "datasets=[synthetic2d]",
            "methods=[fm]",
            "executor=local",
            "executor.tasks_per_node=3",
            "train.micro_batches=2",
        ),
        r"synthetic2d/fm/seed0: train\.micro_batches=2 cannot be shared by the 3 processes it will run on; "
        r"set train\.micro_batches to a multiple of 3",
    ),
    Case(
        "nodes-without-slurm",
        ("validate", "executor=local", "executor.nodes=2"),
        r"executor\.nodes=2 applies to executor=slurm .*drop executor\.nodes",
    ),
    Case(
        "nodes-zero",
        ("validate", "executor=local", "executor.nodes=0"),
        r"executor\.nodes must be a positive integer, got 0",
    ),
    Case(
        "cell-larger-than-the-device",
        ("validate", "datasets=[phantom_lt]", "methods=[fm]", "executor.device_memory_gib=0.01"),
        r"needs ~0\.\d\d GiB per device .*more than the 0\.01 GiB of executor\.device_memory_gib",
    ),
    Case(
        "one-gpu-preset-larger-than-the-device",  # the preset in use is not suggested again
        (
            "validate",
            "datasets=[phantom_lt]",
            "methods=[fm]",
            "--gin_file",
            "presets/flux_1gpu.gin",
            "executor.device_memory_gib=16",
            "budget.trace_inference=False",
        ),
        r"^(?!.*--gin_file presets/flux_1gpu).*needs ~34 GiB per device .*more than the 16 GiB of "
        r"executor\.device_memory_gib; shard it over \d+ or more such devices \(train\.sharding='fsdp'.*"
        r"or use a smaller backbone than this one \(fewer flux\.num_layers",
    ),
    Case(
        "image-size-huge",
        (*NIH[:-2], "nih_lt.size=200000", NIH[-1]),
        r"nih_lt\.size=200000 would need 149\.0 GiB per image; use at most 8192",
        setup=nih_tree,
    ),
    Case(
        "phantom-size-huge",
        ("validate", "datasets=[phantom_lt]", "phantom_lt.size=100000"),
        r"phantom_lt\.size must be an even integer in \[16, 1024\]",
    ),
    Case(
        "nih-decompression-bomb",
        NIH,
        r"00000003_000\.png \(unreadable \(DecompressionBombError\)\)",
        setup=_nih_image(_bomb_png),
    ),
    Case(
        "ct-unknown-split",
        CT,
        r"manifest\.csv has rows of split 'Valid' \(1 row\(s\)\); its split column takes "
        r"'train' or 'valid'",
        setup=lambda tmp: ct_manifest_split(tmp, "Valid"),
    ),
    # outputs that cannot be written
    Case(
        "tables-out-a-file",
        ("tables", "{tmp}/exp", "--out", "{tmp}/afile"),
        r"--out \S+afile is a file, not a folder",
        setup=lambda tmp: (_experiment(tmp), _write("afile", "x")(tmp)),
    ),
    Case(
        "report-out-dev-null",
        ("report", "{tmp}/exp", "--out", "/dev/null"),
        r"--out /dev/null is a file, not a folder",
        setup=_experiment,
    ),
    Case(
        "report-out-under-a-file",
        ("report", "{tmp}/exp", "--out", "{tmp}/afile/sub"),
        r"afile is a file, not a folder",
        setup=lambda tmp: (_experiment(tmp), _write("afile", "x")(tmp)),
    ),
    Case(
        "prepare-out-a-file",
        ("prepare", "ct_rate", "--root", "{tmp}", "--out", "{tmp}/afile"),
        r"--out \S+afile is a file, not a folder",
        setup=_write("afile", "x"),
    ),
    Case(
        "claims-out-dev-null",
        ("claims", "{tmp}/exp", "--out", "/dev/null"),
        r"--out /dev/null is not a regular file",
        setup=_experiment,
    ),
    Case(
        "claims-out-a-folder",
        ("claims", "{tmp}/exp", "--out", "{tmp}"),
        r"is a folder; pass a file name",
        setup=_experiment,
    ),
    Case(
        "perf-out-dev-null",
        ("bench", "--only", "fid", "--out", "/dev/null"),
        r"--out /dev/null is not a regular file",
    ),
    Case("perf-only-commas", ("bench", "--only", ",,,"), r"--only ',,,' names no case; .*known: .*quick_run"),
    Case(
        "tables-baseline-unknown",
        ("tables", "{tmp}/exp", "--baseline", "nosuch"),
        r"--baseline 'nosuch' is not a method of \S+exp \(methods: fm\)",
        setup=_experiment,
    ),
    # stored records of the wrong shape
    Case(
        "tables-metrics-a-string",
        ("tables", "{tmp}/exp"),
        r"seed0/record\.json: field `metrics` is a string \('abc'\), expected an object; .*record schema",
        setup=_one_record(lambda r: r.update(metrics="abc")),
    ),
    Case(
        "tables-metrics-a-list",
        ("tables", "{tmp}/exp"),
        r"seed0/record\.json: field `metrics` is a list, expected an object; .*record schema",
        setup=_one_record(lambda r: r.update(metrics=[1, 2])),
    ),
    Case(
        "tables-created-a-number",
        ("tables", "{tmp}/exp"),
        r"seed0/record\.json: field `created` is an integer \(5\), expected a string; .*record schema",
        setup=_one_record(lambda r: r.update(created=5)),
    ),
    Case(
        "tables-metric-a-string",
        ("tables", "{tmp}/exp"),
        r"seed0/record\.json: field `metrics\.fid/tail` is a string \('low'\), expected a number; .*record schema",
        setup=_one_record(lambda r: r["metrics"].update({"fid/tail": "low"})),
    ),
    Case(
        "tables-record-a-list",
        ("tables", "{tmp}/exp"),
        r"record\.json is unreadable",
        setup=lambda tmp: (_experiment(tmp), (tmp / "exp/phantom_lt/fm/seed0/record.json").write_text("[1]")),
    ),
    # bench run: what validation cannot see
    Case(
        "run-results-dir-under-a-file",
        ("run", *TINY_RUN, "results_dir={tmp}/afile/sub"),
        r"cannot write .*afile/sub/quick/grid\.json \(Not a directory\); set results_dir=DIR to a writable folder",
        setup=_write("afile", "not a folder"),
    ),
    Case("run-steps-negative", ("run", *TINY_RUN, "train.steps=-1"), r"train\.steps.*-1"),
]


def _params():
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        yield pytest.param(case, id=case.id, marks=marks)


def prepare(case: Case, tmp: Path) -> list[str]:
    """Set up the case's files; its arguments with {tmp} filled in and a results_dir under tmp."""
    if case.setup:
        case.setup(tmp)
    args = [a.format(tmp=tmp) for a in case.args]
    if args[:1] in (["run"], ["validate"]) and not any(a.startswith("results_dir=") for a in args):
        args.append(f"results_dir={tmp / 'res'}")
    if args[:1] == ["validate"] and not any(a.startswith("datasets=") for a in args):
        args.append("datasets=[synthetic2d]")  # the quick grid would also build phantom_lt (seconds)
    return args


def check(case: Case, code: int, err: list) -> None:
    """The exit status, one `bench: error:` line, and the case's message in it."""
    err = [line for line in err if not PROGRESS.match(line)]
    assert code == case.code, (code, err)
    assert len(err) == 1, err
    assert err[0].startswith("bench: error: "), err[0]
    assert re.search(case.message, err[0]), f"{err[0]!r} does not match {case.message!r}"


@pytest.mark.parametrize("case", list(_params()))
@pytest.mark.slow
def test_bad_input_is_one_line_a_nonzero_exit_and_writes_nothing(case, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.chdir(tmp_path)  # a default results/ would land here and show in the listing
    args = prepare(case, tmp_path)
    before = listing(tmp_path)
    result = run_cli(args, capsys, caplog)
    check(case, result.code, result.err)
    after = listing(tmp_path)
    assert {k: v for k, v in after.items() if k not in case.leaves} == before
    if os.environ.get(CATALOGUE_OUT):  # tests/catalogue_doc.py turns these lines into docs/bad-inputs.md
        line = [e for e in result.err if not PROGRESS.match(e)][0].replace(str(tmp_path), "{tmp}")
        line = line.replace(str(gin_dir()), "<bench>/gin")
        with open(os.environ[CATALOGUE_OUT], "a", encoding="utf-8") as out:
            args = [a.replace(str(gin_dir()), "<bench>/gin") for a in case.args]
            out.write(json.dumps({"id": case.id, "args": args, "code": result.code, "line": line}) + "\n")


CATALOGUE_OUT = "BENCH_CATALOGUE_OUT"
DOC = Path(__file__).resolve().parents[2] / "docs" / "bad-inputs.md"


def documented() -> dict:
    """case id -> the message docs/bad-inputs.md gives for it (its table rows)."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if (
            line.startswith("| `")
            and len(cells) == 4
            and cells[3].startswith("`` ")
            and cells[3].endswith(" ``")
        ):
            rows[cells[0].strip("`")] = cells[3][3:-3].replace("\\|", "|")
    return rows


def test_the_catalogue_doc_lists_every_case_with_the_message_it_gets():
    docs = documented()
    assert sorted(docs) == sorted(c.id for c in CASES), set(docs) ^ {c.id for c in CASES}
    for case in CASES:
        line = docs[case.id]
        assert line.startswith("bench: error: ") and re.search(case.message, line), (case.id, line)


@pytest.mark.parametrize("case_id", ["run-results-dir-under-a-file"])
@pytest.mark.slow
def test_the_console_script_prints_the_same_single_line(case_id, tmp_path, bench_cli):
    """The in-process emulation above against the real `bench` process (logging, warnings, exit)."""
    case = next(c for c in CASES if c.id == case_id)
    args = prepare(case, tmp_path)
    before = listing(tmp_path)
    out = bench_cli(*args, cwd=tmp_path)
    check(case, out.returncode, out.stderr.splitlines())
    assert listing(tmp_path) == before


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="root may write into a read-only folder; "
    "the run-results-dir-under-a-file case covers the same error path",
)
def test_a_read_only_results_dir_is_one_line_and_stays_empty(tmp_path, capsys, caplog):
    res = tmp_path / "res"
    res.mkdir(mode=0o500)
    try:
        result = run_cli(["run", *TINY_RUN, f"results_dir={res}"], capsys, caplog)
    finally:
        res.chmod(0o700)
    check(
        Case("read-only", (), r"cannot write .*grid\.json \(Permission denied\); set results_dir=DIR"),
        result.code,
        result.err,
    )
    assert not any(res.iterdir())


# -- damaged artifacts of a finished run -------------------------------------------------------
# A cell's folders are caches of its stages: a damaged one is redone, never trusted and never a
# dead end that fails every rerun the same way.
RUN = ("run", *TINY_RUN)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """The results folder of one finished RUN (tests break copies of it)."""
    res = tmp_path_factory.mktemp("finished") / "res"
    assert main([*RUN, f"results_dir={res}"]) == 0
    return res


def _truncate(rel: str) -> Callable[[Path], None]:
    def damage(res: Path) -> None:
        path = next(res.glob(rel))
        path.write_bytes(path.read_bytes()[:100])

    return damage


def _other_config(rel: str) -> Callable[[Path], None]:
    def damage(res: Path) -> None:
        manifest = json.loads((res / rel).read_text())
        (res / rel).write_text(json.dumps({**manifest, "config_hash": "0" * 16}))

    return damage


def _drop(*rels: str) -> Callable[[Path], None]:
    def damage(res: Path) -> None:
        for rel in rels:
            shutil.rmtree(res / rel) if (res / rel).is_dir() else (res / rel).unlink()

    return damage


DAMAGE = [
    # (id, damage(s) applied to the results folder, does the rerun retrain?, xfail reason)
    ("truncated-record", [_truncate(f"{CELL}/record.json")], False, ""),
    (
        "backbone-of-another-config",
        [_other_config(f"{CELL}/backbone/manifest.json"), _drop(f"{CELL}/record.json")],
        True,
        "",
    ),
    (
        "truncated-latent-cache",
        [_truncate("cache/latents/*/latents.npy"), _drop(f"{CELL}/record.json")],
        False,
        "",
    ),
    (
        "truncated-backbone",
        [_truncate(f"{CELL}/backbone/model.safetensors"), _drop(f"{CELL}/record.json")],
        True,
        "",
    ),
    (
        "truncated-samples",
        [_truncate(f"{CELL}/samples/samples.safetensors"), _drop(f"{CELL}/record.json")],
        False,
        "",
    ),
]  # a damaged training checkpoint: tests/pipeline/test_trainer.py (the runner deletes checkpoints once trained)


@pytest.mark.parametrize(
    "damages,retrains",
    [
        pytest.param(d, r, id=i, marks=[pytest.mark.xfail(strict=True, reason=x)] if x else [])
        for i, d, r, x in DAMAGE
    ],
)
@pytest.mark.slow
def test_a_damaged_artifact_is_redone_on_rerun(finished, tmp_path, damages, retrains, capsys, caplog):
    res = tmp_path / "res"
    shutil.copytree(finished, res)
    for damage in damages:
        damage(res)
    result = run_cli([*RUN, f"results_dir={res}"], capsys, caplog)
    assert result.code == 0, result.err
    assert not any("Traceback" in line for line in result.err)
    record = json.loads((res / CELL / "record.json").read_text())
    assert record["status"] == "ok" and record["metrics"]["swd/all"] > 0
    assert ("train" in record["timings_s"]) == retrains, record["timings_s"]


# -- inputs that are fine, although they once failed ----------------------------------------------
def test_a_gin_file_with_a_byte_order_mark_is_read(tmp_path, monkeypatch, capsys, caplog):
    """Some Windows editors start UTF-8 files with a BOM; gin's tokenizer alone rejects it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bom.gin").write_bytes("\ufefftrain.steps = 3\n".encode("utf-8"))
    result = run_cli(
        [
            "validate",
            "datasets=[synthetic2d]",
            "--gin_file",
            str(tmp_path / "bom.gin"),
            f"results_dir={tmp_path / 'res'}",
        ],
        capsys,
        caplog,
    )
    assert result.code == 0, result.err
    assert re.search(r"\d cell\(s\) valid", result.out)


def test_a_batch_larger_than_the_data_is_recorded_as_the_batch_that_ran(tmp_path, capsys, caplog):
    """train.batch_size beyond the training-set size uses the whole set per step: the record says
    so (and a warning), instead of keeping the requested value as if it had run."""
    res = tmp_path / "res"
    result = run_cli(["run", *TINY_RUN, "train.batch_size=100000", f"results_dir={res}"], capsys, caplog)
    assert result.code == 0, result.err
    record = json.loads((res / CELL / "record.json").read_text())
    assert record["train"]["batch_size"] == record["n"]["train"] < 100000
    assert any("train.batch_size=100000 exceeds the" in line for line in result.err)


def test_a_record_of_the_wrong_shape_is_refused_by_tables_and_set_aside_by_the_run_summary(
    tmp_path, capsys, caplog
):
    """One record breaking the schema among good ones: `bench tables` refuses the experiment,
    naming the file and the first field (a report never tabulates it); the summary a run writes
    goes on without it (the run's own records stand)."""
    folder = make_experiment(tmp_path, methods=("fm", "optprior"), seeds=(0,))
    path = folder / "phantom_lt" / "optprior" / "seed0" / "record.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "created": 17, "metrics": ["x"]}))
    result = run_cli(["tables", str(folder), "--format", "md"], capsys, caplog)
    assert result.code == 2, result.err
    assert result.err == [
        f"bench: error: {path}: field `created` is an integer (17), expected a string (and 1 more "
        "problem(s)); the record does not match bench's record schema (docs/records.md): fix or "
        "delete it, or rerun the cell with `bench run`"
    ]
    from bench.scale.grid import GridResult, write_summary

    write_summary(GridResult(records=[{}]), folder)  # the run's summary reads the same records
    summary = (folder / "summary.md").read_text()
    assert "| fm " in summary and "optprior" not in summary


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
@pytest.mark.parametrize(
    "command",
    [
        ("tables", "{exp}", "--out", "{ro}/t"),
        ("report", "{exp}", "--out", "{ro}/r"),
        ("claims", "{exp}", "--out", "{ro}/c.md"),
        ("bench", "--only", "fid", "--out", "{ro}/p.json"),
    ],
)
def test_an_unwritable_out_folder_is_one_line(tmp_path, command, capsys, caplog):
    folder = make_experiment(tmp_path, methods=("fm",), seeds=(0,))
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    try:
        result = run_cli([a.format(exp=folder, ro=ro) for a in command], capsys, caplog)
    finally:
        ro.chmod(0o700)
    check(
        Case("unwritable-out", (), r"cannot write in \S+ro \(permission denied\); pass a writable path"),
        result.code,
        result.err,
    )
    assert not any(ro.iterdir())
