"""The warm-headroom planner: Poisson sizing per shape, the bound, and the arrival rate it reads."""

from __future__ import annotations

import math

import pytest

from extender.model.catalog import model_named
from extender.model.headroom import (
    ArrivalRate,
    HeadroomConfig,
    budget_slices,
    plan_headroom,
    poisson_quantile,
)

H100 = model_named("H100-80GB")


@pytest.mark.parametrize(
    ("mean", "coverage", "expected"),
    [
        (0.0, 0.9, 0),
        (0.1, 0.9, 0),  # P(N = 0) = 0.905 already covers
        (0.2, 0.9, 1),  # P(N = 0) = 0.819
        (1.0, 0.9, 2),  # P(N <= 1) = 0.736, P(N <= 2) = 0.920
        (10.0, 0.5, 10),
        (10.0, 0.99, 18),
        (10_000.0, 0.5, 10_000),  # the normal approximation, no underflow
    ],
)
def test_poisson_quantile(mean: float, coverage: float, expected: int) -> None:
    assert poisson_quantile(mean, coverage) == expected


def test_each_shape_gets_the_count_that_covers_its_arrivals() -> None:
    # 1 instance a minute over a 10-minute lead: 7 of 1g (mean 7), 3 of 7g (mean 3)
    config = HeadroomConfig(lead_time_s=600.0, coverage=0.9, max_gpus=100.0, max_fleet_share=1.0)
    plan = plan_headroom(H100, {"1g": 0.7, "7g": 0.3}, 1 / 60, config, fleet_gpus=10)
    assert plan.by_profile() == {"7g.80gb": poisson_quantile(3.0, 0.9), "1g.10gb": poisson_quantile(7.0, 0.9)}
    assert plan.compute_slices == 7 * poisson_quantile(3.0, 0.9) + poisson_quantile(7.0, 0.9)
    assert not plan.trimmed
    assert dict(plan.expected) == pytest.approx({"1g": 7.0, "7g": 3.0})
    assert plan.placeholders[0][0] == "7g.80gb"  # largest first


def test_weights_need_not_sum_to_one_and_unknown_shapes_are_ignored() -> None:
    config = HeadroomConfig(lead_time_s=600.0, max_gpus=100.0, max_fleet_share=1.0)
    one = plan_headroom(H100, {"3g": 1.0}, 0.01, config, 10)
    scaled = plan_headroom(H100, {"3g": 5.0, "9g": 5.0}, 0.01 * 2, config, 10)  # half of the rate is 9g
    assert one.placeholders == scaled.placeholders


def test_the_bound_keeps_the_placeholders_most_likely_needed() -> None:
    # 2 GPUs = 14 slices for what coverage asks: many 1g (mean 20), a few 7g (mean 1)
    config = HeadroomConfig(lead_time_s=100.0, coverage=0.9, max_gpus=2.0, max_fleet_share=1.0)
    plan = plan_headroom(H100, {"1g": 20.0, "7g": 1.0}, 0.21, config, fleet_gpus=1000)
    assert plan.trimmed
    assert plan.budget_slices == 14
    assert plan.compute_slices <= 14
    # the 1st to 14th 1g are needed with P >= 0.9 (mean 20), the first 7g with P = 1 - e^-1 = 0.63
    assert plan.by_profile() == {"1g.10gb": 14}


def test_a_smaller_profile_fills_what_a_larger_one_leaves() -> None:
    # 10 slices: one 7g (the likeliest), then 3 of 1g in the 3 slices left
    config = HeadroomConfig(lead_time_s=100.0, coverage=0.95, max_gpus=10 / 7, max_fleet_share=1.0)
    plan = plan_headroom(H100, {"7g": 0.9, "1g": 0.1}, 0.1, config, fleet_gpus=1000)
    assert plan.by_profile()["7g.80gb"] == 1
    assert plan.by_profile()["1g.10gb"] == 3
    assert plan.compute_slices == 10


@pytest.mark.parametrize(
    ("max_gpus", "share", "fleet_gpus", "slices"),
    [
        (8.0, 0.1, 40, 28),  # the share binds: 4 GPUs
        (8.0, 0.1, 1000, 56),  # max_gpus binds
        (8.0, 1.0, 0, 56),  # share 1: no share bound, even on an empty fleet
        (8.0, 0.1, 0, 0),  # an empty fleet: no headroom under a share bound
        (0.0, 0.5, 100, 0),
    ],
)
def test_budget_is_the_tighter_bound(max_gpus: float, share: float, fleet_gpus: int, slices: int) -> None:
    config = HeadroomConfig(lead_time_s=1.0, max_gpus=max_gpus, max_fleet_share=share)
    assert budget_slices(H100, config, fleet_gpus) == slices


def test_size_scales_the_expected_arrivals() -> None:
    base = HeadroomConfig(lead_time_s=600.0, max_gpus=100.0, max_fleet_share=1.0)
    double = HeadroomConfig(lead_time_s=600.0, max_gpus=100.0, max_fleet_share=1.0, size=2.0)
    assert plan_headroom(H100, {"2g": 1.0}, 0.01, double, 10).placeholders == (
        plan_headroom(H100, {"2g": 1.0}, 0.02, base, 10).placeholders
    )
    assert plan_headroom(H100, {"2g": 1.0}, 0.01, HeadroomConfig(600.0, size=0.0), 10).count == 0


def test_whole_gpus_hold_as_much_compute() -> None:
    config = HeadroomConfig(lead_time_s=600.0, max_gpus=100.0, max_fleet_share=1.0)
    plan = plan_headroom(H100, {"3g": 1.0}, 0.01, config, 10)  # mean 6 -> 9 of 3g at 0.9 = 27 slices
    assert plan.whole_gpus(H100) == math.ceil(plan.compute_slices / 7)


@pytest.mark.parametrize(
    "bad",
    [
        {"lead_time_s": -1.0},
        {"lead_time_s": 1.0, "coverage": 1.0},
        {"lead_time_s": 1.0, "coverage": 0.0},
        {"lead_time_s": 1.0, "max_fleet_share": 1.5},
        {"lead_time_s": 1.0, "max_gpus": -2.0},
        {"lead_time_s": 1.0, "size": float("nan")},
    ],
)
def test_bad_config_is_refused_by_name(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="headroom"):
        HeadroomConfig(**bad)


def test_arrival_rate_of_a_steady_stream() -> None:
    rate = ArrivalRate(half_life_s=600.0)
    for second in range(0, 36_000, 30):  # one 1g every 30 s for 10 hours
        rate.observe("1g", 1, float(second))
    assert rate.total_per_second(36_000.0) == pytest.approx(1 / 30, rel=0.05)


def test_arrival_rate_at_the_start_is_not_read_as_a_lull() -> None:
    rate = ArrivalRate(half_life_s=3600.0)
    for second in range(0, 600, 10):  # 6 a minute, for the first 10 minutes only
        rate.observe("7g", 1, float(second))
    assert rate.per_second(600.0)["7g"] == pytest.approx(0.1, rel=0.1)


def test_arrival_rate_decays_after_a_burst() -> None:
    rate = ArrivalRate(half_life_s=600.0)
    for second in range(0, 3600, 6):
        rate.observe("2g", 2, float(second))
    busy = rate.total_per_second(3600.0)
    assert rate.total_per_second(3600.0 + 600.0) == pytest.approx(busy / 2, rel=0.05)
    assert ArrivalRate().per_second(5.0) == {}
