"""Filter and prioritize for pods that ask for MIG through DRA, on nodes NVIDIA's DRA driver publishes.

Three H100 nodes in the driver's DynamicMIG format, running pods holding allocated claims: the answers follow
kube-scheduler's first-fit allocator inside each node (a 4g.40gb claim does not fit a GPU whose memory slice 0
is taken, though 4 slices are free), and the scores keep idle GPUs idle.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import yaml

from extender.metrics import Metrics
from extender.model.catalog import model_named
from extender.model.demand import pod_demand
from extender.model.dra.driver import DRIVER, dynamic_mig_slices
from extender.model.policy import ClusterVerdict, PodVerdict, cluster_verdict
from extender.server.scheduling import SchedulingService
from extender.server.wire import parse_extender_args
from extender.settings import Settings
from extender.view.snapshot import load_snapshot_text
from extender.view.store import ClusterView
from tests.builders import pod
from tests.support import Clock

H100 = model_named("H100-80GB")
MIG_CLASS = f"device.driver == '{DRIVER}' && device.attributes['{DRIVER}'].type == 'mig'"
NODES = ("dra-a", "dra-b", "dra-c")
HELD = {"dra-a": "gpu-0-mig-1g10gb-19-0", "dra-c": "gpu-0-mig-3g40gb-9-4"}
"""Devices running pods hold: dra-a's memory slice 0, dra-c's slices 4-7; dra-b is idle."""


def device_class(name: str, *selectors: str, extended: str = "") -> dict[str, Any]:
    spec: dict[str, Any] = {"selectors": [{"cel": {"expression": s}} for s in selectors]}
    if extended:
        spec["extendedResourceName"] = extended
    return {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": name}, "spec": spec}


def request(name: str, *selectors: str, count: int = 1) -> dict[str, Any]:
    exactly: dict[str, Any] = {"deviceClassName": "mig.nvidia.com", "count": count}
    if selectors:
        exactly["selectors"] = [{"cel": {"expression": s}} for s in selectors]
    return {"name": name, "exactly": exactly}


def profile(name: str) -> str:
    return f"device.attributes['{DRIVER}'].profile == '{name}'"


def claim(name: str, *requests: dict[str, Any], allocated: tuple[str, str] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}"},
        "spec": {"devices": {"requests": list(requests)}},
    }
    if allocated is not None:
        node, device = allocated
        term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
        obj["status"] = {
            "allocation": {
                "devices": {"results": [{"request": "mig", "driver": DRIVER, "pool": node, "device": device}]},
                "nodeSelector": {"nodeSelectorTerms": [term]},
            },
            "reservedFor": [{"resource": "pods", "name": f"run-{node}", "uid": f"uid-run-{node}"}],
        }
    return obj


def claim_pod(name: str, *, claims: dict[str, str] = {}, templates: dict[str, str] = {}, **kw: Any) -> dict[str, Any]:  # noqa: B006
    raw = pod(name, namespace="ml", **kw)
    refs = [{"name": k, "resourceClaimName": v} for k, v in claims.items()]
    refs += [{"name": k, "resourceClaimTemplateName": v} for k, v in templates.items()]
    if refs:
        raw["spec"]["resourceClaims"] = refs
        raw["spec"]["containers"][0]["resources"]["claims"] = [{"name": r["name"]} for r in refs]
    return raw


def cluster() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [
        device_class("mig.nvidia.com", MIG_CLASS),
        device_class("mig-3g.40gb", MIG_CLASS, profile("3g.40gb"), extended="nvidia.com/mig-3g.40gb"),
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaimTemplate",
            "metadata": {"name": "small", "namespace": "ml"},
            "spec": {"spec": {"devices": {"requests": [request("mig", profile("1g.10gb"))]}}},
        },
    ]
    for name in NODES:
        items.append({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": {"allocatable": {}}})
        items.extend(dynamic_mig_slices(name, H100, 1))
    for node, device in HELD.items():
        items.append(claim(f"held-{node}", request("mig"), allocated=(node, device)))
        running = claim_pod(f"run-{node}", claims={"mig": f"held-{node}"}, node_name=node)
        running["status"]["phase"] = "Running"
        items.append(running)
    return items


def scheduling_of(items: list[dict[str, Any]]) -> SchedulingService:
    """The scheduling service over a view loaded with ``items`` (a snapshot's List)."""
    clock = Clock()
    view = ClusterView(clock=clock)
    load_snapshot_text(view, yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    return SchedulingService(view, Settings.of(host="127.0.0.1"), Metrics(view), clock=clock)


def service(*extra: dict[str, Any]) -> SchedulingService:
    return scheduling_of([*cluster(), *extra])


def filter_(scheduling: SchedulingService, the_pod: dict[str, Any], nodes: tuple[str, ...] = NODES) -> dict[str, Any]:
    args = parse_extender_args(orjson.dumps({"Pod": the_pod, "NodeNames": list(nodes), "Nodes": None}))
    return scheduling.filter(args)


def prioritize(scheduling: SchedulingService, the_pod: dict[str, Any], names: list[str]) -> dict[str, int]:
    args = parse_extender_args(orjson.dumps({"Pod": the_pod, "NodeNames": names, "Nodes": None}))
    return {h["Host"]: h["Score"] for h in scheduling.prioritize(args)}


def test_a_4g_claim_fails_where_first_fit_finds_slice_0_taken() -> None:
    scheduling = service(claim("big", request("mig", profile("4g.40gb"))))
    big = claim_pod("p-big", claims={"mig": "big"})
    result = filter_(scheduling, big)
    assert result["NodeNames"] == ["dra-b", "dra-c"]
    # Four slices are free on dra-a, but 4g.40gb only starts at 0: pods leaving would make room.
    assert set(result["FailedNodes"]) == {"dra-a"}
    assert "allocator finds no free devices" in result["FailedNodes"]["dra-a"]
    scores = prioritize(scheduling, big, result["NodeNames"])
    assert scores["dra-c"] > scores["dra-b"], "the idle GPU stays idle"


def test_a_claim_from_a_template_packs_onto_a_busy_gpu() -> None:
    scheduling = service()
    small = claim_pod("p-small", templates={"mig": "small"})
    result = filter_(scheduling, small)
    assert result["NodeNames"] == list(NODES)
    scores = prioritize(scheduling, small, result["NodeNames"])
    assert scores["dra-b"] < max(scores["dra-a"], scores["dra-c"])


def test_an_extended_resource_backed_by_a_device_class_is_read_as_a_claim() -> None:
    scheduling = service()
    result = filter_(scheduling, pod("p-ext", namespace="ml", limits={"nvidia.com/mig-3g.40gb": "1"}))
    assert result["NodeNames"] == list(NODES)  # 3g at 4 on dra-a, at 0 elsewhere
    two = pod("p-ext2", namespace="ml", limits={"nvidia.com/mig-3g.40gb": "2"})
    result = filter_(scheduling, two)
    assert result["NodeNames"] == ["dra-b"]


@pytest.mark.parametrize(
    ("selector", "fits"),
    [
        ("device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('39Gi')) >= 0", list(NODES)),
        # 3g.40gb and 4g.40gb have 40448Mi (39.5Gi): only the full 7g.80gb reaches 40Gi, on the idle GPU.
        ("device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('40Gi')) >= 0", ["dra-b"]),
    ],
)
def test_cel_quantities_decide_which_devices_a_claim_may_take(selector: str, fits: list[str]) -> None:
    scheduling = service(claim("sized", request("mig", selector)))
    result = filter_(scheduling, claim_pod("p-sized", claims={"mig": "sized"}))
    assert result["NodeNames"] == fits


def test_a_pod_without_mig_passes_at_once_and_a_missing_claim_is_left_to_kube_scheduler() -> None:
    scheduling = service()
    assert filter_(scheduling, pod("plain", namespace="ml"))["NodeNames"] == list(NODES)
    missing = claim_pod("p-missing", claims={"mig": "not-created"})
    assert filter_(scheduling, missing)["NodeNames"] == list(NODES)
    assert scheduling.view.claim_reader.not_evaluable >= 1


def test_a_device_plugin_mig_pod_does_not_fit_dra_nodes() -> None:
    scheduling = service()
    result = filter_(scheduling, pod("p-plugin", namespace="ml", limits={"nvidia.com/mig-1g.10gb": "1"}))
    assert result["NodeNames"] == []
    assert all("only through DRA" in reason for reason in result["FailedAndUnresolvableNodes"].values())


def test_the_predicted_devices_are_assumed_until_the_claim_shows_its_allocation() -> None:
    scheduling = service(claim("one", request("mig", profile("1g.10gb"))))
    one = claim_pod("p-one", claims={"mig": "one"})
    result = filter_(scheduling, one)
    scores = prioritize(scheduling, one, result["NodeNames"])
    best = max(scores, key=lambda n: scores[n])
    assumed = scheduling.view.assumed_devices("uid-p-one")
    assert assumed is not None and assumed[0] == best
    (devices,) = assumed[1].values()
    assert devices <= scheduling.view.dra_in_use(best)


def cluster_verdict_of(scheduling: SchedulingService, the_pod: dict[str, Any]) -> ClusterVerdict:
    view = scheduling.view
    demand = view.claim_reader.demand_of(the_pod, pod_demand(the_pod))
    assert demand.claims is not None
    return cluster_verdict(demand, view.node_states(), scheduling.policy, view.mig_parted)


def test_verdicts_follow_the_allocator_a_new_dynamic_node_or_no_shape_at_all() -> None:
    scheduling = service(
        claim("whole", request("mig", profile("7g.80gb"))),
        claim("two-whole", request("mig", profile("7g.80gb"), count=2)),
        claim("held-b", request("mig"), allocated=("dra-b", "gpu-0-mig-1g10gb-19-6")),
    )
    waiting = cluster_verdict_of(scheduling, claim_pod("p-whole", claims={"mig": "whole"}))
    assert waiting.verdict is PodVerdict.NO_LAYOUT_FITS
    assert "a new 1x H100-80GB node with DynamicMIG would" in waiting.reason
    assert waiting.suggested_layout is None  # re-partitioning does not apply to DynamicMIG
    never = cluster_verdict_of(scheduling, claim_pod("p-two", claims={"mig": "two-whole"}))
    assert never.verdict is PodVerdict.NO_LAYOUT_FITS
    assert "exceeds what this node's DRA devices can ever hold" in never.reason
    fits = cluster_verdict_of(scheduling, claim_pod("p-small", templates={"mig": "small"}))
    assert fits.verdict is PodVerdict.FITS
