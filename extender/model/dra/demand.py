"""The ResourceClaims a pod needs allocated, as kube-scheduler's DynamicResources plugin gathers them.

Modelled on k8s.io/kubernetes v1.36.3 ``pkg/scheduler/framework/plugins/dynamicresources`` (``PreFilter``,
``foreachPodResourceClaim``; ``extendeddynamicresources.go``) and k8s.io/dynamic-resource-allocation v0.36.3
``resourceclaim.Name``:

- ``spec.resourceClaims`` are taken in order. ``resourceClaimName`` names the claim. ``resourceClaimTemplateName``
  means the claim the resourceclaim controller generates, named by the pod's ``status.resourceClaimStatuses``
  entry of the same name; an entry without ``resourceClaimName`` means no claim is needed.
- A template claim with no status entry yet has not been created. kube-scheduler does not try such a pod
  (PreEnqueue waits until every claim exists), but the claim will be the template's spec verbatim (the
  controller copies ``template.spec.spec``, ``pkg/controller/resourceclaim/controller.go``), so the demand is
  evaluated with that spec and marked :attr:`ClaimSource.TEMPLATE_PENDING`: verdicts and the simulator can
  judge a pod before its claim exists.
- An allocated claim is not allocated again: it contributes the node its allocation pins. One that has its
  maximum of 256 consumers, none of them this pod, blocks the pod everywhere.
- Every device class a request names must exist, or the pod waits.
- Extended resources backed by a DeviceClass (DRAExtendedResource, beta and on in 1.36: a class's
  ``extendedResourceName``, or ``deviceclass.resource.kubernetes.io/<class>`` for any class) become one more
  claim, last, on each node that does not advertise the resource itself (allocatable 0). It has one request
  per container and resource, named ``container-<i>-request-<j>`` (``i`` the container's index among init
  containers then containers, ``j`` the resource's among the container's sorted request names), for the
  container's quantity; an init container first reuses the requests of the containers started after it, and
  of the init containers' requests only the largest is kept. Requests are sorted by name.

Resources with no class (``nvidia.com/mig-*`` on a device-plugin node) stay the device plugin's
(:mod:`extender.model.demand`).

:func:`profile_demand` says when the claims amount to a plain count of MIG instances per profile (each request
takes a fixed number of devices, all MIG devices of one profile), found by evaluating their selectors on the
devices the driver publishes: verdicts and the simulator then reason in catalog terms.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..demand import GPU_RESOURCE, MIG_RESOURCE_PREFIX, PodDemand
from .cel import SelectorError, compile_selector
from .driver import DRIVER
from .inventory import PROFILE, TYPE
from .quantity import QuantityError, quantity_of
from .types import (
    AllocationMode,
    ClaimSpec,
    ClaimTemplate,
    Device,
    DeviceClass,
    DeviceRequest,
    DeviceSubRequest,
    ResourceClaim,
)

ClaimKey = tuple[str, str]
"""(namespace, name) of a ResourceClaim."""

IMPLICIT_PREFIX = "deviceclass.resource.kubernetes.io/"
"""Every DeviceClass also stands for the extended resource ``deviceclass.resource.kubernetes.io/<class name>``."""
MAX_RESERVATIONS = 256
"""``ResourceClaimReservedForMaxSize``: a claim may be reserved for at most this many consumers."""
EXTENDED_CLAIM = "<extended-resources>"
"""The name kube-scheduler gives the extended-resource claim until it creates it (not a valid object name)."""


class ClaimSource(enum.StrEnum):
    CLAIM = "claim"
    """``resourceClaimName``: a claim made by hand."""
    TEMPLATE = "template"
    """The claim generated from ``resourceClaimTemplateName``, created."""
    TEMPLATE_PENDING = "template-pending"
    """Generated from a template but not created yet: the template's spec, which the claim will have."""
    EXTENDED = "extended-resources"
    """The claim kube-scheduler makes for extended resources backed by a DeviceClass."""


@dataclass(frozen=True, slots=True)
class PodClaim:
    """One claim of the pod."""

    pod_claim: str
    """Its entry in ``spec.resourceClaims`` (empty for the extended-resource claim)."""
    key: ClaimKey
    """(namespace, name); the name is empty for a claim not created yet, ``<extended-resources>`` for the
    scheduler's claim before it is created."""
    spec: ClaimSpec
    source: ClaimSource
    template: str = ""
    allocated: bool = False
    allocated_node: str = ""
    """The node an allocated claim's allocation pins, if it pins one."""

    @property
    def label(self) -> str:
        return f"claim {self.pod_claim}" if self.pod_claim else "extended resources"

    def text(self) -> str:
        """``claim mig (1x mig.nvidia.com)``: what the claim asks, in the API's terms."""
        if self.allocated:
            where = f" on {self.allocated_node}" if self.allocated_node else ""
            return f"{self.label} (allocated{where})"
        return f"{self.label} ({', '.join(_request_text(r) for r in self.spec.requests) or 'no request'})"


def _request_text(request: DeviceRequest) -> str:
    return " | ".join(_alternative_text(a) for a in request.alternatives)


def _alternative_text(alternative: DeviceSubRequest) -> str:
    if alternative.mode is AllocationMode.ALL:
        return f"all {alternative.device_class}"
    return f"{alternative.count}x {alternative.device_class}"


@dataclass(frozen=True, slots=True)
class ExtendedResource:
    """An extended resource the pod requests that a DeviceClass backs."""

    resource: str
    device_class: str
    count: int
    """The pod's effective request (init containers and sidecars counted as the scheduler counts them)."""


@dataclass(frozen=True, slots=True)
class _Container:
    index: int
    """Among init containers, then containers."""
    init: bool
    sidecar: bool
    """An init container with ``restartPolicy: Always``: it runs beside the containers."""
    requests: tuple[tuple[str, int | None], ...]
    """Every resource name of ``resources.requests`` (limits defaulted in, as the API server does), sorted;
    the whole quantity of the backed extended resources (None when not a whole number), None for the rest."""

    @property
    def short_lived(self) -> bool:
        """An init container that is not a sidecar: it ends before the containers start."""
        return self.init and not self.sidecar

    def count(self, resource: str) -> int:
        for name, amount in self.requests:
            if name == resource:
                return amount or 0
        return 0


@dataclass(frozen=True)
class DraDemand:
    """The claims a pod needs allocated, or why it cannot be evaluated yet."""

    namespace: str
    pod: str
    claims: tuple[PodClaim, ...] = ()
    """The pod's claims in ``spec.resourceClaims`` order (allocated ones too), then an extended-resource claim
    allocated in an earlier attempt."""
    extended: tuple[ExtendedResource, ...] = ()
    """Extended resources backed by a DeviceClass, by name; empty once their claim is allocated."""
    pinned_node: str = ""
    """The node an allocated claim pins the pod to, if any."""
    not_evaluable: str = ""
    """Why the pod cannot be evaluated yet (a claim, template or class not there): pass nodes, count this."""
    _containers: tuple[_Container, ...] = field(default=(), repr=False)
    _on_node: dict[frozenset[str], PodClaim | None] = field(default_factory=dict, repr=False, compare=False)

    @property
    def evaluable(self) -> bool:
        return not self.not_evaluable

    @property
    def is_empty(self) -> bool:
        """Nothing for DRA to allocate or check (which includes a pod with no claim at all)."""
        return self.evaluable and not self.to_allocate and not self.extended and not self.pinned_node

    @property
    def to_allocate(self) -> tuple[PodClaim, ...]:
        """The pod's own claims still to allocate, in the scheduler's order."""
        return tuple(c for c in self.claims if not c.allocated)

    @property
    def claim_keys(self) -> tuple[ClaimKey, ...]:
        """Keys of the created claims still to allocate: what an assumption for this pod stands for."""
        return tuple(c.key for c in self.to_allocate if c.key[1])

    @property
    def specs(self) -> tuple[ClaimSpec, ...]:
        """What to allocate on a node that advertises none of the backed extended resources (a DRA node)."""
        return tuple(c.spec for c in self.claims_on({}))

    def claims_on(self, allocatable: Mapping[str, int]) -> tuple[PodClaim, ...]:
        """The claims to allocate on a node with ``allocatable``, in the scheduler's order."""
        extended = self.extended_claim_on(allocatable)
        return (*self.to_allocate, extended) if extended is not None else self.to_allocate

    def specs_on(self, allocatable: Mapping[str, int]) -> tuple[ClaimSpec, ...]:
        return tuple(c.spec for c in self.claims_on(allocatable))

    def served_by_dra(self, allocatable: Mapping[str, int]) -> frozenset[str]:
        """The backed extended resources this node serves through DRA: those it does not advertise."""
        return frozenset(e.resource for e in self.extended if not allocatable.get(e.resource, 0))

    def extended_claim_on(self, allocatable: Mapping[str, int]) -> PodClaim | None:
        """The extended-resource claim for a node with ``allocatable``, or None when it needs none."""
        served = self.served_by_dra(allocatable)
        if not served:
            return None
        if served not in self._on_node:
            self._on_node[served] = self._extended_claim(served)
        return self._on_node[served]

    def device_plugin_demand(self, demand: PodDemand, allocatable: Mapping[str, int]) -> PodDemand:
        """``demand`` (the pod's ``nvidia.com`` resources) without what this node serves through DRA."""
        served = self.served_by_dra(allocatable)
        if not served:
            return demand
        mig = tuple((n, c) for n, c in demand.mig if MIG_RESOURCE_PREFIX + n not in served)
        return PodDemand(mig=mig, gpus=0 if GPU_RESOURCE in served else demand.gpus)

    def text(self) -> str:
        """``claim mig (1x mig.nvidia.com) + 1x nvidia.com/gpu (class gpu.nvidia.com)``: stable, for messages."""
        if self.not_evaluable:
            return self.not_evaluable
        parts = [c.text() for c in self.claims]
        parts.extend(f"{e.count}x {e.resource} (class {e.device_class})" for e in self.extended)
        return " + ".join(parts) or "no claim"

    def _extended_claim(self, served: frozenset[str]) -> PodClaim:
        classes = {e.resource: e.device_class for e in self.extended}
        requests: list[DeviceRequest] = []
        for resource in sorted(served):
            requests.extend(_requests_for(self._containers, resource, classes[resource]))
        requests.sort(key=lambda r: r.name)
        return PodClaim("", (self.namespace, EXTENDED_CLAIM), ClaimSpec(tuple(requests)), ClaimSource.EXTENDED)


def _requests_for(containers: Sequence[_Container], resource: str, device_class: str) -> list[DeviceRequest]:
    """``createRequestsAndMappings`` for one resource: the largest of the short-lived (init) containers' requests,
    each after reusing what the long-lived containers after it request, then the long-lived containers'."""
    long_lived: list[tuple[DeviceRequest, int] | None] = [
        None if c.short_lived else _request_for(c, resource, device_class, ()) for c in containers
    ]
    largest: tuple[DeviceRequest, int] | None = None
    for position, container in enumerate(containers):
        if container.short_lived:
            later = tuple(made[1] for made in long_lived[position:] if made is not None)
            made = _request_for(container, resource, device_class, later)
            if made is not None and (largest is None or largest[1] < made[1]):
                largest = made
    return [made[0] for made in (largest, *long_lived) if made is not None]


def _request_for(
    container: _Container, resource: str, device_class: str, reusable: Sequence[int]
) -> tuple[DeviceRequest, int] | None:
    """``createResourceRequestAndMappings``: the container's request for what ``reusable`` counts do not cover."""
    names = [n for n, _ in container.requests]
    if resource not in names:
        return None
    wanted = container.requests[names.index(resource)][1]
    if not wanted:
        return None
    covered = 0
    for count in reusable:
        covered += count
        if covered >= wanted:
            return None
    name = f"container-{container.index}-request-{names.index(resource)}"
    request = DeviceRequest(name, (DeviceSubRequest(device_class, count=wanted - covered),))
    return request, wanted - covered


def extended_resource_classes(classes: Iterable[DeviceClass]) -> dict[str, DeviceClass]:
    """Extended resource name -> the DeviceClass that backs it (the scheduler's ExtendedResourceCache).

    Two classes naming one ``extendedResourceName``: the scheduler keeps the newer, the lower name on a tie
    (k8s.io/dynamic-resource-allocation ``deviceclass/extendedresourcecache``); the records carry no creation
    time, so the lower name is kept.
    """
    ordered = sorted(classes, key=lambda c: c.name)
    index: dict[str, DeviceClass] = {}
    for device_class in reversed(ordered):  # the lowest name last, so that it stays
        if device_class.extended_resource_name:
            index[device_class.extended_resource_name] = device_class
    for device_class in ordered:  # validation keeps these apart from every extendedResourceName
        index[IMPLICIT_PREFIX + device_class.name] = device_class
    return index


class _Unresolved(Exception):
    """Why the pod cannot be evaluated yet: the message is the reason."""


def dra_demand(
    pod: Mapping[str, Any],
    claims: Mapping[ClaimKey, ResourceClaim],
    templates: Mapping[ClaimKey, ClaimTemplate],
    classes: Mapping[str, DeviceClass],
    extended: Mapping[str, DeviceClass] | None = None,
) -> DraDemand:
    """The claims ``pod`` (a Pod as JSON, as kube-scheduler sends it) needs allocated.

    ``claims`` and ``templates`` by (namespace, name), ``classes`` by name; ``extended`` is
    :func:`extended_resource_classes` of the classes, computed here when not given. A claim, template or class
    that is not there (yet), or a pod spec that cannot be read, gives a demand whose :attr:`DraDemand.not_evaluable`
    says so; never an exception.
    """
    metadata = _object(pod, "metadata")
    namespace = _text(metadata.get("namespace")) or "default"
    name = _text(metadata.get("name"))
    try:
        return _demand(pod, namespace, name, claims, templates, classes, extended)
    except _Unresolved as reason:
        return DraDemand(namespace, name, not_evaluable=str(reason))


def _object(parent: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = parent.get(key)
    return value if isinstance(value, Mapping) else {}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _list(parent: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise _Unresolved(f"pod {where}.{key} is not a list of objects")
    return value


def _demand(
    pod: Mapping[str, Any],
    namespace: str,
    name: str,
    claims: Mapping[ClaimKey, ResourceClaim],
    templates: Mapping[ClaimKey, ClaimTemplate],
    classes: Mapping[str, DeviceClass],
    extended_index: Mapping[str, DeviceClass] | None,
) -> DraDemand:
    spec = _object(pod, "spec")
    status = _object(pod, "status")
    metadata = _object(pod, "metadata")
    uid = _text(metadata.get("uid"))
    statuses: dict[str, str | None] = {}
    for entry in _list(status, "resourceClaimStatuses", "status"):
        statuses[_text(entry.get("name"))] = _text(entry.get("resourceClaimName")) or None
    found: list[PodClaim] = []
    for position, entry in enumerate(_list(spec, "resourceClaims", "spec")):
        claim = _pod_claim(entry, position, namespace, statuses, claims, templates)
        if claim is not None:
            found.append(claim)
    for claim in found:
        if not claim.allocated:
            _check_classes(claim, classes)
    for claim in found:
        stored = claims.get(claim.key)
        if (
            claim.allocated
            and stored is not None
            and len(stored.reserved_for) >= MAX_RESERVATIONS
            and uid not in stored.reserved_for
        ):
            raise _Unresolved(f"{claim.label}: ResourceClaim {claim.key[1]} is in use by {MAX_RESERVATIONS} others")
    index = extended_index if extended_index is not None else extended_resource_classes(list(classes.values()))
    containers = _containers(spec, index)
    backed = _backed(containers, index)
    if backed:
        earlier = _earlier_extended_claim(status, namespace, claims)
        if earlier is not None:
            found.append(earlier)
            backed = ()
    pins = {c.allocated_node: c for c in found if c.allocated and c.allocated_node}
    if len(pins) > 1:
        listed = ", ".join(f"{node} ({c.label})" for node, c in sorted(pins.items()))
        raise _Unresolved(f"allocated claims pin different nodes: {listed}")
    return DraDemand(
        namespace,
        name,
        tuple(found),
        backed,
        next(iter(pins), ""),
        _containers=containers if backed else (),
    )


def _pod_claim(
    entry: Mapping[str, Any],
    position: int,
    namespace: str,
    statuses: Mapping[str, str | None],
    claims: Mapping[ClaimKey, ResourceClaim],
    templates: Mapping[ClaimKey, ClaimTemplate],
) -> PodClaim | None:
    pod_claim = _text(entry.get("name"))
    claim_name = _text(entry.get("resourceClaimName"))
    template = _text(entry.get("resourceClaimTemplateName"))
    if not pod_claim or bool(claim_name) == bool(template):
        raise _Unresolved(
            f"pod spec.resourceClaims[{position}] needs a name and one of resourceClaimName and "
            "resourceClaimTemplateName"
        )
    if claim_name:
        return _existing(pod_claim, namespace, claim_name, claims, ClaimSource.CLAIM)
    if pod_claim in statuses:
        generated = statuses[pod_claim]
        if generated is None:
            return None  # resourceclaim.Name: no claim was needed for this entry
        return _existing(pod_claim, namespace, generated, claims, ClaimSource.TEMPLATE, template)
    found = templates.get((namespace, template))
    if found is None:
        raise _Unresolved(f"claim {pod_claim}: ResourceClaimTemplate {namespace}/{template} does not exist")
    return PodClaim(pod_claim, (namespace, ""), found.spec, ClaimSource.TEMPLATE_PENDING, template)


def _existing(
    pod_claim: str,
    namespace: str,
    name: str,
    claims: Mapping[ClaimKey, ResourceClaim],
    source: ClaimSource,
    template: str = "",
) -> PodClaim:
    claim = claims.get((namespace, name))
    if claim is None:
        raise _Unresolved(f"claim {pod_claim}: ResourceClaim {namespace}/{name} does not exist yet")
    return PodClaim(
        pod_claim,
        (namespace, name),
        claim.spec,
        source,
        template,
        allocated=claim.allocation is not None,
        allocated_node=claim.allocated_node,
    )


def _check_classes(claim: PodClaim, classes: Mapping[str, DeviceClass]) -> None:
    for request in claim.spec.requests:
        for alternative in request.alternatives:
            if alternative.device_class not in classes:
                path = f"{request.name}/{alternative.name}" if alternative.name else request.name
                raise _Unresolved(
                    f"{claim.label}: request {path}: device class {alternative.device_class} does not exist"
                )


def _earlier_extended_claim(
    status: Mapping[str, Any], namespace: str, claims: Mapping[ClaimKey, ResourceClaim]
) -> PodClaim | None:
    """The extended-resource claim an earlier attempt created (``status.extendedResourceClaimStatus``).

    Allocated, it stands; not allocated, kube-scheduler deletes it and starts again (``filterExtendedResources``
    fails the pod until then).
    """
    recorded = status.get("extendedResourceClaimStatus")
    name = _text(recorded.get("resourceClaimName")) if isinstance(recorded, Mapping) else ""
    claim = claims.get((namespace, name)) if name else None
    if claim is None:
        return None
    if claim.allocation is None:
        raise _Unresolved(f"extended resources: ResourceClaim {namespace}/{name} of an earlier attempt is replaced")
    return PodClaim(
        "",
        (namespace, name),
        claim.spec,
        ClaimSource.EXTENDED,
        allocated=True,
        allocated_node=claim.allocated_node,
    )


def _containers(spec: Mapping[str, Any], index: Mapping[str, DeviceClass]) -> tuple[_Container, ...]:
    found: list[_Container] = []
    for key, init in (("initContainers", True), ("containers", False)):
        for position, container in enumerate(_list(spec, key, "spec")):
            where = f"spec.{key}[{position}]"
            resources = container.get("resources") or {}
            if not isinstance(resources, Mapping):
                raise _Unresolved(f"pod {where}.resources is not an object")
            requests = _amounts(resources, "requests", where)
            # The API server defaults a request from the limit of any resource that has no request.
            merged = {**_amounts(resources, "limits", where), **requests}
            amounts = tuple(
                (resource, _whole(value, f"{where}.resources[{resource}]") if resource in index else None)
                for resource, value in sorted(merged.items())
            )
            sidecar = init and container.get("restartPolicy") == "Always"
            found.append(_Container(len(found), init, sidecar, amounts))
    return tuple(found)


def _amounts(resources: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    values = resources.get(key) or {}
    if not isinstance(values, Mapping):
        raise _Unresolved(f"pod {where}.resources.{key} is not an object")
    return {str(k): v for k, v in values.items()}


def _whole(value: object, where: str) -> int | None:
    """``Quantity.AsInt64``: the whole number, or None (then the scheduler makes no request for it)."""
    try:
        amount = quantity_of(value)
    except QuantityError as error:
        raise _Unresolved(f"pod {where}: {error}") from None
    return int(amount) if amount.denominator == 1 and 0 <= amount < 2**63 else None


def _backed(containers: Sequence[_Container], index: Mapping[str, DeviceClass]) -> tuple[ExtendedResource, ...]:
    """Backed extended resources with a non-zero effective request (``resourcehelper.PodRequests``)."""
    names = sorted({n for c in containers for n, amount in c.requests if amount is not None and n in index})
    found = []
    for resource in names:
        count = _effective(containers, resource)
        if count:
            found.append(ExtendedResource(resource, index[resource].name, count))
    return tuple(found)


def _effective(containers: Sequence[_Container], resource: str) -> int:
    """The larger of the containers' and sidecars' sum and each init container's need while it runs."""
    regular = sum(c.count(resource) for c in containers if not c.init)
    sidecars = 0
    peak = 0
    for container in containers:
        if not container.init:
            continue
        if container.sidecar:
            sidecars += container.count(resource)
            peak = max(peak, sidecars)
        else:
            peak = max(peak, sidecars + container.count(resource))
    return max(regular + sidecars, peak)


# --- The demand in catalog terms ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProfileDemand:
    """A DRA demand that is exactly a count of MIG instances per profile: what verdicts and the simulator use."""

    demand: PodDemand
    parts: tuple[str, ...]
    """Per claim, ``claim mig (1x 1g.10gb)``."""

    def text(self) -> str:
        return " + ".join(self.parts) or "no claim"


def profile_demand(
    demand: DraDemand,
    classes: Mapping[str, DeviceClass],
    samples: Iterable[Device],
    allocatable: Mapping[str, int] | None = None,
) -> ProfileDemand | None:
    """The claims to allocate as MIG profile counts, when each of their requests takes a fixed number of devices
    that are all MIG devices of one profile; None otherwise (any MIG, a whole GPU, alternatives, constraints such
    as one parent GPU, a selector that fails, or devices of another kind).

    Which devices a request takes is found by evaluating its class's and its own selectors on ``samples``: one
    device per model and profile as the driver publishes them (:attr:`Inventory.samples
    <extender.model.dra.inventory.Inventory.samples>`), so that no CEL text is interpreted here.
    """
    if not demand.evaluable:
        return None
    devices = tuple(samples)
    counts: dict[str, int] = {}
    parts: list[str] = []
    for claim in demand.claims_on(allocatable or {}):
        if claim.spec.constraints:
            return None
        wanted: list[str] = []
        for request in claim.spec.requests:
            found = _one_profile(request, classes, devices)
            if found is None:
                return None
            profile, count = found
            counts[profile] = counts.get(profile, 0) + count
            wanted.append(f"{count}x {profile}")
        parts.append(f"{claim.label} ({', '.join(wanted) or 'no request'})")
    return ProfileDemand(PodDemand(mig=tuple(sorted(counts.items()))), tuple(parts))


def _one_profile(
    request: DeviceRequest, classes: Mapping[str, DeviceClass], devices: Sequence[Device]
) -> tuple[str, int] | None:
    if len(request.alternatives) != 1:
        return None
    alternative = request.alternatives[0]
    if alternative.mode is not AllocationMode.EXACT_COUNT or alternative.admin_access or alternative.unsupported:
        return None
    device_class = classes.get(alternative.device_class)
    if device_class is None:
        return None
    try:
        selectors = [compile_selector(e) for e in (*device_class.selectors, *alternative.selectors)]
        chosen = [d for d in devices if all(s.matches(d, DRIVER) for s in selectors)]
    except SelectorError:
        return None  # kube-scheduler aborts the attempt on a failing selector: no plain count of profiles
    profiles = {d.attribute(PROFILE) if d.attribute(TYPE) == "mig" else None for d in chosen}
    if len(profiles) != 1:
        return None
    profile = profiles.pop()
    return (profile, alternative.count) if isinstance(profile, str) else None
