"""The dynamic first-fit world on the DRA model: nodes as NVIDIA's DRA driver publishes them, each pod's MIG as a
ResourceClaim, and the devices kube-scheduler's allocator takes (as the extender models it) held until it leaves.

- **Nodes.** A node of G GPUs is the driver's DynamicMIG publication (:func:`~extender.model.dra.driver.
  dynamic_mig_slices`), read as the extender reads it from the API: ``parse_resource_slice`` (the view's JSON
  reader), ``pools_of``, ``inventory``. Its state is the inventory's :class:`~extender.model.state.NodeState`.
- **Pods.** A pod asking ``n`` instances of a profile has one claim from a ResourceClaimTemplate: one request of
  ``n`` devices of class ``mig.nvidia.com`` (NVIDIA's class: ``type == 'mig'``) with a profile selector, as
  NVIDIA's documentation writes it. It is read by the extender's own claim path (``dra_demand``, then
  ``claims_demand``), so the demand is the one ``/filter`` would build for such a pod.
- **Placement.** ``policy.evaluate`` runs ``fit_claims`` (the allocator model) on each node; on the chosen node,
  the devices of its fit become devices in use (:meth:`Inventory.with_used`), and leave when the pod does.

Sharing. Every node of one GPU count is published under one template name: all of them share one parse of the
slices and one :class:`~extender.model.dra.allocator.PreparedPools` (with its CEL results), and nodes with the
same devices in use one :class:`Inventory` and state id, so that equal nodes are evaluated and scored once, as
in the other worlds. This is sound: NVIDIA's driver publishes one pool per node, named after it, and the
allocator looks for a node's devices in that pool only. The pools of other nodes that ``pools_of`` gathers for
a node of a real cluster are there for their counter slices, which offer no device; only an ``All`` request or
an invalid pool would read them, and these claims have neither. Two nodes with the same devices in use
therefore get the same devices, apart from the pool's name (``tests/simulate/test_dra_world.py`` checks it
against nodes published under their own names).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from ..model.catalog import GpuModel
from ..model.demand import PodDemand
from ..model.dra.demand import dra_demand
from ..model.dra.driver import DRIVER, dynamic_mig_slices
from ..model.dra.fit import claims_demand
from ..model.dra.inventory import DeviceKey, Inventory, inventory
from ..model.dra.pools import pools_of
from ..model.dra.types import DeviceClass, Pool
from ..model.fit import FitResult
from ..model.state import NodeState
from ..view.dra_objects import parse_claim_template, parse_device_class, parse_resource_slice

MIG_CLASS = "mig.nvidia.com"
MIG_CLASS_SELECTOR = f"device.driver == '{DRIVER}' && device.attributes['{DRIVER}'].type == 'mig'"
"""NVIDIA's ``mig.nvidia.com`` DeviceClass (kubernetes-sigs/dra-driver-nvidia-gpu, the Helm chart's
``deviceclass-mig.yaml``)."""
NAMESPACE = "sim"

Held = tuple[DeviceKey, ...]
"""The devices a pod's claims were allocated."""


def device_class_json() -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": MIG_CLASS},
        "spec": {"selectors": [{"cel": {"expression": MIG_CLASS_SELECTOR}}]},
    }


def claim_template_json(name: str, demand: PodDemand) -> dict[str, Any]:
    """A ResourceClaimTemplate asking ``demand``'s MIG instances: one request per profile, in the demand's order,
    each ``count`` devices of ``mig.nvidia.com`` with the profile's selector."""
    requests = [
        {
            "name": "mig" if len(demand.mig) == 1 else f"mig-{number}",
            "exactly": {
                "deviceClassName": MIG_CLASS,
                "allocationMode": "ExactCount",  # the API server's default, written as it stores the object
                "count": count,
                "selectors": [{"cel": {"expression": f"device.attributes['{DRIVER}'].profile == '{profile}'"}}],
            },
        }
        for number, (profile, count) in enumerate(demand.mig)
    ]
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"spec": {"devices": {"requests": requests}}},
    }


def claim_pod_json(template: str) -> dict[str, Any]:
    """A pod with one claim, ``mig``, made from ``template`` (not created yet: the template's spec is the claim's)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "sim-pod", "namespace": NAMESPACE},
        "spec": {
            "resourceClaims": [{"name": "mig", "resourceClaimTemplateName": template}],
            "containers": [{"name": "main", "resources": {"claims": [{"name": "mig"}]}}],
        },
    }


@dataclass(frozen=True, slots=True)
class _Template:
    name: str
    pools: tuple[Pool, ...]


class DraFleet:
    """DRA nodes and claim demands of one GPU model, shared by the policies of one run (see the module text)."""

    INVENTORIES_LIMIT = 20_000
    """Distinct (GPU count, devices in use) kept; a fill of 100 nodes meets a few thousand."""

    def __init__(self, model: GpuModel) -> None:
        self.model = model
        device_class = parse_device_class(device_class_json())
        self.classes: dict[str, DeviceClass] = {device_class.name: device_class}
        self._templates: dict[int, _Template] = {}
        self._inventories: dict[tuple[int, frozenset[DeviceKey]], Inventory] = {}
        self._demands: dict[PodDemand, PodDemand] = {}

    def _template(self, gpus: int) -> _Template:
        found = self._templates.get(gpus)
        if found is None:
            name = f"sim-dra-{self.model.name.lower()}-{gpus}"
            slices = [parse_resource_slice(s) for s in dynamic_mig_slices(name, self.model, gpus)]
            found = self._templates[gpus] = _Template(name, pools_of(slices, name))
        return found

    def inventory(self, gpus: int, in_use: frozenset[DeviceKey] = frozenset()) -> Inventory:
        """The devices of a node of ``gpus`` GPUs with ``in_use`` allocated (one object per distinct state)."""
        key = (gpus, in_use)
        found = self._inventories.get(key)
        if found is None:
            if len(self._inventories) >= self.INVENTORIES_LIMIT:
                self._inventories.clear()  # rebuilt on demand, with the same version (same pools, same use)
            template = self._template(gpus)
            found = self._inventories[key] = inventory(template.name, template.pools, in_use)
        return found

    def node(self, name: str, gpus: int, in_use: frozenset[DeviceKey] = frozenset()) -> NodeState:
        return replace(self.inventory(gpus, in_use).node, name=name)

    def taken(self, node: NodeState, result: FitResult) -> tuple[NodeState, Held]:
        """The node once the devices of ``result`` (a fit of ``fit_claims`` on it) are allocated, and those devices."""
        held = tuple(key for claim in result.devices for key in claim)
        return self._with(node, _in_use(node) | frozenset(held)), held

    def released(self, node: NodeState, held: Iterable[DeviceKey]) -> NodeState:
        """The node once the devices ``held`` are free again."""
        return self._with(node, _in_use(node) - frozenset(held))

    def _with(self, node: NodeState, in_use: frozenset[DeviceKey]) -> NodeState:
        return self.node(node.name, len(node.gpus), in_use)

    def demand(self, demand: PodDemand) -> PodDemand:
        """``demand`` (MIG instances per profile) as a pod asking them through one ResourceClaim."""
        found = self._demands.get(demand)
        if found is None:
            spelled = "-".join(f"{count}x-{profile}" for profile, count in demand.mig)
            name = "mig-" + re.sub(r"[^a-z0-9-]", "-", spelled.replace(".", "").lower())
            template = parse_claim_template(claim_template_json(name, demand))
            resolved = dra_demand(claim_pod_json(name), {}, {(NAMESPACE, name): template}, self.classes)
            claims = claims_demand(resolved, self.classes, self.inventory(1).samples)
            if claims is None:
                raise ValueError(f"{demand.text()}: no MIG claim to allocate ({resolved.text()})")
            found = self._demands[demand] = PodDemand(claims=claims)
        return found


def _in_use(node: NodeState) -> frozenset[DeviceKey]:
    if node.devices is None:
        raise ValueError(f"node {node.name} publishes no DRA devices")
    return node.devices.in_use
