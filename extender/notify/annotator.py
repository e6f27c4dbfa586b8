"""Tell pending MIG pods why they wait: verdict annotations and Events, off the request path.

Every ``pending_scan_s`` (and soon after a filter that passed no node) the pending MIG pods are evaluated
against the whole cluster view, not just the nodes kube-scheduler sent: its own filters (the counted
``nvidia.com/mig-*`` resources) may have removed the nodes that a re-layout would make fit. Pods with the
same demand share one evaluation. The evaluation runs on the event loop beside ``/filter`` (the model's caches
are not thread-safe, see ``extender/model/caches.py``) and gives the loop back after every ``SLICE_S`` of work, so
a request waits at most a slice for it. A pod is patched only when its verdict or reason changes, with a merge
patch (idempotent), at a bounded rate, and only if the view still has it pending right before the write (the
scan yields: pods bind or go meanwhile); its annotations are cleared once it is bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ..kube.names import DEMAND_ANNOTATION as DEMAND
from ..kube.names import REASON_ANNOTATION as REASON
from ..kube.names import RELAYOUT_NODE_ANNOTATION as RELAYOUT_NODE
from ..kube.names import SINCE_ANNOTATION as SINCE
from ..kube.names import SUGGESTED_LAYOUT_ANNOTATION as SUGGESTED_LAYOUT
from ..kube.names import VERDICT_ANNOTATION as VERDICT
from ..kube.retry import Backoff
from ..metrics import Metrics
from ..model.demand import PodDemand
from ..model.eligibility import PodPlacement
from ..model.migparted import MigPartedConfig
from ..model.policy import ClusterVerdict, PodVerdict, PolicyConfig, VerdictSearch
from ..model.state import NodeState
from ..supervise import run_supervised
from ..view.objects import NodeInfo, PodInfo
from ..view.store import ClusterView

log = logging.getLogger(__name__)

ALL_KEYS = (VERDICT, DEMAND, REASON, SUGGESTED_LAYOUT, SINCE, RELAYOUT_NODE)

EVENT_REASONS = {
    PodVerdict.NO_LAYOUT_FITS: ("MigNoLayoutFits", "Warning"),
    PodVerdict.RELAYOUT: ("MigRelayoutPossible", "Normal"),
}


class PodWriter(Protocol):
    """Where verdicts go: the API server, or a log when serving a snapshot."""

    async def patch_annotations(self, pod: PodInfo, annotations: Mapping[str, str | None]) -> None: ...

    async def post_event(self, pod: PodInfo, reason: str, kind: str, message: str) -> None: ...


@dataclass(frozen=True, slots=True)
class RelayoutNote:
    """What the re-layout controller does for a waiting pod: which node, and whether it only would."""

    node: str
    config: str
    planned_only: bool = False

    @property
    def reason(self) -> str:
        if self.planned_only:
            return f"plan-only: re-partitioning node {self.node} (config {self.config}) would host it"
        return f"node {self.node} is being re-partitioned for it (config {self.config})"


def desired_annotations(
    pod: PodInfo, verdict: ClusterVerdict | None, now: str, note: RelayoutNote | None = None
) -> dict[str, str | None]:
    """The verdict annotations the pod should carry; None values delete keys (merge-patch semantics)."""
    if verdict is None or verdict.verdict is PodVerdict.FITS:
        return {key: None for key in ALL_KEYS}
    same = pod.annotations.get(VERDICT) == verdict.verdict
    return {
        VERDICT: str(verdict.verdict),
        DEMAND: pod.demand.text(),
        REASON: note.reason if note is not None else verdict.reason,
        SUGGESTED_LAYOUT: verdict.suggested_layout,
        SINCE: pod.annotations.get(SINCE, now) if same else now,
        RELAYOUT_NODE: note.node if note is not None else None,
    }


def patch_for(pod: PodInfo, desired: Mapping[str, str | None]) -> dict[str, str | None]:
    """Only the keys that differ from what the pod carries: empty when nothing changes."""
    return {k: v for k, v in desired.items() if pod.annotations.get(k) != v}


@dataclass
class TokenBucket:
    rate: float
    burst: float
    _tokens: float = 0.0
    _last: float | None = None

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            if self._last is None:
                self._tokens = self.burst
            else:
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self.rate)


SLICE_S = 0.005
"""The longest the verdict scan holds the event loop before it lets waiting requests in."""
_NODES_PER_CHECK = 8  # nodes evaluated between two looks at the clock: ~4 us when their fits are cached, 15 ms cold


class Annotator:
    def __init__(
        self,
        view: ClusterView,
        writer: PodWriter,
        metrics: Metrics,
        *,
        policy: PolicyConfig,
        rate: float,
        scan_interval_s: float,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        error_backoff: Backoff | None = None,
    ) -> None:
        self.view = view
        self.writer = writer
        self.metrics = metrics
        self.policy = policy
        self.bucket = TokenBucket(rate=rate, burst=2 * rate)
        self.scan_interval_s = scan_interval_s
        self.now = now
        self.error_backoff = error_backoff or Backoff()
        """The pause after a scan that raised: doubling while failures repeat, from the start after a calm."""
        self._poked = asyncio.Event()
        self._verdicts: dict[tuple[PodDemand, PodPlacement], ClusterVerdict] = {}
        """Per demand and placement (tolerations, selectors): pods that may use other nodes get other verdicts."""
        self._evaluated_generation = -1
        self.relayout_notes: Callable[[PodInfo], RelayoutNote | None] | None = None
        """Set when the re-layout controller runs: names the node being re-partitioned for a pod."""
        self.active: Callable[[], bool] | None = None
        """Set with leader election: only the replica holding the Lease writes, so replicas never flap."""

    def poke(self, uid: str = "") -> None:
        """A filter found no node for a pod: evaluate soon rather than at the next scan."""
        self._poked.set()

    async def run(self) -> None:
        """Scan until cancelled; a scan that raises is logged and counted, and the next follows a backoff."""
        await run_supervised(
            self._wait_and_scan, what="verdict scan", on_error=self._count_error, after_error=self.error_backoff.wait
        )

    async def _wait_and_scan(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._poked.wait(), timeout=self.scan_interval_s)
        self._poked.clear()
        await self.scan_once()

    def _count_error(self) -> None:
        self.metrics.background_errors.labels("annotator").inc()

    async def scan_once(self) -> None:
        if self.active is not None and not self.active():
            return
        pending = [p for p in self.view.pending_mig_pods() if not p.demand_error]
        generation = self.view.generation
        if generation != self._evaluated_generation:
            keys = sorted({(p.demand, p.placement) for p in pending}, key=lambda k: k[0].text())
            nodes = list(self.view.node_states())  # immutable: the view may change while they are evaluated
            infos = dict(self.view.nodes)
            self._verdicts = await self._evaluate(keys, nodes, infos, self.view.mig_parted)
            # Only now: a scan that raised is evaluated again by the next, and a change meanwhile is seen then.
            self._evaluated_generation = generation
        self._export(pending)
        stamp = self.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        for pod in pending:
            # The evaluation and every write give the loop back: the pod may have been bound or deleted since.
            current = self.view.pods.get(pod.uid)
            if current is None or not current.is_pending_mig or current.demand_error:
                continue
            verdict = self.verdict_for(current)
            if verdict is not None:
                await self._write(current, verdict, stamp)
        # Bound pods keep no verdict.
        for uid in list(self.view.pods):
            current = self.view.pods.get(uid)  # as now, not as when the loop started (it yields at each write)
            if current is not None and current.node_name and VERDICT in current.annotations:
                await self._write(current, None, stamp)

    def verdict_for(self, pod: PodInfo) -> ClusterVerdict | None:
        """The last evaluation's verdict for the pod's demand and placement (None: not evaluated yet)."""
        return self._verdicts.get((pod.demand, pod.placement))

    async def _evaluate(
        self,
        keys: list[tuple[PodDemand, PodPlacement]],
        nodes: list[NodeState],
        infos: Mapping[str, NodeInfo],
        mig_parted: MigPartedConfig,
    ) -> dict[tuple[PodDemand, PodPlacement], ClusterVerdict]:
        """Each demand's verdict over the ``nodes`` its placement admits, yielding to the event loop after every
        ``SLICE_S`` of work. kube-scheduler filters taints, cordons and node affinity before the extender's
        ``/filter`` sees a node; this scan sees every node, so it applies the same rules itself."""
        verdicts: dict[tuple[PodDemand, PodPlacement], ClusterVerdict] = {}
        started = time.perf_counter()
        for demand, placement in keys:
            search = VerdictSearch(demand, self.policy)
            for first in range(0, len(nodes), _NODES_PER_CHECK):
                usable = [n for n in nodes[first : first + _NODES_PER_CHECK] if infos[n.name].admits(placement)]
                if search.add(usable):
                    break
                if time.perf_counter() - started >= SLICE_S:
                    await asyncio.sleep(0)
                    started = time.perf_counter()
            verdicts[(demand, placement)] = search.verdict(mig_parted)
            if time.perf_counter() - started >= SLICE_S:
                await asyncio.sleep(0)
                started = time.perf_counter()
        return verdicts

    def _export(self, pending: list[PodInfo]) -> None:
        self.metrics.pending_demand.clear()
        for pod in pending:
            verdict = self.verdict_for(pod)
            label = str(verdict.verdict) if verdict else "unknown"
            for name, count in pod.demand.mig:
                self.metrics.pending_demand.labels(name, label).inc(count)

    async def _write(self, pod: PodInfo, verdict: ClusterVerdict | None, stamp: str) -> None:
        note = self.relayout_notes(pod) if self.relayout_notes is not None and verdict is not None else None
        changes = patch_for(pod, desired_annotations(pod, verdict, stamp, note))
        if not changes:
            return
        await self.bucket.take()
        try:
            await self.writer.patch_annotations(pod, changes)
            self.metrics.annotation_patches.labels("ok").inc()
        except Exception as exc:  # a failed patch is retried at the next scan; it must not stop the loop
            self.metrics.annotation_patches.labels("error").inc()
            log.warning("patching %s failed: %s", pod.key, exc)
            return
        if verdict is not None and verdict.verdict in EVENT_REASONS and VERDICT in changes:
            reason, kind = EVENT_REASONS[verdict.verdict]
            try:
                await self.writer.post_event(pod, reason, kind, f"{pod.demand.text()}: {verdict.reason}")
                self.metrics.events_posted.labels(reason, "ok").inc()
            except Exception as exc:  # events are best effort
                self.metrics.events_posted.labels(reason, "error").inc()
                log.warning("event for %s failed: %s", pod.key, exc)
