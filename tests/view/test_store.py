"""The cluster view: re-lists replace, events update, assumed placements expire."""

from __future__ import annotations

from typing import Any

from extender.model.demand import PodDemand
from extender.view.store import ClusterView, Kind
from tests.builders import pod
from tests.support import Clock


def gpu_node(name: str, rv: str = "1") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "resourceVersion": rv,
            "labels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB", "nvidia.com/gpu.count": "1"},
        },
        "status": {"allocatable": {"nvidia.com/mig-1g.5gb": "7"}},
    }


def used(view: ClusterView, name: str) -> int:
    state = view.node_state(name)
    assert state is not None
    return sum(i.used for g in state.gpus for i in g.instances)


def test_relist_replaces_the_store() -> None:
    view = ClusterView()
    view.replace(Kind.NODES, [gpu_node("a"), gpu_node("b")])
    view.replace(Kind.NODES, [gpu_node("b")])
    assert set(view.nodes) == {"b"} and view.node_state("a") is None


def test_binding_and_deleting_pods_changes_usage() -> None:
    view = ClusterView()
    view.replace(Kind.NODES, [gpu_node("a")])
    view.replace(Kind.PODS, [])
    p = pod("p", limits={"nvidia.com/mig-1g.5gb": 2})
    view.apply(Kind.PODS, "ADDED", p)
    assert used(view, "a") == 0
    view.apply(Kind.PODS, "MODIFIED", {**p, "spec": {**p["spec"], "nodeName": "a"}})
    assert used(view, "a") == 2
    finished = {**p, "spec": {**p["spec"], "nodeName": "a"}, "status": {"phase": "Succeeded"}}
    view.apply(Kind.PODS, "MODIFIED", finished)
    assert used(view, "a") == 0
    view.apply(Kind.PODS, "DELETED", finished)
    assert not view.pods


def test_node_state_is_cached_until_something_touches_the_node() -> None:
    view = ClusterView()
    view.replace(Kind.NODES, [gpu_node("a"), gpu_node("b")])
    a, b = view.node_state("a"), view.node_state("b")
    view.apply(Kind.NODES, "MODIFIED", gpu_node("a", rv="2"))
    assert view.node_state("a") is not a and view.node_state("b") is b


def test_assumed_placements_count_until_bound_or_expired() -> None:
    clock = Clock()
    view = ClusterView(clock=clock, assume_ttl_s=30)
    view.replace(Kind.NODES, [gpu_node("a")])
    view.assume("uid-p", "a", PodDemand(mig=(("1g.5gb", 3),)))
    assert used(view, "a") == 3
    clock.now += 31
    assert used(view, "a") == 0
    view.assume("uid-p", "a", PodDemand(mig=(("1g.5gb", 3),)))
    p = pod("p", limits={"nvidia.com/mig-1g.5gb": 3}, node_name="a")
    view.apply(Kind.PODS, "ADDED", p)
    assert used(view, "a") == 3  # counted once: the bound pod replaces the assumption


def test_an_assumed_placement_moves_with_the_next_answer_and_never_counts_twice() -> None:
    clock = Clock()
    view = ClusterView(clock=clock, assume_ttl_s=30)
    view.replace(Kind.NODES, [gpu_node("a"), gpu_node("b")])
    demand = PodDemand(mig=(("1g.5gb", 2),))
    view.assume("uid-p", "a", demand)
    view.assume("uid-q", "a", demand)
    assert (used(view, "a"), used(view, "b")) == (4, 0)
    view.assume("uid-p", "b", demand)  # the pod's next attempt chose b
    assert (used(view, "a"), used(view, "b")) == (2, 2)
    view.unassume("uid-q")
    assert (used(view, "a"), used(view, "b")) == (0, 2)
    clock.now += 31
    assert (used(view, "a"), used(view, "b")) == (0, 0)
    view.assume("uid-p", "a", demand)
    view.replace(Kind.PODS, [pod("p", limits={"nvidia.com/mig-1g.5gb": 2}, node_name="b")])
    assert (used(view, "a"), used(view, "b")) == (0, 2)  # a re-list that shows the pod bound ends its assumption


def test_malformed_objects_are_counted_not_fatal() -> None:
    view = ClusterView()
    view.replace(Kind.NODES, [{"metadata": {}}, gpu_node("a")])
    assert set(view.nodes) == {"a"} and view.counters.invalid_objects == 1


def test_bad_config_map_keeps_the_last_good_config() -> None:
    view = ClusterView()
    good = {
        "kind": "ConfigMap",
        "metadata": {"name": "default-mig-parted-config", "namespace": "gpu-operator"},
        "data": {"config.yaml": "version: v1\nmig-configs:\n  only:\n    - devices: all\n      mig-enabled: false\n"},
    }
    view.replace(Kind.CONFIG, [good])
    assert view.mig_parted.names() == ["only"]
    view.apply(Kind.CONFIG, "MODIFIED", {**good, "data": {"config.yaml": "version: v9"}})
    assert view.mig_parted.names() == ["only"] and view.counters.invalid_configs == 1
    view.apply(Kind.CONFIG, "DELETED", good)
    assert "all-balanced" in view.mig_parted.names()  # back to the GPU Operator's defaults
