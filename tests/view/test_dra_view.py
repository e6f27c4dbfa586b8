"""The cluster view's DRA side: slices, claims, templates and classes from re-lists and events, per node its
pools, the devices allocated and assumed there, its state from the DRA source, and the change log."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from extender.model.catalog import model_named
from extender.model.dra.driver import DRIVER, dynamic_mig_slices, static_mig_slices
from extender.model.placement import Placement
from extender.model.state import Fidelity
from extender.view.snapshot import load_snapshot_text
from extender.view.store import ClusterView, Kind
from tests.builders import pod
from tests.support import Clock

H100 = model_named("H100-80GB")
SMALL = "gpu-0-mig-1g10gb-19-0"
SMALL_ON_1 = "gpu-1-mig-1g10gb-19-0"


def node(name: str, rv: str = "1", *, device_plugin: bool = False) -> dict[str, Any]:
    labels = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.count": "2"}
    allocatable = {"nvidia.com/mig-1g.10gb": "14"} if device_plugin else {}
    return {"metadata": {"name": name, "resourceVersion": rv, "labels": labels}, "status": {"allocatable": allocatable}}


def claim(
    name: str,
    *devices: str,
    node_name: str = "dra-a",
    namespace: str = "team-a",
    admin: bool = False,
    reserved: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A claim for one 1g.10gb device, allocated to ``devices`` of ``node_name``'s pool when any are given."""
    obj: dict[str, Any] = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-claim-{name}"},
        "spec": {"devices": {"requests": [{"name": "mig", "exactly": {"deviceClassName": "mig.nvidia.com"}}]}},
    }
    if devices:
        results = [
            {
                "request": "mig",
                "driver": DRIVER,
                "pool": node_name,
                "device": d,
                **({"adminAccess": True} if admin else {}),
            }
            for d in devices
        ]
        selector = {
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}]
        }
        obj["status"] = {
            "allocation": {"devices": {"results": results}, "nodeSelector": selector},
            "reservedFor": [{"resource": "pods", "name": f"pod-{u}", "uid": u} for u in reserved],
        }
    return obj


TEMPLATE: dict[str, Any] = {
    "apiVersion": "resource.k8s.io/v1",
    "kind": "ResourceClaimTemplate",
    "metadata": {"name": "mig-profile", "namespace": "team-a"},
    "spec": {"spec": {"devices": {"requests": [{"name": "mig", "exactly": {"deviceClassName": "mig.nvidia.com"}}]}}},
}
MIG_CLASS: dict[str, Any] = {
    "apiVersion": "resource.k8s.io/v1",
    "kind": "DeviceClass",
    "metadata": {"name": "mig.nvidia.com"},
    "spec": {"selectors": [{"cel": {"expression": "device.attributes['gpu.nvidia.com'].type == 'mig'"}}]},
}


def dra_view(clock: Clock | None = None, *names: str) -> ClusterView:
    """Nodes dra-a and dra-b with two DynamicMIG H100s each, plain (device-plugin) node dp-c, no claims yet."""
    view = ClusterView(clock=clock or Clock(), assume_ttl_s=30)
    view.replace(Kind.NODES, [node("dra-a"), node("dra-b"), node("dp-c", device_plugin=True), *map(node, names)])
    view.replace(Kind.PODS, [])
    view.replace(Kind.RESOURCE_SLICES, [*dynamic_mig_slices("dra-a", H100, 2), *dynamic_mig_slices("dra-b", H100, 2)])
    view.replace(Kind.RESOURCE_CLAIMS, [])
    view.replace(Kind.CLAIM_TEMPLATES, [TEMPLATE])
    view.replace(Kind.DEVICE_CLASSES, [MIG_CLASS])
    return view


def used(view: ClusterView, name: str) -> list[str]:
    state = view.node_state(name)
    assert state is not None
    return [f"{g.index}:{i.placement}" for g in state.gpus for i in g.instances if i.used]


def key(device: str, pool: str = "dra-a") -> tuple[str, str, str]:
    return (DRIVER, pool, device)


# --- slices, pools and node states ------------------------------------------------------------------------


def test_nodes_with_the_drivers_slices_get_their_state_from_dra_the_others_from_their_labels() -> None:
    view = dra_view()
    assert [view.is_dra_node(n) for n in ("dra-a", "dra-b", "dp-c")] == [True, True, False]
    [pool] = view.dra_pools("dra-a")
    assert (pool.driver, pool.name, pool.invalid, len(pool.slices), len(pool.devices)) == (DRIVER, "dra-a", "", 3, 52)
    a, c = view.node_state("dra-a"), view.node_state("dp-c")
    assert a is not None and c is not None
    assert a.fidelity is Fidelity.DRA and [g.model.name for g in a.gpus] == ["H100-80GB", "H100-80GB"]
    assert c.fidelity is not Fidelity.DRA and view.dra_pools("dp-c") == () and view.dra_inventory("dp-c") is None
    inventory = view.dra_inventory("dra-a")
    assert inventory is not None and inventory.node is a


def test_a_pool_missing_a_slice_offers_nothing() -> None:
    view = ClusterView()
    view.replace(Kind.NODES, [node("dra-a")])
    view.replace(Kind.RESOURCE_SLICES, dynamic_mig_slices("dra-a", H100, 2)[:2])
    [pool] = view.dra_pools("dra-a")
    assert pool.incomplete and pool.invalid


def test_a_new_generation_replaces_the_old_one_slice_by_slice() -> None:
    view = dra_view()
    old = view.node_state("dra-a")
    newer = dynamic_mig_slices("dra-a", H100, 1, generation=2)
    for item in newer:
        item["metadata"]["name"] += "-g2"
        view.apply(Kind.RESOURCE_SLICES, "ADDED", item)
    [pool] = view.dra_pools("dra-a")
    assert pool.generation == 2 and len(pool.slices) == 2
    state = view.node_state("dra-a")
    assert state is not old and state is not None and len(state.gpus) == 1


def test_static_mig_devices_are_used_when_allocated() -> None:
    layout = [Placement(0, H100.profile("3g.40gb")), Placement(4, H100.profile("1g.10gb"))]
    view = ClusterView()
    view.replace(Kind.NODES, [node("st")])
    view.replace(Kind.RESOURCE_SLICES, static_mig_slices("st", H100, [layout]))
    view.replace(Kind.RESOURCE_CLAIMS, [claim("c", "gpu-0-mig-1g10gb-19-4", node_name="st")])
    assert used(view, "st") == ["0:1g.10gb@4"]


# --- allocations and the change log -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "allocated"),
    [
        ([claim("c1", SMALL)], {key(SMALL)}),
        ([claim("c1", SMALL, reserved=("uid-p",)), claim("c2", SMALL_ON_1)], {key(SMALL), key(SMALL_ON_1)}),
        ([claim("c1", SMALL, admin=True)], set()),
        ([claim("c1")], set()),
        ([claim("c1", SMALL, node_name="dra-b")], set()),
    ],
    ids=["one", "reserved-or-not", "admin-access-excluded", "unallocated", "other-node"],
)
def test_devices_in_use_are_those_of_allocated_claims(claims: list[dict[str, Any]], allocated: set[Any]) -> None:
    view = dra_view()
    view.replace(Kind.RESOURCE_CLAIMS, claims)
    assert view.dra_allocated("dra-a") == view.dra_in_use("dra-a") == allocated
    assert len(used(view, "dra-a")) == len(allocated)


def test_an_allocation_changes_only_its_nodes_state_and_is_logged_for_it() -> None:
    view = dra_view()
    a, b, c = (view.node_state(n) for n in ("dra-a", "dra-b", "dp-c"))
    at = view.generation
    view.apply(Kind.RESOURCE_CLAIMS, "ADDED", claim("c1"))  # a pending pod's claim: no node changes
    assert view.changed_since(at) == set() and view.generation > at
    assert view.node_state("dra-a") is a
    view.apply(Kind.RESOURCE_CLAIMS, "MODIFIED", claim("c1", SMALL))
    assert view.changed_since(at) == {"dra-a"}
    assert view.node_state("dra-b") is b and view.node_state("dp-c") is c
    assert used(view, "dra-a") == ["0:1g.10gb@0"]
    at = view.generation
    view.apply(Kind.RESOURCE_CLAIMS, "MODIFIED", claim("c1", SMALL, reserved=("uid-p",)))  # reservation only
    assert view.changed_since(at) == set()
    view.apply(Kind.RESOURCE_CLAIMS, "DELETED", claim("c1", SMALL))
    assert view.changed_since(at) == {"dra-a"} and used(view, "dra-a") == []


def test_a_slice_change_touches_only_its_node() -> None:
    view = dra_view()
    a, b = view.node_state("dra-a"), view.node_state("dra-b")
    at = view.generation
    gpu1 = dynamic_mig_slices("dra-b", H100, 2)[2]
    view.apply(Kind.RESOURCE_SLICES, "DELETED", gpu1)
    assert view.changed_since(at) == {"dra-b"}
    assert view.node_state("dra-a") is a and view.node_state("dra-b") is not b
    assert view.dra_pools("dra-b")[0].incomplete


def test_templates_and_classes_change_every_answer_but_no_node_state() -> None:
    view = dra_view()
    a = view.node_state("dra-a")
    at = view.generation
    view.apply(Kind.DEVICE_CLASSES, "MODIFIED", MIG_CLASS)  # the same: nothing changed
    assert view.changed_since(at) == set()
    changed = copy.deepcopy(MIG_CLASS)
    changed["spec"]["selectors"].append({"cel": {"expression": "true"}})
    view.apply(Kind.DEVICE_CLASSES, "MODIFIED", changed)
    assert view.changed_since(at) is None and view.node_state("dra-a") is a
    found = view.device_class("mig.nvidia.com")
    assert found is not None and len(found.selectors) == 2
    at = view.generation
    view.apply(Kind.CLAIM_TEMPLATES, "DELETED", TEMPLATE)
    assert view.changed_since(at) is None and view.claim_template("team-a", "mig-profile") is None
    view.apply(Kind.DEVICE_CLASSES, "DELETED", MIG_CLASS)
    assert view.device_class("mig.nvidia.com") is None


def test_lookups_by_namespace_and_name() -> None:
    view = dra_view()
    view.apply(Kind.RESOURCE_CLAIMS, "ADDED", claim("c1", SMALL))
    found = view.claim("team-a", "c1")
    assert found is not None and found.allocated_node == "dra-a" and view.claim("default", "c1") is None
    template = view.claim_template("team-a", "mig-profile")
    assert template is not None and template.spec.requests[0].name == "mig"
    assert (
        set(view.resource_slices()) == {s.name for s in view.dra.slices.values()} and len(view.resource_slices()) == 6
    )


def test_malformed_objects_are_counted_and_a_deleted_one_is_dropped_by_name() -> None:
    view = dra_view()
    view.apply(Kind.RESOURCE_CLAIMS, "ADDED", claim("c1", SMALL))
    broken = claim("c1", SMALL)
    broken["spec"]["devices"]["requests"][0]["exactly"] = {}
    view.apply(Kind.RESOURCE_CLAIMS, "MODIFIED", broken)
    assert view.counters.invalid_objects == 1 and view.claim("team-a", "c1") is not None  # the last good one stays
    view.apply(Kind.RESOURCE_CLAIMS, "DELETED", broken)
    assert view.claim("team-a", "c1") is None and view.dra_in_use("dra-a") == set()
    view.replace(Kind.RESOURCE_SLICES, [{"metadata": {"name": "x"}, "spec": {}}])
    assert view.counters.invalid_objects == 3 and not view.is_dra_node("dra-a")


# --- assumed devices ----------------------------------------------------------------------------------


def test_assumed_devices_count_until_the_claim_shows_its_allocation() -> None:
    view = dra_view()
    view.apply(Kind.RESOURCE_CLAIMS, "ADDED", claim("c1"))
    at = view.generation
    view.assume_devices("uid-p", "dra-a", {("team-a", "c1"): [key(SMALL)]})
    assert view.changed_since(at) == {"dra-a"}
    assert view.dra_in_use("dra-a") == {key(SMALL)} and view.dra_assumed("dra-a") == {key(SMALL)}
    assert view.dra_allocated("dra-a") == set() and used(view, "dra-a") == ["0:1g.10gb@0"]
    # kube-scheduler allocated another device than predicted: the allocation replaces the assumption
    view.apply(Kind.RESOURCE_CLAIMS, "MODIFIED", claim("c1", SMALL_ON_1))
    assert view.dra_in_use("dra-a") == {key(SMALL_ON_1)} and view.assumed_devices("uid-p") is None
    assert used(view, "dra-a") == ["1:1g.10gb@0"]


def test_each_claim_of_a_pod_ends_its_own_assumption() -> None:
    view = dra_view()
    view.replace(Kind.RESOURCE_CLAIMS, [claim("c1"), claim("c2")])
    view.assume_devices("uid-p", "dra-a", {("team-a", "c1"): [key(SMALL)], ("team-a", "c2"): [key(SMALL_ON_1)]})
    view.apply(Kind.RESOURCE_CLAIMS, "MODIFIED", claim("c1", SMALL))
    assert view.dra_assumed("dra-a") == {key(SMALL_ON_1)} and view.dra_in_use("dra-a") == {key(SMALL), key(SMALL_ON_1)}
    view.replace(Kind.RESOURCE_CLAIMS, [claim("c1", SMALL), claim("c2", SMALL_ON_1)])  # a re-list shows the other
    assert view.assumed_devices("uid-p") is None and view.dra_in_use("dra-a") == {key(SMALL), key(SMALL_ON_1)}


@pytest.mark.parametrize(
    "end",
    ["ttl", "unassume", "pod-deleted", "reassumed-elsewhere", "claim-deleted", "pods-relisted-without-it"],
)
def test_assumed_devices_end(end: str) -> None:
    clock = Clock()
    view = dra_view(clock)
    p = pod("p", namespace="team-a")
    view.apply(Kind.PODS, "ADDED", p)
    view.apply(Kind.RESOURCE_CLAIMS, "ADDED", claim("c1"))
    view.assume_devices("uid-p", "dra-a", {("team-a", "c1"): [key(SMALL)]})
    at = view.generation
    if end == "ttl":
        clock.now += 31
    elif end == "unassume":
        view.unassume("uid-p")  # a new scheduling attempt drops everything the last answer assumed
    elif end == "pod-deleted":
        view.apply(Kind.PODS, "DELETED", p)
    elif end == "reassumed-elsewhere":
        view.assume_devices("uid-p", "dra-b", {("team-a", "c1"): [key(SMALL, "dra-b")]})
        assert view.dra_in_use("dra-b") == {key(SMALL, "dra-b")}
    elif end == "claim-deleted":
        view.apply(Kind.RESOURCE_CLAIMS, "DELETED", claim("c1"))
    else:
        view.replace(Kind.PODS, [])
    assert view.dra_in_use("dra-a") == set() and used(view, "dra-a") == []
    changed = view.changed_since(at)
    assert changed is None or "dra-a" in changed


def test_binding_keeps_the_assumed_devices_until_the_allocation_is_seen() -> None:
    view = dra_view()
    view.apply(Kind.RESOURCE_CLAIMS, "ADDED", claim("c1"))
    view.assume_devices("uid-p", "dra-a", {("team-a", "c1"): [key(SMALL)]})
    view.apply(Kind.PODS, "ADDED", pod("p", namespace="team-a", node_name="dra-a"))  # the pods stream came first
    assert view.dra_in_use("dra-a") == {key(SMALL)}
    view.apply(Kind.RESOURCE_CLAIMS, "MODIFIED", claim("c1", SMALL))
    assert view.dra_in_use("dra-a") == {key(SMALL)} and view.dra_assumed("dra-a") == set()


def test_claims_already_allocated_are_not_assumed() -> None:
    view = dra_view()
    view.apply(Kind.RESOURCE_CLAIMS, "ADDED", claim("c1", SMALL))
    at = view.generation
    view.assume_devices("uid-p", "dra-a", {("team-a", "c1"): [key(SMALL_ON_1)]})
    assert view.assumed_devices("uid-p") is None and view.generation == at
    view.assume_devices("uid-q", "dra-a", {("team-a", "not-seen-yet"): [key(SMALL_ON_1)]})
    assert view.dra_in_use("dra-a") == {key(SMALL), key(SMALL_ON_1)}


# --- a cluster without the DRA API, and snapshots -----------------------------------------------------


def test_an_absent_kind_is_empty_and_in_sync_until_served() -> None:
    view = dra_view()
    view.mark_absent(Kind.RESOURCE_SLICES)
    state = view.sync[Kind.RESOURCE_SLICES]
    assert state.synced and state.absent and not view.resource_slices() and not view.is_dra_node("dra-a")
    relists = state.relists
    view.mark_absent(Kind.RESOURCE_SLICES)  # asked again, still absent: nothing to replace
    assert state.relists == relists and state.last_ok is not None
    view.replace(Kind.RESOURCE_SLICES, dynamic_mig_slices("dra-a", H100, 1))
    assert not state.absent and view.is_dra_node("dra-a")


def test_a_snapshot_with_dra_objects() -> None:
    items = [
        {"apiVersion": "v1", "kind": "Node", **node("dra-a")},
        *dynamic_mig_slices("dra-a", H100, 1),
        claim("c1", SMALL),
        TEMPLATE,
        MIG_CLASS,
    ]
    view = ClusterView()
    counts = load_snapshot_text(view, yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    assert counts == {
        "nodes": 1,
        "pods": 0,
        "configmap": 0,
        "resourceslices": 2,
        "resourceclaims": 1,
        "resourceclaimtemplates": 1,
        "deviceclasses": 1,
    }
    assert view.readiness(60) == (True, "ok")
    assert used(view, "dra-a") == ["0:1g.10gb@0"]


def test_inventory_warnings_are_kept_per_node_and_are_no_annotation_error() -> None:
    view = ClusterView()
    annotated = node("dra-a")
    annotated["metadata"]["annotations"] = {"mig-extender.io/gpus": '{"version": "v1", "gpus": []}'}
    view.replace(Kind.NODES, [annotated])
    slices = dynamic_mig_slices("dra-a", H100, 1)
    del slices[1]["spec"]["devices"][1]["attributes"]["profile"]
    view.replace(Kind.RESOURCE_SLICES, slices)
    state = view.node_state("dra-a")
    assert state is not None and state.fidelity is Fidelity.DRA and state.warnings
    assert view.counters.node_warnings["dra-a"] == state.warnings and view.counters.invalid_annotations == 0
