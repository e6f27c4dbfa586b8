"""MIGBench's placement model, side by side with the catalog's: profiles, geometry, per-GPU figures, policies.

MIGBench (https://github.com/FouoF/MIG-scheduler-benchmark) models an H100 as 7 GPC slots and a memory sum
(``internal/simulator/simulator.go``, profiles in ``internal/config/config.go`` ``H100Profiles``): a profile
of ``gpc`` slots placed at ``start`` takes slots ``[start, start + gpc)``; it is legal iff ``start`` is one of
its listed starts, the slots are free and the GPU's unused memory (80 GB less the profiles placed) covers the
profile's. There is no memory-slice mask: 3g@0 and 3g@4 (80 GB) leave slot 3 unusable through the sum, and
3g@0 + 1g@3 + 2g@4 + 1g@6 is legal there although the real GPU has no memory slice left for the 1g at 3.

The catalog's geometry (:mod:`.placement`) is the real one: memory slices as a mask. Compute slices sit at
``[start, start + compute_slices)`` on every H100 placement (each profile takes at least as many memory
slices as compute slices from the same start), so both geometries have slot positions and the same
per-GPU figures:

- physical fragmentation: ``(free - longest run of free slots) / free`` (0 on a full GPU);
- stranded capacity: ``(free - pack) / free``, ``pack`` the most slots non-overlapping legal placements of
  the run's profiles could still cover (exhaustive, within the free memory).

MIGBench's policies order every legal (node, GPU, start) by a key and take the first
(``internal/adapter/adapter.go``): first-fit by (node, GPU, start); binpack by the GPU's free slots
ascending, then the same; spread by free slots descending, then the same.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from .caches import CACHES
from .catalog import GpuModel, Profile
from .state import GpuState

SLOTS = 7
"""GPC slots of one MIGBench H100."""
MEMORY_GB = 80
"""Memory of one MIGBench H100."""


@dataclass(frozen=True, slots=True)
class SlotProfile:
    """One profile as MIGBench lists it: name, GPC slots, memory, compute share and legal starts."""

    name: str
    gpc: int
    memory_gb: int
    compute_percent: int
    starts: tuple[int, ...]

    @property
    def memory_mb(self) -> int:
        return self.memory_gb * 1024


# MIGBench's built-in H100-80GB catalog (internal/config/config.go, H100Profiles).
PROFILES: tuple[SlotProfile, ...] = (
    SlotProfile("1g.10gb", 1, 10, 14, (0, 1, 2, 3, 4, 5, 6)),
    SlotProfile("1g.20gb", 1, 20, 14, (0, 1, 2, 3, 4, 5, 6)),
    SlotProfile("2g.20gb", 2, 20, 28, (0, 2, 4)),
    SlotProfile("3g.40gb", 3, 40, 42, (0, 4)),
    SlotProfile("4g.40gb", 4, 40, 57, (0,)),
    SlotProfile("7g.80gb", 7, 80, 100, (0,)),
)
COMMON_NAMES: tuple[str, ...] = ("1g.10gb", "2g.20gb", "3g.40gb", "7g.80gb")
"""The subset HAMi's DynamicMIG and NVIDIA's DRA driver both serve, which MIGBench's control-plane runs use
(``experiment.control-plane.saturated.yaml``)."""
COMMON_PROFILES: tuple[SlotProfile, ...] = tuple(p for p in PROFILES if p.name in COMMON_NAMES)


def _catalog_model(name: str, profiles: Sequence[SlotProfile]) -> GpuModel:
    """``profiles`` as a catalog model: each takes as many memory slices as GPC slots (no memory sum is kept,
    so the slots alone decide), as many instances as its starts allow side by side, no GPU instance profile id,
    and the memory and compute share MIGBench lists as memory and multiprocessors."""
    return GpuModel(
        name=name,
        memory_slices=SLOTS,
        compute_slices=SLOTS,
        profiles=tuple(
            Profile(
                p.name,
                None,
                p.gpc,
                p.gpc,
                len(p.starts),
                p.starts,
                memory_mib=p.memory_mb,
                multiprocessors=p.compute_percent,
            )
            for p in profiles
        ),
        pci_device_ids=(),
        description=f"MIGBench's fake H100: {SLOTS} GPC slots, no memory-slice mask, no memory sum",
    )


MIGBENCH_H100 = _catalog_model("MIGBench-H100", COMMON_PROFILES)
"""The GPU MIGBench's agent publishes for kube-scheduler's DRA allocator (``internal/agent/state.go`` H100State:
the common profiles on 7 slots, where 3g@0 + 1g@3 + 3g@4 is legal). Not in :data:`~.catalog.MODELS`: no real
GPU is this one, and no product name or label names it; :mod:`.dra.migbench_format` publishes and recognises it."""


def ordered(profiles: Sequence[SlotProfile]) -> tuple[SlotProfile, ...]:
    """By (GPC, memory, name): the order MIGBench draws weights in and resolves memory requests in."""
    return tuple(sorted(profiles, key=lambda p: (p.gpc, p.memory_gb, p.name)))


def resolve(profiles: Sequence[SlotProfile], memory_mb: int, min_compute_percent: int = 0) -> SlotProfile | None:
    """The profile a resource-bound job gets: the smallest by (GPC, memory, name) whose memory covers the
    request (and whose compute share covers ``min_compute_percent``, when the trace sets one)."""
    for profile in ordered(profiles):
        if profile.memory_mb >= memory_mb and profile.compute_percent >= min_compute_percent:
            return profile
    return None


def runtime_ms(compute_core_ms: int, compute_percent: int) -> int:
    """Run time of ``compute_core_ms`` of work on a profile with ``compute_percent``: rounded up."""
    return -(-compute_core_ms // compute_percent)


# --- the slot-and-memory-sum geometry --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotGpu:
    """One MIGBench GPU: the slots held (a bitmask) and the memory the profiles on it take."""

    slots: int = 0
    memory_gb: int = 0

    @property
    def free(self) -> int:
        return SLOTS - self.slots.bit_count()

    @property
    def free_memory_gb(self) -> int:
        return MEMORY_GB - self.memory_gb

    def place(self, profile: SlotProfile, start: int) -> SlotGpu:
        return SlotGpu(self.slots | _span(start, profile.gpc), self.memory_gb + profile.memory_gb)

    def remove(self, profile: SlotProfile, start: int) -> SlotGpu:
        return SlotGpu(self.slots & ~_span(start, profile.gpc), self.memory_gb - profile.memory_gb)


def _span(start: int, size: int) -> int:
    return ((1 << size) - 1) << start


def slot_starts(gpu: SlotGpu, profile: SlotProfile) -> tuple[int, ...]:
    """The starts at which ``profile`` is legal on ``gpu`` now (none when its memory does not fit)."""
    if gpu.free_memory_gb < profile.memory_gb:
        return ()
    starts = profile.starts or tuple(range(SLOTS - profile.gpc + 1))  # no list: any start
    return tuple(s for s in starts if s >= 0 and s + profile.gpc <= SLOTS and not (gpu.slots & _span(s, profile.gpc)))


def longest_free_run(held: int, slots: int = SLOTS) -> int:
    """The longest run of consecutive free slots in a mask of ``slots`` slots."""
    best = run = 0
    for position in range(slots):
        if held >> position & 1:
            run = 0
        else:
            run += 1
            best = max(best, run)
    return best


@cache
def slot_pack(held: int, free_memory_gb: int, profiles: tuple[SlotProfile, ...]) -> int:
    """The most slots that non-overlapping legal placements of ``profiles`` could still cover on a GPU with
    ``held`` slots and ``free_memory_gb`` left (every combination tried)."""
    best = 0
    for profile in profiles:
        if profile.memory_gb > free_memory_gb:
            continue
        for start in profile.starts or range(SLOTS - profile.gpc + 1):
            span = _span(start, profile.gpc)
            if start + profile.gpc > SLOTS or held & span:
                continue
            best = max(best, profile.gpc + slot_pack(held | span, free_memory_gb - profile.memory_gb, profiles))
            if best == SLOTS - held.bit_count():
                return best
    return best


# --- the catalog's geometry (memory slices as a mask) ------------------------------------------------------


def compute_mask(gpu: GpuState) -> int:
    """The compute slices the GPU's used instances hold, as slot positions."""
    held = 0
    for instance in gpu.instances:
        if instance.used:
            held |= _span(instance.placement.start, instance.profile.compute_slices)
    if not gpu.mig_enabled and gpu.whole_gpu_used:
        held = _span(0, gpu.model.compute_slices)
    return held


@cache
def catalog_pack(model: GpuModel, occupied: int, profiles: tuple[Profile, ...]) -> int:
    """The most compute slices that non-overlapping legal placements of ``profiles`` could still cover on a
    GPU whose memory slices ``occupied`` are held (every combination tried, lowest start first)."""

    @cache
    def best(position: int, held: int) -> int:
        if position >= model.memory_slices:
            return 0
        result = best(position + 1, held)
        if held >> position & 1:
            return result
        for profile in profiles:
            mask = profile.occupancy(position)
            if (
                position in profile.starts
                and not mask & held
                and position + profile.memory_slices <= model.memory_slices
            ):
                result = max(result, profile.compute_slices + best(position + 1, held | mask))
        return result

    return best(0, occupied)


# --- per-GPU figures ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpuFigures:
    """What MIGBench's metrics read from one GPU at one moment."""

    slots: int
    free: int
    longest_run: int
    pack: int
    memory_used: float
    """Share of the GPU's memory held."""

    @property
    def physical_fragmentation(self) -> float:
        return (self.free - self.longest_run) / self.free if self.free else 0.0

    @property
    def stranded_capacity(self) -> float:
        return (self.free - self.pack) / self.free if self.free else 0.0


def slot_figures(gpu: SlotGpu, profiles: tuple[SlotProfile, ...]) -> GpuFigures:
    return GpuFigures(
        SLOTS,
        gpu.free,
        longest_free_run(gpu.slots),
        slot_pack(gpu.slots, gpu.free_memory_gb, profiles),
        gpu.memory_gb / MEMORY_GB,
    )


def catalog_figures(gpu: GpuState, profiles: tuple[Profile, ...]) -> GpuFigures:
    model = gpu.model
    held = compute_mask(gpu)
    free = model.compute_slices - held.bit_count()
    return GpuFigures(
        model.compute_slices,
        free,
        longest_free_run(held, model.compute_slices),
        catalog_pack(model, gpu.occupied, profiles) if free else 0,
        gpu.occupied.bit_count() / model.memory_slices,
    )


# --- MIGBench's policies --------------------------------------------------------------------------------------


class SlotPolicy(enum.StrEnum):
    FIRST_FIT = "first-fit"
    BINPACK = "binpack"
    SPREAD = "spread"


@dataclass(frozen=True, slots=True, order=True)
class Candidate:
    """One legal placement: node and GPU by position, the start, and the GPU's free slots before it."""

    node: int
    gpu: int
    start: int
    free: int


def choose(policy: SlotPolicy, candidates: Sequence[Candidate]) -> Candidate | None:
    """The candidate the policy takes (its sort key, ties by node, GPU and start), or None."""
    if not candidates:
        return None
    if policy is SlotPolicy.FIRST_FIT:
        return min(candidates, key=lambda c: (c.node, c.gpu, c.start))
    if policy is SlotPolicy.BINPACK:
        return min(candidates, key=lambda c: (c.free, c.node, c.gpu, c.start))
    return min(candidates, key=lambda c: (-c.free, c.node, c.gpu, c.start))


# Keyed by occupied masks, free memory and the run's profile set: finite.
CACHES.register_function("migbench.slot_pack", lambda: slot_pack)
CACHES.register_function("migbench.catalog_pack", lambda: catalog_pack)
