"""The in-memory cluster view that every answer comes from: nodes, pods, the mig-parted config.

Writers are the watch streams (or a snapshot); readers are the HTTP handlers. Everything runs on one event
loop, so no locks: a re-list builds new dictionaries and swaps them in. A node's :class:`NodeState` is
built lazily and cached until an event touches that node (the node itself, a pod bound to it, an assumed
placement on it, or the mig-parted config).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import operator
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress
from typing import Any, Generic, TypeVar

from cachetools import TTLCache

from ..model.demand import PodDemand
from ..model.dra.inventory import Inventory, inventory
from ..model.dra.types import ClaimTemplate, DeviceClass, Pool, ResourceClaim, ResourceSlice
from ..model.migparted import DEFAULT_CONFIG, MigPartedConfig, MigPartedError, parse_config
from ..model.state import Fidelity, NodeState
from ..settings import ConfigMapRef, ViewSettings
from .dra_demand import ClaimReader
from .dra_objects import (
    DraObjectError,
    parse_claim_template,
    parse_device_class,
    parse_resource_claim,
    parse_resource_slice,
)
from .dra_store import DeviceKey, DraRecords, ObjectKey
from .objects import NodeInfo, ObjectError, PodInfo
from .reservations import ReservationIndex
from .sources import Usage, build_node_state

log = logging.getLogger(__name__)

# Pods answered in the last assume_ttl_s (30 s): kube-scheduler binds a few hundred pods per second at most.
_ASSUMED_LIMIT = 20_000  # worst ~8 MB (~390 B per entry with a 36-character uid, measured)
# Node changes remembered, so that callers holding an answer computed at some generation can tell which nodes it
# may be wrong for: a few seconds of a busy 10,000-node cluster's events.
_CHANGE_LOG_LIMIT = 4_096
# Unknown GPU products already logged: a cluster has a few (non-MIG GPUs, new parts); a bound on hostile labels.
_PRODUCTS_LOGGED_LIMIT = 256


def _plugin_part(demand: PodDemand) -> PodDemand:
    return demand if demand.claims is None else PodDemand(demand.mig, demand.gpus)


class Kind(enum.StrEnum):
    NODES = "nodes"
    PODS = "pods"
    CONFIG = "configmap"
    RESOURCE_SLICES = "resourceslices"
    RESOURCE_CLAIMS = "resourceclaims"
    CLAIM_TEMPLATES = "resourceclaimtemplates"
    DEVICE_CLASSES = "deviceclasses"


DRA_KINDS = frozenset({Kind.RESOURCE_SLICES, Kind.RESOURCE_CLAIMS, Kind.CLAIM_TEMPLATES, Kind.DEVICE_CLASSES})
"""The ``resource.k8s.io/v1`` kinds: a cluster without that API has none (see :meth:`ClusterView.mark_absent`)."""

_DRA_PARSERS: dict[Kind, Callable[[Any], Any]] = {
    Kind.RESOURCE_SLICES: parse_resource_slice,
    Kind.RESOURCE_CLAIMS: parse_resource_claim,
    Kind.CLAIM_TEMPLATES: parse_claim_template,
    Kind.DEVICE_CLASSES: parse_device_class,
}


@dataclass
class SyncState:
    synced: bool = False
    last_ok: float | None = None
    relists: int = 0
    absent: bool = False
    """The API server does not serve the kind (its API group is off): the view holds none of it."""


@dataclass
class ViewCounters:
    """Counts that metrics export; kept here so the view needs no metrics library."""

    invalid_objects: int = 0
    invalid_configs: int = 0
    invalid_annotations: int = 0
    node_warnings: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unknown_products: dict[str, str] = field(default_factory=dict)
    """Node -> its ``nvidia.com/gpu.product`` that names no catalog model (the node is left to kube-scheduler)."""

    def unknown_product_nodes(self) -> dict[str, int]:
        """Nodes per unknown GPU product."""
        counts: dict[str, int] = {}
        for product in self.unknown_products.values():
            counts[product] = counts.get(product, 0) + 1
        return counts


_V = TypeVar("_V")


class _Assumptions(TTLCache[str, tuple[str, _V]], Generic[_V]):
    """Assumptions by pod uid: (node, what is assumed there).

    cachetools also drops entries on its own, inside ``__setitem__`` (expired ones, discarded) and at its size
    limit (the least recently used one): each is reported to ``dropped``, so that the per-node index and the
    node's cached state follow, and no entry lingers for a node that is never rebuilt.
    """

    def __init__(
        self, maxsize: int, ttl: float, timer: Callable[[], float], dropped: Callable[[str, str, _V], None]
    ) -> None:
        super().__init__(maxsize, ttl, timer)
        self._dropped = dropped

    def expire(self, time: float | None = None) -> list[tuple[str, tuple[str, _V]]]:
        expired = super().expire(time)
        for uid, (node, what) in expired:
            self._dropped(uid, node, what)
        return expired

    def popitem(self) -> tuple[str, tuple[str, _V]]:
        uid, entry = super().popitem()
        self._dropped(uid, *entry)
        return uid, entry


class ClusterView:
    def __init__(
        self,
        *,
        config_ref: ConfigMapRef | None = None,
        assume_ttl_s: float = ViewSettings().assume_ttl_s,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config_ref = config_ref or ConfigMapRef()
        self.clock = clock
        self.nodes: dict[str, NodeInfo] = {}
        self.pods: dict[str, PodInfo] = {}
        self._pods_on_node: dict[str, dict[str, PodInfo]] = {}
        self._states: dict[str, NodeState] = {}
        self.mig_parted: MigPartedConfig = DEFAULT_CONFIG
        self.mig_parted_source = "built-in defaults"
        self._assumed: _Assumptions[PodDemand] = _Assumptions(
            _ASSUMED_LIMIT, assume_ttl_s, clock, self._assumption_dropped
        )
        # The same placements by node, so that rebuilding a node's state reads its own.
        self._assumed_on_node: dict[str, dict[str, PodDemand]] = {}
        self.dra = DraRecords()
        """ResourceSlices, ResourceClaims, ResourceClaimTemplates and DeviceClasses, indexed per node."""
        self.claim_reader = ClaimReader(self.dra, self._gather_samples)
        """Pods' MIG claims read against those records."""
        self._claim_pods: set[str] = set()
        self._slices_read = -1
        """The slice version whose nodes' sample devices the claim reader has (see :meth:`_gather_samples`)."""
        self._slices_version = 0
        """Uids of the pods whose claims are read (pending, with a ``claims_source``)."""
        # DRA devices assumed for a pod: by uid, (node, claim -> devices); by node and by claim for the drops.
        self._assumed_devices: _Assumptions[dict[ObjectKey, frozenset[DeviceKey]]] = _Assumptions(
            _ASSUMED_LIMIT, assume_ttl_s, clock, self._devices_dropped
        )
        self._assumed_devices_on_node: dict[str, set[str]] = {}
        self._assumed_by_claim: dict[ObjectKey, set[str]] = {}
        self._in_use: dict[str, frozenset[DeviceKey]] = {}
        self.reservations = ReservationIndex()
        """Room the defrag controller holds for pending pods, by node (read from the pods' annotation)."""
        self._inventories: dict[str, Inventory] = {}
        self.sync = {kind: SyncState() for kind in Kind}
        self.counters = ViewCounters()
        self._products_logged: set[str] = set()
        self.static = False
        """A snapshot: nothing streams into the view, so it cannot go stale."""
        self.generation = 0
        """Bumped on every change: lets callers cache whole-view computations."""
        self._change_log: deque[tuple[int, str | None]] = deque()
        self._change_log_floor = 0
        """Every node change after this generation is in the log."""

    # --- writing -------------------------------------------------------------------------------------

    def _changed(self, node: str | None = None) -> None:
        """A node's state may have changed (every node's when ``node`` is None)."""
        self.generation += 1
        if node is None:
            self._states.clear()
            self._in_use.clear()
            self._inventories.clear()
        else:
            self._states.pop(node, None)
            self._in_use.pop(node, None)
            self._inventories.pop(node, None)
        self._log_change(node)

    def _log_change(self, node: str | None) -> None:
        if len(self._change_log) >= _CHANGE_LOG_LIMIT:
            self._change_log_floor = self._change_log.popleft()[0]
        self._change_log.append((self.generation, node))

    def changed_since(self, generation: int) -> set[str] | None:
        """Nodes whose state may differ from the one they had at ``generation``.

        None when every node may (a re-list or a mig-parted config change since), or when the log no longer
        reaches back that far. Changes that touch no node (a pending pod) bump the generation only.
        """
        if generation < self._change_log_floor:
            return None
        changed: set[str] = set()
        for at, node in reversed(self._change_log):
            if at <= generation:
                break
            if node is None:
                return None
            changed.add(node)
        return changed

    def mark_ok(self, kind: Kind) -> None:
        """A list, an event or a bookmark arrived: the stream of this kind is alive."""
        self.sync[kind].last_ok = self.clock()

    def mark_absent(self, kind: Kind) -> None:
        """The API server answered that it does not serve ``kind``: the view holds none, and is in sync."""
        first = not self.sync[kind].absent
        if first or self._has_any(kind):
            self.replace_parsed(kind, ())
        else:
            self.mark_ok(kind)
        self.sync[kind].absent = True

    def _has_any(self, kind: Kind) -> bool:
        if kind is Kind.RESOURCE_SLICES:
            return bool(self.dra.slices)
        if kind is Kind.RESOURCE_CLAIMS:
            return bool(self.dra.claims)
        if kind is Kind.CLAIM_TEMPLATES:
            return bool(self.dra.templates)
        if kind is Kind.DEVICE_CLASSES:
            return bool(self.dra.classes)
        return True

    def parse(self, kind: Kind, raw: Mapping[str, Any]) -> Any:
        """The view's record of one listed object (None when malformed; ConfigMaps stay raw)."""
        if kind is Kind.NODES:
            return self._read(NodeInfo.from_raw, raw)
        if kind is Kind.PODS:
            return self._read(PodInfo.from_raw, raw)
        if kind in _DRA_PARSERS:
            return self._read(_DRA_PARSERS[kind], raw)
        return raw if self._is_config_map(raw) else None

    def replace(self, kind: Kind, items: Iterable[Mapping[str, Any]]) -> None:
        """A (re-)list: the store becomes exactly ``items``; objects not listed were deleted meanwhile."""
        self.replace_parsed(kind, (self.parse(kind, raw) for raw in items))

    def replace_parsed(self, kind: Kind, records: Iterable[Any]) -> None:
        """``replace`` with records already made by :meth:`parse` (a paged list parses page by page)."""
        present = [r for r in records if r is not None]
        if kind is Kind.NODES:
            self.nodes = {node.name: node for node in present}
            for name in [n for n in self.counters.node_warnings if n not in self.nodes]:
                del self.counters.node_warnings[name]
            for name in [n for n in self.counters.unknown_products if n not in self.nodes]:
                del self.counters.unknown_products[name]
        elif kind is Kind.PODS:
            pods: dict[str, PodInfo] = {}
            on_node: dict[str, dict[str, PodInfo]] = {}
            self._claim_pods = set()
            for listed in present:
                pod = pods[listed.uid] = self._with_claims(listed)
                if pod.node_name and pod.is_active:
                    on_node.setdefault(pod.node_name, {})[pod.uid] = pod
            self.pods, self._pods_on_node = pods, on_node
            self.reservations.rebuild(pods.values())
            for uid in [u for u in self._assumed if u in pods and pods[u].node_name]:
                self._forget_assumed(uid)
            for uid in [u for u in self._assumed_devices if u not in pods]:
                self._forget_devices(uid)
        elif kind is Kind.RESOURCE_SLICES:
            self._slices_version += 1
            self.dra.replace_slices(present)
        elif kind is Kind.RESOURCE_CLAIMS:
            self.dra.replace_claims(present)
            for claim in present:
                if claim.allocation is not None:
                    self._claim_allocated((claim.namespace, claim.name))
        elif kind is Kind.CLAIM_TEMPLATES:
            self.dra.templates = {(t.namespace, t.name): t for t in present}
        elif kind is Kind.DEVICE_CLASSES:
            self.dra.classes = {c.name: c for c in present}
            self.claim_reader.classes_version += 1
        else:
            self._set_config(present[0] if present else None)
        if kind in DRA_KINDS:
            self._reread_claims()
        state = self.sync[kind]
        state.relists += 1
        state.synced = True
        state.absent = False
        self.mark_ok(kind)
        self._changed()

    def apply(self, kind: Kind, event_type: str, raw: Mapping[str, Any]) -> None:
        """One watch event: ADDED, MODIFIED or DELETED."""
        self.mark_ok(kind)
        if kind is Kind.NODES:
            node = self._read(NodeInfo.from_raw, raw)
            if node is None:
                return
            if event_type == "DELETED":
                self.nodes.pop(node.name, None)
                self.counters.node_warnings.pop(node.name, None)
                self.counters.unknown_products.pop(node.name, None)
            else:
                self.nodes[node.name] = node
            self._changed(node.name)
        elif kind is Kind.PODS:
            pod = self._read(PodInfo.from_raw, raw)
            if pod is not None:
                self._apply_pod(pod, deleted=event_type == "DELETED")
        elif kind in _DRA_PARSERS:
            self._apply_dra(kind, event_type, raw)
        elif self._is_config_map(raw):
            self._set_config(None if event_type == "DELETED" else raw)
            self._changed()

    def _apply_pod(self, pod: PodInfo, *, deleted: bool) -> None:
        old = self.pods.pop(pod.uid, None)
        if old is not None and old.node_name:
            on_node = self._pods_on_node.get(old.node_name)
            if on_node is not None:
                on_node.pop(pod.uid, None)
                if not on_node:  # no empty entry left behind for a node that is gone
                    del self._pods_on_node[old.node_name]
            self._changed(old.node_name)
        self._claim_pods.discard(pod.uid)
        if deleted:
            self.reservations.forget(pod.uid, pod.key)
            self.unassume(pod.uid)
            return
        pod = self.pods[pod.uid] = self._with_claims(pod)
        self.reservations.track(pod)
        if pod.node_name:
            # Bound: the pod's own demand now counts. Devices assumed for its claims stay until the claims
            # show their allocation (written before the binding, but seen on another stream) or expire.
            previous = self._forget_assumed(pod.uid)
            if previous is not None and previous != pod.node_name:
                self._changed(previous)
            if pod.is_active:
                self._pods_on_node.setdefault(pod.node_name, {})[pod.uid] = pod
            self._changed(pod.node_name)
        else:
            self.generation += 1

    def _with_claims(self, pod: PodInfo) -> PodInfo:
        """The pod with its MIG claims read into its demand (a pending pod that may use DRA)."""
        if pod.claims_source is None or pod.demand_error:
            return pod
        self._claim_pods.add(pod.uid)
        demand = self.claim_reader.demand_of(pod.claims_source, pod.demand)
        return pod if demand == pod.demand else dataclasses.replace(pod, demand=demand)

    def _gather_samples(self) -> None:
        """Sample devices of every DRA node (their inventories are cached for the answers anyway), once per change
        of slices, so that a pod's claims read the same whichever node was asked about first."""
        if self._slices_read == self._slices_version:
            return
        self._slices_read = self._slices_version
        for node in list(self.dra.nodes_with_pools()):
            self.dra_inventory(node)

    def _reread_claims(self) -> None:
        """Claims, templates or classes changed: pending pods' claims are read again."""
        for uid in list(self._claim_pods):
            pod = self.pods[uid]
            self.pods[uid] = self._with_claims(dataclasses.replace(pod, demand=_plugin_part(pod.demand)))

    def annotate(self, pod_uid: str, changes: Mapping[str, str | None]) -> None:
        """Apply an annotation merge patch to the view's copy of a pod (where no API server echoes it)."""
        pod = self.pods.get(pod_uid)
        if pod is None:
            return
        annotations = {**pod.annotations, **{k: v for k, v in changes.items() if v is not None}}
        for key in [k for k, v in changes.items() if v is None]:
            annotations.pop(key, None)
        self.pods[pod_uid] = pod = dataclasses.replace(pod, annotations=annotations)
        self.reservations.track(pod)

    def _apply_dra(self, kind: Kind, event_type: str, raw: Mapping[str, Any]) -> None:
        record = self._read(_DRA_PARSERS[kind], raw)
        deleted = event_type == "DELETED"
        if record is None:
            if not deleted:
                return
            # The last state of a deleted object that does not parse: drop what the view holds by its name.
            metadata = raw.get("metadata")
            if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str):
                return
            name, namespace = metadata["name"], str(metadata.get("namespace") or "default")
        else:
            name, namespace = record.name, getattr(record, "namespace", "")
        if kind is Kind.RESOURCE_SLICES:
            self._slices_version += 1
            nodes = self.dra.remove_slice(name) if deleted else self.dra.put_slice(record)
            self._changed_nodes(nodes)
        elif kind is Kind.RESOURCE_CLAIMS:
            key = (namespace, name)
            nodes = self.dra.remove_claim(key) if deleted else self.dra.put_claim(record)
            if deleted or record.allocation is not None:
                nodes |= self._claim_allocated(key)
            self._changed_nodes(nodes)
        elif kind is Kind.CLAIM_TEMPLATES:
            key = (namespace, name)
            changed = self.dra.templates.pop(key, None) is not None if deleted else self.dra.put_template(record)
            self._changed_answers(changed)
        else:
            changed = self.dra.classes.pop(name, None) is not None if deleted else self.dra.put_class(record)
            if changed:
                self.claim_reader.classes_version += 1
            self._changed_answers(changed)
        self._reread_claims()

    def _changed_nodes(self, nodes: Iterable[str]) -> None:
        """A DRA object changed the pools or the devices in use of ``nodes`` (only the generation, if none)."""
        touched = False
        for node in sorted(nodes):
            self._changed(node)
            touched = True
        if not touched:
            self.generation += 1

    def _changed_answers(self, changed: bool) -> None:
        """A DeviceClass or a ResourceClaimTemplate changed: no node's state, but any DRA answer may differ."""
        if changed:
            self.generation += 1
            self._log_change(None)

    def _read(self, parse: Callable[[Mapping[str, Any]], Any], raw: Mapping[str, Any]) -> Any:
        try:
            return parse(raw)
        except (ObjectError, DraObjectError) as exc:
            self.counters.invalid_objects += 1
            log.warning("ignoring malformed object: %s", exc)
            return None

    def _is_config_map(self, raw: Mapping[str, Any]) -> bool:
        metadata = raw.get("metadata")
        if not isinstance(metadata, Mapping):
            return False
        return (
            raw.get("kind", "ConfigMap") == "ConfigMap"
            and metadata.get("name") == self.config_ref.name
            and metadata.get("namespace", self.config_ref.namespace) == self.config_ref.namespace
        )

    def _set_config(self, raw: Mapping[str, Any] | None) -> None:
        where = f"ConfigMap {self.config_ref.namespace}/{self.config_ref.name}"
        if raw is None:
            self.mig_parted, self.mig_parted_source = DEFAULT_CONFIG, "built-in defaults"
            return
        data = raw.get("data")
        text = data.get(self.config_ref.key) if isinstance(data, Mapping) else None
        try:
            if not isinstance(text, str):
                raise MigPartedError(f"key {self.config_ref.key!r} is missing")
            self.mig_parted = parse_config(text)
            self.mig_parted_source = where
        except MigPartedError as exc:
            # Keep the last good config: a bad edit must not change how every node is read.
            self.counters.invalid_configs += 1
            log.warning("%s is invalid, keeping %s: %s", where, self.mig_parted_source, exc)

    # --- assumed placements ----------------------------------------------------------------------------

    def assume(self, pod_uid: str, node: str, demand: PodDemand) -> None:
        """Count ``demand`` as used on ``node`` until the pod's binding is seen or the TTL passes."""
        self.unassume(pod_uid)
        self._assumed[pod_uid] = (node, demand)
        self._assumed_on_node.setdefault(node, {})[pod_uid] = demand
        self._changed(node)

    def assumed_node(self, pod_uid: str) -> str | None:
        """The node the pod is assumed on (its placement or its claims' devices), if any."""
        self.expire_assumed()
        entry = self._assumed.get(pod_uid) or self._assumed_devices.get(pod_uid)
        return entry[0] if entry is not None else None

    def unassume(self, pod_uid: str) -> None:
        """Drop everything assumed for the pod: its placement and the DRA devices of its claims."""
        previous = self._forget_assumed(pod_uid)
        if previous is not None:
            self._changed(previous)
        self.unassume_devices(pod_uid)

    def _forget_assumed(self, pod_uid: str) -> str | None:
        """Drop the pod's assumed placement; returns the node it was on."""
        previous = self._assumed.pop(pod_uid, None)
        if previous is None:
            return None
        self._unindex_assumed(pod_uid, previous[0])
        return previous[0]

    def _unindex_assumed(self, pod_uid: str, node: str) -> None:
        on_node = self._assumed_on_node.get(node)
        if on_node is not None:
            on_node.pop(pod_uid, None)
            if not on_node:
                del self._assumed_on_node[node]

    def _assumption_dropped(self, pod_uid: str, node: str, _demand: PodDemand) -> None:
        """An assumed placement expired or was evicted at the cache's size limit."""
        self._unindex_assumed(pod_uid, node)
        self._changed(node)

    def expire_assumed(self) -> None:
        """Drop assumed placements past their time now (each one read also does): ``generation`` is then current."""
        self._assumed.expire()  # reports each expired placement to _assumption_dropped
        self._assumed_devices.expire()  # and each expired device assumption to _devices_dropped

    # --- assumed DRA devices ---------------------------------------------------------------------------

    def assume_devices(self, pod_uid: str, node: str, devices: Mapping[tuple[str, str], Iterable[DeviceKey]]) -> None:
        """Count the devices predicted for the pod's claims (``(namespace, name)`` -> ``(driver, pool, device)``)
        as in use on ``node`` until each claim shows an allocation, the pod is deleted or the TTL passes.

        Claims already allocated are left out (their allocation counts already). A later call for the same pod
        replaces this one, as :meth:`unassume` drops it.
        """
        self.unassume_devices(pod_uid)
        kept = {
            key: frozenset(keys)
            for key, keys in devices.items()
            if (claim := self.dra.claims.get(key)) is None or claim.allocation is None
        }
        kept = {key: keys for key, keys in kept.items() if keys}
        if not kept:
            return
        self._assumed_devices[pod_uid] = (node, kept)
        self._assumed_devices_on_node.setdefault(node, set()).add(pod_uid)
        for key in kept:
            self._assumed_by_claim.setdefault(key, set()).add(pod_uid)
        self._changed(node)

    def unassume_devices(self, pod_uid: str) -> None:
        previous = self._forget_devices(pod_uid)
        if previous is not None:
            self._changed(previous)

    def assumed_devices(self, pod_uid: str) -> tuple[str, Mapping[ObjectKey, frozenset[DeviceKey]]] | None:
        """The node and the devices per claim assumed for the pod, if any."""
        self._assumed_devices.expire()
        return self._assumed_devices.get(pod_uid)

    def _forget_devices(self, pod_uid: str) -> str | None:
        previous = self._assumed_devices.pop(pod_uid, None)
        if previous is None:
            return None
        self._unindex_devices(pod_uid, *previous)
        return previous[0]

    def _unindex_devices(self, pod_uid: str, node: str, claims: Mapping[ObjectKey, frozenset[DeviceKey]]) -> None:
        on_node = self._assumed_devices_on_node.get(node)
        if on_node is not None:
            on_node.discard(pod_uid)
            if not on_node:
                del self._assumed_devices_on_node[node]
        for key in claims:
            uids = self._assumed_by_claim.get(key)
            if uids is not None:
                uids.discard(pod_uid)
                if not uids:
                    del self._assumed_by_claim[key]

    def _devices_dropped(self, pod_uid: str, node: str, claims: dict[ObjectKey, frozenset[DeviceKey]]) -> None:
        """A device assumption expired or was evicted at the cache's size limit."""
        self._unindex_devices(pod_uid, node, claims)
        self._changed(node)

    def _claim_allocated(self, key: ObjectKey) -> set[str]:
        """The claim shows an allocation (or is gone): what was assumed for it no longer counts.

        Returns the nodes whose assumed devices changed.
        """
        nodes: set[str] = set()
        for uid in self._assumed_by_claim.pop(key, ()):
            entry = self._assumed_devices.get(uid)
            if entry is None:
                continue
            node, claims = entry
            if claims.pop(key, None) is not None:
                nodes.add(node)
            if not claims:
                self._forget_devices(uid)
        return nodes

    # --- reading -------------------------------------------------------------------------------------

    def node_state(self, name: str) -> NodeState | None:
        """The node's GPUs, or None for a node the view does not know."""
        self.expire_assumed()
        state = self._states.get(name)
        if state is None:
            node = self.nodes.get(name)
            if node is None:
                return None
            state = self._states[name] = self._build(node)
        return state

    def node_states_for(self, names: Sequence[str]) -> list[NodeState | None]:
        """``node_state`` for every name of a request at once (one expiry pass; a C-level map when warm)."""
        self.expire_assumed()
        states = list(map(self._states.get, names))
        if not all(states):  # states not built yet (nodes that changed since the last request), or unknown names
            for position in compress(range(len(states)), map(operator.not_, states)):
                states[position] = self.node_state(names[position])
        return states

    def node_state_for(self, node: NodeInfo) -> NodeState:
        """The state of a node object sent in a request; the cached one if it is the version the view has."""
        known = self.nodes.get(node.name)
        if known is not None and known.resource_version == node.resource_version:
            state = self.node_state(node.name)
            if state is not None:
                return state
        return self._build(node, in_view=False)

    def _build(self, node: NodeInfo, *, in_view: bool = True) -> NodeState:
        """The node's state from its object and the pods on it; ``in_view`` False for a request's own copy.

        Warnings are logged and kept per node only for the view's nodes: a request's Node objects are not
        the cluster's (a client may invent any number), so their warnings go to the answer's reasons only.
        """
        if self.dra.has_driver(node.name):
            # NVIDIA's DRA driver publishes the node's GPUs: its devices and their allocations are the state
            # (pods' extended-resource counts would count a claim's devices a second time).
            found = self.dra_inventory(node.name)
            assert found is not None
            state = found.node
        else:
            state = build_node_state(node, self._usage(node), self.mig_parted)
        if not in_view:
            return state
        if state.unknown_product is not None:
            self._note_unknown_product(node.name, state.unknown_product.product)
        else:
            self.counters.unknown_products.pop(node.name, None)
        if state.warnings:
            if self.counters.node_warnings.get(node.name) != state.warnings:
                for warning in state.warnings:
                    log.warning("%s", warning)
                if node.gpus_annotation is not None and state.fidelity not in (Fidelity.EXACT, Fidelity.DRA):
                    self.counters.invalid_annotations += 1
            self.counters.node_warnings[node.name] = state.warnings
        else:
            self.counters.node_warnings.pop(node.name, None)
        return state

    def _usage(self, node: NodeInfo) -> Usage:
        """What the pods bound to the node hold, and what the extender assumed there."""
        usage = Usage()
        for pod in self._pods_on_node.get(node.name, {}).values():
            usage.add(pod.demand)
        bound = self._pods_on_node.get(node.name, {})
        for uid, demand in list(self._assumed_on_node.get(node.name, {}).items()):
            entry = self._assumed.get(uid)
            if entry is None or entry[0] != node.name:  # expired (not purged yet), or moved
                self._unindex_assumed(uid, node.name)
            elif uid not in bound:
                usage.add(demand, assumed=True)
        return usage

    def _note_unknown_product(self, node: str, product: str) -> None:
        """Count the node under its unknown product; log each product once (a fleet of them is one line)."""
        self.counters.unknown_products[node] = product
        if product in self._products_logged:
            return
        if len(self._products_logged) >= _PRODUCTS_LOGGED_LIMIT:
            self._products_logged.clear()
        self._products_logged.add(product)
        log.warning(
            "GPU product %r (node %s and any others labelled so) is not in the catalog: such nodes are not "
            "evaluated; /filter passes them and kube-scheduler's own resource counts decide",
            product,
            node,
        )

    # --- DRA ---------------------------------------------------------------------------------------------

    def is_dra_node(self, name: str) -> bool:
        """The node has slices of NVIDIA's DRA driver: its GPU state comes from its devices."""
        return self.dra.has_driver(name)

    def dra_pools(self, node: str) -> tuple[Pool, ...]:
        """The node's pools (every driver's), as ``extender.model.dra.pools.pools_of`` gathers them."""
        return self.dra.pools(node)

    def dra_allocated(self, node: str) -> frozenset[DeviceKey]:
        """Devices of the node's pools that allocated claims hold (adminAccess results excluded)."""
        return self.dra.allocated(node)

    def dra_assumed(self, node: str) -> frozenset[DeviceKey]:
        """Devices the extender assumed for pods on the node whose claims show no allocation yet."""
        uids = self._assumed_devices_on_node.get(node)
        if not uids:
            return frozenset()
        found: set[DeviceKey] = set()
        for uid in list(uids):
            entry = self._assumed_devices.get(uid)
            if entry is None or entry[0] != node:  # expired (not purged yet)
                continue
            for keys in entry[1].values():
                found |= keys
        return frozenset(found)

    def dra_in_use(self, node: str) -> frozenset[DeviceKey]:
        """Allocated or assumed devices of the node's pools: what the allocator must not pick again."""
        self.expire_assumed()
        found = self._in_use.get(node)
        if found is None:
            allocated, assumed = self.dra.allocated(node), self.dra_assumed(node)
            found = self._in_use[node] = allocated | assumed if assumed else allocated
        return found

    def dra_inventory(self, node: str) -> Inventory | None:
        """The node's ``gpu.nvidia.com`` devices in catalog terms with :meth:`dra_in_use` applied (None for a node
        without that driver's slices); cached until the node's pools or devices in use change."""
        found = self._inventories.get(node)
        if found is None:
            if not self.dra.has_driver(node):
                return None
            in_use = self.dra_in_use(node)
            found = self._inventories[node] = inventory(node, self.dra.pools(node), in_use)
            self.claim_reader.add_samples(found.samples)
        return found

    def claim(self, namespace: str, name: str) -> ResourceClaim | None:
        return self.dra.claims.get((namespace, name))

    def claim_template(self, namespace: str, name: str) -> ClaimTemplate | None:
        return self.dra.templates.get((namespace, name))

    def device_class(self, name: str) -> DeviceClass | None:
        return self.dra.classes.get(name)

    def resource_slices(self) -> Mapping[str, ResourceSlice]:
        """Every ResourceSlice by name (node-local or not)."""
        return self.dra.slices

    def node_states(self) -> Iterator[NodeState]:
        for name in list(self.nodes):
            state = self.node_state(name)
            if state is not None:
                yield state

    def pods_on(self, node: str) -> Iterable[PodInfo]:
        return self._pods_on_node.get(node, {}).values()

    def pending_mig_pods(self) -> Iterator[PodInfo]:
        return (p for p in self.pods.values() if p.is_pending_mig)

    def readiness(self, stale_after_s: float) -> tuple[bool, str]:
        """Ready when every stream has synced and each was heard from within ``stale_after_s``."""
        now = self.clock()
        for kind, state in self.sync.items():
            if not state.synced:
                return False, f"{kind} not synced yet"
            if self.static:
                continue
            if state.last_ok is None or now - state.last_ok > stale_after_s:
                age = "never" if state.last_ok is None else f"{now - state.last_ok:.0f}s ago"
                return False, f"{kind} view is stale (last good sync {age})"
        return True, "ok"

    def staleness(self) -> dict[str, float]:
        now = self.clock()
        return {str(k): (now - s.last_ok if s.last_ok is not None else float("inf")) for k, s in self.sync.items()}
