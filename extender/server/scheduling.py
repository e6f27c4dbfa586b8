"""Filter and prioritize over the cluster view: the extender's answers, computed once per request.

Per request the pod's demand is parsed once, and each node's fit is computed once; prioritize reuses the
fits that filter computed for the same pod while the node's state object is unchanged (the view replaces
a node's state object whenever anything about the node changes, so identity is a safe cache key).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache, TTLCache

from ..metrics import Metrics
from ..model.catalog import MODELS
from ..model.demand import DemandError, PodDemand, pod_demand
from ..model.fit import Allocator, FitResult
from ..model.fragmentation import DemandDistribution, parse_mix
from ..model.policy import Outcome, PolicyConfig, evaluate, outcome_of, scores
from ..model.scoring import scorer_named
from ..model.state import NodeState
from ..settings import Settings
from ..view.objects import NodeInfo, ObjectError
from ..view.store import ClusterView
from .wire import BadRequest, ExtenderArgs, filter_result, host_priorities

log = logging.getLogger(__name__)

UNKNOWN_NODE = "MIG: node not yet in the extender's view"
WEIGHTS_REFRESH_S = 5.0  # the demand mix moves over minutes; scores may lag it by this much


def shape_of_profile_name(name: str) -> str | None:
    """The model-independent shape (``3g``, ``1g.2slot``...) of a profile name, from the first model knowing it."""
    for model in MODELS:
        profile = model.find_profile(name)
        if profile is not None:
            return model.shape_of(profile)
    return None


def _uid_of(pod: Mapping[str, Any]) -> str:
    metadata = pod.get("metadata") or {}
    return str(metadata.get("uid") or f"{metadata.get('namespace', 'default')}/{metadata.get('name')}")


@dataclass(frozen=True, slots=True)
class _Request:
    """Per-request state, computed once (kube-scheduler's CycleState)."""

    uid: str
    demand: PodDemand
    states: list[NodeState | None]


class SchedulingService:
    def __init__(
        self,
        view: ClusterView,
        settings: Settings,
        metrics: Metrics,
        *,
        on_unschedulable: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.view = view
        self.metrics = metrics
        self.policy = PolicyConfig(dynamic_allocator=Allocator(settings.dynamic_allocator))
        self.scorer = scorer_named(settings.scoring)
        self.distribution = DemandDistribution(
            prior=parse_mix(settings.demand_prior),
            prior_weight=settings.demand_prior_weight,
            half_life_s=settings.demand_half_life_s,
        )
        self.on_unschedulable = on_unschedulable or (lambda uid: None)
        self.clock = clock
        self._observed: TTLCache[str, bool] = TTLCache(maxsize=100_000, ttl=3600, timer=clock)
        self._weights: Mapping[str, float] | None = None
        self._weights_at = 0.0
        self._score_memos: LRUCache[PodDemand, dict[int, float]] = LRUCache(maxsize=256)
        self._fit_memos: LRUCache[PodDemand, dict[int, FitResult]] = LRUCache(maxsize=256)

    # --- shared steps --------------------------------------------------------------------------------

    def _prepare(self, args: ExtenderArgs) -> _Request:
        try:
            demand = pod_demand(args.pod)
        except DemandError as exc:
            raise BadRequest(f"ExtenderArgs.Pod: {exc}") from None
        uid = _uid_of(args.pod)
        if args.nodes is not None:
            states: list[NodeState | None] = []
            for raw in args.nodes:
                try:
                    states.append(self.view.node_state_for(NodeInfo.from_raw(raw)))
                except ObjectError as exc:
                    raise BadRequest(f"ExtenderArgs.Nodes.items: {exc}") from None
        else:
            states = self.view.node_states_for(args.candidate_names())
        return _Request(uid, demand, states)

    def _observe(self, request: _Request) -> None:
        """Learn the demand mix from each pod once (kube-scheduler retries pods many times)."""
        if request.uid in self._observed or not request.demand.mig:
            return
        self._observed[request.uid] = True
        now = self.clock()
        for name, count in request.demand.mig:
            shape = shape_of_profile_name(name)
            if shape:
                self.distribution.observe(shape, count, now)

    def _fits(self, request: _Request) -> list[FitResult | None]:
        """One fit per distinct node state and demand, remembered across requests (states repeat)."""
        memo = self._fit_memos.get(request.demand)
        if memo is None or len(memo) > 200_000:
            memo = self._fit_memos[request.demand] = {}
        results: list[FitResult | None] = []
        append = results.append
        for state in request.states:
            if state is None:
                append(None)
                continue
            result = memo.get(state.state_id)
            if result is None:
                result = memo[state.state_id] = evaluate(state, request.demand, self.policy)
            append(result)
        return results

    # --- verbs ---------------------------------------------------------------------------------------

    def filter(self, args: ExtenderArgs) -> dict[str, Any]:
        # A new scheduling attempt: whatever this pod's last answer made the view assume is void.
        self.view.unassume(_uid_of(args.pod))
        request = self._prepare(args)
        names = args.candidate_names()
        self.metrics.nodes_per_request.labels("filter").observe(len(names))
        if not request.demand.mig and not request.demand.gpus:
            return filter_result(args, range(len(names)), {}, {})
        self._observe(request)
        passed: list[int] = []
        failed: dict[str, str] = {}
        unresolvable: dict[str, str] = {}
        counts: Counter[tuple[str, str]] = Counter()
        # Outcome per distinct node state; the per-node loop only files names.
        outcomes: dict[int, tuple[Outcome, FitResult]] = {}
        for index, (name, result) in enumerate(zip(names, self._fits(request))):
            if result is None:
                failed[name] = UNKNOWN_NODE
                counts[(str(Outcome.UNSCHEDULABLE), "unknown-node")] += 1
                continue
            known = outcomes.get(id(result))
            if known is None:
                known = outcomes[id(result)] = (outcome_of(result), result)
            outcome = known[0]
            if outcome is Outcome.SUCCESS:
                passed.append(index)
            elif outcome is Outcome.UNSCHEDULABLE:
                failed[name] = result.reason
            else:
                unresolvable[name] = result.reason
            counts[(outcome, result.verdict)] += 1
        for (outcome_label, verdict), count in counts.items():
            self.metrics.filter_outcomes.labels(str(outcome_label), str(verdict)).inc(count)
        if not passed:
            self.on_unschedulable(request.uid)
        elif len(passed) == 1:
            # kube-scheduler binds a single feasible node without calling prioritize.
            self._assume(request, names[passed[0]])
        return filter_result(args, passed, failed, unresolvable)

    def prioritize(self, args: ExtenderArgs) -> list[dict[str, Any]]:
        request = self._prepare(args)
        names = args.candidate_names()
        self.metrics.nodes_per_request.labels("prioritize").observe(len(names))
        if not request.demand.mig and not request.demand.gpus:
            return host_priorities(names, [0] * len(names))
        weights, memo = self._scoring_state(request.demand)
        candidates = []
        positions = []
        for index, (state, result) in enumerate(zip(request.states, self._fits(request))):
            if state is not None and result is not None:
                candidates.append((state, result))
                positions.append(index)
        node_scores = [0] * len(names)
        for index, score in zip(positions, scores(candidates, self.scorer, weights, memo)):
            node_scores[index] = score
        best = max(range(len(names)), key=lambda i: node_scores[i], default=None)
        if best is not None and candidates and any(r.fits_now for _, r in candidates):
            self._assume(request, names[best])
        return host_priorities(names, node_scores)

    def _scoring_state(self, demand: PodDemand) -> tuple[Mapping[str, float], dict[int, float]]:
        """The demand mix, refreshed every few seconds, and the raw scores already known under it.

        Between two pods only the nodes they touched change state, so raw scores of the rest carry over.
        """
        now = self.clock()
        if self._weights is None or now - self._weights_at >= WEIGHTS_REFRESH_S:
            self._weights, self._weights_at = self.distribution.weights(now), now
            self._score_memos.clear()
        memo = self._score_memos.get(demand)
        if memo is None:
            memo = self._score_memos[demand] = {}
        if len(memo) > 200_000:
            memo.clear()
        return self._weights, memo

    def _assume(self, request: _Request, node: str) -> None:
        if request.demand.mig or request.demand.gpus:
            self.view.assume(request.uid, node, request.demand)

    def weights(self) -> Mapping[str, float]:
        return self.distribution.weights(self.clock())
