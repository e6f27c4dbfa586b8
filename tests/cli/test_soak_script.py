"""scripts/soak.py: its figures (RSS slope after the warm-up, p99 windows, allocation growth), the side model's
fit sets, and its option errors. The soak itself runs against the real control plane in tests/e2e."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from extender.model.demand import PodDemand
from scripts import soak

REPO = Path(__file__).resolve().parents[2]


def site(name: str, line: int, size: int, count: int) -> list[Any]:
    return [f"{REPO}/extender/{name}", line, size, count]


@pytest.mark.parametrize(
    ("start", "end", "grew", "shrank"),
    [
        (  # grown, new, gone and unchanged sites
            {"sites": [site("a.py", 1, 1000, 10), site("b.py", 2, 5000, 5), site("c.py", 3, 64, 1)]},
            {"sites": [site("a.py", 1, 3048, 30), site("b.py", 2, 5000, 5), site("d.py", 4, 1024, 2)]},
            [("extender/a.py:1", 2.0, 20), ("extender/d.py:4", 1.0, 2)],
            [("extender/c.py:3", -0.1, -1)],
        ),
        (  # no start dump (a run shorter than its warm-up): everything live counts as grown
            None,
            {"sites": [site("a.py", 1, 2048, 3)]},
            [("extender/a.py:1", 2.0, 3)],
            [],
        ),
    ],
)
def test_allocation_growth_names_the_sites_that_grew(
    start: dict[str, Any] | None,
    end: dict[str, Any],
    grew: list[tuple[str, float, int]],
    shrank: list[tuple[str, float, int]],
) -> None:
    for dump in (start, end):
        if dump is not None:
            dump.update(traced_bytes=2**20, overhead_bytes=2**20, took_s=0.5)
    found = soak.allocation_growth(start, end)
    assert [(g["site"], g["kib"], g["blocks"]) for g in found["grew"]] == grew
    assert [(g["site"], g["kib"], g["blocks"]) for g in found["shrank"]] == shrank


def test_the_rss_slope_starts_after_the_warm_up_and_p99_compares_the_first_and_last_windows() -> None:
    figures = soak.Figures(duration_s=3600, warmup_s=600, steady_from_s=620)
    # RSS climbs during the warm-up, then 0.01 MiB a minute
    figures.rss = [(t, 100 + t / 10 if t < 620 else 162 + 0.01 * (t - 620) / 60) for t in range(0, 3601, 5)]
    figures.latency_at_s = [t / 10 for t in range(36000)]
    figures.latencies_ms = [10.0 if t < 6000 else 5.0 if t < 30000 else 12.0 for t in range(36000)]
    summary = figures.summary()
    assert summary["rss_slope_mib_per_min_after_warmup"] == pytest.approx(0.01, abs=1e-4)
    assert summary["rss_steady_from_s"] == 620
    assert summary["latency_ms_p99_first_window"] == 10.0
    assert summary["latency_ms_p99_last_window"] == 12.0
    assert summary["p99_last_over_first"] == 1.2


def test_fit_sets_follow_every_change_of_the_side_model() -> None:
    model = soak.SideModel()
    small, large = PodDemand(mig=(("1g.10gb", 1),)), PodDemand(mig=(("7g.80gb", 1),))
    model.add_node("a", "all-1g.10gb")
    model.add_node("b", "all-7g.80gb")

    def agrees() -> None:
        for demand in (small, large):
            assert model.fitting(demand) == {n for n in model.nodes if model.fits(n, demand)}

    agrees()
    assert model.fitting(small) == {"a"} and model.fitting(large) == {"b"}
    for i in range(8):
        model.hold("b", f"big-{i}", large)
    agrees()
    assert model.fitting(large) == set()
    model.release("b", "big-3")
    model.add_node("c", "all-balanced")
    agrees()
    assert model.fitting(large) == {"b"} and model.fitting(small) == {"a", "c"}
    model.remove_node("a")
    agrees()
    assert model.fitting(small) == {"c"}


@pytest.mark.parametrize(
    "args",
    [
        ["--duration", "0"],
        ["--duration", "nan"],
        ["--nodes", "-5"],
        ["--relist-every", "-1"],
        ["--warmup-s", "0"],
        ["--target-use", "1.5"],
    ],
)
def test_a_bad_option_exits_2_naming_it(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        soak.parse_args(args)
    assert exited.value.code == 2
    assert args[0] in capsys.readouterr().err


def test_the_defaults_keep_the_ten_minute_soak() -> None:
    args = soak.parse_args([])
    assert (args.duration, args.nodes, args.relist_every, args.tracemalloc, args.warmup_s) == (600, 100, 0, False, 600)
