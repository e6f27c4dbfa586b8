"""MIGBench's fake DRA inventory: the slices its agent publishes, read back as MIGBench-H100 GPUs, allocated as
kube-scheduler's allocator allocates them, and devices that only resemble them left out with a warning."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from extender.model.demand import PodDemand
from extender.model.dra.driver import DRIVER
from extender.model.dra.fit import ClaimsDemand, fit_claims
from extender.model.dra.inventory import DeviceRef, Inventory, inventory
from extender.model.dra.migbench_format import migbench_device_class, migbench_slices
from extender.model.dra.pools import pools_of
from extender.model.dra.types import ClaimSpec, DeviceRequest, DeviceSubRequest
from extender.model.fit import Allocator, Verdict, fit
from extender.model.migbench import MIGBENCH_H100
from extender.model.placement import Placement, free_starts, occupancy_of
from extender.model.state import Fidelity
from extender.view.dra_objects import parse_device_class, parse_resource_slice

Json = dict[str, Any]
NODE = "mb-1"
MIG_CLASS = parse_device_class(migbench_device_class())
AT_LEAST_15000MI = (
    f"device.attributes['{DRIVER}'].type == 'mig' && "
    f"device.capacity['{DRIVER}'].memory.compareTo(quantity('15000Mi')) >= 0"
)
PER_GPU = [
    *(f"1g10gb-{s}" for s in range(7)),
    *(f"2g20gb-{s}" for s in (0, 2, 4)),
    *(f"3g40gb-{s}" for s in (0, 4)),
    "7g80gb-0",
]


def at(text: str) -> Placement:
    name, _, start = text.partition("@")
    return Placement(int(start), MIGBENCH_H100.profile(name))


def key(device: str) -> tuple[str, str, str]:
    return (DRIVER, NODE, device)


def node_inventory(slices: list[Json], used: tuple[str, ...] = ()) -> Inventory:
    return inventory(NODE, pools_of([parse_resource_slice(s) for s in slices], NODE), {key(d) for d in used})


def device(slices: list[Json], name: str) -> Json:
    found: Json = next(d for d in slices[1]["spec"]["devices"] if d["name"] == name)
    return found


def claim(selector: str) -> ClaimSpec:
    return ClaimSpec((DeviceRequest("mig", (DeviceSubRequest(MIG_CLASS.name, (selector,)),)),))


def allocated(inv: Inventory, selector: str) -> list[str]:
    outcome = inv.allocate([claim(selector)], [MIG_CLASS])
    return [r.device for results in outcome.claims for r in results]


# --- the format ------------------------------------------------------------------------------------------


def test_the_slices_are_those_migbench_publishes() -> None:
    counters, devices = migbench_slices(NODE, 2)
    pool = {"name": NODE, "generation": 1, "resourceSliceCount": 2}
    assert counters["metadata"] == {"name": "mb-1-h100-counters"}
    assert devices["metadata"] == {"name": "mb-1-h100-devices"}
    for piece in (counters, devices):
        assert (piece["apiVersion"], piece["kind"]) == ("resource.k8s.io/v1", "ResourceSlice")
        assert {k: v for k, v in piece["spec"].items() if k not in ("sharedCounters", "devices")} == {
            "driver": "gpu.nvidia.com",
            "nodeName": NODE,
            "pool": pool,
        }
    slots = {f"memory-slice-{i}": {"value": "1"} for i in range(7)}
    assert counters["spec"]["sharedCounters"] == [
        {"name": "gpu-0-counter-set", "counters": slots},
        {"name": "gpu-1-counter-set", "counters": slots},
    ]
    names = [d["name"] for d in devices["spec"]["devices"]]
    assert names == [f"gpu{g}-mig-{n}" for g in (0, 1) for n in PER_GPU]
    assert device([counters, devices], "gpu1-mig-3g40gb-4") == {
        "name": "gpu1-mig-3g40gb-4",
        "attributes": {
            "gpu.nvidia.com/type": {"string": "mig"},
            "gpu.nvidia.com/profile": {"string": "3g.40gb"},
            "gpu.nvidia.com/index": {"int": 1},
        },
        "capacity": {"gpu.nvidia.com/memory": {"value": "40960Mi"}, "gpu.nvidia.com/multiprocessors": {"value": "42"}},
        "consumesCounters": [
            {
                "counterSet": "gpu-1-counter-set",
                "counters": {f"memory-slice-{s}": {"value": "1"} for s in (4, 5, 6)},
            }
        ],
    }
    capacities = {
        d["attributes"]["gpu.nvidia.com/profile"]["string"]: tuple(c["value"] for c in d["capacity"].values())
        for d in devices["spec"]["devices"]
    }
    assert capacities == {
        "1g.10gb": ("10240Mi", "14"),
        "2g.20gb": ("20480Mi", "28"),
        "3g.40gb": ("40960Mi", "42"),
        "7g.80gb": ("81920Mi", "100"),
    }
    mig_only = "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'mig'"
    assert migbench_device_class()["spec"]["selectors"] == [{"cel": {"expression": mig_only}}]
    assert migbench_slices("Node_A.b", 1)[0]["metadata"]["name"] == "node-a-b-h100-counters"  # MIGBench's safeName
    with pytest.raises(ValueError, match="positive"):
        migbench_slices(NODE, 0)


def test_the_model_is_migbench_geometry_without_a_memory_cap() -> None:
    assert (MIGBENCH_H100.memory_slices, MIGBENCH_H100.compute_slices) == (7, 7)
    assert [(p.name, p.compute_slices, p.memory_slices, p.starts) for p in MIGBENCH_H100.profiles] == [
        ("1g.10gb", 1, 1, (0, 1, 2, 3, 4, 5, 6)),
        ("2g.20gb", 2, 2, (0, 2, 4)),
        ("3g.40gb", 3, 3, (0, 4)),
        ("7g.80gb", 7, 7, (0,)),
    ]
    assert occupancy_of(MIGBENCH_H100, [at("3g.40gb@0"), at("1g.10gb@3"), at("3g.40gb@4")]) == 0b1111111
    assert occupancy_of(MIGBENCH_H100, [at(f"1g.10gb@{s}") for s in range(7)]) == 0b1111111


# --- read back -------------------------------------------------------------------------------------------


def test_the_pool_reads_back_as_migbench_gpus_in_the_order_listed() -> None:
    inv = node_inventory(migbench_slices(NODE, 3))
    assert inv.warnings == () and inv.node.unknown_product is None
    assert inv.node.fidelity is Fidelity.DRA
    assert [(g.index, g.model, g.dynamic, g.predictable, g.full_device) for g in inv.gpus] == [
        (i, MIGBENCH_H100, True, True, "") for i in range(3)
    ]
    gpu2 = inv.gpu(2)
    assert gpu2 is not None and gpu2.counter_set == "gpu-2-counter-set" and gpu2.uuid == ""
    assert gpu2.mig_devices == tuple(f"gpu2-mig-{n}" for n in PER_GPU)
    assert [str(p) for p in gpu2.placements] == [
        *(f"1g.10gb@{s}" for s in range(7)),
        *(f"2g.20gb@{s}" for s in (0, 2, 4)),
        *(f"3g.40gb@{s}" for s in (0, 4)),
        "7g.80gb@0",
    ]
    assert inv.ref(key("gpu1-mig-3g40gb-4")) == DeviceRef(1, at("3g.40gb@4"))
    assert [(g.index, g.model, g.dynamic, g.instances) for g in inv.node.gpus] == [
        (i, MIGBENCH_H100, True, ()) for i in range(3)
    ]


def test_a_claim_gets_the_first_device_in_slice_order_with_free_counters() -> None:
    idle = node_inventory(migbench_slices(NODE, 2))
    assert allocated(idle, AT_LEAST_15000MI) == ["gpu0-mig-2g20gb-0"]  # 1g.10gb's 10240Mi are too few
    busy = node_inventory(migbench_slices(NODE, 2), ("gpu0-mig-1g10gb-1", "gpu0-mig-2g20gb-2"))
    assert allocated(busy, AT_LEAST_15000MI) == ["gpu0-mig-2g20gb-4"]
    full = node_inventory(migbench_slices(NODE, 2), ("gpu0-mig-7g80gb-0",))
    assert allocated(full, AT_LEAST_15000MI) == ["gpu1-mig-2g20gb-0"]
    result = fit_claims(idle.node, ClaimsDemand((claim(AT_LEAST_15000MI),), 1, frozenset(), (MIG_CLASS,)))
    assert result.verdict is Verdict.FITS_NOW
    assert [(p.gpu_index, str(p.placement)) for p in result.plan] == [(0, "2g.20gb@0")]


def test_3g_at_0_1g_at_3_and_3g_at_4_fill_a_gpu() -> None:
    used = ("gpu0-mig-3g40gb-0", "gpu0-mig-3g40gb-4")
    inv = node_inventory(migbench_slices(NODE, 1), used)
    assert allocated(inv, f"device.attributes['{DRIVER}'].profile == '1g.10gb'") == ["gpu0-mig-1g10gb-3"]
    filled = inv.with_used([key("gpu0-mig-1g10gb-3")])
    assert filled.warnings == ()
    gpu = filled.node.gpus[0]
    assert sorted(str(i.placement) for i in gpu.instances) == ["1g.10gb@3", "3g.40gb@0", "3g.40gb@4"]
    assert gpu.occupied == 0b1111111 and gpu.used_compute == 7
    assert all(free_starts(p, gpu.occupied) == () for p in MIGBENCH_H100.profiles)
    assert allocated(filled, f"device.attributes['{DRIVER}'].type == 'mig'") == []
    planned = fit(inv.node, PodDemand(mig=(("1g.10gb", 1),)), Allocator.FIRST_FIT)
    assert [(p.gpu_index, str(p.placement)) for p in planned.plan] == [(0, "1g.10gb@3")]


# --- what only resembles the format is left out ------------------------------------------------------------


def _consume(name: str, slots: tuple[int, ...]) -> Callable[[list[Json]], None]:
    def change(slices: list[Json]) -> None:
        counters = {f"memory-slice-{s}": {"value": "1"} for s in slots}
        device(slices, name)["consumesCounters"][0]["counters"] = counters

    return change


def _attribute(name: str, attribute: str, value: Json) -> Callable[[list[Json]], None]:
    def change(slices: list[Json]) -> None:
        device(slices, name)["attributes"][f"gpu.nvidia.com/{attribute}"] = value

    return change


def _rename(old: str, new: str, index: int) -> Callable[[list[Json]], None]:
    def change(slices: list[Json]) -> None:
        device(slices, old)["attributes"]["gpu.nvidia.com/index"] = {"int": index}
        device(slices, old)["name"] = new

    return change


def _no_counters(slices: list[Json]) -> None:
    del device(slices, "gpu0-mig-1g10gb-3")["consumesCounters"]


BROKEN: dict[str, tuple[Callable[[list[Json]], None], str]] = {
    "no-counters": (_no_counters, "named as MIGBench's devices but consumes no single gpu-<g>-counter-set"),
    "counters-disagree-with-name": (
        _consume("gpu0-mig-1g10gb-3", (4,)),
        "the name or gpu.nvidia.com/index does not match the device (1g.10gb at slot 4)",
    ),
    "illegal-start": (
        _consume("gpu0-mig-2g20gb-2", (1, 2)),
        "2g.20gb at memory slice 1 is not a legal placement on MIGBench-H100 ({0,2,4}:2)",
    ),
    "wrong-size": (
        _consume("gpu0-mig-3g40gb-4", (4, 5)),
        "3g.40gb takes 3 memory slice(s), the device takes [4, 5]",
    ),
    "profile-disagrees": (
        _attribute("gpu0-mig-1g10gb-3", "profile", {"string": "2g.20gb"}),
        "2g.20gb takes 2 memory slice(s), the device takes [3]",
    ),
    "profile-migbench-does-not-know": (
        _attribute("gpu0-mig-1g10gb-3", "profile", {"string": "1g.20gb"}),
        "MIGBench-H100 has no MIG profile '1g.20gb'",
    ),
    "index-disagrees": (
        _attribute("gpu0-mig-1g10gb-3", "index", {"int": 1}),
        "the name or gpu.nvidia.com/index does not match the device (1g.10gb at slot 3)",
    ),
    "name-names-another-gpu": (
        _rename("gpu0-mig-1g10gb-3", "gpu1-mig-1g10gb-3", 1),
        "belongs to GPU 0 (MIGBench-H100) by its counter set gpu-0-counter-set",
    ),
}


@pytest.mark.parametrize(("change", "warning"), BROKEN.values(), ids=BROKEN.keys())
def test_a_device_that_disagrees_is_left_out_with_a_warning(change: Callable[[list[Json]], None], warning: str) -> None:
    slices = migbench_slices(NODE, 1)
    change(slices)
    inv = node_inventory(slices)
    assert len(inv.warnings) == 1, inv.warnings
    assert warning in inv.warnings[0] and "left out" in inv.warnings[0]
    assert len(inv.gpus[0].mig_devices) == len(PER_GPU) - 1  # only that device
    assert inv.node.unknown_product is None


@pytest.mark.parametrize("extra", ["memory-slice-7", "decoders"])
def test_a_counter_set_of_more_than_migbench_slots_is_not_migbench(extra: str) -> None:
    slices = migbench_slices(NODE, 1)
    slices[0]["spec"]["sharedCounters"][0]["counters"][extra] = {"value": "1"}
    inv = node_inventory(slices)
    assert inv.gpus == () and len(inv.warnings) == 9  # 8 named, the rest counted
    assert "counter set gpu-0-counter-set does not offer exactly memory-slice-0..6" in inv.warnings[0]


def test_without_migbench_names_a_device_without_a_product_is_still_left_out() -> None:
    slices = migbench_slices(NODE, 1)
    renamed = copy.deepcopy(slices)
    for d in renamed[1]["spec"]["devices"]:
        d["name"] = "mig-" + d["name"].split("-mig-")[1]  # the kind fixture's names: no GPU
    inv = node_inventory(renamed)
    assert inv.gpus == () and all("no gpu.nvidia.com/productName attribute" in w for w in inv.warnings[:8])
