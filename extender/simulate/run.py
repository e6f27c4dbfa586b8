"""Run every policy on one workload and world; the table, the JSON document and the plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..plotting import MatplotlibMissing, pyplot
from .baselines import PolicySpec
from .bound import optimum, trivial_bound, work_conserving_optimum
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
) -> RunOutput:
    """Every policy on the workload; ``work_conserving`` adds that bound (fill mode, dynamic worlds)."""
    capacity = sum(n.gpus for n in nodes) * config.model.compute_slices
    sequence = fill_sequence(list(pods), capacity, config.arrival) if config.mode is Mode.FILL else list(pods)
    inputs = {**inputs, "nodes": len(nodes), "gpus": sum(n.gpus for n in nodes), "pods": len(sequence)}
    results = []
    for policy in policies:
        sim = Simulation(config, policy, nodes)
        results.append(sim.run_fill(sequence) if config.mode is Mode.FILL else sim.run_churn(sequence))
    bound = None
    if config.mode is Mode.FILL and with_bound:
        bound = optimum(sequence, config.model, sum(n.gpus for n in nodes)) or trivial_bound(sequence, capacity)
    conserving = None
    if config.mode is Mode.FILL and config.world is not World.STATIC and work_conserving:
        conserving = work_conserving_optimum(sequence, config.model, sum(n.gpus for n in nodes))
    return RunOutput(config, inputs, results, bound, conserving)


def table(output: RunOutput) -> str:
    churn = output.config.mode is Mode.CHURN
    head = f"{'policy':<14}{'alloc':>8}{'unalloc':>9}{'placed':>8}{'failed':>8}{'1st-fail':>9}{'relayouts':>10}"
    head += f"{'node-h':>11}{'gpu-h':>11}{'wait-s':>9}" if churn else f"{'stranded':>9}"
    head += f"{'secs':>7}"
    lines = [head]
    for r in output.results:
        f = r.figures()
        first = "-" if f["first_failure_demand_ratio"] is None else f"{f['first_failure_demand_ratio']:.3f}"
        line = (
            f"{r.policy:<14}{f['allocated_slice_ratio']:>8.4f}{f['unallocated_slices']:>9}{f['pods_placed']:>8}"
            f"{f['pods_failed']:>8}{first:>9}{f['relayouts']:>10}"
        )
        if churn:
            wait = "-" if f["mean_wait_s"] is None else f"{f['mean_wait_s']:.1f}"
            line += f"{f['node_hours']:>11.1f}{f['gpu_hours']:>11.1f}{wait:>9}"
        else:
            line += f"{f['stranded_slices']:>9}"
        lines.append(line + f"{f['seconds']:>7.1f}")
    if output.bound:
        b = output.bound
        kind = "exact" if b.get("exact") else "upper"
        lines.append(f"{'bound':<14}{b['allocated_slice_ratio']:>8.4f}  ({b['solver']}, {kind})")
    if output.work_conserving_bound:
        w = output.work_conserving_bound
        kind = "exact" if w["optimal"] else f"upper; best found {w['found_slices']} slices"
        lines.append(f"{'bound-wc':<14}{w['allocated_slice_ratio']:>8.4f}  ({w['solver']}, {kind})")
    return "\n".join(lines)


def write_json(output: RunOutput, path: Path) -> None:
    path.write_text(json.dumps(output.document(), indent=2) + "\n")


def plot(output: RunOutput, path: Path) -> bool:
    """PNG of allocated share against arrived demand (and node count in churn); False without matplotlib."""
    try:
        plt = pyplot()
    except MatplotlibMissing:
        return False
    churn = output.config.mode is Mode.CHURN
    fig, axes = plt.subplots(1, 2 if churn else 1, figsize=(13 if churn else 7, 5), squeeze=False)
    ax = axes[0][0]
    for r in output.results:
        ax.plot([a for a, _ in r.curve], [b for _, b in r.curve], label=r.policy)
    if output.bound:
        ax.axhline(output.bound["allocated_slice_ratio"], color="black", linestyle="--", label="bound")
    ax.set_xlabel("arrived demand / cluster compute slices")
    ax.set_ylabel("allocated / cluster compute slices")
    run = output.document()["run"]
    ax.set_title(f"{run['world']} {run['mode']} {run.get('input', '')} ({run['gpu']}, seed {run['seed']})")
    ax.grid(alpha=0.3)
    ax.legend()
    if churn:
        ax2 = axes[0][1]
        for r in output.results:
            ax2.step([t / 3600 for t, _ in r.node_counts], [n for _, n in r.node_counts], where="post", label=r.policy)
        ax2.set_xlabel("hours")
        ax2.set_ylabel("nodes")
        ax2.grid(alpha=0.3)
        ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
