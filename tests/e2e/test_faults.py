"""Faults against the real control plane, one test per fault, with the shipped extender-mode configuration
(``ignorable: false``): what the extender answers meanwhile, that no pod lands where its MIG demand does not
fit, that it recovers by itself, and how long detection and recovery take.

Every test runs the extender with a small ``--stale-after-s`` and ``--watch-read-timeout-s`` and keeps the
Nodes and Pods streams busy (a heartbeat patches a node and a pod twice a second, as a busy cluster would),
while the mig-parted ConfigMap stream stays quiet, as it is in real clusters. A probe samples the extender
throughout: ``/readyz``, its watch counters from ``/metrics``, and a ``/filter`` for a node that real pods
never use (it is tainted), to see what the extender answers during the fault. After each run every node's
bound pods are checked against the node's MIG layout with the model (``extender.model.fit``).

Figures (seconds) are printed, and appended as JSON lines to ``$MIG_EXTENDER_FAULT_FIGURES`` when set:
``MIG_EXTENDER_FAULT_FIGURES=faults.jsonl python -m pytest -q -s tests/e2e/test_faults.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from extender.model.catalog import model_named
from extender.model.demand import PodDemand, pod_demand
from extender.model.fit import fit
from extender.model.migparted import DEFAULT_CONFIG, configured_gpus, default_config_document
from extender.model.placement import Placement
from extender.model.state import GpuState, Instance, NodeState
from tests.e2e.faultproxy import FaultProxy
from tests.e2e.harness import NAMESPACE, ControlPlane, Extender, Kube, start_scheduler, wait_for

H100 = "NVIDIA-H100-80GB-HBM3"
MIG_3G = "nvidia.com/mig-3g.40gb"
MIG_1G = "nvidia.com/mig-1g.10gb"
READ_TIMEOUT_S = 3.0
STALE_AFTER_S = 6.0  # above the read timeout: a quiet stream is re-watched (and fresh again) before it
HEARTBEAT_S = 0.5
PROBE_NODE = "gpu-probe"
PROBE_TAINT = {"key": "mig-extender.io/fault-probe", "value": "true", "effect": "NoSchedule"}
GPU_OPERATOR = "gpu-operator"
CONFIG_MAP = "default-mig-parted-config"
UNKNOWN_NODE = "MIG: node not yet in the extender's view"
FAST = ["--stale-after-s", str(STALE_AFTER_S), "--watch-read-timeout-s", str(READ_TIMEOUT_S)]
BUSY_KINDS = ("nodes", "pods")  # the streams the heartbeat keeps busy


# --- the cluster and the model ------------------------------------------------------------------------


def create_probe_node(kube: Kube, name: str) -> None:
    """An H100 with seven 1g instances that real pods never use: tainted, and no 3g instance."""
    kube.create_node(name, H100, config="all-1g.10gb")
    kube.call(
        "PATCH",
        f"/api/v1/nodes/{name}",
        {"spec": {"taints": [PROBE_TAINT]}},
        content_type="application/merge-patch+json",
    )


def node_model(node: dict[str, Any]) -> NodeState:
    """The node's GPUs with every instance free, from the model: its mig.config layout, or the exact
    annotation this file's tests write."""
    metadata = node["metadata"]
    labels = metadata.get("labels") or {}
    model = model_named(labels["nvidia.com/gpu.product"])
    annotation = (metadata.get("annotations") or {}).get("mig-extender.io/gpus")
    if annotation:
        gpus = []
        for gpu in json.loads(annotation)["gpus"]:
            dynamic = gpu.get("mode") == "dynamic"
            instances = tuple(
                Instance(Placement(i["start"], model.profile(i["profile"])), bool(i.get("used")) or dynamic)
                for i in gpu.get("instances", [])
            )
            gpus.append(GpuState(gpu["index"], model, instances, dynamic=dynamic))
        return NodeState(metadata["name"], tuple(gpus))
    specs = DEFAULT_CONFIG.resolve_all(labels["nvidia.com/mig.config"], model, int(labels["nvidia.com/gpu.count"]))
    return NodeState(metadata["name"], configured_gpus(model, specs))


def assert_bindings_fit(kube: Kube) -> dict[str, list[str]]:
    """Every node's bound pods, together, fit its MIG layout per the model; returns node -> pods."""
    nodes = {n["metadata"]["name"]: n for n in kube.call("GET", "/api/v1/nodes")["items"]}
    bound: dict[str, list[dict[str, Any]]] = {}
    for pod in kube.call("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]:
        if pod["spec"].get("nodeName"):
            bound.setdefault(pod["spec"]["nodeName"], []).append(pod)
    for name, pods in bound.items():
        total: Counter[str] = Counter()
        for pod in pods:
            for profile, count in pod_demand(pod).mig:
                total[profile] += count
        if not total:
            continue
        assert name in nodes, f"pods {[p['metadata']['name'] for p in pods]} are bound to a node that is gone"
        result = fit(node_model(nodes[name]), PodDemand(mig=tuple(sorted(total.items()))))
        assert result.fits_now, f"{name} holds {dict(total)} (pods {[p['metadata']['name'] for p in pods]}): {result}"
    return {name: sorted(p["metadata"]["name"] for p in pods) for name, pods in bound.items()}


def scheduled(kube: Kube, pod: str, reason: str, timeout: float = 30.0) -> dict[str, Any]:
    """Wait for PodScheduled=False with ``reason`` (Unschedulable, SchedulerError)."""
    return wait_for(
        f"{pod} {reason}",
        lambda: (c := kube.scheduled_condition(pod)) and c["status"] == "False" and c["reason"] == reason and c,
        timeout,
    )


# --- a busy cluster -----------------------------------------------------------------------------------


class Heartbeat(threading.Thread):
    """Patches an annotation of each object every ``interval`` seconds; failures (API down) are skipped."""

    def __init__(self, plane: ControlPlane, paths: list[str], interval: float = HEARTBEAT_S) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.plane, self.paths, self.interval = plane, paths, interval
        self.stopping = threading.Event()
        self.beats = 0

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            self.beats += 1
            body = {"metadata": {"annotations": {"mig-extender.io/heartbeat": str(self.beats)}}}
            for path in self.paths:
                with contextlib.suppress(OSError):
                    self.plane.request("PATCH", path, body, content_type="application/merge-patch+json")

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=40)


@pytest.fixture
def busy(plane: ControlPlane, kube: Kube) -> Iterator[Heartbeat]:
    """The probe node, a heartbeat pod and the mig-parted ConfigMap; nodes and pods change twice a second."""
    kube.ensure_namespace(GPU_OPERATOR)
    config_map = {
        "metadata": {"name": CONFIG_MAP, "namespace": GPU_OPERATOR},
        "data": {"config.yaml": yaml.safe_dump(default_config_document())},
    }
    kube.call("POST", f"/api/v1/namespaces/{GPU_OPERATOR}/configmaps", config_map, ok=(201, 409))
    create_probe_node(kube, PROBE_NODE)
    kube.call(
        "POST",
        f"/api/v1/namespaces/{NAMESPACE}/pods",
        {
            "metadata": {"name": "heartbeat", "namespace": NAMESPACE},
            "spec": {"schedulerName": "nobody", "containers": [{"name": "main", "image": "pause"}]},
        },
    )
    heartbeat = Heartbeat(plane, [f"/api/v1/nodes/{PROBE_NODE}", f"/api/v1/namespaces/{NAMESPACE}/pods/heartbeat"])
    heartbeat.start()
    try:
        yield heartbeat
    finally:
        heartbeat.stop()
        kube.call("DELETE", f"/api/v1/namespaces/{GPU_OPERATOR}/configmaps/{CONFIG_MAP}", ok=(200, 404))


@pytest.fixture
def extenders(plane: ControlPlane, workdir: Path) -> Iterator[Callable[..., Extender]]:
    """Start extenders with the fast settings (and another kubeconfig); all stopped at the end."""
    started: list[Extender] = []

    def start(*extra: str, kubeconfig: Path | None = None) -> Extender:
        args = [*FAST, *extra, *(["--kubeconfig", str(kubeconfig)] if kubeconfig else [])]
        process = Extender(plane, workdir, args)
        started.append(process)
        process.start()
        return process

    yield start
    for process in started:
        if process.process is not None and process.process.poll() is None:
            os.killpg(process.process.pid, signal.SIGCONT)  # a SIGSTOPped one would not see SIGTERM
        process.stop()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Measured figures of a test: printed, and appended to $MIG_EXTENDER_FAULT_FIGURES as a JSON line."""
    found: dict[str, Any] = {}
    yield found
    if not found:
        return
    entry = {"test": request.node.name, **{k: round(v, 2) if isinstance(v, float) else v for k, v in found.items()}}
    print("\nFIGURES", json.dumps(entry))
    target = os.environ.get("MIG_EXTENDER_FAULT_FIGURES")
    if target:
        with open(target, "a") as out:
            out.write(json.dumps(entry) + "\n")


# --- watching the extender ----------------------------------------------------------------------------


def _post(url: str, body: dict[str, Any], timeout: float = 2.0) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def filter_args(names: list[str], uid: str = "fault-probe") -> dict[str, Any]:
    pod = {
        "metadata": {"name": uid, "namespace": NAMESPACE, "uid": uid},
        "spec": {"containers": [{"name": "main", "resources": {"limits": {MIG_1G: "1"}}}]},
    }
    return {"Pod": pod, "NodeNames": names, "Nodes": None}


def knows(url: str, node: str) -> bool:
    """The extender's answer for a 1g pod on ``node``: True if it passes (so it knows the node)."""
    answer = _post(url + "/filter", filter_args([node], uid=f"marker-{node}"))
    return node in (answer.get("NodeNames") or [])


def wait_known(url: str, node: str, timeout: float = 60.0) -> float:
    """Wait until the extender's answers show ``node`` (created just before); returns the time."""
    wait_for(f"{node} in the extender's view", lambda: knows(url, node), timeout, interval=0.1)
    return time.monotonic()


@dataclass
class Sample:
    t: float
    ready: bool | None = None
    """None: /readyz did not answer."""
    reason: str = ""
    filter_ok: bool | None = None
    """The probe node passed /filter (None: no answer)."""
    restarts: dict[str, float] = field(default_factory=dict)
    relists: float = 0.0
    gone: float = 0.0
    staleness: dict[str, float] = field(default_factory=dict)


class Probe(threading.Thread):
    """Samples /readyz, /metrics and a /filter of the probe node every ``interval`` seconds."""

    def __init__(self, url: str, interval: float = 0.2) -> None:
        super().__init__(name="probe", daemon=True)
        self.url, self.interval = url, interval
        self.samples: list[Sample] = []
        self.stopping = threading.Event()

    def __enter__(self) -> Probe:
        self.start()
        wait_for("a first probe sample", lambda: self.samples and self.samples[-1].ready is not None)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.join(timeout=10)

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            self.samples.append(self.sample())

    def sample(self) -> Sample:
        now = Sample(time.monotonic())
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=1) as response:
                now.ready, now.reason = True, json.loads(response.read())["reason"]
        except urllib.error.HTTPError as exc:
            now.ready, now.reason = False, json.loads(exc.read())["reason"]
        except OSError as exc:
            now.reason = repr(exc)
        with contextlib.suppress(OSError):
            now.filter_ok = PROBE_NODE in (
                _post(self.url + "/filter", filter_args([PROBE_NODE]), 1).get("NodeNames") or []
            )
        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=1) as response:
                text = response.read().decode()
        except OSError:
            return now
        for family in text_string_to_metric_families(text):
            for metric in family.samples:
                kind = metric.labels.get("kind", "")
                if metric.name == "mig_extender_watch_restarts_total":
                    now.restarts[kind] = now.restarts.get(kind, 0.0) + metric.value
                    if metric.labels.get("reason") == "gone":
                        now.gone += metric.value
                elif metric.name == "mig_extender_relists_total":
                    now.relists += metric.value
                elif metric.name == "mig_extender_view_staleness_seconds":
                    now.staleness[kind] = metric.value
        return now

    def last(self) -> Sample:
        return next(s for s in reversed(self.samples) if s.ready is not None)

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.t <= end]

    def first(self, after: float, test: Callable[[Sample], bool]) -> float | None:
        """Seconds from ``after`` to the first sample that passes ``test``."""
        return next((s.t - after for s in self.samples if s.t >= after and test(s)), None)


def busy_restarts(sample: Sample) -> float:
    return sum(sample.restarts.get(kind, 0.0) for kind in BUSY_KINDS)


def answered_from_last_view(samples: list[Sample]) -> None:
    """While the fault lasts, every probe was answered from the last known view: the probe node passes."""
    assert samples, "no probe sample during the fault"
    missing = [s for s in samples if s.filter_ok is not True]
    assert not missing, f"{len(missing)} of {len(samples)} probes not answered from the view: {missing[:3]}"


def readiness_follows_staleness(samples: list[Sample], slack: float = 0.5) -> None:
    """/readyz never says ready with a view older than stale_after_s. (/metrics is read just after /readyz:
    the staleness it shows can only be larger, by the time between, unless a sync came meanwhile.)"""
    for sample in samples:
        if sample.ready and sample.staleness:
            worst = max(sample.staleness.values())
            assert worst <= STALE_AFTER_S + slack, f"ready with a view {worst:.1f}s old: {sample}"


def readiness_figures(probe: Probe, start: float, end: float) -> dict[str, Any]:
    """When /readyz turned false during [start, end] and when it was true again, and the worst staleness."""
    during = probe.between(start, end)
    not_ready = probe.first(start, lambda s: s.ready is False)
    figures: dict[str, Any] = {
        "not_ready_after_s": not_ready if not_ready is not None and not_ready <= end - start else None,
        "max_staleness_s": max((max(s.staleness.values(), default=0.0) for s in during), default=0.0),
    }
    if figures["not_ready_after_s"] is not None:
        figures["ready_again_after_fault_s"] = probe.first(end, lambda s: s.ready is True)
    return figures


# --- the faults -----------------------------------------------------------------------------------------


def _restart_apiserver(plane: ControlPlane) -> None:
    plane.restart_apiserver()


def _restart_etcd(plane: ControlPlane) -> None:
    # Down longer than the staleness bound: the API server answers errors meanwhile, the watches go quiet.
    plane.restart_etcd(downtime_s=STALE_AFTER_S + 2)


@pytest.mark.parametrize("restart", [_restart_apiserver, _restart_etcd], ids=["apiserver", "etcd"])
def test_restart(
    plane: ControlPlane,
    kube: Kube,
    busy: Heartbeat,
    extenders: Callable[..., Extender],
    schedulers: list[object],
    workdir: Path,
    figures: dict[str, Any],
    restart: Callable[[ControlPlane], None],
) -> None:
    kube.create_node("gpu-a", H100, config="all-3g.40gb")
    kube.create_node("gpu-b", H100, config="all-3g.40gb")
    extender = extenders()
    schedulers.append(start_scheduler(plane, workdir, "extender", extender.url))
    kube.create_pod("before", {MIG_3G: 1})
    kube.wait_bound("before")
    with Probe(extender.url) as probe:
        base = probe.last()
        down = time.monotonic()
        restart(plane)
        up = time.monotonic()
        wait_for("the API server serving again", lambda: plane.request("GET", "/readyz")[0] == 200, 60)
        serving = time.monotonic()
        for i in range(3):  # the three free 3g instances, asked for while the extender reconnects
            kube.create_pod(f"after-{i}", {MIG_3G: 1})
        create_probe_node(kube, "marker")
        known = wait_known(extender.url, "marker")
        for i in range(3):
            kube.wait_bound(f"after-{i}", timeout=60)
        bound = time.monotonic()
        kube.create_pod("overflow", {MIG_3G: 1})
        scheduled(kube, "overflow", "Unschedulable")
        wait_for("ready again", lambda: probe.last().ready, 30)
    answered_from_last_view(probe.between(down, up))
    readiness_follows_staleness(probe.samples)
    bindings = assert_bindings_fit(kube)
    assert kube.node_of("overflow") is None and sum(len(p) for p in bindings.values()) == 4
    figures.update(
        outage_s=up - down,
        apiserver_serving_after_up_s=serving - up,
        detected_after_s=probe.first(down, lambda s: busy_restarts(s) > busy_restarts(base)),
        relisted=probe.last().relists > base.relists,
        **readiness_figures(probe, down, up),
        view_current_after_up_s=known - up,
        pending_bound_after_up_s=bound - up,
    )


def test_watch_expiry_relists_and_the_relist_replaces_the_view(
    plane: ControlPlane,
    kube: Kube,
    busy: Heartbeat,
    extenders: Callable[..., Extender],
    schedulers: list[object],
    workdir: Path,
    figures: dict[str, Any],
) -> None:
    # The extender reads from an API server without watch cache, through a proxy. Cut off, it misses a
    # deleted pod and a deleted node; etcd is compacted meanwhile, so its resourceVersion has expired when
    # it is back: 410 Gone, then a re-list that must replace the view (deletions included).
    replica = plane.start_apiserver_replica("no-watch-cache", ["--watch-cache=false"])
    proxy = FaultProxy(replica.port)
    proxy.start()
    try:
        kubeconfig = plane.write_kubeconfig(
            workdir / "replica.kubeconfig", f"https://127.0.0.1:{proxy.port}", replica.ca_file
        )
        kube.create_node("gpu-a", H100, config="all-3g.40gb")
        kube.create_node("gpu-gone", H100, config="all-1g.10gb")
        extender = extenders(kubeconfig=kubeconfig)
        schedulers.append(start_scheduler(plane, workdir, "extender", extender.url))
        for name in ("holder-1", "holder-2"):
            kube.create_pod(name, {MIG_3G: 1})
            assert kube.wait_bound(name) == "gpu-a"
        assert knows(extender.url, "gpu-gone")
        with Probe(extender.url) as probe:
            base = probe.last()
            cut = time.monotonic()
            proxy.refuse(True)
            proxy.cut()
            kube.delete_pod("holder-1")
            kube.call("DELETE", "/api/v1/nodes/gpu-gone")
            kube.create_pod("waiter", {MIG_3G: 1})
            # its view still holds holder-1: the pod waits, it does not land on a full node
            scheduled(kube, "waiter", "Unschedulable")
            time.sleep(max(0.0, STALE_AFTER_S + 1 - (time.monotonic() - cut)))
            compacted = plane.compact_etcd()
            resumed = time.monotonic()
            proxy.refuse(False)
            bound: list[float] = []  # when the waiter was seen bound, watched while the re-lists come in

            def relisted_all() -> bool:
                if not bound and kube.node_of("waiter"):
                    bound.append(time.monotonic())
                return probe.last().relists >= base.relists + 3

            wait_for("a re-list of each kind", relisted_all, 60)
            relisted = time.monotonic()
            kube.wait_bound("waiter", timeout=60)
            bound.append(time.monotonic())
            wait_for("ready again", lambda: probe.last().ready, 30)
        answered_from_last_view(probe.between(cut, resumed))
        readiness_follows_staleness(probe.samples)
        assert probe.last().gone > base.gone, "the watch ended with 410 Gone"
        assert "resourceVersion expired, re-listing" in extender.log()
        assert kube.node_of("waiter") == "gpu-a"
        answer = _post(extender.url + "/filter", filter_args(["gpu-gone"], uid="gone-check"))
        assert answer["FailedNodes"] == {"gpu-gone": UNKNOWN_NODE}, "the re-list dropped the deleted node"
        assert_bindings_fit(kube)
        figures.update(
            cut_s=resumed - cut,
            compacted_revision=compacted,
            **readiness_figures(probe, cut, resumed),
            relist_after_reconnect_s=relisted - resumed,
            pending_bound_after_reconnect_s=bound[0] - resumed,
        )
    finally:
        proxy.stop()
        plane.stop_apiserver_replica(replica)


def test_a_stalled_connection_is_detected_by_the_read_timeout_and_resumed(
    plane: ControlPlane,
    kube: Kube,
    busy: Heartbeat,
    extenders: Callable[..., Extender],
    schedulers: list[object],
    workdir: Path,
    figures: dict[str, Any],
) -> None:
    # The proxy stops forwarding but keeps every socket open: no error, no EOF, just silence.
    with FaultProxy(int(plane.server.rsplit(":", 1)[1])) as proxy:
        kubeconfig = plane.write_kubeconfig(workdir / "proxy.kubeconfig", f"https://127.0.0.1:{proxy.port}")
        kube.create_node("gpu-a", H100, config="all-3g.40gb")
        extender = extenders(kubeconfig=kubeconfig)
        schedulers.append(start_scheduler(plane, workdir, "extender", extender.url))
        for name in ("holder-1", "holder-2"):
            kube.create_pod(name, {MIG_3G: 1})
            kube.wait_bound(name)
        with Probe(extender.url) as probe:
            base = probe.last()
            paused = time.monotonic()
            proxy.pause()
            kube.delete_pod("holder-1")
            kube.create_pod("waiter", {MIG_3G: 1})
            scheduled(kube, "waiter", "Unschedulable")  # the stale view still holds holder-1
            wait_for("the stall detected", lambda: busy_restarts(probe.last()) > busy_restarts(base), 30)
            detected = time.monotonic()
            # stay stalled past the staleness bound: the re-watch hangs too, readiness must turn false
            wait_for("not ready", lambda: probe.last().ready is False, STALE_AFTER_S + 10)
            resumed = time.monotonic()
            proxy.resume()
            create_probe_node(kube, "marker")
            known = wait_known(extender.url, "marker")
            kube.wait_bound("waiter", timeout=60)
            bound = time.monotonic()
            wait_for("ready again", lambda: probe.last().ready, 30)
        answered_from_last_view(probe.between(paused, resumed))
        readiness_follows_staleness(probe.samples)
        assert "watch failed" in extender.log() or "re-watching" in extender.log()
        assert_bindings_fit(kube)
        figures.update(
            stall_s=resumed - paused,
            detected_after_s=detected - paused,
            **readiness_figures(probe, paused, resumed),
            relisted=probe.last().relists > base.relists,
            view_current_after_resume_s=known - resumed,
            pending_bound_after_resume_s=bound - resumed,
        )


def test_extender_crash_and_restart(
    plane: ControlPlane,
    kube: Kube,
    busy: Heartbeat,
    extenders: Callable[..., Extender],
    schedulers: list[object],
    workdir: Path,
    figures: dict[str, Any],
) -> None:
    kube.create_node("gpu-a", H100, config="all-3g.40gb")
    kube.create_node("gpu-b", H100, config="all-3g.40gb")
    extender = extenders()
    schedulers.append(start_scheduler(plane, workdir, "extender", extender.url))
    kube.create_pod("before", {MIG_3G: 1})
    first = kube.wait_bound("before")
    assert extender.process is not None
    crashed = time.monotonic()
    os.killpg(extender.process.pid, signal.SIGKILL)
    extender.process.wait()
    kube.create_pod("during", {MIG_3G: 1})
    condition = scheduled(kube, "during", "SchedulerError")  # ignorable: false, the pod waits
    failed = time.monotonic()
    assert "/filter" in condition["message"] and kube.node_of("during") is None
    started = time.monotonic()
    extender.start()  # same port: kube-scheduler's configuration is unchanged
    ready = time.monotonic()
    assert kube.wait_bound("during", timeout=60) == first  # packs: the fresh list knows "before"
    bound = time.monotonic()
    kube.create_pod("two-3g", {MIG_3G: 2})
    assert kube.wait_bound("two-3g") != first
    kube.create_pod("overflow", {MIG_3G: 1})
    scheduled(kube, "overflow", "Unschedulable")
    assert_bindings_fit(kube)
    figures.update(
        scheduler_error_after_s=failed - crashed,
        start_to_ready_s=ready - started,
        pending_bound_after_ready_s=bound - ready,
    )


class Front:
    """An HTTP front for several extender replicas, as the Service is for kube-scheduler.

    ``sticky``: every request goes to one replica until it is dropped (:meth:`drop`, or after
    ``fail_over_after`` requests), then to the next, as ``sessionAffinity: ClientIP`` does when a replica
    leaves the endpoints. Otherwise each request goes to the next replica in turn.
    """

    def __init__(self, upstreams: list[int], *, sticky: bool, fail_over_after: int | None = None) -> None:
        self.counts: Counter[int] = Counter()
        self.upstreams = list(upstreams)
        self.sticky = sticky
        self.fail_over_after = fail_over_after
        self.failed_over_at: float | None = None
        self._lock = threading.Lock()
        self._turn = 0
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                port = front.pick()
                upstream = HTTPConnection("127.0.0.1", port, timeout=30)
                try:
                    upstream.request("POST", self.path, body, {"Content-Type": "application/json"})
                    response = upstream.getresponse()
                    status, data = response.status, response.read()
                finally:
                    upstream.close()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="front", daemon=True)

    def pick(self) -> int:
        with self._lock:
            if self.sticky:
                if self.fail_over_after is not None and sum(self.counts.values()) == self.fail_over_after:
                    self.drop()
                port = self.upstreams[0]
            else:
                port = self.upstreams[self._turn % len(self.upstreams)]
                self._turn += 1
            self.counts[port] += 1
            return port

    def drop(self) -> None:
        """The current replica leaves: the next one takes every request from now on."""
        self.upstreams = self.upstreams[1:]
        self.failed_over_at = time.monotonic()

    def __enter__(self) -> Front:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def burst_until_settled(kube: Kube, pods: list[tuple[str, dict[str, int]]], timeout: float = 90) -> float:
    """Create the pods at once; wait until each is bound or found unschedulable, then 3 s more (their
    retries must not double-book either). Returns when the burst started."""
    started = time.monotonic()
    for name, demand in pods:
        kube.create_pod(name, demand)

    def settled(name: str) -> bool:
        pod = kube.pod(name)
        conditions = pod.get("status", {}).get("conditions") or []
        return bool(pod["spec"].get("nodeName")) or any(
            c["type"] == "PodScheduled" and c["status"] == "False" for c in conditions
        )

    wait_for("every pod bound or unschedulable", lambda: all(settled(name) for name, _ in pods), timeout)
    time.sleep(3)
    return started


DYNAMIC_H100 = {"version": "v1", "gpus": [{"index": 0, "product": H100, "mode": "dynamic", "instances": []}]}
BURST = [(f"big-{i}", {MIG_3G: 1}) for i in range(6)] + [(f"small-{i}", {MIG_1G: 1}) for i in range(12)]


def test_two_replicas_with_a_failover_mid_burst_never_double_book_a_slice(
    plane: ControlPlane,
    kube: Kube,
    busy: Heartbeat,
    extenders: Callable[..., Extender],
    schedulers: list[object],
    workdir: Path,
    figures: dict[str, Any],
) -> None:
    # Dynamic MIG GPUs described exactly: kube-scheduler's counts (two 3g, seven 1g) allow far more than
    # the eight memory slices hold, so the extenders alone stand between a burst of pods and a
    # double-booked slice. Both replicas watch and answer; kube-scheduler reaches one, as the Service's
    # ClientIP affinity makes it, and is moved to the other in the middle of the burst: the second one
    # knows the first one's placements only from the bindings it sees.
    nodes = [f"gpu-{i}" for i in range(3)]
    for name in nodes:
        kube.create_node(name, H100, allocatable={MIG_3G: 2, MIG_1G: 7}, annotation=DYNAMIC_H100)
    replicas = [extenders(), extenders()]
    with Front([r.port for r in replicas], sticky=True, fail_over_after=9) as front:
        schedulers.append(start_scheduler(plane, workdir, "extender", front.url))
        started = burst_until_settled(kube, BURST)
        bindings = assert_bindings_fit(kube)
    placed = sum(len(p) for p in bindings.values())
    assert placed >= 6, f"each node holds at least two 3g, or a 3g and four 1g: {bindings}"
    assert len(front.counts) == 2, "both replicas answered"
    assert front.failed_over_at is not None
    figures.update(
        pods=len(BURST),
        placed=placed,
        requests_per_replica=[front.counts[r.port] for r in replicas],
        failed_over_after_burst_start_s=front.failed_over_at - started,
    )


def test_kube_scheduler_times_out_on_a_stopped_extender_and_the_pod_schedules_after(
    plane: ControlPlane,
    kube: Kube,
    busy: Heartbeat,
    extenders: Callable[..., Extender],
    schedulers: list[object],
    workdir: Path,
    figures: dict[str, Any],
) -> None:
    kube.create_node("gpu-a", H100, config="all-3g.40gb")
    extender = extenders()
    schedulers.append(start_scheduler(plane, workdir, "extender", extender.url))
    assert extender.process is not None
    http_timeout = 5.0  # the shipped configuration's httpTimeout
    with Probe(extender.url) as probe:
        stopped = time.monotonic()
        os.killpg(extender.process.pid, signal.SIGSTOP)
        try:
            kube.create_pod("late", {MIG_3G: 1})
            condition = scheduled(kube, "late", "SchedulerError", timeout=http_timeout + 20)
            failed = time.monotonic()
            assert kube.node_of("late") is None
            time.sleep(max(0.0, 2 * http_timeout - (time.monotonic() - stopped)))
        finally:
            continued = time.monotonic()
            os.killpg(extender.process.pid, signal.SIGCONT)
        kube.wait_bound("late", timeout=60)
        bound = time.monotonic()
        create_probe_node(kube, "marker")
        known = wait_known(extender.url, "marker")
        wait_for("ready", lambda: probe.last().ready, 30)
    assert "Timeout" in condition["message"] or "deadline" in condition["message"], condition
    assert_bindings_fit(kube)
    figures.update(
        stopped_s=continued - stopped,
        scheduler_error_after_s=failed - stopped,
        pending_bound_after_continue_s=bound - continued,
        view_current_after_continue_s=known - continued,
        not_ready_after_continue_s=probe.first(continued, lambda s: s.ready is False),
    )


def test_soak_for_a_minute(plane: ControlPlane, kube: Kube, workdir: Path, figures: dict[str, Any]) -> None:
    """scripts/soak.py for 60 s at the benchmark rate (the 10-minute run's figures are in RELIABILITY.md)."""
    import soak  # scripts/ is on sys.path through the harness

    result = soak.run(plane, workdir, duration=60, rate=50, nodes=40, node_churn_s=5)
    print("\n" + soak.text_summary(result))
    figures.update({k: v for k, v in result.items() if k not in ("rss_samples", "wrong_examples")})
    assert result["errors"] == 0, result["errors_by_kind"]
    assert result["wrong_answers"] == 0, result["wrong_examples"]
    assert not result["extender_exited"] and result["extender_log_errors"] == 0
    assert result["requests"] >= 0.9 * 50 * 60, "the load kept its rate"
    churn = result["churn_writes"]
    assert churn.get("node-created", 0) >= 5 and churn.get("pod-deleted", 0) > 0 and churn.get("load-pod-bound", 0) > 0
