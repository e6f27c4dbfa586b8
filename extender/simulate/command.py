"""``mig-extender simulate``: arguments and the run (the CLI only wires them in).

Every mistake the arguments can hold is refused before the first policy runs, with one line naming it:
a run takes minutes, and an unwritable ``--json`` found at its end would throw them away.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ..model.catalog import GpuModel
from ..model.fragmentation import parse_mix
from ..model.migparted import DEFAULT_CONFIG, MigPartedError
from ..plotting import MatplotlibMissing, pyplot
from .baselines import policies_named
from .engine import Mode, SimConfig, World
from .run import plot, run, table, write_json
from .workload import NodeSpec, WorkloadError, read_nodes, read_pods, synthetic_pods


def _at_least_one(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {value!r}")
    return number


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {value!r}")
    return number


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"must be seconds, 0 or more, not {value!r}")
    return number


def add_arguments(parser: argparse.ArgumentParser, gpu_model: Callable[[str], GpuModel]) -> None:
    """The simulator's flags; ``gpu_model`` turns --gpu into a catalog model (the CLI's, with its errors)."""
    parser.add_argument(
        "--nodes", type=Path, metavar="CSV", help="node list CSV (sn,...,gpu,...): one node per row, its GPU count"
    )
    parser.add_argument(
        "--pods", type=Path, metavar="CSV", help="Alibaba trace pod list CSV (the MIG mapping: BENCHMARKS.md, Inputs)"
    )
    parser.add_argument("--synthetic", metavar="MIX", help="seeded synthetic pods of a mix (inference, uniform...)")
    parser.add_argument(
        "--synthetic-nodes",
        type=_at_least_one,
        default=100,
        metavar="N",
        help="node count for --synthetic without --nodes",
    )
    parser.add_argument(
        "--synthetic-gpus", type=_at_least_one, default=8, metavar="N", help="GPUs per synthetic (and added) node"
    )
    parser.add_argument(
        "--synthetic-pods", type=_at_least_one, default=50_000, metavar="N", help="pods generated for --synthetic"
    )
    parser.add_argument("--gpu", type=gpu_model, default="H100-80GB", metavar="MODEL", help="GPU model of every node")
    parser.add_argument("--world", choices=[w.value for w in World], default=World.STATIC.value)
    parser.add_argument("--relayout", choices=["on", "off"], default="on", help="static world: re-partition idle GPUs")
    parser.add_argument(
        "--rebalance",
        choices=["on", "off"],
        default="on",
        help="fill, static world with re-layout: ours also re-partitions idle GPUs toward the expected mix",
    )
    parser.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.FILL.value)
    parser.add_argument(
        "--arrival", type=_positive, default=1.3, metavar="RATIO", help="fill: submitted demand / cluster slices"
    )
    parser.add_argument("--policies", default="all", help="all, or names: random,spread,pack,best-fit,fgd,mig-extender")
    parser.add_argument(
        "--scoring",
        default="fragmentation",
        help="ours' node scoring strategy, as the extender's --scoring (fragmentation, fragmentation-spread...)",
    )
    parser.add_argument("--seed", type=int, default=1, metavar="N", help="seed of the synthetic pods and of random")
    parser.add_argument(
        "--layout",
        default="all-balanced",
        help="mig-parted config of the nodes at the start: all-balanced, all-disabled, all-enabled or all-<profile> "
        "(as the GPU Operator ships them)",
    )
    parser.add_argument("--prior", default="uniform", help="prior of the demand distribution (a mix)")
    parser.add_argument(
        "--relayout-delay", type=_seconds, default=300.0, metavar="S", help="churn: seconds a re-layout takes"
    )
    parser.add_argument(
        "--scale-up-after",
        type=_seconds,
        default=120.0,
        metavar="S",
        help="churn: seconds a pod waits before a node is added",
    )
    parser.add_argument(
        "--node-startup", type=_seconds, default=300.0, metavar="S", help="churn: seconds until an added node is ready"
    )
    parser.add_argument(
        "--scale-down-after",
        type=_seconds,
        default=600.0,
        metavar="S",
        help="churn: seconds a node stays empty before removal",
    )
    parser.add_argument("--no-autoscale", action="store_true", help="churn: fixed cluster")
    parser.add_argument("--no-bound", action="store_true", help="skip the CP-SAT bound")
    parser.add_argument(
        "--work-conserving-bound",
        action="store_true",
        help="fill, dynamic worlds: also the best a scheduler knowing every arrival but placing each pod that "
        "fits could do (CP-SAT; a few nodes only)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures here")
    parser.add_argument("--plot", type=Path, metavar="FILE", help="write a PNG plot here (needs matplotlib)")


def unwritable(path: Path) -> str | None:
    """Why ``path`` cannot be written (without creating it), or None."""
    folder = path.parent
    if path.is_dir():
        return f"{path} is a folder"
    if not folder.is_dir():
        return f"folder {folder} does not exist"
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f"{path} is not writable"
    return None


def layouts_for(model: GpuModel) -> list[str]:
    """The GPU Operator's default mig-parted configs that cover ``model``."""
    covering = []
    for name in DEFAULT_CONFIG.names():
        try:
            if DEFAULT_CONFIG.resolve(name, model, 0) is not None:
                covering.append(name)
        except MigPartedError:
            pass
    return covering


def _refusal(args: argparse.Namespace) -> str | None:
    """The first mistake of the arguments that the run would only meet late, or None."""
    if not (args.synthetic or args.pods):
        return "simulate needs --pods CSV or --synthetic MIX"
    if args.work_conserving_bound and (args.world == World.STATIC.value or args.mode != Mode.FILL.value):
        return (
            "--work-conserving-bound needs --mode fill and a dynamic world "
            "(dynamic-first-fit or dynamic-ideal): in the static world pods wait for re-layouts"
        )
    if args.layout not in layouts_for(args.gpu):
        return f"no --layout {args.layout!r} for {args.gpu.name}; known: {', '.join(layouts_for(args.gpu))}"
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        if path is not None and (problem := unwritable(path)):
            return f"cannot write {flag}: {problem}"
    if args.plot is not None:
        try:
            pyplot()
        except MatplotlibMissing as exc:
            return f"cannot draw --plot: {exc}"
    return None


def main(args: argparse.Namespace) -> int:
    model: GpuModel = args.gpu
    refusal = _refusal(args)
    if refusal:
        print(f"mig-extender: {refusal}", file=sys.stderr)
        return 2
    try:
        policies = policies_named(args.policies, args.scoring)
        parse_mix(args.prior)
        if args.synthetic:
            pods = synthetic_pods(model, args.synthetic, args.synthetic_pods, args.seed)
            label = f"synthetic {args.synthetic} seed {args.seed}"
        else:
            pods = read_pods(args.pods, model)
            label = f"trace {args.pods.name}"
        if args.nodes:
            nodes = read_nodes(args.nodes)
        else:
            nodes = [NodeSpec(f"sim-{i:05d}", args.synthetic_gpus) for i in range(args.synthetic_nodes)]
        for index in range(max(args.synthetic_gpus, *(n.gpus for n in nodes))):
            DEFAULT_CONFIG.resolve(args.layout, model, index)  # a profile the model lacks: said now, not later
    except (MigPartedError, WorkloadError, ValueError) as exc:  # CatalogError is a ValueError
        print(f"mig-extender: {exc}", file=sys.stderr)
        return 2
    config = SimConfig(
        model=model,
        world=World(args.world),
        mode=Mode(args.mode),
        relayout=args.relayout == "on",
        rebalance=args.rebalance == "on",
        arrival=args.arrival,
        seed=args.seed,
        layout=args.layout,
        prior=args.prior,
        relayout_delay_s=args.relayout_delay,
        scale_up_after_s=args.scale_up_after,
        node_startup_s=args.node_startup,
        scale_down_after_s=args.scale_down_after,
        autoscale=not args.no_autoscale,
        new_node_gpus=args.synthetic_gpus,
    )
    output = run(
        config,
        policies,
        nodes,
        pods,
        {"input": label, "scoring": args.scoring},
        with_bound=not args.no_bound,
        work_conserving=args.work_conserving_bound,
        progress=True,
    )
    print(table(output))
    try:
        if args.json:
            write_json(output, args.json)
        if args.plot:
            plot(output, args.plot)
    except OSError as exc:  # checked before the run; the disk can still fill or a folder go away since
        print(f"mig-extender: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0
