"""DRA end to end: the real kube-apiserver and kube-scheduler, each test on 1.36 and on 1.37, ResourceSlices in
NVIDIA's DynamicMIG format published through the API (there is no kubelet plugin: pods stop before device
preparation, and the allocation the scheduler writes into the claim is what is checked), and the extender in both
modes and both configurations (with managedResources for extended resources a DeviceClass backs, without for
claim pods)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from extender.model.demand import pod_demand
from extender.model.policy import PolicyConfig, evaluate
from extender.view.snapshot import load_snapshot_text
from extender.view.store import ClusterView, Kind
from tests.e2e import dra
from tests.e2e.harness import (
    K8S_VERSION,
    K8S_VERSIONS,
    NAMESPACE,
    ControlPlane,
    Extender,
    Kube,
    running_plane,
    start_scheduler,
    wait_for,
)

pytestmark = pytest.mark.dra

H100_LABEL = "NVIDIA-H100-80GB-HBM3"
SCHEDULERS = {"extender-dra": "default-scheduler", "secondary": "mig-scheduler"}
"""The configurations that reach claim pods, and the scheduler name their pods ask for."""


@pytest.fixture(scope="module", params=K8S_VERSIONS)
def plane(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """Every test here on each release built: the default one is the session's plane, another runs (its binaries
    built first if missing) for this module's tests only."""
    version: str = request.param
    if version == K8S_VERSION:
        yield request.getfixturevalue("default_plane")
        return
    with running_plane(tmp_path_factory.mktemp(f"plane-{version}-"), version) as control_plane:
        yield control_plane


@pytest.fixture
def dra_kube(kube: Kube) -> Iterator[Kube]:
    dra.clean_dra(kube)
    dra.create_device_classes(kube, {"nvidia.com/mig-1g.10gb": "1g.10gb", "nvidia.com/mig-3g.40gb": "3g.40gb"})
    yield kube
    kube.clean()
    dra.clean_dra(kube)


def cluster_view(kube: Kube) -> ClusterView:
    """The cluster as the extender reads it, from the API objects now."""
    items: list[dict[str, Any]] = []
    for kind, path in (
        ("Node", "/api/v1/nodes"),
        ("Pod", "/api/v1/pods"),
        ("ResourceSlice", f"{dra.RESOURCE}/resourceslices"),
        ("ResourceClaim", f"{dra.RESOURCE}/resourceclaims"),
        ("ResourceClaimTemplate", f"{dra.RESOURCE}/resourceclaimtemplates"),
        ("DeviceClass", f"{dra.RESOURCE}/deviceclasses"),
    ):
        for item in kube.call("GET", path)["items"]:
            items.append({**item, "kind": kind})
    view = ClusterView()
    load_snapshot_text(view, yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    return view


def wait_seen(extender: Extender, kind: str, count: int) -> None:
    """Until the extender's view holds ``count`` objects of ``kind`` (its watch is asynchronous to the test)."""
    line = f'mig_extender_view_objects{{kind="{kind}"}} {float(count)}'

    def seen() -> bool:
        with urllib.request.urlopen(f"{extender.url}/metrics", timeout=5) as response:
            return line in response.read().decode()

    wait_for(f"extender's view holds {count} {kind}", seen)


def hold(kube: Kube, claim_name: str, node: str, device: str) -> None:
    """``device`` on ``node`` held by an allocated claim ``claim_name``, as a running pod's would be."""
    dra.create_claim(kube, claim_name, dra.claim_spec([dra.mig_request("mig", "1g.10gb")]))
    status = {
        "allocation": {
            "devices": {"results": [{"request": "mig", "driver": "gpu.nvidia.com", "pool": node, "device": device}]},
            "nodeSelector": {
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]
            },
        }
    }
    kube.call(
        "PUT",
        f"{dra.RESOURCE}/namespaces/{NAMESPACE}/resourceclaims/{claim_name}/status",
        {**dra.claim(kube, claim_name), "status": status},
    )


@pytest.mark.parametrize("mode", sorted(SCHEDULERS))
def test_a_claim_pod_packs_where_the_extender_ranks_first_with_the_devices_it_predicted(
    plane: ControlPlane, dra_kube: Kube, extender: Extender, schedulers: list[object], workdir: Path, mode: str
) -> None:
    kube = dra_kube
    for name in ("dra-a", "dra-b", "dra-c"):
        dra.create_dra_node(kube, name)
    # dra-b's GPU holds a 3g.40gb at slice 4; the others are idle. A 1g.10gb claim packs onto dra-b.
    hold(kube, "held-b", "dra-b", "gpu-0-mig-3g40gb-9-4")
    wait_seen(extender, "resourceclaims", 1)
    schedulers.append(start_scheduler(plane, workdir, mode, extender.url))
    dra.create_claim(kube, "small", dra.claim_spec([dra.mig_request("mig", "1g.10gb")]))
    dra.create_claim_pod(kube, "p-small", claims=["small"], scheduler=SCHEDULERS[mode])
    node = kube.wait_bound("p-small")
    assert node == "dra-b"
    assert dra.wait_allocated(kube, "small") == ["gpu-0-mig-1g10gb-19-0"]


def test_the_allocation_written_is_the_one_predicted_for_claims_from_templates(
    plane: ControlPlane, dra_kube: Kube, extender: Extender, schedulers: list[object], workdir: Path
) -> None:
    kube = dra_kube
    manager = plane.start_controller_manager(controllers=["resourceclaim-controller"])
    try:
        dra.create_dra_node(kube, "dra-a", gpus=2)
        hold(kube, "held-a", "dra-a", "gpu-0-mig-1g10gb-19-0")
        wait_seen(extender, "resourceclaims", 1)
        # Two 1g.10gb on one GPU (matchAttribute parentUUID), then a 3g.40gb: first fit, with backtracking.
        spec = dra.claim_spec([dra.mig_request("mig", "1g.10gb", 2)], same_gpu=True)
        dra.create_template(kube, "pair", spec)
        dra.create_template(kube, "three", dra.claim_spec([dra.mig_request("mig", "3g.40gb")]))
        schedulers.append(start_scheduler(plane, workdir, "extender-dra", extender.url))
        for pod, template in (("p-pair", "pair"), ("p-three", "three")):
            dra.create_claim_pod(kube, pod, templates=[template])
            claims = wait_for(f"{pod}'s claim created", lambda name=pod: dra.pod_claim_names(kube, name))
            node = kube.wait_bound(pod)
            written = dra.wait_allocated(kube, claims[0])
            # The model reads the cluster as it is now, with this pod's claim allocated: predict on the state
            # before, by freeing the claim's devices in the prediction's view.
            assert node == "dra-a"
            assert written == _predicted_before(kube, pod, node, claims[0])
    finally:
        plane.stop_controller_manager(manager)


def _predicted_before(kube: Kube, pod: str, node: str, claim_name: str) -> list[str]:
    """The devices predicted for ``pod`` on the cluster as the scheduler saw it: without ``claim_name``'s allocation."""
    view = cluster_view(kube)
    raw = kube.pod(pod)
    unallocated = {k: v for k, v in dra.claim(kube, claim_name).items() if k != "status"}
    view.apply(Kind.RESOURCE_CLAIMS, "MODIFIED", {**unallocated, "kind": "ResourceClaim"})
    demand = view.claim_reader.demand_of(raw, pod_demand(raw))
    state = view.node_state(node)
    assert demand.claims is not None and state is not None
    fit = evaluate(state, demand, PolicyConfig())
    assert fit.fits_now, fit.reason
    return [device for claim in fit.devices for (_, _, device) in claim]


def test_an_extended_resource_backed_by_dra_reaches_the_extender_with_managed_resources(
    plane: ControlPlane, dra_kube: Kube, extender: Extender, schedulers: list[object], workdir: Path
) -> None:
    kube = dra_kube
    for name in ("dra-a", "dra-b"):
        dra.create_dra_node(kube, name)
    hold(kube, "held-a", "dra-a", "gpu-0-mig-1g10gb-19-6")
    wait_seen(extender, "resourceclaims", 1)
    schedulers.append(start_scheduler(plane, workdir, "extender", extender.url))
    dra.create_claim_pod(kube, "p-ext", limits={"nvidia.com/mig-3g.40gb": 1})
    assert kube.wait_bound("p-ext") == "dra-a"  # packed beside the 1g, dra-b's GPU stays idle
    (claim_name,) = wait_for("extended-resource claim", lambda: dra.pod_claim_names(kube, "p-ext"))
    assert dra.wait_allocated(kube, claim_name) == ["gpu-0-mig-3g40gb-9-0"]


def test_a_claim_that_fits_nowhere_gets_the_verdict_and_an_event(
    plane: ControlPlane, dra_kube: Kube, extender: Extender, schedulers: list[object], workdir: Path
) -> None:
    kube = dra_kube
    for name in ("dra-a", "dra-b"):
        dra.create_dra_node(kube, name)
        hold(kube, f"held-{name}", name, "gpu-0-mig-1g10gb-19-0")  # slice 0 taken: no 4g.40gb anywhere
    wait_seen(extender, "resourceclaims", 2)
    schedulers.append(start_scheduler(plane, workdir, "extender-dra", extender.url))
    dra.create_claim(kube, "big", dra.claim_spec([dra.mig_request("mig", "4g.40gb")]))
    dra.create_claim_pod(kube, "p-big", claims=["big"])
    condition = wait_for(
        "PodScheduled=False", lambda: (c := kube.scheduled_condition("p-big")) and c["status"] == "False" and c
    )
    assert condition["reason"] == "Unschedulable"
    annotations = wait_for(
        "verdict annotation",
        lambda: (a := kube.pod("p-big")["metadata"].get("annotations") or {}).get("mig-extender.io/verdict") and a,
    )
    assert annotations["mig-extender.io/verdict"] == "no-layout-fits"
    assert "claim c0" in annotations["mig-extender.io/demand"]
    event = wait_for("event", lambda: [e for e in kube.events_for("p-big") if e["reason"] == "MigNoLayoutFits"])
    assert event[0]["type"] == "Warning"


def test_a_mixed_cluster_schedules_device_plugin_and_dra_pods_side_by_side(
    plane: ControlPlane, dra_kube: Kube, extender: Extender, schedulers: list[object], workdir: Path
) -> None:
    kube = dra_kube
    kube.create_node("plugin-a", H100_LABEL, config="all-1g.10gb")
    dra.create_dra_node(kube, "dra-a")
    schedulers.append(start_scheduler(plane, workdir, "extender-dra", extender.url))
    kube.create_pod("p-plugin", {"nvidia.com/mig-1g.10gb": 1})
    dra.create_claim(kube, "c", dra.claim_spec([dra.mig_request("mig", "2g.20gb")]))
    dra.create_claim_pod(kube, "p-claim", claims=["c"])
    assert kube.wait_bound("p-plugin") == "plugin-a"
    assert kube.wait_bound("p-claim") == "dra-a"
    assert dra.wait_allocated(kube, "c") == ["gpu-0-mig-2g20gb-14-0"]
