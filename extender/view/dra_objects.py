"""The DRA records of ``extender.model.dra.types`` from ``resource.k8s.io/v1`` JSON as the API server serves it.

Field names are those of k8s.io/api ``resource/v1/types.go`` (v0.36): ResourceSlice, ResourceClaim,
ResourceClaimTemplate and DeviceClass. Only what allocation reads is kept:

- attribute and capacity names are qualified with the slice's driver when they carry no domain (the API's
  ``QualifiedName`` rule: "Names which do not include the domain prefix are assumed to be part of the
  driver's domain");
- attributes are the scalar members (``int``, ``bool``, ``string``, ``version``); the list members of the
  alpha DRAListTypeAttributes gate (``ints``, ``bools``, ``strings``, ``versions``) are left out, so a
  selector that reads one finds no such attribute;
- a request that uses what the model does not evaluate (``capacity.requests``, an allocation mode other than
  ``ExactCount`` and ``All``) is kept, with :attr:`DeviceSubRequest.unsupported` naming the field;
- an allocation's node is read from the node selector the scheduler writes (``metadata.name In [node]``, or
  the ``kubernetes.io/hostname`` label in the same form); any other selector pins no one node.

An object that breaks the API's own rules raises :class:`DraObjectError`, whose message names the object
(kind and name) and the field.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any, NoReturn, TypeVar

from ..model.caches import CACHES
from ..model.dra.quantity import QuantityError, quantity_of
from ..model.dra.types import (
    AllocatedDevice,
    AllocationMode,
    AttributeValue,
    ClaimSpec,
    ClaimTemplate,
    CounterConsumption,
    CounterSet,
    Device,
    DeviceClass,
    DeviceConstraint,
    DeviceRequest,
    DeviceSubRequest,
    DeviceTaint,
    DeviceToleration,
    ResourceClaim,
    ResourceSlice,
    TaintEffect,
    Version,
)

HOSTNAME_LABEL = "kubernetes.io/hostname"
_SCALAR_ATTRIBUTES = ("int", "bool", "string", "version")
_LIST_ATTRIBUTES = ("ints", "bools", "strings", "versions")
_T = TypeVar("_T")


class DraObjectError(ValueError):
    """A ``resource.k8s.io/v1`` object the API would not hold; the message names the object and the field."""


class _Reader:
    """Reads one object: its kind and name for messages, and the values its devices share (one object each)."""

    def __init__(self, kind: str, raw: Any) -> None:
        self.kind = kind
        self.name = "?"
        self.namespace = "default"
        self.namespaced = False
        self._shared: dict[Any, Any] = {}
        self._quantities: dict[Any, Fraction] = {}
        self._memo: dict[tuple[str, Any], Any] = {}
        if not isinstance(raw, Mapping):
            self.fail("", f"must be an object, not {type(raw).__name__}")
        metadata = raw.get("metadata")
        if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str) or not metadata["name"]:
            self.fail("metadata.name", "is missing")
        namespace = metadata.get("namespace")
        self.namespace = sys.intern(namespace) if isinstance(namespace, str) and namespace else "default"
        self.name = str(metadata["name"])
        self.uid = str(metadata.get("uid") or "")

    def fail(self, where: str, problem: str) -> NoReturn:
        name = f"{self.namespace}/{self.name}" if self.namespaced else self.name
        raise DraObjectError(f"{self.kind} {name}: {where + ': ' if where else ''}{problem}")

    def share(self, value: _T) -> _T:
        """One object for equal values within this object (a GPU's MIG devices repeat most attributes)."""
        return self._shared.setdefault(value, value)  # type: ignore[no-any-return]

    def memo(self, what: str, raw: Any, build: Callable[[], _T]) -> _T:
        """``build()`` once per distinct JSON map ``raw`` of this object (devices repeat their attributes,
        capacities and counters): keyed on the JSON itself, which hashes far faster than the parsed values."""
        key = _frozen(raw)
        if key is None:
            return build()
        found = self._memo.get((what, key))
        if found is None:
            found = self._memo[(what, key)] = build()
        return found

    # --- typed fields -------------------------------------------------------------------------------

    def mapping(self, parent: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> Mapping[str, Any]:
        value = parent.get(key)
        if value is None:
            if required:
                self.fail(_join(where, key), "is missing")
            return {}
        if not isinstance(value, Mapping):
            self.fail(_join(where, key), f"must be an object, not {_shown(value)}")
        return value

    def items(self, parent: Mapping[str, Any], key: str, where: str) -> list[Any]:
        value = parent.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(_join(where, key), f"must be a list, not {_shown(value)}")
        return value

    def objects(self, parent: Mapping[str, Any], key: str, where: str) -> list[tuple[str, Mapping[str, Any]]]:
        found = []
        for position, item in enumerate(self.items(parent, key, where)):
            at = f"{_join(where, key)}[{position}]"
            if not isinstance(item, Mapping):
                self.fail(at, f"must be an object, not {_shown(item)}")
            found.append((at, item))
        return found

    def string(self, parent: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str:
        value = parent.get(key)
        if value is None or value == "":
            if required:
                self.fail(_join(where, key), "is missing")
            return ""
        if not isinstance(value, str):
            self.fail(_join(where, key), f"must be a string, not {_shown(value)}")
        return value

    def strings(self, parent: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
        values = self.items(parent, key, where)
        for position, value in enumerate(values):
            if not isinstance(value, str):
                self.fail(f"{_join(where, key)}[{position}]", f"must be a string, not {_shown(value)}")
        return tuple(map(sys.intern, values))

    def integer(self, parent: Mapping[str, Any], key: str, where: str, *, default: int | None = None) -> int:
        value = parent.get(key)
        if value is None and default is not None:
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(_join(where, key), "is missing" if value is None else f"must be an integer, not {_shown(value)}")
        return value

    def flag(self, parent: Mapping[str, Any], key: str, where: str) -> bool:
        value = parent.get(key)
        if value is None:
            return False
        if not isinstance(value, bool):
            self.fail(_join(where, key), f"must be true or false, not {_shown(value)}")
        return value

    def quantity(self, value: Any, where: str) -> Fraction:
        """``quantity_of``, parsed once per distinct value within this object (a slice repeats a few dozen)."""
        key = (type(value), value) if isinstance(value, (str, int, float)) else None
        found = self._quantities.get(key) if key is not None else None
        if found is None:
            try:
                found = quantity_of(value)
            except QuantityError as exc:
                self.fail(where, str(exc))
            if key is not None:
                found = self._quantities[key] = self.share(found)
        return found

    def amounts(
        self, raw: Mapping[str, Any], key: str, where: str, driver: str = ""
    ) -> tuple[tuple[str, Fraction], ...]:
        """``map[string]Counter`` or ``map[QualifiedName]DeviceCapacity`` (``{name: {value: quantity}}``), sorted
        by name; names qualified with ``driver`` when it is given (capacities)."""
        source = self.mapping(raw, key, where)
        frozen = _frozen(source)
        if frozen is None:
            return self._amounts(source, _join(where, key), driver)
        memo_key = ("amounts", driver, frozen)
        found = _SHARED.get(memo_key)
        if found is None:
            found = self._amounts(source, _join(where, key), driver)
            _remember(memo_key, found)
        return found

    def _amounts(self, source: Mapping[str, Any], where: str, driver: str) -> tuple[tuple[str, Fraction], ...]:
        found = []
        for name, counter in source.items():
            at = f"{where}.{name}"
            if not isinstance(counter, Mapping) or "value" not in counter:
                self.fail(at, "must be an object with a value")
            qualified = _qualified(driver, str(name)) if driver else sys.intern(str(name))
            found.append(self.share((qualified, self.quantity(counter["value"], f"{at}.value"))))
        return self.share(tuple(sorted(found, key=_first)))


def _first(pair: tuple[str, Any]) -> str:
    return pair[0]


def _frozen(raw: Any) -> Any:
    """A hashable copy of a JSON map of one-member maps of scalars (``{name: {string: "x"}}``, ``{name: {value:
    "1Gi"}}``: attributes, capacities, counters); None for any other shape, which is then parsed unmemoised.

    Values other than strings carry their type, so that ``1``, ``1.0`` and ``true`` stay apart.
    """
    if not isinstance(raw, Mapping):
        return None
    items: list[tuple[Any, ...]] = []
    for name, value in raw.items():
        if type(value) is not dict or len(value) != 1:
            return None
        ((member, scalar),) = value.items()
        if type(scalar) is str:
            items.append((name, member, scalar))
        elif type(scalar) in (int, bool, float):
            items.append((name, member, type(scalar), scalar))
        else:
            return None
    return tuple(items)


# Capacities, counters and counter consumptions repeat across every node of a GPU model (a profile at a placement
# consumes the same on each): one parsed tuple each, process-wide, keyed on the JSON. Distinct values: models x
# profiles x placements (x GPU minors for consumptions, which name the counter set), a few thousand.
_SHARED: dict[tuple[Any, ...], Any] = {}
_SHARED_LIMIT = 8_192
CACHES.register_table("dra_objects._SHARED", lambda: _SHARED, lambda: _SHARED_LIMIT)


def _remember(key: tuple[Any, ...], value: Any) -> None:
    if len(_SHARED) >= _SHARED_LIMIT:  # a bound on a pathological stream; real clusters have few values
        _SHARED.clear()
    _SHARED[key] = value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _qualified(driver: str, name: str) -> str:
    return sys.intern(name if "/" in name else f"{driver}/{name}")


def _guarded(kind: str, raw: Any, parse: Any) -> Any:
    try:
        return parse(_Reader(kind, raw), raw)
    except RecursionError:  # a value nested ~1,000 deep (JSON parsers allow that much)
        name = raw.get("metadata", {}).get("name") if isinstance(raw, Mapping) else None
        raise DraObjectError(f"{kind} {name or '?'}: a value nested too deeply") from None


# --- ResourceSlice ------------------------------------------------------------------------------------


def parse_resource_slice(obj: Any) -> ResourceSlice:
    """A ResourceSlice: its pool, node, devices in the order listed, and shared counter sets."""
    result: ResourceSlice = _guarded("ResourceSlice", obj, _resource_slice)
    return result


def _resource_slice(r: _Reader, raw: Mapping[str, Any]) -> ResourceSlice:
    spec = r.mapping(raw, "spec", "", required=True)
    driver = sys.intern(r.string(spec, "driver", "spec", required=True))
    pool = r.mapping(spec, "pool", "spec", required=True)
    generation = r.integer(pool, "generation", "spec.pool", default=0)
    count = r.integer(pool, "resourceSliceCount", "spec.pool")
    if count < 1:
        r.fail("spec.pool.resourceSliceCount", f"must be at least 1, not {count}")
    devices = tuple(_device(r, driver, item, at) for at, item in r.objects(spec, "devices", "spec"))
    counter_sets = tuple(
        CounterSet(sys.intern(r.string(item, "name", at, required=True)), r.amounts(item, "counters", at))
        for at, item in r.objects(spec, "sharedCounters", "spec")
    )
    seen: set[str] = set()
    for position, device in enumerate(devices):
        if device.name in seen:
            r.fail(f"spec.devices[{position}].name", f"{device.name!r} is listed twice")
        seen.add(device.name)
    return ResourceSlice(
        name=r.name,
        driver=driver,
        pool=sys.intern(r.string(pool, "name", "spec.pool", required=True)),
        generation=generation,
        slice_count=count,
        node_name=sys.intern(r.string(spec, "nodeName", "spec")),
        devices=devices,
        shared_counters=counter_sets,
    )


def _device(r: _Reader, driver: str, raw: Mapping[str, Any], where: str) -> Device:
    source = r.mapping(raw, "attributes", where)
    attributes = r.memo("attributes", source, lambda: _attributes(r, driver, source, f"{where}.attributes"))
    return Device(
        name=sys.intern(r.string(raw, "name", where, required=True)),
        attributes=attributes,
        capacity=r.amounts(raw, "capacity", where, driver),
        consumes=_consumes(r, raw, where),
        taints=r.share(tuple(_taint(r, item, at) for at, item in r.objects(raw, "taints", where))),
        binding_conditions=r.share(r.strings(raw, "bindingConditions", where)),
        allow_multiple_allocations=r.flag(raw, "allowMultipleAllocations", where),
    )


def _consumes(r: _Reader, raw: Mapping[str, Any], where: str) -> tuple[CounterConsumption, ...]:
    """``consumesCounters``, one tuple per distinct list process-wide (equal on every node of a GPU model)."""
    items = raw.get("consumesCounters")
    if not items:
        return ()
    key: Any = None
    if isinstance(items, list) and all(isinstance(i, Mapping) and isinstance(i.get("counterSet"), str) for i in items):
        frozen = [(i["counterSet"], _frozen(i.get("counters"))) for i in items]
        if all(f is not None and len(i) == 2 for (_, f), i in zip(frozen, items)):
            key = ("consumes", tuple(frozen))
    found = _SHARED.get(key) if key is not None else None
    if found is None:
        found = tuple(
            r.share(
                CounterConsumption(
                    sys.intern(r.string(item, "counterSet", at, required=True)), r.amounts(item, "counters", at)
                )
            )
            for at, item in r.objects(raw, "consumesCounters", where)
        )
        if key is not None:
            _remember(key, found)
    return found


def _attributes(
    r: _Reader, driver: str, source: Mapping[str, Any], where: str
) -> tuple[tuple[str, AttributeValue], ...]:
    found = []
    for name, value in source.items():
        parsed = _attribute(r, value, f"{where}.{name}")
        if parsed is not None:
            found.append(r.share((_qualified(driver, str(name)), parsed)))
    return r.share(tuple(sorted(found, key=_first)))


def _attribute(r: _Reader, raw: Any, where: str) -> AttributeValue | None:
    """One DeviceAttribute; None for a list member (``ints``...), which the records do not hold."""
    if not isinstance(raw, Mapping):
        r.fail(where, f"must be an object, not {_shown(raw)}")
    present = [k for k in (*_SCALAR_ATTRIBUTES, *_LIST_ATTRIBUTES) if raw.get(k) is not None]
    if len(present) != 1:
        r.fail(where, "must have exactly one of int, bool, string, version (or ints, bools, strings, versions)")
    member = present[0]
    value = raw[member]
    if member in _LIST_ATTRIBUTES:
        if not isinstance(value, list):
            r.fail(f"{where}.{member}", f"must be a list, not {_shown(value)}")
        return None
    if member == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            r.fail(f"{where}.int", f"must be an integer, not {_shown(value)}")
        return value
    if member == "bool":
        if not isinstance(value, bool):
            r.fail(f"{where}.bool", f"must be true or false, not {_shown(value)}")
        return value
    if not isinstance(value, str):
        r.fail(f"{where}.{member}", f"must be a string, not {_shown(value)}")
    return Version(sys.intern(value)) if member == "version" else sys.intern(value)


def _taint(r: _Reader, raw: Mapping[str, Any], where: str) -> DeviceTaint:
    effect = r.string(raw, "effect", where, required=True)
    try:
        parsed = TaintEffect(effect)
    except ValueError:
        r.fail(f"{where}.effect", f"{effect!r} is not NoSchedule, NoExecute or None")
    return DeviceTaint(
        key=sys.intern(r.string(raw, "key", where, required=True)),
        value=sys.intern(r.string(raw, "value", where)),
        effect=parsed,
    )


# --- ResourceClaim, ResourceClaimTemplate ------------------------------------------------------------


def parse_resource_claim(obj: Any) -> ResourceClaim:
    """A ResourceClaim: its requests and constraints, and the allocation and reservations of its status."""
    result: ResourceClaim = _guarded("ResourceClaim", obj, _resource_claim)
    return result


def parse_claim_template(obj: Any) -> ClaimTemplate:
    """A ResourceClaimTemplate: the claim spec (``spec.spec``) each pod's claim is made from."""
    result: ClaimTemplate = _guarded("ResourceClaimTemplate", obj, _claim_template)
    return result


def _resource_claim(r: _Reader, raw: Mapping[str, Any]) -> ResourceClaim:
    r.namespaced = True
    spec = _claim_spec(r, r.mapping(raw, "spec", "", required=True), "spec")
    status = r.mapping(raw, "status", "")
    allocation: tuple[AllocatedDevice, ...] | None = None
    node = ""
    if status.get("allocation") is not None:
        raw_allocation = r.mapping(status, "allocation", "status")
        devices = r.mapping(raw_allocation, "devices", "status.allocation")
        allocation = tuple(
            _result(r, item, at) for at, item in r.objects(devices, "results", "status.allocation.devices")
        )
        node = _pinned_node(r, raw_allocation.get("nodeSelector"), "status.allocation.nodeSelector")
    reserved = tuple(
        r.string(item, "uid", at, required=True) for at, item in r.objects(status, "reservedFor", "status")
    )
    return ResourceClaim(
        namespace=r.namespace,
        name=r.name,
        spec=spec,
        uid=r.uid,
        allocation=allocation,
        allocated_node=node,
        reserved_for=reserved,
    )


def _claim_template(r: _Reader, raw: Mapping[str, Any]) -> ClaimTemplate:
    r.namespaced = True
    outer = r.mapping(raw, "spec", "", required=True)
    return ClaimTemplate(
        r.namespace, r.name, _claim_spec(r, r.mapping(outer, "spec", "spec", required=True), "spec.spec")
    )


def _claim_spec(r: _Reader, raw: Mapping[str, Any], where: str) -> ClaimSpec:
    at = _join(where, "devices")
    devices = r.mapping(raw, "devices", where)
    requests = tuple(_request(r, item, item_at) for item_at, item in r.objects(devices, "requests", at))
    names = [q.name for q in requests]
    for position, name in enumerate(names):
        if name in names[:position]:
            r.fail(f"{at}.requests[{position}].name", f"{name!r} is used twice")
    constraints = tuple(_constraint(r, item, item_at) for item_at, item in r.objects(devices, "constraints", at))
    return ClaimSpec(requests, constraints)


def _request(r: _Reader, raw: Mapping[str, Any], where: str) -> DeviceRequest:
    name = r.string(raw, "name", where, required=True)
    exactly = raw.get("exactly")
    first = raw.get("firstAvailable")
    if (exactly is None) == (first is None):
        r.fail(where, "must have exactly one of exactly and firstAvailable")
    if exactly is not None:
        return DeviceRequest(name, (_subrequest(r, r.mapping(raw, "exactly", where), f"{where}.exactly", exact=True),))
    alternatives = tuple(_subrequest(r, item, at, exact=False) for at, item in r.objects(raw, "firstAvailable", where))
    if not alternatives:
        r.fail(f"{where}.firstAvailable", "must list at least one subrequest")
    return DeviceRequest(name, alternatives, first_available=True)


def _subrequest(r: _Reader, raw: Mapping[str, Any], where: str, *, exact: bool) -> DeviceSubRequest:
    unsupported: list[str] = []
    mode_text = r.string(raw, "allocationMode", where) or AllocationMode.EXACT_COUNT.value
    try:
        mode = AllocationMode(mode_text)
    except ValueError:
        mode = AllocationMode.EXACT_COUNT
        unsupported.append(f"{where}.allocationMode {mode_text!r}")
    count = 1
    if mode is AllocationMode.EXACT_COUNT:
        count = r.integer(raw, "count", where, default=0) or 1
        if count < 0:
            r.fail(f"{where}.count", f"must be greater than zero, not {count}")
    capacity = r.mapping(raw, "capacity", where)
    if r.mapping(capacity, "requests", f"{where}.capacity"):
        unsupported.append(f"{where}.capacity.requests")
    return DeviceSubRequest(
        device_class=sys.intern(r.string(raw, "deviceClassName", where, required=True)),
        selectors=_selectors(r, raw, where),
        mode=mode,
        count=count,
        admin_access=r.flag(raw, "adminAccess", where) if exact else False,
        tolerations=tuple(_toleration(r, item, at) for at, item in r.objects(raw, "tolerations", where)),
        name="" if exact else r.string(raw, "name", where, required=True),
        unsupported="; ".join(unsupported),
    )


def _selectors(r: _Reader, raw: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """``selectors[].cel.expression``; a selector must be a CEL one (the only kind v1 defines)."""
    found = []
    for at, item in r.objects(raw, "selectors", where):
        cel = r.mapping(item, "cel", at, required=True)
        found.append(r.string(cel, "expression", f"{at}.cel", required=True))
    return tuple(found)


def _toleration(r: _Reader, raw: Mapping[str, Any], where: str) -> DeviceToleration:
    operator = r.string(raw, "operator", where) or "Equal"
    if operator not in ("Equal", "Exists"):
        r.fail(f"{where}.operator", f"{operator!r} is not Equal or Exists")
    return DeviceToleration(
        key=r.string(raw, "key", where),
        operator=operator,
        value=r.string(raw, "value", where),
        effect=r.string(raw, "effect", where),
    )


def _constraint(r: _Reader, raw: Mapping[str, Any], where: str) -> DeviceConstraint:
    match = r.string(raw, "matchAttribute", where)
    distinct = r.string(raw, "distinctAttribute", where)
    if bool(match) == bool(distinct):
        r.fail(where, "must have exactly one of matchAttribute and distinctAttribute")
    return DeviceConstraint(r.strings(raw, "requests", where), sys.intern(match), sys.intern(distinct))


def _result(r: _Reader, raw: Mapping[str, Any], where: str) -> AllocatedDevice:
    return AllocatedDevice(
        request=r.string(raw, "request", where, required=True),
        driver=sys.intern(r.string(raw, "driver", where, required=True)),
        pool=sys.intern(r.string(raw, "pool", where, required=True)),
        device=sys.intern(r.string(raw, "device", where, required=True)),
        admin_access=r.flag(raw, "adminAccess", where),
    )


def _pinned_node(r: _Reader, raw: Any, where: str) -> str:
    """The one node a node selector names in the form the scheduler writes, else ``""``.

    kube-scheduler's allocator writes ``nodeSelectorTerms: [{matchFields: [{key: metadata.name, operator: In,
    values: [node]}]}]`` (k8s.io/dynamic-resource-allocation ``structured``); the hostname label in the same
    form is read too.
    """
    if raw is None:
        return ""
    if not isinstance(raw, Mapping):
        r.fail(where, f"must be an object, not {_shown(raw)}")
    terms = raw.get("nodeSelectorTerms")
    if not isinstance(terms, list) or len(terms) != 1 or not isinstance(terms[0], Mapping):
        return ""
    term = terms[0]
    fields = term.get("matchFields") or []
    expressions = term.get("matchExpressions") or []
    if not isinstance(fields, list) or not isinstance(expressions, list) or len(fields) + len(expressions) != 1:
        return ""
    requirement = (fields or expressions)[0]
    key = "metadata.name" if fields else HOSTNAME_LABEL
    if (
        isinstance(requirement, Mapping)
        and requirement.get("key") == key
        and requirement.get("operator") == "In"
        and isinstance(requirement.get("values"), list)
        and len(requirement["values"]) == 1
        and isinstance(requirement["values"][0], str)
    ):
        return sys.intern(requirement["values"][0])
    return ""


# --- DeviceClass --------------------------------------------------------------------------------------


def parse_device_class(obj: Any) -> DeviceClass:
    """A DeviceClass: its CEL selectors and the extended resource it stands for, if any."""
    result: DeviceClass = _guarded("DeviceClass", obj, _device_class)
    return result


def _device_class(r: _Reader, raw: Mapping[str, Any]) -> DeviceClass:
    spec = r.mapping(raw, "spec", "")
    return DeviceClass(
        name=r.name,
        selectors=_selectors(r, spec, "spec"),
        extended_resource_name=r.string(spec, "extendedResourceName", "spec"),
    )
