"""ResourceSlices as NVIDIA's DRA driver (``gpu.nvidia.com``) publishes them, for any catalog model.

The simulator, the benchmarks and the tests build DRA nodes with these; the view reads the same JSON from the
API. Facts from kubernetes-sigs/dra-driver-nvidia-gpu (``cmd/gpu-kubelet-plugin``): one pool per node named
after it; with DynamicMIG on a 1.35+ API server, slice 0 carries one counter set per GPU
(``gpu-<minor>-counter-set``: the engine totals and ``memory-slice-0..N-1``) and each further slice one GPU,
the full GPU first and then every MIG profile at every legal placement, sorted by name
(``gpu-<minor>-mig-<profile>-<giProfileId>-<start>``, ``partitions.go``, ``mig.go``). Without DynamicMIG
(pre-created instances) one slice lists the MIG devices in no fixed order, each with ``memorySlice<i>``
capacities and no counters.

Engine counts per profile are the H100 80GB values the AWS Karpenter provider captured from a p5.48xlarge
(aws/karpenter-provider-aws ``pkg/providers/nvidiadra``): copy engines equal compute slices except 8 for the
full GPU, decoders and JPEG engines equal compute slices, one OFA on the full GPU and ``+me`` profiles. Other
models use the same rule; only memory slices constrain placements in practice. Where the catalog lacks a
profile's memory or multiprocessor count, a stand-in is published (the memory its name says, 16
multiprocessors per compute slice), and the full GPU's memory and multiprocessors are at least what any layout
the catalog allows takes in all, as on real GPUs: stand-ins never forbid a layout the catalog allows. A GPU
instance profile id the catalog lacks is published as 0 (the view does not check an id the catalog lacks).
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Sequence
from typing import Any

from ..catalog import GpuModel, Profile
from ..layouts import maximal_layouts
from ..placement import Placement

DRIVER = "gpu.nvidia.com"
RESOURCE_API = "resource.k8s.io/v1"
PRODUCT_NAMES = {
    "A100-40GB": "NVIDIA A100-SXM4-40GB",
    "A100-80GB": "NVIDIA A100-SXM4-80GB",
    "H100-80GB": "NVIDIA H100 80GB HBM3",
    "H100-NVL-94GB": "NVIDIA H100 NVL",
    "H200-141GB": "NVIDIA H200",
}
"""``productName`` as NVML reports it, for the models the tests and the simulator publish."""


def canonical_profile(profile: Profile) -> str:
    """The profile's part of a device name: dots removed, lower case, anything else not alphanumeric -> ``-``."""
    return re.sub(r"[^a-z0-9]", "-", profile.name.replace(".", "").lower())


def mig_device_name(minor: int, placement: Placement) -> str:
    profile = placement.profile
    gi = profile.profile_id if profile.profile_id is not None else 0
    return f"gpu-{minor}-mig-{canonical_profile(profile)}-{gi}-{placement.start}"


def _engines(model: GpuModel, profile: Profile | None) -> dict[str, int]:
    compute = model.compute_slices if profile is None else profile.compute_slices
    full = profile is None or compute == model.compute_slices
    return {
        "copy-engines": compute + 1 if full else compute,
        "decoders": compute,
        "encoders": 0,
        "jpeg-engines": compute,
        "ofa-engines": 1 if full or (profile is not None and "+me" in profile.name) else 0,
    }


def _memory_mib(model: GpuModel, profile: Profile) -> int:
    if profile.memory_mib is not None:
        return profile.memory_mib
    return int(re.sub(r"[^0-9]", "", profile.name.split(".")[1].split("+")[0] or "0") or 0) * 1024


def _multiprocessors(profile: Profile) -> int:
    return profile.multiprocessors if profile.multiprocessors is not None else profile.compute_slices * 16


def _profile_counters(model: GpuModel, profile: Profile) -> dict[str, str]:
    counters = {k: str(v) for k, v in _engines(model, profile).items()}
    counters["memory"] = f"{_memory_mib(model, profile)}Mi"
    counters["multiprocessors"] = str(_multiprocessors(profile))
    return counters


def _capacity_from(counters: dict[str, str]) -> dict[str, dict[str, str]]:
    """Capacities carry the counter values under camel-case names (``copy-engines`` -> ``copyEngines``)."""
    named = {re.sub(r"-([a-z])", lambda m: m.group(1).upper(), k): v for k, v in counters.items()}
    return {k: {"value": v} for k, v in sorted(named.items())}


def _wrap(counters: dict[str, str]) -> dict[str, dict[str, str]]:
    return {k: {"value": v} for k, v in sorted(counters.items())}


def _largest(model: GpuModel) -> Profile:
    return max(model.profiles, key=lambda p: (p.compute_slices, p.memory_slices))


_COVERED = ("memory", "multiprocessors")
"""Counters whose per-profile values may be stand-ins: the full GPU's must cover every layout's sum."""


def _full_counters(model: GpuModel) -> dict[str, str]:
    """The full GPU's counters: its profile's, memory and multiprocessors raised to the most a layout takes."""
    counters = _profile_counters(model, _largest(model))
    amounts = {p: _profile_counters(model, p) for p in model.profiles}
    for name in _COVERED:
        most = max(
            sum(_amount(amounts[p.profile][name]) for p in layout) for layout in maximal_layouts(model, model.profiles)
        )
        if most > _amount(counters[name]):
            counters[name] = f"{most}Mi" if name == "memory" else str(most)
    return counters


def _amount(text: str) -> int:
    return int(text.removesuffix("Mi"))


def _base_attributes(model: GpuModel, node: str, minor: int) -> dict[str, dict[str, str]]:
    return {
        "architecture": {"string": "Hopper" if model.name.startswith(("H100", "H200")) else "Ampere"},
        "brand": {"string": "Nvidia"},
        "cudaComputeCapability": {"version": "9.0.0"},
        "cudaDriverVersion": {"version": "13.0.0"},
        "driverVersion": {"version": "580.126.20"},
        "productName": {"string": PRODUCT_NAMES.get(model.name, f"NVIDIA {model.name}")},
        "resource.kubernetes.io/pciBusID": {"string": f"0000:{0x10 + minor:02x}:00.0"},
        "resource.kubernetes.io/pcieRoot": {"string": f"pci0000:{minor:02x}"},
    }


def gpu_uuid(node: str, minor: int) -> str:
    """A stable, made-up UUID per node and GPU (real ones come from NVML)."""
    digest = f"{zlib.crc32(f'{node}/{minor}'.encode()):012x}"
    return f"GPU-{minor:08x}-0000-4000-8000-{digest}"


def _slice(node: str, index: int, generation: int, count: int, **spec: Any) -> dict[str, Any]:
    return resource_slice(f"{index:05x}-{DRIVER}-{node}", node, generation, count, **spec)


def resource_slice(name: str, node: str, generation: int, count: int, **spec: Any) -> dict[str, Any]:
    """A ResourceSlice of this driver on ``node``, in the node's pool of ``count`` slices."""
    return {
        "apiVersion": RESOURCE_API,
        "kind": "ResourceSlice",
        "metadata": {"name": name},
        "spec": {
            "driver": DRIVER,
            "nodeName": node,
            "pool": {"name": node, "generation": generation, "resourceSliceCount": count},
            **spec,
        },
    }


def dynamic_mig_slices(node: str, model: GpuModel, gpus: int, *, generation: int = 1) -> list[dict[str, Any]]:
    """The G+1 slices of a DynamicMIG node on a 1.35+ API server: counters first, then one slice per GPU."""
    total = dict(_full_counters(model))
    slots = {f"memory-slice-{i}": "1" for i in range(model.memory_slices)}
    counter_sets = [{"name": f"gpu-{m}-counter-set", "counters": _wrap({**total, **slots})} for m in range(gpus)]
    slices = [_slice(node, 0, generation, gpus + 1, sharedCounters=counter_sets)]
    for minor in range(gpus):
        base = _base_attributes(model, node, minor)
        uuid = gpu_uuid(node, minor)
        counter_set = f"gpu-{minor}-counter-set"
        devices: list[dict[str, Any]] = [
            {
                "name": f"gpu-{minor}",
                "attributes": {**base, "type": {"string": "gpu"}, "uuid": {"string": uuid}},
                "capacity": _capacity_from(total),
                "consumesCounters": [{"counterSet": counter_set, "counters": _wrap({**total, **slots})}],
            }
        ]
        for profile in model.profiles:
            counters = _profile_counters(model, profile)
            for start in profile.starts:
                held = {f"memory-slice-{i}": "1" for i in range(start, start + profile.memory_slices)}
                devices.append(
                    {
                        "name": mig_device_name(minor, Placement(start, profile)),
                        "attributes": {
                            **base,
                            "type": {"string": "mig"},
                            "parentUUID": {"string": uuid},
                            "profile": {"string": profile.name},
                        },
                        "capacity": _capacity_from(counters),
                        "consumesCounters": [{"counterSet": counter_set, "counters": _wrap({**counters, **held})}],
                    }
                )
        devices.sort(key=lambda d: str(d["name"]))
        slices.append(_slice(node, minor + 1, generation, gpus + 1, devices=devices))
    return slices


def static_mig_slices(
    node: str,
    model: GpuModel,
    layouts: Sequence[Sequence[Placement]],
    *,
    generation: int = 1,
    shuffle: random.Random | None = None,
) -> list[dict[str, Any]]:
    """One slice of pre-created MIG devices, ``layouts[minor]`` on GPU ``minor``; ``shuffle`` mimics the driver's
    Go map order (the allocator then tries devices in an order nobody can predict)."""
    devices: list[dict[str, Any]] = []
    for minor, layout in enumerate(layouts):
        base = _base_attributes(model, node, minor)
        uuid = gpu_uuid(node, minor)
        for number, placement in enumerate(layout):
            profile = placement.profile
            capacity = _capacity_from(_profile_counters(model, profile))
            for i in range(placement.start, placement.start + profile.memory_slices):
                capacity[f"memorySlice{i}"] = {"value": "1"}
            devices.append(
                {
                    "name": mig_device_name(minor, placement),
                    "attributes": {
                        **base,
                        "type": {"string": "mig"},
                        "parentUUID": {"string": uuid},
                        "profile": {"string": profile.name},
                        "uuid": {"string": f"MIG-{minor:08x}-0000-5000-8000-{number:012x}"},
                    },
                    "capacity": dict(sorted(capacity.items())),
                }
            )
    if shuffle is not None:
        shuffle.shuffle(devices)
    return [_slice(node, 0, generation, 1, devices=devices)]
