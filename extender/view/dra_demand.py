"""What a pod asks of DRA, read against the view's claims, templates and DeviceClasses.

The same reading serves kube-scheduler's requests (the Pod it sends) and the view's own pods (the verdict scan):
:func:`extender.model.dra.demand.dra_demand` resolves the pod's claims, and
:func:`extender.model.dra.fit.claims_demand` keeps the MIG part as a demand shared by pods with the same claims.
A pod whose claims cannot be evaluated yet (a claim or template not there) is no MIG pod for now; the reason is
counted and logged once per reason, and the nodes are left to kube-scheduler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from cachetools import LRUCache

from ..model.demand import PodDemand
from ..model.dra.demand import EXTENDED_CLAIM, ClaimKey, extended_resource_classes
from ..model.dra.demand import dra_demand as resolve
from ..model.dra.driver import DRIVER
from ..model.dra.fit import ClaimsDemand, claims_demand, mig_claims
from ..model.dra.types import Device, DeviceClass
from .dra_store import DraRecords

log = logging.getLogger(__name__)

_SAMPLE_KEY = (f"{DRIVER}/productName", f"{DRIVER}/type", f"{DRIVER}/profile")

_LOGGED_LIMIT = 256  # distinct reasons logged once each; a bound on a hostile stream of odd pods
# Distinct claim sets read (pods with equal claims share one): a few per workload.
_READ_LIMIT = 1_024


class ClaimReader:
    """Reads pods' claims against the view's DRA records; owned by :class:`~extender.view.store.ClusterView`."""

    def __init__(self, records: DraRecords, gather_samples: Callable[[], None] = lambda: None) -> None:
        self.records = records
        self._gather_samples = gather_samples
        """Called before samples are read: the view adds those of nodes whose slices it has not read yet."""
        self._index: tuple[int, Mapping[str, DeviceClass]] | None = None
        self._samples: dict[tuple[object, ...], Device] = {}
        """One device per GPU product, device type and profile: what the claims are read in profiles against."""
        self._read: LRUCache[tuple[object, ...], ClaimsDemand | None] = LRUCache(maxsize=_READ_LIMIT)
        self._logged: LRUCache[str, bool] = LRUCache(maxsize=_LOGGED_LIMIT)
        self.not_evaluable = 0
        """Pods read whose claims could not be evaluated (a metric counts them)."""
        self.classes_version = 0
        """Bumped by the view when a DeviceClass changes."""

    def add_samples(self, devices: tuple[Device, ...]) -> None:
        """Devices as the driver publishes them (one per model and profile), from each inventory built."""
        for device in devices:
            key = tuple(device.attribute(name) for name in _SAMPLE_KEY)
            if key not in self._samples:
                self._samples[key] = device
                self._read.clear()  # profile readings may change with a new kind of device

    def _extended_index(self) -> Mapping[str, DeviceClass]:
        if self._index is None or self._index[0] != self.classes_version:
            self._index = (self.classes_version, extended_resource_classes(self.records.classes.values()))
        return self._index[1]

    def claims_of(self, pod: Mapping[str, Any], plugin: PodDemand) -> ClaimsDemand | None:
        """The pod's MIG claims (and extended resources a DeviceClass backs), or None: none, or not evaluable."""
        spec = pod.get("spec")
        has_claims = isinstance(spec, Mapping) and bool(spec.get("resourceClaims"))
        if not has_claims and not self.records.classes:
            return None
        index = self._extended_index()
        if not has_claims and not _asks_backed(pod, index, plugin):
            return None
        demand = resolve(pod, self.records.claims, self.records.templates, self.records.classes, index)
        if not demand.evaluable:
            self.not_evaluable += 1
            reason = demand.not_evaluable
            if reason not in self._logged:
                self._logged[reason] = True
                log.info(
                    "pod %s/%s: DRA claims not evaluated (nodes left to kube-scheduler): %s",
                    demand.namespace,
                    demand.pod,
                    reason,
                )
            return None
        self._gather_samples()
        # What the reading depends on, without the pod's own name: pods with equal claims share it.
        extended = demand.extended_claim_on({})
        claims = (*demand.claims, extended) if extended is not None else demand.claims
        key = (
            tuple((c.pod_claim, c.spec, c.allocated, c.allocated_node, c.source) for c in claims),
            demand.extended,
            demand.pinned_node,
            self.classes_version,
        )
        if key not in self._read:
            self._read[key] = claims_demand(demand, self.records.classes, tuple(self._samples.values()))
        return self._read[key]

    def claim_keys(self, pod: Mapping[str, Any], uid: str) -> tuple[ClaimKey, ...]:
        """(namespace, name) of the pod's MIG claims in :attr:`ClaimsDemand.specs` order, for assumptions; a claim
        not created yet (from a template, or the extended-resource claim) gets a name of the pod's own."""
        demand = resolve(pod, self.records.claims, self.records.templates, self.records.classes, self._extended_index())
        return tuple(
            c.key if c.key[1] and c.key[1] != EXTENDED_CLAIM else (c.key[0], f"{uid}/{c.label}")
            for c in mig_claims(demand, self.records.classes)
        )

    def demand_of(self, pod: Mapping[str, Any], plugin: PodDemand) -> PodDemand:
        """``plugin`` (the device plugin's reading of the pod) with the pod's MIG claims, if any."""
        claims = self.claims_of(pod, plugin)
        return plugin if claims is None else PodDemand(plugin.mig, plugin.gpus, claims)


def _asks_backed(pod: Mapping[str, Any], index: Mapping[str, DeviceClass], plugin: PodDemand) -> bool:
    """Whether a container asks for an extended resource some DeviceClass backs (cheap for the common pod)."""
    if not index:
        return False
    if any(f"nvidia.com/mig-{name}" in index for name, _ in plugin.mig) or (plugin.gpus and "nvidia.com/gpu" in index):
        return True
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return False
    for key in ("containers", "initContainers"):
        for container in spec.get(key) or ():
            resources = container.get("resources") if isinstance(container, Mapping) else None
            if not isinstance(resources, Mapping):
                continue
            for section in ("limits", "requests"):
                values = resources.get(section)
                if isinstance(values, Mapping) and any(name in index for name in values):
                    return True
    return False
