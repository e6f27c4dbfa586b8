"""The re-layout controller against an in-memory API server: one re-layout from start to end, and its guards."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from extender.controllers.relayout import (
    RelayoutController,
    generated_name,
)
from extender.kube.names import (
    RELAYOUT_CONFIG_ANNOTATION,
    RELAYOUT_FINISHED_LABEL,
    RELAYOUT_OUTCOME_ANNOTATION,
    RELAYOUT_PHASE_LABEL,
    RELAYOUT_TAINT,
)
from extender.model.catalog import model_named
from extender.model.fragmentation import parse_mix
from extender.model.migparted import parse_config
from extender.settings import RelayoutSettings
from extender.view.store import ClusterView, Kind
from tests.builders import pod
from tests.controllers.fake import H100, FakeApi, counts_for
from tests.support import Clock

MIG_7G = "nvidia.com/mig-7g.80gb"
MIG_3G = "nvidia.com/mig-3g.40gb"


def waiting_pod(name: str, resources: dict[str, int], verdict: str = "relayout") -> dict[str, Any]:
    raw = pod(name, limits={k: str(v) for k, v in resources.items()})
    raw["metadata"]["annotations"] = {
        "mig-extender.io/verdict": verdict,
        "mig-extender.io/since": "2026-01-01T00:00:00Z",
    }
    return raw


def setup(nodes: int = 2, *, mode: str = "on", **config: Any) -> tuple[ClusterView, FakeApi, Clock, RelayoutController]:
    clock = Clock()
    view = ClusterView(clock=clock.monotonic)
    api = FakeApi(view)
    api.add_config_map()
    view.replace(Kind.PODS, [])
    for i in range(nodes):
        api.add_node(f"gpu-{chr(ord('a') + i)}")
    settings = {"min_idle_s": 60.0, "settle_s": 5.0, "timeout_s": 600.0, "cooldown_s": 900.0, **config}
    controller = RelayoutController(
        view, api, RelayoutSettings(mode=mode, **settings), weights=lambda: parse_mix("uniform"), now=clock.wall
    )
    return view, api, clock, controller


def taints(api: FakeApi, node: str) -> list[str]:
    return [t["key"] for t in api.nodes[node]["spec"].get("taints") or []]


def labels(api: FakeApi, node: str) -> dict[str, str]:
    return dict(api.nodes[node]["metadata"]["labels"])


async def start_one(view: ClusterView, api: FakeApi, clock: Clock, controller: RelayoutController) -> str:
    """A 7g pod waits; the idle nodes have been idle long enough: one node gets tainted, returns its name."""
    view.apply(Kind.PODS, "ADDED", waiting_pod("large", {MIG_7G: 1}))
    await controller.reconcile()  # first sight of the idle GPUs
    assert controller.in_flight == {}
    clock.advance(61)
    await controller.reconcile()
    (node,) = controller.in_flight
    return node


def mig_manager(api: FakeApi, node: str, outcome: str = "success") -> None:
    """What MIG Manager does when the label changes: pending, then the new allocatable and success."""
    config = labels(api, node)["nvidia.com/mig.config"]
    api.set_node(node, {"metadata": {"labels": {"nvidia.com/mig.config.state": "pending"}}})
    if outcome == "success":
        mig_parted = parse_config({"version": "v1", "mig-configs": api.configs()})
        spec = mig_parted.resolve(config, model_named(H100), 0)
        assert spec is not None
        allocatable = {k: None for k in api.nodes[node]["status"]["allocatable"] if k.startswith("nvidia.com/mig-")}
        allocatable.update({p.resource_name: str(n) for p, n in spec.counts})
        api.set_node(node, {"status": {"allocatable": allocatable}})
    api.set_node(node, {"metadata": {"labels": {"nvidia.com/mig.config.state": outcome}}})


async def test_a_whole_idle_node_is_re_partitioned_for_a_waiting_pod_from_start_to_end() -> None:
    view, api, clock, controller = setup()
    node = await start_one(view, api, clock, controller)
    assert node == "gpu-a"
    name = api.nodes[node]["metadata"]["annotations"][RELAYOUT_CONFIG_ANNOTATION]
    assert re.fullmatch(r"mig-extender-gpu-a-[0-9a-f]{8}", name)
    # written into the ConfigMap beside every default config, per device
    configs = api.configs()
    assert configs[name] == [{"devices": [0], "mig-enabled": True, "mig-devices": {"7g.80gb": 1}}]
    assert "all-balanced" in configs and "all-3g.40gb" in configs
    # tainted, but the MIG Manager label is not changed before the re-check
    assert taints(api, node) == [RELAYOUT_TAINT]
    assert labels(api, node)["nvidia.com/mig.config"] == "all-3g.40gb"
    assert labels(api, node)[RELAYOUT_PHASE_LABEL] == "tainted"
    assert controller.note_for(view.pods["uid-large"]) is not None
    assert controller.note_for(view.pods["uid-large"]).node == node  # type: ignore[union-attr]
    assert ("Node", node, "MigRelayoutStarted", "Normal") in [e[:4] for e in api.events]
    assert ("Pod", "large", "MigRelayoutStarted", "Normal") in [e[:4] for e in api.events]

    await controller.reconcile()  # within the settle time: nothing yet
    assert labels(api, node)["nvidia.com/mig.config"] == "all-3g.40gb"
    clock.advance(5)
    await controller.reconcile()
    assert labels(api, node)["nvidia.com/mig.config"] == name
    assert labels(api, node)[RELAYOUT_PHASE_LABEL] == "applying"

    await controller.reconcile()  # MIG Manager has not started: the old "success" is not this one's
    assert taints(api, node) == [RELAYOUT_TAINT]
    mig_manager(api, node)
    await controller.reconcile()
    assert taints(api, node) == []
    assert RELAYOUT_PHASE_LABEL not in labels(api, node) and RELAYOUT_FINISHED_LABEL in labels(api, node)
    assert labels(api, node)["nvidia.com/mig.config"] == name
    assert api.nodes[node]["metadata"]["annotations"][RELAYOUT_OUTCOME_ANNOTATION].startswith("success ")
    assert controller.stats.outcomes == {"success": 1} and controller.stats.started == 1
    assert ("Pod", "large", "MigRelayoutSucceeded", "Normal") in [e[:4] for e in api.events]
    # the view now shows a 7g there: nothing more to plan
    await controller.reconcile()
    assert controller.in_flight == {} and controller.stats.started == 1

    # the config stays while the node uses it, and goes once no node does
    await controller.reconcile()
    assert name in api.configs()
    api.set_node(node, {"metadata": {"labels": {"nvidia.com/mig.config": "all-balanced"}}})
    await controller.reconcile()
    assert name not in api.configs() and "all-balanced" in api.configs()
    assert controller.stats.configs_collected == 1


async def test_failed_restores_the_previous_label_and_removes_the_taint() -> None:
    view, api, clock, controller = setup(nodes=1)
    node = await start_one(view, api, clock, controller)
    clock.advance(5)
    await controller.reconcile()
    mig_manager(api, node, "failed")
    await controller.reconcile()
    assert labels(api, node)["nvidia.com/mig.config"] == "all-3g.40gb"
    assert taints(api, node) == []
    assert controller.stats.outcomes == {"failed": 1}
    assert ("Node", node, "MigRelayoutFailed", "Warning") in [e[:4] for e in api.events]
    assert ("Pod", "large", "MigRelayoutFailed", "Warning") in [e[:4] for e in api.events]
    # cool-down: not tried again at once, though the pod still waits
    api.set_node(node, {"metadata": {"labels": {"nvidia.com/mig.config.state": "success"}}})
    clock.advance(100)
    await controller.reconcile()
    assert controller.in_flight == {}
    clock.advance(900)
    await controller.reconcile()
    assert list(controller.in_flight) == [node]


async def test_timeout_restores_the_previous_label() -> None:
    view, api, clock, controller = setup(nodes=1)
    node = await start_one(view, api, clock, controller)
    clock.advance(5)
    await controller.reconcile()
    api.set_node(node, {"metadata": {"labels": {"nvidia.com/mig.config.state": "pending"}}})
    clock.advance(600)
    await controller.reconcile()
    assert labels(api, node)["nvidia.com/mig.config"] == "all-3g.40gb" and taints(api, node) == []
    assert controller.stats.outcomes == {"timeout": 1}


async def test_a_pod_bound_during_the_settle_time_aborts_without_touching_the_label() -> None:
    view, api, clock, controller = setup(nodes=1)
    node = await start_one(view, api, clock, controller)
    api.bind(pod("sneaky", limits={MIG_3G: "1"}), node)  # chosen by kube-scheduler before the taint
    clock.advance(5)
    await controller.reconcile()
    assert labels(api, node)["nvidia.com/mig.config"] == "all-3g.40gb"
    assert taints(api, node) == []
    assert controller.stats.outcomes == {"aborted": 1}
    assert not any(p[1].get("metadata", {}).get("labels", {}).get("nvidia.com/mig.config") for p in api.patches)


async def test_busy_nodes_and_recently_idle_nodes_are_not_candidates() -> None:
    view, api, clock, controller = setup(nodes=2)
    api.bind(pod("user", limits={MIG_3G: "1"}), "gpu-a")
    view.apply(Kind.PODS, "ADDED", waiting_pod("large", {MIG_7G: 1}))
    await controller.reconcile()
    clock.advance(30)
    await controller.reconcile()
    assert controller.in_flight == {}  # gpu-b idle for 30 s < 60 s
    clock.advance(31)
    await controller.reconcile()
    assert list(controller.in_flight) == ["gpu-b"]
    assert "taints" not in api.nodes["gpu-a"]["spec"]


async def test_plan_only_annotates_and_exports_but_writes_nothing() -> None:
    view, api, _clock, controller = setup(nodes=1, mode="plan-only", min_idle_s=0.0)
    view.apply(Kind.PODS, "ADDED", waiting_pod("large", {MIG_7G: 1}))
    await controller.reconcile()
    note = controller.note_for(view.pods["uid-large"])
    assert note is not None and note.planned_only and note.node == "gpu-a"
    assert "plan-only" in note.reason
    assert controller.stats.planned == 1 and controller.in_flight == {}
    assert api.patches == [] and api.events == []
    assert not any(n.startswith("mig-extender-") for n in api.configs())


async def test_only_relayout_verdicts_count_and_limits_hold() -> None:
    view, api, clock, controller = setup(nodes=3, min_idle_s=0.0, max_concurrent=1, max_per_hour=2)
    view.apply(Kind.PODS, "ADDED", waiting_pod("nothing", {MIG_7G: 9}, verdict="no-layout-fits"))
    await controller.reconcile()
    assert controller.in_flight == {}
    for i in range(3):
        view.apply(Kind.PODS, "ADDED", waiting_pod(f"large-{i}", {MIG_7G: 1}))
    await controller.reconcile()
    assert len(controller.in_flight) == 1  # concurrency 1
    (node,) = controller.in_flight
    # the others wait for that one, whose note names it only for the pod it hosts
    notes = {uid: n.node for uid, n in controller.notes.items()}
    assert list(notes.values()) == [node]
    clock.advance(5)
    await controller.reconcile()
    mig_manager(api, node)
    await controller.reconcile()
    await controller.reconcile()
    assert controller.stats.started == 2
    (second,) = controller.in_flight
    clock.advance(5)
    await controller.reconcile()
    mig_manager(api, second)
    await controller.reconcile()
    await controller.reconcile()
    assert controller.stats.started == 2 and controller.stats.skipped["rate"] == 0  # no plan at the limit
    assert controller.in_flight == {}


async def test_configmap_conflicts_are_retried_and_other_configs_kept() -> None:
    view, api, _clock, controller = setup(nodes=1, min_idle_s=0.0)
    api.conflicts = 2
    view.apply(Kind.PODS, "ADDED", waiting_pod("large", {MIG_7G: 1}))
    await controller.reconcile()
    assert list(controller.in_flight) == ["gpu-a"]
    assert any(n.startswith("mig-extender-gpu-a-") for n in api.configs())


async def test_a_new_leader_takes_up_a_re_layout_in_progress() -> None:
    view, api, clock, controller = setup(nodes=1)
    node = await start_one(view, api, clock, controller)
    clock.advance(5)
    await controller.reconcile()
    successor = RelayoutController(view, api, controller.config, weights=lambda: parse_mix("uniform"), now=clock.wall)
    mig_manager(api, node)
    await successor.reconcile()
    assert taints(api, node) == [] and successor.stats.outcomes == {"success": 1}


async def test_a_follower_does_nothing() -> None:
    view, api, _clock, controller = setup(nodes=1, min_idle_s=0.0)
    controller.is_leader = lambda: False
    view.apply(Kind.PODS, "ADDED", waiting_pod("large", {MIG_7G: 1}))
    await controller.reconcile()
    assert api.patches == [] and controller.notes == {}


async def test_single_idle_gpu_of_a_busy_node_with_the_exact_layout() -> None:
    annotation = {
        "version": "v1",
        "gpus": [
            {"index": 0, "product": H100, "instances": [{"profile": "3g.40gb", "start": 0, "used": True},
                                                         {"profile": "3g.40gb", "start": 4}]},
            {"index": 1, "product": H100, "instances": [{"profile": "3g.40gb", "start": 0},
                                                         {"profile": "3g.40gb", "start": 4}]},
        ],
    }  # fmt: skip
    view, api, _clock, controller = setup(nodes=0, min_idle_s=0.0, single_gpus=True)
    api.add_node("busy", gpus=2, annotation=json.dumps(annotation))
    api.bind(pod("user", limits={MIG_3G: "1"}), "busy")
    view.apply(Kind.PODS, "ADDED", waiting_pod("large", {MIG_7G: 1}))
    await controller.reconcile()
    assert list(controller.in_flight) == ["busy"]
    name = api.nodes["busy"]["metadata"]["annotations"][RELAYOUT_CONFIG_ANNOTATION]
    assert api.configs()[name] == [
        {"devices": [0], "mig-enabled": True, "mig-devices": {"3g.40gb": 2}},  # the busy GPU as it is
        {"devices": [1], "mig-enabled": True, "mig-devices": {"7g.80gb": 1}},
    ]
    # without single_gpus the busy node is left alone
    view2, api2, _clock2, whole = setup(nodes=0, min_idle_s=0.0)
    api2.add_node("busy", gpus=2, annotation=json.dumps(annotation))
    view2.apply(Kind.PODS, "ADDED", waiting_pod("large", {MIG_7G: 1}))
    await whole.reconcile()
    assert whole.in_flight == {}


@pytest.mark.parametrize("node", ["gpu-a", "x" * 253, "ip-10-0-0-1.eu-west-1.compute.internal"])
def test_generated_names_are_label_values(node: str) -> None:
    name = generated_name(node, [{"devices": [0], "mig-enabled": True, "mig-devices": {"7g.80gb": 1}}])
    assert len(name) <= 63 and re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", name)
    assert name != generated_name(node, [{"devices": [0], "mig-enabled": True, "mig-devices": {"3g.40gb": 2}}])


def test_counts_helper_matches_the_default_config() -> None:
    assert counts_for(H100, "all-3g.40gb") == {MIG_3G: 2}


@pytest.mark.parametrize("rebalance", [True, False])
async def test_rebalance_re_partitions_an_idle_node_toward_the_mix_when_nothing_waits(rebalance: bool) -> None:
    # all-3g.40gb leaves a compute slice dead and serves a uniform mix badly
    _view, api, clock, controller = setup(nodes=2, rebalance=rebalance)
    await controller.reconcile()
    clock.advance(61)
    await controller.reconcile()
    if not rebalance:
        assert controller.in_flight == {} and api.patches == []
        return
    (node,) = controller.in_flight  # one at a time
    annotations = api.nodes[node]["metadata"]["annotations"]
    assert annotations["mig-extender.io/relayout-for"] == ""
    (event,) = [e for e in api.events if e[2] == "MigRelayoutStarted"]
    assert "toward the expected demand mix" in str(event)
    (entry,) = api.configs()[annotations[RELAYOUT_CONFIG_ANNOTATION]]
    assert entry["mig-devices"] != {"3g.40gb": 2}
    assert sum(model_named(H100).profile(p).compute_slices * n for p, n in entry["mig-devices"].items()) == 7
    clock.advance(5)
    await controller.reconcile()
    mig_manager(api, node)
    await controller.reconcile()
    assert controller.stats.outcomes == {"success": 1}


async def test_rebalance_waits_behind_pods_and_plan_only_writes_nothing() -> None:
    view, api, clock, controller = setup(nodes=2, rebalance=True, mode="plan-only", min_idle_s=0.0)
    await controller.reconcile()
    assert controller.stats.planned == 1 and api.patches == []
    assert not any(n.startswith("mig-extender-") for n in api.configs())
    view, api, clock, controller = setup(nodes=2, rebalance=True)
    node = await start_one(view, api, clock, controller)
    # the re-layout is for the waiting pod, not a rebalance
    assert api.nodes[node]["metadata"]["annotations"]["mig-extender.io/relayout-for"] == "default/large"


GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@pytest.mark.parametrize("tolerates", [True, False])
async def test_a_node_tainted_for_gpu_pods_is_re_partitioned_for_pods_that_tolerate_it(tolerates: bool) -> None:
    view, api, _clock, controller = setup(nodes=1, min_idle_s=0.0)
    api.set_node("gpu-a", {"spec": {"taints": [GPU_TAINT]}})
    waiting = waiting_pod("large", {MIG_7G: 1})
    if tolerates:
        waiting["spec"]["tolerations"] = [GPU_TOLERATION]
    view.apply(Kind.PODS, "ADDED", waiting)
    await controller.reconcile()
    if not tolerates:  # kube-scheduler would never place it there: nothing planned, nothing written
        assert controller.plans == [] and controller.in_flight == {} and api.patches == []
        return
    assert list(controller.in_flight) == ["gpu-a"] and controller.stats.skipped["node-changed"] == 0
    assert taints(api, "gpu-a") == ["nvidia.com/gpu", RELAYOUT_TAINT]  # the pool's taint is kept
    assert controller.note_for(view.pods["uid-large"]).node == "gpu-a"  # type: ignore[union-attr]


async def test_a_taint_the_waiting_pod_does_not_tolerate_added_after_the_plan_stops_the_start() -> None:
    view, api, _clock, controller = setup(nodes=1, min_idle_s=0.0)
    view.apply(Kind.PODS, "ADDED", waiting_pod("large", {MIG_7G: 1}))
    api.nodes["gpu-a"]["spec"]["taints"] = [GPU_TAINT]  # on the API server, not yet in the view
    await controller.reconcile()
    assert controller.in_flight == {} and controller.stats.skipped["node-changed"] == 1
    assert api.patches == []
