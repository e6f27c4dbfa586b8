"""The allocator's counters: pools that declare the same counters share one layout, each counter consumption is
read once for all of them, and a node's allocated devices are counted the same whichever side is walked."""

from __future__ import annotations

from fractions import Fraction

import pytest

from extender.model.catalog import model_named
from extender.model.dra import allocator as allocator_module
from extender.model.dra.allocator import Result, allocate, prepare
from extender.model.dra.driver import DRIVER, dynamic_mig_slices
from extender.model.dra.pools import pools_of
from extender.model.dra.types import (
    ClaimSpec,
    CounterConsumption,
    DeviceClass,
    DeviceRequest,
    DeviceSubRequest,
    Pool,
)
from extender.view.dra_objects import parse_resource_slice

H100 = model_named("H100-80GB")
MIG = f"device.driver == '{DRIVER}' && device.attributes['{DRIVER}'].type == 'mig'"
CLASSES = {"mig.nvidia.com": DeviceClass("mig.nvidia.com", (MIG,))}


def node_pools(node: str, gpus: int = 2) -> list[Pool]:
    return list(pools_of([parse_resource_slice(s) for s in dynamic_mig_slices(node, H100, gpus)], node))


def claim(profile: str, count: int = 1) -> ClaimSpec:
    selector = f"device.attributes['{DRIVER}'].profile == '{profile}'"
    return ClaimSpec((DeviceRequest("mig", (DeviceSubRequest("mig.nvidia.com", (selector,), count=count),)),))


def test_nodes_of_one_kind_share_the_layout_and_the_amounts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator_module, "_LAYOUTS", {})
    first, second = prepare(node_pools("n1")), prepare(node_pools("n2"))
    (a,), (b,) = ([c for c in p.counters if c is not None] for p in (first, second))
    assert a.layout is b.layout and len(allocator_module._LAYOUTS) == 1
    assert [c.consumes for c in first.candidates] == [c.consumes for c in second.candidates]
    assert all(x.consumes is y.consumes for x, y in zip(first.candidates, second.candidates))
    # each amount as read afresh: the set's index of every counter the device consumes
    for candidate in first.candidates:
        (consumption,) = candidate.device.consumes
        expected = {a.layout.by_set[consumption.counter_set][n]: int(v) for n, v in consumption.counters}
        assert dict(candidate.consumes or ()) == expected


def test_a_consumption_tuple_equal_to_a_known_one_but_another_object_is_read_again() -> None:
    layout = allocator_module._layout((("s", "a"), ("s", "b")), 2)
    one = (CounterConsumption("s", (("a", Fraction(1, 2)), ("b", Fraction(3)))),)
    again = (CounterConsumption("s", (("a", Fraction(1, 2)), ("b", Fraction(3)))),)
    assert layout.amounts(one) == layout.amounts(again) == ((0, 1), (1, 6))
    assert layout.read[id(one)][0] is one and layout.read[id(again)][0] is again


@pytest.mark.parametrize("cluster_wide", [False, True], ids=["node's use", "every allocated device"])
def test_allocated_devices_take_their_counters_whichever_side_is_walked(cluster_wide: bool) -> None:
    prepared = prepare(node_pools("n1", gpus=1))
    held = {(DRIVER, "n1", "gpu-0-mig-4g40gb-5-0")}
    in_use = held | ({(DRIVER, f"n{i}", "gpu-0") for i in range(2, 400)} if cluster_wide else set())
    four = allocate([claim("4g.40gb")], prepared, in_use, CLASSES)
    assert four.result is Result.UNSCHEDULABLE  # slices 0-3 are taken: 4g.40gb starts only at 0
    three = allocate([claim("3g.40gb")], prepared, in_use, CLASSES)
    assert [r.device for r in three.claims[0]] == ["gpu-0-mig-3g40gb-9-4"]


def layouts_bound(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """Feeds the layouts more than their bound (a GPU count each: other counter sets): (size after, bound)."""
    monkeypatch.setattr(allocator_module, "_LAYOUTS", {})
    monkeypatch.setattr(allocator_module, "_LAYOUTS_LIMIT", 4)
    for gpus in range(1, 11):
        prepare(node_pools("n1", gpus))
        assert 0 < len(allocator_module._LAYOUTS) <= 4
    return len(allocator_module._LAYOUTS), 4
