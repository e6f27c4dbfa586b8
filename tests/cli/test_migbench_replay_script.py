"""scripts/migbench_replay.py without a control plane: the slices it publishes, what each job asks, its errors."""

from __future__ import annotations

import pytest

from extender.model.catalog import model_named
from extender.simulate.migbench import Job
from tests.support import load_script

replay = load_script("migbench_replay")


@pytest.mark.parametrize(
    ("fmt", "pool_device", "where"),
    [
        ("migbench", ("n1", "gpu3-mig-3g40gb-4"), (1, 3, "3g.40gb", 4)),
        ("migbench", ("n0", "gpu0-mig-7g80gb-0"), (0, 0, "7g.80gb", 0)),
        ("nvidia", ("n1", "gpu-2-mig-1g20gb-15-6"), (1, 2, "1g.20gb", 6)),
        ("nvidia", ("n0", "gpu-0-mig-3g40gb-9-4"), (0, 0, "3g.40gb", 4)),
    ],
)
def test_each_published_device_is_found_where_its_counters_say(
    fmt: str, pool_device: tuple[str, str], where: tuple[int, int, str, int]
) -> None:
    table = replay.device_table(fmt, ["n0", "n1"], 4)
    assert table[pool_device] == replay.Device(*where)


def test_migbench_slices_are_its_two_per_node_with_13_devices_per_gpu() -> None:
    counters, devices = replay.migbench_slices("w", 2)
    assert (
        counters["spec"]["pool"] == devices["spec"]["pool"] == {"name": "w", "generation": 1, "resourceSliceCount": 2}
    )
    assert [s["name"] for s in counters["spec"]["sharedCounters"]] == ["gpu-0-counter-set", "gpu-1-counter-set"]
    assert len(counters["spec"]["sharedCounters"][0]["counters"]) == 7
    names = [d["name"] for d in devices["spec"]["devices"]]
    assert len(names) == 26 and names[:2] == ["gpu0-mig-1g10gb-0", "gpu0-mig-1g10gb-1"]
    assert names[7:13] == [
        "gpu0-mig-2g20gb-0",
        "gpu0-mig-2g20gb-2",
        "gpu0-mig-2g20gb-4",
        "gpu0-mig-3g40gb-0",
        "gpu0-mig-3g40gb-4",
        "gpu0-mig-7g80gb-0",
    ]


def test_a_job_asks_for_its_memory_or_the_profile_its_memory_resolves_to() -> None:
    model = model_named("H100-80GB")
    ten = Job("a", 0, compute_core_ms=14_000, memory_mb=10_240)
    memory = "device.attributes['gpu.nvidia.com'].type == 'mig' && device.capacity['gpu.nvidia.com'].memory"
    assert replay.selector(ten, "memory", "migbench", model) == f"{memory}.compareTo(quantity('10240Mi')) >= 0"
    assert replay.selector(ten, "memory", "nvidia", model) == f"{memory}.compareTo(quantity('9984Mi')) >= 0"
    fifteen = Job("b", 0, compute_core_ms=28_000, memory_mb=15_000)
    assert (
        replay.selector(fifteen, "profile", "nvidia", model)
        == "device.attributes['gpu.nvidia.com'].profile == '2g.20gb'"
    )
    claim, pod = replay.job_objects(ten, "true")
    (request,) = claim["spec"]["devices"]["requests"]
    assert request["exactly"] == {"deviceClassName": "mig.nvidia.com", "selectors": [{"cel": {"expression": "true"}}]}
    assert pod["spec"]["resourceClaims"] == [{"name": "gpu", "resourceClaimName": "a"}]


def test_too_large_a_job_is_a_clear_error() -> None:
    with pytest.raises(replay.ReplayError, match="no profile of the run holds 90000 MB"):
        replay.selector(
            Job("big", 0, compute_core_ms=1, memory_mb=90_000), "memory", "nvidia", model_named("H100-80GB")
        )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backends", "hami"], "unknown backend hami"),
        (["--backends", ","], "unknown backend (none)"),
        (["--settle-ms", "0"], "must be at least 1"),
        (["--trace", "/nonexistent/trace.jsonl"], "nonexistent"),
    ],
)
def test_bad_arguments_are_named(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        replay.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def _run(seed: int, **backends: dict[str, float]) -> dict[str, object]:
    keys = [key for key, _, _ in replay.SUMMARY_KEYS]
    return {
        "seed": seed,
        "format": "migbench",
        "workload": "migbench-offered",
        "backends": {
            name.replace("_", "-"): {k: figures.get(k, 1.0) for k in keys} for name, figures in backends.items()
        },
    }


def test_the_summary_pairs_runs_of_one_trace_and_takes_latency_ratios_within_one_run() -> None:
    together = _run(
        1,
        kube_scheduler={"gpc_utilization": 0.85, "scheduling_latency_mean_ms": 40.0},
        mig_extender={"gpc_utilization": 0.88, "scheduling_latency_mean_ms": 48.0},
    )
    alone = _run(2, kube_scheduler={"gpc_utilization": 0.90, "scheduling_latency_mean_ms": 10.0})
    other = _run(2, mig_extender={"gpc_utilization": 0.91, "scheduling_latency_mean_ms": 90.0})
    text = replay.summarize([together, alone, other])
    assert text.startswith("2 traces: seeds 1, 2")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()}
    assert rows["GPC utilisation %"].endswith("| 2.00 (1.00-3.00) |")  # seed 1: +3, seed 2: +1
    assert rows["mean scheduling ms"].endswith("| 1.20x (1.20-1.20) |")  # seed 2's runs were apart: left out
    with pytest.raises(ValueError, match="seed 2: two runs of mig-extender"):
        replay.merged([other, other])
