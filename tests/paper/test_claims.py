"""`bench claims`: verdict rules on numbers with known answers, the document read back, partial grids."""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
from records_fixture import complete_record

from bench.cli import main
from bench.paper.claim_rules import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NOT_MEASURED,
    combine,
    fails,
    holds,
    inconclusive,
    not_measured,
)
from bench.paper.claims import CLAIM_DATASETS, CLAIM_METHODS, ClaimsOptions, claim_d1, claim_d2, write_claims
from bench.report.collect import load_experiment
from bench.store.gridfile import GridFile

IMAGE, VECTOR = ("phantom_lt", "digits_lt"), ("synthetic2d",)
METHODS = CLAIM_METHODS
# how much better than fm each method is, as a fraction of the metric's scale
EDGE = {"fm": 0.0, "cbfm": 0.01, "cpd": 0.02, "optprior": 0.10, "optprior_sub": 0.04, "optprior_opt": 0.05}
HIGHER = {
    "fid/tail": False,
    "irs_inf/tail": True,
    "swd/tail": False,
    "bacc": True,
    "macro_f1": True,
    "bacc/no_aug": True,
    "macro_f1/no_aug": True,
}


def noise(dataset: str, method: str, seed: int, metric: str) -> float:
    """Small deterministic per-cell noise (so differences have spread, as the t-test needs)."""
    rng = np.random.default_rng(zlib.crc32(f"{dataset}/{method}/{seed}/{metric}".encode()))
    return float(rng.normal(0, 0.003))


def tail_metrics(dataset: str, method: str, seed: int) -> dict:
    """Tail scores: optprior better than every baseline by a margin far above the noise."""
    e = EDGE[method]
    if dataset in VECTOR:
        swd = 1.0 - e + 0.01 * seed + noise(dataset, method, seed, "swd")
        return {"swd/tail": swd, "swd/tail@source": swd + 0.5}
    fid = 50.0 * (1 - e) + seed + 50 * noise(dataset, method, seed, "fid")
    irs = 0.2 + e + noise(dataset, method, seed, "irs")
    bacc = 0.6 + e / 2 + 0.01 * seed + noise(dataset, method, seed, "bacc")
    return {
        "fid/tail": fid,
        "fid/tail@source": fid + 30.0,
        "irs_inf/tail": irs,
        "irs_inf/tail@source": irs - 0.05,
        "bacc": bacc,
        "macro_f1": bacc - 0.05,
        "bacc/no_aug": 0.58 + 0.01 * seed,
        "macro_f1/no_aug": 0.53 + 0.01 * seed,
    }


def risk_metrics(seed: int, source: str = "standard") -> dict:
    """The empirical and the Gaussian-mixture estimate of one source (and, for N(0, I), the random-partition
    null: the induced reduction above every one of 20 random partitions)."""
    out = {}
    for p in (f"bayes_risk/{source}/", f"bayes_risk/gmm/{source}/"):
        out |= {
            p + "reduction": 0.3 + 0.01 * seed,
            p + "reduction_se": 0.02,
            p + "risk_class": 1.5 + 0.1 * seed,
            p + "risk_subclass": 1.2,
        }
    out |= {
        f"bayes_risk/{source}/reliable": 1.0,
        f"bayes_risk/{source}/ess": 40.0 + seed,
        f"bayes_risk/{source}/identity_gap": 0.01,
    }
    if source == "standard":
        r = "bayes_risk/random/standard/"
        out |= {
            r + "reduction_mean": 0.1,
            r + "reduction_std": 0.01,
            r + "excess": 0.2 + 0.01 * seed,
            r + "p_rank": 1 / 21,
            r + "n_partitions": 20.0,
        }
    return out


def geometry_metrics(seed: int) -> dict:
    """The optimised source ahead of its initialisation, the length-matched source and N(0, I)."""
    out = {}
    for stat, own, std, init, matched in (
        ("alignment", 0.6, 0.1, 0.3, 0.4),
        ("radial_std", 0.5, 1.8, 1.1, 0.9),
        ("radial_cv", 0.1, 0.3, 0.2, 0.18),
        ("path_length", 5.0, 6.0, 5.5, 5.0),
    ):
        out |= {
            f"geom_{stat}": own + 0.01 * seed,
            f"geom_{stat}/prior_standard": std + 0.01 * seed,
            f"geom_{stat}/prior_init": init + 0.001 * seed,
            f"geom_{stat}/prior_matched": matched,
            f"geom_{stat}_se": 0.001,
        }
    return out


def metrics_of(dataset: str, method: str, seed: int) -> dict:
    m = tail_metrics(dataset, method, seed)
    if method in ("optprior", "optprior_sub"):
        m |= risk_metrics(seed) | risk_metrics(seed, "learned")
    if method in ("optprior", "optprior_opt"):
        m |= geometry_metrics(seed)
    return m


def make_record(dataset: str, method: str, seed: int, metrics: dict) -> dict:
    return complete_record(
        {
            "schema_version": 1,
            "status": "ok",
            "experiment": "claims",
            "dataset": dataset,
            "method": method,
            "seed": seed,
            "metrics": metrics,
            "higher_is_better": {k: v for k, v in HIGHER.items() if k in metrics},
            "config_hash": f"h-{dataset}-{method}-{seed}",
            "git_hash": "0123abcd",
            "timings_s": {"total": 10.0 + seed},
            "train": {
                "steps": 100,
                "converged": True,
                "convergence": {"converged": True, "rel_change": 0.01, "threshold": 0.02, "window": 20},
            },
            "config": f"method = '{method}'",
            "created": f"2026-11-26T00:00:0{seed}+0000",
        }
    )


def make_claims(root: Path, datasets=CLAIM_DATASETS, methods=METHODS, seeds=(0, 1, 2)) -> Path:
    """An experiment folder `<root>/claims` with grid.json and one record per cell."""
    folder = Path(root) / "claims"
    grid = GridFile("claims")
    for d in datasets:
        for m in methods:
            for s in seeds:
                declared = {k: v for k, v in HIGHER.items() if (k == "swd/tail") == (d in VECTOR)}
                grid.add(d, m, s, f"h-{d}-{m}-{s}", metrics=declared)
                write(folder, make_record(d, m, s, metrics_of(d, m, s)))
    (folder / "grid.json").write_text(json.dumps(grid.to_json()))
    return folder


def write(folder: Path, record: dict) -> None:
    cell = folder / record["dataset"] / record["method"] / f"seed{record['seed']}"
    cell.mkdir(parents=True, exist_ok=True)
    (cell / "record.json").write_text(json.dumps(record))


def edit(folder: Path, dataset: str, method: str, change) -> None:
    """Apply change(record) to every record of (dataset, method)."""
    for path in sorted((folder / dataset / method).glob("seed*/record.json")):
        rec = json.loads(path.read_text())
        change(rec)
        path.write_text(json.dumps(rec))


def report(folder: Path, tmp_path: Path, **options) -> tuple[str, dict]:
    """The written document and {claim key: section}."""
    out, sections = write_claims(folder, tmp_path / "claims.md", ClaimsOptions(**options))
    return out.read_text(), {s.key: s for s in sections}


def section(text: str, title_start: str) -> str:
    """The text of one `## ` section."""
    start = text.index(f"\n## {title_start}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def table_rows(text: str, header_start: str) -> list[list[str]]:
    """Cells of the first Markdown table after a header line starting with `header_start`."""
    lines = text.split("\n")
    i = next(i for i, ln in enumerate(lines) if ln.startswith("| " + header_start))
    rows = []
    for ln in lines[i + 2 :]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip("|").split(" | ")])
    return rows


def dataset_part(text: str, dataset: str) -> str:
    """The `#### dataset` part of a claim section."""
    start = text.index(f"#### {dataset}")
    end = text.find("#### ", start + 1)
    return text[start : end if end >= 0 else None]


def parse_mean_std(cell: str) -> tuple[float, float]:
    m = re.fullmatch(r"(\S+) ± (\S+)", cell)
    return float(m.group(1)), float(m.group(2))


def values(folder: Path, dataset: str, method: str, metric: str, seeds=(0, 1, 2)) -> np.ndarray:
    return np.array(
        [
            json.loads((folder / dataset / method / f"seed{s}/record.json").read_text())["metrics"][metric]
            for s in seeds
        ]
    )


# ---- the rules on numbers -------------------------------------------------------------------------


def test_combine_a_counterexample_refutes_and_unmeasured_datasets_are_named():
    assert combine({"a": holds(3, ""), "b": inconclusive(3, "")}).label == "inconclusive at n = 3"
    assert combine({"a": holds(3, ""), "b": not_measured()}).word == HOLDS
    assert "not measured on b" in combine({"a": holds(3, ""), "b": not_measured()}).why
    assert combine({"a": holds(3, ""), "b": combine({})}).word == HOLDS
    refuted = combine({"a": holds(3, ""), "b": fails(3, "a counterexample")})
    assert refuted.word == FAILS and "b" in refuted.why
    assert combine({"a": not_measured()}).word == NOT_MEASURED


# ---- the verdicts from records ---------------------------------------------------------------------


def test_three_seeds_all_better_is_inconclusive_at_n_3_with_p_0125(tmp_path):
    text, claims = report(make_claims(tmp_path), tmp_path)
    for key in ("c", "d1", "d2"):
        for d in IMAGE:
            assert claims[key].verdicts[d].label == "inconclusive at n = 3"
        assert claims[key].overall.label == "inconclusive at n = 3"
    c = section(text, "Claim (c)")
    rows = table_rows(dataset_part(c, "digits_lt"), "metric | reference")
    # one-sided exact floor 1/2^3, Holm over 3 datasets x 3 references = 9 comparisons: min(1, 9 x 0.125)
    assert [row[5] for row in rows if row[0] == "FID tail (primary)"] == [
        "0.125 (Holm 1)"
    ] * 3  # fm, cbfm, cpd
    assert [row[5] for row in rows if row[0] == "IRS∞ tail"] == ["0.125"] * 3  # reported, not voted: no Holm
    assert "1/2^3 = 0.125 >= 0.00556: at least 8 seeds are needed" in c  # 1/2^8 < 0.05 / 9 <= 1/2^7
    assert "- IRS∞ tail: reported, not voted" in c
    assert "optprior better in" in c and "3/3" in c


@pytest.mark.parametrize("test", ["permutation", "ttest"])
def test_six_seeds_all_better_by_a_margin_hold(tmp_path, test):
    folder = make_claims(tmp_path, datasets=("phantom_lt",), seeds=range(6))
    text, claims = report(folder, tmp_path, test=test)
    assert claims["c"].verdicts["phantom_lt"].word == HOLDS  # 1/2^6 < 0.05 / 3 references
    assert claims["c"].overall.word == HOLDS  # synthetic2d and digits_lt never ran: not measured
    assert "not measured on synthetic2d, digits_lt" in claims["c"].overall.why
    exp, options = load_experiment(folder), ClaimsOptions(test=test)
    d1, d2 = claim_d1(exp, options), claim_d2(exp, options)
    assert d1.verdicts["phantom_lt"].word == HOLDS and d2.verdicts["phantom_lt"].word == HOLDS
    rows = table_rows("\n".join(d1.body), "metric | reference")
    assert {r[1] for r in rows} == {"no augmentation"} and {r[0] for r in rows} == {
        "bAcc (primary)",
        "macro-F1",
    }
    assert {r[1] for r in table_rows("\n".join(d2.body), "metric | reference")} == {"fm", "cbfm", "cpd"}


def test_a_baseline_significantly_better_does_not_hold_and_is_named(tmp_path):
    folder = make_claims(tmp_path, datasets=("phantom_lt",), seeds=range(6))

    def cpd_wins(rec):
        rec["metrics"]["fid/tail"] -= 20.0

    edit(folder, "phantom_lt", "cpd", cpd_wins)
    text, claims = report(folder, tmp_path)
    v = claims["c"].verdicts["phantom_lt"]
    # cpd better in all 6 seeds: one-sided p = 1/64, Holm over 3 references: 3/64 = 0.0469 < 0.05
    assert v.word == FAILS
    assert v.why == "better than optprior at one-sided p < 0.05, Holm over 3 comparisons: cpd (p = 0.04688)"
    assert claims["c"].overall.word == FAILS
    assert "- FID tail (primary): **does not hold** (better than optprior" in text


def test_a_baseline_better_in_every_one_of_3_seeds_is_not_a_refutation(tmp_path):
    folder = make_claims(tmp_path, datasets=("phantom_lt",))
    edit(
        folder,
        "phantom_lt",
        "cpd",
        lambda rec: rec["metrics"].update({"fid/tail": rec["metrics"]["fid/tail"] - 20}),
    )
    _, claims = report(folder, tmp_path)
    v = claims["c"].verdicts["phantom_lt"]
    assert v.label == "inconclusive at n = 3" and "vs cpd: mean difference 1" in v.why  # +16: cpd ahead


def test_an_unreliable_empirical_estimate_is_a_cross_check_and_never_decides_a(tmp_path):
    folder = make_claims(tmp_path, datasets=("phantom_lt",))

    def shaky(rec):
        if rec["seed"] == 1:
            rec["metrics"] |= {"bayes_risk/standard/reliable": 0.0, "bayes_risk/standard/ess": 3.2}

    edit(folder, "phantom_lt", "optprior", shaky)
    text, claims = report(folder, tmp_path)
    assert claims["a"].verdicts["phantom_lt"].word == HOLDS  # the GMM estimate against random partitions
    assert "unreliable (ess 3.2)" in section(text, "Claim (a)")


def test_bayes_and_geometry_claims_hold_on_clear_data_and_fail_when_reversed(tmp_path):
    folder = make_claims(tmp_path, datasets=("synthetic2d", "phantom_lt"), seeds=range(6))

    def no_gain(
        rec,
    ):  # induced = random partitions exactly; alignment below the initialisation's in every seed
        m = rec["metrics"]
        m["bayes_risk/gmm/standard/reduction"] = m["bayes_risk/random/standard/reduction_mean"] = 0.1
        m["bayes_risk/random/standard/p_rank"] = 0.5
        m["geom_alignment"] = 0.0

    for m in ("optprior", "optprior_sub", "optprior_opt"):
        edit(folder, "phantom_lt", m, no_gain)
    _, claims = report(folder, tmp_path)
    assert (
        claims["a"].verdicts["synthetic2d"].word == HOLDS
        and claims["b"].verdicts["synthetic2d"].word == HOLDS
    )
    assert (
        claims["a"].verdicts["phantom_lt"].word == FAILS and claims["b"].verdicts["phantom_lt"].word == FAILS
    )
    assert claims["a"].verdicts["digits_lt"].word == NOT_MEASURED
    assert claims["d1"].verdicts["synthetic2d"] is None  # vector data: no classifier, out of scope


# ---- the document -----------------------------------------------------------------------------------


def test_tables_read_back_equal_the_record_values(tmp_path):
    folder = make_claims(tmp_path)
    text, _ = report(folder, tmp_path)
    c = section(text, "Claim (c)")
    phantom = dataset_part(c, "phantom_lt")
    rows = {r[0]: r[1:] for r in table_rows(phantom, "method | FID tail")}
    for method in METHODS:
        for j, metric in enumerate(("fid/tail", "irs_inf/tail")):
            mean, std = parse_mean_std(rows[method][j])
            v = values(folder, "phantom_lt", method, metric)
            assert mean == pytest.approx(v.mean(), rel=1e-3) and std == pytest.approx(v.std(ddof=1), rel=1e-2)
        mean, _ = parse_mean_std(rows[f"{method} (source only)"][0])  # the source-only line
        assert mean == pytest.approx(values(folder, "phantom_lt", method, "fid/tail@source").mean(), rel=1e-3)
    flow = {
        r[0]: r[1:] for r in table_rows(phantom[phantom.index("What the flow adds") :], "method | FID tail")
    }
    assert set(flow) == {"optprior", "fm"} and parse_mean_std(flow["optprior"][0])[0] == pytest.approx(-30.0)
    seeds = table_rows(section(text, "Claim (a)"), "dataset | seed")
    first = next(
        r for r in seeds if r[:2] == ["digits_lt", "2"]
    )  # optprior's: optprior_sub's is the same GMM
    assert float(first[3].split(" ± ")[0]) == pytest.approx(
        values(folder, "digits_lt", "optprior", "bayes_risk/gmm/standard/reduction")[2]
    )


def test_comparison_rows_give_per_seed_differences_and_the_t_interval(tmp_path):
    folder = make_claims(tmp_path, datasets=("digits_lt",))
    text, _ = report(folder, tmp_path)
    row = next(
        r
        for r in table_rows(section(text, "Claim (d1)"), "metric | reference")
        if r[:2] == ["bAcc (primary)", "no augmentation"]
    )
    d = values(folder, "digits_lt", "optprior", "bacc") - values(
        folder, "digits_lt", "optprior", "bacc/no_aug"
    )
    per_seed = [float(x.split(": ")[1]) for x in row[3].split(", ")]
    assert per_seed == pytest.approx(d, rel=1e-3)
    mean, low, high = map(float, re.findall(r"-?[\d.]+(?:e-?\d+)?", row[4]))
    half = 4.302652729911275 * d.std(ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert (mean, low, high) == pytest.approx((d.mean(), d.mean() - half, d.mean() + half), rel=1e-3)


def test_provenance_commands_commits_and_wall_time(tmp_path):
    folder = make_claims(tmp_path, datasets=("phantom_lt", "synthetic2d"))
    text, _ = report(folder, tmp_path)
    assert f"bench run experiment=claims results_dir={tmp_path.as_posix()}" in text
    assert f"bench report {folder.as_posix()} --out {folder.as_posix()}/report" in text
    assert f"bench claims {folder.as_posix()} --out {(tmp_path / 'claims.md').as_posix()}" in text
    assert "`0123abcd` (36 cells)" in text
    per_dataset = 6 * (10 + 11 + 12)
    assert f"{2 * per_dataset:,} s" in text and f"  - phantom_lt: {per_dataset:,} s" in text


def test_training_done_by_an_earlier_process_is_stated_not_hidden(tmp_path):
    folder = make_claims(tmp_path, datasets=("phantom_lt",))
    text, _ = report(folder, tmp_path)
    assert "Not included" not in text  # every record's training happened in the process that wrote it
    edit(folder, "phantom_lt", "fm", lambda rec: rec["train"].update({"seconds": 500.0}))  # reused backbone
    edit(
        folder,
        "phantom_lt",
        "cpd",
        lambda rec: (rec["train"].update({"seconds": 300.0}), rec["timings_s"].update({"train": 100.0})),
    )  # resumed
    text, _ = report(folder, tmp_path)
    assert "Not included: 2,100 s (0 h 35 min) of training done by an earlier process for 6 cell(s)" in text


def test_default_commands_are_the_documented_ones(tmp_path, monkeypatch):
    make_claims(tmp_path / "results", datasets=("phantom_lt",))
    monkeypatch.chdir(tmp_path)
    assert main(["claims", "results/claims", "--out", "docs/claims.md"]) == 0
    text = (tmp_path / "docs/claims.md").read_text()
    for command in (
        "bench run experiment=claims\n",
        "bench report results/claims --out results/claims/report\n",
        "by `bench claims results/claims --out docs/claims.md`.\n",
    ):
        assert command in text


def test_the_analysis_block_survives_regeneration(tmp_path):
    folder = make_claims(tmp_path, datasets=("phantom_lt",))
    out = tmp_path / "claims.md"
    text, _ = report(folder, tmp_path)
    assert text.split("\n")[4:6] == ["<!-- analysis -->", "<!-- /analysis -->"]  # empty, under the date line
    block = "<!-- analysis -->\nOur reading: *three seeds* cannot confirm (c).\n\n| kept | table |\n<!-- /analysis -->"
    out.write_text(text.replace("<!-- analysis -->\n<!-- /analysis -->", block))
    edit(folder, "phantom_lt", "fm", lambda rec: rec["metrics"].update({"fid/tail": 99.0}))
    again, _ = report(folder, tmp_path)
    assert again.split("\n")[4 : 4 + len(block.split("\n"))] == block.split("\n")
    assert "| fm | 99 ± 0 |" in again and again.count("<!-- analysis -->") == 1  # the rest is regenerated


def test_missing_cells_are_reported_and_verdicts_use_what_exists(tmp_path):
    folder = make_claims(tmp_path, datasets=("phantom_lt",), methods=("fm", "cbfm", "optprior"))
    (folder / "phantom_lt/cbfm/seed2/record.json").unlink()
    (folder / "phantom_lt/cbfm/seed2/failure.json").write_text(json.dumps({"reason": "loss is nan"}))
    text, claims = report(folder, tmp_path)
    grid = section(text, "Grid")
    assert "`phantom_lt/cbfm/seed2` (missing): no record: the cell failed (loss is nan)" in grid
    assert "`phantom_lt/cpd`: not in the experiment's grid (never run)" in grid
    assert "`synthetic2d/optprior`: not in the experiment's grid (never run)" in grid
    fid = {
        r[1]: r
        for r in table_rows(section(text, "Claim (c)"), "metric | reference")
        if r[0] == "FID tail (primary)"
    }
    assert fid["cbfm"][2] == "2" and fid["cpd"][8] == "no paired seeds"
    assert claims["c"].verdicts["phantom_lt"].label == "inconclusive at n = 2"  # two seeds paired with cbfm
    assert "; not measured against cpd)" in text
    assert (
        claims["b"].verdicts["phantom_lt"].label == "inconclusive at n = 3"
    )  # optprior alone; 3 seeds: p >= 1/8
    assert claims["b"].verdicts["synthetic2d"].word == NOT_MEASURED


def test_a_folder_without_grid_json_is_read_from_its_records(tmp_path):
    folder = make_claims(tmp_path, datasets=("phantom_lt",))
    (folder / "grid.json").unlink()
    text, claims = report(folder, tmp_path)
    assert "(no grid.json: axes from the records found)" in text
    assert claims["c"].verdicts["phantom_lt"].label == "inconclusive at n = 3"


def test_unconverged_training_is_listed_and_qualifies_claims_c_and_d(tmp_path):
    folder = make_claims(tmp_path, datasets=("phantom_lt", "digits_lt"))

    def stalled(rec):
        if rec["seed"] == 1:
            rec["train"] = {
                "steps": 100,
                "converged": False,
                "convergence": {"converged": False, "rel_change": 0.0731, "threshold": 0.02, "window": 20},
            }

    edit(folder, "phantom_lt", "cpd", stalled)
    text, _ = report(folder, tmp_path)
    adequacy = section(text, "Training adequacy")
    assert table_rows(adequacy, "dataset | method | seed") == [
        ["phantom_lt", "cpd", "1", "7.31%", "2%", "20"]
    ]
    glance = {r[0][:3]: r[1:] for r in table_rows(section(text, "Verdicts"), "claim")}
    assert glance["(c)"][0] == "inconclusive at n = 3 ‡" and glance["(c)"][1] == "inconclusive at n = 3"
    assert glance["(a)"][0] == "holds"  # a property of the prior: training does not qualify it


def test_figures_bench_report_wrote_are_linked_relative_to_the_document(tmp_path):
    folder = make_claims(tmp_path, datasets=("phantom_lt",))
    text, _ = report(folder, tmp_path)
    assert "holds no report yet" in section(text, "Figures")
    figures = folder / "report/figures"
    figures.mkdir(parents=True)
    for name in ("samples_phantom_lt.png", "geometry_phantom_lt.png"):
        (figures / name).write_bytes(b"png")
    (folder / "report/index.md").write_text("# report")
    text, _ = report(folder, tmp_path)
    links = re.findall(r"\]\(([^)]+)\)", section(text, "Figures"))
    assert links == [
        "claims/report/index.md",
        "claims/report/figures/samples_phantom_lt.png",
        "claims/report/figures/geometry_phantom_lt.png",
    ]
    assert all((tmp_path / link).is_file() for link in links)


def test_a_folder_without_records_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "claims").mkdir()
    assert main(["claims", str(tmp_path / "claims"), "--out", str(tmp_path / "c.md")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench: error: ") and err.count("\n") == 1 and "holds no bench records" in err
    assert not (tmp_path / "c.md").exists()
    assert main(["claims", str(tmp_path / "nowhere")]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["claims", str(tmp_path / "claims"), "--test", "bootstrap"])
    assert exc.value.code == 2


def test_the_cli_writes_the_report_and_prints_the_verdicts(tmp_path, capsys):
    folder = make_claims(tmp_path, datasets=("phantom_lt",))
    assert (
        main(["claims", str(folder), "--out", str(tmp_path / "c.md"), "--test", "ttest", "--alpha", "0.1"])
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith(
        f"claims report written to {tmp_path / 'c.md'}: (a) holds; (b) inconclusive at n = 3; (c) "
    )
    assert "--test ttest --alpha 0.1" in (tmp_path / "c.md").read_text()


def test_the_claim_grid_is_the_claims_experiment_grid():
    import gin
    from bench.pipeline.assemble import RunRequest, expand_grid

    try:
        cells = expand_grid(RunRequest(experiment="claims"))
    finally:
        gin.clear_config()  # leave no bindings to later tests
    assert tuple(dict.fromkeys(c.method for c in cells)) == CLAIM_METHODS
    assert tuple(dict.fromkeys(c.dataset for c in cells)) == CLAIM_DATASETS


# ---- question (e): generative augmentation against the best remedy ---------------------------------


def add_remedies(folder: Path, remedies: dict, combined: dict) -> None:
    """Every image record gets `bacc/<remedy>` = value + 0.01 seed (the same shared runs in every method's
    record of a seed) and `bacc/aug+<remedy>` = its own bAcc + shift."""
    for path in sorted(folder.glob("*/*/seed*/record.json")):
        rec = json.loads(path.read_text())
        if "bacc" not in rec["metrics"]:
            continue
        m, s = rec["metrics"], rec["seed"]
        for name, value in remedies.items():
            m[f"bacc/{name}"], m[f"macro_f1/{name}"] = value + 0.01 * s, value - 0.05 + 0.01 * s
        for name, shift in combined.items():
            m[f"bacc/aug+{name}"] = m["bacc"] + shift + noise(rec["dataset"], rec["method"], s, name)
            m[f"macro_f1/aug+{name}"] = m[f"bacc/aug+{name}"] - 0.05
        path.write_text(json.dumps(rec))


def test_question_e_names_the_best_remedy_and_a_combination_that_beats_it(tmp_path):
    folder = make_claims(tmp_path, datasets=("phantom_lt", "synthetic2d"), seeds=range(6))
    # optprior's bAcc is ~0.65 + 0.01 seed; the best remedy (crt) sits 0.02 above it, reweight on top of
    # optprior's synthetic set 0.05 above optprior alone
    add_remedies(folder, {"reweight": 0.60, "crt": 0.67}, {"reweight": 0.05})
    text, claims = report(folder, tmp_path, test="ttest")
    e = section(text, "Claim (e)")
    assert "Best remedy by mean bAcc: **crt**" in e
    v = claims["e"].verdicts["phantom_lt"]
    assert v.word == HOLDS and v.why.startswith("optprior + reweight better than crt (real data only)")
    assert "(Bonferroni over 12 candidates)" in v.why  # 6 methods, each alone and + reweight
    rows = {r[0]: r for r in table_rows(dataset_part(e, "phantom_lt"), "candidate | n")}
    assert set(rows) == {m for m in METHODS} | {f"{m} + reweight" for m in METHODS}
    diffs = values(folder, "phantom_lt", "optprior", "bacc/aug+reweight", range(6)) - values(
        folder, "phantom_lt", "optprior", "bacc/crt", range(6)
    )
    assert float(rows["optprior + reweight"][3].split(" ")[0]) == pytest.approx(diffs.mean(), abs=1e-3)
    scores = {r[0]: r for r in table_rows(dataset_part(e, "phantom_lt"), "classifier | bAcc")}
    assert {"no augmentation", "crt (real data only)", "reweight (real data only)"} <= set(scores)
    assert claims["e"].verdicts["synthetic2d"] is None  # vector data: no classifiers, out of scope


def test_question_e_does_not_hold_when_the_best_remedy_wins_every_seed(tmp_path):
    folder = make_claims(tmp_path, datasets=("phantom_lt",))
    add_remedies(folder, {"focal": 0.95}, {})
    _, claims = report(folder, tmp_path)
    v = claims["e"].verdicts["phantom_lt"]
    assert v.word == FAILS and "focal (real data only) better than every generative candidate" in v.why


def test_question_e_is_not_measured_without_remedy_runs(tmp_path):
    _, claims = report(make_claims(tmp_path, datasets=("phantom_lt",)), tmp_path)
    assert claims["e"].verdicts["phantom_lt"].word == "not measured"


def test_any_candidate_must_pass_alpha_over_the_number_of_candidates():
    from bench.metrics.significance import Comparison
    from bench.paper.claim_rules import any_beats_verdict

    def cmp(p, diff=0.02):
        return Comparison(
            n=6, mean_diff=diff, diffs=tuple((s, diff) for s in range(6)), p=p, significant=p < 0.05
        )

    # p = 0.03 < 0.05 would count alone; with two candidates each is held to 0.025
    assert any_beats_verdict({"a": cmp(0.03)}, "crt", True, "ttest", 0.05).word == HOLDS
    assert (
        any_beats_verdict({"a": cmp(0.03), "b": cmp(0.4, -0.01)}, "crt", True, "ttest", 0.05).word
        == INCONCLUSIVE
    )
    assert any_beats_verdict({"a": cmp(0.02), "b": cmp(0.4, -0.01)}, "crt", True, "ttest", 0.05).word == HOLDS
    losing = {"a": cmp(0.01, -0.02), "b": cmp(0.01, -0.03)}  # the reference wins every seed against both
    assert any_beats_verdict(losing, "crt", True, "ttest", 0.05).word == FAILS


def test_the_provenance_names_each_host_layout_with_its_cell_count():
    """CPU numbers depend on the kernel level and thread count (docs/reproducibility.md): the
    report says which ran how many cells, and says so when an old record did not record them."""
    from bench.paper.claims_provenance import host_line

    new = {
        "host": {"device": "cpu", "cpu": "AMD EPYC", "cpu_capability": "AVX512", "torch_threads": 1},
        "versions": {"torch": "2.13.0+cpu"},
    }
    two = {**new, "host": {**new["host"], "torch_threads": 2}}
    old = {"host": {"device": "cpu", "torch_threads": 1}, "versions": {"torch": "2.13.0+cpu"}}
    line = host_line([new, new, two, old])
    assert line.startswith("- Run on: CPU AMD EPYC (AVX512), torch 2.13.0+cpu, 1 thread (2 cell(s)); ")
    assert "CPU AMD EPYC (AVX512), torch 2.13.0+cpu, 2 threads (1 cell(s))" in line
    assert (
        "CPU model not recorded (kernel level not recorded), torch 2.13.0+cpu, 1 thread (1 cell(s))" in line
    )
