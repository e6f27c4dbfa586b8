"""The bind verb: the pod counts on the node kube-scheduler chose, whatever prioritize assumed, before the Binding.

kube-scheduler adds its own plugins' scores to the extender's and may bind elsewhere than the extender's
best-scored node. Two H100 nodes with two 3g.40gb instances each: ``gpu-a`` holds one pod, ``gpu-b`` is idle,
so prioritize ranks ``gpu-a`` first for a 3g.40gb pod (packing) and assumes it there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from extender.kube.errors import ApiError, Conflict, NotFound
from extender.metrics import Metrics
from extender.server.app import Gate, build_app
from extender.server.scheduling import SchedulingService
from extender.server.wire import BindingArgs
from extender.settings import Settings
from extender.view.store import ClusterView, Kind
from tests.builders import pod
from tests.server.test_dra_scheduling import claim, claim_pod, filter_, prioritize, profile, request, service

ClientFactory = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]
MIG_3G = "nvidia.com/mig-3g.40gb"
NODES = ["gpu-a", "gpu-b"]


def h100(name: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "resourceVersion": "1",
            "labels": {
                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                "nvidia.com/gpu.count": "1",
                "nvidia.com/mig.config": "all-3g.40gb",
                "nvidia.com/mig.config.state": "success",
            },
        },
        "status": {"allocatable": {MIG_3G: "2"}},
    }


class Binder:
    """The API server's side of ``pods/binding``: records each binding, or raises what it is told to."""

    def __init__(self) -> None:
        self.bound: list[tuple[str, str, str, str]] = []
        self.error: Exception | None = None

    async def bind_pod(self, namespace: str, name: str, uid: str, node: str) -> None:
        if self.error is not None:
            raise self.error
        self.bound.append((namespace, name, uid, node))


def mig_pod(name: str, count: int = 1) -> dict[str, Any]:
    return pod(name, limits={MIG_3G: str(count)}, namespace="ml")


def view() -> ClusterView:
    cluster = ClusterView()
    cluster.replace(Kind.NODES, [h100(name) for name in NODES])
    cluster.replace(Kind.PODS, [{**mig_pod("held"), "spec": {**mig_pod("held")["spec"], "nodeName": "gpu-a"}}])
    for kind in Kind:
        if not cluster.sync[kind].synced:
            cluster.replace(kind, [])
    return cluster


@pytest.fixture
def binder() -> Binder:
    return Binder()


@pytest.fixture
def cluster() -> ClusterView:
    return view()


@pytest.fixture
async def client(aiohttp_client: ClientFactory, binder: Binder, cluster: ClusterView) -> TestClient[Any, Any]:
    settings = Settings.of(host="127.0.0.1", scoring="packing")
    metrics = Metrics(cluster)
    return await aiohttp_client(
        build_app(settings, cluster, metrics, SchedulingService(cluster, settings, metrics), binder=binder)
    )


def extender_args(the_pod: dict[str, Any], names: list[str]) -> bytes:
    return orjson.dumps({"Pod": the_pod, "NodeNames": names, "Nodes": None})


def binding(name: str, node: str) -> bytes:
    return orjson.dumps({"PodName": name, "PodNamespace": "ml", "PodUID": f"uid-{name}", "Node": node})


async def passing(client: TestClient[Any, Any], the_pod: dict[str, Any]) -> list[str]:
    answer = await (await client.post("/filter", data=extender_args(the_pod, NODES))).json()
    return list(answer["NodeNames"])


async def schedule(client: TestClient[Any, Any], name: str) -> str:
    """filter and prioritize for a 3g.40gb pod, as kube-scheduler calls them; the extender's best node."""
    the_pod = mig_pod(name)
    names = await passing(client, the_pod)
    assert names == NODES
    scores = await (await client.post("/prioritize", data=extender_args(the_pod, names))).json()
    return str(max(scores, key=lambda s: s["Score"])["Host"])


async def test_a_pod_bound_elsewhere_than_the_best_node_counts_where_it_was_bound(
    client: TestClient[Any, Any], binder: Binder
) -> None:
    assert await schedule(client, "first") == "gpu-a"  # packing: the busy node
    # kube-scheduler's own scores outvote the extender: it binds the pod to the idle node
    answer = await (await client.post("/bind", data=binding("first", "gpu-b"))).json()
    assert answer == {"Error": ""}
    assert binder.bound == [("ml", "first", "uid-first", "gpu-b")]
    # gpu-a keeps its free 3g.40gb (no longer counted for "first"), gpu-b has one left, not two
    assert await passing(client, mig_pod("next")) == NODES
    assert await passing(client, mig_pod("pair", 2)) == []
    text = await (await client.get("/metrics")).text()
    assert 'mig_extender_binds_total{outcome="moved"} 1.0' in text


async def test_a_pod_bound_where_it_was_assumed_stays_assumed_there(
    client: TestClient[Any, Any], binder: Binder
) -> None:
    best = await schedule(client, "first")
    assert (await (await client.post("/bind", data=binding("first", best))).json()) == {"Error": ""}
    assert await passing(client, mig_pod("next")) == ["gpu-b"]  # gpu-a is full
    text = await (await client.get("/metrics")).text()
    assert 'mig_extender_binds_total{outcome="as-assumed"} 1.0' in text


@pytest.mark.parametrize(
    ("error", "counted"),
    [
        # refused for good: the pod is not on gpu-b, whose two 3g.40gb are free again
        (Conflict(409, 'pod "first" is already assigned to node "gpu-a"'), False),
        (NotFound(404, 'pods "first" not found'), False),
        (ApiError(403, "forbidden"), False),
        # it may have been done: the pod keeps counting on gpu-b until the watch says
        (ApiError(500, "etcdserver: request timed out"), True),
        (TimeoutError(), True),
        (OSError("connection reset by peer"), True),
    ],
)
async def test_a_binding_the_api_server_refuses_is_an_error_and_frees_the_node_when_it_is_definitive(
    client: TestClient[Any, Any], binder: Binder, error: Exception, counted: bool
) -> None:
    await schedule(client, "first")
    binder.error = error
    answer = await (await client.post("/bind", data=binding("first", "gpu-b"))).json()
    assert answer["Error"].startswith("binding pod ml/first to node gpu-b: ")
    assert await passing(client, mig_pod("pair", 2)) == ([] if counted else ["gpu-b"])
    text = await (await client.get("/metrics")).text()
    assert 'mig_extender_binds_total{outcome="failed"} 1.0' in text


async def test_a_pod_the_replica_never_answered_is_bound_and_counted_from_the_view(
    client: TestClient[Any, Any], binder: Binder, cluster: ClusterView
) -> None:
    # Another replica answered filter and prioritize; this one knows the pending pod from its watch.
    cluster.apply(Kind.PODS, "ADDED", mig_pod("elsewhere", 2))
    assert (await (await client.post("/bind", data=binding("elsewhere", "gpu-b"))).json()) == {"Error": ""}
    assert await passing(client, mig_pod("next")) == ["gpu-a"]
    text = await (await client.get("/metrics")).text()
    assert 'mig_extender_binds_total{outcome="unassumed"} 1.0' in text


async def test_a_pod_is_not_bound_where_a_pod_answered_since_took_its_slices(
    client: TestClient[Any, Any], binder: Binder
) -> None:
    assert await schedule(client, "first") == "gpu-a"
    # the next pod asks for both 3g.40gb of gpu-b, the only node where they are free: it is counted there
    assert await passing(client, mig_pod("pair", 2)) == ["gpu-b"]
    answer = await (await client.post("/bind", data=binding("first", "gpu-b"))).json()
    assert answer["Error"].startswith("MIG: not enough free instances for 1x 3g.40gb on node gpu-b")
    assert binder.bound == []
    text = await (await client.get("/metrics")).text()
    assert 'mig_extender_binds_total{outcome="refused"} 1.0' in text


async def test_a_pod_the_extender_never_answered_nor_sees_is_not_bound(
    client: TestClient[Any, Any], binder: Binder
) -> None:
    answer = await (await client.post("/bind", data=binding("ghost", "gpu-a"))).json()
    assert answer["Error"].startswith("mig-extender binds only pods it answered or holds pending in its view")
    assert binder.bound == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty request body: expected ExtenderBindingArgs JSON"),
        (b"[]", "request body must be an ExtenderBindingArgs object, not a JSON list"),
        (b'{"PodName": "p", "PodNamespace": "ml", "PodUID": "u"}', "ExtenderBindingArgs.Node must be a non-empty"),
        (b'{"PodName": 1, "PodNamespace": "ml", "Node": "n"}', "ExtenderBindingArgs.PodName must be a non-empty"),
        (
            orjson.dumps({"PodName": "p" * 254, "PodNamespace": "ml", "Node": "n"}),
            "ExtenderBindingArgs.PodName is longer than 253 characters",
        ),
    ],
)
async def test_a_malformed_binding_is_a_400_naming_the_problem(
    client: TestClient[Any, Any], binder: Binder, body: bytes, message: str
) -> None:
    response = await client.post("/bind", data=body)
    assert response.status == 400
    assert (await response.json())["error"].startswith(message)
    assert binder.bound == []


async def test_keys_are_matched_case_insensitively_and_a_missing_uid_binds_without_the_precondition(
    client: TestClient[Any, Any], binder: Binder
) -> None:
    the_pod = mig_pod("p")
    del the_pod["metadata"]["uid"]
    await passing(client, the_pod)
    body = orjson.dumps({"podname": "p", "podNamespace": "ml", "PodUID": None, "node": "gpu-b"})
    assert (await (await client.post("/bind", data=body)).json()) == {"Error": ""}
    assert binder.bound == [("ml", "p", "", "gpu-b")]


async def test_without_an_api_server_a_binding_is_an_error(aiohttp_client: ClientFactory) -> None:
    settings = Settings.of(host="127.0.0.1")
    cluster = view()
    metrics = Metrics(cluster)
    client = await aiohttp_client(build_app(settings, cluster, metrics, SchedulingService(cluster, settings, metrics)))
    answer = await (await client.post("/bind", data=binding("p", "gpu-a"))).json()
    assert "serves a snapshot" in answer["Error"]


async def test_a_replica_that_does_not_serve_refuses_every_verb(aiohttp_client: ClientFactory) -> None:
    settings = Settings.of(host="127.0.0.1")
    cluster = view()
    metrics = Metrics(cluster)
    binder = Binder()
    gate = Gate(lambda: False, who="mig-extender-1")
    service = SchedulingService(cluster, settings, metrics)
    client = await aiohttp_client(build_app(settings, cluster, metrics, service, binder=binder, gate=gate))
    the_pod = mig_pod("p")
    filtered = await (await client.post("/filter", data=extender_args(the_pod, NODES))).json()
    assert filtered["NodeNames"] is None and "mig-extender-1 does not hold the Lease" in filtered["Error"]
    scores = await (await client.post("/prioritize", data=extender_args(the_pod, NODES))).json()
    assert scores == [{"Host": "gpu-a", "Score": 0}, {"Host": "gpu-b", "Score": 0}]
    bound = await (await client.post("/bind", data=binding("p", "gpu-b"))).json()
    assert "does not hold the Lease" in bound["Error"] and binder.bound == []
    assert cluster.assumed_node("uid-p") is None  # a refusal assumes nothing
    text = await (await client.get("/metrics")).text()
    for verb in ("filter", "prioritize", "bind"):
        assert f'mig_extender_standby_refusals_total{{verb="{verb}"}} 1.0' in text


def test_a_claim_pod_bound_elsewhere_has_its_devices_assumed_on_the_chosen_node() -> None:
    scheduling = service(claim("one", request("mig", profile("1g.10gb"))))
    one = claim_pod("p-one", claims={"mig": "one"})
    scores = prioritize(scheduling, one, filter_(scheduling, one)["NodeNames"])
    best = max(scores, key=lambda n: scores[n])
    chosen = min(scores, key=lambda n: scores[n])
    assert chosen != best
    view = scheduling.view
    best_in_use = view.dra_in_use(best)
    scheduling.bind(BindingArgs("p-one", "ml", "uid-p-one", chosen))
    assumed = view.assumed_devices("uid-p-one")
    assert assumed is not None and assumed[0] == chosen
    (devices,) = assumed[1].values()
    assert devices <= view.dra_in_use(chosen)
    assert not devices & view.dra_in_use(best) and view.dra_in_use(best) < best_in_use


async def test_a_filter_waits_for_the_bind_of_the_pod_prioritize_just_placed(
    client: TestClient[Any, Any], binder: Binder
) -> None:
    # kube-scheduler sends the bind of "first" from its binding cycle while it filters the next pod: a filter
    # that came first would count "first" on gpu-a, where prioritize assumed it, and gpu-b as idle.
    assert await schedule(client, "first") == "gpu-a"

    async def bind_soon() -> None:
        await asyncio.sleep(0.02)
        assert (await (await client.post("/bind", data=binding("first", "gpu-b"))).json()) == {"Error": ""}

    answer, _ = await asyncio.gather(client.post("/filter", data=extender_args(mig_pod("pair", 2), NODES)), bind_soon())
    assert (await answer.json())["NodeNames"] == []  # gpu-b has one 3g.40gb left, not two
    text = await (await client.get("/metrics")).text()
    assert 'mig_extender_bind_waits_total{outcome="bound"} 1.0' in text


async def test_a_bind_that_does_not_come_holds_a_filter_back_bind_wait_s_once_and_three_stop_the_waits(
    client: TestClient[Any, Any], binder: Binder, cluster: ClusterView
) -> None:
    for attempt in range(4):
        await schedule(client, f"lost-{attempt}")  # prioritize placed it; its bind never comes: it is deleted
        cluster.apply(Kind.PODS, "DELETED", mig_pod(f"lost-{attempt}"))
        started = time.monotonic()
        await passing(client, mig_pod(f"next-{attempt}"))
        waited = time.monotonic() - started
        # bind_wait_s (0.1 s) for the first three; then kube-scheduler is taken to bind without the extender
        assert (0.09 < waited < 1.0) if attempt < 3 else waited < 0.09, (attempt, waited)
    text = await (await client.get("/metrics")).text()
    assert 'mig_extender_bind_waits_total{outcome="timed-out"} 3.0' in text
    # a bind comes: waits are worth it again
    await client.post("/bind", data=binding("lost-3", "gpu-b"))
    await schedule(client, "again")
    started = time.monotonic()
    await passing(client, mig_pod("after"))
    assert time.monotonic() - started > 0.09


async def test_bind_wait_s_0_never_waits(aiohttp_client: ClientFactory, cluster: ClusterView) -> None:
    settings = Settings.of(host="127.0.0.1", scoring="packing", bind_wait_s=0)
    metrics = Metrics(cluster)
    service = SchedulingService(cluster, settings, metrics)
    client = await aiohttp_client(build_app(settings, cluster, metrics, service, binder=Binder()))
    await schedule(client, "first")
    started = time.monotonic()
    await passing(client, mig_pod("next"))
    assert time.monotonic() - started < 0.09
