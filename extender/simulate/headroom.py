"""Churn mode: warm headroom, placeholder pods that real pods preempt (``--headroom on``).

Every ``interval_s`` the planner (:func:`extender.model.headroom.plan_headroom`) sizes the headroom from the
policy's demand distribution and the recent arrival rate, over one lead time (the autoscaler's delay plus a
node's start-up); placeholders are added or removed to match. In the static world ours keeps MIG-shaped
placeholders, one pod per planned instance: a layout is fixed there, and a pod can only take an instance of
its own profile. In the dynamic worlds, where a GPU is partitioned for the pods it gets, ours keeps the
planned compute as whole GPUs (a pod asking for the GPU's largest profile): evicting one frees room for any
profile, which measured better than MIG-shaped placeholders there (BENCHMARKS.md, "Warm headroom";
``shaped`` keeps them MIG-shaped). Every baseline keeps the same compute as whole GPUs, shape-blind (a
cluster-overprovisioner Deployment): in the dynamic worlds the GPU's largest profile; in the static world,
where a MIG GPU only offers its layout's instances, a pod asking for the instances of one GPU of the start
layout. Placeholders are placed by the policy like any pod, after the real pods, and never counted in
the waits, the demand distribution or the arrival rate.

A real pod that no node hosts preempts placeholders at once: on each node holding some, they are evicted one
by one (those of the pod's own profile first, then the smallest) until the pod fits; the node needing the
fewest evictions wins (kube-scheduler's preemption prefers the fewest victims), and the pod is then placed by
the policy like any pod. Evicted placeholders go pending again and, once ``scale_up_after_s`` old, make the
autoscaler start capacity for them as for any pending pod. A placeholder removed because the plan shrank
frees its node, which the autoscaler removes once empty. Graceful termination is modelled as instant (the
placeholders' terminationGracePeriodSeconds is 0).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..model.demand import PodDemand
from ..model.headroom import ArrivalRate, HeadroomConfig, plan_headroom
from ..model.policy import evaluate
from .workload import SimPod

if TYPE_CHECKING:
    from .engine import Churn, Taken, _Pending

WHOLE_GPU = "whole-gpu"
"""The kind of a baseline's shape-blind placeholder."""


@dataclass(frozen=True, slots=True)
class HeadroomSim:
    """The headroom loop as the simulator runs it; ``planner.lead_time_s`` is the run's own lead time."""

    planner: HeadroomConfig
    rate_half_life_s: float = 1800.0
    interval_s: float = 30.0
    shaped: bool = False
    """Ours keeps MIG-shaped placeholders in the dynamic worlds too (by default only in the static world)."""


@dataclass
class _Placeholder:
    pod: SimPod
    kind: str
    since: float | None = None
    """Pending since (None while placed)."""
    node_id: int | None = None
    taken: Taken | None = None


class Headroom:
    """The placeholders of one churn run: planned, placed, preempted, removed."""

    def __init__(self, churn: Churn, config: HeadroomSim) -> None:
        if churn.consolidation is not None:
            # It drains nodes by their running pods and would remove one under its placeholders.
            raise ValueError("headroom with consolidation when-underutilized is not modelled")
        self.churn = churn
        self.sim = churn.sim
        self.config = config
        self.model = churn.config.model
        self.rate = ArrivalRate(config.rate_half_life_s)
        self.shaped = self.sim.policy.planner == "ours" and (config.shaped or churn.config.world == "static")
        self.whole_demand = self._whole_gpu_demand()
        self.holders: dict[str, _Placeholder] = {}
        self.on_node: dict[int, dict[str, None]] = {}
        self.names = itertools.count()
        self.next_plan = -math.inf
        self.preemptions = 0
        self.took: set[str] = set()
        self.took_wait_s = 0.0
        self.held_slices = 0
        self.held_slice_seconds = 0.0
        self.target_slice_seconds = 0.0
        self.target_slices = 0
        self.last = churn.now
        self.largest_target = 0

    def _whole_gpu_demand(self) -> tuple[PodDemand, int]:
        """A baseline's placeholder: what one whole GPU offers in this world, and its compute slices."""
        config = self.churn.config
        if config.world == "static":
            spec = config.mig_parted.resolve(config.layout, self.model, 0)
            layout = spec.layout(self.model) if spec is not None else ()
            counts = Counter(p.profile.name for p in layout)
            return PodDemand(mig=tuple(sorted(counts.items()))), sum(p.profile.compute_slices for p in layout)
        largest = self.model.base_profiles[0]
        return PodDemand(mig=((largest.name, 1),)), largest.compute_slices

    # --- what the run tells it -------------------------------------------------------------------------------

    def observe(self, pod: SimPod, now: float) -> None:
        self.rate.observe(pod.shape, pod.count, now)

    def elapse(self, now: float) -> None:
        elapsed = now - self.last
        if elapsed > 0:
            self.held_slice_seconds += elapsed * self.held_slices
            self.target_slice_seconds += elapsed * self.target_slices
        self.last = now

    def pending(self) -> list[_Pending]:
        """Placeholders waiting for room, as pending pods (the autoscaler counts them like any)."""
        from .engine import _Pending

        return [_Pending(h.pod, h.since) for h in self.holders.values() if h.since is not None]

    def is_pending(self, name: str) -> bool:
        holder = self.holders.get(name)
        return holder is not None and holder.since is not None

    def pending_demands(self) -> list[PodDemand]:
        return list(dict.fromkeys(h.pod.demand for h in self.holders.values() if h.since is not None))

    # --- the plan --------------------------------------------------------------------------------------------

    def tick(self) -> None:
        """Plan again once ``interval_s`` has passed, and add or remove placeholders to match."""
        now = self.churn.now
        self.elapse(now)
        if now < self.next_plan:
            return
        self.next_plan = now + self.config.interval_s
        fleet_gpus = round(self.sim.result.capacity_slices / self.model.compute_slices)
        plan = plan_headroom(
            self.model, self.sim.weights, self.rate.total_per_second(now), self.config.planner, fleet_gpus
        )
        if self.shaped:
            target = plan.by_profile()
            self.target_slices = plan.compute_slices
        else:
            gpus = plan.whole_gpus(self.model)
            target = {WHOLE_GPU: gpus} if gpus else {}
            self.target_slices = gpus * self.whole_demand[1]
        self.largest_target = max(self.largest_target, self.target_slices)
        self.reconcile(target)

    def reconcile(self, target: dict[str, int]) -> None:
        have = Counter(h.kind for h in self.holders.values())
        for kind, count in have.items():
            for _ in range(count - target.get(kind, 0)):
                self.remove_one(kind)
        for kind, count in target.items():
            for _ in range(count - have.get(kind, 0)):
                self.add(kind)

    def add(self, kind: str) -> None:
        from .engine import _Event

        if kind == WHOLE_GPU:
            demand, slices = self.whole_demand
        else:
            profile = self.model.profile(kind)
            demand, slices = PodDemand(mig=((profile.name, 1),)), profile.compute_slices
        name = f"headroom-{next(self.names):06d}"
        shape = kind if kind == WHOLE_GPU else self.model.shape_of(self.model.profile(kind))
        pod = SimPod(name, shape, 1, demand, slices, self.churn.now, math.inf)
        self.holders[name] = _Placeholder(pod, kind, since=self.churn.now)
        self.churn.push(self.churn.now + self.churn.config.scale_up_after_s, _Event.SCALE_UP_CHECK, name)

    def remove_one(self, kind: str) -> None:
        """A pending placeholder of ``kind`` if any (the newest), else the placed one on the emptiest node."""
        of_kind = [h for h in self.holders.values() if h.kind == kind]
        pending = [h for h in of_kind if h.since is not None]
        if pending:
            del self.holders[pending[-1].pod.name]
            return
        nodes = self.sim.nodes
        victim = min(of_kind, key=lambda h: (nodes[h.node_id].used_compute if h.node_id in nodes else 0, h.pod.name))
        self.release(victim)
        del self.holders[victim.pod.name]

    def release(self, holder: _Placeholder) -> None:
        """Free what ``holder`` holds on its node (it is then neither placed nor pending)."""
        from .engine import _Event

        churn, sim = self.churn, self.sim
        node_id, taken = holder.node_id, holder.taken
        assert node_id is not None and taken is not None
        state = sim.released(sim.nodes[node_id], taken)
        if node_id in churn.changing:
            sim.nodes[node_id] = state
        else:
            sim.set_node(node_id, state)
        on_node = self.on_node[node_id]
        del on_node[holder.pod.name]
        if not on_node:
            del self.on_node[node_id]
        self.held_slices -= holder.pod.slices
        holder.node_id = holder.taken = None
        if state.is_idle:
            version = churn.node_version.get(node_id, 0)
            churn.push(churn.now + churn.config.scale_down_after_s, _Event.SCALE_DOWN_CHECK, (node_id, version))

    # --- placing and preempting ------------------------------------------------------------------------------

    def schedule(self) -> None:
        """Pending placeholders, in the order they went pending, where the policy places them."""
        sim, churn = self.sim, self.churn
        failed: set[PodDemand] = set()
        for holder in list(self.holders.values()):
            if holder.since is None or holder.pod.demand in failed:
                continue
            chosen = sim.choose(holder.pod.demand)
            if chosen is None:
                failed.add(holder.pod.demand)
                continue
            node_id, result = chosen
            holder.taken = sim.allocate(node_id, holder.pod.demand, result)
            holder.node_id = node_id
            holder.since = None
            churn.node_version[node_id] = churn.node_version.get(node_id, 0) + 1
            self.on_node.setdefault(node_id, {})[holder.pod.name] = None
            self.held_slices += holder.pod.slices

    def preempt(self, pod: SimPod, since: float) -> tuple[int, Taken] | None:
        """Evict the fewest placeholders that let ``pod`` fit, then place it; None if none would."""
        from .engine import _Event

        sim, churn = self.sim, self.churn
        asked = sim.asked(pod.demand)
        own = {name for name, _ in pod.demand.mig}
        best: tuple[int, int, int, list[_Placeholder]] | None = None
        for node_id, names in self.on_node.items():
            if node_id in churn.changing:
                continue
            holders = sorted(
                (self.holders[n] for n in names),
                key=lambda h: (not (set(dict(h.pod.demand.mig)) & own), h.pod.slices, h.pod.name),
            )
            state = sim.nodes[node_id]
            for count, holder in enumerate(holders, start=1):
                if best is not None and count >= best[0]:
                    break
                assert holder.taken is not None
                state = sim.released(state, holder.taken)
                if evaluate(state, asked, sim.policy_config).fits_now:
                    key = (count, sum(h.pod.slices for h in holders[:count]), node_id)
                    if best is None or key < best[:3]:
                        best = (*key, holders[:count])
                    break
        if best is None:
            return None
        for holder in best[3]:
            self.release(holder)
            holder.since = churn.now
            churn.push(churn.now + churn.config.scale_up_after_s, _Event.SCALE_UP_CHECK, holder.pod.name)
            self.preemptions += 1
        placed = sim.place(pod)
        if placed is not None:
            self.took.add(pod.name)
            self.took_wait_s += churn.now - since
        return placed

    # --- figures ---------------------------------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        self.elapse(self.churn.now)
        waits = [wait for _, wait in self.sim.result.waits]
        took = len(self.took)
        others = len(waits) - took
        slices = self.model.compute_slices
        return {
            "headroom": "mig-shaped" if self.shaped else "whole-gpus",
            "headroom_preemptions": self.preemptions,
            "headroom_pods_took_placeholder": took,
            "headroom_mean_wait_with_placeholder_s": round(self.took_wait_s / took, 3) if took else None,
            "headroom_mean_wait_without_placeholder_s": (
                round((sum(waits) - self.took_wait_s) / others, 3) if others else None
            ),
            "headroom_held_gpu_hours": round(self.held_slice_seconds / slices / 3600.0, 3),
            "headroom_planned_gpu_hours": round(self.target_slice_seconds / slices / 3600.0, 3),
            "headroom_largest_gpus": round(self.largest_target / slices, 3),
        }
