"""The pipeline's stages as one table (bench.pipeline.stages): every hash stays what it was.

The pinned values below were computed by the code before the table existed (bench 1c851b2's
`assemble._hashes` and `BuiltCell.key_by_data`). Records and caches on users' disks are named by
these hashes: a change here orphans them, so a failing pin is a bug, not a value to update.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from bench.pipeline import stages
from bench.pipeline.assemble import CellSpec, RunRequest, build_cell
from bench.pipeline.latent_cache import cache_folder


class Pin(NamedTuple):
    """One cell of the quick experiment and its hashes: of the configuration, of each stage, and
    of each stage once the data fingerprints `FINGERPRINTS` are folded in."""

    dataset: str
    method: str
    seed: int
    bindings: tuple
    config_hash: str
    stages: dict
    keyed: dict


FINGERPRINTS = {"train": "0123456789abcdef", "eval": "fedcba9876543210"}
# vector and image datasets; methods with and without a prior, one inheriting another's bindings
# (optprior_sub <- optprior) and one with a prior version; with and without a generative set; a
# downstream binding (it feeds no_aug only, and no stage of a vector cell) and dataset-scoped ones
PINS = [
    Pin(
        "synthetic2d",
        "fm",
        0,
        (),
        "46fb6f4917251952",
        {
            "encode": "ebbac5b4e9cf6911",
            "prior": "c1228a64ec056bda",
            "train": "23bd6cedd6f391d2",
            "sample": "e33cd420b85984bb",
            "features": "8f2157c5f6e151f3",
            "no_aug": "c9f8fc7e69796edf",
        },
        {
            "encode": "2dfaf770db0cef69",
            "prior": "e9a3774e87c1ce7a",
            "train": "9f042bf03442c04b",
            "sample": "3211a520bc3e8d34",
            "features": "e8dd0a65b73ab656",
            "no_aug": "c9f8fc7e69796edf",
        },
    ),
    Pin(
        "synthetic2d",
        "cbfm",
        1,
        (),
        "5001e35bbb30e873",
        {
            "encode": "ebbac5b4e9cf6911",
            "prior": "925a9dae5cd63736",
            "train": "d839d222e18dd862",
            "sample": "145f015afcbf50cc",
            "features": "8f2157c5f6e151f3",
            "no_aug": "3572d85051589c13",
        },
        {
            "encode": "2dfaf770db0cef69",
            "prior": "4d63025caa146423",
            "train": "e9a24b6b65be7080",
            "sample": "a66e53f4be971ed5",
            "features": "e8dd0a65b73ab656",
            "no_aug": "3572d85051589c13",
        },
    ),
    Pin(
        "synthetic2d",
        "optprior",
        0,
        ("generative.n_total = 300",),
        "d4f1774547c44e01",
        {
            "encode": "ebbac5b4e9cf6911",
            "prior": "5dc717fb9fee948d",
            "train": "5c136f4612e3aa3e",
            "sample": "7ea9d802aa8f9d91",
            "features": "8f2157c5f6e151f3",
            "no_aug": "c9f8fc7e69796edf",
            "generative": "c584cd24f05fd235",
        },
        {
            "encode": "2dfaf770db0cef69",
            "prior": "007d307d97d7efdd",
            "train": "487e3f7c9f60019e",
            "sample": "93e5450a4c88f59f",
            "features": "e8dd0a65b73ab656",
            "no_aug": "c9f8fc7e69796edf",
            "generative": "db86a9fbfe6e57cc",
        },
    ),
    Pin(
        "synthetic2d",
        "optprior_sub",
        0,
        ("synthetic2d/train.steps = 11",),
        "98f7bc420babe26a",
        {
            "encode": "ebbac5b4e9cf6911",
            "prior": "5dc717fb9fee948d",
            "train": "5235cc62a23d866f",
            "sample": "dc2864ce7f2c565a",
            "features": "8f2157c5f6e151f3",
            "no_aug": "c9f8fc7e69796edf",
        },
        {
            "encode": "2dfaf770db0cef69",
            "prior": "007d307d97d7efdd",
            "train": "59f064b7a5b905f9",
            "sample": "17ef80901df923c6",
            "features": "e8dd0a65b73ab656",
            "no_aug": "c9f8fc7e69796edf",
        },
    ),
    Pin(
        "phantom_lt",
        "fm",
        0,
        (),
        "dd06943642dc7b59",
        {
            "encode": "f640591eb406bb28",
            "prior": "de67b98a5ce47517",
            "train": "98faade1a82506b2",
            "sample": "13483b87b41c0b37",
            "features": "d561576910ac72d4",
            "no_aug": "0ea2154224bcbf36",
        },
        {
            "encode": "1e52d26f2fe0b239",
            "prior": "a2407e734fc4acfb",
            "train": "6465efced4c380cc",
            "sample": "1ec50a2d27c4267f",
            "features": "fce59f7dedd9496d",
            "no_aug": "0ea2154224bcbf36",
        },
    ),
    Pin(
        "phantom_lt",
        "optprior",
        1,
        ("generative.n_total = 1000", "downstream.max_epochs = 3"),
        "0f2751b4c0ffeabe",
        {
            "encode": "f640591eb406bb28",
            "prior": "48df127b7491c642",
            "train": "0335d8512da969b7",
            "sample": "973abbdf0b6ab5e2",
            "features": "d561576910ac72d4",
            "no_aug": "8015a0ada3d11963",
            "generative": "50416b2c306b6b9c",
        },
        {
            "encode": "1e52d26f2fe0b239",
            "prior": "be4c6f0e4ddca764",
            "train": "b566422501ac01a1",
            "sample": "b61dd96a0468ea0e",
            "features": "fce59f7dedd9496d",
            "no_aug": "8015a0ada3d11963",
            "generative": "ca54082a07a65e7a",
        },
    ),
    Pin(
        "phantom_lt",
        "optprior_sub",
        2,
        ("phantom_lt/sample.nfe = 4", "downstream.n_seeds = 2"),
        "38ea8d7baeb14937",
        {
            "encode": "f640591eb406bb28",
            "prior": "cdbe4e56d0b34576",
            "train": "1f9a70a30a098cd6",
            "sample": "1b9402e0e362014c",
            "features": "d561576910ac72d4",
            "no_aug": "33596fec19513971",
        },
        {
            "encode": "1e52d26f2fe0b239",
            "prior": "a47cb8e35d67d32f",
            "train": "3e4b0d8cb6d575fb",
            "sample": "49818fb44f362b7a",
            "features": "fce59f7dedd9496d",
            "no_aug": "33596fec19513971",
        },
    ),
    Pin(
        "digits_lt",
        "cbfm",
        0,
        ("digits_lt/train.steps = 7", "downstream.n_seeds = 2", "generative.n_total = 500"),
        "a62d767482427915",
        {
            "encode": "3e2fcac7ac51116e",
            "prior": "4001d804f3841df4",
            "train": "8db2bf830d012461",
            "sample": "b7ca478e7002c698",
            "features": "b9e3c925dc036f50",
            "no_aug": "f84e80d6b95e7e3a",
            "generative": "47c61edc4641b625",
        },
        {
            "encode": "9f4c89d7f349f35d",
            "prior": "661e08f84ee55b7a",
            "train": "ca459940ca8eb415",
            "sample": "7b23da281f3cf64a",
            "features": "5cf2cd4434f30abf",
            "no_aug": "f84e80d6b95e7e3a",
            "generative": "bed2d2fad1969169",
        },
    ),
]


def _cell(pin: Pin):
    spec = CellSpec("quick", pin.dataset, pin.method, pin.seed)
    return build_cell(spec, RunRequest(bindings=list(pin.bindings)))


@pytest.mark.parametrize("pin", PINS, ids=lambda p: f"{p.dataset}-{p.method}-{len(p.bindings)}")
def test_config_and_stage_hashes_are_the_ones_users_have_on_disk(pin):
    cell = _cell(pin)
    assert cell.config_hash == pin.config_hash
    assert cell.stage_hashes == pin.stages


@pytest.mark.parametrize("pin", PINS, ids=lambda p: f"{p.dataset}-{p.method}-{len(p.bindings)}")
def test_hashes_keyed_by_the_data_are_the_ones_users_have_on_disk(pin):
    cell = _cell(pin)
    cell.key_by_data(FINGERPRINTS)
    assert cell.stage_hashes == pin.keyed
    assert cell.config_stage_hashes == pin.stages  # the shared cache folders keep the configuration's name
    assert cell.config_hash == pin.config_hash  # the record's hash: the data is checked beside it


def test_the_latent_cache_folder_is_where_users_have_it():
    assert cache_folder(Path("r"), "phantom_lt", "pixel", (1, 16, 16), "abc") == Path(
        "r/cache/latents/phantom_lt-pixel-16x16-abc"
    )
    assert cache_folder(Path("r"), "synthetic2d", "pixel", (2,), "abc") == Path(
        "r/cache/latents/synthetic2d-pixel-vec-abc"
    )


def test_the_doc_holds_exactly_the_table_the_code_renders():
    doc = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
    if not doc.is_file():
        pytest.skip("docs/ not next to the tests")
    held = stages.doc_table(doc.read_text(encoding="utf-8"))
    assert held is not None, "docs/architecture.md lost its stage table markers"
    assert held == stages.markdown_table(), (
        "docs/architecture.md's stage table is stale; regenerate it: python -c \"from bench.pipeline.stages "
        "import update_doc; update_doc('docs/architecture.md')\""
    )


def test_update_doc_rewrites_the_table_between_the_markers_only(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(f"# head\n{stages.DOC_BEGIN}\n| old |\n{stages.DOC_END}\ntail\n", encoding="utf-8")
    stages.update_doc(doc)
    text = doc.read_text(encoding="utf-8")
    assert text == f"# head\n{stages.DOC_BEGIN}\n{stages.markdown_table()}{stages.DOC_END}\ntail\n"
    assert "| encode |" in text and "`results/cache/latents/<dataset>-<encoder>-<resolution>-<key>`" in text
    (tmp_path / "bare.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="no stage table markers"):
        stages.update_doc(tmp_path / "bare.md")


def test_every_recorded_stage_is_a_row_and_reads_known_splits():
    """The record's stage_hashes are the table's digest rows, in its order; the cell hash is none."""
    cell = _cell(PINS[-1])  # a cell with every optional stage
    digests = [s.name for s in stages.TABLE if s.suffix is None and s.name != stages.CELL_HASH]
    assert list(cell.stage_hashes) == digests
    assert {split for s in stages.TABLE for split in s.reads} <= set(FINGERPRINTS)
    assert all(u in stages.STAGES for s in stages.TABLE for u in s.upstream)


# -- the runner writes every stage where the table says --------------------------------------------
TINY_DIGITS = [
    "train.steps = 2",
    "train.batch_size = 16",
    "sample.nfe = 1",
    "sample.n_per_class = 2",
    "sample.init_reference = True",
    "generative.n_total = 20",
    "pipeline.evaluators = ['fid', 'downstream']",
    "features.epochs = 1",
    "fid.reference = 'train'",
    "downstream.n_seeds = 1",
    "downstream.max_epochs = 1",
    "downstream.remedies = []",
    "downstream.with_augmentation = []",
]


@pytest.mark.slow
def test_the_runner_writes_each_stage_at_its_place_under_its_key(tmp_path):
    from bench.pipeline.runner import run_cell
    from bench.store.artifacts import read_manifest

    cell = build_cell(CellSpec("quick", "digits_lt", "cpd", 0), RunRequest(bindings=TINY_DIGITS))
    record = run_cell(cell, tmp_path)
    folder, config = cell.spec.folder(tmp_path), cell.config_stage_hashes
    where = {
        "encode": tmp_path / "cache" / "latents" / f"digits_lt-pixel-8x8-{config['encode']}",
        "prior": folder / "prior",
        "train": folder / "backbone",
        "sample": folder / "samples",
        "sample_init": folder / "samples_init",
        "generative": folder / "samples_generative",
        "features": tmp_path / "cache" / "features" / f"digits_lt-small_cnn-{config['features']}",
    }
    for name, path in where.items():
        assert read_manifest(path)["config_hash"] == stages.key(cell, name), name
    assert stages.key(cell, "sample_init") == cell.stage_hashes["sample"] + "-init"
    assert (tmp_path / "cache" / "downstream" / f"digits_lt-{config['no_aug']}").is_dir()
    assert not (folder / "checkpoints").exists()  # dropped once the backbone is complete
    assert record["config_hash"] == cell.config_hash and record["stage_hashes"] == cell.stage_hashes
    assert {"encode", "fit_prior", "train", "sample", "sample_init", "sample_generative", "evaluate"} <= set(
        record["timings_s"]
    )
