"""Churn with defragmentation and Karpenter's consolidation: small cases whose every figure is known."""

from __future__ import annotations

import pytest

from extender.model.catalog import model_named
from extender.simulate.baselines import policies_named
from extender.simulate.consolidation import Consolidation
from extender.simulate.defrag import DefragLimits
from extender.simulate.engine import Mode, PolicyResult, SimConfig, World
from extender.simulate.run import run
from extender.simulate.workload import NodeSpec, SimPod, make_pod

H100 = model_named("H100-80GB")


def split_small_pods() -> list[SimPod]:
    """Two long 1g pods that spread puts on two 1-GPU nodes, then a 7g that fits on neither."""
    return [
        make_pod(H100, "a", "1g", 1, 0.0, 100_000.0),
        make_pod(H100, "b", "1g", 1, 1.0, 100_000.0),
        make_pod(H100, "whole", "7g", 1, 10.0, 1_000.0),
    ]


def churn(pods: list[SimPod], world: World, **config: object) -> PolicyResult:
    settings = SimConfig(model=H100, world=world, mode=Mode.CHURN, seed=1, new_node_gpus=1, **config)  # type: ignore[arg-type]
    (result,) = run(settings, policies_named("spread"), [NodeSpec("n0", 1), NodeSpec("n1", 1)], pods, {}).results
    return result


@pytest.mark.parametrize("world", [World.DYNAMIC_IDEAL, World.DYNAMIC_FIRST_FIT])
def test_defrag_moves_the_younger_small_pod_and_the_whole_gpu_pod_starts_at_once(world: World) -> None:
    without = churn(split_small_pods(), world)
    moved = churn(split_small_pods(), world, defrag=DefragLimits(wait_s=60.0, pod_cooldown_s=0.0))
    # Without: the 7g waits for the autoscaler (120 s) and a new node (300 s), all of it on fragmentation (the
    # free slices of the two nodes would hold it); the starting node is not counted as free.
    assert without.nodes_added == 1
    assert without.figures()["fragmentation_wait_s"] == pytest.approx(420.0)
    assert without.figures()["evictions"] == 0
    # With: after 60 s b (the younger: 69 s of work lost, not 70) moves beside a, and the 7g takes its GPU.
    figures = moved.figures()
    assert moved.nodes_added == 0
    assert figures["evictions"] == figures["evictions_defrag"] == 1
    assert figures["lost_gpu_hours"] == pytest.approx(69.0 / 7 / 3600, abs=1e-4)
    assert figures["fragmentation_wait_s"] == pytest.approx(60.0)
    assert figures["fragmented_pods"] == 1
    assert figures["workload_pods_placed"] == 3 and moved.pods_placed == 4  # b placed twice
    assert sorted(wait for _, wait in moved.waits) == [0.0, 0.0, 0.0, 60.0]
    assert figures["max_wait_s"] == pytest.approx(60.0)
    assert moved.node_hours is not None and without.node_hours is not None
    assert moved.node_hours < without.node_hours
    assert moved.allocated_slices == 0  # everything left at the end, the moved pod's new run too


def test_defrag_leaves_pods_in_their_cooldown_alone() -> None:
    kept = churn(split_small_pods(), World.DYNAMIC_IDEAL, defrag=DefragLimits(wait_s=60.0, pod_cooldown_s=3600.0))
    assert kept.figures()["evictions"] == 0
    assert set(kept.figures()["defrag_no_plan"]) == {"no movable pod (cool-down)"}
    assert kept.nodes_added == 1


def test_defrag_empties_a_static_gpu_for_a_relayout() -> None:
    """Static world: the moved 1g's GPU is emptied and re-partitioned for the 7g (300 s), no node added."""
    result = churn(split_small_pods(), World.STATIC, defrag=DefragLimits(wait_s=60.0, pod_cooldown_s=0.0))
    figures = result.figures()
    assert figures["evictions"] == 1 and figures["defrag_relayout_plans"] == 1
    assert result.nodes_added == 0
    assert figures["max_wait_s"] == pytest.approx(60.0 + 300.0)


@pytest.mark.parametrize(
    ("policy", "removed", "evictions", "node_seconds"),
    [
        # each node lives until its pod ends (100,000 and 100,001 s) and 600 s more
        (Consolidation.WHEN_EMPTY, 0, 0, 100_600 + 100_601),
        # n0 (unchanged since 0 s) goes at 600 s, its pod restarts on n1 and ends at 100,600 s: n1 goes 600 s later
        (Consolidation.WHEN_UNDERUTILIZED, 1, 1, 600 + 101_200),
    ],
)
def test_consolidation_when_underutilized_drains_a_node_whose_pods_fit_elsewhere(
    policy: Consolidation, removed: int, evictions: int, node_seconds: float
) -> None:
    pods = split_small_pods()[:2]
    result = churn(pods, World.DYNAMIC_IDEAL, consolidation=policy)
    figures = result.figures()
    # Both 1g pods run for 100,000 s: only consolidation removes a node before then (600 s after its last change).
    assert figures.get("consolidation_nodes", 0) == removed
    assert result.node_hours == pytest.approx(node_seconds / 3600)
    assert figures["evictions"] == evictions
    assert figures.get("evictions_consolidation", 0) == evictions
    assert result.pods_placed == 2 + evictions
