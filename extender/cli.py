"""The ``mig-extender`` command line."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from . import __version__
from .kube.errors import ConfigError
from .model.catalog import MODELS, CatalogError, GpuModel, model_named
from .model.layouts import layout_text, maximal_layouts
from .settings import RETIRED, SPECS, SettingsError, describe, load_settings
from .view.snapshot import SnapshotError


class _Parser(argparse.ArgumentParser):
    """Usage mistakes as one line (what is wrong, where to look) and exit code 2, as argparse's own."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown in --help, except where there is none to show or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def _families(model: GpuModel) -> set[str]:
    """Bare names a model is known by: A100 for A100-40GB, and those of its description (A800, GH200, H20)."""
    names = {model.name.split("-")[0]} | {entry.split()[0] for entry in model.description.split(",") if entry.strip()}
    return {name.upper() for name in names}


def _model(value: str) -> GpuModel:
    """A catalog model, refusing a family name that several models share (A100 is A100-40GB or A100-80GB)."""
    known = ", ".join(m.name for m in MODELS)
    if value.strip().lower() not in {m.name.lower() for m in MODELS}:
        family = re.sub(r"^NVIDIA[- ]", "", value.strip().upper()).replace(" ", "-")
        candidates = [m.name for m in MODELS if family in _families(m)]
        if len(candidates) > 1:
            raise argparse.ArgumentTypeError(f"ambiguous GPU model {value!r}: say which of {', '.join(candidates)}")
    try:
        return model_named(value)
    except CatalogError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; known models: {known}") from None


def cmd_profiles(args: argparse.Namespace) -> int:
    model: GpuModel = args.gpu
    print(
        f"# {model.name}: {model.description}; {model.memory_slices} memory slices, "
        f"{model.compute_slices} compute slices"
    )
    if not model.placements_verified:
        print("# placements not confirmed by a real nvidia-smi readout for this model")
    # The header's columns start where the rows' do (17, 24, 31, 38, 57).
    print(f"{'# profile':<17}{'nvml':<7}{'slices':<7}{'limit':<7}{'placements':<19}memory, SMs, aliases")
    print("# slices: compute (g) and memory (m); limit: instances per GPU; placements: {first memory slices}:width")
    for p in model.profiles:
        pid = "?" if p.profile_id is None else str(p.profile_id)
        extras = []
        if p.memory_mib:
            extras.append(f"{p.memory_mib} MiB")
        if p.multiprocessors:
            extras.append(f"{p.multiprocessors} SM")
        if p.aliases:
            extras.append("aka " + ",".join(p.aliases))
        print(
            f"{p.name:<16} id {pid:>2}  {p.compute_slices}g {p.memory_slices}m  max {p.max_instances}  "
            f"{p.placements_text():<18} {'  '.join(extras)}".rstrip()
        )
    return 0


def cmd_layouts(args: argparse.Namespace) -> int:
    model: GpuModel = args.gpu
    if args.profiles:
        try:
            profiles = tuple(model.profile(n) for n in args.profiles.split(",") if n.strip())
        except CatalogError as exc:
            print(f"mig-extender: {exc}", file=sys.stderr)
            return 2
    else:
        profiles = tuple(p for p in model.profiles if not p.has_attributes)
    layouts = maximal_layouts(model, profiles)
    for layout in layouts:
        print(layout_text(layout))
    print(f"# {len(layouts)} maximal layouts of {model.name} with {', '.join(p.name for p in profiles)}")
    return 0


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``serve`` runs on (setting ``event_loop``); None: the standard library's."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def cmd_serve(args: argparse.Namespace) -> int:
    from .server.run import ListenError, configure_logging, serve

    overrides = {name: getattr(args, name) for name in [*SPECS, *RETIRED]}
    try:
        settings = load_settings(overrides, config_file=args.config)
    except SettingsError as exc:
        print(f"mig-extender: {exc}", file=sys.stderr)
        return 2
    if settings.provisioning.mode != "off" and settings.provisioning.pools_file:
        from .controllers.provisioning import load_pools
        from .model.provisioning import PoolsError

        try:
            load_pools(settings.provisioning.pools_file)
        except PoolsError as exc:
            print(f"mig-extender: {exc}", file=sys.stderr)
            return 2
    configure_logging(settings.logging)
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings.server.event_loop)) as runner:
            return runner.run(serve(settings))
    except (SnapshotError, ConfigError) as exc:
        print(f"mig-extender: {exc}", file=sys.stderr)
        return 2
    except ListenError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(
                f"mig-extender: {exc.where} is already in use: stop what listens there or pass --port", file=sys.stderr
            )
        else:
            print(f"mig-extender: {exc}", file=sys.stderr)
        return 2


def cmd_report(args: argparse.Namespace) -> int:
    import pathlib

    from .model.fragmentation import parse_mix
    from .plotting import MatplotlibMissing, pyplot
    from .report import build_report, load_view, render_png, render_text

    try:
        settings = load_settings({"snapshot": args.snapshot, "kubeconfig": args.kubeconfig}, config_file=args.config)
        weights = parse_mix(args.mix or settings.scoring.demand_prior)
    except (SettingsError, ValueError) as exc:
        print(f"mig-extender: {exc}", file=sys.stderr)
        return 2
    if args.png:
        try:
            pyplot()  # before the fleet is listed, not after
        except MatplotlibMissing as exc:
            print(f"mig-extender: cannot draw --png: {exc}", file=sys.stderr)
            return 2
    try:
        view, source = load_view(settings)
    except (SnapshotError, ConfigError) as exc:
        print(f"mig-extender: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a live cluster that cannot be listed: say why, without a traceback
        print(f"mig-extender: listing the cluster failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    total = sum(weights.values()) or 1.0
    report = build_report(view, {k: v / total for k, v in weights.items()}, source)
    sys.stdout.write(render_text(report, args.max_nodes))
    if args.png:
        try:
            pathlib.Path(args.png).write_bytes(render_png(report, args.png_max_nodes))
        except OSError as exc:
            print(f"mig-extender: cannot write {args.png}: {exc.strerror}", file=sys.stderr)
            return 2
        print(f"wrote {args.png}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate.command import main as simulate

    return simulate(args)


def cmd_nodeoverlays(args: argparse.Namespace) -> int:
    import yaml

    from .controllers.provisioning import load_pools, node_overlay
    from .model.migparted import DEFAULT_CONFIG, MigPartedError, parse_config
    from .model.provisioning import PoolsError

    try:
        pools = load_pools(args.pools)
        mig_parted = DEFAULT_CONFIG
        if args.mig_parted:
            with open(args.mig_parted) as source:
                mig_parted = parse_config(source.read())
        overlays = [node_overlay(pool, mig_parted) for pool in pools]
    except (PoolsError, MigPartedError, OSError) as exc:
        print(f"mig-extender: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.safe_dump_all(overlays, sort_keys=False))
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    print(describe())
    return 0


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for name, spec in SPECS.items():
        default = "unset by default" if spec.default is None else f"default: {spec.default}"
        doc = f"{spec.doc} ({default}; env {spec.env})".replace("%", "%%")
        if spec.kind is bool:
            parser.add_argument(spec.flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=doc)
        else:
            parser.add_argument(spec.flag, dest=name, default=None, metavar=name.upper(), help=doc)
    for name in RETIRED:  # still accepted, so that old manifests start; load_settings warns
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=argparse.SUPPRESS)


def _command(
    commands: argparse._SubParsersAction[_Parser], name: str, summary: str, handler: Callable[[argparse.Namespace], int]
) -> _Parser:
    """A subcommand whose --help starts with its summary and shows every default."""
    description = summary[0].upper() + summary[1:] + "."
    parser = commands.add_parser(name, help=summary, description=description, formatter_class=_HelpFormatter)
    parser.set_defaults(handler=handler)
    return parser


def build_parser() -> argparse.ArgumentParser:
    description = "A kube-scheduler extender that places pods by free NVIDIA MIG slice topology, and its tools."
    parser = _Parser(prog="mig-extender", description=description, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    profiles = _command(commands, "profiles", "list a GPU model's MIG profiles and placements", cmd_profiles)
    profiles.add_argument(
        "--gpu", type=_model, required=True, help="catalog name (H200-141GB), GFD product label or PCI device id"
    )

    layouts = _command(commands, "layouts", "enumerate the maximal MIG layouts of a GPU model", cmd_layouts)
    layouts.add_argument("--gpu", type=_model, required=True, help="as for 'profiles'")
    layouts.add_argument("--profiles", help="comma-separated profiles to use (default: all base profiles)")

    serve = _command(
        commands, "serve", "run the scheduler extender (HTTP) over a live cluster or a snapshot", cmd_serve
    )
    serve.add_argument("--config", help="YAML or JSON file of settings (see 'mig-extender settings')")
    _add_setting_flags(serve)

    report = _command(
        commands,
        "report",
        "map the fleet's GPUs and MIG slices (used, free, stranded) as text, and as a PNG with --png",
        cmd_report,
    )
    where = report.add_mutually_exclusive_group()
    where.add_argument("--snapshot", help="a snapshot file, as for 'serve' (default: the live cluster)")
    where.add_argument("--kubeconfig", help="kubeconfig of the live cluster (default: the pod's service account)")
    report.add_argument("--config", help="YAML or JSON file of settings (the mig-parted ConfigMap, the demand prior)")
    report.add_argument(
        "--png", metavar="FILE", help="also write the map as a PNG image to FILE (needs matplotlib, extra sim)"
    )
    report.add_argument("--mix", help="demand mix for F, by name or as 1g=0.5,3g=0.5 (default: demand_prior)")
    report.add_argument("--max-nodes", type=int, metavar="N", help="show the first N nodes by name (default: all)")
    report.add_argument(
        "--png-max-nodes", type=int, default=400, metavar="N", help="nodes drawn in the PNG at most (default: 400)"
    )

    from .simulate.command import add_arguments as simulate_arguments

    simulate = _command(
        commands, "simulate", "trace-driven placement simulator: every policy in one world", cmd_simulate
    )
    simulate_arguments(simulate, _model)

    overlays = _command(
        commands,
        "nodeoverlays",
        "print Karpenter NodeOverlays declaring each MIG NodePool's nvidia.com/mig-* capacity",
        cmd_nodeoverlays,
    )
    overlays.add_argument("--pools", required=True, help="the pools file (see docs/karpenter.md)")
    overlays.add_argument(
        "--mig-parted",
        metavar="FILE",
        help="mig-parted config (config.yaml) MIG Manager uses (default: the operator's)",
    )

    _command(commands, "settings", "print every setting with its default and why (Markdown)", cmd_settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except BrokenPipeError:
        # The reader went away (| head): not an error of ours. Later writes go nowhere, as Python's docs advise.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("mig-extender: interrupted", file=sys.stderr)
        return 130
