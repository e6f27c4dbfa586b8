"""The re-layout controller against the real control plane, with a stand-in for NVIDIA's MIG Manager.

MIG Manager needs real GPUs. The stand-in does what it does to the Kubernetes objects: when a node's
``nvidia.com/mig.config`` changes it sets ``nvidia.com/mig.config.state=pending``, waits (a slow change),
then sets the node's MIG allocatable (``/status``) to the counts of the new config read from the mig-parted
ConfigMap and the state to ``success``; or, for configs it is told to fail, to ``failed``. It also records,
whenever the re-layout taint is on a node, the pods bound there: bindings are permanent (no kubelet
runs), so a pod that landed during the taint is still there at the next look.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from extender.model.catalog import model_named
from extender.model.migparted import default_config_document, parse_config
from tests.e2e.harness import NAMESPACE, ControlPlane, Extender, Kube, start_scheduler, wait_for

H100 = "NVIDIA-H100-80GB-HBM3"
MIG_7G = "nvidia.com/mig-7g.80gb"
MIG_3G = "nvidia.com/mig-3g.40gb"
TAINT = "mig-extender.io/relayout"
CONFIG_MAP = "/api/v1/namespaces/gpu-operator/configmaps/default-mig-parted-config"
MERGE = "application/merge-patch+json"


class MigManagerStandIn(threading.Thread):
    def __init__(self, kube: Kube, *, delay: float = 1.0, fails: Callable[[str], bool] = lambda _: False) -> None:
        super().__init__(daemon=True, name="mig-manager-stand-in")
        self.kube = kube
        self.delay = delay
        self.fails = fails
        self.stopped = threading.Event()
        self.seen: dict[str, str | None] = {}
        self.changes: dict[str, list[str | None]] = {}
        self.bound_while_tainted: dict[str, set[str]] = {}
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                self.poll()
                time.sleep(0.2)
        except BaseException as exc:  # reported by stop(): a broken stand-in must fail the test
            self.errors.append(exc)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=30)
        assert not self.errors, f"the MIG Manager stand-in failed: {self.errors!r}"

    @staticmethod
    def tainted(node: dict[str, Any]) -> bool:
        return any(t["key"] == TAINT for t in node["spec"].get("taints") or [])

    def poll(self) -> None:
        for node in self.kube.call("GET", "/api/v1/nodes")["items"]:
            name = node["metadata"]["name"]
            if self.tainted(node):
                pods = self.kube.call("GET", f"/api/v1/pods?fieldSelector=spec.nodeName={name}")["items"]
                # Only if the taint is still there after the pod list: a pod bound in the moment between
                # the taint's removal and the list is not a violation.
                if pods and self.tainted(self.kube.call("GET", f"/api/v1/nodes/{name}")):
                    self.bound_while_tainted.setdefault(name, set()).update(p["metadata"]["name"] for p in pods)
            label = node["metadata"].get("labels", {}).get("nvidia.com/mig.config")
            if name not in self.seen:
                self.seen[name] = label
                continue
            if label != self.seen[name]:
                self.seen[name] = label
                self.changes.setdefault(name, []).append(label)
                self.apply(node, label)

    def apply(self, node: dict[str, Any], config: str | None) -> None:
        name = node["metadata"]["name"]
        self.set_state(name, "pending")
        time.sleep(self.delay)
        if config is None or self.fails(config):
            self.set_state(name, "failed")
            return
        text = self.kube.call("GET", CONFIG_MAP)["data"]["config.yaml"]
        model = model_named(node["metadata"]["labels"]["nvidia.com/gpu.product"])
        counts: dict[str, int] = {}
        for index in range(int(node["metadata"]["labels"]["nvidia.com/gpu.count"])):
            spec = parse_config(text).resolve(config, model, index)
            assert spec is not None, f"{config} has no entry for GPU {index}"
            for profile, count in spec.counts:
                counts[profile.resource_name] = counts.get(profile.resource_name, 0) + count
        old = {k: None for k in node["status"]["allocatable"] if k.startswith("nvidia.com/mig-")}
        resources = {**old, **{k: str(v) for k, v in counts.items()}}
        self.kube.call(
            "PATCH",
            f"/api/v1/nodes/{name}/status",
            {"status": {"allocatable": resources, "capacity": resources}},
            content_type=MERGE,
        )
        self.set_state(name, "success")

    def set_state(self, node: str, state: str) -> None:
        body = {"metadata": {"labels": {"nvidia.com/mig.config.state": state}}}
        self.kube.call("PATCH", f"/api/v1/nodes/{node}", body, content_type=MERGE)


@pytest.fixture
def mig_parted(kube: Kube) -> None:
    """The GPU Operator's namespace and mig-parted ConfigMap, fresh for each test."""
    kube.ensure_namespace("gpu-operator")
    kube.call("DELETE", CONFIG_MAP, ok=(200, 404))
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "default-mig-parted-config", "namespace": "gpu-operator"},
        "data": {"config.yaml": yaml.safe_dump(default_config_document(), sort_keys=False)},
    }
    kube.call("POST", "/api/v1/namespaces/gpu-operator/configmaps", body)


@pytest.fixture
def relayout_extender(plane: ControlPlane, kube: Kube, mig_parted: None, workdir: Path) -> Iterator[Extender]:
    lease = f"relayout-{time.monotonic_ns()}"
    args = [
        *("--relayout", "on"),
        *("--relayout-min-idle-s", "1"),
        *("--relayout-interval-s", "0.5"),
        *("--relayout-settle-s", "1"),
        *("--relayout-timeout-s", "120"),
        *("--relayout-node-cooldown-s", "3600"),
        *("--leader-election-namespace", NAMESPACE),
        *("--leader-election-name", lease),
        *("--leader-lease-duration-s", "6"),
        *("--leader-renew-deadline-s", "4"),
        *("--leader-retry-period-s", "0.5"),
    ]
    process = Extender(plane, workdir, args)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def node(kube: Kube, name: str) -> dict[str, Any]:
    return dict(kube.call("GET", f"/api/v1/nodes/{name}"))


def tainted(kube: Kube, name: str) -> bool:
    return any(t["key"] == TAINT for t in node(kube, name)["spec"].get("taints") or [])


def annotation(kube: Kube, pod: str, key: str) -> str | None:
    value = (kube.pod(pod)["metadata"].get("annotations") or {}).get(key)
    return str(value) if value is not None else None


def test_a_pod_waiting_for_a_profile_schedules_after_the_re_layout_and_nothing_lands_meanwhile(
    plane: ControlPlane, kube: Kube, relayout_extender: Extender, schedulers: list[object], workdir: Path
) -> None:
    kube.create_node("gpu-a", H100, config="all-3g.40gb")
    kube.create_node("gpu-b", H100, config="all-3g.40gb")
    manager = MigManagerStandIn(kube, delay=4.0)  # a slow change: the taint stays on for seconds
    manager.start()
    try:
        schedulers.append(start_scheduler(plane, workdir, "extender", relayout_extender.url))
        kube.create_pod("large", {MIG_7G: 1})  # no node has a 7g instance; both are idle
        chosen = wait_for("a node tainted for the re-layout", lambda: next(
            (n for n in ("gpu-a", "gpu-b") if tainted(kube, n)), None), timeout=60)  # fmt: skip
        other = ({"gpu-a", "gpu-b"} - {chosen}).pop()
        # the waiting pod is told which node is being re-laid-out for it
        wait_for("relayout-node annotation", lambda: annotation(kube, "large", "mig-extender.io/relayout-node"))
        assert annotation(kube, "large", "mig-extender.io/relayout-node") == chosen
        assert f"node {chosen} is being re-partitioned" in (annotation(kube, "large", "mig-extender.io/reason") or "")
        # while the taint is on, a pod that fits the old layout goes to the other node, never to this one
        kube.create_pod("filler", {MIG_3G: 1})
        assert kube.wait_bound("filler") == other
        assert tainted(kube, chosen)
        assert kube.wait_bound("large", timeout=120) == chosen
        labels = node(kube, chosen)["metadata"]["labels"]
        assert labels["nvidia.com/mig.config"].startswith(f"mig-extender-{chosen}-")
        assert not tainted(kube, chosen)
        assert manager.bound_while_tainted.get(chosen, set()) == set()
        assert manager.changes.get(other) is None  # the other node's layout never changed
        wanted = {"MigRelayoutPossible", "MigRelayoutStarted", "MigRelayoutSucceeded"}
        wait_for("the pod's events", lambda: wanted <= {e["reason"] for e in kube.events_for("large")})
        outcome = node(kube, chosen)["metadata"]["annotations"]["mig-extender.io/relayout-outcome"]
        assert outcome.startswith("success ")
        config = kube.call("GET", CONFIG_MAP)["data"]["config.yaml"]
        assert labels["nvidia.com/mig.config"] in parse_config(config).configs
    finally:
        manager.stop()


def test_a_node_with_a_used_instance_is_never_changed(
    plane: ControlPlane, kube: Kube, relayout_extender: Extender, schedulers: list[object], workdir: Path
) -> None:
    kube.create_node("gpu-a", H100, config="all-3g.40gb")
    kube.create_node("gpu-b", H100, config="all-3g.40gb")
    manager = MigManagerStandIn(kube)
    manager.start()
    try:
        schedulers.append(start_scheduler(plane, workdir, "extender", relayout_extender.url))
        kube.create_pod("user", {MIG_3G: 1})
        busy = kube.wait_bound("user")
        idle = ({"gpu-a", "gpu-b"} - {busy}).pop()
        kube.create_pod("large", {MIG_7G: 1})
        assert kube.wait_bound("large", timeout=120) == idle
        assert manager.changes.get(busy) is None
        assert node(kube, busy)["metadata"]["labels"]["nvidia.com/mig.config"] == "all-3g.40gb"
        assert manager.bound_while_tainted.get(idle, set()) == set()
    finally:
        manager.stop()


def test_failed_restores_the_label_and_removes_the_taint(
    plane: ControlPlane, kube: Kube, relayout_extender: Extender, schedulers: list[object], workdir: Path
) -> None:
    kube.create_node("gpu-a", H100, config="all-3g.40gb")
    manager = MigManagerStandIn(kube, delay=1.0, fails=lambda config: config.startswith("mig-extender-"))
    manager.start()
    try:
        schedulers.append(start_scheduler(plane, workdir, "extender", relayout_extender.url))
        kube.create_pod("large", {MIG_7G: 1})
        outcome = wait_for(
            "the re-layout to fail",
            lambda: (node(kube, "gpu-a")["metadata"].get("annotations") or {}).get("mig-extender.io/relayout-outcome"),
            timeout=90,
        )
        assert outcome.startswith("failed ")
        assert not tainted(kube, "gpu-a")
        wait_for("MIG Manager to see the restored label", lambda: len(manager.changes.get("gpu-a", [])) >= 2)
        generated, restored = manager.changes["gpu-a"][:2]
        assert generated is not None and generated.startswith("mig-extender-gpu-a-")
        assert restored == "all-3g.40gb"
        wait_for("MIG Manager back at success", lambda: node(kube, "gpu-a")["metadata"]["labels"].get(
            "nvidia.com/mig.config.state") == "success")  # fmt: skip
        assert node(kube, "gpu-a")["metadata"]["labels"]["nvidia.com/mig.config"] == "all-3g.40gb"
        events = wait_for(
            "failure event", lambda: [e for e in kube.events_for("large") if e["reason"] == "MigRelayoutFailed"]
        )
        assert events[0]["type"] == "Warning"
        assert kube.node_of("large") is None
        # the generated config is collected once no node uses it
        wait_for("generated config removed", lambda: generated not in parse_config(
            kube.call("GET", CONFIG_MAP)["data"]["config.yaml"]).configs)  # fmt: skip
    finally:
        manager.stop()
