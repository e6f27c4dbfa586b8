"""Process-wide caches stay within their bounds under churn, and answers do not depend on what they hold.

Each bound is set to a small number and the cache fed more distinct keys than that; then the answers computed
with caches cleared, evicted or tiny are compared with those computed with the default bounds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache
from itertools import combinations
from types import ModuleType
from typing import Any

import pytest
from cachetools import LRUCache

from extender.metrics import Metrics
from extender.model import accounting, fragmentation, policy, state
from extender.model import fit as fit_module
from extender.model.accounting import slice_counts
from extender.model.demand import PodDemand
from extender.model.fit import FitResult, fit
from extender.model.fragmentation import unusable_by_shape
from extender.model.migparted import parse_config
from extender.model.policy import PolicyConfig, evaluate
from extender.model.state import GpuState, NodeState, intern_key
from extender.server import scheduling
from extender.server.scheduling import SchedulingService
from extender.server.wire import ExtenderArgs
from extender.settings import Settings
from extender.view import sources, store
from extender.view.snapshot import load_snapshot
from extender.view.store import ClusterView, Kind
from tests.builders import gpu, node, pod
from tests.conftest import DEMO_SNAPSHOT
from tests.support import Clock

CONFIG = PolicyConfig()
ONE_1G = PodDemand(mig=(("1g.10gb", 1),))
DEMANDS = (ONE_1G, PodDemand(mig=(("3g.40gb", 1),)), PodDemand(mig=(("1g.10gb", 1), ("2g.20gb", 1))))
BOUND = 4
FED = 3 * BOUND + 1  # distinct keys fed: more than the bound, and past more than one clear


def dynamic_gpus(count: int) -> list[GpuState]:
    """``count`` distinct states of a dynamic H100: 1g.10gb instances used at distinct sets of starts."""
    starts = [c for size in range(8) for c in combinations(range(7), size)]
    assert count <= len(starts)
    layouts = [" ".join(f"1g.10gb@{s}" for s in chosen) for chosen in starts[:count]]
    return [gpu("H100-80GB", layout, used=layout, dynamic=True) for layout in layouts]


def dynamic_node(used: GpuState, name: str = "n") -> NodeState:
    """``used`` and an empty dynamic H100."""
    return node(name, used, gpu("H100-80GB", dynamic=True))


def demo_view(clock: Clock | None = None) -> ClusterView:
    view = ClusterView(clock=clock or Clock())
    load_snapshot(view, str(DEMO_SNAPSHOT))
    return view


def service_on(view: ClusterView) -> SchedulingService:
    return SchedulingService(view, Settings(), Metrics(view), clock=view.clock)


def mig_pod(name: str, profile: str = "1g.10gb", count: int = 1, node_name: str | None = None) -> dict[str, Any]:
    return pod(name, limits={f"nvidia.com/mig-{profile}": count}, node_name=node_name)


def h100_nodes(view: ClusterView) -> list[str]:
    """Demo nodes with 1g.10gb instances, for the pods the tests bind."""
    nodes = ["h100-balanced", "h100-inference"]
    assert set(nodes) <= set(view.nodes)
    return nodes


def ask(service: SchedulingService, raw_pod: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    args = ExtenderArgs(pod=raw_pod, node_names=list(service.view.nodes), nodes=None)
    return service.filter(args), service.prioritize(args)


# --- each cache stays at or under its bound -------------------------------------------------------------


def interned(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    monkeypatch.setattr(state, "_INTERNED", {})
    monkeypatch.setattr(state, "_INTERN_LIMIT", BOUND)
    for i in range(FED):
        intern_key(("test-cache-bounds", i))
    return len(state._INTERNED), BOUND


def fits(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    assert policy._FITS.maxsize == policy._FITS_LIMIT
    monkeypatch.setattr(policy, "_FITS", LRUCache(maxsize=BOUND))
    for used in dynamic_gpus(FED):
        evaluate(dynamic_node(used), ONE_1G, CONFIG)
    return len(policy._FITS), BOUND


def vectors_on_mask(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    assert fit_module._vectors_on_mask.cache_parameters()["maxsize"] == fit_module._VECTORS_ON_MASK_LIMIT
    small = lru_cache(maxsize=BOUND)(fit_module._vectors_on_mask.__wrapped__)
    monkeypatch.setattr(fit_module, "_vectors_on_mask", small)
    monkeypatch.setattr(fit_module, "_GPU_VECTORS", {})  # answers for these GPU states are not cached already
    for used in dynamic_gpus(FED):  # each GPU state has its own occupied mask
        fit(dynamic_node(used), ONE_1G)
    return small.cache_info().currsize, BOUND


def per_gpu_state(
    module: ModuleType, table: str, read: Callable[[GpuState], object]
) -> Callable[[pytest.MonkeyPatch], tuple[int, int]]:
    """A dict cache keyed by GPU state (``table``, bounded by ``table + "_LIMIT"``), fed by ``read``."""

    def feed(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
        monkeypatch.setattr(module, table, {})
        monkeypatch.setattr(module, table + "_LIMIT", BOUND)
        for used in dynamic_gpus(FED):
            read(used)
        return len(getattr(module, table)), BOUND

    return feed


gpu_vectors = per_gpu_state(fit_module, "_GPU_VECTORS", lambda used: fit(dynamic_node(used), ONE_1G))
unusable = per_gpu_state(fragmentation, "_UNUSABLE", unusable_by_shape)
counts = per_gpu_state(accounting, "_COUNTS", slice_counts)


def observed(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    monkeypatch.setattr(scheduling, "_OBSERVED_LIMIT", BOUND)
    service = service_on(demo_view())
    for i in range(FED):
        ask(service, mig_pod(f"p{i}"))
    return len(service._observed), BOUND


def demands(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    monkeypatch.setattr(scheduling, "_DEMANDS_LIMIT", BOUND)
    service = service_on(demo_view())
    for i in range(FED):
        ask(service, mig_pod(f"p{i}", count=i + 1))  # a distinct demand each time
    return len(service._demands), BOUND


def assumed(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    monkeypatch.setattr(store, "_ASSUMED_LIMIT", BOUND)
    view = demo_view()
    for i in range(FED):
        view.assume(f"uid-{i}", "h100-idle-3g", ONE_1G)
    indexed = sum(map(len, view._assumed_on_node.values()))
    assert indexed == len(view._assumed)  # evictions leave nothing behind in the per-node index
    return len(view._assumed), BOUND


def memo_states(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """One demand over node states that churn: a pod binds between two requests."""
    bound = 12  # the demo has 8 nodes: a request's own states fit
    monkeypatch.setattr(scheduling, "_MEMO_STATES", bound)
    view = demo_view()
    service = service_on(view)
    nodes = h100_nodes(view)
    for i in range(FED):
        ask(service, mig_pod(f"pending-{i}"))
        view.apply(Kind.PODS, "ADDED", mig_pod(f"bound-{i}", node_name=nodes[i % len(nodes)]))
        assert len(service._fit_memos) <= bound and len(service._score_memos) <= bound
    return len(service._fit_memos), bound


def memo_demands(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    monkeypatch.setattr(scheduling, "_MEMO_DEMANDS", BOUND)
    service = service_on(demo_view())
    for i in range(FED):
        ask(service, mig_pod(f"p{i}", count=i + 1))  # a distinct demand each time
    assert len(service._score_memos._by_demand) <= BOUND
    return len(service._fit_memos._by_demand), BOUND


def memo_entries(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """Many demands over few states: the least recently used demands' memos go."""
    bound = 2 * 8  # two requests over the demo's 8 nodes
    monkeypatch.setattr(scheduling, "_MEMO_STATES", bound)
    service = service_on(demo_view())
    for i in range(FED):
        ask(service, mig_pod(f"p{i}", count=i + 1))
        assert len(service._score_memos) <= bound
    return len(service._fit_memos), bound


def occupancy(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    assert state._occupancy.cache_parameters()["maxsize"] == state._OCCUPANCY_LIMIT
    small = lru_cache(maxsize=BOUND)(state._occupancy.__wrapped__)
    monkeypatch.setattr(state, "_occupancy", small)
    for used in dynamic_gpus(FED):  # each with its own instances
        GpuState(0, used.model, used.instances, dynamic=True)
    return small.cache_info().currsize, BOUND


def answers_kept(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    monkeypatch.setattr(scheduling, "_ANSWERS_LIMIT", BOUND)
    service = service_on(demo_view())
    for i in range(FED):
        ask(service, mig_pod(f"p{i}", count=i % 3 + 1, profile=("1g.10gb", "2g.20gb", "3g.40gb", "1g.20gb")[i % 4]))
        assert len(service._hosts) <= BOUND
    return len(service._answers), BOUND


def change_log(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    monkeypatch.setattr(store, "_CHANGE_LOG_LIMIT", BOUND)
    view = demo_view()
    generation = view.generation
    for i in range(FED):
        view.apply(Kind.PODS, "ADDED", mig_pod(f"bound-{i}", node_name="h100-balanced"))
    assert view.changed_since(generation) is None  # the log no longer reaches back: callers start afresh
    assert view.changed_since(view.generation - 1) == {"h100-balanced"}
    return len(view._change_log), BOUND


def configured(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    monkeypatch.setattr(sources, "_CONFIGURED", {})
    monkeypatch.setattr(sources, "_CONFIGURED_LIMIT", BOUND)
    node_info = demo_view().nodes["h100-balanced"]
    name = node_info.labels["nvidia.com/mig.config"]
    for _ in range(FED):  # a new config object each time, as each ConfigMap update gives
        config = parse_config({"version": "v1", "mig-configs": {name: [{"devices": "all", "mig-enabled": False}]}})
        sources.build_node_state(node_info, sources.Usage(), config)
    return len(sources._CONFIGURED), BOUND


BOUNDED: dict[str, Callable[[pytest.MonkeyPatch], tuple[int, int]]] = {
    "state._occupancy": occupancy,
    "SchedulingService._answers and _hosts": answers_kept,
    "ClusterView._change_log": change_log,
    "sources._CONFIGURED": configured,
    "state._INTERNED": interned,
    "policy._FITS": fits,
    "fit._vectors_on_mask": vectors_on_mask,
    "fit._GPU_VECTORS": gpu_vectors,
    "fragmentation._UNUSABLE": unusable,
    "accounting._COUNTS": counts,
    "SchedulingService._observed": observed,
    "SchedulingService._demands": demands,
    "ClusterView._assumed": assumed,
    "SchedulingService memos, states": memo_states,
    "SchedulingService memos, demands": memo_demands,
    "SchedulingService memos, entries over demands": memo_entries,
}


@pytest.mark.parametrize("feed", BOUNDED.values(), ids=BOUNDED.keys())
def test_a_cache_fed_more_distinct_keys_than_its_bound_stays_within_it(
    feed: Callable[[pytest.MonkeyPatch], tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    size, bound = feed(monkeypatch)
    assert 0 < size <= bound


# --- answers do not depend on what the caches hold ------------------------------------------------------


def clear_model_caches() -> None:
    state._INTERNED.clear()
    policy._FITS.clear()
    fit_module._GPU_VECTORS.clear()
    fit_module._vectors_on_mask.cache_clear()
    fragmentation._UNUSABLE.clear()
    accounting._COUNTS.clear()


def shrink_model_caches(monkeypatch: pytest.MonkeyPatch, bound: int = 1) -> None:
    monkeypatch.setattr(state, "_INTERN_LIMIT", bound)
    monkeypatch.setattr(policy, "_FITS", LRUCache(maxsize=bound))
    tiny = lru_cache(maxsize=bound)(fit_module._vectors_on_mask.__wrapped__)
    monkeypatch.setattr(fit_module, "_vectors_on_mask", tiny)
    monkeypatch.setattr(fit_module, "_GPU_VECTORS_LIMIT", bound)
    monkeypatch.setattr(fragmentation, "_UNUSABLE_LIMIT", bound)
    monkeypatch.setattr(accounting, "_COUNTS_LIMIT", bound)


NODES: dict[str, Callable[[], NodeState]] = {
    "static-balanced": lambda: node(
        "s",
        gpu("H100-80GB", "2g.20gb@0 1g.10gb@2 1g.10gb@3 3g.40gb@4", used="1g.10gb@2"),
        gpu("H100-80GB", "2g.20gb@0 1g.10gb@2 1g.10gb@3 3g.40gb@4"),
    ),
    "static-full": lambda: node("f", gpu("H100-80GB", "3g.40gb@0 3g.40gb@4", used="3g.40gb@0 3g.40gb@4")),
    "dynamic": lambda: dynamic_node(gpu("H100-80GB", "1g.10gb@3 1g.10gb@6", used="1g.10gb@3 1g.10gb@6")),
    "dynamic-empty": lambda: node("e", gpu("H100-80GB", dynamic=True), gpu("H100-80GB", dynamic=True)),
}


def answers(make: Callable[[], NodeState]) -> Iterator[tuple[FitResult, FitResult, tuple[object, ...]]]:
    built = make()
    for demand in DEMANDS:
        per_gpu = tuple((unusable_by_shape(g), slice_counts(g)) for g in built.gpus)
        yield evaluate(built, demand, CONFIG), fit(built, demand), per_gpu


@pytest.mark.parametrize("make", NODES.values(), ids=NODES.keys())
def test_the_same_answers_after_the_caches_are_cleared(make: Callable[[], NodeState]) -> None:
    before = make()
    expected = list(answers(make))
    clear_model_caches()
    again = make()
    assert again.state_id != before.state_id  # a new id: nothing cached under the old one can answer
    assert list(answers(make)) == expected
    assert list(answers(make)) == expected  # and again, from the refilled caches


@pytest.mark.parametrize("make", NODES.values(), ids=NODES.keys())
def test_the_same_answers_when_every_cache_holds_one_entry(
    make: Callable[[], NodeState], monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = list(answers(make))
    shrink_model_caches(monkeypatch)
    for _ in range(2):  # every answer evicts the one before
        assert list(answers(make)) == expected


def scheduling_run() -> list[object]:
    """Filter and prioritize answers over the demo cluster while pods bind, for several demands in turn."""
    view = demo_view()
    service = service_on(view)
    nodes = h100_nodes(view)
    out: list[object] = []
    for i in range(12):
        profile, count = (("1g.10gb", 1), ("3g.40gb", 1), ("1g.10gb", 2), ("2g.20gb", 1))[i % 4]
        out.append(ask(service, mig_pod(f"pending-{i}", profile, count)))
        view.apply(Kind.PODS, "ADDED", mig_pod(f"bound-{i}", "1g.10gb", node_name=nodes[i % len(nodes)]))
    return out


def test_the_same_scheduling_answers_with_tiny_memos_and_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = scheduling_run()
    clear_model_caches()
    shrink_model_caches(monkeypatch)
    monkeypatch.setattr(scheduling, "_MEMO_STATES", 1)
    monkeypatch.setattr(scheduling, "_MEMO_DEMANDS", 1)
    monkeypatch.setattr(scheduling, "_DEMANDS_LIMIT", 1)
    assert scheduling_run() == expected


# --- nothing is left behind for nodes and pods that are gone --------------------------------------------


def test_an_assumption_evicted_at_the_limit_stops_counting_on_its_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "_ASSUMED_LIMIT", 2)
    view = demo_view()

    def used() -> int:
        found = view.node_state("h100-idle-3g")
        assert found is not None
        return sum(i.used for g in found.gpus for i in g.instances)

    assert used() == 0
    for uid in ("a", "b", "c"):  # "a" is evicted when "c" comes
        view.assume(uid, "h100-idle-3g", PodDemand(mig=(("3g.40gb", 1),)))
    assert used() == 2
    assert set(view._assumed_on_node["h100-idle-3g"]) == {"b", "c"}


def test_an_assumption_that_expires_inside_the_cache_leaves_no_index_entry() -> None:
    clock = Clock()
    view = demo_view(clock)
    view.assume("on-a-node-from-a-request", "not-in-the-view", ONE_1G)
    clock.now += 60  # past the TTL: the next insertion expires it inside cachetools
    view.assume("other", "h100-idle-3g", ONE_1G)
    assert "not-in-the-view" not in view._assumed_on_node


def test_a_deleted_node_leaves_no_pod_index_or_warnings_behind() -> None:
    view = demo_view()
    unknown = {
        "metadata": {"name": "t4", "resourceVersion": "1", "labels": {"nvidia.com/gpu.product": "NVIDIA-Tesla-T4"}},
        "status": {"allocatable": {"nvidia.com/gpu": "1"}},
    }
    warned = {  # a per-node warning: a GPU count label that is not one
        "metadata": {
            "name": "bad-count",
            "resourceVersion": "1",
            "labels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB", "nvidia.com/gpu.count": "many"},
        },
        "status": {"allocatable": {"nvidia.com/mig-1g.5gb": "7"}},
    }
    view.apply(Kind.NODES, "ADDED", unknown)
    view.apply(Kind.NODES, "ADDED", warned)
    view.apply(Kind.PODS, "ADDED", bound := mig_pod("p", node_name="t4"))
    assert view.node_state("t4") is not None and view.node_state("bad-count") is not None
    # An unknown GPU product is counted per node (mig_extender_unknown_gpu_products), not warned per node.
    assert view.counters.unknown_products["t4"] == "NVIDIA-Tesla-T4" and "bad-count" in view.counters.node_warnings
    view.apply(Kind.PODS, "DELETED", bound)
    view.apply(Kind.NODES, "DELETED", unknown)
    view.apply(Kind.NODES, "DELETED", warned)
    assert "t4" not in view._pods_on_node and "t4" not in view.counters.unknown_products
    assert "bad-count" not in view.counters.node_warnings
    view.apply(Kind.NODES, "ADDED", unknown)
    view.apply(Kind.NODES, "ADDED", warned)
    view.node_state("t4")
    view.node_state("bad-count")
    view.replace(Kind.NODES, [])  # a re-list without them
    assert "t4" not in view.counters.unknown_products and "bad-count" not in view.counters.node_warnings
