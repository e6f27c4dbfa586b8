"""The defrag controller against an in-memory API server that feeds its view (plans, reservations, evictions).

The cluster: two DynamicMIG H100 nodes whose node agent lists each GPU's instances; on each, one small pod of a
ReplicaSet holds a 1g.10gb at slice 0, so a waiting 4g.40gb (slices 0-3 only) fits nowhere although each GPU has
7 free slices. Moving either small pod to the other node makes room.
"""

from __future__ import annotations

import copy
import datetime
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from extender.controllers.defrag import DefragController, label_selector, parse_plan
from extender.kube.errors import ApiError
from extender.kube.names import (
    DEFRAG_OUTCOME_ANNOTATION,
    DEFRAG_PLAN_ANNOTATION,
    DEFRAG_RESERVATION_ANNOTATION,
)
from extender.metrics import Metrics
from extender.model.catalog import model_named
from extender.model.dra.driver import DRIVER, dynamic_mig_slices
from extender.server.scheduling import SchedulingService
from extender.server.wire import parse_extender_args
from extender.settings import DefragSettings, Settings
from extender.view.store import ClusterView, Kind
from tests.builders import pod

H100 = "NVIDIA-H100-80GB-HBM3"
NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
LONG_AGO = "2026-01-01T09:00:00Z"
NS = "ml"
MODEL = model_named(H100)
SMALL_AT_0 = "gpu-0-mig-1g10gb-19-0"


def stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class DefragFake:
    """pods, nodes and PDBs; merge patches of pod metadata; evictions that honour PDBs as the API server does."""

    def __init__(self, view: ClusterView) -> None:
        self.view = view
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.pdbs: list[dict[str, Any]] = []
        self.evicted: list[str] = []
        self.events: list[tuple[str, str, str, str]] = []
        self.refuse: dict[str, int] = {}
        """Pod name -> the status its eviction answers (429: a budget, 500: a broken API server)."""
        self.after_patch: Callable[[str], None] | None = None
        self.fail_patches = 0
        """The next this many pod patches answer 500 (after the API server applied nothing)."""

    def add_node(self, name: str, instances: list[tuple[str, int]], *, annotations: Mapping[str, str] = {}) -> None:
        agent = {
            "version": "v1",
            "gpus": [
                {
                    "index": 0,
                    "product": H100,
                    "mode": "dynamic",
                    "instances": [{"profile": p, "start": s} for p, s in instances],
                }
            ],
        }
        raw = {
            "metadata": {
                "name": name,
                "resourceVersion": "1",
                "labels": {
                    "nvidia.com/gpu.product": H100,
                    "nvidia.com/gpu.count": "1",
                    "mig-extender.io/mode": "dynamic",
                },
                "annotations": {"mig-extender.io/gpus": json.dumps(agent), **annotations},
            },
            "spec": {},
            "status": {"allocatable": {}},
        }
        self.view.apply(Kind.NODES, "ADDED", raw)

    def add_pod(self, raw: dict[str, Any]) -> None:
        metadata = raw["metadata"]
        self.pods[(metadata["namespace"], metadata["name"])] = raw
        self.view.apply(Kind.PODS, "ADDED", copy.deepcopy(raw))

    def remove_pod(self, namespace: str, name: str) -> None:
        raw = self.pods.pop((namespace, name))
        self.view.apply(Kind.PODS, "DELETED", raw)

    def bind(self, namespace: str, name: str, node: str) -> None:
        raw = self.pods[(namespace, name)]
        raw["spec"]["nodeName"] = node
        self.view.apply(Kind.PODS, "MODIFIED", copy.deepcopy(raw))

    # --- DefragApi ------------------------------------------------------------------------------------------

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.pods.get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def patch_pod_metadata(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        if self.fail_patches:
            self.fail_patches -= 1
            raise ApiError(500, "etcd timeout")
        raw = self.pods.get((namespace, name))
        if raw is None:
            raise ApiError(404, f"pods {name} not found")
        annotations = raw["metadata"].setdefault("annotations", {})
        for key, value in patch["metadata"]["annotations"].items():
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = value
        self.view.apply(Kind.PODS, "MODIFIED", copy.deepcopy(raw))
        if self.after_patch is not None:
            self.after_patch(name)
        return copy.deepcopy(raw)

    async def evict_pod(self, namespace: str, name: str, uid: str, grace_period_s: int | None) -> None:
        raw = self.pods.get((namespace, name))
        if raw is None:
            raise ApiError(404, f"pods {name} not found")
        if raw["metadata"]["uid"] != uid:
            raise ApiError(409, "Precondition failed: UID in precondition does not match")
        if name in self.refuse:
            raise ApiError(self.refuse[name], "Cannot evict pod as it would violate the pod's disruption budget.")
        self.evicted.append(name)
        self.remove_pod(namespace, name)

    async def list_pod_disruption_budgets(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.pdbs)

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        wanted = dict(term.split("=", 1) for term in label_selector.split(",") if term)
        return [
            copy.deepcopy(p)
            for (ns, _), p in sorted(self.pods.items())
            if ns == namespace and all((p["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
        ]

    async def post_event(self, regarding: Mapping[str, str], reason: str, kind: str, note: str, action: str) -> None:
        self.events.append((regarding["name"], reason, kind, note))

    def reasons(self, name: str) -> list[str]:
        return [reason for pod_name, reason, _, _ in self.events if pod_name == name]


def small(name: str, node: str, **changes: Any) -> dict[str, Any]:
    """A running 1g.10gb pod of the ReplicaSet ``small``, opted in, started three hours ago."""
    raw = pod(name, limits={"nvidia.com/mig-1g.10gb": 1}, namespace=NS, node_name=node)
    raw["metadata"].update(
        {
            "labels": {"app": "small", "mig-extender.io/movable": "true"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "small", "uid": "rs", "controller": True}],
            "creationTimestamp": LONG_AGO,
        }
    )
    raw["status"] = {"phase": "Running", "startTime": LONG_AGO}
    for key, value in changes.items():
        if key == "labels":
            raw["metadata"]["labels"] = value
        elif key == "annotations":
            raw["metadata"]["annotations"] = value
        elif key == "owners":
            raw["metadata"]["ownerReferences"] = value
        elif key == "started":
            raw["status"]["startTime"] = value
        elif key == "priority":
            raw["spec"]["priority"] = value
        else:
            raise KeyError(key)
    return raw


def waiting(name: str = "large", *, since: datetime.datetime = NOW - datetime.timedelta(minutes=10)) -> dict[str, Any]:
    raw = pod(name, limits={"nvidia.com/mig-4g.40gb": 1}, namespace=NS)
    raw["metadata"]["annotations"] = {
        "mig-extender.io/verdict": "no-layout-fits",
        "mig-extender.io/since": stamp(since),
    }
    return raw


def pdb(name: str, allowed: int, selector: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {"selector": selector if selector is not None else {"matchLabels": {"app": "small"}}},
        "status": {"disruptionsAllowed": allowed},
    }


def cluster(**small_changes: Any) -> tuple[ClusterView, DefragFake]:
    view = ClusterView()
    fake = DefragFake(view)
    fake.add_node("a", [("1g.10gb", 0)])
    fake.add_node("b", [("1g.10gb", 0)])
    fake.add_pod(small("small-a", "a", **small_changes))
    fake.add_pod(small("small-b", "b", **small_changes))
    fake.add_pod(waiting())
    return view, fake


class Clock:
    def __init__(self) -> None:
        self.moment = NOW

    def __call__(self) -> datetime.datetime:
        return self.moment


def controller(
    view: ClusterView, fake: DefragFake, mode: str = "on", clock: Clock | None = None, **kw: Any
) -> DefragController:
    config = DefragSettings(mode=mode, **kw)  # type: ignore[arg-type]
    return DefragController(view, fake, config, now=clock or Clock())  # type: ignore[arg-type]


def annotation(fake: DefragFake, key: str, name: str = "large") -> str | None:
    return (fake.pods[(NS, name)]["metadata"].get("annotations") or {}).get(key)


# --- plan-only ---------------------------------------------------------------------------------------------


async def test_plan_only_annotates_the_plan_and_exports_it_and_moves_nothing() -> None:
    view, fake = cluster()
    defrag = controller(view, fake, "plan-only")
    await defrag.reconcile()
    plan = parse_plan(annotation(fake, DEFRAG_PLAN_ANNOTATION) or "")
    assert len(plan.moves) == 1 and plan.moves[0].pod in ("ml/small-a", "ml/small-b")
    (move,) = plan.moves
    assert plan.node == move.node and move.target_node != move.node and plan.gpus == (0,)
    assert plan.lost_s == pytest.approx(3 * 3600)
    assert fake.evicted == [] and annotation(fake, DEFRAG_RESERVATION_ANNOTATION) is None
    assert defrag.stats.planned_evictions == {"ml/large": 1} and defrag.stats.plans["found"] == 1
    await defrag.reconcile()  # the same plan is not written again
    assert defrag.stats.plans["found"] == 1


NOT_MOVABLE = [
    ("not opted in", {"labels": {"app": "small"}}, [], "not opted in"),
    ("a bare pod", {"owners": []}, [], "not controlled by a ReplicaSet, StatefulSet or Job"),
    (
        "a DaemonSet's pod",
        {"owners": [{"kind": "DaemonSet", "name": "d", "uid": "d", "controller": True}]},
        [],
        "not controlled by",
    ),
    ("do-not-disrupt", {"annotations": {"karpenter.sh/do-not-disrupt": "true"}}, [], "karpenter.sh/do-not-disrupt"),
    ("started a minute ago", {"started": stamp(NOW - datetime.timedelta(minutes=1))}, [], "defrag_pod_cooldown_s"),
    ("of higher priority", {"priority": 1000}, [], "priority at most the waiting pod's"),
    ("a PDB that forbids", {}, [pdb("small", 0)], "budget allows"),
    ("two PDBs", {}, [pdb("small", 1), pdb("everything", 1, {})], "several PodDisruptionBudgets"),
]


@pytest.mark.parametrize(
    ("changes", "pdbs", "reason"), [case[1:] for case in NOT_MOVABLE], ids=[case[0] for case in NOT_MOVABLE]
)
@pytest.mark.parametrize("mode", ["plan-only", "on"])
async def test_pods_that_may_not_move_make_no_plan_and_the_pod_says_why(
    mode: str, changes: dict[str, Any], pdbs: list[dict[str, Any]], reason: str
) -> None:
    view, fake = cluster(**changes)
    fake.pdbs = pdbs
    await controller(view, fake, mode).reconcile()
    shown = json.loads(annotation(fake, DEFRAG_PLAN_ANNOTATION) or "{}")
    assert reason in shown["reason"], shown
    assert fake.evicted == [] and annotation(fake, DEFRAG_RESERVATION_ANNOTATION) is None


@pytest.mark.parametrize(("max_lost_s", "planned"), [(0.0, True), (4 * 3600, True), (2 * 3600, False)])
async def test_defrag_max_lost_s_keeps_pods_that_ran_longer_in_place(max_lost_s: float, planned: bool) -> None:
    view, fake = cluster()  # each small pod has run 3 h: moving one throws that away
    await controller(view, fake, max_lost_s=max_lost_s).reconcile()
    shown = json.loads(annotation(fake, DEFRAG_PLAN_ANNOTATION) or "{}")
    if planned:
        assert len(fake.evicted) == 1 and "reason" not in shown
    else:
        assert fake.evicted == [] and "ran more than 7200 s" in shown["reason"], shown


async def test_a_node_marked_do_not_disrupt_keeps_its_pods() -> None:
    view = ClusterView()
    fake = DefragFake(view)
    fake.add_node("a", [("1g.10gb", 0)], annotations={"karpenter.sh/do-not-disrupt": "true"})
    fake.add_node("b", [("1g.10gb", 0)], annotations={"karpenter.sh/do-not-disrupt": "true"})
    fake.add_pod(small("small-a", "a"))
    fake.add_pod(small("small-b", "b"))
    fake.add_pod(waiting())
    await controller(view, fake).reconcile()
    assert "on a node marked karpenter.sh/do-not-disrupt" in (annotation(fake, DEFRAG_PLAN_ANNOTATION) or "")
    assert fake.evicted == []


async def test_a_pod_that_waited_less_than_min_wait_is_left_alone() -> None:
    view, fake = cluster()
    fake.remove_pod(NS, "large")
    fake.add_pod(waiting(since=NOW - datetime.timedelta(seconds=30)))
    await controller(view, fake).reconcile()
    assert annotation(fake, DEFRAG_PLAN_ANNOTATION) is None and fake.evicted == []


async def test_namespaces_in_settings_make_pods_movable_without_opt_in() -> None:
    view, fake = cluster(labels={"app": "small"})
    await controller(view, fake, "plan-only", namespaces="other, ml").reconcile()
    assert parse_plan(annotation(fake, DEFRAG_PLAN_ANNOTATION) or "").moves


@pytest.mark.parametrize(
    "listed_on_a",
    [[("1g.10gb", 0), ("1g.10gb", 4)], [("1g.10gb", 0)]],
    ids=["two pods, two instances of a profile", "a pod bound since the agent's last update"],
)
async def test_which_pod_holds_which_instance_is_never_guessed(listed_on_a: list[tuple[str, int]]) -> None:
    # Two 1g.10gb pods on node a: which one holds slice 0 is not known.
    view = ClusterView()
    fake = DefragFake(view)
    fake.add_node("a", listed_on_a)
    fake.add_node("b", [("1g.10gb", 0)])
    fake.add_pod(small("small-a1", "a"))
    fake.add_pod(small("small-a2", "a"))
    fake.add_pod(small("small-b", "b"))
    fake.add_pod(waiting())
    defrag = controller(view, fake, "plan-only")
    await defrag.reconcile()
    plan = parse_plan(annotation(fake, DEFRAG_PLAN_ANNOTATION) or "")
    assert [m.pod for m in plan.moves] == ["ml/small-b"]  # the one whose instance is known


# --- on ----------------------------------------------------------------------------------------------------


async def test_on_reserves_the_room_evicts_exactly_the_planned_pod_and_ends_when_the_pod_binds_there() -> None:
    view, fake = cluster()
    fake.pdbs = [pdb("small", 1)]
    defrag = controller(view, fake)
    await defrag.reconcile()
    plan = parse_plan(annotation(fake, DEFRAG_PLAN_ANNOTATION) or "")
    (move,) = plan.moves
    assert fake.evicted == [move.name] and plan.evicted == [move.uid]
    reservation = json.loads(annotation(fake, DEFRAG_RESERVATION_ANNOTATION) or "{}")
    assert reservation["node"] == plan.node == move.node and reservation["gpus"] == [0]
    assert reservation["expires"] == stamp(NOW + datetime.timedelta(seconds=600))
    assert view.reservations.of("uid-large") is not None
    assert fake.reasons("large") == ["DefragPlanned", "DefragEvicted"] and fake.reasons(move.name) == ["DefragEvicted"]
    assert defrag.stats.evictions == 1 and defrag.stats.lost_pod_seconds == pytest.approx(3 * 3600)
    await defrag.reconcile()  # nothing more to evict
    assert fake.evicted == [move.name]
    fake.bind(NS, "large", plan.node)
    await defrag.reconcile()
    assert annotation(fake, DEFRAG_RESERVATION_ANNOTATION) is None
    assert (annotation(fake, DEFRAG_OUTCOME_ANNOTATION) or "").startswith("kept")
    assert defrag.stats.reservations["made"] == 1 and defrag.stats.reservations["kept"] == 1
    assert view.reservations.of("uid-large") is None


async def test_a_429_ends_the_plan_cleanly_with_the_reason_on_the_pod() -> None:
    view, fake = cluster()
    fake.refuse = {"small-a": 429, "small-b": 429}
    defrag = controller(view, fake)
    await defrag.reconcile()
    assert fake.evicted == []
    assert annotation(fake, DEFRAG_RESERVATION_ANNOTATION) is None and view.reservations.of("uid-large") is None
    outcome = annotation(fake, DEFRAG_OUTCOME_ANNOTATION) or ""
    assert outcome.startswith("refused") and "PodDisruptionBudget" in outcome
    assert "DefragStopped" in fake.reasons("large")
    assert defrag.stats.evictions_refused["budget"] == 1 and defrag.stats.reservations["refused"] == 1


async def test_a_waiting_pod_deleted_mid_plan_stops_the_evictions_and_leaves_no_reservation() -> None:
    view, fake = cluster()
    fake.after_patch = lambda name: fake.remove_pod(NS, "large") if name == "large" else None
    defrag = controller(view, fake)
    await defrag.reconcile()
    assert fake.evicted == []
    assert not view.reservations and defrag.stats.reservations["deleted"] == 1


async def test_the_reservation_expires_if_the_pod_does_not_bind() -> None:
    view, fake = cluster()
    clock = Clock()
    defrag = controller(view, fake, clock=clock)
    await defrag.reconcile()
    assert view.reservations
    (move,) = parse_plan(annotation(fake, DEFRAG_PLAN_ANNOTATION) or "").moves
    fake.add_node(move.node, [])  # the node agent shows the evicted pod's instance gone
    clock.moment += datetime.timedelta(seconds=601)
    await defrag.reconcile()
    assert (annotation(fake, DEFRAG_OUTCOME_ANNOTATION) or "").startswith("expired")
    assert defrag.stats.reservations["expired"] == 1 and not view.reservations
    clock.moment += datetime.timedelta(seconds=120)  # a plan that ended is followed by another min_wait_s later
    await defrag.reconcile()
    assert len(fake.evicted) == 1  # no new plan moves anything: the room is there
    assert "without moving any pod" in json.loads(annotation(fake, DEFRAG_PLAN_ANNOTATION) or "{}")["reason"]


@pytest.mark.parametrize("failure", ["eviction", "record"])
async def test_a_new_leader_resumes_the_plan_without_repeating_or_losing_an_eviction(failure: str) -> None:
    """The leader stops after writing the plan: before its eviction went through (a 500), or after the
    eviction but before recording it. A new leader evicts the pod if and only if it is still there."""
    view, fake = cluster()
    first = controller(view, fake)
    if failure == "eviction":
        fake.refuse = {"small-a": 500, "small-b": 500}
    else:
        fake.after_patch = lambda name: setattr(fake, "fail_patches", 1) if name == "large" else None
    with pytest.raises(ApiError):
        await first.reconcile()
    fake.refuse, fake.after_patch = {}, None
    plan = parse_plan(annotation(fake, DEFRAG_PLAN_ANNOTATION) or "")
    (move,) = plan.moves
    second = controller(view, fake)  # a new leader: nothing in memory
    await second.reconcile()
    assert fake.evicted == [move.name]
    assert parse_plan(annotation(fake, DEFRAG_PLAN_ANNOTATION) or "").evicted == [move.uid]
    await second.reconcile()
    assert fake.evicted == [move.name]


async def test_a_pod_that_lands_in_the_reserved_room_is_reported_and_the_reservation_released() -> None:
    view, fake = cluster()
    defrag = controller(view, fake)
    await defrag.reconcile()
    plan = parse_plan(annotation(fake, DEFRAG_PLAN_ANNOTATION) or "")
    intruder = small("intruder", plan.node, labels={"app": "other"})
    intruder["spec"]["containers"][0]["resources"]["limits"] = {"nvidia.com/mig-3g.40gb": 1}
    fake.add_pod(intruder)
    fake.add_node(plan.node, [("3g.40gb", 0)])  # the node agent shows it where the large pod would go
    await defrag.reconcile()
    assert "DefragRoomTaken" in fake.reasons("large") and "DefragRoomTaken" in fake.reasons("intruder")
    assert (annotation(fake, DEFRAG_OUTCOME_ANNOTATION) or "").startswith("taken")
    assert defrag.stats.room_taken == 1 and not view.reservations
    assert len(fake.evicted) == 1  # nothing evicted beyond the plan


async def test_the_hourly_limit_stops_new_plans() -> None:
    view, fake = cluster()
    await controller(view, fake, max_per_hour=1).reconcile()  # one eviction
    fake.bind(NS, "large", "a")
    fake.add_pod(waiting("large-2"))
    defrag = controller(view, fake, max_per_hour=1)
    defrag.evictions.append(NOW)
    await defrag.reconcile()
    assert "evictions per hour" in (annotation(fake, DEFRAG_PLAN_ANNOTATION, "large-2") or "")


def test_label_selectors_as_query_parameters() -> None:
    selector = {
        "matchLabels": {"app": "small"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "x", "operator": "Exists"},
            {"key": "y", "operator": "DoesNotExist"},
            {"key": "z", "operator": "NotIn", "values": ["c"]},
        ],
    }
    assert label_selector(selector) == "app=small,tier in (a,b),x,!y,z notin (c)"
    assert label_selector({"matchExpressions": [{"key": "k", "operator": "Gt"}]}) is None


# --- the filter --------------------------------------------------------------------------------------------


def test_the_filter_keeps_other_mig_pods_off_a_reserved_node_and_lets_the_waiting_pod_through() -> None:
    view, fake = cluster()
    fake.remove_pod(NS, "small-a")
    fake.add_node("a", [])
    raw = fake.pods[(NS, "large")]
    expires = stamp(datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5))
    raw["metadata"]["annotations"][DEFRAG_RESERVATION_ANNOTATION] = json.dumps(
        {"node": "a", "gpus": [0], "started": LONG_AGO, "expires": expires}
    )
    view.apply(Kind.PODS, "MODIFIED", copy.deepcopy(raw))
    service = SchedulingService(view, Settings.of(host="127.0.0.1"), Metrics(view))

    def answer(the_pod: dict[str, Any]) -> dict[str, Any]:
        return service.filter(parse_extender_args(json.dumps({"Pod": the_pod, "NodeNames": ["a", "b"]}).encode()))

    other = pod("other", limits={"nvidia.com/mig-1g.10gb": 1}, namespace=NS)
    kept_out = answer(other)
    assert kept_out["NodeNames"] == ["b"]
    assert "reserved for pod ml/large" in kept_out["FailedNodes"]["a"]
    assert answer(raw)["NodeNames"] == ["a"]
    raw["metadata"]["annotations"][DEFRAG_RESERVATION_ANNOTATION] = json.dumps(
        {"node": "a", "gpus": [0], "started": LONG_AGO, "expires": "2020-01-01T00:00:00Z"}
    )
    view.apply(Kind.PODS, "MODIFIED", copy.deepcopy(raw))
    assert answer(other)["NodeNames"] == ["a", "b"]  # expired: holds nothing


# --- DRA nodes: which pod holds which instance, from the claims' allocations -------------------------------

MIG_CLASS: dict[str, Any] = {
    "apiVersion": "resource.k8s.io/v1",
    "kind": "DeviceClass",
    "metadata": {"name": "mig.nvidia.com"},
    "spec": {"selectors": [{"cel": {"expression": "device.attributes['gpu.nvidia.com'].type == 'mig'"}}]},
}


def dra_claim(
    name: str, profile: str, *, node: str | None = None, device: str = "", pod_uid: str = ""
) -> dict[str, Any]:
    selector = f"device.attributes['{DRIVER}'].profile == '{profile}'"
    claim: dict[str, Any] = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-claim-{name}"},
        "spec": {
            "devices": {
                "requests": [
                    {
                        "name": "mig",
                        "exactly": {
                            "deviceClassName": "mig.nvidia.com",
                            "selectors": [{"cel": {"expression": selector}}],
                        },
                    }
                ]
            }
        },
    }
    if node is not None:
        terms = [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
        claim["status"] = {
            "allocation": {
                "devices": {"results": [{"request": "mig", "driver": DRIVER, "pool": node, "device": device}]},
                "nodeSelector": {"nodeSelectorTerms": terms},
            },
            "reservedFor": [{"resource": "pods", "name": "x", "uid": pod_uid}],
        }
    return claim


def with_claim(raw: dict[str, Any], claim: str) -> dict[str, Any]:
    raw["spec"]["resourceClaims"] = [{"name": "c0", "resourceClaimName": claim}]
    container = raw["spec"]["containers"][0]
    container["resources"] = {"claims": [{"name": "c0"}]}
    return raw


async def test_on_dra_nodes_the_claims_say_which_instance_each_pod_holds() -> None:
    view = ClusterView()
    fake = DefragFake(view)
    labels = {"nvidia.com/gpu.product": H100, "nvidia.com/gpu.count": "1"}
    view.replace(
        Kind.NODES, [{"metadata": {"name": n, "resourceVersion": "1", "labels": labels}} for n in ("dra-a", "dra-b")]
    )
    view.replace(Kind.RESOURCE_SLICES, [*dynamic_mig_slices("dra-a", MODEL, 1), *dynamic_mig_slices("dra-b", MODEL, 1)])
    view.replace(Kind.DEVICE_CLASSES, [MIG_CLASS])
    view.replace(Kind.CLAIM_TEMPLATES, [])
    view.replace(
        Kind.RESOURCE_CLAIMS,
        [
            dra_claim("small-a", "1g.10gb", node="dra-a", device=SMALL_AT_0, pod_uid="uid-small-a"),
            dra_claim("small-b", "1g.10gb", node="dra-b", device=SMALL_AT_0, pod_uid="uid-small-b"),
            dra_claim("big", "4g.40gb"),
        ],
    )
    for name, node in (("small-a", "dra-a"), ("small-b", "dra-b")):
        fake.add_pod(with_claim(small(name, node), name))  # its claim replaces its MIG limits
    fake.add_pod(with_claim(waiting(), "big"))
    for node in ("dra-a", "dra-b"):
        state = view.node_state(node)
        assert state is not None and state.fidelity.value == "dra"
    await controller(view, fake, "plan-only").reconcile()
    plan = parse_plan(annotation(fake, DEFRAG_PLAN_ANNOTATION) or "")
    (move,) = plan.moves
    assert (move.pod, move.node, move.gpu) in (("ml/small-a", "dra-a", 0), ("ml/small-b", "dra-b", 0))
    assert plan.node == move.node and move.target_node != move.node


async def test_the_counts_are_exported() -> None:
    view, fake = cluster()
    defrag = controller(view, fake)
    metrics = Metrics(view)
    metrics.register_defrag(defrag.stats)
    await defrag.reconcile()
    get = metrics.registry.get_sample_value
    assert get("mig_extender_defrag_plans_total", {"outcome": "started"}) == 1
    assert get("mig_extender_defrag_evictions_total") == 1
    assert get("mig_extender_defrag_reservations_total", {"outcome": "made"}) == 1
    assert get("mig_extender_defrag_reservations_active") == 1
    assert get("mig_extender_defrag_lost_pod_seconds_total") == pytest.approx(3 * 3600)
    assert get("mig_extender_defrag_planned_evictions", {"pod": "ml/large"}) == 1
