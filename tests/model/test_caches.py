"""The registry of process-wide caches: each is listed with its bound, each bound has a test, one clear() for all."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import pytest

import extender.model.migbench  # the simulator's MIGBench geometry registers its caches (the server does not import it)
import extender.server.run  # noqa: F401  (every module with a cache registers it when imported)
from extender.model import placement
from extender.model.caches import CACHES
from extender.model.catalog import model_named
from extender.view import dra_objects, objects
from extender.view.objects import NodeInfo, PodInfo
from tests.model.dra.test_allocator_layouts import layouts_bound
from tests.model.dra.test_cel import CEL_BOUNDED
from tests.model.dra.test_inventory import pool_sets_bound, pools_bound, shared_bound
from tests.model.dra.test_inventory_allocate import claim_sets_bound, outcomes_bound, shareable_bound
from tests.model.dra.test_inventory_shapes import shapes_bound
from tests.model.test_cache_bounds import BOUND, BOUNDED, FED, mig_pod, scheduling_run

FINITE_KEYS = {
    "layouts.maximal_layouts",
    "migbench.catalog_pack",
    "migbench.slot_pack",
    "placement._most_options",
    "placement.max_added_compute",
    "placement.max_instances",
    "placement.surviving_placements",
    "relayout._CANDIDATES",
    "relayout._CONFIG_NAMES",
}
"""Unbounded caches whose keys are finite by construction (GPU models, profiles, 8-bit occupied masks)."""


def demands(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    monkeypatch.setattr(objects, "_DEMANDS", {})
    monkeypatch.setattr(objects, "_DEMANDS_LIMIT", BOUND)
    for i in range(FED):
        PodInfo.from_raw(mig_pod(f"p{i}", count=i + 1))  # a distinct demand each
    return len(objects._DEMANDS), BOUND


def placements(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    monkeypatch.setattr(objects, "_PLACEMENTS", {})
    monkeypatch.setattr(objects, "_PLACEMENTS_LIMIT", BOUND)
    for i in range(FED):
        raw = mig_pod(f"p{i}")
        raw["spec"]["nodeSelector"] = {"pool": f"pool-{i}"}  # a distinct placement each
        PodInfo.from_raw(raw)
    return len(objects._PLACEMENTS), BOUND


def taints(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    monkeypatch.setattr(objects, "_TAINTS", {})
    monkeypatch.setattr(objects, "_TAINTS_LIMIT", BOUND)
    for i in range(FED):
        spec = {"taints": [{"key": "team", "value": f"t{i}", "effect": "NoSchedule"}]}  # distinct taints each
        NodeInfo.from_raw({"metadata": {"name": f"n{i}"}, "spec": spec})
    return len(objects._TAINTS), BOUND


def dra_shared(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    monkeypatch.setattr(dra_objects, "_SHARED", {})
    monkeypatch.setattr(dra_objects, "_SHARED_LIMIT", BOUND)
    for i in range(FED):  # a distinct capacity each
        device = {"name": "d", "capacity": {"memory": {"value": f"{i + 1}Gi"}}}
        spec = {"driver": "x.example.com", "pool": {"name": "p", "resourceSliceCount": 1}, "devices": [device]}
        dra_objects.parse_resource_slice({"metadata": {"name": f"s{i}"}, "spec": spec})
    return len(dra_objects._SHARED), BOUND


def place_all(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    assert placement.place_all.cache_parameters()["maxsize"] == placement._PLACE_ALL_LIMIT
    small = lru_cache(maxsize=BOUND)(placement.place_all.__wrapped__)
    monkeypatch.setattr(placement, "place_all", small)
    h100 = model_named("H100-80GB")
    for occupied in range(FED):  # distinct occupied masks
        small(h100, (h100.profile("1g.10gb"),), occupied)
    return small.cache_info().currsize, BOUND


MORE_BOUNDED: dict[str, Callable[[pytest.MonkeyPatch], tuple[int, int]]] = {
    "inventory._POOLS": pools_bound,
    "inventory._POOL_SETS": pool_sets_bound,
    "inventory._SHARED": shared_bound,
    "inventory._SHAPES": shapes_bound,
    "allocator._LAYOUTS": layouts_bound,
    "inventory._OUTCOMES": outcomes_bound,
    "inventory._SHAREABLE": shareable_bound,
    "inventory._CLAIM_SETS": claim_sets_bound,
    "objects._DEMANDS": demands,
    "objects._PLACEMENTS": placements,
    "objects._TAINTS": taints,
    "dra_objects._SHARED": dra_shared,
    "placement.place_all": place_all,
    **CEL_BOUNDED,  # DRA selectors
}


@pytest.mark.parametrize("feed", MORE_BOUNDED.values(), ids=MORE_BOUNDED.keys())
def test_a_cache_fed_more_distinct_keys_than_its_bound_stays_within_it(
    feed: Callable[[pytest.MonkeyPatch], tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    size, bound = feed(monkeypatch)
    assert 0 < size <= bound


def test_every_bounded_cache_has_a_test_of_its_bound() -> None:
    bounded = {c.name for c in CACHES.info() if c.bound is not None}
    assert bounded - set(BOUNDED) - set(MORE_BOUNDED) == set()
    assert all(c.bound is None or c.bound > 0 for c in CACHES.info())


def test_the_unbounded_caches_are_those_with_finite_keys() -> None:
    assert {c.name for c in CACHES.info() if c.bound is None} == FINITE_KEYS


def test_clear_empties_every_cache_and_the_answers_stay() -> None:
    expected = scheduling_run()
    assert any(c.size for c in CACHES.info())
    CACHES.clear()
    assert [c for c in CACHES.info() if c.size] == []
    assert scheduling_run() == expected
