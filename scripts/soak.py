#!/usr/bin/env python3
"""Soak: the extender under steady load and continuous churn, watched for leaks, errors and wrong answers.

    python scripts/soak.py [--duration 600] [--rate 50] [--nodes 100] [--json out.json]
    python scripts/soak.py --duration 3600 --nodes 5000 --relist-every 900 --tracemalloc --out /tmp/soak-run

Starts a loopback control plane (scripts/controlplane.py) and ``mig-extender serve`` against it, as the
end-to-end tests do, then for ``--duration`` seconds:

- churn through the API server, seen by the extender's watches: MIG pods created already bound to a node
  (``spec.nodeName``, where the side model says they fit) and deleted, ``--pod-churn`` writes per second
  around a target use; every ``--node-churn-s`` seconds a node is added, replaced, removed, replaced in
  turn (a removed node's pods are deleted first; a new node gets a random MIG layout), so the node count
  stays within one of ``--nodes``;
- with ``--relist-every S``, a re-list now and then: the extender then reads through an API server without
  watch cache behind a proxy; every S seconds (the first at S/2) etcd is compacted and the proxy cuts every
  connection, so that the watches resume from an expired resourceVersion (410 Gone) and re-list;
- load over HTTP, as kube-scheduler sends it: ``/filter`` then ``/prioritize`` for one pod at a time at
  ``--rate`` pairs per second, with every node's name (``nodeCacheCapable: true``). The pods are a backlog
  of 32 real pending pods (their own ``schedulerName``, so nothing else schedules them) attempted in turn;
  after 10 attempts a pod is bound where the extender scored best, through the ``binding`` subresource as
  kube-scheduler does (if the side model agrees and the cluster is below the target use), or deleted, and
  a new pending pod takes its place;
- each filter answer checked against the model computed on the side (``extender.model.fit`` on the state
  the churn made): every node the extender passes must fit the pod. The extender sees the churn a little
  later than the side model, so a disagreement is a *suspect*: the node is then left alone for
  ``--settle-s`` seconds and asked again; only a disagreement that survives is a wrong answer. Nodes the
  extender rejects although the model has room are counted too (``conservative``: its answers count the
  placements it expects for pods it answered, and it may lag the churn), but they are not errors;
- the extender's RSS sampled every 5 s (``rss.csv`` under ``--out`` as it goes);
- with ``--tracemalloc``, the extender runs under tracemalloc (one frame per allocation, from its start) and
  dumps its live allocations per source line when the warm-up ends (``--warmup-s``, default 600) and at the
  end, from a forked child (the load paused until the dump is written; the snapshot's memory stays out of
  the extender's RSS); the summary names the sites that grew most between the two. Tracing slows the
  extender and its records take memory of their own (``tracemalloc_overhead_mib_end``).

Prints a text summary and writes JSON (``--json``, and ``summary.json`` under ``--out``): RSS start, end,
max, the least-squares slope per minute after the warm-up, requests, errors, wrong answers, latency, p99 of
the first and the last ``--warmup-s`` seconds. ``run()`` is the same against a control plane someone else
started (the 60-second variant in tests/e2e/test_faults.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from extender.model.catalog import model_named  # noqa: E402
from extender.model.demand import PodDemand  # noqa: E402
from extender.model.fit import fit  # noqa: E402
from extender.model.migparted import DEFAULT_CONFIG, configured_gpus  # noqa: E402
from extender.model.state import NodeState  # noqa: E402
from tests.e2e.faultproxy import FaultProxy  # noqa: E402
from tests.e2e.harness import NAMESPACE, ControlPlane, Extender, Kube, default_bin_dir  # noqa: E402

PRODUCT = "NVIDIA-H100-80GB-HBM3"
GPUS_PER_NODE = 8
LAYOUTS = ("all-balanced", "all-balanced", "all-1g.10gb", "all-2g.20gb", "all-3g.40gb", "all-7g.80gb")
DEMANDS: tuple[tuple[tuple[tuple[str, int], ...], int], ...] = (  # (MIG profiles and counts, weight)
    ((("1g.10gb", 1),), 4),
    ((("2g.20gb", 1),), 2),
    ((("3g.40gb", 1),), 2),
    ((("1g.10gb", 2),), 1),
    ((("1g.10gb", 1), ("3g.40gb", 1)), 1),
    ((("7g.80gb", 1),), 1),
)
BACKLOG = 32  # pending pods attempted in turn by the load
ATTEMPTS_PER_POD = 10  # then bound (as kube-scheduler binds) or given up
RSS_EVERY_S = 5.0
CREATE_CONCURRENCY = 16  # API writes in flight while the nodes are created and filled before the clock starts
TRACEMALLOC_DUMP_TIMEOUT_S = 600.0
TRACEMALLOC_SIGNAL = signal.SIGUSR2
# ``serve`` under tracemalloc (started by -X tracemalloc=1): SIGUSR2 forks, and the child writes the live
# allocations per source line as JSON to $MIG_SOAK_TRACEMALLOC_DIR/tracemalloc-<n>.json (written aside, then
# renamed into place), so that the snapshot's own memory and time stay out of the extender's RSS and loop.
TRACED_SERVE = """
import json, os, signal, sys, threading, tracemalloc
dumps = 0
def dump(signum, frame):
    global dumps
    dumps += 1
    traced, peak = tracemalloc.get_traced_memory()
    overhead = tracemalloc.get_tracemalloc_memory()
    child = os.fork()
    if child:
        threading.Thread(target=os.waitpid, args=(child, 0), daemon=True).start()
        return
    try:
        snapshot = tracemalloc.take_snapshot().filter_traces([
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
            tracemalloc.Filter(False, "<unknown>"),
        ])
        rows = [[s.traceback[0].filename, s.traceback[0].lineno, s.size, s.count]
                for s in snapshot.statistics("lineno")]
        body = {"traced_bytes": traced, "peak_bytes": peak, "overhead_bytes": overhead, "sites": rows}
        path = os.path.join(os.environ["MIG_SOAK_TRACEMALLOC_DIR"], f"tracemalloc-{dumps}.json")
        with open(path + ".part", "w") as out:
            json.dump(body, out)
        os.replace(path + ".part", path)
    finally:
        os._exit(0)
signal.signal(signal.SIGUSR2, dump)
from extender.cli import main
sys.exit(main(sys.argv[1:]))
"""


def progress(message: str) -> None:
    """A line on stderr as the run goes (a long run shows where it is)."""
    print(f"soak {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def pick_demand(rng: random.Random) -> PodDemand:
    mig = rng.choices([d for d, _ in DEMANDS], weights=[w for _, w in DEMANDS])[0]
    return PodDemand(mig=tuple(sorted(mig)))


def limits_of(demand: PodDemand) -> dict[str, str]:
    return {f"nvidia.com/mig-{name}": str(count) for name, count in demand.mig}


def pod_body(name: str, demand: PodDemand, node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "main", "image": "cuda:12", "resources": {"limits": limits_of(demand)}}],
    }
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}


# --- the model on the side -------------------------------------------------------------------------------


@dataclass
class SideNode:
    name: str
    layout: str
    empty: NodeState
    """Its GPUs as MIG Manager leaves them: every instance free."""
    state: NodeState
    """The same with the instances its pods hold marked used (``extender.model.fit`` plans applied)."""
    pods: dict[str, PodDemand] = field(default_factory=dict)
    version: int = 0
    frozen: int = 0
    """Suspects being re-checked on this node: the churn leaves it alone meanwhile."""

    @property
    def total_compute(self) -> int:
        return self.empty.total_compute


@dataclass
class Pending:
    """A pod of the load's backlog: pending in the API server, attempted in turn."""

    name: str
    demand: PodDemand
    obj: dict[str, Any]
    attempts: int = 0


class SideModel:
    """What the cluster holds, per the churn's and the load's own writes, and what fits where, per
    ``extender.model``: each node's layout from the mig-parted config, pods placed by ``fit`` plans."""

    def __init__(self) -> None:
        self.nodes: dict[str, SideNode] = {}
        self._fits: dict[tuple[str, int, PodDemand], bool] = {}
        self._fitting: dict[PodDemand, set[str]] = {}
        """Per demand asked about: the nodes it fits now; ``_stale`` says which of them to look at again."""
        self._stale: dict[PodDemand, set[str]] = {}
        self.total_compute = 0
        self.used_compute = 0

    def _changed(self, name: str) -> None:
        for stale in self._stale.values():
            stale.add(name)

    def add_node(self, name: str, layout: str) -> SideNode:
        model = model_named(PRODUCT)
        empty = NodeState(name, configured_gpus(model, DEFAULT_CONFIG.resolve_all(layout, model, GPUS_PER_NODE)))
        node = self.nodes[name] = SideNode(name, layout, empty, empty)
        self.total_compute += empty.total_compute
        self._changed(name)
        return node

    def remove_node(self, name: str) -> SideNode:
        node = self.nodes.pop(name)
        self.total_compute -= node.empty.total_compute
        self.used_compute -= node.state.used_compute
        self._changed(name)
        return node

    @staticmethod
    def _place(state: NodeState, demand: PodDemand) -> NodeState:
        result = fit(state, demand)
        if not result.fits_now:
            raise ValueError(f"{demand.text()} does not fit on {state.name}: {result.reason}")
        return state.with_used((p.gpu_index, p.placement) for p in result.plan)

    def hold(self, name: str, pod: str, demand: PodDemand) -> None:
        """``pod`` takes instances on node ``name`` (call only where :meth:`fits`)."""
        node = self.nodes[name]
        before = node.state.used_compute
        node.state = self._place(node.state, demand)
        node.pods[pod] = demand
        node.version += 1
        self.used_compute += node.state.used_compute - before
        self._changed(name)

    def release(self, name: str, pod: str) -> None:
        node = self.nodes.get(name)
        if node is None or node.pods.pop(pod, None) is None:
            return
        before = node.state.used_compute
        state = node.empty  # pre-made instances: replaying the rest in any order gives the same counts
        for demand in node.pods.values():
            state = self._place(state, demand)
        node.state = state
        node.version += 1
        self.used_compute += node.state.used_compute - before
        self._changed(name)

    def fits(self, name: str, demand: PodDemand) -> bool:
        """``fit`` of ``demand`` on the node's current state says it fits now."""
        node = self.nodes.get(name)
        if node is None:
            return False
        key = (name, node.version, demand)
        found = self._fits.get(key)
        if found is None:
            found = fit(node.state, demand).fits_now
            if len(self._fits) > 200_000:
                self._fits.clear()
            self._fits[key] = found
        return found

    def fitting(self, demand: PodDemand) -> set[str]:
        """The nodes :meth:`fits` says ``demand`` fits now (kept per demand, updated for the nodes changed
        since: a filter answer naming every node is checked with set operations)."""
        found = self._fitting.get(demand)
        if found is None:
            found = self._fitting[demand] = set()
            stale = self._stale[demand] = set(self.nodes)
        else:
            stale = self._stale[demand]
        for name in stale:
            if self.fits(name, demand):
                found.add(name)
            else:
                found.discard(name)
        stale.clear()
        return found

    def use(self) -> float:
        return self.used_compute / (self.total_compute or 1)


# --- the run ---------------------------------------------------------------------------------------------


@dataclass
class Figures:
    duration_s: float = 0.0
    rate: float = 0.0
    nodes: int = 0
    requests: int = 0
    """filter+prioritize pairs answered."""
    errors: Counter[str] = field(default_factory=Counter)
    passed_nodes: int = 0
    suspects: int = 0
    wrong: list[dict[str, Any]] = field(default_factory=list)
    conservative: int = 0
    """Nodes rejected although the side model had room (assumed placements, lag): not errors."""
    churn: Counter[str] = field(default_factory=Counter)
    churn_errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    latency_at_s: list[float] = field(default_factory=list)
    """When each of ``latencies_ms`` was measured, seconds since start."""
    api_ms: list[float] = field(default_factory=list)
    """API server writes by the churn and the load."""
    rss: list[tuple[float, float]] = field(default_factory=list)
    """(seconds since start, MiB)."""
    warmup_s: float = 600.0
    """The first and the last this many seconds are compared (p99), and the RSS slope starts after them."""
    steady_from_s: float | None = None
    """When the warm-up ended (after the first tracemalloc dump, if any): the RSS slope's start."""
    relists_triggered: list[float] = field(default_factory=list)
    """When etcd was compacted and the watches cut, seconds since start."""
    extender_relists: int = 0
    """Re-lists after an expired resourceVersion, per the extender's log."""
    tracemalloc: dict[str, Any] | None = None

    def p99_between(self, start: float, end: float) -> float | None:
        window = sorted(ms for t, ms in zip(self.latency_at_s, self.latencies_ms) if start <= t < end)
        return round(percentile(window, 0.99), 2) if window else None

    def summary(self) -> dict[str, Any]:
        mib = [m for _, m in self.rss]
        lat = sorted(self.latencies_ms)
        half = [(t, m) for t, m in self.rss if t >= self.duration_s / 2]
        steady_from = self.warmup_s if self.steady_from_s is None else self.steady_from_s
        steady = [(t, m) for t, m in self.rss if t >= steady_from]
        window = min(self.warmup_s, self.duration_s / 2)
        first, last = self.p99_between(0, window), self.p99_between(self.duration_s - window, float("inf"))
        return {
            "duration_s": round(self.duration_s, 1),
            "rate_target": self.rate,
            "nodes": self.nodes,
            "requests": self.requests,
            "requests_per_s": round(self.requests / self.duration_s, 1) if self.duration_s else 0.0,
            "errors": sum(self.errors.values()),
            "errors_by_kind": dict(self.errors),
            "wrong_answers": len(self.wrong),
            "wrong_examples": self.wrong[:5],
            "suspects_rechecked": self.suspects,
            "nodes_passed": self.passed_nodes,
            "conservative_rejections": self.conservative,
            "churn_writes": dict(self.churn),
            "churn_errors": dict(self.churn_errors),
            "latency_ms_p50": round(lat[len(lat) // 2], 2) if lat else None,
            "latency_ms_p99": round(percentile(lat, 0.99), 2) if lat else None,
            "latency_window_s": round(window, 1),
            "latency_ms_p99_first_window": first,
            "latency_ms_p99_last_window": last,
            "p99_last_over_first": round(last / first, 2) if first and last else None,
            "relists_triggered_at_s": [round(t, 1) for t in self.relists_triggered],
            "extender_relists": self.extender_relists,
            "api_write_ms_p50": round(statistics.median(self.api_ms), 1) if self.api_ms else None,
            "rss_mib_start": round(mib[0], 1) if mib else None,
            "rss_mib_end": round(mib[-1], 1) if mib else None,
            "rss_mib_max": round(max(mib), 1) if mib else None,
            "rss_slope_mib_per_min": round(slope_per_min(self.rss), 3),
            "rss_slope_mib_per_min_second_half": round(slope_per_min(half), 3),
            "rss_steady_from_s": round(steady_from, 1),
            "rss_slope_mib_per_min_after_warmup": round(slope_per_min(steady), 4) if len(steady) > 1 else None,
            "tracemalloc": self.tracemalloc,
            "rss_samples": [(round(t), round(m, 1)) for t, m in self.rss],
        }


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted values (the value at rank ``q * n``, as the earlier p99 was taken)."""
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB), in MiB per minute."""
    if len(points) < 2:
        return 0.0
    xs = [t / 60 for t, _ in points]
    ys = [m for _, m in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Soak:
    def __init__(
        self,
        plane: ControlPlane,
        extender: Extender,
        *,
        duration: float,
        rate: float,
        nodes: int,
        pod_churn: float,
        node_churn_s: float,
        target_use: float,
        settle_s: float,
        seed: int,
        warmup_s: float = 600.0,
        relist_every_s: float = 0.0,
        proxy: FaultProxy | None = None,
        tracemalloc_dir: Path | None = None,
        rss_csv: IO[str] | None = None,
    ) -> None:
        self.plane, self.extender = plane, extender
        self.duration, self.rate, self.node_count = duration, rate, nodes
        self.pod_churn, self.node_churn_s = pod_churn, node_churn_s
        self.target_use, self.settle_s = target_use, settle_s
        self.relist_every_s, self.proxy = relist_every_s, proxy
        self.tracemalloc_dir, self.rss_csv = tracemalloc_dir, rss_csv
        self.rng = random.Random(seed)
        self.model = SideModel()
        self.figures = Figures(rate=rate, nodes=nodes, warmup_s=warmup_s)
        self.next_node = 0
        self.next_pod = 0
        self.node_steps = 0
        self.started = 0.0
        self.stop_at = 0.0
        self.api: aiohttp.ClientSession | None = None
        self.rechecks: dict[tuple[str, PodDemand], asyncio.Task[None]] = {}
        self.recheck_count = 0
        self.http: aiohttp.ClientSession | None = None
        self.load_lock = asyncio.Lock()
        """Held by the load for each filter+prioritize pair, and by :meth:`quiet` to pause it."""
        self.dumps = 0
        self.start_allocations: dict[str, Any] | None = None

    # --- API server ---------------------------------------------------------------------------------

    async def call(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201)) -> Any:
        assert self.api is not None
        started = time.perf_counter()
        async with self.api.request(method, self.plane.server + path, json=body) as response:
            data = await response.read()
            self.figures.api_ms.append((time.perf_counter() - started) * 1000)
            if response.status not in ok:
                raise RuntimeError(f"{method} {path}: HTTP {response.status}: {data[:200]!r}")
            return json.loads(data) if data else None

    def _node_body(self, name: str, layout: str) -> dict[str, Any]:
        model = model_named(PRODUCT)
        counts: Counter[str] = Counter()
        for spec in DEFAULT_CONFIG.resolve_all(layout, model, GPUS_PER_NODE):
            for placement in spec.layout(model):
                counts[placement.profile.resource_name] += 1
        resources = {"cpu": "192", "memory": "2Ti", "pods": "250", **{k: str(v) for k, v in counts.items()}}
        labels = {
            "kubernetes.io/hostname": name,
            "nvidia.com/gpu.product": PRODUCT,
            "nvidia.com/gpu.count": str(GPUS_PER_NODE),
            "nvidia.com/mig.strategy": "mixed",
            "nvidia.com/mig.config": layout,
            "nvidia.com/mig.config.state": "success",
        }
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {},
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            },
        }

    async def create_node(self) -> None:
        name = f"soak-{self.next_node:05d}"
        self.next_node += 1
        layout = self.rng.choice(LAYOUTS)
        self.model.add_node(name, layout)  # the model first: the extender may only lag behind it
        await self.call("POST", "/api/v1/nodes", self._node_body(name, layout))
        self.figures.churn["node-created"] += 1

    async def remove_node(self) -> None:
        node = self.random_node(lambda n: not n.frozen)
        if node is None:
            return
        self.model.remove_node(node.name)
        for pod in list(node.pods):
            await self.call(
                "DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}", {"gracePeriodSeconds": 0}, ok=(200, 404)
            )
            self.figures.churn["pod-deleted"] += 1
        await self.call("DELETE", f"/api/v1/nodes/{node.name}", ok=(200, 404))
        self.figures.churn["node-deleted"] += 1

    async def node_step(self) -> None:
        """Add a node, replace one, remove one, replace one, in turn: the count stays within one of the start."""
        step = self.node_steps % 4
        self.node_steps += 1
        if step != 0:
            await self.remove_node()
        if step != 2:
            await self.create_node()

    def random_node(self, wanted: Any) -> SideNode | None:
        """A random node for which ``wanted(node)`` holds (a few draws, then a scan of every node)."""
        names = list(self.model.nodes)
        for _ in range(32):
            if not names:
                return None
            node = self.model.nodes[self.rng.choice(names)]
            if wanted(node):
                return node
        candidates = [n for n in self.model.nodes.values() if wanted(n)]
        return self.rng.choice(candidates) if candidates else None

    async def pod_step(self, create: bool | None = None) -> None:
        """Create a bound pod where the model says it fits, or delete one: around the target use."""
        holding = None if create else self.random_node(lambda n: n.pods and not n.frozen)
        if create is None:
            create = self.rng.random() < (0.75 if self.model.use() < self.target_use else 0.25)
        if create or holding is None:
            demand = pick_demand(self.rng)
            names = list(self.model.nodes)
            for candidate in self.rng.sample(names, min(8, len(names))):
                node = self.model.nodes[candidate]
                if not node.frozen and self.model.fits(node.name, demand):
                    name = f"bound-{self.next_pod:07d}"
                    self.next_pod += 1
                    self.model.hold(node.name, name, demand)  # the model first: the extender may only lag
                    try:
                        await self.call(
                            "POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod_body(name, demand, node.name)
                        )
                    except BaseException:
                        self.model.release(node.name, name)
                        raise
                    self.figures.churn["pod-created"] += 1
                    return
            self.figures.churn["pod-create-no-room"] += 1
            return
        node = holding
        name = self.rng.choice(list(node.pods))
        self.model.release(node.name, name)
        await self.call(
            "DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}", {"gracePeriodSeconds": 0}, ok=(200, 404)
        )
        self.figures.churn["pod-deleted"] += 1

    async def churn(self) -> None:
        next_node_change = time.monotonic() + self.node_churn_s
        while time.monotonic() < self.stop_at:
            started = time.monotonic()
            try:
                if started >= next_node_change:
                    next_node_change += self.node_churn_s
                    await self.node_step()
                else:
                    await self.pod_step()
            except (aiohttp.ClientError, RuntimeError, TimeoutError) as exc:
                self.figures.churn_errors[type(exc).__name__] += 1
            await asyncio.sleep(max(0.0, 1 / self.pod_churn - (time.monotonic() - started)))

    # --- load and checks -----------------------------------------------------------------------------

    async def post(self, verb: str, body: Mapping[str, Any]) -> Any:
        assert self.http is not None
        headers = {"Content-Type": "application/json"}
        async with self.http.post(f"{self.extender.url}/{verb}", data=orjson.dumps(body), headers=headers) as response:
            data = await response.read()
            if response.status != 200:
                raise RuntimeError(f"{verb}: HTTP {response.status}: {data[:200]!r}")
            return orjson.loads(data)

    @staticmethod
    def args(uid: str, demand: PodDemand, names: list[str]) -> dict[str, Any]:
        """ExtenderArgs for a pod that is not in the API server (warm-up and re-checks)."""
        pod = pod_body(uid, demand)
        pod["metadata"]["uid"] = uid
        return {"Pod": pod, "NodeNames": names, "Nodes": None}

    async def new_pending(self) -> Pending:
        """A pending MIG pod in the API server, as kube-scheduler would get it (no scheduler runs here)."""
        name = f"load-{self.next_pod:07d}"
        self.next_pod += 1
        demand = pick_demand(self.rng)
        body = pod_body(name, demand)
        body["spec"]["schedulerName"] = "soak-load"
        created = await self.call("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", body)
        self.figures.churn["load-pod-created"] += 1
        return Pending(name, demand, created)

    async def finish(self, pod: Pending, best: str | None) -> None:
        """After its last attempt a pending pod is bound where the extender scored best, as kube-scheduler
        binds (when the side model agrees and the cluster is below the target use), or given up."""
        node = self.model.nodes.get(best) if best else None
        if node and not node.frozen and self.model.use() < self.target_use and self.model.fits(node.name, pod.demand):
            self.model.hold(node.name, pod.name, pod.demand)  # the model first: the extender may only lag
            binding = {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": pod.name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node.name},
            }
            try:
                await self.call("POST", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod.name}/binding", binding)
            except BaseException:
                self.model.release(node.name, pod.name)
                raise
            self.figures.churn["load-pod-bound"] += 1
        else:
            path = f"/api/v1/namespaces/{NAMESPACE}/pods/{pod.name}"
            await self.call("DELETE", path, {"gracePeriodSeconds": 0}, ok=(200, 404))
            self.figures.churn["load-pod-given-up"] += 1

    async def ask(self, pod: Pending, names: list[str]) -> tuple[list[str], str | None]:
        """Filter, then prioritize if more than one node passes (as kube-scheduler): (passed, best)."""
        started = time.perf_counter()
        best: str | None = None
        try:
            answer = await self.post("filter", {"Pod": pod.obj, "NodeNames": names, "Nodes": None})
            passed = answer.get("NodeNames") or []
            if not set(passed) <= set(names) or answer.get("Error"):
                self.figures.errors["malformed filter answer"] += 1
            if len(passed) > 1:
                scores = await self.post("prioritize", {"Pod": pod.obj, "NodeNames": passed, "Nodes": None})
                if sorted(s["Host"] for s in scores) != sorted(passed) or not all(
                    isinstance(s["Score"], int) and 0 <= s["Score"] <= 10 for s in scores
                ):
                    self.figures.errors["malformed prioritize answer"] += 1
                best = max(scores, key=lambda s: s["Score"])["Host"]
            elif passed:
                best = passed[0]
        except (aiohttp.ClientError, RuntimeError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            self.figures.errors[type(exc).__name__] += 1
            return [], None
        self.figures.latencies_ms.append((time.perf_counter() - started) * 1000)
        self.figures.latency_at_s.append(time.monotonic() - self.started)
        self.figures.requests += 1
        return passed, best

    async def check(self, demand: PodDemand, names: list[str], passed: list[str]) -> None:
        """Every passed node must fit per the side model (else a suspect); count the conservative answers."""
        self.figures.passed_nodes += len(passed)
        passing = set(passed)
        fitting = self.model.fitting(demand)
        for name in passing - fitting:
            self.suspect(name, demand)
        self.figures.conservative += len(fitting.intersection(names) - passing)

    async def load(self) -> None:
        """Filter then prioritize for the backlog's pods in turn, each pod ATTEMPTS_PER_POD times, then
        bound or given up and replaced by a new one (API writes do not hold up the load)."""
        interval = 1 / self.rate
        next_at = time.monotonic()
        backlog: list[Pending | None] = [await self.new_pending() for _ in range(BACKLOG)]
        replacing: set[asyncio.Task[None]] = set()

        async def replace(slot: int, pod: Pending, best: str | None) -> None:
            try:
                await self.finish(pod, best)
                backlog[slot] = await self.new_pending()
            except (aiohttp.ClientError, RuntimeError, TimeoutError, ValueError) as exc:
                self.figures.churn_errors[f"load {type(exc).__name__}"] += 1
                pod.attempts = 0
                backlog[slot] = pod  # try again later

        i = 0
        while time.monotonic() < self.stop_at:
            pod = backlog[i % BACKLOG]
            i += 1
            if pod is None:  # being bound or replaced
                await asyncio.sleep(0.002)
                continue
            next_at = max(next_at + interval, time.monotonic() - 1.0)  # no burst after a pause
            names = list(self.model.nodes)
            async with self.load_lock:
                passed, best = await self.ask(pod, names)
            await self.check(pod.demand, names, passed)
            pod.attempts += 1
            if pod.attempts >= ATTEMPTS_PER_POD:
                backlog[(i - 1) % BACKLOG] = None
                task = asyncio.create_task(replace((i - 1) % BACKLOG, pod, best))
                replacing.add(task)
                task.add_done_callback(replacing.discard)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await asyncio.gather(*replacing)

    def suspect(self, name: str, demand: PodDemand) -> None:
        """Re-check a pass the side model disagrees with (once per node and demand at a time)."""
        key = (name, demand)
        if key not in self.rechecks and name in self.model.nodes:
            self.rechecks[key] = asyncio.create_task(self.recheck(name, demand))
            self.rechecks[key].add_done_callback(lambda _: self.rechecks.pop(key, None))

    async def recheck(self, name: str, demand: PodDemand) -> None:
        """Ask again once the node has been left alone for settle_s (the watch has caught up)."""
        node = self.model.nodes[name]
        self.figures.suspects += 1
        node.frozen += 1
        try:
            await asyncio.sleep(self.settle_s)
            self.recheck_count += 1
            answer = await self.post("filter", self.args(f"recheck-{self.recheck_count}", demand, [name]))
            if name in (answer.get("NodeNames") or []) and not self.model.fits(name, demand):
                self.figures.wrong.append(
                    {
                        "node": name,
                        "layout": node.layout,
                        "holds": {p: dict(d.mig) for p, d in node.pods.items()},
                        "demand": dict(demand.mig),
                        "at_s": round(time.monotonic() - (self.stop_at - self.duration), 1),
                    }
                )
        except (aiohttp.ClientError, RuntimeError, TimeoutError, ValueError) as exc:
            self.figures.errors[f"recheck {type(exc).__name__}"] += 1
        finally:
            node.frozen -= 1

    async def sample_rss(self, started: float) -> None:
        assert self.extender.process is not None
        pid = self.extender.process.pid
        while True:
            at, mib = time.monotonic() - started, rss_mib(pid)
            self.figures.rss.append((at, mib))
            if self.rss_csv is not None:
                self.rss_csv.write(f"{at:.1f},{mib:.2f}\n")
                self.rss_csv.flush()
            if time.monotonic() >= self.stop_at:
                return
            await asyncio.sleep(min(RSS_EVERY_S, max(0.0, self.stop_at - time.monotonic())))

    @contextlib.asynccontextmanager
    async def quiet(self) -> AsyncIterator[None]:
        """The load paused (after the pair in flight) while the body runs."""
        async with self.load_lock:
            yield

    async def dump_allocations(self) -> dict[str, Any]:
        """Have the extender write its live allocations per source line (``TRACED_SERVE``); returns them."""
        assert self.extender.process is not None and self.tracemalloc_dir is not None
        self.dumps += 1
        path = self.tracemalloc_dir / f"tracemalloc-{self.dumps}.json"
        started = time.monotonic()
        os.kill(self.extender.process.pid, TRACEMALLOC_SIGNAL)
        while not path.exists():
            if time.monotonic() - started > TRACEMALLOC_DUMP_TIMEOUT_S or self.extender.process.poll() is not None:
                raise RuntimeError(f"the extender wrote no {path.name}")
            await asyncio.sleep(0.2)
        found: dict[str, Any] = json.loads(path.read_text())
        found["took_s"] = round(time.monotonic() - started, 1)
        return found

    async def milestones(self) -> None:
        """The end of the warm-up (a tracemalloc dump, the load paused), and the re-lists now and then."""
        warm_at = self.started + self.figures.warmup_s
        relist_at = self.started + self.relist_every_s / 2 if self.relist_every_s > 0 else float("inf")
        while True:
            next_at = min(warm_at, relist_at)
            if next_at >= self.stop_at:
                return
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if next_at == warm_at:
                warm_at = float("inf")
                if self.tracemalloc_dir is not None:
                    async with self.quiet():
                        self.start_allocations = await self.dump_allocations()
                self.figures.steady_from_s = time.monotonic() - self.started
                progress(f"warm-up over at {self.figures.steady_from_s:.0f} s")
            else:
                relist_at += self.relist_every_s
                await self.relist()

    async def relist(self) -> None:
        """Compact etcd, then cut the extender's connections: its watches resume from an expired version."""
        assert self.proxy is not None
        self.figures.relists_triggered.append(time.monotonic() - self.started)
        revision = await asyncio.to_thread(self.plane.compact_etcd)
        cut = await asyncio.to_thread(self.proxy.cut)
        progress(f"etcd compacted at revision {revision}, {cut} connections cut")

    async def run(self) -> Figures:
        headers = {"Authorization": f"Bearer {self.plane.token}"}
        connector = aiohttp.TCPConnector(ssl=self.plane.ssl_context())
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout) as self.api,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as self.http,
        ):
            began = time.monotonic()
            await self._in_parallel(self.node_count, self.create_node)
            progress(f"{self.node_count} nodes created in {time.monotonic() - began:.0f} s; filling")
            # fill to the target use before the clock starts
            self.stop_at = float("inf")
            tries = max(100_000, 40 * self.node_count * GPUS_PER_NODE)
            await self._in_parallel(tries, lambda: self.pod_step(create=True), self._filled)
            await self._wait_for_view()
            progress(
                f"{self.figures.churn.get('pod-created', 0)} pods bound, use {self.model.use():.2f}, after "
                f"{time.monotonic() - began:.0f} s; load and churn for {self.duration:.0f} s"
            )
            self.figures.churn["filled-with-pods"] = self.figures.churn.pop("pod-created", 0)
            self.figures.churn.pop("node-created", None)
            self.figures.churn.pop("pod-create-no-room", None)
            self.started = started = time.monotonic()
            self.stop_at = started + self.duration
            await asyncio.gather(self.churn(), self.load(), self.sample_rss(started), self.milestones())
            self.figures.duration_s = time.monotonic() - started
            progress(f"load and churn done: {self.figures.requests} pairs, {sum(self.figures.errors.values())} errors")
            await asyncio.gather(*self.rechecks.values())  # the last suspects
            if self.tracemalloc_dir is not None:
                self.figures.tracemalloc = allocation_growth(self.start_allocations, await self.dump_allocations())
        return self.figures

    def _filled(self) -> bool:
        return self.model.use() >= self.target_use  # the churn then keeps it level

    async def _in_parallel(self, count: int, step: Any, done: Any = None) -> None:
        """``step()`` ``count`` times, CREATE_CONCURRENCY at once, until ``done()``."""
        left = [count]

        async def worker() -> None:
            while left[0] > 0 and not (done and done()):
                left[0] -= 1
                await step()

        await asyncio.gather(*(worker() for _ in range(CREATE_CONCURRENCY)))

    async def _wait_for_view(self) -> None:
        """Until the extender knows every node (its answers name none as unknown)."""
        names = list(self.model.nodes)
        for _ in range(300):
            answer = await self.post("filter", self.args("warmup", PodDemand(mig=(("1g.10gb", 1),)), names))
            unknown = [n for n, why in (answer.get("FailedNodes") or {}).items() if "not yet in" in why]
            if not unknown:
                return
            await asyncio.sleep(0.2)
        raise RuntimeError("the extender never learned every node")


def run(
    plane: ControlPlane,
    workdir: Path,
    *,
    duration: float = 600.0,
    rate: float = 50.0,
    nodes: int = 100,
    pod_churn: float = 5.0,
    node_churn_s: float = 10.0,
    target_use: float = 0.6,
    settle_s: float = 1.5,
    seed: int = 1,
    extender_args: Sequence[str] = (),
    warmup_s: float = 600.0,
    relist_every_s: float = 0.0,
    tracemalloc: bool = False,
    out: Path | None = None,
) -> dict[str, Any]:
    """Soak the extender against ``plane`` (its own extender process, stopped at the end).

    ``out``: a folder for ``rss.csv`` (written as the run goes), ``latencies.csv`` and the tracemalloc dumps."""
    Kube(plane).ensure_namespace(NAMESPACE)
    # The harness passes test settings; back to the defaults, then the caller's.
    args = ["--pending-scan-s", "10", "--watch-read-timeout-s", "90", *extender_args]
    replica, proxy = None, None
    with contextlib.ExitStack() as cleanup:
        if relist_every_s > 0:
            # no watch cache: a watch resumed from a compacted version gets 410 Gone, whatever it missed
            replica = plane.start_apiserver_replica("no-watch-cache", ["--watch-cache=false"])
            cleanup.callback(plane.stop_apiserver_replica, replica)
            proxy = FaultProxy(replica.port)
            proxy.start()
            cleanup.callback(proxy.stop)
            kubeconfig = plane.write_kubeconfig(
                workdir / "replica.kubeconfig", f"https://127.0.0.1:{proxy.port}", replica.ca_file
            )
            args += ["--kubeconfig", str(kubeconfig)]
        folder = out or workdir
        folder.mkdir(parents=True, exist_ok=True)
        traced = folder if tracemalloc else None
        extender = (
            Extender(
                plane,
                workdir,
                args,
                python_args=["-X", "tracemalloc=1", "-c", TRACED_SERVE],
                env={"MIG_SOAK_TRACEMALLOC_DIR": str(folder)},
            )
            if tracemalloc
            else Extender(plane, workdir, args)
        )
        extender.start()
        cleanup.callback(extender.stop)
        rss_csv = cleanup.enter_context((folder / "rss.csv").open("w")) if out else None
        if rss_csv is not None:
            rss_csv.write("seconds,rss_mib\n")
        soak = Soak(
            plane,
            extender,
            duration=duration,
            rate=rate,
            nodes=nodes,
            pod_churn=pod_churn,
            node_churn_s=node_churn_s,
            target_use=target_use,
            settle_s=settle_s,
            seed=seed,
            warmup_s=warmup_s,
            relist_every_s=relist_every_s,
            proxy=proxy,
            tracemalloc_dir=traced,
            rss_csv=rss_csv,
        )
        figures = asyncio.run(soak.run())
        log = extender.log()
        figures.extender_relists = log.count("resourceVersion expired, re-listing")
        summary = figures.summary()
        summary["extender_log_errors"] = sum(
            1 for line in log.splitlines() if " ERROR " in line or " CRITICAL " in line
        )
        summary["extender_exited"] = extender.process is not None and extender.process.poll() is not None
        if out:
            with (out / "latencies.csv").open("w") as sink:
                sink.write("seconds,ms\n")
                sink.writelines(f"{t:.3f},{ms:.3f}\n" for t, ms in zip(figures.latency_at_s, figures.latencies_ms))
        return summary


def short_path(filename: str) -> str:
    """A source file named as a reader finds it: relative to the repository, else to site-packages."""
    for root in ("site-packages" + os.sep, str(ROOT) + os.sep, "lib" + os.sep):
        if root in filename:
            return filename.split(root, 1)[1]
    return filename


def allocation_growth(start: Mapping[str, Any] | None, end: Mapping[str, Any], top: int = 15) -> dict[str, Any]:
    """The source lines whose live allocations grew most from the ``start`` dump to the ``end`` one."""
    before = {(f, line): (size, count) for f, line, size, count in (start or {}).get("sites", [])}
    rows = []
    for f, line, size, count in end["sites"]:
        was_size, was_count = before.pop((f, line), (0, 0))
        rows.append((size - was_size, count - was_count, f, line, size))
    rows += [(-size, -count, f, line, 0) for (f, line), (size, count) in before.items()]
    rows.sort(key=lambda r: r[0], reverse=True)

    def named(r: tuple[int, int, str, int, int]) -> dict[str, Any]:
        return {
            "site": f"{short_path(r[2])}:{r[3]}",
            "kib": round(r[0] / 1024, 1),
            "blocks": r[1],
            "kib_now": round(r[4] / 1024, 1),
        }

    mib = 2**20
    return {
        "traced_mib_start": round(start["traced_bytes"] / mib, 2) if start else None,
        "traced_mib_end": round(end["traced_bytes"] / mib, 2),
        "sites_mib_start": round(sum(r[2] for r in start["sites"]) / mib, 2) if start else None,
        "sites_mib_end": round(sum(r[2] for r in end["sites"]) / mib, 2),
        "tracemalloc_overhead_mib_end": round(end["overhead_bytes"] / mib, 1),
        "dump_s": [start["took_s"] if start else None, end["took_s"]],
        "grew": [named(r) for r in rows[:top] if r[0] > 0],
        "shrank": [named(r) for r in rows[::-1][:5] if r[0] < 0],
    }


def text_summary(result: Mapping[str, Any]) -> str:
    return "\n".join(
        [
            f"soak: {result['duration_s']} s, {result['nodes']} nodes x {GPUS_PER_NODE} GPUs, "
            f"target {result['rate_target']} filter+prioritize pairs/s",
            f"  requests     {result['requests']} ({result['requests_per_s']}/s), "
            f"p50 {result['latency_ms_p50']} ms, p99 {result['latency_ms_p99']} ms",
            f"  errors       {result['errors']} {result['errors_by_kind'] or ''}",
            f"  wrong        {result['wrong_answers']} (suspects re-checked: {result['suspects_rechecked']}; "
            f"nodes passed: {result['nodes_passed']}; "
            f"conservative rejections: {result['conservative_rejections']})",
            f"  churn        {result['churn_writes']} errors {result['churn_errors'] or 0}",
            f"  RSS MiB      start {result['rss_mib_start']}, end {result['rss_mib_end']}, "
            f"max {result['rss_mib_max']}, slope {result['rss_slope_mib_per_min']}/min "
            f"({result['rss_slope_mib_per_min_second_half']}/min "
            f"over the second half, {result['rss_slope_mib_per_min_after_warmup']}/min "
            f"from {result['rss_steady_from_s']} s)",
            f"  p99 ms       first {result['latency_window_s']} s {result['latency_ms_p99_first_window']}, "
            f"last {result['latency_ms_p99_last_window']} (x{result['p99_last_over_first']})",
            f"  re-lists     {len(result['relists_triggered_at_s'])} triggered, "
            f"{result['extender_relists']} seen by the extender",
            f"  extender     {result['extender_log_errors']} ERROR log lines, exited: {result['extender_exited']}",
            *tracemalloc_lines(result.get("tracemalloc")),
        ]
    )


def tracemalloc_lines(found: Mapping[str, Any] | None) -> list[str]:
    if not found:
        return []
    lines = [
        f"  tracemalloc  traced {found['traced_mib_start']} -> {found['traced_mib_end']} MiB "
        f"(its own overhead {found['tracemalloc_overhead_mib_end']} MiB), grew most:"
    ]
    lines += [f"    {g['kib']:+10.1f} KiB {g['blocks']:+8d} blocks  {g['site']}" for g in found["grew"][:10]]
    return lines


def positive(kind: type[float] | type[int], *, zero: bool = False) -> Any:
    """An argparse type: a number above 0 (or at least 0), else a one-line error naming the value."""

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"{text!r} must be {'at least' if zero else 'above'} 0 and finite")
        return value

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=positive(float), default=600.0, help="seconds of load (default 600)")
    parser.add_argument(
        "--rate",
        type=positive(float),
        default=50.0,
        help="filter+prioritize pairs per second (default 50: kube-scheduler's pace at its default "
        "client QPS, BENCHMARKS.md)",
    )
    parser.add_argument("--nodes", type=positive(int), default=100, help=f"nodes of {GPUS_PER_NODE} H100 GPUs")
    parser.add_argument("--pod-churn", type=positive(float), default=5.0, help="pod creations/deletions per second")
    parser.add_argument(
        "--node-churn-s", type=positive(float), default=10.0, help="a node added, replaced or removed this often"
    )
    parser.add_argument("--target-use", type=float, default=0.6, help="share of compute slices the churn keeps used")
    parser.add_argument(
        "--settle-s", type=positive(float, zero=True), default=1.5, help="how long a suspect's node is left alone"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument(
        "--warmup-s",
        type=positive(float),
        default=600.0,
        help="the warm-up: the RSS slope starts after it, and p99 of the first and the last this many "
        "seconds are compared (default 600)",
    )
    parser.add_argument(
        "--relist-every",
        type=positive(float, zero=True),
        default=0.0,
        metavar="S",
        help="compact etcd and cut the extender's watches every S seconds, the first at S/2, so that it "
        "re-lists (default 0: never)",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="run the extender under tracemalloc and name the allocation sites that grew after the warm-up",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="a folder for rss.csv (as the run goes), latencies.csv, the tracemalloc dumps and summary.json",
    )
    parser.add_argument(
        "--extender-arg",
        action="append",
        default=[],
        help="a flag for mig-extender serve (repeat; e.g. =--scoring=pack)",
    )
    args = parser.parse_args(argv)
    if not 0 < args.target_use < 1:
        parser.error(f"--target-use {args.target_use} must be between 0 and 1")
    return args


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="mig-soak-") as tmp:
        workdir = Path(tmp)
        with ControlPlane(workdir / "plane", default_bin_dir()) as plane:
            result = run(
                plane,
                workdir,
                duration=args.duration,
                rate=args.rate,
                nodes=args.nodes,
                pod_churn=args.pod_churn,
                node_churn_s=args.node_churn_s,
                target_use=args.target_use,
                settle_s=args.settle_s,
                seed=args.seed,
                extender_args=args.extender_arg,
                warmup_s=args.warmup_s,
                relist_every_s=args.relist_every,
                tracemalloc=args.tracemalloc,
                out=args.out,
            )
    print(text_summary(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.out:
        (args.out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(1 if result["errors"] or result["wrong_answers"] or result["extender_exited"] else 0)


if __name__ == "__main__":
    main()
