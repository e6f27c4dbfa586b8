"""Small helpers shared by tests that run servers or wait for things."""

from __future__ import annotations

import datetime
import importlib.util
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.2) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


WALL_START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


class Clock:
    """The tests' one fake clock: monotonic seconds in ``now`` (set it, or :meth:`advance` it), read by calling
    the clock or :meth:`monotonic`, and a UTC wall time (:meth:`wall`) that moves with them."""

    def __init__(self, now: float = 1000.0, wall_start: datetime.datetime = WALL_START) -> None:
        self.now = now
        self._start, self._wall_start = now, wall_start

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> datetime.datetime:
        return self._wall_start + datetime.timedelta(seconds=self.now - self._start)

    def advance(self, seconds: float) -> None:
        self.now += seconds


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as a module (scripts are not a package), registered so that its dataclasses resolve."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
