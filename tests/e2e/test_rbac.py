"""What the shipped RBAC lets the extender's ServiceAccounts do, asked of the real apiserver's RBAC authorizer.

The roles of manifests/common/rbac.yaml, manifests/karpenter/rbac.yaml (the provisioning loop) and
manifests/secondary-scheduler/rbac.yaml, with their ServiceAccounts, are applied (server-side apply) to the
test's kube-apiserver, which runs ``--authorization-mode=RBAC``. Each expectation is then a
SubjectAccessReview (authorization.k8s.io/v1) posted as the admin: the apiserver's own answer to "may this
ServiceAccount do this?". docs/security.md lists the same table.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
import yaml

from tests.e2e.harness import ROOT, ControlPlane, Kube

APPLIED = (
    "manifests/common/serviceaccount.yaml",
    "manifests/common/rbac.yaml",
    "manifests/karpenter/rbac.yaml",
    "manifests/secondary-scheduler/rbac.yaml",
)
NAMESPACE = "mig-extender"
EXTENDER = f"system:serviceaccount:{NAMESPACE}:mig-extender"
SCHEDULER = f"system:serviceaccount:{NAMESPACE}:mig-scheduler"

PATHS = {
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
}


class Ask(NamedTuple):
    verb: str
    resource: str
    namespace: str = ""
    name: str = ""
    group: str = ""
    subresource: str = ""

    def __str__(self) -> str:
        what = (f"{self.group}/" if self.group else "") + self.resource
        what += (f"/{self.subresource}" if self.subresource else "") + (f" {self.name}" if self.name else "")
        return f"{self.verb} {what}" + (f" in {self.namespace}" if self.namespace else " (all namespaces)")


ALLOWED = [
    # the cluster view
    Ask("list", "nodes"),
    Ask("watch", "nodes"),
    Ask("get", "nodes", name="gpu-a"),
    Ask("list", "pods"),
    Ask("watch", "pods"),
    Ask("list", "pods", namespace="team-a"),
    # the DRA objects of the cluster view
    Ask("list", "resourceslices", group="resource.k8s.io"),
    Ask("watch", "resourceslices", group="resource.k8s.io"),
    Ask("list", "resourceclaims", group="resource.k8s.io"),
    Ask("watch", "resourceclaims", namespace="team-a", group="resource.k8s.io"),
    Ask("get", "resourceclaims", namespace="team-a", name="trainer-0-mig-x7k2p", group="resource.k8s.io"),
    Ask("list", "resourceclaimtemplates", group="resource.k8s.io"),
    Ask("watch", "deviceclasses", group="resource.k8s.io"),
    Ask("get", "deviceclasses", name="mig.nvidia.com", group="resource.k8s.io"),
    # the bind verb: kube-scheduler hands the binding of the pod it placed to the extender
    Ask("create", "pods", namespace="team-a", name="trainer-0", subresource="binding"),
    # defragmentation (docs/defrag.md): evictions, which the API server checks against PodDisruptionBudgets
    Ask("create", "pods", namespace="team-a", name="trainer-0", subresource="eviction"),
    Ask("list", "poddisruptionbudgets", namespace="team-a", group="policy"),
    # verdict annotations on pending pods, re-layout labels and taints on nodes
    Ask("patch", "pods", namespace="team-a", name="trainer-0"),
    Ask("patch", "nodes", name="gpu-a"),
    # events on those pods
    Ask("create", "events", namespace="team-a", group="events.k8s.io"),
    Ask("create", "events", namespace="team-a"),
    # the one mig-parted ConfigMap (list/watch by name: a fieldSelector metadata.name=...)
    Ask("get", "configmaps", namespace="gpu-operator", name="default-mig-parted-config"),
    Ask("update", "configmaps", namespace="gpu-operator", name="default-mig-parted-config"),
    Ask("watch", "configmaps", namespace="gpu-operator", name="default-mig-parted-config"),
    # leader election
    Ask("create", "leases", namespace=NAMESPACE, group="coordination.k8s.io"),
    Ask("get", "leases", namespace=NAMESPACE, name="mig-extender", group="coordination.k8s.io"),
    Ask("update", "leases", namespace=NAMESPACE, name="mig-extender", group="coordination.k8s.io"),
    # the provisioning loop's capacity-request pods, in its own namespace only
    Ask("create", "pods", namespace=NAMESPACE),
    Ask("delete", "pods", namespace=NAMESPACE, name="capacity-request-x"),
    Ask("patch", "pods", namespace=NAMESPACE, name="capacity-request-x", subresource="status"),
    Ask("get", "configmaps", namespace=NAMESPACE, name="mig-extender-pools"),
]

DENIED = [
    # secrets, anywhere
    Ask("get", "secrets", namespace=NAMESPACE, name="mig-extender-tls"),
    Ask("list", "secrets", namespace=NAMESPACE),
    Ask("list", "secrets"),
    Ask("get", "secrets", namespace="kube-system", name="bootstrap-token-abcdef"),
    Ask("watch", "secrets", namespace="gpu-operator"),
    # other ConfigMaps
    Ask("get", "configmaps", namespace="gpu-operator", name="other-config"),
    Ask("update", "configmaps", namespace="gpu-operator", name="other-config"),
    Ask("patch", "configmaps", namespace="gpu-operator", name="default-mig-parted-config"),
    Ask("delete", "configmaps", namespace="gpu-operator", name="default-mig-parted-config"),
    Ask("list", "configmaps", namespace="gpu-operator"),
    Ask("update", "configmaps", namespace=NAMESPACE, name="mig-extender-pools"),
    Ask("get", "configmaps", namespace="kube-system", name="extension-apiserver-authentication"),
    # pods elsewhere than its own namespace, and into pods
    Ask("create", "pods", namespace="default"),
    Ask("create", "pods", namespace="kube-system"),
    Ask("delete", "pods", namespace="team-a", name="trainer-0"),
    Ask("patch", "pods", namespace="team-a", name="trainer-0", subresource="status"),
    Ask("create", "pods", namespace="team-a", name="trainer-0", subresource="exec"),
    Ask("update", "pods", namespace="team-a", name="trainer-0"),
    # nodes: no delete, no replace, no kubelet API
    Ask("delete", "nodes", name="gpu-a"),
    Ask("create", "nodes"),
    Ask("update", "nodes", name="gpu-a"),
    Ask("get", "nodes", name="gpu-a", subresource="proxy"),
    Ask("patch", "nodes", name="gpu-a", subresource="status"),
    # DRA objects: read only
    Ask("create", "resourceslices", group="resource.k8s.io"),
    Ask("delete", "resourceslices", name="00000-gpu.nvidia.com-gpu-a", group="resource.k8s.io"),
    Ask("update", "resourceclaims", namespace="team-a", name="c", group="resource.k8s.io", subresource="status"),
    Ask("create", "deviceclasses", group="resource.k8s.io"),
    # leases other than its own
    Ask("update", "leases", namespace="kube-system", name="kube-scheduler", group="coordination.k8s.io"),
    Ask("delete", "leases", namespace=NAMESPACE, name="mig-extender", group="coordination.k8s.io"),
    Ask("create", "leases", namespace="kube-system", group="coordination.k8s.io"),
    # no privilege escalation
    Ask("escalate", "clusterroles", name="mig-extender", group="rbac.authorization.k8s.io"),
    Ask("bind", "clusterroles", name="cluster-admin", group="rbac.authorization.k8s.io"),
    Ask("create", "clusterrolebindings", group="rbac.authorization.k8s.io"),
    Ask("create", "rolebindings", namespace=NAMESPACE, group="rbac.authorization.k8s.io"),
    Ask("update", "roles", namespace=NAMESPACE, name="mig-extender-provisioning", group="rbac.authorization.k8s.io"),
    Ask("impersonate", "users", name="admin"),
    Ask("impersonate", "groups", name="system:masters"),
    Ask("impersonate", "serviceaccounts", namespace="kube-system", name="default"),
    Ask("create", "serviceaccounts", namespace=NAMESPACE, name="mig-extender", subresource="token"),
    Ask("create", "certificatesigningrequests", group="certificates.k8s.io"),
    # nothing of the workloads' controllers
    Ask("create", "deployments", namespace=NAMESPACE, group="apps"),
    Ask("patch", "daemonsets", namespace="gpu-operator", name="nvidia-mig-manager", group="apps"),
    Ask("delete", "namespaces", name="gpu-operator"),
]


def _review(plane: ControlPlane, user: str, ask: Ask) -> dict[str, Any]:
    namespace = user.split(":")[2]
    attributes = {k: v for k, v in ask._asdict().items() if v}
    status, body = plane.request(
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                # what the apiserver's ServiceAccount token authenticator adds
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
                "resourceAttributes": attributes,
            },
        },
    )
    assert status == 201, f"SubjectAccessReview: HTTP {status}: {body}"
    return dict(body["status"])


def _objects() -> list[dict[str, Any]]:
    found = []
    for relative in APPLIED:
        for document in yaml.safe_load_all((ROOT / relative).read_text()):
            if document:
                found.append(document)
    return found


def _path(obj: dict[str, Any]) -> str:
    base = PATHS[obj["kind"]].format(ns=obj["metadata"].get("namespace", ""))
    return f"{base}/{obj['metadata']['name']}"


@pytest.fixture(scope="module")
def rbac(plane: ControlPlane) -> Iterator[None]:
    """The shipped RBAC applied; removed again afterwards (objects that existed before are left alone)."""
    kube = Kube(plane)
    for namespace in (NAMESPACE, "gpu-operator", "kube-system"):
        kube.ensure_namespace(namespace)
    created = []
    for obj in _objects():
        path = _path(obj)
        existed = plane.request("GET", path)[0] == 200
        kube.call(
            "PATCH",
            f"{path}?fieldManager=e2e-rbac&force=true",
            obj,
            content_type="application/apply-patch+yaml",  # JSON is YAML: server-side apply
        )
        if not existed:
            created.append(path)
    yield
    for path in reversed(created):
        kube.call("DELETE", path, ok=(200, 202, 404))


@pytest.mark.parametrize("ask", ALLOWED, ids=str)
def test_the_extender_may(plane: ControlPlane, rbac: None, ask: Ask) -> None:
    answer = _review(plane, EXTENDER, ask)
    assert answer.get("allowed") is True, f"{EXTENDER} should be allowed to {ask}: {answer}"


@pytest.mark.parametrize("ask", DENIED, ids=str)
def test_the_extender_may_not(plane: ControlPlane, rbac: None, ask: Ask) -> None:
    answer = _review(plane, EXTENDER, ask)
    assert not answer.get("allowed"), f"{EXTENDER} must not be allowed to {ask}: {answer}"


@pytest.mark.parametrize(
    ("ask", "allowed"),
    [
        # kube-scheduler's own work, and the extender sidecar's (the same roles as the extender)
        (Ask("create", "pods", namespace="team-a", name="trainer-0", subresource="binding"), True),
        (Ask("update", "leases", namespace=NAMESPACE, name="mig-scheduler", group="coordination.k8s.io"), True),
        (Ask("update", "configmaps", namespace="gpu-operator", name="default-mig-parted-config"), True),
        (Ask("create", "pods", namespace=NAMESPACE), True),
        # and still no secrets, no escalation, no impersonation
        (Ask("get", "secrets", namespace=NAMESPACE, name="mig-extender-tls"), False),
        (Ask("list", "secrets"), False),
        (Ask("bind", "clusterroles", name="cluster-admin", group="rbac.authorization.k8s.io"), False),
        (Ask("impersonate", "users", name="admin"), False),
        (Ask("create", "pods", namespace="default"), False),
        # Inherited from the bootstrap ClusterRole system:kube-scheduler (get/update of any Lease named
        # kube-scheduler): this ServiceAccount could take the default scheduler's leader Lease. A known gap of
        # the upstream "multiple schedulers" recipe, listed in docs/security.md; pinned here so a change shows.
        (Ask("update", "leases", namespace="kube-system", name="kube-scheduler", group="coordination.k8s.io"), True),
    ],
    ids=lambda v: str(v) if isinstance(v, Ask) else ("allowed" if v else "denied"),
)
def test_the_secondary_scheduler(plane: ControlPlane, rbac: None, ask: Ask, allowed: bool) -> None:
    answer = _review(plane, SCHEDULER, ask)
    assert bool(answer.get("allowed")) is allowed, f"{SCHEDULER} {'may' if allowed else 'may not'} {ask}: {answer}"


def _get_as(plane: ControlPlane, user: str, path: str) -> int:
    """GET as ``user``: the admin impersonates it (Impersonate-User), so the RBAC authorizer decides."""
    request = urllib.request.Request(plane.server + path, method="GET")
    request.add_header("Authorization", f"Bearer {plane.token}")
    request.add_header("Impersonate-User", user)
    request.add_header("Impersonate-Group", "system:serviceaccounts")
    try:
        with urllib.request.urlopen(request, context=plane.ssl_context(), timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_real_requests_get_the_answers_the_reviews_predict(plane: ControlPlane, rbac: None) -> None:
    for path, expected in (
        ("/api/v1/nodes?limit=1", 200),
        ("/api/v1/pods?limit=1", 200),
        (f"/api/v1/namespaces/{NAMESPACE}/secrets", 403),
        ("/api/v1/namespaces/kube-system/configmaps", 403),
        ("/apis/rbac.authorization.k8s.io/v1/clusterroles", 403),
    ):
        assert _get_as(plane, EXTENDER, path) == expected, f"GET {path} as {EXTENDER}"
