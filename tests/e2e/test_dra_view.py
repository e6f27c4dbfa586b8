"""The view's DRA reflectors against the real kube-apiserver: slices, claims, templates and classes listed and
watched from ``resource.k8s.io/v1``, an allocation written to a claim's status counted on its node, a slice
deleted making the pool incomplete."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from extender.kube.client import make_api_client
from extender.model.catalog import model_named
from extender.model.dra.driver import DRIVER, dynamic_mig_slices
from extender.view.store import DRA_KINDS, ClusterView
from extender.view.watch import reflectors
from tests.e2e.harness import NAMESPACE, ControlPlane, Kube

RESOURCE = "/apis/resource.k8s.io/v1"
NODE = "dra-view-1"
DEVICE = "gpu-0-mig-1g10gb-19-0"
MIG_CLASS = {
    "apiVersion": "resource.k8s.io/v1",
    "kind": "DeviceClass",
    "metadata": {"name": "mig.nvidia.com"},
    "spec": {"selectors": [{"cel": {"expression": f"device.attributes['{DRIVER}'].type == 'mig'"}}]},
}
REQUESTS = [
    {
        "name": "mig",
        "exactly": {
            "deviceClassName": "mig.nvidia.com",
            "selectors": [{"cel": {"expression": f"device.attributes['{DRIVER}'].profile == '1g.10gb'"}}],
        },
    }
]
CLAIM = {
    "apiVersion": "resource.k8s.io/v1",
    "kind": "ResourceClaim",
    "metadata": {"name": "trainer-mig", "namespace": NAMESPACE},
    "spec": {"devices": {"requests": REQUESTS}},
}
TEMPLATE = {
    "apiVersion": "resource.k8s.io/v1",
    "kind": "ResourceClaimTemplate",
    "metadata": {"name": "mig-profile", "namespace": NAMESPACE},
    "spec": {"spec": {"devices": {"requests": REQUESTS}}},
}


async def _until(what: str, probe: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting until {what}")
        await asyncio.sleep(0.05)


async def _follow(plane: ControlPlane, kube: Kube, slices: list[dict[str, Any]]) -> None:
    api = await make_api_client(str(plane.kubeconfig))
    view = ClusterView()
    tasks = [
        asyncio.create_task(r.run())
        for r in reflectors(view, api, timeout_s=60, read_timeout_s=30)
        if r.kind in DRA_KINDS
    ]
    try:
        # listed: what exists before the reflectors start
        await _until("the slices, the class and the claim listed", lambda: len(view.resource_slices()) == 2)
        await _until("the class", lambda: view.device_class("mig.nvidia.com") is not None)
        claim = view.claim(NAMESPACE, "trainer-mig")
        assert claim is not None and claim.allocation is None and claim.uid
        assert [p.name for p in view.dra_pools(NODE)] == [NODE] and not view.dra_pools(NODE)[0].invalid
        inventory = view.dra_inventory(NODE)
        assert inventory is not None and len(inventory.gpus) == 1 and view.dra_in_use(NODE) == set()

        # watched: a template created, an allocation written, a slice deleted
        kube.call("POST", f"{RESOURCE}/namespaces/{NAMESPACE}/resourceclaimtemplates", TEMPLATE)
        await _until("the template", lambda: view.claim_template(NAMESPACE, "mig-profile") is not None)
        current = kube.call("GET", f"{RESOURCE}/namespaces/{NAMESPACE}/resourceclaims/trainer-mig")
        term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [NODE]}]}
        current["status"] = {
            "allocation": {
                "devices": {"results": [{"request": "mig", "driver": DRIVER, "pool": NODE, "device": DEVICE}]},
                "nodeSelector": {"nodeSelectorTerms": [term]},
            }
        }
        kube.call("PUT", f"{RESOURCE}/namespaces/{NAMESPACE}/resourceclaims/trainer-mig/status", current)
        await _until("the allocation", lambda: view.dra_in_use(NODE) == {(DRIVER, NODE, DEVICE)})
        allocated = view.claim(NAMESPACE, "trainer-mig")
        assert allocated is not None and allocated.allocated_node == NODE
        inventory = view.dra_inventory(NODE)
        assert inventory is not None
        assert [str(i.placement) for g in inventory.node.gpus for i in g.instances if i.used] == ["1g.10gb@0"]

        kube.call("DELETE", f"{RESOURCE}/resourceslices/{slices[1]['metadata']['name']}")
        await _until("the pool incomplete", lambda: bool(view.dra_pools(NODE)) and view.dra_pools(NODE)[0].incomplete)
        for task in tasks:
            assert not task.done(), f"a reflector ended: {task}"
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await api.close()


def test_the_view_follows_dra_objects_on_a_real_api_server(plane: ControlPlane, kube: Kube) -> None:
    slices = dynamic_mig_slices(NODE, model_named("H100-80GB"), 1)
    created: list[str] = []
    try:
        for body in slices:
            kube.call("POST", f"{RESOURCE}/resourceslices", body)
            created.append(f"{RESOURCE}/resourceslices/{body['metadata']['name']}")
        kube.call("POST", f"{RESOURCE}/deviceclasses", MIG_CLASS, ok=(201, 409))
        kube.call("POST", f"{RESOURCE}/namespaces/{NAMESPACE}/resourceclaims", CLAIM)
        created.append(f"{RESOURCE}/namespaces/{NAMESPACE}/resourceclaims/trainer-mig")
        created.append(f"{RESOURCE}/namespaces/{NAMESPACE}/resourceclaimtemplates/mig-profile")
        asyncio.run(_follow(plane, kube, slices))
    finally:
        for path in created:
            kube.call("DELETE", path, ok=(200, 202, 404))
