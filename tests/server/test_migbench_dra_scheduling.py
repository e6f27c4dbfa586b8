"""Filter and prioritize on nodes in MIGBench's fake DRA format: modelled as MIGBench-H100 GPUs, not an unknown
product, and answered as kube-scheduler's allocator allocates in the slice's order.

Two nodes of one GPU each: mb-a runs a pod holding 3g.40gb at slot 0, mb-b is idle.
"""

from __future__ import annotations

from typing import Any

from extender.model.dra.driver import DRIVER
from extender.model.dra.migbench_format import migbench_device_class, migbench_slices
from extender.model.migbench import MIGBENCH_H100
from extender.server.scheduling import SchedulingService
from tests.server.test_dra_scheduling import (
    claim,
    claim_pod,
    filter_,
    prioritize,
    profile,
    request,
    scheduling_of,
)

NODES = ("mb-a", "mb-b")
AT_LEAST_15000MI = f"device.capacity['{DRIVER}'].memory.compareTo(quantity('15000Mi')) >= 0"


def cluster() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [migbench_device_class()]
    for name in NODES:
        items.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": {"allocatable": {}}})
        items.extend(migbench_slices(name, 1))
    items.append(claim("held", request("mig"), allocated=("mb-a", "gpu0-mig-3g40gb-0")))
    running = claim_pod("run-mb-a", claims={"mig": "held"}, node_name="mb-a")
    running["status"]["phase"] = "Running"
    items.append(running)
    return items


def service(*extra: dict[str, Any]) -> SchedulingService:
    return scheduling_of([*cluster(), *extra])


def test_migbench_nodes_are_modelled_as_migbench_gpus() -> None:
    states = {n.name: n for n in service().view.node_states() if n.name in NODES}
    for node in states.values():
        assert node.unknown_product is None and node.warnings == ()
        assert [(g.model, g.dynamic) for g in node.gpus] == [(MIGBENCH_H100, True)]
    assert [str(i.placement) for i in states["mb-a"].gpus[0].instances] == ["3g.40gb@0"]
    assert states["mb-b"].gpus[0].is_idle


def test_a_claim_fits_where_the_allocator_finds_free_counters_and_packs_onto_the_busy_gpu() -> None:
    scheduling = service(claim("mid", request("mig", AT_LEAST_15000MI)))
    mid = claim_pod("p-mid", claims={"mig": "mid"})
    result = filter_(scheduling, mid, NODES)
    assert result["NodeNames"] == list(NODES)
    scores = prioritize(scheduling, mid, result["NodeNames"])
    assert scores["mb-a"] > scores["mb-b"], "the idle GPU stays idle"
    assumed = scheduling.view.assumed_devices("uid-p-mid")
    assert assumed is not None and assumed[0] == "mb-a"
    (devices,) = assumed[1].values()
    # slots 0-2 held: 2g.20gb at 0 and at 2 overlap them, the allocator's next device is 2g.20gb at 4
    assert devices == {(DRIVER, "mb-a", "gpu0-mig-2g20gb-4")}


def test_a_7g_claim_fails_on_the_busy_node() -> None:
    scheduling = service(claim("whole", request("mig", profile("7g.80gb"))))
    result = filter_(scheduling, claim_pod("p-whole", claims={"mig": "whole"}), NODES)
    assert result["NodeNames"] == ["mb-b"]
    assert "allocator finds no free devices" in result["FailedNodes"]["mb-a"]


def test_a_3g_and_a_1g_fill_the_busy_gpu_without_a_memory_cap() -> None:
    scheduling = service(claim("fill", request("mig3", profile("3g.40gb")), request("mig1", profile("1g.10gb"))))
    fill = claim_pod("p-fill", claims={"mig": "fill"})
    result = filter_(scheduling, fill, NODES)
    assert result["NodeNames"] == list(NODES)
    prioritize(scheduling, fill, result["NodeNames"])
    assumed = scheduling.view.assumed_devices("uid-p-fill")
    assert assumed is not None and assumed[0] == "mb-a"
    (devices,) = assumed[1].values()
    # beside 3g.40gb at 0: 3g.40gb at 4, then the first free 1g.10gb, at 3
    assert devices == {(DRIVER, "mb-a", "gpu0-mig-3g40gb-4"), (DRIVER, "mb-a", "gpu0-mig-1g10gb-3")}
