"""Churn mode: defragmentation by the extender's planner, and the fragmentation waits it is meant to cut.

**Defragmentation** (``--defrag on``). A MIG pod that has waited ``wait_s`` gets a plan from
:func:`extender.model.defrag.plan_room` over the live nodes (those not under a re-layout) and the running
pods. A plan runs at once: the moved pods are evicted (each restarts from zero, so its run time so far is
lost: the simulator's pods have no checkpoints) and re-queued as pending pods, and the waiting pod takes the
room made for it before anything else can (the controller's reservation). A static room that needs a
re-layout is re-partitioned by the policy's re-layout planner, the node tainted meanwhile as for any
re-layout, and the waiting pod is first in line when it is done. Every pod counts as movable (as if every
workload opted in) once it has run ``pod_cooldown_s`` (so a moved pod is not moved again in a row); at most
``max_per_hour`` evictions in a sliding hour, and at most ``max_concurrent`` plans in progress. A pod that
found no plan asks again every ``retry_s`` while it waits.

**Fragmentation waits.** A pending pod waits *on fragmentation* while the cluster's free compute and memory
slices (every live node's, summed) would hold it but no node's layout does; ``fragmentation_wait_s`` sums
those seconds over pods, and ``fragmented_pods`` counts the pods that ever did, as MIGBench counts
request-fragmented jobs (its ``request_fragmented_jobs``: free GPC slots and memory enough cluster-wide,
no placement).
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..model.defrag import DefragPlan, RunningPod, plan_room
from ..model.demand import PodDemand
from ..model.policy import evaluate
from ..model.relayout import RelayoutPlan, plan_relayouts
from ..settings import DefragSettings

if TYPE_CHECKING:
    from .engine import Churn
    from .workload import SimPod


_SETTINGS = DefragSettings()


@dataclass(frozen=True, slots=True)
class DefragLimits:
    """The controller's limits (its settings' defaults), as the simulator applies them."""

    wait_s: float = _SETTINGS.min_wait_s
    max_evictions: int = _SETTINGS.max_evictions
    max_per_hour: int = _SETTINGS.max_per_hour
    max_concurrent: int = _SETTINGS.max_concurrent
    """Plans in progress at once: a plan is until its moved pods run again and its re-layout is done."""
    pod_cooldown_s: float = _SETTINGS.pod_cooldown_s
    """A pod that started less than this long ago is not moved."""
    max_lost_s: float | None = _SETTINGS.max_lost_s or None
    """No plan throws away more run time than this (None: no bound)."""
    give_up_s: float | None = None
    """No plan for a pod that has waited longer than this (None: as long as it waits). Set to the autoscaler's
    delay, defragmentation only races the new node: a room made once that node is on its way leaves it idle."""
    retry_s: float = _SETTINGS.interval_s * 4
    """A pod without a plan asks again after this long: the controller plans every interval_s, the
    simulator less often (a plan looks at every node)."""


def _percentile(values: Sequence[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class FragmentationMeter:
    """Seconds pending pods wait while the cluster's free slices, summed, would hold them (module docstring)."""

    def __init__(self, churn: Churn) -> None:
        self.churn = churn
        model = churn.config.model
        self.memory_per_gpu = model.memory_slices
        self.compute_per_gpu = model.compute_slices
        self.used_memory = 0
        self.seconds = 0.0
        self.relayout_seconds = 0.0
        """The part of ``seconds`` while a re-layout that hosts the pod's demand was under way."""
        self.by_profile: dict[str, float] = {}
        """The same seconds per demand (``1x 7g.80gb``): what stops defragmentation differs by size."""
        self.pods: set[str] = set()
        self.needs: dict[PodDemand, tuple[int, int]] = {}

    def need(self, demand: PodDemand) -> tuple[int, int]:
        """(compute, memory) slices of a demand."""
        found = self.needs.get(demand)
        if found is None:
            model = self.churn.config.model
            compute = memory = 0
            for name, count in demand.mig:
                profile = model.profile(name)
                compute += profile.compute_slices * count
                memory += profile.memory_slices * count
            found = self.needs[demand] = (compute, memory)
        return found

    def taken(self, pod: SimPod, delta: int) -> None:
        """A pod started (+1) or stopped (-1) holding its instances."""
        self.used_memory += delta * self.need(pod.demand)[1]

    def elapse(self, seconds: float) -> None:
        """Before the clock moves on by ``seconds``: charge the pods that waited on fragmentation meanwhile."""
        churn = self.churn
        if seconds <= 0 or not churn.pending:
            return
        result = churn.sim.result
        free_compute = result.capacity_slices - result.allocated_slices
        gpus = result.capacity_slices // self.compute_per_gpu
        free_memory = gpus * self.memory_per_gpu - self.used_memory
        hosted = {d for plan in churn.changing.values() for d in plan.hosts}
        for waiting in churn.pending.values():
            compute, memory = self.need(waiting.pod.demand)
            if compute <= free_compute and memory <= free_memory:
                self.seconds += seconds
                if waiting.pod.demand in hosted:
                    self.relayout_seconds += seconds
                text = waiting.pod.demand.text()
                self.by_profile[text] = self.by_profile.get(text, 0.0) + seconds
                self.pods.add(waiting.pod.name.split("#", 1)[0])


class Defragmenter:
    """Plans and carries out moves for pods that waited (module docstring)."""

    def __init__(self, churn: Churn, limits: DefragLimits) -> None:
        self.churn = churn
        self.limits = limits
        self.evicted_at: deque[float] = deque()
        self.in_flight: dict[str, int] = {}
        """Moved pods not running again yet -> their plan's number."""
        self.next_try: dict[str, float] = {}
        self.reserved: dict[int, str] = {}
        """Node id under re-layout for a plan -> the waiting pod it is for."""
        self.plans = 0
        self.relayout_plans = 0
        self.evictions = 0
        self.lost_gpu_seconds = 0.0
        self.replaced = 0
        """Placements of moved pods (not new pods: evictions per 100 pods counts pods of the workload)."""
        self.planning_s = 0.0
        self.no_plan: Counter[str] = Counter()
        """Attempts without a plan, by why (module docstring of :mod:`extender.model.defrag`)."""

    def arrived(self, name: str, when: float) -> None:
        self.next_try[name] = when + self.limits.wait_s

    def placed(self, name: str) -> None:
        self.next_try.pop(name, None)
        if self.in_flight.pop(name, None) is not None:
            self.replaced += 1

    def due(self) -> float | None:
        """When the next pod is due a plan, or None."""
        return min(self.next_try.values(), default=None)

    def check(self) -> bool:
        """Plan for the pods that waited long enough (oldest first); True if any plan ran."""
        churn = self.churn
        now = churn.now
        ran = False
        for name in [n for n, t in self.next_try.items() if t <= now]:
            if name not in churn.pending:
                self.next_try.pop(name, None)
                continue
            waited = now - churn.pending[name].since
            if self.limits.give_up_s is not None and waited + self.limits.retry_s > self.limits.give_up_s:
                self.next_try.pop(name)  # this is its last try
            else:
                self.next_try[name] = now + self.limits.retry_s
            if self._try(name):
                ran = True
        return ran

    def _budget(self) -> int:
        """Evictions the hourly and concurrency limits still allow."""
        now = self.churn.now
        while self.evicted_at and now - self.evicted_at[0] >= 3600.0:
            self.evicted_at.popleft()
        in_progress = len(set(self.in_flight.values())) + len(self.reserved)  # a plan may count twice: safe
        if in_progress >= self.limits.max_concurrent:
            return 0
        return min(self.limits.max_evictions, self.limits.max_per_hour - len(self.evicted_at))

    def _try(self, name: str) -> bool:
        import time

        churn = self.churn
        sim = churn.sim
        budget = self._budget()
        if budget < 1:
            self.no_plan["limits: hourly or plans in progress"] += 1
            return False
        waiting = churn.pending[name]
        nodes = {}
        for group in sim.groups.values():
            for node_id in group:
                state = sim.nodes[node_id]
                nodes[state.name] = state
        running = []
        for pod_name, (node_id, taken) in churn.running.items():
            if node_id not in sim.nodes or node_id in churn.changing:
                continue
            node_name = sim.nodes[node_id].name
            started = churn.started.get(pod_name, churn.now)
            movable = churn.now - started >= self.limits.pod_cooldown_s
            for gpu, placement in taken.placements:
                running.append(RunningPod(pod_name, pod_name, node_name, gpu, placement, started, 0, movable))
        begun = time.perf_counter()
        plan = plan_room(
            nodes,
            running,
            waiting.pod.demand,
            priority=0,
            now_s=churn.now,
            max_evictions=budget,
            relayout=sim.config.relayout,
            config=sim.policy_config,
            layouts_known=True,  # the simulator's static layouts are the model's own
            max_lost_s=self.limits.max_lost_s,
        )
        self.planning_s += time.perf_counter() - begun
        if not isinstance(plan, DefragPlan):
            self.no_plan[_why(plan.reason)] += 1
            return False
        return self._run(name, plan)

    def _run(self, name: str, plan: DefragPlan) -> bool:
        churn = self.churn
        sim = churn.sim
        node_id = sim.ids[plan.node]
        waiting = churn.pending[name]
        model = sim.config.model
        for uid in dict.fromkeys(m.pod for m in plan.moves):
            run_s = churn.now - churn.started.get(uid, churn.now)
            pod = churn.evict(uid)
            self.lost_gpu_seconds += run_s * pod.slices / model.compute_slices
            self.evictions += 1
            self.evicted_at.append(churn.now)
            again = replace(pod, name=f"{uid.split('#', 1)[0]}#{self.evictions}", arrival_s=churn.now)
            churn.requeue(again)
            self.in_flight[again.name] = self.plans
        self.plans += 1
        state = sim.nodes[node_id]
        if plan.relayout:
            relayouts = plan_relayouts([state], [waiting.pod.demand], sim.weights, sim.supply())
            if not relayouts:
                return True  # cannot happen: the planner found the room with the same fit; the pod waits on
            self.relayout_plans += 1
            relayout = RelayoutPlan(relayouts[0].node, relayouts[0].gpus, (waiting.pod.demand,))
            churn.start_relayout(node_id, relayout)
            self.reserved[node_id] = name
            return True
        result = evaluate(state, sim.asked(waiting.pod.demand), sim.policy_config)
        if not result.fits_now:  # cannot happen: the planner checked this node with the same fit
            return True
        taken = sim.allocate(node_id, waiting.pod.demand, result)
        sim.result.allocated_slices += waiting.pod.slices
        sim.result.pods_placed += 1
        churn.start(name, node_id, taken)
        return True

    def relayout_done(self, node_id: int) -> str | None:
        """The pod a finished re-layout was for: first in line for the room."""
        return self.reserved.pop(node_id, None)

    def figures(self) -> dict[str, Any]:
        return {
            "defrag_no_plan": dict(self.no_plan.most_common()),
            "defrag_plans": self.plans,
            "defrag_relayout_plans": self.relayout_plans,
            "evictions_defrag": self.evictions,
            "lost_gpu_hours_defrag": round(self.lost_gpu_seconds / 3600.0, 4),
            "defrag_planning_s": round(self.planning_s, 2),
        }


def _why(reason: str) -> str:
    """A NoPlan reason without its pod's demand, so that attempts can be counted by cause."""
    if "fit on no other node" in reason:
        return "room made, moved pods fit nowhere else"
    if "makes no room" in reason:
        return "no room within the eviction limit"
    if "ran more than" in reason:
        return "only rooms that lose more than max_lost_s"
    if "may be moved" in reason:
        return "no movable pod (cool-down)"
    if "without moving" in reason:
        return "fits without a move"
    return reason


def churn_figures(churn: Churn) -> dict[str, Any]:
    """The waits, evictions and lost work of a churn run, beside node-hours and GPU-hours."""
    result = churn.sim.result
    waits = [wait for _, wait in result.waits]
    defrag = churn.defrag
    consolidation = churn.consolidation
    evictions = (defrag.evictions if defrag else 0) + (consolidation.evictions if consolidation else 0)
    lost = (defrag.lost_gpu_seconds if defrag else 0.0) + (consolidation.lost_gpu_seconds if consolidation else 0.0)
    replaced = (defrag.replaced if defrag else 0) + (consolidation.replaced if consolidation else 0)
    placed = max(0, result.pods_placed - replaced)
    out: dict[str, Any] = {
        "p95_wait_s": None if not waits else round(_percentile(waits, 0.95) or 0.0, 3),
        "max_wait_s": None if not waits else round(max(waits), 3),
        "evictions": evictions,
        "evictions_per_100_pods": round(100.0 * evictions / placed, 4) if placed else None,
        "lost_gpu_hours": round(lost / 3600.0, 4),
        "lost_share_of_gpu_hours": (round(lost / 3600.0 / result.gpu_hours, 6) if result.gpu_hours else None),
        "fragmentation_wait_s": round(churn.fragmentation.seconds, 3),
        "fragmentation_wait_relayout_s": round(churn.fragmentation.relayout_seconds, 3),
        "fragmentation_wait_s_by_demand": {
            k: round(v, 1) for k, v in sorted(churn.fragmentation.by_profile.items(), key=lambda kv: -kv[1])[:8]
        },
        "fragmented_pods": len(churn.fragmentation.pods),
        "workload_pods_placed": placed,
    }
    if defrag is not None:
        out.update(defrag.figures())
    if consolidation is not None:
        out.update(consolidation.figures())
    return out


def push_next(churn: Churn, defrag: Defragmenter, kind: int) -> None:
    """Schedule the next defragmentation check, if a pod will be due one."""
    due = defrag.due()
    if due is not None and (churn.defrag_due is None or due < churn.defrag_due):
        churn.defrag_due = due
        heapq.heappush(churn.events, (max(due, churn.now), kind, next(churn.seq), None))
