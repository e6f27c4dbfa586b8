"""Prometheus metrics, prefix ``mig_extender_``; one registry per process (per app in tests).

Three kinds of series (every one is listed in ``docs/metrics.md``):

- counters and histograms that the request path, the watch and the annotator update;
- the view's health, read at scrape time (:class:`_ViewCollector`);
- the fleet's slices and fragmentation from the model's slice accounting (``extender.model.accounting``),
  kept up to date node by node as the view changes (:class:`_FleetCollector`): per node and model, per model
  (bounded), and per GPU only when ``per_gpu``. ``/metrics`` writes them from text kept per node
  (:meth:`Metrics.exposition`), so a scrape of a large fleet barely holds up the event loop.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Collection, Generator, Iterator, Mapping
from dataclasses import dataclass, field, replace
from itertools import chain
from operator import add, attrgetter
from typing import Any, Protocol, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .model.accounting import FleetTotals, ModelSlices, NodeSlices, SliceCounts, node_slices
from .model.fit import Verdict
from .model.fragmentation import NAMED_MIXES
from .model.policy import Outcome, outcome_of_verdict
from .model.state import Fidelity, NodeState
from .settings import MetricsSettings
from .view.store import ClusterView, Kind

# Filter + prioritize must stay far below kube-scheduler's 5 s httpTimeout: resolve the low end finely.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

VERBS = ("filter", "prioritize", "bind")
NODE_VERBS = ("filter", "prioritize")  # the verbs that carry candidate nodes
BIND_OUTCOMES = ("as-assumed", "moved", "unassumed", "refused", "failed")
"""mig_extender_binds_total's outcomes: what the view had assumed for the pod (``SchedulingService.bind``), a
bind the extender refused, or a binding the API server refused."""
UNKNOWN_NODE_VERDICT = "unknown-node"  # the verdict label the scheduling service counts for unknown nodes

WeightsProvider = Callable[[], Mapping[str, float]]

# --- the demand mix ----------------------------------------------------------------------------------------


def default_weights() -> dict[str, float]:
    """The uniform mix, normalised: what F uses until a weights provider (the learned mix) is set."""
    total = sum(NAMED_MIXES["uniform"].values())
    return {k: v / total for k, v in NAMED_MIXES["uniform"].items()}


# --- collectors ------------------------------------------------------------------------------------------


class _ViewCollector(Collector):
    """Read at scrape time: view staleness and what the view currently holds."""

    def __init__(self, view: ClusterView) -> None:
        self.view = view

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        staleness = GaugeMetricFamily(
            "mig_extender_view_staleness_seconds",
            "Seconds since the last good list, event or bookmark, per watched kind.",
            labels=["kind"],
        )
        for kind, age in self.view.staleness().items():
            staleness.add_metric([kind], 0.0 if self.view.static else age)
        yield staleness
        objects = GaugeMetricFamily("mig_extender_view_objects", "Objects in the view.", labels=["kind"])
        objects.add_metric([str(Kind.NODES)], len(self.view.nodes))
        objects.add_metric([str(Kind.PODS)], len(self.view.pods))
        dra = self.view.dra
        for kind, held in (
            (Kind.RESOURCE_SLICES, dra.slices),
            (Kind.RESOURCE_CLAIMS, dra.claims),
            (Kind.CLAIM_TEMPLATES, dra.templates),
            (Kind.DEVICE_CLASSES, dra.classes),
        ):
            objects.add_metric([str(kind)], len(held))
        yield objects
        warnings = GaugeMetricFamily(
            "mig_extender_nodes_with_warnings", "Nodes whose GPU state was read with warnings (see logs)."
        )
        warnings.add_metric([], len(self.view.counters.node_warnings))
        yield warnings
        unknown = GaugeMetricFamily(
            "mig_extender_unknown_gpu_products",
            "Nodes per nvidia.com/gpu.product that names no catalog model: not evaluated, left to kube-scheduler.",
            labels=["product"],
        )
        for product, count in sorted(self.view.counters.unknown_product_nodes().items()):
            unknown.add_metric([product], count)
        yield unknown
        counters = self.view.counters
        for name, value, text in (
            (
                "mig_extender_node_annotation_invalid",
                counters.invalid_annotations,
                "Invalid mig-extender.io/gpus node annotations read (the derived source was used instead).",
            ),
            (
                "mig_extender_mig_parted_config_invalid",
                counters.invalid_configs,
                "Invalid mig-parted ConfigMap versions seen (the last good config was kept).",
            ),
            ("mig_extender_objects_invalid", counters.invalid_objects, "Malformed objects ignored by the view."),
            (
                "mig_extender_dra_claims_not_evaluated",
                self.view.claim_reader.not_evaluable,
                "Pods read whose DRA claims could not be evaluated yet (a claim, template or DeviceClass missing): "
                "their nodes are left to kube-scheduler.",
            ),
        ):
            family = CounterMetricFamily(name, text)
            family.add_metric([], value)
            yield family


_STATES = ("used", "free", "stranded")


@dataclass(frozen=True, slots=True)
class _Family:
    """A gauge family of the fleet series: its name and help text, as the text format writes them."""

    name: str
    documentation: str

    @property
    def header(self) -> str:
        text = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        return f"# HELP {self.name} {text}\n# TYPE {self.name} gauge\n"

    def series(self, **labels: str) -> str:
        """``name{label="value",...}`` as ``generate_latest`` writes it: labels by name, values escaped."""
        return self.name + "{" + _labels(**labels) + "}" if labels else self.name

    def line(self, value: float, **labels: str) -> str:
        return f"{self.series(**labels)} {_number(value)}\n"

    def state_lines(self, labels: str, counts: SliceCounts | ModelSlices) -> str:
        """The used, free and stranded lines; ``labels`` from :func:`_labels`, all sorting before ``state``."""
        name = self.name
        return (
            f'{name}{{{labels},state="used"}} {_number(counts.used)}\n'
            f'{name}{{{labels},state="free"}} {_number(counts.free)}\n'
            f'{name}{{{labels},state="stranded"}} {_number(counts.stranded)}\n'
        )


def _labels(**labels: str) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))


def _number(value: float) -> str:
    """A sample value as ``generate_latest`` writes it (Go's float formatting)."""
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


NODE_SLICES = _Family(
    "mig_extender_node_compute_slices",
    "Compute slices of a node's GPUs of one model, by state: used, free (includes stranded), stranded "
    "(free, but no base-profile instance can use them).",
)
NODE_LARGEST = _Family(
    "mig_extender_node_largest_fitting_profile_slices",
    "Compute slices of the largest base MIG profile that still fits on one of the node's GPUs (0: none).",
)
NODE_FRAGMENTATION = _Family(
    "mig_extender_node_fragmentation",
    "Fragmentation F of the node's GPUs of one model under the current demand mix, in compute slices.",
)
NODE_INFO = _Family(
    "mig_extender_node_info",
    "1 per GPU node: where its layout was read from (source), how exactly it is known (fidelity), "
    "its GPU mode and MIG strategy.",
)
GPU_SLICES = _Family(
    "mig_extender_gpu_compute_slices",
    "Compute slices of one GPU by state (used, free, stranded); only with per-GPU metrics on.",
)
GPU_LARGEST = _Family(
    "mig_extender_gpu_largest_fitting_profile_slices",
    "Compute slices of the largest base MIG profile that still fits on the GPU (0: none); per-GPU.",
)
GPU_FRAGMENTATION = _Family(
    "mig_extender_gpu_fragmentation",
    "Fragmentation F of one GPU under the current demand mix, in compute slices; per-GPU.",
)
FLEET_SLICES = _Family(
    "mig_extender_compute_slices",
    "Compute slices of the fleet's GPUs per model, by state (used, free including stranded, stranded).",
)
FREE_INSTANCES = _Family(
    "mig_extender_free_instances",
    "Per model and base profile: free MIG instances (static GPUs) plus, on dynamic GPUs, how many more "
    "instances of that profile alone each GPU could get.",
)
BY_LARGEST_FIT = _Family(
    "mig_extender_nodes_by_largest_fitting_profile",
    "GPU nodes per model by the compute slices of the largest base profile that still fits on them.",
)
NODES = _Family("mig_extender_nodes", "GPU nodes by layout source, fidelity and mode.")
GPUS = _Family("mig_extender_gpus", "GPUs by model and mode (static, dynamic, mig-disabled).")
FLEET_FRAGMENTATION = _Family(
    "mig_extender_fragmentation", "Sum of F over the fleet's GPUs of one model, in compute slices."
)
CLUSTER_FRAGMENTATION = _Family(
    "mig_extender_cluster_fragmentation", "Sum of F over every GPU node, in compute slices."
)
CLUSTER_RATIO = _Family(
    "mig_extender_cluster_fragmentation_ratio",
    "Cluster F divided by the fleet's free compute slices: 0 when every free slice is usable, 1 when none.",
)
DEMAND_SHARE = _Family(
    "mig_extender_demand_share",
    "The demand mix D that F and the scores use: share of recent MIG requests per profile shape.",
)
COLLECT_SECONDS = _Family(
    "mig_extender_fleet_collect_seconds", "Time the last scrape spent computing the fleet metrics."
)

_Terms = tuple[tuple[str, float], ...]
"""F terms: per shape, free compute slices a stream of that shape could not use."""


class _TermTable:
    """Distinct F term vectors, numbered: a scrape computes F once per vector and looks it up per node."""

    def __init__(self) -> None:
        self._keys: dict[_Terms, int] = {}
        self.vectors: list[_Terms] = []

    def key(self, terms: _Terms) -> int:
        key = self._keys.get(terms)
        if key is None:
            key = self._keys[terms] = len(self.vectors)
            self.vectors.append(terms)
        return key

    def values(self, weights: Mapping[str, float]) -> list[str]:
        """Each vector's F as a sample value and the line's end, by key."""
        return [_number(sum(weights.get(s, 0.0) * u for s, u in terms)) + "\n" for terms in self.vectors]


@dataclass(frozen=True, slots=True)
class _NodeLines:
    """One node's series as text, rendered once per node state; F is written per scrape (the mix moves)."""

    key: tuple[int, Fidelity]
    """What the lines were written from: the node state's interned id (its GPUs and strategy) and fidelity."""
    summary: NodeSlices
    slices: str
    largest: str
    info: str
    f_series: tuple[str, ...]
    """Per model: the F series' name and labels, and the space before the value."""
    f_terms: tuple[_Terms, ...]
    f_keys: tuple[int, ...]
    """The F terms' numbers in the collector's :class:`_TermTable`."""
    gpu_slices: str = ""
    gpu_largest: str = ""
    gpu_f_series: tuple[str, ...] = ()
    gpu_f_terms: tuple[_Terms, ...] = ()
    gpu_f_keys: tuple[int, ...] = ()
    """The same per GPU; empty unless per-GPU series are on."""

    def numbered(self, table: _TermTable) -> _NodeLines:
        """These lines with their F terms numbered in ``table``."""
        keys = tuple(map(table.key, self.f_terms))
        return replace(self, f_keys=keys, gpu_f_keys=tuple(map(table.key, self.gpu_f_terms)))


def _key(state: NodeState) -> tuple[int, Fidelity]:
    return state.state_id, state.fidelity


def _node_lines(state: NodeState, summary: NodeSlices, per_gpu: bool, table: _TermTable) -> _NodeLines:
    node = summary.name
    slices: list[str] = []
    largest: list[str] = []
    f_series: list[str] = []
    f_terms: list[_Terms] = []
    gpu_slices: list[str] = []
    gpu_largest: list[str] = []
    gpu_f_series: list[str] = []
    gpu_f_terms: list[_Terms] = []
    for group in summary.models:
        model = group.model.name
        labels = _labels(model=model, node=node)  # written once, for every series of the group
        slices.append(NODE_SLICES.state_lines(labels, group))
        largest.append(f"{NODE_LARGEST.name}{{{labels}}} {_number(group.largest_slices)}\n")
        f_series.append(f"{NODE_FRAGMENTATION.name}{{{labels}}} ")
        f_terms.append(group.unusable)
        if not per_gpu:
            continue
        for index, counts in group.gpus:
            labels = _labels(gpu=str(index), model=model, node=node)
            gpu_slices.append(GPU_SLICES.state_lines(labels, counts))
            gpu_largest.append(f"{GPU_LARGEST.name}{{{labels}}} {_number(counts.largest_slices)}\n")
            gpu_f_series.append(f"{GPU_FRAGMENTATION.name}{{{labels}}} ")
            gpu_f_terms.append(counts.unusable)
    mode, strategy = summary.mode, summary.strategy
    info = NODE_INFO.line(
        1, node=node, source=summary.source, fidelity=str(summary.fidelity), mode=mode, strategy=strategy
    )
    lines = _NodeLines(
        key=_key(state),
        summary=summary,
        slices="".join(slices),
        largest="".join(largest),
        info=info,
        f_series=tuple(f_series),
        f_terms=tuple(f_terms),
        f_keys=(),
        gpu_slices="".join(gpu_slices),
        gpu_largest="".join(gpu_largest),
        gpu_f_series=tuple(gpu_f_series),
        gpu_f_terms=tuple(gpu_f_terms),
    )
    return lines.numbered(table)


_BATCH = 200
"""Nodes applied between two yields of a scrape: at ~40 us a changed node, a few milliseconds of the loop."""

_T = TypeVar("_T")


def _drain(steps: Generator[None, None, _T]) -> _T:
    """Run ``steps`` to the end at once; their return value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return cast(_T, done.value)


_SLICES, _LARGEST, _INFO = attrgetter("slices"), attrgetter("largest"), attrgetter("info")
_F_SERIES, _F_KEYS = attrgetter("f_series"), attrgetter("f_keys")
_GPU_SLICES, _GPU_LARGEST = attrgetter("gpu_slices"), attrgetter("gpu_largest")
_GPU_F_SERIES, _GPU_F_KEYS = attrgetter("gpu_f_series"), attrgetter("gpu_f_keys")


def _f_lines(
    nodes: Collection[_NodeLines], series: attrgetter[Any], keys: attrgetter[Any], values: list[str]
) -> Iterator[str]:
    """Every node's F lines: its series, then the value of its terms' number (C-level maps, no loop per node)."""
    flat = chain.from_iterable
    return map(add, flat(map(series, nodes)), map(values.__getitem__, flat(map(keys, nodes))))


class _FleetCollector(Collector):
    """Slices, the largest fitting profile and fragmentation of every GPU node, kept up to date incrementally.

    Each scrape first applies the nodes that changed since the last one (``ClusterView.changed_since``; a
    pass over every node when the log does not reach back): a node whose state is new (its interned state id
    or its fidelity differ from the kept lines') has its summary recomputed, its series rendered as text and
    the fleet totals adjusted; one rebuilt equal, by a re-list or as an assumption expires, keeps its lines.
    The rest of a
    scrape is joining the kept text, plus F once per distinct vector of F terms (the demand mix moves with
    time), so that at 5,000 nodes it holds the event loop, and with it the filters, for milliseconds rather
    than a third of a second.
    """

    def __init__(self, view: ClusterView, metrics: Metrics) -> None:
        self.view = view
        self.metrics = metrics
        self.totals = FleetTotals()
        self._nodes: dict[str, _NodeLines] = {}
        self._terms = _TermTable()
        self._generation: int | None = None
        self._per_gpu = metrics.per_gpu
        self.left_out = False
        """Set while :meth:`Metrics.exposition` writes the other collectors, which then writes these itself."""

    def refresh(self) -> None:
        """Apply every node change since the last refresh to the kept lines and totals."""
        _drain(self.refresh_steps())

    def refresh_steps(self) -> Generator[None, None, None]:
        """:meth:`refresh`, yielding between batches of nodes (an event loop answers requests meanwhile)."""
        view = self.view
        view.expire_assumed()  # expiries are changes too: log them before reading the generation
        generation = view.generation
        if self._per_gpu != self.metrics.per_gpu:
            self._per_gpu, self._generation = self.metrics.per_gpu, None  # every node's lines change
            for name in list(self._nodes):
                self._forget(name)
        changed = None if self._generation is None else view.changed_since(self._generation)
        if changed is None:
            for name in [n for n in self._nodes if n not in view.nodes]:
                self._forget(name)
            names = list(view.nodes)
        else:
            names = list(changed)
        for start in range(0, len(names), _BATCH):
            batch = names[start : start + _BATCH]
            for name, state in zip(batch, view.node_states_for(batch)):
                self._apply(name, state)
            if start + _BATCH < len(names):
                yield
        # Changes made while this refresh yielded are in the log after ``generation``: the next one sees them.
        self._generation = generation
        in_use = len(self._nodes) * (1 + 8 * self._per_gpu)
        if len(self._terms.vectors) > 2 * in_use + 256:  # vectors of states long gone: number the live ones afresh
            self._terms = _TermTable()
            self._nodes = {name: lines.numbered(self._terms) for name, lines in self._nodes.items()}

    def _apply(self, name: str, state: NodeState | None) -> None:
        kept = self._nodes.get(name)
        if kept is not None and state is not None and kept.key == _key(state):
            return  # the same state, or one equal to it (rebuilt by a re-list, or back after an expiry)
        if kept is not None:
            self._forget(name)
        if state is not None and state.gpus:
            summary = node_slices(state)
            self.totals.add(summary)
            self._nodes[name] = _node_lines(state, summary, self._per_gpu, self._terms)

    def _forget(self, name: str) -> None:
        self.totals.remove(self._nodes.pop(name).summary)

    def exposition(self) -> str:
        """The fleet series in the Prometheus text format, as ``generate_latest`` would write them."""
        return _drain(self.exposition_steps())

    def exposition_steps(self) -> Generator[None, None, str]:
        """:meth:`exposition`, yielding between batches of nodes and between families; returns the text."""
        busy = 0.0
        resumed = time.perf_counter()
        for _ in self.refresh_steps():
            busy += time.perf_counter() - resumed
            yield
            resumed = time.perf_counter()
        weights = dict(self.metrics.weights())
        values = self._terms.values(weights)
        # A snapshot, numbered like ``values``: a scrape beside this one may replace kept lines meanwhile.
        nodes = list(self._nodes.values())
        parts = [
            (NODE_SLICES.header, map(_SLICES, nodes)),
            (NODE_LARGEST.header, map(_LARGEST, nodes)),
            (NODE_FRAGMENTATION.header, _f_lines(nodes, _F_SERIES, _F_KEYS, values)),
            (NODE_INFO.header, map(_INFO, nodes)),
        ]
        if self._per_gpu:
            parts += [
                (GPU_SLICES.header, map(_GPU_SLICES, nodes)),
                (GPU_LARGEST.header, map(_GPU_LARGEST, nodes)),
                (GPU_FRAGMENTATION.header, _f_lines(nodes, _GPU_F_SERIES, _GPU_F_KEYS, values)),
            ]
        out: list[str] = []
        for header, lines in parts:
            out.append(header)
            out.append("".join(lines))
            busy += time.perf_counter() - resumed
            yield
            resumed = time.perf_counter()
        out += self._fleet_lines(weights)
        busy += time.perf_counter() - resumed
        out += [COLLECT_SECONDS.header, COLLECT_SECONDS.line(busy)]
        return "".join(out)

    def _fleet_lines(self, weights: Mapping[str, float]) -> list[str]:
        models = sorted(self.totals.models.items())
        out = [FLEET_SLICES.header]
        for model, t in models:
            for name, value in sorted(zip(_STATES, (t.used, t.free, t.stranded))):
                out.append(FLEET_SLICES.line(value, model=model, state=name))
        out.append(FREE_INSTANCES.header)
        for model, t in models:
            out += [FREE_INSTANCES.line(v, model=model, profile=p) for p, v in sorted(t.free_instances.items())]
        out.append(BY_LARGEST_FIT.header)
        for model, t in models:
            for size in sorted({0, *(p.compute_slices for p in t.model.base_profiles)}):
                out.append(BY_LARGEST_FIT.line(t.by_largest_fit.get(size, 0), model=model, slices=str(size)))
        out.append(NODES.header)
        for (source, fidelity, mode), count in sorted(self.totals.nodes.items()):
            out.append(NODES.line(count, source=source, fidelity=fidelity, mode=mode))
        out.append(GPUS.header)
        out += [GPUS.line(count, model=model, mode=mode) for (model, mode), count in sorted(self.totals.gpus.items())]
        out.append(FLEET_FRAGMENTATION.header)
        out += [FLEET_FRAGMENTATION.line(t.fragmentation(weights), model=model) for model, t in models]
        out += [CLUSTER_FRAGMENTATION.header, CLUSTER_FRAGMENTATION.line(self.totals.fragmentation(weights))]
        out += [CLUSTER_RATIO.header, CLUSTER_RATIO.line(self.totals.fragmentation_ratio(weights))]
        out.append(DEMAND_SHARE.header)
        out += [DEMAND_SHARE.line(value, shape=shape) for shape, value in sorted(weights.items())]
        return out

    def collect(self) -> Iterator[Metric]:
        # The registry's own path (generate_latest, get_sample_value) reads the same text back: one rendering.
        if not self.left_out:
            yield from text_string_to_metric_families(self.exposition())


class RelayoutStatsLike(Protocol):
    """What the re-layout controller counts (extender/controllers/relayout.py ``RelayoutStats``)."""

    @property
    def started(self) -> int: ...

    @property
    def outcomes(self) -> Mapping[str, int]: ...

    @property
    def skipped(self) -> Mapping[str, int]: ...

    @property
    def planned(self) -> int: ...

    @property
    def in_progress(self) -> int: ...

    @property
    def configs_collected(self) -> int: ...

    @property
    def errors(self) -> int: ...


class _RelayoutCollector(Collector):
    def __init__(self, stats: RelayoutStatsLike) -> None:
        self.stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self.stats
        outcomes = CounterMetricFamily("mig_extender_relayouts", "Re-layouts finished, by outcome.", labels=["outcome"])
        for outcome in ("success", "failed", "timeout", "aborted"):
            outcomes.add_metric([outcome], s.outcomes.get(outcome, 0))
        yield outcomes
        yield CounterMetricFamily("mig_extender_relayouts_started", "Re-layouts started.", value=s.started)
        skipped = CounterMetricFamily(
            "mig_extender_relayout_skipped", "Re-layout plans not started, by reason.", labels=["reason"]
        )
        for reason, count in sorted(s.skipped.items()):
            skipped.add_metric([reason], count)
        yield skipped
        yield GaugeMetricFamily("mig_extender_relayouts_in_progress", "Re-layouts in progress.", value=s.in_progress)
        yield GaugeMetricFamily(
            "mig_extender_relayout_plans",
            "Plans of the last reconcile (in plan-only mode: what it would do).",
            value=s.planned,
        )
        yield CounterMetricFamily(
            "mig_extender_relayout_configs_collected",
            "Generated mig-parted configs removed.",
            value=s.configs_collected,
        )
        yield CounterMetricFamily("mig_extender_relayout_errors", "Re-layout reconciles that failed.", value=s.errors)


@dataclass
class ProvisioningStats:
    """What the provisioning loop counts; it fills these in, :class:`_ProvisioningCollector` exports them."""

    requests_created: Tally[str] = field(default_factory=Tally)
    """Capacity-request pods created, by NodePool."""
    requests_deleted: Tally[str] = field(default_factory=Tally)
    """By reason: launched (Karpenter launched its NodeClaim), arrived (a node of the pool came), demand-gone,
    mode (not made in this mode)."""
    requests: dict[str, int] = field(default_factory=dict)
    """Outstanding capacity requests, by NodePool."""
    requests_stuck: int = 0
    nodes_arrived: Tally[str] = field(default_factory=Tally)
    protections_released: Tally[str] = field(default_factory=Tally)
    """By reason: in-use (a MIG pod runs there) or timeout."""
    planned_nodes: dict[str, int] = field(default_factory=dict)
    """Nodes the last plan wants asked for, by NodePool (in plan-only mode: what it would ask for)."""
    unmet_pods: dict[str, int] = field(default_factory=dict)
    """Pods counted as unmet demand, by outcome: hosted, no-pool, capped, excluded."""
    unlaunched_pods: int = 0
    """Overlay mode: unmet pods Karpenter launched no node for, asked for by capacity requests instead."""
    pools_refused: dict[tuple[str, str], int] = field(default_factory=dict)
    """NodePools left out of the last plan, by (NodePool, reason): mig-config (not in the mig-parted config),
    no-whole-gpus (whole-GPU requests for nodes that register none)."""
    errors: int = 0


class _ProvisioningCollector(Collector):
    def __init__(self, stats: ProvisioningStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self.stats
        yield _labelled(
            CounterMetricFamily,
            "mig_extender_capacity_requests_created",
            "Capacity-request pods created.",
            "nodepool",
            s.requests_created,
        )
        yield _labelled(
            CounterMetricFamily,
            "mig_extender_capacity_requests_deleted",
            "Capacity-request pods deleted, by reason.",
            "reason",
            s.requests_deleted,
        )
        yield _labelled(
            GaugeMetricFamily,
            "mig_extender_capacity_requests",
            "Capacity-request pods outstanding.",
            "nodepool",
            s.requests,
        )
        yield GaugeMetricFamily(
            "mig_extender_capacity_requests_stuck",
            "Capacity requests with no node of their pool after provision_request_timeout_s.",
            value=s.requests_stuck,
        )
        yield _labelled(
            CounterMetricFamily,
            "mig_extender_capacity_nodes_arrived",
            "New nodes of MIG pools taken in charge.",
            "nodepool",
            s.nodes_arrived,
        )
        yield _labelled(
            CounterMetricFamily,
            "mig_extender_capacity_protections_released",
            "New nodes whose karpenter.sh/do-not-disrupt guard was lifted, by reason.",
            "reason",
            s.protections_released,
        )
        yield _labelled(
            GaugeMetricFamily,
            "mig_extender_capacity_planned_nodes",
            "Nodes the last plan asks for, by NodePool.",
            "nodepool",
            s.planned_nodes,
        )
        yield _labelled(
            GaugeMetricFamily,
            "mig_extender_capacity_unmet_pods",
            "Pods counted as unmet demand by the last plan, by outcome (hosted, no-pool, capped, excluded).",
            "outcome",
            s.unmet_pods,
        )
        yield GaugeMetricFamily(
            "mig_extender_capacity_unlaunched_pods",
            "Overlay mode: unmet pods Karpenter launched no node for, given capacity requests instead.",
            value=s.unlaunched_pods,
        )
        refused = GaugeMetricFamily(
            "mig_extender_capacity_pools_refused",
            "NodePools of the pools file left out of the last plan, by reason (mig-config, no-whole-gpus).",
            labels=["nodepool", "reason"],
        )
        for (pool, reason), value in sorted(s.pools_refused.items()):
            refused.add_metric([pool, reason], value)
        yield refused
        yield CounterMetricFamily(
            "mig_extender_provisioning_errors", "Provisioning reconciles that failed.", value=s.errors
        )


@dataclass
class HeadroomStats:
    """What the headroom controller counts; :class:`_HeadroomCollector` exports them."""

    planned: dict[str, int] = field(default_factory=dict)
    """Placeholders the last plan wants, by MIG profile."""
    held: dict[tuple[str, str], int] = field(default_factory=dict)
    """Placeholders that exist, by (profile, state): bound (holding room) or pending (waiting for a node)."""
    created: int = 0
    deleted: int = 0
    """Deleted by the controller because the plan shrank."""
    preempted: int = 0
    """Bound placeholders gone without the controller deleting them (preempted by a real pod, or drained
    with their node)."""
    arrivals_per_s: float = 0.0
    """The recent arrival rate the plan was sized from (MIG instances per second)."""
    wait_seconds: dict[str, float] = field(default_factory=dict)
    """Seconds real MIG pods waited, summed, by whether a placeholder of their profile was bound when the
    controller first saw them pending (yes, no); read at the controller's interval."""
    waits: Tally[str] = field(default_factory=Tally)
    errors: int = 0


class _HeadroomCollector(Collector):
    def __init__(self, stats: HeadroomStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self.stats
        yield _labelled(
            GaugeMetricFamily,
            "mig_extender_headroom_planned",
            "Placeholders the last plan wants.",
            "profile",
            s.planned,
        )
        held = GaugeMetricFamily(
            "mig_extender_headroom_placeholders",
            "Placeholder pods, by profile and state (bound: holding room; pending: waiting for a node).",
            labels=["profile", "state"],
        )
        for (profile, state), count in sorted(s.held.items()):
            held.add_metric([profile, state], count)
        yield held
        yield CounterMetricFamily("mig_extender_headroom_created", "Placeholder pods created.", value=s.created)
        yield CounterMetricFamily(
            "mig_extender_headroom_deleted", "Placeholder pods deleted because the plan shrank.", value=s.deleted
        )
        yield CounterMetricFamily(
            "mig_extender_headroom_preempted",
            "Bound placeholders gone without the controller deleting them (preempted, or drained with their node).",
            value=s.preempted,
        )
        yield GaugeMetricFamily(
            "mig_extender_headroom_arrivals_per_second",
            "The recent arrival rate of MIG instances the headroom is sized from.",
            value=s.arrivals_per_s,
        )
        waited = CounterMetricFamily(
            "mig_extender_headroom_pod_wait_seconds",
            "Seconds real MIG pods waited, summed, by whether a placeholder of their profile was bound "
            "when they were first seen pending.",
            labels=["placeholder"],
        )
        counted = CounterMetricFamily(
            "mig_extender_headroom_pod_waits",
            "Real MIG pods whose wait is in mig_extender_headroom_pod_wait_seconds.",
            labels=["placeholder"],
        )
        for label in ("no", "yes"):
            waited.add_metric([label], s.wait_seconds.get(label, 0.0))
            counted.add_metric([label], s.waits[label])
        yield waited
        yield counted
        yield CounterMetricFamily("mig_extender_headroom_errors", "Reconciles that failed.", value=s.errors)


@dataclass
class DefragStats:
    """What the defrag controller counts; it fills these in, :class:`_DefragCollector` exports them."""

    plans: Tally[str] = field(default_factory=Tally)
    """Plans by what became of them: started (on), found (plan-only: a new plan annotated), none (no plan)."""
    evictions: int = 0
    evictions_refused: Tally[str] = field(default_factory=Tally)
    """Evictions the API server refused, by reason: budget (429, a PodDisruptionBudget), other."""
    lost_pod_seconds: float = 0.0
    """Run time of the evicted pods, summed (a moved pod is taken to restart from zero)."""
    reservations: Tally[str] = field(default_factory=Tally)
    """made; and how they ended: kept (the pod bound on the reserved node), elsewhere (bound on another node),
    expired, refused (an eviction refused), deleted (the waiting pod went away), taken (another pod took the
    room), changed (a planned pod or the waiting pod changed before the plan was done)."""
    reservations_active: int = 0
    room_taken: int = 0
    """Pods seen bound in reserved room meanwhile (reported on the waiting pod and on them)."""
    planned_evictions: dict[str, int] = field(default_factory=dict)
    """Waiting pod (namespace/name) -> evictions of its current plan (plan-only: what it would do)."""
    errors: int = 0


class _DefragCollector(Collector):
    def __init__(self, stats: DefragStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self.stats
        yield _labelled(
            CounterMetricFamily,
            "mig_extender_defrag_plans",
            "Defragmentation plans, by what became of them (started, found, none).",
            "outcome",
            s.plans,
        )
        yield CounterMetricFamily(
            "mig_extender_defrag_evictions", "Pods evicted to make room for a waiting pod.", value=s.evictions
        )
        yield _labelled(
            CounterMetricFamily,
            "mig_extender_defrag_evictions_refused",
            "Evictions the API server refused, by reason (budget: a PodDisruptionBudget, other).",
            "reason",
            s.evictions_refused,
        )
        yield CounterMetricFamily(
            "mig_extender_defrag_lost_pod_seconds",
            "Run time of the evicted pods, summed (a moved pod restarts from zero).",
            value=s.lost_pod_seconds,
        )
        yield _labelled(
            CounterMetricFamily,
            "mig_extender_defrag_reservations",
            "Reservations made, and how they ended (kept, elsewhere, expired, refused, deleted, taken, changed).",
            "outcome",
            s.reservations,
        )
        yield GaugeMetricFamily(
            "mig_extender_defrag_reservations_active", "Reservations holding room now.", value=s.reservations_active
        )
        yield CounterMetricFamily(
            "mig_extender_defrag_room_taken", "Pods seen bound in reserved room meanwhile.", value=s.room_taken
        )
        yield _labelled(
            GaugeMetricFamily,
            "mig_extender_defrag_planned_evictions",
            "Evictions of each waiting pod's current plan (plan-only: what the controller would do).",
            "pod",
            s.planned_evictions,
        )
        yield CounterMetricFamily("mig_extender_defrag_errors", "Defrag reconciles that failed.", value=s.errors)


def _labelled(
    kind: type[GaugeMetricFamily] | type[CounterMetricFamily],
    name: str,
    documentation: str,
    label: str,
    values: Mapping[str, int],
) -> GaugeMetricFamily | CounterMetricFamily:
    family = kind(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


class Metrics:
    def __init__(
        self,
        view: ClusterView | None = None,
        *,
        per_gpu: bool = MetricsSettings().per_gpu,
        weights_provider: WeightsProvider | None = None,
    ) -> None:
        # The *_created series double every counter's cardinality and no dashboard reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.per_gpu = per_gpu
        """Export per-GPU series (node x GPU index): off by default, it multiplies the fleet series by 8."""
        self.weights_provider = weights_provider
        """The demand mix for F (``SchedulingService.weights``); the uniform mix until it is set."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_seconds = Histogram(
            "mig_extender_request_duration_seconds",
            "Time to answer a kube-scheduler call.",
            ["verb"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.bad_requests = Counter(
            "mig_extender_bad_requests_total", "Requests rejected as malformed.", ["verb", "status"], registry=r
        )
        self.filter_outcomes = Counter(
            "mig_extender_filter_node_outcomes_total",
            "Nodes per filter outcome (kube-scheduler's result code) and fit verdict.",
            ["outcome", "verdict"],
            registry=r,
        )
        self.nodes_per_request = Histogram(
            "mig_extender_nodes_per_request",
            "Candidate nodes per call.",
            ["verb"],
            buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000),
            registry=r,
        )
        self.watch_restarts = Counter(
            "mig_extender_watch_restarts_total",
            "Watch streams restarted, by kind and reason.",
            ["kind", "reason"],
            registry=r,
        )
        self.relists = Counter("mig_extender_relists_total", "Full lists that replaced the view.", ["kind"], registry=r)
        self.annotation_patches = Counter(
            "mig_extender_annotation_patches_total", "Pod verdict patches, by result.", ["result"], registry=r
        )
        self.events_posted = Counter(
            "mig_extender_events_total",
            "Kubernetes Events posted, by reason and result.",
            ["reason", "result"],
            registry=r,
        )
        self.binds = Counter(
            "mig_extender_binds_total",
            "Binds, by what the view had assumed for the pod: as-assumed (on the node kube-scheduler chose), "
            "moved (prioritize's best-scored node, outvoted by kube-scheduler's own scores), unassumed "
            "(nothing); refused: not bound, the pod's MIG slices there are taken (or the pod is unknown); "
            "failed: the API server refused the binding or did not answer.",
            ["outcome"],
            registry=r,
        )
        self.bind_waits = Counter(
            "mig_extender_bind_waits_total",
            "Filters that first waited for the bind of a pod prioritize had just placed on its best-scored node "
            "(bind_wait_s), by outcome: bound (it came) or timed-out.",
            ["outcome"],
            registry=r,
        )
        self.standby_refusals = Counter(
            "mig_extender_standby_refusals_total",
            "Verb calls refused because this replica does not hold the Lease (leader_only_verbs), by verb.",
            ["verb"],
            registry=r,
        )
        self.background_errors = Counter(
            "mig_extender_background_errors_total",
            "Background loop iterations that raised (logged; the loop goes on after a backoff), by task.",
            ["task"],
            registry=r,
        )
        self.background_errors.labels("annotator")  # at 0 from the start, for rates and alerts
        self.pending_demand = Gauge(
            "mig_extender_pending_demand_instances",
            "MIG instances requested by pending pods, per verdict.",
            ["profile", "verdict"],
            registry=r,
        )
        self._initialise_series()
        self.fleet: _FleetCollector | None = None
        if view is not None:
            r.register(_ViewCollector(view))
            self.fleet = _FleetCollector(view, self)
            r.register(self.fleet)

    def _initialise_series(self) -> None:
        """Create the known label sets at 0, so that rates and alerts see a 0 rather than no series."""
        for verb in VERBS:
            self.request_seconds.labels(verb)
            self.standby_refusals.labels(verb)
            for status in ("400", "413", "internal"):
                self.bad_requests.labels(verb, status)
        for verb in NODE_VERBS:
            self.nodes_per_request.labels(verb)
        for outcome in BIND_OUTCOMES:
            self.binds.labels(outcome)
        for outcome in ("bound", "timed-out"):
            self.bind_waits.labels(outcome)
        for verdict in Verdict:
            self.filter_outcomes.labels(str(outcome_of_verdict(verdict)), str(verdict))
        self.filter_outcomes.labels(str(Outcome.UNSCHEDULABLE), UNKNOWN_NODE_VERDICT)
        for kind in Kind:
            self.relists.labels(str(kind))
            self.watch_restarts.labels(str(kind), "gone")
        for result in ("ok", "error"):
            self.annotation_patches.labels(result)

    def exposition(self) -> bytes:
        """The ``/metrics`` body: ``generate_latest(self.registry)``, the fleet series written from kept text."""
        return _drain(self.exposition_steps())

    def exposition_steps(self) -> Generator[None, None, bytes]:
        """:meth:`exposition` in steps: an event loop lets other work run at each yield; returns the body."""
        fleet = self.fleet
        if fleet is None:
            return generate_latest(self.registry)
        text = yield from fleet.exposition_steps()
        fleet.left_out = True
        try:
            others = generate_latest(self.registry)
        finally:
            fleet.left_out = False
        return others + text.encode()

    def weights(self) -> Mapping[str, float]:
        provider = self.weights_provider
        return provider() if provider is not None else default_weights()

    # WatchObserver
    def register_relayout(self, stats: RelayoutStatsLike) -> None:
        """Export the re-layout controller's counts (only when it runs)."""
        self.registry.register(_RelayoutCollector(stats))

    def register_defrag(self, stats: DefragStats) -> None:
        """Export the defrag controller's counts (only when it runs)."""
        self.registry.register(_DefragCollector(stats))

    def register_headroom(self, stats: HeadroomStats) -> None:
        """Export the headroom controller's counts (only when it runs)."""
        self.registry.register(_HeadroomCollector(stats))

    def register_provisioning(self, stats: ProvisioningStats) -> None:
        """Export the provisioning loop's counts (only when it runs)."""
        self.registry.register(_ProvisioningCollector(stats))

    def restarted(self, kind: Kind, reason: str) -> None:
        self.watch_restarts.labels(str(kind), reason).inc()

    def relisted(self, kind: Kind) -> None:
        self.relists.labels(str(kind)).inc()
