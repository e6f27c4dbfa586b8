"""The defrag controller end to end: the real kube-apiserver, kube-scheduler (calling the extender) and
kube-controller-manager (its ReplicaSet controller re-creates evicted pods; its disruption controller computes
the PodDisruptionBudget's status, which the Eviction API enforces).

Two DynamicMIG H100 nodes, each GPU holding one pod of the ReplicaSet ``small`` (1g.10gb at slice 0, opted in
to moves), and a waiting 4g.40gb pod, which needs slices 0-3: it fits nowhere although each GPU has 7 of its 8
slices free. No kubelet and no node agent run here, so the test plays both (:class:`NodeAgent`): it lists each
bound pod's instance in its node's ``mig-extender.io/gpus`` annotation and marks the pod Running and Ready.

- ``plan-only``: the plan is annotated on the waiting pod; nothing is evicted.
- ``on``: exactly the planned pod is evicted; its replacement binds on the other node (the reserved node is
  kept from it); the waiting pod binds where the room was made; nothing else lands there meanwhile.
- a PodDisruptionBudget that allows no disruption: nothing is evicted, and the pod says why.
- a 429 from the Eviction API (a plan carried out once the budget allows nothing): the plan ends cleanly.
- a leader change mid-plan: the plan and reservation a previous leader wrote, with one eviction done (its pod
  already replaced by the ReplicaSet) and one to do, are taken up by a new leader: it evicts the one left,
  once, and touches nothing else.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from extender.model.catalog import model_named
from tests.e2e.harness import (
    K8S_VERSION,
    K8S_VERSIONS,
    NAMESPACE,
    ControlPlane,
    Extender,
    Kube,
    free_port,
    running_plane,
    start_scheduler,
    wait_for,
)
from tests.e2e.test_faults import figures  # noqa: F401 (the fixture: measured figures, as a JSON line)

pytestmark = pytest.mark.defrag

H100 = "NVIDIA-H100-80GB-HBM3"
MIG_1G = "nvidia.com/mig-1g.10gb"
MIG_3G = "nvidia.com/mig-3g.40gb"
MIG_4G = "nvidia.com/mig-4g.40gb"
MERGE = "application/merge-patch+json"
NODES = ("gpu-a", "gpu-b")
PLAN = "mig-extender.io/defrag-plan"
RESERVATION = "mig-extender.io/defrag-reservation"
OUTCOME = "mig-extender.io/defrag-outcome"
MODEL = model_named(H100)


@pytest.fixture(scope="module", params=K8S_VERSIONS)
def plane(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """Every test here on each release built (the Eviction API and the disruption controller are theirs): the
    default one is the session's plane, another runs for this module's tests only."""
    version: str = request.param
    if version == K8S_VERSION:
        yield request.getfixturevalue("default_plane")
        return
    with running_plane(tmp_path_factory.mktemp(f"plane-{version}-"), version) as control_plane:
        yield control_plane


class NodeAgent(threading.Thread):
    """The node agent and the kubelet of the test's nodes, every 0.3 s: each bound pod's instance listed in its
    node's annotation (the lowest legal start free on GPU 0, kept while the pod lives), the pod Running and
    Ready (the disruption controller counts only ready pods as healthy)."""

    def __init__(self, plane: ControlPlane, nodes: tuple[str, ...]) -> None:
        super().__init__(name="node-agent", daemon=True)
        self.plane, self.nodes = plane, nodes
        self.stopping = threading.Event()
        self.placements: dict[str, tuple[str, str, int]] = {}
        """Pod uid -> (node, profile, start)."""
        self.written: dict[str, str] = {}
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stopping.wait(0.3):
            with contextlib.suppress(OSError, AssertionError, ValueError):
                self.sync()

    def sync(self) -> None:
        with self.lock:
            status, data = self.plane.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")
            assert status == 200
            pods = [
                p
                for p in data["items"]
                if p["spec"].get("nodeName") in self.nodes and not p["metadata"].get("deletionTimestamp")
            ]
            alive = {p["metadata"]["uid"] for p in pods}
            self.placements = {u: v for u, v in self.placements.items() if u in alive}
            for raw in sorted(pods, key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"])):
                uid = raw["metadata"]["uid"]
                if uid not in self.placements:
                    self.placements[uid] = self._place(raw)
            for node in self.nodes:
                instances = sorted((s, p) for n, p, s in self.placements.values() if n == node)
                annotation = json.dumps(
                    {
                        "version": "v1",
                        "gpus": [
                            {
                                "index": 0,
                                "product": H100,
                                "mode": "dynamic",
                                "instances": [{"profile": p, "start": s} for s, p in instances],
                            }
                        ],
                    }
                )
                if self.written.get(node) != annotation:
                    body = {"metadata": {"annotations": {"mig-extender.io/gpus": annotation}}}
                    self.plane.request("PATCH", f"/api/v1/nodes/{node}", body, content_type=MERGE)
                    self.written[node] = annotation
            for raw in pods:
                if (raw.get("status") or {}).get("phase") != "Running":
                    self._run(raw)

    def _place(self, raw: dict[str, Any]) -> tuple[str, str, int]:
        node = raw["spec"]["nodeName"]
        (limits,) = [c["resources"]["limits"] for c in raw["spec"]["containers"]]
        (resource,) = [r for r in limits if r.startswith("nvidia.com/mig-")]
        profile = MODEL.profile(resource.removeprefix("nvidia.com/mig-"))
        occupied = 0
        for n, p, s in self.placements.values():
            if n == node:
                occupied |= MODEL.profile(p).occupancy(s)
        start = next(s for s in profile.starts if not profile.occupancy(s) & occupied)
        return node, profile.name, start

    def _run(self, raw: dict[str, Any]) -> None:
        now = raw["metadata"]["creationTimestamp"]
        conditions = [
            {"type": kind, "status": "True", "lastTransitionTime": now}
            for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        body = {"status": {"phase": "Running", "startTime": now, "conditions": conditions}}
        name = raw["metadata"]["name"]
        self.plane.request("PATCH", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}/status", body, content_type=MERGE)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)


@pytest.fixture
def agent(plane: ControlPlane, kube: Kube) -> Iterator[NodeAgent]:
    thread = NodeAgent(plane, NODES)
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture
def manager(plane: ControlPlane, kube: Kube) -> Iterator[object]:
    handle = plane.start_controller_manager("defrag", controllers=["replicaset-controller", "disruption-controller"])
    try:
        yield handle
    finally:
        plane.stop_controller_manager(handle)


def defrag_args(mode: str, lease: str) -> list[str]:
    return [
        *("--defrag", mode),
        *("--defrag-min-wait-s", "0"),
        *("--defrag-interval-s", "1"),
        *("--defrag-pod-cooldown-s", "0"),
        *("--defrag-eviction-grace-period-s", "0"),  # no kubelet would confirm a graceful deletion
        *("--leader-election-namespace", NAMESPACE),
        *("--leader-election-name", lease),
        *("--leader-lease-duration-s", "4"),
        *("--leader-renew-deadline-s", "3"),
        *("--leader-retry-period-s", "0.5"),
    ]


def create_replica_set(kube: Kube, name: str, replicas: int, resources: dict[str, int], movable: bool = True) -> None:
    labels = {"app": name, **({"mig-extender.io/movable": "true"} if movable else {})}
    kube.call(
        "POST",
        f"/apis/apps/v1/namespaces/{NAMESPACE}/replicasets",
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 0,
                        "containers": [
                            {
                                "name": "main",
                                "image": "registry.example/cuda:12",
                                "resources": {"limits": {k: str(v) for k, v in resources.items()}},
                            }
                        ],
                    },
                },
            },
        },
    )


def scale(kube: Kube, name: str, replicas: int) -> None:
    path = f"/apis/apps/v1/namespaces/{NAMESPACE}/replicasets/{name}"
    kube.call("PATCH", path, {"spec": {"replicas": replicas}}, content_type=MERGE)


def cordon(kube: Kube, node: str, unschedulable: bool) -> None:
    kube.call("PATCH", f"/api/v1/nodes/{node}", {"spec": {"unschedulable": unschedulable or None}}, content_type=MERGE)


def pods_of(kube: Kube, app: str) -> dict[str, dict[str, Any]]:
    """The app's pods by name, not being deleted."""
    items = kube.call("GET", f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=app%3D{app}")["items"]
    return {p["metadata"]["name"]: p for p in items if not p["metadata"].get("deletionTimestamp")}


def running_on(kube: Kube, app: str) -> dict[str, str]:
    """Pod name -> node, for the app's pods bound and Running."""
    return {
        name: p["spec"]["nodeName"]
        for name, p in pods_of(kube, app).items()
        if p["spec"].get("nodeName") and (p.get("status") or {}).get("phase") == "Running"
    }


def wait_running(kube: Kube, app: str, count: int, *, without: str | None = None) -> dict[str, str]:
    """Pod name -> node once ``count`` pods of the app run (none of them named ``without``)."""

    def running() -> dict[str, str] | None:
        found = running_on(kube, app)
        return found if len(found) == count and without not in found else None

    return wait_for(f"{count} pods of {app} running", running, timeout=60)


def create_pdb(kube: Kube, app: str, max_unavailable: int) -> None:
    kube.call(
        "POST",
        f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets",
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": app, "namespace": NAMESPACE},
            "spec": {"maxUnavailable": max_unavailable, "selector": {"matchLabels": {"app": app}}},
        },
    )

    def settled() -> bool:
        status = kube.call("GET", f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets/{app}").get("status")
        return (
            bool(status) and status.get("currentHealthy") == 2 and status.get("disruptionsAllowed") == max_unavailable
        )

    wait_for(f"PDB {app} counts its pods", settled, timeout=60)


def delete_pdb(kube: Kube, app: str) -> None:
    kube.call("DELETE", f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets/{app}", ok=(200, 404))


def spread_small_pods(kube: Kube) -> dict[str, str]:
    """The ReplicaSet ``small``'s two pods, one on each node at slice 0: the second placed while the first's
    node is cordoned."""
    create_replica_set(kube, "small", 1, {MIG_1G: 1})
    first = wait_for("small's first pod running", lambda: running_on(kube, "small") or None, timeout=60)
    (node,) = first.values()
    cordon(kube, node, True)
    scale(kube, "small", 2)
    placed = wait_running(kube, "small", 2)
    cordon(kube, node, False)
    assert set(placed.values()) == set(NODES)
    return placed


@pytest.fixture
def cluster(kube: Kube, agent: NodeAgent, manager: object) -> Iterator[Kube]:
    for name in NODES:
        kube.create_node(
            name,
            H100,
            allocatable={MIG_1G: 7, MIG_4G: 1, MIG_3G: 2},
            labels={"mig-extender.io/mode": "dynamic"},
            annotation={"version": "v1", "gpus": [{"index": 0, "product": H100, "mode": "dynamic", "instances": []}]},
        )
    try:
        yield kube
    finally:
        kube.call("DELETE", f"/apis/apps/v1/namespaces/{NAMESPACE}/replicasets", ok=(200, 404))
        kube.call("DELETE", f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets", ok=(200, 404))


def annotations(kube: Kube, pod: str) -> dict[str, str]:
    return dict(kube.pod(pod)["metadata"].get("annotations") or {})


def wait_annotation(kube: Kube, pod: str, key: str, timeout: float = 60) -> str:
    return wait_for(f"{key} on {pod}", lambda: annotations(kube, pod).get(key), timeout)


def test_plan_only_moves_nothing_and_on_evicts_exactly_the_planned_pod(
    plane: ControlPlane,
    cluster: Kube,
    schedulers: list[object],
    workdir: Path,
    figures: dict[str, Any],  # noqa: F811
) -> None:
    kube = cluster
    lease = f"defrag-{free_port()}"
    extender = Extender(plane, workdir, defrag_args("plan-only", lease))
    extender.start()
    try:
        schedulers.append(start_scheduler(plane, workdir, "extender", extender.url))
        before = spread_small_pods(kube)
        create_pdb(kube, "small", 1)
        kube.create_pod("large", {MIG_4G: 1})
        plan = json.loads(wait_annotation(kube, "large", PLAN))
        assert "moves" in plan, plan
        (move,) = plan["moves"]
        planned = move["pod"].split("/")[1]
        assert before[planned] == plan["node"] == move["node"] and move["to"]["node"] != plan["node"]
        time.sleep(3)  # plan-only: three reconciles later, nothing was evicted and no room reserved
        assert running_on(kube, "small") == before and RESERVATION not in annotations(kube, "large")
        assert kube.node_of("large") is None

        extender.extra_args = defrag_args("on", lease)
        extender.restart()
        started = time.monotonic()
        node = kube.wait_bound("large", timeout=90)
        bound_s = time.monotonic() - started
        # The plan it carried out (made afresh by the new process: the same one, unless the two pods tie).
        carried = json.loads(annotations(kube, "large")[PLAN])
        (move,) = carried["moves"]
        planned = move["pod"].split("/")[1]
        assert node == carried["node"] == before[planned]
        after = wait_running(kube, "small", 2, without=planned)
        (survivor,) = set(before) - {planned}
        assert after[survivor] == before[survivor], "only the planned pod was evicted"
        (replacement,) = set(after) - set(before)
        assert after[replacement] != node, "the moved pod binds elsewhere, out of the reserved room"
        on_node = [p["metadata"]["name"] for p in all_pods(kube) if p["spec"].get("nodeName") == node]
        assert on_node == ["large"], f"nothing else landed in the reserved room: {on_node}"
        outcome = wait_annotation(kube, "large", OUTCOME)
        assert outcome.startswith("kept"), outcome
        assert RESERVATION not in annotations(kube, "large")
        reasons = {e["reason"] for e in kube.events_for("large")}
        assert {"DefragPlanned", "DefragEvicted", "DefragDone"} <= reasons
        assert "DefragEvicted" in {e["reason"] for e in kube.events_for(planned)}
        assert metric_value(extender, "mig_extender_defrag_evictions_total") == 1
        figures.update(
            bound_after_on_s=bound_s,
            evictions=1,
            lost_pod_s=metric_value(extender, "mig_extender_defrag_lost_pod_seconds_total"),
        )
    finally:
        extender.stop()


def test_a_budget_that_allows_no_disruption_stops_it_with_a_reason(
    plane: ControlPlane, cluster: Kube, schedulers: list[object], workdir: Path
) -> None:
    kube = cluster
    extender = Extender(plane, workdir, defrag_args("on", f"defrag-{free_port()}"))
    extender.start()
    try:
        schedulers.append(start_scheduler(plane, workdir, "extender", extender.url))
        before = spread_small_pods(kube)
        create_pdb(kube, "small", 0)
        kube.create_pod("large", {MIG_4G: 1})
        shown = json.loads(wait_annotation(kube, "large", PLAN))
        assert "budget allows" in shown.get("reason", ""), shown
        assert running_on(kube, "small") == before and RESERVATION not in annotations(kube, "large")
        assert kube.node_of("large") is None
    finally:
        extender.stop()


def test_a_new_leader_takes_up_a_plan_in_progress_without_repeating_or_losing_an_eviction(
    plane: ControlPlane, cluster: Kube, schedulers: list[object], workdir: Path
) -> None:
    """On gpu-a: two small pods at slices 0 and 1, in the way of a 4g.40gb. gpu-b: a 3g.40gb at slice 0 that no
    one may move, so the small pods go to its slices 4-7. A previous leader planned to move both, evicted the
    first (the ReplicaSet replaced it) and stopped before recording it. The new leader evicts the second only."""
    kube = cluster
    lease = f"defrag-{free_port()}"
    extender = Extender(plane, workdir, defrag_args("off", lease))  # the view and the filter, no controller yet
    extender.start()
    try:
        schedulers.append(start_scheduler(plane, workdir, "extender", extender.url))
        create_replica_set(kube, "blocker", 1, {MIG_3G: 1}, movable=False)
        wait_for("blocker running", lambda: running_on(kube, "blocker") or None, 60)
        (blocked,) = running_on(kube, "blocker").values()
        room = next(n for n in NODES if n != blocked)
        cordon(kube, blocked, True)
        create_replica_set(kube, "small", 2, {MIG_1G: 1})
        before = wait_running(kube, "small", 2)
        cordon(kube, blocked, False)
        assert set(before.values()) == {room}
        kube.create_pod("large", {MIG_4G: 1})
        wait_for("large unschedulable", lambda: (c := kube.scheduled_condition("large")) and c["status"] == "False", 60)
        first, second = sorted(before)
        uids = {name: p["metadata"]["uid"] for name, p in pods_of(kube, "small").items()}
        moves = [
            {
                "pod": f"{NAMESPACE}/{name}",
                "uid": uids[name],
                "node": room,
                "gpu": 0,
                "to": {"node": blocked, "gpu": 0, "placement": f"1g.10gb@{4 + i}"},
                "startedSeconds": 0,
            }
            for i, name in enumerate((first, second))
        ]
        plan = {"node": room, "gpus": [0], "relayout": False, "lostSeconds": 0, "planned": "", "moves": moves}
        reservation = {"node": room, "gpus": [0], "started": "2026-01-01T00:00:00Z", "expires": "2099-01-01T00:00:00Z"}
        body = {
            "metadata": {
                "annotations": {PLAN: json.dumps({**plan, "evicted": []}), RESERVATION: json.dumps(reservation)}
            }
        }
        kube.call("PATCH", f"/api/v1/namespaces/{NAMESPACE}/pods/large", body, content_type=MERGE)
        # The previous leader's eviction of the first pod, not recorded.
        kube.call(
            "POST",
            f"/api/v1/namespaces/{NAMESPACE}/pods/{first}/eviction",
            {
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": {"name": first, "namespace": NAMESPACE},
                "deleteOptions": {"gracePeriodSeconds": 0},
            },
        )
        replaced = wait_running(kube, "small", 2, without=first)
        (replacement,) = set(replaced) - {second}
        assert replaced[replacement] == blocked, "the reservation keeps the replacement off the reserved node"

        extender.extra_args = defrag_args("on", lease)
        extender.restart()
        node = kube.wait_bound("large", timeout=90)
        assert node == room
        after = running_on(kube, "small")
        assert second not in after and replacement in after, "the second pod evicted, the first's replacement left"
        assert metric_value(extender, "mig_extender_defrag_evictions_total") == 1, "one eviction, not two"
        recorded = json.loads(annotations(kube, "large")[PLAN])
        assert recorded["evicted"] == [uids[first], uids[second]]
        assert wait_annotation(kube, "large", OUTCOME).startswith("kept")
    finally:
        extender.stop()


def all_pods(kube: Kube) -> list[dict[str, Any]]:
    items = kube.call("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def metrics(extender: Extender) -> str:
    with urllib.request.urlopen(extender.url + "/metrics", timeout=5) as response:
        return str(response.read().decode())


def metric_value(extender: Extender, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics(extender).splitlines() if line.startswith(name + " "))


def test_a_429_from_the_eviction_api_ends_a_plan_cleanly(
    plane: ControlPlane, cluster: Kube, schedulers: list[object], workdir: Path
) -> None:
    """A plan made while the budget allowed a disruption, carried out once it allows none: the API server answers
    the eviction 429, and the plan ends with the reservation released and the reason on the pods."""
    kube = cluster
    lease = f"defrag-{free_port()}"
    extender = Extender(plane, workdir, defrag_args("off", lease))
    extender.start()
    try:
        schedulers.append(start_scheduler(plane, workdir, "extender", extender.url))
        before = spread_small_pods(kube)
        create_pdb(kube, "small", 0)
        kube.create_pod("large", {MIG_4G: 1})
        wait_for("large unschedulable", lambda: (c := kube.scheduled_condition("large")) and c["status"] == "False", 60)
        name, node = sorted(before.items())[0]
        other = next(n for n in NODES if n != node)
        uid = pods_of(kube, "small")[name]["metadata"]["uid"]
        move = {"pod": f"{NAMESPACE}/{name}", "uid": uid, "node": node, "gpu": 0, "startedSeconds": 0}
        move["to"] = {"node": other, "gpu": 0, "placement": "1g.10gb@1"}
        plan = {"node": node, "gpus": [0], "relayout": False, "lostSeconds": 0, "planned": "", "moves": [move]}
        reservation = {"node": node, "gpus": [0], "started": "2026-01-01T00:00:00Z", "expires": "2099-01-01T00:00:00Z"}
        annotations_patch = {PLAN: json.dumps({**plan, "evicted": []}), RESERVATION: json.dumps(reservation)}
        kube.call(
            "PATCH",
            f"/api/v1/namespaces/{NAMESPACE}/pods/large",
            {"metadata": {"annotations": annotations_patch}},
            content_type=MERGE,
        )
        extender.extra_args = defrag_args("on", lease)
        extender.restart()
        outcome = wait_annotation(kube, "large", OUTCOME)
        assert outcome.startswith("refused") and "429" in outcome, outcome
        assert RESERVATION not in annotations(kube, "large")
        assert running_on(kube, "small") == before, "nothing evicted"
        assert "DefragStopped" in {e["reason"] for e in kube.events_for("large")}
        assert "DefragEvictionRefused" in {e["reason"] for e in kube.events_for(name)}
        assert metric_value(extender, "mig_extender_defrag_evictions_total") == 0
    finally:
        extender.stop()
