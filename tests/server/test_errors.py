"""Error answers: JSON for every status, as the README promises, and refusals in the log without a flood."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from extender.metrics import Metrics
from extender.server.app import REFUSALS, build_app
from extender.server.ratelog import RateLimitedLog
from extender.server.scheduling import SchedulingService
from extender.settings import Settings
from extender.view.store import ClusterView
from tests.support import Clock

ClientFactory = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def client(aiohttp_client: ClientFactory, demo_view: ClusterView) -> TestClient[Any, Any]:
    settings = Settings.of(host="127.0.0.1")
    metrics = Metrics(demo_view)
    return await aiohttp_client(
        build_app(settings, demo_view, metrics, SchedulingService(demo_view, settings, metrics))
    )


async def test_an_unknown_path_is_a_json_404(client: TestClient[Any, Any]) -> None:
    response = await client.get("/filtr")
    assert response.status == 404
    assert response.content_type == "application/json"
    error = (await response.json())["error"]
    assert error.startswith("no such path /filtr; served: POST /filter, POST /prioritize, POST /bind, GET /healthz")


async def test_a_wrong_method_is_a_json_405_with_allow(client: TestClient[Any, Any]) -> None:
    response = await client.get("/filter")
    assert response.status == 405
    assert response.content_type == "application/json"
    assert response.headers["Allow"] == "POST"
    assert await response.json() == {"error": "GET is not allowed on /filter; use POST"}


async def test_a_bad_request_is_logged_with_its_reason(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="extender.server.app"):
        response = await client.post("/filter", data=b"{not json")
    assert response.status == 400
    (record,) = [r for r in caplog.records if r.name == "extender.server.app"]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("POST /filter from 127.0.0.1: 400 request body is not valid JSON")


async def test_a_flood_of_bad_requests_is_one_line_per_reason(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    client.app[REFUSALS].clock = clock
    with caplog.at_level(logging.WARNING, logger="extender.server.app"):
        for n in range(50):
            await client.post("/filter", data=f"{{bad {n}".encode())  # a different JSON error each time
            await client.post("/prioritize", data=orjson.dumps({"Pod": {}}))
        clock.advance(61)
        await client.post("/filter", data=b"[")
    lines = [r.getMessage() for r in caplog.records if r.name == "extender.server.app"]
    assert len(lines) == 3, lines
    assert "not valid JSON" in lines[0] and "/prioritize" in lines[1]
    assert lines[2].endswith("(49 more like it in the last 61 s not logged)")


async def test_refusals_on_ever_new_paths_are_one_line(
    aiohttp_client: ClientFactory, demo_view: ClusterView, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.of(host="127.0.0.1", max_body_bytes=16)
    metrics = Metrics(demo_view)
    client = await aiohttp_client(
        build_app(settings, demo_view, metrics, SchedulingService(demo_view, settings, metrics))
    )
    with caplog.at_level(logging.WARNING, logger="extender.server.app"):
        for n in range(30):  # a 413 answers any path
            assert (await client.post(f"/probe-{n}", data=b"x" * 64)).status == 413
    lines = [r.getMessage() for r in caplog.records if r.name == "extender.server.app"]
    assert len(lines) == 1, lines


def test_the_rate_limit_keeps_reasons_apart_and_bounded() -> None:
    clock = Clock()
    logged = RateLimitedLog(logging.getLogger("test"), interval_s=10, max_reasons=2, clock=clock)
    assert logged.note("a", "first a") and logged.note("b", "first b")
    assert not logged.note("a", "again a")
    assert logged.note("c", "first c")  # a third reason: the table starts over rather than grow
    assert len(logged.reasons) == 1
