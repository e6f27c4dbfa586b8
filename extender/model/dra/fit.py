"""Does a pod's MIG ResourceClaims fit on a DRA node, and where: the devices kube-scheduler's allocator would
take, as a :class:`~extender.model.fit.FitResult` like any other fit, so that the filter, the scores, the
verdicts and the simulator read DRA nodes as they read device-plugin nodes.

The pod's claims are first reduced to :class:`ClaimsDemand`: what any DRA node must allocate for the pod, with
the DeviceClasses it names resolved, and nothing of the pod itself (its name, its claims' names), so that pods
with the same claims share fits, kept answers and memos. On a node, :func:`fit_claims` runs the allocator model
(:mod:`.allocator`) on the node's pools with the devices in use: the allocator's first solution is the plan
(its devices' GPUs and placements), which the scores then judge. No solution: the node is ``wait`` if the
claims fit once its devices are free, else ``never``. A claim the model cannot evaluate passes (kube-scheduler
decides), with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..demand import PodDemand
from ..fit import FitResult, PlannedInstance, Verdict
from ..placement import Placement
from ..state import NodeState
from .allocator import Result
from .demand import DraDemand, PodClaim, profile_demand
from .driver import DRIVER
from .inventory import DeviceRef, Inventory
from .types import ClaimSpec, Device, DeviceClass, DeviceRequest

NO_DRA_DEVICES = "MIG: node publishes no devices of NVIDIA's DRA driver (gpu.nvidia.com) for ResourceClaims"


@dataclass(frozen=True, slots=True)
class ClaimsDemand:
    """The MIG part of a pod's ResourceClaims, as any DRA node must allocate it (hashable: fits are keyed by it)."""

    specs: tuple[ClaimSpec, ...]
    """The claims to allocate, in kube-scheduler's order: the pod's own, then the extended-resource claim."""
    own_claims: int
    """How many of ``specs`` are the pod's own claims (the rest is the extended-resource claim)."""
    backed: frozenset[str]
    """Extended resources (``nvidia.com/mig-1g.10gb``) a DeviceClass backs: a DRA node serves them as claims."""
    classes: tuple[DeviceClass, ...]
    """The DeviceClasses the requests name, resolved: a changed class is another demand."""
    pinned_node: str = ""
    """An allocated claim pins the pod to this node."""
    profiles: PodDemand | None = None
    """The same demand as MIG instances per profile, when it is exactly that (verdicts and the demand mix)."""
    text: str = field(default="", compare=False)

    @property
    def class_map(self) -> dict[str, DeviceClass]:
        return {c.name: c for c in self.classes}


def is_mig_request(request: DeviceRequest, classes: Mapping[str, DeviceClass]) -> bool:
    """Whether a request may take devices of NVIDIA's driver: its class or its own selectors name the driver.

    A claim for another driver's devices (a NIC, an FPGA) is none of the extender's business: kube-scheduler's
    own filter decides those, and the pod is not a MIG pod for that claim.
    """
    for alternative in request.alternatives:
        device_class = classes.get(alternative.device_class)
        texts = (*alternative.selectors, *(device_class.selectors if device_class else ()))
        if alternative.device_class.endswith(".nvidia.com") or any(DRIVER in t for t in texts):
            return True
    return False


def _is_mig_claim(claim: PodClaim, classes: Mapping[str, DeviceClass]) -> bool:
    return any(is_mig_request(r, classes) for r in claim.spec.requests)


def mig_claims(dra: DraDemand, classes: Mapping[str, DeviceClass]) -> tuple[PodClaim, ...]:
    """The claims to allocate that ask for NVIDIA devices, in kube-scheduler's order (the extended claim last):
    the claims of :attr:`ClaimsDemand.specs`, with the pod's names for them."""
    own = tuple(c for c in dra.to_allocate if _is_mig_claim(c, classes))
    extended = dra.extended_claim_on({})
    return (*own, extended) if extended is not None and _is_mig_claim(extended, classes) else own


def claims_demand(
    dra: DraDemand, classes: Mapping[str, DeviceClass], samples: Iterable[Device] = ()
) -> ClaimsDemand | None:
    """The pod's MIG claims as a :class:`ClaimsDemand`; None when the pod asks no MIG through DRA.

    ``samples`` (devices as the driver publishes them, e.g. :attr:`Inventory.samples`) let the demand be read in
    MIG profiles when it is a plain count of them.
    """
    if dra.is_empty or not dra.evaluable:
        return None
    claims = mig_claims(dra, classes)
    own = [c for c in claims if c.pod_claim]
    pinned = next((c.allocated_node for c in dra.claims if c.allocated and c.allocated_node), "")
    if not claims and not pinned:
        return None
    backed = frozenset(e.resource for e in dra.extended) if len(claims) > len(own) else frozenset()
    named = sorted({a.device_class for c in claims for r in c.spec.requests for a in r.alternatives})
    resolved = tuple(classes[n] for n in named if n in classes)
    found = profile_demand(dra, classes, samples) if samples else None
    text = " + ".join(c.text() for c in claims) or "allocated claims"
    if found is not None:
        text = found.text()
    return ClaimsDemand(
        tuple(c.spec for c in claims), len(own), backed, resolved, pinned, found.demand if found else None, text
    )


def _planned(ref: DeviceRef, inventory: Inventory) -> PlannedInstance:
    if ref.placement is not None:
        return PlannedInstance(ref.gpu, ref.placement)
    # The full GPU consumes every counter of its set: planned as the GPU's largest placement, all of it.
    gpu = inventory.gpu(ref.gpu)
    assert gpu is not None
    largest = max(gpu.model.profiles, key=lambda p: (p.memory_slices, p.compute_slices))
    return PlannedInstance(ref.gpu, Placement(0, largest))


def fit_claims(node: NodeState, demand: ClaimsDemand) -> FitResult:
    """Where kube-scheduler's allocator would put the claims on ``node``, or why they do not fit there."""
    inventory = node.devices
    if inventory is None:
        return FitResult(Verdict.NEVER, NO_DRA_DEVICES)
    if demand.pinned_node and demand.pinned_node != node.name:
        return FitResult(Verdict.NEVER, f"MIG: an allocated claim of the pod pins it to node {demand.pinned_node}")
    if not demand.specs:
        return FitResult(Verdict.FITS_NOW, "claims allocated on this node")
    outcome = inventory.allocate(demand.specs, demand.classes)
    if outcome.result is Result.CANNOT_EVALUATE:
        return FitResult(Verdict.NOT_EVALUATED, f"MIG: claims not evaluated here: {outcome.reason}")
    if outcome.result is Result.ALLOCATED:
        refs = [inventory.ref(r.key) for claim in outcome.claims for r in claim]
        plan = tuple(_planned(r, inventory) for r in refs if r is not None)
        devices = tuple(tuple(r.key for r in claim) for claim in outcome.claims)
        return FitResult(Verdict.FITS_NOW, "", plan, devices)
    emptied = inventory.allocate(demand.specs, demand.classes, idle=True)
    if emptied.result is Result.ALLOCATED:
        return FitResult(
            Verdict.WAIT, f"MIG: kube-scheduler's allocator finds no free devices for {demand.text} ({outcome.reason})"
        )
    return FitResult(Verdict.NEVER, f"MIG: {demand.text} exceeds what this node's DRA devices can ever hold")
