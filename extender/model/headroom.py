"""Warm headroom: how many placeholder MIG instances of which profiles to keep, so arrivals need not wait.

A pod that finds no room waits for a new node: the autoscaler's delay plus the node's start-up (the *lead
time*). Placeholders of a priority below every real workload hold room that such a pod preempts at once, and
the evicted placeholder, pending in turn, makes the autoscaler start the node while the real pod already runs.

The planner sizes that room from what is asked in one lead time. The demand distribution (shares of recent
requests per profile shape, :class:`~extender.model.fragmentation.DemandDistribution`) gives the shape, the
recent arrival rate (:class:`ArrivalRate`, instances per second) the size: arrivals of each shape over the
lead time are taken as Poisson with mean ``rate x share x lead time``, and each shape gets the count that
covers them with probability ``coverage``. When that is more than the bound (at most ``max_gpus`` GPUs'
compute and ``max_fleet_share`` of the fleet's GPUs), the placeholders kept are those most likely to be
needed: the k-th of a shape is needed when k or more of it arrive, ``P(N >= k)``.

Pure: no Kubernetes, no clock. Shared by the headroom controller and the simulator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist

from .catalog import GpuModel
from .fragmentation import DecayedCounts

# Above this mean the Poisson sums are replaced by the normal approximation (exp(-mean) underflows near 745).
_POISSON_EXACT_UP_TO = 200.0


@dataclass(frozen=True, slots=True)
class HeadroomConfig:
    """How much room to keep warm, and its bounds."""

    lead_time_s: float
    """Seconds from a pod finding no room to a new node hosting it (autoscaler delay plus node start-up)."""
    coverage: float = 0.9
    """Per shape, the probability that the arrivals of one lead time find a placeholder to take."""
    max_gpus: float = 8.0
    """At most this many GPUs' compute slices held by placeholders (0: no headroom)."""
    max_fleet_share: float = 0.1
    """And at most this share of the fleet's GPUs (1: no bound but max_gpus)."""
    size: float = 1.0
    """Multiplies the arrivals expected in one lead time: a knob to trade node-hours against waits."""

    def __post_init__(self) -> None:
        for name, value, low, high in (
            ("lead_time_s", self.lead_time_s, 0.0, math.inf),
            ("coverage", self.coverage, 0.0, 1.0),
            ("max_gpus", self.max_gpus, 0.0, math.inf),
            ("max_fleet_share", self.max_fleet_share, 0.0, 1.0),
            ("size", self.size, 0.0, math.inf),
        ):
            if not low <= value <= high or (name == "coverage" and value in (0.0, 1.0)):
                bounds = "strictly between 0 and 1" if name == "coverage" else f"within {low}..{high}"
                raise ValueError(f"headroom {name}: {value} is not {bounds}")


@dataclass
class ArrivalRate:
    """Recent MIG instances asked per second, per shape: counts decayed with ``half_life_s``.

    A steady stream of ``r`` per second holds ``r x tau`` decayed counts (``tau = half_life / ln 2``); before
    ``tau`` has passed since the first observation the divisor is the time that did pass, weighted alike, so
    the first minutes of a run are not read as a lull.
    """

    half_life_s: float = 1800.0
    _seen: DecayedCounts = field(init=False)
    _first: float | None = None

    def __post_init__(self) -> None:
        if not self.half_life_s > 0:
            raise ValueError(f"arrival rate half-life must be positive, not {self.half_life_s}")
        self._seen = DecayedCounts(self.half_life_s)

    def observe(self, shape: str, count: int, now: float) -> None:
        if self._first is None:
            self._first = now
        self._seen.add(shape, count, now)

    def per_second(self, now: float) -> dict[str, float]:
        """Instances per second per shape, as of ``now``."""
        self._seen.decay_to(now)
        if self._first is None:
            return {}
        tau = self.half_life_s / math.log(2)
        seen = max(0.0, now - self._first)
        window = tau * (1.0 - math.exp(-seen / tau)) if seen > 0 else 0.0
        window = max(window, 1.0)  # a burst at one instant: read over one second, not zero
        return {shape: count / window for shape, count in sorted(self._seen.counts.items())}

    def total_per_second(self, now: float) -> float:
        return sum(self.per_second(now).values())


@dataclass(frozen=True, slots=True)
class HeadroomPlan:
    """Placeholders per profile (largest first), what they hold, and what they were sized from."""

    placeholders: tuple[tuple[str, int], ...]
    compute_slices: int
    budget_slices: int
    expected: tuple[tuple[str, float], ...]
    """Per shape: instances expected to arrive in one lead time (times ``size``)."""
    trimmed: bool
    """The bound cut what coverage asked for."""

    @property
    def count(self) -> int:
        return sum(n for _, n in self.placeholders)

    def by_profile(self) -> dict[str, int]:
        return dict(self.placeholders)

    def whole_gpus(self, model: GpuModel) -> int:
        """Whole GPUs holding as much compute: the same headroom for a shape-blind overprovisioner."""
        return math.ceil(self.compute_slices / model.compute_slices)


def _poisson_cdf(mean: float, k: int) -> float:
    """P(N <= k) for N ~ Poisson(mean)."""
    if k < 0:
        return 0.0
    if mean <= 0:
        return 1.0
    if mean > _POISSON_EXACT_UP_TO:
        return NormalDist(mean, math.sqrt(mean)).cdf(k + 0.5)
    term = math.exp(-mean)
    total = term
    for i in range(1, k + 1):
        term *= mean / i
        total += term
    return min(1.0, total)


def poisson_quantile(mean: float, coverage: float) -> int:
    """The smallest k with P(N <= k) >= coverage, N ~ Poisson(mean)."""
    if mean <= 0:
        return 0
    if mean > _POISSON_EXACT_UP_TO:
        return max(0, math.ceil(NormalDist(mean, math.sqrt(mean)).inv_cdf(coverage) - 0.5))
    k = 0
    while _poisson_cdf(mean, k) < coverage:
        k += 1
    return k


def budget_slices(model: GpuModel, config: HeadroomConfig, fleet_gpus: int) -> int:
    """Compute slices placeholders may hold: the tighter of the two bounds."""
    gpus = min(config.max_gpus, config.max_fleet_share * fleet_gpus) if config.max_fleet_share < 1 else config.max_gpus
    return max(0, math.floor(gpus * model.compute_slices + 1e-9))


def plan_headroom(
    model: GpuModel,
    weights: Mapping[str, float],
    arrivals_per_s: float,
    config: HeadroomConfig,
    fleet_gpus: int,
) -> HeadroomPlan:
    """Placeholders of ``model``'s base profiles for the arrivals of one lead time, within the bounds.

    ``weights``: shares per shape (the demand distribution's weights); ``arrivals_per_s``: MIG instances
    asked per second, all shapes (:meth:`ArrivalRate.total_per_second`); ``fleet_gpus``: GPUs of the fleet
    the headroom is a share of. Shapes the model lacks are left out.
    """
    total = sum(w for w in weights.values() if w > 0) or 1.0
    expected: dict[str, float] = {}
    for profile in model.base_profiles:
        shape = model.shape_of(profile)
        share = weights.get(shape, 0.0)
        if share > 0:
            expected[shape] = arrivals_per_s * config.lead_time_s * config.size * share / total
    # Every placeholder coverage asks for, with the chance that it is needed: the k-th of a shape, P(N >= k).
    candidates: list[tuple[float, int, int, str]] = []
    for order, profile in enumerate(model.base_profiles):
        shape = model.shape_of(profile)
        mean = expected.get(shape, 0.0)
        wanted = poisson_quantile(mean, config.coverage)
        if mean > _POISSON_EXACT_UP_TO:
            tails = [1.0 - _poisson_cdf(mean, k - 1) for k in range(1, wanted + 1)]
        else:
            term = cdf = math.exp(-mean)  # P(N = 0); P(N >= k) = 1 - P(N <= k - 1), summed as k grows
            tails = []
            for k in range(1, wanted + 1):
                tails.append(max(0.0, 1.0 - cdf))
                term *= mean / k
                cdf += term
        for k, tail in enumerate(tails, start=1):
            candidates.append((tail, k, order, profile.name))
    # Most likely first; between equals the earlier of a shape, then the larger profile (base_profiles' order).
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    budget = budget_slices(model, config, fleet_gpus)
    left = budget
    counts: dict[str, int] = {}
    for _, _, _, name in candidates:
        slices = model.profile(name).compute_slices
        if slices <= left:
            counts[name] = counts.get(name, 0) + 1
            left -= slices
    placeholders = tuple((p.name, counts[p.name]) for p in model.base_profiles if counts.get(p.name))
    return HeadroomPlan(
        placeholders,
        budget - left,
        budget,
        tuple(sorted(expected.items())),
        trimmed=sum(counts.values()) < len(candidates),
    )
