#!/usr/bin/env python3
"""Soak: the extender under steady load and continuous churn, watched for leaks, errors and wrong answers.

    python scripts/soak.py [--duration 600] [--rate 50] [--nodes 100] [--json out.json]

Starts a loopback control plane (scripts/controlplane.py) and ``mig-extender serve`` against it, as the
end-to-end tests do, then for ``--duration`` seconds:

- churn through the API server, seen by the extender's watches: MIG pods created already bound to a node
  (``spec.nodeName``, where the side model says they fit) and deleted, ``--pod-churn`` writes per second
  around a target use; every ``--node-churn-s`` seconds a node is replaced (its pods and itself deleted,
  a new node with another MIG layout created);
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
- the extender's RSS sampled every 5 s.

Prints a text summary and writes JSON (``--json``): RSS start/end/max and slope per minute, requests,
errors, wrong answers, latency. ``run()`` is the same against a control plane someone else started (the
60-second variant in tests/e2e/test_faults.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from extender.model.catalog import model_named  # noqa: E402
from extender.model.demand import PodDemand  # noqa: E402
from extender.model.fit import fit  # noqa: E402
from extender.model.migparted import DEFAULT_CONFIG, configured_gpus  # noqa: E402
from extender.model.state import NodeState  # noqa: E402
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
        self.total_compute = 0
        self.used_compute = 0

    def add_node(self, name: str, layout: str) -> SideNode:
        model = model_named(PRODUCT)
        empty = NodeState(name, configured_gpus(model, DEFAULT_CONFIG.resolve_all(layout, model, GPUS_PER_NODE)))
        node = self.nodes[name] = SideNode(name, layout, empty, empty)
        self.total_compute += empty.total_compute
        return node

    def remove_node(self, name: str) -> SideNode:
        node = self.nodes.pop(name)
        self.total_compute -= node.empty.total_compute
        self.used_compute -= node.state.used_compute
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
    api_ms: list[float] = field(default_factory=list)
    """API server writes by the churn and the load."""
    rss: list[tuple[float, float]] = field(default_factory=list)
    """(seconds since start, MiB)."""

    def summary(self) -> dict[str, Any]:
        mib = [m for _, m in self.rss]
        lat = sorted(self.latencies_ms)
        half = [(t, m) for t, m in self.rss if t >= self.duration_s / 2]
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
            "latency_ms_p99": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2) if lat else None,
            "api_write_ms_p50": round(statistics.median(self.api_ms), 1) if self.api_ms else None,
            "rss_mib_start": round(mib[0], 1) if mib else None,
            "rss_mib_end": round(mib[-1], 1) if mib else None,
            "rss_mib_max": round(max(mib), 1) if mib else None,
            "rss_slope_mib_per_min": round(slope_per_min(self.rss), 3),
            "rss_slope_mib_per_min_second_half": round(slope_per_min(half), 3),
            "rss_samples": [(round(t), round(m, 1)) for t, m in self.rss],
        }


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
    ) -> None:
        self.plane, self.extender = plane, extender
        self.duration, self.rate, self.node_count = duration, rate, nodes
        self.pod_churn, self.node_churn_s = pod_churn, node_churn_s
        self.target_use, self.settle_s = target_use, settle_s
        self.rng = random.Random(seed)
        self.model = SideModel()
        self.figures = Figures(rate=rate, nodes=nodes)
        self.next_node = 0
        self.next_pod = 0
        self.stop_at = 0.0
        self.api: aiohttp.ClientSession | None = None
        self.rechecks: dict[tuple[str, PodDemand], asyncio.Task[None]] = {}
        self.recheck_count = 0
        self.http: aiohttp.ClientSession | None = None

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

    async def replace_node(self) -> None:
        candidates = [n for n in self.model.nodes.values() if not n.frozen]
        if not candidates:
            return
        node = self.rng.choice(candidates)
        self.model.remove_node(node.name)
        for pod in list(node.pods):
            await self.call(
                "DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}", {"gracePeriodSeconds": 0}, ok=(200, 404)
            )
            self.figures.churn["pod-deleted"] += 1
        await self.call("DELETE", f"/api/v1/nodes/{node.name}", ok=(200, 404))
        self.figures.churn["node-deleted"] += 1
        await self.create_node()

    async def pod_step(self, create: bool | None = None) -> None:
        """Create a bound pod where the model says it fits, or delete one: around the target use."""
        unfrozen = [n for n in self.model.nodes.values() if not n.frozen]
        holding = [n for n in unfrozen if n.pods]
        if create is None:
            create = self.rng.random() < (0.75 if self.model.use() < self.target_use else 0.25)
        if create or not holding:
            demand = pick_demand(self.rng)
            for node in self.rng.sample(unfrozen, min(8, len(unfrozen))):
                if self.model.fits(node.name, demand):
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
        node = self.rng.choice(holding)
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
                    await self.replace_node()
                else:
                    await self.pod_step()
            except (aiohttp.ClientError, RuntimeError, TimeoutError) as exc:
                self.figures.churn_errors[type(exc).__name__] += 1
            await asyncio.sleep(max(0.0, 1 / self.pod_churn - (time.monotonic() - started)))

    # --- load and checks -----------------------------------------------------------------------------

    async def post(self, verb: str, body: Mapping[str, Any]) -> Any:
        assert self.http is not None
        async with self.http.post(f"{self.extender.url}/{verb}", json=body) as response:
            data = await response.read()
            if response.status != 200:
                raise RuntimeError(f"{verb}: HTTP {response.status}: {data[:200]!r}")
            return json.loads(data)

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
        self.figures.requests += 1
        return passed, best

    async def check(self, demand: PodDemand, names: list[str], passed: list[str]) -> None:
        """Every passed node must fit per the side model (else a suspect); count the conservative answers."""
        self.figures.passed_nodes += len(passed)
        passing = set(passed)
        for name in passed:
            if not self.model.fits(name, demand):
                self.suspect(name, demand)
        self.figures.conservative += sum(1 for name in names if name not in passing and self.model.fits(name, demand))

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
            next_at += interval
            names = list(self.model.nodes)
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
            self.figures.rss.append((time.monotonic() - started, rss_mib(pid)))
            if time.monotonic() >= self.stop_at:
                return
            await asyncio.sleep(min(RSS_EVERY_S, max(0.0, self.stop_at - time.monotonic())))

    async def run(self) -> Figures:
        headers = {"Authorization": f"Bearer {self.plane.token}"}
        connector = aiohttp.TCPConnector(ssl=self.plane.ssl_context())
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout) as self.api,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as self.http,
        ):
            for _ in range(self.node_count):
                await self.create_node()
            # fill to the target use before the clock starts
            self.stop_at = float("inf")
            for _ in range(100_000):
                if self.model.use() >= self.target_use * 0.9:
                    break
                await self.pod_step(create=True)
            await self._wait_for_view()
            self.figures.churn["filled-with-pods"] = self.figures.churn.pop("pod-created", 0)
            self.figures.churn.pop("node-created", None)
            started = time.monotonic()
            self.stop_at = started + self.duration
            await asyncio.gather(self.churn(), self.load(), self.sample_rss(started))
            self.figures.duration_s = time.monotonic() - started
            await asyncio.gather(*self.rechecks.values())  # the last suspects
        return self.figures

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
) -> dict[str, Any]:
    """Soak the extender against ``plane`` (its own extender process, stopped at the end)."""
    Kube(plane).ensure_namespace(NAMESPACE)
    # The harness passes test settings; back to the defaults, then the caller's.
    defaults = ["--pending-scan-s", "10", "--watch-read-timeout-s", "90"]
    extender = Extender(plane, workdir, [*defaults, *extender_args])
    extender.start()
    try:
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
        )
        figures = asyncio.run(soak.run())
        summary = figures.summary()
        log = extender.log()
        summary["extender_log_errors"] = sum(
            1 for line in log.splitlines() if " ERROR " in line or " CRITICAL " in line
        )
        summary["extender_exited"] = extender.process is not None and extender.process.poll() is not None
        return summary
    finally:
        extender.stop()


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
            "over the second half)",
            f"  extender     {result['extender_log_errors']} ERROR log lines, exited: {result['extender_exited']}",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    parser.add_argument(
        "--rate",
        type=float,
        default=50.0,
        help="filter+prioritize pairs per second (default 50: kube-scheduler's pace at its default "
        "client QPS, BENCHMARKS.md)",
    )
    parser.add_argument("--nodes", type=int, default=100, help=f"nodes of {GPUS_PER_NODE} H100 GPUs")
    parser.add_argument("--pod-churn", type=float, default=5.0, help="pod creations/deletions per second")
    parser.add_argument("--node-churn-s", type=float, default=10.0, help="a node replaced every this many seconds")
    parser.add_argument("--target-use", type=float, default=0.6, help="share of compute slices the churn keeps used")
    parser.add_argument("--settle-s", type=float, default=1.5, help="how long a suspect's node is left alone")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument(
        "--extender-arg",
        action="append",
        default=[],
        help="a flag for mig-extender serve (repeat; e.g. =--scoring=pack)",
    )
    args = parser.parse_args()
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
            )
    print(text_summary(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(1 if result["errors"] or result["wrong_answers"] or result["extender_exited"] else 0)


if __name__ == "__main__":
    main()
