"""The one retry helper: jittered exponential backoff, and attempts of a read-modify-write."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from extender.kube import retry as retry_module
from extender.kube.retry import Backoff, attempts, conflict_backoff
from tests.support import Clock


def test_backoff_resets_after_two_healthy_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(0.0)
    monkeypatch.setattr(retry_module, "time", SimpleNamespace(monotonic=clock))
    delays: list[float] = []

    async def no_sleep(seconds: float) -> None:
        delays.append(seconds)

    monkeypatch.setattr(retry_module, "asyncio", SimpleNamespace(sleep=no_sleep))

    async def scenario() -> list[float]:
        backoff = Backoff()
        seen = []
        for _ in range(8):
            await backoff.wait()
            seen.append(backoff._current)
        clock.advance(60)
        backoff.healthy()  # one healthy minute is not enough
        await backoff.wait()
        seen.append(backoff._current)
        clock.advance(121)
        backoff.healthy()
        await backoff.wait()
        seen.append(backoff._current)
        # Two healthy minutes without a clean watch end (e.g. a proxy cutting every long watch) also reset.
        for _ in range(3):
            await backoff.wait()
        clock.advance(121)
        await backoff.wait()
        seen.append(backoff._current)
        return seen

    seen = asyncio.run(scenario())
    assert seen == [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0, 0.8, 0.8]
    assert all(0.4 - 1e-9 <= d <= 30.0 for d in delays)


def test_backoff_jitters_each_delay_down_by_at_most_half(monkeypatch: pytest.MonkeyPatch) -> None:
    delays: list[float] = []

    async def no_sleep(seconds: float) -> None:
        delays.append(seconds)

    monkeypatch.setattr(retry_module, "asyncio", SimpleNamespace(sleep=no_sleep))

    async def scenario() -> None:
        backoff = Backoff(initial=1.0, cap=1.0)
        for _ in range(200):
            await backoff.wait()

    asyncio.run(scenario())
    assert all(0.5 <= d <= 1.0 for d in delays)
    assert len(set(delays)) > 100, "jittered: racing clients do not retry in lockstep"


def test_attempts_pause_only_between_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    delays: list[float] = []

    async def no_sleep(seconds: float) -> None:
        delays.append(seconds)

    monkeypatch.setattr(retry_module, "asyncio", SimpleNamespace(sleep=no_sleep))

    async def scenario() -> tuple[list[int], list[int]]:
        every = [n async for n in attempts(5)]
        first_wins = []
        async for n in attempts(5):
            first_wins.append(n)
            break
        return every, first_wins

    every, first_wins = asyncio.run(scenario())
    assert every == [0, 1, 2, 3, 4] and first_wins == [0]
    assert len(delays) == 4, "no pause before the first attempt, nor after a success"
    assert all(0.005 <= d <= 0.01 for d in delays), "client-go's DefaultRetry: 10 ms, jittered"


def test_conflict_backoff_does_not_grow() -> None:
    backoff = conflict_backoff()
    assert backoff.initial == backoff.cap == 0.01
