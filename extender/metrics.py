"""Prometheus metrics, prefix ``mig_extender_``; one registry per process (per app in tests)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .view.store import ClusterView, Kind

# Filter + prioritize must stay far below kube-scheduler's 5 s httpTimeout: resolve the low end finely.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


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


class Metrics:
    def __init__(self, view: ClusterView | None = None) -> None:
        # The *_created series double every counter's cardinality and no dashboard reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
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
        if view is not None:
            r.register(_ViewCollector(view))

    # WatchObserver
    def restarted(self, kind: Kind, reason: str) -> None:
        self.watch_restarts.labels(str(kind), reason).inc()

    def relisted(self, kind: Kind) -> None:
        self.relists.labels(str(kind)).inc()
