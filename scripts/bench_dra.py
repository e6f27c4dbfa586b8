"""The DRA cluster of ``scripts/bench --dra``: nodes as NVIDIA's DRA driver publishes them, claims and pods.

Each node has 8 H100 80GB GPUs with DynamicMIG, published in the driver's slices
(``extender.model.dra.driver.dynamic_mig_slices``), and about ``--pods-per-node`` running pods, each holding one
allocated claim of one MIG device at a legal placement that overlaps no other on its GPU (shapes drawn from the
``inference`` mix). The DeviceClasses are those the driver's chart installs, and one per MIG profile the demands
name that stands for its extended resource (``nvidia.com/mig-1g.10gb``), as in the driver's demo. Pending pods
ask for their demand through the claim the resourceclaim controller made from the demand's template (one
template per demand of ``--demands``), or (a share ``--dra-extended`` of them) through the extended resources.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path
from typing import Any

import orjson

from extender.model.catalog import GpuModel, model_named
from extender.model.dra.driver import DRIVER, RESOURCE_API, dynamic_mig_slices, mig_device_name
from extender.model.fragmentation import NAMED_MIXES
from extender.model.placement import Placement, PlacementError, free_starts, occupancy_of
from extender.view.snapshot import load_snapshot
from extender.view.store import ClusterView, Kind

MIX = NAMED_MIXES["inference"]
NAMESPACE = "ml"
"""scripts/bench's namespace for every pod and claim."""

Drawn = list[tuple[int, dict[str, int], list[int]]]
"""Pending pods: (index, demand, the indexes of the nodes it is sent), as scripts/bench draws them."""

DRA_PRODUCT = "NVIDIA-H100-80GB-HBM3"
"""DRA nodes are 8 x H100 80GB with DynamicMIG: this GFD product label, the catalog model it names."""
DRA_GPUS = 8
MIG_CLASS = "mig.nvidia.com"
# deployments/helm/dra-driver-nvidia-gpu/templates/deviceclass-*.yaml of kubernetes-sigs/dra-driver-nvidia-gpu
# (the GPU class under resource.k8s.io/v1 also stands for the extended resource nvidia.com/gpu).
CHART_CLASSES = {
    "gpu.nvidia.com": (f"device.driver == '{DRIVER}' && device.attributes['{DRIVER}'].type == 'gpu'", "nvidia.com/gpu"),
    MIG_CLASS: (f"device.driver == '{DRIVER}' && device.attributes['{DRIVER}'].type == 'mig'", ""),
}
POD_CLAIM = "mig"
"""The name of the pending pods' claim in their ``spec.resourceClaims``."""


def profile_selector(profile: str) -> str:
    return f"device.attributes['{DRIVER}'].profile == '{profile}'"


def device_class(name: str, selectors: list[str], extended: str = "") -> dict[str, Any]:
    spec: dict[str, Any] = {"selectors": [{"cel": {"expression": e}} for e in selectors]}
    if extended:
        spec["extendedResourceName"] = extended
    return {"apiVersion": RESOURCE_API, "kind": "DeviceClass", "metadata": {"name": name}, "spec": spec}


def dra_classes(demand_set: list[dict[str, int]]) -> list[dict[str, Any]]:
    """The chart's classes, and one class per MIG profile the demands name standing for its extended resource
    (``nvidia.com/mig-1g.10gb``: the driver's demo ``specs/extended-resources``)."""
    found = [device_class(name, [selector], extended) for name, (selector, extended) in CHART_CLASSES.items()]
    mig = CHART_CLASSES[MIG_CLASS][0]
    for resource in sorted({r for demand in demand_set for r in demand}):
        profile = resource.removeprefix("nvidia.com/mig-")
        found.append(device_class(resource.split("/", 1)[1], [mig, profile_selector(profile)], resource))
    return found


def claim_spec(demand: dict[str, int]) -> dict[str, Any]:
    """One request per profile of the demand, for its count of MIG devices of that profile."""
    requests = [
        {
            "name": f"mig-{number}",
            "exactly": {
                "deviceClassName": MIG_CLASS,
                "selectors": [{"cel": {"expression": profile_selector(resource.removeprefix("nvidia.com/mig-"))}}],
                "count": count,
            },
        }
        for number, (resource, count) in enumerate(sorted(demand.items()))
    ]
    return {"devices": {"requests": requests}}


def template_name(number: int) -> str:
    return f"bench-demand-{number}"


def dra_templates(demand_set: list[dict[str, int]]) -> list[dict[str, Any]]:
    """One ResourceClaimTemplate per demand of the set."""
    return [
        {
            "apiVersion": RESOURCE_API,
            "kind": "ResourceClaimTemplate",
            "metadata": {"name": template_name(number), "namespace": NAMESPACE},
            "spec": {"spec": claim_spec(demand)},
        }
        for number, demand in enumerate(demand_set)
    ]


def extended_form(index: int, share: float) -> bool:
    """Whether pending pod ``index`` asks through extended resources (else a claim from a template): a share
    ``share`` of the pods, spread evenly over the indexes (golden-ratio sequence)."""
    return (index * 0.6180339887498949) % 1 < share


def held_placements(rng: random.Random, model: GpuModel, count: int) -> list[tuple[int, Placement]]:
    """``count`` MIG devices (fewer when the node fills up) at legal, non-overlapping placements on the node's
    GPUs: each one of the inference mix's shapes, on a random GPU where it still fits, at a random free start."""
    shapes, weights = list(MIX), list(MIX.values())
    taken: list[list[Placement]] = [[] for _ in range(DRA_GPUS)]
    held: list[tuple[int, Placement]] = []
    for _ in range(count * 8):
        if len(held) == count:
            break
        profile = model.profile_for_shape(rng.choices(shapes, weights)[0])
        if profile is None:
            continue
        for gpu in rng.sample(range(DRA_GPUS), DRA_GPUS):
            occupied = occupancy_of(model, taken[gpu])
            starts = free_starts(profile, occupied)
            if not starts:
                continue
            placement = Placement(rng.choice(starts), profile)
            try:
                occupancy_of(model, (*taken[gpu], placement))
            except PlacementError:  # the profile's instance limit
                continue
            taken[gpu].append(placement)
            held.append((gpu, placement))
            break
    return held


def allocated_claim(name: str, node: str, device: str, profile: str, pod: str) -> dict[str, Any]:
    """A claim kube-scheduler allocated on ``node`` (one MIG device) and reserved for the running ``pod``."""
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
    return {
        "apiVersion": RESOURCE_API,
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}", "resourceVersion": "1"},
        "spec": claim_spec({f"nvidia.com/mig-{profile}": 1}),
        "status": {
            "allocation": {
                "devices": {"results": [{"request": "mig-0", "driver": DRIVER, "pool": node, "device": device}]},
                "nodeSelector": {"nodeSelectorTerms": [term]},
            },
            "reservedFor": [{"resource": "pods", "name": pod, "uid": f"uid-{pod}"}],
        },
    }


def pending_claim_name(index: int) -> str:
    return f"bench-{index}-{POD_CLAIM}"


def pending_claim(index: int, demand: dict[str, int]) -> dict[str, Any]:
    """The claim the resourceclaim controller made for pending pod ``index`` from its template, not allocated."""
    return {
        "apiVersion": RESOURCE_API,
        "kind": "ResourceClaim",
        "metadata": {
            "name": pending_claim_name(index),
            "namespace": NAMESPACE,
            "uid": f"uid-{pending_claim_name(index)}",
            "resourceVersion": "1",
            "annotations": {"resource.kubernetes.io/pod-claim-name": POD_CLAIM},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": f"bench-{index}", "uid": f"bench-{index}"}],
        },
        "spec": claim_spec(demand),
    }


def write_dra_cluster(
    path: Path,
    nodes: int,
    claims_per_node: int,
    seed: int,
    demand_set: list[dict[str, int]],
    pending: Drawn,
    share: float,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Write a snapshot of ``nodes`` DRA nodes (the driver's DynamicMIG slices for 8 H100 each), about
    ``claims_per_node`` allocated claims per node with the running pods they are reserved for, the classes, one
    template per demand, and the claims of the ``pending`` pods that ask through templates. Written node by
    node (5,000 nodes are ~1.2 GB of JSON). Returns the Node objects, a sample of allocated claims (for the
    watch-event figure), and how many pods the snapshot holds."""
    rng = random.Random(seed)
    model = model_named(DRA_PRODUCT)
    sample: list[dict[str, Any]] = []
    node_objects: list[dict[str, Any]] = []
    pods = 0
    with path.open("wb") as out:
        out.write(b'{"apiVersion":"v1","kind":"List","items":[')
        first = True

        def emit(items: list[dict[str, Any]]) -> None:
            nonlocal first
            for item in items:
                out.write(b"" if first else b",")
                out.write(orjson.dumps(item))
                first = False

        emit(dra_classes(demand_set))
        emit(dra_templates(demand_set))
        emit([pending_claim(index, demand) for index, demand, _ in pending if not extended_form(index, share)])
        for i in range(nodes):
            name = f"dra-{i:05d}"
            labels = {
                "kubernetes.io/hostname": name,
                "nvidia.com/gpu.product": DRA_PRODUCT,
                "nvidia.com/gpu.count": str(DRA_GPUS),
                "topology.kubernetes.io/zone": f"zone-{i % 3}",
            }
            allocatable = {"cpu": "192", "memory": "2Ti", "pods": "110"}
            node = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": labels, "resourceVersion": str(i + 1)},
                "spec": {},
                "status": {
                    "allocatable": allocatable,
                    "capacity": allocatable,
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }
            node_objects.append(node)
            items: list[dict[str, Any]] = [node, *dynamic_mig_slices(name, model, DRA_GPUS)]
            for j, (gpu, placement) in enumerate(held_placements(rng, model, claims_per_node)):
                pod, claim = f"{name}-p{j}", f"{name}-c{j}"
                allocated = allocated_claim(claim, name, mig_device_name(gpu, placement), placement.profile.name, pod)
                if len(sample) < 2000 and j < 4:
                    sample.append(allocated)
                items.append(allocated)
                items.append(
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {
                            "name": pod,
                            "namespace": NAMESPACE,
                            "uid": f"uid-{pod}",
                            "resourceVersion": "1",
                            "labels": {"app": "inference"},
                        },
                        "spec": {
                            "nodeName": name,
                            "schedulerName": "default-scheduler",
                            "resourceClaims": [{"name": POD_CLAIM, "resourceClaimName": claim}],
                            "containers": [
                                {"name": "main", "image": "cuda:12", "resources": {"claims": [{"name": POD_CLAIM}]}}
                            ],
                        },
                        "status": {"phase": "Running"},
                    }
                )
                pods += 1
            emit(items)
        out.write(b"]}")
    return node_objects, sample, pods


def dra_pod_args(
    index: int,
    demand: dict[str, int],
    names: list[str] | None,
    node_list: dict[str, Any] | None,
    template: str | None,
    uid: str | None = None,
) -> bytes:
    """A pending pod asking ``demand`` through the claim made from ``template``, or (``template`` None) through
    the extended resources DeviceClasses stand for."""
    metadata = {"name": f"bench-{index}", "namespace": NAMESPACE, "uid": uid or f"bench-{index}"}
    pod: dict[str, Any]
    if template is None:
        limits = {resource: str(count) for resource, count in demand.items()}
        pod = {"metadata": metadata, "spec": {"containers": [{"name": "main", "resources": {"limits": limits}}]}}
    else:
        pod = {
            "metadata": metadata,
            "spec": {
                "resourceClaims": [{"name": POD_CLAIM, "resourceClaimTemplateName": template}],
                "containers": [{"name": "main", "resources": {"claims": [{"name": POD_CLAIM}]}}],
            },
            "status": {"resourceClaimStatuses": [{"name": POD_CLAIM, "resourceClaimName": pending_claim_name(index)}]},
        }
    return orjson.dumps({"Pod": pod, "NodeNames": names, "Nodes": node_list})


def claim_event_apply_us(snapshot: Path, claims: list[dict[str, Any]]) -> float:
    """Median time to apply one claim watch event (an allocated claim deallocated: its pod left) to a view
    holding the cluster, and to rebuild its node's state (what the next request reads)."""
    view = ClusterView()
    load_snapshot(view, str(snapshot))
    times = []
    for claim in claims:
        raw = {**claim, "metadata": {**claim["metadata"], "resourceVersion": "2"}}
        raw.pop("status")
        node = claim["status"]["allocation"]["nodeSelector"]["nodeSelectorTerms"][0]["matchFields"][0]["values"][0]
        started = time.perf_counter()
        view.apply(Kind.RESOURCE_CLAIMS, "MODIFIED", raw)
        view.node_state(node)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6
