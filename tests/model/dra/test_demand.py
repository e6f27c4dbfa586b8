"""The claims a pod needs allocated, as kube-scheduler's DynamicResources plugin gathers them (v1.36.3)."""

from __future__ import annotations

from typing import Any

import pytest

from extender.model.catalog import model_named
from extender.model.demand import PodDemand, pod_demand
from extender.model.dra.demand import (
    EXTENDED_CLAIM,
    ClaimKey,
    ClaimSource,
    DraDemand,
    dra_demand,
    extended_resource_classes,
    profile_demand,
)
from extender.model.dra.driver import dynamic_mig_slices
from extender.model.dra.inventory import inventory
from extender.model.dra.pools import pools_of
from extender.model.dra.types import ClaimTemplate, Device, DeviceClass, ResourceClaim
from extender.view.dra_objects import (
    parse_claim_template,
    parse_device_class,
    parse_resource_claim,
    parse_resource_slice,
)
from tests.builders import pod

Json = dict[str, Any]
NS = "team"
GPU_CLASS = "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'gpu'"
MIG_CLASS = "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'mig'"


def profile_is(name: str) -> str:
    return f"device.attributes['gpu.nvidia.com'].profile == '{name}'"


def device_class(name: str, *selectors: str, extended: str = "") -> DeviceClass:
    spec: Json = {"selectors": [{"cel": {"expression": e}} for e in selectors]}
    if extended:
        spec["extendedResourceName"] = extended
    return parse_device_class({"apiVersion": "resource.k8s.io/v1", "metadata": {"name": name}, "spec": spec})


CLASSES = {
    c.name: c
    for c in (
        device_class("gpu.nvidia.com", GPU_CLASS, extended="nvidia.com/gpu"),
        device_class("mig.nvidia.com", MIG_CLASS),
        device_class("mig-1g.10gb", MIG_CLASS, profile_is("1g.10gb"), extended="nvidia.com/mig-1g.10gb"),
    )
}


def request(name: str, *selectors: str, device_class: str = "mig.nvidia.com", count: int = 1) -> Json:
    exactly: Json = {"deviceClassName": device_class, "count": count}
    if selectors:
        exactly["selectors"] = [{"cel": {"expression": e}} for e in selectors]
    return {"name": name, "exactly": exactly}


def claim_spec(*requests: Json, constraints: list[Json] | None = None) -> Json:
    devices: Json = {"requests": list(requests)}
    if constraints:
        devices["constraints"] = constraints
    return {"devices": devices}


def claim(
    name: str, spec: Json, *, node: str = "", reserved: tuple[str, ...] = (), namespace: str = NS
) -> ResourceClaim:
    raw: Json = {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"}, "spec": spec}
    if node:
        raw["status"] = {
            "allocation": {
                "devices": {
                    "results": [{"request": "mig", "driver": "gpu.nvidia.com", "pool": node, "device": "gpu-0"}]
                },
                "nodeSelector": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
                    ]
                },
            },
            "reservedFor": [{"resource": "pods", "name": f"p{i}", "uid": uid} for i, uid in enumerate(reserved)],
        }
    return parse_resource_claim(raw)


def template(name: str, spec: Json) -> ClaimTemplate:
    return parse_claim_template({"metadata": {"name": name, "namespace": NS}, "spec": {"spec": spec}})


ONE_1G = claim_spec(request("mig", profile_is("1g.10gb")))
TWO_3G = claim_spec(request("big", profile_is("3g.40gb"), count=2))


def dra_pod(
    *entries: Json,
    statuses: list[Json] | None = None,
    limits: Json | None = None,
    init: list[Json] | None = None,
    extended_status: str = "",
) -> Json:
    raw = pod("p", namespace=NS, limits=limits, init=init)
    raw["spec"]["resourceClaims"] = list(entries)
    status: Json = {}
    if statuses is not None:
        status["resourceClaimStatuses"] = statuses
    if extended_status:
        status["extendedResourceClaimStatus"] = {"resourceClaimName": extended_status, "requestMappings": []}
    raw["status"] = status
    return raw


def named(entry: str, claim_name: str) -> Json:
    return {"name": entry, "resourceClaimName": claim_name}


def from_template(entry: str, template_name: str) -> Json:
    return {"name": entry, "resourceClaimTemplateName": template_name}


def demand_of(
    raw: Json,
    claims: tuple[ResourceClaim, ...] = (),
    templates: tuple[ClaimTemplate, ...] = (),
    classes: dict[str, DeviceClass] | None = None,
) -> DraDemand:
    by_key: dict[ClaimKey, ResourceClaim] = {(c.namespace, c.name): c for c in claims}
    templates_by_key: dict[ClaimKey, ClaimTemplate] = {(t.namespace, t.name): t for t in templates}
    return dra_demand(raw, by_key, templates_by_key, CLASSES if classes is None else classes)


# --- User claims -----------------------------------------------------------------------------------------


def test_a_template_claim_is_the_generated_claim_named_in_the_pod_status() -> None:
    raw = dra_pod(from_template("mig", "one-1g"), statuses=[{"name": "mig", "resourceClaimName": "p-mig-x7k2p"}])
    generated = claim("p-mig-x7k2p", TWO_3G)  # the claim's own spec counts, not the template's
    found = demand_of(raw, (generated,), (template("one-1g", ONE_1G),))
    assert found.evaluable and not found.is_empty
    (only,) = found.claims
    assert (only.pod_claim, only.key, only.source, only.template) == (
        "mig",
        (NS, "p-mig-x7k2p"),
        ClaimSource.TEMPLATE,
        "one-1g",
    )
    assert found.specs == (generated.spec,)
    assert found.claim_keys == ((NS, "p-mig-x7k2p"),)
    assert found.pinned_node == ""
    assert found.text() == "claim mig (2x mig.nvidia.com)"


def test_a_template_claim_not_created_yet_is_the_template_spec() -> None:
    spec = template("one-1g", ONE_1G)
    found = demand_of(dra_pod(from_template("mig", "one-1g")), templates=(spec,))
    (only,) = found.claims
    assert (only.source, only.key, only.spec) == (ClaimSource.TEMPLATE_PENDING, (NS, ""), spec.spec)
    assert found.specs == (spec.spec,) and found.claim_keys == ()


def test_a_status_entry_without_a_claim_name_needs_no_claim() -> None:
    found = demand_of(dra_pod(from_template("mig", "one-1g"), statuses=[{"name": "mig"}]))
    assert found.evaluable and found.claims == () and found.is_empty


def test_claims_keep_the_pod_spec_order() -> None:
    raw = dra_pod(named("b", "claim-b"), from_template("a", "one-1g"), named("c", "claim-c"))
    claims = (claim("claim-b", TWO_3G), claim("claim-c", ONE_1G))
    found = demand_of(raw, claims, (template("one-1g", ONE_1G),))
    assert [c.pod_claim for c in found.to_allocate] == ["b", "a", "c"]
    assert found.claim_keys == ((NS, "claim-b"), (NS, "claim-c"))


def test_an_allocated_claim_pins_the_node_and_is_not_allocated_again() -> None:
    raw = dra_pod(named("shared", "shared-mig"), from_template("mig", "one-1g"))
    found = demand_of(raw, (claim("shared-mig", ONE_1G, node="node-7"),), (template("one-1g", ONE_1G),))
    assert found.pinned_node == "node-7"
    assert [c.pod_claim for c in found.to_allocate] == ["mig"]
    assert found.claims[0].allocated and found.claims[0].allocated_node == "node-7"
    assert found.text() == "claim shared (allocated on node-7) + claim mig (1x mig.nvidia.com)"
    alone = demand_of(dra_pod(named("shared", "shared-mig")), (claim("shared-mig", ONE_1G, node="node-7"),))
    assert alone.to_allocate == () and alone.specs == () and not alone.is_empty and alone.pinned_node == "node-7"


def test_a_claim_reserved_by_as_many_as_it_may_blocks_other_pods() -> None:
    full = tuple(f"other-{i}" for i in range(256))
    blocked = demand_of(dra_pod(named("shared", "s")), (claim("s", ONE_1G, node="n", reserved=full),))
    assert blocked.not_evaluable == "claim shared: ResourceClaim s is in use by 256 others"
    mine = (*full[:255], "uid-p")
    fine = demand_of(dra_pod(named("shared", "s")), (claim("s", ONE_1G, node="n", reserved=mine),))
    assert fine.evaluable and fine.pinned_node == "n"


UNRESOLVED: dict[str, tuple[Json, tuple[ResourceClaim, ...], tuple[ClaimTemplate, ...], str]] = {
    "missing-template": (
        dra_pod(from_template("mig", "gone")),
        (),
        (),
        f"claim mig: ResourceClaimTemplate {NS}/gone does not exist",
    ),
    "missing-claim": (dra_pod(named("mig", "gone")), (), (), f"claim mig: ResourceClaim {NS}/gone does not exist yet"),
    "generated-claim-not-seen-yet": (
        dra_pod(from_template("mig", "one-1g"), statuses=[{"name": "mig", "resourceClaimName": "p-mig-abcde"}]),
        (),
        (template("one-1g", ONE_1G),),
        f"claim mig: ResourceClaim {NS}/p-mig-abcde does not exist yet",
    ),
    "missing-class": (
        dra_pod(from_template("mig", "odd")),
        (),
        (template("odd", claim_spec(request("x", device_class="nope.example.com"))),),
        "claim mig: request x: device class nope.example.com does not exist",
    ),
    "missing-class-in-first-available": (
        dra_pod(from_template("mig", "alt")),
        (),
        (
            template(
                "alt",
                claim_spec(
                    {
                        "name": "x",
                        "firstAvailable": [
                            {"name": "small", "deviceClassName": "mig.nvidia.com"},
                            {"name": "big", "deviceClassName": "nope"},
                        ],
                    }
                ),
            ),
        ),
        "claim mig: request x/big: device class nope does not exist",
    ),
    "pins-disagree": (
        dra_pod(named("a", "a"), named("b", "b")),
        (claim("a", ONE_1G, node="n1"), claim("b", ONE_1G, node="n2")),
        (),
        "allocated claims pin different nodes: n1 (claim a), n2 (claim b)",
    ),
    "both-names": (
        dra_pod({"name": "x", "resourceClaimName": "a", "resourceClaimTemplateName": "b"}),
        (),
        (),
        "pod spec.resourceClaims[0] needs a name and one of resourceClaimName and resourceClaimTemplateName",
    ),
    "not-a-list": (
        {"metadata": {"name": "p", "namespace": NS}, "spec": {"resourceClaims": {"name": "x"}}},
        (),
        (),
        "pod spec.resourceClaims is not a list of objects",
    ),
    "bad-quantity": (
        dra_pod(limits={"nvidia.com/gpu": "lots"}),
        (),
        (),
        "pod spec.containers[0].resources[nvidia.com/gpu]: 'lots' is not a quantity",
    ),
}


@pytest.mark.parametrize(("raw", "claims", "templates", "reason"), UNRESOLVED.values(), ids=UNRESOLVED.keys())
def test_what_is_not_there_yet_makes_the_pod_not_evaluable_with_a_reason(
    raw: Json, claims: tuple[ResourceClaim, ...], templates: tuple[ClaimTemplate, ...], reason: str
) -> None:
    found = demand_of(raw, claims, templates)
    assert found.not_evaluable.startswith(reason), found.not_evaluable
    assert not found.evaluable and not found.is_empty and found.text() == found.not_evaluable
    assert found.specs == ()


def test_a_pod_without_claims_or_backed_resources_asks_nothing_of_dra() -> None:
    found = demand_of(pod("p", limits={"nvidia.com/mig-3g.40gb": 1, "cpu": "1"}))
    assert found.is_empty and found.text() == "no claim" and found.extended == ()


# --- Extended resources backed by a DeviceClass -----------------------------------------------------------


def _container(name: str, limits: Json, restart: str | None = None) -> Json:
    found: Json = {"name": name, "resources": {"limits": limits}}
    if restart:
        found["restartPolicy"] = restart
    return found


EXTENDED: dict[str, tuple[Json, list[tuple[str, str, int]], int]] = {
    # cpu, memory and nvidia.com/... sorted: the MIG resource is request 2 of container 0
    "one-container": (
        dra_pod(limits={"cpu": "1", "memory": "1Gi", "nvidia.com/mig-1g.10gb": "2"}),
        [("container-0-request-2", "mig-1g.10gb", 2)],
        2,
    ),
    "implicit-name": (
        dra_pod(limits={"deviceclass.resource.kubernetes.io/mig.nvidia.com": 1}),
        [("container-0-request-0", "mig.nvidia.com", 1)],
        1,
    ),
    # an init container reuses what the container after it asks, and asks for the rest
    "init-reuses-later-containers": (
        dra_pod(limits={"nvidia.com/mig-1g.10gb": 1}, init=[_container("setup", {"nvidia.com/mig-1g.10gb": 3})]),
        [("container-0-request-0", "mig-1g.10gb", 2), ("container-1-request-0", "mig-1g.10gb", 1)],
        3,
    ),
    "init-covered-by-later-containers": (
        dra_pod(limits={"nvidia.com/mig-1g.10gb": 2}, init=[_container("setup", {"nvidia.com/mig-1g.10gb": 1})]),
        [("container-1-request-0", "mig-1g.10gb", 2)],
        2,
    ),
    # a sidecar runs beside the containers: its own request, added
    "sidecar": (
        dra_pod(
            limits={"nvidia.com/mig-1g.10gb": 1},
            init=[_container("proxy", {"nvidia.com/mig-1g.10gb": 1}, restart="Always")],
        ),
        [("container-0-request-0", "mig-1g.10gb", 1), ("container-1-request-0", "mig-1g.10gb", 1)],
        2,
    ),
    # of the init containers' requests only the largest stays
    "largest-init-only": (
        dra_pod(
            limits={"cpu": "1"},
            init=[
                _container("a", {"nvidia.com/mig-1g.10gb": 1}),
                _container("b", {"nvidia.com/mig-1g.10gb": 3}),
                _container("c", {"nvidia.com/mig-1g.10gb": 3}),
            ],
        ),
        [("container-1-request-0", "mig-1g.10gb", 3)],
        3,
    ),
    "two-resources": (
        dra_pod(limits={"nvidia.com/gpu": 1, "nvidia.com/mig-1g.10gb": 1}),
        [("container-0-request-0", "gpu.nvidia.com", 1), ("container-0-request-1", "mig-1g.10gb", 1)],
        1,
    ),
}


@pytest.mark.parametrize(("raw", "requests", "total"), EXTENDED.values(), ids=EXTENDED.keys())
def test_backed_extended_resources_become_one_claim_as_the_scheduler_names_it(
    raw: Json, requests: list[tuple[str, str, int]], total: int
) -> None:
    found = demand_of(raw)
    assert found.evaluable and not found.is_empty and found.claims == ()
    assert found.extended[-1].count == total
    extended = found.extended_claim_on({})
    assert extended is not None
    assert (extended.source, extended.key, extended.pod_claim) == (ClaimSource.EXTENDED, (NS, EXTENDED_CLAIM), "")
    got = [(r.name, r.alternatives[0].device_class, r.alternatives[0].count) for r in extended.spec.requests]
    assert got == requests
    assert found.specs == (extended.spec,)


GO_CLASSES = {
    c.name: c
    for c in (
        device_class("class", MIG_CLASS, extended="example.com/gpu"),
        device_class("classInit", MIG_CLASS, extended="example.com/gpuinit"),
    )
}


def _init(limits: Json, sidecar: bool = False) -> Json:
    return _container("init", limits, restart="Always" if sidecar else None)


# The cases of Test_createRequestsAndMappings_requests (extendeddynamicresources_test.go, k8s.io/kubernetes v1.36.3).
GO_CASES: dict[str, tuple[Json, list[tuple[str, str, int]]]] = {
    "one-init-container-one-regular-container": (
        dra_pod(limits={"example.com/gpu": 1}, init=[_init({"example.com/gpuinit": 2})]),
        [("container-0-request-0", "classInit", 2), ("container-1-request-0", "class", 1)],
    ),
    "two-init-containers-one-regular-container": (
        dra_pod(
            limits={"example.com/gpu": 1}, init=[_init({"example.com/gpuinit": 1}), _init({"example.com/gpuinit": 2})]
        ),
        [("container-1-request-0", "classInit", 2), ("container-2-request-0", "class", 1)],
    ),
    "three-init-containers-one-sidecar-one-regular-container": (
        dra_pod(
            limits={"example.com/gpu": 1},
            init=[
                _init({"example.com/gpuinit": 1}),
                _init({"example.com/gpuinit": 1}, sidecar=True),
                _init({"example.com/gpuinit": 2}),
            ],
        ),
        [
            ("container-1-request-0", "classInit", 1),
            ("container-2-request-0", "classInit", 2),
            ("container-3-request-0", "class", 1),
        ],
    ),
}


@pytest.mark.parametrize(("raw", "requests"), GO_CASES.values(), ids=GO_CASES.keys())
def test_extended_resource_requests_as_in_the_schedulers_own_tests(
    raw: Json, requests: list[tuple[str, str, int]]
) -> None:
    extended = demand_of(raw, classes=GO_CLASSES).extended_claim_on({})
    assert extended is not None
    got = [(r.name, r.alternatives[0].device_class, r.alternatives[0].count) for r in extended.spec.requests]
    assert got == requests


def test_request_names_sort_as_text() -> None:
    containers = [{"name": f"c{i}", "resources": {"limits": {"nvidia.com/mig-1g.10gb": 1}}} for i in range(11)]
    raw = dra_pod()
    raw["spec"]["containers"] = containers
    extended = demand_of(raw).extended_claim_on({})
    assert extended is not None
    names = [r.name for r in extended.spec.requests]
    assert names[:3] == ["container-0-request-0", "container-1-request-0", "container-10-request-0"]


def test_a_node_that_advertises_the_resource_serves_it_by_its_device_plugin() -> None:
    raw = dra_pod(from_template("mig", "one-1g"), limits={"nvidia.com/mig-1g.10gb": 1, "nvidia.com/mig-3g.40gb": 1})
    found = demand_of(raw, templates=(template("one-1g", ONE_1G),))
    plugin_node = {"nvidia.com/mig-1g.10gb": 7, "nvidia.com/mig-3g.40gb": 2}
    assert found.extended_claim_on(plugin_node) is None
    assert [c.pod_claim for c in found.claims_on(plugin_node)] == ["mig"]
    everything = pod_demand(raw)
    assert found.device_plugin_demand(everything, plugin_node) == everything
    dra_node = {"nvidia.com/mig-1g.10gb": 0}
    assert [c.label for c in found.claims_on(dra_node)] == ["claim mig", "extended resources"]
    # 3g.40gb has no class: it stays the device plugin's even on the DRA node
    assert found.device_plugin_demand(everything, dra_node) == PodDemand(mig=(("3g.40gb", 1),))
    assert found.text() == "claim mig (1x mig.nvidia.com) + 1x nvidia.com/mig-1g.10gb (class mig-1g.10gb)"


def test_an_extended_resource_claim_of_an_earlier_attempt() -> None:
    limits = {"nvidia.com/mig-1g.10gb": 1}
    allocated = claim("p-extended-resources-x", ONE_1G, node="node-3")
    found = demand_of(dra_pod(limits=limits, extended_status="p-extended-resources-x"), (allocated,))
    assert found.pinned_node == "node-3" and found.extended == () and found.extended_claim_on({}) is None
    assert found.claims[0].source is ClaimSource.EXTENDED and found.claims[0].allocated
    stale = claim("p-extended-resources-x", ONE_1G)
    replaced = demand_of(dra_pod(limits=limits, extended_status="p-extended-resources-x"), (stale,))
    assert "of an earlier attempt is replaced" in replaced.not_evaluable
    gone = demand_of(dra_pod(limits=limits, extended_status="p-extended-resources-x"))
    assert gone.extended_claim_on({}) is not None


def test_two_classes_naming_one_extended_resource_keep_the_lower_name() -> None:
    index = extended_resource_classes(
        [
            device_class("zeta", MIG_CLASS, extended="example.com/x"),
            device_class("alpha", MIG_CLASS, extended="example.com/x"),
        ]
    )
    assert index["example.com/x"].name == "alpha"
    assert index["deviceclass.resource.kubernetes.io/zeta"].name == "zeta"


# --- The demand in catalog terms -----------------------------------------------------------------------


def h100_samples() -> tuple[Device, ...]:
    node_slices = [parse_resource_slice(s) for s in dynamic_mig_slices("n1", model_named("H100-80GB"), 1)]
    return inventory("n1", pools_of(node_slices, "n1")).samples


PROFILES: dict[str, tuple[Json, tuple[tuple[str, int], ...] | None, str]] = {
    "one-profile": (claim_spec(request("mig", profile_is("1g.10gb"))), (("1g.10gb", 1),), "claim mig (1x 1g.10gb)"),
    "two-requests": (
        claim_spec(request("a", profile_is("3g.40gb"), count=2), request("b", profile_is("1g.10gb+me"))),
        (("1g.10gb+me", 1), ("3g.40gb", 2)),
        "claim mig (2x 3g.40gb, 1x 1g.10gb+me)",
    ),
    "by-capacity": (
        claim_spec(request("mig", "device.capacity['gpu.nvidia.com'].multiprocessors.compareTo(quantity('60')) == 0")),
        (("3g.40gb", 1),),
        "claim mig (1x 3g.40gb)",
    ),
    "any-mig": (claim_spec(request("mig")), None, ""),
    "whole-gpu": (claim_spec(request("gpu", device_class="gpu.nvidia.com")), None, ""),
    "no-device-matches": (claim_spec(request("mig", profile_is("9g.99gb"))), None, ""),
    "same-gpu-constraint": (
        claim_spec(
            request("a", profile_is("1g.10gb")),
            request("b", profile_is("1g.10gb")),
            constraints=[{"matchAttribute": "gpu.nvidia.com/parentUUID"}],
        ),
        None,
        "",
    ),
    "failing-selector": (claim_spec(request("mig", "device.attributes['gpu.nvidia.com'].uuid == 'x'")), None, ""),
    "all-mode": (
        claim_spec({"name": "mig", "exactly": {"deviceClassName": "mig.nvidia.com", "allocationMode": "All"}}),
        None,
        "",
    ),
    "alternatives": (
        claim_spec(
            {
                "name": "mig",
                "firstAvailable": [
                    {
                        "name": "small",
                        "deviceClassName": "mig.nvidia.com",
                        "selectors": [{"cel": {"expression": profile_is("1g.10gb")}}],
                    },
                    {
                        "name": "big",
                        "deviceClassName": "mig.nvidia.com",
                        "selectors": [{"cel": {"expression": profile_is("2g.20gb")}}],
                    },
                ],
            }
        ),
        None,
        "",
    ),
}


@pytest.mark.parametrize(("spec", "expected", "text"), PROFILES.values(), ids=PROFILES.keys())
def test_profile_demand_evaluates_the_selectors_on_the_published_devices(
    spec: Json, expected: tuple[tuple[str, int], ...] | None, text: str
) -> None:
    found = demand_of(dra_pod(from_template("mig", "t")), templates=(template("t", spec),))
    assert found.evaluable
    result = profile_demand(found, CLASSES, h100_samples())
    if expected is None:
        assert result is None
    else:
        assert result is not None and result.demand == PodDemand(mig=expected) and result.text() == text


def test_profile_demand_of_a_backed_extended_resource_and_of_an_allocated_claim() -> None:
    found = demand_of(
        dra_pod(named("done", "done"), limits={"nvidia.com/mig-1g.10gb": 2}), (claim("done", TWO_3G, node="n1"),)
    )
    result = profile_demand(found, CLASSES, h100_samples())
    assert result is not None and result.demand == PodDemand(mig=(("1g.10gb", 2),))
    assert result.text() == "extended resources (2x 1g.10gb)"
    plugin_node = profile_demand(found, CLASSES, h100_samples(), {"nvidia.com/mig-1g.10gb": 7})
    assert plugin_node is not None and plugin_node.demand == PodDemand() and plugin_node.text() == "no claim"
    assert profile_demand(demand_of(dra_pod(named("x", "gone"))), CLASSES, h100_samples()) is None
