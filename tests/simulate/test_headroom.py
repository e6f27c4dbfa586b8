"""Warm headroom in the churn simulator: placeholders placed, preempted at once, replaced by the autoscaler."""

from __future__ import annotations

import pytest

from extender.cli import main
from extender.model.catalog import model_named
from extender.model.headroom import HeadroomConfig
from extender.simulate.baselines import policies_named
from extender.simulate.engine import Mode, PolicyResult, SimConfig, World
from extender.simulate.headroom import HeadroomSim
from extender.simulate.run import run
from extender.simulate.workload import NodeSpec, make_pod, synthetic_pods

H100 = model_named("H100-80GB")
# One GPU's compute, whatever the rate: the largest profile is the likeliest-needed first (equal chances).
ONE_GPU = HeadroomSim(HeadroomConfig(lead_time_s=420.0, max_gpus=1.0, max_fleet_share=1.0, size=1000.0))


def two_whole_gpu_pods(world: World, policies: str, headroom: HeadroomSim | None) -> list[PolicyResult]:
    """A 2-GPU node; a 7g pod holds one GPU from t=0, a second 7g pod arrives at t=1000."""
    config = SimConfig(model=H100, world=world, mode=Mode.CHURN, seed=1, new_node_gpus=1, headroom=headroom)
    pods = [
        make_pod(H100, "holds-a-gpu", "7g", 1, 0.0, 100_000.0),
        make_pod(H100, "arrives-later", "7g", 1, 1000.0, 1_000.0),
    ]
    return run(config, policies_named(policies), [NodeSpec("n0", 2)], pods, {}).results


@pytest.mark.parametrize("world", [World.DYNAMIC_IDEAL, World.DYNAMIC_FIRST_FIT])
@pytest.mark.parametrize("policy", ["mig-extender", "spread", "pack"])
def test_a_pod_takes_the_placeholder_at_once_and_the_autoscaler_replaces_it(world: World, policy: str) -> None:
    (without,) = two_whole_gpu_pods(world, policy, None)
    (with_headroom,) = two_whole_gpu_pods(world, policy, ONE_GPU)
    # without: the second GPU stays free, so the later pod runs at once; the headroom took it meanwhile
    assert without.mean_wait_s == 0
    assert with_headroom.mean_wait_s == 0
    figures = with_headroom.churn_figures
    assert figures["headroom_preemptions"] == 1
    assert figures["headroom_pods_took_placeholder"] == 1
    assert figures["headroom_mean_wait_with_placeholder_s"] == 0
    # the evicted placeholder went pending and got a node of its own (120 s check + 300 s start-up)
    assert (without.nodes_added, with_headroom.nodes_added) == (0, 1)
    assert with_headroom.pods_placed == 2  # placeholders are not counted as pods
    assert figures["headroom"] == "whole-gpus"  # dynamic worlds: whole GPUs for every policy, ours included


def test_without_room_the_placeholder_saves_the_wait_for_a_node() -> None:
    """One GPU only: the later pod waits for a new node without headroom; with it, the first pod's node
    started for the placeholder and the later pod preempts it there."""
    config = SimConfig(model=H100, world=World.DYNAMIC_IDEAL, mode=Mode.CHURN, seed=1, new_node_gpus=1)
    pods = [
        make_pod(H100, "holds-the-gpu", "7g", 1, 0.0, 100_000.0),
        make_pod(H100, "arrives-later", "7g", 1, 1000.0, 1_000.0),
    ]
    nodes = [NodeSpec("n0", 1)]
    (without,) = run(config, policies_named("mig-extender"), nodes, pods, {}).results
    config_on = SimConfig(
        model=H100, world=World.DYNAMIC_IDEAL, mode=Mode.CHURN, seed=1, new_node_gpus=1, headroom=ONE_GPU
    )
    (with_headroom,) = run(config_on, policies_named("mig-extender"), nodes, pods, {}).results
    assert without.mean_wait_s == pytest.approx(420 / 2)  # the later pod: 120 s check + 300 s start-up
    assert with_headroom.mean_wait_s == 0
    # the placeholder's node (started at t=120) and its replacement after the preemption
    assert with_headroom.nodes_added == 2
    assert with_headroom.node_hours is not None and without.node_hours is not None
    assert with_headroom.node_hours > without.node_hours


def test_static_baselines_hold_one_gpu_of_the_start_layout() -> None:
    config = SimConfig(model=H100, world=World.STATIC, mode=Mode.CHURN, seed=1, new_node_gpus=2, headroom=ONE_GPU)
    pods = synthetic_pods(H100, "inference", 200, 1, mean_interarrival_s=20, mean_duration_s=1800)
    output = run(config, policies_named("spread,mig-extender"), [NodeSpec(f"n{i}", 2) for i in range(3)], pods, {})
    for result in output.results:
        assert result.allocated_slices == 0  # every real pod left; placeholders never count
        assert result.pods_placed + result.pods_failed == 200
        assert result.churn_figures["headroom_held_gpu_hours"] > 0
        assert result.churn_figures["headroom_largest_gpus"] <= 1.0


def test_headroom_is_bounded_by_the_fleet_share() -> None:
    headroom = HeadroomSim(HeadroomConfig(lead_time_s=420.0, max_gpus=100.0, max_fleet_share=0.25, size=1000.0))
    # A fixed fleet: with an autoscaler the nodes started for pending placeholders count in the fleet too.
    config = SimConfig(
        model=H100, world=World.DYNAMIC_IDEAL, mode=Mode.CHURN, seed=1, headroom=headroom, autoscale=False
    )
    pods = synthetic_pods(H100, "inference", 100, 1)
    (result,) = run(config, policies_named("mig-extender"), [NodeSpec(f"n{i}", 8) for i in range(2)], pods, {}).results
    assert 0 < result.churn_figures["headroom_largest_gpus"] <= 0.25 * 16


def test_the_cli_refuses_headroom_outside_churn(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--synthetic", "inference", "--synthetic-nodes", "2", "--headroom", "on"]) == 2
    assert "--headroom on needs --mode churn" in capsys.readouterr().err


def test_the_cli_refuses_a_coverage_of_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--synthetic", "inference", "--mode", "churn", "--headroom-coverage", "nope"])
    assert "must be a share" in capsys.readouterr().err
    args = ["simulate", "--synthetic", "inference", "--mode", "churn", "--headroom", "on", "--headroom-coverage", "1"]
    assert main(args) == 2
    assert "headroom coverage: 1.0 is not strictly between 0 and 1" in capsys.readouterr().err


def test_headroom_with_consolidation_of_underutilized_nodes_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["simulate", "--synthetic", "inference", "--mode", "churn", "--headroom", "on"]
    assert main([*args, "--consolidation", "when-underutilized"]) == 2
    assert "when-empty only" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("world", "shaped", "kind"),
    [
        (World.STATIC, False, "mig-shaped"),  # a fixed layout: a pod takes an instance of its own profile
        (World.DYNAMIC_IDEAL, False, "whole-gpus"),
        (World.DYNAMIC_IDEAL, True, "mig-shaped"),
    ],
)
def test_ours_keeps_mig_shaped_placeholders_where_layouts_are_fixed(world: World, shaped: bool, kind: str) -> None:
    planner = HeadroomConfig(lead_time_s=420.0, max_gpus=1.0, max_fleet_share=1.0, size=1000.0)
    config = SimConfig(
        model=H100, world=world, mode=Mode.CHURN, seed=1, new_node_gpus=2, headroom=HeadroomSim(planner, shaped=shaped)
    )
    pods = synthetic_pods(H100, "inference", 50, 1, mean_interarrival_s=20, mean_duration_s=1800)
    (ours,) = run(config, policies_named("mig-extender"), [NodeSpec("n0", 2)], pods, {}).results
    assert ours.churn_figures["headroom"] == kind
