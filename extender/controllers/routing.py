"""kube-scheduler reaches the leader alone (setting ``leader_only_verbs``): its Pod is the Service's one endpoint.

Replicas keep their own views, and what one assumed between an answer and the binding the others do not know:
two replicas answering pods side by side could count the same free slices twice. So only the replica that holds
the Lease answers, and the Service sends kube-scheduler to it alone:

- the leader labels its own Pod ``mig-extender.io/leader=true`` (the Service's selector includes that label),
  with the annotation ``mig-extender.io/leader-term`` set to its term (the Lease's ``acquireTime``), and takes
  both off any other Pod of its namespace that still has them (a leader that lost the Lease while cut off from
  the API server could not take them off itself);
- a replica that does not lead takes them off its own Pod;
- the leader answers once the copy of its own Pod in its view carries its term. A watch delivers a kind's events
  in the order the API server stored them, so its view then holds every binding stored before the label, those
  the previous leader made until it stopped included.

Readiness stays what it was (the view synced and fresh): a replica that does not lead is still ready, so the
Deployment counts it available and the PodDisruptionBudget lets the leader's node drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from ..kube.api import RouteApi
from ..kube.errors import ApiError
from ..kube.names import LEADER_LABEL, LEADER_TERM_ANNOTATION
from ..view.store import ClusterView
from .leader import LeaderElector

log = logging.getLogger(__name__)

TICK_S = 0.25
"""How often the route follows the elector: a new leader labels itself within this of taking the Lease."""


def _labels(term: str | None) -> dict[str, Any]:
    """The merge patch that puts the leader's label and term on a Pod (``term``) or takes them off (None)."""
    return {
        "metadata": {
            "labels": {LEADER_LABEL: "true" if term is not None else None},
            "annotations": {LEADER_TERM_ANNOTATION: term},
        }
    }


class LeaderRoute:
    def __init__(
        self,
        view: ClusterView,
        api: RouteApi,
        elector: LeaderElector,
        *,
        namespace: str,
        pod_name: str,
        sweep_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.view = view
        self.api = api
        self.elector = elector
        self.namespace = namespace
        self.pod_name = pod_name
        self.sweep_s = sweep_s
        """How often the leader lists the labelled Pods of its namespace, to take the label off others' and put it
        back on its own if someone took it off."""
        self.clock = clock
        self._written: str | None = None
        """The term last written on this replica's Pod (None: none, or taken off)."""
        self._cleared = False
        """The label was taken off this replica's Pod since it started (a previous process may have left it)."""
        self._swept_at: float | None = None
        self._own_uid: str | None = None
        self._failing = False

    def serving(self) -> bool:
        """Whether this replica answers kube-scheduler: it leads, and its view shows its Pod labelled for its term."""
        term = self.elector.term
        if not self.elector.is_leader or term is None or self._written != term or self._own_uid is None:
            return False
        pod = self.view.pods.get(self._own_uid)
        return pod is not None and pod.annotations.get(LEADER_TERM_ANNOTATION) == term

    async def run(self) -> None:
        """Follow the elector every :data:`TICK_S`; take the label off this replica's Pod when cancelled."""
        try:
            while True:
                await self.reconcile()
                # after an API error, the next try waits a sweep: no request every tick to a failing server
                await asyncio.sleep(self.sweep_s if self._failing else TICK_S)
        finally:
            if self._written is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(self._write_own(None)), timeout=5)

    async def reconcile(self) -> None:
        """One step; an API error is logged (once until it recovers) and the next tick tries again."""
        try:
            await self._reconcile()
        except (ApiError, OSError, TimeoutError) as exc:
            if not self._failing:
                log.warning("leader route: pod %s/%s: %s", self.namespace, self.pod_name, exc)
            self._failing = True
            return
        if self._failing:
            log.info("leader route: pod %s/%s: the API server answers again", self.namespace, self.pod_name)
        self._failing = False

    async def _reconcile(self) -> None:
        term = self.elector.term if self.elector.is_leader else None
        if term is None:
            if self._written is not None or not self._cleared:
                await self._write_own(None)
                self._cleared = True
            return
        if self._written == term and self._swept_at is not None and self.clock() - self._swept_at < self.sweep_s:
            return
        if self._written != term:  # a new term: the label first, so that kube-scheduler reaches this replica soon
            await self._write_own(term)
            log.info(
                "leader route: pod %s/%s labelled %s=true (term %s)", self.namespace, self.pod_name, LEADER_LABEL, term
            )
        own_term = None
        for pod in await self.api.list_pods(self.namespace, LEADER_LABEL):
            metadata = pod.get("metadata") or {}
            name = str(metadata.get("name"))
            if name == self.pod_name:
                own_term = (metadata.get("annotations") or {}).get(LEADER_TERM_ANNOTATION)
                continue
            # Another replica's Pod still selected: the Service must not send kube-scheduler there.
            log.info("leader route: taking the leader label off pod %s/%s", self.namespace, name)
            await self.api.patch_pod_metadata(self.namespace, name, _labels(None))
        if own_term != term:  # taken off, or changed, by someone else since
            await self._write_own(term)
            log.info("leader route: pod %s/%s labelled again (term %s)", self.namespace, self.pod_name, term)
        self._swept_at = self.clock()

    async def _write_own(self, term: str | None) -> None:
        pod = await self.api.patch_pod_metadata(self.namespace, self.pod_name, _labels(term))
        uid = (pod.get("metadata") or {}).get("uid")
        if isinstance(uid, str):
            self._own_uid = uid
        self._written = term
