"""Filter and prioritize over the cluster view: the extender's answers, computed once per request.

Per request the pod's demand is parsed once and the candidate nodes are grouped by node state: nodes in
equal states (same GPUs, same use) get one fit and one score. Fits and raw scores are remembered per
demand and state id across requests, so that between two pods only the nodes that changed cost work.
Whole answers are kept too: kube-scheduler sends the same candidates pod after pod, so the last filter
answer for a demand is given again once the nodes that changed since (the view logs them) are checked,
and prioritize starts from the filter's request and rewrites only the scores that changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import operator
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from itertools import compress, repeat
from operator import attrgetter
from typing import Any, Generic, TypeVar

import orjson
from cachetools import TTLCache

from ..metrics import Metrics
from ..model.catalog import MODELS
from ..model.demand import DemandError, PodDemand, pod_demand
from ..model.dra.demand import ClaimKey
from ..model.fit import FitResult
from ..model.fragmentation import DemandDistribution, parse_mix
from ..model.policy import Outcome, PolicyConfig, evaluate, outcome_of, scores
from ..model.scoring import scorer_named
from ..model.state import NodeState
from ..settings import Settings
from ..view.objects import NodeInfo, ObjectError
from ..view.store import ClusterView
from .wire import BadRequest, BindingArgs, ExtenderArgs, filter_result, host_priorities

log = logging.getLogger(__name__)

UNKNOWN_NODE = "MIG: node not yet in the extender's view"
WEIGHTS_REFRESH_S = 5.0  # the demand mix moves over minutes; scores may lag it by this much
# Pods whose demand was learnt in the last hour, up to 8 new ones a second (kube-scheduler retries a pending pod
# at least every 5 minutes; one evicted earlier is counted again).
_OBSERVED_LIMIT = 30_000  # worst ~9 MB (~310 B per entry with a 36-character uid, measured)
# Fits and raw scores remembered per demand and node state id, bounded over all demands together: 8 demands over
# 10,000 distinct node states (the soak uses 6), or up to 64 demands over fewer.
_MEMO_DEMANDS = 64
_MEMO_STATES = 80_000  # per kind; worst ~19 MB of fits (~240 B per entry), ~10 MB of raw scores (~125 B), measured

# One object per distinct demand, shared by the fits' keys, the memos and assumed placements (each request parses
# its own: ~200 B that every fit the request adds to policy._FITS would keep alive).
_DEMANDS_LIMIT = 1_024  # worst ~0.3 MB (~270 B per entry, measured)

# Filter and prioritize answers kept per demand for the next pod with the same demand and candidates: ~1.2 MB
# and ~0.5 MB each at 5,000 candidates (names, answer, positions), so a few demands' worth.
_ANSWERS_LIMIT = 8

# Pods answered with a node to go to, until their bind (kube-scheduler binds within seconds of its answer, a few
# hundred pods a second at most; pods without MIG too, when every pod reaches the extender): their demand, and
# for claim pods their claims' keys.
_AWAITING_BIND_LIMIT = 20_000  # worst ~6 MB (~300 B per entry with a 36-character uid)

# Filters that waited for a bind in vain, in a row, before the extender stops waiting for binds (until one comes):
# kube-scheduler runs without the bind verb, and each further pod would wait bind_wait_s for nothing.
_TIMEOUTS_TO_STOP = 3

V = TypeVar("V")


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


UNKNOWN = -1  # state id standing for a node the view does not know
_STATE_ID = attrgetter("state_id")


def _reasons_where(names: list[str], ids: list[int], keep: list[bool], reasons: Mapping[int, str]) -> dict[str, str]:
    """Node name -> reason of its state, for the positions ``keep`` marks."""
    return dict(zip(compress(names, keep), map(reasons.__getitem__, compress(ids, keep))))


K = TypeVar("K")


def _keep_recent(table: dict[K, V], key: K, value: V) -> None:
    """``table[key] = value`` as the most recently used entry; least recently used ones beyond _ANSWERS_LIMIT go."""
    table.pop(key, None)
    table[key] = value
    while len(table) > _ANSWERS_LIMIT:
        del table[next(iter(table))]


class _Memos(Generic[V]):
    """Per-demand memos (node state id -> value), most recently used demand last; bounded in entries over all."""

    def __init__(self) -> None:
        self._by_demand: dict[PodDemand, dict[int, V]] = {}

    def __len__(self) -> int:
        """Entries over all demands."""
        return sum(map(len, self._by_demand.values()))

    def get(self, demand: PodDemand) -> dict[int, V]:
        """The demand's memo (empty for a new demand), now the most recently used."""
        memo = self._by_demand.pop(demand, None)
        if memo is None:
            memo = {}
        self._by_demand[demand] = memo
        return memo

    def trim(self, demand: PodDemand, live: Collection[int]) -> None:
        """Back within bounds after a request for ``demand`` (the most recently used): the least recently used
        demands' memos go first; if this one alone is still too large, it keeps only the request's ``live`` states."""
        total = len(self)
        while (total > _MEMO_STATES or len(self._by_demand) > _MEMO_DEMANDS) and len(self._by_demand) > 1:
            total -= len(self._by_demand.pop(next(iter(self._by_demand))))
        if total > _MEMO_STATES:
            memo = self._by_demand[demand]
            self._by_demand[demand] = dict(zip(live, map(memo.__getitem__, live)))

    def clear(self) -> None:
        self._by_demand.clear()


@dataclass(frozen=True, slots=True)
class _Request:
    """Per-request state, computed once (kube-scheduler's CycleState).

    ``ids`` holds each candidate's node state id, in request order; nodes in equal states share one
    entry of ``states`` and ``fits``. Per-node work is then done with C-level ``map``s over ``ids``.
    """

    uid: str
    demand: PodDemand
    ids: list[int]
    states: dict[int, NodeState]
    fits: dict[int, FitResult]


Signature = tuple[Outcome, str, str]
"""What a candidate contributes to a filter answer and its metrics: result code, reason, verdict label."""

_UNKNOWN_SIGNATURE: Signature = (Outcome.UNSCHEDULABLE, UNKNOWN_NODE, "unknown-node")


def _signature(request: _Request, sid: int) -> Signature:
    if sid == UNKNOWN:
        return _UNKNOWN_SIGNATURE
    fit = request.fits[sid]
    return (outcome_of(fit), fit.reason, str(fit.verdict))


@dataclass(slots=True)
class _FilterAnswer:
    """A filter answer for one demand and candidate list, computed at ``generation`` of the view.

    The answer depends on each candidate's signature only, so a later pod with the same demand and
    candidates gets it again unless a node that changed since now signs differently: typically one
    node changed (the last pod's), and its verdict did not.
    """

    generation: int
    names: list[str]
    request: _Request
    passes: list[bool]
    result: dict[str, Any]
    per_label: Counter[tuple[str, str]]
    positions: dict[str, int] | None = None
    """Candidate name -> position, built when a change first needs it."""
    uses: Counter[int] | None = None
    """Candidates per state id, built with ``positions``."""
    encoded: bytes | None = None
    """``result`` as JSON, once asked for (``result`` never changes: a changed answer is a new one)."""


class BindRefused(Exception):
    """The extender does not bind this pod to this node; the message says why (kube-scheduler shows it)."""


class SchedulingService:
    def __init__(
        self,
        view: ClusterView,
        settings: Settings,
        metrics: Metrics,
        *,
        on_unschedulable: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.view = view
        self.wall_clock = wall_clock
        """Reservations expire by the API server's wall-clock times."""
        self.metrics = metrics
        scoring = settings.scoring
        self.policy = PolicyConfig(dynamic_allocator=scoring.dynamic_allocator)
        self.scorer = scorer_named(scoring.strategy)
        self.distribution = DemandDistribution(
            prior=parse_mix(scoring.demand_prior),
            prior_weight=scoring.demand_prior_weight,
            half_life_s=scoring.demand_half_life_s,
        )
        self.on_unschedulable = on_unschedulable or (lambda uid: None)
        self.clock = clock
        self._observed: TTLCache[str, bool] = TTLCache(maxsize=_OBSERVED_LIMIT, ttl=3600, timer=clock)
        self._weights: Mapping[str, float] | None = None
        self._weights_at = 0.0
        self._score_memos: _Memos[float] = _Memos()
        self._fit_memos: _Memos[FitResult] = _Memos()
        self._demands: dict[PodDemand, PodDemand] = {}
        self._last: tuple[int, list[str], _Request] | None = None
        """The last filter's request narrowed to the nodes that passed, with the view's generation then."""
        self._hosts: dict[PodDemand, tuple[list[str], list[int], list[dict[str, Any]]]] = {}
        """The last prioritize answer per demand: names, scores and the list handed out (serialised before the
        next request), least recently used first."""
        self._answers: dict[PodDemand, _FilterAnswer] = {}
        """The last filter answer per demand (by candidate names), least recently used first."""
        self._awaiting_bind: TTLCache[str, tuple[PodDemand, tuple[ClaimKey, ...] | None]] = TTLCache(
            maxsize=_AWAITING_BIND_LIMIT, ttl=settings.view.assume_ttl_s, timer=clock
        )
        """Pods some node passed for, by uid: their demand and (claim pods) their claims' keys, for :meth:`bind`."""
        self._guesses: dict[str, float] = {}
        """Pods prioritize assumed on their best-scored node, by uid, with when: kube-scheduler may have chosen
        another node, which their bind will say (see :meth:`settle_binds`)."""
        self._no_guess = asyncio.Event()
        self._no_guess.set()
        self.bind_wait_s = settings.server.bind_wait_s
        self._binder = self.bind_wait_s > 0
        """kube-scheduler (presumably) calls the bind verb: guesses are settled by binds, worth waiting for."""
        self._timeouts = 0
        """Waits in a row that no bind ended."""

    # --- shared steps --------------------------------------------------------------------------------

    def _canonical(self, demand: PodDemand) -> PodDemand:
        """The first object seen equal to ``demand``."""
        found = self._demands.get(demand)
        if found is None:
            if len(self._demands) >= _DEMANDS_LIMIT:
                self._demands.clear()
            found = self._demands[demand] = demand
        return found

    def _demand_of(self, args: ExtenderArgs) -> PodDemand:
        """The pod's device-plugin resources, and its MIG claims read against the view's DRA objects."""
        try:
            plugin = pod_demand(args.pod)
        except DemandError as exc:
            raise BadRequest(f"ExtenderArgs.Pod: {exc}") from None
        return self._canonical(self.view.claim_reader.demand_of(args.pod, plugin))

    def _prioritize_request(self, args: ExtenderArgs) -> tuple[_Request, list[str]]:
        """The request, and its candidate names: the filter's own list when it is the filter's request (the
        same list object pod after pod while the filter answer is kept, so it compares by identity)."""
        demand = self._demand_of(args)
        uid = _uid_of(args.pod)
        if args.node_names is not None and self._last is not None:
            # kube-scheduler calls prioritize with the filter's pod and the nodes that passed: unless the view
            # changed in between, the filter's request holds them already, and thousands of names need not be
            # looked up twice.
            generation, passed, last = self._last
            self.view.expire_assumed()
            if (
                last.uid == uid
                and last.demand is demand
                and generation == self.view.generation
                and passed == args.node_names
            ):
                return last, passed
        return self._build_request(uid, demand, args), args.candidate_names()

    def _remember_passed(self, request: _Request, passed: list[str], passes: list[bool]) -> None:
        """Keep the filter's request, narrowed to the nodes that passed, for the prioritize that follows."""
        narrowed = _Request(
            request.uid, request.demand, list(compress(request.ids, passes)), request.states, request.fits
        )
        self._last = (self.view.generation, passed, narrowed)

    def _build_request(self, uid: str, demand: PodDemand, args: ExtenderArgs) -> _Request:
        if args.nodes is not None:
            # Full Node objects: read each (the view's own state when it has this version).
            try:
                candidates: list[NodeState | None] = [
                    self.view.node_state_for(NodeInfo.from_raw(raw)) for raw in args.nodes
                ]
            except ObjectError as exc:
                raise BadRequest(f"ExtenderArgs.Nodes.items: {exc}") from None
        else:
            candidates = self.view.node_states_for(args.candidate_names())
        if all(candidates):  # every node known: C-level maps (the common case)
            ids = list(map(_STATE_ID, candidates))
            states: dict[int, NodeState] = dict(zip(ids, candidates))  # type: ignore[arg-type]
        else:
            ids = [UNKNOWN if state is None else state.state_id for state in candidates]
            states = {sid: state for sid, state in zip(ids, candidates) if state is not None}
        fits = self._fit_states(demand, states) if not demand.is_empty else {}
        return _Request(uid, demand, ids, states, fits)

    def _observe(self, request: _Request) -> None:
        """Learn the demand mix from each pod once (kube-scheduler retries pods many times)."""
        demand = request.demand
        mig = demand.mig or (demand.claims.profiles.mig if demand.claims and demand.claims.profiles else ())
        if request.uid in self._observed or not mig:
            return
        self._observed[request.uid] = True
        now = self.clock()
        for name, count in mig:
            shape = shape_of_profile_name(name)
            if shape:
                self.distribution.observe(shape, count, now)

    def _fit_states(self, demand: PodDemand, states: Mapping[int, NodeState]) -> dict[int, FitResult]:
        """One fit per node state and demand, remembered across requests (states repeat)."""
        memo = self._fit_memos.get(demand)
        for sid in states.keys() - memo.keys():  # only states no earlier request saw
            memo[sid] = evaluate(states[sid], demand, self.policy)
        fits = dict(zip(states, map(memo.__getitem__, states)))
        self._fit_memos.trim(demand, states.keys())
        return fits

    def _fit_of(self, demand: PodDemand, sid: int, state: NodeState) -> FitResult:
        memo = self._fit_memos.get(demand)
        fit = memo.get(sid)
        if fit is None:
            fit = memo[sid] = evaluate(state, demand, self.policy)
        return fit

    # --- verbs ---------------------------------------------------------------------------------------

    def filter(self, args: ExtenderArgs) -> dict[str, Any]:
        return self._filter(args)[0]

    def filter_encoded(self, args: ExtenderArgs) -> orjson.Fragment:
        """The filter answer as JSON: a kept answer is encoded once, not again for every pod it is given to."""
        result, answer = self._filter(args)
        if answer is None:
            return orjson.Fragment(orjson.dumps(result))
        if answer.encoded is None:
            answer.encoded = orjson.dumps(result)
        return orjson.Fragment(answer.encoded)

    def _filter(self, args: ExtenderArgs) -> tuple[dict[str, Any], _FilterAnswer | None]:
        uid = _uid_of(args.pod)
        # A new scheduling attempt: whatever this pod's last answer made the view assume is void.
        self.view.unassume(uid)
        self._settled(uid)
        demand = self._demand_of(args)
        if demand.is_empty:
            if args.nodes is not None:
                self._build_request(uid, demand, args)  # the Node objects are read, and refused if malformed
            self.metrics.nodes_per_request.labels("filter").observe(len(args.candidate_names()))
            self._awaiting_bind[uid] = (demand, None)  # its bind, if the extender binds every pod
            return filter_result(args, repeat(True), {}, {}), None
        answer = self._answer_again(demand, args.node_names)
        if answer is None:
            answer = self._answer(self._build_request(uid, demand, args), args)
            if args.node_names is not None:
                _keep_recent(self._answers, demand, answer)
        names = answer.names
        self.metrics.nodes_per_request.labels("filter").observe(len(names))
        request = answer.request if answer.request.uid == uid else dataclasses.replace(answer.request, uid=uid)
        self._observe(request)
        for labels, count in answer.per_label.items():
            self.metrics.filter_outcomes.labels(*labels).inc(count)
        result, passes = answer.result, answer.passes
        if self.view.reservations:  # almost never: only while the defrag controller makes room for a pod
            kept_out = self._reserved_for_others(request, names, passes)
            if kept_out:
                passes = [ok and name not in kept_out for name, ok in zip(names, passes)]
                failed = {**result["FailedNodes"], **kept_out}
                result = filter_result(args, passes, failed, result["FailedAndUnresolvableNodes"])
                answer = None  # this pod's own answer: not the demand's to keep or to encode once
        feasible = passes.count(True)
        if not feasible:
            self.on_unschedulable(uid)
        else:
            keys = self.view.claim_reader.claim_keys(args.pod, uid) if request.demand.claims is not None else None
            self._awaiting_bind[uid] = (request.demand, keys)
            if feasible == 1:
                # kube-scheduler binds a single feasible node without calling prioritize.
                self._assume(request, names[passes.index(True)], args.pod)
        if result["NodeNames"] is not None:
            self._remember_passed(request, result["NodeNames"], passes)
        return result, answer

    def _reserved_for_others(self, request: _Request, names: list[str], passes: list[bool]) -> dict[str, str]:
        """Passing candidates where the defrag controller holds room for another pod, with the reason.

        The whole node is kept: which GPU a pod gets there is the device plugin's (or the DRA driver's) choice,
        so a pod let onto the node could take the reserved GPU. The waiting pod itself passes."""
        now = self.wall_clock()
        kept_out: dict[str, str] = {}
        for name, ok in zip(names, passes):
            if ok:
                held = [r for r in self.view.reservations.on(name).values() if r.pod_uid != request.uid]
                held = [r for r in held if r.holds(now)]
                if held:
                    kept_out[name] = "; ".join(r.text() for r in held) + ": kept free for it (docs/defrag.md)"
        return kept_out

    def _answer(self, request: _Request, args: ExtenderArgs) -> _FilterAnswer:
        """The filter answer computed afresh: result codes per node state, spread over the candidates."""
        names, ids = args.candidate_names(), request.ids
        signatures = {sid: _signature(request, sid) for sid in (*request.fits, UNKNOWN)}
        reasons = {sid: reason for sid, (_, reason, _) in signatures.items()}
        passing = {sid for sid, (outcome, _, _) in signatures.items() if outcome is Outcome.SUCCESS}
        resolvable = {sid for sid, (outcome, _, _) in signatures.items() if outcome is Outcome.UNSCHEDULABLE}
        passes = list(map(passing.__contains__, ids))
        failed: dict[str, str] = {}
        unresolvable: dict[str, str] = {}
        if passes.count(True) < len(ids):
            # Thousands of failing nodes are common: split them by result code with C-level maps.
            fails = list(map(operator.not_, passes))
            failing_ids, failing_names = list(compress(ids, fails)), list(compress(names, fails))
            resolvables = list(map(resolvable.__contains__, failing_ids))
            failed = _reasons_where(failing_names, failing_ids, resolvables, reasons)
            unresolvable = _reasons_where(failing_names, failing_ids, list(map(operator.not_, resolvables)), reasons)
        # Nodes per result code and verdict, summed per label pair (a few, against many node states).
        per_label: Counter[tuple[str, str]] = Counter()
        for sid, count in Counter(ids).items():
            outcome, _, verdict = signatures[sid]
            per_label[str(outcome), verdict] += count
        result = filter_result(args, passes, failed, unresolvable)
        return _FilterAnswer(self.view.generation, names, request, passes, result, per_label)

    def _answer_again(self, demand: PodDemand, names: list[str] | None) -> _FilterAnswer | None:
        """The last answer for this demand and these candidates, if no node changed since in a way that shows."""
        answer = self._answers.get(demand)
        if answer is None or names is None or answer.names != names:
            return None
        self.view.expire_assumed()
        changed = self.view.changed_since(answer.generation)
        if changed is None or (changed and not self._patch(answer, changed)):
            del self._answers[demand]
            return None
        answer.generation = self.view.generation
        _keep_recent(self._answers, demand, answer)
        return answer

    def _patch(self, answer: _FilterAnswer, changed: Collection[str]) -> bool:
        """Bring the answer's node states up to date; False if a changed candidate now signs differently."""
        if answer.positions is None or answer.uses is None:
            answer.positions = dict(zip(answer.names, range(len(answer.names))))
            answer.uses = Counter(answer.request.ids)
        old_request, ids, uses = answer.request, answer.request.ids, answer.uses
        # New dicts: the prioritize request handed out earlier keeps the ones it was given.
        request = _Request(old_request.uid, old_request.demand, ids, dict(old_request.states), dict(old_request.fits))
        for name in changed:
            position = answer.positions.get(name)
            if position is None:
                continue
            before = ids[position]
            state = self.view.node_state(name)
            after = UNKNOWN if state is None else state.state_id
            if after == before:
                continue
            if state is not None and after not in request.states:
                request.states[after] = state
                request.fits[after] = self._fit_of(request.demand, after, state)
            if _signature(request, after) != _signature(old_request, before):
                return False
            ids[position] = after
            uses[after] += 1
            uses[before] -= 1
            if not uses[before]:
                del uses[before]
                request.states.pop(before, None)
                request.fits.pop(before, None)
        answer.request = request
        return True

    def prioritize(self, args: ExtenderArgs) -> list[dict[str, Any]]:
        request, names = self._prioritize_request(args)
        self.metrics.nodes_per_request.labels("prioritize").observe(len(names))
        if request.demand.is_empty:
            return host_priorities(names, [0] * len(names))
        weights, memo = self._scoring_state(request.demand)
        order = list(request.states)
        candidates = [(request.states[sid], request.fits[sid]) for sid in order]
        by_state = dict(zip(order, scores(candidates, self.scorer, weights, memo)))
        by_state[UNKNOWN] = 0
        fitting = [sid for sid in order if request.fits[sid].fits_now]
        self._score_memos.trim(request.demand, fitting)
        if fitting:
            best = max(fitting, key=by_state.__getitem__)
            if self._assume(request, names[request.ids.index(best)], args.pod):
                self._guessed(request.uid)
        return self._host_priorities(request.demand, names, list(map(by_state.__getitem__, request.ids)))

    def _host_priorities(self, demand: PodDemand, names: list[str], scores: list[int]) -> list[dict[str, Any]]:
        """The answer's ``{Host, Score}`` list; for the same demand and candidates as the last time, that list
        with the scores that changed rewritten (a node or two between pods) instead of thousands of new dicts."""
        last = self._hosts.pop(demand, None)  # out until rewritten: no half-rewritten list stays behind
        if last is None or (last[0] is not names and last[0] != names):
            hosts = host_priorities(names, scores)
        else:
            _, previous, hosts = last
            for position in compress(range(len(scores)), map(operator.ne, scores, previous)):
                hosts[position]["Score"] = scores[position]
        _keep_recent(self._hosts, demand, (names, scores, hosts))
        return hosts

    def _scoring_state(self, demand: PodDemand) -> tuple[Mapping[str, float], dict[int, float]]:
        """The demand mix, refreshed every few seconds, and the raw scores already known under it.

        Between two pods only the nodes they touched change state, so raw scores of the rest carry over.
        """
        now = self.clock()
        if self._weights is None or now - self._weights_at >= WEIGHTS_REFRESH_S:
            self._weights, self._weights_at = self.distribution.weights(now), now
            self._score_memos.clear()
        return self._weights, self._score_memos.get(demand)

    def _assume(self, request: _Request, node: str, pod: Mapping[str, Any]) -> bool:
        """Count the pod's demand as used on ``node`` until its binding (or its claims' allocation) is seen.

        True for a device-plugin placement: only the extender keeps those apart (on a DRA node kube-scheduler's
        own allocator never hands out a device twice)."""
        demand = request.demand
        if demand.claims is not None and self.view.is_dra_node(node):
            # The devices kube-scheduler's allocator takes there, until the claims show their allocation.
            state = self.view.node_state(node)
            fit = request.fits.get(state.state_id) if state is not None else None
            if fit is not None and fit.devices:
                keys = self.view.claim_reader.claim_keys(pod, request.uid)
                self.view.assume_devices(request.uid, node, dict(zip(keys, fit.devices)))
            return False
        if demand.mig or demand.gpus:
            self.view.assume(request.uid, node, demand)
            return True
        return False

    # --- guesses and binds ---------------------------------------------------------------------------

    def _guessed(self, uid: str) -> None:
        self._guesses[uid] = self.clock()
        self._no_guess.clear()

    def _settled(self, uid: str) -> None:
        if self._guesses.pop(uid, None) is not None and not self._guesses:
            self._no_guess.set()

    def _open_guesses(self, uid: str) -> bool:
        """Whether pods other than ``uid`` still await the bind that settles where prioritize assumed them.

        Guesses older than ``bind_wait_s`` are given up (the pod stopped in PreBind, or failed after
        prioritize). A guessed pod the watch shows bound although no bind came, or waits that time out
        :data:`_TIMEOUTS_TO_STOP` times in a row, mean kube-scheduler binds without the extender (no
        ``bindVerb``): waiting stops until a bind comes."""
        now = self.clock()
        for other, at in list(self._guesses.items()):
            pod = self.view.pods.get(other)
            if pod is not None and pod.node_name:
                self._binder = False  # bound, and no bind reached this replica
            if other == uid or now - at >= self.bind_wait_s or (pod is not None and pod.node_name):
                self._settled(other)
        return bool(self._guesses) and self._binder

    async def settle_binds(self, pod: Mapping[str, Any]) -> str | None:
        """Before the filter for ``pod``: wait (up to ``bind_wait_s``) for the binds of pods prioritize just
        placed on their best-scored node. kube-scheduler sends each bind as that pod's scheduling cycle ends,
        concurrently with the next pod's cycle; a filter that came first would count the pod on the best-scored
        node though it may be going elsewhere. Returns ``bound`` or ``timed-out`` when it waited, else None."""
        uid = _uid_of(pod)
        if not self._open_guesses(uid):
            return None
        try:
            async with asyncio.timeout(self.bind_wait_s):
                await self._no_guess.wait()
        except TimeoutError:
            self._timeouts += 1
            if self._timeouts >= _TIMEOUTS_TO_STOP:
                self._binder = False
            self._open_guesses(uid)  # the stale ones go
            return "timed-out"
        return "bound"

    def bind(self, args: BindingArgs) -> str:
        """kube-scheduler chose ``args.node``: the pod's demand counts there from now on, wherever prioritize
        assumed it (kube-scheduler adds its own plugins' scores and may choose another node than the best-scored
        one). Called before the Binding is created, so that the next pod's answers already see it; returns what
        the view had assumed (``as-assumed``, ``moved`` or ``unassumed``, as in ``mig_extender_binds_total``).

        Raises :class:`BindRefused` for a pod this replica neither answered nor holds in its view, and for a
        device-plugin MIG pod whose demand does not fit the chosen node as the view counts it now (another pod
        was answered onto those slices meanwhile): the extender never binds a pod where its slices are taken.
        """
        uid = args.uid or f"{args.namespace}/{args.name}"
        self._binder, self._timeouts = self.bind_wait_s > 0, 0
        self._settled(uid)
        entry = self._awaiting_bind.pop(uid, None)
        if entry is None:
            # Answered by another replica, or before a restart: the pod as the view holds it, if it holds it.
            known = self.view.pods.get(uid)
            if known is None or known.node_name:
                raise BindRefused(
                    f"mig-extender binds only pods it answered or holds pending in its view, not "
                    f"{args.namespace}/{args.name} (uid {args.uid or 'none'})"
                )
            keys = None
            if known.demand.claims is not None and known.claims_source is not None:
                keys = self.view.claim_reader.claim_keys(known.claims_source, uid)
            entry = (known.demand, keys)
        demand, keys = entry
        if demand.is_empty:
            return self._bind_outcome("unassumed")
        before = self.view.assumed_node(uid)
        if before == args.node:
            # Counted there since the answer, which found it fitting: every answer since counted it too.
            return self._bind_outcome("as-assumed")
        if before is not None:
            self.view.unassume(uid)  # the best-scored node: kube-scheduler chose another
        state = self.view.node_state(args.node)
        if state is None:
            raise BindRefused(f"MIG: node {args.node} is not in the extender's view")
        fit = self._fit_of(demand, state.state_id, state)
        if demand.claims is not None and self.view.is_dra_node(args.node):
            # kube-scheduler allocated the claims in PreBind: its allocator is the authority on DRA devices.
            if fit.devices and keys:
                self.view.assume_devices(uid, args.node, dict(zip(keys, fit.devices)))
        elif not fit.fits_now:
            raise BindRefused(f"{fit.reason} on node {args.node}, counting the pods the extender answered since")
        elif demand.mig or demand.gpus:
            self.view.assume(uid, args.node, demand)
        return self._bind_outcome("moved" if before is not None else "unassumed")

    def bind_failed(self, args: BindingArgs) -> None:
        """The API server refused the binding: the pod is not on the node, and kube-scheduler schedules it again."""
        self.view.unassume(args.uid or f"{args.namespace}/{args.name}")

    def _bind_outcome(self, outcome: str) -> str:
        self.metrics.binds.labels(outcome).inc()
        return outcome

    def weights(self) -> Mapping[str, float]:
        return self.distribution.weights(self.clock())
