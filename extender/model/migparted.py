"""mig-parted configuration (spec v1) and the GPU Operator's default configs, resolved per GPU.

Format (NVIDIA mig-parted ``api/spec/v1/spec.go``)::

    version: v1
    mig-configs:
      <name>:
        - devices: all | [0, 1, ...]
          device-filter: "0x20B010DE" | ["0x20B010DE", ...]   # optional
          mig-enabled: true | false
          mig-devices: {"1g.5gb": 2, "3g.20gb": 1}

For one GPU the first entry whose ``devices`` and ``device-filter`` match it applies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from .catalog import MODELS, CatalogError, GpuModel, Profile, model_for_pci_id
from .layouts import Layout, balanced_counts, place_counts
from .placement import PlacementError
from .state import GpuState, Instance


class MigPartedError(ValueError):
    """A mig-parted config that cannot be read or resolved; the message names the config and entry."""


@dataclass(frozen=True, slots=True)
class GpuLayoutSpec:
    """What a config says for one GPU: MIG on or off, and instance counts per profile."""

    mig_enabled: bool
    counts: tuple[tuple[Profile, int], ...] = ()

    def layout(self, model: GpuModel) -> Layout:
        return place_counts(model, dict(self.counts)) if self.mig_enabled else ()


@dataclass(frozen=True, slots=True)
class _Entry:
    devices: tuple[int, ...] | None  # None: all
    device_filter: tuple[str, ...] | None
    mig_enabled: bool
    mig_devices: tuple[tuple[str, int], ...]

    def matches(self, model: GpuModel, index: int) -> bool:
        if self.devices is not None and index not in self.devices:
            return False
        if self.device_filter is None:
            return True
        return any(model_for_pci_id(f) is model for f in self.device_filter)


_CI_PROFILE = re.compile(r"^(?P<c>\d+)c\.(?P<gi>\d+g\..+)$")


@dataclass(frozen=True)
class MigPartedConfig:
    configs: Mapping[str, tuple[_Entry, ...]]

    def names(self) -> list[str]:
        return sorted(self.configs)

    def resolve(self, name: str, model: GpuModel, index: int) -> GpuLayoutSpec | None:
        """The spec for GPU ``index`` of ``model`` under config ``name``; None if no entry covers it."""
        entries = self.configs.get(name)
        if entries is None:
            raise MigPartedError(f"mig-parted config has no entry named {name!r}")
        for position, entry in enumerate(entries):
            if entry.matches(model, index):
                return _spec_for(model, entry, f"mig-configs.{name}[{position}]")
        return None

    def resolve_all(self, name: str, model: GpuModel, gpu_count: int) -> tuple[GpuLayoutSpec, ...]:
        """The specs for GPUs 0..gpu_count-1 of one model under config ``name``, every GPU covered."""
        specs = []
        for index in range(gpu_count):
            spec = self.resolve(name, model, index)
            if spec is None:
                raise MigPartedError(f"mig-parted config {name!r} has no entry for GPU {index} ({model.name})")
            specs.append(spec)
        return tuple(specs)


def configured_gpus(model: GpuModel, specs: Sequence[GpuLayoutSpec]) -> tuple[GpuState, ...]:
    """GPUs 0..n-1 as MIG Manager leaves them after applying ``specs``: every instance free."""
    return tuple(
        GpuState(index, model, tuple(Instance(p, False) for p in spec.layout(model)), mig_enabled=spec.mig_enabled)
        for index, spec in enumerate(specs)
    )


def _spec_for(model: GpuModel, entry: _Entry, where: str) -> GpuLayoutSpec:
    if not entry.mig_enabled:
        return GpuLayoutSpec(False)
    counts: dict[Profile, int] = {}
    for spelled, count in entry.mig_devices:
        gi_name, per_gi = spelled, 1
        ci = _CI_PROFILE.match(spelled)
        if ci:  # "1c.2g.10gb": compute instances inside 2g GPU instances; slices follow the GPU instances.
            gi_name = ci.group("gi")
        try:
            profile = model.profile(gi_name)
        except CatalogError as exc:
            raise MigPartedError(f"{where}.mig-devices: {exc}") from None
        if ci:
            per_gi = max(1, profile.compute_slices // int(ci.group("c")))
        counts[profile] = counts.get(profile, 0) - (-count // per_gi)  # ceil, exact for any int
    spec = GpuLayoutSpec(True, tuple(counts.items()))
    try:
        spec.layout(model)
    except PlacementError as exc:
        raise MigPartedError(f"{where}: {exc}") from None
    return spec


def _int_list(value: Any, where: str) -> tuple[int, ...] | None:
    if value == "all":
        return None
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        return tuple(value)
    raise MigPartedError(f"{where}.devices must be 'all' or a list of GPU indexes, not {value!r}")


def _filters(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if isinstance(items, list) and all(isinstance(v, str) for v in items):
        return tuple(items)
    raise MigPartedError(f"{where}.device-filter must be a PCI id or a list of them, not {value!r}")


def parse_config(source: str | Mapping[str, Any]) -> MigPartedConfig:
    """Parse mig-parted YAML text (or its already-loaded mapping); errors name the config and entry."""
    if isinstance(source, str):
        try:
            document = yaml.safe_load(source)
        except yaml.YAMLError as exc:
            raise MigPartedError(f"mig-parted config is not valid YAML: {exc}") from None
        except RecursionError:
            raise MigPartedError("mig-parted config is nested too deeply") from None
    else:
        document = source
    if not isinstance(document, Mapping):
        raise MigPartedError("mig-parted config must be a mapping with 'version' and 'mig-configs'")
    if document.get("version") != "v1":
        raise MigPartedError(f"mig-parted config version must be 'v1', not {document.get('version')!r}")
    raw_configs = document.get("mig-configs")
    if not isinstance(raw_configs, Mapping) or not raw_configs:
        raise MigPartedError("mig-parted config has no 'mig-configs' mapping")
    configs: dict[str, tuple[_Entry, ...]] = {}
    for name, raw_entries in raw_configs.items():
        where = f"mig-configs.{name}"
        if not isinstance(raw_entries, list) or not raw_entries:
            raise MigPartedError(f"{where} must be a non-empty list of entries")
        entries = []
        for position, raw in enumerate(raw_entries):
            at = f"{where}[{position}]"
            if not isinstance(raw, Mapping):
                raise MigPartedError(f"{at} must be a mapping")
            enabled = raw.get("mig-enabled")
            if not isinstance(enabled, bool):
                raise MigPartedError(f"{at}.mig-enabled must be true or false")
            devices = raw.get("mig-devices") or {}
            if not isinstance(devices, Mapping) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for k, v in devices.items()
            ):
                raise MigPartedError(f"{at}.mig-devices must map profile names to counts >= 0")
            entries.append(
                _Entry(
                    devices=_int_list(raw.get("devices", "all"), at),
                    device_filter=_filters(raw.get("device-filter"), at),
                    mig_enabled=enabled,
                    mig_devices=tuple((k, v) for k, v in devices.items() if v),
                )
            )
        configs[str(name)] = tuple(entries)
    return MigPartedConfig(configs)


def default_config_document() -> dict[str, Any]:
    """The GPU Operator's default config names for every catalog model, built from the catalog.

    ``all-disabled``, ``all-enabled``, ``all-balanced`` and ``all-<profile>`` (with ``+`` spelled ``.``,
    e.g. ``all-1g.10gb.me``) at each profile's maximum count, one entry per model with its device filter.
    """
    per_name: dict[str, list[dict[str, Any]]] = {}
    for model in MODELS:
        for profile in model.profiles:
            per_name.setdefault("all-" + profile.name.replace("+", "."), []).append(
                _entry(model, {profile.name: profile.max_instances})
            )
    balanced = [_entry(m, {p.name: n for p, n in balanced_counts(m).items()}) for m in MODELS]
    return {
        "version": "v1",
        "mig-configs": {
            "all-disabled": [{"devices": "all", "mig-enabled": False}],
            "all-enabled": [{"devices": "all", "mig-enabled": True, "mig-devices": {}}],
            "all-balanced": balanced,
            **dict(sorted(per_name.items())),
        },
    }


def _entry(model: GpuModel, devices: dict[str, int]) -> dict[str, Any]:
    return {"device-filter": list(model.pci_device_ids), "devices": "all", "mig-enabled": True, "mig-devices": devices}


DEFAULT_CONFIG = parse_config(default_config_document())
