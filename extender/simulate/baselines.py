"""Baseline policies: scorers with the model's signature, and the naive whole-node re-layout.

``spread`` and ``pack`` are kube-scheduler's NodeResourcesFit ``LeastAllocated`` / ``MostAllocated`` with the
MIG resources as the scored resources: only the resources the pod requests count (k8s skips a scalar
resource the pod does not request), each as (allocatable - requested) / allocatable on the node. Dynamic
GPUs advertise no counts, so there they count compute slices. ``best-fit`` leaves the fewest free compute
slices on the node. ``fgd`` is FGD (ATC'23) adapted to MIG: the drop in the node's fragmentation under the
demand distribution, with no packing tie-break. ``random`` scores every fitting node alike, so the
scheduler's random tie-break picks one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ..model.demand import PodDemand
from ..model.fit import FitResult
from ..model.fragmentation import node_fragmentation
from ..model.layouts import place_counts
from ..model.relayout import GpuRelayout, RelayoutPlan, config_name_for
from ..model.scoring import SCORERS, Scorer, placement_effect, scorer_named
from ..model.state import NodeState


def _requested(result: FitResult) -> dict[str, int]:
    counts: dict[str, int] = {}
    for planned in result.plan:
        name = planned.placement.profile.name
        counts[name] = counts.get(name, 0) + 1
    return counts


def _free_share(node: NodeState, result: FitResult) -> float:
    """Mean over requested profiles of (allocatable - requested) / allocatable after the placement."""
    if any(g.dynamic for g in node.gpus):
        return 1.0 - placement_effect(node, result).fill_after
    shares = []
    for name, count in _requested(result).items():
        allocatable = sum(i.profile.name == name for g in node.gpus for i in g.instances)
        used = sum(i.profile.name == name and i.used for g in node.gpus for i in g.instances)
        if allocatable:
            shares.append((allocatable - used - count) / allocatable)
    return sum(shares) / len(shares) if shares else 0.0


def score_least_allocated(node: NodeState, result: FitResult, weights: Mapping[str, float]) -> float:
    return _free_share(node, result)


def score_most_allocated(node: NodeState, result: FitResult, weights: Mapping[str, float]) -> float:
    return 1.0 - _free_share(node, result)


def score_best_fit(node: NodeState, result: FitResult, weights: Mapping[str, float]) -> float:
    added = sum(p.placement.profile.compute_slices for p in result.plan)
    return -float(node.total_compute - node.used_compute - added)


def score_fgd(node: NodeState, result: FitResult, weights: Mapping[str, float]) -> float:
    effect = placement_effect(node, result)
    return node_fragmentation(effect.gpus_before, weights) - node_fragmentation(effect.gpus_after, weights)


def score_random(node: NodeState, result: FitResult, weights: Mapping[str, float]) -> float:
    return 0.0


@dataclass(frozen=True, slots=True)
class PolicySpec:
    name: str
    scorer: Scorer
    planner: str
    """``ours`` (extender.model.relayout) or ``naive`` (whole idle node to all-<profile>)."""


POLICIES: dict[str, PolicySpec] = {
    "random": PolicySpec("random", score_random, "naive"),
    "spread": PolicySpec("spread", score_least_allocated, "naive"),
    "pack": PolicySpec("pack", score_most_allocated, "naive"),
    "best-fit": PolicySpec("best-fit", score_best_fit, "naive"),
    "fgd": PolicySpec("fgd", score_fgd, "naive"),
    "mig-extender": PolicySpec("mig-extender", SCORERS["fragmentation"], "ours"),
}


def policies_named(text: str, scoring: str = "fragmentation") -> list[PolicySpec]:
    """Policies by name (``all`` for every one); ours scores with the extender's ``scoring`` strategy."""
    ours = replace(POLICIES["mig-extender"], scorer=scorer_named(scoring))
    known = {**POLICIES, ours.name: ours}
    if text == "all":
        return list(known.values())
    chosen = []
    for name in filter(None, (n.strip() for n in text.split(","))):
        if name not in known:
            raise ValueError(f"unknown policy {name!r}; known: all, {', '.join(known)}")
        chosen.append(known[name])
    return chosen


def plan_naive(idle_nodes: Sequence[NodeState], waiting: Sequence[PodDemand]) -> list[RelayoutPlan]:
    """The first wholly idle node, every GPU to ``all-<profile>`` of the first waiting pod's first profile."""
    if not waiting or not waiting[0].mig:
        return []
    name, count = waiting[0].mig[0]
    for node in idle_nodes:
        if not node.is_idle or not node.gpus or any(g.dynamic for g in node.gpus):
            continue
        model = node.gpus[0].model
        profile = model.find_profile(name)
        if profile is None or profile.max_instances * len(node.gpus) < count:
            continue
        layout = place_counts(model, {profile: profile.max_instances})
        gpus = tuple(GpuRelayout(g.index, layout, config_name_for(model, layout)) for g in node.gpus)
        return [RelayoutPlan(node.name, gpus, (waiting[0],))]
    return []
