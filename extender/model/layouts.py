"""Valid MIG layouts of one GPU: enumeration of the maximal ones, and placing a layout given by counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from functools import cache

from .caches import CACHES
from .catalog import GpuModel, Profile
from .placement import Placement, PlacementError, free_starts, place_all

Layout = tuple[Placement, ...]


def layout_text(layout: Sequence[Placement]) -> str:
    """``3g.20gb@0 2g.10gb@4 1g.5gb@6``: placements in start order."""
    return " ".join(str(p) for p in sorted(layout, key=lambda p: (p.start, p.profile.name)))


def layout_counts(layout: Iterable[Placement]) -> dict[str, int]:
    """``{profile name: count}`` of a layout, largest profiles first, as mig-parted writes ``mig-devices``."""
    counts = Counter(p.profile for p in layout)
    ordered = sorted(counts, key=lambda p: (-p.compute_slices, -p.memory_slices, p.name))
    return {p.name: counts[p] for p in ordered}


@cache
def maximal_layouts(model: GpuModel, profiles: tuple[Profile, ...]) -> tuple[Layout, ...]:
    """Every maximal layout of ``profiles`` on an empty GPU: no further instance of any of them fits.

    Layouts are sets of placements (the instances' order does not matter), listed largest first.
    With A100-40GB's 1g.5gb, 2g.10gb, 3g.20gb, 4g.20gb and 7g.40gb this gives 19 layouts (14 distinct
    multisets), the count usually quoted for that GPU.
    """
    candidates = sorted(
        (Placement(start, p) for p in profiles for start in p.starts),
        key=lambda c: (c.start, -c.profile.memory_slices, c.profile.name),
    )
    found: list[Layout] = []

    def can_extend(chosen: list[Placement], occupied: int) -> bool:
        counts = Counter(c.profile for c in chosen)
        return any(counts[p] < p.max_instances and free_starts(p, occupied) for p in profiles)

    def extend(index: int, chosen: list[Placement], occupied: int) -> None:
        if index == len(candidates):
            if chosen and not can_extend(chosen, occupied):
                found.append(tuple(chosen))
            return
        candidate = candidates[index]
        count = sum(1 for c in chosen if c.profile is candidate.profile)
        if not (candidate.mask & occupied) and count < candidate.profile.max_instances:
            chosen.append(candidate)
            extend(index + 1, chosen, occupied | candidate.mask)
            chosen.pop()
        extend(index + 1, chosen, occupied)

    extend(0, [], 0)
    return tuple(sorted(found, key=lambda layout: tuple((-p.profile.compute_slices, p.start) for p in layout)))


def place_counts(model: GpuModel, counts: Mapping[Profile, int], occupied: int = 0) -> Layout:
    """Placements for a layout given as counts (as mig-parted configs and allocatable give it).

    The driver chooses real starts itself (mig-parted creates GPU instances without a placement: NVIDIA
    mig-parted ``pkg/mig/config/config.go``); this returns the arrangement that keeps the most placements
    open, which is the estimate the derived layout source uses.
    Raises :class:`PlacementError` naming the layout when the counts cannot all fit on one GPU.
    """
    wanted: list[Profile] = []
    for profile, count in counts.items():
        if count < 0:
            raise PlacementError(f"negative count {count} for {profile.name}")
        if count > profile.max_instances:
            raise PlacementError(
                f"{model.name} allows at most {profile.max_instances} instance(s) of {profile.name}, not {count}"
            )
        wanted.extend([profile] * count)
    placed = place_all(model, tuple(wanted), occupied)
    if placed is None:
        text = " + ".join(f"{n}x{p.name}" for p, n in counts.items() if n)
        raise PlacementError(f"layout {text} does not fit on one {model.name}: the instances overlap")
    return placed


def balanced_counts(model: GpuModel) -> dict[Profile, int]:
    """The GPU Operator's ``all-balanced`` layout: 7-slot GPUs {1g:2, 2g:1, 3g:1}, 4-slot GPUs {1g:2, 2g:1}.

    Per mig-parted's balanced builder the base profile with the most instances is used for each g
    (NVIDIA/mig-parted ``pkg/mig/builder/balanced.go``).
    """
    wanted = {1: 2, 2: 1, 3: 1} if model.compute_slices == 7 else {1: 2, 2: 1}
    counts: dict[Profile, int] = {}
    for g, count in wanted.items():
        candidates = [p for p in model.base_profiles if p.compute_slices == g]
        best = max(candidates, key=lambda p: (p.max_instances, -p.memory_slices))
        counts[best] = count
    return counts


CACHES.register_function("layouts.maximal_layouts", lambda: maximal_layouts)  # per model and profile set: finite
