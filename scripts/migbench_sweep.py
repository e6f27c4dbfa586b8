"""MIGBench's workloads over many seeds, both geometries: mean, median and range of every policy's figures.

    python scripts/migbench_sweep.py [--workload migbench-saturated] [--seeds 20] [--first-seed 20260914]
        [--geometries migbench,catalog,migbench-dra] [--json out.json]

Each seed is one trace (MIGBench's generator, :mod:`extender.simulate.migbench`), replayed by every policy of
each geometry on MIGBench's cluster (2 nodes x 4 H100), exactly as ``mig-extender simulate --workload W
--seed S --geometry G`` does. Prints a Markdown table per geometry: per figure the mean over the seeds, then
the median and the range. MIGBench's published tables give means (its 20 seeds, 20260914 on).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from extender.model.catalog import model_named
from extender.model.migbench import SLOTS
from extender.simulate.baselines import policies_named
from extender.simulate.migbench import (
    DEFAULT_GPUS,
    DEFAULT_NODES,
    DEFAULT_SEED,
    WORKLOADS,
    Geometry,
    generate,
    policy_names,
    run_migbench,
    workload_spec,
)
from extender.simulate.workload import NodeSpec

FIGURES = [
    ("gpc_utilization", "GPC util", "%"),
    ("memory_utilization", "mem util", "%"),
    ("physical_fragmentation", "physical frag", "%"),
    ("stranded_capacity", "stranded", "%"),
    ("request_fragmented_jobs", "request-fragmented jobs", ""),
    ("wait_mean_s", "mean wait s", ""),
    ("wait_p95_s", "P95 wait s", ""),
    ("wait_p99_s", "P99 wait s", ""),
    ("makespan_s", "makespan s", ""),
    ("throughput_per_h", "jobs/h", ""),
]


def sweep(workload: str, seeds: list[int], geometries: list[Geometry]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per geometry, per policy: the figures of each seed, in seed order."""
    model = model_named("H100-80GB")
    nodes = [NodeSpec(f"mig-node-{i + 1:03d}", DEFAULT_GPUS) for i in range(DEFAULT_NODES)]
    known = {p.name: p for p in policies_named("all")}
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for seed in seeds:
        spec = workload_spec(workload, DEFAULT_NODES * DEFAULT_GPUS * SLOTS, seed=seed)
        jobs = generate(spec)
        for geometry in geometries:
            names = policy_names("all", geometry, known)
            run = run_migbench(jobs, nodes, spec.profiles, geometry, model, names, known, seed, {"seed": seed})
            for result in run.results:
                out.setdefault(str(geometry), {}).setdefault(result.policy, []).append(result.figures())
        print(f"seed {seed} done", file=sys.stderr)
    return out


def _cell(values: list[float], unit: str) -> str:
    scale, digits = (100.0, 2) if unit == "%" else (1.0, 1)
    mean = statistics.fmean(values) * scale
    median = statistics.median(values) * scale
    low, high = min(values) * scale, max(values) * scale
    return f"{mean:.{digits}f} ({median:.{digits}f}; {low:.{digits}f}-{high:.{digits}f})"


def markdown(figures: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    lines = []
    for geometry, policies in figures.items():
        lines += [f"geometry {geometry}: mean (median; min-max) over {len(next(iter(policies.values())))} seeds", ""]
        lines.append("| policy | " + " | ".join(label + (" %" if unit else "") for _, label, unit in FIGURES) + " |")
        lines.append("|---" * (len(FIGURES) + 1) + "|")
        for policy, runs in policies.items():
            cells = [_cell([float(r[key]) for r in runs], unit) for key, _, unit in FIGURES]
            lines.append(f"| {policy} | " + " | ".join(cells) + " |")
        backlog = min(float(r["backlog_fraction"]) for runs in policies.values() for r in runs)
        peak = min(float(r["peak_gpc_utilization"]) for runs in policies.values() for r in runs)
        lines += [
            "",
            f"lowest backlog fraction {100 * backlog:.2f} %, lowest peak GPC utilisation {100 * peak:.2f} %",
            "",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=WORKLOADS, default="migbench-saturated")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--geometries", default="migbench,catalog,migbench-dra")
    parser.add_argument("--json", type=Path, help="write every seed's figures here")
    args = parser.parse_args()
    geometries = [Geometry(g.strip()) for g in args.geometries.split(",") if g.strip()]
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    started = time.perf_counter()
    figures = sweep(args.workload, seeds, geometries)
    print(f"{args.workload}, seeds {seeds[0]}-{seeds[-1]}, Python {platform.python_version()}, "
          f"{time.perf_counter() - started:.0f} s\n")  # fmt: skip
    print(markdown(figures))
    if args.json:
        args.json.write_text(json.dumps({"workload": args.workload, "seeds": seeds, "figures": figures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
