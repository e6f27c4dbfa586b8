"""Retries with jittered exponential backoff, as client-go's ``wait.Backoff`` and backoff manager."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass
class Backoff:
    """Delays that double from ``initial`` to ``cap``, each jittered down by up to half.

    A failure long after the last one starts again from the initial delay (see :meth:`healthy`).
    """

    initial: float = 0.8
    cap: float = 30.0
    healthy_reset_s: float = 120.0
    _current: float = 0.0
    _since: float = 0.0

    def healthy(self) -> None:
        if self._current and time.monotonic() - self._since > self.healthy_reset_s:
            self._current = 0.0

    async def wait(self) -> None:
        # As client-go's backoff manager: a failure long after the last one starts again from the initial
        # delay, even if no call succeeded cleanly in between (a proxy that cuts every long watch).
        self.healthy()
        self._current = min(self.cap, self._current * 2 if self._current else self.initial)
        self._since = time.monotonic()
        await asyncio.sleep(self._current * random.uniform(0.5, 1.0))


def conflict_backoff() -> Backoff:
    """For a read-modify-write that lost a race: a short, jittered pause (client-go's ``retry.DefaultRetry``
    waits 10 ms, jittered, between its 5 attempts), so that racing writers do not retry in lockstep."""
    return Backoff(initial=0.01, cap=0.01)


async def attempts(count: int, backoff: Backoff | None = None) -> AsyncIterator[int]:
    """``count`` attempt numbers, waiting ``backoff`` (by default :func:`conflict_backoff`) before each
    retry: ``async for _ in attempts(5):`` read, change, write; ``continue`` on a conflict."""
    pause = backoff or conflict_backoff()
    for attempt in range(count):
        if attempt:
            await pause.wait()
        yield attempt
