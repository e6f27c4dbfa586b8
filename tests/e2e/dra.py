"""DRA objects for the end-to-end tests: DeviceClasses as NVIDIA's driver chart installs them, ResourceSlices as
its kubelet plugin publishes them (there is no plugin here: the tests publish them through the API), claims,
templates and pods that use them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from extender.model.catalog import model_named
from extender.model.dra.driver import DRIVER, dynamic_mig_slices
from tests.e2e.harness import NAMESPACE, Kube, wait_for

RESOURCE = "/apis/resource.k8s.io/v1"
H100 = "H100-80GB"

# deployments/helm/dra-driver-nvidia-gpu/templates/deviceclass-*.yaml of kubernetes-sigs/dra-driver-nvidia-gpu.
DEVICE_CLASSES: dict[str, str] = {
    "gpu.nvidia.com": f"device.driver == '{DRIVER}' && device.attributes['{DRIVER}'].type == 'gpu'",
    "mig.nvidia.com": f"device.driver == '{DRIVER}' && device.attributes['{DRIVER}'].type == 'mig'",
}


def profile_selector(profile: str) -> str:
    return f"device.attributes['{DRIVER}'].profile == '{profile}'"


def create_device_classes(kube: Kube, extended: Mapping[str, str] | None = None) -> None:
    """The driver's classes, plus one class per ``{extended resource name: profile}`` (DRAExtendedResource)."""
    for name, selector in DEVICE_CLASSES.items():
        _create_class(kube, name, [selector])
    for resource, profile in (extended or {}).items():
        name = resource.split("/", 1)[1]
        _create_class(kube, name, [DEVICE_CLASSES["mig.nvidia.com"], profile_selector(profile)], resource)


def _create_class(kube: Kube, name: str, selectors: Sequence[str], extended_resource: str | None = None) -> None:
    spec: dict[str, Any] = {"selectors": [{"cel": {"expression": s}} for s in selectors]}
    if extended_resource:
        spec["extendedResourceName"] = extended_resource
    body = {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": name}, "spec": spec}
    kube.call("POST", f"{RESOURCE}/deviceclasses", body, ok=(201, 409))


def create_dra_node(kube: Kube, name: str, *, gpus: int = 1, model: str = H100) -> None:
    """A kubelet-less Node without device-plugin resources, and the driver's DynamicMIG slices for it."""
    kube.create_node(name, f"NVIDIA-{model}-HBM3" if model == H100 else f"NVIDIA-{model}", gpus=gpus, allocatable={})
    for body in dynamic_mig_slices(name, model_named(model), gpus):
        kube.call("POST", f"{RESOURCE}/resourceslices", body)


def mig_request(name: str, profile: str, count: int = 1) -> dict[str, Any]:
    return {
        "name": name,
        "exactly": {
            "deviceClassName": "mig.nvidia.com",
            "selectors": [{"cel": {"expression": profile_selector(profile)}}],
            "count": count,
        },
    }


def claim_spec(requests: Sequence[dict[str, Any]], *, same_gpu: bool = False) -> dict[str, Any]:
    devices: dict[str, Any] = {"requests": list(requests)}
    if same_gpu:
        devices["constraints"] = [{"matchAttribute": f"{DRIVER}/parentUUID"}]
    return {"devices": devices}


def create_claim(kube: Kube, name: str, spec: dict[str, Any]) -> None:
    body = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": {"name": name}, "spec": spec}
    kube.call("POST", f"{RESOURCE}/namespaces/{NAMESPACE}/resourceclaims", body)


def create_template(kube: Kube, name: str, spec: dict[str, Any]) -> None:
    body = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name},
        "spec": {"spec": spec},
    }
    kube.call("POST", f"{RESOURCE}/namespaces/{NAMESPACE}/resourceclaimtemplates", body)


def create_claim_pod(
    kube: Kube,
    name: str,
    *,
    claims: Sequence[str] = (),
    templates: Sequence[str] = (),
    limits: Mapping[str, int] | None = None,
    scheduler: str = "default-scheduler",
) -> None:
    """A pod using named claims, claims from templates, and extended resources (backed by DRA or not)."""
    refs = [{"name": f"c{i}", "resourceClaimName": c} for i, c in enumerate(claims)]
    refs += [{"name": f"t{i}", "resourceClaimTemplateName": t} for i, t in enumerate(templates)]
    container: dict[str, Any] = {"name": "main", "image": "registry.example/cuda:12"}
    resources: dict[str, Any] = {}
    if refs:
        resources["claims"] = [{"name": r["name"]} for r in refs]
    if limits:
        resources["limits"] = {k: str(v) for k, v in limits.items()}
    if resources:
        container["resources"] = resources
    spec: dict[str, Any] = {"schedulerName": scheduler, "terminationGracePeriodSeconds": 0, "containers": [container]}
    if refs:
        spec["resourceClaims"] = refs
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}
    kube.call("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", body)


def claim(kube: Kube, name: str) -> dict[str, Any]:
    return dict(kube.call("GET", f"{RESOURCE}/namespaces/{NAMESPACE}/resourceclaims/{name}"))


def allocated_devices(kube: Kube, name: str) -> list[str]:
    """The devices the scheduler wrote into the claim's allocation, in result order."""
    allocation = claim(kube, name).get("status", {}).get("allocation") or {}
    return [r["device"] for r in (allocation.get("devices") or {}).get("results") or []]


def wait_allocated(kube: Kube, name: str, timeout: float = 30.0) -> list[str]:
    return wait_for(f"claim {name} allocated", lambda: allocated_devices(kube, name), timeout)


def pod_claim_names(kube: Kube, pod: str) -> list[str]:
    """Claims the pod uses: generated ones from ``status.resourceClaimStatuses`` and the extended-resource claim."""
    status = kube.pod(pod).get("status", {})
    names = [s["resourceClaimName"] for s in status.get("resourceClaimStatuses") or [] if s.get("resourceClaimName")]
    extended = status.get("extendedResourceClaimStatus") or {}
    if extended.get("resourceClaimName"):
        names.append(extended["resourceClaimName"])
    return names


def clean_dra(kube: Kube) -> None:
    """Delete the DRA objects the tests create (claims first: slices and classes are cluster-wide)."""
    for path in (
        f"{RESOURCE}/namespaces/{NAMESPACE}/resourceclaims",
        f"{RESOURCE}/namespaces/{NAMESPACE}/resourceclaimtemplates",
    ):
        for item in kube.call("GET", path)["items"]:
            meta = item["metadata"]
            if meta.get("finalizers"):
                kube.call(
                    "PATCH",
                    f"{path}/{meta['name']}",
                    {"metadata": {"finalizers": None}},
                    ok=(200, 404),
                    content_type="application/merge-patch+json",
                )
            kube.call("DELETE", f"{path}/{meta['name']}", ok=(200, 202, 404))
    kube.call("DELETE", f"{RESOURCE}/resourceslices", ok=(200, 404))
    kube.call("DELETE", f"{RESOURCE}/deviceclasses", ok=(200, 404))
