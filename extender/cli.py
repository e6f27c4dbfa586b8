"""The ``mig-extender`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from kubernetes_asyncio.config.config_exception import ConfigException

from .model.catalog import CatalogError, GpuModel, model_named
from .model.layouts import layout_text, maximal_layouts
from .settings import ENV_PREFIX, FIELDS, SettingsError, describe, load_settings
from .view.snapshot import SnapshotError


def _model(value: str) -> GpuModel:
    try:
        return model_named(value)
    except CatalogError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_profiles(args: argparse.Namespace) -> int:
    model: GpuModel = args.gpu
    print(
        f"# {model.name}: {model.description}; {model.memory_slices} memory slices, "
        f"{model.compute_slices} compute slices"
    )
    if not model.placements_verified:
        print("# placements not confirmed by a real nvidia-smi readout for this model")
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


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from .server.run import configure_logging, serve

    overrides = {name: getattr(args, name) for name in FIELDS}
    try:
        settings = load_settings(overrides, config_file=args.config)
    except SettingsError as exc:
        print(f"mig-extender: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    try:
        return asyncio.run(serve(settings))
    except (SnapshotError, ConfigException) as exc:
        print(f"mig-extender: {exc}", file=sys.stderr)
        return 2


def cmd_settings(args: argparse.Namespace) -> int:
    print(describe())
    return 0


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for name, spec in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        doc = spec.metadata["doc"] + f" (default: {spec.default}; env {ENV_PREFIX}{name.upper()})"
        if spec.type == "bool":
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=doc)
        else:
            parser.add_argument(flag, dest=name, default=None, metavar=name.upper(), help=doc.replace("%", "%%"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mig-extender", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    profiles = commands.add_parser("profiles", help="list a GPU model's MIG profiles and placements")
    profiles.add_argument(
        "--gpu", type=_model, required=True, help="catalog name (H200-141GB), GFD product label or PCI device id"
    )
    profiles.set_defaults(handler=cmd_profiles)

    layouts = commands.add_parser("layouts", help="enumerate the maximal MIG layouts of a GPU model")
    layouts.add_argument("--gpu", type=_model, required=True, help="as for 'profiles'")
    layouts.add_argument("--profiles", help="comma-separated profiles to use (default: all base profiles)")
    layouts.set_defaults(handler=cmd_layouts)

    serve = commands.add_parser("serve", help="run the scheduler extender (HTTP) over a live cluster or a snapshot")
    serve.add_argument("--config", help="YAML or JSON file of settings (see 'mig-extender settings')")
    _add_setting_flags(serve)
    serve.set_defaults(handler=cmd_serve)

    settings = commands.add_parser("settings", help="print every setting with its default and why (Markdown)")
    settings.set_defaults(handler=cmd_settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)
