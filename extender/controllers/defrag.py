"""The defragmentation controller: evict a few movable pods so that a waiting MIG pod fits (docs/defrag.md).

Every ``interval_s`` the leader (see :mod:`.leader`) reconciles:

1. **Follow** the plans in progress, whose state lives on the waiting pod (so that a new leader resumes them):
   the annotation ``mig-extender.io/defrag-plan`` (the moves, and the evictions done so far) and
   ``mig-extender.io/defrag-reservation`` (node, GPUs, expiry; the filter keeps other MIG pods off that node
   meanwhile). Each planned pod still there is evicted in turn through the Eviction API, with its uid as a
   precondition (a pod re-created under the name is not the one planned); one gone already counts as done, so
   a new leader never evicts a pod twice and never skips one. A 429 (a PodDisruptionBudget forbids it now)
   ends the plan: the reservation is released and the reason written on the pod. The plan ends when the
   waiting pod binds (kept: on the reserved node; elsewhere: reported), is deleted (nothing more is evicted),
   or the reservation expires.
2. **Plan** for pending MIG pods whose verdict (``relayout`` or ``no-layout-fits``) is at least ``min_wait_s``
   old, oldest first, with :func:`~extender.model.defrag.plan_room` over the nodes the pod may use whose GPU
   state is known exactly (a node agent's annotation, or DRA), and the running pods there whose instance is
   known exactly. A pod may be moved only if it opted in (label or annotation ``mig-extender.io/movable:
   "true"``, or a namespace in ``namespaces``), a ReplicaSet, StatefulSet or Job controls it, it started at
   least ``pod_cooldown_s`` ago, neither it nor its node is marked ``karpenter.sh/do-not-disrupt``, every
   node of the plan admits it, and at most one PodDisruptionBudget selects it (the Eviction API refuses more).
   Budgets are read from the PDBs' status (``disruptionsAllowed``). ``plan-only`` writes the plan (or why there
   is none) on the pod and exports it; ``on`` starts it, within ``max_concurrent`` plans and
   ``max_per_hour`` evictions.

Every step is an Event on the waiting pod and on each moved pod, and a count in :class:`DefragStats`.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..kube.api import DefragApi
from ..kube.errors import ApiError
from ..kube.events import pod_reference
from ..kube.names import (
    DEFRAG_OUTCOME_ANNOTATION,
    DEFRAG_PLAN_ANNOTATION,
    DEFRAG_RESERVATION_ANNOTATION,
    DO_NOT_DISRUPT_ANNOTATION,
    RELAYOUT_PHASE_LABEL,
    SINCE_ANNOTATION,
    VERDICT_ANNOTATION,
)
from ..kube.times import parse_time
from ..metrics import DefragStats
from ..model.catalog import CatalogError
from ..model.defrag import DefragPlan, NoPlan, RunningPod, plan_room
from ..model.placement import Placement
from ..model.policy import PodVerdict, PolicyConfig, evaluate
from ..model.state import Fidelity, NodeState
from ..settings import DefragSettings
from ..view.objects import PodInfo
from ..view.reservations import Reservation, ReservationError, parse_reservation
from ..view.sources import AnnotationError, parse_gpus_annotation
from ..view.store import ClusterView
from .loop import reconcile_forever

log = logging.getLogger(__name__)

EVENT_ACTION = "Defrag"
OWNER_KINDS = frozenset({"ReplicaSet", "StatefulSet", "Job"})
"""Controllers that re-create an evicted pod (a bare pod would be gone for good)."""
_WAITING_VERDICTS = frozenset({PodVerdict.RELAYOUT.value, PodVerdict.NO_LAYOUT_FITS.value})
_POLICY = PolicyConfig()
_PLANS_PER_RECONCILE = 20
"""Waiting pods planned for per reconcile at most (oldest first): each plan reads the budgets once."""


class PlanError(ValueError):
    """A plan annotation that cannot be read."""


@dataclass(frozen=True, slots=True)
class PlannedMove:
    pod: str
    """``namespace/name``."""
    uid: str
    node: str
    gpu: int
    target_node: str
    target_gpu: int
    target: str
    """The placement it is expected to get there (``1g.10gb@3``), for people: kube-scheduler decides."""
    started_s: float = 0.0

    @property
    def namespace(self) -> str:
        return self.pod.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.pod.split("/", 1)[1]


@dataclass
class Plan:
    """A plan as written on the waiting pod (``mig-extender.io/defrag-plan``)."""

    node: str
    gpus: tuple[int, ...]
    moves: tuple[PlannedMove, ...]
    lost_s: float
    relayout: bool
    planned: str
    evicted: list[str] = field(default_factory=list)
    """Uids of the planned pods evicted (or found gone) so far."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "node": self.node,
                "gpus": list(self.gpus),
                "relayout": self.relayout,
                "lostSeconds": round(self.lost_s, 1),
                "planned": self.planned,
                "moves": [
                    {
                        "pod": m.pod,
                        "uid": m.uid,
                        "node": m.node,
                        "gpu": m.gpu,
                        "to": {"node": m.target_node, "gpu": m.target_gpu, "placement": m.target},
                        "startedSeconds": m.started_s,
                    }
                    for m in self.moves
                ],
                "evicted": self.evicted,
            },
            separators=(",", ":"),
        )

    def shape(self) -> tuple[object, ...]:
        """What the plan does, without when it was made: a plan annotated again only when this changes."""
        return (self.node, self.gpus, tuple((m.uid, m.target_node, m.target_gpu) for m in self.moves))

    @property
    def remaining(self) -> list[PlannedMove]:
        return [m for m in self.moves if m.uid not in self.evicted]


def parse_plan(text: str) -> Plan:
    try:
        data = json.loads(text)
        moves = tuple(
            PlannedMove(
                str(m["pod"]),
                str(m["uid"]),
                str(m["node"]),
                int(m["gpu"]),
                str(m["to"]["node"]),
                int(m["to"]["gpu"]),
                str(m["to"]["placement"]),
                float(m.get("startedSeconds") or 0.0),
            )
            for m in data["moves"]
        )
        if any("/" not in m.pod for m in moves):
            raise PlanError("a move's pod must be namespace/name")
        return Plan(
            str(data["node"]),
            tuple(int(g) for g in data["gpus"]),
            moves,
            float(data.get("lostSeconds") or 0.0),
            bool(data.get("relayout")),
            str(data.get("planned") or ""),
            [str(u) for u in data.get("evicted") or []],
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PlanError(f"unreadable plan: {exc!r}") from None


def _stamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def label_selector(selector: Mapping[str, Any]) -> str | None:
    """A LabelSelector as the ``labelSelector`` query parameter; None if an operator is unknown."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        if operator == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif operator == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif operator == "Exists":
            parts.append(str(key))
        elif operator == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            return None
    return ",".join(parts)


@dataclass
class _Gathered:
    """What one plan is made from, and why pods and nodes were left out (for the reason a person reads)."""

    nodes: dict[str, NodeState] = field(default_factory=dict)
    running: list[RunningPod] = field(default_factory=list)
    pods: dict[str, PodInfo] = field(default_factory=dict)
    """The running pods by uid."""
    budgets: dict[str, int] = field(default_factory=dict)
    left_out_nodes: dict[str, int] = field(default_factory=dict)
    """Reason -> nodes."""
    not_movable: dict[str, int] = field(default_factory=dict)
    """Reason -> pods."""

    def summary(self) -> str:
        parts = [f"{count} node(s) {why}" for why, count in sorted(self.left_out_nodes.items())]
        parts += [f"{count} pod(s) {why}" for why, count in sorted(self.not_movable.items())]
        return "; ".join(parts)


class DefragController:
    def __init__(
        self,
        view: ClusterView,
        api: DefragApi,
        config: DefragSettings,
        *,
        relayout: bool = False,
        policy: PolicyConfig = _POLICY,
        is_leader: Callable[[], bool] = lambda: True,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        if config.mode not in ("plan-only", "on"):
            raise ValueError(f"defrag mode {config.mode!r} is not plan-only or on")
        self.view = view
        self.api = api
        self.config = config
        self.relayout = relayout
        """The re-layout controller is on: static GPUs may be emptied for it to re-partition."""
        self.policy = policy
        """The extender's own (its dynamic allocator): what fits is judged as the filter judges it."""
        self.is_leader = is_leader
        self.now = now
        self.stats = DefragStats()
        self.evictions: deque[datetime.datetime] = deque()
        self.shown: dict[str, tuple[object, ...] | str] = {}
        """Waiting pod uid -> the plan (or reason) last written on it in plan-only mode."""
        self.reported: set[tuple[str, str]] = set()
        """(waiting pod uid, newcomer uid) already reported as in the reserved room."""

    async def run(self) -> None:
        await reconcile_forever(self.reconcile, self.config.interval_s, self._count_error, "defrag")

    def _count_error(self) -> None:
        self.stats.errors += 1

    async def reconcile(self) -> None:
        if not self.is_leader():
            self.shown.clear()
            self.stats.reservations_active = 0
            return
        if self.config.mode == "on":
            # Pending pods holding room, and pods that bound while no replica led (their plan is ended).
            for pod in [p for p in self.view.pods.values() if DEFRAG_RESERVATION_ANNOTATION in p.annotations]:
                await self._follow(pod)
        await self._plan()
        self.stats.reservations_active = sum(1 for _ in self.view.reservations.all())

    # --- following plans in progress ---------------------------------------------------------------------

    async def _follow(self, pod: PodInfo) -> None:
        text = pod.annotations[DEFRAG_RESERVATION_ANNOTATION]
        try:
            reservation = parse_reservation(pod, text)
        except ReservationError as exc:
            await self._end(pod, None, "changed", f"its reservation annotation is unreadable ({exc}); removed")
            return
        if not pod.is_active:  # it ended (Failed, Succeeded) without running here: nothing more is evicted for it
            await self._end(pod, reservation, "deleted", f"the pod is {pod.phase}", warning=True)
            return
        if pod.node_name:
            if pod.node_name == reservation.node:
                await self._end(pod, reservation, "kept", f"bound to node {pod.node_name}, where room was made")
            else:
                await self._end(
                    pod,
                    reservation,
                    "elsewhere",
                    f"bound to node {pod.node_name}, not to node {reservation.node} where room was made",
                    warning=True,
                )
            return
        if not reservation.holds(self.now()):
            await self._end(
                pod,
                reservation,
                "expired",
                f"the reservation of node {reservation.node} expired before the pod bound; the pod is planned "
                "for afresh",
                warning=True,
            )
            return
        try:
            plan = parse_plan(pod.annotations.get(DEFRAG_PLAN_ANNOTATION, ""))
        except PlanError as exc:
            await self._end(pod, reservation, "changed", f"its plan annotation is unreadable ({exc})", warning=True)
            return
        for move in plan.remaining:
            if not await self._evict(pod, reservation, plan, move):
                return
        await self._check_room(pod, reservation, plan)

    async def _waiting_now(self, pod: PodInfo) -> str:
        """The waiting pod as the API server has it now: ``pending``, ``bound``, or ``gone`` (deleted, or
        another pod under its name)."""
        raw = await self.api.get_pod(pod.namespace, pod.name)
        metadata = (raw or {}).get("metadata") or {}
        if raw is None or metadata.get("uid") != pod.uid or metadata.get("deletionTimestamp"):
            return "gone"
        return "bound" if (raw.get("spec") or {}).get("nodeName") else "pending"

    async def _evict(self, pod: PodInfo, reservation: Reservation, plan: Plan, move: PlannedMove) -> bool:
        """Evict one planned pod (or find it gone); False when the plan stops here."""
        waiting = await self._waiting_now(pod)
        if waiting == "gone":
            # Its reservation went with it: nothing more is evicted for it.
            self.stats.reservations["deleted"] += 1
            log.info("defrag: waiting pod %s is gone; no further pod is evicted for it", pod.key)
            return False
        if waiting == "bound":
            return False  # the next reconcile ends the plan
        raw = await self.api.get_pod(move.namespace, move.name)
        metadata = (raw or {}).get("metadata") or {}
        gone = raw is None or metadata.get("uid") != move.uid
        if not gone and metadata.get("deletionTimestamp"):
            gone = True  # on its way out already (an eviction of ours whose record was lost, or someone else's)
        elif not gone and (raw or {}).get("spec", {}).get("nodeName") != move.node:
            await self._end(
                pod, reservation, "changed", f"planned pod {move.pod} is no longer on node {move.node}", warning=True
            )
            return False
        if not gone:
            grace = None if self.config.grace_period_s < 0 else self.config.grace_period_s
            try:
                await self.api.evict_pod(move.namespace, move.name, move.uid, grace)
            except ApiError as exc:
                if exc.status == 429:
                    self.stats.evictions_refused["budget"] += 1
                    await self._end(
                        pod,
                        reservation,
                        "refused",
                        f"the eviction of {move.pod} was refused (429): its PodDisruptionBudget allows no "
                        f"disruption now ({exc}); no further pod is evicted",
                        warning=True,
                    )
                    await self._event(
                        move.namespace,
                        move.name,
                        move.uid,
                        "DefragEvictionRefused",
                        "Warning",
                        f"not evicted for pod {pod.key}: its PodDisruptionBudget allows none now",
                    )
                    return False
                if exc.status not in (404, 409):  # 404, 409: gone, or another pod under the name
                    self.stats.evictions_refused["other"] += 1
                    raise
            else:
                now = self.now()
                self.evictions.append(now)
                self.stats.evictions += 1
                lost = max(0.0, now.timestamp() - move.started_s) if move.started_s else 0.0
                self.stats.lost_pod_seconds += lost
                text = (
                    f"evicted to make room for pod {pod.key} on node {reservation.node} "
                    f"(expected to go to node {move.target_node} GPU {move.target_gpu} as {move.target})"
                )
                log.info("defrag: %s %s", move.pod, text)
                await self._event(move.namespace, move.name, move.uid, "DefragEvicted", "Normal", text)
                await self._event(pod.namespace, pod.name, pod.uid, "DefragEvicted", "Normal", f"{move.pod} {text}")
        plan.evicted.append(move.uid)
        await self.api.patch_pod_metadata(
            pod.namespace, pod.name, {"metadata": {"annotations": {DEFRAG_PLAN_ANNOTATION: plan.to_json()}}}
        )
        return True

    async def _check_room(self, pod: PodInfo, reservation: Reservation, plan: Plan) -> None:
        """Every planned pod is gone: report pods that bound in the reserved room meanwhile; if the waiting pod no
        longer fits there once the planned pods have left, the reservation is released."""
        known = {pod.uid, *reservation.residents, *(m.uid for m in plan.moves)}
        newcomers = [p for p in self.view.pods_on(reservation.node) if p.uid not in known and _holds_mig(p)]
        for newcomer in newcomers:
            if (pod.uid, newcomer.uid) in self.reported:
                continue
            self.reported.add((pod.uid, newcomer.uid))
            self.stats.room_taken += 1
            text = f"pod {newcomer.key} bound to node {reservation.node} while its room was reserved for {pod.key}"
            log.warning("defrag: %s", text)
            await self._event(pod.namespace, pod.name, pod.uid, "DefragRoomTaken", "Warning", text)
            await self._event(
                newcomer.namespace,
                newcomer.name,
                newcomer.uid,
                "DefragRoomTaken",
                "Warning",
                f"bound to node {reservation.node}, reserved for pod {pod.key} (by another scheduler, or before "
                "the reservation was seen)",
            )
        planned_left = any(p.uid in {m.uid for m in plan.moves} for p in self.view.pods_on(reservation.node))
        state = self.view.node_state(reservation.node)
        if not newcomers or planned_left or state is None or plan.relayout:
            return
        if not evaluate(state, pod.demand, self.policy).fits_now:
            names = ", ".join(p.key for p in newcomers)
            await self._end(
                pod,
                reservation,
                "taken",
                f"the room made on node {reservation.node} was taken by {names}; the pod is planned for afresh",
                warning=True,
            )

    async def _end(
        self, pod: PodInfo, reservation: Reservation | None, outcome: str, why: str, *, warning: bool = False
    ) -> None:
        """The plan ends: reservation removed, outcome written on the pod (if it still exists), Event."""
        self.stats.reservations[outcome] += 1
        text = f"{outcome} {_stamp(self.now())}: {why}"
        (log.warning if warning else log.info)("defrag: pod %s: %s", pod.key, text)
        patch = {"metadata": {"annotations": {DEFRAG_RESERVATION_ANNOTATION: None, DEFRAG_OUTCOME_ANNOTATION: text}}}
        try:
            await self.api.patch_pod_metadata(pod.namespace, pod.name, patch)
        except ApiError as exc:
            if exc.status != 404:
                raise
            return  # the pod and its reservation are gone together
        self.view.annotate(pod.uid, patch["metadata"]["annotations"])
        reason = {"kept": "DefragDone"}.get(outcome, "DefragStopped")
        await self._event(pod.namespace, pod.name, pod.uid, reason, "Warning" if warning else "Normal", text)

    # --- planning ----------------------------------------------------------------------------------------

    def _waiting(self) -> list[PodInfo]:
        now = self.now()
        found = []
        for pod in self.view.pending_mig_pods():
            if pod.demand_error or pod.annotations.get(VERDICT_ANNOTATION) not in _WAITING_VERDICTS:
                continue
            if DEFRAG_RESERVATION_ANNOTATION in pod.annotations:
                continue
            since = parse_time(pod.annotations.get(SINCE_ANNOTATION))
            if since is None or (now - since).total_seconds() < self.config.min_wait_s:
                continue
            ended = _outcome_time(pod.annotations.get(DEFRAG_OUTCOME_ANNOTATION))
            if ended is not None and (now - ended).total_seconds() < self.config.min_wait_s:
                continue  # its last plan ended just now: the cluster settles before another is made
            found.append(pod)
        return sorted(found, key=lambda p: (p.annotations.get(SINCE_ANNOTATION, ""), p.key))

    def _evictions_left(self) -> int:
        hour_ago = self.now() - datetime.timedelta(hours=1)
        while self.evictions and self.evictions[0] < hour_ago:
            self.evictions.popleft()
        return self.config.max_per_hour - len(self.evictions)

    async def _plan(self) -> None:
        waiting = self._waiting()[:_PLANS_PER_RECONCILE]
        live = {p.uid for p in waiting}
        for uid in [u for u in self.shown if u not in live]:
            del self.shown[uid]
        self.stats.planned_evictions = {
            k: v for k, v in self.stats.planned_evictions.items() if k in {p.key for p in waiting}
        }
        if not waiting:
            return
        budgets: dict[str, tuple[str, int]] | None = None
        for pod in waiting:
            if self.config.mode == "on":
                active = sum(1 for _ in self.view.reservations.all())
                if active >= self.config.max_concurrent:
                    return
            limit = min(self.config.max_evictions, max(0, self._evictions_left()))
            if budgets is None:
                budgets = await self._read_budgets()
            gathered = await self._gather(pod, budgets)
            if limit < 1:
                result: DefragPlan | NoPlan = NoPlan(
                    f"the limit of {self.config.max_per_hour} evictions per hour is reached"
                )
            else:
                result = plan_room(
                    gathered.nodes,
                    gathered.running,
                    pod.demand,
                    priority=pod.priority,
                    now_s=self.now().timestamp(),
                    budgets=gathered.budgets,
                    max_evictions=limit,
                    max_lost_s=self.config.max_lost_s or None,
                    relayout=self.relayout,
                    config=self.policy,
                )
            if isinstance(result, NoPlan):
                self.stats.planned_evictions.pop(pod.key, None)
                await self._show_reason(pod, result.reason, gathered)
                continue
            plan = self._plan_record(result, gathered)
            if (
                len(self.stats.planned_evictions) < self.config.max_plans_shown
                or pod.key in self.stats.planned_evictions
            ):
                self.stats.planned_evictions[pod.key] = result.evictions
            if self.config.mode == "plan-only":
                await self._show_plan(pod, plan)
            else:
                await self._start(pod, plan)

    async def _read_budgets(self) -> dict[str, tuple[str, int]]:
        """Pod uid -> (its PDB as namespace/name, disruptions allowed); pods several PDBs select map to ''."""
        covered: dict[str, tuple[str, int]] = {}
        for pdb in await self.api.list_pod_disruption_budgets():
            metadata = pdb.get("metadata") or {}
            namespace, name = str(metadata.get("namespace") or "default"), str(metadata.get("name") or "")
            selector = (pdb.get("spec") or {}).get("selector")
            if selector is None:
                continue  # policy/v1: a null selector selects no pod
            allowed = int((pdb.get("status") or {}).get("disruptionsAllowed") or 0)
            query = label_selector(selector)
            if query is None:  # an operator this code does not know: every pod of the namespace is covered
                query = ""
            for raw in await self.api.list_pods(namespace, query):
                uid = str((raw.get("metadata") or {}).get("uid") or "")
                covered[uid] = ("", 0) if uid in covered else (f"{namespace}/{name}", allowed)
        return covered

    async def _gather(self, pod: PodInfo, budgets: Mapping[str, tuple[str, int]]) -> _Gathered:
        gathered = _Gathered()
        now = self.now()
        for name, info in sorted(self.view.nodes.items()):
            if not info.admits(pod.placement):
                continue
            state = self.view.node_state(name)
            if state is None or not state.gpus:
                continue
            if state.fidelity not in (Fidelity.EXACT, Fidelity.DRA):
                _count(gathered.left_out_nodes, "with a GPU layout estimated, not known exactly")
                continue
            if RELAYOUT_PHASE_LABEL in info.labels:
                _count(gathered.left_out_nodes, "being re-partitioned")
                continue
            if any(r.pod_uid != pod.uid and r.holds(now) for r in self.view.reservations.on(name).values()):
                _count(gathered.left_out_nodes, "reserved for another waiting pod")
                continue
            gathered.nodes[name] = state
        held = self._held_exactly(gathered.nodes, gathered)
        for running, where in held:
            why = self._not_movable(running, gathered.nodes, budgets, now)
            if why:
                _count(gathered.not_movable, why)
            budget = budgets.get(running.uid)
            group = budget[0] if budget else None
            if group:
                gathered.budgets[group] = budget[1] if budget else 0
            started = parse_time(running.disruption.started if running.disruption else None)
            for gpu, placement in where:
                gathered.running.append(
                    RunningPod(
                        uid=running.uid,
                        name=running.key,
                        node=running.node_name or "",
                        gpu=gpu,
                        placement=placement,
                        started_s=started.timestamp() if started else now.timestamp(),
                        priority=running.priority,
                        movable=not why,
                        budget=group,
                    )
                )
            gathered.pods[running.uid] = running
        return gathered

    def _not_movable(
        self,
        pod: PodInfo,
        nodes: Mapping[str, NodeState],
        budgets: Mapping[str, tuple[str, int]],
        now: datetime.datetime,
    ) -> str:
        """Why the pod may not be moved, or '' if it may."""
        disruption = pod.disruption
        if disruption is None or disruption.deleting:
            return "on their way out"
        if not (disruption.opted_in or pod.namespace in self.config.movable_namespaces):
            return "not opted in (mig-extender.io/movable)"
        if disruption.owner_kind not in OWNER_KINDS:
            return "not controlled by a ReplicaSet, StatefulSet or Job (nothing would re-create them)"
        if disruption.do_not_disrupt:
            return "marked karpenter.sh/do-not-disrupt"
        node = self.view.nodes.get(pod.node_name or "")
        if node is not None and node.annotations.get(DO_NOT_DISRUPT_ANNOTATION) == "true":
            return "on a node marked karpenter.sh/do-not-disrupt"
        started = parse_time(disruption.started)
        if started is None or (now - started).total_seconds() < self.config.pod_cooldown_s:
            return f"started less than defrag_pod_cooldown_s ({self.config.pod_cooldown_s:.0f} s) ago"
        if any(not self.view.nodes[n].admits(pod.placement) for n in nodes if n in self.view.nodes):
            return "restricted to some of the nodes (selector, affinity or tolerations)"
        budget = budgets.get(pod.uid)
        if budget is not None and not budget[0]:
            return "selected by several PodDisruptionBudgets (the Eviction API refuses them)"
        return ""

    def _held_exactly(
        self, nodes: Mapping[str, NodeState], gathered: _Gathered
    ) -> list[tuple[PodInfo, list[tuple[int, Placement]]]]:
        """The running MIG pods on ``nodes`` whose instances are known exactly, with (GPU, placement) of each.

        DRA nodes: from the claims reserved for the pod and their allocated devices. Nodes with a node agent's
        annotation: the agent lists instances, not pods, so a pod is placed only where that is certain, on a
        node where it is the one pod of its profile and the node has one used instance of it.
        """
        found: list[tuple[PodInfo, list[tuple[int, Placement]]]] = []
        claims_of: dict[str, list[Any]] = {}
        if any(s.fidelity is Fidelity.DRA for s in nodes.values()):
            for claim in self.view.dra.claims.values():
                if claim.allocation is not None and len(claim.reserved_for) == 1:
                    claims_of.setdefault(claim.reserved_for[0], []).append(claim)
        for name, state in nodes.items():
            pods = [p for p in self.view.pods_on(name) if _holds_mig(p)]
            if state.fidelity is Fidelity.DRA:
                inventory = self.view.dra_inventory(name)
                for pod in pods:
                    where: list[tuple[int, Placement]] = []
                    for claim in claims_of.get(pod.uid, []):
                        for device in claim.allocation or ():
                            ref = inventory.ref(device.key) if inventory is not None else None
                            if ref is None or ref.placement is None:
                                where = []
                                break
                            where.append((ref.gpu, ref.placement))
                        else:
                            continue
                        break
                    if where:
                        found.append((pod, where))
                    else:
                        _count(gathered.not_movable, "holding devices not known exactly (full GPUs, shared claims)")
                continue
            # The instances the agent lists, not the node's state: that also counts pods bound since the agent's
            # last update, at estimated placements.
            info = self.view.nodes.get(name)
            try:
                listed = parse_gpus_annotation(info.gpus_annotation) if info and info.gpus_annotation else ()
            except AnnotationError:
                listed = ()
            used: dict[str, list[tuple[int, Placement]]] = {}
            for gpu in listed:
                for instance in gpu.instances:
                    if instance.used:
                        used.setdefault(instance.profile.name, []).append((gpu.index, instance.placement))
            askers: dict[str, list[PodInfo]] = {}
            for pod in pods:
                if not pod.demand.mig:
                    continue  # whole GPUs: nothing to plan with
                if pod.demand.claims is None and len(pod.demand.mig) == 1 and pod.demand.mig[0][1] == 1:
                    profile = _profile_name(state, pod.demand.mig[0][0])
                    if profile is not None:
                        askers.setdefault(profile, []).append(pod)
                        continue
                _count(gathered.not_movable, "holding several instances on a node that names none by pod")
            for profile, holders in askers.items():
                if len(holders) == 1 and len(used.get(profile, [])) == 1:
                    found.append((holders[0], used[profile]))
                else:
                    _count(
                        gathered.not_movable,
                        "sharing a profile with other pods on their node (which holds which instance is not known)",
                    )
        return found

    def _plan_record(self, plan: DefragPlan, gathered: _Gathered) -> Plan:
        moves = []
        for move in plan.moves:
            pod = gathered.pods[move.pod]
            started = parse_time(pod.disruption.started if pod.disruption else None)
            moves.append(
                PlannedMove(
                    pod.key,
                    pod.uid,
                    move.source_node,
                    move.source_gpu,
                    move.target_node,
                    move.target_gpu,
                    str(move.target_placement),
                    started.timestamp() if started else 0.0,
                )
            )
        # A pod holding several instances moves once: one eviction.
        unique = tuple({m.uid: m for m in moves}.values())
        return Plan(plan.node, plan.gpus, unique, plan.lost_s, plan.relayout, _stamp(self.now()))

    async def _show_plan(self, pod: PodInfo, plan: Plan) -> None:
        if self.shown.get(pod.uid) == plan.shape():
            return
        self.shown[pod.uid] = plan.shape()
        self.stats.plans["found"] += 1
        await self._annotate(pod, {DEFRAG_PLAN_ANNOTATION: plan.to_json()})

    async def _show_reason(self, pod: PodInfo, reason: str, gathered: _Gathered) -> None:
        text = reason + (f" ({gathered.summary()})" if gathered.summary() else "")
        if self.shown.get(pod.uid) == text:
            return
        self.shown[pod.uid] = text
        self.stats.plans["none"] += 1
        body = json.dumps({"reason": text, "planned": _stamp(self.now())}, separators=(",", ":"))
        await self._annotate(pod, {DEFRAG_PLAN_ANNOTATION: body})

    async def _annotate(self, pod: PodInfo, annotations: Mapping[str, str | None]) -> None:
        try:
            await self.api.patch_pod_metadata(pod.namespace, pod.name, {"metadata": {"annotations": dict(annotations)}})
        except ApiError as exc:
            if exc.status != 404:
                raise
            return
        self.view.annotate(pod.uid, annotations)

    async def _start(self, pod: PodInfo, plan: Plan) -> None:
        """Re-check from the API server, write the reservation and the plan on the pod, then evict."""
        if await self._waiting_now(pod) != "pending":
            return
        for move in plan.moves:
            raw = await self.api.get_pod(move.namespace, move.name)
            metadata = (raw or {}).get("metadata") or {}
            if (
                raw is None
                or metadata.get("uid") != move.uid
                or metadata.get("deletionTimestamp")
                or (raw.get("spec") or {}).get("nodeName") != move.node
            ):
                log.info("defrag: plan for %s not started: %s changed since the view saw it", pod.key, move.pod)
                return  # the view lags: the next reconcile plans again
        now = self.now()
        residents = tuple(p.uid for p in self.view.pods_on(plan.node) if _holds_mig(p))
        reservation = Reservation(
            pod.uid,
            pod.key,
            plan.node,
            plan.gpus,
            now + datetime.timedelta(seconds=self.config.reservation_s),
            now,
            residents,
        )
        annotations = {
            DEFRAG_PLAN_ANNOTATION: plan.to_json(),
            DEFRAG_RESERVATION_ANNOTATION: reservation.to_json(),
            DEFRAG_OUTCOME_ANNOTATION: None,
        }
        await self._annotate(pod, annotations)
        self.stats.plans["started"] += 1
        self.stats.reservations["made"] += 1
        moved = ", ".join(f"{m.pod} (node {m.node} GPU {m.gpu})" for m in plan.moves)
        text = f"{reservation.text()}; evicting {moved}" + (
            " (then the re-layout controller re-partitions the emptied GPU)" if plan.relayout else ""
        )
        log.info("defrag: %s", text)
        await self._event(pod.namespace, pod.name, pod.uid, "DefragPlanned", "Normal", text)
        fresh = self.view.pods.get(pod.uid, pod)
        for move in plan.moves:
            if not await self._evict(fresh, reservation, plan, move):
                return

    async def _event(self, namespace: str, name: str, uid: str, reason: str, kind: str, note: str) -> None:
        try:
            await self.api.post_event(pod_reference(namespace, name, uid), reason, kind, note, EVENT_ACTION)
        except Exception as exc:  # events are best effort
            log.warning("event %s on pod %s/%s failed: %s", reason, namespace, name, exc)


def _outcome_time(text: str | None) -> datetime.datetime | None:
    """When the plan whose outcome annotation is ``text`` (``<outcome> <time>: <why>``) ended."""
    parts = (text or "").split(" ", 2)
    return parse_time(parts[1].rstrip(":")) if len(parts) > 1 else None


def _count(table: dict[str, int], why: str) -> None:
    table[why] = table.get(why, 0) + 1


def _holds_mig(pod: PodInfo) -> bool:
    return pod.is_active and bool(pod.demand.mig or pod.demand.claims is not None or pod.disruption is not None)


def _profile_name(state: NodeState, name: str) -> str | None:
    """The catalog name of a profile as a resource names it, on the node's GPU model."""
    for gpu in state.gpus:
        try:
            return gpu.model.profile(name).name
        except CatalogError:
            return None
    return None
