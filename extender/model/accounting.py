"""Slice accounting: used, free and stranded compute slices per GPU, node and fleet, the largest profile that
still fits, and the fleet's fragmentation ratio.

One counting for every reader: the metrics, ``mig-extender report`` and the simulator. Per GPU the counts are
cached by GPU state; a fleet's sums (:class:`FleetTotals`) are kept node by node, so that a reader holding
them applies only the nodes that changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from .caches import CACHES
from .catalog import GpuModel, Profile
from .fragmentation import stranded_compute, unusable_by_shape
from .placement import max_instances
from .state import Fidelity, GpuState, NodeState


@dataclass(frozen=True, slots=True)
class SliceCounts:
    """One GPU state's compute slices, and what can still be placed on it.

    ``free`` includes ``stranded``: ``capacity == used + free``. ``stranded`` are free compute slices that no
    combination of base-profile instances could use: free minus the most compute slices that the free
    pre-made instances (static GPUs), or the best set of new legal placements (dynamic GPUs), provide.
    """

    capacity: int
    used: int
    free: int
    stranded: int
    largest: Profile | None
    """The base profile with the most compute slices that has a free instance (static) or a free legal
    placement within its instance limit (dynamic); None when none has."""
    free_instances: tuple[tuple[Profile, int], ...]
    """Per base profile: free instances (static), or how many more a stream of that profile could get
    (dynamic). Counts of different profiles on one dynamic GPU are alternatives, not a sum."""
    unusable: tuple[tuple[str, float], ...]
    """Per profile shape: free compute slices a stream of that shape could not use (the model's F terms)."""

    @property
    def largest_slices(self) -> int:
        return self.largest.compute_slices if self.largest is not None else 0

    def fragmentation(self, weights: Mapping[str, float]) -> float:
        return sum(weights.get(shape, 0.0) * value for shape, value in self.unusable)


def _room(gpu: GpuState, profile: Profile) -> int:
    """How many more instances of ``profile`` the GPU could get (a stream of one profile)."""
    if not gpu.mig_enabled:
        return 0
    if gpu.dynamic:
        return min(profile.max_instances - gpu.existing_count(profile), max_instances(gpu.model, profile, gpu.occupied))
    return gpu.free_count(profile)


_COUNTS: dict[int, SliceCounts] = {}
# One entry per GPU state: tens in a fleet of static layouts, ~700 per GPU model in a dynamic one.
_COUNTS_LIMIT = 5_000  # worst ~5.6 MB (~1,110 B per entry, measured)
CACHES.register_table("accounting._COUNTS", lambda: _COUNTS, lambda: _COUNTS_LIMIT)


def slice_counts(gpu: GpuState) -> SliceCounts:
    """The GPU's :class:`SliceCounts`, cached by GPU state (model, instances, use), not by index."""
    cached = _COUNTS.get(gpu.state_id)
    if cached is None:
        if len(_COUNTS) >= _COUNTS_LIMIT:
            _COUNTS.clear()
        cached = _COUNTS[gpu.state_id] = _slice_counts(gpu)
    return cached


def _slice_counts(gpu: GpuState) -> SliceCounts:
    model = gpu.model
    capacity = model.compute_slices
    used = gpu.used_compute
    free = capacity - used
    rooms = tuple((p, _room(gpu, p)) for p in model.base_profiles)
    largest = max((p for p, room in rooms if room > 0), key=lambda p: (p.compute_slices, p.memory_slices), default=None)
    return SliceCounts(
        capacity=capacity,
        used=used,
        free=free,
        stranded=stranded_compute(gpu),
        largest=largest,
        free_instances=rooms,
        unusable=unusable_by_shape(gpu),
    )


def source_of(fidelity: Fidelity) -> str:
    """Where a node's layout was read from, for its fidelity."""
    return {
        Fidelity.EXACT: "node-annotation",
        Fidelity.LAYOUT: "mig-parted-config",
        Fidelity.COUNTS: "allocatable",
        Fidelity.DRA: "resource-slices",
    }[fidelity]


def gpu_mode(gpu: GpuState) -> str:
    if not gpu.mig_enabled:
        return "mig-disabled"
    return "dynamic" if gpu.dynamic else "static"


def node_mode(node: NodeState) -> str:
    modes = {"dynamic" if g.dynamic else "static" for g in node.gpus}
    return modes.pop() if len(modes) == 1 else "mixed"


@dataclass(frozen=True, slots=True)
class ModelSlices:
    """A node's GPUs of one model, added up."""

    model: GpuModel
    gpus: tuple[tuple[int, SliceCounts], ...]
    capacity: int
    used: int
    free: int
    stranded: int
    largest: Profile | None
    unusable: tuple[tuple[str, float], ...]
    """Per shape, summed over the GPUs: F is their dot product with the demand mix."""
    free_instances: tuple[tuple[str, int], ...]
    """Per base profile name, summed over the GPUs (see :attr:`SliceCounts.free_instances`)."""

    @property
    def largest_slices(self) -> int:
        return self.largest.compute_slices if self.largest is not None else 0

    def fragmentation(self, weights: Mapping[str, float]) -> float:
        return sum(weights.get(shape, 0.0) * value for shape, value in self.unusable)


def _model_slices(model: GpuModel, gpus: list[tuple[int, SliceCounts]]) -> ModelSlices:
    unusable: dict[str, float] = {}
    instances: dict[str, int] = {}
    for _, counts in gpus:
        for shape, value in counts.unusable:
            unusable[shape] = unusable.get(shape, 0.0) + value
        for profile, room in counts.free_instances:
            instances[profile.name] = instances.get(profile.name, 0) + room
    largest = max(
        (c.largest for _, c in gpus if c.largest is not None),
        key=lambda p: (p.compute_slices, p.memory_slices),
        default=None,
    )
    return ModelSlices(
        model=model,
        gpus=tuple(gpus),
        capacity=sum(c.capacity for _, c in gpus),
        used=sum(c.used for _, c in gpus),
        free=sum(c.free for _, c in gpus),
        stranded=sum(c.stranded for _, c in gpus),
        largest=largest,
        unusable=tuple(sorted(unusable.items())),
        free_instances=tuple(instances.items()),
    )


@dataclass(frozen=True, slots=True)
class NodeSlices:
    name: str
    fidelity: Fidelity
    mode: str
    strategy: str
    models: tuple[ModelSlices, ...]
    gpu_modes: tuple[tuple[str, str], ...]
    """(model name, GPU mode) per GPU."""

    @property
    def source(self) -> str:
        return source_of(self.fidelity)


def node_slices(node: NodeState) -> NodeSlices:
    """The slice accounting of one node, per GPU model (a node normally has one)."""
    by_model: dict[GpuModel, list[tuple[int, SliceCounts]]] = {}
    for gpu in node.gpus:
        by_model.setdefault(gpu.model, []).append((gpu.index, slice_counts(gpu)))
    return NodeSlices(
        name=node.name,
        fidelity=node.fidelity,
        mode=node_mode(node),
        strategy=str(node.strategy),
        models=tuple(_model_slices(m, gpus) for m, gpus in sorted(by_model.items(), key=lambda kv: kv[0].name)),
        gpu_modes=tuple((g.model.name, gpu_mode(g)) for g in node.gpus),
    )


# --- the fleet ---------------------------------------------------------------------------------------------

_K = TypeVar("_K")


def _bump(table: dict[_K, int], key: _K, by: int) -> None:
    """Count ``by`` more under ``key``; a count that drops to 0 leaves, as if never counted."""
    value = table.get(key, 0) + by
    if value:
        table[key] = value
    else:
        del table[key]


@dataclass
class ModelTotals:
    """The fleet's GPUs of one model: the sums of every node's :class:`ModelSlices` of that model."""

    model: GpuModel
    groups: int = 0
    """Nodes with GPUs of this model."""
    capacity: int = 0
    used: int = 0
    free: int = 0
    stranded: int = 0
    free_instances: dict[str, int] = field(default_factory=dict)
    """Per base profile name, every one of the model's (see :attr:`SliceCounts.free_instances`)."""
    unusable: dict[str, float] = field(default_factory=dict)
    """Per shape: whole slices, so sums and differences are exact and F is one dot product with the mix."""
    by_largest_fit: dict[int, int] = field(default_factory=dict)
    """Nodes by the compute slices of the largest base profile that still fits on their GPUs of this model."""

    def fragmentation(self, weights: Mapping[str, float]) -> float:
        return sum(weights.get(shape, 0.0) * value for shape, value in self.unusable.items())

    def _apply(self, group: ModelSlices, sign: int) -> None:
        self.groups += sign
        self.capacity += sign * group.capacity
        self.used += sign * group.used
        self.free += sign * group.free
        self.stranded += sign * group.stranded
        for name, room in group.free_instances:
            self.free_instances[name] = self.free_instances.get(name, 0) + sign * room
        for shape, value in group.unusable:
            self.unusable[shape] = self.unusable.get(shape, 0.0) + sign * value
        _bump(self.by_largest_fit, group.largest_slices, sign)


@dataclass
class FleetTotals:
    """Sums over the fleet's nodes, kept up to date node by node: :meth:`add` a node's summary, :meth:`remove`
    the one it replaces."""

    models: dict[str, ModelTotals] = field(default_factory=dict)
    nodes: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """GPU nodes by (layout source, fidelity, mode)."""
    gpus: dict[tuple[str, str], int] = field(default_factory=dict)
    """GPUs by (model name, GPU mode)."""

    def add(self, node: NodeSlices) -> None:
        self._apply(node, 1)

    def remove(self, node: NodeSlices) -> None:
        self._apply(node, -1)

    def _apply(self, node: NodeSlices, sign: int) -> None:
        _bump(self.nodes, (node.source, str(node.fidelity), node.mode), sign)
        for key in node.gpu_modes:
            _bump(self.gpus, key, sign)
        for group in node.models:
            name = group.model.name
            totals = self.models.get(name)
            if totals is None:
                totals = self.models[name] = ModelTotals(group.model)
            totals._apply(group, sign)
            if not totals.groups:
                del self.models[name]

    @property
    def free(self) -> int:
        return sum(m.free for m in self.models.values())

    @property
    def stranded(self) -> int:
        return sum(m.stranded for m in self.models.values())

    def fragmentation(self, weights: Mapping[str, float]) -> float:
        """Cluster F: the sum of F over every GPU, in compute slices."""
        return sum(m.fragmentation(weights) for m in self.models.values())

    def fragmentation_ratio(self, weights: Mapping[str, float]) -> float:
        """Cluster F divided by its free compute slices: 0 when every free slice is usable, 1 when none is."""
        free = self.free
        return self.fragmentation(weights) / free if free else 0.0


def fleet_totals(nodes: Iterable[NodeSlices]) -> FleetTotals:
    totals = FleetTotals()
    for node in nodes:
        totals.add(node)
    return totals


def fragmentation_ratio(nodes: Iterable[NodeState], weights: Mapping[str, float]) -> float:
    """:meth:`FleetTotals.fragmentation_ratio` of these nodes."""
    return fleet_totals(node_slices(n) for n in nodes).fragmentation_ratio(weights)
