"""Verdict annotations and Events for pending MIG pods, written only when they change."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import pytest

from extender.metrics import Metrics
from extender.model.policy import PolicyConfig
from extender.notify.annotator import SINCE, SUGGESTED_LAYOUT, VERDICT, Annotator, TokenBucket
from extender.notify.writers import LogWriter
from extender.view.objects import PodInfo
from extender.view.store import ClusterView, Kind
from tests.builders import pod
from tests.support import Clock

BIG = ("train-big", "nvidia.com/mig-7g.80gb", 1)
HUGE = ("train-huge", "nvidia.com/mig-7g.141gb", 9)


def demo_pod(spec: tuple[str, str, int], node_name: str | None = None) -> dict[str, Any]:
    """One of the demo snapshot's pending pods as the API server would send it (bound to ``node_name``)."""
    name, resource, count = spec
    return pod(name, limits={resource: str(count)}, namespace="ml", node_name=node_name, uid=f"uid-{name}")


def annotator(view: ClusterView, when: str = "2026-11-28T10:00:00") -> tuple[Annotator, LogWriter]:
    writer = LogWriter(view)
    moment = datetime.datetime.fromisoformat(when).replace(tzinfo=datetime.UTC)
    return Annotator(
        view, writer, Metrics(view), policy=PolicyConfig(), rate=1000, scan_interval_s=1, now=lambda: moment
    ), writer


async def test_demo_pending_pods_get_their_verdicts(demo_view: ClusterView) -> None:
    a, writer = annotator(demo_view)
    await a.scan_once()
    patches = dict(writer.patches)
    big = patches["ml/train-big"]
    assert big[VERDICT] == "relayout"
    assert big["mig-extender.io/demand"] == "1x 7g.80gb"
    assert "re-partitioning idle GPUs of node" in big["mig-extender.io/reason"]
    assert big[SUGGESTED_LAYOUT] == "all-7g.80gb"
    assert big[SINCE] == "2026-11-28T10:00:00Z"
    huge = patches["ml/train-huge"]
    assert huge[VERDICT] == "no-layout-fits"
    assert "9x 7g.141gb exceeds what this node's GPUs can ever hold" in huge["mig-extender.io/reason"]
    assert [(e[0], e[1]) for e in writer.events] == [
        ("ml/train-big", "MigRelayoutPossible"),
        ("ml/train-huge", "MigNoLayoutFits"),
    ]


async def test_nothing_is_written_again_while_the_verdict_holds(demo_view: ClusterView) -> None:
    a, writer = annotator(demo_view)
    await a.scan_once()
    count = len(writer.patches)
    demo_view.generation += 1  # force a re-evaluation with the same outcome
    await a.scan_once()
    assert len(writer.patches) == count and len(writer.events) == 2


async def test_since_is_kept_while_the_verdict_is_unchanged(demo_view: ClusterView) -> None:
    a, writer = annotator(demo_view)
    await a.scan_once()
    later, _ = annotator(demo_view, "2026-11-28T11:00:00")
    later.writer = writer
    # a new reason for the same verdict rewrites the reason, not the time the pod has been waiting
    demo_view.apply(Kind.NODES, "DELETED", {"metadata": {"name": "h100-balanced"}})
    await later.scan_once()
    big = demo_view.pods["uid-train-big"].annotations
    assert big[VERDICT] == "relayout" and big[SINCE] == "2026-11-28T10:00:00Z"


async def test_a_bound_pod_loses_its_verdict(demo_view: ClusterView) -> None:
    a, writer = annotator(demo_view)
    await a.scan_once()
    raw = pod(
        "train-big",
        limits={"nvidia.com/mig-7g.80gb": "1"},
        namespace="ml",
        node_name="h100-idle-3g",
        uid="uid-train-big",
    )
    raw["metadata"]["annotations"] = dict(demo_view.pods["uid-train-big"].annotations)
    demo_view.apply(Kind.PODS, "MODIFIED", raw)
    await a.scan_once()
    assert writer.patches[-1] == ("ml/train-big", {k: None for k in writer.patches[-1][1]})
    assert VERDICT not in demo_view.pods["uid-train-big"].annotations


async def test_pending_demand_is_exported(demo_view: ClusterView) -> None:
    a, _ = annotator(demo_view)
    await a.scan_once()
    value = a.metrics.registry.get_sample_value(
        "mig_extender_pending_demand_instances", {"profile": "7g.141gb", "verdict": "no-layout-fits"}
    )
    assert value == 9


async def test_token_bucket_limits_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    clock = Clock(100.0)
    monkeypatch.setattr("extender.notify.annotator.time.monotonic", clock)
    monkeypatch.setattr("extender.notify.annotator.asyncio.sleep", fake_sleep)
    bucket = TokenBucket(rate=2, burst=2)
    for _ in range(4):
        await bucket.take()
    # two from the burst, then one every half second
    assert slept == pytest.approx([0.5, 0.5])


async def test_pods_bound_or_deleted_while_the_scan_evaluates_get_no_verdict(
    demo_view: ClusterView, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, writer = annotator(demo_view)
    evaluate = a._evaluate

    async def slow_evaluate(*args: Any) -> Any:
        verdicts = await evaluate(*args)  # yields to the event loop: the view moves on meanwhile
        demo_view.apply(Kind.PODS, "MODIFIED", demo_pod(BIG, node_name="h100-idle-3g"))
        demo_view.apply(Kind.PODS, "DELETED", demo_pod(HUGE))
        return verdicts

    monkeypatch.setattr(a, "_evaluate", slow_evaluate)
    await a.scan_once()
    assert writer.patches == [] and writer.events == []


class BindingWriter(LogWriter):
    """kube-scheduler binds train-huge while the verdict of train-big is being written."""

    async def patch_annotations(self, pod: PodInfo, annotations: Mapping[str, str | None]) -> None:
        await super().patch_annotations(pod, annotations)
        if pod.name == "train-big":
            self.view.apply(Kind.PODS, "MODIFIED", demo_pod(HUGE, node_name="h200-balanced"))


async def test_a_pod_bound_while_earlier_verdicts_are_written_gets_none(demo_view: ClusterView) -> None:
    a, _ = annotator(demo_view)
    a.writer = writer = BindingWriter(demo_view)
    await a.scan_once()
    assert [key for key, _ in writer.patches] == ["ml/train-big"]
    assert [(e[0], e[1]) for e in writer.events] == [("ml/train-big", "MigRelayoutPossible")]
