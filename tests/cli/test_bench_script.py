"""scripts/bench: its options (demands from the inference mix, sampled node lists, binds) and a small run."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from extender.model.demand import pod_demand
from extender.view.snapshot import load_snapshot
from extender.view.store import ClusterView

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bench"


def load_bench() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("bench_script", str(SCRIPT))
    spec = importlib.util.spec_from_loader("bench_script", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


bench = load_bench()


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], check=False, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--demands", "0"], "--demands"),
        (["--demands", "many"], "--demands"),
        (["--demands", "100000"], "--demands 100000"),
        (["--sample-nodes", "0-0.5"], "--sample-nodes"),
        (["--sample-nodes", "0.5-0.2"], "--sample-nodes"),
        (["--sample-nodes", "0.1-1.5"], "--sample-nodes"),
        (["--sample-nodes", "half"], "--sample-nodes"),
        (["--sample-nodes", "0.1-0.2-0.3"], "--sample-nodes"),
        (["--binds", "-1"], "--binds"),
        (["--binds", "nan"], "--binds"),
        (["--binds", "inf"], "--binds"),
        (["--scrape-every", "0"], "--scrape-every"),
        (["--nodes", "0"], "--nodes"),
        (["--requests", "1"], "--requests"),
        (["--concurrency", "0"], "--concurrency"),
        (["--dra", "--binds", "5"], "--binds 5 with --dra"),
        (["--dra", "--dra-extended", "1.5"], "--dra-extended"),
        (["--dra", "--demands", "28"], "--demands 28"),
    ],
)
def test_a_bad_option_is_one_line_naming_it_and_exit_2(
    args: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        bench.parse_args(args)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert named in err


def test_the_command_line_gives_the_same_one_line_error() -> None:
    result = run("--sample-nodes", "0.9-0.1")
    assert result.returncode == 2
    assert (
        result.stderr
        == "bench: argument --sample-nodes: '0.9-0.1': shares must satisfy 0 < LO <= HI <= 1 (see --help)\n"
    )


@pytest.mark.parametrize(
    ("text", "shares"),
    [("0.1-0.5", (0.1, 0.5)), ("0.3", (0.3, 0.3)), ("1", (1.0, 1.0)), ("0.25-1", (0.25, 1.0))],
)
def test_share_range_reads_lo_hi_or_one_share(text: str, shares: tuple[float, float]) -> None:
    assert bench.share_range(text) == shares


def test_demands_are_distinct_reproducible_and_from_the_inference_mix() -> None:
    demands = bench.draw_demands(20, seed=1)
    assert len({tuple(sorted(d.items())) for d in demands}) == 20
    assert demands == bench.draw_demands(20, seed=1) != bench.draw_demands(20, seed=2)
    universe = set(bench.demand_universe())
    for demand in demands:
        assert tuple(sorted(demand.items())) in universe
        assert sum(demand.values()) in (1, 2)
        assert all(r.startswith("nvidia.com/mig-") for r in demand)


def test_every_demand_of_the_universe_can_be_drawn() -> None:
    everything = bench.draw_demands(len(bench.demand_universe()), seed=3)
    assert sorted(tuple(sorted(d.items())) for d in everything) == bench.demand_universe()


def test_sampled_node_lists_keep_node_order_within_the_share() -> None:
    rng = random.Random(1)
    sizes: Counter[int] = Counter()
    for _ in range(200):
        chosen = bench.sampled(rng, 1000, (0.1, 0.5))
        assert chosen == sorted(set(chosen))
        assert 100 <= len(chosen) <= 500
        sizes[len(chosen) // 100] += 1
    assert len(sizes) >= 4, "the shares spread over the range"
    assert bench.sampled(rng, 7, None) == list(range(7))


def test_a_small_snapshot_run_reports_its_figures_and_options(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = run(
        "--nodes", "12", "--requests", "6", "--no-node-list", "--binds", "0",
        "--demands", "5", "--sample-nodes", "0.3-0.6", "--json", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())
    for key in ("p99_ms", "pairs_per_s", "floor_ratio", "rss_mb"):
        assert figures[key] > 0, key
    assert figures["demands"] == 5 and len(figures["demand_set"]) == 5
    assert figures["sample_nodes"] == "0.3-0.6"
    assert figures["binds_per_s"] == 0 and figures["scrape_every_s"] is None
    assert 0.3 * 12 <= figures["nodes_sent_mean"] <= 0.6 * 12


def test_dra_demands_are_of_the_h100_alone() -> None:
    universe = bench.demand_universe((bench.DRA_PRODUCT,))
    assert len(universe) == 27  # one or two instances of the mix's six shapes: 6 + 21
    assert {r for d in bench.draw_demands(27, seed=1, products=(bench.DRA_PRODUCT,)) for r in d} == {
        "nvidia.com/mig-1g.10gb",
        "nvidia.com/mig-1g.20gb",
        "nvidia.com/mig-2g.20gb",
        "nvidia.com/mig-3g.40gb",
        "nvidia.com/mig-4g.40gb",
        "nvidia.com/mig-7g.80gb",
    }


def test_dra_nodes_hold_claims_at_legal_placements_that_do_not_overlap(tmp_path: Path) -> None:
    args = bench.parse_args(["--dra", "--nodes", "6", "--requests", "8", "--demands", "6"])
    drawn = bench.draw_pods(args)
    snapshot = tmp_path / "dra.json"
    nodes, sample, pods = bench.write_dra_cluster(snapshot, 6, 20, 1, args.demand_set, drawn[True], 0.25)
    view = ClusterView()
    load_snapshot(view, str(snapshot))
    assert [n["metadata"]["name"] for n in nodes] == sorted(view.nodes) and sample
    assert pods == sum(1 for p in view.pods.values() if p.node_name) >= 6 * 15
    for name in view.nodes:
        state = view.node_state(name)
        assert state is not None and state.devices is not None and state.warnings == ()  # no overlap
        instances = [i for g in state.gpus for i in g.instances]
        assert all(i.used for i in instances) and len(instances) == len(view.dra_allocated(name)) >= 15
    assert {"gpu.nvidia.com", "mig.nvidia.com"} <= set(view.dra.classes)
    # a pending pod's claim, made from its demand's template, reads as that demand; so do extended resources
    for index, demand, _ in drawn[True]:
        extended = bench.extended_form(index, 0.25)
        template = None if extended else bench.template_name(args.demand_set.index(demand))
        pod = json.loads(bench.dra_pod_args(index, demand, None, None, template))["Pod"]
        read = view.claim_reader.claims_of(pod, pod_demand(pod))
        assert read is not None and read.profiles is not None
        assert {f"nvidia.com/mig-{n}": c for n, c in read.profiles.mig} == demand
        assert bool(read.backed) is extended


def test_a_small_dra_run_reports_its_figures_and_start_up(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = run("--dra", "--nodes", "8", "--requests", "6", "--no-node-list", "--demands", "4", "--json", str(out))
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())
    for key in ("p99_ms", "pairs_per_s", "floor_ratio", "rss_mb", "ready_s", "first_filter_s", "event_apply_us"):
        assert figures[key] > 0, key
    assert figures["dra"] is True and figures["binds_per_s"] == 0
    assert figures["pods_in_view"] >= 8 * 15
