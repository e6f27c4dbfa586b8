"""MIGBench's control-plane run, replayed through the real kube-apiserver and kube-scheduler with DRA.

    python scripts/migbench_replay.py [--seed 20260914] [--format migbench|nvidia] [--json out.json]
    python scripts/migbench_replay.py --trace outputs-trace.jsonl --backends kube-scheduler

MIGBench (https://github.com/FouoF/MIG-scheduler-benchmark) drives its traces through a real control plane
(``internal/controlplane/run.go``): fake node agents publish the GPUs as ResourceSlices, each job becomes one
ResourceClaim and one pod, and virtual time advances from event to event. This script does the same, with the
control plane of the end-to-end tests (``scripts/controlplane.py``: etcd, kube-apiserver, kube-scheduler and
kube-controller-manager's ResourceClaim controller; no kubelet), once per backend, each in a fresh control
plane of its own, all on the same trace and at the same time (so that machine noise hits them alike):

- ``kube-scheduler``: the scheduler alone, its DRA allocator choosing the node and the device;
- ``mig-extender``: the same scheduler with the extender (``manifests/extender-mode/kube-scheduler-config-dra.yaml``)
  filtering and scoring the nodes, the allocator still choosing the device inside the node.

The loop, as MIGBench's: at the next arrival or finish (virtual ms), the state since the last event is
integrated; each job finishing then has its pod and its claim deleted and waited for until gone; each arrival
gets its claim and pod created; then the replay *settles*: it reads the claims' allocations every ``--poll-ms``
(from one watch stream), accepts each new allocation of a waiting job (start = now + 250 ms, finish = start +
``ceil(work / compute % of the profile allocated)`` + 100 ms), and moves on once nothing changed for
``--settle-ms`` while some job runs (or none waits). A pod the scheduler retries after that (its backoff, its
unschedulable queue) is accepted at a later event, in virtual time, as MIGBench accepts it. Scheduling latency
is the wall time from the start of the settle to the allocation being seen.

Slices: ``--format migbench`` publishes MIGBench's own fake inventory (``internal/agent/agent.go``: 7
``memory-slice-<i>`` counters per GPU, no memory cap, devices ``gpu<g>-mig-<profile>-<start>``); ``--format
nvidia`` NVIDIA's DRA driver's DynamicMIG slices (:mod:`extender.model.dra.driver`: 8 memory slices as the
hardware has them). ``--requests memory`` (the default in MIGBench's format) asks as MIGBench's adapter
(``internal/adapter/adapter.go``): class ``mig.nvidia.com``, ``type == 'mig'`` and memory at least the job's (in
the driver's format, the memory of the driver's profile MIGBench's resolution names: its 1g.10gb has 9,984 MiB,
not 10,240). ``--requests profile`` (the default in the driver's format) asks for that profile by name: there,
the first device with 20 GB in the driver's name order is a 1g.20gb, so a memory request for a 2g.20gb job gets
one compute slice on two memory slices and runs half as fast.

Metrics are MIGBench's (:class:`extender.simulate.migbench.MigbenchRun`): GPC utilisation, stranded capacity
and the rest, per backend under ``backends.<name>`` of ``--json``, with ``scheduling_latency_mean_ms``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from extender.model.catalog import GpuModel, model_named  # noqa: E402
from extender.model.dra.driver import dynamic_mig_slices  # noqa: E402
from extender.model.dra.migbench_format import migbench_device_class, migbench_slices  # noqa: E402
from extender.model.migbench import COMMON_PROFILES, PROFILES, Candidate, SlotPolicy, SlotProfile, resolve  # noqa: E402
from extender.model.placement import Placement  # noqa: E402
from extender.simulate.migbench import (  # noqa: E402
    DEFAULT_SEED,
    CatalogCluster,
    Cluster,
    Job,
    MigbenchRun,
    SlotCluster,
    generate,
    read_trace,
    workload_spec,
)
from extender.simulate.workload import NodeSpec  # noqa: E402
from tests.e2e.dra import DEVICE_CLASSES, RESOURCE  # noqa: E402
from tests.e2e.harness import (  # noqa: E402
    K8S_VERSION,
    NAMESPACE,
    ControlPlane,
    Extender,
    Kube,
    ensure_built,
    start_scheduler,
)

BACKENDS = ("kube-scheduler", "mig-extender")
FORMATS = ("migbench", "nvidia")
DRIVER = "gpu.nvidia.com"
H100 = "H100-80GB"
SETTLE_MS = 500  # MIGBench's settleMS and pollMS defaults (internal/controlplane/run.go)
POLL_MS = 50
SCHEDULING_TIMEOUT_MS = 30_000  # its limits.schedulingTimeoutMS
_COUNTER_SET = re.compile(r"^gpu-(\d+)-counter-set$")
_MEMORY_SLICE = re.compile(r"^memory-slice-(\d+)$")


class ReplayError(RuntimeError):
    """The replay cannot go on: a stalled scheduler, an allocation it cannot read, an API error."""


# --- the cluster: nodes, slices, where each device is --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Device:
    """Where one published MIG device is: node position, GPU index, profile and start (slot or memory slice)."""

    node: int
    gpu: int
    profile: str
    start: int


def node_names(count: int) -> list[str]:
    return [f"migbench-worker-{i}" for i in range(count)]


def published_slices(fmt: str, node: str, gpus: int) -> list[dict[str, Any]]:
    if fmt == "migbench":
        return migbench_slices(node, gpus)
    return dynamic_mig_slices(node, model_named(H100), gpus)


def device_table(fmt: str, nodes: Sequence[str], gpus: int) -> dict[tuple[str, str], Device]:
    """(pool, device) -> :class:`Device`, read from the slices as published: the GPU from the counter set a
    device consumes, the start from the lowest memory slice it takes, the profile from its attribute."""
    table: dict[tuple[str, str], Device] = {}
    for position, node in enumerate(nodes):
        for body in published_slices(fmt, node, gpus):
            spec = body["spec"]
            for device in spec.get("devices") or []:
                attributes = device.get("attributes") or {}
                kind = (attributes.get("type") or attributes.get(f"{DRIVER}/type") or {}).get("string")
                profile = (attributes.get("profile") or attributes.get(f"{DRIVER}/profile") or {}).get("string")
                if kind != "mig" or not profile:
                    continue
                (consumed,) = device["consumesCounters"]
                gpu = _COUNTER_SET.match(consumed["counterSet"])
                slices = [int(m.group(1)) for k in consumed["counters"] if (m := _MEMORY_SLICE.match(k))]
                if gpu is None or not slices:
                    raise ReplayError(f"device {device['name']} of {node}: no GPU counter set or memory slice")
                table[(spec["pool"]["name"], device["name"])] = Device(
                    position, int(gpu.group(1)), profile, min(slices)
                )
    return table


def create_node(kube: Kube, name: str) -> None:
    """A kubelet-less, Ready Node with nothing but CPU, memory and pods: the GPUs are in its ResourceSlices."""
    resources = {"cpu": "64", "memory": "512Gi", "pods": "110"}
    ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "migbench replay"}
    kube.call(
        "POST",
        "/api/v1/nodes",
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"capacity": resources, "allocatable": resources, "conditions": [ready]},
        },
    )


def publish(kube: Kube, fmt: str, nodes: Sequence[str], gpus: int) -> None:
    if fmt == "migbench":
        kube.call("POST", f"{RESOURCE}/deviceclasses", migbench_device_class(), ok=(201, 409))
    else:
        selector = DEVICE_CLASSES["mig.nvidia.com"]
        body = {"metadata": {"name": "mig.nvidia.com"}, "spec": {"selectors": [{"cel": {"expression": selector}}]}}
        kube.call("POST", f"{RESOURCE}/deviceclasses", body, ok=(201, 409))
    for node in nodes:
        create_node(kube, node)
        for body in published_slices(fmt, node, gpus):
            kube.call("POST", f"{RESOURCE}/resourceslices", body)


# --- what each job asks ----------------------------------------------------------------------------------------


REQUESTS = ("memory", "profile")


def selector(job: Job, requests: str, fmt: str, model: GpuModel) -> str:
    """The CEL selector of a job's claim. ``memory``: as MIGBench's adapter asks (``type == 'mig'`` and memory
    at least the job's; in the driver's format the memory of the driver's profile MIGBench's resolution names,
    since the driver's 1g.10gb has 9,984 MiB, not 10,240). ``profile``: that profile by name."""
    if job.profile:
        return f"device.attributes['{DRIVER}'].profile == '{job.profile}'"
    resolved = resolve(COMMON_PROFILES, job.memory_mb, job.min_compute_percent)
    if resolved is None:
        raise ReplayError(f"{job.job_id}: no profile of the run holds {job.memory_mb} MB")
    if requests == "profile":
        return f"device.attributes['{DRIVER}'].profile == '{resolved.name}'"
    memory = job.memory_mb
    if fmt == "nvidia":
        found = model.find_profile(resolved.name)
        if found is None or found.memory_mib is None:
            raise ReplayError(f"{job.job_id}: {model.name} has no profile {resolved.name} with a known memory")
        memory = found.memory_mib
    return (
        f"device.attributes['{DRIVER}'].type == 'mig' && "
        f"device.capacity['{DRIVER}'].memory.compareTo(quantity('{memory}Mi')) >= 0"
    )


def job_objects(job: Job, expression: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The claim and the pod of one job, as MIGBench's adapter writes them for the NVIDIA DRA backend."""
    request = {"deviceClassName": "mig.nvidia.com", "selectors": [{"cel": {"expression": expression}}]}
    claim = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": job.job_id, "namespace": NAMESPACE},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": request}]}},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": job.job_id, "namespace": NAMESPACE},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "resourceClaims": [{"name": "gpu", "resourceClaimName": job.job_id}],
            "containers": [
                {"name": "workload", "image": "registry.k8s.io/pause:3.10", "resources": {"claims": [{"name": "gpu"}]}}
            ],
        },
    }
    return claim, pod


# --- the claims, followed by one watch --------------------------------------------------------------------------


class ClaimWatch:
    """The namespace's ResourceClaims: which exist, and the devices each allocated one holds (None while it
    has no allocation or is being deleted). Listed once, then followed by a watch, re-listed when it expires."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self._claims: dict[str, tuple[tuple[str, str], ...] | None] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._version = self._list()
        self._thread = threading.Thread(target=self._follow, name="claim-watch", daemon=True)
        self._thread.start()

    def allocations(self) -> dict[str, tuple[tuple[str, str], ...]]:
        with self._lock:
            return {name: devices for name, devices in self._claims.items() if devices is not None}

    def wait_gone(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while name in self._claims:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ReplayError(f"claim {name} still exists {timeout:.0f} s after its deletion")
                self._changed.wait(left)

    def close(self) -> None:
        self._stop.set()

    def _list(self) -> str:
        status, data = self.plane.request("GET", f"{RESOURCE}/namespaces/{NAMESPACE}/resourceclaims")
        if status != 200:
            raise ReplayError(f"listing ResourceClaims: HTTP {status}: {data}")
        with self._changed:
            self._claims = {item["metadata"]["name"]: _devices(item) for item in data["items"]}
            self._changed.notify_all()
        return str(data["metadata"]["resourceVersion"])

    def _follow(self) -> None:
        while not self._stop.is_set():
            path = f"{RESOURCE}/namespaces/{NAMESPACE}/resourceclaims?watch=1&allowWatchBookmarks=true"
            request = urllib.request.Request(f"{self.plane.server}{path}&resourceVersion={self._version}")
            request.add_header("Authorization", f"Bearer {self.plane.token}")
            try:
                with urllib.request.urlopen(request, context=self.plane.ssl_context(), timeout=60) as stream:
                    for line in stream:
                        if not self._apply(json.loads(line)):
                            self._version = self._list()
                            break
            except (OSError, ValueError):
                if self._stop.is_set():
                    return
                time.sleep(0.2)
                try:
                    self._version = self._list()
                except (OSError, ReplayError):
                    continue

    def _apply(self, event: Mapping[str, Any]) -> bool:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":  # 410 Gone: the version expired; list again
            return False
        self._version = str(obj["metadata"]["resourceVersion"])
        if kind == "BOOKMARK":
            return True
        name = obj["metadata"]["name"]
        with self._changed:
            if kind == "DELETED":
                self._claims.pop(name, None)
            else:
                self._claims[name] = _devices(obj)
            self._changed.notify_all()
        return True


def _devices(claim: Mapping[str, Any]) -> tuple[tuple[str, str], ...] | None:
    if claim["metadata"].get("deletionTimestamp"):
        return None
    allocation = (claim.get("status") or {}).get("allocation")
    if not allocation:
        return None
    results = allocation.get("devices", {}).get("results") or []
    return tuple((r["pool"], r["device"]) for r in results if r.get("driver") == DRIVER)


# --- one backend's replay -------------------------------------------------------------------------------------


@dataclass
class ReplayConfig:
    fmt: str = "migbench"
    nodes: int = 2
    gpus: int = 4
    settle_s: float = SETTLE_MS / 1000
    poll_s: float = POLL_MS / 1000
    timeout_s: float = SCHEDULING_TIMEOUT_MS / 1000
    requests: str = "memory"
    """How claims ask (:func:`selector`)."""
    progress: bool = False
    """A line on stderr every 100 events."""


@dataclass
class Outcome:
    backend: str
    metrics: dict[str, Any]
    jobs: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0


class Replay:
    """One backend on one trace, in its own control plane (started and stopped by :meth:`run`'s caller)."""

    def __init__(self, backend: str, plane: ControlPlane, jobs: Sequence[Job], config: ReplayConfig) -> None:
        self.backend = backend
        self.plane = plane
        self.kube = Kube(plane)
        self.config = config
        self.jobs = sorted(jobs, key=lambda j: j.arrival_ms)
        self.by_id = {j.job_id: j for j in self.jobs}
        self.nodes = node_names(config.nodes)
        self.devices = device_table(config.fmt, self.nodes, config.gpus)
        self.model = model_named(H100)
        specs = [NodeSpec(name, config.gpus) for name in self.nodes]
        self.cluster: Cluster[Any]
        if config.fmt == "migbench":
            self.cluster = SlotCluster(specs, COMMON_PROFILES, SlotPolicy.FIRST_FIT)
        else:  # the policy only answers "could it be placed anywhere" for the request-fragmentation count
            self.cluster = CatalogCluster(self.model, specs, COMMON_PROFILES, SlotPolicy.FIRST_FIT, 0)
        self.run = MigbenchRun(self.jobs, self.cluster, COMMON_PROFILES, backend, config.nodes)
        self.slot_profiles = {p.name: p for p in PROFILES}
        self.latencies_ms: list[float] = []
        self.records: list[dict[str, Any]] = []
        self.claims: ClaimWatch | None = None

    def replay(self) -> Outcome:
        started = time.monotonic()
        self.claims = ClaimWatch(self.plane)
        try:
            self._loop()
        finally:
            self.claims.close()
        result = self.run.result(time.monotonic() - started)
        metrics = dict(result.metrics)
        metrics["scheduling_latency_mean_ms"] = (
            round(statistics.fmean(self.latencies_ms), 1) if self.latencies_ms else None
        )
        metrics["profiles_allocated"] = dict(sorted(result.profile_counts.items()))
        metrics["completed"] = result.pods_placed
        return Outcome(self.backend, metrics, self.records, round(time.monotonic() - started, 1))

    def _loop(self) -> None:
        run, jobs, index, events = self.run, self.jobs, 0, 0
        while index < len(jobs) or run.pending or run.running:
            upcoming = [jobs[index].arrival_ms] if index < len(jobs) else []
            if run.finishes:
                upcoming.append(run.finishes[0][0])
            if not upcoming:
                raise ReplayError(f"{self.backend}: stalled with {len(run.pending)} jobs waiting")
            run.advance(min(upcoming))
            while run.finishes and run.finishes[0][0] == run.now:
                _, job_id = heapq.heappop(run.finishes)
                self._delete(job_id)
                run.finish(job_id)
            while index < len(jobs) and jobs[index].arrival_ms == run.now:
                self._submit(jobs[index])
                run.arrive(jobs[index])
                index += 1
            self._settle(time.monotonic())
            self._mark_request_fragmented()
            events += 1
            if self.config.progress and events % 100 == 0:
                print(
                    f"{self.backend}: {events} events, virtual {run.now / 1000:.0f} s, {len(run.waits)} started, "
                    f"{len(run.pending)} waiting",
                    file=sys.stderr,
                    flush=True,
                )
            if not run.running and index >= len(jobs) and run.pending:
                first = min(j.job_id for j in run.pending)
                raise ReplayError(f"{self.backend}: {len(run.pending)} jobs unallocated after settling; first {first}")

    def _submit(self, job: Job) -> None:
        expression = selector(job, self.config.requests, self.config.fmt, self.model)
        claim, pod = job_objects(job, expression)
        self.kube.call("POST", f"{RESOURCE}/namespaces/{NAMESPACE}/resourceclaims", claim)
        self.kube.call("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod)

    def _delete(self, job_id: str) -> None:
        """Pod, then claim, each waited for until gone (MIGBench's ``kubectl delete --wait``): the
        ResourceClaim controller frees the claim once its pod is gone."""
        assert self.claims is not None
        pod = f"/api/v1/namespaces/{NAMESPACE}/pods/{job_id}"
        self.kube.call("DELETE", pod, {"gracePeriodSeconds": 0}, ok=(200, 202, 404))
        _wait(f"pod {job_id} gone", lambda: self.plane.request("GET", pod)[0] == 404, self.config.timeout_s)
        path = f"{RESOURCE}/namespaces/{NAMESPACE}/resourceclaims/{job_id}"
        self.kube.call("DELETE", path, ok=(200, 202, 404))
        self.claims.wait_gone(job_id, self.config.timeout_s)

    def _settle(self, attempt: float) -> None:
        assert self.claims is not None
        config, run = self.config, self.run
        quiet_since, last = time.monotonic(), None
        deadline = attempt + config.timeout_s
        while True:
            allocations = self.claims.allocations()
            signature = frozenset(allocations.items())
            if signature != last:
                last, quiet_since = signature, time.monotonic()
                self._accept(allocations, attempt)
            now = time.monotonic()
            if now - quiet_since >= config.settle_s and (run.running or not run.pending):
                return
            if not run.running and run.pending and now > deadline:
                raise ReplayError(f"{self.backend}: no allocation within {config.timeout_s:.0f} s of an event")
            time.sleep(config.poll_s)

    def _accept(self, allocations: Mapping[str, tuple[tuple[str, str], ...]], attempt: float) -> None:
        waiting = {j.job_id for j in self.run.pending}
        for job_id in sorted(waiting & allocations.keys()):
            job = self.by_id[job_id]
            results = allocations[job_id]
            if len(results) != 1:
                raise ReplayError(f"claim {job_id} was allocated {len(results)} {DRIVER} devices, not one")
            (key,) = results
            device = self.devices.get(key)
            if device is None:
                raise ReplayError(f"claim {job_id} was allocated {key[1]} of pool {key[0]}, which was never published")
            profile = self.slot_profiles.get(device.profile.removesuffix("+me"))
            if profile is None or (profile.memory_mb < job.memory_mb and self.config.fmt == "migbench"):
                raise ReplayError(f"claim {job_id} ({job.memory_mb} MB) was allocated {device.profile}")
            latency = (time.monotonic() - attempt) * 1000
            finish = self.run.start(job, self._choice(device), profile)
            self.latencies_ms.append(latency)
            self.records.append(
                {
                    "job": job_id,
                    "arrival_ms": job.arrival_ms,
                    "start_ms": self.run.now + 250,
                    "finish_ms": finish,
                    "node": self.nodes[device.node],
                    "gpu": device.gpu,
                    "profile": device.profile,
                    "start": device.start,
                    "scheduling_ms": round(latency, 1),
                }
            )

    def _choice(self, device: Device) -> Any:
        if isinstance(self.cluster, SlotCluster):
            return (Candidate(device.node, device.gpu, device.start, 0), self.slot_profiles[device.profile])
        found = self.model.find_profile(device.profile)
        if found is None:
            raise ReplayError(f"{self.model.name} has no profile {device.profile}")
        return self.cluster.order[device.node], ((device.gpu, Placement(device.start, found)),)

    def _mark_request_fragmented(self) -> None:
        """MIGBench's count (``internal/controlplane/metrics.go``): a waiting job no GPU could place now on any
        profile holding its memory, while the free slots and memory summed over the cluster cover the smallest."""
        free_slots, free_memory = self.cluster.free()
        for job in self.run.pending:
            if job.job_id in self.run.fragmented:
                continue
            fitting = [p for p in COMMON_PROFILES if _holds(p, job)]
            if any(self.cluster.choose(p) is not None for p in fitting):
                continue
            smallest = resolve(COMMON_PROFILES, job.memory_mb, job.min_compute_percent)
            if smallest is not None and free_slots >= smallest.gpc and free_memory >= smallest.memory_gb:
                self.run.fragmented.add(job.job_id)


def _holds(profile: SlotProfile, job: Job) -> bool:
    if job.profile:
        return profile.name == job.profile
    return profile.memory_mb >= job.memory_mb and profile.compute_percent >= job.min_compute_percent


def _wait(what: str, done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise ReplayError(f"timed out waiting for {what}")
        time.sleep(0.01)


# --- the control planes ----------------------------------------------------------------------------------------


class Backend:
    """A fresh control plane for one backend: API server, ResourceClaim controller, the scheduler (and the
    extender), the nodes and their slices published."""

    def __init__(self, name: str, workdir: Path, config: ReplayConfig, version: str) -> None:
        self.name = name
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.plane = ControlPlane(workdir, ensure_built(version))
        self.extender: Extender | None = None
        self.config = config

    def __enter__(self) -> Backend:
        self.plane.start()
        try:
            kube = Kube(self.plane)
            kube.ensure_namespace(NAMESPACE)
            self.plane.start_controller_manager(controllers=["resourceclaim-controller"])
            publish(kube, self.config.fmt, node_names(self.config.nodes), self.config.gpus)
            url = None
            if self.name == "mig-extender":
                self.extender = Extender(self.plane, self.workdir)
                self.extender.start()
                url = self.extender.url
            start_scheduler(self.plane, self.workdir, "extender-dra", url)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        if self.extender is not None:
            self.extender.stop()
        self.plane.stop()


def replay_all(
    jobs: Sequence[Job], backends: Sequence[str], config: ReplayConfig, workdir: Path, version: str = K8S_VERSION
) -> dict[str, Outcome]:
    """Every backend on ``jobs``, each in its own control plane, all at once."""
    planes = [Backend(name, workdir / name, config, version) for name in backends]
    started: list[Backend] = []
    try:
        for backend in planes:  # on this thread: the components die with the process that started them
            started.append(backend.__enter__())
        with ThreadPoolExecutor(len(started)) as pool:
            futures = {b.name: pool.submit(Replay(b.name, b.plane, jobs, config).replay) for b in started}
            return {name: future.result() for name, future in futures.items()}
    finally:
        for backend in started:
            backend.__exit__()


# --- command line ------------------------------------------------------------------------------------------------


def trace_for(args: argparse.Namespace) -> list[Job]:
    if args.trace:
        return read_trace(args.trace)
    spec = workload_spec(args.workload, args.nodes * args.gpus * 7, jobs=args.jobs, seed=args.seed)
    return generate(spec)


def summary_line(outcome: Outcome) -> str:
    m = outcome.metrics

    def pct(key: str) -> str:
        return "-" if m.get(key) is None else f"{100 * m[key]:.2f}%"

    return (
        f"{outcome.backend:15} GPC {pct('gpc_utilization'):>7}  stranded {pct('stranded_capacity'):>7}  "
        f"phys {pct('physical_fragmentation'):>6}  req-frag {m['request_fragmented_jobs']:>4}  "
        f"wait {m['wait_mean_s']} s (P95 {m['wait_p95_s']}, P99 {m['wait_p99_s']})  makespan {m['makespan_s']} s  "
        f"sched {m['scheduling_latency_mean_ms']} ms  done {m['completed']}  wall {outcome.wall_s} s"
    )


SUMMARY_KEYS = (
    ("gpc_utilization", "GPC utilisation %", 100.0),
    ("stranded_capacity", "stranded %", 100.0),
    ("physical_fragmentation", "physical frag. %", 100.0),
    ("request_fragmented_jobs", "request-fragmented jobs", 1.0),
    ("wait_mean_s", "mean wait s", 1.0),
    ("wait_p95_s", "P95 wait s", 1.0),
    ("wait_p99_s", "P99 wait s", 1.0),
    ("makespan_s", "makespan s", 1.0),
    ("throughput_per_h", "jobs/h", 1.0),
    ("scheduling_latency_mean_ms", "mean scheduling ms", 1.0),
)


def merged(documents: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One document per (seed, format, requests): the backends of runs of the same trace side by side, each
    backend's figures marked with the run they came from (``run``), so that a latency ratio is taken within one."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for number, document in enumerate(documents):
        requests = document.get("requests") or ("memory" if document["format"] == "migbench" else "profile")
        key = (document["seed"], document["format"], requests, document["workload"])
        into = out.setdefault(key, {**document, "backends": {}})
        for name, figures in document["backends"].items():
            if name in into["backends"]:
                raise ValueError(f"seed {document['seed']}: two runs of {name}")
            into["backends"][name] = {**figures, "run": number}
    return sorted(out.values(), key=lambda d: d["seed"])


def summarize(documents: Sequence[Mapping[str, Any]]) -> str:
    """Median (min-max) of every figure per backend over the runs given, and the paired figures of the
    extender against kube-scheduler alone on the same trace (differences; the scheduling latency as a ratio,
    only where one run had both, since wall times of different runs are not comparable)."""
    documents = merged(documents)
    backends = sorted({name for d in documents for name in d["backends"]})
    seeds = ", ".join(str(d["seed"]) for d in documents)
    lines = [f"{len(documents)} traces: seeds {seeds}; format {documents[0]['format']}"]
    lines.append("| figure | " + " | ".join(backends) + " | paired: mig-extender - kube-scheduler |")
    lines.append("|---|" + "---|" * (len(backends) + 1))
    for key, label, scale in SUMMARY_KEYS:
        cells = []
        for backend in backends:
            values = [d["backends"][backend][key] * scale for d in documents if backend in d["backends"]]
            values = [v for v in values if v is not None]
            cells.append(_median_range(values))
        both = [d["backends"] for d in documents if {"mig-extender", "kube-scheduler"} <= d["backends"].keys()]
        if key == "scheduling_latency_mean_ms":
            both = [b for b in both if b["mig-extender"]["run"] == b["kube-scheduler"]["run"]]
        pairs = [(b["mig-extender"][key], b["kube-scheduler"][key]) for b in both]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        if key == "scheduling_latency_mean_ms":
            paired = _median_range([a / b for a, b in pairs if b], "x")
        else:
            paired = _median_range([(a - b) * scale for a, b in pairs])
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {paired} |")
    return "\n".join(lines)


def _median_range(values: Sequence[float], unit: str = "") -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f}{unit} ({min(values):.2f}-{max(values):.2f})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--summarize", type=Path, nargs="+", metavar="JSON", help="only summarize earlier runs' --json")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--workload", default="migbench-offered", choices=("migbench-offered", "migbench-saturated"))
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--trace", type=Path, help="replay this MIGBench JSONL trace instead of generating one")
    parser.add_argument("--format", dest="fmt", choices=FORMATS, default="migbench")
    parser.add_argument(
        "--requests",
        choices=REQUESTS,
        help="claims ask for memory (MIGBench's adapter; the default in its format) or for the profile MIGBench's "
        "resolution names (the default in the driver's: the first device holding 20 GB there is a 1g.20gb)",
    )
    parser.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated, of {', '.join(BACKENDS)}")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--gpus", type=int, default=4, help="GPUs per node")
    parser.add_argument("--settle-ms", type=int, default=SETTLE_MS)
    parser.add_argument("--poll-ms", type=int, default=POLL_MS)
    parser.add_argument("--kubernetes", default=K8S_VERSION, help="the control plane's release (built and cached)")
    parser.add_argument("--workdir", type=Path, help="logs and data of the control planes (default: a temporary dir)")
    parser.add_argument("--json", type=Path, help="write the figures of every backend here")
    args = parser.parse_args(argv)
    if args.summarize:
        try:
            print(summarize([json.loads(path.read_text()) for path in args.summarize]))
        except (OSError, ValueError, KeyError, TypeError) as err:
            parser.error(f"cannot summarize: {err}")
        return 0
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown or not backends:
        parser.error(f"unknown backend {', '.join(unknown) or '(none)'}: use {', '.join(BACKENDS)}")
    if args.nodes < 1 or args.gpus < 1 or args.jobs < 1 or args.settle_ms < 1 or args.poll_ms < 1:
        parser.error("--nodes, --gpus, --jobs, --settle-ms and --poll-ms must be at least 1")
    try:
        jobs = trace_for(args)
    except (OSError, ValueError) as err:
        parser.error(str(err))
    requests = args.requests or ("memory" if args.fmt == "migbench" else "profile")
    config = ReplayConfig(
        args.fmt, args.nodes, args.gpus, args.settle_ms / 1000, args.poll_ms / 1000, requests=requests, progress=True
    )
    with tempfile.TemporaryDirectory(prefix="migbench-replay-") as scratch:
        workdir = args.workdir or Path(scratch)
        try:
            outcomes = replay_all(jobs, backends, config, workdir, args.kubernetes)
        except ReplayError as err:
            print(f"migbench_replay: {err} (logs under {workdir})", file=sys.stderr)
            return 1
    for outcome in outcomes.values():
        print(summary_line(outcome))
    if args.json:
        document = {
            "workload": args.workload if not args.trace else str(args.trace),
            "seed": args.seed,
            "format": args.fmt,
            "requests": requests,
            "nodes": args.nodes,
            "gpus_per_node": args.gpus,
            "jobs": len(jobs),
            "settle_ms": args.settle_ms,
            "poll_ms": args.poll_ms,
            "kubernetes": args.kubernetes,
            "backends": {o.backend: {**o.metrics, "wall_s": o.wall_s, "placements": o.jobs} for o in outcomes.values()},
        }
        args.json.write_text(json.dumps(document, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
