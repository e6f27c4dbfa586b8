"""MIGBench's workloads and metrics in the simulator: its traces, its event loop, its figures beside ours.

MIGBench (https://github.com/FouoF/MIG-scheduler-benchmark) is a GPU-free benchmark of DynamicMIG schedulers.
Re-implemented here from its description and published files, not from its code:

**Jobs** are resource-bound (``resource-bound-v2``): work ``computeCoreMS`` (compute-percent x ms) and
``memoryMB``; a job runs on the smallest profile whose memory covers the request, for
``ceil(computeCoreMS / compute%)`` of that profile (README; ``outputs/UPDATED-TEST-PLAN.md``). Generation
(``internal/workload/workload.go``), with Go's ``math/rand/v2`` PCG draws (:mod:`.gorand`), so that one
seed gives MIGBench's own trace:

- profiles in (GPC, memory) order are drawn by weight; a duration ``d = exp(ln median + sigma * N(0, 1))``
  ms (at least 1) makes ``computeCoreMS = d * compute%`` and ``memoryMB = memoryGB * 1024``;
- ``migbench-saturated`` is the generator of ``outputs/SATURATED-FRAGMENTATION-REPORT.md`` (code at
  ``a9d2a47``): one stream, per job the arrival gap first (``Exp`` x ``arrivalMeanMS``, 15 s), then the
  profile, then the duration; the first jobs are a *prefill* of 1g.10gb at time 0 as many as the cluster
  has GPC slots (56 on 2 x 4 H100), and each job carries ``minComputePercent`` = its profile's (so the
  job gets the profile drawn);
- ``migbench-offered`` is the generator of ``outputs/real-offered-20260916/RESULTS.md`` (runner
  ``72a3905``): no prefill; profiles and durations first, then the arrivals from a second stream, the mean
  gap ``m`` set by the offered-load rule ``m = sum_j GPC(q_j) * runtime_j / (jobs * cluster GPC) / L``
  (``q_j`` the smallest profile holding the job's memory, ``L`` the target offered load, 1.40): the
  arrival rate times the mean GPC-time a job holds is ``L`` times the cluster;
- arrival models: ``poisson`` (and ``profile-skew``, which MIGBench draws alike), ``burst`` (``burst``
  jobs at once), ``adversarial`` (fixed gaps; the first half 1g, the rest the largest profile).

**The event loop** (``internal/simulator/simulator.go``): virtual milliseconds; at each next arrival or
finish the state since the last event is integrated, every job finishing then is released, the arrivals are
queued in trace order, and the queue is scanned in order, placing what fits and skipping what does not
(no reservation), pass after pass until one places nothing. A job placed at ``t`` starts at ``t + 250``
(create) and holds its slots until ``start + runtime + 100`` (delete); its wait is ``start - arrival``.

**Metrics**, over the window from 30 s to the last arrival (warm-up and drain left out), time-weighted on
the state between events: GPC utilisation (used slots over the cluster's), memory utilisation, physical
fragmentation and stranded capacity (per GPU, :mod:`extender.model.migbench`, averaged over all GPUs),
backlog (share of the window with a job waiting), peak; and over the whole run: request-fragmented jobs
(distinct jobs that found no placement while the cluster's free slots and free memory summed covered
their profile), waits (mean; P50/P95/P99 interpolated linearly at ``q * (n - 1)``), makespan (the last
finish) and throughput (jobs per virtual hour).

Geometries: ``migbench`` (7 slots and a memory sum per GPU, MIGBench's model) or ``catalog`` (the real
placements of the GPU model, which the extender's own policy decides on). Policies: MIGBench's
``first-fit``, ``binpack`` and ``spread`` (its tie-breaks), and on the catalog geometry the extender's
policy (``mig-extender``: its ``evaluate`` and ``scores`` picking the node, the placement it prefers inside
it) and the simulator's other baselines.
"""

from __future__ import annotations

import enum
import heapq
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ..model.catalog import GpuModel, Profile
from ..model.demand import PodDemand
from ..model.migbench import (
    COMMON_PROFILES,
    MIGBENCH_H100,
    PROFILES,
    SLOTS,
    Candidate,
    GpuFigures,
    SlotGpu,
    SlotPolicy,
    SlotProfile,
    catalog_figures,
    choose,
    compute_mask,
    ordered,
    resolve,
    runtime_ms,
    slot_figures,
    slot_starts,
)
from ..model.placement import Placement, free_starts
from .baselines import PolicySpec
from .engine import Mode, PolicyResult, SimConfig, Simulation, World, release
from .gorand import GoRand, go_log
from .workload import NodeSpec, SimPod, WorkloadError

RESOURCE_BOUND = "resource-bound-v2"
PROFILE_BOUND = "profile-bound-v1"
CREATE_MS = 250
DELETE_MS = 100
MEASUREMENT_START_MS = 30_000
DEFAULT_SEED = 20260914
"""The seed of every MIGBench experiment file."""
DEFAULT_NODES = 2
DEFAULT_GPUS = 4
WORKLOADS = ("migbench-offered", "migbench-saturated")

# Weights of the six-profile catalog (experiment.example.yaml) and of the common four
# (experiment.control-plane.saturated.yaml).
FULL_WEIGHTS: dict[str, float] = {
    "1g.10gb": 35,
    "1g.20gb": 10,
    "2g.20gb": 25,
    "3g.40gb": 15,
    "4g.40gb": 10,
    "7g.80gb": 5,
}
COMMON_WEIGHTS: dict[str, float] = {"1g.10gb": 35, "2g.20gb": 25, "3g.40gb": 25, "7g.80gb": 5}
PROFILE_SETS: dict[str, tuple[tuple[SlotProfile, ...], dict[str, float]]] = {
    "full": (PROFILES, FULL_WEIGHTS),
    "common": (COMMON_PROFILES, COMMON_WEIGHTS),
}


class ArrivalModel(enum.StrEnum):
    POISSON = "poisson"
    PROFILE_SKEW = "profile-skew"
    BURST = "burst"
    ADVERSARIAL = "adversarial"


class Geometry(enum.StrEnum):
    CATALOG = "catalog"
    MIGBENCH = "migbench"
    MIGBENCH_DRA = "migbench-dra"
    """MIGBench's fake DRA inventory: placements on 7 slots with no memory cap (what its slices let
    kube-scheduler's allocator do), the figures by its metric (the 80 GB sum)."""


@dataclass(frozen=True, slots=True)
class Job:
    """One line of a MIGBench trace."""

    job_id: str
    arrival_ms: int
    compute_core_ms: int = 0
    memory_mb: int = 0
    min_compute_percent: int = 0
    profile: str = ""
    """Profile-bound traces name the profile and give ``duration_ms`` instead of work and memory."""
    duration_ms: int = 0
    format: str = RESOURCE_BOUND

    def record(self) -> dict[str, Any]:
        """As MIGBench writes it: its field order, empty fields left out."""
        out: dict[str, Any] = {"jobID": self.job_id}
        if self.format:
            out["format"] = self.format
        out["arrivalMS"] = self.arrival_ms
        for key, value in (
            ("computeCoreMS", self.compute_core_ms),
            ("memoryMB", self.memory_mb),
            ("minComputePercent", self.min_compute_percent),
            ("durationMS", self.duration_ms),
            ("profile", self.profile),
        ):
            if value:
                out[key] = value
        return out


@dataclass(frozen=True)
class WorkloadSpec:
    """What MIGBench's generator is given: an experiment file's ``workload`` and ``cluster``."""

    name: str
    profiles: tuple[SlotProfile, ...]
    weights: Mapping[str, float]
    cluster_slots: int
    jobs: int = 500
    seed: int = DEFAULT_SEED
    model: ArrivalModel = ArrivalModel.POISSON
    burst_size: int = 10
    prefill: int = 0
    arrival_mean_ms: float | None = None
    offered_load: float | None = None
    duration_median_ms: float = 600_000.0
    duration_sigma: float = 0.8
    duration_max_ms: int | None = None
    min_compute: bool = False
    two_streams: bool = True
    """The offered-load generator (resources, then arrivals from a second stream); False: the prefill one."""

    def describe(self) -> dict[str, Any]:
        return {
            "workload": self.name,
            "seed": self.seed,
            "jobs": self.jobs,
            "arrival_model": str(self.model),
            "prefill_jobs": self.prefill,
            "arrival_mean_ms": self.arrival_mean_ms,
            "offered_load": self.offered_load,
            "duration_median_ms": self.duration_median_ms,
            "duration_sigma": self.duration_sigma,
            "duration_max_ms": self.duration_max_ms,
            "profiles": {p.name: self.weights.get(p.name, 0) for p in ordered(self.profiles)},
        }


def workload_spec(
    name: str,
    cluster_slots: int,
    *,
    jobs: int = 500,
    seed: int = DEFAULT_SEED,
    profile_set: str | None = None,
    model: ArrivalModel = ArrivalModel.POISSON,
    offered_load: float = 1.40,
) -> WorkloadSpec:
    """``migbench-saturated`` or ``migbench-offered`` for a cluster of ``cluster_slots`` GPC slots."""
    if name == "migbench-saturated":
        profiles, weights = PROFILE_SETS[profile_set or "full"]
        return WorkloadSpec(
            name,
            profiles,
            weights,
            cluster_slots,
            jobs=jobs,
            seed=seed,
            model=model,
            prefill=min(jobs, cluster_slots),
            arrival_mean_ms=15_000.0,
            min_compute=True,
            two_streams=False,
        )
    if name == "migbench-offered":
        profiles, weights = PROFILE_SETS[profile_set or "common"]
        return WorkloadSpec(
            name, profiles, weights, cluster_slots, jobs=jobs, seed=seed, model=model, offered_load=offered_load
        )
    raise WorkloadError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")


def _chooser(spec: WorkloadSpec) -> Callable[[GoRand], SlotProfile]:
    """MIGBench's weighted draw: one Float64 times the total, weights subtracted in (GPC, memory) order."""
    profiles = ordered(spec.profiles)
    weights = [float(spec.weights.get(p.name, 0.0)) for p in profiles] if spec.weights else [1.0] * len(profiles)
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise WorkloadError("profile weights must be 0 or more and not all 0")
    total = sum(weights)

    def draw(rng: GoRand) -> SlotProfile:
        x = rng.float64() * total
        for profile, weight in zip(profiles, weights):
            x -= weight
            if x <= 0:
                return profile
        return profiles[-1]

    return draw


def _duration(spec: WorkloadSpec, rng: GoRand) -> int:
    d = int(math.exp(go_log(spec.duration_median_ms) + spec.duration_sigma * rng.norm_float64()))
    d = max(d, 1)
    if spec.duration_max_ms is not None and d > spec.duration_max_ms:
        d = spec.duration_max_ms
    return d


def _job(spec: WorkloadSpec, i: int, arrival: int, profile: SlotProfile, d: int) -> Job:
    return Job(
        f"job-{i + 1:06d}",
        arrival,
        compute_core_ms=d * profile.compute_percent,
        memory_mb=profile.memory_mb,
        min_compute_percent=profile.compute_percent if spec.min_compute else 0,
    )


def _overridden(spec: WorkloadSpec, i: int, drawn: SlotProfile) -> SlotProfile:
    if spec.model is ArrivalModel.ADVERSARIAL:
        profiles = ordered(spec.profiles)
        return profiles[0] if i < spec.jobs // 2 else profiles[-1]
    return drawn


def offered_mean_gap_ms(spec: WorkloadSpec, jobs: Sequence[Job]) -> float:
    """The mean gap that offers ``spec.offered_load`` times the cluster's GPC slots (or the set one)."""
    if spec.arrival_mean_ms is not None:
        return spec.arrival_mean_ms
    if spec.offered_load is None or spec.offered_load <= 0 or not jobs or spec.cluster_slots <= 0:
        raise WorkloadError("an offered load above 0, jobs and a cluster with GPC slots are needed for the gap")
    occupied = 0.0
    for job in jobs:
        smallest = resolve(spec.profiles, job.memory_mb)
        if smallest is None:
            raise WorkloadError(f"{job.job_id}: no profile holds {job.memory_mb} MB")
        occupied += float(smallest.gpc) * float(runtime_ms(job.compute_core_ms, smallest.compute_percent))
    return occupied / float(len(jobs) * spec.cluster_slots) / spec.offered_load


def generate(spec: WorkloadSpec) -> list[Job]:
    """The trace MIGBench's generator makes of ``spec`` (the same jobs for the same seed, bit for bit)."""
    if spec.jobs < 1:
        raise WorkloadError("a workload needs at least 1 job")
    draw = _chooser(spec)
    rng = GoRand(spec.seed, spec.seed ^ 0x9E3779B97F4A7C15)
    bursts = max(1, spec.burst_size)
    if not spec.two_streams:
        mean = spec.arrival_mean_ms or 0.0
        first = ordered(spec.profiles)[0]
        jobs = []
        arrival = 0
        for i in range(spec.jobs):
            prefill = i < spec.prefill
            if prefill:
                arrival = 0
            elif spec.model in (ArrivalModel.POISSON, ArrivalModel.PROFILE_SKEW):
                arrival += int(rng.exp_float64() * mean)
            elif spec.model is ArrivalModel.BURST:
                if i > 0 and i % bursts == 0:
                    arrival += int(mean)
            else:
                arrival += int(mean)
            drawn = draw(rng)  # drawn even when the prefill or the model overrides it, as MIGBench does
            profile = first if prefill else _overridden(spec, i, drawn)
            jobs.append(_job(spec, i, arrival, profile, _duration(spec, rng)))
        return jobs
    jobs = []
    for i in range(spec.jobs):
        profile = _overridden(spec, i, draw(rng))
        jobs.append(_job(spec, i, 0, profile, _duration(spec, rng)))
    mean = offered_mean_gap_ms(spec, jobs)
    arrivals = GoRand(spec.seed ^ 0xD1B54A32D192ED03, spec.seed ^ 0x94D049BB133111EB)
    arrival = 0
    timed = []
    for i, job in enumerate(jobs):
        if spec.model in (ArrivalModel.POISSON, ArrivalModel.PROFILE_SKEW):
            arrival += int(arrivals.exp_float64() * mean)
        elif spec.model is ArrivalModel.BURST:
            if i > 0 and i % bursts == 0:
                arrival += int(mean * bursts)
        else:
            arrival += int(mean)
        timed.append(Job(job.job_id, arrival, job.compute_core_ms, job.memory_mb, job.min_compute_percent))
    return timed


# --- traces -----------------------------------------------------------------------------------------------------


def _whole(record: Mapping[str, Any], key: str, where: str) -> int:
    value = record.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise WorkloadError(f"{where}: {key} is not a whole number: {value!r}")
    return int(value)


def parse_job(record: object, where: str) -> Job:
    if not isinstance(record, dict):
        raise WorkloadError(f"{where}: not a JSON object")
    job_id = record.get("jobID")
    if not isinstance(job_id, str) or not job_id:
        raise WorkloadError(f"{where}: jobID is missing or not a string")
    profile = record.get("profile", "")
    if not isinstance(profile, str):
        raise WorkloadError(f"{where}: profile is not a string")
    fmt = record.get("format", "")
    job = Job(
        job_id,
        _whole(record, "arrivalMS", where),
        compute_core_ms=_whole(record, "computeCoreMS", where),
        memory_mb=_whole(record, "memoryMB", where),
        min_compute_percent=_whole(record, "minComputePercent", where),
        profile=profile,
        duration_ms=_whole(record, "durationMS", where),
        format=fmt if isinstance(fmt, str) else "",
    )
    if job.arrival_ms < 0:
        raise WorkloadError(f"{where}: {job_id} arrives before 0 ({job.arrival_ms} ms)")
    if profile and job.duration_ms < 1:
        raise WorkloadError(f"{where}: {job_id} names profile {profile} but no durationMS of at least 1")
    if not profile and (job.compute_core_ms < 1 or job.memory_mb < 1):
        raise WorkloadError(f"{where}: {job_id} needs computeCoreMS and memoryMB of at least 1 (or a profile)")
    return job


def read_trace(path: Path) -> list[Job]:
    """A MIGBench JSONL trace, stable-sorted by arrival as MIGBench reads it; job ids must be unique."""
    jobs: list[Job] = []
    seen: set[str] = set()
    try:
        with path.open() as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise WorkloadError(f"{where}: not JSON ({exc.msg})") from None
                job = parse_job(record, where)
                if job.job_id in seen:
                    raise WorkloadError(f"{where}: job {job.job_id} appears twice")
                seen.add(job.job_id)
                jobs.append(job)
    except OSError as exc:
        raise WorkloadError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise WorkloadError(f"{path}: not UTF-8 text") from None
    if not jobs:
        raise WorkloadError(f"{path}: no job")
    jobs.sort(key=lambda j: j.arrival_ms)
    return jobs


def trace_text(jobs: Sequence[Job]) -> str:
    """JSON lines as MIGBench's ``generate`` writes them."""
    return "".join(json.dumps(j.record(), separators=(",", ":")) + "\n" for j in jobs)


# --- clusters ---------------------------------------------------------------------------------------------------


Choice = TypeVar("Choice")


class Cluster(Protocol[Choice]):
    """The GPUs under one policy: where a profile goes, placing and releasing, the per-GPU figures."""

    def choose(self, profile: SlotProfile) -> Choice | None: ...

    def place(self, choice: Choice) -> None: ...

    def release(self, choice: Choice) -> None: ...

    def free(self) -> tuple[int, float]:
        """Free GPC slots and free memory (GB), summed over the cluster."""
        ...

    def figures(self) -> list[GpuFigures]: ...

    def arrived(self, profile: SlotProfile, now_ms: int) -> None: ...


class SlotCluster:
    """MIGBench's geometry under one of its policies."""

    def __init__(self, nodes: Sequence[NodeSpec], profiles: tuple[SlotProfile, ...], policy: SlotPolicy) -> None:
        self.gpus = [[SlotGpu() for _ in range(n.gpus)] for n in nodes]
        self.profiles = ordered(profiles)
        self.policy = policy

    def choose(self, profile: SlotProfile) -> tuple[Candidate, SlotProfile] | None:
        candidates = [
            Candidate(n, g, start, gpu.free)
            for n, node in enumerate(self.gpus)
            for g, gpu in enumerate(node)
            for start in slot_starts(gpu, profile)
        ]
        picked = choose(self.policy, candidates)
        return None if picked is None else (picked, profile)

    def place(self, choice: tuple[Candidate, SlotProfile]) -> None:
        candidate, profile = choice
        gpu = self.gpus[candidate.node][candidate.gpu]
        self.gpus[candidate.node][candidate.gpu] = gpu.place(profile, candidate.start)

    def release(self, choice: tuple[Candidate, SlotProfile]) -> None:
        candidate, profile = choice
        gpu = self.gpus[candidate.node][candidate.gpu]
        self.gpus[candidate.node][candidate.gpu] = gpu.remove(profile, candidate.start)

    def free(self) -> tuple[int, float]:
        return (
            sum(g.free for node in self.gpus for g in node),
            float(sum(g.free_memory_gb for node in self.gpus for g in node)),
        )

    def figures(self) -> list[GpuFigures]:
        return [slot_figures(g, self.profiles) for node in self.gpus for g in node]

    def arrived(self, profile: SlotProfile, now_ms: int) -> None:
        pass


Taken = tuple[int, tuple[tuple[int, Placement], ...]]
"""A node (the engine's id) and the (GPU index, placement) of each instance taken there."""


class CatalogCluster:
    """The GPU model's real placements (DynamicMIG GPUs), as the simulator's engine holds them.

    MIGBench's policies take the candidates of the catalog's free legal placements; the extender's policy
    (and the other baselines) decide with the engine's ``choose``: the model's ``evaluate`` and ``scores``
    over the nodes, the placement the policy prefers inside the chosen one.
    """

    def __init__(
        self,
        model: GpuModel,
        nodes: Sequence[NodeSpec],
        profiles: tuple[SlotProfile, ...],
        policy: SlotPolicy | PolicySpec,
        seed: int,
        *,
        allocator_inside: bool = False,
    ) -> None:
        self.model = model
        self.allocator_inside = allocator_inside
        """The policy picks the node; inside it kube-scheduler's allocator takes the first fit (lowest GPU, then
        lowest start: the driver's slices list devices so) instead of the placement the policy prefers."""
        self.catalog = catalog_profiles(model, profiles)
        self.run_profiles = tuple(self.catalog[p.name] for p in ordered(profiles))
        self.slot_policy = policy if isinstance(policy, SlotPolicy) else None
        spec = policy if isinstance(policy, PolicySpec) else PolicySpec(str(policy), _no_score, "naive")
        config = SimConfig(model=model, world=World.DYNAMIC_IDEAL, mode=Mode.CHURN, seed=seed, autoscale=False)
        self.sim = Simulation(config, spec, nodes)
        self.order = sorted(self.sim.nodes)
        gb = [p.memory_gb / self.catalog[p.name].memory_slices for p in profiles]
        self.gb_per_slice = min(gb)
        self._figures: dict[int, GpuFigures] = {}

    def choose(self, profile: SlotProfile) -> Taken | None:
        wanted = self.catalog[profile.name]
        if self.slot_policy is None:
            picked = self.sim.choose(PodDemand(mig=((wanted.name, 1),)))
            if picked is None:
                return None
            node_id, result = picked
            if self.allocator_inside:
                return self._first_fit(node_id, wanted)
            return node_id, tuple((p.gpu_index, p.placement) for p in result.plan)
        candidates: list[Candidate] = []
        for position, node_id in enumerate(self.order):
            for gpu in self.sim.nodes[node_id].gpus:
                if not gpu.mig_enabled or gpu.existing_count(wanted) >= wanted.max_instances:
                    continue
                free = self.model.compute_slices - gpu.used_compute
                candidates.extend(Candidate(position, gpu.index, s, free) for s in free_starts(wanted, gpu.occupied))
        chosen = choose(self.slot_policy, candidates)
        if chosen is None:
            return None
        return self.order[chosen.node], ((chosen.gpu, Placement(chosen.start, wanted)),)

    def _first_fit(self, node_id: int, wanted: Profile) -> Taken | None:
        for gpu in sorted(self.sim.nodes[node_id].gpus, key=lambda g: g.index):
            if gpu.mig_enabled and gpu.existing_count(wanted) < wanted.max_instances:
                starts = free_starts(wanted, gpu.occupied)
                if starts:
                    return node_id, ((gpu.index, Placement(min(starts), wanted)),)
        return None

    def place(self, choice: Taken) -> None:
        node_id, taken = choice
        self.sim.set_node(node_id, self.sim.nodes[node_id].with_used(taken))

    def release(self, choice: Taken) -> None:
        node_id, taken = choice
        node = self.sim.nodes[node_id]
        gpus = {g.index: g for g in node.gpus}
        for index, placement in taken:
            gpus[index] = release(gpus[index], placement)
        self.sim.set_node(node_id, node.replace_gpus(gpus.values()))

    def free(self) -> tuple[int, float]:
        slots = memory = 0
        for node_id in self.order:
            for gpu in self.sim.nodes[node_id].gpus:
                slots += self.model.compute_slices - gpu.used_compute
                memory += self.model.memory_slices - gpu.occupied.bit_count()
        return slots, memory * self.gb_per_slice

    def figures(self) -> list[GpuFigures]:
        out = []
        for node_id in self.order:
            for gpu in self.sim.nodes[node_id].gpus:
                found = self._figures.get(gpu.state_id)
                if found is None:
                    found = self._figures[gpu.state_id] = catalog_figures(gpu, self.run_profiles)
                out.append(found)
        return out

    def arrived(self, profile: SlotProfile, now_ms: int) -> None:
        if self.slot_policy is None:  # the extender's scores read the demand distribution of arrivals
            wanted = self.catalog[profile.name]
            demand = PodDemand(mig=((wanted.name, 1),))
            shape = self.model.shape_of(wanted)
            self.sim.observe(
                SimPod(profile.name, shape, 1, demand, wanted.compute_slices, now_ms / 1000, 0.0), now_ms / 1000
            )


class FakeDraCluster(CatalogCluster):
    """MIGBench's fake DRA inventory (:data:`~extender.model.migbench.MIGBENCH_H100`): placements on 7 slots
    with no memory cap, as its slices let kube-scheduler's allocator place them (3g@0 + 1g@3 + 3g@4 on one
    GPU), and the figures as its metric takes them, with the 80 GB sum (``internal/controlplane/metrics.go``):
    a GPU whose profiles hold 80 GB has its free slots stranded."""

    def __init__(
        self,
        nodes: Sequence[NodeSpec],
        profiles: tuple[SlotProfile, ...],
        policy: SlotPolicy | PolicySpec,
        seed: int,
        *,
        allocator_inside: bool = False,
    ) -> None:
        super().__init__(MIGBENCH_H100, nodes, profiles, policy, seed, allocator_inside=allocator_inside)
        self.slot_profiles = ordered(profiles)

    def free(self) -> tuple[int, float]:
        slots = memory = 0
        for gpu in self._gpus():
            slots += SLOTS - gpu.slots.bit_count()
            memory += gpu.free_memory_gb
        return slots, float(memory)

    def figures(self) -> list[GpuFigures]:
        return [slot_figures(gpu, self.slot_profiles) for gpu in self._gpus()]

    def _gpus(self) -> list[SlotGpu]:
        out = []
        for node_id in self.order:
            for gpu in self.sim.nodes[node_id].gpus:
                used = [i.profile for i in gpu.instances if i.used]
                memory_gb = sum((p.memory_mib or 0) // 1024 for p in used)
                out.append(SlotGpu(compute_mask(gpu), memory_gb))
        return out


def _no_score(*_: object) -> float:
    return 0.0


def catalog_profiles(model: GpuModel, profiles: Sequence[SlotProfile]) -> dict[str, Profile]:
    """The GPU model's profile for each of the run's, by name; a clear error for one the model lacks."""
    found: dict[str, Profile] = {}
    for profile in profiles:
        match = model.find_profile(profile.name)
        if match is None or match.compute_slices != profile.gpc:
            raise WorkloadError(f"{model.name} has no profile {profile.name} ({profile.gpc} GPC)")
        found[profile.name] = match
    return found


# --- the event loop and its metrics --------------------------------------------------------------------------------


def quantile(values: Sequence[int], q: float) -> float | None:
    """MIGBench's quantile: sorted, linear between the two values around ``q * (n - 1)``."""
    if not values:
        return None
    ordered_values = sorted(values)
    x = q * (len(ordered_values) - 1)
    low = int(x)
    if low + 1 >= len(ordered_values):
        return float(ordered_values[low])
    return ordered_values[low] + (x - low) * (ordered_values[low + 1] - ordered_values[low])


@dataclass
class MigbenchResult(PolicyResult):
    """The engine's figures of one policy, and MIGBench's beside them (``figures()`` gives both)."""

    metrics: dict[str, Any] = field(default_factory=dict)
    profile_counts: dict[str, int] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        return {**super().figures(), **self.metrics, "profiles_allocated": dict(sorted(self.profile_counts.items()))}


@dataclass(slots=True)
class _Running:
    finish: int
    choice: Any


@dataclass
class _Integrals:
    window_ms: int = 0
    gpc: float = 0.0
    memory: float = 0.0
    physical: float = 0.0
    stranded: float = 0.0
    physical_gpc_ms: int = 0
    stranded_gpc_ms: int = 0
    backlog_ms: int = 0
    peak: float = 0.0


class MigbenchRun:
    """One policy on one trace: MIGBench's event loop on a :class:`Cluster`."""

    def __init__(
        self,
        jobs: Sequence[Job],
        cluster: Cluster[Any],
        profiles: tuple[SlotProfile, ...],
        name: str,
        nodes: int,
        measurement_start_ms: int = MEASUREMENT_START_MS,
    ) -> None:
        self.node_count = nodes
        self.jobs = sorted(jobs, key=lambda j: j.arrival_ms)
        self.cluster = cluster
        self.profiles = ordered(profiles)
        by_name = {p.name: p for p in self.profiles}
        self.wanted: dict[str, SlotProfile | None] = {}
        for job in self.jobs:
            if job.profile:
                self.wanted[job.job_id] = by_name.get(job.profile)
            else:
                self.wanted[job.job_id] = resolve(self.profiles, job.memory_mb, job.min_compute_percent)
            if self.wanted[job.job_id] is None:
                raise WorkloadError(f"{job.job_id}: no profile of the run holds {_asked(job)}")
        self.name = name
        self.start_ms = measurement_start_ms
        self.last_arrival = self.jobs[-1].arrival_ms if self.jobs else 0
        self.now = 0
        self.pending: list[Job] = []
        self.running: dict[str, _Running] = {}
        self.finishes: list[tuple[int, str]] = []
        self.waits: list[int] = []
        self.fragmented: set[str] = set()
        self.integrals = _Integrals()
        self.profile_counts: dict[str, int] = {}
        self.total_slots = sum(f.slots for f in cluster.figures())

    def run(self) -> MigbenchResult:
        started = time.perf_counter()
        index = 0
        jobs = self.jobs
        while index < len(jobs) or self.pending or self.running:
            upcoming = [jobs[index].arrival_ms] if index < len(jobs) else []
            if self.finishes:
                upcoming.append(self.finishes[0][0])
            if not upcoming:
                break
            nxt = min(upcoming)
            self.advance(nxt)
            while self.finishes and self.finishes[0][0] == nxt:
                _, job_id = heapq.heappop(self.finishes)
                self.finish(job_id)
            while index < len(jobs) and jobs[index].arrival_ms == nxt:
                self.arrive(jobs[index])
                index += 1
            self.schedule()
            if not self.running and index >= len(jobs) and self.pending:
                first = self.pending[0]
                raise WorkloadError(
                    f"{self.name}: {len(self.pending)} jobs can never be placed; first {first.job_id} ({_asked(first)})"
                )
        return self.result(time.perf_counter() - started)

    def schedule(self) -> None:
        while True:
            progress = False
            known: dict[str, tuple[Any, bool]] = {}
            i = 0
            while i < len(self.pending):
                job = self.pending[i]
                profile = self.wanted[job.job_id]
                assert profile is not None
                answer = known.get(profile.name)
                if answer is None:
                    slots, memory = self.cluster.free()
                    enough = slots >= profile.gpc and memory >= profile.memory_gb
                    answer = known[profile.name] = (self.cluster.choose(profile), enough)
                choice, enough = answer
                if choice is None:
                    if enough:
                        self.fragmented.add(job.job_id)
                    i += 1
                    continue
                self.start(job, choice, profile)
                known.clear()
                progress = True
            if not progress:
                return

    def arrive(self, job: Job) -> None:
        """``job`` arrives now: it waits in the queue."""
        self.pending.append(job)
        profile = self.wanted[job.job_id]
        if profile is not None:
            self.cluster.arrived(profile, self.now)

    def start(self, job: Job, choice: Any, profile: SlotProfile) -> int:
        """``job`` is placed now at ``choice`` on ``profile`` (the one allocated, which sets its run time):
        it leaves the queue and holds its slots until the returned finish time."""
        self.cluster.place(choice)
        start = self.now + CREATE_MS
        runtime = job.duration_ms if job.profile else runtime_ms(job.compute_core_ms, profile.compute_percent)
        finish = start + runtime + DELETE_MS
        self.running[job.job_id] = _Running(finish, choice)
        heapq.heappush(self.finishes, (finish, job.job_id))
        self.waits.append(start - job.arrival_ms)
        self.profile_counts[profile.name] = self.profile_counts.get(profile.name, 0) + 1
        self.pending.remove(job)
        return finish

    def finish(self, job_id: str) -> None:
        """``job_id`` finishes now: its slots are free again."""
        self.cluster.release(self.running.pop(job_id).choice)

    def advance(self, to_ms: int) -> None:
        """Virtual time moves to ``to_ms``: the state since the last event is integrated."""
        self.integrate(to_ms - self.now)
        self.now = to_ms

    def integrate(self, dt: int) -> None:
        if dt <= 0:
            return
        low = max(self.now, self.start_ms)
        high = min(self.now + dt, self.last_arrival)
        if high <= low:
            return
        window = high - low
        figures = self.cluster.figures()
        count = len(figures) or 1
        used = sum(f.slots - f.free for f in figures)
        s = self.integrals
        s.window_ms += window
        s.gpc += used * window / self.total_slots
        s.memory += sum(f.memory_used for f in figures) / count * window
        s.physical += sum(f.physical_fragmentation for f in figures) / count * window
        s.stranded += sum(f.stranded_capacity for f in figures) / count * window
        s.physical_gpc_ms += sum(f.free - f.longest_run for f in figures if f.free) * window
        s.stranded_gpc_ms += sum(f.free - f.pack for f in figures if f.free) * window
        if self.pending:
            s.backlog_ms += window
        s.peak = max(s.peak, used / self.total_slots)

    def result(self, seconds: float) -> MigbenchResult:
        s = self.integrals
        completed = len(self.waits)
        makespan = self.now

        def share(area: float) -> float | None:
            return round(area / s.window_ms, 6) if s.window_ms else None

        def in_seconds(ms: float | None) -> float | None:
            return None if ms is None else round(ms / 1000, 3)

        metrics: dict[str, Any] = {
            "gpc_utilization": share(s.gpc),
            "memory_utilization": share(s.memory),
            "physical_fragmentation": share(s.physical),
            "stranded_capacity": share(s.stranded),
            "stranded_gpc_time_ratio": (
                round(s.stranded_gpc_ms / (self.total_slots * s.window_ms), 6) if s.window_ms else None
            ),
            "request_fragmented_jobs": len(self.fragmented),
            "wait_mean_s": in_seconds(sum(self.waits) / completed) if completed else None,
            "wait_p50_s": in_seconds(quantile(self.waits, 0.50)),
            "wait_p95_s": in_seconds(quantile(self.waits, 0.95)),
            "wait_p99_s": in_seconds(quantile(self.waits, 0.99)),
            "makespan_s": in_seconds(makespan),
            "throughput_per_h": round(completed * 3_600_000 / makespan, 4) if makespan else None,
            "peak_gpc_utilization": round(s.peak, 6),
            "backlog_fraction": share(float(s.backlog_ms)),
            "measurement_window_s": in_seconds(s.window_ms),
        }
        gpus = len(self.cluster.figures())
        slots_submitted = sum(p.gpc for p in self.wanted.values() if p is not None)
        hours = makespan / 3_600_000
        result = MigbenchResult(
            self.name,
            capacity_slices=self.total_slots,
            submitted_slices=slots_submitted,
            pods_placed=completed,
            pods_failed=len(self.jobs) - completed,
            seconds=seconds,
            node_hours=self.node_count * hours,
            gpu_hours=gpus * hours,
            mean_wait_s=sum(self.waits) / completed / 1000 if completed else None,
            metrics=metrics,
            profile_counts=self.profile_counts,
        )
        return result


def _asked(job: Job) -> str:
    return f"profile {job.profile}" if job.profile else f"{job.memory_mb} MB"


# --- one run of every policy -------------------------------------------------------------------------------------

SLOT_POLICIES = tuple(p.value for p in SlotPolicy)
OURS = "mig-extender"
OURS_NODE_ONLY = "mig-extender+allocator"
"""The extender's policy choosing the node only, kube-scheduler's allocator the device inside it (first fit):
what the extender can do in a real cluster, beside ``mig-extender`` choosing both (the dynamic-ideal world)."""


def policy_names(text: str, geometry: Geometry, known: Mapping[str, PolicySpec]) -> list[str]:
    """The policies of ``--policies`` for a MIGBench run: ``all`` is MIGBench's three, and ours (choosing node
    and device, and choosing the node only) on the geometries the catalog's engine places on."""
    if text == "all":
        return [*SLOT_POLICIES, *([OURS, OURS_NODE_ONLY] if geometry is not Geometry.MIGBENCH else [])]
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name in SLOT_POLICIES:
            continue
        if name not in known and name != OURS_NODE_ONLY:
            others = ", ".join([*(n for n in known if n not in SLOT_POLICIES), OURS_NODE_ONLY])
            raise ValueError(f"unknown policy {name!r}; known: all, {', '.join(SLOT_POLICIES)}, {others}")
        if geometry is Geometry.MIGBENCH:
            raise ValueError(
                f"policy {name} decides on the catalog's placements: use it with --geometry catalog or "
                f"migbench-dra (MIGBench's geometry takes {', '.join(SLOT_POLICIES)})"
            )
    if not names:
        raise ValueError("no policy named")
    return names


@dataclass
class MigbenchOutput:
    inputs: dict[str, Any]
    results: list[MigbenchResult]

    def document(self) -> dict[str, Any]:
        return {"run": self.inputs, "policies": {r.policy: r.figures() for r in self.results}}


def run_migbench(
    jobs: Sequence[Job],
    nodes: Sequence[NodeSpec],
    profiles: tuple[SlotProfile, ...],
    geometry: Geometry,
    model: GpuModel,
    policies: Sequence[str],
    known: Mapping[str, PolicySpec],
    seed: int,
    inputs: dict[str, Any],
) -> MigbenchOutput:
    """Every policy on the trace, each on a fresh cluster of ``nodes``."""
    results = []
    for name in policies:
        cluster: Cluster[Any]
        if geometry is Geometry.MIGBENCH:
            cluster = SlotCluster(nodes, profiles, SlotPolicy(name))
        else:
            inside = name == OURS_NODE_ONLY
            policy: SlotPolicy | PolicySpec = (
                SlotPolicy(name) if name in SLOT_POLICIES else known[OURS if inside else name]
            )
            if geometry is Geometry.MIGBENCH_DRA:
                cluster = FakeDraCluster(nodes, profiles, policy, seed, allocator_inside=inside)
            else:
                cluster = CatalogCluster(model, nodes, profiles, policy, seed, allocator_inside=inside)
        results.append(MigbenchRun(jobs, cluster, profiles, name, len(nodes)).run())
    gpus = sum(n.gpus for n in nodes)
    document = {
        **inputs,
        "geometry": str(geometry),
        "gpu": {
            Geometry.CATALOG: model.name,
            Geometry.MIGBENCH: "MIGBench H100 (7 GPC slots, 80 GB summed)",
            Geometry.MIGBENCH_DRA: "MIGBench's fake DRA H100 (7 GPC slots, no memory cap; figures with 80 GB summed)",
        }[geometry],
        "nodes": len(nodes),
        "gpus": gpus,
        "pods": len(jobs),
        "create_ms": CREATE_MS,
        "delete_ms": DELETE_MS,
        "measurement_start_ms": MEASUREMENT_START_MS,
        "last_arrival_ms": max((j.arrival_ms for j in jobs), default=0),
    }
    return MigbenchOutput(document, results)


LEGEND = """\
GPC       time-weighted used GPC slots / cluster's, in the window (30 s to the last arrival)
mem       the same for memory            phys      physical fragmentation: (free - longest free run) / free
stranded  (free - most slots legal placements could still take) / free; both per GPU, mean of all GPUs
req-frag  jobs that found no placement while the cluster's free slots and memory summed were enough
wait      arrival to start (create included), mean and percentiles, s     makespan  last finish, s
thr/h     jobs per virtual hour          secs      the policy's wall time"""


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(output: MigbenchOutput) -> str:
    run = output.inputs
    head = (
        f"{run.get('input', '')}: {run['nodes']} nodes x {run['gpus'] // max(1, run['nodes'])} GPUs, "
        f"geometry {run['geometry']}, {run['pods']} jobs"
    )
    width = max([14, *(len(r.policy) + 2 for r in output.results)])
    columns = (
        f"{'policy':<{width}}{'placed':>7}{'GPC':>8}{'mem':>8}{'phys':>8}{'stranded':>9}{'req-frag':>9}"
        f"{'wait':>10}{'p95':>10}{'p99':>10}{'makespan':>11}{'thr/h':>8}{'secs':>7}"
    )
    lines = [head, columns]
    for r in output.results:
        m = r.metrics
        lines.append(
            f"{r.policy:<{width}}{r.pods_placed:>7}{_pct(m['gpc_utilization']):>8}{_pct(m['memory_utilization']):>8}"
            f"{_pct(m['physical_fragmentation']):>8}{_pct(m['stranded_capacity']):>9}"
            f"{m['request_fragmented_jobs']:>9}{_num(m['wait_mean_s'], '.1f'):>10}{_num(m['wait_p95_s'], '.1f'):>10}"
            f"{_num(m['wait_p99_s'], '.1f'):>10}{_num(m['makespan_s'], '.1f'):>11}"
            f"{_num(m['throughput_per_h'], '.2f'):>8}{r.seconds:>7.1f}"
        )
    return "\n".join([*lines, "", LEGEND])


def write_json(output: MigbenchOutput, path: Path) -> None:
    path.write_text(json.dumps(output.document(), indent=2) + "\n")
