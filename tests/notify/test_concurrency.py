"""The verdict scan and the request path share the model's caches: both flat out, the answers stay right.

/filter and /prioritize are driven over HTTP (the aiohttp test client) while the annotator scans pending pods of
many distinct demands and the nodes' states change between scans, with the caches shrunk so that they evict all
the time. Every filter answer and every verdict is then compared with one computed afresh, single-threaded,
over the node states it was computed over; and no cache may end past its bound.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cachetools import LRUCache

from extender.metrics import Metrics
from extender.model import fit as fit_module
from extender.model import fragmentation, policy, state
from extender.model.demand import PodDemand, pod_demand
from extender.model.fit import FitResult, fit
from extender.model.policy import ClusterVerdict, Outcome, PolicyConfig, allocator_for, cluster_verdict, outcome_of
from extender.model.state import NodeState
from extender.notify.annotator import Annotator
from extender.notify.writers import LogWriter
from extender.server.app import build_app
from extender.server.scheduling import UNKNOWN_NODE, SchedulingService
from extender.server.wire import ExtenderArgs
from extender.settings import Settings
from extender.view.store import ClusterView, Kind
from tests.builders import pod

ClientFactory = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]

STRESS_S = 3.0  # wall time of the run
MAX_REQUESTS = 4_000  # filter+prioritize pairs over all clients, whichever ends first
CLIENTS = 4
TINY = 8  # cache bounds during the run: every few fits evict
BY_MODEL = (("1g.10gb", "2g.20gb", "3g.40gb"), ("1g.5gb", "2g.10gb", "3g.20gb"), ("1g.18gb", "2g.35gb", "3g.71gb"))
PROFILES = tuple(itertools.chain.from_iterable(BY_MODEL))
CHURN_NODES = ("h100-balanced", "h100-inference", "h200-dynamic", "a100-balanced", "h200-balanced")
CONFIG = PolicyConfig()


def distinct_demands() -> list[dict[str, int]]:
    """Limits of 45 distinct demands: one profile, one to four instances, or two profiles of one GPU model."""
    singles = [{p: n} for p in PROFILES for n in (1, 2, 3, 4)]
    pairs = [{a: 1, b: 1} for profiles in BY_MODEL for a, b in itertools.combinations(profiles, 2)]
    return singles + pairs


def mig_pod(name: str, limits: dict[str, int], node_name: str | None = None) -> dict[str, Any]:
    return pod(name, limits={f"nvidia.com/mig-{p}": n for p, n in limits.items()}, namespace="ml", node_name=node_name)


class RecordingService(SchedulingService):
    """Records each filter answer with the node states it was computed over."""

    def __init__(self, view: ClusterView, settings: Settings, metrics: Metrics) -> None:
        super().__init__(view, settings, metrics)
        self.answers: list[tuple[dict[str, NodeState | None], PodDemand, dict[str, Any]]] = []

    def _filter(self, args: ExtenderArgs) -> Any:
        self.view.unassume(args.pod["metadata"]["uid"])  # as the filter does first: the states it then reads
        states = {name: self.view.node_state(name) for name in args.candidate_names()}
        result, answer = super()._filter(args)
        self.answers.append((states, pod_demand(args.pod), orjson.loads(orjson.dumps(result))))
        return result, answer


@pytest.fixture
def eager_thread_switches() -> Iterator[None]:
    """Switch threads every microsecond instead of every 5 ms: races that need a switch inside a few
    bytecodes show in seconds instead of days."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def shrink_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy, "_FITS", LRUCache(maxsize=TINY))
    monkeypatch.setattr(fit_module, "_GPU_VECTORS_LIMIT", TINY)
    monkeypatch.setattr(fragmentation, "_UNUSABLE_LIMIT", TINY)
    monkeypatch.setattr(state, "_INTERN_LIMIT", 16 * TINY)


def expected_filter(states: dict[str, NodeState | None], demand: PodDemand) -> dict[str, Any]:
    """Passing names, failed and unresolvable reasons, from fits computed now."""
    passed, failed, unresolvable = [], {}, {}
    for name, node_state in states.items():
        if node_state is None:
            failed[name] = UNKNOWN_NODE
            continue
        result: FitResult = fit(node_state, demand, allocator_for(node_state, CONFIG))
        outcome = outcome_of(result)
        if outcome is Outcome.SUCCESS:
            passed.append(name)
        elif outcome is Outcome.UNSCHEDULABLE:
            failed[name] = result.reason
        else:
            unresolvable[name] = result.reason
    return {
        "Nodes": None,
        "NodeNames": passed,
        "FailedNodes": failed,
        "FailedAndUnresolvableNodes": unresolvable,
        "Error": "",
    }


async def test_filter_prioritize_and_the_verdict_scan_at_once_give_fresh_answers(
    aiohttp_client: ClientFactory,
    demo_view: ClusterView,
    monkeypatch: pytest.MonkeyPatch,
    eager_thread_switches: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    view = demo_view
    shrink_caches(monkeypatch)
    demands = distinct_demands()
    for i, limits in enumerate(demands):  # pending pods of every demand: each scan evaluates them all
        view.apply(Kind.PODS, "ADDED", mig_pod(f"pending-{i}", limits))
    settings = Settings()
    metrics = Metrics(view)
    service = RecordingService(view, settings, metrics)
    client = await aiohttp_client(build_app(settings, view, metrics, service))
    annotator = Annotator(view, LogWriter(view), metrics, policy=CONFIG, rate=1e6, scan_interval_s=0.01)
    deadline = time.monotonic() + STRESS_S
    requests = itertools.count()
    scans: list[tuple[list[NodeState], dict[PodDemand, ClusterVerdict]]] = []
    failures: list[str] = []

    def running() -> bool:
        return time.monotonic() < deadline and not failures

    async def churn() -> None:
        """Pods bind and leave on several nodes: their states change between scans and between requests."""
        for step in itertools.count():
            if not running():
                return
            name = CHURN_NODES[step % len(CHURN_NODES)]
            raw = mig_pod(f"churn-{step % 24}", {PROFILES[step % 3]: 1}, node_name=name)
            view.apply(Kind.PODS, "DELETED" if step % 48 >= 24 else "ADDED", raw)
            await asyncio.sleep(0.001)

    async def scan() -> None:
        while running():
            nodes = list(view.node_states())  # what scan_once reads before it first waits
            before = annotator._evaluated_generation
            try:
                await annotator.scan_once()
            except Exception as exc:  # the failure under test: recorded, then the run stops
                failures.append(f"verdict scan raised {type(exc).__name__}: {exc}")
                return
            if annotator._evaluated_generation != before:
                scans.append((nodes, dict(annotator._verdicts)))
            await asyncio.sleep(0.002)  # back to back, but not all the time: requests get answered too

    async def schedule(worker: int) -> None:
        for i in range(worker, 10**9, CLIENTS):
            if not running() or next(requests) >= MAX_REQUESTS:
                return
            the_pod = mig_pod(f"asking-{i}", demands[(i * 7) % len(demands)])
            body = orjson.dumps({"Pod": the_pod, "Nodes": None, "NodeNames": sorted(view.nodes)})
            response = await client.post("/filter", data=body)
            answer = await response.json()
            if response.status != 200 or answer.get("Error"):
                failures.append(f"/filter: HTTP {response.status} {answer}")
                return
            passed = answer["NodeNames"] or []
            body = orjson.dumps({"Pod": the_pod, "Nodes": None, "NodeNames": passed})
            response = await client.post("/prioritize", data=body)
            hosts = await response.json()
            if response.status != 200 or [h["Host"] for h in hosts] != passed:
                failures.append(f"/prioritize: HTTP {response.status} {hosts}")
                return

    with caplog.at_level(logging.ERROR):
        await asyncio.gather(churn(), scan(), *(schedule(w) for w in range(CLIENTS)))
    internal = [
        metrics.registry.get_sample_value("mig_extender_bad_requests_total", {"verb": verb, "status": "internal"})
        for verb in ("filter", "prioritize")
    ]
    logged = [f"{r.getMessage()}: {r.exc_info[1]!r}" for r in caplog.records if r.exc_info]
    assert not failures and not any(internal), (failures, internal, logged[:3])
    assert len(service.answers) > 50 and len(scans) > 5  # both sides really ran
    assert len(policy._FITS) <= TINY and policy._FITS.currsize == len(policy._FITS)
    assert len(fit_module._GPU_VECTORS) <= TINY and len(fragmentation._UNUSABLE) <= TINY

    # Fresh answers, one thread, empty caches of the default bounds
    monkeypatch.undo()
    policy._FITS.clear()
    fit_module._GPU_VECTORS.clear()
    wrong: list[tuple[str, object, object]] = []
    for states, demand, got in service.answers:
        if got != expected_filter(states, demand):
            wrong.append((demand.text(), got, expected_filter(states, demand)))
    for nodes, verdicts in scans:
        for (demand, _placement), verdict in verdicts.items():  # the pods here restrict no nodes
            if verdict != (fresh := cluster_verdict(demand, nodes, CONFIG, view.mig_parted)):
                wrong.append((demand.text(), verdict, fresh))
    assert not wrong, (len(wrong), wrong[:3])
