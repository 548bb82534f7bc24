"""The shipped experiments (quick, paper, ablation) and the generative-metrics sample set.

Experiments: each file parses to exactly its stated grid; paper and ablation share one setting;
the ablation's documented CPU command validates; the paper grid validates on fabricated NIH-LT,
MIMIC-LT and CT-RATE trees with a tiny FLUX-layout VAE (FLUX.1-size backbones on the meta device).
Generative set: largest-remainder allocation, FID / IRS scoring it, its own stage and hash.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from tiny_vae import saved_tiny_flux_vae

import gin
from bench.cli import main
from bench.config.evaluation import GenerativeSet
from bench.config.gin_config import bindings_text, digest, gin_dir, parse
from bench.context import CellContext
from bench.data.targets import ClassTarget
from bench.dataset import Dataset, Split
from bench.datasets.ct_rate.ctrate import ABNORMALITIES, NO_FINDING
from bench.datasets.mimic_lt import MIMICLT
from bench.datasets.nih_lt import NIHLT
from bench.errors import BenchError
from bench.evaluators.fid import FID
from bench.evaluators.irs import IRS
from bench.metrics.generative import largest_remainder, per_class
from bench.pipeline.assemble import CellSpec, RunRequest, build_cell, config_files, expand_grid, load_plugins
from bench.pipeline.runner import run_cell

PAPER_DATASETS = ["nih_lt", "mimic_lt", "ct_rate"]
AXES = {  # experiment -> (methods, datasets, seeds), as each file's header states
    "quick": (["fm", "cbfm", "cpd", "optprior"], ["synthetic2d", "phantom_lt"], [0]),
    "paper": (["fm", "cbfm", "cpd", "optprior"], PAPER_DATASETS, [0, 1, 2]),
    "paper_1gpu": (["fm", "cbfm", "cpd", "optprior"], PAPER_DATASETS, [0, 1, 2]),
    "cpu_smoke": (["optprior", "cbfm"], ["nih_lt"], [0]),
    "ablation": (["fm", "optprior_sub", "optprior_opt", "optprior"], PAPER_DATASETS, [0, 1, 2]),
    "claims": (
        ["fm", "cbfm", "cpd", "optprior", "optprior_sub", "optprior_opt"],
        ["synthetic2d", "phantom_lt", "digits_lt"],
        [0, 1, 2],
    ),
    "claims_prior": (
        ["optprior", "optprior_opt"],
        ["synthetic2d", "digits_lt", "phantom_lt"],
        list(range(10)),
    ),
    "claims_vectors": (["fm", "cbfm", "cpd", "optprior"], ["synthetic2d"], list(range(12))),
    "claims_images": (["fm", "cpd", "optprior"], ["digits_lt"], list(range(10))),
    "claims_phantom": (["fm", "cbfm", "cpd", "optprior"], ["phantom_lt"], list(range(10))),
    "field": (["fm", "otcfm", "vpfm", "cpd", "cbfm", "optprior"], ["synthetic2d", "digits_lt"], [0, 1, 2]),
}
PAPER_EVALUATORS = [
    "sample_grid",
    "fid",
    "irs",
    "downstream",
    "knn_purity",
    "confounder",
    "geometry",
    "memorisation",
]


# -- the experiment files ----------------------------------------------------------------------
def test_every_experiment_parses_to_exactly_its_stated_grid():
    assert sorted(p.stem for p in (gin_dir() / "experiments").glob("*.gin")) == sorted(AXES)
    for name, (methods, datasets, seeds) in AXES.items():
        cells = expand_grid(RunRequest(experiment=name))
        expected = list(itertools.product(datasets, methods, seeds))
        assert [(c.dataset, c.method, c.seed) for c in cells] == expected
        assert {c.experiment for c in cells} == {name}


def _cell_config(experiment: str, dataset: str, method: str) -> str:
    """Every binding of a cell (grid axes left out), parsed as `bench run` parses it."""
    load_plugins()
    parse(config_files(CellSpec(experiment, dataset, method, 0), RunRequest(experiment=experiment)), [])
    return bindings_text()


@pytest.mark.parametrize("experiment", sorted(set(AXES) - {"cpu_smoke"}))
def test_every_experiment_checkpoints_long_trainings_by_default(experiment):
    """A killed long training resumes instead of restarting, without the user asking for it
    (cpu_smoke's 20 steps take seconds: it writes none)."""
    from bench.config.train import TrainConfig

    methods, datasets, _ = AXES[experiment]
    _cell_config(experiment, datasets[-1], methods[-1])
    cfg = TrainConfig()  # bound by the parsed configuration
    assert cfg.checkpoint_minutes > 0 or cfg.checkpoint_every > 0


@pytest.mark.parametrize("dataset", PAPER_DATASETS)
def test_paper_setting_binds_the_papers_protocol_and_the_ablation_shares_it(dataset):
    ablation = _cell_config("ablation", dataset, "optprior")
    paper = _cell_config("paper", dataset, "optprior")
    assert paper == ablation  # one shared setting; only the method axis differs
    expected = {
        "flux.num_layers": 19,
        "flux.num_single_layers": 38,
        "flux.num_attention_heads": 24,
        "pipeline.backbone": "flux",
        "pipeline.encoder": "flux_vae",
        "pipeline.evaluators": PAPER_EVALUATORS,
        "features.arch": "densenet121",
        "sample.n_per_class": "targets",
        "generative.n_total": 50000,
        "fid.reference": "train",
        "downstream.arch": "resnet50",
        "downstream.n_seeds": 3,
        "downstream.patience": 15,
        f"{dataset}.size": 256,
    }
    assert {key: gin.query_parameter(key) for key in expected} == expected


def _documented_cpu_command() -> list[str]:
    """The CPU command of ablation.gin's header, as arguments after `bench`."""
    header = (gin_dir() / "experiments" / "ablation.gin").read_text().split("On a CPU", 1)[1]
    lines = [line.lstrip("#").strip() for line in header.splitlines() if line.startswith("#   ")]
    start = next(i for i, line in enumerate(lines) if line.startswith("bench run"))
    command = []
    for line in lines[start:]:
        command.append(line.rstrip("\\").strip())
        if not line.endswith("\\"):
            break
    return shlex.split(" ".join(command))[1:]


@pytest.mark.slow
def test_the_documented_cpu_ablation_command_validates(tmp_path, monkeypatch, capsys):
    args = _documented_cpu_command()
    assert args[:2] == ["run", "experiment=ablation"] and "datasets=[phantom_lt]" in args
    monkeypatch.chdir(gin_dir().parent)  # the command runs where gin/presets/tiny.gin is
    assert main(["validate", *args[1:], f"results_dir={tmp_path / 'res'}"]) == 0
    out = capsys.readouterr().out
    assert "4 cell(s) valid" in out
    for method in AXES["ablation"][0]:
        assert f"ok  phantom_lt/{method}/seed0" in out
    assert not (tmp_path / "res").exists()


# -- validating the paper grid on fabricated data trees ----------------------------------------
def _labels(n_classes: int, head: int = 100, tail: int = 2) -> list[int]:
    """A long tail: `head` samples of class 0 (optprior needs k_max * min_size = 80 in one
    class, CT-RATE moves a tenth of the patients to val), `tail` of every other class."""
    return [0] * head + [c for c in range(1, n_classes) for _ in range(tail)]


def _image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value % 256, np.uint8)).save(path)


def _one_hot(labels: list[int], classes: list[str]) -> pd.DataFrame:
    return pd.DataFrame(np.eye(len(classes), dtype=int)[labels], columns=classes)


def _nih_root(root: Path) -> Path:
    """LongTailCXR label CSVs, flat PNGs and a Data_Entry file with the columns nih_lt joins."""
    names = NIHLT.class_names
    rows = []
    for split, labels in (
        ("train", _labels(len(names))),
        ("balanced-val", list(range(len(names)))),
        ("balanced-test", list(range(len(names)))),
    ):
        ids = [f"{split[:2]}{k:05d}_000.png" for k in range(len(labels))]
        pd.concat([pd.DataFrame({"id": ids}), _one_hot(labels, names)], axis=1).to_csv(
            root / f"nih-cxr-lt_single-label_{split}.csv", index=False
        )
        for k, name in enumerate(ids):
            _image(root / "images" / name, k)
        rows += [
            {
                "Image Index": i,
                "Patient ID": i[:7],
                "Patient Gender": "F",
                "Patient Age": 50,
                "View Position": "PA",
                "Follow-up #": 0,
            }
            for i in ids
        ]
    pd.DataFrame(rows).to_csv(root / "Data_Entry_2017_v2020.csv", index=False)
    return root


def _mimic_root(root: Path) -> Path:
    """LongTailCXR label CSVs with JPGs at their `path` (no metadata file: views unknown)."""
    names = MIMICLT.class_names
    for split, labels in (
        ("train", _labels(len(names))),
        ("balanced-val", list(range(len(names)))),
        ("balanced-test", list(range(len(names)))),
    ):
        n = len(labels)
        subjects = [f"1{split[:1]}{k:06d}" for k in range(n)]
        dicoms = [f"{split}-{k}" for k in range(n)]
        paths = [f"files/p10/p{s}/s5{k}/{d}.jpg" for k, (s, d) in enumerate(zip(subjects, dicoms))]
        ids = pd.DataFrame(
            {
                "subject_id": subjects,
                "study_id": [f"5{k}" for k in range(n)],
                "dicom_id": dicoms,
                "path": paths,
            }
        )
        pd.concat([ids, _one_hot(labels, names)], axis=1).to_csv(
            root / f"mimic-cxr-lt_single-label_{split}.csv", index=False
        )
        for k, rel in enumerate(paths):
            _image(root / rel, k)
    return root


def _ct_rate_root(root: Path) -> Path:
    """A `bench prepare ct_rate` output: manifest.csv and PNG slices."""
    names = [NO_FINDING, *ABNORMALITIES]
    rows = []
    for split, labels in (("train", _labels(len(names))), ("valid", list(range(len(names))))):
        for k, label in enumerate(labels):
            rel = f"slices/{split}/{split}_{k}_a.png"
            _image(root / rel, k)
            rows.append(
                {
                    "id": f"{split}_{k}_a",
                    "path": rel,
                    "label": names[label],
                    "subject": f"{split}_{k // 2}",
                    "split": split,
                }
            )
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


@pytest.mark.slow
def test_the_paper_grid_validates_on_official_layouts_with_the_documented_bindings(tmp_path, capsys):
    """All three datasets x all four methods, one seed (12 FLUX.1-size backbones on the meta
    device; the three seeds only repeat these cells). The bindings are those of paper.gin's header."""
    roots = {}
    for name, make in (("nih", _nih_root), ("mimic", _mimic_root), ("ct", _ct_rate_root)):
        (tmp_path / name).mkdir()
        roots[name] = make(tmp_path / name)
    vae = saved_tiny_flux_vae(tmp_path / "vae")
    header = (gin_dir() / "experiments" / "paper.gin").read_text()
    keys = re.findall(r"\b(flux_vae\.path|nih_lt\.root|mimic_lt\.root|ct_rate\.root)=", header)
    assert sorted(keys) == ["ct_rate.root", "flux_vae.path", "mimic_lt.root", "nih_lt.root"]
    args = [
        "validate",
        "experiment=paper",
        "seeds=[0]",
        f"flux_vae.path={vae}",
        f"nih_lt.root={roots['nih']}",
        f"mimic_lt.root={roots['mimic']}",
        f"ct_rate.root={roots['ct']}",
        f"results_dir={tmp_path / 'res'}",
        "budget.trace_inference=False",
    ]  # 3 FLUX.1-size sampling traces: tests/config/test_real_protocol.py has one
    # FLUX.1 size needs ~200 GiB per device unsharded: refused for an 80 GiB GPU, valid on a larger one
    assert main([*args, "executor.device_memory_gib=80"]) == 2
    assert "more than the 80 GiB" in capsys.readouterr().err
    assert main([*args, "executor.device_memory_gib=1000"]) == 0
    out = capsys.readouterr().out
    assert "12 cell(s) valid" in out
    for dataset, method in itertools.product(PAPER_DATASETS, AXES["paper"][0]):
        assert f"ok  {dataset}/{method}/seed0" in out
    assert not (tmp_path / "res").exists()


@pytest.mark.slow
def test_the_headline_command_fits_one_80gb_gpu_by_default_and_flux1_only_sharded(tmp_path, capsys):
    """`bench validate methods=[optprior,cbfm] datasets=[nih_lt] ...`: the real datasets' default
    (presets/flux_1gpu.gin) fits one 80 GiB GPU; FLUX.1 size is refused there with the number of
    devices to shard it over, and that many sharded processes (executor.tasks_per_node) fit. The
    headline command runs the paper's three generative seeds: 2 methods x 3 seeds."""
    (tmp_path / "nih").mkdir()
    args = [
        "validate",
        "methods=[optprior,cbfm]",
        "datasets=[nih_lt]",
        f"nih_lt.root={_nih_root(tmp_path / 'nih')}",
        f"flux_vae.path={saved_tiny_flux_vae(tmp_path / 'vae')}",
        "executor.device_memory_gib=80",
        "budget.trace_inference=False",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    estimates = re.findall(r"([\d,.]+) M parameters; ~([\d,.]+) GiB per device", out)
    assert len(estimates) == 6 and all(
        2000 < float(p.replace(",", "")) < 2500 and float(g) < 80 for p, g in estimates
    ), out
    flux1 = [*args, "--gin_file", "presets/flux1.gin"]
    assert main(flux1) == 2
    err = capsys.readouterr().err.strip()
    # the first way out: sharding, with the micro-batches the devices can share where it says so
    needed = re.search(
        r"more than the 80 GiB of executor.device_memory_gib; shard it over (\d+) or more such "
        r"devices \(train.sharding='fsdp'(?: and train.micro_batches=(\d+))? with "
        r"executor.tasks_per_node=\1",
        err,
    )
    assert err.startswith("bench: error: nih_lt/") and "\n" not in err and needed, err
    micro = [f"train.micro_batches={needed[2]}"] if needed[2] else []
    sharded = [
        *flux1,
        "train.sharding='fsdp'",
        *micro,
        "executor=local",
        f"executor.tasks_per_node={needed[1]}",
    ]
    assert main(sharded) == 0
    assert f"sharded over {needed[1]} processes" in capsys.readouterr().out


def test_the_paper_grid_without_the_vae_path_is_one_clear_error(tmp_path, capsys):
    assert (
        main(
            [
                "validate",
                "experiment=paper",
                "datasets=[ct_rate]",
                "methods=[fm]",
                "seeds=[0]",
                f"ct_rate.root={_ct_rate_root(tmp_path)}",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "1 setting(s) not set for ct_rate/fm/seed0: flux_vae.path=DIR" in err


# -- largest-remainder allocation --------------------------------------------------------------
def test_largest_remainder_sums_exactly_and_rounds_the_largest_remainders_up():
    assert largest_remainder(10, [1, 1, 1]) == [4, 3, 3]  # tie: lower index first
    assert largest_remainder(7, [0.5, 0.3, 0.2]) == [4, 2, 1]  # quotas 3.5, 2.1, 1.4
    assert largest_remainder(50000, [5, 0, 3]) == [31250, 0, 18750]
    rng = np.random.default_rng(0)
    for _ in range(200):
        w = rng.random(int(rng.integers(1, 20))) * rng.integers(0, 2, 1)[0] + rng.random(1)[0] * 1e-3
        total = int(rng.integers(0, 100_000))
        counts = np.array(largest_remainder(total, w))
        quota = total * w / w.sum()
        floor = np.floor(quota)
        assert counts.sum() == total and (counts >= floor).all() and (counts <= floor + 1).all()
        up = counts > floor  # every rounded-up share has a remainder >= every rounded-down one
        rem = quota - floor
        assert not up.any() or up.all() or rem[up].min() >= rem[~up].max() - 1e-9
    with pytest.raises(ValueError):
        largest_remainder(5, [0, 0])


def _plan(counts, synthetic) -> list[ClassTarget]:
    return [ClassTarget(f"c{i}", n, 0.0, "g", s) for i, (n, s) in enumerate(zip(counts, synthetic))]


def test_generative_counts_follow_the_allocation_over_the_augmented_classes():
    plan = _plan([1000, 40, 10, 400], [0, 60, 90, 200])
    assert per_class(GenerativeSet(), plan) is None  # default: no separate set
    assert per_class(GenerativeSet(n_total=1000), plan) == [0, 171, 257, 572]  # 60:90:200 of 1000
    assert per_class(GenerativeSet(n_total=1000, allocation="uniform"), plan) == [0, 334, 333, 333]
    assert per_class(GenerativeSet(n_total=900, allocation="train"), plan) == [0, 80, 20, 800]
    none_augmented = _plan([5, 5, 5], [0, 0, 0])
    assert per_class(GenerativeSet(n_total=10), none_augmented) == [4, 3, 3]  # all classes, uniform
    for bad in ({"n_total": 0}, {"n_total": 2.5}, {"n_total": True}, {"allocation": "equal"}):
        with pytest.raises(BenchError, match="generative"):
            GenerativeSet(**bad)


# -- FID and IRS score the generative set when the cell has one ---------------------------------
class Flat(Dataset):
    kind = "image"
    class_names = ["head", "tail_a", "tail_b"]


def _split(rng, counts: dict[int, int], shift: float = 0.0) -> Split:
    y = torch.tensor([c for c, n in counts.items() for _ in range(n)])
    x = rng.standard_normal((len(y), 1, 2, 2)) + 4.0 * y.numpy()[:, None, None, None] + shift
    return Split(torch.tensor(x, dtype=torch.float32), y)


def _cell(
    tmp_path, generative: Split | None, init: Split | None = None, source: Split | None = None
) -> CellContext:
    """Features = flattened samples; the synthetic set is shifted far off, the generative set is not."""
    rng = np.random.default_rng(3)
    train, test = _split(rng, {0: 80, 1: 60, 2: 50}), _split(rng, {0: 40, 1: 40, 2: 40})
    synthetic = _split(rng, {1: 10, 2: 10}, shift=6.0)
    targets = [ClassTarget(n, 0, 0.0, "g", s) for n, s in zip(Flat.class_names, [0, 10, 10])]
    extractor = SimpleNamespace(embed=lambda x: np.asarray(x).reshape(len(x), -1))
    return CellContext(
        Flat(),
        train,
        test,
        synthetic,
        tmp_path,
        seed=0,
        synthetic_init=init,
        generative=generative,
        synthetic_source=source,
        targets=targets,
        extractor=lambda: extractor,
    )


def test_fid_and_irs_score_the_generative_set_when_present_else_the_synthetic_set(tmp_path):
    rng = np.random.default_rng(4)
    generative = _split(rng, {1: 70, 2: 30})
    without, with_set = _cell(tmp_path / "a", None), _cell(tmp_path / "b", generative)
    assert without.generative_set == "synthetic" and with_set.generative_set == "generative"
    fid_syn, fid_gen = FID(reference="train").evaluate(without), FID(reference="train").evaluate(with_set)
    assert fid_syn["n/fid"] == 10 + 10
    assert fid_gen["n/fid"] == 60 + 30  # equal n: class 1 capped by its 60 train images
    # the synthetic set is shifted by 6 in each of 4 dimensions: a mean term of 144
    assert fid_gen["fid/tail"] < 20 and fid_syn["fid/tail"] > 100
    assert json.loads((tmp_path / "b" / "fid.json").read_text())["set"] == "generative"
    irs_syn, irs_gen = IRS().evaluate(without), IRS().evaluate(with_set)
    assert irs_syn["n/irs"] == 20 and irs_gen["n/irs"] == 40 + 30  # queries capped by 40 test images
    details = json.loads((tmp_path / "b" / "irs.json").read_text())
    assert details["set"] == "generative" and details["pooled"]["synthetic"]["n"] == 70
    assert set(details["classes"]["tail_a"]) == {"index", "generative"}


def test_init_metrics_still_score_the_untrained_synthetic_set(tmp_path):
    rng = np.random.default_rng(5)
    cell = _cell(tmp_path, _split(rng, {1: 70, 2: 30}), init=_split(rng, {1: 12, 2: 12}, shift=3.0))
    fid, irs = FID().evaluate(cell), IRS().evaluate(cell)
    assert fid["n/fid"] == 40 + 30 and fid["n/fid@init"] == 24
    assert irs["n/irs"] == 70 and irs["n/irs@init"] == 24
    assert fid["fid/tail@init"] > fid["fid/tail"]


def test_source_metrics_score_the_source_draws_at_the_scored_sets_n(tmp_path):
    rng = np.random.default_rng(6)
    generative = _split(rng, {1: 70, 2: 30})
    far_source = _split(rng, {1: 70, 2: 30}, shift=5.0)  # the source alone: far from the data
    cell = _cell(tmp_path, generative, source=far_source)
    fid, irs = FID().evaluate(cell), IRS().evaluate(cell)
    assert fid["n/fid@source"] == fid["n/fid"] and irs["n/irs@source"] == irs["n/irs"]
    assert fid["fid/tail@source"] > 5 * fid["fid/tail"]
    # the source scored as if it were the generated set gives the same numbers
    alone = FID().evaluate(_cell(tmp_path / "alone", far_source))
    assert fid["fid/tail@source"] == pytest.approx(alone["fid/tail"])
    assert not any(k.endswith("@init") for k in fid)


def test_docs_list_the_recorded_n_of_fid_and_irs():
    docs = Path(__file__).resolve().parents[2] / "docs" / "evaluators.md"
    if not docs.is_file():
        pytest.skip("docs/ not next to the tests")
    rows = {
        line.split("|")[1].strip(): line for line in docs.read_text().splitlines() if line.startswith("| `")
    }
    assert "`n/fid`" in rows["`fid`"] and "`n/irs`" in rows["`irs`"]
    assert "generative.n_total" in docs.read_text()


# -- stage hashes --------------------------------------------------------------------------------
def _built(bindings=(), dataset="phantom_lt", method="optprior"):
    return build_cell(CellSpec("quick", dataset, method, 1), RunRequest(bindings=list(bindings)))


def test_cells_without_a_generative_set_keep_their_stage_hashes():
    """No `generative` stage and no `generative.` binding in any hash of a default cell; the train
    hash is the one the code computed before the set existed (same formula, same bindings)."""
    cell = _built()
    assert set(cell.stage_hashes) == {"encode", "prior", "train", "sample", "features", "no_aug"}
    assert "generative." not in bindings_text()
    evaluator_scopes = [f"{ev.name}." for ev in cell.evaluators]
    before = digest(
        cell.stage_hashes["prior"],
        bindings_text(exclude=["grid.", "pipeline.evaluators", "features.", *evaluator_scopes, "sample."]),
        1,
    )
    assert cell.stage_hashes["train"] == before
    assert cell.stage_hashes["sample"] == digest(before, bindings_text(include=["sample.", "targets."]))


def test_the_generative_set_has_its_own_hash_and_leaves_the_other_stages_alone():
    base = _built()
    on = _built(["generative.n_total = 1000"])
    assert {k: v for k, v in on.stage_hashes.items() if k != "generative"} == base.stage_hashes
    assert on.config_hash != base.config_hash and on.config.generative.n_total == 1000
    other = {
        "allocation": _built(["generative.n_total = 1000", "generative.allocation = 'uniform'"]),
        "total": _built(["generative.n_total = 2000"]),
        "nfe": _built(["generative.n_total = 1000", "sample.nfe = 8"]),
        "targets": _built(["generative.n_total = 1000", "targets.mt_extra = 1.0"]),
    }
    for name, cell in other.items():
        assert cell.stage_hashes["generative"] != on.stage_hashes["generative"], name
    # the augmentation set's size does not feed the generative set
    resized = _built(["generative.n_total = 1000", "sample.n_per_class = 5"])
    assert resized.stage_hashes["generative"] == on.stage_hashes["generative"]
    assert resized.stage_hashes["sample"] != on.stage_hashes["sample"]


# -- the runner samples the set as its own stage -------------------------------------------------
TINY_IMAGE_CELL = [
    "phantom_lt.size = 16",
    "phantom_lt.n_max = 120",
    "phantom_lt.imbalance_ratio = 10.0",
    "phantom_lt.n_val_per_class = 4",
    "phantom_lt.n_test_per_class = 6",
    "train.steps = 2",
    "train.batch_size = 4",
    "sample.nfe = 1",
    "sample.init_reference = False",
    "pipeline.evaluators = ['fid', 'irs']",
    "features.epochs = 1",
    "fid.reference = 'train'",
]


@pytest.mark.slow
def test_runner_samples_the_generative_set_once_and_fid_irs_score_it(tmp_path):
    cell = _built(TINY_IMAGE_CELL + ["generative.n_total = 45"], method="fm")
    record = run_cell(cell, tmp_path)
    folder = cell.spec.folder(tmp_path)
    manifest = json.loads((folder / "samples_generative" / "manifest.json").read_text())
    assert manifest["config_hash"] == cell.stage_hashes["generative"]
    plan = [ClassTarget(**row) for row in record["augmentation"]]
    assert record["generative_per_class"] == per_class(GenerativeSet(n_total=45), plan)
    assert sum(record["generative_per_class"]) == record["n"]["generative"] == 45
    assert record["stage_hashes"]["generative"] == cell.stage_hashes["generative"]
    assert "sample_generative" in record["timings_s"]
    assert json.loads((folder / "fid.json").read_text())["set"] == "generative"
    assert "n/fid" in record["metrics"] and "n/irs" in record["metrics"]
    # a new total resamples only the generative set: the backbone and synthetic set are reused
    bigger = _built(TINY_IMAGE_CELL + ["generative.n_total = 60"], method="fm")
    again = run_cell(bigger, tmp_path)
    assert "train" not in again["timings_s"] and again["n"]["generative"] == 60


def test_multi_line_bindings_are_filtered_whole_so_evaluators_never_feed_the_train_hash():
    """gin prints long lists over several lines; excluding a binding must drop its continuation lines."""
    load_plugins()
    parse([gin_dir() / "base.gin", gin_dir() / "datasets" / "phantom_lt.gin"], [])
    assert "\n" in bindings_text(include=["pipeline.evaluators"])  # printed over several lines
    without = bindings_text(exclude=["grid.", "pipeline.evaluators"])
    assert "'knn_purity'" not in without and "pipeline.evaluators" not in without
    spec = CellSpec("quick", "phantom_lt", "fm", 0)
    request = RunRequest()
    train_hash = build_cell(spec, request).stage_hashes["train"]
    fewer = build_cell(spec, RunRequest(bindings=["pipeline.evaluators = ['fid']"])).stage_hashes["train"]
    other_features = build_cell(spec, RunRequest(bindings=["features.arch = 'densenet121'"])).stage_hashes
    assert fewer == train_hash and other_features["train"] == train_hash
    assert other_features["features"] != build_cell(spec, request).stage_hashes["features"]


def test_no_aug_classifiers_are_keyed_by_dataset_seed_and_protocol_never_by_method():
    def key(method="fm", seed=0, bindings=()):
        return build_cell(
            CellSpec("quick", "phantom_lt", method, seed), RunRequest(bindings=list(bindings))
        ).stage_hashes["no_aug"]

    assert key("fm") == key("cbfm") == key("optprior") == key("fm", bindings=["train.steps = 7"])
    assert key(seed=1) != key() and key(bindings=["downstream.lr = 0.01"]) != key()
    assert (
        key(bindings=["pipeline.eval_on = 'val'"]) != key()
        and key(bindings=["phantom_lt.n_max = 300"]) != key()
    )


def test_where_and_how_often_work_is_done_feeds_no_hash():
    """Checkpoint frequency and executor settings (even in a gin file) never change a config hash."""
    spec = CellSpec("quick", "synthetic2d", "fm", 0)
    base = build_cell(spec, RunRequest())
    moved = build_cell(spec, RunRequest(bindings=["train.checkpoint_every = 7"]))
    assert (moved.config_hash, moved.stage_hashes) == (base.config_hash, base.stage_hashes)
    assert (
        build_cell(spec, RunRequest(bindings=["train.steps = 7"])).stage_hashes["train"]
        != base.stage_hashes["train"]
    )


@pytest.mark.parametrize("dataset", ["nih_lt", "mimic_lt", "ct_rate", "medmnist"])
def test_the_real_datasets_run_the_papers_evaluators_by_default(dataset):
    """Issue 18: a finished real-data run reports FID, IRS, downstream, kNN purity, the confounder
    probe, geometry and memorisation unless the user narrows the list."""
    import gin
    from bench.config.gin_config import parse
    from bench.config.pipeline_config import PipelineConfig
    from bench.pipeline.assemble import load_plugins

    load_plugins()
    try:
        parse([gin_dir() / "base.gin", gin_dir() / "datasets" / f"{dataset}.gin"], [])
        evaluators = set(PipelineConfig().evaluators)
    finally:
        gin.clear_config()
    assert {
        "sample_grid",
        "fid",
        "kid",
        "irs",
        "downstream",
        "knn_purity",
        "confounder",
        "geometry",
        "memorisation",
    } <= evaluators
