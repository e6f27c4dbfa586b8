"""The allocator model against the real one: random cases through kube-scheduler's structured allocator.

tests/dra_reference is a Go program around k8s.io/dynamic-resource-allocation v0.36.3 ``structured.NewAllocator``
with the features kube-scheduler v1.36.3 enables by default (built by scripts/build-dra-reference.sh). Each case
is a cluster's ResourceSlices as NVIDIA's driver publishes them (DynamicMIG and pre-created MIG, random GPU
models and counts) or as MIGBench's agent publishes its fake H100s (two slices, 7 slots, no full GPU), with
sometimes a second node, an incomplete or invalid pool, an older generation, taints, another driver, a pool with
binding conditions; devices in use, DeviceClasses and one to three claims of one to three requests (profiles
and capacities by CEL, counts, firstAvailable, All, adminAccess, tolerations,
matchAttribute and distinctAttribute constraints). The same JSON goes through the view's parser and the
model; both answers must be equal: the same devices in the same order, or the same unschedulable reason, or
both an error.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from extender.model.catalog import MODELS, GpuModel
from extender.model.dra.allocator import Outcome, PreparedPools, Result, allocate, prepare
from extender.model.dra.driver import DRIVER, dynamic_mig_slices, static_mig_slices
from extender.model.dra.migbench_format import migbench_slices
from extender.model.dra.pools import pools_of
from extender.model.dra.types import DeviceClass, Pool
from extender.model.migbench import MIGBENCH_H100
from extender.model.placement import Placement
from extender.view.dra_objects import parse_device_class, parse_resource_claim, parse_resource_slice

ROOT = Path(__file__).resolve().parents[3]
CASES = 10_000
CLUSTERS = 300
BATCH = 250
SEED = 20261202
NODE = "node1"
PARENT = "gpu.nvidia.com/parentUUID"
MAX_STEPS = 20_000
"""The model's search budget here: a case whose search is longer in Go must be one the model declines."""
GO_TIMEOUT_MS = 1_000
"""Go's budget here: a case it does not finish in time is not compared, but the model must have searched at
least as far before it answered or declined (the steps of both searches are the same, step for step)."""

MIG_CLASS = "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'mig'"
GPU_CLASS = "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'gpu'"
ANY_CLASS = "device.driver == 'gpu.nvidia.com'"
CLASSES = [
    {"metadata": {"name": name}, "spec": {"selectors": [{"cel": {"expression": expression}}]}}
    for name, expression in (
        ("mig.nvidia.com", MIG_CLASS),
        ("gpu.nvidia.com", GPU_CLASS),
        ("any.nvidia.com", ANY_CLASS),
    )
]
CLASS_RECORDS: dict[str, DeviceClass] = {c.name: c for c in map(parse_device_class, CLASSES)}
CLASS_JSON = json.dumps(CLASSES)
CAPACITY_SELECTORS = [
    "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('20Gi')) >= 0",
    "device.capacity['gpu.nvidia.com'].multiprocessors.isLessThan(quantity('40'))",
    "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('40Gi')) < 0",
    "device.capacity['gpu.nvidia.com'].memory.compareTo(quantity('15000Mi')) >= 0",
]


@pytest.fixture(scope="module")
def reference() -> Iterator[subprocess.Popen[bytes]]:
    built = subprocess.run(
        ["bash", str(ROOT / "scripts/build-dra-reference.sh")], check=True, timeout=3600, capture_output=True
    )
    binary = built.stdout.decode().strip().splitlines()[-1]
    process = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        yield process
    finally:
        if process.stdin is not None:
            process.stdin.close()
        process.kill()
        process.wait(timeout=30)


# --- clusters: the slices, shared by many cases --------------------------------------------------------


@dataclass
class Cluster:
    key: str
    slices_json: list[dict[str, Any]]
    pools: tuple[Pool, ...]
    prepared: PreparedPools
    model: GpuModel
    devices: list[tuple[str, str, dict[str, Any]]]
    """(pool, slice name, device JSON) of every published device, for picking devices in use."""
    counters: dict[tuple[str, str], dict[str, str]]
    """(pool, counter set) -> counter -> value."""
    sent: bool = False


def random_layout(rng: random.Random, model: GpuModel) -> list[Placement]:
    used = 0
    layout = []
    for _ in range(rng.randint(0, 7)):
        profile = rng.choice(model.profiles)
        start = rng.choice(profile.starts)
        mask = profile.occupancy(start)
        if mask & used:
            continue
        used |= mask
        layout.append(Placement(start, profile))
    return layout


def node_slices(rng: random.Random, node: str, model: GpuModel, gpus: int, generation: int) -> list[dict[str, Any]]:
    if model is MIGBENCH_H100:
        return migbench_slices(node, gpus, generation=generation)
    if rng.random() < 0.75:
        return dynamic_mig_slices(node, model, gpus, generation=generation)
    layouts = [random_layout(rng, model) for _ in range(gpus)]
    return static_mig_slices(node, model, layouts, generation=generation, shuffle=rng)


def make_cluster(rng: random.Random, number: int) -> Cluster:
    model = rng.choice((*MODELS, MIGBENCH_H100))
    gpus = rng.choice([1, 1, 1, 2, 2, 3, 4, 8])
    slices = node_slices(rng, NODE, model, gpus, generation=1)
    if rng.random() < 0.1:  # an older generation still listed
        slices += node_slices(rng, NODE, model, rng.randint(1, 3), generation=0)
    if rng.random() < 0.3:  # another node: its counter slice is part of every node's pools
        other = node_slices(rng, "node2", rng.choice(MODELS), rng.randint(1, 2), generation=1)
        if rng.random() < 0.2:
            other.pop(rng.randrange(len(other)))
        slices += other
    if rng.random() < 0.1 and len(slices) > 1:  # incomplete
        slices.pop(rng.randrange(len(slices)))
    if rng.random() < 0.05:  # a newer generation being rolled out, seen on another node
        newer = json.loads(json.dumps(rng.choice(slices)))
        newer["spec"]["pool"]["generation"] = 2
        newer["spec"]["nodeName"] = "node3"
        newer["metadata"]["name"] += "-next"
        slices.append(newer)
    device_slices = [s for s in slices if s["spec"].get("devices")]
    if rng.random() < 0.05 and len(device_slices) >= 2:  # the same device name in two slices of a pool
        first, second = rng.sample(device_slices, 2)
        if first["spec"]["pool"] == second["spec"]["pool"]:
            second["spec"]["devices"][0]["name"] = first["spec"]["devices"][0]["name"]
    if rng.random() < 0.05 and device_slices:  # a counter no set declares
        for device in rng.choice(device_slices)["spec"]["devices"]:
            for consumption in device.get("consumesCounters", []):
                consumption["counters"]["undeclared"] = {"value": "1"}
                break
    if rng.random() < 0.15:  # taints
        for piece in device_slices:
            for device in piece["spec"]["devices"]:
                if rng.random() < 0.2:
                    effect = rng.choice(["NoSchedule", "NoExecute", "None"])
                    device["taints"] = [{"key": rng.choice(["k1", "k2"]), "value": "v1", "effect": effect}]
    if rng.random() < 0.08:  # another driver's pool of the same name (no counters), and a pool waiting on binding
        copy = json.loads(json.dumps(rng.choice(device_slices))) if device_slices else None
        if copy is not None and copy["spec"]["nodeName"] == NODE:
            copy["spec"]["driver"] = "other.example.com"
            copy["spec"]["pool"] = {"name": NODE, "generation": 1, "resourceSliceCount": 1}
            for device in copy["spec"]["devices"]:
                device.pop("consumesCounters", None)
            slices.append(copy)
    if rng.random() < 0.05:
        bound = dynamic_mig_slices(NODE, model, 1)
        for piece in bound:
            piece["metadata"]["name"] = "bound-" + piece["metadata"]["name"]
            piece["spec"]["pool"]["name"] = "a-bound-pool"
            for device in piece["spec"].get("devices", []):
                device["bindingConditions"] = ["attached"]
                device["bindingFailureConditions"] = ["failed"]
        slices += bound
    rng.shuffle(slices)
    records = [parse_resource_slice(s) for s in slices]
    pools = pools_of(records, NODE)
    devices = [
        (s["spec"]["pool"]["name"], s["metadata"]["name"], d)
        for s in slices
        if s["spec"]["driver"] == DRIVER
        for d in s["spec"].get("devices", [])
    ]
    counters = {
        (s["spec"]["pool"]["name"], c["name"]): {k: v["value"] for k, v in c["counters"].items()}
        for s in slices
        for c in s["spec"].get("sharedCounters", [])
    }
    return Cluster(f"cluster-{number}", slices, pools, prepare(pools), model, devices, counters)


# --- cases ----------------------------------------------------------------------------------------------


def in_use(rng: random.Random, cluster: Cluster) -> list[tuple[str, str, str]]:
    """Devices allocated before: mostly a consistent set (counters respected), sometimes any."""
    if not cluster.devices or rng.random() < 0.2:
        return []
    wanted = rng.randint(1, max(1, len(cluster.devices) // 8))
    anything = rng.random() < 0.15
    taken: list[tuple[str, str, str]] = []
    used: dict[tuple[str, str, str], float] = {}
    for pool, _, device in rng.sample(cluster.devices, min(wanted * 3, len(cluster.devices))):
        if len(taken) >= wanted:
            break
        key = (DRIVER, pool, device["name"])
        if key in taken:
            continue
        if not anything:
            amounts: list[tuple[tuple[str, str, str], float]] = [
                ((pool, str(c["counterSet"]), str(name)), _number(str(v["value"])))
                for c in device.get("consumesCounters", [])
                for name, v in c["counters"].items()
            ]
            limits = cluster.counters
            if any(used.get(k, 0.0) + a > _number(limits.get((k[0], k[1]), {}).get(k[2], "0")) for k, a in amounts):
                continue
            for k, a in amounts:
                used[k] = used.get(k, 0.0) + a
        taken.append(key)
    if rng.random() < 0.1:
        taken.append((DRIVER, NODE, "no-such-device"))
    return taken


def _number(text: str) -> float:
    for suffix, factor in (("Ki", 2**10), ("Mi", 2**20), ("Gi", 2**30)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def selectors(rng: random.Random, cluster: Cluster, capacity: bool, device_class: str) -> list[dict[str, Any]]:
    """A profile or capacity selector for MIG devices (on a full GPU the profile is missing: a CEL error, which
    a few cases still get), the product for any."""
    found = []
    roll = rng.random()
    if device_class != "mig.nvidia.com" and rng.random() < 0.9:
        roll = 0.8
    if roll < 0.6:
        profile = rng.choice(cluster.model.profiles).name if rng.random() < 0.97 else "9g.99gb"
        found.append(f"device.attributes['gpu.nvidia.com'].profile == '{profile}'")
    elif roll < 0.8 and capacity:
        found.append(rng.choice(CAPACITY_SELECTORS))
    elif roll < 0.85:
        found.append("device.attributes['gpu.nvidia.com'].productName.startsWith('NVIDIA')")
    return [{"cel": {"expression": e}} for e in found]


def tolerations(rng: random.Random) -> list[dict[str, Any]]:
    roll = rng.random()
    if roll < 0.8:
        return []
    if roll < 0.9:
        return [{"key": "k1", "operator": "Equal", "value": "v1"}]
    if roll < 0.95:
        return [{"operator": "Exists"}]
    return [{"key": "k2", "operator": "Exists", "effect": "NoExecute"}]


def subrequest(rng: random.Random, cluster: Cluster, capacity: bool, *, exact: bool) -> dict[str, Any]:
    roll = rng.random()
    device_class = "mig.nvidia.com" if roll < 0.85 else "gpu.nvidia.com" if roll < 0.95 else "any.nvidia.com"
    if rng.random() < 0.01:
        device_class = "no-such-class"
    sub: dict[str, Any] = {"deviceClassName": device_class}
    chosen = selectors(rng, cluster, capacity, device_class)
    if chosen:
        sub["selectors"] = chosen
    if rng.random() < 0.05:
        sub["allocationMode"] = "All"
    else:
        sub["allocationMode"] = "ExactCount"
        roll = rng.random()
        many = rng.randint(3, 4) if roll < 0.99 else rng.randint(20, 33)
        sub["count"] = 1 if roll < 0.75 else 2 if roll < 0.93 else many
    if exact and rng.random() < 0.05:
        sub["adminAccess"] = True
    found = tolerations(rng)
    if found:
        sub["tolerations"] = found
    return sub


def claim(rng: random.Random, cluster: Cluster, number: int, capacity: bool) -> dict[str, Any]:
    requests: list[dict[str, Any]] = []
    names = []
    for r in range(rng.choice([1, 1, 1, 1, 2, 2, 3])):
        name = f"r{r}"
        names.append(name)
        if rng.random() < 0.15:
            subs = [subrequest(rng, cluster, capacity, exact=False) for _ in range(rng.randint(2, 3))]
            for s, sub in enumerate(subs):
                sub["name"] = f"s{s}"
            names.extend(f"{name}/s{s}" for s in range(len(subs)))
            requests.append({"name": name, "firstAvailable": subs})
        else:
            requests.append({"name": name, "exactly": subrequest(rng, cluster, capacity, exact=True)})
    constraints: list[dict[str, Any]] = []
    if rng.random() < 0.35:
        chosen = [] if rng.random() < 0.5 else rng.sample(names, rng.randint(1, len(names)))
        roll = rng.random()
        if roll < 0.75:
            constraints.append({"requests": chosen, "matchAttribute": PARENT})
        elif roll < 0.9:
            constraints.append({"requests": chosen, "distinctAttribute": PARENT})
        else:
            constraints.append({"requests": chosen, "matchAttribute": "gpu.nvidia.com/productName"})
    devices: dict[str, Any] = {"requests": requests}
    if constraints:
        devices["constraints"] = constraints
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": f"claim-{number}", "namespace": "default", "uid": f"uid-{number}"},
        "spec": {"devices": devices},
    }


@dataclass
class Case:
    number: int
    cluster: Cluster
    claims: list[dict[str, Any]]
    in_use: list[tuple[str, str, str]]

    def line(self) -> bytes:
        case: dict[str, Any] = {
            "id": str(self.number),
            "node": NODE,
            "slicesKey": self.cluster.key,
            "claims": self.claims,
            "allocated": self.in_use,
            "timeoutMs": GO_TIMEOUT_MS,
        }
        if not self.cluster.sent:
            case["slices"] = self.cluster.slices_json
            self.cluster.sent = True
        text = json.dumps(case)
        return (text[:-1] + ', "classes": ' + CLASS_JSON + "}\n").encode()


def cases(capacity: bool) -> Iterator[Case]:
    rng = random.Random(SEED)
    clusters = [make_cluster(rng, n) for n in range(CLUSTERS)]
    for number in range(CASES):
        cluster = rng.choice(clusters)
        claims = [claim(rng, cluster, c, capacity) for c in range(rng.choice([1, 1, 1, 2, 2, 3]))]
        yield Case(number, cluster, claims, in_use(rng, cluster))


# --- comparison -----------------------------------------------------------------------------------------


def model_outcome(case: Case, fresh: bool) -> Outcome:
    claims = [parse_resource_claim(c).spec for c in case.claims]
    pools = case.cluster.pools if fresh else case.cluster.prepared
    return allocate(claims, pools, set(case.in_use), CLASS_RECORDS, max_steps=MAX_STEPS)


def as_go(outcome: Outcome) -> dict[str, Any]:
    """The model's outcome in the reference's JSON form (an error's text is not compared), with its steps."""
    return as_go_result(outcome) | {"steps": outcome.steps}


def as_go_result(outcome: Outcome) -> dict[str, Any]:
    if outcome.result is Result.ALLOCATED:
        claims = [
            [
                {"request": r.request, "driver": r.driver, "pool": r.pool, "device": r.device}
                | ({"adminAccess": True} if r.admin_access else {})
                for r in results
            ]
            for results in outcome.claims
        ]
        return {"result": "allocated", "claims": claims}
    if outcome.result is Result.UNSCHEDULABLE:
        return {"result": "unschedulable", "reason": outcome.reason}
    if outcome.scheduler_error:
        return {"result": "error"}
    return {"result": "model cannot evaluate", "reason": outcome.reason}


TIMED_OUT = {"result": "reference timed out"}
TOO_LONG = {
    "result": "model cannot evaluate",
    "reason": f"the search took more than {MAX_STEPS} steps",
    "steps": MAX_STEPS + 1,
}


def normalised(answer: dict[str, Any]) -> dict[str, Any]:
    """Go's answer as the model must give it: the same, or the model's refusal when the search is too long."""
    answer = {k: v for k, v in answer.items() if k != "id"}
    if answer["steps"] > MAX_STEPS:
        return TOO_LONG
    if answer["result"] == "timeout":
        return TIMED_OUT
    if answer["result"] == "allocated":
        answer["claims"] = answer.get("claims") or []
    if answer["result"] == "error":
        answer.pop("reason", None)
    return answer


def run_against_reference(process: subprocess.Popen[bytes], capacity: bool) -> tuple[int, list[str], dict[str, int]]:
    assert process.stdin is not None and process.stdout is not None
    differences: list[str] = []
    tally: dict[str, int] = {}
    checked = 0
    stream = cases(capacity)
    while True:
        batch = [c for _, c in zip(range(BATCH), stream, strict=False)]
        if not batch:
            break
        lines = [c.line() for c in batch]

        def write(lines: list[bytes] = lines) -> None:
            assert process.stdin is not None
            for line in lines:
                process.stdin.write(line)
            process.stdin.flush()

        writer = threading.Thread(target=write)
        writer.start()
        for case in batch:
            raw = process.stdout.readline()
            assert raw, "the reference stopped"
            go = json.loads(raw)
            assert go["id"] == str(case.number) and go["result"] != "invalid", go
            checked += 1
            model = as_go(model_outcome(case, fresh=case.number % 10 == 0))
            expected = normalised(go)
            tally[expected["result"]] = tally.get(expected["result"], 0) + 1
            if expected is TIMED_OUT and model["steps"] >= go["steps"]:
                continue
            if model != expected:
                differences.append(
                    f"case {case.number} ({case.cluster.key}):\n  claims {json.dumps(case.claims)}\n"
                    f"  in use {case.in_use}\n  go     {json.dumps(go)}\n  model  {json.dumps(model)}"
                )
        writer.join()
    return checked, differences, tally


def test_model_equals_the_real_allocator(reference: subprocess.Popen[bytes]) -> None:
    checked, differences, tally = run_against_reference(reference, capacity=True)
    assert checked == CASES
    assert not differences, f"{len(differences)} of {checked} differ; first:\n" + "\n".join(differences[:5])
    # The cases reach every kind of answer, not only the easy one.
    assert tally.get("allocated", 0) > CASES // 5
    assert tally.get("unschedulable", 0) > CASES // 20
    assert tally.get("error", 0) > CASES // 200
