"""Run every policy on one workload and world; the table, the JSON document and the plot."""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..plotting import MatplotlibMissing, pyplot
from .baselines import PolicySpec
from .bound import optimum, trivial_bound, work_conserving_optimum
from .dra import DraFleet
from .engine import Mode, PolicyResult, SimConfig, Simulation, World
from .workload import NodeSpec, SimPod, fill_sequence


@dataclass
class RunOutput:
    config: SimConfig
    inputs: dict[str, Any]
    results: list[PolicyResult]
    bound: dict[str, Any] | None
    work_conserving_bound: dict[str, Any] | None = None

    def document(self) -> dict[str, Any]:
        return {
            "run": {
                "world": str(self.config.world),
                "mode": str(self.config.mode),
                "gpu": self.config.model.name,
                "relayout": self.config.relayout,
                "defrag": None if self.config.defrag is None else dataclasses.asdict(self.config.defrag),
                "consolidation": str(self.config.consolidation),
                "headroom": None if self.config.headroom is None else dataclasses.asdict(self.config.headroom),
                "rebalance": self.config.rebalance,
                "arrival": self.config.arrival,
                "seed": self.config.seed,
                "layout": self.config.layout,
                "prior": self.config.prior,
                **self.inputs,
            },
            "policies": {r.policy: r.figures() for r in self.results},
            "bound": self.bound,
            "bound_work_conserving": self.work_conserving_bound,
            "curves": {r.policy: [[round(a, 4), round(b, 4)] for a, b in r.curve] for r in self.results},
            "node_counts": {r.policy: r.node_counts[:: max(1, len(r.node_counts) // 500)] for r in self.results}
            if self.config.mode is Mode.CHURN
            else None,
        }


def run(
    config: SimConfig,
    policies: Sequence[PolicySpec],
    nodes: Sequence[NodeSpec],
    pods: Sequence[SimPod],
    inputs: dict[str, Any],
    with_bound: bool = True,
    work_conserving: bool = False,
    progress: bool = False,
) -> RunOutput:
    """Every policy on the workload; ``work_conserving`` adds that bound (fill mode, dynamic worlds).

    ``progress`` draws a bar of the pods each policy has seen on stderr, if it is a terminal (runs take minutes).
    """
    capacity = sum(n.gpus for n in nodes) * config.model.compute_slices
    sequence = fill_sequence(list(pods), capacity, config.arrival) if config.mode is Mode.FILL else list(pods)
    inputs = {**inputs, "nodes": len(nodes), "gpus": sum(n.gpus for n in nodes), "pods": len(sequence)}
    results = []
    from tqdm import tqdm  # here, not at the top: every command builds this module's parser, serve included

    bar = tqdm(
        total=len(policies) * len(sequence),
        unit="pod",
        file=sys.stderr,
        disable=None if progress else True,  # None: quiet unless stderr is a terminal
        leave=False,
        dynamic_ncols=True,
    )
    dra = DraFleet(config.model) if config.world is World.DYNAMIC_FIRST_FIT else None
    with bar:
        for policy in policies:
            bar.set_description(policy.name)
            sim = Simulation(config, policy, nodes, dra)
            step = bar.update
            results.append(sim.run_fill(sequence, step) if config.mode is Mode.FILL else sim.run_churn(sequence, step))
        bound = None
        if config.mode is Mode.FILL and with_bound:
            bar.set_description("bound (CP-SAT)")
            bound = optimum(sequence, config.model, sum(n.gpus for n in nodes)) or trivial_bound(sequence, capacity)
        conserving = None
        if config.mode is Mode.FILL and config.world is not World.STATIC and work_conserving:
            bar.set_description("work-conserving bound (CP-SAT)")
            conserving = work_conserving_optimum(sequence, config.model, sum(n.gpus for n in nodes))
    return RunOutput(config, inputs, results, bound, conserving)


FILL_LEGEND = """\
alloc     allocated / cluster compute slices at the end     unalloc   compute slices left free
failed    pods that found no room                           1st-fail  arrived demand / cluster slices at the first
relayouts nodes re-partitioned                                        failure (- if none failed)
stranded  free compute slices no MIG instance can use       secs      the policy's wall time"""
BOUND_LEGEND = (
    "bound     the most that any placement of these pods could allocate (bound-wc: placing each pod that fits)"
)
CHURN_LEGEND = """\
placed    pods placed                                       waiting   pods still unplaced when the trace ends
relayouts nodes re-partitioned                              added     nodes the autoscaler added (removed: took away)
node-h    node-hours paid for, starting nodes included      gpu-h     the same in GPU-hours
wait-s    mean seconds from arrival to placement            p95-s     95th percentile of those seconds
secs      the policy's wall time"""


def _percentile(values: Sequence[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _or_dash(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _fill_table(output: RunOutput) -> list[str]:
    head = f"{'policy':<14}{'alloc':>8}{'unalloc':>9}{'placed':>8}{'failed':>8}{'1st-fail':>9}{'relayouts':>10}"
    lines = [head + f"{'stranded':>9}{'secs':>7}"]
    for r in output.results:
        f = r.figures()
        lines.append(
            f"{r.policy:<14}{f['allocated_slice_ratio']:>8.4f}{f['unallocated_slices']:>9}{f['pods_placed']:>8}"
            f"{f['pods_failed']:>8}{_or_dash(f['first_failure_demand_ratio'], '.3f'):>9}{f['relayouts']:>10}"
            f"{f['stranded_slices']:>9}{f['seconds']:>7.1f}"
        )
    if output.bound:
        b = output.bound
        kind = "exact" if b.get("exact") else "upper"
        lines.append(f"{'bound':<14}{b['allocated_slice_ratio']:>8.4f}  ({b['solver']}, {kind})")
    if output.work_conserving_bound:
        w = output.work_conserving_bound
        kind = "exact" if w["optimal"] else f"upper; best found {w['found_slices']} slices"
        lines.append(f"{'bound-wc':<14}{w['allocated_slice_ratio']:>8.4f}  ({w['solver']}, {kind})")
    return [*lines, "", FILL_LEGEND, *([BOUND_LEGEND] if output.bound else [])]


def _churn_table(output: RunOutput) -> list[str]:
    head = f"{'policy':<14}{'placed':>8}{'waiting':>8}{'relayouts':>10}{'added':>7}{'removed':>8}"
    lines = [head + f"{'node-h':>9}{'gpu-h':>9}{'wait-s':>8}{'p95-s':>8}{'secs':>7}"]
    for r in output.results:
        f = r.figures()
        p95 = _percentile([wait for _, wait in r.waits], 0.95)
        lines.append(
            f"{r.policy:<14}{f['pods_placed']:>8}{f['pods_failed']:>8}{f['relayouts']:>10}{f['nodes_added']:>7}"
            f"{f['nodes_removed']:>8}{f['node_hours']:>9.1f}{_or_dash(f['gpu_hours'], '.1f'):>9}"
            f"{_or_dash(f['mean_wait_s'], '.1f'):>8}{_or_dash(p95, '.1f'):>8}{f['seconds']:>7.1f}"
        )
    return [*lines, "", CHURN_LEGEND]


def table(output: RunOutput) -> str:
    """The figures per policy, the columns of the mode only, and a legend of the columns under them."""
    return "\n".join(_churn_table(output) if output.config.mode is Mode.CHURN else _fill_table(output))


def write_json(output: RunOutput, path: Path) -> None:
    path.write_text(json.dumps(output.document(), indent=2) + "\n")


# One look per drawn line, told apart without colour too (greyscale print, colour blindness).
_LOOKS = [
    {"color": f"C{i}", "linestyle": style, "marker": marker}
    for i, (style, marker) in enumerate(zip(["-", "--", "-.", ":"] * 3, "osD^vPX*h<>p"))
]


def _groups(results: Sequence[PolicyResult], key: Callable[[PolicyResult], object]) -> list[list[PolicyResult]]:
    """Policies whose lines would be drawn on top of each other, together: one line, every name in its label."""
    groups: dict[object, list[PolicyResult]] = {}
    for r in results:
        groups.setdefault(key(r), []).append(r)
    return list(groups.values())


def _marks(points: int, line: int, lines: int, marks: int = 12) -> tuple[int, int]:
    """``markevery`` for one of ``lines`` lines: its markers shifted, so lines that coincide show each mark."""
    step = max(1, points // marks)
    return (line * step // max(1, lines), step)


def _title(output: RunOutput) -> str:
    run = output.document()["run"]
    seed = "" if "seed" in str(run.get("input", "")) else f", seed {run['seed']}"
    return f"{run.get('input', '')}: {run['world']} world, {run['mode']} ({run['nodes']} nodes of {run['gpu']}{seed})"


def _plot_fill(plt: Any, output: RunOutput) -> Any:
    fig, ax = plt.subplots(figsize=(8, 5.5))
    groups = _groups(output.results, lambda r: tuple(r.curve))
    for n, (look, group) in enumerate(zip(_LOOKS, groups)):
        x = [a for a, _ in group[0].curve]
        y = [b for _, b in group[0].curve]
        name = " = ".join(r.policy for r in group)
        every = _marks(len(x), n, len(groups))
        ax.plot(x, y, markevery=every, markersize=5, label=f"{name} ({y[-1]:.3f})", **look)
    if output.bound:
        kind = "exact" if output.bound.get("exact") else "upper"
        ratio = output.bound["allocated_slice_ratio"]
        ax.axhline(ratio, color="black", linestyle="--", linewidth=1, label=f"bound, {kind} ({ratio:.3f})")
    if output.work_conserving_bound:
        ratio = output.work_conserving_bound["allocated_slice_ratio"]
        ax.axhline(ratio, color="grey", linestyle=":", linewidth=1, label=f"bound, work-conserving ({ratio:.3f})")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("arrived demand / cluster compute slices")
    ax.set_ylabel("allocated / cluster compute slices")
    ax.set_title(_title(output), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(title="policy (allocated at the end)", fontsize=9, title_fontsize=9)
    return fig


def _mean_waits(result: PolicyResult, edges: Sequence[float]) -> tuple[list[float], list[float]]:
    """Mean wait of the pods arriving in each bin between ``edges`` (seconds): bins without arrivals left out."""
    sums = [0.0] * (len(edges) - 1)
    counts = [0] * (len(edges) - 1)
    width = edges[1] - edges[0]
    for arrival, wait in result.waits:
        index = min(len(sums) - 1, int((arrival - edges[0]) / width))
        sums[index] += wait
        counts[index] += 1
    middles = [(edges[i] + width / 2) / 3600 for i, n in enumerate(counts) if n]
    return middles, [sums[i] / n for i, n in enumerate(counts) if n]


def _node_hours_over_time(counts: Sequence[tuple[float, int]]) -> tuple[list[float], list[float]]:
    hours = [counts[0][0] / 3600] if counts else []
    total = [0.0] if counts else []
    for (start, nodes), (end, _) in itertools.pairwise(counts):
        hours.append(end / 3600)
        total.append(total[-1] + nodes * (end - start) / 3600)
    return hours, total


def _plot_churn(plt: Any, output: RunOutput) -> Any:
    fig, (nodes_ax, hours_ax, wait_ax) = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
    ends = [t for r in output.results for t, _ in r.node_counts]
    start, end = (min(ends), max(ends)) if ends else (0.0, 1.0)
    edges = [start + (end - start) * i / 48 for i in range(49)] if end > start else [start, start + 1.0]
    groups = _groups(output.results, lambda r: (tuple(r.node_counts), tuple(r.waits)))
    for n, (look, group) in enumerate(zip(_LOOKS, groups)):
        first = group[0]
        mean_wait = "-" if first.mean_wait_s is None else f"{first.mean_wait_s:.1f} s"
        label = f"{' = '.join(r.policy for r in group)}: {first.node_hours or 0:.1f} node-h, mean wait {mean_wait}"
        x = [t / 3600 for t, _ in first.node_counts]
        y = [n for _, n in first.node_counts]
        nodes_ax.step(x, y, where="post", markevery=_marks(len(x), n, len(groups)), markersize=5, label=label, **look)
        hours, total = _node_hours_over_time(first.node_counts)
        hours_ax.plot(hours, total, markevery=_marks(len(hours), n, len(groups)), markersize=5, **look)
        middles, waits = _mean_waits(first, edges)
        wait_ax.plot(middles, waits, markersize=4, **look)
    counts = sorted(n for r in output.results for _, n in r.node_counts)
    if counts and counts[-1] > 5 * max(1, counts[len(counts) // 2]):
        # A start far above the rest (the trace's 1,213 nodes, scaled down to a few): linear would flatten it all.
        nodes_ax.set_yscale("symlog", linthresh=10)
        nodes_ax.set_ylabel("nodes (live and starting;\nlogarithmic above 10)")
    else:
        nodes_ax.set_ylabel("nodes (live and starting)")
    nodes_ax.set_title(_title(output), fontsize=10)
    nodes_ax.legend(fontsize=8, title="policy", title_fontsize=8)
    hours_ax.set_ylabel("node-hours so far")
    width_s = edges[1] - edges[0]
    width = f"{width_s / 60:.0f} min" if width_s < 7200 else f"{width_s / 3600:.0f} h"
    wait_ax.set_ylabel(f"mean wait (s) of the pods\narriving in each {width}")
    wait_ax.set_xlabel("hours (trace time)")
    for ax in (nodes_ax, hours_ax, wait_ax):
        ax.grid(alpha=0.3)
    return fig


def plot(output: RunOutput, path: Path) -> bool:
    """PNG of the run; False without matplotlib.

    Fill: allocated share against arrived demand. Churn: nodes, node-hours so far and waits over time.
    Policies whose lines coincide are drawn once and named together.
    """
    try:
        plt = pyplot()
    except MatplotlibMissing:
        return False
    fig = _plot_churn(plt, output) if output.config.mode is Mode.CHURN else _plot_fill(plt, output)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return True
