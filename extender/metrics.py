"""Prometheus metrics, prefix ``mig_extender_``; one registry per process (per app in tests).

Three kinds of series (every one is listed in ``docs/metrics.md``):

- counters and histograms that the request path, the watch and the annotator update;
- the view's health, read at scrape time (:class:`_ViewCollector`);
- the fleet's slices and fragmentation, computed at scrape time from the view's node states
  (:class:`_FleetCollector`): per node and model, per model (bounded), and per GPU only when ``per_gpu``.

The slice accounting (used, free and stranded compute slices, the largest profile that still fits) is pure
and lives here, above the model, so that the metrics and ``mig-extender report`` count the same way.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .model.catalog import GpuModel, Profile
from .model.fit import Verdict
from .model.fragmentation import NAMED_MIXES, stranded_compute, unusable_by_shape
from .model.placement import max_instances
from .model.policy import Outcome
from .model.state import Fidelity, GpuState, NodeState
from .view.store import ClusterView, Kind

# Filter + prioritize must stay far below kube-scheduler's 5 s httpTimeout: resolve the low end finely.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

VERBS = ("filter", "prioritize")
UNKNOWN_NODE_VERDICT = "unknown-node"  # the verdict label the scheduling service counts for unknown nodes

WeightsProvider = Callable[[], Mapping[str, float]]

# --- slice accounting (pure; shared with ``extender.report``) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class SliceCounts:
    """One GPU state's compute slices, and what can still be placed on it.

    ``free`` includes ``stranded``: ``capacity == used + free``. ``stranded`` are free compute slices that no
    combination of base-profile instances could use: free minus the most compute slices that the free
    pre-made instances (static GPUs), or the best set of new legal placements (dynamic GPUs), provide.
    """

    capacity: int
    used: int
    free: int
    stranded: int
    largest: Profile | None
    """The base profile with the most compute slices that has a free instance (static) or a free legal
    placement within its instance limit (dynamic); None when none has."""
    free_instances: tuple[tuple[Profile, int], ...]
    """Per base profile: free instances (static), or how many more a stream of that profile could get
    (dynamic). Counts of different profiles on one dynamic GPU are alternatives, not a sum."""
    unusable: tuple[tuple[str, float], ...]
    """Per profile shape: free compute slices a stream of that shape could not use (the model's F terms)."""

    @property
    def largest_slices(self) -> int:
        return self.largest.compute_slices if self.largest is not None else 0


def _room(gpu: GpuState, profile: Profile) -> int:
    """How many more instances of ``profile`` the GPU could get (a stream of one profile)."""
    if not gpu.mig_enabled:
        return 0
    if gpu.dynamic:
        return min(profile.max_instances - gpu.existing_count(profile), max_instances(gpu.model, profile, gpu.occupied))
    return gpu.free_count(profile)


_COUNTS: dict[int, SliceCounts] = {}
# One entry per GPU state: tens in a fleet of static layouts, ~700 per GPU model in a dynamic one.
_COUNTS_LIMIT = 5_000  # worst ~5.6 MB (~1,110 B per entry, measured)


def slice_counts(gpu: GpuState) -> SliceCounts:
    """The GPU's :class:`SliceCounts`, cached by GPU state (model, instances, use), not by index."""
    cached = _COUNTS.get(gpu.state_id)
    if cached is None:
        if len(_COUNTS) >= _COUNTS_LIMIT:
            _COUNTS.clear()
        cached = _COUNTS[gpu.state_id] = _slice_counts(gpu)
    return cached


def _slice_counts(gpu: GpuState) -> SliceCounts:
    model = gpu.model
    capacity = model.compute_slices
    used = gpu.used_compute
    free = capacity - used
    rooms = tuple((p, _room(gpu, p)) for p in model.base_profiles)
    largest = max((p for p, room in rooms if room > 0), key=lambda p: (p.compute_slices, p.memory_slices), default=None)
    return SliceCounts(
        capacity=capacity,
        used=used,
        free=free,
        stranded=stranded_compute(gpu),
        largest=largest,
        free_instances=rooms,
        unusable=unusable_by_shape(gpu),
    )


def source_of(fidelity: Fidelity) -> str:
    """Where a node's layout was read from, for its fidelity."""
    return {
        Fidelity.EXACT: "node-annotation",
        Fidelity.LAYOUT: "mig-parted-config",
        Fidelity.COUNTS: "allocatable",
    }[fidelity]


def gpu_mode(gpu: GpuState) -> str:
    if not gpu.mig_enabled:
        return "mig-disabled"
    return "dynamic" if gpu.dynamic else "static"


def node_mode(node: NodeState) -> str:
    modes = {"dynamic" if g.dynamic else "static" for g in node.gpus}
    return modes.pop() if len(modes) == 1 else "mixed"


@dataclass(frozen=True, slots=True)
class ModelSlices:
    """A node's GPUs of one model, added up."""

    model: GpuModel
    gpus: tuple[tuple[int, SliceCounts], ...]
    capacity: int
    used: int
    free: int
    stranded: int
    largest: Profile | None
    unusable: tuple[tuple[str, float], ...]
    """Per shape, summed over the GPUs: F is their dot product with the demand mix."""
    free_instances: tuple[tuple[str, int], ...]
    """Per base profile name, summed over the GPUs (see :attr:`SliceCounts.free_instances`)."""

    @property
    def largest_slices(self) -> int:
        return self.largest.compute_slices if self.largest is not None else 0

    def fragmentation(self, weights: Mapping[str, float]) -> float:
        return sum(weights.get(shape, 0.0) * value for shape, value in self.unusable)


def _model_slices(model: GpuModel, gpus: list[tuple[int, SliceCounts]]) -> ModelSlices:
    unusable: dict[str, float] = {}
    instances: dict[str, int] = {}
    for _, counts in gpus:
        for shape, value in counts.unusable:
            unusable[shape] = unusable.get(shape, 0.0) + value
        for profile, room in counts.free_instances:
            instances[profile.name] = instances.get(profile.name, 0) + room
    largest = max(
        (c.largest for _, c in gpus if c.largest is not None),
        key=lambda p: (p.compute_slices, p.memory_slices),
        default=None,
    )
    return ModelSlices(
        model=model,
        gpus=tuple(gpus),
        capacity=sum(c.capacity for _, c in gpus),
        used=sum(c.used for _, c in gpus),
        free=sum(c.free for _, c in gpus),
        stranded=sum(c.stranded for _, c in gpus),
        largest=largest,
        unusable=tuple(sorted(unusable.items())),
        free_instances=tuple(instances.items()),
    )


@dataclass(frozen=True, slots=True)
class NodeSlices:
    name: str
    fidelity: Fidelity
    mode: str
    strategy: str
    models: tuple[ModelSlices, ...]
    gpu_modes: tuple[tuple[str, str], ...]
    """(model name, GPU mode) per GPU."""


def node_slices(node: NodeState) -> NodeSlices:
    """The slice accounting of one node, per GPU model (a node normally has one)."""
    by_model: dict[GpuModel, list[tuple[int, SliceCounts]]] = {}
    for gpu in node.gpus:
        by_model.setdefault(gpu.model, []).append((gpu.index, slice_counts(gpu)))
    return NodeSlices(
        name=node.name,
        fidelity=node.fidelity,
        mode=node_mode(node),
        strategy=str(node.strategy),
        models=tuple(_model_slices(m, gpus) for m, gpus in sorted(by_model.items(), key=lambda kv: kv[0].name)),
        gpu_modes=tuple((g.model.name, gpu_mode(g)) for g in node.gpus),
    )


def default_weights() -> dict[str, float]:
    """The uniform mix, normalised: what F uses until a weights provider (the learned mix) is set."""
    total = sum(NAMED_MIXES["uniform"].values())
    return {k: v / total for k, v in NAMED_MIXES["uniform"].items()}


def fragmentation_ratio(nodes: Iterable[NodeSlices], weights: Mapping[str, float]) -> tuple[float, float, int]:
    """(cluster F, F / free compute slices, free compute slices).

    The same figure as ``model.fragmentation.fragmentation_ratio``, from the cached summaries.
    """
    total_f = 0.0
    total_free = 0
    for node in nodes:
        for group in node.models:
            total_f += group.fragmentation(weights)
            total_free += group.free
    return total_f, (total_f / total_free if total_free else 0.0), total_free


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
        yield objects
        warnings = GaugeMetricFamily(
            "mig_extender_nodes_with_warnings", "Nodes whose GPU state was read with warnings (see logs)."
        )
        warnings.add_metric([], len(self.view.counters.node_warnings))
        yield warnings
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
        ):
            family = CounterMetricFamily(name, text)
            family.add_metric([], value)
            yield family


_STATES = ("used", "free", "stranded")


@dataclass
class _Fleet:
    """Fleet-wide sums gathered while the per-node series are written (bounded label sets only)."""

    slices: Tally[tuple[str, str]] = field(default_factory=Tally)
    free_instances: Tally[tuple[str, str]] = field(default_factory=Tally)
    nodes: Tally[tuple[str, str, str]] = field(default_factory=Tally)
    gpus: Tally[tuple[str, str]] = field(default_factory=Tally)
    largest_fit: Tally[tuple[str, int]] = field(default_factory=Tally)
    fragmentation: dict[str, float] = field(default_factory=dict)
    models: dict[str, GpuModel] = field(default_factory=dict)


def _gauge(name: str, text: str, *labels: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, labels=list(labels))


class _FleetCollector(Collector):
    """Slices, the largest fitting profile and fragmentation of every GPU node, computed at scrape time.

    A node's accounting is cached by the identity of its :class:`NodeState`: the view hands out the same
    object until something about the node changes, so a scrape of an unchanged 5,000-node fleet is a pass
    over cached summaries plus one short dot product per node for F (the demand mix moves with time).
    """

    def __init__(self, view: ClusterView, metrics: Metrics) -> None:
        self.view = view
        self.metrics = metrics
        self._cache: dict[str, tuple[NodeState, NodeSlices]] = {}

    def summaries(self) -> list[NodeSlices]:
        cache: dict[str, tuple[NodeState, NodeSlices]] = {}
        for state in self.view.node_states():
            if not state.gpus:
                continue
            hit = self._cache.get(state.name)
            summary = hit[1] if hit is not None and hit[0] is state else node_slices(state)
            cache[state.name] = (state, summary)
        self._cache = cache
        return [summary for _, summary in cache.values()]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        started = time.perf_counter()
        weights = dict(self.metrics.weights())
        nodes = self.summaries()
        fleet = _Fleet()
        yield from self._per_node(nodes, weights, fleet)
        if self.metrics.per_gpu:
            yield from self._per_gpu(nodes, weights)
        yield from self._fleet(fleet)
        yield from self._cluster(fleet, weights)
        took = _gauge("mig_extender_fleet_collect_seconds", "Time the last scrape spent computing the fleet metrics.")
        took.add_metric([], time.perf_counter() - started)
        yield took

    @staticmethod
    def _per_node(nodes: list[NodeSlices], weights: Mapping[str, float], fleet: _Fleet) -> Iterator[GaugeMetricFamily]:
        slices = _gauge(
            "mig_extender_node_compute_slices",
            "Compute slices of a node's GPUs of one model, by state: used, free (includes stranded), stranded "
            "(free, but no base-profile instance can use them).",
            "node",
            "model",
            "state",
        )
        largest = _gauge(
            "mig_extender_node_largest_fitting_profile_slices",
            "Compute slices of the largest base MIG profile that still fits on one of the node's GPUs (0: none).",
            "node",
            "model",
        )
        fragmentation = _gauge(
            "mig_extender_node_fragmentation",
            "Fragmentation F of the node's GPUs of one model under the current demand mix, in compute slices.",
            "node",
            "model",
        )
        info = _gauge(
            "mig_extender_node_info",
            "1 per GPU node: where its layout was read from (source), how exactly it is known (fidelity), "
            "its GPU mode and MIG strategy.",
            "node",
            "source",
            "fidelity",
            "mode",
            "strategy",
        )
        for node in nodes:
            source = source_of(node.fidelity)
            info.add_metric([node.name, source, str(node.fidelity), node.mode, node.strategy], 1)
            fleet.nodes[(source, str(node.fidelity), node.mode)] += 1
            for model_name, mode in node.gpu_modes:
                fleet.gpus[(model_name, mode)] += 1
            for group in node.models:
                model = group.model.name
                fleet.models[model] = group.model
                for state, value in zip(_STATES, (group.used, group.free, group.stranded)):
                    slices.add_metric([node.name, model, state], value)
                    fleet.slices[(model, state)] += value
                largest.add_metric([node.name, model], group.largest_slices)
                node_f = group.fragmentation(weights)
                fragmentation.add_metric([node.name, model], node_f)
                fleet.fragmentation[model] = fleet.fragmentation.get(model, 0.0) + node_f
                fleet.largest_fit[(model, group.largest_slices)] += 1
                for profile_name, room in group.free_instances:
                    fleet.free_instances[(model, profile_name)] += room
        yield from (slices, largest, fragmentation, info)

    @staticmethod
    def _per_gpu(nodes: list[NodeSlices], weights: Mapping[str, float]) -> Iterator[GaugeMetricFamily]:
        slices = _gauge(
            "mig_extender_gpu_compute_slices",
            "Compute slices of one GPU by state (used, free, stranded); only with per-GPU metrics on.",
            "node",
            "gpu",
            "model",
            "state",
        )
        largest = _gauge(
            "mig_extender_gpu_largest_fitting_profile_slices",
            "Compute slices of the largest base MIG profile that still fits on the GPU (0: none); per-GPU.",
            "node",
            "gpu",
            "model",
        )
        fragmentation = _gauge(
            "mig_extender_gpu_fragmentation",
            "Fragmentation F of one GPU under the current demand mix, in compute slices; per-GPU.",
            "node",
            "gpu",
            "model",
        )
        for node in nodes:
            for group in node.models:
                for index, counts in group.gpus:
                    labels = [node.name, str(index), group.model.name]
                    for state, value in zip(_STATES, (counts.used, counts.free, counts.stranded)):
                        slices.add_metric([*labels, state], value)
                    largest.add_metric(labels, counts.largest_slices)
                    fragmentation.add_metric(labels, sum(weights.get(s, 0.0) * u for s, u in counts.unusable))
        yield from (slices, largest, fragmentation)

    @staticmethod
    def _fleet(fleet: _Fleet) -> Iterator[GaugeMetricFamily]:
        slices = _gauge(
            "mig_extender_compute_slices",
            "Compute slices of the fleet's GPUs per model, by state (used, free including stranded, stranded).",
            "model",
            "state",
        )
        for (model, state), value in sorted(fleet.slices.items()):
            slices.add_metric([model, state], value)
        instances = _gauge(
            "mig_extender_free_instances",
            "Per model and base profile: free MIG instances (static GPUs) plus, on dynamic GPUs, how many more "
            "instances of that profile alone each GPU could get.",
            "model",
            "profile",
        )
        for (model, profile), value in sorted(fleet.free_instances.items()):
            instances.add_metric([model, profile], value)
        by_fit = _gauge(
            "mig_extender_nodes_by_largest_fitting_profile",
            "GPU nodes per model by the compute slices of the largest base profile that still fits on them.",
            "model",
            "slices",
        )
        for model, gpu_model in sorted(fleet.models.items()):
            for size in sorted({0, *(p.compute_slices for p in gpu_model.base_profiles)}):
                by_fit.add_metric([model, str(size)], fleet.largest_fit[(model, size)])
        nodes = _gauge(
            "mig_extender_nodes", "GPU nodes by layout source, fidelity and mode.", "source", "fidelity", "mode"
        )
        for (source, fidelity, mode), value in sorted(fleet.nodes.items()):
            nodes.add_metric([source, fidelity, mode], value)
        gpus = _gauge("mig_extender_gpus", "GPUs by model and mode (static, dynamic, mig-disabled).", "model", "mode")
        for (model, mode), value in sorted(fleet.gpus.items()):
            gpus.add_metric([model, mode], value)
        fragmentation = _gauge(
            "mig_extender_fragmentation", "Sum of F over the fleet's GPUs of one model, in compute slices.", "model"
        )
        for model, f in sorted(fleet.fragmentation.items()):
            fragmentation.add_metric([model], f)
        yield from (slices, instances, by_fit, nodes, gpus, fragmentation)

    @staticmethod
    def _cluster(fleet: _Fleet, weights: Mapping[str, float]) -> Iterator[GaugeMetricFamily]:
        # fragmentation_ratio() over the same summaries, from the sums the per-node pass already made
        total_f = sum(fleet.fragmentation.values())
        total_free = sum(value for (_, state), value in fleet.slices.items() if state == "free")
        ratio = total_f / total_free if total_free else 0.0
        cluster_f = _gauge("mig_extender_cluster_fragmentation", "Sum of F over every GPU node, in compute slices.")
        cluster_f.add_metric([], total_f)
        cluster_ratio = _gauge(
            "mig_extender_cluster_fragmentation_ratio",
            "Cluster F divided by the fleet's free compute slices: 0 when every free slice is usable, 1 when none.",
        )
        cluster_ratio.add_metric([], ratio)
        share = _gauge(
            "mig_extender_demand_share",
            "The demand mix D that F and the scores use: share of recent MIG requests per profile shape.",
            "shape",
        )
        for shape, value in sorted(weights.items()):
            share.add_metric([shape], value)
        yield from (cluster_f, cluster_ratio, share)


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
    """By reason: arrived (a node of the pool came), demand-gone, mode (not in requests mode)."""
    requests: dict[str, int] = field(default_factory=dict)
    """Outstanding capacity requests, by NodePool."""
    requests_stuck: int = 0
    nodes_arrived: Tally[str] = field(default_factory=Tally)
    protections_released: Tally[str] = field(default_factory=Tally)
    """By reason: in-use (a MIG pod runs there) or timeout."""
    planned_nodes: dict[str, int] = field(default_factory=dict)
    """Nodes the last plan wants asked for, by NodePool (in plan-only mode: what it would ask for)."""
    unmet_pods: dict[str, int] = field(default_factory=dict)
    """Pods counted as unmet demand, by outcome: hosted, no-pool, capped."""
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
            "Pods counted as unmet demand by the last plan, by outcome (hosted, no-pool, capped).",
            "outcome",
            s.unmet_pods,
        )
        yield CounterMetricFamily(
            "mig_extender_provisioning_errors", "Provisioning reconciles that failed.", value=s.errors
        )


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
        per_gpu: bool = False,
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
            self.nodes_per_request.labels(verb)
            for status in ("400", "413", "internal"):
                self.bad_requests.labels(verb, status)
        for verdict in Verdict:
            if verdict is Verdict.FITS_NOW:
                outcome = Outcome.SUCCESS
            else:
                outcome = Outcome.UNSCHEDULABLE if verdict.preemption_may_help else Outcome.UNRESOLVABLE
            self.filter_outcomes.labels(str(outcome), str(verdict))
        self.filter_outcomes.labels(str(Outcome.UNSCHEDULABLE), UNKNOWN_NODE_VERDICT)
        for kind in Kind:
            self.relists.labels(str(kind))
            self.watch_restarts.labels(str(kind), "gone")
        for result in ("ok", "error"):
            self.annotation_patches.labels(result)

    def weights(self) -> Mapping[str, float]:
        provider = self.weights_provider
        return provider() if provider is not None else default_weights()

    # WatchObserver
    def register_relayout(self, stats: RelayoutStatsLike) -> None:
        """Export the re-layout controller's counts (only when it runs)."""
        self.registry.register(_RelayoutCollector(stats))

    def register_provisioning(self, stats: ProvisioningStats) -> None:
        """Export the provisioning loop's counts (only when it runs)."""
        self.registry.register(_ProvisioningCollector(stats))

    def restarted(self, kind: Kind, reason: str) -> None:
        self.watch_restarts.labels(str(kind), reason).inc()

    def relisted(self, kind: Kind) -> None:
        self.relists.labels(str(kind)).inc()
