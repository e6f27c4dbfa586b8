"""Defragmentation planning: the fewest running pods to move so that a waiting MIG pod fits.

Pure (no I/O): the defragmentation controller and the simulator call the same code. A waiting pod that fits
nowhere now may fit on a node once some running pods leave it:

- **dynamic GPUs** (DynamicMIG, DRA-backed nodes): the instances overlapping one legal placement of a profile
  the pod asks for go, and the placement is free;
- **static GPUs**: every pod of a GPU goes, and the re-layout controller re-partitions the emptied GPU
  (``DefragPlan.relayout``); single GPUs only where the node's layout is known exactly, otherwise the whole
  node is emptied; or, for a pod asking several instances, pods holding instances of the profiles it asks
  for go, so that the node holds all of them at once.

Rooms are built from those atomic removals (unions of at most as many as the pod asks instances), cheapest
first: fewest evictions, then least run time lost, then fewest nodes touched. A room counts only if every pod
it moves fits on another node *now*, in room that is free today (the moved pods' own instances still held),
and never on the node whose room is being made. Moved pods are placed one after another, each in the state the
previous ones leave, with backtracking over target nodes.

Hard constraints (never relaxed): only ``RunningPod.movable`` pods, never one of higher priority than the
waiting pod, at most ``budgets[group]`` pods of one PodDisruptionBudget group (a group not listed allows
none), at most ``max_evictions`` pods. A pod holding several instances moves whole (one Move per instance).
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from .demand import PodDemand
from .fit import FitResult, Verdict
from .placement import Placement
from .policy import PolicyConfig, evaluate
from .state import Fidelity, GpuState, Instance, MigStrategy, NodeState


@dataclass(frozen=True, slots=True)
class RunningPod:
    """One MIG instance a running pod holds (a pod holding several instances appears once per instance)."""

    uid: str
    name: str
    """``namespace/name``, for reasons and events."""
    node: str
    gpu: int
    """GPU index on that node."""
    placement: Placement
    started_s: float
    """When it started running (same clock as ``now_s``)."""
    priority: int
    movable: bool
    """Every hard constraint the caller evaluates (opt-in, owner kind, do-not-disrupt on pod or node, cool-down,
    per-pod limits) is already folded in here."""
    budget: str | None = None
    """The PodDisruptionBudget group it belongs to, or None."""


@dataclass(frozen=True, slots=True)
class Move:
    pod: str
    """``RunningPod.uid``."""
    source_node: str
    source_gpu: int
    target_node: str
    target_gpu: int
    target_placement: Placement


@dataclass(frozen=True, slots=True)
class DefragPlan:
    node: str
    """Where the waiting pod will fit."""
    gpus: tuple[int, ...]
    """The GPUs of that node reserved for it (the room being made)."""
    moves: tuple[Move, ...]
    """Evictions, in order; every target fits now, none on ``node``."""
    lost_s: float
    """Run time thrown away (sum of ``now_s - started_s`` over moved pods)."""
    relayout: bool = False
    """Static GPUs: the room exists only after the re-layout controller re-partitions the emptied GPU(s)."""

    @property
    def evictions(self) -> int:
        return len({m.pod for m in self.moves})

    @property
    def nodes_touched(self) -> int:
        return len({self.node, *(m.target_node for m in self.moves)})


@dataclass(frozen=True, slots=True)
class NoPlan:
    reason: str
    """Readable: why no disruption within the limits makes room."""


_FIRST_FIT = PolicyConfig()
_TARGET_SEARCH_LIMIT = 2_000
"""Fits tried per room when placing its moved pods: backtracking over target nodes stays bounded."""
_ROOMS_PER_NODE_LIMIT = 2_000
"""Rooms built per node at most, smallest first: a pod asking several small instances on a node of many
busy GPUs would otherwise combine thousands of removals (56 single-instance ones on an 8-GPU node)."""


@dataclass(frozen=True, slots=True)
class _Victim:
    """One running pod, all its instances (on one node)."""

    uid: str
    node: str
    held: tuple[RunningPod, ...]
    lost_s: float
    demand: PodDemand
    budget: str | None


@dataclass(frozen=True, slots=True)
class _Room:
    node: str
    victims: frozenset[str]
    lost_s: float


def plain_demand(demand: PodDemand) -> PodDemand | None:
    """The demand as MIG instances per profile (a DRA claim's profiles when it is exactly that), or None."""
    if demand.claims is None:
        return PodDemand(demand.mig, demand.gpus)
    return demand.claims.profiles


def _modelled(node: NodeState) -> NodeState:
    """The node as GPU states alone: DRA nodes' GPUs are dynamic, and rooms are planned on those."""
    return node if node.devices is None else replace(node, devices=None)


def _fits(node: NodeState, demand: PodDemand, config: PolicyConfig, relayout: bool) -> FitResult | None:
    """The fit of ``demand`` on ``node`` now (or after re-partitioning idle static GPUs), else None.

    Cached by node state (``evaluate``): the nodes as they are repeat across plans, and so do rooms.
    """
    result = evaluate(node, demand, config)
    if result.fits_now or (relayout and result.verdict is Verdict.RELAYOUT):
        return result
    return None


def _without(gpu: GpuState, placements: Iterable[Placement]) -> GpuState:
    """The GPU once the pods holding ``placements`` leave (dynamic GPUs drop the instances)."""
    gone = set(placements)
    if gpu.dynamic:
        return gpu.with_instances(tuple(i for i in gpu.instances if not (i.used and i.placement in gone)))
    return gpu.with_instances(tuple(Instance(i.placement, i.used and i.placement not in gone) for i in gpu.instances))


def _held_exactly(node: NodeState, pod: RunningPod) -> bool:
    """Whether the node's state shows the pod's instance in use where the caller says it is."""
    for gpu in node.gpus:
        if gpu.index == pod.gpu:
            return any(i.used and i.placement == pod.placement for i in gpu.instances)
    return False


def _victims(
    nodes: Mapping[str, NodeState],
    running: Sequence[RunningPod],
    priority: int,
    now_s: float,
    budgets: Mapping[str, int],
) -> dict[str, _Victim]:
    """The pods that may be moved, by uid: every instance known exactly, movable, of no higher priority."""
    by_uid: dict[str, list[RunningPod]] = defaultdict(list)
    for pod in running:
        by_uid[pod.uid].append(pod)
    found: dict[str, _Victim] = {}
    for uid, held in by_uid.items():
        first = held[0]
        node = nodes.get(first.node)
        if node is None or any(p.node != first.node for p in held):
            continue
        if not all(p.movable and p.priority <= priority for p in held):
            continue
        if first.budget is not None and budgets.get(first.budget, 0) < 1:
            continue
        if not all(_held_exactly(node, p) for p in held):
            continue  # a controller never acts on a guess
        counts = Counter(p.placement.profile.name for p in held)
        demand = PodDemand(mig=tuple(sorted(counts.items())))
        found[uid] = _Victim(uid, first.node, tuple(held), max(0.0, now_s - first.started_s), demand, first.budget)
    return found


def _atomic_removals(
    node: NodeState,
    holders: Mapping[tuple[int, Placement], str],
    victims: Mapping[str, _Victim],
    profiles: Sequence[str],
    several: bool,
    relayout: bool,
    max_evictions: int,
    layouts_known: bool,
) -> set[frozenset[str]]:
    """Smallest sets of movable pods whose leaving frees one instance's worth of room on one GPU.

    ``holders`` maps (GPU, placement) of every used instance a running pod holds to its uid; an instance no
    movable pod holds makes every set that needs it impossible.
    """
    found: set[frozenset[str]] = set()

    def add(uids: set[str | None]) -> None:
        if uids and None not in uids and len(uids) <= max_evictions and all(u in victims for u in uids):
            found.add(frozenset(u for u in uids if u is not None))

    exact = layouts_known or node.fidelity in (Fidelity.EXACT, Fidelity.DRA)
    whole_node: set[str | None] = set()
    for gpu in node.gpus:
        if not gpu.mig_enabled:
            continue
        used = [i for i in gpu.instances if i.used]
        if gpu.dynamic:
            for name in profiles:
                profile = gpu.model.find_profile(name)
                if profile is None:
                    continue
                for start in profile.starts:
                    mask = profile.occupancy(start)
                    add({holders.get((gpu.index, i.placement)) for i in used if i.placement.mask & mask})
            continue
        uids = {holders.get((gpu.index, i.placement)) for i in used}
        whole_node |= uids
        if relayout and exact and node.strategy is MigStrategy.MIXED:
            add(uids)  # the GPU emptied, then re-partitioned
        if several:  # a free instance of a profile it asks for, beside others on the node
            for instance in used:
                if instance.profile.name in profiles or any(
                    gpu.model.find_profile(n) is instance.profile for n in profiles
                ):
                    add({holders.get((gpu.index, instance.placement))})
    if relayout and not exact and node.strategy is MigStrategy.MIXED:
        add(whole_node)  # instances are only estimated: MIG Manager re-partitions the whole node
    return found


def _rooms(
    nodes: Mapping[str, NodeState],
    victims: Mapping[str, _Victim],
    demand: PodDemand,
    budgets: Mapping[str, int],
    relayout: bool,
    max_evictions: int,
    layouts_known: bool,
) -> list[_Room]:
    """Candidate rooms (node, pods to move), cheapest first: unions of atomic removals within the limits."""
    holders: dict[str, dict[tuple[int, Placement], str]] = defaultdict(dict)
    for victim in victims.values():
        for pod in victim.held:
            holders[victim.node][(pod.gpu, pod.placement)] = victim.uid
    profiles = [name for name, _ in demand.mig]
    instances = sum(count for _, count in demand.mig)
    rooms: dict[tuple[str, frozenset[str]], _Room] = {}
    for name, node in nodes.items():
        atoms = _atomic_removals(
            node, holders.get(name, {}), victims, profiles, instances > 1, relayout, max_evictions, layouts_known
        )
        ordered = sorted(atoms, key=lambda a: (len(a), sorted(a)))
        combinations = itertools.chain.from_iterable(
            itertools.combinations(ordered, size) for size in range(1, min(instances, max_evictions) + 1)
        )
        for combination in itertools.islice(combinations, _ROOMS_PER_NODE_LIMIT):
            chosen = frozenset().union(*combination)
            if len(chosen) > max_evictions or (name, chosen) in rooms:
                continue
            spent: Counter[str] = Counter()
            for uid in chosen:
                group = victims[uid].budget
                if group is not None:
                    spent[group] += 1
            if any(budgets.get(group, 0) < count for group, count in spent.items()):
                continue
            rooms[(name, chosen)] = _Room(name, chosen, sum(victims[u].lost_s for u in chosen))
    return sorted(rooms.values(), key=lambda r: (len(r.victims), r.lost_s, r.node, sorted(r.victims)))


def _emptied_room(node: NodeState, moved: Iterable[_Victim]) -> NodeState:
    removed: dict[int, list[Placement]] = defaultdict(list)
    for victim in moved:
        for pod in victim.held:
            removed[pod.gpu].append(pod.placement)
    return node.replace_gpus(_without(g, removed[g.index]) for g in node.gpus if g.index in removed)


def _moves(victim: _Victim, target: str, result: FitResult) -> list[Move]:
    """One Move per instance the pod holds, each to a planned instance of the same profile."""
    sources = sorted(victim.held, key=lambda p: (p.placement.profile.name, p.gpu, p.placement.start))
    targets = sorted(result.plan, key=lambda p: (p.placement.profile.name, p.gpu_index, p.placement.start))
    return [Move(victim.uid, s.node, s.gpu, target, t.gpu_index, t.placement) for s, t in zip(sources, targets)]


def _place_moved(
    moved: Sequence[_Victim],
    states: Mapping[str, NodeState],
    room_node: str,
    config: PolicyConfig,
) -> tuple[Move, ...] | None:
    """Targets for every moved pod on other nodes, in room free now; None if they cannot all be placed."""
    current = dict(states)
    touched: set[str] = set()
    tries = 0

    def order(name: str) -> tuple[bool, int, str]:
        node = current[name]
        return (name not in touched, -node.used_compute, name)

    def place(position: int) -> list[Move] | None:
        nonlocal tries
        if position == len(moved):
            return []
        victim = moved[position]
        for name in sorted((n for n in current if n != room_node), key=order):
            tries += 1
            if tries > _TARGET_SEARCH_LIMIT:
                return None
            state = current[name]
            result = evaluate(state, victim.demand, config)
            if not result.fits_now:
                continue
            current[name] = state.with_used((p.gpu_index, p.placement) for p in result.plan)
            was_touched = name in touched
            touched.add(name)
            rest = place(position + 1)
            if rest is not None:
                return [*_moves(victim, name, result), *rest]
            current[name] = state
            if not was_touched:
                touched.discard(name)
        return None

    found = place(0)
    return None if found is None else tuple(found)


def _fits_elsewhere(
    demand: PodDemand,
    node: str,
    states: Mapping[str, NodeState],
    config: PolicyConfig,
    fits_on: dict[PodDemand, frozenset[str]],
) -> bool:
    """Whether ``demand`` alone fits now on some node other than ``node`` (memoised in ``fits_on``)."""
    found = fits_on.get(demand)
    if found is None:
        found = fits_on[demand] = frozenset(n for n, s in states.items() if _fits(s, demand, config, False))
    return bool(found - {node})


def plan_room(
    nodes: Mapping[str, NodeState],
    running: Sequence[RunningPod],
    demand: PodDemand,
    *,
    priority: int,
    now_s: float,
    budgets: Mapping[str, int] | None = None,
    max_evictions: int,
    relayout: bool = True,
    config: PolicyConfig = _FIRST_FIT,
    layouts_known: bool = False,
    max_lost_s: float | None = None,
) -> DefragPlan | NoPlan:
    """The smallest disruption that makes room for ``demand`` on one of ``nodes``, or why there is none.

    ``nodes`` are the nodes the waiting pod may use; ``running`` the MIG pods running there whose instance is
    known exactly. ``relayout``: static GPUs may be emptied for the re-layout controller to re-partition.
    ``config``: the node-side allocator of dynamic GPUs (kube-scheduler's first fit unless told otherwise).
    ``layouts_known``: every static node's instances are known exactly, whatever its fidelity says (the
    simulator), so single GPUs may be emptied for a re-layout. ``max_lost_s``: no plan throws away more run
    time than this (summed over its moved pods); None for no bound.
    """
    budgets = budgets or {}
    wanted = plain_demand(demand)
    if wanted is None or not wanted.mig:
        return NoPlan("the pod asks for no MIG instance by profile: nothing to make room for")
    if max_evictions < 1:
        return NoPlan("defragmentation may move no pod (max evictions 0)")
    states = {name: _modelled(node) for name, node in nodes.items()}
    for name, node in states.items():
        if _fits(node, wanted, config, relayout) is not None:
            return NoPlan(f"{wanted.text()} fits on {name} without moving any pod")
    victims = _victims(states, running, priority, now_s, budgets)
    if not victims:
        return NoPlan("no running pod may be moved (movable, priority at most the waiting pod's, budget allows)")
    rooms = _rooms(states, victims, wanted, budgets, relayout, max_evictions, layouts_known)
    costly = 0
    if max_lost_s is not None:
        kept = [r for r in rooms if r.lost_s <= max_lost_s]
        costly, rooms = len(rooms) - len(kept), kept
    best: tuple[tuple[int, float, int], DefragPlan] | None = None
    room_found = False
    # Where each moved pod's demand fits now, alone: a room whose pods cannot go anywhere but its own node is
    # dropped before any search (most rooms, in a full cluster).
    fits_on: dict[PodDemand, frozenset[str]] = {}
    for room in rooms:
        if best is not None and (len(room.victims), room.lost_s) > best[0][:2]:
            break
        moved = sorted((victims[u] for u in room.victims), key=lambda v: (-v.lost_s, v.uid))
        if not all(_fits_elsewhere(v.demand, room.node, states, config, fits_on) for v in moved):
            room_found = (
                room_found or _fits(_emptied_room(states[room.node], moved), wanted, config, relayout) is not None
            )
            continue
        emptied = _emptied_room(states[room.node], moved)
        result = _fits(emptied, wanted, config, relayout)
        if result is None:
            continue
        room_found = True
        reserved = tuple(sorted({p.gpu_index for p in result.plan}))
        moves = _place_moved(moved, states, room.node, config)
        if moves is None:
            continue
        plan = DefragPlan(room.node, reserved, moves, room.lost_s, result.verdict is Verdict.RELAYOUT)
        key = (len(room.victims), room.lost_s, plan.nodes_touched)
        if best is None or key < best[0]:
            best = (key, plan)
    if best is not None:
        return best[1]
    if room_found:
        return NoPlan(f"room for {wanted.text()} can be made, but the pods it moves fit on no other node now")
    if costly:
        return NoPlan(f"room for {wanted.text()} only by moving pods that ran more than {max_lost_s:.0f} s in all")
    return NoPlan(f"moving at most {max_evictions} movable pod(s) makes no room for {wanted.text()} on any node")
