"""The real kube-scheduler outvotes the extender's best node: the pod counts where it was bound (the bind verb).

kube-scheduler adds the extender's scores (times its weight) to its own plugins' and binds the pod to the
top of the sum. Here the extender's weight is 1 and every pod prefers ``gpu-b`` (a preferred node affinity of
weight 100, worth 200 points against the extender's 100 at most), while the extender ranks ``gpu-a`` first
(packing: it already holds a pod). Both nodes are DynamicMIG H100s whose counts (two 3g.40gb, seven 1g.10gb)
promise more than their eight memory slices hold, so only the extender keeps placements apart.

The extender's API connection goes through a proxy that delays every byte by a second, as a loaded API
server's watch lags: until a binding comes back through the watch, only what the extender assumed counts.
Without the bind verb (the configuration as it was), prioritize assumed each pod on ``gpu-a`` while
kube-scheduler bound it to ``gpu-b``: ``gpu-a`` was counted fuller and ``gpu-b`` emptier than they were, and a
third pod was answered onto ``gpu-b``'s slices: over-committed. With it, the extender counts each pod on the
node kube-scheduler chose before the Binding exists.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.faultproxy import FaultProxy
from tests.e2e.harness import NAMESPACE, ControlPlane, Extender, Kube, free_port, scheduler_config, wait_for
from tests.e2e.test_faults import DYNAMIC_H100, H100, MIG_1G, MIG_3G, assert_bindings_fit

WATCH_DELAY_S = 1.0
BURST = [("big-0", MIG_3G), ("big-1", MIG_3G), *((f"small-{i}", MIG_1G) for i in range(4))]


def create_pod(kube: Kube, name: str, resource: str, *, node: str | None = None, prefer: str | None = None) -> None:
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "main", "image": "registry.example/cuda:12", "resources": {"limits": {resource: "1"}}}],
    }
    if node is not None:
        spec["nodeName"] = node
    if prefer is not None:
        term = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [prefer]}]}
        spec["affinity"] = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": term}
        ]}}  # fmt: skip
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}
    kube.call("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", body)


def series(extender: Extender, name: str, label: str) -> dict[str, float]:
    """One series of the extender's /metrics, by the value of ``label``."""
    with urllib.request.urlopen(extender.url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        sample.labels[label]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


@pytest.fixture
def slow_extender(plane: ControlPlane, kube: Kube, workdir: Path) -> Iterator[Extender]:
    """The extender, packing, with its API connection (lists, watches, Bindings) a second late each way."""
    with FaultProxy(int(plane.server.rsplit(":", 1)[1]), delay_s=WATCH_DELAY_S) as proxy:
        kubeconfig = plane.write_kubeconfig(workdir / "slow.kubeconfig", f"https://127.0.0.1:{proxy.port}")
        extender = Extender(plane, workdir, ["--kubeconfig", str(kubeconfig), "--scoring", "packing"])
        extender.start()
        try:
            yield extender
        finally:
            extender.stop()


@pytest.mark.parametrize("bind_verb", [True, False], ids=["bind-verb", "without-bind-verb"])
def test_a_pod_kube_scheduler_binds_elsewhere_than_the_extenders_best_node_counts_where_it_is_bound(
    plane: ControlPlane,
    kube: Kube,
    slow_extender: Extender,
    schedulers: list[object],
    workdir: Path,
    bind_verb: bool,
) -> None:
    for name in ("gpu-a", "gpu-b"):
        kube.create_node(name, H100, allocatable={MIG_3G: 2, MIG_1G: 7}, annotation=DYNAMIC_H100)
    create_pod(kube, "held", MIG_1G, node="gpu-a")  # the extender's best node: packing prefers the busy one
    wait_for(
        "the extender sees the held pod",
        lambda: series(slow_extender, "mig_extender_view_objects", "kind").get("pods", 0) >= 1,
    )
    config = scheduler_config("extender", slow_extender.url, plane.kubeconfig)
    (entry,) = config["extenders"]
    entry["weight"] = 1  # kube-scheduler's own scores decide between nodes that both pass
    if not bind_verb:
        assert entry.pop("bindVerb") == "bind"  # the shipped configuration has it
    path = workdir / f"scheduler-binding-{free_port()}.yaml"
    path.write_text(yaml.safe_dump(config))
    schedulers.append(plane.start_scheduler(path, path.stem))

    started = time.monotonic()
    for name, resource in BURST:
        create_pod(kube, name, resource, prefer="gpu-b")
    settled = wait_for(
        "every pod bound or unschedulable",
        lambda: all(kube.node_of(name) or _unschedulable(kube, name) for name, _ in BURST) and time.monotonic(),
        timeout=60,
    )
    if not bind_verb:
        # The view counted big-0 on gpu-a while it went to gpu-b, and answered a third pod onto gpu-b's slices.
        with pytest.raises(AssertionError, match="gpu-b holds"):
            assert_bindings_fit(kube)
        return
    placed = assert_bindings_fit(kube)
    assert placed == {"gpu-a": ["held", "small-0", "small-1", "small-2", "small-3"], "gpu-b": ["big-0", "big-1"]}
    outcomes = series(slow_extender, "mig_extender_binds_total", "outcome")
    assert outcomes["moved"] >= 1, f"kube-scheduler outvoted the extender's best node at least once: {outcomes}"
    assert outcomes["failed"] == 0
    print(f"\nbinding figures: settled after {settled - started:.2f} s, binds {outcomes}")


def _unschedulable(kube: Kube, name: str) -> bool:
    condition = kube.scheduled_condition(name)
    return bool(condition and condition["status"] == "False")
