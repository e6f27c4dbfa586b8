"""The Helm chart against the real API server: every values combination passes a server-side dry run, and
``helm install`` in each mode leaves a cluster that schedules, ``helm upgrade`` changes what it should and
``helm uninstall`` leaves none of the chart's objects behind.

There is no kubelet: the Deployments the chart installs never run. The test runs what they would run instead,
as local processes: the extender with the container's arguments and environment, as the chart's ServiceAccount
(a token from the TokenRequest API, so the chart's RBAC is what the API server checks), and kube-scheduler with
the shipped configuration (extender mode) or the chart's ConfigMap as the chart's scheduler ServiceAccount
(secondary-scheduler mode, leader election on the chart's Lease).
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import ControlPlane, Kube, free_port, scheduler_config, wait_for
from tests.helm import chart
from tests.helm.chart import CHART, Combination

H100 = "NVIDIA-H100-80GB-HBM3"
MIG_3G = "nvidia.com/mig-3g.40gb"
RELEASE = "chart-e2e"
"""Not mig-extender: tests/e2e/test_rbac.py applies the kustomize RBAC (ClusterRole mig-extender...) to the same
API server, and Helm adopts no object it did not make."""
NAMESPACE = "chart-e2e"
SCHEDULER = "chart-e2e-scheduler"
FULLNAME = f"{RELEASE}-mig-extender"
POD = f"{RELEASE}-pod-0"
"""The Pod the extender process stands for: with leader_only_verbs it labels this Pod for the Service."""

API_PATHS = {
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
    "Service": "/api/v1/namespaces/{ns}/services",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    "ServiceMonitor": "/apis/monitoring.coreos.com/v1/namespaces/{ns}/servicemonitors",
    "PrometheusRule": "/apis/monitoring.coreos.com/v1/namespaces/{ns}/prometheusrules",
}


def object_path(doc: dict[str, Any]) -> str:
    """The API path of one object (``GET`` it, ``DELETE`` it)."""
    collection = API_PATHS[doc["kind"]].format(ns=doc["metadata"].get("namespace", "default"))
    return f"{collection}/{doc['metadata']['name']}"


@pytest.fixture(scope="module")
def monitoring_crds(plane: ControlPlane) -> None:
    """The Prometheus Operator's ServiceMonitor and PrometheusRule CRDs, Established."""
    kube = Kube(plane)
    names = []
    for path in sorted(chart.tools().crds.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        kube.call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd, ok=(201, 409))
        names.append(crd["metadata"]["name"])
    for name in names:

        def established(name: str = name) -> bool:
            crd = kube.call("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            conditions = (crd.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

        wait_for(f"CRD {name} Established", established)


@pytest.mark.parametrize("combination", list(chart.combinations()), ids=[c.name for c in chart.combinations()])
def test_every_combination_passes_a_server_side_dry_run(
    plane: ControlPlane, monitoring_crds: None, combination: Combination
) -> None:
    kube = Kube(plane)
    for namespace in (chart.NAMESPACE, "gpu-operator"):
        kube.ensure_namespace(namespace)
    docs = chart.template(combination.values)
    assert {d["kind"] for d in docs} <= set(API_PATHS), "a kind without a known API path"
    for doc in docs:
        collection = API_PATHS[doc["kind"]].format(ns=doc["metadata"].get("namespace", "default"))
        status, body = plane.request("POST", f"{collection}?dryRun=All&fieldValidation=Strict", doc)
        assert status in (200, 201), f"{chart.key(doc)}: {status} {body}"


# --- install, upgrade, uninstall --------------------------------------------------------------------------------


def helm(plane: ControlPlane, *args: str) -> str:
    return chart.helm(*args, "--kubeconfig", str(plane.kubeconfig), "--namespace", NAMESPACE, timeout=300).stdout


def release_objects(plane: ControlPlane) -> list[dict[str, Any]]:
    """What the release's manifest holds (``helm get manifest``)."""
    return [d for d in yaml.safe_load_all(helm(plane, "get", "manifest", RELEASE)) if d]


def existing(plane: ControlPlane, docs: list[dict[str, Any]]) -> set[str]:
    return {chart.key(d) for d in docs if plane.request("GET", object_path(d))[0] == 200}


def release_secrets(kube: Kube) -> list[str]:
    items = kube.call("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets?labelSelector=owner%3Dhelm,name%3D{RELEASE}")[
        "items"
    ]
    return sorted(s["metadata"]["name"] for s in items)


def service_account_kubeconfig(plane: ControlPlane, account: str, path: Path) -> Path:
    """A kubeconfig with a token of the ServiceAccount (TokenRequest), the way a pod's projected token works."""
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}}
    status, body = plane.request("POST", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{account}/token", request)
    assert status == 201, f"TokenRequest for {account}: {status} {body}"
    admin = yaml.safe_load(plane.kubeconfig.read_text())
    admin["users"] = [{"name": account, "user": {"token": body["status"]["token"]}}]
    admin["contexts"][0]["context"]["user"] = account
    path.write_text(yaml.safe_dump(admin))
    path.chmod(0o600)
    return path


@dataclass
class PodProcess:
    """The chart's extender container run as a local process: its arguments and environment, loopback port."""

    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, 15)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, 9)
                self.popen.wait()


def run_extender_container(container: dict[str, Any], kubeconfig: Path, workdir: Path) -> PodProcess:
    """``mig-extender <args>`` of the container, its listeners moved to free loopback ports."""
    args = list(container["args"])
    port = free_port()
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    if "--metrics-port" in args:  # the sidecar's metrics listener, on all interfaces in the pod: here on loopback
        args[args.index("--metrics-port") + 1] = str(free_port())
        args += ["--metrics-host", "127.0.0.1"]
    env = dict(os.environ)
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            field = entry["valueFrom"]["fieldRef"]["fieldPath"]
            assert field in ("metadata.name", "metadata.namespace"), entry
            env[entry["name"]] = POD if field == "metadata.name" else NAMESPACE
    log = workdir / f"chart-extender-{port}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "extender", *args, "--kubeconfig", str(kubeconfig)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    process = PodProcess(popen, port, log)

    def ready() -> bool:
        if popen.poll() is not None:
            raise AssertionError(f"extender exited {popen.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    try:
        wait_for("the chart's extender ready", ready, timeout=60)
    except BaseException:
        process.stop()
        raise
    return process


@pytest.fixture
def installed(plane: ControlPlane, kube: Kube) -> Iterator[list[str]]:
    """Namespaces ready; the release uninstalled afterwards if a test left it (its own test checks uninstall)."""
    for namespace in (NAMESPACE, "gpu-operator"):
        kube.ensure_namespace(namespace)
    values = ["--set", f"secondaryScheduler.schedulerName={SCHEDULER}"]
    yield values
    if RELEASE in helm(plane, "list", "--short"):
        helm(plane, "uninstall", RELEASE)


def deployment(kube: Kube, name: str) -> dict[str, Any]:
    return dict(kube.call("GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}"))


def container(deploy: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in deploy["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return dict(found)


def schedules_a_mig_pod(kube: Kube, scheduler: str, pod: str) -> None:
    kube.create_node("gpu-a", H100, config="all-balanced")
    kube.create_pod(pod, {MIG_3G: 1}, scheduler=scheduler)
    assert kube.wait_bound(pod, timeout=60) == "gpu-a"
    kube.create_pod(f"{pod}-too-big", {"nvidia.com/mig-7g.80gb": 1}, scheduler=scheduler)
    condition = wait_for(
        "an unschedulable pod",
        lambda: (c := kube.scheduled_condition(f"{pod}-too-big")) and c["status"] == "False" and c,
        timeout=60,
    )
    assert condition["reason"] == "Unschedulable"


def upgrade_and_uninstall(plane: ControlPlane, kube: Kube, values: list[str], name: str) -> None:
    """An upgrade that changes a setting, drops the PodDisruptionBudget and adds the dashboard; then uninstall."""
    before = release_objects(plane)
    helm(
        plane,
        "upgrade",
        RELEASE,
        str(CHART),
        *values,
        "--reuse-values",
        "--set",
        "extender.settings.scoring=packing",
        "--set",
        "podDisruptionBudget.enabled=false",
        "--set",
        "dashboard.enabled=true",
    )
    after = release_objects(plane)
    kinds_before = {chart.key(d) for d in before}
    kinds_after = {chart.key(d) for d in after}
    assert kinds_after - kinds_before == {f"ConfigMap {NAMESPACE}/{FULLNAME}-dashboard"}
    assert {k.split(" ")[0] for k in kinds_before - kinds_after} == {"PodDisruptionBudget"}
    assert existing(plane, before + after) == kinds_after, "the upgrade removed the dropped objects, made the new"
    env = {e["name"]: e.get("value") for e in container(deployment(kube, name), "mig-extender")["env"]}
    assert env["MIG_EXTENDER_SCORING"] == "packing"
    assert release_secrets(kube) == [f"sh.helm.release.v1.{RELEASE}.v1", f"sh.helm.release.v1.{RELEASE}.v2"]

    helm(plane, "uninstall", RELEASE)
    assert existing(plane, before + after) == set(), "helm uninstall left objects behind"
    assert release_secrets(kube) == []


def test_extender_mode_install_schedules_then_upgrade_and_uninstall_leave_nothing(
    plane: ControlPlane, kube: Kube, installed: list[str], schedulers: list[object], workdir: Path
) -> None:
    helm(plane, "install", RELEASE, str(CHART), *installed)
    objects = release_objects(plane)
    assert existing(plane, objects) == {chart.key(d) for d in objects}
    assert f"Service {NAMESPACE}/{FULLNAME}" in existing(plane, objects)
    deploy = deployment(kube, FULLNAME)
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == FULLNAME
    kubeconfig = service_account_kubeconfig(plane, FULLNAME, workdir / "extender.kubeconfig")
    # The Deployment's Pod, as an object without a kubelet: only the replica that holds the Lease answers, once
    # it sees this Pod labelled for the Service.
    template = deploy["spec"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": POD, "namespace": NAMESPACE, "labels": template["metadata"]["labels"]},
        "spec": {"nodeName": "control-plane-0", "terminationGracePeriodSeconds": 0, "containers": [
            {"name": "mig-extender", "image": container(deploy, "mig-extender")["image"]}
        ]},
    }  # fmt: skip
    kube.call("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod)
    process = run_extender_container(container(deploy, "mig-extender"), kubeconfig, workdir)
    try:
        (service,) = [d for d in objects if d["kind"] == "Service" and d["metadata"]["name"] == FULLNAME]
        selected = wait_for(
            "the extender labels its Pod for the Service",
            lambda: kube.call(
                "GET",
                f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector="
                + ",".join(f"{k}={v}" for k, v in service["spec"]["selector"].items()),
            )["items"],
        )
        assert [p["metadata"]["name"] for p in selected] == [POD]
        config = scheduler_config("extender", f"http://127.0.0.1:{process.port}", plane.kubeconfig)
        path = workdir / "scheduler-extender-mode.yaml"
        path.write_text(yaml.safe_dump(config))
        schedulers.append(plane.start_scheduler(path, "chart-extender-mode"))
        schedules_a_mig_pod(kube, "default-scheduler", "chart-pod")
        assert "403" not in process.log.read_text(), "the chart's RBAC refused the extender something"
    finally:
        process.stop()
        kube.call("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{POD}", ok=(200, 404))
    upgrade_and_uninstall(plane, kube, installed, FULLNAME)


def test_secondary_scheduler_mode_install_schedules_then_upgrade_and_uninstall_leave_nothing(
    plane: ControlPlane, kube: Kube, installed: list[str], schedulers: list[object], workdir: Path
) -> None:
    helm(plane, "install", RELEASE, str(CHART), *installed, "--set", "mode=secondary-scheduler")
    objects = release_objects(plane)
    assert existing(plane, objects) == {chart.key(d) for d in objects}
    deploy = deployment(kube, SCHEDULER)
    scheduler_container = container(deploy, "kube-scheduler")
    assert scheduler_container["image"] == f"registry.k8s.io/kube-scheduler:{chart.KUBE_VERSION}", "the cluster's own"
    kubeconfig = service_account_kubeconfig(plane, SCHEDULER, workdir / "scheduler.kubeconfig")
    process = run_extender_container(container(deploy, "mig-extender"), kubeconfig, workdir)
    try:
        config_map = kube.call("GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps/{SCHEDULER}-config")
        config = yaml.safe_load(config_map["data"]["config.yaml"])
        assert config["leaderElection"]["resourceName"] == SCHEDULER
        (entry,) = config["extenders"]
        assert entry["urlPrefix"] == "http://127.0.0.1:8888"
        entry["urlPrefix"] = f"http://127.0.0.1:{process.port}"  # the pod's loopback, here the test's
        config["clientConnection"] = {"kubeconfig": str(kubeconfig)}  # in a pod: the ServiceAccount's token
        path = workdir / "scheduler-secondary-mode.yaml"
        path.write_text(yaml.safe_dump(config))
        schedulers.append(plane.start_scheduler(path, "chart-secondary-mode"))
        schedules_a_mig_pod(kube, SCHEDULER, "chart-pod")
        lease = kube.call("GET", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{SCHEDULER}")
        assert lease["spec"]["holderIdentity"], "kube-scheduler leads on the chart's Lease"
        assert "403" not in process.log.read_text(), "the chart's RBAC refused the extender something"
    finally:
        process.stop()
    # kube-scheduler made its Lease, not the chart: the one object uninstall does not remove
    kube.call("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{SCHEDULER}", ok=(200, 404))
    upgrade_and_uninstall(plane, kube, installed, SCHEDULER)
