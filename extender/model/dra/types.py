"""The DRA records the model works on, as the ``resource.k8s.io/v1`` API defines them (k8s.io/api
``resource/v1/types.go``), slimmed to what allocation reads.

Names are kept as the API spells them. Attribute and capacity names are stored fully qualified
(``gpu.nvidia.com/profile``): the API lets a driver omit its own domain, and CEL and constraints see the
qualified name (KEP-4381). Parsing from JSON lives in ``extender.view``; everything here is immutable.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from fractions import Fraction


@dataclass(frozen=True, slots=True, order=True)
class Version:
    """A ``version`` attribute (semantic version 2.0.0 text, e.g. ``580.126.20``), kept apart from strings."""

    text: str


AttributeValue = bool | int | str | Version
"""One of the API's DeviceAttribute members: ``bool``, ``int``, ``string``, ``version``."""


class TaintEffect(enum.StrEnum):
    NO_SCHEDULE = "NoSchedule"
    NO_EXECUTE = "NoExecute"
    NONE = "None"


@dataclass(frozen=True, slots=True)
class DeviceTaint:
    key: str
    value: str = ""
    effect: TaintEffect = TaintEffect.NO_SCHEDULE


@dataclass(frozen=True, slots=True)
class DeviceToleration:
    """``DeviceToleration``: operator ``Exists`` or ``Equal`` (the default); an empty key with Exists matches all."""

    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""

    def tolerates(self, taint: DeviceTaint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == taint.key
        return self.key == taint.key and self.value == taint.value


@dataclass(frozen=True, slots=True)
class CounterConsumption:
    """``DeviceCounterConsumption``: what a device takes from one shared counter set of its pool."""

    counter_set: str
    counters: tuple[tuple[str, Fraction], ...]
    """Counter name -> amount, sorted by name."""


@dataclass(frozen=True, slots=True)
class CounterSet:
    name: str
    counters: tuple[tuple[str, Fraction], ...]
    """Counter name -> amount available when nothing is allocated, sorted by name."""


@dataclass(frozen=True, slots=True)
class Device:
    name: str
    attributes: tuple[tuple[str, AttributeValue], ...] = ()
    """Fully qualified attribute name -> value, sorted by name."""
    capacity: tuple[tuple[str, Fraction], ...] = ()
    """Fully qualified capacity name -> value, sorted by name."""
    consumes: tuple[CounterConsumption, ...] = ()
    taints: tuple[DeviceTaint, ...] = ()
    binding_conditions: tuple[str, ...] = ()
    allow_multiple_allocations: bool = False

    def attribute(self, qualified: str) -> AttributeValue | None:
        for name, value in self.attributes:
            if name == qualified:
                return value
        return None


@dataclass(frozen=True, slots=True)
class ResourceSlice:
    """One ResourceSlice of a pool, node-local (``spec.nodeName``) or not (``node_name`` empty)."""

    name: str
    driver: str
    pool: str
    generation: int
    slice_count: int
    node_name: str = ""
    devices: tuple[Device, ...] = ()
    """In the order the slice lists them: the allocator tries them in this order."""
    shared_counters: tuple[CounterSet, ...] = ()


@dataclass(frozen=True, slots=True)
class Pool:
    """A driver's pool at its highest generation, slices sorted by name (the allocator's order from 1.36).

    ``invalid`` names why the allocator would skip it (incomplete, duplicate device names, a consumed counter
    that no set of the pool declares); such a pool offers no device.
    """

    driver: str
    name: str
    generation: int
    slices: tuple[ResourceSlice, ...]
    invalid: str = ""
    counter_sets: tuple[CounterSet, ...] = field(default=(), compare=False)
    incomplete: bool = False
    """True when ``invalid`` is set because slices are missing (the allocator's "being updated", which an
    ``All`` request refuses), False for the other reasons (which it reports as "invalid")."""
    other_slices: tuple[ResourceSlice, ...] = field(default=(), compare=False)
    """Slices of the pool's generation that do not target the node the pools were gathered for: they offer no
    device there, but their allocated devices still take from the pool's shared counters."""
    unsupported: str = ""
    """Non-empty when the pool has a slice without ``spec.nodeName`` and without shared counters (``allNodes``,
    ``nodeSelector`` or per-device node selection): whether its devices are available on the node is not
    modelled, so an answer that depends on them cannot be given."""

    @property
    def devices(self) -> tuple[Device, ...]:
        return tuple(d for s in self.slices for d in s.devices)


class AllocationMode(enum.StrEnum):
    EXACT_COUNT = "ExactCount"
    ALL = "All"


@dataclass(frozen=True, slots=True)
class DeviceSubRequest:
    """One way to satisfy a request: ``exactly``, or one entry of ``firstAvailable`` (then ``name`` is set)."""

    device_class: str
    selectors: tuple[str, ...] = ()
    """CEL expressions, all of which must be true."""
    mode: AllocationMode = AllocationMode.EXACT_COUNT
    count: int = 1
    admin_access: bool = False
    tolerations: tuple[DeviceToleration, ...] = ()
    name: str = ""
    unsupported: str = ""
    """Non-empty when the request uses what this model does not evaluate (e.g. ``capacity.requests``, an
    unknown ``allocationMode``): the field named, so that an answer can say it cannot evaluate the claim."""


@dataclass(frozen=True, slots=True)
class DeviceRequest:
    """A claim's request: ``exactly`` is one alternative, ``firstAvailable`` up to eight tried in order."""

    name: str
    alternatives: tuple[DeviceSubRequest, ...]
    first_available: bool = False


@dataclass(frozen=True, slots=True)
class DeviceConstraint:
    """``requests`` empty means all of the claim's requests; exactly one of the two attributes is set."""

    requests: tuple[str, ...] = ()
    match_attribute: str = ""
    distinct_attribute: str = ""


@dataclass(frozen=True, slots=True)
class AllocatedDevice:
    """One ``status.allocation.devices.results`` entry."""

    request: str
    driver: str
    pool: str
    device: str
    admin_access: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.driver, self.pool, self.device)


@dataclass(frozen=True, slots=True)
class ClaimSpec:
    requests: tuple[DeviceRequest, ...]
    constraints: tuple[DeviceConstraint, ...] = ()


@dataclass(frozen=True, slots=True)
class ResourceClaim:
    namespace: str
    name: str
    spec: ClaimSpec
    uid: str = ""
    allocation: tuple[AllocatedDevice, ...] | None = None
    """None while unallocated."""
    allocated_node: str = ""
    """The node the allocation's nodeSelector pins (``metadata.name In [node]``), if it pins one."""
    reserved_for: tuple[str, ...] = ()
    """UIDs of the pods the claim is reserved for."""


@dataclass(frozen=True, slots=True)
class ClaimTemplate:
    namespace: str
    name: str
    spec: ClaimSpec


@dataclass(frozen=True, slots=True)
class DeviceClass:
    name: str
    selectors: tuple[str, ...] = ()
    extended_resource_name: str = ""
