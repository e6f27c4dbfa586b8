"""The headroom controller against the in-memory API: placeholders planned, created, replaced, trimmed."""

from __future__ import annotations

from typing import Any

import pytest

from extender.controllers.headroom import HEADROOM_LABEL, HeadroomController
from extender.settings import HeadroomSettings
from extender.view.store import ClusterView, Kind
from tests.builders import pod
from tests.controllers.fake import FakeApi
from tests.support import Clock

NS = "mig-extender"
MIG_3G = "nvidia.com/mig-3g.40gb"


def setup(**config: Any) -> tuple[ClusterView, FakeApi, Clock, HeadroomController]:
    clock = Clock()
    view = ClusterView(clock=clock.monotonic)
    api = FakeApi(view)
    api.add_config_map()
    view.replace(Kind.PODS, [])
    settings = HeadroomSettings(mode="on", namespace=NS, max_fleet_share=1.0, **config)
    controller = HeadroomController(view, api, settings, lambda: {"3g": 1.0}, clock=clock.monotonic)
    return view, api, clock, controller


def placeholders(api: FakeApi) -> list[dict[str, Any]]:
    return [p for p in api.namespaced_pods.values() if HEADROOM_LABEL in p["metadata"]["labels"]]


def arrive(view: ClusterView, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        view.apply(Kind.PODS, "ADDED", pod(f"w{n}", limits={MIG_3G: "1"}, uid=f"w{n}"))


async def test_no_arrivals_no_headroom_then_placeholders_for_what_comes() -> None:
    view, api, clock, controller = setup(size=1.0, lead_time_s=420.0)
    api.add_node("n1", "all-3g.40gb", gpus=8)
    await controller.reconcile()
    assert placeholders(api) == []
    arrive(view, 6)  # 6 of 3g at once: read over one second, a burst
    clock.advance(30)
    await controller.reconcile()
    made = placeholders(api)
    assert made, "a burst of 3g pods gets 3g placeholders"
    assert {p["spec"]["containers"][0]["resources"]["limits"][MIG_3G] for p in made} == {"1"}
    assert all(p["spec"]["priorityClassName"] == "mig-extender-headroom" for p in made)
    assert all(p["spec"]["terminationGracePeriodSeconds"] == 0 for p in made)
    assert all("tolerations" not in p["spec"] for p in made)  # none on disrupted or re-laid-out nodes
    assert len(made) * 3 <= 8 * 7  # within max_gpus (8) of compute
    assert controller.stats.planned == {"3g.40gb": len(made)}


async def test_a_preempted_placeholder_is_counted_and_replaced() -> None:
    view, api, _clock, controller = setup(lead_time_s=420.0)
    api.add_node("n1", "all-3g.40gb", gpus=8)
    arrive(view, 6)
    await controller.reconcile()
    made = placeholders(api)
    first = max(p["metadata"]["name"] for p in made)  # the fake names by count: its successor reuses the name
    api.namespaced_pods[(NS, first)]["spec"]["nodeName"] = "n1"  # kube-scheduler bound it
    await controller.reconcile()
    assert controller.stats.held[("3g.40gb", "bound")] == 1
    del api.namespaced_pods[(NS, first)]  # a real pod preempted it
    await controller.reconcile()
    assert controller.stats.preempted == 1
    assert len(placeholders(api)) == len(made)  # its successor waits for room (or a node)


async def test_when_the_plan_shrinks_pending_placeholders_go_first() -> None:
    view, api, clock, controller = setup(lead_time_s=420.0, rate_half_life_s=60.0)
    api.add_node("n1", "all-3g.40gb", gpus=8)
    arrive(view, 6)
    await controller.reconcile()
    made = placeholders(api)
    assert len(made) >= 2
    kept = made[0]["metadata"]["name"]
    api.namespaced_pods[(NS, kept)]["spec"]["nodeName"] = "n1"
    clock.advance(6000)  # 100 half-lives: the rate is gone, and so is the plan, pending ones first
    await controller.reconcile()
    assert placeholders(api) == []
    assert controller.stats.deleted == len(made)
    assert controller.stats.preempted == 0  # deleted by the controller, not preempted


async def test_no_mig_gpu_in_view_no_placeholder() -> None:
    view, api, _clock, controller = setup()
    arrive(view, 6)
    await controller.reconcile()
    assert placeholders(api) == []
    assert controller.plan is None


async def test_excluded_pools_are_kept_out_by_node_affinity() -> None:
    view, api, _clock, controller = setup(exclude_pools="scale-to-zero, spot")
    api.add_node("n1", "all-3g.40gb", gpus=8)
    arrive(view, 6)
    await controller.reconcile()
    (term,) = placeholders(api)[0]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [
        {"key": "karpenter.sh/nodepool", "operator": "NotIn", "values": ["scale-to-zero", "spot"]}
    ]


async def test_a_follower_does_nothing() -> None:
    view, api, _clock, controller = setup()
    controller.is_leader = lambda: False
    api.add_node("n1", "all-3g.40gb", gpus=8)
    arrive(view, 6)
    await controller.reconcile()
    assert placeholders(api) == []


def test_headroom_off_is_refused() -> None:
    with pytest.raises(ValueError, match="headroom mode"):
        HeadroomController(ClusterView(), FakeApi(), HeadroomSettings(), dict)


async def test_waits_are_timed_by_whether_a_placeholder_was_there_to_take() -> None:
    view, api, clock, controller = setup(lead_time_s=420.0)
    api.add_node("n1", "all-3g.40gb", gpus=8)
    await controller.reconcile()
    view.apply(Kind.PODS, "ADDED", pod("early", limits={MIG_3G: "1"}, uid="early"))  # nothing held yet
    await controller.reconcile()
    name = max(p["metadata"]["name"] for p in placeholders(api))
    api.namespaced_pods[(NS, name)]["spec"]["nodeName"] = "n1"
    clock.advance(30)
    await controller.reconcile()  # the placeholder is bound now
    view.apply(Kind.PODS, "ADDED", pod("late", limits={MIG_3G: "1"}, uid="late"))
    clock.advance(30)
    await controller.reconcile()
    for who in ("early", "late"):
        view.apply(Kind.PODS, "MODIFIED", pod(who, limits={MIG_3G: "1"}, uid=who, node_name="n1"))
    clock.advance(30)
    await controller.reconcile()
    assert dict(controller.stats.waits) == {"no": 1, "yes": 1}
    assert controller.stats.wait_seconds == {"no": 90.0, "yes": 30.0}
