"""GPU and node state as the scheduler sees them: instances, which are used, and how well it is known."""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from operator import attrgetter
from typing import TYPE_CHECKING

from .caches import CACHES
from .catalog import GpuModel, Profile
from .demand import GPU_RESOURCE, MIG_RESOURCE_PREFIX, PodDemand
from .placement import Placement, occupancy_of

if TYPE_CHECKING:
    from .dra.inventory import Inventory

_INTERNED: dict[tuple[object, ...], int] = {}
_NEXT_ID = itertools.count()
# Live keys: one per distinct node state (<= 10,000 on a 10,000-node cluster) and per GPU state (far fewer).
_INTERN_LIMIT = 50_000  # worst ~24 MB: ~220 B per node-state key, ~470 B per GPU-state key (measured)
CACHES.register_table("state._INTERNED", lambda: _INTERNED, lambda: _INTERN_LIMIT)
_INDEX = attrgetter("index")
_STATE_ID = attrgetter("state_id")


def intern_key(key: tuple[object, ...]) -> int:
    """A small integer standing for ``key``: hashing an int is cheap, hashing a nested tuple is not.

    Ids are never reused: when the table is cleared (it is bounded, for a process that runs for weeks of
    churn), states built afterwards get new ids, and caches keyed by old ids simply stop being hit.
    """
    found = _INTERNED.get(key)
    if found is None:
        if len(_INTERNED) >= _INTERN_LIMIT:
            _INTERNED.clear()
        found = _INTERNED[key] = next(_NEXT_ID)
    return found


# Validated occupancy per instance layout: the same few layouts recur on every node (in any use).
_OCCUPANCY_LIMIT = 4_096  # worst ~1.5 MB (a tuple of up to 7 placements and an int per entry)


@lru_cache(maxsize=_OCCUPANCY_LIMIT)
def _occupancy(model: GpuModel, placements: tuple[Placement, ...]) -> int:
    """``occupancy_of``, checked once per model and layout; raises PlacementError like it (not cached)."""
    return occupancy_of(model, placements)


CACHES.register_function("state._occupancy", lambda: _occupancy)


class Fidelity(enum.StrEnum):
    """How exactly a node's GPU state is known."""

    EXACT = "exact"
    """Per-GPU instances with placements and use, published by a node agent."""
    LAYOUT = "derived-layout"
    """Layout from the node's ``nvidia.com/mig.config`` in the mig-parted config; use and placement estimated."""
    COUNTS = "derived-counts"
    """Only allocatable counts per profile; GPU assignment and placement estimated."""
    DRA = "dra"
    """Per-GPU devices from the DRA driver's ResourceSlices, use from ResourceClaim allocations: exact."""


class MigStrategy(enum.StrEnum):
    """The NVIDIA device plugin's MIG strategy on the node."""

    MIXED = "mixed"
    SINGLE = "single"


@dataclass(frozen=True, slots=True)
class Instance:
    placement: Placement
    used: bool

    @property
    def profile(self) -> Profile:
        return self.placement.profile


@dataclass(frozen=True, slots=True)
class GpuState:
    """One GPU: its model and MIG instances.

    ``dynamic`` GPUs create instances when they are allocated (NVIDIA DRA DynamicMIG): only used
    instances exist, and any free legal placement can be taken. Static GPUs carry pre-made instances
    from a mig-parted layout, free or used. A GPU with MIG disabled has no instances; it is in use when
    a whole-GPU pod holds it.
    """

    index: int
    model: GpuModel
    instances: tuple[Instance, ...] = ()
    dynamic: bool = False
    mig_enabled: bool = True
    whole_gpu_used: bool = False
    key: tuple[object, ...] = field(init=False, repr=False, compare=False)
    """Everything that decides placements on this GPU (not its index): equal keys, equal answers."""
    state_id: int = field(init=False, repr=False, compare=False)
    occupied: int = field(init=False, repr=False, compare=False)
    """Memory slices held by any instance (free pre-made instances block new ones too)."""
    used_compute: int = field(init=False, repr=False, compare=False)
    is_idle: bool = field(init=False, repr=False, compare=False)
    """No used instance and no whole-GPU pod: the GPU may be re-partitioned."""

    def __post_init__(self) -> None:
        # Validates (raises PlacementError) and gives the occupancy; the derived fields are read on hot paths.
        object.__setattr__(self, "occupied", _occupancy(self.model, tuple(i.placement for i in self.instances)))
        if self.mig_enabled:
            used = sum(i.profile.compute_slices for i in self.instances if i.used)
        else:
            used = self.model.compute_slices if self.whole_gpu_used else 0
        object.__setattr__(self, "used_compute", used)
        object.__setattr__(self, "is_idle", not self.whole_gpu_used and not any(i.used for i in self.instances))
        instances = tuple(sorted(self.instances, key=lambda i: (i.placement.start, i.profile.name)))
        object.__setattr__(self, "instances", instances)
        object.__setattr__(
            self,
            "key",
            (
                self.model.name,
                self.dynamic,
                self.mig_enabled,
                self.whole_gpu_used,
                tuple((i.profile.name, i.placement.start, i.used) for i in instances),
            ),
        )
        object.__setattr__(self, "state_id", intern_key(self.key))

    def free_count(self, profile: Profile) -> int:
        return sum(1 for i in self.instances if not i.used and i.profile is profile)

    def existing_count(self, profile: Profile) -> int:
        return sum(1 for i in self.instances if i.profile is profile)

    def with_instances(self, instances: tuple[Instance, ...]) -> GpuState:
        """The same GPU with other instances (``dataclasses.replace`` without its cost: on every pod's path)."""
        return GpuState(self.index, self.model, instances, self.dynamic, self.mig_enabled, self.whole_gpu_used)

    def with_used(self, placement: Placement) -> GpuState:
        """The state after an instance at ``placement`` is taken by a pod."""
        if self.dynamic:
            return self.with_instances((*self.instances, Instance(placement, used=True)))
        for position, instance in enumerate(self.instances):
            if instance.placement == placement and not instance.used:
                taken = (*self.instances[:position], Instance(placement, True), *self.instances[position + 1 :])
                return self.with_instances(taken)
        raise ValueError(f"GPU {self.index} has no free instance {placement}")

    def emptied(self) -> GpuState:
        """The GPU with no pods: every instance free (dynamic GPUs drop their instances).

        A dynamic GPU held whole (its full-GPU device allocated: ``mig_enabled=False``, ``whole_gpu_used``) can
        take MIG instances again once that pod leaves.
        """
        if self.dynamic:
            return replace(self, instances=(), mig_enabled=True, whole_gpu_used=False)
        return replace(
            self, instances=tuple(Instance(i.placement, False) for i in self.instances), whole_gpu_used=False
        )


@dataclass(frozen=True, slots=True)
class UnknownProduct:
    """A node whose ``nvidia.com/gpu.product`` names no catalog model: its GPUs are counted, not modelled.

    Placements cannot be evaluated without the model's geometry, so the node is left to kube-scheduler's own
    NodeResourcesFit: allocatable counts minus what the pods on it request (``free``).
    """

    product: str
    free: tuple[tuple[str, int], ...]
    """Resource name -> allocatable minus requests of bound and assumed pods, sorted by name."""

    def counts_hold(self, demand: PodDemand) -> bool:
        """Whether kube-scheduler's counts admit ``demand`` on the node."""
        free = dict(self.free)
        wanted = [(MIG_RESOURCE_PREFIX + name, count) for name, count in demand.mig]
        if demand.gpus:
            wanted.append((GPU_RESOURCE, demand.gpus))
        return all(free.get(resource, 0) >= count for resource, count in wanted)


@dataclass(frozen=True, slots=True)
class NodeState:
    """A node's GPUs and what is known about them."""

    name: str
    gpus: tuple[GpuState, ...]
    fidelity: Fidelity = Fidelity.LAYOUT
    strategy: MigStrategy = MigStrategy.MIXED
    single_profile: Profile | None = None
    warnings: tuple[str, ...] = ()
    unknown_product: UnknownProduct | None = None
    """Set when the GPU product is not in the catalog (``gpus`` is then empty)."""
    devices: Inventory | None = field(default=None, repr=False, compare=False)
    """A DRA node's devices (NVIDIA's DRA driver), which claims are allocated from."""
    state_id: int = field(init=False, repr=False, compare=False)
    """Equal for nodes whose GPUs (in index order) and strategy are equal: their fits are equal too."""
    dynamic: bool = field(init=False, repr=False, compare=False)
    """Some GPU creates instances on allocation (DRA DynamicMIG)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "dynamic", any(g.dynamic for g in self.gpus))
        # One flat tuple (indices, then ids): a third of the memory of (index, id) pairs, and built by C-level maps.
        single = self.single_profile.name if self.single_profile else None
        # A DRA node's answers depend on its devices (names, attributes, taints), not only on its GPUs' state:
        # each inventory is a state of its own.
        devices = None if self.devices is None else self.devices.version
        gpus = (*map(_INDEX, self.gpus), *map(_STATE_ID, self.gpus))
        key = (self.strategy, single, self.unknown_product, devices, *gpus)
        object.__setattr__(self, "state_id", intern_key(key))

    @property
    def models(self) -> frozenset[GpuModel]:
        return frozenset(g.model for g in self.gpus)

    @property
    def total_compute(self) -> int:
        return sum(g.model.compute_slices for g in self.gpus)

    @property
    def used_compute(self) -> int:
        return sum(g.used_compute for g in self.gpus)

    @property
    def is_idle(self) -> bool:
        return all(g.is_idle for g in self.gpus)

    def replace_gpus(self, gpus: Iterable[GpuState]) -> NodeState:
        updated = {g.index: g for g in gpus}
        return replace(self, gpus=tuple(updated.get(g.index, g) for g in self.gpus))

    def with_used(self, taken: Iterable[tuple[int, Placement]]) -> NodeState:
        """The state after pods take instances at (GPU index, placement): a fit's plan applied."""
        gpus = {g.index: g for g in self.gpus}
        for index, placement in taken:
            gpus[index] = gpus[index].with_used(placement)
        return replace(self, gpus=tuple(gpus[g.index] for g in self.gpus))
