"""The verdict scan is supervised: a scan that raises is logged and counted, and the next one still comes; and it
gives the event loop back while it evaluates."""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any

import pytest

from extender.kube.names import VERDICT_ANNOTATION as VERDICT
from extender.kube.retry import Backoff
from extender.metrics import Metrics
from extender.model.eligibility import ANYWHERE
from extender.model.policy import PolicyConfig, cluster_verdict
from extender.notify import annotator as annotator_module
from extender.notify.annotator import Annotator
from extender.notify.writers import LogWriter
from extender.supervise import run_supervised
from extender.view.store import ClusterView

MOMENT = datetime.datetime(2026, 11, 28, 10, tzinfo=datetime.UTC)


def annotator(view: ClusterView) -> tuple[Annotator, LogWriter]:
    writer = LogWriter(view)
    return Annotator(
        view,
        writer,
        Metrics(view),
        policy=PolicyConfig(),
        rate=1000,
        scan_interval_s=0.01,
        now=lambda: MOMENT,
        error_backoff=Backoff(initial=0.01, cap=0.01),
    ), writer


def errors(a: Annotator) -> float | None:
    return a.metrics.registry.get_sample_value("mig_extender_background_errors_total", {"task": "annotator"})


async def test_an_evaluation_that_raises_once_is_counted_and_the_scans_go_on(
    demo_view: ClusterView, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    a, writer = annotator(demo_view)
    assert errors(a) == 0
    evaluate = a._evaluate
    calls = 0

    async def fails_once(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in one scan")
        return await evaluate(*args)

    monkeypatch.setattr(a, "_evaluate", fails_once)
    with caplog.at_level(logging.ERROR):
        task = asyncio.create_task(a.run())
        async with asyncio.timeout(5):
            while not writer.patches:  # the scan after the failure writes the verdicts
                await asyncio.sleep(0.01)
                assert not task.done(), task
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert errors(a) == 1
    assert demo_view.pods["uid-train-big"].annotations[VERDICT] == "relayout"
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == "verdict scan failed" and "a bug in one scan" in str(record.exc_info)


async def test_the_scan_gives_the_event_loop_back_between_slices(
    demo_view: ClusterView, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(annotator_module, "SLICE_S", 0.0)  # every look at the clock finds the slice used up
    a, _ = annotator(demo_view)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    await a.scan_once()
    other.cancel()
    demands = {p.demand for p in demo_view.pending_mig_pods() if not p.demand_error}
    assert ticks - before >= len(demands)  # one slice or more per demand, each followed by a tick
    nodes = list(demo_view.node_states())
    for demand in demands:  # and the verdicts are those computed in one go (the demo pods restrict no nodes)
        verdict = a._verdicts[(demand, ANYWHERE)]
        assert verdict == cluster_verdict(demand, nodes, a.policy, demo_view.mig_parted)


async def test_a_supervised_loop_ends_only_when_cancelled() -> None:
    pauses: list[str] = []
    steps = 0

    async def step() -> None:
        nonlocal steps
        steps += 1
        if steps % 2:
            raise ValueError(f"step {steps}")
        await asyncio.sleep(0)

    async def pause() -> None:
        pauses.append("paused")

    task = asyncio.create_task(run_supervised(step, what="test loop", on_error=lambda: None, after_error=pause))
    while steps < 6:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pauses == ["paused"] * 3
