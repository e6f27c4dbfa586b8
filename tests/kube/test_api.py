"""KubeApi and the raw requests against a small fake API server on 127.0.0.1, through a real ApiClient."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp import web
from kubernetes_asyncio import client

from extender.kube.api import KubeApi
from extender.kube.client import make_api_client, node_collection
from extender.kube.errors import ApiError, ConfigError, Conflict, Gone, NotFound, error_for
from extender.kube.events import REPORTING_CONTROLLER, node_reference, pod_reference


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any


class FakeApiServer:
    """Answers every request with the next scripted (status, body) for its path, and records it."""

    def __init__(self) -> None:
        self.answers: dict[str, list[tuple[int, Any]]] = {}
        self.seen: list[Seen] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.serve)

    def script(self, path: str, status: int, body: Any) -> None:
        self.answers.setdefault(path, []).append((status, body))

    async def serve(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.path,
                dict(request.query),
                request.content_type,
                orjson.loads(raw) if raw else None,
            )
        )
        status, body = (self.answers.get(request.path) or [(200, {})]).pop(0)
        return web.json_response(body, status=status)


@pytest.fixture
async def fake(aiohttp_server: Any) -> AsyncIterator[tuple[FakeApiServer, client.ApiClient]]:
    server = FakeApiServer()
    running = await aiohttp_server(server.app, host="127.0.0.1")
    configuration = client.Configuration()
    configuration.host = str(running.make_url("")).rstrip("/")
    api = client.ApiClient(configuration)
    try:
        yield server, api
    finally:
        await api.close()


def status_body(code: int, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code}


def test_statuses_name_the_error_class() -> None:
    assert type(error_for(404, "x")) is NotFound and type(error_for(409, "x")) is Conflict
    assert type(error_for(410, "x")) is Gone and type(error_for(500, "x")) is ApiError
    assert all(issubclass(c, ApiError) for c in (NotFound, Conflict, Gone))
    assert str(error_for(429, "slow down")) == "HTTP 429: slow down" and error_for(429, "").status == 429


async def test_post_event_sends_one_events_v1_body(fake: tuple[FakeApiServer, client.ApiClient]) -> None:
    server, api = fake
    kube = KubeApi(api)
    await kube.post_event(
        pod_reference("team-a", "train", "u1"), "MigNoLayoutFits", "Warning", "n" * 3000, "Scheduling"
    )
    await kube.post_event(node_reference("gpu-a"), "MigRelayoutStarted", "Normal", "re-layout", "Relayout")
    pod_event, node_event = server.seen
    assert (pod_event.method, pod_event.path) == ("POST", "/apis/events.k8s.io/v1/namespaces/team-a/events")
    assert node_event.path == "/apis/events.k8s.io/v1/namespaces/default/events"
    assert pod_event.body["reportingController"] == node_event.body["reportingController"] == REPORTING_CONTROLLER
    assert len(pod_event.body["note"].encode()) <= 1024 and node_event.body["action"] == "Relayout"
    assert pod_event.body["reportingInstance"] == kube.instance[:128]


async def test_patches_are_rfc7386_merge_patches(fake: tuple[FakeApiServer, client.ApiClient]) -> None:
    server, api = fake
    kube = KubeApi(api)
    await kube.patch_pod("team-a", "train", {"metadata": {"annotations": {"mig-extender.io/verdict": None}}})
    await kube.patch_node("gpu-a", {"metadata": {"labels": {"x": "y"}}})
    await kube.patch_pod_status("team-a", "train", {"status": {}})
    assert [s.content_type for s in server.seen] == ["application/merge-patch+json"] * 3
    assert server.seen[0].body == {"metadata": {"annotations": {"mig-extender.io/verdict": None}}}
    assert [s.path for s in server.seen] == [
        "/api/v1/namespaces/team-a/pods/train",
        "/api/v1/nodes/gpu-a",
        "/api/v1/namespaces/team-a/pods/train/status",
    ]


async def test_not_found_and_conflict_answers(fake: tuple[FakeApiServer, client.ApiClient]) -> None:
    server, api = fake
    kube = KubeApi(api)
    server.script("/api/v1/namespaces/gpu-operator/configmaps/mig", 404, status_body(404, "not found"))
    server.script(
        "/api/v1/namespaces/gpu-operator/configmaps/mig", 409, status_body(409, "the object has been modified")
    )
    server.script("/apis/karpenter.sh/v1/nodeclaims", 404, status_body(404, "no such resource"))
    server.script("/api/v1/namespaces/team-a/pods/gone", 404, status_body(404, "not found"))
    server.script("/api/v1/nodes/gpu-a", 500, status_body(500, "etcd is down"))
    assert await kube.get_config_map("gpu-operator", "mig") is None
    with pytest.raises(Conflict, match=r"update configmap gpu-operator/mig: .*has been modified"):
        await kube.replace_config_map("gpu-operator", "mig", {"data": {}})
    assert await kube.list_node_claims() == []
    await kube.delete_pod("team-a", "gone")  # gone already is fine
    with pytest.raises(ApiError) as failure:
        await kube.get_node("gpu-a")
    assert failure.value.status == 500 and type(failure.value) is ApiError


async def test_a_collection_lists_in_pages_and_watches_with_bookmarks(
    fake: tuple[FakeApiServer, client.ApiClient],
) -> None:
    server, api = fake
    nodes = node_collection(api)
    (await nodes.list_page(500, "token-1", 60.0)).release()
    (await nodes.watch("42", 300, 90.0)).release()
    server.script("/api/v1/nodes", 410, status_body(410, "too old resource version"))
    with pytest.raises(Gone, match="list nodes"):
        await nodes.list_page(500, None, 60.0)
    listed, watched, _ = server.seen
    assert listed.query == {"limit": "500", "continue": "token-1"}
    assert watched.query["watch"].lower() == watched.query["allowWatchBookmarks"].lower() == "true"
    assert watched.query["resourceVersion"] == "42" and watched.query["timeoutSeconds"] == "300"


async def test_outside_a_pod_without_a_kubeconfig_says_what_to_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    with pytest.raises(ConfigError, match=r"not in a pod.*--kubeconfig or --snapshot"):
        await make_api_client(None)
