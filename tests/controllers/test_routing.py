"""leader_only_verbs: the leader labels its Pod for the Service and answers once its watch shows the label.

Two replicas, ``a`` and ``b``, share one Lease (the in-memory API of ``tests/controllers/fake.py``) and the
Pods below; each has its own view, fed by the Pods' watch events, which a test may hold back as a watch lags.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

import pytest

from extender.controllers.leader import LeaderElector
from extender.controllers.routing import LeaderRoute
from extender.kube.errors import NotFound
from extender.kube.names import LEADER_LABEL, LEADER_TERM_ANNOTATION
from extender.settings import LeaderElectionSettings
from extender.view.store import ClusterView, Kind
from tests.controllers.fake import FakeApi
from tests.support import Clock

NAMESPACE = "mig-extender"
LEASE = LeaderElectionSettings(
    namespace=NAMESPACE, name="mig-extender", lease_duration_s=15, renew_deadline_s=10, retry_period_s=2, verbs=True
)


def merge(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386, nulls dropped at every depth (a new object's too)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping):
            current = target.get(key)
            target[key] = merge(current if isinstance(current, dict) else {}, value)
        else:
            target[key] = copy.deepcopy(value)
    return target


class Pods:
    """The extender's own Pods in the API server: label selectors by key, merge patches, watch events to views
    (held back while ``lagging``)."""

    def __init__(self, *names: str) -> None:
        self.version = 0
        self.pods = {name: self._bumped({"metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}"}})
                     for name in names}  # fmt: skip
        self.views: list[ClusterView] = []
        self.lagging = False
        self.held: list[dict[str, Any]] = []
        self.down: set[str] = set()
        """Replicas (by Pod name) cut off from the API server."""
        self.patches: list[tuple[str, dict[str, Any]]] = []

    def _bumped(self, pod: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        pod["metadata"]["resourceVersion"] = str(self.version)
        return pod

    def view(self) -> ClusterView:
        view = ClusterView()
        view.replace(Kind.PODS, copy.deepcopy(list(self.pods.values())))
        for kind in Kind:
            if not view.sync[kind].synced:
                view.replace(kind, [])
        self.views.append(view)
        return view

    def deliver(self) -> None:
        for pod in self.held:
            for view in self.views:
                view.apply(Kind.PODS, "MODIFIED", copy.deepcopy(pod))
        self.held.clear()

    def api(self, replica: str) -> PodApi:
        return PodApi(self, replica)


class PodApi:
    """One replica's connection to :class:`Pods`."""

    def __init__(self, pods: Pods, replica: str) -> None:
        self.pods, self.replica = pods, replica

    def _check(self) -> None:
        if self.replica in self.pods.down:
            raise OSError("connection refused")

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        self._check()
        return [
            copy.deepcopy(p) for p in self.pods.pods.values() if label_selector in (p["metadata"].get("labels") or {})
        ]

    async def patch_pod_metadata(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        self._check()
        if name not in self.pods.pods:
            raise NotFound(404, f'pods "{name}" not found')
        pod = self.pods._bumped(merge(self.pods.pods[name], patch))
        self.pods.patches.append((name, copy.deepcopy(dict(patch))))
        self.pods.held.append(copy.deepcopy(pod))
        if not self.pods.lagging:
            self.pods.deliver()
        return copy.deepcopy(pod)


def labelled(pods: Pods) -> dict[str, str | None]:
    """Pod -> its leader term, for the Pods the Service selects."""
    return {
        name: (p["metadata"].get("annotations") or {}).get(LEADER_TERM_ANNOTATION)
        for name, p in pods.pods.items()
        if (p["metadata"].get("labels") or {}).get(LEADER_LABEL) == "true"
    }


class Replica:
    def __init__(self, name: str, leases: FakeApi, pods: Pods, clock: Clock, **elector: Any) -> None:
        self.view = pods.view()
        self.elector = LeaderElector(leases, LEASE, identity=name, clock=clock.monotonic, now=clock.wall, **elector)
        self.route = LeaderRoute(
            self.view, pods.api(name), self.elector, namespace=NAMESPACE, pod_name=name, sweep_s=2, clock=clock
        )

    async def tick(self) -> None:
        await self.elector.try_once()
        await self.route.reconcile()


async def test_the_leader_answers_once_its_watch_shows_its_pod_labelled_and_the_standby_never() -> None:
    leases, pods, clock = FakeApi(), Pods("a", "b"), Clock()
    a, b = Replica("a", leases, pods, clock), Replica("b", leases, pods, clock)
    pods.lagging = True
    await a.tick()
    await b.tick()
    assert a.elector.is_leader and not b.elector.is_leader
    assert labelled(pods) == {"a": a.elector.term}
    # the label is stored; until a's watch brings it back, a's view may lack bindings stored before it
    assert not a.route.serving()
    pods.deliver()
    assert a.route.serving() and not b.route.serving()
    for _ in range(5):  # renewals keep the term: nothing is written again
        clock.advance(2)
        written = len(pods.patches)
        await a.tick()
        await b.tick()
        assert len(pods.patches) == written and a.route.serving() and not b.route.serving()


async def test_a_takeover_moves_the_label_and_a_leader_cut_off_stops_answering() -> None:
    leases, pods, clock = FakeApi(), Pods("a", "b"), Clock()
    a, b = Replica("a", leases, pods, clock), Replica("b", leases, pods, clock)
    await a.tick()
    await b.tick()
    first_term = a.elector.term
    pods.down.add("a")  # a keeps running but reaches no API server: it can neither renew nor take its label off
    leases.down = True
    clock.advance(10)
    await a.tick()
    assert not a.route.serving(), "past its renew deadline a stops answering, before b may take over"
    leases.down = False
    clock.advance(6)
    await b.tick()
    assert b.elector.is_leader and b.elector.term != first_term
    assert labelled(pods) == {"b": b.elector.term}, "b took the label off a's Pod: the Service selects b alone"
    assert b.route.serving() and not a.route.serving()
    pods.down.clear()  # a reaches the API server again: it does not lead, and keeps its Pod unlabelled
    await a.tick()
    assert labelled(pods) == {"b": b.elector.term} and not a.route.serving()


async def test_a_label_taken_off_by_hand_is_put_back_at_the_next_sweep() -> None:
    leases, pods, clock = FakeApi(), Pods("a"), Clock()
    a = Replica("a", leases, pods, clock)
    await a.tick()
    merge(pods.pods["a"], {"metadata": {"labels": {LEADER_LABEL: None}}})
    clock.advance(2)
    await a.tick()
    assert labelled(pods) == {"a": a.elector.term}


async def test_stopping_releases_the_lease_after_the_bindings_in_flight_and_unlabels_the_pod() -> None:
    leases, pods, clock = FakeApi(), Pods("a", "b"), Clock()
    order: list[str] = []

    async def drained() -> None:
        order.append("drained")

    a = Replica("a", leases, pods, clock, before_release=drained)
    await a.tick()
    election, route = asyncio.create_task(a.elector.run()), asyncio.create_task(a.route.run())
    await asyncio.sleep(0)
    for task in (election, route):
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert order == ["drained"]
    assert "holderIdentity" not in leases.leases[(NAMESPACE, "mig-extender")]["spec"]
    assert labelled(pods) == {}
    b = Replica("b", leases, pods, clock)
    await b.tick()
    assert b.route.serving(), "the next replica takes over at once"


async def test_a_replica_whose_view_is_stale_gives_the_lease_up() -> None:
    leases, pods, clock = FakeApi(), Pods("a", "b"), Clock()
    fresh = {"a": True, "b": True}
    a = Replica("a", leases, pods, clock, may_lead=lambda: fresh["a"])
    b = Replica("b", leases, pods, clock, may_lead=lambda: fresh["b"])
    fresh["b"] = False  # b's view is stale: it does not even try
    await b.tick()
    assert not b.elector.is_leader and (NAMESPACE, "mig-extender") not in leases.leases
    await a.tick()
    fresh["a"], fresh["b"] = False, True
    clock.advance(2)
    await a.tick()
    assert not a.elector.is_leader and not a.route.serving() and labelled(pods) == {}
    await b.tick()
    assert b.route.serving() and labelled(pods) == {"b": b.elector.term}


async def test_a_replica_that_starts_takes_off_a_label_an_earlier_process_left() -> None:
    leases, pods, clock = FakeApi(), Pods("a", "b"), Clock()
    merge(
        pods.pods["b"], {"metadata": {"labels": {LEADER_LABEL: "true"}, "annotations": {LEADER_TERM_ANNOTATION: "x"}}}
    )
    a, b = Replica("a", leases, pods, clock), Replica("b", leases, pods, clock)
    await a.tick()
    await b.tick()
    assert labelled(pods) == {"a": a.elector.term}
