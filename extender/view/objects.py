"""Slim, immutable records of the Kubernetes objects the extender needs, read from raw JSON.

Only the fields the policy reads are kept (labels, filtering taints and GPU allocatable; a pod's demand,
binding, verdict annotations and what restricts its nodes): a 100,000-pod view stays small, and no client
model objects are built.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..kube.names import (
    CAPACITY_REQUEST_SCHEDULER,
    DEFRAG_MOVABLE_LABEL,
    DO_NOT_DISRUPT_ANNOTATION,
    NODE_GPUS_ANNOTATION,
    NODEPOOL_LABEL,
    PREFIX,
    RELAYOUT_TAINT,
)
from ..model.caches import CACHES
from ..model.demand import GPU_RESOURCE, MIG_RESOURCE_PREFIX, DemandError, PodDemand, pod_demand
from ..model.eligibility import ANYWHERE, FILTERING_EFFECTS, PodPlacement, Requirement, Taint, Term, Toleration

_KEPT_NODE_ANNOTATIONS = (PREFIX, DO_NOT_DISRUPT_ANNOTATION)
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


class ObjectError(ValueError):
    """A Kubernetes object without the fields every object of its kind has."""


def _metadata(raw: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    metadata = raw.get("metadata")
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str) or not metadata["name"]:
        raise ObjectError(f"{kind} without metadata.name")
    return metadata


def _string_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _own(value: Any) -> str:
    """A fresh copy of a string from a parsed response.

    Kept strings would otherwise pin the allocator's memory pages of the whole parsed list (the
    response's dicts around them are freed, but a page is returned only when all of it is free).
    """
    return str(value).encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")


def _shared(value: Any) -> str:
    """An interned string, for values that repeat across objects (namespaces, node names, phases)."""
    return sys.intern(str(value))


_NO_ANNOTATIONS: Mapping[str, str] = {}
_DEMANDS: dict[PodDemand, PodDemand] = {}
_DEMANDS_LIMIT = 4_096
CACHES.register_table("objects._DEMANDS", lambda: _DEMANDS, lambda: _DEMANDS_LIMIT)
# Pods of one workload share tolerations and selectors, nodes of one pool their taints: one object each.
_PLACEMENTS: dict[PodPlacement, PodPlacement] = {}
_PLACEMENTS_LIMIT = 4_096
CACHES.register_table("objects._PLACEMENTS", lambda: _PLACEMENTS, lambda: _PLACEMENTS_LIMIT)
_TAINTS: dict[tuple[Taint, ...], tuple[Taint, ...]] = {}
_TAINTS_LIMIT = 1_024
CACHES.register_table("objects._TAINTS", lambda: _TAINTS, lambda: _TAINTS_LIMIT)


def _interned(table: dict[Any, Any], limit: int, value: Any) -> Any:
    if len(table) >= limit:  # distinct values are few; this bounds a pathological stream
        table.clear()
    return table.setdefault(value, value)


def _taints(spec: Mapping[str, Any]) -> tuple[Taint, ...]:
    """The node's NoSchedule and NoExecute taints (PreferNoSchedule does not filter).

    The re-layout controller's own taint is left out: it holds pods off only while the node is re-partitioned
    for the ones waiting, so verdicts and plans must still count the node as theirs.
    """
    raw = spec.get("taints")
    if not isinstance(raw, list):
        return ()
    taints = tuple(
        Taint(_shared(t.get("key") or ""), _shared(t.get("value") or ""), _shared(t["effect"]))
        for t in raw
        if isinstance(t, Mapping)
        and isinstance(t.get("effect"), str)  # a list or a map is no effect (and not hashable)
        and t["effect"] in FILTERING_EFFECTS
        and t.get("key") != RELAYOUT_TAINT
    )
    return _interned(_TAINTS, _TAINTS_LIMIT, taints) if taints else ()


def _requirements(raw: Any, field: bool) -> tuple[Requirement, ...] | None:
    """A term's matchExpressions or matchFields; None when unreadable (the term then matches nothing)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        return None
    found = []
    for item in raw:
        if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
            return None
        values = item.get("values") or []
        if not isinstance(values, list):
            return None
        found.append(
            Requirement(_shared(item["key"]), _shared(item.get("operator") or ""), tuple(map(_shared, values)), field)
        )
    return tuple(found)


def _required_terms(spec: Mapping[str, Any]) -> tuple[Term, ...] | None:
    affinity = spec.get("affinity")
    node_affinity = affinity.get("nodeAffinity") if isinstance(affinity, Mapping) else None
    required = (
        node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
        if isinstance(node_affinity, Mapping)
        else None
    )
    if not isinstance(required, Mapping):
        return None
    raw_terms = required.get("nodeSelectorTerms")
    terms = []
    for raw in raw_terms if isinstance(raw_terms, list) else []:
        if not isinstance(raw, Mapping):
            terms.append(Term(()))
            continue
        expressions = _requirements(raw.get("matchExpressions"), False)
        fields = _requirements(raw.get("matchFields"), True)
        terms.append(Term(() if expressions is None or fields is None else (*expressions, *fields)))
    return tuple(terms)


def _placement(spec: Mapping[str, Any]) -> PodPlacement:
    """Tolerations, nodeSelector and required node affinity: what decides which nodes the pod may use."""
    raw_tolerations = spec.get("tolerations")
    tolerations = tuple(
        Toleration(
            _shared(t.get("key") or ""),
            _shared(t.get("operator") or "Equal"),
            _shared(t.get("value") or ""),
            _shared(t.get("effect") or ""),
        )
        for t in (raw_tolerations if isinstance(raw_tolerations, list) else [])
        if isinstance(t, Mapping)
    )
    selector = tuple(sorted((_shared(k), _shared(v)) for k, v in _string_map(spec.get("nodeSelector")).items()))
    placement = PodPlacement(tolerations, selector, _required_terms(spec))
    return ANYWHERE if placement == ANYWHERE else _interned(_PLACEMENTS, _PLACEMENTS_LIMIT, placement)


def _count(value: Any) -> int:
    """An extended-resource count from allocatable (a quantity string); unreadable values count as 0."""
    try:
        return max(0, int(str(value)))
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    resource_version: str
    labels: Mapping[str, str]
    gpus_annotation: str | None
    allocatable: Mapping[str, int]
    unschedulable: bool
    annotations: Mapping[str, str]
    """Only ``mig-extender.io/*`` and ``karpenter.sh/do-not-disrupt``."""
    created: str
    """``metadata.creationTimestamp`` as the API server wrote it (RFC 3339, seconds)."""
    taints: tuple[Taint, ...] = ()
    """The NoSchedule and NoExecute taints: which pods may use the node (``PodPlacement.admits``)."""

    def admits(self, placement: PodPlacement) -> bool:
        """kube-scheduler's TaintToleration, NodeUnschedulable and NodeAffinity filters, for a pod's placement."""
        if placement is ANYWHERE and not self.taints and not self.unschedulable:
            return True  # the common case, without a look at the labels
        return placement.admits(self.labels, self.name, self.taints, self.unschedulable)

    @property
    def pool(self) -> str | None:
        """The Karpenter NodePool that launched the node."""
        return self.labels.get(NODEPOOL_LABEL)

    @property
    def advertises_mig(self) -> bool:
        """The device plugin advertises MIG instances: MIG Manager has applied a layout."""
        return any(count for name, count in self.allocatable.items() if name.startswith(MIG_RESOURCE_PREFIX))

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> NodeInfo:
        try:
            return cls._from_raw(raw)
        except RecursionError:  # str() of a value nested ~1,000 deep (JSON parsers allow that much)
            raise ObjectError("Node with a value nested too deeply") from None

    @classmethod
    def _from_raw(cls, raw: Mapping[str, Any]) -> NodeInfo:
        metadata = _metadata(raw, "Node")
        labels = _string_map(metadata.get("labels"))
        annotations = _string_map(metadata.get("annotations"))
        status = raw.get("status") if isinstance(raw.get("status"), Mapping) else {}
        allocatable = _string_map(status.get("allocatable") if isinstance(status, Mapping) else None)
        spec = raw.get("spec") if isinstance(raw.get("spec"), Mapping) else {}
        return cls(
            name=metadata["name"],
            resource_version=str(metadata.get("resourceVersion", "")),
            # Every label: pods select nodes on any of them (interned: keys and most values repeat across nodes).
            labels={_shared(k): _shared(v) for k, v in labels.items()},
            gpus_annotation=annotations.get(NODE_GPUS_ANNOTATION),
            allocatable={
                k: _count(v) for k, v in allocatable.items() if k == GPU_RESOURCE or k.startswith(MIG_RESOURCE_PREFIX)
            },
            unschedulable=bool(isinstance(spec, Mapping) and spec.get("unschedulable")),
            annotations={k: v for k, v in annotations.items() if k.startswith(_KEPT_NODE_ANNOTATIONS)}
            or _NO_ANNOTATIONS,
            created=str(metadata.get("creationTimestamp") or ""),
            taints=_taints(spec) if isinstance(spec, Mapping) else (),
        )


@dataclass(frozen=True, slots=True)
class Disruption:
    """What the defrag controller reads of a bound MIG pod to decide whether it may move it (docs/defrag.md)."""

    owner_kind: str
    """The kind of its controller (``ownerReferences`` with ``controller: true``); empty for a bare pod."""
    owner_name: str
    started: str
    """``status.startTime`` (else ``metadata.creationTimestamp``) as the API server wrote it (RFC 3339)."""
    opted_in: bool
    """Label or annotation ``mig-extender.io/movable: "true"``."""
    do_not_disrupt: bool
    """Annotation ``karpenter.sh/do-not-disrupt: "true"``."""
    deleting: bool
    """``metadata.deletionTimestamp`` is set: it is on its way out already."""


def _disruption(metadata: Mapping[str, Any], status: Mapping[str, Any], annotations: Mapping[str, str]) -> Disruption:
    owner_kind = owner_name = ""
    owners = metadata.get("ownerReferences")
    for owner in owners if isinstance(owners, list) else []:
        if isinstance(owner, Mapping) and owner.get("controller") is True:
            owner_kind, owner_name = _shared(owner.get("kind") or ""), _own(owner.get("name") or "")
            break
    labels = metadata.get("labels")
    label = labels.get(DEFRAG_MOVABLE_LABEL) if isinstance(labels, Mapping) else None
    return Disruption(
        owner_kind=owner_kind,
        owner_name=owner_name,
        started=_own(status.get("startTime") or metadata.get("creationTimestamp") or ""),
        opted_in="true" in (label, annotations.get(DEFRAG_MOVABLE_LABEL)),
        do_not_disrupt=annotations.get(DO_NOT_DISRUPT_ANNOTATION) == "true",
        deleting=bool(metadata.get("deletionTimestamp")),
    )


@dataclass(frozen=True, slots=True)
class PodInfo:
    uid: str
    namespace: str
    name: str
    resource_version: str
    node_name: str | None
    phase: str
    demand: PodDemand
    demand_error: str | None
    annotations: Mapping[str, str]
    unschedulable: bool
    """PodScheduled is False with reason Unschedulable: kube-scheduler tried and found no node."""
    scheduler_name: str
    placement: PodPlacement = ANYWHERE
    """Tolerations, nodeSelector and required node affinity (shared by pods that have equal ones)."""
    claims_source: Mapping[str, Any] | None = None
    """For a pending pod that may ask for MIG through DRA (it has ``spec.resourceClaims`` or asks for GPU
    resources a DeviceClass may back): the parts of the Pod its claims are read from, so that the view can read
    them again when claims, templates or classes change (``ClusterView`` sets ``demand`` from them)."""
    priority: int = 0
    """``spec.priority`` (set from the PriorityClass at admission)."""
    disruption: Disruption | None = None
    """For a bound pod that may hold GPUs (device-plugin MIG or GPU resources, or resource claims): what decides
    whether the defrag controller may move it. None for other pods, which it never moves."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def is_active(self) -> bool:
        return self.phase not in TERMINAL_PHASES

    @property
    def is_pending_mig(self) -> bool:
        return (
            self.is_active
            and self.node_name is None
            and not self.demand.is_empty
            and self.scheduler_name != CAPACITY_REQUEST_SCHEDULER
        )

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> PodInfo:
        try:
            return cls._from_raw(raw)
        except RecursionError:  # str() of a value nested ~1,000 deep (JSON parsers allow that much)
            raise ObjectError("Pod with a value nested too deeply") from None

    @classmethod
    def _from_raw(cls, raw: Mapping[str, Any]) -> PodInfo:
        metadata = _metadata(raw, "Pod")
        spec = raw.get("spec") if isinstance(raw.get("spec"), Mapping) else {}
        status = raw.get("status") if isinstance(raw.get("status"), Mapping) else {}
        assert isinstance(spec, Mapping) and isinstance(status, Mapping)
        try:
            demand, error = pod_demand(raw), None
            if len(_DEMANDS) >= _DEMANDS_LIMIT:  # distinct demands are few; this bounds a pathological stream
                _DEMANDS.clear()
            demand = _DEMANDS.setdefault(demand, demand)  # pods share the few distinct demands
        except DemandError as exc:
            demand, error = PodDemand(), str(exc)
        conditions = status.get("conditions")
        unschedulable = isinstance(conditions, list) and any(
            isinstance(c, Mapping)
            and c.get("type") == "PodScheduled"
            and c.get("status") == "False"
            and c.get("reason") == "Unschedulable"
            for c in conditions
        )
        annotations = _string_map(metadata.get("annotations"))
        namespace = _shared(metadata.get("namespace") or "default")
        return cls(
            uid=_own(metadata.get("uid") or f"{namespace}/{metadata['name']}"),
            namespace=namespace,
            name=_own(metadata["name"]),
            resource_version=_own(metadata.get("resourceVersion", "")),
            node_name=_shared(spec["nodeName"]) if spec.get("nodeName") else None,
            phase=_shared(status.get("phase") or "Pending"),
            demand=demand,
            demand_error=error,
            annotations={_shared(k): _own(v) for k, v in annotations.items() if k.startswith(PREFIX)}
            or _NO_ANNOTATIONS,
            unschedulable=unschedulable,
            scheduler_name=_shared(spec.get("schedulerName") or "default-scheduler"),
            placement=_placement(spec),
            claims_source=_claims_source(raw, spec, status, demand),
            priority=_priority(spec),
            disruption=(
                _disruption(metadata, status, annotations)
                if spec.get("nodeName") and (demand.mig or demand.gpus or spec.get("resourceClaims"))
                else None
            ),
        )


def _priority(spec: Mapping[str, Any]) -> int:
    value = spec.get("priority")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _claims_source(
    raw: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any], demand: PodDemand
) -> Mapping[str, Any] | None:
    """What ``extender.model.dra.demand.dra_demand`` reads of a pending pod, or None (bound, or no DRA)."""
    if spec.get("nodeName") or not (spec.get("resourceClaims") or demand.mig or demand.gpus):
        return None
    kept_spec = {k: spec[k] for k in ("resourceClaims", "containers", "initContainers") if spec.get(k)}
    kept_status = {k: status[k] for k in ("resourceClaimStatuses", "extendedResourceClaimStatus") if status.get(k)}
    metadata = raw.get("metadata") or {}
    return {
        "metadata": {k: metadata.get(k) for k in ("name", "namespace", "uid")},
        "spec": kept_spec,
        "status": kept_status,
    }
