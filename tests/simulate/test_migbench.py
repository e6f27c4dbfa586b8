"""MIGBench's workloads, geometry and metrics: the generator against its published traces, the metrics on tiny
runs worked out by hand, both geometries, its policies' tie-breaks, and the command line."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from pathlib import Path

import pytest

from extender.cli import main
from extender.model.catalog import model_named
from extender.model.migbench import (
    COMMON_PROFILES,
    PROFILES,
    Candidate,
    SlotGpu,
    SlotPolicy,
    catalog_figures,
    choose,
    longest_free_run,
    resolve,
    runtime_ms,
    slot_figures,
    slot_pack,
    slot_starts,
)
from extender.model.placement import Placement
from extender.model.state import GpuState, Instance
from extender.simulate.baselines import policies_named
from extender.simulate.migbench import (
    ArrivalModel,
    CatalogCluster,
    Cluster,
    FakeDraCluster,
    Geometry,
    Job,
    MigbenchRun,
    SlotCluster,
    WorkloadSpec,
    catalog_profiles,
    generate,
    offered_mean_gap_ms,
    quantile,
    read_trace,
    trace_text,
    workload_spec,
)
from extender.simulate.workload import NodeSpec, WorkloadError

H100 = model_named("H100-80GB")
BY_NAME = {p.name: p for p in PROFILES}
CLUSTER = 56  # GPC slots of MIGBench's 2 nodes x 4 H100


# --- the generator -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["migbench-saturated", "migbench-offered"])
@pytest.mark.parametrize("model", list(ArrivalModel))
def test_same_seed_same_trace_another_seed_another(name: str, model: ArrivalModel) -> None:
    first = generate(workload_spec(name, CLUSTER, jobs=120, seed=7, model=model))
    assert first == generate(workload_spec(name, CLUSTER, jobs=120, seed=7, model=model))
    assert first != generate(workload_spec(name, CLUSTER, jobs=120, seed=8, model=model))
    assert [j.job_id for j in first] == [f"job-{i:06d}" for i in range(1, 121)]


# outputs/full-control-plane-v3-trace.jsonl of MIGBench (seed 20260914, 56 prefill jobs, 15 s mean gap, the
# common four profiles, no minComputePercent): jobs 1, 26, 57, 80, 144 and 500 as published.
V3_JOBS = [
    ("job-000001", 0, 9588810, 10240),
    ("job-000026", 0, 58173724, 10240),
    ("job-000057", 24625, 114249534, 40960),
    ("job-000080", 352850, 199134800, 81920),
    ("job-000144", 1473432, 45128580, 40960),
    ("job-000500", 7071371, 2482046, 10240),
]


def test_saturated_generator_gives_migbench_published_trace() -> None:
    spec = replace(workload_spec("migbench-saturated", CLUSTER, profile_set="common"), min_compute=False)
    jobs = {j.job_id: j for j in generate(spec)}
    for job_id, arrival, work, memory in V3_JOBS:
        assert (jobs[job_id].arrival_ms, jobs[job_id].compute_core_ms, jobs[job_id].memory_mb) == (
            arrival,
            work,
            memory,
        )
    # written as MIGBench writes it: the published file's line, byte for byte
    line = trace_text([jobs["job-000057"]])
    assert line == (
        '{"jobID":"job-000057","format":"resource-bound-v2","arrivalMS":24625,"computeCoreMS":114249534,'
        '"memoryMB":40960}\n'
    )


def test_offered_generator_gives_migbench_measurement_window() -> None:
    # outputs/real-offered-20260916/RESULTS.md (seed 20260914, load 1.40, the common profiles): every run's
    # window was 11,457,561 ms, from 30 s to the last arrival.
    jobs = generate(workload_spec("migbench-offered", CLUSTER))
    assert jobs[-1].arrival_ms - 30_000 == 11_457_561


def _job(profile: str, runtime: int, arrival: int = 0) -> Job:
    p = BY_NAME[profile]
    return Job(
        f"{profile}-{arrival}-{runtime}", arrival, compute_core_ms=runtime * p.compute_percent, memory_mb=p.memory_mb
    )


@pytest.mark.parametrize(
    ("profiles", "jobs", "slots", "load", "gap"),
    [
        # 1g.10gb for 100 ms (1 x 100) and 3g.40gb for 100 ms (3 x 100): 400 GPC-ms over 2 jobs x 14 slots, / 2
        (PROFILES, [_job("1g.10gb", 100), _job("3g.40gb", 100)], 14, 2.0, 400 / 28 / 2),
        # a 2g.20gb job's memory fits 1g.20gb in the six-profile catalog: 1 GPC for twice the time
        (PROFILES, [_job("2g.20gb", 100)], 7, 1.0, 1 * 200 / 7),
        # ... and 2g.20gb itself in the common four
        (COMMON_PROFILES, [_job("2g.20gb", 100)], 7, 1.0, 2 * 100 / 7),
        # run time rounded up: 101 compute-ms at 14 % is 8 ms
        (PROFILES, [Job("j", 0, compute_core_ms=101, memory_mb=10240)], 7, 1.0, 8 / 7),
    ],
)  # fmt: skip
def test_offered_load_rule_for_the_mean_gap(
    profiles: tuple[object, ...], jobs: list[Job], slots: int, load: float, gap: float
) -> None:
    spec = WorkloadSpec("t", profiles, {}, slots, offered_load=load)  # type: ignore[arg-type]
    assert offered_mean_gap_ms(spec, jobs) == pytest.approx(gap)


def test_offered_trace_offers_the_load_asked() -> None:
    for load in (0.7, 1.4):
        spec = workload_spec("migbench-offered", CLUSTER, jobs=2000, seed=3, offered_load=load)
        jobs = generate(spec)
        held = 0
        for job in jobs:
            profile = resolve(spec.profiles, job.memory_mb)
            assert profile is not None
            held += profile.gpc * runtime_ms(job.compute_core_ms, profile.compute_percent)
        offered = held / jobs[-1].arrival_ms / CLUSTER
        assert offered == pytest.approx(load, rel=0.06)
        assert jobs[0].arrival_ms > 0  # no prefill: the first job comes after a gap too


@pytest.mark.parametrize(("slots", "prefill"), [(56, 56), (14, 14), (700, 300)])
def test_saturated_prefill_fills_every_slot_with_1g_at_time_zero(slots: int, prefill: int) -> None:
    jobs = generate(workload_spec("migbench-saturated", slots, jobs=300, seed=11))
    head, tail = jobs[:prefill], jobs[prefill:]
    assert all(j.arrival_ms == 0 and j.memory_mb == 10240 and j.min_compute_percent == 14 for j in head)
    assert all(b.arrival_ms >= a.arrival_ms for a, b in itertools.pairwise(jobs))
    assert all(j.arrival_ms > 0 for j in tail)
    if tail:
        # the rest: the profile drawn, and the job asks its compute share, so that it gets that profile
        assert {j.memory_mb for j in tail} > {10240}
        for job in tail:
            profile = resolve(PROFILES, job.memory_mb, job.min_compute_percent)
            assert profile is not None and profile.compute_percent == job.min_compute_percent


def test_adversarial_and_burst_arrivals() -> None:
    adversarial = generate(workload_spec("migbench-offered", CLUSTER, jobs=10, model=ArrivalModel.ADVERSARIAL))
    assert [j.memory_mb for j in adversarial] == [10240] * 5 + [81920] * 5
    gaps = {b.arrival_ms - a.arrival_ms for a, b in itertools.pairwise(adversarial)}
    assert len(gaps) == 1
    burst = generate(workload_spec("migbench-offered", CLUSTER, jobs=30, model=ArrivalModel.BURST))
    assert [len({j.arrival_ms for j in burst[k : k + 10]}) for k in (0, 10, 20)] == [1, 1, 1]
    assert len({j.arrival_ms for j in burst}) == 3


# --- traces -------------------------------------------------------------------------------------------------------


def test_a_trace_replays_as_written(tmp_path: Path) -> None:
    jobs = generate(workload_spec("migbench-saturated", CLUSTER, jobs=80))
    path = tmp_path / "trace.jsonl"
    path.write_text(trace_text(list(reversed(jobs))))  # read back sorted by arrival, ties in file order
    replayed = read_trace(path)
    assert sorted(replayed, key=lambda j: j.job_id) == sorted(jobs, key=lambda j: j.job_id)
    assert [j.arrival_ms for j in replayed] == sorted(j.arrival_ms for j in jobs)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{", "trace.jsonl:1: not JSON"),
        ('{"arrivalMS": 0}', "jobID is missing"),
        ('{"jobID": "a", "arrivalMS": -1, "computeCoreMS": 1, "memoryMB": 1}', "a arrives before 0"),
        ('{"jobID": "a", "arrivalMS": 0}', "needs computeCoreMS and memoryMB"),
        ('{"jobID": "a", "arrivalMS": 0.5, "computeCoreMS": 1, "memoryMB": 1}', "arrivalMS is not a whole number"),
        ('{"jobID": "a", "arrivalMS": 0, "profile": "1g.10gb"}', "no durationMS"),
        ('{"jobID": "a", "arrivalMS": 0, "computeCoreMS": 1, "memoryMB": 1}\n' * 2,
         "trace.jsonl:2: job a appears twice"),
        ("", "no job"),
    ],
)  # fmt: skip
def test_a_bad_trace_is_named(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text(text)
    with pytest.raises(WorkloadError, match=says):
        read_trace(path)


# --- profiles and geometry -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("profiles", "memory", "minimum", "expected"),
    [
        (PROFILES, 10240, 0, "1g.10gb"),
        (PROFILES, 20480, 0, "1g.20gb"),  # the memory, not the compute: MIGBench's resolution from 228c212 on
        (PROFILES, 20480, 28, "2g.20gb"),  # minComputePercent (a9d2a47): the profile drawn
        (COMMON_PROFILES, 20480, 0, "2g.20gb"),
        (PROFILES, 40960, 0, "3g.40gb"),
        (PROFILES, 40960, 57, "4g.40gb"),
        (PROFILES, 40961, 0, "7g.80gb"),
        (PROFILES, 81921, 0, None),
    ],
)  # fmt: skip
def test_a_job_gets_the_smallest_profile_holding_its_memory(
    profiles: tuple[object, ...], memory: int, minimum: int, expected: str | None
) -> None:
    found = resolve(profiles, memory, minimum)  # type: ignore[arg-type]
    assert (found.name if found else None) == expected


@pytest.mark.parametrize(("work", "percent", "ms"), [(1400, 14, 100), (1401, 14, 101), (1, 100, 1), (5700, 57, 100)])
def test_runtime_rounds_up(work: int, percent: int, ms: int) -> None:
    assert runtime_ms(work, percent) == ms


def slot_gpu(*placed: tuple[str, int]) -> SlotGpu:
    gpu = SlotGpu()
    for name, start in placed:
        gpu = gpu.place(BY_NAME[name], start)
    return gpu


def catalog_gpu(*placed: tuple[str, int]) -> GpuState:
    instances = tuple(Instance(Placement(start, H100.profile(name)), True) for name, start in placed)
    return GpuState(0, H100, instances, dynamic=True)


CATALOG = tuple(catalog_profiles(H100, PROFILES).values())


@pytest.mark.parametrize(
    ("placed", "slot", "catalog"),
    [
        # (free, longest free run, pack) in MIGBench's geometry and in the catalog's
        ((), (7, 7, 7), (7, 7, 7)),
        # 3g@0: MIGBench packs slot 3 (four 1g.10gb fit in the 40 GB left); the real GPU has no memory slice
        # left for a 1g at 3 (the 3g holds slices 0-3)
        ((("3g.40gb", 0),), (4, 4, 4), (4, 4, 3)),
        # 3g@0 + 3g@4: 80 GB in both: slot 3 is stranded
        ((("3g.40gb", 0), ("3g.40gb", 4)), (1, 1, 0), (1, 1, 0)),
        # two 1g with a hole: fragmented, nothing stranded
        ((("1g.10gb", 0), ("1g.10gb", 2)), (5, 4, 5), (5, 4, 5)),
        # four 1g.20gb: memory gone with 3 slots free
        ((("1g.20gb", 0), ("1g.20gb", 2), ("1g.20gb", 4), ("1g.20gb", 6)), (3, 1, 0), (3, 1, 0)),
        ((("7g.80gb", 0),), (0, 0, 0), (0, 0, 0)),
    ],
)  # fmt: skip
def test_gpu_figures_in_both_geometries(
    placed: tuple[tuple[str, int], ...], slot: tuple[int, int, int], catalog: tuple[int, int, int]
) -> None:
    mine = slot_figures(slot_gpu(*placed), PROFILES)
    real = catalog_figures(catalog_gpu(*placed), CATALOG)
    assert (mine.free, mine.longest_run, mine.pack) == slot
    assert (real.free, real.longest_run, real.pack) == catalog
    for figures in (mine, real):
        free, run, pack = figures.free, figures.longest_run, figures.pack
        assert figures.physical_fragmentation == ((free - run) / free if free else 0.0)
        assert figures.stranded_capacity == ((free - pack) / free if free else 0.0)


@pytest.mark.parametrize(
    ("placed", "profile", "starts"),
    [
        ((), "1g.10gb", (0, 1, 2, 3, 4, 5, 6)),
        ((), "3g.40gb", (0, 4)),
        ((("1g.10gb", 0),), "3g.40gb", (4,)),
        ((("3g.40gb", 0),), "1g.10gb", (3, 4, 5, 6)),  # the memory sum allows slot 3
        ((("3g.40gb", 0), ("3g.40gb", 4)), "1g.10gb", ()),  # a free slot, no memory
        ((("1g.20gb", 1),), "2g.20gb", (2, 4)),  # MIGBench lets 1g.20gb start anywhere
    ],
)  # fmt: skip
def test_legal_starts_in_migbench_geometry(
    placed: tuple[tuple[str, int], ...], profile: str, starts: tuple[int, ...]
) -> None:
    assert slot_starts(slot_gpu(*placed), BY_NAME[profile]) == starts


@pytest.mark.parametrize(("held", "run"), [(0, 7), (0b1111111, 0), (0b0000101, 4), (0b1001000, 3), (0b0100010, 3)])
def test_longest_free_run(held: int, run: int) -> None:
    assert longest_free_run(held) == run


def test_pack_respects_memory() -> None:
    assert slot_pack(0, 80, PROFILES) == 7
    assert slot_pack(0, 20, PROFILES) == 2  # two 1g.10gb
    assert slot_pack(0b0000111, 40, (BY_NAME["3g.40gb"],)) == 3


CANDIDATES = [
    Candidate(0, 1, 0, 7),
    Candidate(0, 0, 4, 3),
    Candidate(1, 0, 2, 3),
    Candidate(0, 0, 2, 3),
    Candidate(1, 1, 0, 5),
]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (SlotPolicy.FIRST_FIT, Candidate(0, 0, 2, 3)),  # (node, GPU, start)
        (SlotPolicy.BINPACK, Candidate(0, 0, 2, 3)),  # fewest free slots, then (node, GPU, start)
        (SlotPolicy.SPREAD, Candidate(0, 1, 0, 7)),  # most free slots, then the same
    ],
)  # fmt: skip
def test_migbench_policies_tie_breaks(policy: SlotPolicy, expected: Candidate) -> None:
    assert choose(policy, CANDIDATES) == expected
    assert choose(policy, list(reversed(CANDIDATES))) == expected
    assert choose(policy, []) is None


def test_binpack_and_first_fit_differ_when_the_fullest_gpu_comes_later() -> None:
    cands = [Candidate(0, 0, 0, 7), Candidate(0, 1, 3, 1)]
    assert choose(SlotPolicy.FIRST_FIT, cands) == cands[0]
    assert choose(SlotPolicy.BINPACK, cands) == cands[1]


# --- metrics on tiny runs, worked out by hand ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 0.5, None), ([7], 0.99, 7.0), ([1, 2, 3, 4], 0.5, 2.5), ([4, 1, 3, 2], 0.95, 3.85), ([10, 20], 0.0, 10.0)],
)
def test_quantile_interpolates_at_q_times_n_minus_1(values: list[int], q: float, expected: float | None) -> None:
    assert quantile(values, q) == (None if expected is None else pytest.approx(expected))


def one_gpu(geometry: Geometry, profiles: tuple[object, ...] = PROFILES) -> Cluster[object]:
    nodes = [NodeSpec("n", 1)]
    if geometry is Geometry.MIGBENCH:
        return SlotCluster(nodes, profiles, SlotPolicy.FIRST_FIT)  # type: ignore[arg-type,return-value]
    return CatalogCluster(H100, nodes, profiles, SlotPolicy.FIRST_FIT, 1)  # type: ignore[arg-type,return-value]


def metrics(jobs: list[Job], geometry: Geometry) -> dict[str, object]:
    return MigbenchRun(jobs, one_gpu(geometry), PROFILES, "first-fit", 1, measurement_start_ms=0).run().metrics


@pytest.mark.parametrize("geometry", list(Geometry))
def test_metrics_of_seven_1g_two_leaving_a_2g_blocked(geometry: Geometry) -> None:
    """One GPU, first fit. At 0 seven 1g.10gb take slots 0-6; those at 1 and 3 run 100 ms and leave at 450
    (250 create + 100 + 100 delete); the others run 10 s. At 1000 a 2g.20gb finds slots 1 and 3 free but no
    legal start: request-fragmented, it waits. At 2000 (the last arrival: the window is [0, 2000]) a 1g takes
    slot 1. At 10,350 the long ones leave and the 2g starts at 10,600, done at 10,800 (the makespan)."""
    jobs = [_job("1g.10gb", 10_000 if i not in (1, 3) else 100) for i in range(7)]
    jobs = [replace(j, job_id=f"a{i}") for i, j in enumerate(jobs)]
    blocked = replace(_job("2g.20gb", 100, 1000), job_id="b", min_compute_percent=28)  # a 2g, not a 1g.20gb
    jobs += [blocked, replace(_job("1g.10gb", 100, 2000), job_id="c")]
    m = metrics(jobs, geometry)
    assert m["gpc_utilization"] == pytest.approx((450 * 1 + 1550 * 5 / 7) / 2000, abs=1e-6)
    assert m["memory_utilization"] == pytest.approx((450 * 7 / 8 + 1550 * 5 / 8) / 2000, abs=1e-6)
    # slots 1 and 3 free: the longest run is 1 of 2 free; both usable by a 1g, nothing stranded
    assert m["physical_fragmentation"] == pytest.approx(1550 * 0.5 / 2000, abs=1e-6)
    assert m["stranded_capacity"] == 0
    assert m["request_fragmented_jobs"] == 1
    assert m["backlog_fraction"] == pytest.approx(1000 / 2000)
    assert m["peak_gpc_utilization"] == 1.0
    waits = [250] * 8 + [10_600 - 1000]
    assert m["wait_mean_s"] == pytest.approx(sum(waits) / 9 / 1000, abs=1e-3)
    assert m["wait_p95_s"] == pytest.approx((250 + 0.6 * 9350) / 1000)
    assert m["wait_p99_s"] == pytest.approx((250 + 0.92 * 9350) / 1000)
    assert m["makespan_s"] == 10.8
    assert m["throughput_per_h"] == pytest.approx(9 * 3600 / 10.8)


@pytest.mark.parametrize("geometry", list(Geometry))
def test_metrics_of_two_3g_stranding_a_slot(geometry: Geometry) -> None:
    """3g@0 and 3g@4 hold all memory: slot 3 is free and stranded (1 of 1 free) until 500, the last arrival.
    The 1g arriving then finds no memory: not request-fragmented, since free memory summed is short too."""
    jobs = [_job("3g.40gb", 1000), replace(_job("3g.40gb", 1000), job_id="b"), _job("1g.10gb", 100, 500)]
    m = metrics(jobs, geometry)
    assert m["gpc_utilization"] == pytest.approx(6 / 7, abs=1e-6)
    assert m["stranded_capacity"] == 1.0
    assert m["physical_fragmentation"] == 0.0
    assert m["request_fragmented_jobs"] == 0
    assert m["measurement_window_s"] == 0.5


def test_the_window_starts_at_30_s() -> None:
    # one 7g from 0 to 1350 ms, a 1g arriving at 60 s: the window [30 s, 60 s] sees an idle GPU
    jobs = [_job("7g.80gb", 1000), _job("1g.10gb", 100, 60_000)]
    m = MigbenchRun(jobs, one_gpu(Geometry.MIGBENCH), PROFILES, "first-fit", 1).run().metrics
    assert m["gpc_utilization"] == 0.0
    assert m["measurement_window_s"] == 30.0


def test_geometries_differ_where_memory_slices_do() -> None:
    """A 3g.40gb at 0 for long, then 1g.10gb jobs: MIGBench's memory sum fits four (slots 3-6), the real GPU
    three (4-6; memory slice 3 is the 3g's)."""
    jobs = [_job("3g.40gb", 100_000)] + [replace(_job("1g.10gb", 50_000, 10), job_id=f"s{i}") for i in range(4)]
    jobs.append(_job("1g.10gb", 1, 40_000))
    slot = metrics(jobs, Geometry.MIGBENCH)
    real = metrics(jobs, Geometry.CATALOG)
    assert slot["gpc_utilization"] == pytest.approx(1.0, abs=1e-3)
    assert real["gpc_utilization"] == pytest.approx(6 / 7, abs=1e-3)
    assert real["stranded_capacity"] == pytest.approx(1.0, abs=1e-3)


def test_a_job_no_profile_holds_is_refused() -> None:
    with pytest.raises(WorkloadError, match="no profile of the run holds 90000 MB"):
        MigbenchRun([Job("x", 0, 1, 90_000)], one_gpu(Geometry.MIGBENCH), PROFILES, "first-fit", 1)


# --- the command line ---------------------------------------------------------------------------------------------

KEYS = {
    "gpc_utilization",
    "stranded_capacity",
    "physical_fragmentation",
    "request_fragmented_jobs",
    "wait_mean_s",
    "wait_p95_s",
    "wait_p99_s",
    "makespan_s",
    "throughput_per_h",
}


@pytest.mark.parametrize(
    ("args", "policies"),
    [
        (["--workload", "migbench-saturated", "--geometry", "migbench"], ["first-fit", "binpack", "spread"]),
        (["--workload", "migbench-offered"],
         ["first-fit", "binpack", "spread", "mig-extender", "mig-extender+allocator"]),
        (["--workload", "migbench-offered", "--geometry", "migbench-dra"],
         ["first-fit", "binpack", "spread", "mig-extender", "mig-extender+allocator"]),
        (["--workload", "migbench-offered", "--policies", "binpack,mig-extender,pack"],
         ["binpack", "mig-extender", "pack"]),
    ],
)  # fmt: skip
def test_simulate_a_migbench_workload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], policies: list[str]
) -> None:
    out, trace = tmp_path / "out.json", tmp_path / "trace.jsonl"
    common = ["simulate", "--jobs", "60", "--seed", "5", "--json", str(out)]
    assert main([*common, *args, "--save-trace", str(trace)]) == 0
    table = capsys.readouterr().out
    document = json.loads(out.read_text())
    assert list(document["policies"]) == policies
    for name in policies:
        figures = document["policies"][name]
        assert set(figures) >= KEYS
        assert {"pods_placed", "mean_wait_s", "gpu_hours"} <= set(figures)  # the simulator's own beside them
        assert figures["pods_placed"] == 60
        assert any(line.startswith(name) for line in table.splitlines())
    assert document["run"]["nodes"] == 2 and document["run"]["gpus"] == 8
    # the saved trace, replayed, gives the same figures
    replay = tmp_path / "replay.json"
    profiles = "full" if "migbench-saturated" in args else "common"
    rest = [a for a in args[2:] if a not in ("--jobs", "60")]
    # the seed too: the extender's policy breaks its ties with the seed's draws
    replayed = ["simulate", "--trace", str(trace), "--seed", "5", "--profile-set", profiles, "--json", str(replay)]
    assert main([*replayed, *rest]) == 0
    again = json.loads(replay.read_text())["policies"]
    for name in policies:
        assert {k: again[name][k] for k in KEYS} == {k: document["policies"][name][k] for k in KEYS}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--workload", "migbench-offered", "--synthetic", "uniform"],
         "give one input, not --synthetic and --workload"),
        (["--synthetic", "uniform", "--geometry", "migbench"],
         "--geometry applies to --workload and --trace runs only"),
        (["--workload", "migbench-saturated", "--offered-load", "2"],
         "--offered-load applies to --workload migbench-offered"),
        (["--trace", "t.jsonl", "--jobs", "5"], "--jobs shapes a generated trace: not with --trace"),
        (["--workload", "migbench-offered", "--geometry", "migbench", "--policies", "mig-extender"],
         "policy mig-extender decides on the catalog's placements"),
        (["--workload", "migbench-offered", "--policies", "first-fit,best"], "unknown policy 'best'"),
        (["--workload", "migbench-offered", "--gpu", "A100-40GB"], "A100-40GB has no profile 2g.20gb"),
        (["--workload", "migbench-offered", "--plot", "x.png"], "--plot is not drawn"),
    ],
)  # fmt: skip
def test_simulate_mistakes_are_one_line(capsys: pytest.CaptureFixture[str], args: list[str], says: str) -> None:
    assert main(["simulate", *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert says in err


def _resource_job(name: str, memory_gb: int, percent: int, run_s: int, arrival_ms: int = 0) -> Job:
    return Job(name, arrival_ms, compute_core_ms=percent * run_s * 1000, memory_mb=memory_gb * 1024)


def test_the_fake_dra_world_places_past_the_memory_sum_and_its_metric_counts_the_sum() -> None:
    """3g.40gb, 3g.40gb, then 1g.10gb on one GPU: MIGBench's fake slices let the 1g take slot 3 (90 GB placed),
    its own geometry (the summed cap) makes it wait; the metric strands the free slot of a GPU holding 80 GB."""
    nodes = [NodeSpec("n", 1)]
    jobs = [_resource_job("a", 40, 42, 100), _resource_job("b", 40, 42, 200), _resource_job("c", 10, 14, 50)]
    fake = FakeDraCluster(nodes, COMMON_PROFILES, SlotPolicy.FIRST_FIT, 0)
    for job in jobs:
        profile = resolve(COMMON_PROFILES, job.memory_mb)
        assert profile is not None
        choice = fake.choose(profile)
        assert choice is not None
        fake.place(choice)
    assert fake.free() == (0, -10.0)
    (full,) = fake.figures()
    assert (full.free, full.stranded_capacity) == (0, 0.0)
    run = MigbenchRun(jobs, SlotCluster(nodes, COMMON_PROFILES, SlotPolicy.FIRST_FIT), COMMON_PROFILES, "ff", 1)
    waits = run.run().metrics
    assert waits["wait_mean_s"] > 0.25  # c waited for a's 100 s
    two = FakeDraCluster(nodes, COMMON_PROFILES, SlotPolicy.FIRST_FIT, 0)
    for _ in range(2):
        two.place(two.choose(COMMON_PROFILES[2]))
    (stranded,) = two.figures()
    assert (stranded.free, stranded.stranded_capacity) == (1, 1.0)


def test_the_extender_choosing_the_node_only_takes_the_allocators_first_fit_inside() -> None:
    """On one node the extender would take a 1g.10gb at the placement it prefers; with the allocator inside
    it is the lowest GPU's lowest free slot."""
    nodes = [NodeSpec("n", 2)]
    ours = {p.name: p for p in policies_named("all")}["mig-extender"]
    one_g = COMMON_PROFILES[0]
    inside = FakeDraCluster(nodes, COMMON_PROFILES, ours, 0, allocator_inside=True)
    choice = inside.choose(one_g)
    assert choice is not None
    ((gpu, placement),) = choice[1]
    assert (gpu, placement.start) == (0, 0)
    inside.place(choice)
    ((gpu, placement),) = inside.choose(one_g)[1]
    assert (gpu, placement.start) == (0, 1)
