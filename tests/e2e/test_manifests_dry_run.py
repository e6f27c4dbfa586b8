"""Every object under manifests/ passes a server-side dry-run (strict field validation) on kube-apiserver.

kube-scheduler-config.yaml of the extender mode is not an API object (it is the scheduler's own config
file); the end-to-end scheduling tests load it into a real kube-scheduler instead. Karpenter's objects
(NodePool, EC2NodeClass, NodeOverlay) need its CRDs: tests/e2e/test_karpenter.py dry-runs them there.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.e2e.harness import ROOT, Kube

NOT_API_OBJECTS = {
    ROOT / "manifests/extender-mode/kube-scheduler-config.yaml",
    ROOT / "manifests/extender-mode/kube-scheduler-config-dra.yaml",
    # monitoring.coreos.com CRDs (Prometheus Operator) are not in a bare apiserver; tests/prometheus
    # loads the rules into a real Prometheus and checks them with promtool instead.
    ROOT / "manifests/prometheus/servicemonitor.yaml",
    ROOT / "manifests/prometheus/prometheusrule.yaml",
}

KARPENTER_PATHS = {
    "NodePool": "/apis/karpenter.sh/v1/nodepools",
    "NodeOverlay": "/apis/karpenter.sh/v1alpha1/nodeoverlays",
    "EC2NodeClass": "/apis/karpenter.k8s.aws/v1/ec2nodeclasses",
}

PATHS = {
    "Namespace": "/api/v1/namespaces",
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
    "Service": "/api/v1/namespaces/{ns}/services",
    "Pod": "/api/v1/namespaces/{ns}/pods",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    "PriorityClass": "/apis/scheduling.k8s.io/v1/priorityclasses",
}


def manifest_objects(*, karpenter: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """Every API object under manifests/: the core ones, or with ``karpenter`` only Karpenter's."""
    found = []
    for path in sorted((ROOT / "manifests").rglob("*.yaml")):
        # Helm charts are templates: tests/e2e/test_helm.py dry-runs what they render.
        if path.name == "kustomization.yaml" or path in NOT_API_OBJECTS or path.is_relative_to(ROOT / "manifests/helm"):
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document and (document["kind"] in KARPENTER_PATHS) == karpenter:
                found.append((f"{path.relative_to(ROOT)}:{document['kind']}/{document['metadata']['name']}", document))
    return found


def test_every_manifest_file_is_covered() -> None:
    kinds = {obj["kind"] for _, obj in manifest_objects()}
    assert kinds <= set(PATHS), f"no API path known for {kinds - set(PATHS)}"
    files = {where.split(":")[0] for where, _ in manifest_objects()}
    assert {
        "manifests/base/deployment.yaml",
        "manifests/secondary-scheduler/deployment.yaml",
        "manifests/common/rbac.yaml",
    } <= files


@pytest.mark.parametrize(("where", "obj"), manifest_objects(), ids=[w for w, _ in manifest_objects()])
def test_server_side_dry_run(kube: Kube, where: str, obj: dict[str, Any]) -> None:
    for namespace in ("mig-extender", "gpu-operator"):
        kube.ensure_namespace(namespace)
    path = PATHS[obj["kind"]].format(ns=obj["metadata"].get("namespace", "default"))
    status, body = kube.plane.request("POST", f"{path}?dryRun=All&fieldValidation=Strict", obj)
    # 409: it exists already (the namespaces created above); still validated by the server
    assert status in (200, 201) or (status == 409 and obj["kind"] == "Namespace"), f"{where}: {status} {body}"
