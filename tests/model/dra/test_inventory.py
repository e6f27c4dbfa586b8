"""A node's NVIDIA DRA devices in catalog terms: GPUs, placements, use, and what is left out and why.

Slices are the JSON NVIDIA's driver publishes (``extender.model.dra.driver``), read by the view's parser and
gathered into pools as the allocator gathers them.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

import pytest

from extender.model.catalog import CatalogError, model_named
from extender.model.demand import PodDemand
from extender.model.dra import inventory as inventory_module
from extender.model.dra.driver import DRIVER, dynamic_mig_slices, static_mig_slices
from extender.model.dra.inventory import DeviceRef, Inventory, inventory, model_for_product
from extender.model.dra.pools import pools_of
from extender.model.fit import Allocator, Verdict, fit
from extender.model.placement import Placement, free_starts
from extender.model.state import Fidelity
from extender.view.dra_objects import parse_resource_slice

H100 = model_named("H100-80GB")
A100 = model_named("A100-40GB")
Json = dict[str, Any]


def at(text: str, model: str = "H100-80GB") -> Placement:
    name, _, start = text.partition("@")
    return Placement(int(start), model_named(model).profile(name))


def key(device: str, pool: str = "n1") -> tuple[str, str, str]:
    return (DRIVER, pool, device)


def node_inventory(slices: list[Json], used: tuple[str, ...] = (), node: str = "n1") -> Inventory:
    parsed = [parse_resource_slice(s) for s in slices]
    return inventory(node, pools_of(parsed, node), {key(d, node) for d in used})


def device(slices: list[Json], name: str) -> Json:
    for piece in slices:
        for found in piece["spec"].get("devices", []):
            if found["name"] == name:
                result: Json = found
                return result
    raise AssertionError(f"no device {name}")


def layout(inv: Inventory, index: int) -> tuple[tuple[str, bool], ...]:
    gpu = next(g for g in inv.node.gpus if g.index == index)
    return tuple((str(i.placement), i.used) for i in gpu.instances)


# --- DynamicMIG ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("used", "instances", "free_2g"),
    [
        ((), (), (0, 2, 4)),
        (("gpu-0-mig-1g10gb-19-1", "gpu-0-mig-3g40gb-9-4"), (("1g.10gb@1", True), ("3g.40gb@4", True)), (2,)),
        (("gpu-0-mig-2g20gb-14-2",), (("2g.20gb@2", True),), (0, 4)),
        (("gpu-0-mig-1g20gb-15-6",), (("1g.20gb@6", True),), (0, 2, 4)),
        (("gpu-0-mig-7g80gb-0-0",), (("7g.80gb@0", True),), ()),
    ],
    ids=["idle", "1g-and-3g", "2g", "1g.20gb-top", "7g"],
)
def test_dynamic_gpu_holds_the_allocated_mig_devices_at_their_placements(
    used: tuple[str, ...], instances: tuple[tuple[str, bool], ...], free_2g: tuple[int, ...]
) -> None:
    inv = node_inventory(dynamic_mig_slices("n1", H100, 2), used)
    assert inv.warnings == ()
    assert inv.node.fidelity is Fidelity.DRA
    assert [(g.index, g.dynamic, g.mig_enabled) for g in inv.node.gpus] == [(0, True, True), (1, True, True)]
    assert layout(inv, 0) == instances
    assert layout(inv, 1) == ()
    gpu0 = inv.node.gpus[0]
    assert free_starts(H100.profile("2g.20gb"), gpu0.occupied) == free_2g
    assert all(g.predictable for g in inv.gpus)


def test_a_used_full_gpu_holds_the_whole_gpu_and_frees_it_when_emptied() -> None:
    inv = node_inventory(dynamic_mig_slices("n1", H100, 2), ("gpu-1",))
    gpu1 = inv.node.gpus[1]
    assert (gpu1.dynamic, gpu1.mig_enabled, gpu1.whole_gpu_used) == (True, False, True)
    assert gpu1.used_compute == 7 and not gpu1.is_idle
    emptied = gpu1.emptied()
    assert (emptied.mig_enabled, emptied.whole_gpu_used, emptied.instances) == (True, False, ())
    # Both GPUs taken (one whole, one by a 7g): a 1g waits for a pod to leave, it is not a layout problem.
    both = node_inventory(dynamic_mig_slices("n1", H100, 2), ("gpu-1", "gpu-0-mig-7g80gb-0-0"))
    result = fit(both.node, PodDemand(mig=(("1g.10gb", 1),)), Allocator.FIRST_FIT)
    assert result.verdict is Verdict.WAIT


def test_fit_on_a_dynamic_inventory_plans_the_free_placements() -> None:
    inv = node_inventory(dynamic_mig_slices("n1", H100, 1), ("gpu-0-mig-1g10gb-19-1", "gpu-0-mig-3g40gb-9-4"))
    assert fit(inv.node, PodDemand(mig=(("4g.40gb", 1),)), Allocator.FIRST_FIT).verdict is Verdict.WAIT
    planned = fit(inv.node, PodDemand(mig=(("2g.20gb", 1),)), Allocator.FIRST_FIT)
    assert [(p.gpu_index, str(p.placement)) for p in planned.plan] == [(0, "2g.20gb@2")]


def test_the_device_index_maps_every_device_to_its_gpu_and_placement() -> None:
    inv = node_inventory(dynamic_mig_slices("n1", H100, 2))
    assert inv.ref(key("gpu-1-mig-3g40gb-9-4")) == DeviceRef(1, at("3g.40gb@4"))
    assert inv.ref(key("gpu-0")) == DeviceRef(0, None)
    full = inv.ref(key("gpu-0"))
    assert full is not None and full.full_gpu and str(full) == "GPU 0 (full GPU)"
    assert inv.ref(key("gpu-9")) is None
    assert inv.ref(("other.example.com", "n1", "gpu-0")) is None
    assert inv.ref(key("gpu-0", pool="n2")) is None
    gpu0 = inv.gpu(0)
    assert gpu0 is not None and len(gpu0.mig_devices) == 25 and gpu0.full_device == "gpu-0"
    assert gpu0.counter_set == "gpu-0-counter-set"
    assert gpu0.mig_devices == tuple(sorted(gpu0.mig_devices))  # the driver lists them by name
    assert inv.plan([key("gpu-0-mig-1g10gb-19-0"), key("gpu-1")]) == (DeviceRef(0, at("1g.10gb@0")), DeviceRef(1))
    assert inv.plan([key("gpu-0-mig-1g10gb-19-0"), key("nope")]) is None


def test_with_used_applies_an_allocation_on_top_of_the_current_use() -> None:
    inv = node_inventory(dynamic_mig_slices("n1", H100, 1), ("gpu-0-mig-1g10gb-19-0",))
    after = inv.with_used([key("gpu-0-mig-2g20gb-14-2")])
    assert layout(after, 0) == (("1g.10gb@0", True), ("2g.20gb@2", True))
    assert layout(inv, 0) == (("1g.10gb@0", True),)


def test_ampere_with_mig_on_publishes_placements_only() -> None:
    slices = dynamic_mig_slices("n1", A100, 1)
    slices[1]["spec"]["devices"] = [d for d in slices[1]["spec"]["devices"] if d["name"] != "gpu-0"]
    inv = node_inventory(slices, ("gpu-0-mig-3g20gb-9-0",))
    assert inv.warnings == ()
    gpu = inv.gpu(0)
    assert gpu is not None and gpu.full_device == "" and gpu.model is A100
    assert layout(inv, 0) == (("3g.20gb@0", True),)


def test_allocations_that_conflict_are_taken_as_a_full_gpu_with_a_warning() -> None:
    inv = node_inventory(dynamic_mig_slices("n1", H100, 1), ("gpu-0-mig-3g40gb-9-0", "gpu-0-mig-2g20gb-14-2"))
    gpu = inv.node.gpus[0]
    assert (gpu.mig_enabled, gpu.whole_gpu_used) == (False, True)
    assert len(inv.warnings) == 1 and "conflict" in inv.warnings[0] and "overlaps" in inv.warnings[0]
    both = node_inventory(dynamic_mig_slices("n1", H100, 1), ("gpu-0", "gpu-0-mig-1g10gb-19-0"))
    assert both.node.gpus[0].whole_gpu_used and "allocated at once" in both.warnings[0]


# --- Pre-created (static) MIG ------------------------------------------------------------------------------


def test_static_layout_lists_instances_free_and_used_in_any_order() -> None:
    layouts = [
        [at("2g.20gb@0"), at("1g.10gb@2"), at("1g.10gb@3"), at("3g.40gb@4")],
        [at("3g.40gb@0"), at("3g.40gb@4")],
    ]
    used = ("gpu-0-mig-1g10gb-19-3", "gpu-1-mig-3g40gb-9-4")
    for seed in range(3):  # Go map order: the same inventory whatever the listing order
        inv = node_inventory(static_mig_slices("n1", H100, layouts, shuffle=random.Random(seed)), used)
        assert inv.warnings == ()
        assert layout(inv, 0) == (
            ("2g.20gb@0", False),
            ("1g.10gb@2", False),
            ("1g.10gb@3", True),
            ("3g.40gb@4", False),
        )
        assert layout(inv, 1) == (("3g.40gb@0", False), ("3g.40gb@4", True))
        assert [(g.dynamic, g.predictable) for g in inv.gpus] == [(False, False), (False, False)]
        assert inv.ref(key("gpu-1-mig-3g40gb-9-0")) == DeviceRef(1, at("3g.40gb@0"))
    verdict = fit(inv.node, PodDemand(mig=(("1g.10gb", 1),))).verdict
    assert verdict is Verdict.FITS_NOW


def test_static_legacy_names_are_read() -> None:
    slices = static_mig_slices("n1", H100, [[at("2g.20gb@0"), at("3g.40gb@4")]])
    device(slices, "gpu-0-mig-2g20gb-14-0")["name"] = "gpu-0-mig-14-0-2"
    inv = node_inventory(slices, ("gpu-0-mig-14-0-2",))
    assert inv.warnings == ()
    assert layout(inv, 0) == (("2g.20gb@0", True), ("3g.40gb@4", False))


def test_a_gpu_published_whole_is_mig_disabled() -> None:
    slices = static_mig_slices("n1", H100, [[at("3g.40gb@0")]])
    whole = copy.deepcopy(device(slices, "gpu-0-mig-3g40gb-9-0"))
    whole["name"] = "gpu-1"
    whole["attributes"] = {k: v for k, v in whole["attributes"].items() if k not in ("parentUUID", "profile")}
    whole["attributes"]["type"] = {"string": "gpu"}
    whole["attributes"]["uuid"] = {"string": "GPU-whole"}
    whole["capacity"] = {"memory": {"value": "81559Mi"}}
    slices[0]["spec"]["devices"].append(whole)
    for used, busy in (((), False), (("gpu-1",), True)):
        inv = node_inventory(slices, used)
        assert inv.warnings == ()
        gpu1 = inv.node.gpus[1]
        assert (gpu1.index, gpu1.dynamic, gpu1.mig_enabled, gpu1.whole_gpu_used) == (1, False, False, busy)
        assert inv.ref(key("gpu-1")) == DeviceRef(1)


# --- What is left out, and why ---------------------------------------------------------------------------


def _counters(slices: list[Json], name: str, held: range) -> None:
    counters = device(slices, name)["consumesCounters"][0]["counters"]
    for counter in [c for c in counters if c.startswith("memory-slice-")]:
        del counters[counter]
    counters.update({f"memory-slice-{i}": {"value": "1"} for i in held})


def _set_profile(profile: str) -> Callable[[list[Json]], None]:
    def change(slices: list[Json]) -> None:
        device(slices, "gpu-0-mig-1g10gb-19-3")["attributes"]["profile"] = {"string": profile}

    return change


def _rename(slices: list[Json]) -> None:
    device(slices, "gpu-0-mig-1g10gb-19-3")["name"] = "gpu-1-mig-1g10gb-19-3"


def _no_type(slices: list[Json]) -> None:
    del device(slices, "gpu-0-mig-1g10gb-19-3")["attributes"]["type"]


BROKEN: dict[str, tuple[Callable[[list[Json]], None], str]] = {
    "counters-disagree-with-name": (
        lambda s: _counters(s, "gpu-0-mig-1g10gb-19-3", range(4, 5)),
        "the name does not match the device (1g.10gb at memory slice 4)",
    ),
    "illegal-start": (
        lambda s: _counters(s, "gpu-0-mig-2g20gb-14-2", range(1, 3)),
        "2g.20gb at memory slice 1 is not a legal placement on H100-80GB ({0,2,4}:2)",
    ),
    "wrong-size": (
        lambda s: _counters(s, "gpu-0-mig-3g40gb-9-4", range(4, 6)),
        "3g.40gb takes 4 memory slice(s), the device takes [4, 5]",
    ),
    "not-contiguous": (
        lambda s: _counters(s, "gpu-0-mig-2g20gb-14-2", range(2, 5, 2)),
        "2g.20gb takes 2 memory slice(s), the device takes [2, 4]",
    ),
    "profile-disagrees": (_set_profile("1g.20gb"), "1g.20gb takes 2 memory slice(s), the device takes [3]"),
    "unknown-profile": (_set_profile("1g.11gb"), "H100-80GB has no MIG profile '1g.11gb'"),
    "name-names-another-gpu": (_rename, "belongs to GPU 0 (H100-80GB) by its counter set gpu-0-counter-set"),
    "no-type": (_no_type, "no gpu.nvidia.com/type attribute"),
}


@pytest.mark.parametrize(("change", "warning"), BROKEN.values(), ids=BROKEN.keys())
def test_a_device_that_disagrees_is_left_out_with_a_warning(change: Callable[[list[Json]], None], warning: str) -> None:
    slices = dynamic_mig_slices("n1", H100, 1)
    before = len(node_inventory(slices).gpus[0].mig_devices)
    change(slices)
    inv = node_inventory(slices)
    assert len(inv.warnings) == 1, inv.warnings
    assert warning in inv.warnings[0] and "left out" in inv.warnings[0]
    assert inv.node.warnings == inv.warnings
    assert len(inv.gpus[0].mig_devices) == before - 1  # only that device
    assert all(inv.ref(key(n)) is not None for n in inv.gpus[0].mig_devices)


def test_overlapping_pre_created_devices_are_left_out() -> None:
    slices = static_mig_slices("n1", H100, [[at("3g.40gb@0"), at("3g.40gb@4")]])
    extra = copy.deepcopy(device(slices, "gpu-0-mig-3g40gb-9-4"))
    extra["name"] = "gpu-0-mig-2g20gb-14-4"
    extra["attributes"]["profile"] = {"string": "2g.20gb"}
    extra["capacity"] = {k: v for k, v in extra["capacity"].items() if k not in ("memorySlice6", "memorySlice7")}
    slices[0]["spec"]["devices"].append(extra)
    inv = node_inventory(slices)
    assert len(inv.warnings) == 1 and "overlaps memory slices [4, 5]" in inv.warnings[0]
    assert layout(inv, 0) == (("3g.40gb@0", False), ("3g.40gb@4", False))


def test_many_warnings_are_summed_up() -> None:
    slices = dynamic_mig_slices("n1", H100, 1)
    for d in slices[1]["spec"]["devices"]:
        if d["name"] != "gpu-0":
            d["attributes"]["profile"] = {"string": "9g.99gb"}
    inv = node_inventory(slices)
    assert len(inv.warnings) == 9 and inv.warnings[-1] == "pool n1: 17 more warning(s)"
    assert layout(inv, 0) == () and inv.gpu(0) is not None


def test_an_unknown_product_leaves_the_node_unmodelled() -> None:
    slices = dynamic_mig_slices("n1", H100, 2)
    for d in slices[2]["spec"]["devices"]:
        d["attributes"]["productName"] = {"string": "NVIDIA L4"}
    inv = node_inventory(slices, ("gpu-0-mig-1g10gb-19-0",))
    assert inv.node.gpus == () and inv.gpus == ()
    assert inv.node.unknown_product is not None and inv.node.unknown_product.product == "NVIDIA L4"
    assert any("'NVIDIA L4' is not a MIG-capable model in the catalog" in w for w in inv.warnings)
    assert fit(inv.node, PodDemand(mig=(("1g.10gb", 1),))).verdict is Verdict.UNKNOWN_PRODUCT


def test_an_invalid_pool_offers_nothing() -> None:
    slices = dynamic_mig_slices("n1", H100, 2)
    slices[2]["spec"]["devices"].append(copy.deepcopy(device(slices, "gpu-0")))  # in two slices of the pool
    inv = node_inventory(slices)
    assert inv.gpus == () and inv.node.gpus == ()
    assert inv.warnings == ("pool n1: duplicate device name gpu-0: the allocator skips it, its devices are left out",)
    incomplete = node_inventory(dynamic_mig_slices("n1", H100, 2)[:2])
    assert incomplete.gpus == () and "incomplete" in incomplete.warnings[0]


def test_other_nodes_pools_and_drivers_are_not_this_nodes_gpus() -> None:
    everything = [
        *dynamic_mig_slices("n1", H100, 1),
        *dynamic_mig_slices("n2", H100, 2),
        *static_mig_slices("n3", H100, [[at("7g.80gb@0")]]),
    ]
    other = copy.deepcopy(everything[1])
    other["spec"]["driver"] = "other.example.com"
    other["metadata"]["name"] = "other"
    parsed = [parse_resource_slice(s) for s in [*everything, other]]
    inv = inventory("n1", pools_of(parsed, "n1"))
    assert inv.warnings == () and [g.index for g in inv.gpus] == [0] and inv.gpus[0].pool == "n1"


# --- Product names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("product", "model"),
    [
        ("NVIDIA H100 80GB HBM3", "H100-80GB"),
        ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA H100 NVL", "H100-NVL-94GB"),
        ("NVIDIA H200", "H200-141GB"),
        ("NVIDIA H100 PCIe", "H100-80GB"),
        ("NVIDIA A30", "A30-24GB"),
    ],
)
def test_nvml_product_names_map_to_catalog_models(product: str, model: str) -> None:
    assert model_for_product(product) is model_named(model)


@pytest.mark.parametrize(
    "product",
    ["NVIDIA L4", "NVIDIA A100-SXM4-41GB", "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb", "NVIDIA H100 80GB HBM3-SHARED", ""],
)
def test_other_product_names_are_unknown(product: str) -> None:
    with pytest.raises(CatalogError):
        model_for_product(product)


@pytest.mark.parametrize("model", ["A100-40GB", "A100-80GB", "H100-NVL-94GB", "H200-141GB"])
def test_every_published_model_reads_back_without_warnings(model: str) -> None:
    gpu_model = model_named(model)
    inv = node_inventory(dynamic_mig_slices("n1", gpu_model, 2))
    assert inv.warnings == ()
    assert [g.model for g in inv.gpus] == [gpu_model, gpu_model]
    published = {p for g in inv.gpus for p in g.placements}
    assert published == {Placement(s, p) for p in gpu_model.profiles for s in p.starts}


# --- The parse is reused while the slices are the same ---------------------------------------------------


def test_an_allocation_change_reuses_the_parse_and_new_slices_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inventory_module, "_POOLS", {})
    parses: list[str] = []
    real = inventory_module._parse_pool

    def counting(pool: Any) -> Any:
        parses.append(pool.name)
        return real(pool)

    monkeypatch.setattr(inventory_module, "_parse_pool", counting)
    slices = [parse_resource_slice(s) for s in dynamic_mig_slices("n1", H100, 2)]
    pools = pools_of(slices, "n1")
    first = inventory("n1", pools)
    busy = inventory("n1", pools_of(slices, "n1"), {key("gpu-0-mig-1g10gb-19-0")})
    assert parses == ["n1"]
    assert layout(busy, 0) == (("1g.10gb@0", True),) and layout(first, 0) == ()
    assert busy.ref(key("gpu-1")) is first.ref(key("gpu-1"))
    relisted = [parse_resource_slice(s) for s in dynamic_mig_slices("n1", H100, 2)]
    inventory("n1", pools_of(relisted, "n1"))
    assert parses == ["n1", "n1"]


def test_the_allocator_layout_and_the_version_follow_the_slices_and_the_use() -> None:
    slices = [parse_resource_slice(s) for s in dynamic_mig_slices("n1", H100, 2)]
    idle = inventory("n1", pools_of(slices, "n1"))
    again = inventory("n1", pools_of(slices, "n1"))
    busy = inventory("n1", pools_of(slices, "n1"), {key("gpu-0")})
    assert again.version == idle.version != busy.version
    assert idle.with_used([key("gpu-0")]).version == busy.version
    assert idle.prepared is busy.prepared  # laid out once while the slices are the same objects
    assert idle.pools == pools_of(slices, "n1") and len(idle.prepared.candidates) == 52
    relisted = inventory("n1", pools_of([parse_resource_slice(s) for s in dynamic_mig_slices("n1", H100, 2)], "n1"))
    assert relisted.version != idle.version and relisted.prepared is not idle.prepared


def _feed_nodes(monkeypatch: pytest.MonkeyPatch, table: str) -> tuple[int, int]:
    """Feeds a per-node table more nodes than its bound: (size after, bound)."""
    monkeypatch.setattr(inventory_module, table, {})
    monkeypatch.setattr(inventory_module, f"{table}_LIMIT", 4)
    for i in range(13):
        node = f"n{i}"
        inventory(node, pools_of([parse_resource_slice(s) for s in dynamic_mig_slices(node, H100, 1)], node))
        assert 0 < len(getattr(inventory_module, table)) <= 4
    return len(getattr(inventory_module, table)), 4


def pools_bound(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    return _feed_nodes(monkeypatch, "_POOLS")


def pool_sets_bound(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    return _feed_nodes(monkeypatch, "_POOL_SETS")


def shared_bound(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """Feeds the shared objects more than their bound (one pool alone has 26 placements): (size after, bound)."""
    monkeypatch.setattr(inventory_module, "_POOLS", {})
    monkeypatch.setattr(inventory_module, "_SHAPES", {})  # parsed afresh, not from an earlier pool's shape
    monkeypatch.setattr(inventory_module, "_SHARED", {})
    monkeypatch.setattr(inventory_module, "_SHARED_LIMIT", 4)
    inv = node_inventory(dynamic_mig_slices("n1", H100, 2), ("gpu-0-mig-1g10gb-19-0",))
    assert inv.warnings == () and layout(inv, 0) == (("1g.10gb@0", True),)  # the same answer with little shared
    assert inv.ref(key("gpu-1-mig-7g80gb-0-0")) == DeviceRef(1, at("7g.80gb@0"))
    return len(inventory_module._SHARED), 4


@pytest.mark.parametrize("feed", [pools_bound, pool_sets_bound, shared_bound])
def test_the_caches_stay_within_their_bounds(
    feed: Callable[[pytest.MonkeyPatch], tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    size, bound = feed(monkeypatch)
    assert 0 < size <= bound
