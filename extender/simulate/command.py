"""``mig-extender simulate``: arguments and the run (the CLI only wires them in)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..model.catalog import CatalogError, model_named
from ..model.fragmentation import parse_mix
from ..plotting import MATPLOTLIB_MISSING
from .baselines import policies_named
from .engine import Mode, SimConfig, World
from .run import plot, run, table, write_json
from .workload import NodeSpec, WorkloadError, read_nodes, read_pods, synthetic_pods


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", type=Path, help="node list CSV (sn,...,gpu,...): one node per row, its GPU count")
    parser.add_argument("--pods", type=Path, help="Alibaba trace pod list CSV (the MIG mapping of the data README)")
    parser.add_argument("--synthetic", metavar="MIX", help="seeded synthetic pods of a mix (inference, uniform...)")
    parser.add_argument("--synthetic-nodes", type=int, default=100, help="node count for --synthetic without --nodes")
    parser.add_argument("--synthetic-gpus", type=int, default=8, help="GPUs per synthetic node")
    parser.add_argument("--synthetic-pods", type=int, default=50_000, help="pods generated for --synthetic")
    parser.add_argument("--gpu", default="H100-80GB", help="GPU model of every node (default H100-80GB)")
    parser.add_argument("--world", choices=[w.value for w in World], default=World.STATIC.value)
    parser.add_argument("--relayout", choices=["on", "off"], default="on", help="static world: re-partition idle GPUs")
    parser.add_argument(
        "--rebalance",
        choices=["on", "off"],
        default="on",
        help="fill, static world with re-layout: ours also re-partitions idle GPUs toward the expected mix",
    )
    parser.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.FILL.value)
    parser.add_argument("--arrival", type=float, default=1.3, help="fill: submitted demand / cluster slices")
    parser.add_argument("--policies", default="all", help="all, or names: random,spread,pack,best-fit,fgd,mig-extender")
    parser.add_argument(
        "--scoring",
        default="fragmentation",
        help="ours' node scoring strategy, as the extender's --scoring (fragmentation, fragmentation-spread...)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--layout", default="all-balanced", help="mig-parted config of static nodes at the start")
    parser.add_argument("--prior", default="uniform", help="prior of the demand distribution (a mix)")
    parser.add_argument("--relayout-delay", type=float, default=300.0, help="churn: seconds a re-layout takes")
    parser.add_argument("--scale-up-after", type=float, default=120.0, help="churn: wait before adding a node")
    parser.add_argument("--node-startup", type=float, default=300.0, help="churn: seconds until a new node is ready")
    parser.add_argument("--scale-down-after", type=float, default=600.0, help="churn: empty this long, removed")
    parser.add_argument("--no-autoscale", action="store_true", help="churn: fixed cluster")
    parser.add_argument("--no-bound", action="store_true", help="skip the CP-SAT bound")
    parser.add_argument(
        "--work-conserving-bound",
        action="store_true",
        help="fill, dynamic worlds: also the best a scheduler knowing every arrival but placing each pod that "
        "fits could do (CP-SAT; a few nodes only)",
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--plot", type=Path, help="write a PNG plot here (needs matplotlib)")


def main(args: argparse.Namespace) -> int:
    try:
        model = model_named(args.gpu)
        policies = policies_named(args.policies, args.scoring)
        parse_mix(args.prior)
        if args.synthetic:
            pods = synthetic_pods(model, args.synthetic, args.synthetic_pods, args.seed)
            label = f"synthetic {args.synthetic} seed {args.seed}"
        elif args.pods:
            pods = read_pods(args.pods, model)
            label = f"trace {args.pods.name}"
        else:
            print("mig-extender: simulate needs --pods CSV or --synthetic MIX", file=sys.stderr)
            return 2
        if args.work_conserving_bound and (args.world == World.STATIC.value or args.mode != Mode.FILL.value):
            print(
                "mig-extender: --work-conserving-bound needs --mode fill and a dynamic world "
                "(dynamic-first-fit or dynamic-ideal): in the static world pods wait for re-layouts",
                file=sys.stderr,
            )
            return 2
        if args.nodes:
            nodes = read_nodes(args.nodes)
        else:
            nodes = [NodeSpec(f"sim-{i:05d}", args.synthetic_gpus) for i in range(args.synthetic_nodes)]
    except (CatalogError, WorkloadError, ValueError) as exc:
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
    )
    print(table(output))
    if args.json:
        write_json(output, args.json)
    if args.plot and not plot(output, args.plot):
        print(f"mig-extender: no plot: {MATPLOTLIB_MISSING}", file=sys.stderr)
    return 0
