"""The defragmentation planner: table-driven cases, and its plans against brute force on small clusters."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from extender.model.catalog import model_named
from extender.model.defrag import (
    DefragPlan,
    NoPlan,
    RunningPod,
    _emptied_room,
    _fits,
    _place_moved,
    _victims,
    plan_room,
)
from extender.model.demand import PodDemand
from extender.model.placement import Placement
from extender.model.policy import PolicyConfig
from extender.model.state import Fidelity, GpuState, Instance, NodeState

A100 = model_named("A100-40GB")
A30 = model_named("A30-24GB")
NOW = 10_000.0
FIRST_FIT = PolicyConfig()


def at(model_name: str, token: str) -> Placement:
    name, _, start = token.partition("@")
    return Placement(int(start), model_named(model_name).profile(name))


@dataclass
class Cluster:
    """Nodes and the pods running on them, written as ``node/gpu: profile@start=pod`` tokens."""

    nodes: dict[str, NodeState] = field(default_factory=dict)
    running: list[RunningPod] = field(default_factory=list)

    def add(
        self,
        name: str,
        *gpus: str,
        model: str = "A100-40GB",
        dynamic: bool = True,
        layout: Sequence[str] = (),
        fidelity: Fidelity = Fidelity.EXACT,
        movable: bool = True,
        priority: int = 0,
        ages: Mapping[str, float] | None = None,
        budgets: Mapping[str, str] | None = None,
    ) -> Cluster:
        """``gpus``: per GPU, ``profile@start=pod`` tokens for used instances; ``layout``: free static instances."""
        states = []
        for index, tokens in enumerate(gpus):
            instances = []
            for token in tokens.split():
                where, _, pod = token.partition("=")
                placement = at(model, where)
                instances.append(Instance(placement, True))
                started = NOW - (ages or {}).get(pod, 100.0)
                budget = (budgets or {}).get(pod)
                self.running.append(
                    RunningPod(pod, f"default/{pod}", name, index, placement, started, priority, movable, budget)
                )
            if not dynamic and index < len(layout):
                instances.extend(Instance(at(model, t), False) for t in layout[index].split())
            states.append(GpuState(index, model_named(model), tuple(instances), dynamic=dynamic))
        self.nodes[name] = NodeState(name, tuple(states), fidelity)
        return self


def demand(text: str) -> PodDemand:
    counts = Counter(text.split())
    return PodDemand(mig=tuple(sorted(counts.items())))


def check_plan(
    plan: DefragPlan,
    cluster: Cluster,
    wanted: PodDemand,
    *,
    priority: int,
    budgets: Mapping[str, int],
    max_evictions: int,
    config: PolicyConfig = FIRST_FIT,
) -> None:
    """Every promise of a plan, checked from the cluster itself."""
    pods = {p.uid: p for p in cluster.running}
    moved = {m.pod for m in plan.moves}
    assert 1 <= len(moved) <= max_evictions
    for uid in moved:
        pod = pods[uid]
        assert pod.movable and pod.priority <= priority
        assert pod.node == plan.node
    spent = Counter(pods[u].budget for u in moved if pods[u].budget is not None)
    assert all(budgets.get(group, 0) >= count for group, count in spent.items())
    assert plan.lost_s == pytest.approx(sum(NOW - pods[u].started_s for u in moved))
    # Targets fit now, one after another, with the moved pods' own instances still held, never on the room's node.
    states = dict(cluster.nodes)
    for move in plan.moves:
        assert move.target_node != plan.node
        target = states[move.target_node]
        states[move.target_node] = target.with_used([(move.target_gpu, move.target_placement)])
    # The waiting pod fits in the reserved GPUs once the moved pods are gone.
    emptied = cluster.nodes[plan.node]
    by_gpu: dict[int, list[Placement]] = {}
    for uid in moved:
        by_gpu.setdefault(pods[uid].gpu, []).append(pods[uid].placement)
    from extender.model.defrag import _without

    emptied = emptied.replace_gpus(_without(g, by_gpu[g.index]) for g in emptied.gpus if g.index in by_gpu)
    room = NodeState(plan.node, tuple(g for g in emptied.gpus if g.index in plan.gpus), emptied.fidelity)
    assert _fits(room, wanted, config, relayout=plan.relayout) is not None


@dataclass(frozen=True)
class Case:
    name: str
    cluster: Cluster
    wants: str
    expected: tuple[str, ...] | str
    """The moved pods' uids, or a fragment of the NoPlan reason."""
    priority: int = 0
    budgets: Mapping[str, int] = field(default_factory=dict)
    max_evictions: int = 2
    relayout: bool = False
    room: str = "busy"


def spare(cluster: Cluster) -> Cluster:
    """A node with room for small pods only: 1g.10gb at 2 and 6 held by unmovable pods (no 3g or 4g fits)."""
    return cluster.add("spare", "1g.10gb@2=s1 1g.10gb@6=s2", movable=False)


CASES = [
    Case(
        "dynamic: a 1g in the way of the 4g goes",
        spare(Cluster().add("busy", "1g.5gb@1=a 3g.20gb@4=b")),
        "4g.20gb",
        ("a",),
    ),
    Case(
        "dynamic: the unmovable pod stays, so no room",
        spare(Cluster().add("busy", "1g.5gb@1=a 3g.20gb@4=b", movable=False)),
        "4g.20gb",
        "no running pod may be moved",
    ),
    Case(
        "dynamic: no pod of higher priority moves",
        spare(Cluster().add("busy", "1g.5gb@1=a 3g.20gb@4=b", priority=10)),
        "4g.20gb",
        "no running pod may be moved",
        priority=5,
    ),
    Case(
        "dynamic: a budget that allows none stops it",
        spare(Cluster().add("busy", "1g.5gb@1=a 3g.20gb@4=b", budgets={"a": "web"})),
        "4g.20gb",
        "makes no room",
        budgets={"web": 0},
    ),
    Case(
        "dynamic: a budget that allows one lets it go",
        spare(Cluster().add("busy", "1g.5gb@1=a 3g.20gb@4=b", budgets={"a": "web"})),
        "4g.20gb",
        ("a",),
        budgets={"web": 1},
    ),
    Case(
        "dynamic: fewest evictions beats least work lost",
        spare(
            Cluster()
            .add("busy", "1g.5gb@1=old 3g.20gb@4=big", ages={"old": 5_000})
            .add("other", "1g.5gb@0=y1 1g.5gb@2=y2 3g.20gb@4=big2", ages={"y1": 1, "y2": 1})
        ),
        "4g.20gb",
        ("old",),
    ),
    Case(
        "dynamic: least work lost among single moves",
        spare(
            Cluster()
            .add("busy", "1g.5gb@1=old 3g.20gb@4=big", ages={"old": 5_000})
            .add("other", "1g.5gb@2=young 3g.20gb@4=big2", ages={"young": 10})
        ),
        "4g.20gb",
        ("young",),
        room="other",
    ),
    Case(
        "dynamic: within the eviction limit only",
        spare(Cluster().add("busy", "1g.5gb@0=a 1g.5gb@2=b 3g.20gb@4=c")),
        "4g.20gb",
        "makes no room",
        max_evictions=1,
    ),
    Case(
        "dynamic: two moves when one is not enough",
        spare(Cluster().add("busy", "1g.5gb@0=a 1g.5gb@2=b 3g.20gb@4=c")),
        "4g.20gb",
        ("a", "b"),
    ),
    Case(
        "dynamic: the moved pod must fit elsewhere",
        Cluster().add("busy", "1g.5gb@1=a 3g.20gb@4=b"),
        "4g.20gb",
        "fit on no other node",
    ),
    Case(
        "dynamic: fits now, nothing moves",
        spare(Cluster().add("busy", "3g.20gb@4=b")),
        "3g.20gb",
        "without moving",
    ),
    Case(
        "static: a GPU emptied for a re-layout",
        spare(
            Cluster().add(
                "busy", "1g.5gb@6=a", dynamic=False, layout=["1g.5gb@0 1g.5gb@1 1g.5gb@2 1g.5gb@3 1g.5gb@4 1g.5gb@5"]
            )
        ),
        "3g.20gb",
        ("a",),
        relayout=True,
    ),
    Case(
        "static: no re-layout, no room",
        spare(
            Cluster().add(
                "busy", "1g.5gb@6=a", dynamic=False, layout=["1g.5gb@0 1g.5gb@1 1g.5gb@2 1g.5gb@3 1g.5gb@4 1g.5gb@5"]
            )
        ),
        "3g.20gb",
        "makes no room",
        relayout=False,
    ),
    Case(
        "static, layout only estimated: the whole node is emptied",
        spare(
            Cluster().add(
                "busy",
                "1g.5gb@6=a",
                "1g.5gb@6=b",
                dynamic=False,
                layout=["1g.5gb@0 1g.5gb@1 1g.5gb@2 1g.5gb@3 1g.5gb@4 1g.5gb@5"] * 2,
                fidelity=Fidelity.LAYOUT,
            )
        ),
        "3g.20gb",
        ("a", "b"),
        relayout=True,
    ),
    Case(
        "static: two 3g on one node, a 3g pod moves to a free 3g elsewhere",
        Cluster()
        .add("busy", "3g.20gb@0=a", "3g.20gb@0=b", dynamic=False, layout=["3g.20gb@4"], ages={"a": 500})
        .add("free3g", "3g.20gb@0=c", dynamic=False, layout=["3g.20gb@4"], movable=False),
        "3g.20gb 3g.20gb",
        ("b",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_plans(case: Case) -> None:
    wanted = demand(case.wants)
    budgets = dict(case.budgets)
    plan = plan_room(
        case.cluster.nodes,
        case.cluster.running,
        wanted,
        priority=case.priority,
        now_s=NOW,
        budgets=budgets,
        max_evictions=case.max_evictions,
        relayout=case.relayout,
    )
    if isinstance(case.expected, str):
        assert isinstance(plan, NoPlan), plan
        assert case.expected in plan.reason
        return
    assert isinstance(plan, DefragPlan), plan
    assert tuple(sorted({m.pod for m in plan.moves})) == case.expected
    assert plan.node == case.room
    assert plan.relayout == (case.relayout and not case.cluster.nodes[case.room].dynamic)
    check_plan(plan, case.cluster, wanted, priority=case.priority, budgets=budgets, max_evictions=case.max_evictions)


def test_layouts_known_lets_a_single_gpu_be_emptied_on_an_estimated_node() -> None:
    """The simulator knows its static layouts: one GPU emptied, not the whole node."""
    cluster = spare(
        Cluster().add(
            "busy",
            "1g.5gb@6=a",
            "1g.5gb@6=b",
            dynamic=False,
            layout=["1g.5gb@0 1g.5gb@1 1g.5gb@2 1g.5gb@3 1g.5gb@4 1g.5gb@5"] * 2,
            fidelity=Fidelity.LAYOUT,
            ages={"a": 50},
        )
    )
    wanted = demand("3g.20gb")
    plans = [
        plan_room(cluster.nodes, cluster.running, wanted, priority=0, now_s=NOW, max_evictions=2, layouts_known=known)
        for known in (False, True)
    ]
    assert all(isinstance(p, DefragPlan) and p.relayout for p in plans)
    assert [sorted({m.pod for m in p.moves}) for p in plans if isinstance(p, DefragPlan)] == [["a", "b"], ["a"]]


def test_max_lost_s_keeps_long_runs_in_place() -> None:
    """Moved pods restart from zero: a bound on the run time thrown away leaves the old pod where it is."""
    cluster = spare(
        Cluster()
        .add("busy", "1g.5gb@1=old 3g.20gb@4=big", ages={"old": 5_000}, movable=True)
        .add("other", "1g.5gb@0=y1 1g.5gb@2=y2 3g.20gb@4=big2", ages={"y1": 10, "y2": 20})
    )
    wanted = demand("4g.20gb")
    unbounded = plan_room(cluster.nodes, cluster.running, wanted, priority=0, now_s=NOW, max_evictions=2)
    bounded = plan_room(
        cluster.nodes, cluster.running, wanted, priority=0, now_s=NOW, max_evictions=2, max_lost_s=1_000
    )
    assert isinstance(unbounded, DefragPlan) and [m.pod for m in unbounded.moves] == ["old"]
    assert isinstance(bounded, DefragPlan) and sorted(m.pod for m in bounded.moves) == ["y1", "y2"]
    tight = plan_room(cluster.nodes, cluster.running, wanted, priority=0, now_s=NOW, max_evictions=2, max_lost_s=5)
    assert isinstance(tight, NoPlan) and "ran more than 5 s" in tight.reason


def test_a_running_pod_the_node_does_not_show_is_not_moved() -> None:
    """The caller's record of a pod must match the node's state: a controller never acts on a guess."""
    cluster = spare(Cluster().add("busy", "1g.5gb@1=a 3g.20gb@4=b"))
    wrong = [
        p if p.uid != "a" else RunningPod("a", "default/a", "busy", 0, at("A100-40GB", "1g.5gb@2"), 0, 0, True)
        for p in cluster.running
    ]
    plan = plan_room(cluster.nodes, wrong, demand("4g.20gb"), priority=0, now_s=NOW, max_evictions=2)
    assert isinstance(plan, NoPlan)


# --- against brute force ----------------------------------------------------------------------------------

A30_PROFILES = ("1g.6gb", "2g.12gb", "4g.24gb")


@st.composite
def a30_gpu(draw: st.DrawFn, node: str, index: int, counter: itertools.count[int]) -> tuple[GpuState, list[RunningPod]]:
    """An A30 GPU (4 slices), dynamic or static, with pods of random movability, priority, age and budget."""
    dynamic = draw(st.booleans())
    occupied = 0
    instances: list[Instance] = []
    pods: list[RunningPod] = []
    for _ in range(draw(st.integers(1, 6))):
        profile = A30.profile(draw(st.sampled_from(A30_PROFILES)))
        starts = [s for s in profile.starts if not profile.occupancy(s) & occupied]
        if not starts:
            continue
        placement = Placement(draw(st.sampled_from(starts)), profile)
        occupied |= placement.mask
        used = dynamic or draw(st.booleans())
        instances.append(Instance(placement, used))
        if used:
            uid = f"p{next(counter)}"
            pods.append(
                RunningPod(
                    uid,
                    f"default/{uid}",
                    node,
                    index,
                    placement,
                    NOW - draw(st.integers(0, 1000)),
                    draw(st.integers(0, 2)),
                    draw(st.booleans()) or draw(st.booleans()),
                    draw(st.sampled_from([None, None, "g1", "g2"])),
                )
            )
    if not dynamic:
        # Static GPUs: the rest of the GPU carved into free 1g instances (a layout mig-parted could make).
        for start in range(4):
            if not occupied >> start & 1:
                instances.append(Instance(Placement(start, A30.profile("1g.6gb")), False))
    return GpuState(index, A30, tuple(instances), dynamic=dynamic), pods


@st.composite
def clusters(draw: st.DrawFn) -> Cluster:
    cluster = Cluster()
    counter = itertools.count()
    for n in range(draw(st.integers(2, 3))):
        name = f"n{n}"
        gpus = []
        for index in range(draw(st.integers(1, 2))):
            state, pods = draw(a30_gpu(name, index, counter))
            gpus.append(state)
            cluster.running.extend(pods)
        cluster.nodes[name] = NodeState(name, tuple(gpus), Fidelity.EXACT)
    return cluster


def brute_force(
    cluster: Cluster,
    wanted: PodDemand,
    priority: int,
    budgets: Mapping[str, int],
    max_evictions: int,
    relayout: bool,
) -> tuple[int, float] | None:
    """The least (evictions, lost seconds) over every subset of allowed pods on every node, or None."""
    config = PolicyConfig()
    victims = _victims(cluster.nodes, cluster.running, priority, NOW, budgets)
    best: tuple[int, float] | None = None
    for name, node in cluster.nodes.items():
        mine = [v for v in victims.values() if v.node == name]
        for size in range(1, max_evictions + 1):
            for chosen in itertools.combinations(mine, size):
                spent = Counter(v.budget for v in chosen if v.budget is not None)
                if any(budgets.get(g, 0) < c for g, c in spent.items()):
                    continue
                emptied = _emptied_room(node, chosen)
                if _fits(emptied, wanted, config, relayout) is None:
                    continue
                moved = sorted(chosen, key=lambda v: (-v.lost_s, v.uid))
                if _place_moved(moved, cluster.nodes, name, config) is None:
                    continue
                key = (size, sum(v.lost_s for v in chosen))
                if best is None or key < best:
                    best = key
    return best


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(
    clusters(),
    st.lists(st.sampled_from((*A30_PROFILES, "4g.24gb", "2g.12gb")), min_size=1, max_size=2),
    st.integers(0, 2),
    st.integers(1, 3),
    st.booleans(),
    st.fixed_dictionaries({"g1": st.integers(0, 2), "g2": st.integers(0, 1)}),
)
def test_plans_keep_every_promise_and_are_minimal(
    cluster: Cluster, wants: list[str], priority: int, max_evictions: int, relayout: bool, budgets: dict[str, int]
) -> None:
    wanted = demand(" ".join(wants))
    # Pods that fit now get no plan (checked by the table); the property is about the ones that do not.
    assume(not any(_fits(n, wanted, FIRST_FIT, relayout) for n in cluster.nodes.values()))
    plan = plan_room(
        cluster.nodes,
        cluster.running,
        wanted,
        priority=priority,
        now_s=NOW,
        budgets=budgets,
        max_evictions=max_evictions,
        relayout=relayout,
    )
    expected = brute_force(cluster, wanted, priority, budgets, max_evictions, relayout)
    if expected is None:
        assert isinstance(plan, NoPlan)
        return
    assert isinstance(plan, DefragPlan), plan.reason
    check_plan(plan, cluster, wanted, priority=priority, budgets=budgets, max_evictions=max_evictions)
    assert (plan.evictions, plan.lost_s) == (expected[0], pytest.approx(expected[1]))


def test_dra_nodes_are_planned_on_their_gpus_and_the_claim_fits_once_the_pod_has_gone() -> None:
    """DRA nodes (NVIDIA's DynamicMIG ResourceSlices, devices held by claims): the room is planned on the GPU
    states, and the waiting pod's claim is then allocated by the allocator model on the node itself."""
    from extender.model.policy import evaluate
    from extender.simulate.dra import DraFleet

    h100 = model_named("H100-80GB")
    fleet = DraFleet(h100)
    config = PolicyConfig()
    nodes: dict[str, NodeState] = {}
    running: list[RunningPod] = []
    held = {}
    for name, pod in (("n0", "a"), ("n1", "b")):
        state = fleet.node(name, 1)
        result = evaluate(state, fleet.demand(demand("1g.10gb")), config)
        assert result.fits_now
        nodes[name], held[pod] = fleet.taken(state, result)
        (planned,) = result.plan
        running.append(
            RunningPod(pod, f"default/{pod}", name, planned.gpu_index, planned.placement, NOW - 100, 0, True)
        )
    whole = demand("7g.80gb")
    assert not any(evaluate(n, fleet.demand(whole), config).fits_now for n in nodes.values())
    plan = plan_room(nodes, running, fleet.demand(whole), priority=0, now_s=NOW, max_evictions=1)
    assert isinstance(plan, DefragPlan), plan
    (move,) = plan.moves
    assert move.target_node != plan.node and plan.gpus == (0,)
    emptied = fleet.released(nodes[plan.node], held[move.pod])
    assert evaluate(emptied, fleet.demand(whole), config).fits_now
