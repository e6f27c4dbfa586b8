"""The dynamic first-fit world on the DRA model, and the catalog's first-fit plan (``fit.py``) checked equal to it.

On random DynamicMIG node states and random demands, three answers are compared: ``fit(node, demand,
Allocator.FIRST_FIT)`` on catalog GPU states; ``policy.evaluate`` on the same node published as NVIDIA's driver
publishes it, the demand asked through a ResourceClaim (the simulator's first-fit world, ``fit_claims``); and, on a
sample, kube-scheduler's own allocator (tests/dra_reference, k8s.io/dynamic-resource-allocation v0.36.3). The
simulator then gives the same figures in its DRA world as with the catalog's first-fit plan.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import cache
from pathlib import Path

import pytest

from extender.model.catalog import MODELS, GpuModel, Profile, model_named
from extender.model.demand import PodDemand
from extender.model.dra.driver import DRIVER, dynamic_mig_slices, mig_device_name
from extender.model.dra.inventory import inventory
from extender.model.dra.pools import pools_of
from extender.model.fit import Allocator, FitResult, Verdict, fit
from extender.model.layouts import maximal_layouts
from extender.model.placement import Placement, PlacementError, occupancy_of
from extender.model.policy import PolicyConfig, evaluate
from extender.model.state import Fidelity, GpuState, Instance, NodeState
from extender.simulate.baselines import policies_named
from extender.simulate.dra import DraFleet, claim_template_json, device_class_json
from extender.simulate.engine import Mode, SimConfig, Simulation, World
from extender.simulate.workload import NodeSpec, SimPod, make_pod, synthetic_pods
from extender.view.dra_objects import parse_resource_slice

H100 = model_named("H100-80GB")
CONFIG = PolicyConfig()
ROOT = Path(__file__).resolve().parents[2]


def media(profile: Profile) -> bool:
    return "+me" in profile.name


def profiles_of(model: GpuModel) -> tuple[Profile, ...]:
    """The profiles the comparison uses. The catalog lets an A30 hold 1g.6gb+me beside 2g.12gb+me (and an RTX PRO
    6000 +me beside +me.all), but each takes the GPU's one OFA engine, which NVIDIA's driver publishes as a
    counter: the allocator refuses the second (and, its counters overcommitted, the whole pool). Where a model has
    more than one media-extension profile, they are left out."""
    if sum(map(media, model.profiles)) > 1:
        return tuple(p for p in model.profiles if not media(p))
    return model.profiles


@dataclass(frozen=True)
class Case:
    model: GpuModel
    layouts: tuple[tuple[Placement, ...], ...]
    """Per GPU, the instances pods hold."""
    demand: PodDemand

    def catalog_node(self) -> NodeState:
        gpus = (
            GpuState(i, self.model, tuple(Instance(p, True) for p in held), dynamic=True)
            for i, held in enumerate(self.layouts)
        )
        return NodeState("n", tuple(gpus))

    def in_use(self, pool: str) -> frozenset[tuple[str, str, str]]:
        return frozenset((DRIVER, pool, mig_device_name(i, p)) for i, held in enumerate(self.layouts) for p in held)


def random_layout(rng: random.Random, model: GpuModel, profiles: Sequence[Profile]) -> tuple[Placement, ...]:
    placed: list[Placement] = []
    for _ in range(rng.randrange(6)):
        profile = rng.choice(profiles)
        for start in rng.sample(profile.starts, len(profile.starts)):
            try:
                occupancy_of(model, (*placed, Placement(start, profile)))
            except PlacementError:
                continue
            placed.append(Placement(start, profile))
            break
    return tuple(placed)


def random_cases(model: GpuModel, seed: int, count: int, most_profiles: int) -> list[Case]:
    rng = random.Random(seed)
    profiles = profiles_of(model)
    cases = []
    for _ in range(count):
        gpus = rng.choice([1, 1, 2, 3, 4, 8])
        layouts = tuple(random_layout(rng, model, profiles) for _ in range(gpus))
        wanted = rng.sample(profiles, rng.randint(1, most_profiles))
        counts = [1, 1, 1, 2, 3, 4, 7] if most_profiles == 1 else [1, 1, 2]
        demand = PodDemand(mig=tuple((p.name, rng.choice(counts)) for p in wanted))
        cases.append(Case(model, layouts, demand))
    return cases


@cache
def fleet(model: GpuModel) -> DraFleet:
    return DraFleet(model)


def dra_answer(case: Case) -> FitResult:
    dra = fleet(case.model)
    gpus = len(case.layouts)
    node = dra.node("n", gpus, case.in_use(dra.inventory(gpus).node.name))
    return evaluate(node, dra.demand(case.demand), CONFIG)


def plan(result: FitResult) -> list[tuple[int, Placement]]:
    return [(p.gpu_index, p.placement) for p in result.plan]


def test_the_dra_world_publishes_nodes_and_asks_claims_as_the_extender_reads_them() -> None:
    dra = DraFleet(H100)
    node = dra.node("node-1", 8)
    assert node.fidelity is Fidelity.DRA and node.devices is not None and node.devices.warnings == ()
    assert [(g.index, g.dynamic, g.instances) for g in node.gpus] == [(i, True, ()) for i in range(8)]
    asked = dra.demand(PodDemand(mig=(("3g.40gb", 2),)))
    assert asked.mig == () and asked.claims is not None
    assert asked.claims.text == "claim mig (2x 3g.40gb)"
    assert asked.claims.profiles == PodDemand(mig=(("3g.40gb", 2),))
    assert dra.demand(PodDemand(mig=(("3g.40gb", 2),))) is asked  # one demand object: fits are cached by it
    found = evaluate(node, asked, CONFIG)
    assert plan(found) == [(0, Placement(0, H100.profile("3g.40gb"))), (0, Placement(4, H100.profile("3g.40gb")))]
    taken, held = dra.taken(node, found)
    assert [k[2] for k in held] == ["gpu-0-mig-3g40gb-9-0", "gpu-0-mig-3g40gb-9-4"]
    assert taken.name == "node-1" and taken.used_compute == 6
    # Nodes with the same devices in use share one state (one evaluation, one score) and come back to it.
    other, _ = dra.taken(dra.node("node-2", 8), found)
    assert other.state_id == taken.state_id != node.state_id
    assert dra.released(taken, held).state_id == node.state_id


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_the_published_counters_admit_every_layout_the_catalog_allows(model: GpuModel) -> None:
    """Where the catalog lacks a profile's memory or multiprocessors, ``driver.py`` publishes stand-ins; the full
    GPU's counters still cover every layout (a B200's seven 1g.23gb take 126 multiprocessors, not 112)."""
    counters, devices = parse_resource_slice(dynamic_mig_slices("n", model, 1)[0]), {}
    for piece in dynamic_mig_slices("n", model, 1)[1:]:
        devices.update({d.name: d for d in parse_resource_slice(piece).devices})
    (available,) = counters.shared_counters
    media_limit = 1 if sum(map(media, model.profiles)) > 1 else None  # see profiles_of
    for layout in maximal_layouts(model, model.profiles):
        if media_limit is not None and sum(media(p.profile) for p in layout) > media_limit:
            continue
        taken: dict[str, Fraction] = {}
        for placement in layout:
            (consumption,) = devices[mig_device_name(0, placement)].consumes
            for name, amount in consumption.counters:
                taken[name] = taken.get(name, Fraction(0)) + amount
        assert all(taken.get(name, 0) <= value for name, value in available.counters), layout


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
@pytest.mark.parametrize("most_profiles", [1, 3], ids=["one profile", "up to three profiles"])
def test_the_catalog_first_fit_plan_is_the_dra_allocators(model: GpuModel, most_profiles: int) -> None:
    """Same verdict and same instances, in the same order, wherever the allocator model answers (it gives up on a
    search of more than 200,000 steps, as a few many-profile demands on 8 busy GPUs take)."""
    cases = random_cases(model, seed=11, count=120, most_profiles=most_profiles)
    compared = 0
    for case in cases:
        expected = dra_answer(case)
        if expected.verdict is Verdict.NOT_EVALUATED:
            assert most_profiles > 1 and "steps" in expected.reason
            continue
        found = fit(case.catalog_node(), case.demand, Allocator.FIRST_FIT)
        assert (found.verdict, plan(found)) == (expected.verdict, plan(expected)), case
        compared += 1
    assert compared >= len(cases) * 0.97
    assert sum(dra_answer(c).fits_now for c in cases) >= len(cases) // 4  # the cases are not mostly misfits


def test_a_node_published_under_its_own_name_among_others_gets_the_templates_devices() -> None:
    """The world's nodes share a template pool: sound because a node's pools in a real cluster (its own, and the
    other nodes' counter slices) give the same devices as its own pool alone, apart from the pool's name."""
    names = ("gpu-node-a", "gpu-node-b", "gpu-node-c")
    slices = [parse_resource_slice(s) for name in names for s in dynamic_mig_slices(name, H100, 4)]
    for case in random_cases(H100, seed=5, count=60, most_profiles=2):
        if len(case.layouts) != 4:
            continue
        expected = dra_answer(case)
        if expected.verdict is Verdict.NOT_EVALUATED:
            continue
        node = inventory("gpu-node-b", pools_of(slices, "gpu-node-b"), case.in_use("gpu-node-b")).node
        found = evaluate(node, fleet(H100).demand(case.demand), CONFIG)
        assert (found.verdict, plan(found)) == (expected.verdict, plan(expected)), case
        assert [[k[2] for k in claim] for claim in found.devices] == [[k[2] for k in c] for c in expected.devices]
        assert {k[1] for claim in found.devices for k in claim} <= {"gpu-node-b"}


# --- kube-scheduler's own allocator ----------------------------------------------------------------------------


@cache
def reference_binary() -> str:
    built = Path(os.environ.get("MIG_EXTENDER_CACHE", Path.home() / ".cache/mig-extender"))
    if shutil.which("go") is None and not (built / "bin/dra-reference-v0.36.3/dra-reference").exists():
        pytest.skip("needs Go to build tests/dra_reference (scripts/build-dra-reference.sh)")
    done = subprocess.run(
        ["bash", str(ROOT / "scripts/build-dra-reference.sh")], check=False, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def reference_devices(cases: Sequence[Case]) -> list[list[str] | None]:
    """Per case, the devices kube-scheduler's allocator gives the claim on the node, or None (unschedulable)."""
    lines = []
    for number, case in enumerate(cases):
        node = f"ref-{len(case.layouts)}"
        spec = claim_template_json("mig", case.demand)["spec"]["spec"]
        claim = {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": f"claim-{number}", "namespace": "sim", "uid": f"uid-{number}"},
            "spec": spec,
        }
        line = {
            "id": str(number),
            "node": node,
            "slicesKey": f"{case.model.name}/{node}",
            "claims": [claim],
            "classes": [device_class_json()],
            "allocated": sorted(case.in_use(node)),
        }
        if not any(c.model is case.model and len(c.layouts) == len(case.layouts) for c in cases[:number]):
            line["slices"] = dynamic_mig_slices(node, case.model, len(case.layouts))
        lines.append(json.dumps(line))
    done = subprocess.run(
        [reference_binary()], input="\n".join(lines), capture_output=True, text=True, timeout=600, check=True
    )
    answers = []
    for text in done.stdout.splitlines():
        answer = json.loads(text)
        assert answer["result"] in ("allocated", "unschedulable"), answer
        answers.append([d["device"] for d in answer["claims"][0]] if answer["result"] == "allocated" else None)
    return answers


@pytest.mark.parametrize("model", [H100, model_named("A100-40GB"), model_named("B200")], ids=lambda m: m.name)
def test_kube_schedulers_allocator_takes_the_same_devices(model: GpuModel) -> None:
    cases = [c for n in (1, 3) for c in random_cases(model, seed=23, count=40, most_profiles=n)]
    cases = [c for c in cases if dra_answer(c).verdict is not Verdict.NOT_EVALUATED]
    for case, devices in zip(cases, reference_devices(cases), strict=True):
        expected = dra_answer(case)
        assert expected.fits_now == (devices is not None), case
        found = fit(case.catalog_node(), case.demand, Allocator.FIRST_FIT)
        names = [mig_device_name(p.gpu_index, p.placement) for p in found.plan]
        assert (found.fits_now, names) == (devices is not None, devices or []), case
        assert [k[2] for claim in expected.devices for k in claim] == (devices or []), case


# --- the simulator ----------------------------------------------------------------------------------------------


def catalog_first_fit(config: SimConfig, nodes: Sequence[NodeSpec], policy: str) -> Simulation:
    """The first-fit world as it was before it ran on the DRA model: catalog GPU states, ``fit.py``'s plan."""
    sim = Simulation(replace(config, world=World.DYNAMIC_IDEAL), policies_named(policy)[0], nodes)
    sim.policy_config = PolicyConfig(dynamic_allocator=Allocator.FIRST_FIT)
    return sim


def pods_with_counts(count: int, seed: int) -> list[SimPod]:
    """Synthetic pods, every fifth asking two or three instances (one claim, one request of that count)."""
    rng = random.Random(seed)
    pods = synthetic_pods(H100, "uniform", count, seed)
    return [
        make_pod(H100, p.name, p.shape, rng.choice([2, 3]), p.arrival_s, p.duration_s) if n % 5 == 0 else p
        for n, p in enumerate(pods)
    ]


@pytest.mark.parametrize("mode", [Mode.FILL, Mode.CHURN])
@pytest.mark.parametrize("policy", ["mig-extender", "best-fit", "random"])
def test_the_dra_world_gives_the_figures_of_the_catalog_first_fit(mode: Mode, policy: str) -> None:
    config = SimConfig(model=H100, world=World.DYNAMIC_FIRST_FIT, mode=mode, seed=4, scale_down_after_s=300.0)
    nodes = [NodeSpec(f"n{i}", 4) for i in range(5)]
    pods = pods_with_counts(200 if mode is Mode.FILL else 300, seed=4)
    dra = Simulation(config, policies_named(policy)[0], nodes)
    catalog = catalog_first_fit(config, nodes, policy)
    if mode is Mode.FILL:
        found, expected = dra.run_fill(pods), catalog.run_fill(pods)
    else:
        found, expected = dra.run_churn(pods), catalog.run_churn(pods)
    figures = found.figures()
    assert all(state.devices is not None for state in dra.nodes.values())
    assert figures["pods_placed"] > 30
    if mode is Mode.FILL:
        assert figures["pods_failed"] > 0  # filled up: the last pods meet full and fragmented nodes
    else:
        assert figures["nodes_added"] > 0 and figures["nodes_removed"] > 0
    assert {k: v for k, v in figures.items() if k != "seconds"} == {
        k: v for k, v in expected.figures().items() if k != "seconds"
    }
    assert found.curve == expected.curve and found.waits == expected.waits
