"""Re-layout planning: which idle GPU or node to re-partition into which valid layout, for waiting pods.

Pure (no I/O): the re-layout controller and the simulator call the same code. Given nodes that have GPUs
with no used instance, the MIG demands that wait, and the expected demand mix, it chooses

1. the node, by the fit verdict ``relayout`` (used instances stay untouched), preferring the fewest GPUs
   re-partitioned, then busy nodes over idle ones (idle nodes stay whole: for large or multi-GPU pods, for
   scale-down), then the fullest node;
2. for every GPU it re-partitions, a maximal layout that holds that GPU's share of the waiting demand and,
   with the rest of its slices, brings the cluster's free instances closest to the expected mix while
   wasting the fewest compute slices (a layout such as 4x ``1g.2slot`` leaves 3 of 7 compute slices dead).

Later waiting demands are planned against the states the earlier plans produce, so one re-layout can
host several of them. Between waits, :func:`plan_rebalance` applies the same layout choice to idle GPUs
whose layout serves the expected mix worse than another would.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from .caches import CACHES
from .catalog import GpuModel, Profile
from .demand import PodDemand
from .fit import Allocator, Verdict, fit
from .layouts import Layout, layout_counts, maximal_layouts, place_counts
from .migparted import DEFAULT_CONFIG, MigPartedError
from .policy import PolicyConfig, evaluate
from .state import GpuState, Instance, NodeState


@dataclass(frozen=True, slots=True)
class GpuRelayout:
    """One GPU re-partitioned into ``layout`` (every instance free)."""

    gpu_index: int
    layout: Layout
    config_name: str | None = None
    """The GPU Operator's default mig-parted config with this layout (``all-1g.10gb``...), if one has it."""


@dataclass(frozen=True, slots=True)
class RelayoutPlan:
    node: str
    gpus: tuple[GpuRelayout, ...]
    hosts: tuple[PodDemand, ...]
    """The waiting demands that this plan is meant to host."""

    @property
    def config_name(self) -> str | None:
        """One default config name for the node when every GPU of the plan shares it."""
        names = {g.config_name for g in self.gpus}
        return names.pop() if len(names) == 1 else None

    def apply(self, node: NodeState) -> NodeState:
        """``node`` with the plan's GPUs re-partitioned; raises ValueError if one is not idle."""
        if node.name != self.node:
            raise ValueError(f"plan is for node {self.node}, not {node.name}")
        by_index = {g.index: g for g in node.gpus}
        changed = []
        for relayout in self.gpus:
            gpu = by_index[relayout.gpu_index]
            if not gpu.is_idle or gpu.dynamic:
                raise ValueError(f"GPU {gpu.index} of node {node.name} is not an idle static GPU")
            changed.append(relayout_gpu(gpu, relayout.layout))
        return node.replace_gpus(changed)


DEFAULT_WASTE_WEIGHT = 2.0


@dataclass(frozen=True, slots=True)
class PlannerConfig:
    waste_weight: float = DEFAULT_WASTE_WEIGHT
    """Cost of one dead compute slice of the layout, per GPU compute slice, against the mix mismatch."""
    max_plans: int = 16
    """At most this many re-layouts per call (the controller acts on a few nodes at a time)."""
    whole_nodes_only: bool = False
    """Only nodes with no used instance on any GPU are candidates (the controller's default: MIG Manager
    pauses the GPU clients of the whole node while it re-partitions)."""


_KUBELET = PolicyConfig()  # static GPUs: evaluate() gives them the kubelet allocator


def relayout_gpu(gpu: GpuState, layout: Layout) -> GpuState:
    """The idle static ``gpu`` re-partitioned into ``layout``, every instance free."""
    return GpuState(gpu.index, gpu.model, tuple(Instance(p, False) for p in layout), dynamic=False)


def planning_profiles(model: GpuModel) -> tuple[Profile, ...]:
    """The profiles layouts are built from: base profiles without attributes (no ``+me``)."""
    return model.base_profiles


def free_supply(nodes: Sequence[NodeState]) -> Counter[str]:
    """Free compute slices of pre-made instances per shape (``1g``, ``3g``...) over ``nodes``."""
    supply: Counter[str] = Counter()
    for node in nodes:
        for gpu in node.gpus:
            if gpu.dynamic:
                continue
            for instance in gpu.instances:
                if not instance.used:
                    supply[gpu.model.shape_of(instance.profile)] += instance.profile.compute_slices
    return supply


_CONFIG_NAMES: dict[tuple[str, tuple[tuple[str, int], ...]], str | None] = {}
# Keys are finite: GPU models x the count vectors of their maximal layouts.
CACHES.register_table("relayout._CONFIG_NAMES", lambda: _CONFIG_NAMES, lambda: None)


def config_name_for(model: GpuModel, layout: Layout) -> str | None:
    """The default mig-parted config (``all-balanced``, ``all-<profile>``) whose layout has these counts."""
    counts = tuple(sorted(layout_counts(layout).items()))
    key = (model.name, counts)
    if key not in _CONFIG_NAMES:
        found = None
        for name in DEFAULT_CONFIG.names():
            try:
                spec = DEFAULT_CONFIG.resolve(name, model, 0)
            except MigPartedError:
                continue
            if spec is not None and spec.mig_enabled and tuple(sorted((p.name, n) for p, n in spec.counts)) == counts:
                found = name
                break
        _CONFIG_NAMES[key] = found
    return _CONFIG_NAMES[key]


def _target_shares(weights: Mapping[str, float], model: GpuModel) -> dict[str, float]:
    """Expected demand in compute slices per shape, as shares summing to 1."""
    slices = {}
    for shape, weight in weights.items():
        profile = model.profile_for_shape(shape)
        if profile is not None and weight > 0:
            slices[shape] = weight * profile.compute_slices
    total = sum(slices.values()) or 1.0
    return {s: v / total for s, v in slices.items()}


def _mismatch(after: Mapping[str, float], target: Mapping[str, float]) -> float:
    """L1 distance between the free supply's shares per shape and the mix's."""
    total = sum(after.values()) or 1
    shapes = after.keys() | target.keys()
    return sum(abs(after.get(s, 0) / total - target.get(s, 0.0)) for s in shapes)


def _layout_cost(
    model: GpuModel,
    layout: Layout,
    supply: Mapping[str, int],
    target: Mapping[str, float],
    waste_weight: float,
) -> float:
    """Mismatch between free supply (with every instance of ``layout`` free) and the mix, plus dead slices."""
    after = Counter(supply)
    for placement in layout:
        after[model.shape_of(placement.profile)] += placement.profile.compute_slices
    dead = model.compute_slices - sum(p.profile.compute_slices for p in layout)
    return _cost(model, after, dead, target, waste_weight)


def _cost(
    model: GpuModel, after: Mapping[str, float], dead: int, target: Mapping[str, float], waste_weight: float
) -> float:
    """Mismatch between the free supply ``after`` a layout and the mix, plus the layout's dead slices."""
    return _mismatch(after, target) + waste_weight * dead / model.compute_slices


@dataclass(frozen=True, slots=True)
class _Candidate:
    layout: Layout
    counts: Mapping[Profile, int]
    slices: tuple[tuple[str, int], ...]
    """Compute slices of the layout's instances per shape."""
    dead: int
    order: tuple[int, str]
    """Ties: the layout with the largest instance (keeps large profiles possible), then a stable text."""


_CANDIDATES: dict[GpuModel, tuple[_Candidate, ...]] = {}
CACHES.register_table("relayout._CANDIDATES", lambda: _CANDIDATES, lambda: None)


def _candidates_for(model: GpuModel) -> tuple[_Candidate, ...]:
    """The model's maximal layouts with what choosing among them needs, computed once per model."""
    found = _CANDIDATES.get(model)
    if found is None:
        entries = []
        for layout in maximal_layouts(model, planning_profiles(model)):
            slices: Counter[str] = Counter()
            for placement in layout:
                slices[model.shape_of(placement.profile)] += placement.profile.compute_slices
            used = sum(p.profile.compute_slices for p in layout)
            largest = max(p.profile.compute_slices for p in layout)
            order = (-largest, " ".join(str(p) for p in layout))
            counts = Counter(p.profile for p in layout)
            entries.append(_Candidate(layout, counts, tuple(slices.items()), model.compute_slices - used, order))
        found = _CANDIDATES[model] = tuple(entries)
    return found


def _best_candidate(
    model: GpuModel,
    need: Counter[Profile],
    target: Mapping[str, float],
    supply: Mapping[str, int],
    waste_weight: float,
) -> tuple[_Candidate, float] | None:
    """The maximal layout holding ``need`` with the lowest cost, and that cost; None if none holds it."""
    base: Counter[str] = Counter(supply)
    for profile, count in need.items():  # the required instances are taken at once: not spare
        base[model.shape_of(profile)] -= count * profile.compute_slices
    best: tuple[_Candidate, float] | None = None
    best_key: tuple[float, tuple[int, str]] = (float("inf"), (0, ""))
    for candidate in _candidates_for(model):
        if any(candidate.counts.get(p, 0) < n for p, n in need.items()):
            continue
        after = dict(base)
        for shape, slices in candidate.slices:
            after[shape] = after.get(shape, 0) + slices
        cost = _cost(model, after, candidate.dead, target, waste_weight)
        key = (round(cost, 9), candidate.order)
        if key < best_key:
            best, best_key = (candidate, cost), key
    return best


def choose_layout(
    model: GpuModel,
    required: Sequence[Profile],
    weights: Mapping[str, float],
    supply: Mapping[str, int] | None = None,
    waste_weight: float = DEFAULT_WASTE_WEIGHT,
) -> Layout | None:
    """The maximal layout that holds ``required`` and best serves the expected mix; None if none holds it.

    Its cost is the mismatch between the mix and the free supply once the layout's spare instances (all
    but ``required``) are added, plus ``waste_weight`` per dead compute slice.
    """
    need = Counter(required)
    found = _best_candidate(model, need, _target_shares(weights, model), supply or {}, waste_weight)
    if found is None and need:
        try:  # e.g. a profile outside the planning set (``+me``): its counts alone
            return place_counts(model, dict(need))
        except ValueError:
            return None
    return None if found is None else found[0].layout


def _canonical(subset: Sequence[GpuState], rank: Mapping[int, int]) -> bool:
    """GPUs in equal states are interchangeable: of each state, only the lowest-indexed ones are tried."""
    taken: Counter[int] = Counter()
    for gpu in subset:
        if rank[gpu.index] != taken[gpu.state_id]:
            return False
        taken[gpu.state_id] += 1
    return True


def fewest_changes(node: NodeState, demand: PodDemand, frozen: Collection[int] = ()) -> dict[int, list[Profile]] | None:
    """The smallest set of idle static GPUs whose re-partitioning lets ``node`` host ``demand``.

    Returns, per GPU to re-partition, the profiles of the demand it must hold (the rest of the demand
    takes free instances of the other GPUs); None if no set of idle GPUs outside ``frozen`` does. A GPU
    to be re-partitioned is modelled as an empty dynamic GPU (any legal placement): that is exactly
    what a new layout can offer. Smallest first, so the answer changes the fewest GPUs.
    """
    idle = [g for g in node.gpus if g.is_idle and not g.dynamic and g.index not in frozen]
    rank: dict[int, int] = {}
    seen: Counter[int] = Counter()
    for gpu in idle:
        rank[gpu.index] = seen[gpu.state_id]
        seen[gpu.state_id] += 1
    for size in range(1, len(idle) + 1):
        for subset in itertools.combinations(idle, size):
            if not _canonical(subset, rank):
                continue
            trial = node.replace_gpus(GpuState(g.index, g.model, (), dynamic=True) for g in subset)
            result = fit(trial, demand, Allocator.IDEAL)
            if not result.fits_now:
                continue
            changed = {g.index for g in subset}
            required: dict[int, list[Profile]] = {i: [] for i in changed}
            for planned in result.plan:
                if planned.gpu_index in changed:
                    required[planned.gpu_index].append(planned.placement.profile)
            return required
    return None


def _node_key(node: NodeState, changes: int) -> tuple[int, bool, int, str]:
    return (changes, node.is_idle, -node.used_compute, node.name)


def _is_candidate(node: NodeState, config: PlannerConfig) -> bool:
    if config.whole_nodes_only:
        return bool(node.gpus) and node.is_idle and not node.dynamic
    return any(g.is_idle and not g.dynamic and g.mig_enabled for g in node.gpus)


def plan_relayouts(
    nodes: Sequence[NodeState],
    waiting: Sequence[PodDemand],
    weights: Mapping[str, float],
    supply: Mapping[str, int] | None = None,
    config: PlannerConfig = PlannerConfig(),
    frozen: Mapping[str, Collection[int]] | None = None,
    usable: Sequence[Collection[str] | None] | None = None,
) -> list[RelayoutPlan]:
    """Re-layouts of idle GPUs that host ``waiting`` (in order) and then the expected mix.

    ``nodes`` are the candidates (nodes with idle static GPUs, or with ``whole_nodes_only`` wholly idle
    nodes; others are ignored) and ``supply`` the free compute slices per shape in the whole cluster
    (:func:`free_supply`; computed over ``nodes`` if None). ``frozen`` names, per node, idle GPUs that must
    not change (idle for too short a time). A demand that already fits on a candidate, or on a node an
    earlier plan re-partitioned, gets no plan. Of the nodes that can host a demand, the one needing the
    fewest GPUs re-partitioned wins. Never touches a GPU with a used instance. ``usable`` names, per waiting
    demand, the nodes its pod may use (taints, cordons, node affinity: :mod:`.eligibility`); None for any.
    """
    states = {n.name: n for n in nodes if _is_candidate(n, config)}
    current: Counter[str] = Counter(supply) if supply is not None else free_supply(list(states.values()))
    plans: dict[str, RelayoutPlan] = {}
    for position, demand in enumerate(waiting):
        if len(plans) >= config.max_plans:
            break
        allowed = usable[position] if usable is not None else None
        results = [
            (node, evaluate(node, demand, _KUBELET))
            for node in states.values()
            if allowed is None or node.name in allowed
        ]
        if any(r.fits_now for _, r in results):
            continue
        options = []
        for node, result in results:
            if result.verdict is not Verdict.RELAYOUT:
                continue
            planned = plans.get(node.name)
            blocked = {*(frozen or {}).get(node.name, ()), *(g.gpu_index for g in (planned.gpus if planned else ()))}
            required = fewest_changes(node, demand, blocked)
            if required is not None:
                options.append((_node_key(node, len(required)), node, required))
        if not options:
            continue
        _, node, required = min(options, key=lambda option: option[0])
        by_index = {g.index: g for g in node.gpus}
        relayouts = []
        for index, profiles in sorted(required.items()):
            gpu = by_index[index]
            for instance in gpu.instances:  # the GPU's old instances go away with its old layout
                current[gpu.model.shape_of(instance.profile)] -= instance.profile.compute_slices
            layout = choose_layout(gpu.model, profiles, weights, current, config.waste_weight)
            if layout is None:
                break
            for placement in layout:
                current[gpu.model.shape_of(placement.profile)] += placement.profile.compute_slices
            for profile in profiles:
                current[gpu.model.shape_of(profile)] -= profile.compute_slices
            relayouts.append(GpuRelayout(index, layout, config_name_for(gpu.model, layout)))
        else:
            previous = plans.get(node.name)
            plan = RelayoutPlan(
                node.name,
                (*(previous.gpus if previous else ()), *relayouts),
                (*(previous.hosts if previous else ()), demand),
            )
            plans[node.name] = plan
            states[node.name] = RelayoutPlan(node.name, tuple(relayouts), ()).apply(node)
    return list(plans.values())


REBALANCE_MIN_GAIN = 1e-6
"""A GPU changes only when the cost falls by more than this: equal layouts never swap."""


def plan_rebalance(
    nodes: Sequence[NodeState],
    weights: Mapping[str, float],
    supply: Mapping[str, int] | None = None,
    config: PlannerConfig = PlannerConfig(),
    frozen: Mapping[str, Collection[int]] | None = None,
) -> list[RelayoutPlan]:
    """Re-layouts of idle GPUs that bring the cluster's free instances closer to the expected mix.

    :func:`plan_relayouts` serves pods that wait; this serves the ones to come. A layout the demand does
    not use (``all-balanced``'s two 1g.10gb in a cluster of large requests) strands its small instances
    once a pod takes its large one, and no idle GPU is left to re-partition later. Each idle static GPU
    of a candidate (outside ``frozen``) gets the layout :func:`choose_layout` picks against the free
    supply without it, when that lowers the mismatch with the mix plus the dead slices: every change
    lowers that cluster-wide cost, so repeated calls settle instead of cycling. Plans host no pod.
    """
    states = [n for n in nodes if _is_candidate(n, config)]
    current: Counter[str] = Counter(supply) if supply is not None else free_supply(states)
    plans: list[RelayoutPlan] = []
    settled: set[int] = set()  # GPU states that keep their layout against the supply as it is now
    targets: dict[GpuModel, dict[str, float]] = {}  # the mix's shares in each model's slices
    for node in states:
        if len(plans) >= config.max_plans:
            break
        blocked = set((frozen or {}).get(node.name, ()))
        changes = []
        for gpu in node.gpus:
            if not gpu.is_idle or gpu.dynamic or not gpu.mig_enabled or gpu.index in blocked:
                continue
            if gpu.state_id in settled:
                continue
            model = gpu.model
            without = Counter(current)
            for instance in gpu.instances:
                without[model.shape_of(instance.profile)] -= instance.profile.compute_slices
            target = targets.get(model) or targets.setdefault(model, _target_shares(weights, model))
            old = tuple(i.placement for i in gpu.instances)
            found = _best_candidate(model, Counter(), target, without, config.waste_weight)
            if found is None or set(found[0].layout) == set(old):
                settled.add(gpu.state_id)
                continue
            new, new_cost = found[0].layout, found[1]
            if new_cost > _layout_cost(model, old, without, target, config.waste_weight) - REBALANCE_MIN_GAIN:
                settled.add(gpu.state_id)
                continue
            for placement in new:
                without[model.shape_of(placement.profile)] += placement.profile.compute_slices
            current = without
            settled.clear()
            changes.append(GpuRelayout(gpu.index, new, config_name_for(model, new)))
        if changes:
            plans.append(RelayoutPlan(node.name, tuple(changes), ()))
    return plans
