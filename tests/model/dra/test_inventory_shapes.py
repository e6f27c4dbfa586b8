"""Pools of one shape are parsed once: another pool of the shape gets the same parse with its own name and UUIDs,
equal to what parsing it afresh gives; pools that differ in what the parse reads, or whose parse warns, are
parsed afresh.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

import pytest

from extender.model.catalog import model_named
from extender.model.dra import inventory as inventory_module
from extender.model.dra.driver import DRIVER, dynamic_mig_slices, static_mig_slices
from extender.model.dra.inventory import inventory
from extender.model.dra.pools import pools_of
from extender.model.dra.types import Pool
from extender.model.placement import Placement
from extender.view.dra_objects import parse_resource_slice

H100 = model_named("H100-80GB")
A100 = model_named("A100-40GB")
Json = dict[str, Any]


def layouts(model: str, *rows: str) -> list[list[Placement]]:
    gpu = model_named(model)
    return [[Placement(int(s), gpu.profile(n)) for n, _, s in (t.partition("@") for t in row.split())] for row in rows]


STATIC = layouts("H100-80GB", "3g.40gb@0 2g.20gb@4 1g.10gb@6", "7g.80gb@0")


def pool(slices: list[Json], node: str) -> Pool:
    (found,) = [p for p in pools_of([parse_resource_slice(s) for s in slices], node) if p.driver == DRIVER]
    return found


def swap_parents(slices: list[Json]) -> None:
    """GPU 0's MIG devices name GPU 1's UUID as their parent and the other way round."""
    parents = sorted({d["attributes"]["parentUUID"]["string"] for s in slices for d in s["spec"].get("devices", [])})
    other = {parents[0]: parents[1], parents[1]: parents[0]}
    for piece in slices:
        for device in piece["spec"].get("devices", []):
            parent = device["attributes"]["parentUUID"]
            parent["string"] = other[parent["string"]]


def without_a_profile(slices: list[Json]) -> list[Json]:
    del slices[1]["spec"]["devices"][3]["attributes"]["profile"]
    return slices


def uuid_like_a_name(slices: list[Json]) -> None:
    for piece in slices:
        for device in piece["spec"].get("devices", []):
            if device["name"].startswith("gpu-0-"):
                device["attributes"]["parentUUID"]["string"] = "gpu-1"


def nothing(slices: list[Json]) -> None:
    pass


# (first node's slices, how the second node's differ, whether the second reuses the first's parse)
CASES: dict[str, tuple[Callable[[str], list[Json]], Callable[[list[Json]], None], bool]] = {
    "dynamic H100": (lambda n: dynamic_mig_slices(n, H100, 2), nothing, True),
    "dynamic A100 (no full GPU device)": (lambda n: dynamic_mig_slices(n, A100, 3), nothing, True),
    "static, same order": (lambda n: static_mig_slices(n, H100, STATIC), nothing, True),
    "static, parents swapped": (lambda n: static_mig_slices(n, H100, STATIC), swap_parents, True),
    "static, another order": (
        lambda n: static_mig_slices(n, H100, STATIC, shuffle=random.Random(n)),
        nothing,
        False,
    ),
    "a device left out with a warning": (lambda n: without_a_profile(dynamic_mig_slices(n, H100, 1)), nothing, False),
    "a UUID spelled like a GPU's name": (lambda n: static_mig_slices(n, H100, STATIC), uuid_like_a_name, False),
    "another GPU count": (lambda n: dynamic_mig_slices(n, H100, 2 if n == "n1" else 3), nothing, False),
}


@pytest.mark.parametrize(("make", "change", "shared"), CASES.values(), ids=CASES.keys())
def test_a_pool_of_a_known_shape_parses_as_afresh(
    make: Callable[[str], list[Json]],
    change: Callable[[list[Json]], None],
    shared: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(inventory_module, "_SHAPES", {})
    fresh = inventory_module._parse_fresh
    parses: list[str] = []

    def counting(found: Pool) -> Any:
        parses.append(found.name)
        return fresh(found)

    monkeypatch.setattr(inventory_module, "_parse_fresh", counting)
    second_slices = make("n2")
    change(second_slices)
    inventory_module._parse_pool(pool(make("n1"), "n1"))
    second_pool = pool(second_slices, "n2")
    second = inventory_module._parse_pool(second_pool)
    assert parses == (["n1"] if shared else ["n1", "n2"])
    assert second == fresh(second_pool)
    assert second.gpus and {g.pool for g in second.gpus} == {"n2"}
    assert all(any(s is d for d in second_pool.devices) for s in second.samples)


def test_nodes_of_one_kind_are_parsed_once_and_keep_their_own_uuids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inventory_module, "_SHAPES", {})
    monkeypatch.setattr(inventory_module, "_POOLS", {})
    parses: list[str] = []
    real = inventory_module._parse_fresh

    def counting(found: Pool) -> Any:
        parses.append(found.name)
        return real(found)

    monkeypatch.setattr(inventory_module, "_parse_fresh", counting)
    nodes = [f"n{i}" for i in range(5)]
    found = {
        n: inventory(n, pools_of([parse_resource_slice(s) for s in dynamic_mig_slices(n, H100, 8)], n)) for n in nodes
    }
    assert parses == ["n0"]
    for node in nodes:
        slices = dynamic_mig_slices(node, H100, 8)
        full = [d for s in slices[1:] for d in s["spec"]["devices"] if d["attributes"]["type"]["string"] == "gpu"]
        uuids = [d["attributes"]["uuid"]["string"] for d in full]
        assert len(set(uuids)) == 8
        assert [g.uuid for g in found[node].gpus] == uuids
        assert {g.pool for g in found[node].gpus} == {node}
        assert found[node].warnings == ()


def test_a_changed_copy_of_a_shape_is_not_confused_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parse reads names, types, products, profiles and counters: a change of any of them is another shape."""
    monkeypatch.setattr(inventory_module, "_SHAPES", {})
    base = dynamic_mig_slices("n1", H100, 1)
    inventory_module._parse_pool(pool(base, "n1"))
    for change in ("name", "type", "productName", "profile", "counter"):
        slices = copy.deepcopy(base)
        device = slices[1]["spec"]["devices"][5]
        if change == "name":
            device["name"] = device["name"].replace("-0-mig", "-3-mig")
        elif change == "counter":
            counters = device["consumesCounters"][0]["counters"]
            slot = next(k for k in counters if k.startswith("memory-slice-"))
            counters[f"memory-slice-{(int(slot.rsplit('-', 1)[1]) + 1) % 8}"] = counters.pop(slot)
        else:
            device["attributes"][change]["string"] = {"type": "vfio", "productName": "NVIDIA L4"}.get(change, "2g.20gb")
        changed = pool(slices, "n2")
        assert inventory_module._parse_pool(changed) == inventory_module._parse_fresh(changed), change


def shapes_bound(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """Feeds the shapes more than their bound (a GPU count each): (size after, bound)."""
    monkeypatch.setattr(inventory_module, "_SHAPES", {})
    monkeypatch.setattr(inventory_module, "_SHAPES_LIMIT", 4)
    for gpus in range(1, 14):
        inventory_module._parse_pool(pool(dynamic_mig_slices("n1", H100, gpus), "n1"))
        assert 0 < len(inventory_module._SHAPES) <= 4
    return len(inventory_module._SHAPES), 4
