"""`bench field`: the field report's answers on records whose answer is known, its tables read back
against the records, its refusals, and docs/field.md regenerated from the stored records."""

from __future__ import annotations

import json
import statistics
import zlib
from pathlib import Path

import numpy as np
import pytest
from records_fixture import complete_record

from bench.cli import main
from bench.errors import BenchError
from bench.paper.claim_rules import FAILS, HOLDS, INCONCLUSIVE
from bench.paper.claims import ClaimsOptions
from bench.paper.field import FIELD_METHODS, write_field
from bench.store.gridfile import GridFile

ROOT = Path(__file__).resolve().parents[2]
VECTOR, IMAGE = "synthetic2d", "digits_lt"
HIGHER = {
    "swd/tail": False,
    "fid/tail": False,
    "bacc": True,
    "bacc/no_aug": True,
    "bacc/mixup": True,
    "bacc/cutmix": True,
    "bacc/aug+mixup": True,
    "bacc/aug+cutmix": True,
}
FLAT = dict.fromkeys(FIELD_METHODS, 0.0)


def noise(*key) -> float:
    """Small deterministic noise per (dataset, method, seed, metric), both signs."""
    return float(np.random.default_rng(zlib.crc32("/".join(map(str, key)).encode())).normal(0, 0.003))


def metrics_of(dataset: str, method: str, seed: int, edge: dict, remedies: dict, combined: float) -> dict:
    """Scores where `edge[method]` is how much better than the rest the method is (a fraction of the
    scale); remedies on real data alone are shared by every method's cell of a seed."""
    e = edge[method]
    if dataset == VECTOR:
        return {"swd/tail": 1.0 - e + 0.01 * seed + noise(dataset, method, seed, "swd")}
    bacc = 0.6 + e / 2 + 0.01 * seed + noise(dataset, method, seed, "bacc")
    out = {"fid/tail": 50.0 * (1 - e) + seed + 50 * noise(dataset, method, seed, "fid"), "bacc": bacc}
    out |= {"bacc/no_aug": 0.58 + 0.01 * seed}
    out |= {f"bacc/{r}": v + 0.01 * seed for r, v in remedies.items()}
    out |= {f"bacc/aug+{r}": bacc + combined + noise(dataset, method, seed, r) for r in ("mixup", "cutmix")}
    return out


def make_field(
    root: Path, edge=FLAT, seeds=range(3), remedies=None, combined=0.0, methods=FIELD_METHODS, nfe=None
) -> Path:
    """`<root>/field`: grid.json and one record per (dataset, method, seed) of the field experiment."""
    remedies = {"mixup": 0.6, "cutmix": 0.6} if remedies is None else remedies
    folder, grid = Path(root) / "field", GridFile("field")
    for d in (VECTOR, IMAGE):
        for m in methods:
            for s in seeds:
                metrics = metrics_of(d, m, s, edge, remedies, combined)
                grid.add(d, m, s, f"h-{d}-{m}-{s}", metrics={k: HIGHER[k] for k in metrics})
                record = complete_record(
                    {
                        "experiment": "field",
                        "dataset": d,
                        "method": m,
                        "seed": s,
                        "metrics": metrics,
                        "higher_is_better": {k: HIGHER[k] for k in metrics},
                        "config_hash": f"h-{d}-{m}-{s}",
                        "backbone": "mlp" if d == VECTOR else "flux",
                        "sampler": {"solver": "euler", "nfe": (nfe or {}).get(m, 32)},
                        "train": {"steps": 400, "batch_size": 128, "n_parameters": 1000, "converged": True},
                        "n": {"train": 500, "test": 400, "synthetic": 400},
                    }
                )
                cell = folder / d / m / f"seed{s}"
                cell.mkdir(parents=True, exist_ok=True)
                (cell / "record.json").write_text(json.dumps(record))
    (folder / "grid.json").write_text(json.dumps(grid.to_json()))
    return folder


def report(folder: Path, tmp_path: Path, **options) -> tuple[str, dict]:
    out, sections = write_field(folder, tmp_path / "field.md", ClaimsOptions(**options))
    return out.read_text(), {s.key: s for s in sections}


def part(text: str, heading: str, dataset: str | None = None) -> str:
    """The text of one `## ` section (and within it one `#### dataset`)."""
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end >= 0 else None]
    if dataset is None:
        return body
    i = body.index(f"#### {dataset}")
    j = body.find("#### ", i + 1)
    return body[i : j if j >= 0 else None]


def rows(text: str, header_start: str) -> dict[str, list[str]]:
    """{first cell: cells} of the first Markdown table whose header starts with `header_start`."""
    lines = text.split("\n")
    i = next(i for i, ln in enumerate(lines) if ln.startswith("| " + header_start))
    out = {}
    for ln in lines[i + 2 :]:
        if not ln.startswith("|"):
            break
        cells = [c.strip() for c in ln.strip("|").split(" | ")]
        out[cells[0]] = cells
    return out


def values(folder: Path, dataset: str, method: str, metric: str, seeds=range(3)) -> list[float]:
    return [
        json.loads((folder / dataset / method / f"seed{s}/record.json").read_text())["metrics"][metric]
        for s in seeds
    ]


# ---- answers on numbers whose answer is known ---------------------------------------------------


def test_a_large_consistent_difference_holds_at_6_seeds_and_its_reverse_does_not(tmp_path):
    # optprior far better than otcfm, vpfm far better than fm, on both datasets
    edge = FLAT | {"optprior": 0.3, "vpfm": 0.3}
    _, q = report(make_field(tmp_path, edge, seeds=range(6)), tmp_path)
    for d in (VECTOR, IMAGE):
        assert q["a"].verdicts[d].word == HOLDS
        assert "optprior better than otcfm at one-sided p = 0.01562 < 0.05" in q["a"].verdicts[d].why
        assert q["b"].verdicts[d].word == FAILS and q["b"].verdicts[d].why.startswith("vpfm better than fm")


def test_at_3_seeds_the_same_difference_is_inconclusive_and_the_floor_is_stated(tmp_path):
    edge = FLAT | {"optprior": 0.3}
    text, q = report(make_field(tmp_path, edge), tmp_path)
    v = q["a"].verdicts[VECTOR]
    assert v.word == INCONCLUSIVE and v.label == "inconclusive at n = 3"
    assert "cannot go below 1/2^3 = 0.125 >= 0.05: at least 5 seeds are needed" in v.why
    assert "smallest attainable p is 1/2^3 = 0.125 ≥ 0.05, so no answer can be **holds**" in text
    # the comparison row: the per-seed differences and their mean are the records' own
    row = rows(part(text, "(a)", VECTOR), "metric | reference")["SWD tail ↓"]
    diffs = np.subtract(
        values(tmp_path / "field", VECTOR, "optprior", "swd/tail"),
        values(tmp_path / "field", VECTOR, "otcfm", "swd/tail"),
    )
    assert float(row[4].split(" ")[0]) == pytest.approx(diffs.mean(), rel=1e-3)
    assert row[5] == "0.125" and row[8] == "3/3"


def set_reference(folder: Path, dataset: str, ours: str, ref: str, metric: str, step: float) -> None:
    """`ref`'s metric = `ours`' + step, the sign alternating with the seed (no difference on average)."""
    for path in sorted((folder / dataset / ref).glob("seed*/record.json")):
        rec = json.loads(path.read_text())
        ours_rec = json.loads((folder / dataset / ours / path.parent.name / "record.json").read_text())
        rec["metrics"][metric] = ours_rec["metrics"][metric] + step * (-1) ** rec["seed"]
        path.write_text(json.dumps(rec))


def test_no_difference_is_inconclusive(tmp_path):
    folder = make_field(tmp_path, seeds=range(6))
    for ours, ref in (("optprior", "otcfm"), ("fm", "vpfm")):
        set_reference(folder, VECTOR, ours, ref, "swd/tail", 0.002)
        set_reference(folder, IMAGE, ours, ref, "fid/tail", 0.5)
    text, q = report(folder, tmp_path)
    for key in ("a", "b"):
        for d in (VECTOR, IMAGE):
            assert q[key].verdicts[d].word == INCONCLUSIVE
    row = rows(part(text, "(a)", IMAGE), "metric | reference")["FID tail ↓"]
    assert row[5] == row[6] == "0.656" and row[8] == "3/6"  # P(flipped sum >= 0) = 42/64 either way
    answers = "| (a) an optimised source beats an optimised coupling | inconclusive at n = 6 | inconclusive at n = 6 |"
    assert answers in text


def test_generative_plus_mixup_beats_mixup_and_cutmix_when_it_is_far_better(tmp_path):
    # 8 seeds: two-sided floor 2/2^8 < 0.05 / 6 candidates
    text, q = report(make_field(tmp_path, seeds=range(8), combined=0.1), tmp_path)
    assert q["c3"].verdicts[IMAGE].word == HOLDS and q["c4"].verdicts[IMAGE].word == HOLDS
    assert "+ mixup better than mixup (real data only)" in q["c3"].verdicts[IMAGE].why
    assert q["c1"].verdicts[IMAGE].word == INCONCLUSIVE  # alone: as good as mixup
    assert q["c1"].verdicts[VECTOR] is None  # vector data: no classifiers
    cands = rows(part(text, "(c3)", IMAGE), "candidate | n")
    assert set(cands) == {f"{m} + mixup" for m in FIELD_METHODS}


def test_mixup_better_in_every_seed_answers_no(tmp_path):
    _, q = report(make_field(tmp_path, remedies={"mixup": 0.9, "cutmix": 0.6}), tmp_path)
    assert q["c1"].verdicts[IMAGE].word == FAILS
    assert "mixup (real data only) better than every generative candidate" in q["c1"].verdicts[IMAGE].why


# ---- tables read back ------------------------------------------------------------------------------


def test_the_score_table_is_the_mean_and_std_of_the_record_values(tmp_path):
    folder = make_field(tmp_path, FLAT | {"cpd": 0.1})
    text, _ = report(folder, tmp_path)
    table = rows(part(text, "Scores", IMAGE), "method | FID tail")
    for m in FIELD_METHODS:
        for col, metric in ((1, "fid/tail"), (2, "bacc"), (3, "bacc/aug+mixup")):
            v = values(folder, IMAGE, m, metric)
            assert table[m][col] == f"{statistics.mean(v):.4g} ± {statistics.stdev(v):.3g}"
    real = rows(part(text, "Scores", IMAGE), "real data only")
    assert set(real) == {"no augmentation", "mixup", "cutmix"}
    assert "| method | SWD tail ↓ |\n" in part(text, "Scores", VECTOR)  # vector data: tail SWD alone


def test_equal_budget_is_checked_from_the_records(tmp_path):
    text, _ = report(make_field(tmp_path), tmp_path)
    assert (
        "Equal budget, as every record of fm and vpfm here states: backbone flux, parameters 1000, "
        "steps 400, batch 128, solver euler, NFE 32."
    ) in part(text, "(b)", IMAGE)
    text, _ = report(make_field(tmp_path / "other", nfe={"vpfm": 64}), tmp_path)
    assert "**Not at equal budget**: the records differ in NFE (32 vs 64)." in part(text, "(b)", VECTOR)


def test_a_cell_not_run_yet_is_listed_and_the_answers_use_what_exists(tmp_path):
    folder = make_field(tmp_path, FLAT | {"optprior": 0.3})
    (folder / VECTOR / "otcfm" / "seed2" / "record.json").unlink()
    text, q = report(folder, tmp_path)
    assert "- `synthetic2d/otcfm/seed2` (missing)" in part(text, "Grid")
    assert q["a"].verdicts[VECTOR].label == "inconclusive at n = 2"
    assert q["a"].verdicts[IMAGE].label == "inconclusive at n = 3"


# ---- refusals ----------------------------------------------------------------------------------------


def test_a_missing_method_is_one_line_exit_2_and_nothing_written(tmp_path, capsys):
    folder = make_field(tmp_path, methods=("fm", "otcfm", "cpd", "cbfm", "optprior"))
    out = tmp_path / "field.md"
    assert main(["field", str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no vpfm cell" in err and "bench run experiment=field" in err
    assert not out.exists()


def test_missing_cutmix_runs_are_refused_naming_the_metric(tmp_path):
    folder = make_field(tmp_path, remedies={"mixup": 0.6})
    with pytest.raises(BenchError, match=r"digits_lt has classifiers but no `bacc/cutmix`"):
        write_field(folder, tmp_path / "field.md")


def test_the_cli_writes_the_document_and_prints_the_answers(tmp_path, capsys):
    folder = make_field(tmp_path)
    out = tmp_path / "f.md"
    assert main(["field", str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"field report written to {out}: (a) synthetic2d: inconclusive at n = 3")
    text = out.read_text()
    assert (
        text.splitlines()[2].startswith("Generated on ")
        and f"by `bench field {folder.as_posix()} --out" in text
    )
    assert "This is not the paper's protocol" in text
