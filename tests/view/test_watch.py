"""List+watch against a scripted fake API server, through a real kubernetes-asyncio ApiClient.

The fake serves the three collections the extender watches (nodes, pods, one namespace's configmaps) on
127.0.0.1. Each test queues what the next list and watch requests get: a list at some resourceVersion, an
error status, or a watch stream of newline-delimited events that then closes, hangs or breaks. Gates
pause a stream (or a list) until the test has looked at the view. Every request is recorded with its
query, so the tests check what the reflector asked for, not only what it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from kubernetes_asyncio import client

from extender.kube.retry import Backoff
from extender.model.catalog import model_named
from extender.model.dra.driver import DRIVER, dynamic_mig_slices
from extender.view import watch as watch_module
from extender.view.store import ClusterView, ConfigMapRef, Kind
from extender.view.watch import Reflector, reflectors
from tests.builders import pod
from tests.support import Clock

TOKEN = "test-token"
MIG_1G = "nvidia.com/mig-1g.5gb"
TEST_TIMEOUT_S = 15
CONFIG_OK = "version: v1\nmig-configs:\n  {name}:\n    - devices: all\n      mig-enabled: false\n"
DRA_RESOURCES = {
    "resourceslices": ("ResourceSlice", Kind.RESOURCE_SLICES),
    "resourceclaims": ("ResourceClaim", Kind.RESOURCE_CLAIMS),
    "resourceclaimtemplates": ("ResourceClaimTemplate", Kind.CLAIM_TEMPLATES),
    "deviceclasses": ("DeviceClass", Kind.DEVICE_CLASSES),
}

# --- the fake API server ------------------------------------------------------------------------------


class Gate:
    """A point where the fake server waits (mid-stream, or before answering a list) until the test opens it."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.opened = asyncio.Event()

    async def pass_through(self) -> None:
        self.reached.set()
        await self.opened.wait()

    def open(self) -> None:
        self.opened.set()


@dataclass
class Pause:
    seconds: float


@dataclass
class Reply:
    """A plain answer: a list of ``items`` at ``rv``, or an error ``status``."""

    items: list[dict[str, Any]] = field(default_factory=list)
    rv: str | None = "1"
    """None: a list without metadata.resourceVersion (a broken proxy), which no watch can continue from."""
    status: int = 200
    gate: Gate | None = None
    raw: bytes | None = None
    """A body sent as is, instead of the list."""


@dataclass
class Stream:
    """A watch stream: events (dicts), raw bytes, gates and pauses, in order; then ``end``.

    ``close`` ends the chunked body cleanly, ``hang`` keeps the connection open and silent until the
    request's ``timeoutSeconds`` (or the test ends), ``abort`` drops the connection mid-body.
    """

    events: list[Any] = field(default_factory=list)
    end: str = "close"


@dataclass
class Seen:
    resource: str
    namespace: str | None
    watch: bool
    query: dict[str, str]
    at: float


def status_body(code: int, message: str) -> dict[str, Any]:
    reasons = {410: "Expired", 500: "InternalError", 503: "ServiceUnavailable", 401: "Unauthorized"}
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reasons.get(code, "Unknown"),
        "code": code,
    }


class FakeApiServer:
    def __init__(self) -> None:
        self.lists: dict[str, deque[Reply]] = defaultdict(deque)
        self.watches: dict[str, deque[Reply | Stream]] = defaultdict(deque)
        self.seen: list[Seen] = []
        self.gates: list[Gate] = []
        self.released = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/api/v1/nodes", self.nodes)
        self.app.router.add_get("/api/v1/pods", self.pods)
        self.app.router.add_get("/api/v1/namespaces/{namespace}/configmaps", self.configmaps)
        for resource in DRA_RESOURCES:
            self.app.router.add_get(f"/apis/resource.k8s.io/v1/{resource}", self.dra)

    def gate(self) -> Gate:
        gate = Gate()
        self.gates.append(gate)
        return gate

    def requests(self, resource: str, *, watch: bool) -> list[Seen]:
        return [s for s in self.seen if s.resource == resource and s.watch is watch]

    async def nodes(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, "nodes", None)

    async def pods(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, "pods", None)

    async def configmaps(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, "configmaps", request.match_info["namespace"])

    async def dra(self, request: web.Request) -> web.StreamResponse:
        return await self.serve(request, request.path.rsplit("/", 1)[1], None)

    async def serve(self, request: web.Request, resource: str, namespace: str | None) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response(status_body(401, "no bearer token"), status=401)
        query = dict(request.query)
        watching = query.get("watch", "").lower() == "true"
        self.seen.append(Seen(resource, namespace, watching, query, asyncio.get_running_loop().time()))
        queue = self.watches[resource] if watching else self.lists[resource]
        if not queue:  # unscripted: hold the request like a quiet server would
            return await self.stream(request, Stream(end="hang"), query, namespace)
        step = queue.popleft()
        if isinstance(step, Stream):
            return await self.stream(request, step, query, namespace)
        if step.gate is not None:
            await step.gate.pass_through()
        if step.status != 200:
            return web.json_response(status_body(step.status, "scripted failure"), status=step.status)
        if step.raw is not None:
            return web.Response(body=step.raw, content_type="application/json")
        items = [self.strip(i) for i in step.items if self.selected(i, query, namespace)]
        kind = resource[:-1].capitalize() + "List" if resource != "configmaps" else "ConfigMapList"
        metadata = {} if step.rv is None else {"resourceVersion": step.rv}
        # Paging as the API server does it: limit, and a continue token for the rest of the same list.
        offset = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0) or len(items)
        if offset + limit < len(items):
            metadata["continue"] = str(offset + limit)
            queue.appendleft(step)
        items = items[offset : offset + limit]
        body = {"kind": kind, "apiVersion": "v1", "metadata": metadata, "items": items}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    @staticmethod
    def strip(item: dict[str, Any]) -> dict[str, Any]:
        """List items carry no kind/apiVersion, as from a real API server."""
        return {k: v for k, v in item.items() if k not in ("kind", "apiVersion")}

    @staticmethod
    def selected(obj: dict[str, Any], query: dict[str, str], namespace: str | None) -> bool:
        metadata = obj.get("metadata") or {}
        if namespace is not None and metadata.get("namespace") != namespace:
            return False
        selector = query.get("fieldSelector")
        if selector:
            name, _, value = selector.partition("=")
            assert name == "metadata.name", f"the fake supports metadata.name selectors only, not {selector!r}"
            return bool(metadata.get("name") == value)
        return True

    async def stream(
        self, request: web.Request, stream: Stream, query: dict[str, str], namespace: str | None
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        bookmarks = query.get("allowWatchBookmarks", "").lower() == "true"
        for item in stream.events:
            if isinstance(item, Gate):
                await item.pass_through()
            elif isinstance(item, Pause):
                await asyncio.sleep(item.seconds)
            elif isinstance(item, bytes):
                await response.write(item)
            else:
                if item["type"] == "BOOKMARK" and not bookmarks:
                    continue
                if item["type"] in ("ADDED", "MODIFIED", "DELETED") and not self.selected(
                    item["object"], query, namespace
                ):
                    continue
                await response.write(orjson.dumps(item) + b"\n")
        if stream.end == "hang":
            timeout = float(query.get("timeoutSeconds", "3600"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.released.wait(), timeout)
            if request.transport is None or request.transport.is_closing():
                return response  # the client left (test teardown)
        elif stream.end == "abort":
            assert request.transport is not None
            request.transport.abort()
            return response
        await response.write_eof()
        return response


# --- objects and events ---------------------------------------------------------------------------------


def gpu_node(name: str, rv: str = "1", **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "resourceVersion": rv,
            "labels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB", "nvidia.com/gpu.count": "1"},
            "annotations": annotations,
        },
        "status": {"allocatable": {MIG_1G: "7"}},
    }


def config_map(name: str, namespace: str, text: str, rv: str = "1") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv},
        "data": {"config.yaml": text},
    }


def event(kind: str, obj: dict[str, Any], rv: str | None = None) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    if rv is not None:
        obj["metadata"]["resourceVersion"] = rv
    return {"type": kind, "object": obj}


def bookmark(rv: str, kind: str = "Node") -> dict[str, Any]:
    return {"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": rv}}}


def expired(message: str = "too old resource version: 10 (25)") -> dict[str, Any]:
    return {"type": "ERROR", "object": status_body(410, message)}


def used(view: ClusterView, name: str) -> int:
    state = view.node_state(name)
    assert state is not None, f"node {name} not in the view"
    return sum(i.used for g in state.gpus for i in g.instances)


class RecordingObserver:
    def __init__(self) -> None:
        self.restarts: list[tuple[Kind, str]] = []
        self.relists: list[Kind] = []

    def restarted(self, kind: Kind, reason: str) -> None:
        self.restarts.append((kind, reason))

    def relisted(self, kind: Kind) -> None:
        self.relists.append(kind)


async def caught_up(gate: Gate, reflector: Reflector, rv: str) -> None:
    """The server reached ``gate`` and the reflector has handled every event before it (the last at ``rv``)."""
    await gate.reached.wait()
    await wait_until(lambda: reflector.resource_version == rv, f"the reflector handled the events up to {rv}")


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out waiting until {what}") from None


# --- the harness ------------------------------------------------------------------------------------


class Harness:
    def __init__(self, fake: FakeApiServer, api: client.ApiClient, clock: Clock) -> None:
        self.fake = fake
        self.api = api
        self.clock = clock
        self.observer = RecordingObserver()
        self.backoffs: list[float] = []
        """The backoff delay (before jitter) of every failure, in order."""
        self.tasks: list[asyncio.Task[None]] = []
        self.view = ClusterView(clock=clock)

    def reflectors(self, *, read_timeout_s: float = 5.0, timeout_s: int = 300) -> dict[Kind, Reflector]:
        built = reflectors(
            self.view, self.api, timeout_s=timeout_s, read_timeout_s=read_timeout_s, observer=self.observer
        )
        return {r.kind: r for r in built}

    def start(self, *kinds: Kind, read_timeout_s: float = 5.0, timeout_s: int = 300) -> dict[Kind, Reflector]:
        built = self.reflectors(read_timeout_s=read_timeout_s, timeout_s=timeout_s)
        for kind in kinds:
            self.tasks.append(asyncio.create_task(built[kind].run(), name=f"reflector {kind}"))
        return built

    def assert_running(self) -> None:
        for task in self.tasks:
            if task.done():
                error = None if task.cancelled() else task.exception()
                raise AssertionError(f"{task.get_name()} ended: {error!r}")

    async def stop(self) -> None:
        self.assert_running()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
async def harness(aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    fake = FakeApiServer()
    server = await aiohttp_server(fake.app, host="127.0.0.1")
    configuration = client.Configuration()
    configuration.host = str(server.make_url("")).rstrip("/")
    configuration.verify_ssl = False
    configuration.api_key = {"BearerToken": TOKEN}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    api = client.ApiClient(configuration)
    h = Harness(fake, api, Clock())

    class FastBackoff(Backoff):
        """The real doubling and cap, in milliseconds instead of seconds; records each delay."""

        def __init__(self) -> None:
            super().__init__(initial=0.01, cap=0.04)

        async def wait(self) -> None:
            await super().wait()
            h.backoffs.append(self._current)

    monkeypatch.setattr(watch_module, "Backoff", FastBackoff)
    try:
        yield h
    finally:
        for task in h.tasks:
            task.cancel()
        for task in h.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):  # the test reported what matters
                await task
        fake.released.set()
        for gate in fake.gates:
            gate.open()
        await api.close()


# --- 1. list, watch, events, bookmarks ------------------------------------------------------------------


async def test_list_fills_the_view_and_the_watch_starts_from_its_resource_version(harness: Harness) -> None:
    fake, view, clock = harness.fake, harness.view, harness.clock
    before_bookmark = fake.gate()
    fake.lists["nodes"].append(Reply([gpu_node("a", "3"), gpu_node("b", "4")], rv="10"))
    fake.watches["nodes"].append(
        Stream(
            [
                event("ADDED", gpu_node("c"), rv="11"),
                event("MODIFIED", gpu_node("a"), rv="12"),
                event("DELETED", gpu_node("b"), rv="13"),
                before_bookmark,
                bookmark("20"),
            ]
        )
    )
    async with asyncio.timeout(TEST_TIMEOUT_S):
        assert not view.sync[Kind.NODES].synced
        nodes = harness.start(Kind.NODES)[Kind.NODES]
        await caught_up(before_bookmark, nodes, "13")

        assert view.sync[Kind.NODES].synced and view.sync[Kind.NODES].relists == 1
        assert set(view.nodes) == {"a", "c"}
        assert view.nodes["a"].resource_version == "12"
        assert used(view, "c") == 0 and view.node_state("b") is None

        [listed] = fake.requests("nodes", watch=False)
        assert "watch" not in listed.query and "resourceVersion" not in listed.query
        [first] = fake.requests("nodes", watch=True)
        assert first.query["resourceVersion"] == "10"
        assert first.query["allowWatchBookmarks"].lower() == "true"
        assert 300 <= int(first.query["timeoutSeconds"]) <= 600  # randomised per watch, as client-go does

        clock.now += 45  # only the bookmark can move last_ok now
        before_bookmark.open()
        await wait_until(lambda: len(fake.requests("nodes", watch=True)) == 2, "the next watch")
        second = fake.requests("nodes", watch=True)[1]
        assert second.query["resourceVersion"] == "20"
        assert view.sync[Kind.NODES].last_ok == clock.now
        assert set(view.nodes) == {"a", "c"}
        assert len(fake.requests("nodes", watch=False)) == 1
        assert harness.observer.relists == [Kind.NODES] and harness.observer.restarts == []
        assert harness.backoffs == []
        await harness.stop()


# --- 2. 410 Gone -> re-list that replaces the store ---------------------------------------------------


@pytest.mark.parametrize("how", ["error event", "http status"])
async def test_gone_relists_and_the_relist_replaces_the_store(harness: Harness, how: str) -> None:
    fake, view = harness.fake, harness.view
    fake.lists["nodes"].append(Reply([gpu_node("a"), gpu_node("b")], rv="10"))
    if how == "error event":
        fake.watches["nodes"].append(Stream([event("ADDED", gpu_node("c"), rv="11"), expired()]))
    else:  # the stream ends; resuming from 11 is refused: compacted meanwhile
        fake.watches["nodes"].extend([Stream([event("ADDED", gpu_node("c"), rv="11")]), Reply(status=410)])
    relist_gate = fake.gate()
    fake.lists["nodes"].append(Reply([gpu_node("b", "28"), gpu_node("d", "29")], rv="30", gate=relist_gate))
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.NODES)
        await relist_gate.reached.wait()
        assert set(view.nodes) == {"a", "b", "c"}
        relist_gate.open()
        watches = 2 if how == "error event" else 3
        await wait_until(lambda: len(fake.requests("nodes", watch=True)) == watches, "the watch after the re-list")

        assert set(view.nodes) == {"b", "d"}, "the re-list must drop objects deleted while the watch was down"
        assert view.node_state("a") is None and view.nodes["b"].resource_version == "28"
        versions = [s.query["resourceVersion"] for s in fake.requests("nodes", watch=True)]
        assert versions == (["10", "30"] if how == "error event" else ["10", "11", "30"])
        assert len(fake.requests("nodes", watch=False)) == 2
        assert harness.observer.restarts == [(Kind.NODES, "gone")]
        assert harness.observer.relists == [Kind.NODES, Kind.NODES] and view.sync[Kind.NODES].relists == 2
        assert harness.backoffs == [], "an expired resourceVersion after a healthy watch re-lists at once"
        await harness.stop()


async def test_large_lists_are_read_in_pages(harness: Harness) -> None:
    fake, view = harness.fake, harness.view
    fake.lists["nodes"].append(Reply([gpu_node(f"n{i}") for i in range(1203)], rv="40"))
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.NODES)
        await wait_until(lambda: view.sync[Kind.NODES].synced, "nodes synced")
        assert len(view.nodes) == 1203
        pages = fake.requests("nodes", watch=False)
        assert [p.query.get("continue") for p in pages] == [None, "500", "1000"]
        assert {p.query["limit"] for p in pages} == {"500"}
        await wait_until(lambda: bool(fake.requests("nodes", watch=True)), "watch started")
        assert fake.requests("nodes", watch=True)[0].query["resourceVersion"] == "40"


async def test_gone_straight_after_a_list_backs_off_instead_of_spinning(harness: Harness) -> None:
    """A server that rejects the resourceVersion its own list just returned must not be hammered."""
    fake, view = harness.fake, harness.view
    for rv in ("10", "11", "12"):
        fake.lists["nodes"].append(Reply([gpu_node("a")], rv=rv))
    fake.watches["nodes"].extend([Reply(status=410), Stream([expired()])])
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.NODES)
        await wait_until(lambda: len(fake.requests("nodes", watch=True)) == 3, "the third watch")
        assert [s.query["resourceVersion"] for s in fake.requests("nodes", watch=True)] == ["10", "11", "12"]
        assert harness.observer.restarts == [(Kind.NODES, "gone")] * 2
        assert harness.backoffs == [0.01, 0.02], "each Gone of a just-listed version must back off, growing"
        assert set(view.nodes) == {"a"}
        await harness.stop()


async def test_gone_after_a_quiet_watch_was_cut_relists_at_once(harness: Harness) -> None:
    """A quiet stream (the mig-parted ConfigMap) served for a while, cut, then refused with 410: its version
    expired during the cut, so the re-list is due now; only the cut itself backs off."""
    fake, view = harness.fake, harness.view
    fake.lists["nodes"].extend([Reply([gpu_node("a")], rv="10"), Reply([gpu_node("b")], rv="30")])
    fake.watches["nodes"].extend([Stream([Pause(1.1)], end="abort"), Reply(status=410)])
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.NODES)
        await wait_until(lambda: len(fake.requests("nodes", watch=True)) == 3, "the watch after the re-list")
        assert [s.query["resourceVersion"] for s in fake.requests("nodes", watch=True)] == ["10", "10", "30"]
        assert [reason for _, reason in harness.observer.restarts] == ["ClientPayloadError", "gone"]
        assert harness.backoffs == [0.01], "the 410 of a version that served a watch re-lists without waiting"
        assert set(view.nodes) == {"b"}
        await harness.stop()


async def test_gone_on_the_list_itself_backs_off(harness: Harness) -> None:
    fake, view = harness.fake, harness.view
    fake.lists["nodes"].extend([Reply(status=410), Reply(status=410), Reply([gpu_node("a")], rv="10")])
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.NODES)
        await wait_until(lambda: len(fake.requests("nodes", watch=True)) == 1, "the first watch")
        assert len(fake.requests("nodes", watch=False)) == 3
        assert harness.backoffs == [0.01, 0.02]
        assert view.sync[Kind.NODES].synced and set(view.nodes) == {"a"}
        await harness.stop()


async def test_a_list_without_a_resource_version_does_not_replace_the_store(harness: Harness) -> None:
    fake, view = harness.fake, harness.view
    second_list = fake.gate()
    fake.lists["nodes"].extend([Reply([gpu_node("a")], rv=None), Reply([gpu_node("b")], rv="10", gate=second_list)])
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.NODES)
        await second_list.reached.wait()
        assert view.nodes == {} and not view.sync[Kind.NODES].synced
        assert harness.observer.restarts == [(Kind.NODES, "KeyError")] and harness.observer.relists == []
        second_list.open()
        await wait_until(lambda: len(fake.requests("nodes", watch=True)) == 1, "the first watch")
        assert set(view.nodes) == {"b"} and view.sync[Kind.NODES].relists == 1
        await harness.stop()


# --- 3. a watch that ends: resume from the last resourceVersion -----------------------------------------


async def test_a_watch_that_ends_normally_resumes_from_the_last_resource_version(harness: Harness) -> None:
    fake, view = harness.fake, harness.view
    fake.lists["nodes"].append(Reply([gpu_node("a")], rv="10"))
    fake.watches["nodes"].extend(
        [
            Stream([event("MODIFIED", gpu_node("a"), rv="15")]),
            Stream([event("ADDED", gpu_node("b"), rv="16")]),
        ]
    )
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.NODES)
        await wait_until(lambda: len(fake.requests("nodes", watch=True)) == 3, "the third watch")
        assert [s.query["resourceVersion"] for s in fake.requests("nodes", watch=True)] == ["10", "15", "16"]
        assert len(fake.requests("nodes", watch=False)) == 1, "a watch that ended cleanly needs no re-list"
        assert set(view.nodes) == {"a", "b"} and view.nodes["a"].resource_version == "15"
        assert harness.observer.restarts == [] and harness.backoffs == []
        await harness.stop()


async def test_a_watch_that_ends_at_once_without_events_counts_as_a_failure(harness: Harness) -> None:
    fake = harness.fake
    fake.lists["nodes"].append(Reply([gpu_node("a")], rv="10"))
    fake.watches["nodes"].extend([Stream([]), Stream([])])
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.NODES)
        await wait_until(lambda: len(fake.requests("nodes", watch=True)) == 3, "the third watch")
        assert [s.query["resourceVersion"] for s in fake.requests("nodes", watch=True)] == ["10"] * 3
        assert harness.observer.restarts == [(Kind.NODES, "ApiError")] * 2
        assert harness.backoffs == [0.01, 0.02]
        assert len(fake.requests("nodes", watch=False)) == 1
        await harness.stop()


async def test_an_error_event_other_than_410_backs_off_and_resumes_without_relisting(harness: Harness) -> None:
    fake, view = harness.fake, harness.view
    fake.lists["nodes"].append(Reply([gpu_node("a")], rv="10"))
    etcd = {"type": "ERROR", "object": status_body(500, "etcdserver: leader changed")}
    fake.watches["nodes"].append(Stream([event("ADDED", gpu_node("b"), rv="11"), etcd]))
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.NODES)
        await wait_until(lambda: len(fake.requests("nodes", watch=True)) == 2, "the second watch")
        assert fake.requests("nodes", watch=True)[1].query["resourceVersion"] == "11"
        assert harness.observer.restarts == [(Kind.NODES, "ApiError")] and harness.backoffs == [0.01]
        assert len(fake.requests("nodes", watch=False)) == 1 and set(view.nodes) == {"a", "b"}
        await harness.stop()


async def test_a_broken_stream_resumes_after_the_last_complete_event(harness: Harness) -> None:
    fake, view = harness.fake, harness.view
    fake.lists["nodes"].append(Reply([gpu_node("a")], rv="10"))
    partial = orjson.dumps(event("ADDED", gpu_node("c"), rv="12"))[:40]
    fake.watches["nodes"].append(Stream([event("ADDED", gpu_node("b"), rv="11"), partial], end="abort"))
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.NODES)
        await wait_until(lambda: len(fake.requests("nodes", watch=True)) == 2, "the second watch")
        assert fake.requests("nodes", watch=True)[1].query["resourceVersion"] == "11"
        assert set(view.nodes) == {"a", "b"}
        [(kind, reason)] = harness.observer.restarts
        assert kind is Kind.NODES and reason == "ClientPayloadError"
        assert len(fake.requests("nodes", watch=False)) == 1
        await harness.stop()


@pytest.mark.parametrize(
    "line",
    [b"{not json\n", b"null\n", b'["ADDED"]\n', b'{"type":"ADDED","object":"a string"}\n'],
    ids=["invalid json", "null", "array", "object not a mapping"],
)
async def test_a_garbled_event_line_is_a_failure_not_a_crash(harness: Harness, line: bytes) -> None:
    fake, view = harness.fake, harness.view
    fake.lists["nodes"].append(Reply([gpu_node("a")], rv="10"))
    fake.watches["nodes"].extend(
        [Stream([event("ADDED", gpu_node("b"), rv="11"), line]), Stream([event("ADDED", gpu_node("c"), rv="12")])]
    )
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.NODES)
        await wait_until(lambda: "c" in view.nodes or any(t.done() for t in harness.tasks), "node c arrives")
        harness.assert_running()
        assert [s.query["resourceVersion"] for s in fake.requests("nodes", watch=True)][:2] == ["10", "11"]
        assert [r for _, r in harness.observer.restarts] == ["JSONDecodeError" if b"not" in line else "ValueError"]
        assert len(fake.requests("nodes", watch=False)) == 1
        await harness.stop()


@pytest.mark.parametrize("body", [b"null", b"[]", b"{not json", b'{"metadata": [], "items": []}'])
async def test_a_garbled_list_answer_is_a_failure_not_a_crash(harness: Harness, body: bytes) -> None:
    fake, view = harness.fake, harness.view
    fake.lists["nodes"].extend([Reply(raw=body), Reply([gpu_node("a")], rv="10")])
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.NODES)
        await wait_until(lambda: view.sync[Kind.NODES].synced or any(t.done() for t in harness.tasks), "a list")
        harness.assert_running()
        assert set(view.nodes) == {"a"} and view.sync[Kind.NODES].relists == 1
        assert len(harness.observer.restarts) == 1 and harness.backoffs == [0.01]
        await harness.stop()


# --- 4. HTTP errors back off ----------------------------------------------------------------------------


async def test_list_failures_back_off_and_retry_until_the_list_succeeds(harness: Harness) -> None:
    fake, view = harness.fake, harness.view
    fake.lists["nodes"].extend(
        [Reply(status=500), Reply(status=503), Reply(status=500), Reply([gpu_node("a")], rv="10")]
    )
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.NODES)
        await wait_until(lambda: len(fake.requests("nodes", watch=True)) == 1, "the first watch")
        assert len(fake.requests("nodes", watch=False)) == 4
        assert harness.observer.restarts == [(Kind.NODES, "ApiError")] * 3
        assert harness.backoffs == [0.01, 0.02, 0.04], "the delay doubles on each failure"
        assert harness.observer.relists == [Kind.NODES]
        assert view.sync[Kind.NODES].synced and set(view.nodes) == {"a"}
        assert fake.requests("nodes", watch=True)[0].query["resourceVersion"] == "10"
        await harness.stop()


async def test_backoff_is_capped(harness: Harness) -> None:
    fake = harness.fake
    fake.lists["nodes"].extend([Reply(status=500)] * 5 + [Reply([gpu_node("a")], rv="10")])
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.NODES)
        await wait_until(lambda: len(fake.requests("nodes", watch=True)) == 1, "the first watch")
        assert harness.backoffs == [0.01, 0.02, 0.04, 0.04, 0.04]
        await harness.stop()


async def test_a_failed_watch_request_backs_off_and_rewatches_without_relisting(harness: Harness) -> None:
    fake, view = harness.fake, harness.view
    fake.lists["nodes"].append(Reply([gpu_node("a")], rv="10"))
    fake.watches["nodes"].extend([Reply(status=500), Reply(status=429)])
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.NODES)
        await wait_until(lambda: len(fake.requests("nodes", watch=True)) == 3, "the third watch")
        assert [s.query["resourceVersion"] for s in fake.requests("nodes", watch=True)] == ["10"] * 3
        assert harness.observer.restarts == [(Kind.NODES, "ApiError")] * 2 and harness.backoffs == [0.01, 0.02]
        assert len(fake.requests("nodes", watch=False)) == 1 and view.sync[Kind.NODES].relists == 1
        await harness.stop()


async def test_an_unauthorized_client_keeps_retrying_and_stays_unsynced(harness: Harness) -> None:
    harness.api.configuration.api_key = {}
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.NODES)
        await wait_until(lambda: len(harness.observer.restarts) >= 3, "three failed lists")
        harness.assert_running()
        assert not harness.view.sync[Kind.NODES].synced
        assert harness.fake.seen == [], "the fake records authorised requests only"
        await harness.stop()


# --- 5. read timeouts -------------------------------------------------------------------------------------


async def test_a_silent_stream_is_abandoned_after_the_read_timeout(harness: Harness) -> None:
    fake, view = harness.fake, harness.view
    fake.lists["nodes"].append(Reply([gpu_node("a")], rv="10"))
    fake.watches["nodes"].extend(
        [Stream([event("ADDED", gpu_node("b"), rv="11")], end="hang"), Stream([event("ADDED", gpu_node("c"), rv="12")])]
    )
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.NODES, read_timeout_s=0.5)
        await wait_until(lambda: len(fake.requests("nodes", watch=True)) >= 2, "a reconnect", timeout=5)
        first, second = fake.requests("nodes", watch=True)[:2]
        assert 0.45 <= second.at - first.at < 3.0, "abandoned after about read_timeout_s of silence"
        assert second.query["resourceVersion"] == "11"
        assert "Timeout" in harness.observer.restarts[0][1]
        await wait_until(lambda: "c" in view.nodes, "the event on the new stream")
        assert len(fake.requests("nodes", watch=False)) == 1, "a silent stream needs no re-list"
        await harness.stop()


async def test_a_silent_server_that_never_answers_the_watch_request_is_abandoned(harness: Harness) -> None:
    fake = harness.fake
    fake.lists["nodes"].append(Reply([gpu_node("a")], rv="10"))
    never = fake.gate()  # the watch request gets no status line at all
    fake.watches["nodes"].extend([Reply(gate=never)])
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.NODES, read_timeout_s=0.5)
        await wait_until(lambda: len(fake.requests("nodes", watch=True)) >= 2, "a reconnect", timeout=5)
        assert "Timeout" in harness.observer.restarts[0][1]
        assert len(fake.requests("nodes", watch=False)) == 1
        await harness.stop()


async def test_a_slow_but_live_stream_is_kept(harness: Harness) -> None:
    fake, view = harness.fake, harness.view
    fake.lists["nodes"].append(Reply([], rv="10"))
    events: list[Any] = []
    for i in range(6):  # 1.2 s in all, but never more than 0.2 s of silence
        events += [Pause(0.2), event("ADDED", gpu_node(f"n{i}"), rv=str(11 + i))]
    fake.watches["nodes"].append(Stream(events))
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.NODES, read_timeout_s=0.6)
        await wait_until(lambda: len(fake.requests("nodes", watch=True)) == 2, "the second watch")
        assert set(view.nodes) == {f"n{i}" for i in range(6)}
        assert harness.observer.restarts == [], "the read timeout is per read, not for the whole stream"
        assert fake.requests("nodes", watch=True)[1].query["resourceVersion"] == "16"
        await harness.stop()


# --- 6. large event lines ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size_mib", [3, 5])
async def test_an_event_line_larger_than_the_read_buffer_is_parsed(harness: Harness, size_mib: int) -> None:
    fake, view = harness.fake, harness.view
    huge = "x" * (size_mib * 2**20)
    line = orjson.dumps(event("ADDED", gpu_node("big", **{"example.com/huge": huge}), rv="11")) + b"\n"
    assert len(line) > size_mib * 2**20
    small = orjson.dumps(event("ADDED", gpu_node("small"), rv="12")) + b"\n"
    third = len(line) // 3
    fake.lists["nodes"].append(Reply([], rv="10"))
    fake.watches["nodes"].append(
        Stream([line[:third], Pause(0.05), line[third : 2 * third], Pause(0.05), line[2 * third :] + small])
    )
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.NODES)
        await wait_until(lambda: len(fake.requests("nodes", watch=True)) == 2, "the second watch")
        assert set(view.nodes) == {"big", "small"}
        assert fake.requests("nodes", watch=True)[1].query["resourceVersion"] == "12"
        assert harness.observer.restarts == []
        await harness.stop()


# --- 7. readiness ---------------------------------------------------------------------------------------


async def test_readiness_follows_sync_and_goes_stale_without_events(harness: Harness) -> None:
    fake, view, clock = harness.fake, harness.view, harness.clock
    config_listed = fake.gate()
    heartbeat = fake.gate()
    ref = view.config_ref
    fake.lists["nodes"].append(Reply([gpu_node("a")], rv="10"))
    fake.lists["pods"].append(Reply([], rv="10"))
    fake.lists["configmaps"].append(Reply([], rv="10", gate=config_listed))
    streams = [("nodes", "Node"), ("pods", "Pod"), ("configmaps", "ConfigMap")]
    for resource, (kind, _) in DRA_RESOURCES.items():
        fake.lists[resource].append(Reply([], rv="10"))
        streams.append((resource, kind))
    for resource, kind in streams:
        fake.watches[resource].append(Stream([heartbeat, bookmark("40", kind)], end="hang"))
    async with asyncio.timeout(TEST_TIMEOUT_S):
        assert view.readiness(60) == (False, "nodes not synced yet")
        harness.start(*Kind)
        await config_listed.reached.wait()
        await wait_until(lambda: all(s.synced for k, s in view.sync.items() if k is not Kind.CONFIG), "the others")
        assert view.readiness(60) == (False, "configmap not synced yet")
        config_listed.open()
        await wait_until(lambda: view.sync[Kind.CONFIG].synced, "the config map list")
        assert view.readiness(60) == (True, "ok")
        [cm_list] = fake.requests("configmaps", watch=False)
        assert cm_list.namespace == ref.namespace and cm_list.query["fieldSelector"] == f"metadata.name={ref.name}"

        clock.now += 61
        ready, reason = view.readiness(60)
        assert not ready and "stale" in reason

        heartbeat.open()  # one bookmark on each stream, then silence again
        await wait_until(lambda: all(s.last_ok == clock.now for s in view.sync.values()), "every kind's bookmark")
        assert view.readiness(60) == (True, "ok")
        clock.now += 61
        assert view.readiness(60)[0] is False
        await harness.stop()


# --- 8. the mig-parted ConfigMap ------------------------------------------------------------------------


async def test_the_config_map_reflector_selects_the_configured_name_and_keeps_the_last_good_config(
    harness: Harness,
) -> None:
    fake = harness.fake
    view = harness.view = ClusterView(clock=harness.clock, config_ref=ConfigMapRef("ops", "my-mig", "config.yaml"))
    ours = config_map("my-mig", "ops", CONFIG_OK.format(name="first"))
    fake.lists["configmaps"].append(
        Reply(
            [
                config_map("default-mig-parted-config", "ops", CONFIG_OK.format(name="wrong-name")),
                config_map("my-mig", "elsewhere", CONFIG_OK.format(name="wrong-namespace")),
                ours,
            ],
            rv="10",
        )
    )
    valid_seen, invalid_seen = fake.gate(), fake.gate()
    fake.watches["configmaps"].append(
        Stream(
            [
                event("MODIFIED", config_map("other", "ops", CONFIG_OK.format(name="not-ours")), rv="11"),
                event("MODIFIED", config_map("my-mig", "ops", CONFIG_OK.format(name="second")), rv="12"),
                valid_seen,
                event("MODIFIED", config_map("my-mig", "ops", "version: v1\nmig-configs: ["), rv="13"),
                invalid_seen,
                event("DELETED", ours, rv="14"),
            ],
            end="hang",
        )
    )
    async with asyncio.timeout(TEST_TIMEOUT_S):
        assert "all-balanced" in view.mig_parted.names()
        config = harness.start(Kind.CONFIG)[Kind.CONFIG]
        await caught_up(valid_seen, config, "12")
        [listed] = fake.requests("configmaps", watch=False)
        [watched] = fake.requests("configmaps", watch=True)
        for request in (listed, watched):
            assert request.namespace == "ops" and request.query["fieldSelector"] == "metadata.name=my-mig"
        assert watched.query["resourceVersion"] == "10"
        assert view.mig_parted.names() == ["second"] and view.mig_parted_source == "ConfigMap ops/my-mig"

        valid_seen.open()
        await caught_up(invalid_seen, config, "13")
        assert view.mig_parted.names() == ["second"], "an invalid edit keeps the last good config"
        assert view.counters.invalid_configs == 1

        invalid_seen.open()
        await wait_until(lambda: "all-balanced" in view.mig_parted.names(), "the deletion")
        assert view.mig_parted_source == "built-in defaults"
        assert harness.observer.restarts == []
        await harness.stop()


async def test_the_config_map_list_sets_the_config(harness: Harness) -> None:
    fake, view = harness.fake, harness.view
    ref = view.config_ref
    fake.lists["configmaps"].append(Reply([config_map(ref.name, ref.namespace, CONFIG_OK.format(name="listed"))]))
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.CONFIG)
        await wait_until(lambda: view.sync[Kind.CONFIG].synced, "the list")
        assert view.mig_parted.names() == ["listed"]
        await harness.stop()


# --- 9. pods ------------------------------------------------------------------------------------------------


async def test_a_pod_bound_by_a_watch_event_is_counted_on_its_node(harness: Harness) -> None:
    fake, view = harness.fake, harness.view
    pending = pod("train", requests={MIG_1G: 1}, limits={MIG_1G: 1}, namespace="ml")
    bound = copy.deepcopy(pending)
    bound["spec"]["nodeName"] = "gpu-1"
    bound["status"]["phase"] = "Running"
    done = copy.deepcopy(bound)
    done["status"]["phase"] = "Succeeded"
    other = pod("infer", limits={MIG_1G: 2}, node_name="gpu-1", uid="uid-infer")
    was_bound, was_done = fake.gate(), fake.gate()
    fake.lists["nodes"].append(Reply([gpu_node("gpu-1")], rv="10"))
    fake.lists["pods"].append(Reply([pending], rv="20"))
    fake.watches["pods"].append(
        Stream(
            [
                event("MODIFIED", bound, rv="21"),
                was_bound,
                event("MODIFIED", done, rv="22"),
                event("ADDED", other, rv="23"),
                was_done,
                event("DELETED", other, rv="24"),
            ],
            end="hang",
        )
    )
    async with asyncio.timeout(TEST_TIMEOUT_S):
        nodes_listed = fake.gate()
        fake.watches["nodes"].append(Stream([nodes_listed], end="hang"))
        harness.start(Kind.NODES)
        await nodes_listed.reached.wait()
        assert used(view, "gpu-1") == 0
        state = view.node_state("gpu-1")
        assert state is not None and sum(len(g.instances) for g in state.gpus) == 7

        pods = harness.start(Kind.PODS)[Kind.PODS]
        await caught_up(was_bound, pods, "21")
        assert [p.name for p in view.pending_mig_pods()] == []
        assert used(view, "gpu-1") == 1, "the bound pod uses one 1g.5gb instance"

        was_bound.open()
        await caught_up(was_done, pods, "23")
        assert used(view, "gpu-1") == 2, "the finished pod frees its instance; the new one uses two"

        was_done.open()
        await wait_until(lambda: "uid-infer" not in view.pods, "the deletion")
        assert used(view, "gpu-1") == 0
        assert [s.query["resourceVersion"] for s in fake.requests("pods", watch=True)] == ["20"]
        await harness.stop()


async def test_a_pending_pod_from_the_list_is_pending(harness: Harness) -> None:
    fake, view = harness.fake, harness.view
    fake.lists["pods"].append(Reply([pod("wait", limits={MIG_1G: 1})], rv="20"))
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.PODS)
        await wait_until(lambda: view.sync[Kind.PODS].synced, "the pod list")
        assert [p.key for p in view.pending_mig_pods()] == ["default/wait"]
        await harness.stop()


# --- 10. DRA kinds ------------------------------------------------------------------------------------------


def allocated_claim(name: str, node: str, device: str) -> dict[str, Any]:
    selector = {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}"},
        "spec": {"devices": {"requests": [{"name": "mig", "exactly": {"deviceClassName": "mig.nvidia.com"}}]}},
        "status": {
            "allocation": {
                "devices": {"results": [{"request": "mig", "driver": DRIVER, "pool": node, "device": device}]},
                "nodeSelector": selector,
            }
        },
    }


async def test_slices_and_claims_from_lists_and_events_fill_the_nodes_dra_state(harness: Harness) -> None:
    fake, view = harness.fake, harness.view
    slices = dynamic_mig_slices("dra-1", model_named("H100-80GB"), 1)
    fake.lists["resourceslices"].append(Reply(slices[:1], rv="30"))
    fake.lists["resourceclaims"].append(Reply([], rv="30"))
    claim_seen = fake.gate()
    fake.watches["resourceslices"].append(Stream([event("ADDED", slices[1], rv="31")], end="hang"))
    fake.watches["resourceclaims"].append(
        Stream(
            [event("ADDED", allocated_claim("c1", "dra-1", "gpu-0-mig-1g10gb-19-0"), rv="32"), claim_seen], end="hang"
        )
    )
    async with asyncio.timeout(TEST_TIMEOUT_S):
        started = harness.start(Kind.RESOURCE_SLICES, Kind.RESOURCE_CLAIMS)
        await caught_up(claim_seen, started[Kind.RESOURCE_CLAIMS], "32")
        await wait_until(lambda: started[Kind.RESOURCE_SLICES].resource_version == "31", "the slice event")
        [pool] = view.dra_pools("dra-1")
        assert not pool.invalid and len(pool.devices) == 26
        assert view.dra_in_use("dra-1") == {(DRIVER, "dra-1", "gpu-0-mig-1g10gb-19-0")}
        [slice_list] = fake.requests("resourceslices", watch=False)
        assert slice_list.query["limit"] == "500"
        assert fake.requests("resourceclaims", watch=True)[0].query["resourceVersion"] == "30"
        await harness.stop()


@pytest.mark.parametrize(
    ("status", "logged"),
    [(404, "the API server does not serve it"), (403, "RBAC: get, list, watch on resource.k8s.io deviceclasses")],
)
async def test_a_dra_kind_not_served_or_not_readable_is_empty_logged_once_and_asked_again(
    harness: Harness, caplog: pytest.LogCaptureFixture, status: int, logged: str
) -> None:
    fake, view = harness.fake, harness.view
    fake.lists["deviceclasses"].extend([Reply(status=status)] * 3)
    served = {"metadata": {"name": "mig.nvidia.com"}, "spec": {}}
    fake.lists["deviceclasses"].append(Reply([served], rv="40"))
    async with asyncio.timeout(TEST_TIMEOUT_S):
        with caplog.at_level("WARNING"):
            harness.start(Kind.DEVICE_CLASSES)
            await wait_until(lambda: view.sync[Kind.DEVICE_CLASSES].absent, "the kind held as absent")
            sync = view.sync[Kind.DEVICE_CLASSES]
            assert sync.synced and sync.last_ok is not None and view.dra.classes == {}
            await wait_until(lambda: view.device_class("mig.nvidia.com") is not None, "the kind served at last")
        assert not sync.absent and harness.backoffs == [0.01, 0.02, 0.04]
        assert harness.observer.restarts == [], "an absent kind is no failed stream"
        messages = [r.getMessage() for r in caplog.records]
        assert sum(logged in m for m in messages) == 1, messages
        assert sum("served and readable again" in m for m in messages) == 1
        await harness.stop()


async def test_a_core_kind_not_found_is_a_failure_not_an_absence(harness: Harness) -> None:
    fake, view = harness.fake, harness.view
    fake.lists["nodes"].extend([Reply(status=404), Reply([gpu_node("a")], rv="10")])
    async with asyncio.timeout(TEST_TIMEOUT_S):
        harness.start(Kind.NODES)
        await wait_until(lambda: view.sync[Kind.NODES].synced, "the nodes list")
        assert harness.observer.restarts == [(Kind.NODES, "NotFound")] and not view.sync[Kind.NODES].absent
        await harness.stop()
