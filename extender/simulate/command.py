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
from ..model.headroom import HeadroomConfig
from ..model.migbench import SLOTS
from ..model.migparted import DEFAULT_CONFIG, MigPartedError
from ..plotting import MatplotlibMissing, pyplot
from ..settings import HeadroomSettings
from . import migbench as mb
from .baselines import policies_named
from .consolidation import Consolidation
from .defrag import DefragLimits
from .engine import Mode, SimConfig, World
from .headroom import HeadroomSim
from .migbench import PROFILE_SETS, WORKLOADS, ArrivalModel, Geometry
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
        metavar="N",
        help="node count without --nodes (default: 100); --workload and --trace: 2, MIGBench's cluster",
    )
    parser.add_argument(
        "--synthetic-gpus",
        type=_at_least_one,
        metavar="N",
        help="GPUs per synthetic (and added) node (default: 8); --workload and --trace: 4",
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
    parser.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="seed of the synthetic pods and of random (default: 1); --workload: 20260914, MIGBench's",
    )
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
    parser.add_argument(
        "--defrag",
        choices=["on", "off"],
        default="off",
        help="churn: move running pods so that a pod that waited fits (the extender's defragmentation planner)",
    )
    parser.add_argument(
        "--defrag-wait",
        type=_seconds,
        default=DefragLimits().wait_s,
        metavar="S",
        help="churn, --defrag on: seconds a pod waits before a plan (the extender's defrag_min_wait_s)",
    )
    parser.add_argument(
        "--defrag-cooldown",
        type=_seconds,
        default=DefragLimits().pod_cooldown_s,
        metavar="S",
        help="churn, --defrag on: a pod that started less than this long ago is not moved (defrag_pod_cooldown_s)",
    )
    parser.add_argument(
        "--defrag-max-evictions",
        type=_at_least_one,
        default=DefragLimits().max_evictions,
        metavar="N",
        help="churn, --defrag on: pods one plan may move (defrag_max_evictions)",
    )
    parser.add_argument(
        "--defrag-per-hour",
        type=_at_least_one,
        default=DefragLimits().max_per_hour,
        metavar="N",
        help="churn, --defrag on: pods moved per hour at most (defrag_max_evictions_per_hour)",
    )
    parser.add_argument(
        "--defrag-max-lost",
        type=_seconds,
        metavar="S",
        default=DefragLimits().max_lost_s,
        help="churn, --defrag on: no plan throws away more run time than this, summed over its moved pods "
        "(moved pods restart from zero; defrag_max_lost_s, default no bound)",
    )
    parser.add_argument(
        "--defrag-give-up",
        type=_seconds,
        metavar="S",
        help="churn, --defrag on: no plan for a pod that waited longer than this (e.g. --scale-up-after: only "
        "before the autoscaler starts a node for it); default: as long as it waits",
    )
    parser.add_argument(
        "--consolidation",
        choices=[c.value for c in Consolidation],
        default=Consolidation.WHEN_EMPTY.value,
        help="churn, every policy: Karpenter's consolidation policy (WhenEmpty or WhenEmptyOrUnderutilized); "
        "--scale-down-after is its consolidateAfter",
    )
    _add_headroom_arguments(parser)
    parser.add_argument("--no-bound", action="store_true", help="skip the CP-SAT bound")
    parser.add_argument(
        "--work-conserving-bound",
        action="store_true",
        help="fill, dynamic worlds: also the best a scheduler knowing every arrival but placing each pod that "
        "fits could do (CP-SAT; a few nodes only)",
    )
    migbench = parser.add_argument_group(
        "MIGBench workloads",
        "MIGBench's (github.com/FouoF/MIG-scheduler-benchmark) traces, event loop and metrics, beside the "
        "simulator's figures: DynamicMIG GPUs, jobs that ask memory and work and run on the profile they get "
        "(BENCHMARKS.md, MIGBench)",
    )
    migbench.add_argument(
        "--workload",
        choices=WORKLOADS,
        help="generate MIGBench's trace: offered (no prefill, arrivals at --offered-load) or saturated "
        "(a 1g prefill of every GPC slot, then one job every 15 s)",
    )
    migbench.add_argument("--trace", type=Path, metavar="FILE.jsonl", help="replay a MIGBench JSONL trace as it is")
    migbench.add_argument(
        "--geometry",
        choices=[g.value for g in Geometry],
        help="catalog: the GPU model's real placements (default); migbench: 7 GPC slots and a summed memory "
        "cap per GPU, MIGBench's model; migbench-dra: MIGBench's fake DRA slices (7 slots, no memory cap), its "
        "metric's 80 GB sum",
    )
    migbench.add_argument(
        "--profile-set",
        choices=sorted(PROFILE_SETS),
        help="the profiles and weights: full (6 profiles) or common (1g.10gb, 2g.20gb, 3g.40gb, 7g.80gb) "
        "(default: full for saturated, common for offered and --trace)",
    )
    migbench.add_argument("--jobs", type=_at_least_one, metavar="N", help="jobs of --workload (default: 500)")
    migbench.add_argument(
        "--offered-load",
        type=_positive,
        metavar="L",
        help="migbench-offered: arrival rate x mean GPC-time per job / cluster GPC slots (default: 1.4)",
    )
    migbench.add_argument(
        "--arrival-model",
        choices=[m.value for m in ArrivalModel],
        help="arrivals of --workload (default: poisson)",
    )
    migbench.add_argument("--save-trace", type=Path, metavar="FILE.jsonl", help="write the run's trace here")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures here")
    parser.add_argument("--plot", type=Path, metavar="FILE", help="write a PNG plot here (needs matplotlib)")


def _share(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"must be a share within 0..1, not {value!r}")
    return number


def _add_headroom_arguments(parser: argparse.ArgumentParser) -> None:
    """Warm headroom (churn), defaults as the extender's headroom_* settings; lead time: the run's own."""
    defaults = HeadroomSettings()
    parser.add_argument(
        "--headroom",
        choices=["on", "off"],
        default="off",
        help="churn: placeholder pods real pods preempt (ours MIG-shaped, every baseline the same compute as "
        "whole GPUs), sized for the arrivals of --scale-up-after + --node-startup",
    )
    parser.add_argument(
        "--headroom-size",
        type=_seconds,
        default=defaults.size,
        metavar="X",
        help="churn: multiplies the arrivals the headroom is sized for",
    )
    parser.add_argument(
        "--headroom-coverage",
        type=_share,
        default=defaults.coverage,
        metavar="P",
        help="churn: per shape, the chance the arrivals of one lead time all find a placeholder",
    )
    parser.add_argument(
        "--headroom-max-gpus",
        type=_seconds,
        default=defaults.max_gpus,
        metavar="N",
        help="churn: at most this many GPUs' compute held by placeholders",
    )
    parser.add_argument(
        "--headroom-max-fleet-share",
        type=_share,
        default=defaults.max_fleet_share,
        metavar="S",
        help="churn: and at most this share of the fleet's GPUs (1: no share bound)",
    )


def headroom_from(args: argparse.Namespace) -> HeadroomSim | None:
    """The run's headroom, or None when off; a bad combination raises ValueError naming it."""
    if args.headroom != "on":
        return None
    defaults = HeadroomSettings()
    planner = HeadroomConfig(
        lead_time_s=args.scale_up_after + args.node_startup,
        coverage=args.headroom_coverage,
        max_gpus=args.headroom_max_gpus,
        max_fleet_share=args.headroom_max_fleet_share,
        size=args.headroom_size,
    )
    return HeadroomSim(planner, rate_half_life_s=defaults.rate_half_life_s, interval_s=defaults.interval_s)


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
    inputs = [flag for flag, value in (("--pods", args.pods), ("--synthetic", args.synthetic),
              ("--workload", args.workload), ("--trace", args.trace)) if value]  # fmt: skip
    if not inputs:
        return "simulate needs --pods CSV, --synthetic MIX, --workload NAME or --trace FILE"
    if len(inputs) > 1 and set(inputs) != {"--pods", "--synthetic"}:
        return f"give one input, not {' and '.join(inputs)}"
    if args.workload or args.trace:
        return _migbench_refusal(args)
    for flag in ("geometry", "profile_set", "jobs", "offered_load", "arrival_model", "save_trace"):
        if getattr(args, flag) is not None:
            return f"--{flag.replace('_', '-')} applies to --workload and --trace runs only"
    if args.headroom == "on" and args.mode != Mode.CHURN.value:
        return "--headroom on needs --mode churn (placeholders wait for arrivals and are preempted by them)"
    if args.headroom == "on" and args.consolidation != Consolidation.WHEN_EMPTY.value:
        return "--headroom on is modelled with --consolidation when-empty only"
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


def _migbench_refusal(args: argparse.Namespace) -> str | None:
    if args.trace is not None:
        for flag in ("jobs", "offered_load", "arrival_model"):
            if getattr(args, flag) is not None:
                return f"--{flag.replace('_', '-')} shapes a generated trace: not with --trace"
    if args.offered_load is not None and args.workload != "migbench-offered":
        return "--offered-load applies to --workload migbench-offered only"
    if args.plot is not None:
        return "--plot is not drawn for --workload and --trace runs (their figures are in the table and --json)"
    if args.work_conserving_bound:
        return "--work-conserving-bound applies to --synthetic and --pods fill runs only"
    for flag, path in (("--json", args.json), ("--save-trace", args.save_trace)):
        if path is not None and (problem := unwritable(path)):
            return f"cannot write {flag}: {problem}"
    return None


def _defrag_limits(args: argparse.Namespace) -> DefragLimits | None:
    if args.defrag != "on":
        return None
    return DefragLimits(
        wait_s=args.defrag_wait,
        pod_cooldown_s=args.defrag_cooldown,
        max_evictions=args.defrag_max_evictions,
        max_per_hour=args.defrag_per_hour,
        max_lost_s=args.defrag_max_lost,
        give_up_s=args.defrag_give_up,
    )


def main(args: argparse.Namespace) -> int:
    model: GpuModel = args.gpu
    refusal = _refusal(args)
    if refusal:
        print(f"mig-extender: {refusal}", file=sys.stderr)
        return 2
    if args.workload or args.trace:
        return _main_migbench(args)
    args.synthetic_nodes = args.synthetic_nodes or 100
    args.synthetic_gpus = args.synthetic_gpus or 8
    args.seed = 1 if args.seed is None else args.seed
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
        headroom = headroom_from(args)
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
        defrag=_defrag_limits(args),
        consolidation=Consolidation(args.consolidation),
        headroom=headroom,
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


def _main_migbench(args: argparse.Namespace) -> int:
    """A MIGBench workload or trace, every policy on it (module docstring of :mod:`.migbench`)."""
    geometry = Geometry(args.geometry or Geometry.CATALOG.value)
    try:
        if args.nodes:
            nodes = read_nodes(args.nodes)
        else:
            count = args.synthetic_nodes or mb.DEFAULT_NODES
            nodes = [NodeSpec(f"mig-node-{i + 1:03d}", args.synthetic_gpus or mb.DEFAULT_GPUS) for i in range(count)]
        slots = sum(n.gpus for n in nodes) * (args.gpu.compute_slices if geometry is Geometry.CATALOG else SLOTS)
        seed = mb.DEFAULT_SEED if args.seed is None else args.seed
        if args.trace is not None:
            profiles = PROFILE_SETS[args.profile_set or "common"][0]
            jobs = mb.read_trace(args.trace)
            label = f"trace {args.trace.name}"
            described: dict[str, object] = {"trace": str(args.trace), "profiles": [p.name for p in profiles]}
        else:
            spec = mb.workload_spec(
                args.workload,
                slots,
                jobs=args.jobs or 500,
                seed=seed,
                profile_set=args.profile_set,
                model=ArrivalModel(args.arrival_model or ArrivalModel.POISSON.value),
                offered_load=args.offered_load or 1.40,
            )
            profiles = spec.profiles
            jobs = mb.generate(spec)
            label = f"{args.workload} seed {seed}"
            described = spec.describe()
        if geometry is Geometry.CATALOG:
            mb.catalog_profiles(args.gpu, profiles)  # a model without the run's profiles: said now
        known = {p.name: p for p in policies_named("all", args.scoring)}
        names = mb.policy_names(args.policies, geometry, known)
        if args.save_trace is not None:
            args.save_trace.write_text(mb.trace_text(jobs))
        output = mb.run_migbench(
            jobs, nodes, profiles, geometry, args.gpu, names, known, seed, {"input": label, **described}
        )
    except (WorkloadError, ValueError) as exc:
        print(f"mig-extender: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"mig-extender: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    print(mb.table(output))
    try:
        if args.json:
            mb.write_json(output, args.json)
    except OSError as exc:
        print(f"mig-extender: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0
