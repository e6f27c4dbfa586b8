"""Node scores for a pod that fits: raw values per strategy, normalised once per request to 0..10.

Strategies are looked up by name, as kube-scheduler's NodeResourcesFit does, so that the extender,
the simulator and the benchmarks all compare the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .fit import FitResult
from .fragmentation import node_fragmentation
from .state import GpuState, NodeState

MAX_EXTENDER_PRIORITY = 10  # k8s.io/kube-scheduler/extender/v1 MaxExtenderPriority


@dataclass(frozen=True, slots=True)
class PlacementEffect:
    """What taking a fit's plan does to a node."""

    gpus_before: tuple[GpuState, ...]
    gpus_after: tuple[GpuState, ...]
    opens_idle_gpu: bool
    opens_idle_node: bool
    fill_after: float
    """Used compute after the placement, as a share of this node's."""
    full_node_share_after: float
    """Used compute after the placement, as a share of a full-size node (:data:`FULL_NODE_GPUS` GPUs)."""
    full_node_share: float
    """The node's compute as a share of a full-size node."""


def placement_effect(node: NodeState, result: FitResult) -> PlacementEffect:
    touched: dict[int, GpuState] = {}
    by_index = {g.index: g for g in node.gpus}
    for planned in result.plan:
        gpu = touched.get(planned.gpu_index, by_index[planned.gpu_index])
        touched[planned.gpu_index] = gpu.with_used(planned.placement)
    before = tuple(by_index[i] for i in touched)
    after = tuple(touched.values())
    added = sum(a.used_compute - b.used_compute for a, b in zip(after, before))
    total = node.total_compute or 1
    full = FULL_NODE_GPUS * total / max(1, len(node.gpus))
    return PlacementEffect(
        gpus_before=before,
        gpus_after=after,
        opens_idle_gpu=any(b.is_idle for b in before),
        opens_idle_node=node.is_idle,
        fill_after=(node.used_compute + added) / total,
        full_node_share_after=min(1.0, (node.used_compute + added) / full),
        full_node_share=min(1.0, total / full),
    )


# Autoscalers pay by the node, whatever its size: pods gathered on large nodes let the small ones drain.
# Packing therefore counts used compute against a full-size node (8 GPUs, as HGX/DGX boards carry), not
# against the node's own size: in a fleet of 8-GPU nodes that is the same order as the node's fill.
# On the Alibaba trace's mix of 1-, 2-, 4- and 8-GPU nodes, scored by own fill, long-running pods held a
# small node for the whole trace (dynamic churn: 12,707 -> 9,504 node-hours, BENCHMARKS.md).
FULL_NODE_GPUS = 8


def packing_term(effect: PlacementEffect) -> float:
    """In [0, 1): higher for fuller and larger nodes and for placements that keep idle GPUs and nodes idle."""
    return (
        0.5 * effect.full_node_share_after
        + 0.25 * (not effect.opens_idle_gpu)
        + 0.2 * (not effect.opens_idle_node)
        + 0.04 * effect.full_node_share
    )


Scorer = Callable[[NodeState, FitResult, Mapping[str, float]], float]


def _fragmentation_drop(effect: PlacementEffect, weights: Mapping[str, float]) -> float:
    """The drop in F, rounded to 1/1000 of a compute slice and scaled so that any difference in it outranks
    a tie-break term below 1."""
    drop = node_fragmentation(effect.gpus_before, weights) - node_fragmentation(effect.gpus_after, weights)
    return round(drop, 3) * 1000


def score_fragmentation(node: NodeState, result: FitResult, weights: Mapping[str, float]) -> float:
    """The drop in F the placement causes (fragmentation gradient), packing breaking ties: nodes drain and
    the autoscaler can remove them."""
    effect = placement_effect(node, result)
    return _fragmentation_drop(effect, weights) + packing_term(effect)


def score_fragmentation_spread(node: NodeState, result: FitResult, weights: Mapping[str, float]) -> float:
    """The drop in F, the emptiest node breaking ties: pods find room sooner, nodes stay up longer.

    For fleets that value a pod's wait over node-hours: in the simulator's churn it trades the node-hours
    that ``fragmentation`` saves for waits like kube-scheduler's spreading (BENCHMARKS.md).
    """
    effect = placement_effect(node, result)
    return _fragmentation_drop(effect, weights) + 0.9 * (1.0 - effect.fill_after)  # below 1, as F outranks it


def score_packing(node: NodeState, result: FitResult, weights: Mapping[str, float]) -> float:
    """Most-allocated: fullest node first, keeping idle GPUs and nodes idle."""
    return packing_term(placement_effect(node, result))


def score_spread(node: NodeState, result: FitResult, weights: Mapping[str, float]) -> float:
    """Least-allocated: emptiest node first (a baseline; it fragments)."""
    return 1.0 - placement_effect(node, result).fill_after


SCORERS: dict[str, Scorer] = {
    "fragmentation": score_fragmentation,
    "fragmentation-spread": score_fragmentation_spread,
    "packing": score_packing,
    "spread": score_spread,
}


def scorer_named(name: str) -> Scorer:
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown scoring strategy {name!r}; known: {', '.join(sorted(SCORERS))}") from None


def normalize(raw: Sequence[float], top: int = MAX_EXTENDER_PRIORITY) -> list[int]:
    """Integers 0..top: the best raw score alone gets ``top``, the others are min-max scaled into 0..top-1.

    Plain min-max rounding would give ``top`` to every node within half a step of the best and leave the
    choice among them to kube-scheduler's random tie-break; the best node must stand out.
    """
    if not raw:
        return []
    low, high = min(raw), max(raw)
    if high - low < 1e-12:
        return [top] * len(raw)
    span = high - low
    return [top if high - value < 1e-12 else min(top - 1, round((value - low) * top / span)) for value in raw]
