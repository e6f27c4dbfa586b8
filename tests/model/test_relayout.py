"""The re-layout planner against brute force on small clusters: every GPU subset, every layout."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extender.model.catalog import GpuModel, model_named
from extender.model.demand import PodDemand
from extender.model.fit import fit
from extender.model.fragmentation import parse_mix
from extender.model.layouts import maximal_layouts
from extender.model.relayout import (
    DEFAULT_WASTE_WEIGHT,
    PlannerConfig,
    _mismatch,
    _target_shares,
    fewest_changes,
    free_supply,
    plan_rebalance,
    plan_relayouts,
    relayout_gpu,
)
from extender.model.state import GpuState, Instance, NodeState
from tests.builders import gpu, node

A30 = model_named("A30-24GB")
A100 = model_named("A100-40GB")
MIX = parse_mix("uniform")


def layouts(model: GpuModel) -> tuple[tuple[Instance, ...], ...]:
    return tuple(tuple(Instance(p, False) for p in layout) for layout in maximal_layouts(model, model.base_profiles))


@st.composite
def gpus(draw: st.DrawFn, model: GpuModel, index: int) -> GpuState:
    chosen = draw(st.sampled_from(layouts(model)))
    used = draw(st.lists(st.booleans(), min_size=len(chosen), max_size=len(chosen)))
    return GpuState(index, model, tuple(Instance(i.placement, u) for i, u in zip(chosen, used)))


@st.composite
def clusters(draw: st.DrawFn) -> list[NodeState]:
    nodes = []
    for n in range(draw(st.integers(1, 3))):
        model = draw(st.sampled_from([A30, A100]))
        count = draw(st.integers(1, 2 if model is A30 else 1))
        nodes.append(NodeState(f"node-{n}", tuple(draw(gpus(model, i)) for i in range(count))))
    return nodes


@st.composite
def demands(draw: st.DrawFn) -> PodDemand:
    names = ["1g.6gb", "2g.12gb", "4g.24gb", "1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"]
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
    return PodDemand(mig=tuple(sorted((name, draw(st.integers(1, 2))) for name in chosen)))


def brute_force_changes(node: NodeState, demand: PodDemand) -> int | None:
    """The fewest idle static GPUs to re-partition (into any maximal layouts) so that the demand fits now."""
    idle = [g for g in node.gpus if g.is_idle and not g.dynamic]
    for size in range(1, len(idle) + 1):
        for subset in itertools.combinations(idle, size):
            choices = [maximal_layouts(g.model, g.model.base_profiles) for g in subset]
            for picked in itertools.product(*choices):
                trial = node.replace_gpus(relayout_gpu(g, layout) for g, layout in zip(subset, picked))
                if fit(trial, demand).fits_now:
                    return size
    return None


def check(nodes: Sequence[NodeState], demand: PodDemand, config: PlannerConfig) -> None:
    candidates = [n for n in nodes if not config.whole_nodes_only or n.is_idle]
    plans = plan_relayouts(nodes, [demand], MIX, config=config)
    if any(fit(n, demand).fits_now for n in candidates if any(g.is_idle for g in n.gpus)):
        assert plans == []
        return
    best = [c for c in (brute_force_changes(n, demand) for n in candidates) if c is not None]
    if not best:
        assert plans == [], "a plan where brute force finds no re-layout that hosts the demand"
        return
    (plan,) = plans
    assert len(plan.gpus) == min(best), "the plan does not change the fewest GPUs"
    node = next(n for n in nodes if n.name == plan.node)
    if config.whole_nodes_only:
        assert node.is_idle
    by_index = {g.index: g for g in node.gpus}
    for relayout in plan.gpus:
        assert by_index[relayout.gpu_index].is_idle, "a GPU with a used instance would change"
    assert fit(plan.apply(node), demand).fits_now, "after the plan the demand still does not fit"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), demands())
def test_planner_matches_brute_force(nodes: list[NodeState], demand: PodDemand) -> None:
    check(nodes, demand, PlannerConfig())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), demands())
def test_whole_node_planner_matches_brute_force_over_idle_nodes(nodes: list[NodeState], demand: PodDemand) -> None:
    check(nodes, demand, PlannerConfig(whole_nodes_only=True))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), demands(), st.data())
def test_frozen_gpus_never_change(nodes: list[NodeState], demand: PodDemand, data: st.DataObject) -> None:
    frozen = {n.name: {g.index for g in n.gpus if data.draw(st.booleans())} for n in nodes}
    for plan in plan_relayouts(nodes, [demand], MIX, frozen=frozen):
        assert not {g.gpu_index for g in plan.gpus} & frozen[plan.node]


def idle_node(name: str, model: GpuModel, layout_text: str, count: int) -> NodeState:
    (layout,) = [
        chosen
        for chosen in maximal_layouts(model, model.base_profiles)
        if " ".join(sorted(p.profile.name for p in chosen)) == layout_text
    ][:1]
    return NodeState(name, tuple(GpuState(i, model, tuple(Instance(p, False) for p in layout)) for i in range(count)))


def test_fewest_changes_picks_one_gpu_of_identical_ones_and_names_its_share() -> None:
    node = idle_node("n", A100, "3g.20gb 3g.20gb", 4)
    assert fewest_changes(node, PodDemand(mig=(("7g.40gb", 1),))) == {0: [A100.profile("7g.40gb")]}
    two = fewest_changes(node, PodDemand(mig=(("7g.40gb", 2),)))
    assert two is not None and sorted(two) == [0, 1]
    assert fewest_changes(node, PodDemand(mig=(("7g.40gb", 1),)), frozen={0, 1, 2, 3}) is None


def test_later_demands_use_what_earlier_plans_made() -> None:
    node = idle_node("n", A100, "3g.20gb 3g.20gb", 2)
    demand = PodDemand(mig=(("1g.5gb", 1),))
    (plan,) = plan_relayouts([node], [demand, demand, demand], MIX, config=PlannerConfig(whole_nodes_only=True))
    assert len(plan.gpus) == 1 and plan.hosts == (demand,)  # one new layout with several 1g hosts all three


BALANCED_H100 = "2g.20gb@0 1g.10gb@2 1g.10gb@3 3g.40gb@4"


def _apply(nodes: list[NodeState], plans: Sequence[object]) -> list[NodeState]:
    by_name = {n.name: n for n in nodes}
    for plan in plans:
        by_name[plan.node] = plan.apply(by_name[plan.node])  # type: ignore[attr-defined]
    return list(by_name.values())


def test_rebalance_turns_idle_gpus_toward_the_mix() -> None:
    nodes = [node(f"n{i}", gpu("H100-80GB", BALANCED_H100), gpu("H100-80GB", BALANCED_H100)) for i in range(3)]
    plans = plan_rebalance(nodes, parse_mix("7g=1"))
    changed = [g for plan in plans for g in plan.gpus]
    assert len(changed) == 6
    assert all([p.profile.name for p in g.layout] == ["7g.80gb"] for g in changed)
    assert all(plan.hosts == () for plan in plans)


@pytest.mark.parametrize(
    ("layout", "mix"),
    [
        ("7g.80gb@0", "7g=1"),
        # The counts match the mix exactly; the planner would write them in another arrangement of equal
        # cost, which is no reason to re-partition.
        (BALANCED_H100, "1g=2,2g=1,3g=1"),
    ],
)
def test_rebalance_leaves_a_supply_that_matches_the_mix_alone(layout: str, mix: str) -> None:
    nodes = [node(f"n{i}", gpu("H100-80GB", layout)) for i in range(3)]
    assert plan_rebalance(nodes, parse_mix(mix)) == []


def test_rebalance_touches_neither_busy_nor_frozen_gpus() -> None:
    busy = gpu("H100-80GB", BALANCED_H100, used="1g.10gb@2")
    nodes = [node("n0", busy, gpu("H100-80GB", BALANCED_H100), gpu("H100-80GB", BALANCED_H100))]
    (plan,) = plan_rebalance(nodes, parse_mix("7g=1"), frozen={"n0": {2}})
    assert [g.gpu_index for g in plan.gpus] == [1]
    assert plan_rebalance(nodes, parse_mix("7g=1"), config=PlannerConfig(whole_nodes_only=True)) == []


@given(clusters(), st.sampled_from(["uniform", "inference", "7g=1", "1g=1", "3g=2,4g=1"]))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_rebalance_settles_and_keeps_used_instances(nodes: list[NodeState], mix: str) -> None:
    weights = parse_mix(mix)
    before = {(n.name, g.index): g for n in nodes for g in n.gpus}
    current = nodes
    for _ in range(40):  # every change lowers a cluster-wide cost: the plans run out
        plans = plan_rebalance(current, weights, free_supply(current))
        if not plans:
            break
        current = _apply(current, plans)
    else:
        raise AssertionError(f"rebalancing did not settle: {plans}")
    for state in current:
        for g in state.gpus:
            old = before[(state.name, g.index)]
            if not old.is_idle:
                assert g == old


H100 = model_named("H100-80GB")


def _cluster_cost(nodes: list[NodeState], weights: dict[str, float]) -> float:
    """What each rebalancing change lowers: free supply against the mix, plus the layouts' dead slices."""
    dead = sum(H100.compute_slices - sum(i.profile.compute_slices for i in g.instances) for n in nodes for g in n.gpus)
    return _mismatch(free_supply(nodes), _target_shares(weights, H100)) + DEFAULT_WASTE_WEIGHT * dead / 7


@given(
    st.lists(st.lists(gpus(H100, 0), min_size=1, max_size=3), min_size=1, max_size=4),
    st.sampled_from(["uniform", "inference", "7g=1", "1g=1", "3g=2,4g=1"]),
)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_rebalancing_round_lowers_the_cluster_cost(shapes: list[list[GpuState]], mix: str) -> None:
    weights = parse_mix(mix)
    nodes = [node(f"n{i}", *g) for i, g in enumerate(shapes)]
    plans = plan_rebalance(nodes, weights, free_supply(nodes))  # supply: the whole cluster's
    if plans:
        assert _cluster_cost(_apply(nodes, plans), weights) < _cluster_cost(nodes, weights) - 1e-9
