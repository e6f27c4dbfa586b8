"""Placements of GPU instances on one GPU, with occupancy as a bitmask of memory slices.

NVML's rule (``nvmlGpuInstancePlacement_t`` and ``nvmlDeviceGetGpuInstancePossiblePlacements_v2`` in
NVIDIA/go-nvml ``pkg/nvml/nvml.h``): an instance at ``start`` occupies memory slices ``[start, start + size)``;
it is legal iff ``start`` is one of the profile's placements and the interval overlaps no occupied slice.
Compute slices need no separate counter on these geometries (derived from the profile tables: no profile
takes fewer memory slices than compute slices, and on 8-slice GPUs, which have 7 compute slices, the eighth
memory slice is reachable only by profiles that take more), so the whole state of a GPU for placement
purposes is one small integer.

Everything here is pure and cached: a GPU has at most 2**8 occupancy states, so answers are table lookups
after their first computation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

from .caches import CACHES
from .catalog import GpuModel, Profile


class PlacementError(ValueError):
    """A placement that breaks NVML's rules, named with the slices in conflict."""


@dataclass(frozen=True, slots=True, order=True)
class Placement:
    """One instance of ``profile`` at memory slice ``start``."""

    start: int
    profile: Profile

    @property
    def mask(self) -> int:
        return self.profile.occupancy(self.start)

    def __str__(self) -> str:
        return f"{self.profile.name}@{self.start}"


def is_legal(profile: Profile, start: int, occupied: int) -> bool:
    """True if ``profile`` may be placed at ``start`` on a GPU whose occupied slices are ``occupied``."""
    return start in profile.starts and not (profile.occupancy(start) & occupied)


def free_starts(profile: Profile, occupied: int) -> tuple[int, ...]:
    """The legal starts of ``profile`` that are still free."""
    return tuple(s for s in profile.starts if not (profile.occupancy(s) & occupied))


def occupancy_of(model: GpuModel, placements: Sequence[Placement]) -> int:
    """The occupancy mask of ``placements``, checking every NVML rule; raises :class:`PlacementError`."""
    occupied = 0
    counts: dict[Profile, int] = {}
    for placement in placements:
        profile = placement.profile
        if model.find_profile(profile.name) is not profile:
            raise PlacementError(f"profile {profile.name} does not belong to GPU model {model.name}")
        if placement.start not in profile.starts:
            raise PlacementError(
                f"{placement} is not a legal placement on {model.name}: {profile.name} may start only at "
                f"{profile.placements_text()}"
            )
        if placement.mask & occupied:
            slices = [i for i in range(model.memory_slices) if (placement.mask & occupied) >> i & 1]
            raise PlacementError(f"{placement} overlaps memory slices {slices} already occupied on {model.name}")
        counts[profile] = counts.get(profile, 0) + 1
        if counts[profile] > profile.max_instances:
            raise PlacementError(f"{model.name} allows at most {profile.max_instances} instance(s) of {profile.name}")
        occupied |= placement.mask
    return occupied


# --- Placement strategies -------------------------------------------------------------------------------
# A strategy picks one start among the free legal starts of a profile. Strategies are looked up by name
# so that the simulator and benchmarks can compare them; an unknown name fails when settings are built.

StartChooser = Callable[[GpuModel, Profile, int], int | None]


@cache
def surviving_placements(model: GpuModel, occupied: int) -> int:
    """How many (profile, start) placements of base profiles are still legal on ``occupied``."""
    return sum(len(free_starts(p, occupied)) for p in model.base_profiles)


def choose_most_options(model: GpuModel, profile: Profile, occupied: int) -> int | None:
    """The free start that leaves the most legal placements of every base profile open.

    Ties go to the highest start: the top of the GPU is reachable by fewer profiles (slice 7 only by
    the 2-slot 1g, 3g@4 and 7g), so filling it first keeps 4g and 3g@0 possible.
    """
    return _most_options(model, profile, occupied)


@cache
def _most_options(model: GpuModel, profile: Profile, occupied: int) -> int | None:
    starts = free_starts(profile, occupied)
    if not starts:
        return None
    return max(starts, key=lambda s: (surviving_placements(model, occupied | profile.occupancy(s)), s))


def choose_first_fit(model: GpuModel, profile: Profile, occupied: int) -> int | None:
    """The lowest free start, as NVIDIA's DRA allocator and simple schedulers take it."""
    starts = free_starts(profile, occupied)
    return starts[0] if starts else None


START_CHOOSERS: dict[str, StartChooser] = {
    "most-options": choose_most_options,
    "first-fit": choose_first_fit,
}


def start_chooser(name: str) -> StartChooser:
    try:
        return START_CHOOSERS[name]
    except KeyError:
        raise ValueError(f"unknown placement strategy {name!r}; known: {', '.join(sorted(START_CHOOSERS))}") from None


# --- Placing several instances on one GPU -----------------------------------------------------------------


def _placements_of(model: GpuModel, wanted: tuple[Profile, ...], occupied: int) -> Iterator[tuple[Placement, ...]]:
    """Every way to place all of ``wanted`` (sorted, largest first) on a GPU with ``occupied`` slices."""
    if not wanted:
        yield ()
        return
    head, rest = wanted[0], wanted[1:]
    for start in free_starts(head, occupied):
        placed = Placement(start, head)
        for tail in _placements_of(model, rest, occupied | placed.mask):
            # Instances of one profile are interchangeable: keep their starts ascending to skip permutations.
            if tail and tail[0].profile is head and tail[0].start < start:
                continue
            yield (placed, *tail)


def _largest_first(profiles: Sequence[Profile]) -> tuple[Profile, ...]:
    return tuple(sorted(profiles, key=lambda p: (-p.memory_slices, -p.compute_slices, p.name)))


# Keys are (model, profiles wanted, occupied mask, strategy): finite, but plans for many demands over many
# masks would fill an unbounded cache for good.
_PLACE_ALL_LIMIT = 32_768


@lru_cache(maxsize=_PLACE_ALL_LIMIT)
def place_all(
    model: GpuModel, wanted: tuple[Profile, ...], occupied: int, strategy: str = "most-options"
) -> tuple[Placement, ...] | None:
    """Place every profile of ``wanted`` on one GPU, or None if they cannot all fit.

    ``most-options`` searches every arrangement and keeps the one that leaves the most placements open;
    ``first-fit`` places largest first, each at its lowest free start, with a full search as fallback so
    that a feasible set is never reported infeasible.
    """
    ordered = _largest_first(wanted)
    if strategy == "first-fit":
        placed: list[Placement] = []
        mask = occupied
        for profile in ordered:
            start = choose_first_fit(model, profile, mask)
            if start is None:
                break
            placed.append(Placement(start, profile))
            mask |= profile.occupancy(start)
        else:
            return tuple(placed)
        return next(_placements_of(model, ordered, occupied), None)
    if strategy != "most-options":
        start_chooser(strategy)  # raises with the list of known names
    best: tuple[Placement, ...] | None = None
    best_key: tuple[int, tuple[int, ...]] = (-1, ())
    for option in _placements_of(model, ordered, occupied):
        after = occupied
        for placement in option:
            after |= placement.mask
        key = (surviving_placements(model, after), tuple(sorted((p.start for p in option), reverse=True)))
        if key > best_key:
            best, best_key = option, key
    return best


@cache
def max_added_compute(model: GpuModel, occupied: int, existing: tuple[int, ...]) -> int:
    """The most compute slices new base-profile instances could take on ``occupied`` (a small exact search).

    ``existing`` counts instances per base profile (in ``model.base_profiles`` order), for their limits.
    Placements are chosen by increasing start: at each free memory slice, leave it or start one there.
    Less than the free compute when the free memory slices cannot all be reached: a 3g.40gb at 0 on an
    H100 takes 4 of 8 memory slices for 3 of 7 compute slices, and the 7th is lost until it leaves.
    """
    profiles = model.base_profiles

    @cache
    def best(position: int, counts: tuple[int, ...]) -> int:
        if position >= model.memory_slices:
            return 0
        if occupied >> position & 1:
            return best(position + 1, counts)
        result = best(position + 1, counts)
        for k, profile in enumerate(profiles):
            if position not in profile.starts or counts[k] >= profile.max_instances:
                continue
            if profile.occupancy(position) & occupied or position + profile.memory_slices > model.memory_slices:
                continue
            after = (*counts[:k], counts[k] + 1, *counts[k + 1 :])
            result = max(result, profile.compute_slices + best(position + profile.memory_slices, after))
        return result

    return best(0, existing)


@cache
def max_instances(model: GpuModel, profile: Profile, occupied: int) -> int:
    """How many more instances of ``profile`` fit on ``occupied`` (a stream of requests of one profile)."""
    count = 0
    # The legal starts of one profile never overlap each other, so every free start is one more instance.
    for start in profile.starts:
        if not (profile.occupancy(start) & occupied):
            count += 1
    return min(count, profile.max_instances)


CACHES.register_function("placement.place_all", lambda: place_all)
# The unbounded ones are keyed by GPU model and occupied mask (256 masks on an 8-slice GPU): finite.
CACHES.register_function("placement.surviving_placements", lambda: surviving_placements)
CACHES.register_function("placement._most_options", lambda: _most_options)
CACHES.register_function("placement.max_added_compute", lambda: max_added_compute)
CACHES.register_function("placement.max_instances", lambda: max_instances)
