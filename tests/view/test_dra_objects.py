"""DRA objects from ``resource.k8s.io/v1`` JSON: slices as NVIDIA's driver publishes them, claims, templates and
classes as its docs and demos write them, and errors that name the object and the field."""

from __future__ import annotations

import copy
import random
from fractions import Fraction
from typing import Any

import pytest

from extender.model.catalog import model_named
from extender.model.dra.driver import dynamic_mig_slices, static_mig_slices
from extender.model.dra.types import (
    AllocatedDevice,
    AllocationMode,
    DeviceConstraint,
    DeviceTaint,
    DeviceToleration,
    TaintEffect,
    Version,
)
from extender.model.placement import Placement
from extender.view.dra_objects import (
    DraObjectError,
    parse_claim_template,
    parse_device_class,
    parse_resource_claim,
    parse_resource_slice,
)

H100 = model_named("H100-80GB")
MIB = 2**20
PROFILE_1G = "device.attributes['gpu.nvidia.com'].profile == '1g.10gb'"


def mig_template(name: str = "mig-profile", **request: Any) -> dict[str, Any]:
    """The claim template of the driver's MIG guide (one ``mig.nvidia.com`` device of one profile)."""
    exactly = {"deviceClassName": "mig.nvidia.com", "selectors": [{"cel": {"expression": PROFILE_1G}}], **request}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name, "namespace": "team-a", "uid": "t-1"},
        "spec": {"spec": {"devices": {"requests": [{"name": "mig", "exactly": exactly}]}}},
    }


def claim(
    name: str = "pod-a-mig-x7k2p",
    *,
    requests: list[dict[str, Any]] | None = None,
    constraints: list[dict[str, Any]] | None = None,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    devices: dict[str, Any] = {
        "requests": requests
        if requests is not None
        else [{"name": "mig", "exactly": {"deviceClassName": "mig.nvidia.com", "allocationMode": "ExactCount"}}]
    }
    if constraints is not None:
        devices["constraints"] = constraints
    obj: dict[str, Any] = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "team-a", "uid": "c-1", "resourceVersion": "7"},
        "spec": {"devices": devices},
    }
    if status is not None:
        obj["status"] = status
    return obj


def allocated(
    node_selector: dict[str, Any] | None, *results: dict[str, Any], reserved: tuple[str, ...] = ()
) -> dict[str, Any]:
    allocation: dict[str, Any] = {"devices": {"results": list(results)}, "allocationTimestamp": "2026-12-01T10:00:00Z"}
    if node_selector is not None:
        allocation["nodeSelector"] = node_selector
    status: dict[str, Any] = {"allocation": allocation}
    if reserved:
        status["reservedFor"] = [{"resource": "pods", "name": f"pod-{u}", "uid": u} for u in reserved]
    return status


def result(device: str, request: str = "mig", **extra: Any) -> dict[str, Any]:
    return {"request": request, "driver": "gpu.nvidia.com", "pool": "node1", "device": device, **extra}


def by_name(node: str) -> dict[str, Any]:
    """The node selector kube-scheduler's allocator writes."""
    return {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}


# --- ResourceSlice --------------------------------------------------------------------------------------


def test_a_dynamic_mig_node_counters_then_one_slice_per_gpu() -> None:
    raw = dynamic_mig_slices("node1", H100, 2)
    counters, gpu0, gpu1 = map(parse_resource_slice, raw)
    assert (counters.driver, counters.pool, counters.node_name, counters.generation, counters.slice_count) == (
        "gpu.nvidia.com",
        "node1",
        "node1",
        1,
        3,
    )
    assert counters.devices == () and [s.name for s in counters.shared_counters] == [
        "gpu-0-counter-set",
        "gpu-1-counter-set",
    ]
    totals = dict(counters.shared_counters[0].counters)
    assert totals["memory"] == 81152 * MIB and totals["memory-slice-7"] == 1 and totals["multiprocessors"] == 132
    assert [d.name for d in gpu0.devices] == sorted(d["name"] for d in raw[1]["spec"]["devices"])
    assert len(gpu0.devices) == 26 and gpu1.devices[0].name == "gpu-1"

    small = next(d for d in gpu0.devices if d.name == "gpu-0-mig-1g10gb-19-3")
    assert small.attribute("gpu.nvidia.com/profile") == "1g.10gb"
    assert small.attribute("gpu.nvidia.com/type") == "mig"
    assert small.attribute("gpu.nvidia.com/driverVersion") == Version("580.126.20")
    assert small.attribute("resource.kubernetes.io/pciBusID") == "0000:10:00.0"  # already qualified: kept
    assert small.attribute("profile") is None  # only qualified names
    assert dict(small.capacity)["gpu.nvidia.com/memory"] == 9984 * MIB
    [consumed] = small.consumes
    assert consumed.counter_set == "gpu-0-counter-set"
    assert dict(consumed.counters)["memory-slice-3"] == 1 and "memory-slice-2" not in dict(consumed.counters)
    assert list(small.attributes) == sorted(small.attributes) and list(small.capacity) == sorted(small.capacity)


def test_devices_of_one_gpu_share_their_equal_values() -> None:
    gpu0 = parse_resource_slice(dynamic_mig_slices("node1", H100, 1)[1])
    a, b = (d for d in gpu0.devices if d.name in ("gpu-0-mig-1g10gb-19-0", "gpu-0-mig-1g10gb-19-1"))
    assert a.attributes is b.attributes and a.capacity is b.capacity


def test_a_static_mig_node_one_slice_in_the_listed_order() -> None:
    layouts = [[Placement(0, H100.profile("3g.40gb")), Placement(4, H100.profile("1g.10gb"))]]
    raw = static_mig_slices("node2", H100, layouts, shuffle=random.Random(3))[0]
    parsed = parse_resource_slice(raw)
    assert [d.name for d in parsed.devices] == [d["name"] for d in raw["spec"]["devices"]]
    assert parsed.shared_counters == () and all(d.consumes == () for d in parsed.devices)
    big = next(d for d in parsed.devices if d.attribute("gpu.nvidia.com/profile") == "3g.40gb")
    assert {k: v for k, v in big.capacity if "memorySlice" in k} == {
        f"gpu.nvidia.com/memorySlice{i}": Fraction(1) for i in range(4)
    }
    assert str(big.attribute("gpu.nvidia.com/uuid")).startswith("MIG-")


def device_slice(*devices: dict[str, Any], driver: str = "gpu.nvidia.com", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": "00001-gpu.nvidia.com-node1-q9w4z"},
        "spec": {
            "driver": driver,
            "nodeName": "node1",
            "pool": {"name": "node1", "generation": 4, "resourceSliceCount": 2},
            "devices": list(devices),
            **spec,
        },
    }


@pytest.mark.parametrize(
    ("device", "check"),
    [
        (
            {
                "name": "d",
                "attributes": {"numa": {"int": 1}, "healthy": {"bool": True}, "example.com/x": {"string": "y"}},
            },
            lambda d: (
                d.attributes == (("example.com/x", "y"), ("gpu.nvidia.com/healthy", True), ("gpu.nvidia.com/numa", 1))
            ),
        ),
        ({"name": "d", "attributes": {"cores": {"ints": [1, 2]}}}, lambda d: d.attributes == ()),
        (
            {"name": "d", "taints": [{"key": "gpu.nvidia.com/xid", "value": "79", "effect": "NoExecute"}]},
            lambda d: d.taints == (DeviceTaint("gpu.nvidia.com/xid", "79", TaintEffect.NO_EXECUTE),),
        ),
        (
            {"name": "d", "bindingConditions": ["Attached"], "allowMultipleAllocations": True},
            lambda d: d.binding_conditions == ("Attached",) and d.allow_multiple_allocations,
        ),
        (
            {"name": "d", "capacity": {"memory": {"value": 1e3, "requestPolicy": {"default": "1"}}}},
            lambda d: d.capacity == (("gpu.nvidia.com/memory", Fraction(1000)),),
        ),
    ],
    ids=["scalar-attributes", "list-attribute-left-out", "taints", "binding-and-sharing", "number-capacity"],
)
def test_device_fields(device: dict[str, Any], check: Any) -> None:
    [parsed] = parse_resource_slice(device_slice(device)).devices
    assert check(parsed), parsed


def test_a_slice_for_all_nodes_has_no_node() -> None:
    raw = device_slice({"name": "d"})
    del raw["spec"]["nodeName"]
    raw["spec"]["allNodes"] = True
    assert parse_resource_slice(raw).node_name == ""


# --- ResourceClaim, ResourceClaimTemplate ----------------------------------------------------------------


def test_the_mig_guide_template() -> None:
    template = parse_claim_template(mig_template())
    assert (template.namespace, template.name) == ("team-a", "mig-profile")
    [request] = template.spec.requests
    [only] = request.alternatives
    assert request.name == "mig" and not request.first_available
    assert (only.device_class, only.selectors, only.mode, only.count, only.admin_access, only.unsupported) == (
        "mig.nvidia.com",
        (PROFILE_1G,),
        AllocationMode.EXACT_COUNT,
        1,
        False,
        "",
    )


@pytest.mark.parametrize(
    ("request_fields", "expected"),
    [
        ({"count": 3}, {"count": 3}),
        ({"allocationMode": "All"}, {"mode": AllocationMode.ALL, "count": 1}),
        ({"adminAccess": True}, {"admin_access": True}),
        (
            {"tolerations": [{"key": "gpu.nvidia.com/xid", "operator": "Exists", "effect": "NoExecute"}]},
            {"tolerations": (DeviceToleration("gpu.nvidia.com/xid", "Exists", "", "NoExecute"),)},
        ),
        (
            {"capacity": {"requests": {"memory": "10Gi"}}},
            {"unsupported": "spec.spec.devices.requests[0].exactly.capacity.requests"},
        ),
        (
            {"allocationMode": "Percentage"},
            {"unsupported": "spec.spec.devices.requests[0].exactly.allocationMode 'Percentage'"},
        ),
    ],
    ids=["count", "all", "admin-access", "tolerations", "capacity-requests", "unknown-mode"],
)
def test_exactly_fields(request_fields: dict[str, Any], expected: dict[str, Any]) -> None:
    [only] = parse_claim_template(mig_template(**request_fields)).spec.requests[0].alternatives
    assert {k: getattr(only, k) for k in expected} == expected


def test_first_available_keeps_the_order_and_names() -> None:
    requests = [
        {
            "name": "gpu",
            "firstAvailable": [
                {
                    "name": "small",
                    "deviceClassName": "mig.nvidia.com",
                    "selectors": [{"cel": {"expression": PROFILE_1G}}],
                },
                {"name": "whole", "deviceClassName": "gpu.nvidia.com", "count": 2},
            ],
        }
    ]
    [request] = parse_resource_claim(claim(requests=requests)).spec.requests
    assert request.first_available
    assert [(a.name, a.device_class, a.count) for a in request.alternatives] == [
        ("small", "mig.nvidia.com", 1),
        ("whole", "gpu.nvidia.com", 2),
    ]


def test_constraints() -> None:
    constraints = [
        {"requests": [], "matchAttribute": "gpu.nvidia.com/parentUUID"},
        {"requests": ["a", "b"], "distinctAttribute": "gpu.nvidia.com/uuid"},
    ]
    assert parse_resource_claim(claim(constraints=constraints)).spec.constraints == (
        DeviceConstraint((), "gpu.nvidia.com/parentUUID"),
        DeviceConstraint(("a", "b"), "", "gpu.nvidia.com/uuid"),
    )


def hostname(node: str) -> dict[str, Any]:
    expression = {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
    return {"nodeSelectorTerms": [{"matchExpressions": [expression]}]}


@pytest.mark.parametrize(
    ("status", "allocation", "node", "reserved"),
    [
        (None, None, "", ()),
        ({}, None, "", ()),
        (
            allocated(by_name("node1"), result("gpu-0-mig-1g10gb-19-0"), reserved=("uid-a",)),
            (AllocatedDevice("mig", "gpu.nvidia.com", "node1", "gpu-0-mig-1g10gb-19-0"),),
            "node1",
            ("uid-a",),
        ),
        (
            allocated(hostname("node1"), result("gpu-0", adminAccess=True)),
            (AllocatedDevice("mig", "gpu.nvidia.com", "node1", "gpu-0", admin_access=True),),
            "node1",
            (),
        ),
        (allocated(None, result("gpu-0")), (AllocatedDevice("mig", "gpu.nvidia.com", "node1", "gpu-0"),), "", ()),
        (
            allocated(
                {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a", "b"]}]}
                    ]
                },
                result("gpu-0"),
            ),
            (AllocatedDevice("mig", "gpu.nvidia.com", "node1", "gpu-0"),),
            "",
            (),
        ),
        (
            allocated(
                {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z"]}]}]}
            ),
            (),
            "",
            (),
        ),
    ],
    ids=["no-status", "empty-status", "scheduler-form", "hostname-form", "no-selector", "two-nodes", "other-label"],
)
def test_allocation_and_reservations(
    status: dict[str, Any] | None, allocation: Any, node: str, reserved: tuple[str, ...]
) -> None:
    parsed = parse_resource_claim(claim(status=status))
    assert (parsed.allocation, parsed.allocated_node, parsed.reserved_for) == (allocation, node, reserved)
    assert (parsed.namespace, parsed.name, parsed.uid) == ("team-a", "pod-a-mig-x7k2p", "c-1")


# --- DeviceClass ----------------------------------------------------------------------------------------


def test_the_driver_device_classes() -> None:
    gpu = parse_device_class(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "DeviceClass",
            "metadata": {"name": "gpu.nvidia.com"},
            "spec": {
                "selectors": [
                    {
                        "cel": {
                            "expression": "device.driver == 'gpu.nvidia.com' && "
                            "device.attributes['gpu.nvidia.com'].type == 'gpu'"
                        }
                    }
                ],
                "extendedResourceName": "nvidia.com/gpu",
            },
        }
    )
    assert gpu.name == "gpu.nvidia.com" and gpu.extended_resource_name == "nvidia.com/gpu"
    assert gpu.selectors == ("device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'gpu'",)
    assert parse_device_class({"metadata": {"name": "empty"}, "spec": {}}).selectors == ()


# --- errors ---------------------------------------------------------------------------------------------


def edited(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``obj`` with the value at a dotted path (``[n]`` for list items) replaced, or deleted (...)."""
    obj = copy.deepcopy(obj)
    keys: list[str | int] = []
    for part in path.split("."):
        name, _, index = part.partition("[")
        keys.append(name)
        if index:
            keys.append(int(index.rstrip("]")))
    target: Any = obj
    for key in keys[:-1]:
        target = target[key]
    if value is ...:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return obj


SLICE = dynamic_mig_slices("node1", H100, 1)[1]
COUNTERS = dynamic_mig_slices("node1", H100, 1)[0]


@pytest.mark.parametrize(
    ("parse", "obj", "message"),
    [
        (parse_resource_slice, [], "ResourceSlice \\?: must be an object, not list"),
        (parse_resource_slice, edited(SLICE, "metadata.name", ...), "ResourceSlice \\?: metadata.name: is missing"),
        (
            parse_resource_slice,
            edited(SLICE, "spec.pool.resourceSliceCount", ...),
            "spec.pool.resourceSliceCount: is missing",
        ),
        (parse_resource_slice, edited(SLICE, "spec.pool.resourceSliceCount", 0), "must be at least 1, not 0"),
        (
            parse_resource_slice,
            edited(SLICE, "spec.driver", ...),
            "00001-gpu.nvidia.com-node1: spec.driver: is missing",
        ),
        (
            parse_resource_slice,
            edited(SLICE, "spec.devices[2].attributes.profile", {"string": "1g.10gb", "int": 3}),
            r"spec.devices\[2\].attributes.profile: must have exactly one of int",
        ),
        (
            parse_resource_slice,
            edited(SLICE, "spec.devices[2].attributes.profile", {"int": "3"}),
            r"spec.devices\[2\].attributes.profile.int: must be an integer, not '3'",
        ),
        (
            parse_resource_slice,
            edited(SLICE, "spec.devices[0].capacity.memory.value", "lots"),
            r"spec.devices\[0\].capacity.memory.value: 'lots' is not a quantity",
        ),
        (
            parse_resource_slice,
            edited(SLICE, "spec.devices[0].consumesCounters[0].counters.memory", "81152Mi"),
            r"consumesCounters\[0\].counters.memory: must be an object with a value",
        ),
        (
            parse_resource_slice,
            edited(COUNTERS, "spec.sharedCounters[0].counters.memory.value", True),
            r"sharedCounters\[0\].counters.memory.value: True is not a quantity",
        ),
        (
            parse_resource_slice,
            edited(SLICE, "spec.devices[0].taints", [{"key": "k", "effect": "Sometimes"}]),
            r"spec.devices\[0\].taints\[0\].effect: 'Sometimes' is not NoSchedule, NoExecute or None",
        ),
        (
            parse_resource_slice,
            edited(SLICE, "spec.devices[1].name", "gpu-0"),
            r"spec.devices\[1\].name: 'gpu-0' is listed twice",
        ),
        (parse_resource_slice, edited(SLICE, "spec.devices", {}), "spec.devices: must be a list, not {}"),
        (
            parse_resource_claim,
            edited(claim(), "spec.devices.requests[0].firstAvailable", []),
            r"ResourceClaim team-a/pod-a-mig-x7k2p: spec.devices.requests\[0\]: must have exactly one of exactly",
        ),
        (
            parse_resource_claim,
            edited(claim(), "spec.devices.requests[0].exactly", ...),
            r"spec.devices.requests\[0\]: must have exactly one of exactly and firstAvailable",
        ),
        (
            parse_resource_claim,
            edited(claim(), "spec.devices.requests[0].exactly.deviceClassName", ...),
            r"spec.devices.requests\[0\].exactly.deviceClassName: is missing",
        ),
        (
            parse_resource_claim,
            edited(claim(), "spec.devices.requests[0].exactly.count", -1),
            r"exactly.count: must be greater than zero, not -1",
        ),
        (
            parse_resource_claim,
            edited(claim(), "spec.devices.requests[0].exactly.selectors", [{"expression": "true"}]),
            r"exactly.selectors\[0\].cel: is missing",
        ),
        (
            parse_resource_claim,
            claim(constraints=[{"requests": []}]),
            r"spec.devices.constraints\[0\]: must have exactly one of matchAttribute and distinctAttribute",
        ),
        (
            parse_resource_claim,
            claim(requests=[{"name": "a", "exactly": {"deviceClassName": "c"}}] * 2),
            r"requests\[1\].name: 'a' is used twice",
        ),
        (
            parse_resource_claim,
            claim(status=allocated(by_name("node1"), {"request": "mig"})),
            r"status.allocation.devices.results\[0\].driver: is missing",
        ),
        (
            parse_resource_claim,
            claim(status={"reservedFor": [{"resource": "pods", "name": "p"}]}),
            r"status.reservedFor\[0\].uid: is missing",
        ),
        (
            parse_claim_template,
            edited(mig_template(), "spec.spec", ...),
            "ResourceClaimTemplate team-a/mig-profile: spec.spec: is missing",
        ),
        (
            parse_device_class,
            {"metadata": {"name": "c"}, "spec": {"selectors": [{"cel": {"expression": 3}}]}},
            r"DeviceClass c: spec.selectors\[0\].cel.expression: must be a string, not 3",
        ),
    ],
)
def test_bad_objects_name_the_object_and_the_field(parse: Any, obj: Any, message: str) -> None:
    with pytest.raises(DraObjectError, match=message):
        parse(obj)


def test_a_value_nested_too_deeply_is_an_error_not_a_crash() -> None:
    deep: Any = "x"
    for _ in range(100_000):
        deep = {"string": deep}
    obj = copy.deepcopy(SLICE)
    obj["spec"]["devices"][0]["attributes"] = {"a": deep}
    with pytest.raises(DraObjectError, match=r"ResourceSlice 00001-gpu\.nvidia\.com-node1: a value nested too deeply"):
        parse_resource_slice(obj)
