"""Churn mode: Karpenter's consolidation, for every policy (``--consolidation when-empty|when-underutilized``).

Karpenter's disruption controller (https://karpenter.sh/docs/concepts/disruption/, "Consolidation"): with
``consolidationPolicy: WhenEmpty`` only nodes without workload pods are removed; with
``WhenEmptyOrUnderutilized`` (the NodePool's default) a node is also deleted when all of its pods can run on
the free capacity of other nodes, its pods evicted and rescheduled there, once it has seen no pod scheduled
or removed for ``consolidateAfter``. The simulator's empty-node removal after ``scale_down_after_s`` is the
first; this module adds the second, with ``scale_down_after_s`` as ``consolidateAfter``.

Modelled: deletion only (one node type, so no cheaper replacement exists), one node at a time; a node under a
re-layout is not a candidate; its pods are tested one after another against the other nodes' states as they
would be with the earlier ones placed (the world's own fit, the DRA world's devices included), and
rescheduled first in line. Every evicted pod restarts from zero and counts as an eviction, as defragmentation's
do. Not modelled: Karpenter's disruption budgets (10 % of a NodePool's nodes by default; here one node goes at
a time anyway) and pods that forbid it (``karpenter.sh/do-not-disrupt``: none here).
"""

from __future__ import annotations

import enum
import heapq
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..model.policy import evaluate
from ..model.state import NodeState

if TYPE_CHECKING:
    from .engine import Churn


class Consolidation(enum.StrEnum):
    WHEN_EMPTY = "when-empty"
    WHEN_UNDERUTILIZED = "when-underutilized"


class Consolidator:
    """WhenEmptyOrUnderutilized: nodes whose pods all fit elsewhere now are drained and removed."""

    def __init__(self, churn: Churn, event_kind: int) -> None:
        self.churn = churn
        self.event_kind = event_kind
        """The engine's event for a check (the engine imports this module, not the other way round)."""
        self.last_change: dict[int, float] = {}
        self.evictions = 0
        self.nodes = 0
        self.lost_gpu_seconds = 0.0
        self.replaced = 0
        self.moved: set[str] = set()
        """Names of evicted pods' replacements not placed yet."""

    def changed(self, node_id: int) -> None:
        """A pod was scheduled on or left ``node_id``: its consolidateAfter starts again."""
        churn = self.churn
        self.last_change[node_id] = churn.now
        when = churn.now + churn.config.scale_down_after_s
        heapq.heappush(churn.events, (when, self.event_kind, next(churn.seq), (node_id, churn.now)))

    def placed(self, name: str) -> None:
        if name in self.moved:
            self.moved.discard(name)
            self.replaced += 1

    def check(self, node_id: int, since: float) -> bool:
        """Drain and remove ``node_id`` if nothing changed on it since ``since`` and its pods fit elsewhere now."""
        churn = self.churn
        sim = churn.sim
        state = sim.nodes.get(node_id)
        if state is None or node_id in churn.changing or self.last_change.get(node_id) != since:
            return False
        if state.is_idle:
            return False  # empty nodes go by the engine's own removal
        names = [name for name, (where, _) in churn.running.items() if where == node_id]
        if not names or not self._fit_elsewhere(node_id, names):
            return False
        model = sim.config.model
        for name in names:
            run_s = churn.now - churn.started.get(name, churn.now)
            pod = churn.evict(name)
            self.lost_gpu_seconds += run_s * pod.slices / model.compute_slices
            self.evictions += 1
            original = name.split("#", 1)[0]
            again = replace(pod, name=f"{original}#c{self.evictions}", arrival_s=churn.now)
            self.moved.add(again.name)
            churn.requeue(again)
        sim.remove_node(node_id)
        sim.result.nodes_removed += 1
        self.nodes += 1
        self.last_change.pop(node_id, None)
        sim.result.node_counts.append((churn.now, churn.live_nodes() + churn.starting))
        return True

    def _fit_elsewhere(self, node_id: int, names: list[str]) -> bool:
        """Whether the pods ``names`` (largest first) all fit on other live nodes now, one after another."""
        churn = self.churn
        sim = churn.sim
        pods = sorted((churn.pod_of[n] for n in names), key=lambda p: (-p.slices, p.name))
        changed: dict[int, NodeState] = {}
        for pod in pods:
            asked = sim.asked(pod.demand)
            target = None
            for other, state in changed.items():
                result = evaluate(state, asked, sim.policy_config)
                if result.fits_now:
                    target = (other, state, result)
                    break
            if target is None:
                for state_id, result in sim.fitting(pod.demand).items():
                    free = next((n for n in sim.groups[state_id] if n != node_id and n not in changed), None)
                    if free is not None:
                        target = (free, sim.nodes[free], result)
                        break
            if target is None:
                return False
            other, state, result = target
            if sim.dra is not None:
                changed[other] = sim.dra.taken(state, result)[0]
            else:
                changed[other] = state.with_used((p.gpu_index, p.placement) for p in result.plan)
        return True

    def figures(self) -> dict[str, Any]:
        return {
            "consolidation_nodes": self.nodes,
            "evictions_consolidation": self.evictions,
            "lost_gpu_hours_consolidation": round(self.lost_gpu_seconds / 3600.0, 4),
        }
