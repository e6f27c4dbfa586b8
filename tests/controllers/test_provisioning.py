"""The provisioning loop against an in-memory API server: requests, arriving nodes, guards, caps, restarts."""

from __future__ import annotations

from typing import Any

import pytest

from extender.controllers.provisioning import (
    ProvisioningController,
    load_pools,
)
from extender.kube.names import (
    CAPACITY_ANNOTATION,
    CAPACITY_GUARDED_ANNOTATION,
    CAPACITY_REQUEST_LABEL,
    CAPACITY_REQUEST_SCHEDULER,
    DO_NOT_DISRUPT_ANNOTATION,
    PROVISIONING_ANNOTATION,
)
from extender.model.catalog import model_named
from extender.model.migparted import DEFAULT_CONFIG, MigPartedConfig, default_config_document, parse_config
from extender.model.provisioning import Pool, PoolsError
from extender.settings import ProvisionMode, ProvisionSettings, RequestResources
from extender.view.store import ClusterView, Kind
from tests.builders import pod
from tests.controllers.fake import FakeApi
from tests.support import Clock

A100 = "NVIDIA-A100-SXM4-80GB"
BALANCED = Pool("a100-balanced", model_named(A100), 8, "all-balanced", cost=2.0, max_nodes=2)
SMALL = Pool("a100-1g", model_named(A100), 8, "all-1g.10gb", cost=1.0, max_nodes=2)
MIG_3G = "nvidia.com/mig-3g.40gb"
MIG_1G = "nvidia.com/mig-1g.10gb"
NS = "mig-extender"


def unmet_pod(name: str, resources: dict[str, int], since: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    raw = pod(name, limits={k: str(v) for k, v in resources.items()})
    raw["metadata"]["annotations"] = {"mig-extender.io/verdict": "no-layout-fits", "mig-extender.io/since": since}
    return raw


def setup(
    mode: ProvisionMode = "requests", pools: tuple[Pool, ...] = (BALANCED, SMALL), **config: Any
) -> tuple[ClusterView, FakeApi, Clock, ProvisioningController]:
    clock = Clock()
    view = ClusterView(clock=clock.monotonic)
    api = FakeApi(view)
    api.add_config_map()
    api.config_maps[(NS, "mig-extender-pools")] = {"metadata": {"name": "mig-extender-pools", "uid": "pools-uid"}}
    view.replace(Kind.PODS, [])
    settings = {"debounce_s": 30.0, "protect_s": 600.0, "request_timeout_s": 300.0, **config}
    controller = ProvisioningController(
        view, api, ProvisionSettings(mode=mode, namespace=NS, **settings), pools, now=clock.wall
    )
    return view, api, clock, controller


async def tick(api: FakeApi, clock: Clock, controller: ProvisioningController, seconds: float = 10.0) -> None:
    clock.advance(seconds)
    api.now = clock.wall()
    await controller.reconcile()


def requests_of(api: FakeApi) -> list[dict[str, Any]]:
    return [p for p in api.namespaced_pods.values() if CAPACITY_REQUEST_LABEL in p["metadata"]["labels"]]


def karpenter_node(api: FakeApi, name: str, pool: Pool) -> None:
    """What Karpenter's node looks like before MIG Manager: pool label, mig.config label, whole GPUs."""
    api.nodes[name] = {
        "metadata": {
            "name": name,
            "labels": {"karpenter.sh/nodepool": pool.name, "nvidia.com/mig.config": pool.mig_config},
            "annotations": {},
        },
        "spec": {},
        "status": {"allocatable": {"nvidia.com/gpu": str(pool.gpus_per_node)}},
    }
    api.set_node(name, {})


def mig_manager(api: FakeApi, name: str, config: MigPartedConfig = DEFAULT_CONFIG) -> None:
    """MIG Manager applies the node's mig.config, and the device plugin (mixed strategy) registers what is
    left: each MIG instance, and ``nvidia.com/gpu`` for the GPUs left whole, "0" when every GPU is in MIG
    mode (the kubelet keeps a registered resource, at zero)."""
    mig_config = api.nodes[name]["metadata"]["labels"]["nvidia.com/mig.config"]
    advertised = Pool("mig-manager", model_named(A100), 8, mig_config).advertised(config)
    allocatable = {k: str(v) for k, v in advertised.items()}
    allocatable["nvidia.com/gpu"] = str(advertised.get("nvidia.com/gpu", 0))
    labels = {"nvidia.com/gpu.product": A100, "nvidia.com/gpu.count": "8", "nvidia.com/mig.config.state": "success"}
    api.set_node(name, {"metadata": {"labels": labels}, "status": {"allocatable": allocatable}})


def event_reasons(api: FakeApi) -> list[str]:
    return [e[2] for e in api.events]


async def test_from_unmet_pod_to_request_to_node_to_lifted_guard() -> None:
    view, api, clock, controller = setup()
    waiting = unmet_pod("big", {MIG_3G: 1}, since="2026-01-01T00:00:00Z")
    view.apply(Kind.PODS, "ADDED", waiting)

    await tick(api, clock, controller, 5)
    assert requests_of(api) == [], "younger than the debounce"

    await tick(api, clock, controller, 30)
    (request,) = requests_of(api)
    assert request["metadata"]["labels"][CAPACITY_REQUEST_LABEL] == "a100-balanced", "the only pool with 3g instances"
    assert request["metadata"]["ownerReferences"][0]["uid"] == "pools-uid"
    spec = request["spec"]
    assert spec["schedulerName"] == CAPACITY_REQUEST_SCHEDULER
    assert spec["nodeSelector"] == {"karpenter.sh/nodepool": "a100-balanced"}
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["containers"][0]["resources"]["requests"] == {  # the pool's instances: what its node registers
        MIG_1G: "16",
        "nvidia.com/mig-2g.20gb": "8",
        MIG_3G: "8",
    }
    (condition,) = request["status"]["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == ("PodScheduled", "False", "Unschedulable")
    assert "MigCapacityRequested" in event_reasons(api)
    assert not any(p.name == request["metadata"]["name"] for p in view.pending_mig_pods()), "not a MIG pod to us"

    await tick(api, clock, controller)
    assert len(requests_of(api)) == 1, "idempotent"

    karpenter_node(api, "ip-10-0-0-1", BALANCED)
    await tick(api, clock, controller)
    assert requests_of(api) == [], "its node arrived"
    annotations = api.nodes["ip-10-0-0-1"]["metadata"]["annotations"]
    assert annotations[DO_NOT_DISRUPT_ANNOTATION] == "true"
    assert annotations[CAPACITY_ANNOTATION] == "arriving"

    await tick(api, clock, controller)
    assert requests_of(api) == [], "the arriving node hosts the demand: nothing more asked for"

    mig_manager(api, "ip-10-0-0-1")
    await tick(api, clock, controller)
    assert DO_NOT_DISRUPT_ANNOTATION in api.nodes["ip-10-0-0-1"]["metadata"]["annotations"], "no MIG pod runs there yet"

    api.bind(waiting, "ip-10-0-0-1")
    await tick(api, clock, controller)
    annotations = api.nodes["ip-10-0-0-1"]["metadata"]["annotations"]
    assert DO_NOT_DISRUPT_ANNOTATION not in annotations and CAPACITY_GUARDED_ANNOTATION not in annotations
    assert annotations[CAPACITY_ANNOTATION] == "released"
    assert controller.stats.requests_created == {"a100-balanced": 1}
    assert controller.stats.requests_deleted == {"arrived": 1}
    assert controller.stats.protections_released == {"in-use": 1}


async def test_requests_follow_the_demand_down() -> None:
    view, api, clock, controller = setup()
    pods = [unmet_pod(f"small-{i}", {MIG_1G: 1}) for i in range(60)]
    for raw in pods:
        view.apply(Kind.PODS, "ADDED", raw)
    await tick(api, clock, controller, 60)
    assert sorted(r["metadata"]["labels"][CAPACITY_REQUEST_LABEL] for r in requests_of(api)) == ["a100-1g", "a100-1g"]

    for raw in pods[:10]:
        view.apply(Kind.PODS, "DELETED", raw)
    await tick(api, clock, controller)
    assert len(requests_of(api)) == 1, "50 1g pods fit one all-1g node"
    for raw in pods[10:]:
        view.apply(Kind.PODS, "DELETED", raw)
    await tick(api, clock, controller)
    assert requests_of(api) == []
    assert controller.stats.requests_deleted == {"demand-gone": 2}


@pytest.mark.parametrize(
    ("pods", "config", "want_requests", "want_event"),
    [
        pytest.param(200, {}, 2, "MigNoNodePoolFits", id="pool-maxNodes"),
        pytest.param(200, {"max_requests": 1}, 1, "MigCapacityRequested", id="global-cap"),
    ],
)
async def test_caps(pods: int, config: dict[str, Any], want_requests: int, want_event: str) -> None:
    view, api, clock, controller = setup(pools=(SMALL,), **config)
    for i in range(pods):
        view.apply(Kind.PODS, "ADDED", unmet_pod(f"small-{i}", {MIG_1G: 1}))
    await tick(api, clock, controller, 60)
    assert len(requests_of(api)) == want_requests
    assert want_event in event_reasons(api)


async def test_a_demand_no_pool_hosts_gets_a_warning_and_no_request() -> None:
    view, api, clock, controller = setup(pools=(SMALL,))
    view.apply(Kind.PODS, "ADDED", unmet_pod("big", {MIG_3G: 1}))
    await tick(api, clock, controller, 60)
    await tick(api, clock, controller)
    assert requests_of(api) == []
    assert event_reasons(api) == ["MigNoNodePoolFits"], "told once"
    assert controller.stats.unmet_pods == {"hosted": 0, "no-pool": 1}


async def test_overlay_mode_removes_requests_and_still_guards_new_nodes() -> None:
    view, api, clock, controller = setup()
    view.apply(Kind.PODS, "ADDED", unmet_pod("big", {MIG_3G: 1}))
    await tick(api, clock, controller, 60)
    assert len(requests_of(api)) == 1
    overlay = ProvisioningController(
        view, api, ProvisionSettings(mode="overlay", namespace=NS), (BALANCED, SMALL), now=clock.wall
    )
    await tick(api, clock, overlay)
    assert requests_of(api) == []
    assert overlay.stats.requests_deleted == {"mode": 1}
    karpenter_node(api, "n1", BALANCED)
    await tick(api, clock, overlay)
    assert api.nodes["n1"]["metadata"]["annotations"][DO_NOT_DISRUPT_ANNOTATION] == "true"
    assert requests_of(api) == []


async def test_a_guard_times_out_with_a_warning_and_a_foreign_guard_is_left_alone() -> None:
    _view, api, clock, controller = setup()
    karpenter_node(api, "n1", BALANCED)
    karpenter_node(api, "n2", BALANCED)
    api.set_node("n2", {"metadata": {"annotations": {DO_NOT_DISRUPT_ANNOTATION: "1h"}}})
    await tick(api, clock, controller)
    assert api.nodes["n1"]["metadata"]["annotations"][DO_NOT_DISRUPT_ANNOTATION] == "true"
    assert CAPACITY_GUARDED_ANNOTATION not in api.nodes["n2"]["metadata"]["annotations"]
    await tick(api, clock, controller, 601)
    assert DO_NOT_DISRUPT_ANNOTATION not in api.nodes["n1"]["metadata"]["annotations"]
    assert api.nodes["n2"]["metadata"]["annotations"][DO_NOT_DISRUPT_ANNOTATION] == "1h", "set by someone else: kept"
    assert event_reasons(api).count("MigLayoutNotApplied") == 2
    assert controller.stats.protections_released == {"timeout": 2}


async def test_nodes_with_their_layout_and_nodes_of_other_pools_are_not_guarded() -> None:
    _view, api, clock, controller = setup()
    karpenter_node(api, "ready", BALANCED)
    mig_manager(api, "ready")
    karpenter_node(api, "other", Pool("cpu", model_named(A100), 1, "all-disabled"))
    await tick(api, clock, controller)
    assert api.patches == []


async def test_a_stuck_request_is_flagged_once() -> None:
    view, api, clock, controller = setup()
    view.apply(Kind.PODS, "ADDED", unmet_pod("big", {MIG_3G: 1}))
    await tick(api, clock, controller, 60)
    await tick(api, clock, controller, 301)
    await tick(api, clock, controller)
    assert event_reasons(api).count("MigCapacityStuck") == 1
    assert controller.stats.requests_stuck == 1


async def test_a_new_leader_takes_over_without_asking_twice() -> None:
    view, api, clock, controller = setup()
    view.apply(Kind.PODS, "ADDED", unmet_pod("big", {MIG_3G: 1}))
    await tick(api, clock, controller, 60)
    karpenter_node(api, "n1", BALANCED)
    view.apply(Kind.PODS, "ADDED", unmet_pod("big-2", {MIG_3G: 1}))
    successor = ProvisioningController(
        view, api, ProvisionSettings(mode="requests", namespace=NS), (BALANCED, SMALL), now=clock.wall
    )
    await tick(api, clock, successor)
    await tick(api, clock, successor)
    assert requests_of(api) == [], "the arriving node (8x 3g) hosts both pods"
    assert api.nodes["n1"]["metadata"]["annotations"][CAPACITY_ANNOTATION] == "arriving"


async def test_a_follower_and_plan_only_write_nothing() -> None:
    view, api, clock, controller = setup()
    view.apply(Kind.PODS, "ADDED", unmet_pod("big", {MIG_3G: 1}))
    controller.is_leader = lambda: False
    await tick(api, clock, controller, 60)
    assert requests_of(api) == [] and api.events == []
    view2, api2, clock2, plan_only = setup(mode="plan-only")
    view2.apply(Kind.PODS, "ADDED", unmet_pod("big", {MIG_3G: 1}))
    await tick(api2, clock2, plan_only, 60)
    assert requests_of(api2) == []
    assert plan_only.stats.planned_nodes == {"a100-balanced": 1, "a100-1g": 0}


async def test_an_unresolvable_pool_is_skipped_and_the_others_serve() -> None:
    broken = Pool("broken", model_named(A100), 8, "no-such-config", cost=0.5)
    view, api, clock, controller = setup(pools=(broken, BALANCED))
    view.apply(Kind.PODS, "ADDED", unmet_pod("big", {MIG_3G: 1}))
    await tick(api, clock, controller, 60)
    assert [r["metadata"]["labels"][CAPACITY_REQUEST_LABEL] for r in requests_of(api)] == ["a100-balanced"]


def test_load_pools_names_the_file(tmp_path: Any) -> None:
    path = tmp_path / "pools.yaml"
    path.write_text("pools:\n  - nodePool: x\n")
    with pytest.raises(PoolsError, match=r"pools file .*pools.yaml: pools\[0\].gpu"):
        load_pools(str(path))
    with pytest.raises(PoolsError, match="No such file"):
        load_pools(str(tmp_path / "missing.yaml"))


def node_claim(pool: str, node: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{pool}-claim", "labels": {"karpenter.sh/nodepool": pool}},
        "status": {"nodeName": node} if node else {},
    }


async def test_a_node_claim_karpenter_made_for_the_pods_themselves_counts_as_arriving() -> None:
    view, api, clock, controller = setup()
    view.apply(Kind.PODS, "ADDED", unmet_pod("big", {MIG_3G: 1}))
    api.node_claims = [node_claim("a100-balanced")]  # NodeOverlays: Karpenter launched for the pod
    await tick(api, clock, controller, 60)
    assert requests_of(api) == [], "no second node while Karpenter's is on its way"
    api.node_claims = [node_claim("a100-balanced", node="n1")]  # registered: the Node counts from now on
    karpenter_node(api, "n1", BALANCED)
    await tick(api, clock, controller)
    assert requests_of(api) == []


async def test_a_node_claim_made_for_a_request_is_not_counted_twice() -> None:
    view, api, clock, controller = setup()
    for i in range(60):
        view.apply(Kind.PODS, "ADDED", unmet_pod(f"s-{i}", {MIG_1G: 1}))
    await tick(api, clock, controller, 60)
    assert len(requests_of(api)) == 2
    api.node_claims = [node_claim("a100-1g")]  # launched for one of the two requests
    await tick(api, clock, controller)
    assert len(requests_of(api)) == 2, "the claim is the first request's node, not extra capacity"


def nominated(request: dict[str, Any], claim: str) -> dict[str, Any]:
    """Karpenter's Nominated Event on a pod it launched a NodeClaim for (provisioner.go, CreateNodeClaims)."""
    event = karpenter_event(request["metadata"]["uid"], "Nominated", f"Pod should schedule on: nodeclaim/{claim}")
    event["metadata"]["namespace"] = request["metadata"]["namespace"]
    return event


async def test_a_request_goes_once_karpenter_launched_its_node_claim() -> None:
    """A request left pending while its node registers is provisioned for again if the node does not fit it
    (with whole GPUs, MIG Manager leaves fewer than the request asked for): Karpenter launches a second node.
    So the request goes as soon as Karpenter's Nominated Event names the NodeClaim it launched for it, and the
    NodeClaim counts as the capacity on its way."""
    view, api, clock, controller = setup(pools=(HALF,), request_resources="gpu")
    api.add_config_map(document=HALF_DOCUMENT)
    for i in range(12):
        view.apply(Kind.PODS, "ADDED", unmet_pod(f"burst-{i}", {MIG_3G: 1}))
    await tick(api, clock, controller, 60)
    first, second = requests_of(api)
    api.node_claims = [node_claim("a100-half")]
    api.core_events = [nominated(first, "a100-half-claim")]
    await tick(api, clock, controller)
    assert [r["metadata"]["name"] for r in requests_of(api)] == [second["metadata"]["name"]]
    assert controller.stats.requests_deleted == {"launched": 1}
    await tick(api, clock, controller)
    assert len(requests_of(api)) == 1, "the launching NodeClaim is the first node, the second is still asked for"


AT_0, AT_1 = "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"
BURSTS = [
    # Twelve 3g.40gb pods, their verdicts a second apart: an all-balanced A100 node holds eight.
    pytest.param(
        [("a-{}", {MIG_3G: 1}, 6, AT_0), ("b-{}", {MIG_3G: 1}, 6, AT_1)], {"a100-balanced": 2}, id="12x3g-two-nodes"
    ),
    # The 1g pods alone would take a node of the cheaper all-1g pool, and the 3g pods a balanced one; one
    # balanced node holds them all.
    pytest.param(
        [("small-{}", {MIG_1G: 1}, 10, AT_0), ("big-{}", {MIG_3G: 1}, 2, AT_1)],
        {"a100-balanced": 1},
        id="mixed-one-node",
    ),
]


@pytest.mark.parametrize(("burst", "want"), BURSTS)
async def test_a_burst_is_planned_together_as_the_fewest_nodes(
    burst: list[tuple[str, dict[str, int], int, str]], want: dict[str, int]
) -> None:
    """The burst's verdicts straddle a reconcile: at that tick the first ones are debounce_s old, the others a
    second younger. Planned by age alone, the first part would buy its own node (a plan per part)."""
    view, api, clock, controller = setup(pools=(BALANCED, SMALL), debounce_window_s=5.0)
    for pattern, resources, count, since in burst:
        for i in range(count):
            view.apply(Kind.PODS, "ADDED", unmet_pod(pattern.format(i), resources, since=since))

    await tick(api, clock, controller, 30.5)
    assert controller.plan is not None and len(controller.plan.hosts) == sum(count for _, _, count, _ in burst)
    assert controller.stats.requests_created == want, "one plan for the whole burst"
    await tick(api, clock, controller)
    assert controller.stats.requests_created == want, "and nothing more once every pod is debounce_s old"


async def test_a_pod_outside_the_debounce_window_waits_for_its_own_debounce() -> None:
    view, api, clock, controller = setup(debounce_window_s=5.0)
    view.apply(Kind.PODS, "ADDED", unmet_pod("first", {MIG_3G: 1}, since="2026-01-01T00:00:00Z"))
    view.apply(Kind.PODS, "ADDED", unmet_pod("late", {MIG_3G: 1}, since="2026-01-01T00:00:15Z"))
    await tick(api, clock, controller, 30.5)
    assert controller.plan is not None and len(controller.plan.hosts) == 1, "15 s after the burst: not part of it"


HALF = Pool("a100-half", model_named(A100), 8, "half-3g.40gb")
HALF_DOCUMENT = default_config_document()
HALF_DOCUMENT["mig-configs"]["half-3g.40gb"] = [  # four GPUs in MIG mode (two 3g.40gb each), four whole
    {"devices": [0, 1, 2, 3], "mig-enabled": True, "mig-devices": {"3g.40gb": 2}},
    {"devices": [4, 5, 6, 7], "mig-enabled": False},
]


def unregistered(node: dict[str, Any], requests: dict[str, str]) -> list[str]:
    """The requested resources that keep Karpenter from marking the NodeClaim ``Initialized``.

    As sigs.k8s.io/karpenter v1.14.1 ``pkg/controllers/nodeclaim/lifecycle/initialization.go``
    (``RequestedResourcesRegistered``) reads them: every non-zero quantity of the NodeClaim's
    ``spec.resources.requests`` (the pods it was launched for, here the capacity request) must be non-zero
    in the node's ``status.allocatable``. Until then the NodeClaim stays ``Initialized=Unknown``
    (``ResourceNotRegistered``): no consolidation, and its launch-time allocatable is counted as free
    (``pkg/controllers/state/statenode.go``, ``Allocatable``).
    """
    allocatable = node["status"]["allocatable"]
    return sorted(name for name, count in requests.items() if int(count) and not int(allocatable.get(name, "0")))


@pytest.mark.parametrize(
    ("request_resources", "pool"),
    [
        pytest.param("gpu", BALANCED, id="whole-gpus-of-a-fully-mig-pool-refused"),
        pytest.param("mig", BALANCED, id="mig-instances-of-a-fully-mig-pool"),
        pytest.param("gpu", HALF, id="whole-gpus-of-a-pool-that-keeps-some"),
    ],
)
async def test_a_capacity_request_asks_only_for_what_its_node_will_register(
    request_resources: RequestResources, pool: Pool
) -> None:
    """A node of a fully-MIG pool registers ``nvidia.com/gpu: 0``: a whole-GPU request for it would never
    let Karpenter initialize the node, so that pool is not asked for with whole GPUs; every request made is
    one whose node, once MIG Manager is done, registers every resource asked for."""
    view, api, clock, controller = setup(pools=(pool,), request_resources=request_resources)
    api.add_config_map(document=HALF_DOCUMENT)
    config = parse_config(HALF_DOCUMENT)
    view.apply(Kind.PODS, "ADDED", unmet_pod("big", {MIG_3G: 1}))
    await tick(api, clock, controller, 60)

    karpenter_node(api, "n1", pool)
    mig_manager(api, "n1", config)
    assert int(api.nodes["n1"]["status"]["allocatable"]["nvidia.com/gpu"]) == (4 if pool is HALF else 0)
    made = [r["spec"]["containers"][0]["resources"]["requests"] for r in requests_of(api)]
    assert all(unregistered(api.nodes["n1"], requests) == [] for requests in made), made
    if request_resources == "gpu" and pool is BALANCED:
        assert made == [], "no request Karpenter would never see through"
        ((kind, name, reason, level, note),) = api.events
        assert (kind, name, reason, level) == ("Pod", "big", "MigNoNodePoolFits", "Warning")
        assert "nvidia.com/gpu: 0" in note and "--provision-request-resources mig" in note, note
        assert controller.stats.pools_refused == {(pool.name, "no-whole-gpus"): 1}
    else:
        assert len(made) == 1
        assert controller.stats.pools_refused == {}


async def test_a_new_node_with_its_layout_but_a_startup_taint_left_is_still_the_capacity_on_its_way() -> None:
    """MIG Manager is done but a startup taint (Karpenter's NodePool startupTaints, removed by some agent) is
    still on the node: the pods cannot use it yet, and it is not a reason to ask for another node."""
    view, api, clock, controller = setup()
    view.apply(Kind.PODS, "ADDED", unmet_pod("big", {MIG_3G: 1}))
    await tick(api, clock, controller, 60)
    karpenter_node(api, "n1", BALANCED)
    await tick(api, clock, controller)
    assert requests_of(api) == [] and api.nodes["n1"]["metadata"]["annotations"][CAPACITY_ANNOTATION] == "arriving"

    mig_manager(api, "n1")
    api.set_node("n1", {"spec": {"taints": [{"key": "example.com/agent-not-ready", "effect": "NoSchedule"}]}})
    await tick(api, clock, controller)
    assert requests_of(api) == [], "n1 is the pod's node, whatever taint it still has"
    assert controller.plan is not None and controller.plan.hosts == {0: "a100-balanced"}


def karpenter_event(pod_uid: str, reason: str, message: str) -> dict[str, Any]:
    """A core/v1 Event as Karpenter's recorder writes it (source.component karpenter), after
    sigs.k8s.io/karpenter v1.14.1 pkg/controllers/provisioning/scheduling/events.go."""
    return {
        "metadata": {"name": f"{pod_uid}.{reason}", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "uid": pod_uid},
        "reason": reason,
        "message": message,
        "source": {"component": "karpenter"},
        "lastTimestamp": "2026-01-01T00:00:40Z",
    }


OVERLAY_STALLS = [
    # Karpenter's simulation counted a free nvidia.com/mig-3g.40gb on n0 (placements it cannot see).
    pytest.param(
        [karpenter_event("uid-big", "Nominated", "Pod should schedule on: nodeclaim/n0-abcde, node/n0")],
        [],
        60,
        "node/n0",
        id="nominated-an-existing-node",
    ),
    pytest.param(
        [karpenter_event("uid-big", "FailedScheduling", "Failed to schedule pod, no instance type has enough")],
        [],
        60,
        "no instance type has enough",
        id="karpenter-failed-to-schedule",
    ),
    pytest.param([], [], 60 + 60, "no node on its way", id="nothing-within-the-wait"),
    pytest.param(
        [],
        [{"metadata": {"name": "c", "labels": {"karpenter.sh/nodepool": "a100-balanced"}}}],
        None,
        "",
        id="launching",
    ),
]


@pytest.mark.parametrize(("events", "claims", "after_s", "said"), OVERLAY_STALLS)
async def test_overlay_mode_asks_for_a_node_when_karpenter_launches_none(
    events: list[dict[str, Any]], claims: list[dict[str, Any]], after_s: int | None, said: str
) -> None:
    """In overlay mode Karpenter provisions for the pods itself, but where its counts say an existing node has
    room it launches nothing and the pod waits: the loop notices (Karpenter's own Events, or no node on its
    way within provision_overlay_wait_s), says so on the pod, and falls back to a capacity request."""
    view, api, clock, controller = setup(mode="overlay", overlay_wait_s=60.0)
    api.add_node("n0", "all-1g.10gb")  # an existing node, which no 3g.40gb fits
    api.core_events = events
    api.node_claims = claims
    view.apply(Kind.PODS, "ADDED", unmet_pod("big", {MIG_3G: 1}))
    waited = 0
    for _ in range(14):  # two minutes of reconciles
        await tick(api, clock, controller)
        waited += 10
        if requests_of(api):
            break
    if after_s is None:
        assert requests_of(api) == [] and controller.stats.unlaunched_pods == 0, "Karpenter's node is on its way"
        assert "MigNoNodeLaunched" not in event_reasons(api)
        return
    assert waited <= after_s, f"asked only after {waited}s"
    (request,) = requests_of(api)
    assert request["metadata"]["labels"][CAPACITY_REQUEST_LABEL] == "a100-balanced"
    assert request["spec"]["containers"][0]["resources"]["requests"][MIG_3G] == "8", "the pool's MIG instances"
    ((_, name, _, level, note),) = [e for e in api.events if e[2] == "MigNoNodeLaunched"]
    assert (name, level) == ("big", "Warning") and said in note and "NodePool a100-balanced" in note, note
    ((namespace, pod_name, patch),) = api.pod_patches
    assert (namespace, pod_name) == ("default", "big")
    assert said in patch["metadata"]["annotations"][PROVISIONING_ANNOTATION]
    assert controller.stats.unlaunched_pods == 1

    await tick(api, clock, controller)
    assert len(requests_of(api)) == 1 and len(api.pod_patches) == 1, "asked and said once"
    karpenter_node(api, "n1", BALANCED)
    await tick(api, clock, controller)
    assert requests_of(api) == [], "its node arrived"
    assert controller.stats.requests_deleted == {"arrived": 1}
    api.bind(unmet_pod("big", {MIG_3G: 1}), "n1")
    await tick(api, clock, controller)
    assert api.pod_patches[-1][2] == {"metadata": {"annotations": {PROVISIONING_ANNOTATION: None}}}, "cleared"


TAINTED = Pool("a100-research", model_named(A100), 8, "all-balanced", cost=0.5, max_nodes=2)


def nodepool(
    name: str, taints: list[dict[str, str]] | None = None, instance_type: str = "p4de.24xlarge"
) -> dict[str, Any]:
    """A Karpenter NodePool (karpenter.sh/v1) as the loop reads it: template labels, requirements, taints."""
    return {
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"labels": {"nvidia.com/mig.config": "all-balanced"}},
                "spec": {
                    "requirements": [
                        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": [instance_type]},
                        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand", "spot"]},
                    ],
                    "taints": taints or [],
                    "startupTaints": [{"key": "example.com/agent-not-ready", "effect": "NoSchedule"}],
                },
            }
        },
    }


RESEARCH_TAINT = {"key": "dedicated", "value": "research", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("spec", "want_pool"),
    [
        pytest.param({}, "a100-balanced", id="the-cheaper-pool-taints-its-nodes"),
        pytest.param(
            {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "research"}]},
            "a100-research",
            id="tolerated-the-cheaper-pool",
        ),
        pytest.param({"nodeSelector": {"karpenter.sh/capacity-type": "spot"}}, "a100-balanced", id="selector-in-range"),
        pytest.param(
            {
                "tolerations": [{"operator": "Exists"}],
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {
                                            "key": "karpenter.sh/nodepool",
                                            "operator": "NotIn",
                                            "values": ["a100-research"],
                                        }
                                    ]
                                }
                            ]
                        }
                    }
                },
            },
            "a100-balanced",
            id="affinity-excludes-a-pool",
        ),
        pytest.param(
            {"nodeSelector": {"node.kubernetes.io/instance-type": "p5.48xlarge"}}, None, id="no-pool-it-may-use"
        ),
    ],
)
async def test_only_pools_the_pod_may_use_are_planned(spec: dict[str, Any], want_pool: str | None) -> None:
    """The NodePools' template labels, requirements and taints against the pod's selector, affinity and
    tolerations, as kube-scheduler would check them on the new node (startup taints go before pods bind)."""
    view, api, clock, controller = setup(pools=(TAINTED, BALANCED))
    api.node_pools = [nodepool("a100-research", [RESEARCH_TAINT]), nodepool("a100-balanced")]
    raw = unmet_pod("big", {MIG_3G: 1})
    raw["spec"].update(spec)
    view.apply(Kind.PODS, "ADDED", raw)
    await tick(api, clock, controller, 60)
    made = [r["metadata"]["labels"][CAPACITY_REQUEST_LABEL] for r in requests_of(api)]
    if want_pool is not None:
        assert made == [want_pool]
        return
    assert made == []
    assert controller.stats.unmet_pods == {"hosted": 0, "excluded": 1}
    ((_, _, reason, level, note),) = api.events
    assert (reason, level) == ("MigNoNodePoolFits", "Warning")
    assert "a100-research" in note and "a100-balanced" in note and "node selector" in note, note
