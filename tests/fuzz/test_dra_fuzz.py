"""The DRA object parsers under any input: a record or DraObjectError naming the object, nothing else.

Inputs are any JSON-like value, and real-shaped objects (a DynamicMIG slice of NVIDIA's driver, a pre-created
MIG slice, an allocated claim with firstAvailable and constraints, the MIG guide's template, a DeviceClass)
with one part spoiled or dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from extender.model.catalog import model_named
from extender.model.dra.driver import dynamic_mig_slices, static_mig_slices
from extender.model.placement import Placement
from extender.view.dra_objects import (
    DraObjectError,
    parse_claim_template,
    parse_device_class,
    parse_resource_claim,
    parse_resource_slice,
)
from tests.fuzz.strategies import JSON, TEXT, spoiled

FUZZ = settings(
    max_examples=150, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow], database=None
)
A100 = model_named("A100-40GB")
REQUEST = {
    "name": "gpu",
    "firstAvailable": [
        {
            "name": "small",
            "deviceClassName": "mig.nvidia.com",
            "selectors": [{"cel": {"expression": "device.attributes['gpu.nvidia.com'].profile == '1g.5gb'"}}],
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
        },
        {"name": "whole", "deviceClassName": "gpu.nvidia.com", "allocationMode": "ExactCount", "count": 1},
    ],
}
CLAIM = {
    "apiVersion": "resource.k8s.io/v1",
    "kind": "ResourceClaim",
    "metadata": {"name": "c", "namespace": "team-a", "uid": "u"},
    "spec": {
        "devices": {
            "requests": [REQUEST, {"name": "x", "exactly": {"deviceClassName": "c", "adminAccess": True}}],
            "constraints": [{"requests": [], "matchAttribute": "gpu.nvidia.com/parentUUID"}],
        }
    },
    "status": {
        "allocation": {
            "devices": {"results": [{"request": "gpu/small", "driver": "gpu.nvidia.com", "pool": "n", "device": "d"}]},
            "nodeSelector": {
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]}]
            },
        },
        "reservedFor": [{"resource": "pods", "name": "p", "uid": "pu"}],
    },
}
TEMPLATE = {"metadata": {"name": "t", "namespace": "team-a"}, "spec": {"spec": CLAIM["spec"]}}
DEVICE_CLASS = {
    "metadata": {"name": "mig.nvidia.com"},
    "spec": {"selectors": [{"cel": {"expression": "true"}}], "extendedResourceName": "nvidia.com/mig-1g.5gb"},
}
SLICES = [
    *dynamic_mig_slices("n", A100, 1),
    *static_mig_slices("n", A100, [[Placement(0, A100.profile("3g.20gb")), Placement(4, A100.profile("1g.5gb"))]]),
]
PARSERS: list[tuple[Callable[[Any], Any], str, list[dict[str, Any]]]] = [
    (parse_resource_slice, "ResourceSlice", SLICES),
    (parse_resource_claim, "ResourceClaim", [CLAIM]),
    (parse_claim_template, "ResourceClaimTemplate", [TEMPLATE]),
    (parse_device_class, "DeviceClass", [DEVICE_CLASS]),
]


@FUZZ
@given(data=st.data())
def test_dra_objects_are_read_or_refused_with_a_named_error(data: st.DataObject) -> None:
    parse, kind, samples = data.draw(st.sampled_from(PARSERS))
    raw: Any = data.draw(st.dictionaries(TEXT, JSON, max_size=3) | JSON | spoiled(st.sampled_from(samples)))
    assume(raw is not None)
    try:
        record = parse(raw)
    except DraObjectError as exc:
        assert str(exc).startswith(f"{kind} ")
        return
    assert record.name == raw["metadata"]["name"]


def test_the_samples_parse() -> None:
    for parse, _, samples in PARSERS:
        for sample in samples:
            assert parse(sample).name == sample["metadata"]["name"]
