"""kube-scheduler's structured allocator, modelled: which devices it gives a pod's claims on one node.

Modelled on k8s.io/dynamic-resource-allocation v0.36.3 ``structured/internal/incubating/allocator_incubating.go``
and ``constraint.go``, the variant kube-scheduler v1.36 selects with its default feature gates (AdminAccess,
PrioritizedList, PartitionableDevices, DeviceTaints, DeviceBindingAndStatus and ConsumableCapacity on; see
``AllocatorFeatures`` in k8s.io/kubernetes ``pkg/scheduler/framework/plugins/dynamicresources``). The search is
Go's, step for step:

- first every request is checked in claim and request order (device class known, ``All`` resolved to the
  matching devices of complete pools, at most 32 devices per claim counting each ``firstAvailable`` request's
  smallest subrequest, constraints known);
- then a depth-first search over claims, requests and the devices each needs: candidates in pool, slice and
  device order; a device is skipped when it is in use (allocated, or picked earlier in this attempt; an
  adminAccess request skips only the devices its own claim picked), when a class or request selector rejects
  it, when its pool's counters would go short (each counter: the set's value minus what every allocated
  device of the pool consumes minus this attempt's picks, checked over the whole pool), when it has an
  untolerated NoSchedule or NoExecute taint, or when a constraint would break. The next device of the same
  request is searched after the last one taken (combinations, not permutations). A dead end undoes the last
  pick and tries the next candidate; the first full solution wins.
- ``firstAvailable`` tries its subrequests in order and keeps the first that completes the whole search; a
  subrequest that would take a claim past 32 results is passed over, as in Go.

Outcomes: ``ALLOCATED`` with each claim's results in Go's order (request name ``req`` or ``req/sub``);
``UNSCHEDULABLE`` when there is no solution (Go's "cannot allocate all claims", or "invalid resource pools
were encountered" when an invalid pool was seen); ``CANNOT_EVALUATE`` with ``scheduler_error`` True when
kube-scheduler itself fails the attempt with an error (unknown DeviceClass, a CEL compile or runtime error, too
many devices, an ``All`` request on an incomplete or invalid pool or against a constraint), and with
``scheduler_error`` False when the answer depends on what this model does not evaluate:

- capacity requests and devices with ``allowMultipleAllocations`` (consumable capacity), and an allocation
  mode the parser did not know (:attr:`DeviceSubRequest.unsupported`);
- devices of a pool with slices selected by ``allNodes`` or ``nodeSelector`` (:attr:`Pool.unsupported`);
- counters of two pools that share a name under different drivers (Go keeps counters by pool name alone,
  so one pool's devices would be checked against the other's counters);
- a search longer than ``max_steps`` (Go stops at the scheduler's 10 s filter timeout instead), or deeper than
  Python's recursion limit (the search recurses once per device picked, as Go's does).

Not modelled, because the records do not carry them: a capacity's ``requestPolicy`` (with consumable
capacity on, Go rejects a device whose capacity value breaks its own policy; only devices that allow
multiple allocations publish policies), and results shared through consumable capacity (the caller passes the
devices allocated whole; see :func:`allocate`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

from ..caches import CACHES
from . import cel
from .types import (
    AllocatedDevice,
    AllocationMode,
    ClaimSpec,
    CounterConsumption,
    Device,
    DeviceClass,
    DeviceConstraint,
    DeviceSubRequest,
    DeviceTaint,
    DeviceToleration,
    Pool,
    TaintEffect,
)

DeviceKey = tuple[str, str, str]
"""(driver, pool, device), as ``AllocatedDevice.key``."""

MAX_RESULTS = 32
"""``resourceapi.AllocationResultsMaxSize``: results per claim."""

DEFAULT_MAX_STEPS = 200_000
"""Search steps (Go's ``allocateOne`` calls) after which the model gives up. A real node answers in a few
hundred; Go's own bound is the 10 s filter timeout."""

_MAX_EXPRESSIONS = 512
"""Distinct CEL expressions whose per-device results one :class:`PreparedPools` keeps before starting over."""


class Result(enum.StrEnum):
    ALLOCATED = "allocated"
    UNSCHEDULABLE = "unschedulable"
    CANNOT_EVALUATE = "cannot-evaluate"


@dataclass(frozen=True, slots=True)
class Outcome:
    result: Result
    reason: str = ""
    claims: tuple[tuple[AllocatedDevice, ...], ...] = ()
    """Per claim, in the order given, its results in Go's order; empty unless ALLOCATED."""
    scheduler_error: bool = False
    """For CANNOT_EVALUATE: True when kube-scheduler fails the attempt with this error itself (the pod is
    retried with backoff), False when the model cannot tell what it would do."""
    steps: int = 0
    """Search steps taken (Go's ``NumAllocateOneInvocations``)."""


class Selector(Protocol):
    """A compiled CEL device selector (``extender.model.dra.cel``)."""

    def matches(self, device: Device, driver: str) -> bool: ...


SelectorCompiler = Callable[[str], Selector]
"""``compile_selector``: raises ``selector_error`` for an expression that does not compile."""


# --- the pools, prepared once per node and reused across pods ---------------------------------------------


@dataclass(slots=True)
class _Candidate:
    """One device the search may pick, with what the hot loop needs precomputed."""

    index: int
    key: DeviceKey
    device: Device
    driver: str
    pool: int
    """Index into ``PreparedPools.pools``."""
    consumes: tuple[tuple[int, int], ...] | None
    """Counter index in the pool's counter vector -> amount in the pool's unit (see :class:`_PoolCounters`);
    None when the device consumes no counters (an empty tuple still makes Go check the pool's counters)."""
    taints: tuple[DeviceTaint, ...]
    """Only NoSchedule and NoExecute taints: the others never prevent allocation."""
    unsupported: str
    """Why reaching this device (not in use, selected) means the model cannot answer."""
    multiple: bool
    """``allowMultipleAllocations``: the model cannot answer once the search reaches it selected."""
    attributes: dict[str, object] | None = None


Amounts = tuple[tuple[int, int], ...]
"""Counter index -> amount in the pool's unit."""


@dataclass(slots=True, eq=False)
class _CounterLayout:
    """The counters of pools that declare the same ones (every node of a GPU model and count: shared), and the
    amounts of each counter consumption read in their terms."""

    names: tuple[tuple[str, str], ...]
    """(counter set, counter) per index."""
    by_set: dict[str, dict[str, int]]
    """Counter set -> counter -> index."""
    scale: int
    read: dict[int, tuple[tuple[CounterConsumption, ...], Amounts]] = field(default_factory=dict)
    """``id(device.consumes)`` -> (that tuple, its amounts). The view shares equal consumption tuples between
    nodes, so each is read once; the entry holds its tuple, so that the identity stays its own."""

    def amounts(self, consumes: tuple[CounterConsumption, ...]) -> Amounts:
        """The consumption per counter index, summed, in the pool's unit; a counter the pool's sets lack is
        skipped, as Go skips it."""
        found = self.read.get(id(consumes))
        if found is not None and found[0] is consumes:
            return found[1]
        summed: dict[int, int] = {}
        scale = self.scale
        for consumption in consumes:
            names = self.by_set.get(consumption.counter_set)
            if names is None:
                continue
            for name, amount in consumption.counters:
                index = names.get(name)
                if index is not None:
                    # scale 1: every denominator is 1 (the usual case), the numerator is the value.
                    value = amount.numerator if scale == 1 else int(amount * scale)
                    summed[index] = summed.get(index, 0) + value
        amounts = tuple(summed.items())
        if len(self.read) >= _AMOUNTS_LIMIT:
            self.read.clear()
        self.read[id(consumes)] = (consumes, amounts)
        return amounts


_LAYOUTS: dict[tuple[tuple[tuple[str, str], ...], int], _CounterLayout] = {}
# One per kind of pool (GPU model and count: the counter sets' names), each with the consumptions of its devices
# (a few hundred: profiles x placements x GPUs).
_LAYOUTS_LIMIT = 256
_AMOUNTS_LIMIT = 8_192
CACHES.register_table("allocator._LAYOUTS", lambda: _LAYOUTS, lambda: _LAYOUTS_LIMIT)


def _layout(names: tuple[tuple[str, str], ...], scale: int) -> _CounterLayout:
    found = _LAYOUTS.get((names, scale))
    if found is None:
        if len(_LAYOUTS) >= _LAYOUTS_LIMIT:
            _LAYOUTS.clear()  # pools laid out keep theirs
        by_set: dict[str, dict[str, int]] = {}
        for index, (set_name, name) in enumerate(names):
            by_set.setdefault(set_name, {})[name] = index
        found = _LAYOUTS[(names, scale)] = _CounterLayout(names, by_set, scale)
    return found


@dataclass(slots=True)
class _PoolCounters:
    """A pool's shared counters as one vector of integers, and each of its devices' consumption of them.

    Quantities are exact fractions; each pool's are multiplied by the least common multiple of their
    denominators (1 for NVIDIA's counters), so that the search adds and compares plain integers.
    """

    layout: _CounterLayout
    values: tuple[int, ...]
    consumers: dict[str, Amounts]
    """Every device of the pool (here or on other nodes) that consumes counters, by name."""

    @property
    def names(self) -> tuple[tuple[str, str], ...]:
        """(counter set, counter) per index."""
        return self.layout.names

    def amounts(self, device: Device) -> Amounts:
        return self.layout.amounts(device.consumes)


@dataclass(slots=True)
class PreparedPools:
    """A node's pools (from :func:`~extender.model.dra.pools.pools_of`) laid out for the search.

    Build it once per node with :func:`prepare` and pass it to every :func:`allocate` for that node until its
    slices change: it keeps each CEL expression's result per device (selectors are pure functions of the
    device), so a second pod with the same claims evaluates no CEL at all.
    """

    pools: tuple[Pool, ...]
    candidates: tuple[_Candidate, ...]
    by_pool: tuple[tuple[_Candidate, ...], ...]
    counters: tuple[_PoolCounters | None, ...]
    any_invalid: bool
    any_unsupported: str
    matches: dict[str, list[object]] = field(default_factory=dict)
    """Expression -> per candidate: True, False, the SelectorError, or None (not evaluated yet)."""
    compiled: dict[str, Selector | Exception] = field(default_factory=dict)
    """Expression -> Selector or the SelectorError its compilation raised."""
    selectable: dict[tuple[tuple[str, ...], tuple[str, ...]], list[bool | None]] = field(default_factory=dict)
    """(class selectors, request selectors) -> per candidate: all hold, or None (not evaluated yet)."""


def prepare(pools: Sequence[Pool]) -> PreparedPools:
    """Lay out ``pools`` (in the allocator's order) for :func:`allocate`."""
    pools = tuple(pools)
    name_count: dict[str, int] = {}
    for pool in pools:
        if _consumes_counters(pool):
            name_count[pool.name] = name_count.get(pool.name, 0) + 1
    candidates: list[_Candidate] = []
    by_pool: list[tuple[_Candidate, ...]] = []
    counters: list[_PoolCounters | None] = []
    for number, pool in enumerate(pools):
        vector = _counters_of(pool) if pool.counter_sets else None
        counters.append(vector)
        shared_name = ""
        if name_count.get(pool.name, 0) > 1:
            shared_name = (
                f"pools named {pool.name} of more than one driver consume counters, which kube-scheduler keeps "
                "by pool name alone"
            )
        mine: list[_Candidate] = []
        if not pool.invalid or pool.unsupported:
            for piece in pool.slices:
                if piece.shared_counters:
                    continue  # buildPool: a slice with counter sets offers no device
                for device in piece.devices:
                    consumes = None
                    if device.consumes:
                        consumes = vector.amounts(device) if vector is not None else ()
                    candidate = _Candidate(
                        index=len(candidates),
                        key=(pool.driver, pool.name, device.name),
                        device=device,
                        driver=pool.driver,
                        pool=number,
                        consumes=consumes,
                        taints=tuple(
                            t for t in device.taints if t.effect in (TaintEffect.NO_SCHEDULE, TaintEffect.NO_EXECUTE)
                        )
                        if device.taints
                        else (),
                        unsupported=pool.unsupported or (shared_name if device.consumes else ""),
                        multiple=device.allow_multiple_allocations,
                    )
                    candidates.append(candidate)
                    mine.append(candidate)
        by_pool.append(tuple(mine))
    return PreparedPools(
        pools=pools,
        candidates=tuple(candidates),
        by_pool=tuple(by_pool),
        counters=tuple(counters),
        any_invalid=any(p.invalid and not p.incomplete for p in pools),
        any_unsupported=next((p.unsupported for p in pools if p.unsupported), ""),
    )


def _consumes_counters(pool: Pool) -> bool:
    return any(d.consumes for s in (*pool.slices, *pool.other_slices) for d in s.devices)


def _counters_of(pool: Pool) -> _PoolCounters:
    names: list[tuple[str, str]] = []
    values: list[Fraction] = []
    for counter_set in pool.counter_sets:
        for name, value in counter_set.counters:
            names.append((counter_set.name, name))
            values.append(value)
    # DeviceSlicesTargetingNode and DeviceSlicesNotTargetingNode: not the devices of a slice with counter sets.
    devices = [d for s in (*pool.slices, *pool.other_slices) if not s.shared_counters for d in s.devices if d.consumes]
    denominators = {v.denominator for v in values}
    # Devices of one GPU consume the same counters tuples as the other GPUs' (the view shares equal ones): each
    # distinct tuple once.
    amounts_of = {id(c.counters): c.counters for d in devices for c in d.consumes}
    denominators.update(a.denominator for counters in amounts_of.values() for _, a in counters)
    scale = math.lcm(*denominators) if denominators else 1
    layout = _layout(tuple(names), scale)
    consumers: dict[str, Amounts] = {}
    for device in devices:
        amounts = layout.amounts(device.consumes)
        if device.name in consumers:  # a name listed twice (an invalid pool): Go subtracts both when allocated
            summed = dict(consumers[device.name])
            for index, amount in amounts:
                summed[index] = summed.get(index, 0) + amount
            amounts = tuple(summed.items())
        consumers[device.name] = amounts
    return _PoolCounters(layout, tuple(v.numerator if scale == 1 else int(v * scale) for v in values), consumers)


# --- the allocation attempt -----------------------------------------------------------------------------


class _SchedulerError(Exception):
    """kube-scheduler's allocator returns an error: the scheduling attempt fails."""


class _Unsupported(Exception):
    """The answer depends on what the model does not evaluate."""


_DONE, _FAIL, _MAX_SIZE = 0, 1, 2
"""allocateOne's outcomes: a full solution; none; ``errAllocationResultMaxSizeExceeded``."""


@dataclass(slots=True)
class _Request:
    """``requestData``: one request, or one subrequest of a firstAvailable request."""

    result_name: str
    base_name: str
    sub_name: str
    sub: DeviceSubRequest
    class_name: str
    class_selectors: tuple[str, ...]
    selectors: tuple[str, ...]
    admin: bool
    tolerations: tuple[DeviceToleration, ...]
    all_mode: bool
    num_devices: int = 0
    all_devices: list[_Candidate] = field(default_factory=list)
    columns: list[tuple[str, list[object], bool, int]] = field(default_factory=list)
    """Per selector, class ones first: expression, its per-candidate results, from the class, its number."""
    selectable: list[bool | None] = field(default_factory=list)
    """Per candidate: all of the class's and the request's selectors hold, or None (not evaluated yet)."""


class _Match:
    """``matchAttributeConstraint``."""

    __slots__ = ("attribute", "count", "names", "value")

    def __init__(self, names: tuple[str, ...], attribute: str) -> None:
        self.names = frozenset(names)
        self.attribute = attribute
        self.value: object = None
        self.count = 0

    def applies(self, base: str, sub: str) -> bool:
        if not self.names:
            return True
        return base in self.names or (bool(sub) and f"{base}/{sub}" in self.names)

    def add(self, base: str, sub: str, candidate: _Candidate) -> bool:
        if not self.applies(base, sub):
            return True
        value = _attribute(candidate, self.attribute)
        if value is None:
            return False
        if self.count == 0:
            self.value = value
            self.count = 1
            return True
        if type(value) is not type(self.value) or value != self.value:
            return False
        self.count += 1
        return True

    def remove(self, base: str, sub: str, candidate: _Candidate) -> None:
        if self.applies(base, sub):
            self.count -= 1


class _Distinct:
    """``distinctAttributeConstraint``, as Go keeps it: one value per request name (the last device's), so
    two devices of one request are compared only with the other requests' latest values."""

    __slots__ = ("attribute", "count", "names", "values")

    def __init__(self, names: tuple[str, ...], attribute: str) -> None:
        self.names = frozenset(names)
        self.attribute = attribute
        self.values: dict[str, object] = {}
        self.count = 0

    def applies(self, base: str, sub: str) -> bool:
        if not self.names:
            return True
        return base in self.names or (bool(sub) and f"{base}/{sub}" in self.names)

    def add(self, base: str, sub: str, candidate: _Candidate) -> bool:
        if not self.applies(base, sub):
            return True
        value = _attribute(candidate, self.attribute)
        if value is None:
            return False
        if self.count == 0:
            self.values[base] = value
            self.count = 1
            return True
        for other in self.values.values():
            if type(other) is type(value) and other == value:
                return False
        self.values[base] = value
        self.count += 1
        return True

    def remove(self, base: str, sub: str, candidate: _Candidate) -> None:
        if self.applies(base, sub):
            self.values.pop(base, None)
            self.count -= 1


_Constraint = _Match | _Distinct


def _attribute(candidate: _Candidate, name: str) -> object:
    """``lookupAttribute``. Records hold attribute names fully qualified (the driver's domain added where the
    slice left it out), so the direct lookup covers Go's driver-domain fallback."""
    attributes = candidate.attributes
    if attributes is None:
        attributes = candidate.attributes = dict(candidate.device.attributes)
    return attributes.get(name)


def _tolerates(toleration: DeviceToleration, taint: DeviceTaint) -> bool:
    """``resourceclaim.ToleratesTaint``: an empty key matches every key, for Equal too."""
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.key and toleration.key != taint.key:
        return False
    if toleration.operator in ("", "Equal"):
        return toleration.value == taint.value
    return toleration.operator == "Exists"


class _Attempt:
    """One ``Allocate`` call: the claims, the state of the search, and the undo of each pick."""

    def __init__(
        self,
        claims: Sequence[ClaimSpec],
        prepared: PreparedPools,
        in_use: Collection[DeviceKey],
        classes: Mapping[str, DeviceClass],
        compiler: SelectorCompiler,
        selector_error: type[Exception],
        max_steps: int,
    ) -> None:
        self.claims = claims
        self.prepared = prepared
        self.candidates = prepared.candidates
        self.in_use = in_use
        self.classes = classes
        self.compiler = compiler
        self.selector_error = selector_error
        self.max_steps = max_steps
        self.steps = 0
        self.requests: list[list[list[_Request]]] = []
        """Per claim, per request: the one request, or its subrequests."""
        self.first_available: list[list[bool]] = []
        self.selected: list[list[int]] = []
        self.constraints: list[list[_Constraint]] = []
        self.results: list[list[AllocatedDevice]] = [[] for _ in claims]
        self.allocating: dict[DeviceKey, set[int]] = {}
        self.room: list[list[int] | None] = [None] * len(prepared.pools)
        """Per pool, once a device of it is checked: each counter's value minus what allocated devices and this
        attempt's picks consume."""
        self.overcommitted: list[bool] = [False] * len(prepared.pools)
        """Per pool: allocated devices consume more than a counter holds (then no device of the pool fits)."""

    # -- checking the requests (the first half of Allocate) --

    def validate(self) -> None:
        for number, claim in enumerate(self.claims):
            least = 0
            claim_requests: list[list[_Request]] = []
            for request in claim.requests:
                if not request.alternatives:
                    raise _Unsupported(f"claim #{number}, request {request.name}: neither exactly nor firstAvailable")
                if request.first_available:
                    subs = [
                        self._request(number, alt, request.name, alt.name, f"{request.name}/{alt.name}")
                        for alt in request.alternatives
                    ]
                    least += min(s.num_devices for s in subs)
                else:
                    subs = [self._request(number, request.alternatives[0], request.name, "", request.name)]
                    least += subs[0].num_devices
                claim_requests.append(subs)
            if least > MAX_RESULTS:
                raise _SchedulerError(
                    f"claim #{number}: number of requested devices {least} exceeds the claim limit of {MAX_RESULTS}"
                )
            self.requests.append(claim_requests)
            self.first_available.append([r.first_available for r in claim.requests])
            self.selected.append([0] * len(claim.requests))
            self.constraints.append([self._constraint(number, i, c) for i, c in enumerate(claim.constraints)])

    def _constraint(self, claim: int, number: int, constraint: DeviceConstraint) -> _Constraint:
        if constraint.match_attribute:
            return _Match(constraint.requests, constraint.match_attribute)
        if constraint.distinct_attribute:
            return _Distinct(constraint.requests, constraint.distinct_attribute)
        raise _SchedulerError(f"claim #{claim}, constraint #{number}: empty constraint (unsupported constraint type?)")

    def _request(self, claim: int, sub: DeviceSubRequest, base: str, sub_name: str, shown: str) -> _Request:
        if not sub.device_class:
            raise _SchedulerError(f"claim #{claim}, request {shown}: missing device class name")
        device_class = self.classes.get(sub.device_class)
        if device_class is None:
            raise _SchedulerError(
                f"claim #{claim}, request {shown}: could not retrieve device class {sub.device_class}: not found"
            )
        if sub.unsupported:
            raise _Unsupported(f"claim #{claim}, request {shown}: {sub.unsupported} is not modelled")
        data = _Request(
            result_name=shown,
            base_name=base,
            sub_name=sub_name,
            sub=sub,
            class_name=device_class.name,
            class_selectors=device_class.selectors,
            selectors=sub.selectors,
            admin=sub.admin_access and not sub_name,
            tolerations=sub.tolerations,
            all_mode=sub.mode is AllocationMode.ALL,
        )
        data.columns = [
            *((e, self._column(e), True, i) for i, e in enumerate(device_class.selectors)),
            *((e, self._column(e), False, i) for i, e in enumerate(sub.selectors)),
        ]
        selectable = self.prepared.selectable
        data.selectable = selectable.setdefault((device_class.selectors, sub.selectors), [None] * len(self.candidates))
        if not data.all_mode:
            data.num_devices = sub.count
            return data
        for pool, candidates in zip(self.prepared.pools, self.prepared.by_pool, strict=True):
            if pool.unsupported:
                raise _Unsupported(f"claim #{claim}, request {shown} asks for all devices: {pool.unsupported}")
            if pool.incomplete:
                raise _SchedulerError(
                    f"claim #{claim}, request {shown}: asks for all devices, but resource pool "
                    f"{pool.driver}/{pool.name} is currently being updated"
                )
            if pool.invalid:
                raise _SchedulerError(
                    f"claim #{claim}, request {shown}: asks for all devices, but resource pool "
                    f"{pool.driver}/{pool.name} is currently invalid"
                )
            for candidate in candidates:
                if self._selectable(claim, data, candidate):
                    if candidate.multiple:
                        raise _Unsupported(f"device {candidate.key[2]} allows multiple allocations")
                    if candidate.unsupported:
                        raise _Unsupported(candidate.unsupported)
                    data.all_devices.append(candidate)
        data.num_devices = len(data.all_devices)
        return data

    def _column(self, expression: str) -> list[object]:
        matches = self.prepared.matches
        column = matches.get(expression)
        if column is None:
            if len(matches) >= _MAX_EXPRESSIONS:
                matches.clear()
                self.prepared.selectable.clear()
            column = matches[expression] = [None] * len(self.candidates)
        return column

    def _selectable(self, claim: int, request: _Request, candidate: _Candidate) -> bool:
        """``isSelectable``: the class selectors, then the request's, each until one is false."""
        index = candidate.index
        for expression, column, from_class, number in request.columns:
            value = column[index]
            if value is None:
                value = column[index] = self._evaluate(expression, candidate)
            if value is True:
                continue
            if value is False:
                return False
            where = f"class {request.class_name}" if from_class else f"claim #{claim}"
            raise _SchedulerError(f"{where}: selector #{number}: CEL error: {value}")
        return True

    def _evaluate(self, expression: str, candidate: _Candidate) -> object:
        compiled = self.prepared.compiled
        selector = compiled.get(expression)
        if selector is None:
            try:
                selector = self.compiler(expression)
            except self.selector_error as exc:
                selector = exc
            compiled[expression] = selector
        if isinstance(selector, Exception):
            return selector
        try:
            return bool(selector.matches(candidate.device, candidate.driver))
        except self.selector_error as exc:
            return exc

    # -- the search (allocateOne) --

    def one(self, claim: int, request: int, sub: int, device: int, in_sub: bool, start: int) -> int:
        self.steps += 1
        if self.steps > self.max_steps:
            raise _Unsupported(f"the search took more than {self.max_steps} steps")
        if claim >= len(self.claims):
            return _DONE
        requests = self.requests[claim]
        if request >= len(requests):
            outcome = self.one(claim + 1, 0, 0, 0, False, 0)
            return _FAIL if outcome == _MAX_SIZE else outcome
        alternatives = requests[request]
        if not in_sub and self.first_available[claim][request]:
            all_exceeded = True
            for number in range(len(alternatives)):
                outcome = self.one(claim, request, number, device, True, 0)
                if outcome == _MAX_SIZE:
                    continue
                all_exceeded = False
                if outcome == _DONE:
                    self.selected[claim][request] = number
                    return _DONE
            return _MAX_SIZE if all_exceeded else _FAIL
        data = alternatives[sub]
        if data.all_mode and not data.all_devices:
            return _FAIL
        if device >= data.num_devices:
            return self.one(claim, request + 1, 0, 0, False, 0)
        if len(self.results[claim]) + data.num_devices - device > MAX_RESULTS:
            return _MAX_SIZE
        if data.all_mode:
            candidate = data.all_devices[device]
            if not self.take(claim, data, candidate, True):
                return _FAIL
            outcome = self.one(claim, request, sub, device + 1, in_sub, 0)
            if outcome != _DONE:
                self.give_back(claim, data, candidate)
            return outcome
        return self._search(claim, request, sub, device, in_sub, start, data)

    def _search(self, claim: int, request: int, sub: int, device: int, in_sub: bool, start: int, data: _Request) -> int:
        """The loop over candidates for one more device of ``data``, from ``start`` on."""
        candidates = self.candidates
        in_use = self.in_use
        allocating = self.allocating
        admin = data.admin
        selectable = data.selectable
        for index in range(start, len(candidates)):
            known = selectable[index]
            if known is False:
                continue  # Go checks "in use" first, but skips it either way
            candidate = candidates[index]
            key = candidate.key
            if candidate.multiple and self._selectable(claim, data, candidate):
                raise _Unsupported(f"device {key[2]} allows multiple allocations")
            if admin:
                if claim in allocating.get(key, ()):
                    continue
            elif key in in_use or allocating.get(key):
                continue
            if known is None:
                # Evaluated when Go first evaluates it (a CEL error raised where Go raises it), then kept.
                known = selectable[index] = self._selectable(claim, data, candidate)
                if not known:
                    continue
            if candidate.unsupported:
                raise _Unsupported(candidate.unsupported)
            if not self.take(claim, data, candidate, False):
                continue
            outcome = self.one(claim, request, sub, device + 1, in_sub, index + 1)
            if outcome == _DONE:
                return _DONE
            self.give_back(claim, data, candidate)
            if outcome == _MAX_SIZE:
                return _MAX_SIZE
        return _FAIL

    def take(self, claim: int, data: _Request, candidate: _Candidate, must: bool) -> bool:
        """``allocateDevice``: in use, counters, taints, constraints; on success the pick is recorded."""
        key = candidate.key
        if data.admin:
            if claim in self.allocating.get(key, ()):
                return False
        elif key in self.in_use or self.allocating.get(key):
            return False
        if candidate.consumes is not None and not self._reserve(candidate):
            return False
        if candidate.taints:
            for taint in candidate.taints:
                if not any(_tolerates(t, taint) for t in data.tolerations):
                    self._release(candidate)
                    return False
        constraints = self.constraints[claim]
        for number, constraint in enumerate(constraints):
            if not constraint.add(data.base_name, data.sub_name, candidate):
                for earlier in reversed(constraints[:number]):
                    earlier.remove(data.base_name, data.sub_name, candidate)
                self._release(candidate)
                if must:
                    raise _SchedulerError(
                        f"claim #{claim}, request {data.result_name}: cannot add device {'/'.join(key)} because a "
                        "claim constraint would not be satisfied"
                    )
                return False
        self.allocating.setdefault(key, set()).add(claim)
        self.results[claim].append(
            AllocatedDevice(data.result_name, candidate.driver, key[1], key[2], admin_access=data.admin)
        )
        return True

    def give_back(self, claim: int, data: _Request, candidate: _Candidate) -> None:
        """``rollbackDevice`` of a recorded pick."""
        self.results[claim].pop()
        self.allocating[candidate.key].discard(claim)
        for constraint in reversed(self.constraints[claim]):
            constraint.remove(data.base_name, data.sub_name, candidate)
        self._release(candidate)

    def _reserve(self, candidate: _Candidate) -> bool:
        """``checkAvailableCounters``: Go adds the device's consumption and keeps it only if no counter of the
        pool is then consumed beyond what is available. Before each pick no counter is (picks that would break
        one are never kept), so the pick breaks one exactly when it takes more than some counter has left,
        unless allocated devices alone already overcommit the pool: then nothing fits."""
        pool = candidate.pool
        room = self.room[pool]
        if room is None:
            room = self._start_counters(pool)
        if self.overcommitted[pool]:
            return False
        consumes = candidate.consumes
        assert consumes is not None
        for index, amount in consumes:
            if room[index] < amount:
                return False
        for index, amount in consumes:
            room[index] -= amount
        return True

    def _release(self, candidate: _Candidate) -> None:
        consumes = candidate.consumes
        if consumes is None:
            return
        room = self.room[candidate.pool]
        assert room is not None
        for index, amount in consumes:
            room[index] += amount

    def _start_counters(self, pool: int) -> list[int]:
        """The pool's counters minus what its allocated devices consume (below zero means overcommitted)."""
        vector = self.prepared.counters[pool]
        room: list[int] = []
        if vector is not None:  # None: a device consuming counters of a pool without sets (invalid, unsupported)
            room = list(vector.values)
            in_use, consumers = self.in_use, vector.consumers
            found = self.prepared.pools[pool]
            driver, name = found.driver, found.name
            # each allocated device of the pool once: from the smaller side (a node's use, or every device)
            if len(in_use) < len(consumers):
                held = [consumers[k[2]] for k in in_use if k[1] == name and k[0] == driver and k[2] in consumers]
            else:
                held = [amounts for device, amounts in consumers.items() if (driver, name, device) in in_use]
            for amounts in held:
                for index, amount in amounts:
                    room[index] -= amount
        self.room[pool] = room
        self.overcommitted[pool] = bool(room) and min(room) < 0
        return room

    def outcome(self) -> tuple[tuple[AllocatedDevice, ...], ...]:
        return tuple(tuple(r) for r in self.results)


def allocate(
    claims: Sequence[ClaimSpec],
    pools: Sequence[Pool] | PreparedPools,
    in_use: Collection[DeviceKey],
    classes: Mapping[str, DeviceClass],
    *,
    compile_selector: SelectorCompiler = cel.compile_selector,
    selector_error: type[Exception] = cel.SelectorError,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> Outcome:
    """What kube-scheduler's allocator does with ``claims`` (the pod's unallocated claims, in its order) on
    the node whose ``pools`` are given (from ``pools_of(slices, node)``, or :func:`prepare`-d once and reused).

    ``in_use``: the keys of every device allocated to any claim in the cluster (or in flight), except
    adminAccess results, as kube-scheduler's claim tracker lists them; a set, for speed. ``classes``: the
    DeviceClasses by name. ``compile_selector`` and ``selector_error``: the CEL module's, unless a test
    substitutes its own.
    """
    prepared = pools if isinstance(pools, PreparedPools) else prepare(pools)
    attempt = _Attempt(claims, prepared, in_use, classes, compile_selector, selector_error, max_steps)
    try:
        attempt.validate()
        outcome = attempt.one(0, 0, 0, 0, False, 0)
    except _SchedulerError as exc:
        return Outcome(Result.CANNOT_EVALUATE, str(exc), scheduler_error=True, steps=attempt.steps)
    except _Unsupported as exc:
        return Outcome(Result.CANNOT_EVALUATE, str(exc), steps=attempt.steps)
    except RecursionError:  # two frames per device picked: hundreds of results across a pod's claims
        reason = "the search went deeper than the interpreter's recursion limit"
        return Outcome(Result.CANNOT_EVALUATE, reason, steps=attempt.steps)
    if outcome == _MAX_SIZE:
        return Outcome(
            Result.CANNOT_EVALUATE, "allocation max size exceeded", scheduler_error=True, steps=attempt.steps
        )
    if outcome == _FAIL:
        reason = "invalid resource pools were encountered" if prepared.any_invalid else "cannot allocate all claims"
        return Outcome(Result.UNSCHEDULABLE, reason, steps=attempt.steps)
    return Outcome(Result.ALLOCATED, claims=attempt.outcome(), steps=attempt.steps)
