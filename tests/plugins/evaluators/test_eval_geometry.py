"""Transport-geometry evaluator: hand computations, closed forms and the optprior pass-through."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from bench.context import CellContext
from bench.dataset import Split
from bench.errors import BenchError
from bench.evaluators.geometry import STANDARD, Source, TransportGeometry, coupling_geometry
from bench.methods.optprior import OptPrior
from bench.prior import Prior


def _cell(tmp_path, latents, labels, prior=None, n_classes=3):
    """A CellContext with only what the geometry evaluator reads."""
    dataset = SimpleNamespace(
        n_classes=n_classes, class_names=[f"c{i}" for i in range(n_classes)], kind="vector"
    )
    train = Split(x=latents, y=labels)
    return CellContext(
        dataset,
        train,
        train,
        synthetic=train,
        out_dir=tmp_path / "cell",
        seed=0,
        latents=latents,
        prior=prior,
    )


def _collinear(counts=(40, 20, 6), dim=5, seed=0):
    """Latents x1 = m_c + r_i u_c: displacements from m_c all point along u_c, with norms r_i."""
    rng = np.random.default_rng(seed)
    means, units = rng.standard_normal((len(counts), dim)), rng.standard_normal((len(counts), dim))
    units /= np.linalg.norm(units, axis=1, keepdims=True)
    labels = np.repeat(np.arange(len(counts)), counts)
    radii = rng.uniform(0.5, 3.0, len(labels))
    x1 = means[labels] + radii[:, None] * units[labels]
    return (
        torch.tensor(x1, dtype=torch.float32),
        torch.tensor(labels),
        torch.tensor(means, dtype=torch.float32),
        radii,
    )


def _hand_radial(radii, labels, rows):
    """Sample-weighted within-class population std and cv of the radii, over `rows`."""
    r, y = radii[rows], labels[rows]
    w = {c: np.mean(y == c) for c in np.unique(y)}
    std = sum(w[c] * r[y == c].std() for c in w)
    cv = sum(w[c] * r[y == c].std() / r[y == c].mean() for c in w)
    return std, cv, r.mean()


def test_collinear_displacements_from_a_class_mean_source_match_the_hand_computation(tmp_path):
    x1, labels, means, radii = _collinear()
    prior = Prior(tensors={"class_mean": means}, info={"sigma": 1e-7})  # cpd-like: N(m_c, sigma^2 I)
    m = TransportGeometry().evaluate(_cell(tmp_path, x1, labels, prior))
    y = labels.numpy()
    for suffix, rows in (("", np.ones(len(y), bool)), ("/tail", y == 2)):  # counts 40, 20, 6: tail = [2]
        std, cv, mean = _hand_radial(radii, y, rows)
        assert m[f"geom_alignment{suffix}"] == pytest.approx(1.0, abs=1e-5)
        assert m[f"geom_radial_std{suffix}"] == pytest.approx(std, rel=1e-4)
        assert m[f"geom_radial_cv{suffix}"] == pytest.approx(cv, rel=1e-4)
        assert m[f"geom_path_length{suffix}"] == pytest.approx(mean, rel=1e-4)
    # the N(0, I) reference sees random directions: clearly worse aligned than the class-mean source
    assert m["geom_alignment_gauss"] < 0.9
    assert set(m) <= set(TransportGeometry.higher_is_better)
    saved = json.loads((tmp_path / "cell" / "geometry.json").read_text())
    assert saved["metrics"] == m and saved["tail_classes"] == [2]
    assert saved["computed"]["geom/tail"]["source"] == "class_mean"


def _noncentral_chi_mean(dim: int, norm: float) -> float:
    """E||a - x0||, x0 ~ N(0, I_dim), ||a|| = norm: the mean of a non-central chi variable."""
    density = lambda s: np.sqrt(s) * stats.ncx2.pdf(s, dim, norm**2)  # noqa: E731
    return integrate.quad(density, 0, np.inf)[0]


@pytest.mark.parametrize("norm", [0.0, 3.0])
def test_standard_source_path_length_matches_the_closed_form(tmp_path, norm):
    dim, n = 8, 4000
    x1 = torch.zeros(n, dim)
    x1[:, 0] = norm
    m = TransportGeometry(max_rows=n).evaluate(
        _cell(tmp_path, x1, torch.zeros(n, dtype=torch.long), n_classes=1)
    )
    expected = _noncentral_chi_mean(dim, norm)
    if norm == 0.0:  # the chi distribution: E||x0|| = sqrt(2) Gamma((d + 1) / 2) / Gamma(d / 2)
        assert expected == pytest.approx(np.sqrt(2) * special.gamma((dim + 1) / 2) / special.gamma(dim / 2))
        spread = np.sqrt(dim - expected**2)  # std of a chi variable
        assert m["geom_radial_std_gauss"] == pytest.approx(spread, rel=0.05)
        assert m["geom_alignment_gauss"] < 0.1  # isotropic directions: the mean direction is weak
    se = 1.0 / np.sqrt(n)  # ||a - x0|| has std below 1
    assert m["geom_path_length_gauss"] == pytest.approx(expected, abs=4 * se)
    assert m["geom_path_length"] == m["geom_path_length_gauss"]  # no prior: the method's source is N(0, I)


def test_coupling_is_seeded_and_subsampled_rows_are_a_seeded_choice(tmp_path):
    x1, labels, means, _ = _collinear(counts=(300, 200, 100))
    a = coupling_geometry(x1, labels, STANDARD, seed=3)
    assert a == coupling_geometry(x1, labels, STANDARD, seed=3)
    assert a != coupling_geometry(x1, labels, STANDARD, seed=4)
    shifted = coupling_geometry(x1, labels, Source("class_mean", means, 1e-7), seed=3)
    assert shifted["alignment"] == pytest.approx(1.0, abs=1e-5) and a["alignment"] < shifted["alignment"]
    first = TransportGeometry(max_rows=100, seed=1).evaluate(_cell(tmp_path, x1, labels))
    again = TransportGeometry(max_rows=100, seed=1).evaluate(_cell(tmp_path, x1, labels))
    full = TransportGeometry(max_rows=600, seed=1).evaluate(_cell(tmp_path, x1, labels))
    assert first == again and first != full
    assert json.loads((tmp_path / "cell" / "geometry.json").read_text())["computed"]["geom_gauss"]["n"] == 600


RECORDED = {
    "geometry": {
        stage: {
            "alignment": a,
            "radial_std": 2.0 * a,
            "radial_cv": 0.1 * a,
            "path_length": 10 * a,
            "angular_overlap": 0.5 * a,
            "n": 66,
        }
        for stage, a in (("standard", 0.1), ("init", 0.3), ("optimised", 0.7))
    },
    "bayes_risk": {
        src: {
            "risk_class": r,
            "risk_class_se": 0.01,
            "risk_subclass": r / 2,
            "risk_subclass_se": 0.02,
            "reduction": r / 2,
            "reduction_se": 0.03,
            "n_mc": 200,
            "t_max": 0.95,
            **reliability,
        }
        for src, r, reliability in (
            (
                "standard",
                1.0,
                {"max_identity_gap": 1e-15, "ess": 40.0, "posterior_ess": 272.0, "reliable": True},
            ),
            # no recorded flag (an older record): judged here by bench.priors.bayes_risk.reliable
            ("learned", 0.4, {"max_identity_gap": 0.576, "ess": 1.2, "posterior_ess": 9.3}),
        )
    },
}


def test_recorded_prior_geometry_and_bayes_risk_are_passed_through(tmp_path):
    x1, labels, means, _ = _collinear()
    prior = Prior(
        tensors={"class_mean": means, "assignment": torch.zeros(len(labels), dtype=torch.long)}, info=RECORDED
    )
    m = TransportGeometry().evaluate(_cell(tmp_path, x1, labels, prior))
    for stage, suffix in (("optimised", ""), ("init", "/prior_init"), ("standard", "/prior_standard")):
        for stat in ("alignment", "radial_std", "radial_cv", "path_length", "angular_overlap"):
            assert m[f"geom_{stat}{suffix}"] == RECORDED["geometry"][stage][stat]
    for src in ("standard", "learned"):
        for key in ("risk_class", "risk_subclass", "reduction"):
            for se in ("", "_se"):
                assert m[f"bayes_risk/{src}/{key}{se}"] == RECORDED["bayes_risk"][src][key + se]
    assert m["bayes_risk/standard/ess"] == 40.0 and m["bayes_risk/standard/identity_gap"] == 1e-15
    assert m["bayes_risk/standard/reliable"] == 1.0
    assert m["bayes_risk/learned/ess"] == 1.2 and m["bayes_risk/learned/identity_gap"] == 0.576
    assert m["bayes_risk/learned/reliable"] == 0.0
    assert (
        "bayes_risk/learned/n_mc" not in m and "geom_path_length/tail" not in m
    )  # configs; no recorded tail
    assert {"geom_alignment_gauss", "geom_alignment_gauss/tail"} <= set(m)
    assert set(m) <= set(TransportGeometry.higher_is_better)
    hib = TransportGeometry.higher_is_better
    assert hib["geom_alignment"] and not hib["geom_radial_cv"] and not hib["geom_path_length/tail"]
    assert hib["bayes_risk/learned/reduction"] and not hib["bayes_risk/learned/risk_class"]
    assert hib["bayes_risk/learned/ess"] and hib["bayes_risk/learned/reliable"]
    assert not hib["bayes_risk/learned/identity_gap"]


def test_recorded_sources_are_compared_with_the_recorded_standard_source(tmp_path):
    x1, labels, means, _ = _collinear()
    prior = Prior(tensors={"class_mean": means}, info=RECORDED)
    m = TransportGeometry().evaluate(_cell(tmp_path, x1, labels, prior))
    # optimised (a = 0.7) against the recorded N(0, I) with the same groups (a = 0.1), not geom_*_gauss
    assert m["geom_alignment_gain_vs_standard"] == pytest.approx(0.7 - 0.1)
    for stat in ("radial_std", "radial_cv", "path_length"):
        assert m[f"geom_{stat}_ratio_vs_standard"] == pytest.approx(7.0)
    assert not any(k.endswith("_vs_standard/tail") for k in m)  # the prior records no tail
    hib = TransportGeometry.higher_is_better
    assert hib["geom_alignment_gain_vs_standard"] and not hib["geom_path_length_ratio_vs_standard"]
    assert not hib["geom_radial_cv_ratio_vs_standard/tail"]
    assert set(m) <= set(hib)


def test_computed_sources_are_compared_with_the_gauss_reference(tmp_path):
    x1, labels, means, _ = _collinear()
    cpd = TransportGeometry().evaluate(
        _cell(tmp_path, x1, labels, Prior(tensors={"class_mean": means}, info={"sigma": 0.5}))
    )
    for part in ("", "/tail"):
        assert cpd[f"geom_alignment_gain_vs_standard{part}"] == pytest.approx(
            cpd[f"geom_alignment{part}"] - cpd[f"geom_alignment_gauss{part}"]
        )
        assert cpd[f"geom_path_length_ratio_vs_standard{part}"] == pytest.approx(
            cpd[f"geom_path_length{part}"] / cpd[f"geom_path_length_gauss{part}"]
        )
    assert cpd["geom_alignment_gain_vs_standard"] > 0 and cpd["geom_path_length_ratio_vs_standard"] < 1
    fm = TransportGeometry().evaluate(_cell(tmp_path, x1, labels))  # the method's source is N(0, I)
    assert fm["geom_alignment_gain_vs_standard"] == 0.0 and fm["geom_radial_cv_ratio_vs_standard/tail"] == 1.0


def test_a_real_optprior_prior_is_read_with_the_documented_names(tmp_path):
    x1, labels, _, _ = _collinear(counts=(40, 30, 24), dim=3)
    method = OptPrior(k_max=2, min_size=10, steps=20, risk_samples=20)
    prior = method.fit_prior(x1, labels, 3, seed=0)
    m = TransportGeometry().evaluate(_cell(tmp_path, x1, labels, prior))
    recorded = prior.info["geometry"]
    assert m["geom_alignment"] == pytest.approx(recorded["optimised"]["alignment"])
    assert m["geom_radial_std/prior_init"] == pytest.approx(recorded["init"]["radial_std"])
    assert m["bayes_risk/learned/reduction"] == pytest.approx(
        prior.info["bayes_risk"]["learned"]["reduction"]
    )
    for source in ("standard", "learned"):
        risk = prior.info["bayes_risk"][source]
        assert m[f"bayes_risk/{source}/ess"] == pytest.approx(risk["ess"])
        assert m[f"bayes_risk/{source}/identity_gap"] == pytest.approx(risk["max_identity_gap"])
        assert m[f"bayes_risk/{source}/reliable"] == float(risk["reliable"])
    for stage in ("", "/prior_init", "/prior_standard"):  # the three sources side by side
        assert {f"geom_{s}{stage}" for s in ("alignment", "radial_std", "radial_cv", "path_length")} <= set(m)
    assert m["geom_alignment_gain_vs_standard"] == pytest.approx(
        recorded["optimised"]["alignment"] - recorded["standard"]["alignment"]
    )
    assert set(m) <= set(TransportGeometry.higher_is_better)


def _hand_displacements(x1, labels, means, sigma, seed=0):
    """rho and <dhat, u_class> (u_class: normalised mean dhat of the class) in numpy float64."""
    eps = torch.randn(x1.shape, generator=torch.Generator().manual_seed(seed))
    x0 = sigma * eps if means is None else means[labels] + sigma * eps
    d = (x1 - x0).numpy().astype(np.float64)
    rho = np.linalg.norm(d, axis=1)
    dhat, y = d / rho[:, None], labels.numpy()
    units = np.stack([dhat[y == c].mean(axis=0) for c in range(int(y.max()) + 1)])
    units /= np.linalg.norm(units, axis=1, keepdims=True)
    return rho, np.einsum("ij,ij->i", dhat, units[y])


def test_histograms_of_path_length_and_alignment_match_numpy_on_the_same_rows(tmp_path):
    x1, labels, means, _ = _collinear(counts=(60, 30, 10))
    cell = _cell(tmp_path, x1, labels, Prior(tensors={"class_mean": means}, info={"sigma": 0.5}))
    m = TransportGeometry(bins=20).evaluate(cell)
    details = cell.details["geometry"]
    hists = details["histograms"]
    assert details["bins"] == 20 and set(hists) == {"method", "gauss"}
    assert hists["method"]["source"] == "class_mean" and hists["gauss"]["source"] == "standard"
    values = {
        "method": _hand_displacements(x1, labels, means, 0.5),
        "gauss": _hand_displacements(x1, labels, None, 1.0),
    }
    top = max(rho.max() for rho, _ in values.values())
    for key, (rho, cos) in values.items():
        h = hists[key]
        assert h["n"] == len(labels) and h["path_length"]["edges"] == pytest.approx(np.linspace(0, top, 21))
        assert h["path_length"]["counts"] == np.histogram(rho, bins=20, range=(0, top))[0].tolist()
        assert h["alignment"]["edges"] == pytest.approx(np.linspace(-1, 1, 21))
        assert h["alignment"]["counts"] == np.histogram(cos, bins=20, range=(-1, 1))[0].tolist()
    assert np.mean(values["method"][0]) == pytest.approx(
        m["geom_path_length"], rel=1e-6
    )  # same rows as metrics
    assert np.mean(values["gauss"][1]) == pytest.approx(m["geom_alignment_gauss"], rel=1e-6)
    json.dumps(details)  # stored in the record as is


def test_histograms_cover_the_subsampled_rows_and_only_the_gauss_reference_for_a_recorded_prior(tmp_path):
    x1, labels, means, _ = _collinear(counts=(300, 200, 100))
    cell = _cell(tmp_path, x1, labels, Prior(tensors={"class_mean": means}, info=RECORDED))
    TransportGeometry(max_rows=250).evaluate(cell)
    hists = cell.details["geometry"]["histograms"]
    assert set(hists) == {"gauss"}  # the prior records its own geometry: its source is not rebuilt here
    assert hists["gauss"]["n"] == 250 and sum(hists["gauss"]["path_length"]["counts"]) == 250
    assert sum(hists["gauss"]["alignment"]["counts"]) == 250
    with pytest.raises(BenchError, match="geometry.bins"):
        TransportGeometry(bins=0)


def test_a_subclass_prior_gets_its_own_histogram_from_its_learned_sources(tmp_path):
    """optprior's coupling x0 = mu_g + sigma_g * eps with g = c * K + k, alignment against its prototypes."""
    x1, labels, means, _ = _collinear(counts=(40, 30, 24), dim=3)
    method = OptPrior(k_max=2, min_size=10, steps=20, risk_samples=20)
    prior = method.fit_prior(x1, labels, 3, seed=0)
    cell = _cell(tmp_path, x1, labels, prior)
    TransportGeometry(bins=10).evaluate(cell)
    hist = cell.details["geometry"]["histograms"]["method"]
    t = prior.tensors
    g = (labels * 2 + t["assignment"]).numpy()
    eps = torch.randn(x1.shape, generator=torch.Generator().manual_seed(0)).numpy().astype(np.float64)
    d = x1.numpy() - (t["mu"].numpy()[g] + np.exp(t["log_sigma"].numpy())[g] * eps)
    rho = np.linalg.norm(d, axis=1)
    proto = t["prototype"].numpy() / np.linalg.norm(t["prototype"].numpy(), axis=1, keepdims=True)
    cos = np.einsum("ij,ij->i", d / rho[:, None], proto[g])
    edges = np.array(hist["path_length"]["edges"])
    assert hist["source"] == "subclass" and hist["n"] == len(labels)
    assert hist["path_length"]["counts"] == np.histogram(rho, bins=edges)[0].tolist()
    assert (
        hist["alignment"]["counts"] == np.histogram(np.clip(cos, -1, 1), bins=10, range=(-1, 1))[0].tolist()
    )
