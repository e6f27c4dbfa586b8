"""Two extender replicas behind one Service, the real kube-scheduler in front: no slice counted twice.

Replicas keep their own views: what one assumed between an answer and the binding, the other learns only from
the binding it watches. Each replica's API connection here is half a second late each way, as a loaded API
server's watch lags, and a stand-in for the Service (``tests/e2e/servicefront.py``: the shipped Service's
selector against the replicas' Pods, readiness probed) sends each call to a random endpoint. The burst is the
failover test's: six 3g.40gb and twelve 1g.10gb pods on three DynamicMIG H100s whose counts (two 3g.40gb,
seven 1g.10gb) promise far more than their eight memory slices, so only the extender keeps placements apart.

- ``shipped``: the Deployment's settings (leader_only_verbs) and the Service's selector (the leader label) from
  ``manifests/base``. One replica answers; the leader is killed in the middle of the burst and the other takes
  over once the Lease expires (shortened here: 4 s). No node over-committed.
- ``unfenced``: both replicas answer, the Service selects both (the manifests as they were). Over-committed.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.faultproxy import FaultProxy
from tests.e2e.harness import NAMESPACE, ROOT, ControlPlane, Extender, Kube, free_port, start_scheduler, wait_for
from tests.e2e.servicefront import ServiceFront
from tests.e2e.test_faults import BURST, DYNAMIC_H100, H100, MIG_1G, MIG_3G, assert_bindings_fit, burst_until_settled

WATCH_DELAY_S = 0.5
LEASE = ["--leader-lease-duration-s", "4", "--leader-renew-deadline-s", "3", "--leader-retry-period-s", "0.5"]
LEADER_LABEL = "mig-extender.io/leader"


def shipped() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """The Service's selector, the Pod template's labels and the extender's MIG_EXTENDER_* values, from
    manifests/base."""
    (service, _) = yaml.safe_load_all((ROOT / "manifests/base/service.yaml").read_text())
    deployment = yaml.safe_load((ROOT / "manifests/base/deployment.yaml").read_text())
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    env = {
        e["name"]: e["value"]
        for e in container["env"]
        if e["name"].startswith("MIG_EXTENDER_") and "value" in e and e["name"] != "MIG_EXTENDER_LOG_FORMAT"
    }
    return dict(service["spec"]["selector"]), dict(template["metadata"]["labels"]), env


def metric(extender: Extender, name: str) -> float:
    with urllib.request.urlopen(extender.url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


class Replicas:
    """Extender processes, each with its Pod object (no kubelet: a name and labels the Service selects), a Lease
    of this test's own, and its API connection behind a proxy that delays every byte."""

    def __init__(self, plane: ControlPlane, kube: Kube, workdir: Path) -> None:
        self.plane, self.kube, self.workdir = plane, kube, workdir
        self.lease = f"mig-extender-{free_port()}"
        self.extenders: dict[str, Extender] = {}
        self.proxies: list[FaultProxy] = []

    def start(self, pod: str, labels: dict[str, str], env: dict[str, str]) -> Extender:
        self.kube.call(
            "POST",
            f"/api/v1/namespaces/{NAMESPACE}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod, "namespace": NAMESPACE, "labels": labels},
                # on a node that is not there: no scheduler binds it, and it asks for no GPU
                "spec": {
                    "nodeName": "control-plane-0",
                    "terminationGracePeriodSeconds": 0,  # no kubelet confirms a deletion
                    "containers": [{"name": "mig-extender", "image": "registry.example/mig-extender:0.1.0"}],
                },
            },
        )
        proxy = FaultProxy(int(self.plane.server.rsplit(":", 1)[1]), delay_s=WATCH_DELAY_S)
        proxy.start()
        self.proxies.append(proxy)
        kubeconfig = self.plane.write_kubeconfig(self.workdir / f"{pod}.kubeconfig", f"https://127.0.0.1:{proxy.port}")
        args = ["--kubeconfig", str(kubeconfig), "--leader-election-namespace", NAMESPACE]
        args += ["--leader-election-name", self.lease, *LEASE]
        extender = Extender(self.plane, self.workdir, args, env={**env, "POD_NAME": pod, "POD_NAMESPACE": NAMESPACE})
        extender.start()
        self.extenders[pod] = extender
        return extender

    def kill(self, pod: str) -> float:
        process = self.extenders[pod].process
        assert process is not None
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return time.monotonic()

    def stop(self) -> None:
        for extender in self.extenders.values():
            extender.stop()
        for proxy in self.proxies:
            proxy.stop()


@pytest.fixture
def replicas(plane: ControlPlane, kube: Kube, workdir: Path) -> Iterator[Replicas]:
    running = Replicas(plane, kube, workdir)
    try:
        yield running
    finally:
        running.stop()


def bound(kube: Kube) -> int:
    pods = kube.call("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
    return sum(1 for p in pods if p["metadata"]["name"].startswith(("big-", "small-")) and p["spec"].get("nodeName"))


def test_only_the_leader_answers_and_a_failover_mid_burst_counts_no_slice_twice(
    plane: ControlPlane, kube: Kube, replicas: Replicas, schedulers: list[object], workdir: Path
) -> None:
    selector, labels, env = shipped()
    assert selector.get(LEADER_LABEL) == "true" and env.get("MIG_EXTENDER_LEADER_ONLY_VERBS") == "true"
    for name in (f"gpu-{i}" for i in range(3)):
        kube.create_node(name, H100, allocatable={MIG_3G: 2, MIG_1G: 7}, annotation=DYNAMIC_H100)
    for pod in ("mig-extender-0", "mig-extender-1"):
        replicas.start(pod, labels, env)
    ports = {pod: extender.port for pod, extender in replicas.extenders.items()}
    with ServiceFront(kube, NAMESPACE, selector, ports) as front:
        wait_for("one endpoint: the leader", lambda: len(front.endpoints) == 1)
        (leader,) = front.endpoints
        standby = ({"mig-extender-0", "mig-extender-1"} - {leader}).pop()
        schedulers.append(start_scheduler(plane, workdir, "extender", front.url))
        killed: dict[str, float] = {}

        def kill_after_three() -> bool:
            if not killed and bound(kube) >= 3:
                killed["at"] = replicas.kill(leader)
            return bool(killed)

        # Half the burst, the leader killed while it is being placed, then the other half at once: the new leader
        # answers those with the old one's placements known only from the bindings its watch brought.
        first_half, second_half = BURST[0::2], BURST[1::2]
        started = time.monotonic()
        for name, demand in first_half:
            kube.create_pod(name, demand)
        wait_for("three pods bound, then the leader killed", kill_after_three, timeout=60)
        for name, demand in second_half:
            kube.create_pod(name, demand)
        wait_for("the other replica is the endpoint", lambda: front.endpoints == [standby], timeout=60)
        taken_over = time.monotonic()
        wait_for(
            "every pod bound or unschedulable (not failed on an extender's error)",
            lambda: all(kube.node_of(n) or _unschedulable(kube, n) for n, _ in BURST),
            timeout=180,
        )
        time.sleep(3)  # their retries must not double-book either
        bindings = assert_bindings_fit(kube)
        before_kill = [pod for at, pod, _ in front.log if at < killed["at"]]
        after_kill = [(at, pod) for at, pod, _ in front.log if at >= killed["at"]]
    placed = sum(len(p) for name, p in bindings.items() if name.startswith("gpu-"))
    assert placed >= 6, f"each node holds at least two 3g, or a 3g and four 1g: {bindings}"
    assert set(before_kill) == {leader}, "while the leader lived the standby got no call"
    assert {pod for _, pod in after_kill if _ > taken_over} <= {standby}
    survivor = replicas.extenders[standby]
    refused = metric(survivor, "mig_extender_standby_refusals_total")
    first_call = min(at for at, pod in after_kill if pod == standby)
    print(
        f"\nreplica figures: {len(BURST)} pods, {placed} placed, killed {killed['at'] - started:.2f} s into the"
        f" burst after {len(before_kill)} calls, standby the endpoint {taken_over - killed['at']:.2f} s"
        f" after the kill, its first call {first_call - killed['at']:.2f} s after, calls per replica"
        f" {dict(front.requests)}, standby refusals {refused:.0f}"
    )


def test_replicas_that_both_answer_count_the_same_slices_twice(
    plane: ControlPlane, kube: Kube, replicas: Replicas, schedulers: list[object], workdir: Path
) -> None:
    selector, labels, env = shipped()
    selector.pop(LEADER_LABEL)  # the Service as it was: every ready replica
    env.pop("MIG_EXTENDER_LEADER_ONLY_VERBS")
    for name in (f"gpu-{i}" for i in range(3)):
        kube.create_node(name, H100, allocatable={MIG_3G: 2, MIG_1G: 7}, annotation=DYNAMIC_H100)
    for pod in ("mig-extender-0", "mig-extender-1"):
        replicas.start(pod, labels, env)
    ports = {pod: extender.port for pod, extender in replicas.extenders.items()}
    with ServiceFront(kube, NAMESPACE, selector, ports) as front:
        wait_for("both replicas are endpoints", lambda: len(front.endpoints) == 2)
        schedulers.append(start_scheduler(plane, workdir, "extender", front.url))
        burst_until_settled(kube, BURST)
        with pytest.raises(AssertionError, match="holds") as over_committed:
            assert_bindings_fit(kube)
        print(
            f"\nunfenced figures: calls per replica {dict(front.requests)}; {str(over_committed.value).splitlines()[0]}"
        )


def _unschedulable(kube: Kube, name: str) -> bool:
    """kube-scheduler found no node (not an error of the extender's, which it retries)."""
    condition = kube.scheduled_condition(name)
    return bool(condition and condition["status"] == "False" and condition["reason"] == "Unschedulable")
