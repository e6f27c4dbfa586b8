"""Nodes of one shape are allocated on one layout: ``Inventory.allocate`` gives exactly what the allocator gives on
the node's own pools (results, reasons, steps), for random devices in use and random claims, and lays the pools
out once for all the nodes of the shape."""

from __future__ import annotations

import random
from typing import Any

import pytest
from cachetools import LRUCache
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extender.model.catalog import model_named
from extender.model.dra import allocator as allocator_module
from extender.model.dra import inventory as inventory_module
from extender.model.dra.allocator import allocate
from extender.model.dra.driver import DRIVER, dynamic_mig_slices, static_mig_slices
from extender.model.dra.inventory import Inventory, inventory
from extender.model.dra.pools import pools_of
from extender.model.dra.types import (
    AllocationMode,
    ClaimSpec,
    DeviceClass,
    DeviceConstraint,
    DeviceRequest,
    DeviceSubRequest,
)
from extender.model.placement import Placement
from extender.view.dra_objects import parse_resource_slice

H100 = model_named("H100-80GB")
MIG = f"device.driver == '{DRIVER}' && device.attributes['{DRIVER}'].type == 'mig'"
GPU = f"device.driver == '{DRIVER}' && device.attributes['{DRIVER}'].type == 'gpu'"
CLASSES = (DeviceClass("gpu.nvidia.com", (GPU,)), DeviceClass("mig.nvidia.com", (MIG,)))
PROFILES = ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")
NODES = 6
GPUS = 3


def profile(name: str) -> str:
    return f"device.attributes['{DRIVER}'].profile == '{name}'"


def node_inventory(node: str, used: frozenset[str] = frozenset(), *, static: bool = False) -> Inventory:
    if static:
        layout = [Placement(0, H100.profile("3g.40gb")), Placement(4, H100.profile("3g.40gb"))]
        raw = static_mig_slices(node, H100, [layout] * GPUS)
    else:
        raw = dynamic_mig_slices(node, H100, GPUS)
    pools = pools_of([parse_resource_slice(s) for s in raw], node)
    return inventory(node, pools, {(DRIVER, node, d) for d in used})


DEVICES = [d["name"] for s in dynamic_mig_slices("n", H100, GPUS) for d in s["spec"].get("devices", [])]
UUID_OF_GPU_1 = next(
    d["attributes"]["uuid"]["string"]
    for s in dynamic_mig_slices("n3", H100, GPUS)
    for d in s["spec"].get("devices", [])
    if d["name"] == "gpu-1"
)
SELECTORS = st.sampled_from(
    [
        *(profile(p) for p in PROFILES),
        f"device.capacity['{DRIVER}'].memory.compareTo(quantity('20Gi')) >= 0",
        f"device.attributes['{DRIVER}'].parentUUID == '{UUID_OF_GPU_1}'",  # reads a UUID: the node's own layout
        f"device.attributes['{DRIVER}'].nothing == 1",  # an error on every device
        f"'{DRIVER}' in device.attributes",
    ]
)


@st.composite
def subrequests(draw: Any, first: bool = False) -> DeviceSubRequest:
    mode = draw(st.sampled_from([AllocationMode.EXACT_COUNT] * 5 + [AllocationMode.ALL]))
    return DeviceSubRequest(
        draw(st.sampled_from(["mig.nvidia.com", "mig.nvidia.com", "gpu.nvidia.com"])),
        tuple(draw(st.lists(SELECTORS, max_size=1))),
        mode=mode,
        count=draw(st.integers(1, 3)),
        name="alt" + str(draw(st.integers(0, 9))) if first else "",
    )


@st.composite
def claim_specs(draw: Any) -> ClaimSpec:
    requests = []
    for number in range(draw(st.integers(1, 2))):
        if draw(st.booleans()):
            alternatives = tuple(
                draw(st.lists(subrequests(first=True), min_size=1, max_size=2, unique_by=lambda a: a.name))
            )
            requests.append(DeviceRequest(f"r{number}", alternatives, first_available=True))
        else:
            requests.append(DeviceRequest(f"r{number}", (draw(subrequests()),)))
    constraints: tuple[DeviceConstraint, ...] = ()
    if draw(st.booleans()):
        constraints = (DeviceConstraint((), match_attribute=f"{DRIVER}/parentUUID"),)
    return ClaimSpec(tuple(requests), constraints)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    claims=st.lists(claim_specs(), min_size=1, max_size=2),
    used=st.lists(st.frozensets(st.sampled_from(DEVICES), max_size=6), min_size=NODES, max_size=NODES),
    idle=st.booleans(),
)
def test_a_node_allocated_on_its_shapes_layout_gets_what_its_own_layout_gives(
    claims: list[ClaimSpec], used: list[frozenset[str]], idle: bool
) -> None:
    for number, devices in enumerate(used):
        node = node_inventory(f"n{number}", devices)
        own = allocate(claims, node.prepared, frozenset() if idle else node.in_use, {c.name: c for c in CLASSES})
        assert node.allocate(claims, CLASSES, idle=idle) == own


@pytest.mark.parametrize("static", [False, True], ids=["DynamicMIG", "pre-created"])
def test_the_pools_of_one_shape_are_laid_out_once(static: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inventory_module, "_SHAPES", {})
    monkeypatch.setattr(inventory_module, "_OUTCOMES", LRUCache(maxsize=64))
    laid_out: list[str] = []
    real = allocator_module.prepare

    def counting(pools: Any) -> Any:
        laid_out.extend(p.name for p in pools)
        return real(pools)

    monkeypatch.setattr(inventory_module, "prepare", counting)
    claim = ClaimSpec((DeviceRequest("mig", (DeviceSubRequest("mig.nvidia.com", (profile("3g.40gb"),)),)),))
    rng = random.Random(1)
    for number in range(8):
        node = node_inventory(f"n{number}", frozenset(rng.sample(DEVICES, 2)), static=static)
        outcome = node.allocate([claim], CLASSES)
        assert all(r.pool == f"n{number}" for results in outcome.claims for r in results)
    assert laid_out == ["n0"]


def outcomes_bound(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """Feeds the kept outcomes more than their bound (a device in use each): (size after, bound)."""
    monkeypatch.setattr(inventory_module, "_OUTCOMES", LRUCache(maxsize=4))
    claim = ClaimSpec((DeviceRequest("mig", (DeviceSubRequest("mig.nvidia.com", (profile("1g.10gb"),)),)),))
    for number, device in enumerate(DEVICES[:12]):
        node_inventory(f"n{number}", frozenset({device})).allocate([claim], CLASSES)
    return len(inventory_module._OUTCOMES), 4


def shareable_bound(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """Feeds the claim sets read more than their bound (a count each): (size after, bound)."""
    monkeypatch.setattr(inventory_module, "_SHAREABLE", LRUCache(maxsize=4))
    node = node_inventory("n0")
    for count in range(1, 12):
        claim = ClaimSpec((DeviceRequest("mig", (DeviceSubRequest("mig.nvidia.com", (), count=count),)),))
        node.allocate([claim], CLASSES)
    return len(inventory_module._SHAREABLE), 4


def claim_sets_bound(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """Feeds the claim sets known by identity more than their bound (a count each): (size after, bound)."""
    monkeypatch.setattr(inventory_module, "_CLAIM_SETS", {})
    monkeypatch.setattr(inventory_module, "_CLAIM_SETS_LIMIT", 4)
    node = node_inventory("n0")
    for count in range(1, 12):
        claims = (ClaimSpec((DeviceRequest("mig", (DeviceSubRequest("mig.nvidia.com", (), count=count),)),)),)
        node.allocate(claims, CLASSES)
        assert 0 < len(inventory_module._CLAIM_SETS) <= 4
    return len(inventory_module._CLAIM_SETS), 4


def test_the_same_claims_given_again_are_known_by_identity() -> None:
    claims = (ClaimSpec((DeviceRequest("mig", (DeviceSubRequest("mig.nvidia.com", (profile("2g.20gb"),)),)),)),)
    first = inventory_module._claim_set(claims, CLASSES)
    assert inventory_module._claim_set(claims, CLASSES) is first
    equal = inventory_module._claim_set(tuple(claims), tuple(CLASSES))  # equal, other objects: the same number
    assert equal.number == first.number and equal.shareable
