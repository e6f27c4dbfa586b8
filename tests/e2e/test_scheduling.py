"""The real kube-scheduler with the shipped configurations calls the extender: real outcomes.

No kubelet runs: bound pods stay Pending but hold their resources in the scheduler's cache and in the
extender's view, which is all that placement needs.
"""

from __future__ import annotations

from pathlib import Path

from tests.e2e.harness import ControlPlane, Extender, Kube, start_scheduler, wait_for

H100 = "NVIDIA-H100-80GB-HBM3"
MIG_3G = "nvidia.com/mig-3g.40gb"
MIG_1G = "nvidia.com/mig-1g.10gb"


def test_small_slices_pack_and_a_later_large_demand_still_finds_room(
    plane: ControlPlane, kube: Kube, extender: Extender, schedulers: list[object], workdir: Path
) -> None:
    # Two nodes, one H100 each with two 3g instances. Spreading the first two 3g pods would leave no node
    # with two free 3g for the third pod, which asks for both on one node.
    kube.create_node("gpu-a", H100, config="all-3g.40gb")
    kube.create_node("gpu-b", H100, config="all-3g.40gb")
    schedulers.append(start_scheduler(plane, workdir, "extender", extender.url))
    kube.create_pod("small-1", {MIG_3G: 1})
    first = kube.wait_bound("small-1")
    kube.create_pod("small-2", {MIG_3G: 1})
    assert kube.wait_bound("small-2") == first  # packed onto the busy node
    kube.create_pod("large", {MIG_3G: 2})
    assert kube.wait_bound("large") == ({"gpu-a", "gpu-b"} - {first}).pop()


def test_a_pod_that_fits_nowhere_is_unschedulable_with_the_extenders_reason_and_a_verdict(
    plane: ControlPlane, kube: Kube, extender: Extender, schedulers: list[object], workdir: Path
) -> None:
    # The counted resources say there are two 3g instances; the exact annotation says one is used and the
    # other one is gone from the layout (1g@4 blocks 3g@4): only the extender can tell.
    annotation = {
        "version": "v1",
        "gpus": [
            {
                "index": 0,
                "product": H100,
                "instances": [
                    {"profile": "3g.40gb", "start": 0, "used": True},
                    {"profile": "1g.10gb", "start": 4},
                    {"profile": "1g.10gb", "start": 5},
                    {"profile": "1g.10gb", "start": 6},
                ],
            }
        ],
    }
    kube.create_node("gpu-a", H100, allocatable={MIG_3G: 2, MIG_1G: 3}, annotation=annotation)
    schedulers.append(start_scheduler(plane, workdir, "extender", extender.url))
    kube.create_pod("waiting", {MIG_3G: 1})
    condition = wait_for(
        "PodScheduled=False", lambda: (c := kube.scheduled_condition("waiting")) and c["status"] == "False" and c
    )
    assert condition["reason"] == "Unschedulable"  # never SchedulerError: Karpenter acts on this
    assert "MIG: not enough free instances for 1x 3g.40gb" in condition["message"]
    annotations = wait_for(
        "verdict annotation",
        lambda: (
            kube.pod("waiting")["metadata"].get("annotations", {}).get("mig-extender.io/verdict")
            and kube.pod("waiting")["metadata"]["annotations"]
        ),
    )
    assert annotations["mig-extender.io/verdict"] == "no-layout-fits"
    assert annotations["mig-extender.io/demand"] == "1x 3g.40gb"
    assert annotations["mig-extender.io/suggested-layout"] == "all-balanced"
    event = wait_for("event", lambda: [e for e in kube.events_for("waiting") if e["reason"] == "MigNoLayoutFits"])
    assert event[0]["type"] == "Warning" and "1x 3g.40gb" in event[0]["note"]


def test_deleting_pods_frees_room_and_the_pending_pod_schedules(
    plane: ControlPlane, kube: Kube, extender: Extender, schedulers: list[object], workdir: Path
) -> None:
    kube.create_node("gpu-a", H100, config="all-3g.40gb")
    schedulers.append(start_scheduler(plane, workdir, "extender", extender.url))
    kube.create_pod("one", {MIG_3G: 1})
    kube.create_pod("two", {MIG_3G: 1})
    kube.wait_bound("one")
    kube.wait_bound("two")
    kube.create_pod("three", {MIG_3G: 1})
    wait_for("three unschedulable", lambda: (c := kube.scheduled_condition("three")) and c["status"] == "False")
    kube.delete_pod("one")
    assert kube.wait_bound("three", timeout=60) == "gpu-a"
    # the verdict is cleared once the pod is bound
    wait_for(
        "verdict cleared",
        lambda: "mig-extender.io/verdict" not in (kube.pod("three")["metadata"].get("annotations") or {}),
    )


def test_the_exact_annotation_drives_decisions(
    plane: ControlPlane, kube: Kube, extender: Extender, schedulers: list[object], workdir: Path
) -> None:
    # Both nodes advertise two 3g instances by count. On gpu-a the annotation shows used 1g instances at
    # slices 3 and 4 of a dynamic GPU: neither 3g placement is free there.
    broken = {
        "version": "v1",
        "gpus": [
            {
                "index": 0,
                "product": H100,
                "mode": "dynamic",
                "instances": [{"profile": "1g.10gb", "start": 3}, {"profile": "1g.10gb", "start": 4}],
            }
        ],
    }
    clean = {"version": "v1", "gpus": [{"index": 0, "product": H100, "mode": "dynamic", "instances": []}]}
    kube.create_node("gpu-a", H100, allocatable={MIG_3G: 2, MIG_1G: 7}, annotation=broken)
    kube.create_node("gpu-b", H100, allocatable={MIG_3G: 2, MIG_1G: 7}, annotation=clean)
    schedulers.append(start_scheduler(plane, workdir, "extender", extender.url))
    for i in range(2):
        kube.create_pod(f"big-{i}", {MIG_3G: 1})
        assert kube.wait_bound(f"big-{i}") == "gpu-b"


def test_secondary_scheduler_serves_only_pods_that_ask_for_it(
    plane: ControlPlane, kube: Kube, extender: Extender, schedulers: list[object], workdir: Path
) -> None:
    kube.create_node("gpu-a", H100, config="all-balanced")
    schedulers.append(start_scheduler(plane, workdir, "secondary", extender.url))
    kube.create_pod("mine", {MIG_3G: 1}, scheduler="mig-scheduler")
    kube.create_pod("not-mine", {MIG_3G: 1})  # default-scheduler: nobody runs it here
    assert kube.wait_bound("mine") == "gpu-a"
    assert kube.node_of("not-mine") is None
    kube.create_pod("too-big", {"nvidia.com/mig-7g.80gb": 1}, scheduler="mig-scheduler")
    condition = wait_for(
        "too-big unschedulable", lambda: (c := kube.scheduled_condition("too-big")) and c["status"] == "False" and c
    )
    assert condition["reason"] == "Unschedulable"


def test_restarts_of_the_extender_and_the_apiserver_lose_nothing(
    plane: ControlPlane, kube: Kube, extender: Extender, schedulers: list[object], workdir: Path
) -> None:
    kube.create_node("gpu-a", H100, config="all-3g.40gb")
    kube.create_node("gpu-b", H100, config="all-3g.40gb")
    schedulers.append(start_scheduler(plane, workdir, "extender", extender.url))
    kube.create_pod("before", {MIG_3G: 1})
    first = kube.wait_bound("before")

    extender.restart()  # a new process rebuilds its view from a fresh list
    kube.create_pod("after-extender-restart", {MIG_3G: 1})
    assert kube.wait_bound("after-extender-restart") == first  # still packs: it knows "before"

    plane.restart_apiserver()
    kube.create_pod("after-apiserver-restart", {MIG_3G: 2})
    # the extender's watches reconnect by themselves; the only room for 2x 3g is the other node
    assert kube.wait_bound("after-apiserver-restart", timeout=90) == ({"gpu-a", "gpu-b"} - {first}).pop()
    kube.create_pod("no-room", {MIG_3G: 1})
    condition = wait_for(
        "no-room unschedulable", lambda: (c := kube.scheduled_condition("no-room")) and c["status"] == "False" and c
    )
    assert condition["reason"] == "Unschedulable"
    assert kube.node_of("no-room") is None  # never a wrong placement
