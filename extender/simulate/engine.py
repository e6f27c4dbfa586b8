"""The simulation: one policy in one world, in fill or churn mode, deciding with the extender's own code.

Nodes are :class:`NodeState` values, grouped by ``state_id``: nodes in equal states get equal fits and
scores, so each arrival costs one ``evaluate`` per state entered since its demand was last placed (read
then, in the order the states were entered) and one score per fitting state. Inside the
chosen node the world decides: ``static`` (the kubelet takes a random free instance of the profile,
seeded), ``dynamic-first-fit`` (kube-scheduler's DRA allocator, as the extender models it, on nodes published
as NVIDIA's DRA driver publishes them, each pod's MIG asked for through a ResourceClaim: :mod:`.dra`),
``dynamic-ideal`` (the plan the policy prefers). Ties between top-scored nodes are broken at random, as
kube-scheduler's selectHost does.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..model.accounting import fleet_totals, node_slices
from ..model.catalog import GpuModel
from ..model.demand import PodDemand
from ..model.fit import Allocator, FitResult
from ..model.fragmentation import DemandDistribution, parse_mix
from ..model.migparted import DEFAULT_CONFIG, MigPartedConfig
from ..model.placement import Placement
from ..model.policy import PolicyConfig, evaluate, scores
from ..model.provisioning import Pool, plan_capacity
from ..model.relayout import PlannerConfig, RelayoutPlan, free_supply, plan_rebalance, plan_relayouts
from ..model.scoring import Scorer
from ..model.state import GpuState, Instance, NodeState
from .baselines import PolicySpec, plan_naive
from .consolidation import Consolidation, Consolidator
from .defrag import DefragLimits, Defragmenter, FragmentationMeter, churn_figures, push_next
from .dra import DraFleet, Held
from .headroom import Headroom, HeadroomSim
from .workload import NodeSpec, SimPod


class World(enum.StrEnum):
    STATIC = "static"
    DYNAMIC_FIRST_FIT = "dynamic-first-fit"
    DYNAMIC_IDEAL = "dynamic-ideal"


class Mode(enum.StrEnum):
    FILL = "fill"
    CHURN = "churn"


@dataclass(frozen=True)
class SimConfig:
    model: GpuModel
    world: World = World.STATIC
    mode: Mode = Mode.FILL
    relayout: bool = True
    arrival: float = 1.3
    seed: int = 1
    layout: str = "all-balanced"
    """mig-parted config of static nodes at the start (and of nodes the autoscaler adds)."""
    prior: str = "uniform"
    weights_every: int = 25
    """The demand distribution is read every this many arrivals (scores are cached in between)."""
    relayout_delay_s: float = 300.0
    scale_up_after_s: float = 120.0
    node_startup_s: float = 300.0
    scale_down_after_s: float = 600.0
    rebalance: bool = True
    """Fill mode, static world with re-layout: our planner also re-partitions idle GPUs toward the expected
    mix between waits (:func:`plan_rebalance`). Not in churn: re-partitioning nodes that the autoscaler
    would remove costs node-hours (inference mix, 20 nodes: 311.8 -> 338.2 h)."""
    autoscale: bool = True
    new_node_gpus: int = 8
    curve_points: int = 200
    mig_parted: MigPartedConfig = DEFAULT_CONFIG
    defrag: DefragLimits | None = None
    """Churn: move running pods so that pods that waited fit (:mod:`.defrag`); None: off."""
    consolidation: Consolidation = Consolidation.WHEN_EMPTY
    """Churn: Karpenter's consolidation policy (:mod:`.consolidation`); nodes are removed after
    ``scale_down_after_s`` (its consolidateAfter)."""
    headroom: HeadroomSim | None = None
    """Churn: placeholder pods that real pods preempt (:mod:`.headroom`); None: off."""


@dataclass
class PolicyResult:
    policy: str
    capacity_slices: int = 0
    allocated_slices: int = 0
    submitted_slices: int = 0
    pods_placed: int = 0
    pods_failed: int = 0
    first_failure_demand_ratio: float | None = None
    relayouts: int = 0
    relayout_gpus: int = 0
    seconds: float = 0.0
    node_hours: float | None = None
    gpu_hours: float | None = None
    """Churn: GPUs alive (or starting) over time; fairer than node-hours when node sizes differ."""
    mean_wait_s: float | None = None
    waits: list[tuple[float, float]] = field(default_factory=list)
    """Churn: (arrival time, seconds waited) of every pod placed, in the order they were placed."""
    nodes_added: int = 0
    nodes_removed: int = 0
    stranded_slices: int | None = None
    """Fill mode: free compute slices at the end that no instance can use (the model's slice accounting)."""
    curve: list[tuple[float, float]] = field(default_factory=list)
    """(submitted demand / capacity, allocated / capacity) during the run."""
    node_counts: list[tuple[float, int]] = field(default_factory=list)
    churn_figures: dict[str, Any] = field(default_factory=dict)
    """Churn: waits, evictions, lost work, fragmentation waits (:func:`.defrag.churn_figures`)."""

    @property
    def allocated_slice_ratio(self) -> float:
        return self.allocated_slices / self.capacity_slices if self.capacity_slices else 0.0

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "allocated_slice_ratio": round(self.allocated_slice_ratio, 6),
            "unallocated_slices": self.capacity_slices - self.allocated_slices,
            "allocated_slices": self.allocated_slices,
            "capacity_slices": self.capacity_slices,
            "submitted_slices": self.submitted_slices,
            "pods_placed": self.pods_placed,
            "pods_failed": self.pods_failed,
            "first_failure_demand_ratio": (
                None if self.first_failure_demand_ratio is None else round(self.first_failure_demand_ratio, 6)
            ),
            "relayouts": self.relayouts,
            "relayout_gpus": self.relayout_gpus,
            "seconds": round(self.seconds, 2),
        }
        if self.stranded_slices is not None:
            out["stranded_slices"] = self.stranded_slices
        if self.node_hours is not None:
            out["node_hours"] = round(self.node_hours, 3)
            out["gpu_hours"] = None if self.gpu_hours is None else round(self.gpu_hours, 3)
            out["mean_wait_s"] = None if self.mean_wait_s is None else round(self.mean_wait_s, 3)
            out["nodes_added"] = self.nodes_added
            out["nodes_removed"] = self.nodes_removed
            out.update(self.churn_figures)
        return out


def initial_node(name: str, model: GpuModel, gpus: int, world: World, config: SimConfig) -> NodeState:
    if world is World.STATIC:
        states = []
        for index in range(gpus):
            spec = config.mig_parted.resolve(config.layout, model, index)
            layout = spec.layout(model) if spec is not None else ()
            states.append(GpuState(index, model, tuple(Instance(p, False) for p in layout)))
        return NodeState(name, tuple(states))
    return NodeState(name, tuple(GpuState(i, model, (), dynamic=True) for i in range(gpus)))


@dataclass(frozen=True, slots=True)
class Taken:
    """What a placed pod holds: (GPU index, placement) per instance, and in the DRA world the devices too."""

    placements: tuple[tuple[int, Placement], ...]
    devices: Held = ()


def release(gpu: GpuState, placement: Placement) -> GpuState:
    """The GPU after the pod holding ``placement`` leaves (dynamic GPUs drop the instance)."""
    for position, instance in enumerate(gpu.instances):
        if instance.placement == placement and instance.used:
            rest = gpu.instances[:position] + gpu.instances[position + 1 :]
            if gpu.dynamic:
                return replace(gpu, instances=rest)
            return replace(gpu, instances=(*rest, Instance(placement, False)))
    raise ValueError(f"GPU {gpu.index} holds no used instance {placement}")


class _CachedScorer:
    """The policy's scorer, memoised per (node state, demand) for one reading of the demand distribution."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.cache: dict[tuple[int, PodDemand], float] = {}
        self.demand = PodDemand()

    def __call__(self, node: NodeState, result: FitResult, weights: Mapping[str, float]) -> float:
        key = (node.state_id, self.demand)
        value = self.cache.get(key)
        if value is None:
            value = self.cache[key] = self.scorer(node, result, weights)
        return value


_REBALANCE = PlannerConfig(max_plans=16)


class Simulation:
    """One policy, one world, one workload."""

    def __init__(
        self, config: SimConfig, policy: PolicySpec, nodes: Sequence[NodeSpec], dra: DraFleet | None = None
    ) -> None:
        """``dra``: the DRA nodes and claims of the first-fit world, shared by the policies of one run (its
        nodes' state ids, and so the model's fit caches, are then shared too); made here when not given."""
        self.config = config
        self.policy = policy
        self.rng = random.Random(config.seed)
        self.dra: DraFleet | None = None
        if config.world is World.DYNAMIC_FIRST_FIT:
            self.dra = dra if dra is not None and dra.model is config.model else DraFleet(config.model)
        allocator = Allocator.IDEAL if config.world is World.DYNAMIC_IDEAL else Allocator.FIRST_FIT
        self.policy_config = PolicyConfig(dynamic_allocator=allocator)
        self.scorer = _CachedScorer(policy.scorer)
        self.distribution = DemandDistribution(prior=parse_mix(config.prior))
        self.weights: dict[str, float] = self.distribution.weights()
        self.arrivals = 0
        self.nodes: dict[int, NodeState] = {}
        self.ids: dict[str, int] = {}
        self.groups: dict[int, dict[int, None]] = {}
        self.fits: dict[PodDemand, dict[int, FitResult]] = {}
        self.unchecked: dict[PodDemand, dict[int, None]] = {}
        """Per demand, the states entered since its fits were last read, in the order entered."""
        self.supply_of: dict[int, Counter[str]] = {}
        self.result = PolicyResult(policy.name)
        self.rebalancing = (
            config.world is World.STATIC
            and config.mode is Mode.FILL
            and config.relayout
            and config.rebalance
            and policy.planner == "ours"
        )
        self.next_id = 0
        for spec in nodes:
            self.add_node(self.new_node(spec.name, spec.gpus))

    # --- node bookkeeping ------------------------------------------------------------------------------

    def new_node(self, name: str, gpus: int) -> NodeState:
        """A node of the world as it starts (and as the autoscaler adds it): idle, in the world's layout."""
        if self.dra is not None:
            return self.dra.node(name, gpus)
        return initial_node(name, self.config.model, gpus, self.config.world, self.config)

    def asked(self, demand: PodDemand) -> PodDemand:
        """The demand as the world's pods ask it: in the DRA world, through a ResourceClaim."""
        return demand if self.dra is None else self.dra.demand(demand)

    def add_node(self, state: NodeState) -> int:
        node_id = self.next_id
        self.next_id += 1
        self.ids[state.name] = node_id
        self.result.capacity_slices += state.total_compute
        self._enter(node_id, state)
        return node_id

    def remove_node(self, node_id: int) -> None:
        state = self.nodes[node_id]
        self._leave(node_id)
        del self.ids[state.name]
        self.result.capacity_slices -= state.total_compute

    def _enter(self, node_id: int, state: NodeState) -> None:
        self.nodes[node_id] = state
        group = self.groups.get(state.state_id)
        if group is None:
            group = self.groups[state.state_id] = {}
            for unchecked in self.unchecked.values():
                unchecked[state.state_id] = None
        group[node_id] = None

    def _leave(self, node_id: int) -> NodeState:
        state = self.nodes.pop(node_id)
        group = self.groups[state.state_id]
        del group[node_id]
        if not group:
            del self.groups[state.state_id]
            for fitting in self.fits.values():
                fitting.pop(state.state_id, None)
            for unchecked in self.unchecked.values():
                unchecked.pop(state.state_id, None)
        return state

    def set_node(self, node_id: int, state: NodeState) -> None:
        self._leave(node_id)
        self._enter(node_id, state)

    def rep(self, state_id: int) -> NodeState:
        return self.nodes[next(iter(self.groups[state_id]))]

    def fitting(self, demand: PodDemand) -> dict[int, FitResult]:
        """The states ``demand`` fits now, in the order they were entered (the order ties are broken in)."""
        found = self.fits.get(demand)
        if found is None:
            found = self.fits[demand] = {}
            self.unchecked[demand] = dict.fromkeys(self.groups)
        unchecked = self.unchecked[demand]
        if unchecked:
            # A state is evaluated only when its demand is placed: most change again before every demand is.
            asked = self.asked(demand)
            for state_id in unchecked:
                result = evaluate(self.rep(state_id), asked, self.policy_config)
                if result.fits_now:
                    found[state_id] = result
            unchecked.clear()
        return found

    # --- deciding ---------------------------------------------------------------------------------------

    def observe(self, pod: SimPod, now: float) -> None:
        self.distribution.observe(pod.shape, pod.count, now)
        self.arrivals += 1
        if self.arrivals % self.config.weights_every == 0:
            self.weights = self.distribution.weights(now)
            self.scorer.cache.clear()

    def choose(self, demand: PodDemand) -> tuple[int, FitResult] | None:
        """The node the extender's scores pick (random among the top), and the fit there."""
        fitting = self.fitting(demand)
        if not fitting:
            return None
        candidates = [(self.rep(sid), result) for sid, result in fitting.items()]
        self.scorer.demand = demand
        normalized = scores(candidates, self.scorer, self.weights)
        top = max(normalized)
        tops = [candidates[i] for i, value in enumerate(normalized) if value == top]
        total = sum(len(self.groups[node.state_id]) for node, _ in tops)
        pick = self.rng.randrange(total)
        for node, result in tops:
            group = self.groups[node.state_id]
            if pick < len(group):
                return next(itertools.islice(group, pick, None)), result
            pick -= len(group)
        raise AssertionError("unreachable")

    def allocate(self, node_id: int, demand: PodDemand, result: FitResult) -> Taken:
        """Take the instances as the world's node-side allocator would."""
        node = self.nodes[node_id]
        if self.dra is not None:
            # The devices kube-scheduler's allocator takes (fit_claims' first solution), now in use.
            state, held = self.dra.taken(node, result)
            self.set_node(node_id, state)
            return Taken(tuple((p.gpu_index, p.placement) for p in result.plan), held)
        gpus = {g.index: g for g in node.gpus}
        taken: list[tuple[int, Placement]] = []
        if self.config.world is World.STATIC:
            for name, count in demand.mig:
                free = [
                    (g.index, i.placement)
                    for g in node.gpus
                    for i in g.instances
                    if not i.used and i.profile is g.model.find_profile(name)
                ]
                taken.extend(self.rng.sample(free, count))
        else:
            taken = [(p.gpu_index, p.placement) for p in result.plan]
        for index, placement in taken:
            gpus[index] = gpus[index].with_used(placement)
        self.set_node(node_id, node.replace_gpus(gpus.values()))
        return Taken(tuple(taken))

    def released(self, node: NodeState, taken: Taken) -> NodeState:
        """``node`` once the pod holding ``taken`` leaves."""
        if self.dra is not None:
            return self.dra.released(node, taken.devices)
        gpus = {g.index: g for g in node.gpus}
        for index, placement in taken.placements:
            gpus[index] = release(gpus[index], placement)
        return node.replace_gpus(gpus.values())

    def place(self, pod: SimPod) -> tuple[int, Taken] | None:
        chosen = self.choose(pod.demand)
        if chosen is None:
            return None
        node_id, result = chosen
        taken = self.allocate(node_id, pod.demand, result)
        self.result.allocated_slices += pod.slices
        self.result.pods_placed += 1
        return node_id, taken

    # --- re-layout ----------------------------------------------------------------------------------------

    def relayout_candidates(self, exclude: Collection[int] = (), per_state: int = 1) -> list[NodeState]:
        """Nodes with idle static GPUs, at most ``per_state`` of each state (equal nodes plan alike)."""
        found = []
        for group in self.groups.values():
            node_ids = itertools.islice((n for n in group if n not in exclude), per_state)
            for node_id in node_ids:
                node = self.nodes[node_id]
                if not any(g.is_idle and not g.dynamic for g in node.gpus):
                    break
                found.append(node)
        found.sort(key=lambda n: self.ids[n.name])
        return found

    def supply(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for state_id, group in self.groups.items():
            counts = self.supply_of.get(state_id)
            if counts is None:
                counts = self.supply_of[state_id] = free_supply([self.rep(state_id)])
            for shape, value in counts.items():
                total[shape] += value * len(group)
        return total

    def plan(self, waiting: Sequence[PodDemand], exclude: Collection[int] = ()) -> list[RelayoutPlan]:
        if self.config.world is not World.STATIC or not self.config.relayout or not waiting:
            return []
        candidates = self.relayout_candidates(exclude)
        if self.policy.planner == "ours":
            return plan_relayouts(candidates, waiting, self.weights, self.supply())
        return plan_naive(candidates, waiting)

    def rebalance(self, exclude: Collection[int] = ()) -> list[RelayoutPlan]:
        """Our planner between waits: idle GPUs re-partitioned toward the expected mix."""
        if not self.rebalancing:
            return []
        candidates = self.relayout_candidates(exclude, per_state=_REBALANCE.max_plans)
        return plan_rebalance(candidates, self.weights, self.supply(), _REBALANCE)

    def apply_plan(self, plan: RelayoutPlan) -> None:
        node_id = self.ids[plan.node]
        self.set_node(node_id, plan.apply(self.nodes[node_id]))
        self.result.relayouts += 1
        self.result.relayout_gpus += len(plan.gpus)

    # --- fill -----------------------------------------------------------------------------------------------

    def run_fill(self, pods: Sequence[SimPod], on_pod: Callable[[], object] | None = None) -> PolicyResult:
        """Every pod in turn; ``on_pod`` is called after each (a progress bar)."""
        started = time.perf_counter()
        capacity = self.result.capacity_slices
        every = max(1, len(pods) // self.config.curve_points)
        for n, pod in enumerate(pods):
            if on_pod is not None:
                on_pod()
            if n % self.config.weights_every == 0:
                for plan in self.rebalance():
                    self.apply_plan(plan)
            self.observe(pod, pod.arrival_s)
            self.result.submitted_slices += pod.slices
            placed = self.place(pod)
            if placed is None:
                for plan in self.plan([pod.demand]):
                    self.apply_plan(plan)
                placed = self.place(pod)
            if placed is None:
                self.result.pods_failed += 1
                if self.result.first_failure_demand_ratio is None:
                    self.result.first_failure_demand_ratio = self.result.submitted_slices / capacity
            if n % every == 0 or n == len(pods) - 1:
                self.result.curve.append(
                    (self.result.submitted_slices / capacity, self.result.allocated_slices / capacity)
                )
        self.result.stranded_slices = fleet_totals(map(node_slices, self.nodes.values())).stranded
        self.result.seconds = time.perf_counter() - started
        return self.result

    # --- churn ------------------------------------------------------------------------------------------------

    def run_churn(self, pods: Sequence[SimPod], on_pod: Callable[[], object] | None = None) -> PolicyResult:
        """Pods at their trace times; ``on_pod`` is called at each arrival (a progress bar)."""
        return Churn(self).run(pods, on_pod)


class _Event(enum.IntEnum):
    # At equal times: departures first (they free room), then finished changes, then arrivals, then checks.
    DEPART = 0
    RELAYOUT_DONE = 1
    NODE_READY = 2
    ARRIVE = 3
    SCALE_UP_CHECK = 4
    SCALE_DOWN_CHECK = 5
    DEFRAG = 6
    CONSOLIDATE = 7


@dataclass
class _Pending:
    pod: SimPod
    since: float


class Churn:
    """Arrivals and departures at trace times; re-layouts and new nodes take time; empty nodes go away."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.config = sim.config
        self.events: list[tuple[float, int, int, Any]] = []
        self.seq = itertools.count()
        self.pending: dict[str, _Pending] = {}
        self.running: dict[str, tuple[int, Taken]] = {}
        self.changing: dict[int, RelayoutPlan] = {}
        self.starting = 0
        self.launches = itertools.count()
        # The autoscaler plans with the provisioning loop's planner: one pool of the nodes it adds, seen with
        # dynamic GPUs (what a node can host once partitioned for its pods) whatever the world.
        self.pool = Pool(
            "simulated", self.config.model, self.config.new_node_gpus, self.config.layout, max_nodes=1 << 30
        )
        self.pool_template = initial_node(
            "template", self.config.model, self.config.new_node_gpus, World.DYNAMIC_IDEAL, self.config
        )
        self.node_version: dict[int, int] = {}
        self.waits: list[float] = []
        self.now = 0.0
        self.last = 0.0
        self.node_seconds = 0.0
        self.gpu_seconds = 0.0
        self.started: dict[str, float] = {}
        self.pod_of: dict[str, SimPod] = {}
        self.fragmentation = FragmentationMeter(self)
        self.defrag = Defragmenter(self, self.config.defrag) if self.config.defrag is not None else None
        self.defrag_due: float | None = None
        under = self.config.consolidation is Consolidation.WHEN_UNDERUTILIZED
        self.consolidation = Consolidator(self, _Event.CONSOLIDATE) if under else None
        self.headroom = Headroom(self, self.config.headroom) if self.config.headroom is not None else None

    def push(self, when: float, kind: _Event, payload: Any) -> None:
        heapq.heappush(self.events, (when, int(kind), next(self.seq), payload))

    def live_nodes(self) -> int:
        return len(self.sim.nodes)  # nodes under re-layout stay in sim.nodes, outside the groups

    def advance(self, when: float) -> None:
        elapsed = when - self.last
        self.fragmentation.elapse(elapsed)
        self.node_seconds += elapsed * (self.live_nodes() + self.starting)
        live_gpus = self.sim.result.capacity_slices / self.config.model.compute_slices
        self.gpu_seconds += elapsed * (live_gpus + self.starting * self.config.new_node_gpus)
        self.last = when
        self.now = when

    def run(self, pods: Sequence[SimPod], on_pod: Callable[[], object] | None = None) -> PolicyResult:
        sim = self.sim
        started = time.perf_counter()
        for arriving in pods:
            self.push(arriving.arrival_s, _Event.ARRIVE, arriving)
        self.last = self.now = pods[0].arrival_s if pods else 0.0
        sim.result.node_counts.append((self.now, self.live_nodes()))
        for node_id in list(sim.nodes):
            self.push(self.now + self.config.scale_down_after_s, _Event.SCALE_DOWN_CHECK, (node_id, 0))
        while self.events:
            when, kind, _, payload = heapq.heappop(self.events)
            self.advance(when)
            if kind == _Event.ARRIVE:
                if on_pod is not None:
                    on_pod()
                pod: SimPod = payload
                sim.observe(pod, when)
                if self.headroom is not None:
                    self.headroom.observe(pod, when)
                sim.result.submitted_slices += pod.slices
                self.pending[pod.name] = _Pending(pod, when)
                self.push(when + self.config.scale_up_after_s, _Event.SCALE_UP_CHECK, pod.name)
                self.waits_for_defrag(pod.name)
            elif kind == _Event.DEPART:
                if payload[0] not in self.running:
                    continue  # a pod moved away: it departs on its new run
                self.depart(payload)
            elif kind == _Event.RELAYOUT_DONE:
                node_id = payload
                plan = self.changing.pop(node_id)
                sim._enter(node_id, plan.apply(sim.nodes.pop(node_id)))
                self.room_made(node_id)
                version = self.node_version.get(node_id, 0)
                self.push(when + self.config.scale_down_after_s, _Event.SCALE_DOWN_CHECK, (node_id, version))
            elif kind == _Event.NODE_READY:
                self.starting -= 1
                node_id = sim.add_node(payload)
                sim.result.nodes_added += 1
                self.push(when + self.config.scale_down_after_s, _Event.SCALE_DOWN_CHECK, (node_id, 0))
            elif kind == _Event.SCALE_UP_CHECK:
                if payload in self.pending or (self.headroom is not None and self.headroom.is_pending(payload)):
                    self.scale_up()
                continue
            elif kind == _Event.SCALE_DOWN_CHECK:
                self.scale_down(*payload)
                continue
            elif kind in (_Event.DEFRAG, _Event.CONSOLIDATE) and not self.disrupt(kind, payload):
                continue  # nothing evicted: nothing new to schedule
            self.schedule_pending()
            if kind == _Event.NODE_READY:
                self.scale_up()  # overdue pods that others beat to its room get nodes of their own
            sim.result.node_counts.append((when, self.live_nodes() + self.starting))
        return self.finish(started)

    def finish(self, started: float) -> PolicyResult:
        sim = self.sim
        sim.result.pods_failed = len(self.pending)
        sim.result.node_hours = self.node_seconds / 3600.0
        sim.result.gpu_hours = self.gpu_seconds / 3600.0
        sim.result.mean_wait_s = sum(self.waits) / len(self.waits) if self.waits else None
        sim.result.churn_figures = churn_figures(self)
        if self.headroom is not None:
            sim.result.churn_figures.update(self.headroom.figures())
        capacity = max(1, sim.result.capacity_slices)
        sim.result.curve.append((sim.result.submitted_slices / capacity, sim.result.allocated_slices / capacity))
        sim.result.seconds = time.perf_counter() - started
        return sim.result

    # --- defragmentation and consolidation (.defrag, .consolidation) ------------------------------------

    def waits_for_defrag(self, name: str) -> None:
        if self.defrag is not None:
            self.defrag.arrived(name, self.now)
            push_next(self, self.defrag, _Event.DEFRAG)

    def room_made(self, node_id: int) -> None:
        """A re-layout is done: the pod a defragmentation plan made it for goes first."""
        if self.defrag is not None and (first := self.defrag.relayout_done(node_id)) in self.pending:
            self.pending = {first: self.pending[first], **self.pending}

    def disrupt(self, kind: int, payload: Any) -> bool:
        """A defragmentation or consolidation check; True if it evicted pods."""
        if kind == _Event.DEFRAG:
            assert self.defrag is not None
            self.defrag_due = None
            acted = self.defrag.check()
            push_next(self, self.defrag, _Event.DEFRAG)
            return acted
        assert self.consolidation is not None
        return self.consolidation.check(*payload)

    def schedule_pending(self) -> None:
        sim = self.sim
        if self.headroom is not None:
            self.headroom.tick()
        failed: set[PodDemand] = set()
        for name in list(self.pending):
            waiting = self.pending[name]
            if waiting.pod.demand in failed:
                continue
            placed = sim.place(waiting.pod)
            if placed is None and self.headroom is not None:
                placed = self.headroom.preempt(waiting.pod, waiting.since)
            if placed is None:
                failed.add(waiting.pod.demand)
                continue
            self.start(name, *placed)
        # Placeholders after the real pods: they take only the room left (the lowest priority).
        held: list[PodDemand] = []
        if self.headroom is not None:
            self.headroom.schedule()
            held = self.headroom.pending_demands()
        if (self.pending or held) and sim.config.relayout and sim.config.world is World.STATIC:
            demands = list(dict.fromkeys([*(p.pod.demand for p in self.pending.values()), *held]))[:32]
            for plan in sim.plan(demands, exclude=set(self.changing)):
                self.start_relayout(sim.ids[plan.node], plan)

    def start(self, name: str, node_id: int, taken: Taken) -> None:
        """The pending pod ``name`` runs on ``node_id``, holding ``taken``, until its duration is over."""
        waiting = self.pending.pop(name)
        self.node_version[node_id] = self.node_version.get(node_id, 0) + 1
        self.running[name] = (node_id, taken)
        self.started[name] = self.now
        self.pod_of[name] = waiting.pod
        self.waits.append(self.now - waiting.since)
        self.sim.result.waits.append((waiting.since, self.now - waiting.since))
        self.push(self.now + waiting.pod.duration_s, _Event.DEPART, (name, waiting.pod.slices))
        self.fragmentation.taken(waiting.pod, +1)
        if self.defrag is not None:
            self.defrag.placed(name)
        if self.consolidation is not None:
            self.consolidation.placed(name)
            self.consolidation.changed(node_id)

    def start_relayout(self, node_id: int, plan: RelayoutPlan) -> None:
        sim = self.sim
        self.changing[node_id] = plan
        # Tainted while MIG Manager changes it: out of the groups, so it takes no pod meanwhile.
        sim.nodes[node_id] = sim._leave(node_id)
        sim.result.relayouts += 1
        sim.result.relayout_gpus += len(plan.gpus)
        self.push(self.now + self.config.relayout_delay_s, _Event.RELAYOUT_DONE, node_id)

    def evict(self, name: str) -> SimPod:
        """The running pod ``name`` is evicted (defragmentation, consolidation): its instances free now."""
        pod = self.pod_of[name]
        self.depart((name, pod.slices))
        return pod

    def requeue(self, pod: SimPod) -> None:
        """An evicted pod's replacement waits, first in line: the move was planned where it fits now."""
        self.pending = {pod.name: _Pending(pod, self.now), **self.pending}
        self.push(self.now + self.config.scale_up_after_s, _Event.SCALE_UP_CHECK, pod.name)

    def depart(self, payload: tuple[str, int]) -> None:
        sim = self.sim
        name, slices = payload
        node_id, taken = self.running.pop(name)
        self.started.pop(name, None)
        self.fragmentation.taken(self.pod_of.pop(name), -1)
        if self.consolidation is not None:
            self.consolidation.changed(node_id)
        state = sim.released(sim.nodes[node_id], taken)
        if node_id in self.changing:
            sim.nodes[node_id] = state
        else:
            sim.set_node(node_id, state)
        sim.result.allocated_slices -= slices
        version = self.node_version.get(node_id, 0)
        if state.is_idle:
            self.push(self.now + self.config.scale_down_after_s, _Event.SCALE_DOWN_CHECK, (node_id, version))

    def scale_up(self) -> None:
        """Launch nodes for overdue pods that no live node hosts, now or after the policy's own re-layout.

        The provisioning loop's :func:`plan_capacity` packs them, largest first, into the nodes already
        starting (as Karpenter counts in-flight NodeClaims) and then into new ones.
        """
        sim = self.sim
        if not self.config.autoscale:
            return
        in_flight = {d for plan in self.changing.values() for d in plan.hosts}
        waiting = [*self.pending.values(), *(self.headroom.pending() if self.headroom is not None else ())]
        overdue = [
            p.pod.demand
            for p in waiting
            if self.now - p.since >= self.config.scale_up_after_s
            and p.pod.demand not in in_flight
            and not self.hosted_after_relayout(p.pod.demand)
        ]
        if not overdue:
            return
        pools = [(self.pool, self.pool_template)]
        plan = plan_capacity(pools, overdue, sim.policy_config, arriving={self.pool.name: self.starting})
        for _ in range(plan.new[self.pool.name]):
            name = f"sim-new-{next(self.launches):06d}"
            state = sim.new_node(name, self.config.new_node_gpus)
            self.starting += 1
            self.push(self.now + self.config.node_startup_s, _Event.NODE_READY, state)

    def hosted_after_relayout(self, demand: PodDemand) -> bool:
        """Static world with re-layout: the policy's own planner would re-partition a live node for it.

        Asked of the policy's planner, not of what any re-layout could do: a naive planner that waits for a
        wholly idle node leaves the pod to the autoscaler, as it would be in a cluster without the extender.
        """
        return bool(self.sim.plan([demand], exclude=set(self.changing)))

    def scale_down(self, node_id: int, version: int) -> None:
        sim = self.sim
        state = sim.nodes.get(node_id)
        if state is None or node_id in self.changing or self.node_version.get(node_id, 0) != version:
            return
        if state.is_idle:
            sim.remove_node(node_id)
            sim.result.nodes_removed += 1
            sim.result.node_counts.append((self.now, self.live_nodes() + self.starting))
