"""The HTTP API with real-shaped kube-scheduler payloads (extender v1 wire types)."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from extender.metrics import Metrics
from extender.server.app import build_app
from extender.server.scheduling import UNKNOWN_NODE, SchedulingService
from extender.settings import Settings
from extender.view.store import ClusterView
from tests.builders import pod
from tests.conftest import DEMO_SNAPSHOT

ClientFactory = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]

ALL_NODES = [
    "a100-balanced",
    "a100-small",
    "h100-balanced",
    "h100-inference",
    "h100-idle-3g",
    "h100-exact",
    "h200-balanced",
    "h200-dynamic",
]


def _app(view: ClusterView, **settings: Any) -> web.Application:
    s = Settings.of(host="127.0.0.1", **settings)
    metrics = Metrics(view)
    return build_app(s, view, metrics, SchedulingService(view, s, metrics))


def _demo_nodes() -> dict[str, dict[str, Any]]:
    items = yaml.safe_load(DEMO_SNAPSHOT.read_text())["items"]
    return {i["metadata"]["name"]: i for i in items if i["kind"] == "Node"}


def args(the_pod: dict[str, Any], names: list[str] | None = None, nodes: list[dict[str, Any]] | None = None) -> bytes:
    return orjson.dumps(
        {"Pod": the_pod, "Nodes": None if nodes is None else {"metadata": {}, "items": nodes}, "NodeNames": names}
    )


def mig_pod(name: str, resource: str, count: int = 1) -> dict[str, Any]:
    return pod(name, limits={f"nvidia.com/mig-{resource}": str(count)}, namespace="ml")


@pytest.fixture
async def client(aiohttp_client: ClientFactory, demo_view: ClusterView) -> TestClient[Any, Any]:
    return await aiohttp_client(_app(demo_view))


@pytest.mark.parametrize(
    ("resource", "passed", "unresolvable", "failed"),
    [
        # free 3g.40gb instances exist on these H100 nodes; A100 and H200 lack the profile
        (
            "3g.40gb",
            {"h100-balanced", "h100-inference", "h100-idle-3g", "h100-exact"},
            {
                "a100-balanced": "MIG: A100-40GB offers no profile 3g.40gb",
                "h200-balanced": "MIG: H200-141GB offers no profile 3g.40gb",
            },
            {},
        ),
        # no 7g instance anywhere; every H100 node has a GPU no pod uses (h100-exact: GPUs 2-3,
        # h100-inference: GPUs 2-7): in re-layout range, reported, not passed
        (
            "7g.80gb",
            set(),
            {
                n: "MIG: 1x 7g.80gb fits only after re-partitioning idle GPUs"
                for n in ("h100-balanced", "h100-inference", "h100-idle-3g", "h100-exact")
            },
            {},
        ),
        # a typo: the same readable message on every node, so kube-scheduler aggregates it
        (
            "3g.41gb",
            set(),
            {
                n: "MIG: unknown profile 3g.41gb (did you mean 3g.40gb, 4g.40gb?)"
                for n in ("h100-balanced", "h100-inference", "h100-idle-3g", "h100-exact")
            },
            {},
        ),
    ],
    ids=["3g-fits", "7g-relayout", "misspelled"],
)
async def test_filter_node_names(
    client: TestClient[Any, Any], resource: str, passed: set[str], unresolvable: dict[str, str], failed: dict[str, str]
) -> None:
    names = [
        n for n in ALL_NODES if n.startswith("h100") or n in unresolvable or n in ("a100-balanced", "h200-balanced")
    ]
    response = await client.post("/filter", data=args(mig_pod("p", resource), names=names))
    assert response.status == 200
    body = await response.json()
    assert set(body) == {"Nodes", "NodeNames", "FailedNodes", "FailedAndUnresolvableNodes", "Error"}
    assert body["Nodes"] is None and body["Error"] == ""
    assert set(body["NodeNames"]) == passed
    assert body["FailedNodes"] == failed
    for name, message in unresolvable.items():
        assert body["FailedAndUnresolvableNodes"][name] == message
    # every candidate is accounted for exactly once
    listed = set(body["NodeNames"]) | set(body["FailedNodes"]) | set(body["FailedAndUnresolvableNodes"])
    assert listed == set(names)


async def test_filter_with_full_node_list_answers_in_nodes(client: TestClient[Any, Any]) -> None:
    nodes = _demo_nodes()
    sent = [nodes["h100-balanced"], nodes["a100-balanced"], nodes["h200-dynamic"]]
    response = await client.post("/filter", data=args(mig_pod("p", "3g.40gb"), nodes=sent))
    body = await response.json()
    assert body["NodeNames"] is None
    assert [n["metadata"]["name"] for n in body["Nodes"]["items"]] == ["h100-balanced"]
    assert body["Nodes"]["items"][0] == nodes["h100-balanced"]  # the object as it was sent
    assert set(body["FailedAndUnresolvableNodes"]) == {"a100-balanced", "h200-dynamic"}


async def test_node_objects_unknown_to_the_view_are_read_from_the_request(client: TestClient[Any, Any]) -> None:
    stranger = copy.deepcopy(_demo_nodes()["h100-idle-3g"])
    stranger["metadata"]["name"] = "new-node"
    body = await (await client.post("/filter", data=args(mig_pod("p", "3g.40gb"), nodes=[stranger]))).json()
    assert [n["metadata"]["name"] for n in body["Nodes"]["items"]] == ["new-node"]


async def test_unknown_node_names_fail_resolvably(client: TestClient[Any, Any]) -> None:
    body = await (
        await client.post("/filter", data=args(mig_pod("p", "1g.10gb"), names=["ghost", "h100-exact"]))
    ).json()
    assert body["NodeNames"] == ["h100-exact"]
    assert body["FailedNodes"] == {"ghost": UNKNOWN_NODE}


async def test_pods_without_mig_demand_pass_untouched(client: TestClient[Any, Any]) -> None:
    the_pod = pod("cpu", requests={"cpu": "1"})
    body = await (await client.post("/filter", data=args(the_pod, names=ALL_NODES))).json()
    assert body["NodeNames"] == ALL_NODES and body["FailedNodes"] == {} and body["FailedAndUnresolvableNodes"] == {}
    scores = await (await client.post("/prioritize", data=args(the_pod, names=ALL_NODES))).json()
    assert scores == [{"Host": n, "Score": 0} for n in ALL_NODES]


async def test_nulls_everywhere_are_accepted(client: TestClient[Any, Any]) -> None:
    the_pod = {
        "metadata": {"name": "p", "namespace": "ml", "uid": None, "annotations": None},
        "spec": {
            "containers": [{"name": "c", "resources": {"limits": None, "requests": None}}],
            "initContainers": None,
        },
        "status": None,
    }
    response = await client.post(
        "/filter", data=orjson.dumps({"Pod": the_pod, "Nodes": None, "NodeNames": ["h100-exact"]})
    )
    assert response.status == 200
    assert (await response.json())["NodeNames"] == ["h100-exact"]


async def test_keys_are_matched_case_insensitively_like_go(client: TestClient[Any, Any]) -> None:
    data = orjson.dumps({"pod": mig_pod("p", "1g.10gb"), "nodenames": ["h100-exact"], "nodes": None})
    body = await (await client.post("/filter", data=data)).json()
    assert body["NodeNames"] == ["h100-exact"]


async def test_prioritize_answers_an_array_of_integer_scores(client: TestClient[Any, Any]) -> None:
    names = ["h100-balanced", "h100-inference", "h100-idle-3g", "h100-exact"]
    response = await client.post("/prioritize", data=args(mig_pod("p", "1g.10gb"), names=names))
    assert response.status == 200
    scores = orjson.loads(await response.read())
    assert [s["Host"] for s in scores] == names
    assert all(type(s["Score"]) is int and 0 <= s["Score"] <= 10 for s in scores)
    by_host = {s["Host"]: s["Score"] for s in scores}
    # packing: a small slice goes to a busy node, never to the idle one (kept for large profiles)
    assert by_host["h100-idle-3g"] == 0
    assert max(by_host.values()) == 10 and by_host["h100-idle-3g"] < by_host["h100-inference"]


@pytest.mark.parametrize(
    ("scoring", "best"),
    [
        # taking a pre-made instance lowers F alike on every node: the tie-break decides
        ("fragmentation", "h100-inference"),  # the busiest node
        ("fragmentation-spread", "h100-balanced"),  # the emptiest node with a free 1g.10gb
    ],
)
async def test_prioritize_scores_with_the_configured_strategy(
    aiohttp_client: ClientFactory, demo_view: ClusterView, scoring: str, best: str
) -> None:
    client = await aiohttp_client(_app(demo_view, scoring=scoring))
    names = ["h100-balanced", "h100-inference", "h100-idle-3g", "h100-exact"]
    response = await client.post("/prioritize", data=args(mig_pod("p", "1g.10gb"), names=names))
    scores = {s["Host"]: s["Score"] for s in orjson.loads(await response.read())}
    assert [host for host, score in scores.items() if score == 10] == [best]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "request body is not valid JSON"),
        (b"", "empty request body"),
        (b"[1, 2]", "must be an ExtenderArgs object, not a JSON list"),
        (b'{"Nodes": null, "NodeNames": ["a"]}', "ExtenderArgs.Pod is missing or not an object"),
        (b'{"Pod": {"spec": {}}, "NodeNames": ["a"]}', "ExtenderArgs.Pod.metadata.name is missing"),
        (b'{"Pod": {"metadata": {"name": "p"}}, "NodeNames": "a"}', "NodeNames must be a list of strings"),
        (b'{"Pod": {"metadata": {"name": "p"}}, "Nodes": {"items": {}}}', "Nodes.items must be a list"),
        (b'{"Pod": {"metadata": {"name": "p"}}, "Nodes": null, "NodeNames": null}', "neither NodeNames nor Nodes"),
        (
            args(
                mig_pod("p", "1g.10gb")
                | {"spec": {"containers": [{"resources": {"limits": {"nvidia.com/mig-1g.10gb": "half"}}}]}},
                names=["a"],
            ),
            "'half' is not a whole number",
        ),
        (b'{"Pod": {"metadata": {"name": "p"}}, "Nodes": {"items": [{"metadata": {}}]}}', "Node without metadata.name"),
        (args(mig_pod("p" * 254, "1g.10gb"), names=["a"]), "metadata.name is longer than 253 characters"),
        (b'{"Pod": {"metadata": {"name": "p", "uid": 7}}, "NodeNames": ["a"]}', "metadata.uid must be a string"),
    ],
    ids=[
        "malformed",
        "empty",
        "array",
        "no-pod",
        "no-name",
        "names-type",
        "items-type",
        "no-nodes",
        "bad-quantity",
        "nameless-node",
        "long-name",
        "uid-type",
    ],
)
@pytest.mark.parametrize("verb", ["filter", "prioritize"])
async def test_bad_requests_get_400_naming_the_problem(
    client: TestClient[Any, Any], verb: str, body: bytes, message: str
) -> None:
    response = await client.post(f"/{verb}", data=body)
    assert response.status == 400
    assert message in (await response.json())["error"]


async def test_bodies_over_the_limit_get_413(aiohttp_client: ClientFactory, demo_view: ClusterView) -> None:
    client = await aiohttp_client(_app(demo_view, max_body_bytes=1000))
    response = await client.post("/filter", data=args(mig_pod("p", "1g.10gb"), names=["x" * 50] * 100))
    assert response.status == 413
    assert "larger than 1000 bytes (setting max_body_bytes)" in (await response.json())["error"]
    # and the server goes on answering
    assert (await client.get("/healthz")).status == 200


def _gpu_node(name: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "resourceVersion": "1",
            "labels": {
                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                "nvidia.com/gpu.count": "8",
                "nvidia.com/mig.config": "all-balanced",
                "kubernetes.io/hostname": name,
            },
        },
        "status": {
            "allocatable": {
                "cpu": "96",
                "nvidia.com/mig-1g.10gb": "16",
                "nvidia.com/mig-2g.20gb": "8",
                "nvidia.com/mig-3g.40gb": "8",
                "pods": "110",
            },
            "images": [{"names": [f"registry.example/image-{i}:v1"], "sizeBytes": 1} for i in range(20)],
        },
    }


async def test_a_5000_node_list_is_answered_within_the_default_limit(client: TestClient[Any, Any]) -> None:
    nodes = [_gpu_node(f"gpu-{i:04d}") for i in range(5000)]
    data = args(mig_pod("p", "3g.40gb"), nodes=nodes)
    assert len(data) > 5_000_000  # far over aiohttp's 1 MiB default
    body = await (await client.post("/filter", data=data)).json()
    assert len(body["Nodes"]["items"]) == 5000
    scores = await (await client.post("/prioritize", data=data)).json()
    assert len(scores) == 5000 and {s["Score"] for s in scores} == {10}


async def test_probes_and_metrics(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["status"] == "ok"
    await client.post("/filter", data=args(mig_pod("p", "3g.40gb"), names=ALL_NODES))
    text = await (await client.get("/metrics")).text()
    assert 'mig_extender_request_duration_seconds_count{verb="filter"} 1.0' in text
    assert 'mig_extender_filter_node_outcomes_total{outcome="Success",verdict="fits-now"}' in text
    assert 'mig_extender_view_objects{kind="nodes"} 8.0' in text


async def test_readiness_fails_before_the_view_synced(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(_app(ClusterView()))
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["reason"] == "nodes not synced yet"


async def test_a_single_feasible_node_is_assumed_until_the_binding_is_seen(
    client: TestClient[Any, Any], demo_view: ClusterView
) -> None:
    # h100-exact has 2 free 3g.40gb instances (GPUs 2 and 3); a100/h200 lack the profile.
    names = ["h100-exact", "a100-balanced"]
    first = await (await client.post("/filter", data=args(mig_pod("a", "3g.40gb", 2), names=names))).json()
    assert first["NodeNames"] == ["h100-exact"]
    # kube-scheduler binds a lone feasible node without prioritize; until the watch shows it, it is assumed
    second = await (await client.post("/filter", data=args(mig_pod("b", "3g.40gb"), names=names))).json()
    assert second["NodeNames"] == []
    assert second["FailedNodes"] == {"h100-exact": "MIG: not enough free instances for 1x 3g.40gb"}
    # the first pod is tried again (its binding failed): its own assumption no longer counts
    again = await (await client.post("/filter", data=args(mig_pod("a", "3g.40gb", 2), names=names))).json()
    assert again["NodeNames"] == ["h100-exact"]
