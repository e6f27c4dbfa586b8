"""Upper bounds on allocated slices in a fill run: 100 % of slices, and the offline optimum by CP-SAT.

The offline optimum chooses, with every arrival known and any layout allowed, how many GPUs take each
maximal layout and how many instances of each shape are used: maximise used compute slices with at most
as many instances of a shape as arrived. Every subset of a maximal layout is a valid layout, so for
single-instance pods this is exact and bounds every policy in every world (a policy's end state is such a
packing). Pods of k instances on one node are relaxed to k single instances: still an upper bound, marked
``exact: false``. OR-Tools is optional (extra ``sim``); without it only the trivial bound is given.

The work-conserving optimum (dynamic worlds, small clusters) also knows every arrival, but must place each
pod that fits somewhere when it arrives, as every simulated policy does there: it tells what foresight
alone could gain, apart from leaving pods pending that fit.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..model.catalog import GpuModel, Profile
from ..model.layouts import maximal_layouts
from ..model.relayout import planning_profiles
from .workload import SimPod


def trivial_bound(pods: Sequence[SimPod], capacity_slices: int) -> dict[str, Any]:
    submitted = sum(p.slices for p in pods)
    allocated = min(submitted, capacity_slices)
    return {
        "allocated_slice_ratio": round(allocated / capacity_slices, 6) if capacity_slices else 0.0,
        "allocated_slices": allocated,
        "capacity_slices": capacity_slices,
        "pods_placed": None,
        "pods_failed": None,
        "first_failure_demand_ratio": None,
        "relayouts": None,
        "solver": "trivial (100 % of slices or all demand)",
        "exact": False,
    }


def _cp_model() -> Any:
    try:
        return importlib.import_module("ortools.sat.python.cp_model")
    except ImportError:
        return None


@dataclass(frozen=True)
class _Solved:
    solver: Any
    optimal: bool
    """CP-SAT proved the objective optimal."""
    best_bound: int
    """The proven upper bound on the objective (the objective itself when optimal)."""
    found: int
    """The objective of the best solution found."""


def _solve(cp_model: Any, solver_model: Any, time_limit_s: float) -> _Solved | None:
    """Solve on one core within the limit; None if no solution was found."""
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = 1
    status = solver.Solve(solver_model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    return _Solved(
        solver,
        status == cp_model.OPTIMAL,
        round(float(solver.BestObjectiveBound())),
        round(float(solver.ObjectiveValue())),
    )


def optimum(
    pods: Sequence[SimPod], model: GpuModel, gpu_count: int, time_limit_s: float = 30.0
) -> dict[str, Any] | None:
    """The offline optimum (CP-SAT), or None when OR-Tools is not installed."""
    cp_model = _cp_model()
    if cp_model is None:
        return None
    arrived: Counter[str] = Counter()
    for pod in pods:
        arrived[pod.shape] += pod.count
    layouts = maximal_layouts(model, planning_profiles(model))
    shapes = sorted(arrived)
    solver_model = cp_model.CpModel()
    use = [solver_model.NewIntVar(0, gpu_count, f"n{i}") for i in range(len(layouts))]
    solver_model.Add(sum(use) <= gpu_count)
    taken = {}
    for shape in shapes:
        profile = model.profile_for_shape(shape)
        if profile is None:
            continue
        taken[shape] = var = solver_model.NewIntVar(0, arrived[shape], f"y_{shape}")
        solver_model.Add(
            var <= sum(n * sum(1 for p in layout if p.profile is profile) for n, layout in zip(use, layouts))
        )
    slices = {s: model.profile_for_shape(s).compute_slices for s in taken}  # type: ignore[union-attr]
    solver_model.Maximize(sum(slices[s] * v for s, v in taken.items()))
    solved = _solve(cp_model, solver_model, time_limit_s)
    if solved is None:
        return None
    capacity = gpu_count * model.compute_slices
    single = all(p.count == 1 for p in pods)
    placed = sum(int(solved.solver.Value(v)) for v in taken.values()) if single else None
    return {
        "allocated_slice_ratio": round(solved.best_bound / capacity, 6),
        "allocated_slices": solved.best_bound,
        "optimum_found_slices": solved.found,
        "capacity_slices": capacity,
        "pods_placed": placed,
        "pods_failed": None if placed is None else len(pods) - placed,
        "first_failure_demand_ratio": None,
        "relayouts": None,
        "solver": "cp-sat",
        "optimal": solved.optimal,
        "exact": single and solved.optimal,
    }


def work_conserving_optimum(
    pods: Sequence[SimPod], model: GpuModel, gpu_count: int, time_limit_s: float = 60.0
) -> dict[str, Any] | None:
    """Most compute slices a scheduler that knows every arrival, but places each pod that fits, can allocate.

    Dynamic GPUs, single-instance pods, any GPU for any pod (node boundaries only restrict a policy, so the
    value stays an upper bound for every simulated policy in the dynamic worlds). Per pod, GPU and legal
    start a boolean; per pod, GPU and memory slice the occupancy after it. A pod left out must find every
    legal start of its profile blocked by the pods before it. None without OR-Tools or for pods of several
    instances. The model grows as pods x GPUs: meant for a few nodes.
    """
    cp_model = _cp_model()
    if cp_model is None or any(p.count != 1 for p in pods):
        return None
    solver_model = cp_model.CpModel()
    slots = range(model.memory_slices)
    occupied: list[list[Any]] = [[None] * model.memory_slices for _ in range(gpu_count)]
    used_before: list[Any] = [None] * gpu_count
    compute: list[list[Any]] = [[] for _ in range(gpu_count)]
    per_profile: dict[tuple[int, Profile], list[Any]] = {}
    objective = []
    for i, pod in enumerate(pods):
        profile = model.profile_for_shape(pod.shape)
        if profile is None:
            continue
        choices = [
            (g, start, solver_model.NewBoolVar(f"x{i}_{g}_{start}"))
            for g in range(gpu_count)
            for start in profile.starts
        ]
        placed = solver_model.NewBoolVar(f"placed{i}")
        solver_model.Add(sum(x for _, _, x in choices) == placed)
        objective.append(profile.compute_slices * placed)
        for g, start, x in choices:
            mask = profile.occupancy(start)
            held = [occupied[g][k] for k in slots if mask >> k & 1 and occupied[g][k] is not None]
            solver_model.AddBoolOr([placed, *held])  # left out only if this start is blocked
            compute[g].append(profile.compute_slices * x)
            per_profile.setdefault((g, profile), []).append(x)
            # GPUs are alike: number them by first use (GPU g only once GPU g-1 has been used).
            if g > 0:
                if used_before[g - 1] is None:
                    solver_model.Add(x == 0)
                else:
                    solver_model.AddImplication(x, used_before[g - 1])
        for g in range(gpu_count):
            here = [x for gpu, _, x in choices if gpu == g]
            for k in slots:
                covering = [x for gpu, start, x in choices if gpu == g and profile.occupancy(start) >> k & 1]
                if covering:
                    after = solver_model.NewBoolVar(f"o{i}_{g}_{k}")
                    before = [occupied[g][k]] if occupied[g][k] is not None else []
                    solver_model.Add(after == sum(before) + sum(covering))  # a slice holds one instance
                    occupied[g][k] = after
            used = solver_model.NewBoolVar(f"u{i}_{g}")
            previous = [used_before[g]] if used_before[g] is not None else []
            solver_model.AddMaxEquality(used, previous + here)
            used_before[g] = used
    for g in range(gpu_count):
        solver_model.Add(sum(compute[g]) <= model.compute_slices)
    for (_, limited), taken in per_profile.items():
        solver_model.Add(sum(taken) <= limited.max_instances)
    solver_model.Maximize(sum(objective))
    solved = _solve(cp_model, solver_model, time_limit_s)
    if solved is None:
        return None
    capacity = gpu_count * model.compute_slices
    return {
        "allocated_slice_ratio": round(solved.best_bound / capacity, 6),
        "allocated_slices": solved.best_bound,
        "found_slices": solved.found,
        "capacity_slices": capacity,
        "solver": "cp-sat, work-conserving",
        "optimal": solved.optimal,
    }
