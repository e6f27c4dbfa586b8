#!/usr/bin/env python3
"""The defragmentation goal (issue 21) over seeds: churn with and without ``--defrag``, every input and world.

Runs ``mig-extender simulate --mode churn --policies mig-extender`` one process at a time (under ``nice``),
seed after seed, so that a sweep cut short still covers every input and world for its first seeds. Each run's
JSON goes to ``OUT/runs/``; a run whose JSON exists is not run again, so the sweep resumes where it stopped.
After every run ``OUT/summary.json`` is rewritten: per input, world and variant the median and range of each
figure over the seeds done, and per input and world the goal (BENCHMARKS.md, "Defragmentation"):
fragmentation waits cut by at least half, at most 1 eviction per 100 pods placed, lost work under 1 % of the
GPU-hours, and no more node-hours than without defragmentation (each as the median over seeds of the paired
figures of one seed).

    nice python scripts/defrag_sweep.py --trace-dir PATH --out /tmp/defrag-sweep --seeds 1-10 &
    python scripts/defrag_sweep.py --trace-dir PATH --out /tmp/defrag-sweep --seeds 1-10 --table
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

INPUTS = {
    "inference": ["--synthetic", "inference", "--synthetic-nodes", "20", "--synthetic-pods", "5000"],
    "trace": ["--nodes", "{trace}/openb_node_list_gpu_node.csv", "--pods", "{trace}/openb_pod_list_default.csv"],
}
WORLDS = ("static", "dynamic-first-fit", "dynamic-ideal")
VARIANTS = {
    "off": ["--defrag", "off"],
    "on": ["--defrag", "on"],
    # Earlier than the autoscaler (120 s), pods movable after 10 minutes, no plan losing over 30 minutes of run.
    "eager": ["--defrag", "on", "--defrag-wait", "60", "--defrag-cooldown", "600", "--defrag-max-lost", "1800"],
    # Only before the autoscaler starts a node for the pod (its check at 120 s): tries at 30 and 90 s.
    "early": [
        *("--defrag", "on", "--defrag-wait", "30", "--defrag-cooldown", "600"),
        *("--defrag-max-lost", "1800", "--defrag-give-up", "119"),
    ],
    "consolidation": ["--defrag", "off", "--consolidation", "when-underutilized"],
}
FIGURES = (
    "mean_wait_s",
    "p95_wait_s",
    "max_wait_s",
    "node_hours",
    "gpu_hours",
    "evictions",
    "evictions_per_100_pods",
    "lost_gpu_hours",
    "lost_share_of_gpu_hours",
    "fragmentation_wait_s",
    "fragmentation_wait_relayout_s",
    "fragmented_pods",
    "defrag_plans",
    "seconds",
)


def seeds_of(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def command(input_name: str, world: str, variant: str, seed: int, trace: str, json_path: Path) -> list[str]:
    args = [a.format(trace=trace) for a in INPUTS[input_name]]
    return [
        *("nice", "-n", "10", sys.executable, "-m", "extender", "simulate"),
        *args,
        *("--gpu", "H100-80GB", "--world", world, "--mode", "churn", "--policies", "mig-extender"),
        *("--seed", str(seed), "--json", str(json_path)),
        *VARIANTS[variant],
    ]


def figures_of(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text())["policies"]["mig-extender"])


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summary(out: Path, seeds: list[int], variants: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for input_name in INPUTS:
        for world in WORLDS:
            runs: dict[str, dict[int, dict[str, Any]]] = {}
            for variant in variants:
                for seed in seeds:
                    path = out / "runs" / f"{input_name}-{world}-{variant}-{seed}.json"
                    if path.exists():
                        runs.setdefault(variant, {})[seed] = figures_of(path)
            if not runs:
                continue
            entry: dict[str, Any] = {}
            for variant, by_seed in runs.items():
                entry[variant] = {
                    f: spread([float(r[f]) for r in by_seed.values() if r.get(f) is not None])
                    for f in FIGURES
                    if any(r.get(f) is not None for r in by_seed.values())
                }
            entry["goal"] = {v: goal(runs.get("off", {}), runs[v]) for v in runs if v not in ("off", "consolidation")}
            entry["why"] = {v: why(by_seed) for v, by_seed in runs.items()}
            found[f"{input_name} / {world}"] = entry
    return found


def why(by_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """What stops defragmentation: attempts without a plan by cause (summed over seeds), the share of the
    fragmentation waits spent during a re-layout for the pod, and those waits by demand (summed)."""
    causes: dict[str, int] = {}
    demands: dict[str, float] = {}
    shares = []
    for figures in by_seed.values():
        for cause, count in (figures.get("defrag_no_plan") or {}).items():
            causes[cause] = causes.get(cause, 0) + count
        for demand, seconds in (figures.get("fragmentation_wait_s_by_demand") or {}).items():
            demands[demand] = demands.get(demand, 0.0) + seconds
        if figures.get("fragmentation_wait_s") and figures.get("fragmentation_wait_relayout_s") is not None:
            shares.append(figures["fragmentation_wait_relayout_s"] / figures["fragmentation_wait_s"])
    total = sum(demands.values()) or 1.0
    return {
        "no_plan": dict(sorted(causes.items(), key=lambda kv: -kv[1])),
        "plans": sum(int(f.get("defrag_plans") or 0) for f in by_seed.values()),
        "fragmentation_wait_in_relayout_share": spread(shares) if shares else None,
        "fragmentation_wait_share_by_demand": {
            d: round(v / total, 3) for d, v in sorted(demands.items(), key=lambda kv: -kv[1])[:4]
        },
    }


def goal(off: dict[int, dict[str, Any]], on: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The goal's four figures over the seeds run both ways, and whether each is met (medians)."""
    paired = sorted(set(off) & set(on))
    if not paired:
        return {}
    cut = [
        1 - on[s]["fragmentation_wait_s"] / off[s]["fragmentation_wait_s"]
        for s in paired
        if off[s]["fragmentation_wait_s"]
    ]
    node_hours = [on[s]["node_hours"] / off[s]["node_hours"] - 1 for s in paired]
    evictions = [on[s]["evictions_per_100_pods"] or 0.0 for s in paired]
    lost = [on[s]["lost_share_of_gpu_hours"] or 0.0 for s in paired]
    med = statistics.median
    return {
        "seeds": len(paired),
        "fragmentation_wait_cut": spread(cut) if cut else None,
        "node_hours_change": spread(node_hours),
        "evictions_per_100_pods": spread(evictions),
        "lost_share_of_gpu_hours": spread(lost),
        "met": {
            "fragmentation_wait_cut_at_least_half": bool(cut) and med(cut) >= 0.5,
            "at_most_1_eviction_per_100_pods": med(evictions) <= 1.0,
            "lost_under_1_percent": med(lost) < 0.01,
            "no_more_node_hours": med(node_hours) <= 0.0,
        },
    }


def _range(figure: dict[str, float] | None, spec: str, scale: float = 1.0) -> str:
    if not figure:
        return "-"
    low, mid, high = (format(figure[k] * scale, spec) for k in ("min", "median", "max"))
    return mid if low == high else f"{mid} ({low} to {high})"


def table(found: dict[str, Any]) -> str:
    """Markdown rows: per input, world and variant, medians (ranges) over the seeds done."""
    head = (
        "| input / world | variant | seeds | fragmentation wait, s | fragmented pods | mean wait, s | P95 wait, s "
        "| node-hours | evictions / 100 pods | lost, % of GPU-h |"
    )
    lines = [head, "|" + "---|" * 10]
    for name, entry in found.items():
        for variant in VARIANTS:
            figures = entry.get(variant)
            if not figures:
                continue
            seeds = int(figures["node_hours"]["n"])
            lines.append(
                f"| {name} | {variant} | {seeds} | {_range(figures.get('fragmentation_wait_s'), ',.0f')} "
                f"| {_range(figures.get('fragmented_pods'), '.0f')} | {_range(figures.get('mean_wait_s'), '.1f')} "
                f"| {_range(figures.get('p95_wait_s'), '.0f')} | {_range(figures.get('node_hours'), ',.0f')} "
                f"| {_range(figures.get('evictions_per_100_pods'), '.2f')} "
                f"| {_range(figures.get('lost_share_of_gpu_hours'), '.2f', 100)} |"
            )
    lines += [
        "",
        "| input / world | variant | fragmentation wait cut | node-hours change | goal met |",
        "|---|---|---|---|---|",
    ]
    for name, entry in found.items():
        for variant, goal_figures in entry.get("goal", {}).items():
            if not goal_figures:
                continue
            met = ", ".join(k for k, v in goal_figures["met"].items() if v) or "none"
            lines.append(
                f"| {name} | {variant} | {_range(goal_figures['fragmentation_wait_cut'], '.0%')} "
                f"| {_range(goal_figures['node_hours_change'], '+.1%')} | {met} |"
            )
    lines += [
        "",
        "| input / world | variant | plans | tries without a plan, by cause | in re-layouts | by demand |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in found.items():
        for variant, reasons in entry.get("why", {}).items():
            causes = ", ".join(f"{c} {n:,}" for c, n in reasons["no_plan"].items()) or "-"
            demands = ", ".join(f"{d} {v:.0%}" for d, v in reasons["fragmentation_wait_share_by_demand"].items())
            share = _range(reasons["fragmentation_wait_in_relayout_share"], ".0%")
            lines.append(f"| {name} | {variant} | {reasons['plans']} | {causes} | {share} | {demands} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace-dir", required=True, help="folder of the Alibaba trace's csv files")
    parser.add_argument("--out", type=Path, default=Path("/tmp/defrag-sweep"))
    parser.add_argument("--seeds", default="1-10", help="a seed or a range: 1-10")
    parser.add_argument("--inputs", default=",".join(INPUTS))
    parser.add_argument("--worlds", default=",".join(WORLDS))
    parser.add_argument("--variants", default="off,on,eager", help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--table", action="store_true", help="print the runs done as Markdown rows and stop")
    args = parser.parse_args()
    if args.table:  # from the runs done so far, with the figures of this version of the script
        print(table(summary(args.out, seeds_of(args.seeds), list(VARIANTS))))
        return 0
    seeds = seeds_of(args.seeds)
    inputs = args.inputs.split(",")
    worlds = args.worlds.split(",")
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS] + [i for i in inputs if i not in INPUTS]
    unknown += [w for w in worlds if w not in WORLDS]
    if unknown:
        print(f"defrag_sweep: unknown {', '.join(unknown)}", file=sys.stderr)
        return 2
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for input_name in inputs:
            for world in worlds:
                for variant in variants:
                    path = args.out / "runs" / f"{input_name}-{world}-{variant}-{seed}.json"
                    if path.exists():
                        continue
                    partial = path.with_suffix(".part")
                    begun = time.monotonic()
                    done = subprocess.run(
                        command(input_name, world, variant, seed, args.trace_dir, partial),
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                        text=True,
                        check=False,
                    )
                    if done.returncode != 0:
                        print(f"{path.name}: failed: {done.stderr.strip()[-500:]}", file=sys.stderr)
                        continue
                    partial.rename(path)
                    print(f"{path.name}: {time.monotonic() - begun:.0f} s", flush=True)
                    text = json.dumps(summary(args.out, seeds, list(VARIANTS)), indent=1)
                    (args.out / "summary.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
