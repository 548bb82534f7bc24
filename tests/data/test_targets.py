"""Augmentation targets: ULT / LT / MT / Head grouping and synthetic counts (NOTES section 3)."""

import math

import pytest

from bench.config.data import AugmentationTargets
from bench.data.targets import augmentation_plan
from bench.errors import BenchError


def test_groups_and_counts_match_a_hand_computation():
    names = ["No Finding", "A", "B", "C", "D", "E"]
    counts = [50000, 2000, 500, 60, 15, 0]  # n_ref = 2000 (largest finding)
    plan = augmentation_plan(AugmentationTargets(), counts, names)
    assert [t.group for t in plan] == ["untouched", "Head", "Head", "LT", "ULT", "ULT"]
    # q: 500/2000 = 0.25 -> Head; 60/2000 = 0.03 -> LT, up to 200; 15/2000 = 0.0075 -> ULT, up to 100
    assert [t.synthetic for t in plan] == [0, 0, 0, 200 - 60, 100 - 15, 100]
    assert plan[3].ratio == pytest.approx(0.03)


def test_mid_tail_gets_half_its_count_again():
    plan = augmentation_plan(AugmentationTargets(), [1000, 150, 51, 49, 200], ["X", "Y", "Z", "W", "V"])
    # thresholds are strict: q = 0.051 is MT, 0.049 is LT, exactly 0.2 is Head
    assert [t.group for t in plan] == ["Head", "MT", "MT", "LT", "Head"]
    assert [t.synthetic for t in plan] == [0, 75, 26, 100 - 49, 0]  # ceil(0.5 * 51) = 26


def test_reference_largest_counts_no_finding_as_the_dominant_class():
    names, counts = ["No Finding", "A", "B"], [10000, 2000, 50]
    finding = augmentation_plan(AugmentationTargets(), counts, names)
    largest = augmentation_plan(AugmentationTargets(reference="largest"), counts, names)
    assert finding[2].group == "LT" and finding[2].synthetic == 200 - 50  # 50/2000 = 0.025
    assert largest[2].group == "ULT" and largest[2].synthetic == math.ceil(0.05 * 10000) - 50
    assert largest[0].group == "untouched"


def test_bad_settings_are_one_line_errors():
    with pytest.raises(BenchError, match="reference"):
        AugmentationTargets(reference="max")
    with pytest.raises(BenchError, match="ult_below <= lt_below"):
        AugmentationTargets(ult_below=0.1, lt_below=0.05)
    with pytest.raises(BenchError, match="at least one class"):
        augmentation_plan(AugmentationTargets(), [5, 0], ["No Finding", "A"])
