"""Warm headroom: placeholder pods that hold MIG room for the pods most likely to come next (docs/headroom.md).

Every ``interval_s`` the leader (see :mod:`.leader`) plans the headroom with the model's planner
(:func:`~extender.model.headroom.plan_headroom`): the shapes from the demand distribution the extender
learns, the size from the recent arrival rate of MIG pods (pods the view sees for the first time, by uid)
over ``lead_time_s``, bounded by ``max_gpus`` and ``max_fleet_share`` of the cluster's MIG GPUs. It then
converges the placeholder pods of ``namespace`` (label ``mig-extender.io/headroom``) to the plan: pending
ones are deleted before bound ones when the plan shrinks, new ones are created when it grows.

A placeholder asks for one ``nvidia.com/mig-<profile>`` instance, is pinned to nothing (kube-scheduler places
it through the extender like any pod), runs ``pause``, and has the PriorityClass ``priority_class``, which the
manifests ship below every workload with ``preemptionPolicy: Never``: it never preempts, and any real pod
that needs its room preempts it (kube-scheduler's DefaultPreemption). The evicted placeholder is deleted
(``restartPolicy: Never``, no controller of Kubernetes' own recreates it); the next reconcile creates its
successor, which stays pending until Karpenter (or the provisioning loop) adds a node: that is the headroom
coming back. Placeholders tolerate no taint, so none lands on a node Karpenter is disrupting
(``karpenter.sh/disrupted:NoSchedule``) or on a node under re-layout, and ``exclude_pools`` keeps them off the
NodePools named (node affinity ``karpenter.sh/nodepool NotIn``), so that those can scale to zero.

The controller acts only on what it sees: no MIG GPU in the view, no headroom (it never sizes for a guessed
GPU model). With several GPU models it plans for the one with the most GPUs.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..kube.api import CapacityApi
from ..kube.names import MANAGED_BY_LABEL, NODEPOOL_LABEL
from ..metrics import HeadroomStats
from ..model.catalog import GpuModel
from ..model.headroom import ArrivalRate, HeadroomConfig, HeadroomPlan, plan_headroom
from ..settings import HeadroomSettings
from ..view.store import ClusterView
from .loop import reconcile_forever

log = logging.getLogger(__name__)

HEADROOM_LABEL = "mig-extender.io/headroom"
"""On placeholder pods: the MIG profile the placeholder holds."""
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


def placeholder_pod(profile: str, namespace: str, config: HeadroomSettings) -> dict[str, Any]:
    """A placeholder holding one instance of ``profile``."""
    resource = f"nvidia.com/mig-{profile}"
    affinity: dict[str, Any] = {}
    excluded = [p.strip() for p in config.exclude_pools.split(",") if p.strip()]
    if excluded:
        term = {"matchExpressions": [{"key": NODEPOOL_LABEL, "operator": "NotIn", "values": excluded}]}
        affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"mig-headroom-{profile.replace('.', '-').replace('+', '-')}-"[:58],
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: "mig-extender", HEADROOM_LABEL: profile.replace("+", "-")},
            "annotations": {HEADROOM_LABEL: profile},
        },
        "spec": {
            "priorityClassName": config.priority_class,
            **({"affinity": affinity} if affinity else {}),
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 0,
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "placeholder",
                    "image": PAUSE_IMAGE,
                    "resources": {"requests": {resource: "1"}, "limits": {resource: "1"}},
                    "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 65535},
                }
            ],
        },
    }


class HeadroomController:
    def __init__(
        self,
        view: ClusterView,
        api: CapacityApi,
        config: HeadroomSettings,
        weights: Callable[[], Mapping[str, float]],
        *,
        is_leader: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.mode != "on":
            raise ValueError(f"headroom mode {config.mode!r} is not on")
        self.view = view
        self.api = api
        self.config = config
        self.weights = weights
        self.is_leader = is_leader
        self.clock = clock
        self.rate = ArrivalRate(config.rate_half_life_s)
        self.stats = HeadroomStats()
        self.plan: HeadroomPlan | None = None
        self._seen: set[str] = set()
        self._bound: set[str] = set()
        """Names of the placeholders bound at the last reconcile."""
        self._deleting: set[str] = set()
        self._waiting: dict[str, tuple[float, str]] = {}
        """Real MIG pods seen pending: uid -> (first seen, "yes" if a placeholder of theirs was bound then)."""

    async def run(self) -> None:
        await reconcile_forever(self.reconcile, self.config.interval_s, self._count_error, "headroom")

    def _count_error(self) -> None:
        self.stats.errors += 1

    def _observe(self, now: float) -> None:
        """New MIG pods (not placeholders) count toward the arrival rate once, when first seen."""
        model = self._model()
        for pod in self.view.pods.values():
            if pod.uid in self._seen or pod.demand.is_empty or HEADROOM_LABEL in pod.annotations:
                continue
            self._seen.add(pod.uid)
            for name, count in pod.demand.mig:
                profile = model.find_profile(name) if model is not None else None
                if profile is not None and model is not None:
                    self.rate.observe(model.shape_of(profile), count, now)
        live = set(self.view.pods)
        self._seen &= live
        self._waiting = {uid: seen for uid, seen in self._waiting.items() if uid in live}

    def _time_waits(self, now: float) -> None:
        """Each real MIG pod's wait, from first seen pending to first seen bound, by whether it had a
        placeholder to take (one of its profile bound) when it was first seen."""
        bound = {profile for profile, state in self.stats.held if state == "bound"}
        for pod in self.view.pods.values():
            if pod.demand.is_empty or HEADROOM_LABEL in pod.annotations or not pod.is_active:
                continue
            seen = self._waiting.get(pod.uid)
            if pod.node_name is None and seen is None:
                had = all(name in bound for name, _ in pod.demand.mig)
                self._waiting[pod.uid] = (now, "yes" if had and pod.demand.mig else "no")
            elif pod.node_name is not None and seen is not None and seen[0] >= 0:
                self.stats.wait_seconds[seen[1]] = self.stats.wait_seconds.get(seen[1], 0.0) + now - seen[0]
                self.stats.waits[seen[1]] += 1
                self._waiting[pod.uid] = (-1.0, seen[1])  # timed once

    def _model(self) -> GpuModel | None:
        gpus: Counter[GpuModel] = Counter()
        for state in self.view.node_states():
            for gpu in state.gpus:
                if gpu.mig_enabled:
                    gpus[gpu.model] += 1
        return gpus.most_common(1)[0][0] if gpus else None

    def _fleet_gpus(self, model: GpuModel) -> int:
        return sum(
            1 for state in self.view.node_states() for gpu in state.gpus if gpu.mig_enabled and gpu.model is model
        )

    async def reconcile(self) -> None:
        if not self.is_leader():
            return
        now = self.clock()
        self._observe(now)
        self._time_waits(now)
        model = self._model()
        pods = [p for p in await self.api.list_pods(self.config.namespace, HEADROOM_LABEL) if _is_placeholder(p)]
        if model is None:
            plan_counts: dict[str, int] = {}
            self.plan = None
        else:
            planner = HeadroomConfig(
                lead_time_s=self.config.lead_time_s,
                coverage=self.config.coverage,
                max_gpus=self.config.max_gpus,
                max_fleet_share=self.config.max_fleet_share,
                size=self.config.size,
            )
            self.stats.arrivals_per_s = self.rate.total_per_second(now)
            self.plan = plan_headroom(
                model, self.weights(), self.stats.arrivals_per_s, planner, self._fleet_gpus(model)
            )
            plan_counts = self.plan.by_profile()
        self.stats.planned = dict(plan_counts)
        await self._converge(pods, plan_counts)

    async def _converge(self, pods: Sequence[Mapping[str, Any]], wanted: Mapping[str, int]) -> None:
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        names = {p["metadata"]["name"] for p in live}
        bound_now = {p["metadata"]["name"] for p in live if (p.get("spec") or {}).get("nodeName")}
        self.stats.preempted += len(self._bound - names - self._deleting)
        self._deleting &= names
        by_profile: dict[str, list[Mapping[str, Any]]] = {}
        for pod in live:
            by_profile.setdefault(pod["metadata"]["annotations"][HEADROOM_LABEL], []).append(pod)
        for profile, have in sorted(by_profile.items()):
            excess = len(have) - wanted.get(profile, 0)
            if excess <= 0:
                continue
            # pending first (they hold nothing), then the newest bound ones
            order = sorted(have, key=lambda p: (bool((p.get("spec") or {}).get("nodeName")), p["metadata"]["name"]))
            for pod in order[:excess]:
                name = pod["metadata"]["name"]
                await self.api.delete_pod(self.config.namespace, name)
                self._deleting.add(name)
                bound_now.discard(name)
                names.discard(name)
                self.stats.deleted += 1
        for profile, count in sorted(wanted.items()):
            for _ in range(count - len(by_profile.get(profile, []))):
                await self.api.create_pod(
                    self.config.namespace, placeholder_pod(profile, self.config.namespace, self.config)
                )
                self.stats.created += 1
        self._bound = bound_now
        held: Counter[tuple[str, str]] = Counter()
        for pod in live:
            if pod["metadata"]["name"] in names:
                state = "bound" if pod["metadata"]["name"] in bound_now else "pending"
                held[(pod["metadata"]["annotations"][HEADROOM_LABEL], state)] += 1
        self.stats.held = dict(held)


def _is_placeholder(pod: Mapping[str, Any]) -> bool:
    metadata = pod.get("metadata") or {}
    return HEADROOM_LABEL in (metadata.get("annotations") or {}) and "name" in metadata
