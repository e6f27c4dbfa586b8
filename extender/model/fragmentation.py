"""Fragmentation after FGD (Weng et al., USENIX ATC'23), applied to MIG slices.

For a GPU state S and a demand distribution D over profile shapes,
``F(S) = sum_p D(p) * (free compute slices of S that a stream of p-requests could not use)``.
A node's F is the sum over its GPUs. The part inside the sum does not depend on D, so it is cached per
GPU state (there are few distinct states) and F is a short dot product.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .caches import CACHES
from .placement import max_added_compute, max_instances
from .state import GpuState

# Named mixes for the simulator and the prior: shares of requests by count, per profile shape (the model's base
# profiles; ``1g.2slot`` is the 2-memory-slice 1g). ``inference`` is heavy in small slices, as inference
# serving is; ``uniform`` weights every shape alike; ``training`` is mostly 7g, as training jobs are.
NAMED_MIXES: dict[str, dict[str, float]] = {
    "inference": {"1g": 0.45, "1g.2slot": 0.10, "2g": 0.20, "3g": 0.15, "4g": 0.05, "7g": 0.05},
    "uniform": {"1g": 1, "1g.2slot": 1, "2g": 1, "3g": 1, "4g": 1, "7g": 1},
    "training": {"1g": 0.05, "2g": 0.10, "3g": 0.20, "4g": 0.15, "7g": 0.50},
}


def parse_mix(text: str) -> dict[str, float]:
    """A mix by name (``inference``) or as ``1g=0.5,3g=0.3,7g=0.2``; raises ValueError naming the problem."""
    if text in NAMED_MIXES:
        return dict(NAMED_MIXES[text])
    if "=" not in text:
        raise ValueError(f"demand mix {text!r} is neither a known name ({', '.join(NAMED_MIXES)}) nor weights")
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        shape, sep, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not sep or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"demand mix entry {part!r} is not shape=weight with a weight >= 0")
        mix[shape.strip()] = weight
    if not mix or sum(mix.values()) <= 0:
        raise ValueError(f"demand mix {text!r} is neither a known name ({', '.join(NAMED_MIXES)}) nor weights")
    return mix


@dataclass
class DecayedCounts:
    """Counts per shape that halve every ``half_life_s``: what was seen recently weighs most."""

    half_life_s: float
    counts: dict[str, float] = field(default_factory=dict)
    _last: float | None = None

    def decay_to(self, now: float) -> None:
        if self._last is not None and now > self._last:
            factor = 0.5 ** ((now - self._last) / self.half_life_s)
            self.counts = {k: v * factor for k, v in self.counts.items() if v * factor > 1e-9}
        if self._last is None or now > self._last:
            self._last = now

    def add(self, shape: str, count: int, now: float) -> None:
        self.decay_to(now)
        self.counts[shape] = self.counts.get(shape, 0.0) + count


@dataclass
class DemandDistribution:
    """D: shares of recent MIG requests per profile shape, decayed over time, blended with a prior.

    The prior acts as ``prior_weight`` pseudo-requests, so a quiet cluster falls back to it and a busy one
    follows what it sees. Time is passed in by the caller (seconds, any monotonic origin).
    """

    prior: Mapping[str, float] = field(default_factory=lambda: dict(NAMED_MIXES["uniform"]))
    prior_weight: float = 20.0
    half_life_s: float = 3600.0
    _seen: DecayedCounts = field(init=False)

    def __post_init__(self) -> None:
        self._seen = DecayedCounts(self.half_life_s)

    def observe(self, shape: str, count: int, now: float) -> None:
        self._seen.add(shape, count, now)

    def weights(self, now: float | None = None) -> dict[str, float]:
        """Normalised shares per shape (they sum to 1)."""
        if now is not None:
            self._seen.decay_to(now)
        prior_total = sum(self.prior.values()) or 1.0
        blended = {k: self.prior_weight * v / prior_total for k, v in self.prior.items()}
        for shape, count in self._seen.counts.items():
            blended[shape] = blended.get(shape, 0.0) + count
        total = sum(blended.values()) or 1.0
        return {k: v / total for k, v in sorted(blended.items()) if v > 0}


_UNUSABLE: dict[int, tuple[tuple[str, float], ...]] = {}
# One entry per GPU state: tens in a fleet of static layouts, ~700 per GPU model in a dynamic one.
_UNUSABLE_LIMIT = 5_000  # worst ~3 MB (~600 B per entry, measured)
CACHES.register_table("fragmentation._UNUSABLE", lambda: _UNUSABLE, lambda: _UNUSABLE_LIMIT)


def unusable_by_shape(gpu: GpuState) -> tuple[tuple[str, float], ...]:
    """Per profile shape: free compute slices of this GPU that a stream of that shape could not use.

    Cached by GPU state (model, instances, use), not by GPU index, so equal GPUs share one entry.
    """
    cached = _UNUSABLE.get(gpu.state_id)
    if cached is None:
        if len(_UNUSABLE) >= _UNUSABLE_LIMIT:
            _UNUSABLE.clear()
        cached = _UNUSABLE[gpu.state_id] = _unusable_by_shape(gpu)
    return cached


def _unusable_by_shape(gpu: GpuState) -> tuple[tuple[str, float], ...]:
    free = gpu.model.compute_slices - gpu.used_compute
    result = []
    for profile in gpu.model.base_profiles:
        if not gpu.mig_enabled:
            usable = 0
        elif gpu.dynamic:
            room = profile.max_instances - gpu.existing_count(profile)
            usable = min(room, max_instances(gpu.model, profile, gpu.occupied)) * profile.compute_slices
        else:
            usable = gpu.free_count(profile) * profile.compute_slices
        result.append((gpu.model.shape_of(profile), float(free - usable)))
    return tuple(result)


def gpu_fragmentation(gpu: GpuState, weights: Mapping[str, float]) -> float:
    return sum(weights.get(shape, 0.0) * unusable for shape, unusable in unusable_by_shape(gpu))


def node_fragmentation(gpus: Iterable[GpuState], weights: Mapping[str, float]) -> float:
    return sum(gpu_fragmentation(g, weights) for g in gpus)


def stranded_compute(gpu: GpuState) -> int:
    """Free compute slices that no instance can use: memory-bound holes, whatever the demand.

    Static GPUs: free compute not covered by free pre-made instances (the layout's dead slices). Dynamic
    GPUs: free compute beyond what the best set of new legal placements takes; an H100 running 3g.40gb at 0
    and at 4 has one such slice until a pod leaves. A GPU with MIG disabled strands nothing (a whole-GPU pod
    takes it when idle).
    """
    if not gpu.mig_enabled:
        return 0
    model = gpu.model
    free = model.compute_slices - gpu.used_compute
    if gpu.dynamic:
        existing = tuple(gpu.existing_count(p) for p in model.base_profiles)
        usable = max_added_compute(model, gpu.occupied, existing)
    else:
        usable = sum(p.compute_slices * gpu.free_count(p) for p in model.base_profiles)
    return max(0, free - usable)
