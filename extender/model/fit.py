"""Does a pod's MIG demand fit on a node, and where: fits now, after a re-layout, or not, and why.

A demand ``{profile: count}`` may spread over the node's GPUs. Each GPU offers a set of count vectors it
can hold (free pre-made instances, or free slices at legal placements); a small search over GPUs decides
whether the vectors add up to the demand. Per-GPU answers are cached by GPU state, so a node check costs
a few dictionary lookups once warm.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from .caches import CACHES
from .catalog import MODELS, GpuModel, Profile, closest_profile_names
from .demand import PodDemand
from .placement import Placement, place_all
from .state import GpuState, MigStrategy, NodeState

Vector = tuple[int, ...]


class Verdict(enum.StrEnum):
    """The answer for one node, from best to worst."""

    FITS_NOW = "fits-now"
    RELAYOUT = "relayout"
    """Fits once GPUs that no pod uses are re-partitioned; used instances stay untouched."""
    WAIT = "wait"
    """The current layout holds it once pods that use instances leave (preemption could help)."""
    LAYOUT_MISMATCH = "layout-mismatch"
    """Only a different layout of GPUs that are busy now would hold it."""
    NEVER = "never"
    """No layout of this node's GPUs can hold it."""
    UNKNOWN_PRODUCT = "unknown-gpu-product"
    """The node's GPU product is not in the catalog: not evaluated, left to kube-scheduler's counts."""
    NOT_EVALUATED = "not-evaluated"
    """The pod's claims use what the DRA model does not evaluate: left to kube-scheduler's own allocator."""

    @property
    def preemption_may_help(self) -> bool:
        return self is Verdict.WAIT


class Allocator(enum.StrEnum):
    """Who picks the GPU and instance inside the node, so that plans predict what really happens."""

    KUBELET = "kubelet"
    """Pre-made instances: the kubelet hands out any free instance of the profile."""
    FIRST_FIT = "first-fit"
    """DRA DynamicMIG: kube-scheduler takes the first fitting device in device order, request by request (the
    demand read as one claim with one request per profile, in the demand's order: :func:`_allocator_plan`)."""
    IDEAL = "ideal"
    """A placement-honouring allocator that takes the placement the policy prefers."""


@dataclass(frozen=True, slots=True)
class PlannedInstance:
    gpu_index: int
    placement: Placement
    relayout: bool = False


@dataclass(frozen=True, slots=True)
class FitResult:
    verdict: Verdict
    reason: str = ""
    plan: tuple[PlannedInstance, ...] = ()
    devices: tuple[tuple[tuple[str, str, str], ...], ...] = ()
    """A DRA fit: per claim, the devices (driver, pool, device) kube-scheduler's allocator would take."""

    @property
    def fits_now(self) -> bool:
        return self.verdict is Verdict.FITS_NOW


def _demand_items(demand: PodDemand, node: NodeState) -> tuple[tuple[str, int], ...] | str:
    """The demand in MIG profile names for this node, or the reason it cannot be read there.

    The single strategy advertises every instance as ``nvidia.com/gpu`` and no ``nvidia.com/mig-*``.
    """
    if node.strategy is MigStrategy.SINGLE:
        if node.single_profile is None:
            return "MIG: node's single-strategy layout is invalid"
        if demand.mig:
            return f"MIG: node serves only {node.single_profile.name} as nvidia.com/gpu (single strategy)"
        return ((node.single_profile.name, demand.gpus),) if demand.gpus else ()
    return _merge_spellings(demand.mig, node)


def _merge_spellings(items: tuple[tuple[str, int], ...], node: NodeState) -> tuple[tuple[str, int], ...]:
    """One entry per profile: two spellings of it (``1g.10gb``, ``MIG-1G.10GB``) in one pod are one demand.

    Left apart, each GPU's free instances would be offered to both spellings, and plans would take
    instances twice. Names are merged when they are the same profile on every model of the node.
    """
    if len(items) < 2:
        return items
    merged: dict[object, tuple[str, int]] = {}
    for name, count in items:
        profiles = tuple(m.find_profile(name) for m in node.models)
        key: object = profiles if any(profiles) else name
        first, total = merged.get(key, (name, 0))
        merged[key] = (first, total + count)
    return items if len(merged) == len(items) else tuple(merged.values())


def _unknown_profile_reason(names: Sequence[str], node: NodeState) -> str | None:
    """A reason when some profile exists on none of the node's GPU models."""
    for name in names:
        if any(m.find_profile(name) for m in node.models):
            continue
        if not any(m.find_profile(name) for m in MODELS):
            return f"MIG: unknown profile {name}{closest_profile_names(name, node.models)}"
        models = "/".join(sorted(m.name for m in node.models))
        return f"MIG: {models} offers no profile {name}"
    return None


# Keyed by (model, occupied mask, demanded profiles and caps): a one-model dynamic fleet of 10,000 nodes under
# six demands needs ~1,200; in front of it, _GPU_VECTORS answers for GPU states already seen.
_VECTORS_ON_MASK_LIMIT = 2_048  # worst ~0.9 MB (~430 B per entry, measured); 28 MB at 13.8 KB per hostile entry
# place_all's own cache is unbounded: the vectors tried here (up to 3,840 per key) must not all land in it.
_place_all_uncached = place_all.__wrapped__


@lru_cache(maxsize=_VECTORS_ON_MASK_LIMIT)
def _vectors_on_mask(
    model: GpuModel, profiles: tuple[Profile | None, ...], caps: Vector, occupied: int
) -> tuple[Vector, ...]:
    """Count vectors (one count per demanded profile, each up to its cap) placeable on ``occupied``."""
    ranges = [range(cap + 1) if profile is not None else range(1) for profile, cap in zip(profiles, caps)]
    found = []
    for vector in itertools.product(*ranges):
        wanted = tuple(p for p, n in zip(profiles, vector) if p is not None for _ in range(n))
        if _place_all_uncached(model, wanted, occupied) is not None:
            found.append(vector)
    return tuple(sorted(found, key=lambda v: -sum(v)))


class _World(enum.Enum):
    NOW = "now"
    RELAYOUT_IDLE = "relayout-idle"
    EMPTIED = "emptied"
    ANY_LAYOUT = "any-layout"


_GPU_VECTORS: dict[tuple[int, tuple[str, ...], Vector, _World], tuple[Vector, ...]] = {}
# GPU states x demands x worlds: ~7,400 for a one-model dynamic fleet of 10,000 nodes under six demands.
_GPU_VECTORS_LIMIT = 30_000  # worst ~9 MB (~290 B per entry, measured)
CACHES.register_table("fit._GPU_VECTORS", lambda: _GPU_VECTORS, lambda: _GPU_VECTORS_LIMIT)
CACHES.register_function("fit._vectors_on_mask", lambda: _vectors_on_mask)


def _gpu_vectors(gpu: GpuState, names: tuple[str, ...], caps: Vector, world: _World) -> tuple[Vector, ...]:
    """What one GPU can hold of the demand in a world; cached by GPU state (GPUs repeat across nodes)."""
    key = (gpu.state_id, names, caps, world)
    found = _GPU_VECTORS.get(key)
    if found is None:
        if len(_GPU_VECTORS) >= _GPU_VECTORS_LIMIT:
            _GPU_VECTORS.clear()
        found = _GPU_VECTORS[key] = _compute_gpu_vectors(gpu, names, caps, world)
    return found


def _compute_gpu_vectors(gpu: GpuState, names: Sequence[str], caps: Vector, world: _World) -> tuple[Vector, ...]:
    profiles = tuple(gpu.model.find_profile(n) for n in names)
    # One GPU holds at most max_instances of a profile, whatever a pod asks: keeps the search small.
    caps = tuple(min(cap, p.max_instances) if p is not None else 0 for p, cap in zip(profiles, caps))
    if world is _World.ANY_LAYOUT or (world is _World.RELAYOUT_IDLE and gpu.is_idle):
        return _vectors_on_mask(gpu.model, profiles, caps, 0)
    if world is _World.EMPTIED:
        gpu = gpu.emptied()
    if not gpu.mig_enabled:
        return ((0,) * len(names),)
    if gpu.dynamic:
        room = tuple(
            min(cap, p.max_instances - gpu.existing_count(p)) if p is not None else 0 for p, cap in zip(profiles, caps)
        )
        return _vectors_on_mask(gpu.model, profiles, room, gpu.occupied)
    bounds = [range(min(cap, gpu.free_count(p)) + 1) if p else range(1) for p, cap in zip(profiles, caps)]
    return tuple(sorted(itertools.product(*bounds), key=lambda v: -sum(v)))


def _assign(options: Sequence[tuple[Vector, ...]], demand: Vector) -> list[Vector] | None:
    """Split ``demand`` over GPUs, one option per GPU, preferring to fill earlier GPUs first."""
    failed: set[tuple[int, Vector]] = set()
    # What GPUs index.. could hold at most, per profile and in instances: a remainder beyond that cannot
    # be placed, whatever the choice. Without this bound an unplaceable many-profile demand (a pod asking
    # 7 each of 6 profiles) explores every combination of the GPUs' options: a minute on one 8-GPU node.
    most: list[tuple[Vector, int]] = [((0,) * len(demand), 0)]
    for vectors in reversed(options):
        caps, total = most[-1]
        widest = tuple(max((v[j] for v in vectors), default=0) for j in range(len(demand)))
        most.append((tuple(map(sum, zip(caps, widest))), total + max(map(sum, vectors), default=0)))
    most.reverse()

    def solve(index: int, remaining: Vector) -> list[Vector] | None:
        if not any(remaining):
            return [(0,) * len(remaining)] * (len(options) - index)
        if index == len(options) or (index, remaining) in failed:
            return None
        caps, total = most[index]
        if sum(remaining) > total or any(r > c for r, c in zip(remaining, caps)):
            return None
        for vector in options[index]:
            if all(v <= r for v, r in zip(vector, remaining)):
                rest = solve(index + 1, tuple(r - v for r, v in zip(remaining, vector)))
                if rest is not None:
                    return [vector, *rest]
        failed.add((index, remaining))
        return None

    return solve(0, demand)


def _gpu_order(gpus: Sequence[GpuState], allocator: Allocator) -> list[GpuState]:
    """The order in which GPUs take the demand: as the node-side allocator would, or best fit."""
    if allocator is Allocator.FIRST_FIT:
        return sorted(gpus, key=lambda g: g.index)
    # Busy GPUs first and the fullest of them first: keeps idle GPUs idle for large profiles or re-layout.
    return sorted(gpus, key=lambda g: (g.is_idle, g.model.compute_slices - g.used_compute, g.index))


def _plan_gpu(
    gpu: GpuState, names: tuple[str, ...], vector: Vector, relayout: bool, allocator: Allocator
) -> tuple[PlannedInstance, ...]:
    wanted: list[Profile] = []
    for name, count in zip(names, vector):
        profile = gpu.model.find_profile(name)
        if count and profile is not None:
            wanted.extend([profile] * count)
    if not wanted:
        return ()
    if not relayout and not gpu.dynamic:
        # Pre-made instances: the kubelet's choice is arbitrary; the estimate takes the highest free ones.
        taken: list[PlannedInstance] = []
        free = [i for i in reversed(gpu.instances) if not i.used]
        for profile in wanted:
            instance = next(i for i in free if i.profile is profile)
            free.remove(instance)
            taken.append(PlannedInstance(gpu.index, instance.placement))
        return tuple(taken)
    occupied = 0 if relayout else gpu.occupied
    strategy = "first-fit" if allocator is Allocator.FIRST_FIT else "most-options"
    placed = place_all(gpu.model, tuple(wanted), occupied, strategy)
    if placed is None:  # cannot happen: the vector came from the same table
        raise AssertionError(f"GPU {gpu.index}: planned vector {vector} does not place")
    return tuple(PlannedInstance(gpu.index, p, relayout) for p in placed)


def _try(
    node: NodeState, names: tuple[str, ...], demand: Vector, world: _World, allocator: Allocator
) -> tuple[PlannedInstance, ...] | None:
    gpus = _gpu_order(node.gpus, allocator)
    options = [_gpu_vectors(g, names, demand, world) for g in gpus]
    assignment = _assign(options, demand)
    if assignment is None:
        return None
    if world in (_World.EMPTIED, _World.ANY_LAYOUT):
        return ()  # hypothetical worlds answer feasibility only: their states are not the node's
    if allocator is Allocator.FIRST_FIT and all(g.dynamic or not g.mig_enabled for g in node.gpus):
        planned = _allocator_plan(node.gpus, names, demand)
        if planned is None:  # cannot happen: the search is exhaustive and the vectors found a solution
            raise AssertionError(f"node {node.name}: {names} x {demand} fits but the allocator's search finds none")
        return planned
    plan: list[PlannedInstance] = []
    for gpu, vector in zip(gpus, assignment):
        # An idle GPU whose free instances already hold its share needs no re-layout.
        relayout = (
            world is _World.RELAYOUT_IDLE and gpu.is_idle and vector not in _gpu_vectors(gpu, names, demand, _World.NOW)
        )
        plan.extend(_plan_gpu(gpu, names, vector, relayout, allocator))
    return tuple(plan)


def _allocator_plan(
    gpus: Sequence[GpuState], names: tuple[str, ...], counts: Vector
) -> tuple[PlannedInstance, ...] | None:
    """kube-scheduler's allocator's first solution on DynamicMIG GPUs, in catalog terms.

    The demand is one claim with one request per profile, in the demand's order (as the claim NVIDIA's
    documentation writes, and as the extended-resource claim of one container orders its requests: by
    resource name). kube-scheduler's allocator (k8s.io/dynamic-resource-allocation, ``allocateOne``) fills the
    requests in order, each device the first free one in device order after the request's previous one: GPUs
    by index (NVIDIA's driver publishes one slice per GPU, slices sorted by name), a profile's placements by
    start (device names sorted); a dead end undoes the last pick and tries the next. A pick is free when its
    memory slices are free and the profile's limit per GPU is not reached (what the driver's counters
    enforce). ``tests/simulate/test_dra_world.py`` checks this plan against the allocator model and
    kube-scheduler's own allocator.
    """
    ordered = sorted((g for g in gpus if g.mig_enabled), key=lambda g: g.index)
    occupied = [g.occupied for g in ordered]
    held: list[dict[Profile, int]] = []
    for gpu in ordered:
        counted: dict[Profile, int] = {}
        for instance in gpu.instances:
            counted[instance.profile] = counted.get(instance.profile, 0) + 1
        held.append(counted)
    # Per request, its devices in device order: (position of the GPU, placement).
    candidates = [
        [
            (position, Placement(start, profile))
            for position, gpu in enumerate(ordered)
            if (profile := gpu.model.find_profile(name)) is not None
            for start in profile.starts
        ]
        for name in names
    ]
    plan: list[PlannedInstance] = []
    failed: set[tuple[object, ...]] = set()

    def search(request: int, taken: int, after: int) -> bool:
        if request == len(names):
            return True
        if taken == counts[request]:
            return search(request + 1, 0, 0)
        key = (request, taken, after, tuple(occupied), tuple(tuple(sorted(h.items(), key=_by_name)) for h in held))
        if key in failed:
            return False
        for number in range(after, len(candidates[request])):
            position, placement = candidates[request][number]
            profile = placement.profile
            if placement.mask & occupied[position] or held[position].get(profile, 0) >= profile.max_instances:
                continue
            occupied[position] |= placement.mask
            held[position][profile] = held[position].get(profile, 0) + 1
            plan.append(PlannedInstance(ordered[position].index, placement))
            if search(request, taken + 1, number + 1):
                return True
            plan.pop()
            held[position][profile] -= 1
            if not held[position][profile]:
                del held[position][profile]
            occupied[position] &= ~placement.mask
        failed.add(key)
        return False

    return tuple(plan) if search(0, 0, 0) else None


def _by_name(item: tuple[Profile, int]) -> str:
    return item[0].name


def fit(node: NodeState, demand: PodDemand, allocator: Allocator = Allocator.KUBELET) -> FitResult:
    """Where ``demand`` fits on ``node`` now, after a re-layout, or why it does not."""
    items = _demand_items(demand, node)
    if isinstance(items, str):
        return FitResult(Verdict.NEVER, items)
    if not items:
        return FitResult(Verdict.FITS_NOW, "no MIG demand")
    if node.unknown_product is not None:
        product = node.unknown_product.product
        return FitResult(Verdict.UNKNOWN_PRODUCT, f"MIG: GPU product {product!r} is not in the catalog: not evaluated")
    if not node.gpus:
        return FitResult(Verdict.NEVER, "MIG: node has no MIG-capable GPU")
    names = tuple(name for name, _ in items)
    counts = tuple(count for _, count in items)
    text = PodDemand(mig=items).text()
    unknown = _unknown_profile_reason(names, node)
    if unknown:
        return FitResult(Verdict.NEVER, unknown)
    plan = _try(node, names, counts, _World.NOW, allocator)
    if plan is not None:
        return FitResult(Verdict.FITS_NOW, "", plan)
    if node.strategy is MigStrategy.MIXED:
        plan = _try(node, names, counts, _World.RELAYOUT_IDLE, allocator)
        if plan is not None:
            return FitResult(Verdict.RELAYOUT, f"MIG: {text} fits only after re-partitioning idle GPUs", plan)
    if _try(node, names, counts, _World.EMPTIED, allocator) is not None:
        kind = "placement" if any(g.dynamic for g in node.gpus) else "instances"
        return FitResult(Verdict.WAIT, f"MIG: not enough free {kind} for {text}")
    if _try(node, names, counts, _World.ANY_LAYOUT, allocator) is not None:
        return FitResult(Verdict.LAYOUT_MISMATCH, f"MIG: {text} needs a different MIG layout on busy GPUs")
    return FitResult(Verdict.NEVER, f"MIG: {text} exceeds what this node's GPUs can ever hold")
