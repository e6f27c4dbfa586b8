"""Warm headroom over many seeds: every policy with and without placeholders, churn, trace and inference mix.

    python scripts/headroom_sweep.py run DIR --trace PATH [--seeds 1-10] [--inputs trace,inference]
        [--worlds static,dynamic-first-fit,dynamic-ideal] [--variants off,on1,on4,ours2,ours8]
    python scripts/headroom_sweep.py summary DIR      # Markdown: medians and ranges, the goal, the curve

Each run is what ``mig-extender simulate --mode churn`` does (the trace: ``--nodes/--pods`` of PATH; the
inference mix: ``--synthetic inference --synthetic-nodes 20 --synthetic-pods 5000``), ``--headroom on
--headroom-size X`` for the variants that have a size, everything else at its default. A variant is a set of
policies and a size: ``off`` (all, no headroom), ``onX`` (all, size X), ``oursX`` (ours only, size X; the
points of the trade-off curve), ``shapedX`` (ours only, MIG-shaped placeholders in the dynamic worlds too).
The summary names each run by what it held: no headroom, MIG-shaped placeholders or whole GPUs, and the
size. Each (input, world, seed, variant) is one JSON document in DIR, written when done and skipped when
present, so an interrupted sweep resumes and a partial one can be summarised.
Runs one simulation at a time, seed-major (every input and world of seed 1, then seed 2...).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from extender.model.catalog import model_named
from extender.model.headroom import HeadroomConfig
from extender.settings import HeadroomSettings
from extender.simulate.baselines import policies_named
from extender.simulate.engine import Mode, SimConfig, World
from extender.simulate.headroom import HeadroomSim
from extender.simulate.run import run, write_json
from extender.simulate.workload import NodeSpec, read_nodes, read_pods, synthetic_pods

OURS = "mig-extender"
FIGURES = [("node_hours", "node-h", 0), ("mean_wait_s", "mean wait s", 2), ("p95_wait_s", "P95 wait s", 1)]


def _seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    return seeds


def _variant(name: str) -> tuple[str, float | None, bool]:
    """(policies, headroom size or None, ours MIG-shaped in the dynamic worlds too)."""
    if name == "off":
        return "all", None, False
    for prefix, policies, shaped in (("ours", OURS, False), ("shaped", OURS, True), ("on", "all", False)):
        if name.startswith(prefix):
            return policies, float(name[len(prefix) :]), shaped
    raise ValueError(f"unknown variant {name!r}: off, onX, oursX or shapedX")


def run_sweep(args: argparse.Namespace) -> int:
    model = model_named("H100-80GB")
    out: Path = args.dir
    out.mkdir(parents=True, exist_ok=True)
    defaults = HeadroomSettings()
    inputs: dict[str, tuple[list[NodeSpec], Any]] = {}
    if "trace" in args.inputs:
        if args.trace is None:
            print("headroom_sweep: the trace input needs --trace PATH", file=sys.stderr)
            return 2
        nodes = read_nodes(args.trace / "openb_node_list_gpu_node.csv")
        inputs["trace"] = (nodes, lambda seed: read_pods(args.trace / "openb_pod_list_default.csv", model))
    if "inference" in args.inputs:
        nodes = [NodeSpec(f"sim-{i:05d}", 8) for i in range(20)]
        inputs["inference"] = (nodes, lambda seed: synthetic_pods(model, "inference", 5000, seed))
    for seed in _seeds(args.seeds):
        for name, (nodes, pods_of) in inputs.items():
            pods = None
            for world in args.worlds:
                for variant in args.variants:
                    path = out / f"{name}-{world}-s{seed}-{variant}.json"
                    if path.exists():
                        continue
                    pods = pods if pods is not None else pods_of(seed)
                    policies, size, shaped = _variant(variant)
                    headroom = None
                    if size is not None:
                        planner = HeadroomConfig(
                            lead_time_s=120.0 + 300.0,  # the churn defaults: scale-up delay + node start-up
                            coverage=defaults.coverage,
                            max_gpus=defaults.max_gpus,
                            max_fleet_share=defaults.max_fleet_share,
                            size=size,
                        )
                        headroom = HeadroomSim(planner, defaults.rate_half_life_s, defaults.interval_s, shaped)
                    config = SimConfig(model=model, world=World(world), mode=Mode.CHURN, seed=seed, headroom=headroom)
                    started = time.perf_counter()
                    result = run(config, policies_named(policies), nodes, pods, {"input": name}, with_bound=False)
                    write_json(result, path)
                    print(f"{path.name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return 0


def _load(folder: Path) -> dict[tuple[str, str], dict[tuple[str, str], list[dict[str, Any]]]]:
    """(input, world) -> (variant, policy) -> figures per seed, in seed order."""
    table: dict[tuple[str, str], dict[tuple[str, str], list[dict[str, Any]]]] = {}
    files = sorted(folder.glob("*.json"), key=lambda p: (_seed_of(p), p.name))
    for path in files:
        document = json.loads(path.read_text())
        run_info = document["run"]
        key = (run_info["input"], run_info["world"])
        headroom = run_info.get("headroom")
        for policy, figures in document["policies"].items():
            # Named by what was run (the file's name says what was asked): no headroom, or its kind and size.
            variant = "off"
            if headroom is not None:
                size = headroom["planner"]["size"]
                variant = f"{'MIG-shaped' if figures.get('headroom') == 'mig-shaped' else 'whole GPUs'} x{size:g}"
            rows = table.setdefault(key, {}).setdefault((variant, policy), [])
            if all(r["seed"] != run_info["seed"] for r in rows):  # the same run asked twice counts once
                rows.append({"seed": run_info["seed"], **figures})
    return table


def _seed_of(path: Path) -> int:
    """The seed in a document's name (``trace-static-s3-on1.json``)."""
    found = re.search(r"-s(\d+)-[a-z]+[0-9.]*$", path.stem)
    if found is None:
        raise ValueError(f"{path.name} is not a document of this sweep (INPUT-WORLD-sSEED-VARIANT.json)")
    return int(found.group(1))


def _cell(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _median(rows: list[dict[str, Any]], figure: str) -> float:
    return statistics.median(float(r[figure] or 0.0) for r in rows)


def summary(args: argparse.Namespace) -> int:
    table = _load(args.dir)
    lines = [f"machine: {platform.machine()} {platform.processor() or ''}, Python {platform.python_version()}", ""]
    for (name, world), runs in sorted(table.items()):
        lines += [f"#### {name}, {world}", ""]
        lines.append("| variant | policy | seeds | " + " | ".join(label for _, label, _ in FIGURES) + " |")
        lines.append("|---|---|---|" + "---|" * len(FIGURES))
        # By median node-hours: ours at each headroom size and every baseline on one axis, the trade-off curve.
        for (variant, policy), rows in sorted(runs.items(), key=lambda kv: (_median(kv[1], "node_hours"), kv[0])):
            cells = [_cell([float(r[f] or 0.0) for r in rows], digits) for f, _, digits in FIGURES]
            lines.append(f"| {variant} | {policy} | {len(rows)} | " + " | ".join(cells) + " |")
        baselines = {k: v for k, v in runs.items() if k[1] != OURS}
        ours = {k: v for k, v in runs.items() if k[1] == OURS and k[0] != "off"}
        if baselines and ours:
            fewest = min(baselines.items(), key=lambda kv: _median(kv[1], "node_hours"))
            waits = min(baselines.items(), key=lambda kv: _median(kv[1], "mean_wait_s"))
            p95 = min(_median(v, "p95_wait_s") for v in baselines.values())
            lines += [
                "",
                f"Baselines (every variant): fewest node-hours {fewest[0][1]} {fewest[0][0]} "
                f"{_median(fewest[1], 'node_hours'):.0f} h; lowest mean wait {waits[0][1]} {waits[0][0]} "
                f"{_median(waits[1], 'mean_wait_s'):.2f} s ({_median(waits[1], 'node_hours'):.0f} h); "
                f"lowest P95 {p95:.1f} s.",
            ]
            for (variant, _), rows in sorted(ours.items()):
                hours, wait, tail = (_median(rows, f) for f in ("node_hours", "mean_wait_s", "p95_wait_s"))
                met = (
                    hours < _median(fewest[1], "node_hours")
                    and wait <= _median(waits[1], "mean_wait_s")
                    and tail <= p95
                )
                verdict = "met" if met else "not met"
                lines.append(f"- ours {variant}: {hours:.0f} h, {wait:.2f} s, P95 {tail:.1f} s: goal {verdict}")
        lines.append("")
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sweep = commands.add_parser("run")
    sweep.add_argument("dir", type=Path)
    sweep.add_argument("--trace", type=Path, help="the folder holding the Alibaba trace's CSV files")
    sweep.add_argument("--seeds", default="1-10")
    sweep.add_argument("--inputs", type=lambda t: t.split(","), default=["trace", "inference"])
    sweep.add_argument(
        "--worlds", type=lambda t: t.split(","), default=[w.value for w in World], help="comma-separated worlds"
    )
    sweep.add_argument("--variants", type=lambda t: t.split(","), default=["off", "on1", "on4", "ours2", "ours8"])
    summarise = commands.add_parser("summary")
    summarise.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "run":
        for variant in args.variants:
            _variant(variant)
        return run_sweep(args)
    return summary(args)


if __name__ == "__main__":
    sys.exit(main())
