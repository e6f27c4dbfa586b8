"""Upper bounds on allocated slices in a fill run: 100 % of slices, and the offline optimum by CP-SAT.

The offline optimum chooses, with every arrival known and any layout allowed, how many GPUs take each
maximal layout and how many instances of each shape are used: maximise used compute slices with at most
as many instances of a shape as arrived. Every subset of a maximal layout is a valid layout, so for
single-instance pods this is exact and bounds every policy in every world (a policy's end state is such a
packing). Pods of k instances on one node are relaxed to k single instances: still an upper bound, marked
``exact: false``. OR-Tools is optional (extra ``sim``); without it only the trivial bound is given.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..model.catalog import GpuModel
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


def optimum(
    pods: Sequence[SimPod], model: GpuModel, gpu_count: int, time_limit_s: float = 30.0
) -> dict[str, Any] | None:
    """The offline optimum (CP-SAT), or None when OR-Tools is not installed."""
    try:
        cp_model: Any = importlib.import_module("ortools.sat.python.cp_model")
    except ImportError:
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
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = 1
    status = solver.Solve(solver_model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    capacity = gpu_count * model.compute_slices
    allocated = round(float(solver.ObjectiveValue()))
    best_bound = round(float(solver.BestObjectiveBound()))
    single = all(p.count == 1 for p in pods)
    placed = sum(int(solver.Value(v)) for v in taken.values()) if single else None
    return {
        "allocated_slice_ratio": round(best_bound / capacity, 6),
        "allocated_slices": best_bound,
        "optimum_found_slices": allocated,
        "capacity_slices": capacity,
        "pods_placed": placed,
        "pods_failed": None if placed is None else len(pods) - placed,
        "first_failure_demand_ratio": None,
        "relayouts": None,
        "solver": "cp-sat",
        "optimal": status == cp_model.OPTIMAL,
        "exact": single and status == cp_model.OPTIMAL,
    }
