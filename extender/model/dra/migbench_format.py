"""ResourceSlices as MIGBench's agent publishes its fake H100s for kube-scheduler's DRA allocator, and their names.

Facts from MIGBench (https://github.com/FouoF/MIG-scheduler-benchmark): ``internal/agent/agent.go`` publishDRA,
``internal/agent/state.go`` H100State, ``deploy/nvidia-dra/fake-h100-kind.yaml``. Per node: the DeviceClass
``mig.nvidia.com`` (driver ``gpu.nvidia.com``, type ``mig``) and two slices of one pool named after the node
(generation 1, two slices), driver ``gpu.nvidia.com``, on the node. ``<node>-h100-counters`` (the node's name
lower-cased, runs of other characters than ``a-z0-9-`` turned into ``-``) declares one counter set per GPU,
``gpu-<g>-counter-set``, with ``memory-slice-0`` .. ``memory-slice-6`` (7 GPC slots, not the real H100's 8
memory slices). ``<node>-h100-devices`` lists, GPU by GPU, each profile in name order at each legal start
ascending: ``gpu<g>-mig-<profile without dots>-<start>`` with attributes ``type`` ``mig``, ``profile`` and
``index`` (the GPU), capacities ``memory`` (MiB) and ``multiprocessors`` (the compute share), consuming
``memory-slice-<s>`` of its GPU's set for each slot it takes. No product name, no UUID, no full-GPU device,
and no memory cap: 3g@0 + 1g@3 + 3g@4 is allocatable.

:mod:`.inventory` reads such pools as :data:`~extender.model.migbench.MIGBENCH_H100` GPUs, recognised by the
names below; a device that resembles them but disagrees is left out with a warning.
"""

from __future__ import annotations

import re
from typing import Any

from ..migbench import MIGBENCH_H100
from ..placement import Placement
from .driver import DRIVER, RESOURCE_API, resource_slice

DEVICE_CLASS = "mig.nvidia.com"
DEVICE_NAME = re.compile(r"^gpu(\d+)-mig-([0-9]+g[0-9a-z]+)-(\d+)$")
"""``gpu<g>-mig-<profile without dots>-<start>``: (GPU, profile, start)."""
INDEX = f"{DRIVER}/index"


def migbench_device_name(gpu: int, placement: Placement) -> str:
    return f"gpu{gpu}-mig-{placement.profile.name.replace('.', '')}-{placement.start}"


def counter_set_name(gpu: int) -> str:
    return f"gpu-{gpu}-counter-set"


def slot_counter(slot: int) -> str:
    return f"memory-slice-{slot}"


def _safe_name(node: str) -> str:
    """The node's name as MIGBench puts it in slice names (``safeName``)."""
    return re.sub(r"[^a-z0-9-]+", "-", node.lower())


def migbench_device_class() -> dict[str, Any]:
    """The DeviceClass MIGBench's agent applies beside the slices."""
    expression = f"device.driver == '{DRIVER}' && device.attributes['{DRIVER}'].type == 'mig'"
    return {
        "apiVersion": RESOURCE_API,
        "kind": "DeviceClass",
        "metadata": {"name": DEVICE_CLASS},
        "spec": {"selectors": [{"cel": {"expression": expression}}]},
    }


def _slots(start: int, size: int) -> dict[str, dict[str, str]]:
    return {slot_counter(s): {"value": "1"} for s in range(start, start + size)}


def _slice(node: str, suffix: str, generation: int, **spec: Any) -> dict[str, Any]:
    return resource_slice(f"{_safe_name(node)}-h100-{suffix}", node, generation, 2, **spec)


def _device(gpu: int, placement: Placement) -> dict[str, Any]:
    profile = placement.profile
    return {
        "name": migbench_device_name(gpu, placement),
        "attributes": {
            f"{DRIVER}/type": {"string": "mig"},
            f"{DRIVER}/profile": {"string": profile.name},
            INDEX: {"int": gpu},
        },
        "capacity": {
            f"{DRIVER}/memory": {"value": f"{profile.memory_mib}Mi"},
            f"{DRIVER}/multiprocessors": {"value": str(profile.multiprocessors)},
        },
        "consumesCounters": [
            {"counterSet": counter_set_name(gpu), "counters": _slots(placement.start, profile.compute_slices)}
        ],
    }


def migbench_slices(node: str, gpus: int, *, generation: int = 1) -> list[dict[str, Any]]:
    """The two slices MIGBench's agent publishes for ``node`` with ``gpus`` fake H100s: counters, then devices
    (GPU by GPU, profiles in name order, starts ascending: the order kube-scheduler's allocator tries them)."""
    if gpus < 1:
        raise ValueError(f"GPU count must be positive, not {gpus}")
    slots = MIGBENCH_H100.memory_slices
    counter_sets = [{"name": counter_set_name(g), "counters": _slots(0, slots)} for g in range(gpus)]
    devices = [
        _device(g, Placement(start, profile))
        for g in range(gpus)
        for profile in sorted(MIGBENCH_H100.profiles, key=lambda p: p.name)
        for start in sorted(profile.starts)
    ]
    return [
        _slice(node, "counters", generation, sharedCounters=counter_sets),
        _slice(node, "devices", generation, devices=devices),
    ]
