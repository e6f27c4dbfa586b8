"""Metrics: the slice accounting (against brute force and the model's F), the fleet series on the demo snapshot,
per-GPU series only when asked, caching by node state, incremental fleet series equal to a computation from
scratch, and every series documented in docs/metrics.md."""

from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import extender.metrics as metrics_module
from extender.metrics import DefragStats, HeadroomStats, Metrics, ProvisioningStats
from extender.model.accounting import SliceCounts, fragmentation_ratio, node_slices, slice_counts
from extender.model.catalog import GpuModel, model_named
from extender.model.demand import PodDemand
from extender.model.fragmentation import node_fragmentation, unusable_by_shape
from extender.model.placement import Placement
from extender.model.state import GpuState, Instance
from extender.server.guard import ConnectionGuard, GuardCollector
from extender.server.tls import TlsCollector, TlsStats
from extender.view import store
from extender.view.snapshot import load_snapshot
from extender.view.store import ClusterView, Kind
from tests.builders import gpu, node, pod
from tests.conftest import DEMO_SNAPSHOT
from tests.support import Clock

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "metrics.md"


def counts(state: GpuState) -> tuple[int, int, int, str | None]:
    c = slice_counts(state)
    return c.used, c.free, c.stranded, c.largest.name if c.largest else None


# --- slice accounting ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        # two 3g instances hold all 8 memory slices but only 6 of 7 compute slices
        (gpu("H100-80GB", "3g.40gb@0 3g.40gb@4"), (0, 7, 1, "3g.40gb")),
        (gpu("H100-80GB", "3g.40gb@0 3g.40gb@4", used="3g.40gb@0"), (3, 4, 1, "3g.40gb")),
        # seven 1g instances: memory slice 7 is unreachable, but no compute slice is stranded
        (gpu("A100-40GB", " ".join(f"1g.5gb@{i}" for i in range(7))), (0, 7, 0, "1g.5gb")),
        (gpu("A100-40GB", " ".join(f"1g.5gb@{i}" for i in range(7)), used="1g.5gb@0"), (1, 6, 0, "1g.5gb")),
        (gpu("H100-80GB", "3g.40gb@0 2g.20gb@4 1g.10gb@6", used="3g.40gb@0"), (3, 4, 1, "2g.20gb")),
        (gpu("H100-80GB", "7g.80gb@0", used="7g.80gb@0"), (7, 0, 0, None)),
        (gpu("H100-80GB", "7g.80gb@0"), (0, 7, 0, "7g.80gb")),
        # dynamic: what new legal placements could take
        (gpu("H200-141GB", dynamic=True), (0, 7, 0, "7g.141gb")),
        (gpu("H200-141GB", "3g.71gb@0 3g.71gb@4", used="3g.71gb@0 3g.71gb@4", dynamic=True), (6, 1, 1, None)),
        (gpu("H200-141GB", "4g.71gb@0", used="4g.71gb@0", dynamic=True), (4, 3, 0, "3g.71gb")),
        (gpu("H200-141GB", "3g.71gb@4", used="3g.71gb@4", dynamic=True), (3, 4, 0, "4g.71gb")),
        # 1g@0 and 1g@4 used: 1g@1..3, 1g@5 and the 2-slot 1g@6 still take every free compute slice
        (gpu("H100-80GB", "1g.10gb@0 1g.10gb@4", used="1g.10gb@0 1g.10gb@4", dynamic=True), (2, 5, 0, "2g.20gb")),
    ],
)
def test_slice_counts(state: GpuState, expected: tuple[int, int, int, str | None]) -> None:
    assert counts(state) == expected


def test_mig_disabled_gpus_strand_nothing_and_fit_no_profile() -> None:
    model = model_named("H100-80GB")
    idle = GpuState(0, model, (), mig_enabled=False)
    busy = GpuState(0, model, (), mig_enabled=False, whole_gpu_used=True)
    assert counts(idle) == (0, 7, 0, None)
    assert counts(busy) == (7, 0, 0, None)


def test_attribute_profiles_are_not_base_profiles() -> None:
    # A free 1g.10gb+me instance serves only pods asking for +me: like F, the accounting counts it stranded.
    state = gpu("H100-80GB", "1g.10gb+me@0")
    assert counts(state) == (0, 7, 7, None)


def _brute_force_packable(state: GpuState) -> int:
    """The most compute slices any set of new base-profile placements takes on a dynamic GPU."""
    model = state.model
    options = [
        Placement(start, p)
        for p in model.base_profiles
        for start in p.starts
        if not p.occupancy(start) & state.occupied
    ]
    best = 0
    for size in range(len(options) + 1):
        for chosen in itertools.combinations(options, size):
            mask = 0
            ok = True
            for placement in chosen:
                if placement.mask & mask:
                    ok = False
                    break
                mask |= placement.mask
            if not ok:
                continue
            per_profile = {p: sum(1 for c in chosen if c.profile is p) for p in model.base_profiles}
            if any(state.existing_count(p) + n > p.max_instances for p, n in per_profile.items()):
                continue
            best = max(best, sum(c.profile.compute_slices for c in chosen))
    return best


@st.composite
def dynamic_gpus(draw: st.DrawFn) -> GpuState:
    model: GpuModel = draw(st.sampled_from([model_named("A100-40GB"), model_named("H100-80GB"), model_named("A30")]))
    placements = [Placement(s, p) for p in model.base_profiles for s in p.starts]
    chosen: list[Placement] = []
    mask = 0
    for placement in draw(st.permutations(placements))[: draw(st.integers(0, 8))]:
        count = sum(1 for c in chosen if c.profile is placement.profile)
        if not placement.mask & mask and count < placement.profile.max_instances:
            chosen.append(placement)
            mask |= placement.mask
    return GpuState(0, model, tuple(Instance(p, True) for p in chosen), dynamic=True)


@settings(max_examples=150, deadline=None)
@given(dynamic_gpus())
def test_dynamic_stranded_matches_brute_force(state: GpuState) -> None:
    c = slice_counts(state)
    assert c.stranded == c.free - _brute_force_packable(state)


@settings(max_examples=150, deadline=None)
@given(dynamic_gpus())
def test_stranded_slices_are_unusable_by_every_shape(state: GpuState) -> None:
    # Slices no mix of profiles can use, no single-profile stream can use either: stranded <= each F term.
    c: SliceCounts = slice_counts(state)
    assert all(c.stranded <= unusable for _, unusable in unusable_by_shape(state))
    assert c.largest is None or c.free >= c.largest.compute_slices


# --- the fleet series on the demo snapshot ---------------------------------------------------------------------


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_demo_fleet_series(demo_view: ClusterView) -> None:
    m = Metrics(demo_view)
    assert sample(m, "mig_extender_node_compute_slices", node="h100-idle-3g", model="H100-80GB", state="free") == 56
    assert sample(m, "mig_extender_node_compute_slices", node="h100-idle-3g", model="H100-80GB", state="stranded") == 8
    assert sample(m, "mig_extender_node_compute_slices", node="a100-small", model="A100-40GB", state="used") == 20
    assert sample(m, "mig_extender_node_largest_fitting_profile_slices", node="a100-small", model="A100-40GB") == 1
    assert sample(m, "mig_extender_node_largest_fitting_profile_slices", node="h200-dynamic", model="H200-141GB") == 7
    info = {"node": "h100-exact", "source": "node-annotation", "fidelity": "exact", "mode": "static"}
    assert sample(m, "mig_extender_node_info", **info, strategy="mixed") == 1
    assert sample(m, "mig_extender_nodes", source="allocatable", fidelity="derived-counts", mode="dynamic") == 1
    assert sample(m, "mig_extender_gpus", model="H200-141GB", mode="dynamic") == 8
    assert sample(m, "mig_extender_compute_slices", model="H100-80GB", state="stranded") == 16
    assert sample(m, "mig_extender_nodes_by_largest_fitting_profile", model="H100-80GB", slices="3") == 4
    assert sample(m, "mig_extender_nodes_by_largest_fitting_profile", model="H100-80GB", slices="7") == 0
    # h100-idle-3g: 8 GPUs with two free 3g each
    assert sample(m, "mig_extender_free_instances", model="H100-80GB", profile="3g.40gb") >= 16  # type: ignore[operator]


def test_fragmentation_matches_the_model(demo_view: ClusterView) -> None:
    weights = {"1g": 0.5, "3g": 0.3, "7g": 0.2}
    m = Metrics(demo_view, weights_provider=lambda: weights)
    states = list(demo_view.node_states())
    assert sample(m, "mig_extender_cluster_fragmentation_ratio") == pytest.approx(fragmentation_ratio(states, weights))
    total = sum(node_fragmentation(s.gpus, weights) for s in states)
    assert sample(m, "mig_extender_cluster_fragmentation") == pytest.approx(total)
    for state in states:
        model = state.gpus[0].model.name
        expected = node_fragmentation(state.gpus, weights)
        assert sample(m, "mig_extender_node_fragmentation", node=state.name, model=model) == pytest.approx(expected)
    assert sample(m, "mig_extender_demand_share", shape="7g") == 0.2
    assert sample(m, "mig_extender_demand_share", shape="2g") is None


def test_the_weights_provider_can_be_set_after_construction(demo_view: ClusterView) -> None:
    m = Metrics(demo_view)
    assert sample(m, "mig_extender_demand_share", shape="2g") == pytest.approx(1 / 6)
    m.weights_provider = lambda: {"2g": 1.0}
    assert sample(m, "mig_extender_demand_share", shape="2g") == 1.0
    assert sample(m, "mig_extender_demand_share", shape="1g") is None


def test_per_gpu_series_only_when_asked(demo_view: ClusterView) -> None:
    off = generate_latest(Metrics(demo_view).registry).decode()
    assert "mig_extender_gpu_" not in off
    on = Metrics(demo_view, per_gpu=True)
    text = generate_latest(on.registry).decode()
    gpu_lines = [line for line in text.splitlines() if line.startswith("mig_extender_gpu_compute_slices{")]
    assert len(gpu_lines) == 60 * 3  # 60 GPUs in the demo, 3 states each
    for state in demo_view.node_states():
        model = state.gpus[0].model.name
        for slice_state in ("used", "free", "stranded"):
            per_gpu = sum(
                sample(
                    on,
                    "mig_extender_gpu_compute_slices",
                    node=state.name,
                    gpu=str(g.index),
                    model=model,
                    state=slice_state,
                )
                or 0
                for g in state.gpus
            )
            assert per_gpu == sample(
                on, "mig_extender_node_compute_slices", node=state.name, model=model, state=slice_state
            )
    assert (
        sample(on, "mig_extender_gpu_largest_fitting_profile_slices", node="h200-dynamic", gpu="0", model="H200-141GB")
        == 0
    )


def test_nodes_without_gpus_have_no_series() -> None:
    view = ClusterView()
    view.replace(Kind.NODES, [{"metadata": {"name": "cpu-1", "resourceVersion": "1"}, "status": {}}])
    view.replace(Kind.PODS, [])
    view.replace(Kind.CONFIG, [])
    m = Metrics(view)
    text = generate_latest(m.registry).decode()
    assert "cpu-1" not in text
    assert sample(m, "mig_extender_cluster_fragmentation_ratio") == 0


def test_node_accounting_is_cached_by_node_state(demo_view: ClusterView, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []

    def counting(state):  # type: ignore[no-untyped-def]
        built.append(state.name)
        return node_slices(state)

    monkeypatch.setattr(metrics_module, "node_slices", counting)
    m = Metrics(demo_view)
    generate_latest(m.registry)
    assert sorted(built) == sorted(demo_view.nodes)
    built.clear()
    generate_latest(m.registry)
    assert built == []
    # A pod bound to one node changes that node's state, and only that node is recomputed.
    demo_view.apply(Kind.PODS, "ADDED", pod("new", limits={"nvidia.com/mig-3g.40gb": "1"}, node_name="h100-idle-3g"))
    generate_latest(m.registry)
    assert built == ["h100-idle-3g"]
    assert sample(m, "mig_extender_node_compute_slices", node="h100-idle-3g", model="H100-80GB", state="used") == 3
    # A re-list rebuilds every state; equal ones keep their lines.
    built.clear()
    demo_view.replace(Kind.NODES, DEMO_NODES.values())
    generate_latest(m.registry)
    assert built == []


# --- incremental fleet series against a from-scratch computation ---------------------------------------------

DEMO_ITEMS = yaml.safe_load(DEMO_SNAPSHOT.read_text())["items"]
DEMO_NODES = {i["metadata"]["name"]: i for i in DEMO_ITEMS if i["kind"] == "Node"}
DEMO_CONFIG = next(i for i in DEMO_ITEMS if i["kind"] == "ConfigMap")
NODE_NAMES = sorted(DEMO_NODES)
PROFILES = ["1g.10gb", "3g.40gb", "7g.80gb", "1g.5gb", "2g.20gb", "3g.71gb"]
MIG_CONFIGS = ["all-balanced", "all-1g.10gb", "all-3g.40gb", "all-disabled", "no-such-config"]
MIXES = [None, {"1g": 0.5, "3g": 0.3, "7g": 0.2}, {"2g": 1.0}]

view_changes = st.one_of(
    st.tuples(st.just("bind"), st.sampled_from(NODE_NAMES), st.sampled_from(PROFILES)),
    st.tuples(st.just("unbind"), st.integers(0, 20), st.just("")),
    st.tuples(st.just("assume"), st.sampled_from(NODE_NAMES), st.sampled_from(PROFILES)),
    st.tuples(st.just("time"), st.just(""), st.sampled_from(["5", "40"])),
    st.tuples(st.just("delete-node"), st.sampled_from(NODE_NAMES), st.just("")),
    st.tuples(st.just("restore-node"), st.sampled_from(NODE_NAMES), st.just("")),
    st.tuples(st.just("mig-config"), st.sampled_from(NODE_NAMES), st.sampled_from(MIG_CONFIGS)),
    st.tuples(st.just("relist"), st.just(""), st.just("")),
    st.tuples(st.just("config-map"), st.just(""), st.just("")),
    st.tuples(st.just("mix"), st.integers(0, len(MIXES) - 1), st.just("")),
    st.tuples(st.just("scrape"), st.just(""), st.just("")),
)


class _World:
    """A view of the demo snapshot, changed step by step; ``mix`` is the demand mix the metrics read."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.view = ClusterView(clock=self.clock, assume_ttl_s=30.0)
        load_snapshot(self.view, str(DEMO_SNAPSHOT))
        self.nodes = {name: copy.deepcopy(raw) for name, raw in DEMO_NODES.items()}
        self.bound: list[dict[str, Any]] = []
        self.mix: dict[str, float] | None = None

    def weights(self) -> dict[str, float]:
        return self.mix if self.mix is not None else metrics_module.default_weights()

    def apply(self, step: int, change: tuple[str, Any, str]) -> None:
        kind, target, detail = change
        view = self.view
        if kind == "bind":
            raw = pod(f"b{step}", limits={f"nvidia.com/mig-{detail}": "1"}, node_name=target)
            raw["status"]["phase"] = "Running"
            self.bound.append(raw)
            view.apply(Kind.PODS, "ADDED", raw)
        elif kind == "unbind" and self.bound:
            view.apply(Kind.PODS, "DELETED", self.bound.pop(target % len(self.bound)))
        elif kind == "assume":
            view.assume(f"a{step}", target, PodDemand(mig=((detail, 1),)))
        elif kind == "time":
            self.clock.advance(float(detail))
        elif kind == "delete-node":
            view.apply(Kind.NODES, "DELETED", self.nodes[target])
        elif kind == "restore-node":
            view.apply(Kind.NODES, "ADDED", self.nodes[target])
        elif kind == "mig-config":
            self.nodes[target]["metadata"].setdefault("labels", {})["nvidia.com/mig.config"] = detail
            view.apply(Kind.NODES, "MODIFIED", self.nodes[target])
        elif kind == "relist":
            view.replace(Kind.NODES, [raw for name, raw in self.nodes.items() if name in view.nodes])
        elif kind == "config-map":
            view.apply(Kind.CONFIG, "MODIFIED", DEMO_CONFIG)
        elif kind == "mix":
            self.mix = MIXES[target]


def fleet_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a text exposition but the collect time, by name and labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name != "mig_extender_fleet_collect_seconds"
    }


def assert_fleet_from_scratch(world: _World, kept: Metrics) -> None:
    assert kept.fleet is not None
    got = fleet_samples(kept.fleet.exposition())
    fresh = Metrics(world.view, per_gpu=kept.per_gpu, weights_provider=world.weights)
    assert fresh.fleet is not None
    assert got == pytest.approx(fleet_samples(fresh.fleet.exposition()), rel=1e-12, abs=1e-9)
    # and against the model's per-GPU F, without the accounting's sums
    states = [s for s in world.view.node_states() if s.gpus]
    weights = world.weights()
    total_f = sum(node_fragmentation(s.gpus, weights) for s in states)
    free = sum(s.total_compute - s.used_compute for s in states)
    assert got[("mig_extender_cluster_fragmentation", ())] == pytest.approx(total_f, abs=1e-9)
    assert got[("mig_extender_cluster_fragmentation_ratio", ())] == pytest.approx(total_f / free if free else 0.0)
    assert sum(v for (name, labels), v in got.items() if name == "mig_extender_nodes") == len(states)


@settings(max_examples=120, deadline=None)
@given(st.lists(view_changes, min_size=1, max_size=25), st.booleans(), st.booleans())
def test_incremental_fleet_series_equal_a_computation_from_scratch(
    changes: list[tuple[str, Any, str]], short_log: bool, per_gpu: bool
) -> None:
    # A short change log makes most scrapes fall back to the pass over every node.
    limit = store._CHANGE_LOG_LIMIT
    store._CHANGE_LOG_LIMIT = 3 if short_log else limit
    try:
        world = _World()
        kept = Metrics(world.view, per_gpu=per_gpu, weights_provider=world.weights)
        assert_fleet_from_scratch(world, kept)
        for step, change in enumerate(changes):
            if change[0] == "scrape":
                assert_fleet_from_scratch(world, kept)
            else:
                world.apply(step, change)
        assert_fleet_from_scratch(world, kept)
    finally:
        store._CHANGE_LOG_LIMIT = limit


def test_an_assumption_that_expired_is_gone_from_the_next_scrape() -> None:
    world = _World()
    kept = Metrics(world.view, weights_provider=world.weights)
    world.apply(0, ("assume", "h100-idle-3g", "3g.40gb"))
    assert_fleet_from_scratch(world, kept)
    used = ("mig_extender_node_compute_slices", (("model", "H100-80GB"), ("node", "h100-idle-3g"), ("state", "used")))
    assert kept.fleet is not None and fleet_samples(kept.fleet.exposition())[used] == 3
    world.apply(1, ("time", "", "40"))  # past the 30 s TTL; nothing has read the view since
    assert fleet_samples(kept.fleet.exposition())[used] == 0
    assert_fleet_from_scratch(world, kept)


def test_scrapes_in_steps_see_what_changed_between_their_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "_BATCH", 2)  # a yield every 2 nodes
    world = _World()
    kept = Metrics(world.view, per_gpu=True, weights_provider=world.weights)
    first, second = kept.exposition_steps(), kept.exposition_steps()
    next(first)
    world.apply(0, ("bind", "h100-idle-3g", "3g.40gb"))
    next(second)  # a second scrape beside the first
    world.apply(1, ("delete-node", "a100-small", ""))
    world.apply(2, ("mig-config", "h100-balanced", "all-1g.10gb"))
    for steps in (second, first):
        assert sum(1 for _ in steps) >= 1
    assert_fleet_from_scratch(world, kept)


def test_a_scrape_applies_only_the_nodes_that_changed(demo_view: ClusterView, monkeypatch: pytest.MonkeyPatch) -> None:
    m = Metrics(demo_view)
    m.exposition()
    looked_up: list[list[str]] = []
    real = demo_view.node_states_for

    def recording(names):  # type: ignore[no-untyped-def]
        looked_up.append(list(names))
        return real(names)

    monkeypatch.setattr(demo_view, "node_states_for", recording)
    m.exposition()
    assert looked_up == []  # nothing changed: no node looked up
    demo_view.apply(Kind.PODS, "ADDED", pod("new", limits={"nvidia.com/mig-3g.40gb": "1"}, node_name="h100-idle-3g"))
    m.exposition()
    assert looked_up[-1] == ["h100-idle-3g"]


def test_the_exposition_is_the_registrys(demo_view: ClusterView) -> None:
    m = Metrics(demo_view, per_gpu=True)
    m.request_seconds.labels("filter").observe(0.003)
    served = m.exposition().decode()
    assert fleet_samples(served) == pytest.approx(fleet_samples(generate_latest(m.registry).decode()))
    # each family once: the fleet's written apart, the others by prometheus_client
    types = re.findall(r"^# TYPE (\S+) ", served, re.M)
    assert len(types) == len(set(types))
    assert {"mig_extender_node_compute_slices", "mig_extender_request_duration_seconds"} <= set(types)


def test_known_label_sets_start_at_zero() -> None:
    m = Metrics()
    assert sample(m, "mig_extender_request_duration_seconds_count", verb="filter") == 0
    assert sample(m, "mig_extender_bad_requests_total", verb="prioritize", status="internal") == 0
    assert sample(m, "mig_extender_filter_node_outcomes_total", outcome="Unschedulable", verdict="wait") == 0
    assert sample(m, "mig_extender_relists_total", kind="configmap") == 0
    assert sample(m, "mig_extender_annotation_patches_total", result="error") == 0


def test_the_builders_node_helper_gives_the_same_counts_as_the_view() -> None:
    state = node("n", gpu("H100-80GB", "3g.40gb@0 3g.40gb@4"), gpu("H100-80GB", "7g.80gb@0", used="7g.80gb@0"))
    (group,) = node_slices(state).models
    assert (group.capacity, group.used, group.free, group.stranded, group.largest_slices) == (14, 7, 7, 1, 3)


# --- documentation -----------------------------------------------------------------------------------------------


def exported_names(view: ClusterView) -> set[str]:
    m = Metrics(view, per_gpu=True)
    m.watch_restarts.labels("nodes", "gone").inc()
    m.events_posted.labels("MigNoLayoutFits", "ok").inc()
    m.pending_demand.labels("7g.80gb", "relayout").set(1)
    stats = ProvisioningStats(requests={"p": 1}, planned_nodes={"p": 1}, unmet_pods={"hosted": 1})
    stats.requests_created["p"] += 1
    stats.requests_deleted["arrived"] += 1
    stats.nodes_arrived["p"] += 1
    stats.protections_released["in-use"] += 1
    m.register_provisioning(stats)
    m.register_defrag(DefragStats())
    m.register_headroom(HeadroomStats())
    m.registry.register(GuardCollector(ConnectionGuard(read_timeout_s=1, max_connections=1)))
    m.registry.register(TlsCollector(TlsStats()))
    names = set()
    for family in m.registry.collect():
        suffix = "_total" if family.type == "counter" else ""
        names.add(family.name + suffix)
    return names


def test_every_exported_series_is_documented(demo_view: ClusterView) -> None:
    documented = set(re.findall(r"`(mig_extender_[a-z_]+)`", DOCS.read_text()))
    exported = exported_names(demo_view)
    assert exported - documented == set(), "not in docs/metrics.md"
    assert documented - exported == set(), "documented but not exported"


def test_the_dashboard_and_alerts_use_only_exported_series(demo_view: ClusterView) -> None:
    exported = exported_names(demo_view)
    histograms = {"mig_extender_request_duration_seconds", "mig_extender_nodes_per_request"}
    used = set()
    for path in (
        ROOT / "manifests/grafana/mig-extender-dashboard.json",
        ROOT / "manifests/prometheus/prometheusrule.yaml",
    ):
        used |= set(re.findall(r"mig_extender_[a-z_]+", path.read_text()))
    used -= {"mig_extender_dashboard"}  # the ConfigMap's and the file's names, not series
    for name in used:
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        assert name in exported or base in histograms, f"{name} is not exported"


def test_relayout_counts_are_exported() -> None:
    from extender.controllers.relayout import RelayoutStats
    from extender.metrics import Metrics

    stats = RelayoutStats()
    metrics = Metrics()
    metrics.register_relayout(stats)
    stats.started += 2
    stats.outcomes["success"] += 1
    stats.skipped["cooldown"] += 3
    get = metrics.registry.get_sample_value
    assert get("mig_extender_relayouts_started_total") == 2
    assert get("mig_extender_relayouts_total", {"outcome": "success"}) == 1
    assert get("mig_extender_relayouts_total", {"outcome": "failed"}) == 0
    assert get("mig_extender_relayout_skipped_total", {"reason": "cooldown"}) == 3
