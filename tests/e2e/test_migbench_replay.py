"""scripts/migbench_replay.py against the real kube-apiserver, kube-scheduler and ResourceClaim controller: small
traces whose placements and virtual times are known, in MIGBench's slice format and in the driver's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from extender.simulate.migbench import Job
from tests.support import load_script

pytestmark = pytest.mark.dra


replay = load_script("migbench_replay")


def job(name: str, arrival_ms: int, memory_gb: int, percent: int, run_s: int) -> Job:
    """A resource-bound job that runs ``run_s`` seconds on a profile of ``percent`` compute."""
    return Job(name, arrival_ms, compute_core_ms=percent * run_s * 1000, memory_mb=memory_gb * 1024)


def placements(outcome: Any) -> dict[str, tuple[int, str, int, int]]:
    return {r["job"]: (r["gpu"], r["profile"], r["start"], r["start_ms"]) for r in outcome.jobs}


# One GPU: four jobs fill its 7 slots (1g@0, 2g@2, 3g@4, 1g@1: the allocator's first fit in slice order, a
# 15 GB job on a 2g.20gb), the fifth waits for the first to finish at 250 + 60,000 + 100 ms.
FILL = [
    job("j0", 0, 10, 14, 60),
    job("j1", 0, 15, 28, 120),
    job("j2", 0, 40, 42, 180),
    job("j3", 0, 10, 14, 240),
    job("j4", 1_000, 10, 14, 30),
]


@pytest.mark.parametrize("backend", replay.BACKENDS)
def test_a_trace_replays_with_the_allocators_first_fit_and_migbench_virtual_times(tmp_path: Path, backend: str) -> None:
    config = replay.ReplayConfig("migbench", nodes=1, gpus=1)
    outcome = replay.replay_all(FILL, [backend], config, tmp_path)[backend]
    got = placements(outcome)
    assert {k: v[:3] for k, v in got.items() if k != "j4"} == {
        "j0": (0, "1g.10gb", 0),
        "j1": (0, "2g.20gb", 2),
        "j2": (0, "3g.40gb", 4),
        "j3": (0, "1g.10gb", 1),
    }
    assert {got[k][3] for k in ("j0", "j1", "j2", "j3")} == {250}
    assert got["j4"] == (0, "1g.10gb", 0, 60_350 + 250)  # j0's slot, at j0's finish
    metrics = outcome.metrics
    assert metrics["completed"] == 5
    assert metrics["wait_mean_s"] == pytest.approx((4 * 0.25 + 59.6) / 5)
    assert metrics["makespan_s"] == pytest.approx((250 + 240_000 + 100) / 1000)
    # The window is 30 s to the last arrival (1 s): empty, so the time-weighted figures have none.
    assert metrics["gpc_utilization"] is None
    assert metrics["scheduling_latency_mean_ms"] > 0


def test_migbench_format_has_no_memory_cap_and_the_driver_format_has(tmp_path: Path) -> None:
    """3g.40gb + 3g.40gb + 1g.10gb on one GPU: MIGBench's fake slices allow it (7 slots, no memory), NVIDIA's
    driver does not (the two 3g.40gb hold all 8 memory slices), so the 1g.10gb waits there."""
    trace = [job("a", 0, 40, 42, 100), job("b", 0, 40, 42, 200), job("c", 0, 10, 14, 50)]
    fake = replay.replay_all(trace, ["kube-scheduler"], replay.ReplayConfig("migbench", 1, 1), tmp_path / "m")
    assert placements(fake["kube-scheduler"]) == {
        "a": (0, "3g.40gb", 0, 250),
        "b": (0, "3g.40gb", 4, 250),
        "c": (0, "1g.10gb", 3, 250),
    }
    real = replay.replay_all(trace, ["kube-scheduler"], replay.ReplayConfig("nvidia", 1, 1), tmp_path / "n")
    got = placements(real["kube-scheduler"])
    assert got["a"] == (0, "3g.40gb", 0, 250) and got["b"] == (0, "3g.40gb", 4, 250)
    assert got["c"][3] == 250 + 100_000 + 100 + 250  # after a's finish, on the memory a held
    assert got["c"][1] == "1g.10gb"
