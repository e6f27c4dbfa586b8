"""Test helpers around the real control plane: a small API client, nodes and pods as a GPU Operator
cluster shows them, the extender as a subprocess, and kube-scheduler configured from the shipped files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from controlplane import K8S_VERSION, K8S_VERSIONS, ControlPlane, SchedulerHandle, default_bin_dir, ensure_built  # noqa: E402

from extender.model.catalog import model_named  # noqa: E402
from extender.model.migparted import DEFAULT_CONFIG  # noqa: E402
from tests.support import free_port, wait_for  # noqa: E402

__all__ = [
    "K8S_VERSION",
    "K8S_VERSIONS",
    "ControlPlane",
    "SchedulerHandle",
    "default_bin_dir",
    "ensure_built",
    "free_port",
    "running_plane",
    "wait_for",
]

NAMESPACE = "e2e"
T = TypeVar("T")


class Kube:
    """The few API calls the tests make, with the admin token."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201), **kw: Any) -> Any:
        status, data = self.plane.request(method, path, body, **kw)
        if status not in ok:
            raise AssertionError(f"{method} {path}: HTTP {status}: {data}")
        return data

    def ensure_namespace(self, name: str) -> None:
        self.call("POST", "/api/v1/namespaces", {"metadata": {"name": name}}, ok=(201, 409))

    def create_node(
        self,
        name: str,
        product: str,
        *,
        gpus: int = 1,
        config: str | None = None,
        allocatable: dict[str, int] | None = None,
        labels: dict[str, str] | None = None,
        annotation: dict[str, Any] | None = None,
    ) -> None:
        """A kubelet-less Node: GFD labels, nvidia.com/mig.config and MIG allocatable, Ready, no taints."""
        counts: dict[str, int] = dict(allocatable or {})
        if config and allocatable is None:
            model = model_named(product)
            for index in range(gpus):
                spec = DEFAULT_CONFIG.resolve(config, model, index)
                assert spec is not None
                for placement in spec.layout(model):
                    counts[placement.profile.resource_name] = counts.get(placement.profile.resource_name, 0) + 1
        node_labels = {
            "kubernetes.io/hostname": name,
            "nvidia.com/gpu.product": product,
            "nvidia.com/gpu.count": str(gpus),
            "nvidia.com/mig.strategy": "mixed",
            **(labels or {}),
        }
        if config:
            node_labels["nvidia.com/mig.config"] = config
            node_labels["nvidia.com/mig.config.state"] = "success"
        resources = {"cpu": "64", "memory": "512Gi", "pods": "110", **{k: str(v) for k, v in counts.items()}}
        metadata: dict[str, Any] = {"name": name, "labels": node_labels}
        if annotation is not None:
            metadata["annotations"] = {"mig-extender.io/gpus": json.dumps(annotation)}
        self.call(
            "POST",
            "/api/v1/nodes",
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": metadata,
                "spec": {},
                "status": {
                    "capacity": resources,
                    "allocatable": resources,
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "e2e",
                            "lastHeartbeatTime": None,
                        }
                    ],
                },
            },
        )

    def create_pod(self, name: str, resources: dict[str, int], *, scheduler: str = "default-scheduler") -> None:
        self.call(
            "POST",
            f"/api/v1/namespaces/{NAMESPACE}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {
                    "schedulerName": scheduler,
                    "terminationGracePeriodSeconds": 0,
                    "containers": [
                        {
                            "name": "main",
                            "image": "registry.example/cuda:12",
                            "resources": {"limits": {k: str(v) for k, v in resources.items()}},
                        }
                    ],
                },
            },
        )

    def pod(self, name: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}"))

    def node_of(self, name: str) -> str | None:
        return self.pod(name)["spec"].get("nodeName")

    def wait_bound(self, name: str, timeout: float = 30.0) -> str:
        return wait_for(f"pod {name} bound", lambda: self.node_of(name), timeout)

    def scheduled_condition(self, name: str) -> dict[str, Any] | None:
        for condition in self.pod(name).get("status", {}).get("conditions") or []:
            if condition["type"] == "PodScheduled":
                return dict(condition)
        return None

    def delete_pod(self, name: str) -> None:
        self.call(
            "DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}", {"gracePeriodSeconds": 0}, ok=(200, 202, 404)
        )

    def events_for(self, pod: str) -> list[dict[str, Any]]:
        data = self.call("GET", f"/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events")
        return [e for e in data["items"] if (e.get("regarding") or {}).get("name") == pod]

    def clean(self) -> None:
        """Delete every test pod and node, and wait until they are gone."""
        self.call("DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods", ok=(200, 404))
        for node in self.call("GET", "/api/v1/nodes")["items"]:
            self.call("DELETE", f"/api/v1/nodes/{node['metadata']['name']}", ok=(200, 404))
        wait_for(
            "test pods and nodes deleted",
            lambda: (
                not self.call("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
                and not self.call("GET", "/api/v1/nodes")["items"]
            ),
        )


@contextmanager
def running_plane(workdir: Path, version: str = K8S_VERSION) -> Iterator[ControlPlane]:
    """A control plane of Kubernetes ``version`` in ``workdir`` (binaries built first if missing), with the
    test namespace; stopped on exit."""
    with ControlPlane(workdir, ensure_built(version)) as control_plane:
        Kube(control_plane).ensure_namespace(NAMESPACE)
        yield control_plane


class Extender:
    """``mig-extender serve`` against the control plane, as a subprocess in its own process group."""

    def __init__(
        self,
        plane: ControlPlane,
        workdir: Path,
        extra_args: Sequence[str] = (),
        *,
        python_args: Sequence[str] = ("-m", "extender"),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.plane = plane
        self.extra_args = list(extra_args)  # e.g. the re-layout controller's settings
        self.python_args = list(python_args)  # the interpreter's arguments before ``serve`` (e.g. -X tracemalloc)
        self.env = dict(env or {})
        self.port = free_port()
        self.log_path = workdir / f"extender-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                *self.python_args,
                "serve",
                "--kubeconfig",
                str(self.plane.kubeconfig),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--pending-scan-s",
                "1",
                "--watch-read-timeout-s",
                "20",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "MIG_EXTENDER_LOG_LEVEL": "INFO", **self.env},
        )
        log.close()
        wait_for("extender ready", self._ready, timeout=60)

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"extender exited {self.process.returncode}:\n{self.log_path.read_text()[-3000:]}")

        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text()


def scheduler_config(mode: str, extender_url: str, kubeconfig: Path) -> dict[str, Any]:
    """The shipped KubeSchedulerConfiguration of a mode, pointed at this test's extender and apiserver."""
    if mode == "extender":
        config = yaml.safe_load((ROOT / "manifests/extender-mode/kube-scheduler-config.yaml").read_text())
    elif mode == "extender-dra":  # extender mode for claim pods: no managedResources
        config = yaml.safe_load((ROOT / "manifests/extender-mode/kube-scheduler-config-dra.yaml").read_text())
    else:
        config_map = yaml.safe_load((ROOT / "manifests/secondary-scheduler/scheduler-config.yaml").read_text())
        config = yaml.safe_load(config_map["data"]["config.yaml"])
    config["clientConnection"] = {"kubeconfig": str(kubeconfig)}
    config["leaderElection"] = {"leaderElect": False}
    (extender,) = config["extenders"]
    extender["urlPrefix"] = extender_url
    return dict(config)


def start_scheduler(
    plane: ControlPlane, workdir: Path, mode: str, extender_url: str | None, *, qps: int | None = None
) -> SchedulerHandle:
    if extender_url is None:  # the baseline: the same profile without the extender
        config = scheduler_config(mode, "http://unused", plane.kubeconfig)
        del config["extenders"]
    else:
        config = scheduler_config(mode, extender_url, plane.kubeconfig)
    if qps is not None:  # the API client's rate limit (default 50/s) caps binds per second
        config["clientConnection"].update({"qps": qps, "burst": 2 * qps})
    path = workdir / f"scheduler-{mode}-{free_port()}.yaml"
    path.write_text(yaml.safe_dump(config))
    return plane.start_scheduler(path, f"{mode}-{path.stem}")
