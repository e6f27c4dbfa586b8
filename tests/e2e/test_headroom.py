"""Warm headroom end to end: the real kube-apiserver and kube-scheduler (calling the extender), the shipped
PriorityClass, and the headroom controller in ``mig-extender serve``.

Two kubelet-less H100 nodes of one GPU each under ``all-3g.40gb`` (two 3g.40gb instances per node). The
controller is held to one 3g.40gb placeholder (``headroom_max_gpus`` 3/7 of a GPU) and learns 3g from its
prior and the pods it sees. It lands where the extender packs it (next to the first workload); two more
workloads fill the other node; a fourth finds no free instance, preempts the placeholder through
kube-scheduler's own preemption (the placeholder's priority is below every pod's) and binds at once, without
waiting for a node; the controller makes the placeholder's successor, which waits for room. Karpenter is not
part of this test (docs/headroom.md, Limits).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import NAMESPACE, ROOT, ControlPlane, Extender, Kube, free_port, start_scheduler, wait_for

H100 = "NVIDIA-H100-80GB-HBM3"
MIG_3G = "nvidia.com/mig-3g.40gb"
HEADROOM = "mig-extender.io/headroom"
PRIORITY_CLASSES = "/apis/scheduling.k8s.io/v1/priorityclasses"


@pytest.fixture
def priority_class(plane: ControlPlane) -> Iterator[dict[str, Any]]:
    """The shipped PriorityClass, for the test's life."""
    kube = Kube(plane)
    shipped = yaml.safe_load((ROOT / "manifests/headroom/priorityclass.yaml").read_text())
    name = shipped["metadata"]["name"]
    kube.call("DELETE", f"{PRIORITY_CLASSES}/{name}", ok=(200, 404))
    kube.call("POST", PRIORITY_CLASSES, shipped)
    try:
        yield shipped
    finally:
        kube.call("DELETE", f"{PRIORITY_CLASSES}/{name}", ok=(200, 404))


def placeholders(kube: Kube) -> list[dict[str, Any]]:
    pods = kube.call("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
    return [
        p
        for p in pods
        if HEADROOM in (p["metadata"].get("labels") or {}) and not p["metadata"].get("deletionTimestamp")
    ]


def bound_placeholders(kube: Kube) -> list[dict[str, Any]]:
    return [p for p in placeholders(kube) if p["spec"].get("nodeName")]


def test_a_pod_preempts_the_placeholder_the_extender_packed_and_runs_at_once(
    plane: ControlPlane, kube: Kube, workdir: Path, schedulers: list[object], priority_class: dict[str, Any]
) -> None:
    for name in ("gpu-a", "gpu-b"):
        kube.create_node(name, H100, gpus=1, config="all-3g.40gb")
    extender = Extender(
        plane,
        workdir,
        [
            "--headroom", "on", "--headroom-namespace", NAMESPACE, "--headroom-interval-s", "1",
            "--headroom-max-gpus", str(3 / 7 + 0.001), "--headroom-max-fleet-share", "1", "--headroom-size", "50",
            "--demand-prior", "3g=1",
            "--leader-election-namespace", NAMESPACE, "--leader-election-name", f"headroom-{free_port()}",
            "--leader-lease-duration-s", "4", "--leader-renew-deadline-s", "3", "--leader-retry-period-s", "0.5",
        ],
    )  # fmt: skip
    extender.start()
    try:
        schedulers.append(start_scheduler(plane, workdir, "extender", extender.url))
        kube.create_pod("first", {MIG_3G: 1})
        first = kube.wait_bound("first")
        (held,) = wait_for("one bound placeholder", lambda: bound_placeholders(kube) or None, timeout=60)
        assert held["spec"]["priorityClassName"] == priority_class["metadata"]["name"]
        assert held["spec"]["priority"] == priority_class["value"]
        assert held["spec"]["nodeName"] == first, "the placeholder packs next to the first workload"
        other = "gpu-b" if first == "gpu-a" else "gpu-a"
        for name in ("second", "third"):
            kube.create_pod(name, {MIG_3G: 1})
            assert kube.wait_bound(name) == other
        # every instance is taken now: the fourth pod's only room is the placeholder's
        kube.create_pod("fourth", {MIG_3G: 1})
        assert kube.wait_bound("fourth", timeout=60) == first
        held_name = held["metadata"]["name"]
        wait_for(
            "the preempted placeholder gone",
            lambda: all(p["metadata"]["name"] != held_name for p in placeholders(kube)),
            timeout=30,
        )
        successor = wait_for("its successor, waiting for room", lambda: placeholders(kube) or None, timeout=30)
        assert all(not p["spec"].get("nodeName") for p in successor)
        preempted = wait_for(
            "kube-scheduler's Preempted event on the placeholder",
            lambda: [e for e in kube.events_for(held_name) if e.get("reason") == "Preempted"],
            timeout=30,
        )
        assert kube.pod("fourth")["metadata"]["uid"] in preempted[0].get("note", "")  # "Preempted by pod <uid>"
    finally:
        extender.stop()
