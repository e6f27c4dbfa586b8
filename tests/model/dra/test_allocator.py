"""The allocator model on hand-made cases: first fit, counters, backtracking, firstAvailable, All, adminAccess,
taints, invalid and incomplete pools, and the errors kube-scheduler fails an attempt with.

The ResourceSlices are NVIDIA's (``driver.dynamic_mig_slices``), parsed by the view's parser as the extender
reads them. tests/model/dra/test_allocator_reference.py checks the same model against the real allocator.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import Any

import pytest

from extender.model.catalog import model_named
from extender.model.dra.allocator import Outcome, PreparedPools, Result, allocate, prepare
from extender.model.dra.cel import compile_selector
from extender.model.dra.driver import dynamic_mig_slices, static_mig_slices
from extender.model.dra.pools import pools_of
from extender.model.dra.types import (
    AllocationMode,
    ClaimSpec,
    DeviceClass,
    DeviceConstraint,
    DeviceRequest,
    DeviceSubRequest,
    DeviceTaint,
    DeviceToleration,
    Pool,
    ResourceSlice,
    TaintEffect,
)
from extender.model.placement import Placement
from extender.view.dra_objects import parse_resource_slice

H100 = model_named("H100-80GB")
DRIVER = "gpu.nvidia.com"
MIG = "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'mig'"
GPU = "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'gpu'"
CLASSES = {
    "mig.nvidia.com": DeviceClass("mig.nvidia.com", (MIG,)),
    "gpu.nvidia.com": DeviceClass("gpu.nvidia.com", (GPU,)),
}
PARENT = "gpu.nvidia.com/parentUUID"


def node_slices(gpus: int = 1, node: str = "node1", generation: int = 1) -> list[ResourceSlice]:
    return [parse_resource_slice(s) for s in dynamic_mig_slices(node, H100, gpus, generation=generation)]


def node_pools(gpus: int = 1, node: str = "node1") -> tuple[Pool, ...]:
    return pools_of(node_slices(gpus, node), node)


def profile(name: str) -> str:
    return f"device.attributes['gpu.nvidia.com'].profile == '{name}'"


def mig(profile_name: str | None = None, count: int = 1, **fields: Any) -> DeviceSubRequest:
    selectors = (profile(profile_name),) if profile_name else ()
    return DeviceSubRequest("mig.nvidia.com", selectors, count=count, **fields)


def request(name: str, *alternatives: DeviceSubRequest) -> DeviceRequest:
    if len(alternatives) == 1 and not alternatives[0].name:
        return DeviceRequest(name, alternatives)
    return DeviceRequest(name, alternatives, first_available=True)


def claim(*requests: DeviceRequest, constraints: Sequence[DeviceConstraint] = ()) -> ClaimSpec:
    return ClaimSpec(tuple(requests), tuple(constraints))


def key(device: str, node: str = "node1") -> tuple[str, str, str]:
    return (DRIVER, node, device)


def picked(outcome: Outcome) -> list[list[tuple[str, str]]]:
    assert outcome.result is Result.ALLOCATED, outcome
    return [[(r.request, r.device) for r in results] for results in outcome.claims]


def run(
    claims: Sequence[ClaimSpec],
    pools: Sequence[Pool] | PreparedPools,
    in_use: Collection[tuple[str, str, str]] | Sequence[str] = (),
    classes: dict[str, DeviceClass] = CLASSES,
    **kw: Any,
) -> Outcome:
    keys = {d if isinstance(d, tuple) else key(d) for d in in_use}
    return allocate(claims, pools, keys, classes, **kw)


# --- the reference notes' H100 example: first fit, one request per claim, each result then in use ---------

FIRST_FIT = [
    ("any MIG", None, "gpu-0-mig-1g10gb-19-0"),
    ("4g.40gb needs memory slice 0", "4g.40gb", None),
    ("3g.40gb", "3g.40gb", "gpu-0-mig-3g40gb-9-4"),
    ("2g.20gb", "2g.20gb", "gpu-0-mig-2g20gb-14-2"),
    ("1g.10gb", "1g.10gb", "gpu-0-mig-1g10gb-19-1"),
    ("another 1g.10gb", "1g.10gb", None),
]


def test_first_fit_sequence_on_one_h100() -> None:
    pools = prepare(node_pools())
    in_use: set[tuple[str, str, str]] = set()
    for label, wanted, expected in FIRST_FIT:
        outcome = run([claim(request("mig", mig(wanted)))], pools, in_use)
        if expected is None:
            assert outcome.result is Result.UNSCHEDULABLE, label
            assert outcome.reason == "cannot allocate all claims"
            continue
        assert picked(outcome) == [[("mig", expected)]], label
        in_use.add(key(expected))
    full = run([claim(request("gpu", DeviceSubRequest("gpu.nvidia.com")))], pools, in_use)
    assert full.result is Result.UNSCHEDULABLE


# --- table: one attempt each ---------------------------------------------------------------------------

Case = tuple[str, list[ClaimSpec], int, list[str], list[list[tuple[str, str]]] | str]
"""label, claims, GPUs on the node, devices in use, expected results per claim or the outcome's reason."""

CASES: list[Case] = [
    (
        "two of a profile",
        [claim(request("m", mig("3g.40gb", 2)))],
        1,
        [],
        [[("m", "gpu-0-mig-3g40gb-9-0"), ("m", "gpu-0-mig-3g40gb-9-4")]],
    ),
    ("three 3g.40gb do not fit one GPU", [claim(request("m", mig("3g.40gb", 3)))], 1, [], "cannot allocate all claims"),
    (
        "three 3g.40gb on two GPUs",
        [claim(request("m", mig("3g.40gb", 3)))],
        2,
        [],
        [[("m", "gpu-0-mig-3g40gb-9-0"), ("m", "gpu-0-mig-3g40gb-9-4"), ("m", "gpu-1-mig-3g40gb-9-0")]],
    ),
    (
        "the full GPU in use holds every counter",
        [claim(request("m", mig("1g.10gb")))],
        2,
        ["gpu-0"],
        [[("m", "gpu-1-mig-1g10gb-19-0")]],
    ),
    (
        "a MIG device in use keeps the full GPU out",
        [claim(request("g", DeviceSubRequest("gpu.nvidia.com")))],
        2,
        ["gpu-0-mig-1g10gb-19-3"],
        [[("g", "gpu-1")]],
    ),
    (
        "counters: 7g.80gb needs the whole GPU",
        [claim(request("m", mig("7g.80gb")))],
        2,
        ["gpu-0-mig-1g10gb-19-6"],
        [[("m", "gpu-1-mig-7g80gb-0-0")]],
    ),
    (
        "counters across claims of one pod",
        [claim(request("a", mig("4g.40gb"))), claim(request("b", mig("7g.80gb")))],
        1,
        [],
        "cannot allocate all claims",
    ),
    (
        "claims in order, each after the other's picks",
        [claim(request("a", mig("1g.10gb"))), claim(request("b", mig("1g.10gb")))],
        1,
        [],
        [[("a", "gpu-0-mig-1g10gb-19-0")], [("b", "gpu-0-mig-1g10gb-19-1")]],
    ),
    (
        "backtracking: matchAttribute parentUUID moves the 3g.40gb to make room for the 4g.40gb",
        [claim(request("a", mig("3g.40gb")), request("b", mig("4g.40gb")), constraints=[DeviceConstraint((), PARENT)])],
        1,
        [],
        [[("a", "gpu-0-mig-3g40gb-9-4"), ("b", "gpu-0-mig-4g40gb-5-0")]],
    ),
    (
        "backtracking onto the next GPU when the first cannot hold both",
        [
            claim(
                request("a", mig("3g.40gb")),
                request("b", mig("4g.40gb")),
                constraints=[DeviceConstraint(("a", "b"), PARENT)],
            )
        ],
        2,
        ["gpu-0-mig-1g10gb-19-6"],
        [[("a", "gpu-1-mig-3g40gb-9-4"), ("b", "gpu-1-mig-4g40gb-5-0")]],
    ),
    (
        "a constraint on other requests leaves this one free",
        [
            claim(
                request("a", mig("3g.40gb")),
                request("b", mig("4g.40gb")),
                constraints=[DeviceConstraint(("x",), PARENT)],
            )
        ],
        2,
        ["gpu-0-mig-1g10gb-19-6"],
        [[("a", "gpu-0-mig-3g40gb-9-0"), ("b", "gpu-1-mig-4g40gb-5-0")]],
    ),
    (
        "matchAttribute: the full GPU has no parentUUID",
        [claim(request("g", DeviceSubRequest("gpu.nvidia.com")), constraints=[DeviceConstraint((), PARENT)])],
        1,
        [],
        "cannot allocate all claims",
    ),
    (
        "distinctAttribute parentUUID spreads two requests over GPUs",
        [
            claim(
                request("a", mig("1g.10gb")),
                request("b", mig("1g.10gb")),
                constraints=[DeviceConstraint((), "", PARENT)],
            )
        ],
        2,
        [],
        [[("a", "gpu-0-mig-1g10gb-19-0"), ("b", "gpu-1-mig-1g10gb-19-0")]],
    ),
    (
        "firstAvailable: the first subrequest that fits wins, named req/sub",
        [claim(request("m", mig("7g.80gb", name="big"), mig("3g.40gb", name="small")))],
        1,
        ["gpu-0-mig-1g10gb-19-0"],
        [[("m/small", "gpu-0-mig-3g40gb-9-4")]],
    ),
    (
        "firstAvailable: the first subrequest when it fits",
        [claim(request("m", mig("7g.80gb", name="big"), mig("3g.40gb", name="small")))],
        2,
        ["gpu-0-mig-1g10gb-19-0"],
        [[("m/big", "gpu-1-mig-7g80gb-0-0")]],
    ),
    (
        "firstAvailable: a later subrequest when a later request needs room",
        [
            claim(
                request("m", mig("4g.40gb", name="big"), mig("1g.10gb", name="small")),
                request("n", mig("4g.40gb")),
                constraints=[DeviceConstraint((), PARENT)],
            )
        ],
        1,
        [],
        [[("m/small", "gpu-0-mig-1g10gb-19-4"), ("n", "gpu-0-mig-4g40gb-5-0")]],
    ),
    (
        "All: every matching device of the node",
        [claim(request("m", mig("3g.40gb", mode=AllocationMode.ALL)))],
        2,
        [],
        [[("m", f"gpu-{g}-mig-3g40gb-9-{s}") for g in (0, 1) for s in (0, 4)]],
    ),
    (
        "All: fails when one matching device is in use",
        [claim(request("m", mig("3g.40gb", mode=AllocationMode.ALL)))],
        1,
        ["gpu-0-mig-3g40gb-9-4"],
        "cannot allocate all claims",
    ),
    (
        "All: no matching device",
        [claim(request("m", mig("5g.50gb", mode=AllocationMode.ALL)))],
        1,
        [],
        "cannot allocate all claims",
    ),
    (
        "All: devices that exclude each other by counters",
        [claim(request("m", mig("1g.20gb", mode=AllocationMode.ALL)), request("n", mig("7g.80gb")))],
        1,
        [],
        "cannot allocate all claims",
    ),
    (
        "adminAccess may take a device in use, but not the counters it holds",
        [claim(request("m", mig("1g.10gb", admin_access=True)))],
        1,
        ["gpu-0-mig-1g10gb-19-0"],
        [[("m", "gpu-0-mig-1g10gb-19-1")]],
    ),
    (
        "adminAccess still needs the counters",
        [claim(request("m", mig("7g.80gb", admin_access=True)))],
        1,
        ["gpu-0-mig-1g10gb-19-0"],
        "cannot allocate all claims",
    ),
    (
        "a device an adminAccess request took is in use for the next claim",
        [claim(request("a", mig("1g.10gb", admin_access=True))), claim(request("b", mig("1g.10gb")))],
        1,
        [],
        [[("a", "gpu-0-mig-1g10gb-19-0")], [("b", "gpu-0-mig-1g10gb-19-1")]],
    ),
    ("no devices at all", [claim(request("m", mig("1g.10gb")))], 0, [], "cannot allocate all claims"),
    ("a claim without requests", [claim()], 1, [], [[]]),
    ("no claims", [], 1, [], []),
    (
        "unknown class",
        [claim(request("m", DeviceSubRequest("nope.nvidia.com")))],
        1,
        [],
        "claim #0, request m: could not retrieve device class nope.nvidia.com: not found",
    ),
    (
        "more than 32 devices in one claim",
        [claim(request("a", mig("1g.10gb", 20)), request("b", mig("1g.10gb", 13)))],
        1,
        [],
        "claim #0: number of requested devices 33 exceeds the claim limit of 32",
    ),
    (
        "32 devices in one claim is not too many",
        [claim(request("a", mig("1g.10gb", 32)))],
        1,
        [],
        "cannot allocate all claims",
    ),
    (
        "All against a constraint is an error",
        [claim(request("m", mig("3g.40gb", mode=AllocationMode.ALL)), constraints=[DeviceConstraint((), PARENT)])],
        2,
        [],
        "claim #0, request m: cannot add device gpu.nvidia.com/node1/gpu-1-mig-3g40gb-9-0 because a claim "
        "constraint would not be satisfied",
    ),
]


@pytest.mark.parametrize(("label", "claims", "gpus", "in_use", "expected"), CASES, ids=[c[0] for c in CASES])
def test_allocation(
    label: str, claims: list[ClaimSpec], gpus: int, in_use: list[str], expected: list[list[tuple[str, str]]] | str
) -> None:
    outcome = run(claims, node_pools(gpus), in_use)
    if isinstance(expected, str):
        assert outcome.result is not Result.ALLOCATED, outcome
        assert outcome.reason == expected
    else:
        assert picked(outcome) == expected


def test_errors_are_the_schedulers() -> None:
    unknown = run([claim(request("m", DeviceSubRequest("nope")))], node_pools())
    assert (unknown.result, unknown.scheduler_error) == (Result.CANNOT_EVALUATE, True)
    unschedulable = run([claim(request("m", mig("3g.40gb", 3)))], node_pools())
    assert (unschedulable.result, unschedulable.scheduler_error) == (Result.UNSCHEDULABLE, False)


def test_admin_access_takes_a_device_in_use_without_counters() -> None:
    layout = [[Placement(0, H100.profile("3g.40gb")), Placement(4, H100.profile("3g.40gb"))]]
    pools = pools_of([parse_resource_slice(s) for s in static_mig_slices("node1", H100, layout)], "node1")
    outcome = run([claim(request("m", mig("3g.40gb", admin_access=True)))], pools, ["gpu-0-mig-3g40gb-9-0"])
    assert picked(outcome) == [[("m", "gpu-0-mig-3g40gb-9-0")]]
    plain = run([claim(request("m", mig("3g.40gb")))], pools, ["gpu-0-mig-3g40gb-9-0"])
    assert picked(plain) == [[("m", "gpu-0-mig-3g40gb-9-4")]]


def test_admin_access_results_are_marked() -> None:
    outcome = run([claim(request("m", mig("1g.10gb", admin_access=True)))], node_pools())
    assert [r.admin_access for r in outcome.claims[0]] == [True]
    plain = run([claim(request("m", mig("1g.10gb")))], node_pools())
    assert [r.admin_access for r in plain.claims[0]] == [False]


# --- taints ---------------------------------------------------------------------------------------------


def tainted(device: str, *taints: DeviceTaint) -> tuple[Pool, ...]:
    slices = node_slices()
    out = []
    for piece in slices:
        devices = tuple(replace(d, taints=taints) if d.name == device else d for d in piece.devices)
        out.append(replace(piece, devices=devices))
    return pools_of(out, "node1")


TAINT = DeviceTaint("maintenance", "soon", TaintEffect.NO_SCHEDULE)
TAINTS = [
    ("NoSchedule keeps the device out", TAINT, (), "gpu-0-mig-1g10gb-19-1"),
    ("NoExecute too", replace(TAINT, effect=TaintEffect.NO_EXECUTE), (), "gpu-0-mig-1g10gb-19-1"),
    ("effect None does not", replace(TAINT, effect=TaintEffect.NONE), (), "gpu-0-mig-1g10gb-19-0"),
    ("tolerated with Equal", TAINT, (DeviceToleration("maintenance", "Equal", "soon"),), "gpu-0-mig-1g10gb-19-0"),
    ("not with another value", TAINT, (DeviceToleration("maintenance", "Equal", "now"),), "gpu-0-mig-1g10gb-19-1"),
    ("tolerated with Exists", TAINT, (DeviceToleration("maintenance", "Exists"),), "gpu-0-mig-1g10gb-19-0"),
    ("Exists without a key tolerates all", TAINT, (DeviceToleration("", "Exists"),), "gpu-0-mig-1g10gb-19-0"),
    (
        "the effect must match",
        TAINT,
        (DeviceToleration("maintenance", "Exists", effect="NoExecute"),),
        "gpu-0-mig-1g10gb-19-1",
    ),
]


@pytest.mark.parametrize(("label", "taint", "tolerations", "expected"), TAINTS, ids=[t[0] for t in TAINTS])
def test_taints(label: str, taint: DeviceTaint, tolerations: tuple[DeviceToleration, ...], expected: str) -> None:
    outcome = run(
        [claim(request("m", mig("1g.10gb", tolerations=tolerations)))], tainted("gpu-0-mig-1g10gb-19-0", taint)
    )
    assert picked(outcome) == [[("m", expected)]]


# --- pools: generations, completeness, validity, order --------------------------------------------------


def test_only_the_highest_generation_counts() -> None:
    old = node_slices(2, generation=1)
    new = node_slices(1, generation=2)
    pools = pools_of([*old, *new], "node1")
    assert [(p.name, p.generation, len(p.slices)) for p in pools] == [("node1", 2, 2)]
    assert run([claim(request("m", mig("3g.40gb", 3)))], pools).result is Result.UNSCHEDULABLE


def test_incomplete_pool_offers_nothing() -> None:
    slices = node_slices(2)
    pools = pools_of(slices[:2], "node1")
    assert pools[0].incomplete and pools[0].invalid == "resource pool gpu.nvidia.com/node1 is incomplete: 2 of 3 slices"
    outcome = run([claim(request("m", mig("1g.10gb")))], pools)
    assert (outcome.result, outcome.reason) == (Result.UNSCHEDULABLE, "cannot allocate all claims")
    every = run([claim(request("m", mig("1g.10gb", mode=AllocationMode.ALL)))], pools)
    assert every.result is Result.CANNOT_EVALUATE and every.scheduler_error
    assert every.reason.endswith(
        "asks for all devices, but resource pool gpu.nvidia.com/node1 is currently being updated"
    )


def renamed(piece: ResourceSlice, old: str, new: str) -> ResourceSlice:
    return replace(piece, devices=tuple(replace(d, name=new) if d.name == old else d for d in piece.devices))


def test_invalid_pools() -> None:
    slices = node_slices(2)
    duplicate = [slices[0], slices[1], renamed(slices[2], "gpu-1", "gpu-0")]
    pools = pools_of(duplicate, "node1")
    assert pools[0].invalid == "duplicate device name gpu-0" and not pools[0].incomplete
    outcome = run([claim(request("m", mig("1g.10gb")))], pools)
    assert (outcome.result, outcome.reason) == (Result.UNSCHEDULABLE, "invalid resource pools were encountered")

    counters = slices[0].shared_counters
    fewer = replace(slices[0], shared_counters=(counters[0],))
    assert pools_of([fewer, *slices[1:]], "node1")[0].invalid == "counter set gpu-1-counter-set not found"
    trimmed = replace(counters[1], counters=counters[1].counters[1:])
    missing = replace(slices[0], shared_counters=(counters[0], trimmed))
    assert pools_of([missing, *slices[1:]], "node1")[0].invalid == (
        f"counter {counters[1].counters[0][0]} not found in counter set gpu-1-counter-set"
    )
    twice = replace(slices[0], shared_counters=(counters[0], counters[0]))
    assert pools_of([twice, *slices[1:]], "node1")[0].invalid == "duplicate counter set name gpu-0-counter-set"


def test_other_nodes_pools_come_with_their_counter_slice() -> None:
    slices = [*node_slices(1, "node2"), *node_slices(1, "node1")]
    pools = pools_of(slices, "node1")
    assert [p.name for p in pools] == ["node1", "node2"]
    node2 = pools[1]
    assert not node2.invalid and [s.name for s in node2.other_slices] == ["00001-gpu.nvidia.com-node2"]
    assert [d.name for d in node2.devices] == []
    # node2 mid-update: an All request fails on node1 too, as in Go.
    partial = pools_of([*node_slices(1, "node2")[:1], *node_slices(1, "node1")], "node1")
    assert partial[1].incomplete
    every = run([claim(request("m", mig("3g.40gb", mode=AllocationMode.ALL)))], partial)
    assert every.scheduler_error and "node2 is currently being updated" in every.reason
    assert picked(run([claim(request("m", mig("3g.40gb")))], partial)) == [[("m", "gpu-0-mig-3g40gb-9-0")]]


def test_newer_generation_elsewhere_drops_the_pool() -> None:
    mine = node_slices(2, "node1")
    newer_elsewhere = replace(mine[2], generation=2, node_name="node3")
    assert pools_of([*mine[:2], newer_elsewhere], "node1") == ()
    # Complete from the node's own slices: nothing else is looked at.
    assert len(pools_of([*mine, newer_elsewhere], "node1")) == 1


def test_slices_sorted_by_name_and_pools_by_driver_and_name() -> None:
    slices = node_slices(3)
    pools = pools_of(list(reversed(slices)), "node1")
    assert [s.name for s in pools[0].slices] == sorted(s.name for s in slices)
    other = [replace(s, driver="another.example.com") for s in node_slices(1, "node1")]
    zeta = [replace(s, pool="a-pool") for s in node_slices(1, "node1")]
    ordered = pools_of([*other, *slices, *zeta], "node1")
    assert [(p.driver, p.name) for p in ordered] == [
        ("another.example.com", "node1"),
        (DRIVER, "a-pool"),
        (DRIVER, "node1"),
    ]


def test_pools_with_binding_conditions_come_last() -> None:
    plain = node_slices(1, "node1")
    conditioned = [replace(s, pool="a-pool") for s in node_slices(1, "node1")]
    conditioned[1] = replace(
        conditioned[1], devices=tuple(replace(d, binding_conditions=("ready",)) for d in conditioned[1].devices)
    )
    assert [p.name for p in pools_of([*plain, *conditioned], "node1")] == ["node1", "a-pool"]


def test_slice_without_node_name_cannot_be_evaluated() -> None:
    slices = node_slices(1)
    anywhere = replace(slices[1], node_name="")
    pools = pools_of([slices[0], anywhere], "node1")
    assert pools[0].unsupported
    outcome = run([claim(request("m", mig("1g.10gb")))], pools)
    assert outcome.result is Result.CANNOT_EVALUATE and not outcome.scheduler_error


def test_unsupported_requests_cannot_be_evaluated() -> None:
    outcome = run([claim(request("m", mig("1g.10gb", unsupported="capacity.requests")))], node_pools())
    assert outcome.result is Result.CANNOT_EVALUATE and not outcome.scheduler_error
    assert "capacity.requests" in outcome.reason


def test_step_budget() -> None:
    # 8 GPUs, a constraint no pair of the first request's devices can meet with the second: a long search.
    claims = [
        claim(
            request("a", mig("1g.10gb", 7)),
            request("b", mig("7g.80gb")),
            constraints=[DeviceConstraint((), PARENT)],
        )
    ]
    outcome = run(claims, node_pools(8), max_steps=1000)
    assert outcome.result is Result.CANNOT_EVALUATE and not outcome.scheduler_error
    assert outcome.reason == "the search took more than 1000 steps"


def test_a_search_too_deep_for_the_interpreter() -> None:
    layout = [[Placement(start, H100.profile("1g.10gb")) for start in range(7)] for _ in range(8)]
    pools = pools_of([parse_resource_slice(s) for s in static_mig_slices("node1", H100, layout)], "node1")
    claims = [claim(request("m", mig("1g.10gb", 32)))]
    assert len(picked(run(claims, pools))[0]) == 32
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 40)
    try:
        outcome = run(claims, pools)
    finally:
        sys.setrecursionlimit(limit)
    assert outcome.result is Result.CANNOT_EVALUATE and not outcome.scheduler_error
    assert "recursion limit" in outcome.reason


def test_prepared_pools_keep_selector_results() -> None:
    calls: list[str] = []
    pools = prepare(node_pools())

    def counting(expression: str) -> Any:
        calls.append(expression)
        return compile_selector(expression)

    claims = [claim(request("m", mig("1g.10gb")))]
    first = run(claims, pools, compile_selector=counting)
    second = run(claims, pools, compile_selector=counting)
    assert picked(first) == picked(second)
    assert len(calls) == 2  # the class's and the request's expression, compiled once
    assert pools.matches[MIG][0] is False  # gpu-0 is no MIG device


def test_cel_errors_are_the_schedulers() -> None:
    broken = {"mig.nvidia.com": DeviceClass("mig.nvidia.com", ("device.attributes['gpu.nvidia.com'].missing == 'x'",))}
    outcome = run([claim(request("m", mig("1g.10gb")))], node_pools(), classes=broken)
    assert outcome.result is Result.CANNOT_EVALUATE and outcome.scheduler_error
    assert outcome.reason.startswith("class mig.nvidia.com: selector #0: CEL error")
