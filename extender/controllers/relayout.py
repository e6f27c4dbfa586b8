"""The re-layout controller: re-partition idle GPUs, through NVIDIA's MIG Manager, to fit what is waiting.

Every ``interval_s`` the leader (see :mod:`.leader`) reconciles:

1. **Idle history** (every replica): since when each GPU has had no used instance, from the cluster view.
2. **Follow** the re-layouts in progress, whose state lives on the node (so a new leader resumes them):
   the taint ``mig-extender.io/relayout:NoSchedule``, the label ``mig-extender.io/relayout`` (``tainted``
   or ``applying``) and annotations ``mig-extender.io/relayout-*`` (config, previous config, start, GPUs).

   - ``tainted``: after ``settle_s`` (pods kube-scheduler chose before the taint have bound by then) the
     node is re-checked from the API server, not the view: its pods, its layout annotation. A GPU to be
     changed that has a used instance now, or a pod the extender assumed onto the node, aborts the
     re-layout (taint removed, label untouched). Otherwise ``nvidia.com/mig.config`` is set to the
     generated config (phase ``applying``).
   - ``applying``: ``nvidia.com/mig.config.state`` as MIG Manager sets it: ``pending``/``rebooting`` wait;
     ``success`` (after ``pending`` was seen, or with allocatable equal to the new layout) removes the
     taint; ``failed``, or no success within ``timeout_s`` of the start, restores the previous label and
     removes the taint. Someone else changing the label ends it without a restore.
3. **Collect garbage**: generated configs (``mig-extender-*``) that no node label and no re-layout in
   progress references are removed from the mig-parted ConfigMap.
4. **Plan** for pending pods whose verdict annotation is ``relayout`` (oldest first) over candidate nodes:
   wholly idle nodes (each GPU idle for ``min_idle_s``), or with ``single_gpus`` also idle GPUs of busy
   nodes whose exact layout is known; not cordoned, with no taint the pods do not tolerate, not in cool-down,
   MIG Manager at ``success``. In ``plan-only`` mode the plans are only exported and named in the pods'
   annotations; ``on`` starts them, within ``max_concurrent`` and ``max_per_hour``: generated config
   written into the ConfigMap (resourceVersion, retried on conflict), then the node tainted and labelled
   ``tainted``.
5. **Rebalance** (``rebalance``), when no pod waits and no re-layout is in progress: one candidate
   re-partitioned toward the expected demand mix if that lowers the mismatch between the cluster's free
   instances and the mix (:func:`~extender.model.relayout.plan_rebalance`), under the same limits.

Every step is an Event on the node and on the pods it is for, and a count in :class:`RelayoutStats`.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import logging
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..kube.api import ClusterApi
from ..kube.errors import ApiError, Conflict
from ..kube.events import node_reference, pod_reference
from ..kube.names import (
    MIG_CONFIG_LABEL,
    MIG_CONFIG_STATE_LABEL,
    RELAYOUT_CONFIG_ANNOTATION,
    RELAYOUT_FINISHED_LABEL,
    RELAYOUT_FOR_ANNOTATION,
    RELAYOUT_GPUS_ANNOTATION,
    RELAYOUT_OUTCOME_ANNOTATION,
    RELAYOUT_PHASE_LABEL,
    RELAYOUT_PREVIOUS_ANNOTATION,
    RELAYOUT_STARTED_ANNOTATION,
    RELAYOUT_TAINT,
    SINCE_ANNOTATION,
    VERDICT_ANNOTATION,
)
from ..kube.retry import attempts
from ..kube.times import parse_time
from ..model.layouts import layout_counts
from ..model.migparted import MigPartedError, parse_config
from ..model.policy import PolicyConfig, evaluate
from ..model.relayout import PlannerConfig, RelayoutPlan, free_supply, plan_rebalance, plan_relayouts
from ..model.state import Fidelity, GpuState, MigStrategy, NodeState
from ..notify.annotator import RelayoutNote
from ..settings import RelayoutSettings
from ..view.objects import NodeInfo, ObjectError, PodInfo
from ..view.sources import build_node_state, usage_of
from ..view.store import ClusterView
from .loop import reconcile_forever

log = logging.getLogger(__name__)

GENERATED_PREFIX = "mig-extender-"
LABEL_VALUE_LIMIT = 63
CONFLICT_RETRIES = 5
EVENT_ACTION = "Relayout"
_POLICY = PolicyConfig()  # static GPUs only: the kubelet allocator


class Phase(enum.StrEnum):
    TAINTED = "tainted"
    APPLYING = "applying"


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    FAILED = "failed"
    TIMEOUT = "timeout"
    ABORTED = "aborted"
    """A GPU to change was busy at the re-check, or the node was taken over by someone else."""


@dataclass
class RelayoutStats:
    """What metrics export (the controller imports no metrics library)."""

    started: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    """Plans not started, by reason: concurrency, rate, no-configmap, node-changed, conflict."""
    planned: int = 0
    """Plans of the last reconcile (what plan-only mode would do)."""
    in_progress: int = 0
    configs_collected: int = 0
    errors: int = 0


@dataclass
class InFlight:
    node: str
    config: str
    previous: str | None
    started: datetime.datetime
    gpus: tuple[int, ...]
    phase: Phase
    pods: tuple[str, ...] = ()
    """Keys (namespace/name) of the pods it is for."""
    target: NodeState | None = None
    """The node's state once the layout is applied (None after a restart: the view's is used)."""
    counts: dict[str, int] | None = None
    """Allocatable ``nvidia.com/mig-*`` counts of the new layout."""
    seen_pending: bool = False


# --- generated configs ---------------------------------------------------------------------------------


def device_entries(state: NodeState, plan: RelayoutPlan) -> list[dict[str, Any]]:
    """Per-device mig-parted entries: the plan's GPUs with their new layout, the others as they are.

    Repeating the other GPUs' current layout makes mig-parted leave them alone (it skips devices already
    in their desired state); that is what lets one GPU change on a busy node.
    """
    new = {g.gpu_index: g.layout for g in plan.gpus}
    entries: list[dict[str, Any]] = []
    for gpu in sorted(state.gpus, key=lambda g: g.index):
        if gpu.index in new:
            entries.append({"devices": [gpu.index], "mig-enabled": True, "mig-devices": layout_counts(new[gpu.index])})
        elif not gpu.mig_enabled:
            entries.append({"devices": [gpu.index], "mig-enabled": False})
        else:
            placements = [i.placement for i in gpu.instances]
            entries.append({"devices": [gpu.index], "mig-enabled": True, "mig-devices": layout_counts(placements)})
    return entries


def generated_name(node: str, entries: Sequence[Mapping[str, Any]]) -> str:
    """``mig-extender-<node>-<hash>``, a valid label value (63 characters at most, alphanumeric ends)."""
    digest = hashlib.sha256((node + "\n" + yaml.safe_dump(list(entries), sort_keys=True)).encode()).hexdigest()[:8]
    room = LABEL_VALUE_LIMIT - len(GENERATED_PREFIX) - len(digest) - 1
    middle = re.sub(r"[^A-Za-z0-9_.-]", "-", node)[:room].strip("-_.")
    return f"{GENERATED_PREFIX}{middle}-{digest}" if middle else f"{GENERATED_PREFIX}{digest}"


def target_counts(entries: Sequence[Mapping[str, Any]], state: NodeState) -> dict[str, int]:
    """``nvidia.com/mig-<profile>`` counts the device plugin advertises under the entries (mixed strategy)."""
    counts: Counter[str] = Counter()
    models = {g.index: g.model for g in state.gpus}
    for entry in entries:
        for name, count in (entry.get("mig-devices") or {}).items():
            model = models[entry["devices"][0]]
            counts[model.profile(name).resource_name] += count
    return dict(counts)


def _timestamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _label_time(moment: datetime.datetime) -> str:
    """A time as a label value (no colons): ``20260101T120000Z``."""
    return moment.astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


def _parse_label_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return datetime.datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


def _is_gpu_pod(raw: Mapping[str, Any]) -> bool:
    try:
        pod = PodInfo.from_raw(raw)
    except ObjectError:
        return True  # unreadable: count it as busy, never as idle
    return pod.is_active and bool(pod.demand.mig or pod.demand.gpus or pod.demand_error)


def _our_taint(taint: Mapping[str, Any]) -> bool:
    return taint.get("key") == RELAYOUT_TAINT


def _still_startable(raw: Mapping[str, Any], pods: Sequence[PodInfo]) -> bool:
    """The node as the API server has it now still takes the plan: planning read the view, which may lag.

    Its filtering taints (the re-layout's own left out, see ``NodeInfo.taints``) are judged as kube-scheduler
    would for the pods it is for, so a GPU pool tainted for GPU pods is re-partitioned for the pods that
    tolerate the taint. A rebalance is for no pod: any filtering taint keeps the node as it is.
    """
    try:
        info = NodeInfo.from_raw(raw)
    except ObjectError:
        return False
    if info.unschedulable or RELAYOUT_PHASE_LABEL in info.labels:
        return False
    return all(info.admits(p.placement) for p in pods) if pods else not info.taints


class RelayoutController:
    def __init__(
        self,
        view: ClusterView,
        api: ClusterApi,
        config: RelayoutSettings,
        *,
        weights: Callable[[], Mapping[str, float]],
        is_leader: Callable[[], bool] = lambda: True,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        if config.mode not in ("plan-only", "on"):
            raise ValueError(f"relayout mode {config.mode!r} is not plan-only or on")
        self.view = view
        self.api = api
        self.config = config
        self.weights = weights
        self.is_leader = is_leader
        self.now = now
        self.stats = RelayoutStats()
        self.in_flight: dict[str, InFlight] = {}
        self.idle_since: dict[tuple[str, int], datetime.datetime] = {}
        self.finished: dict[str, datetime.datetime] = {}
        self.starts: deque[datetime.datetime] = deque()
        self.notes: dict[str, RelayoutNote] = {}
        self.plans: list[RelayoutPlan] = []
        """The last reconcile's plans (in plan-only mode, what it would do)."""

    # --- the loop ----------------------------------------------------------------------------------------

    async def run(self) -> None:
        await reconcile_forever(self.reconcile, self.config.interval_s, self._count_error, "re-layout")

    def _count_error(self) -> None:
        self.stats.errors += 1

    def note_for(self, pod: PodInfo) -> RelayoutNote | None:
        return self.notes.get(pod.uid)

    async def reconcile(self) -> None:
        self._observe_idle()
        if not self.is_leader():
            self.in_flight.clear()  # the leader owns them; taken up again from the nodes when leading
            self.notes.clear()
            self.stats.in_progress = 0
            return
        if self.config.mode == "on":
            await self._recover()
            for item in list(self.in_flight.values()):
                await self._follow(item)
            await self._collect_garbage()
        await self._plan()
        self.stats.in_progress = len(self.in_flight)

    # --- idle history ------------------------------------------------------------------------------------

    def _observe_idle(self) -> None:
        now = self.now()
        seen = set()
        for state in self.view.node_states():
            for gpu in state.gpus:
                key = (state.name, gpu.index)
                if gpu.is_idle and not gpu.dynamic:
                    self.idle_since.setdefault(key, now)
                    seen.add(key)
        for key in [k for k in self.idle_since if k not in seen]:
            del self.idle_since[key]

    def _idle_long_enough(self, node: str, gpu: GpuState) -> bool:
        since = self.idle_since.get((node, gpu.index))
        return since is not None and (self.now() - since).total_seconds() >= self.config.min_idle_s

    # --- planning ------------------------------------------------------------------------------------------

    def _in_cooldown(self, info: NodeInfo) -> bool:
        finished = self.finished.get(info.name) or _parse_label_time(info.labels.get(RELAYOUT_FINISHED_LABEL))
        return finished is not None and (self.now() - finished).total_seconds() < self.config.cooldown_s

    def _candidates(self) -> tuple[list[NodeState], dict[str, set[int]]]:
        """Nodes that may be re-partitioned, and their idle GPUs that may not (idle for too short a time).

        Nodes in equal states are interchangeable: a few of each (as many as may start at once) are enough.
        """
        candidates: list[NodeState] = []
        frozen: dict[str, set[int]] = {}
        per_state: Counter[int] = Counter()
        for name, info in sorted(self.view.nodes.items()):
            if (
                info.unschedulable
                or RELAYOUT_PHASE_LABEL in info.labels
                or name in self.in_flight
                or self._in_cooldown(info)
            ):
                continue
            if info.labels.get(MIG_CONFIG_STATE_LABEL, "success") != "success":
                continue  # MIG Manager is busy with it, or failed on it
            state = self.view.node_state(name)
            if state is None or not state.gpus or state.dynamic or state.strategy is not MigStrategy.MIXED:
                continue
            if per_state[state.state_id] >= max(1, self.config.max_concurrent):
                continue
            waiting = {g.index for g in state.gpus if g.is_idle and not self._idle_long_enough(name, g)}
            if state.is_idle and not waiting:
                per_state[state.state_id] += 1
                candidates.append(state)
            elif self.config.single_gpus and state.fidelity is Fidelity.EXACT and any(g.is_idle for g in state.gpus):
                # Which GPU a pod holds is known only from the node agent's annotation: never guessed.
                per_state[state.state_id] += 1
                candidates.append(state)
                frozen[name] = waiting
        return candidates, frozen

    def _waiting(self) -> list[PodInfo]:
        pods = [
            p
            for p in self.view.pending_mig_pods()
            if not p.demand_error and p.annotations.get(VERDICT_ANNOTATION) == "relayout" and p.demand.mig
        ]
        return sorted(pods, key=lambda p: (p.annotations.get(SINCE_ANNOTATION, ""), p.key))

    def _targets(self) -> dict[str, NodeState]:
        targets = {}
        for name, item in self.in_flight.items():
            state = item.target or self.view.node_state(name)
            if state is not None:
                targets[name] = state
        return targets

    def _usable(self, pod: PodInfo, name: str) -> bool:
        """kube-scheduler would let the pod onto the node: its taints, cordon and the pod's node affinity."""
        info = self.view.nodes.get(name)
        return info is not None and info.admits(pod.placement)

    def _assign(self, pods: Iterable[PodInfo], targets: dict[str, NodeState]) -> dict[str, str]:
        """Pods (uid) that the target states host, each on the first node it may use where it fits, in order."""
        states = dict(targets)
        assigned = {}
        for pod in pods:
            for name, state in states.items():
                if not self._usable(pod, name):
                    continue
                result = evaluate(state, pod.demand, _POLICY)  # cached by state: cheap over many nodes
                if not result.fits_now:
                    continue
                states[name] = state.with_used((p.gpu_index, p.placement) for p in result.plan)
                assigned[pod.uid] = name
                break
        return assigned

    async def _plan(self) -> None:
        waiting = self._waiting()
        targets = self._targets()
        hosted = self._assign(waiting, targets)
        notes = {uid: RelayoutNote(node, self.in_flight[node].config) for uid, node in hosted.items()}
        # A verdict annotation may lag behind: pods that some node hosts now need no re-layout.
        nodes = list(self.view.node_states())
        hosted_now = self._assign([p for p in waiting if p.uid not in hosted], {n.name: n for n in nodes})
        rest = [p for p in waiting if p.uid not in hosted and p.uid not in hosted_now]
        self.plans = []
        # At the concurrency or rate limit nothing could start: do not plan (plan-only always plans).
        may_plan = self.config.mode == "plan-only" or self._may_start() is None
        if rest and may_plan:
            candidates, frozen = self._candidates()
            planner = PlannerConfig(whole_nodes_only=not self.config.single_gpus, max_plans=4)
            supply = free_supply(nodes)
            usable = [{c.name for c in candidates if self._usable(p, c.name)} for p in rest]
            plans = plan_relayouts(
                candidates, [p.demand for p in rest], self.weights(), supply, planner, frozen, usable
            )
            self.plans = plans
            by_name = {c.name: c for c in candidates}
            for plan in plans:
                state = by_name[plan.node]
                entries = device_entries(state, plan)
                name = generated_name(plan.node, entries)
                target = plan.apply(state)
                pods = [p for p in rest if p.uid not in notes]
                mine = self._assign(pods, {plan.node: target})
                for_pods = [p for p in pods if p.uid in mine]
                if self.config.mode == "plan-only":
                    for pod in for_pods:
                        notes[pod.uid] = RelayoutNote(plan.node, name, planned_only=True)
                    log.info("plan-only: would re-partition %s (%s) for %s", plan.node, name, _keys(for_pods))
                    continue
                started = await self._start(plan, state, target, entries, name, for_pods)
                if started:
                    for pod in for_pods:
                        notes[pod.uid] = RelayoutNote(plan.node, name)
        elif not rest and may_plan and self.config.rebalance and not self.in_flight:
            await self._rebalance(nodes)
        self.stats.planned = len(self.plans)
        self.notes = notes

    async def _rebalance(self, nodes: Sequence[NodeState]) -> None:
        """Nothing waits: one idle node (or GPU) re-partitioned toward the expected mix, if that helps."""
        candidates, frozen = self._candidates()
        planner = PlannerConfig(whole_nodes_only=not self.config.single_gpus, max_plans=1)
        self.plans = plan_rebalance(candidates, self.weights(), free_supply(nodes), planner, frozen)
        by_name = {c.name: c for c in candidates}
        for plan in self.plans:
            state = by_name[plan.node]
            entries = device_entries(state, plan)
            name = generated_name(plan.node, entries)
            if self.config.mode == "plan-only":
                log.info("plan-only: would re-partition %s (%s) toward the expected mix", plan.node, name)
                continue
            await self._start(plan, state, plan.apply(state), entries, name, ())

    # --- starting -------------------------------------------------------------------------------------------

    def _may_start(self) -> str | None:
        now = self.now()
        while self.starts and (now - self.starts[0]).total_seconds() >= 3600:
            self.starts.popleft()
        if len(self.in_flight) >= self.config.max_concurrent:
            return "concurrency"
        if len(self.starts) >= self.config.max_per_hour:
            return "rate"
        return None

    async def _start(
        self,
        plan: RelayoutPlan,
        state: NodeState,
        target: NodeState,
        entries: list[dict[str, Any]],
        name: str,
        pods: Sequence[PodInfo],
    ) -> bool:
        reason = self._may_start()
        if reason is not None:
            self.stats.skipped[reason] += 1
            return False
        node = plan.node
        raw = await self.api.get_node(node)
        labels = (raw.get("metadata") or {}).get("labels") or {}
        if not _still_startable(raw, pods):
            self.stats.skipped["node-changed"] += 1
            log.info("not re-partitioning %s: cordoned, a taint its pods do not tolerate, or in progress", node)
            return False
        if not await self._write_config(name, entries):
            return False
        previous = labels.get(MIG_CONFIG_LABEL)
        started = self.now()
        gpus = tuple(g.gpu_index for g in plan.gpus)
        taints = [*((raw.get("spec") or {}).get("taints") or []), {"key": RELAYOUT_TAINT, "effect": "NoSchedule"}]
        patch = {
            "metadata": {
                "resourceVersion": raw["metadata"]["resourceVersion"],
                "labels": {RELAYOUT_PHASE_LABEL: Phase.TAINTED.value},
                "annotations": {
                    RELAYOUT_CONFIG_ANNOTATION: name,
                    RELAYOUT_PREVIOUS_ANNOTATION: previous or "",
                    RELAYOUT_STARTED_ANNOTATION: _timestamp(started),
                    RELAYOUT_GPUS_ANNOTATION: ",".join(str(i) for i in gpus),
                    RELAYOUT_FOR_ANNOTATION: ", ".join(_keys(pods))[:1000],
                    RELAYOUT_OUTCOME_ANNOTATION: None,
                },
            },
            "spec": {"taints": taints},
        }
        try:
            await self.api.patch_node(node, patch)
        except Conflict:
            self.stats.skipped["conflict"] += 1
            return False
        self.in_flight[node] = InFlight(
            node,
            name,
            previous,
            started,
            gpus,
            Phase.TAINTED,
            tuple(_keys(pods)),
            target,
            target_counts(entries, state),
        )
        self.starts.append(started)
        self.stats.started += 1
        layout = "; ".join(f"GPU {g.gpu_index}: {_layout_text(g)}" for g in plan.gpus)
        purpose = "" if pods else " toward the expected demand mix"
        message = f"re-partitioning {layout} (config {name}){purpose}"
        await self._event_node(node, "MigRelayoutStarted", "Normal", message)
        for pod in pods:
            await self._event_pod(pod, "MigRelayoutStarted", "Normal", f"node {node} is being re-partitioned for it")
        log.info("re-layout of %s started: %s (config %s) for %s", node, layout, name, _keys(pods))
        return True

    async def _write_config(self, name: str, entries: list[dict[str, Any]]) -> bool:
        """Add the generated config to the mig-parted ConfigMap, keeping every other config."""
        try:  # the entries must read back as a valid config before MIG Manager sees them
            parse_config({"version": "v1", "mig-configs": {name: entries}})
        except MigPartedError as exc:
            log.error("generated config %s is invalid, not written: %s", name, exc)
            self.stats.skipped["invalid-config"] += 1
            return False

        def add(configs: dict[str, Any]) -> bool:
            configs[name] = entries
            return True

        return await self._update_configs(add)

    async def _update_configs(self, change: Callable[[dict[str, Any]], bool]) -> bool:
        ref = self.view.config_ref  # the ConfigMap the view reads layouts from
        async for _ in attempts(CONFLICT_RETRIES):
            config_map = await self.api.get_config_map(ref.namespace, ref.name)
            if config_map is None:
                self.stats.skipped["no-configmap"] += 1
                log.warning("ConfigMap %s/%s not found: MIG Manager's config is needed", ref.namespace, ref.name)
                return False
            data = dict(config_map.get("data") or {})
            try:
                document = yaml.safe_load(data.get(ref.key) or "") or {"version": "v1"}
            except yaml.YAMLError as exc:
                log.warning("ConfigMap %s/%s is not YAML, not changed: %s", ref.namespace, ref.name, exc)
                self.stats.skipped["invalid-configmap"] += 1
                return False
            if not isinstance(document, dict):
                self.stats.skipped["invalid-configmap"] += 1
                return False
            configs = dict(document.get("mig-configs") or {})
            if not change(configs):
                return True
            document["mig-configs"] = configs
            data[ref.key] = yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
            try:
                await self.api.replace_config_map(ref.namespace, ref.name, {**config_map, "data": data})
                return True
            except Conflict:
                continue  # changed since read: read again
        self.stats.skipped["conflict"] += 1
        return False

    # --- following -----------------------------------------------------------------------------------------

    async def _recover(self) -> None:
        """Take up re-layouts in progress that this replica does not know (after a restart or a new leader)."""
        for name, info in list(self.view.nodes.items()):
            if RELAYOUT_PHASE_LABEL not in info.labels or name in self.in_flight:
                continue
            raw = await self.api.get_node(name)
            annotations = (raw.get("metadata") or {}).get("annotations") or {}
            labels = (raw.get("metadata") or {}).get("labels") or {}
            if RELAYOUT_PHASE_LABEL not in labels:
                continue  # finished since the view saw it
            config = annotations.get(RELAYOUT_CONFIG_ANNOTATION)
            started = parse_time(annotations.get(RELAYOUT_STARTED_ANNOTATION))
            try:
                phase = Phase(labels.get(RELAYOUT_PHASE_LABEL, ""))
            except ValueError:
                phase = Phase.TAINTED
            if not config or started is None:
                # Half-written: nothing was applied yet (the label comes last). Undo the taint.
                item = InFlight(name, config or "", None, self.now(), (), Phase.TAINTED)
                await self._finish(item, Outcome.ABORTED, "re-layout state on the node is incomplete", restore=False)
                continue
            gpus = tuple(int(i) for i in (annotations.get(RELAYOUT_GPUS_ANNOTATION) or "").split(",") if i.isdigit())
            previous = annotations.get(RELAYOUT_PREVIOUS_ANNOTATION) or None
            pods = tuple(p for p in (annotations.get(RELAYOUT_FOR_ANNOTATION) or "").split(", ") if p)
            self.in_flight[name] = InFlight(name, config, previous, started, gpus, phase, pods)
            log.info("taking up the re-layout of %s (%s, phase %s)", name, config, phase)

    async def _follow(self, item: InFlight) -> None:
        elapsed = (self.now() - item.started).total_seconds()
        if item.phase is Phase.TAINTED:
            if elapsed >= self.config.settle_s:
                await self._recheck_and_apply(item)
            return
        info = self.view.nodes.get(item.node)
        if info is None:
            self.in_flight.pop(item.node, None)
            self.stats.outcomes[Outcome.ABORTED.value] += 1
            return
        if info.labels.get(MIG_CONFIG_LABEL) == item.config:
            state = info.labels.get(MIG_CONFIG_STATE_LABEL, "")
            if state in ("pending", "rebooting"):
                item.seen_pending = True
            if state == "failed":
                await self._finish(item, Outcome.FAILED, "MIG Manager reported nvidia.com/mig.config.state=failed")
                return
            if state == "success" and (item.seen_pending or self._allocatable_matches(info, item)):
                await self._finish(item, Outcome.SUCCESS, "MIG Manager applied the config")
                return
        elif info.labels.get(RELAYOUT_PHASE_LABEL) == Phase.APPLYING.value:
            await self._finish(item, Outcome.ABORTED, "nvidia.com/mig.config was changed by someone else")
            return
        if elapsed >= self.config.timeout_s:
            await self._finish(item, Outcome.TIMEOUT, f"MIG Manager did not report success within {elapsed:.0f} s")

    def _allocatable_matches(self, info: NodeInfo, item: InFlight) -> bool:
        if item.counts is None:  # taken up after a restart: the counts from the config itself
            item.counts = self._config_counts(item)
        mig = {k: v for k, v in info.allocatable.items() if k.startswith("nvidia.com/mig-") and v}
        return item.counts is not None and mig == item.counts

    def _config_counts(self, item: InFlight) -> dict[str, int] | None:
        state = self.view.node_state(item.node)
        if state is None:
            return None
        counts: Counter[str] = Counter()
        try:
            for gpu in state.gpus:
                spec = self.view.mig_parted.resolve(item.config, gpu.model, gpu.index)
                for profile, count in spec.counts if spec is not None else ():
                    counts[profile.resource_name] += count
        except MigPartedError:
            return None
        return dict(counts)

    async def _recheck_and_apply(self, item: InFlight) -> None:
        """Right before the label changes: are the GPUs to change still idle, by the API server's word?"""
        raw = await self.api.get_node(item.node)
        pods = [PodInfo.from_raw(p) for p in await self.api.pods_on_node(item.node) if _is_gpu_pod(p)]
        busy = await self._busy_gpus(raw, pods, item)
        if busy:
            await self._finish(item, Outcome.ABORTED, f"GPU(s) {busy} got a used instance", restore=False)
            return
        labels = (raw.get("metadata") or {}).get("labels") or {}
        if labels.get(MIG_CONFIG_STATE_LABEL) in ("pending", "rebooting"):
            return  # MIG Manager is still busy with an earlier change: wait
        patch = {
            "metadata": {
                "resourceVersion": raw["metadata"]["resourceVersion"],
                "labels": {MIG_CONFIG_LABEL: item.config, RELAYOUT_PHASE_LABEL: Phase.APPLYING.value},
            }
        }
        try:
            await self.api.patch_node(item.node, patch)
        except Conflict:
            return  # changed meanwhile: re-check at the next reconcile
        item.phase = Phase.APPLYING
        log.info("re-layout of %s: nvidia.com/mig.config=%s", item.node, item.config)

    async def _busy_gpus(self, raw: Mapping[str, Any], pods: Sequence[PodInfo], item: InFlight) -> list[int]:
        try:
            node = NodeInfo.from_raw(raw)
        except ObjectError:
            return list(item.gpus) or [-1]
        fresh = build_node_state(node, usage_of(p.demand for p in pods), self.view.mig_parted)
        seen = self.view.node_state(item.node)  # also counts placements the extender has just assumed there
        whole = not self.config.single_gpus or not item.gpus
        busy = set()
        for state in (fresh, seen):
            if state is None:
                continue
            if whole and (pods or not state.is_idle):
                busy |= {g.index for g in state.gpus if not g.is_idle} or {-1}
            busy |= {g.index for g in state.gpus if g.index in item.gpus and not g.is_idle}
        if self.config.single_gpus and fresh.fidelity is not Fidelity.EXACT and pods:
            busy.add(-1)  # the exact layout annotation is gone: which GPU a pod holds is a guess now
        return sorted(busy)

    async def _finish(self, item: InFlight, outcome: Outcome, why: str, *, restore: bool | None = None) -> None:
        """Remove the taint and the in-progress marks; on failure or timeout restore the previous label."""
        if restore is None:
            restore = outcome in (Outcome.FAILED, Outcome.TIMEOUT)
        finished = self.now()
        async for _ in attempts(CONFLICT_RETRIES):
            try:
                raw = await self.api.get_node(item.node)
            except ApiError as exc:
                if exc.status == 404:
                    break
                raise
            metadata = raw.get("metadata") or {}
            labels: dict[str, str | None] = {RELAYOUT_PHASE_LABEL: None, RELAYOUT_FINISHED_LABEL: _label_time(finished)}
            if restore and (metadata.get("labels") or {}).get(MIG_CONFIG_LABEL) == item.config:
                labels[MIG_CONFIG_LABEL] = item.previous
            taints = [t for t in (raw.get("spec") or {}).get("taints") or [] if not _our_taint(t)]
            patch = {
                "metadata": {
                    "resourceVersion": metadata["resourceVersion"],
                    "labels": labels,
                    "annotations": {
                        RELAYOUT_CONFIG_ANNOTATION: None,
                        RELAYOUT_PREVIOUS_ANNOTATION: None,
                        RELAYOUT_STARTED_ANNOTATION: None,
                        RELAYOUT_GPUS_ANNOTATION: None,
                        RELAYOUT_FOR_ANNOTATION: None,
                        RELAYOUT_OUTCOME_ANNOTATION: f"{outcome.value} {_timestamp(finished)} {item.config}: {why}"[
                            :1000
                        ],
                    },
                },
                "spec": {"taints": taints or None},
            }
            try:
                await self.api.patch_node(item.node, patch)
                break
            except Conflict:
                continue
        else:
            return  # still conflicting: the next reconcile tries again
        self.in_flight.pop(item.node, None)
        self.finished[item.node] = finished
        self.stats.outcomes[outcome.value] += 1
        restored = f"; nvidia.com/mig.config restored to {item.previous or '(none)'}" if restore else ""
        text = f"re-layout to {item.config} {outcome.value}: {why}{restored}"
        kind = "Normal" if outcome is Outcome.SUCCESS else "Warning"
        reason = {
            Outcome.SUCCESS: "MigRelayoutSucceeded",
            Outcome.FAILED: "MigRelayoutFailed",
            Outcome.TIMEOUT: "MigRelayoutFailed",
            Outcome.ABORTED: "MigRelayoutAborted",
        }[outcome]
        (log.info if outcome is Outcome.SUCCESS else log.warning)("%s: %s", item.node, text)
        await self._event_node(item.node, reason, kind, text)
        by_key = {p.key: p for p in self.view.pods.values()}
        for key in item.pods:
            pod = by_key.get(key)
            if pod is not None:
                await self._event_pod(pod, reason, kind, f"node {item.node}: {text}")

    # --- garbage -------------------------------------------------------------------------------------------

    async def _collect_garbage(self) -> None:
        referenced = {info.labels.get(MIG_CONFIG_LABEL) for info in self.view.nodes.values()}
        referenced |= {item.config for item in self.in_flight.values()}
        if not any(n.startswith(GENERATED_PREFIX) and n not in referenced for n in self.view.mig_parted.configs):
            return
        removed: list[str] = []

        def drop(configs: dict[str, Any]) -> bool:
            removed[:] = [n for n in configs if n.startswith(GENERATED_PREFIX) and n not in referenced]
            for name in removed:
                del configs[name]
            return bool(removed)

        if await self._update_configs(drop) and removed:
            self.stats.configs_collected += len(removed)
            log.info("removed generated mig-parted configs no node uses: %s", ", ".join(removed))

    # --- events --------------------------------------------------------------------------------------------

    async def _event_node(self, node: str, reason: str, kind: str, note: str) -> None:
        await self._event(node_reference(node), reason, kind, note)

    async def _event_pod(self, pod: PodInfo, reason: str, kind: str, note: str) -> None:
        await self._event(pod_reference(pod.namespace, pod.name, pod.uid), reason, kind, note)

    async def _event(self, regarding: Mapping[str, str], reason: str, kind: str, note: str) -> None:
        try:
            await self.api.post_event(regarding, reason, kind, note, EVENT_ACTION)
        except Exception as exc:  # events are best effort
            log.warning("event %s on %s %s failed: %s", reason, regarding["kind"], regarding["name"], exc)


def _keys(pods: Iterable[PodInfo]) -> list[str]:
    return [p.key for p in pods]


def _layout_text(relayout: Any) -> str:
    return " ".join(f"{n}x {p}" for p, n in layout_counts(relayout.layout).items())
