"""The NFE-to-match case at smoke scale: keys, curve points recomputed by hand, the matching rule."""

import math
from pathlib import Path

import pytest
from PIL import Image

from bench.backbones.mlp import MLPBackbone
from bench.config.sample import SampleConfig
from bench.context import CellContext
from bench.dataset import Split
from bench.datasets.synthetic2d import Synthetic2D
from bench.evaluators.swd import SlicedWasserstein
from bench.methods.optprior import OptPrior, SubclassPrior
from bench.perf.nfe import FIGURE, METHODS, SCALE_SETTINGS, measure, nfe_to_match, summarise
from bench.pipeline.sampler import generate

SMOKE = SCALE_SETTINGS["smoke"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("nfe")
    return workdir, measure("smoke", workdir)


@pytest.mark.slow
def test_every_method_has_a_finite_curve_and_an_nfe_or_none(smoke):
    _, m = smoke
    assert set(m.keys["nfe_to_match"]) == set(SMOKE.datasets) == {"synthetic2d"}
    matches, curves = m.keys["nfe_to_match"]["synthetic2d"], m.details["curves"]["synthetic2d"]
    assert set(matches) == set(curves) == set(METHODS)
    for method, curve in curves.items():
        assert list(curve) == list(SMOKE.nfes)
        assert all(math.isfinite(v) and v >= 0 for v in curve.values())
        assert matches[method] is None or matches[method] in SMOKE.nfes
    reference = curves["fm"][SMOKE.reference_nfe]
    assert m.details["reference"]["synthetic2d"] == reference
    assert m.details["tol"] == 0.05 and m.details["metric"] == {"synthetic2d": "swd/tail"}


def test_curve_point_at_the_grid_nfe_is_the_records_metric(smoke):
    """The grid drew its own synthetic set at sample.nfe = 4: same noise, same evaluator, same number."""
    _, m = smoke
    for method, point in m.details["record_points"]["synthetic2d"].items():
        assert point["nfe"] == 4
        assert m.details["curves"]["synthetic2d"][method][4] == point["value"]


def test_curve_point_equals_a_direct_evaluator_call(smoke):
    """Rebuild optprior's set at NFE 2 from its stored backbone and prior, outside the grid's config."""
    workdir, m = smoke
    folder = Path(workdir) / "quick" / "synthetic2d" / "optprior" / "seed0"
    ds = Synthetic2D(n_max=400, n_test_per_class=50)
    train, test = ds.load("train"), ds.load("test")
    method = OptPrior()
    method.setup(ds.n_classes, SubclassPrior.load(folder / "prior"))
    backbone = MLPBackbone.from_pretrained(folder / "backbone")
    out = generate(
        method, backbone, [50] * ds.n_classes, (2,), 0, SampleConfig(nfe=2, init_reference=False)
    )  # the grid's batch size: same float32 sums
    synthetic = Split(x=out["z"], y=out["y"], subclass=out["subclass"])  # pixel encoder, scale 1: z is x
    ctx = CellContext(ds, train, test, synthetic, workdir / "direct", seed=0)
    expected = SlicedWasserstein().evaluate(ctx)["swd/tail"]
    assert m.details["curves"]["synthetic2d"]["optprior"][2] == pytest.approx(expected, rel=1e-9)


def test_figure_is_a_png(smoke):
    workdir, m = smoke
    assert m.files == [workdir / FIGURE]
    with Image.open(m.files[0]) as image:
        assert image.format == "PNG" and image.width > 100 and image.height > 100


def test_match_is_the_smallest_nfe_within_tolerance():
    curve = {1: 3.0, 2: 1.06, 4: 0.9, 8: 1.2, 16: 1.0}
    assert nfe_to_match(curve, 1.0, tol=0.05) == 4  # 1.06 > 1.05; 8 fails again, but 4 came first
    assert nfe_to_match(curve, 1.0, tol=0.1) == 2
    assert nfe_to_match(curve, 0.5, tol=0.05) is None
    assert nfe_to_match({1: 1.5, 2: 1.0}, 1.0, tol=0.5) == 1  # on the threshold counts as a match
    assert nfe_to_match({8: 1.0, 1: 2.0, 2: 0.5}, 1.0) == 2  # the order of the keys does not matter
    assert nfe_to_match({1: float("nan"), 2: 1.0}, 1.0) == 2  # a failed score never matches


def test_summary_of_hand_made_curves():
    curves = {
        "d": {
            "fm": {1: 4.0, 2: 2.0, 4: 1.0},
            "optprior": {1: 1.04, 2: 0.7, 4: 0.8},
            "cpd": {1: 9.0, 2: 8.0, 4: 7.0},
        }
    }
    references, matches, best = summarise(curves, reference_nfe=4, tol=0.05)
    assert references == {"d": 1.0}
    assert matches == {"d": {"fm": 4, "optprior": 1, "cpd": None}}
    assert best["d"]["cpd"] == {"nfe": 4, "value": 7.0} and best["d"]["optprior"] == {"nfe": 2, "value": 0.7}
