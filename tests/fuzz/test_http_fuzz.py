"""The HTTP API under generated, mutated and hostile input; ``docs/openapi.yaml`` is the contract.

schemathesis generates requests from the OpenAPI document (positive: valid ExtenderArgs; negative: bodies
that break the schema) and checks every answer against it; hand-written cases add what a generator rarely
hits. Throughout, the server must answer without a 5xx and without an internal fault (``Error`` set on a
filter, or the fault counter), and afterwards its cluster view must be what it was, and a known-good
request must get the answer it got before.

The app runs in a thread on its own event loop, on a loopback port; requests come from ``requests``.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import orjson
import pytest
import requests
import schemathesis
import yaml
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from extender.metrics import Metrics
from extender.server.app import build_app
from extender.server.scheduling import SchedulingService
from extender.settings import Settings
from extender.view.snapshot import load_snapshot
from extender.view.store import ClusterView
from tests.builders import pod
from tests.conftest import DEMO_SNAPSHOT
from tests.fuzz.strategies import ANSWER_SCHEMAS, ERROR_SCHEMA, OPENAPI, paths, replaced
from tests.support import Clock

T = TypeVar("T")

SCHEMA = schemathesis.openapi.from_path(OPENAPI)
MAX_BODY = 256 * 1024
EXAMPLES = 150  # per operation and mode: the whole module stays well under a minute on two shared cores

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
FITS_3G = {"h100-balanced", "h100-inference", "h100-idle-3g", "h100-exact"}


class LoopbackServer:
    """The extender's app on 127.0.0.1, served by an event loop in a thread; stopped by :meth:`stop`."""

    def __init__(self, app: web.Application, view: ClusterView, metrics: Metrics, clock: Clock) -> None:
        self.app, self.view, self.metrics, self.clock = app, view, metrics, clock
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-server", daemon=True)
        self.runner = web.AppRunner(app)
        self.base_url = ""
        self.session = requests.Session()
        self.session.trust_env = False  # loopback only: no proxy from the environment
        self.view_before: Any = None
        """The view's contents, and the known-good answer, before any fuzzing."""
        self.known_good_answer: Any = None

    def start(self) -> None:
        self.thread.start()

        async def up() -> str:
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            host, port = self.runner.addresses[0][:2]
            return f"http://{host}:{port}"

        self.base_url = asyncio.run_coroutine_threadsafe(up(), self.loop).result(30)

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the server's loop, between requests: the view is never read while it is written."""

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(30)

    def stop(self) -> None:
        self.session.close()
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()

    def post(self, verb: str, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
        return self.session.post(
            f"{self.base_url}/{verb}",
            data=body,
            headers={"Content-Type": "application/json"} if headers is None else headers,
            timeout=30,
        )

    def faults(self) -> float:
        """Requests that ended in the app's catch-all (a bug, answered without a 5xx)."""
        registry = self.metrics.registry
        return sum(
            registry.get_sample_value("mig_extender_bad_requests_total", {"verb": verb, "status": "internal"}) or 0
            for verb in ("filter", "prioritize")
        )


def mig_pod(name: str, resource: str, count: Any = "1") -> dict[str, Any]:
    return pod(name, limits={f"nvidia.com/mig-{resource}": count}, namespace="ml")


def args(the_pod: Any, names: Any = None, nodes: Any = None) -> dict[str, Any]:
    return {"Pod": the_pod, "Nodes": None if nodes is None else {"metadata": {}, "items": nodes}, "NodeNames": names}


def demo_nodes() -> dict[str, dict[str, Any]]:
    items = yaml.safe_load(DEMO_SNAPSHOT.read_text())["items"]
    return {i["metadata"]["name"]: i for i in items if i["kind"] == "Node"}


KNOWN_GOOD = orjson.dumps(args(mig_pod("known-good", "3g.40gb"), names=ALL_NODES))


def _view_contents(view: ClusterView) -> Any:
    return copy.deepcopy((view.nodes, view.pods, view.mig_parted, view.mig_parted_source, view.static))


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    clock = Clock()
    view = ClusterView(clock=clock)
    load_snapshot(view, str(DEMO_SNAPSHOT))
    settings_ = Settings.of(host="127.0.0.1", max_body_bytes=MAX_BODY)
    metrics = Metrics(view)
    app = build_app(settings_, view, metrics, SchedulingService(view, settings_, metrics, clock=clock))
    running = LoopbackServer(app, view, metrics, clock)
    running.start()
    before = running.run(lambda: _view_contents(view))
    baseline = running.post("filter", KNOWN_GOOD).json()
    assert set(baseline["NodeNames"]) == FITS_3G
    running.view_before, running.known_good_answer = before, baseline
    try:
        yield running
    finally:
        running.stop()


def assert_intact(server: LoopbackServer) -> None:
    """No fault happened, the view holds what it held, and the known-good request is answered as before."""
    assert server.faults() == 0
    assert server.run(lambda: _view_contents(server.view)) == server.view_before
    # Placements assumed for fuzzed pods expire with the TTL (kube-scheduler's own cache does the same).
    server.clock.now += 3600
    response = server.post("filter", KNOWN_GOOD)
    assert response.status_code == 200
    assert response.json() == server.known_good_answer
    assert server.post("prioritize", KNOWN_GOOD).status_code == 200
    assert server.session.get(f"{server.base_url}/readyz", timeout=30).status_code == 200


def assert_answer(verb: str, response: requests.Response, allowed: tuple[int, ...] = (200, 400)) -> Any:
    """A documented status with a body that conforms to the OpenAPI document; the body."""
    assert response.status_code in allowed, (response.status_code, response.text[:500])
    assert response.headers["Content-Type"].startswith("application/json")
    body = orjson.loads(response.content)
    if response.status_code == 200:
        errors = [e.message for e in ANSWER_SCHEMAS[verb].iter_errors(body)]
        assert not errors, errors
        if verb == "filter":
            assert body["Error"] == ""
    else:
        assert ERROR_SCHEMA.is_valid(body), body
    return body


# --- generated from the OpenAPI document -------------------------------------------------------------

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.parametrize(
    ("path", "method", "mode"),
    [
        ("/filter", "POST", GenerationMode.POSITIVE),
        ("/filter", "POST", GenerationMode.NEGATIVE),
        ("/prioritize", "POST", GenerationMode.POSITIVE),
        ("/prioritize", "POST", GenerationMode.NEGATIVE),
        # without an API server (a snapshot) every binding is answered with its Error
        ("/bind", "POST", GenerationMode.POSITIVE),
        ("/bind", "POST", GenerationMode.NEGATIVE),
        ("/healthz", "GET", GenerationMode.POSITIVE),
        ("/readyz", "GET", GenerationMode.POSITIVE),
        ("/metrics", "GET", GenerationMode.POSITIVE),
    ],
)
def test_generated_requests_get_conforming_answers(
    server: LoopbackServer, path: str, method: str, mode: GenerationMode
) -> None:
    operation = SCHEMA[path][method]
    # Positive data must be accepted (200): the request schema is exactly what the extender takes.
    checks = [*CHECKS, positive_data_acceptance] if mode is GenerationMode.POSITIVE else CHECKS
    examples = EXAMPLES if method == "POST" else 3

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(case=operation.as_strategy(generation_mode=mode))
    def exchange(case: Any) -> None:
        response = case.call(base_url=server.base_url, session=server.session, timeout=30)
        case.validate_response(response, checks=checks)
        if path == "/filter" and response.status_code == 200:
            assert response.json()["Error"] == ""

    exchange()
    assert_intact(server)


# --- hand-written hostile input ----------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["filter", "prioritize"])
def test_bodies_over_max_body_bytes_get_413(server: LoopbackServer, verb: str) -> None:
    huge = orjson.dumps(args(mig_pod("p", "1g.10gb"), names=["n" * 60] * (MAX_BODY // 60)))
    assert len(huge) > MAX_BODY
    for body in (huge, iter([huge[i : i + 65536] for i in range(0, len(huge), 65536)])):  # sized, then chunked
        response = server.post(verb, body)
        assert response.status_code == 413
        message = assert_answer(verb, response, (413,))["error"]
        assert f"larger than {MAX_BODY} bytes (setting max_body_bytes)" in message
    # just below the limit is read and judged on its content
    assert_answer(verb, server.post(verb, b" " * (MAX_BODY - 1)), (400,))
    assert_intact(server)


def _nested(depth: int, leaf: str = "0") -> str:
    return "[" * depth + leaf + "]" * depth


@pytest.mark.parametrize("verb", ["filter", "prioritize"])
def test_deeply_nested_json(server: LoopbackServer, verb: str) -> None:
    good = args(mig_pod("p", "3g.40gb"), names=ALL_NODES)
    text = orjson.dumps(good).decode()
    # beyond what the JSON parser takes (orjson stops at 1,024 levels): 400, wherever it is
    assert_answer(verb, server.post(verb, _nested(100_000).encode()), (400,))
    assert_answer(verb, server.post(verb, ('{"Pod": ' + _nested(5000) + "}").encode()), (400,))
    # deep but parseable, in a field the extender does not read: the answer is the normal one
    deep_status = text.replace('"status":{"phase":"Pending"}', '"status":' + _nested(1000))
    body = assert_answer(verb, server.post(verb, deep_status.encode()), (200,))
    if verb == "filter":
        assert set(body["NodeNames"]) == FITS_3G
    # deep where the extender turns values into text: 400 naming the field, not a fault
    deep_uid = text.replace('"uid":"uid-p"', '"uid":' + _nested(1000))
    assert "metadata.uid" in assert_answer(verb, server.post(verb, deep_uid.encode()), (400,))["error"]
    node = demo_nodes()["h100-exact"]
    node_text = orjson.dumps(args(mig_pod("p", "3g.40gb"), nodes=[node])).decode()
    deep_label = node_text.replace('"nvidia.com/gpu.count":"4"', '"nvidia.com/gpu.count":' + _nested(1000))
    assert deep_label != node_text
    message = assert_answer(verb, server.post(verb, deep_label.encode()), (400,))["error"]
    assert "nested too deeply" in message
    # deep in a field of a node that passes: read, but too deep to be sent back in Nodes.items
    deep_echo_text = node_text.replace('"conditions":[', '"conditions":[' + _nested(300) + ",")
    assert deep_echo_text != node_text
    deep_echo = assert_answer(verb, server.post(verb, deep_echo_text.encode()))
    if verb == "filter":
        assert "nested too deeply" in deep_echo["error"]
    assert_intact(server)


WRONG_TYPES: list[Any] = [None, 0, -1, 1.5, "", "x", True, [], [1], {}, {"a": 1}]


def _small_node() -> dict[str, Any]:
    node = demo_nodes()["h100-exact"]
    return {
        "metadata": {k: node["metadata"][k] for k in ("name", "labels", "annotations") if k in node["metadata"]},
        "spec": {"unschedulable": False},
        "status": {"allocatable": node["status"]["allocatable"]},
    }


@pytest.mark.parametrize("verb", ["filter", "prioritize"])
@pytest.mark.parametrize("mode", ["names", "nodes"])
def test_wrong_types_at_every_level(server: LoopbackServer, verb: str, mode: str) -> None:
    the_pod = mig_pod("p", "3g.40gb")
    the_pod["spec"]["initContainers"] = [
        {"name": "init", "restartPolicy": "Always", "resources": {"requests": {"nvidia.com/mig-1g.10gb": "1"}}}
    ]
    good = args(the_pod, names=["h100-exact", "ghost"]) if mode == "names" else args(the_pod, nodes=[_small_node()])
    answered = 0
    for path in paths(good):
        for wrong in WRONG_TYPES:
            body = replaced(good, path, wrong)
            assert_answer(verb, server.post(verb, orjson.dumps(body)))
            answered += 1
    assert answered > 300
    assert_intact(server)


@pytest.mark.parametrize("verb", ["filter", "prioritize"])
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
def test_nan_and_infinity_are_bad_requests(server: LoopbackServer, verb: str, literal: str) -> None:
    the_pod = mig_pod("p", "1g.10gb", count=0)
    text = orjson.dumps(args(the_pod, names=ALL_NODES)).decode().replace('"nvidia.com/mig-1g.10gb":0', "")
    for body in (
        text.replace('"limits":{', '"limits":{"nvidia.com/mig-1g.10gb":' + literal),
        text.replace('"Nodes":null', '"Nodes":' + literal),
        literal,
    ):
        assert "not valid JSON" in assert_answer(verb, server.post(verb, body.encode()), (400,))["error"]
    assert_intact(server)


@pytest.mark.parametrize(
    "quantity",
    [
        "1e400",
        "-1",
        "99999999999999999999",
        "9" * 5000,
        "1025",
        "1.5",
        "0x10",
        "1Ki",
        "",
        " ",
        "\u0661",  # an Arabic-Indic digit one: Python's int() reads it, Kubernetes does not
        "1\n2",
        -1,
        1.5,
        1e308,
        99999999999999999999,
        True,
        None,
        [],
        {},
    ],
    ids=repr,
)
def test_absurd_device_counts_are_bad_requests(server: LoopbackServer, quantity: Any) -> None:
    if isinstance(quantity, int) and quantity > 2**63:  # beyond what orjson writes: spliced in as text
        text = orjson.dumps(args(mig_pod("p", "1g.10gb", "HUGE"), names=ALL_NODES)).decode()
        body = text.replace('"HUGE"', str(quantity)).encode()
    else:
        body = orjson.dumps(args(mig_pod("p", "1g.10gb", quantity), names=ALL_NODES))
    for verb in ("filter", "prioritize"):
        message = assert_answer(verb, server.post(verb, body), (400,))["error"]
        assert "nvidia.com/mig-1g.10gb" in message
    assert_intact(server)


@pytest.mark.parametrize("quantity", ["1", "+1", "0001", " 1 ", 1, "0"])
def test_whole_device_counts_in_any_spelling_are_read(server: LoopbackServer, quantity: Any) -> None:
    body = orjson.dumps(args(mig_pod("p", "3g.40gb", quantity), names=ALL_NODES))
    answer = assert_answer("filter", server.post("filter", body), (200,))
    assert set(answer["NodeNames"]) == (set(ALL_NODES) if quantity == "0" else FITS_3G)
    assert_intact(server)


@pytest.mark.parametrize("allocatable", ["99999999999999999999", "1e400", "-1", "9" * 5000, "1Ki", "3.5"])
def test_absurd_allocatable_on_sent_nodes_is_answered_at_once(server: LoopbackServer, allocatable: str) -> None:
    node = _small_node()
    node["metadata"]["annotations"] = {}
    node["metadata"]["labels"].pop("nvidia.com/gpu.count", None)
    node["metadata"]["labels"].pop("nvidia.com/mig.config", None)
    node["metadata"]["name"] = "liar"
    node["status"]["allocatable"] = {"nvidia.com/mig-1g.10gb": allocatable, "nvidia.com/gpu": allocatable}
    body = orjson.dumps(args(mig_pod("p", "1g.10gb"), nodes=[node]))
    for verb in ("filter", "prioritize"):
        started = time.perf_counter()
        answer = assert_answer(verb, server.post(verb, body), (200,))
        assert time.perf_counter() - started < 3.0  # spreading 10**20 instances over GPUs took forever
        if verb == "filter":
            assert answer["Nodes"]["items"] == [] and set(answer["FailedNodes"]) | set(
                answer["FailedAndUnresolvableNodes"]
            ) == {"liar"}
    assert_intact(server)


def test_duplicate_keys_keep_the_last_value_like_go(server: LoopbackServer) -> None:
    bad = orjson.dumps(mig_pod("p", "1g.10gb", "lots")).decode()
    good = orjson.dumps(mig_pod("p", "3g.40gb")).decode()
    names = orjson.dumps(ALL_NODES).decode()
    body = f'{{"Pod": {bad}, "NodeNames": ["ghost"], "Pod": {good}, "Nodes": null, "NodeNames": {names}}}'
    answer = assert_answer("filter", server.post("filter", body.encode()), (200,))
    assert set(answer["NodeNames"]) == FITS_3G
    inner = '{"Pod": {"metadata": {"name": "p", "name": 7}}, "NodeNames": ["h100-exact"]}'
    assert "metadata.name" in assert_answer("filter", server.post("filter", inner.encode()), (400,))["error"]
    assert_intact(server)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   \n",
        b"\xff\xfe\x00{",
        b'{"Pod": {"metadata": {"name": "p\xff"}}, "NodeNames": ["h100-exact"]}',
        b'{"Pod": {"metadata": {"name": "p\\ud800"}}, "NodeNames": ["h100-exact"]}',
        b'{"Pod": {"metadata": {"name": "p"}}, "NodeNames": ["h100-exact"]}\x00',
        b'{"Pod": {"metadata": {"name": "p"}}, "NodeNames": ["h100-exact"]} {}',
        b"null",
        b'"Pod"',
        b"[]",
    ],
    ids=[
        "empty",
        "blank",
        "utf16-bom",
        "bad-utf8",
        "lone-surrogate",
        "trailing-nul",
        "two-documents",
        "null",
        "string",
        "array",
    ],
)
@pytest.mark.parametrize("verb", ["filter", "prioritize"])
def test_unreadable_bodies_are_bad_requests(server: LoopbackServer, verb: str, body: bytes) -> None:
    assert_answer(verb, server.post(verb, body), (400,))
    assert_intact(server)


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "application/xml"]
)
def test_the_content_type_is_not_checked(server: LoopbackServer, content_type: str | None) -> None:
    """kube-scheduler ignores it too (its ``pkg/scheduler/extender.go`` decodes any 200 body): the body decides."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    answer = assert_answer("filter", server.post("filter", KNOWN_GOOD, headers), (200,))
    assert set(answer["NodeNames"]) == FITS_3G
    assert_answer("filter", server.post("filter", b"a=1&b=2", headers), (400,))
    assert_intact(server)


def test_other_methods_are_refused_without_a_fault(server: LoopbackServer) -> None:
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        assert server.session.request(method, f"{server.base_url}/filter", timeout=30).status_code == 405
    assert server.session.post(f"{server.base_url}/healthz", timeout=30).status_code == 405
    assert_intact(server)


def test_two_spellings_of_one_profile_are_one_demand(server: LoopbackServer) -> None:
    """Found by fuzzing: each spelling was offered the same free instances, and planning them crashed."""
    the_pod = pod("p", limits={"nvidia.com/mig-1g.10gb": "1", "nvidia.com/mig-1G.10GB": "1"}, namespace="ml")
    for verb in ("filter", "prioritize"):
        assert_answer(verb, server.post(verb, orjson.dumps(args(the_pod, names=ALL_NODES))), (200,))
    assert_intact(server)


def test_a_demand_of_many_profiles_is_answered_in_time(server: LoopbackServer) -> None:
    """Found by fuzzing: 7 each of 6 profiles searched every split over the GPUs, a minute per node."""
    profiles = ["1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]
    the_pod = pod("many", limits={f"nvidia.com/mig-{p}": "7" for p in profiles}, namespace="ml")
    started = time.perf_counter()
    answer = assert_answer("filter", server.post("filter", orjson.dumps(args(the_pod, names=ALL_NODES))), (200,))
    assert answer["NodeNames"] == []
    assert time.perf_counter() - started < 5.0  # kube-scheduler's default httpTimeout
    assert_intact(server)


def test_request_node_objects_leave_no_trace_in_the_view(server: LoopbackServer) -> None:
    nodes = []
    for i in range(3):
        node = _small_node()
        node["metadata"]["name"] = f"invented-{i}"
        node["metadata"]["annotations"] = {}
        node["metadata"]["labels"] = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.count": "x"}
        nodes.append(node)
    assert_answer("filter", server.post("filter", orjson.dumps(args(mig_pod("p", "1g.10gb"), nodes=nodes))), (200,))
    warned = server.run(lambda: set(server.view.counters.node_warnings))
    assert not {f"invented-{i}" for i in range(3)} & warned
