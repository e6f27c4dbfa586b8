"""The listener's tests run on both event loops that ``serve`` can run on (setting ``event_loop``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop

LISTENER_TESTS = frozenset({"test_slow_clients.py", "test_tls.py", "test_metrics_listener.py", "test_http.py"})
"""Tests of the real listener on loopback: connections, timeouts, TLS, framing; loop-specific if anything is."""


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    if item.path.name in LISTENER_TESTS:
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}  # the others on the standard loop (a hook must name one)
