"""Layout sources: turn a node's labels, allocatable, annotation and bound pods into a :class:`NodeState`.

- **exact**: the node annotation ``mig-extender.io/gpus`` (schema ``extender/schemas/node-gpus-v1.json``)
  gives every GPU's instances with placements and use.
- **derived layout**: GPU model and count from GPU Feature Discovery labels, the layout of each GPU from
  the node's ``nvidia.com/mig.config`` resolved in the mig-parted config.
- **derived counts**: only ``allocatable`` counts per profile, spread over the GPUs.

In the derived sources which GPU and which placement a pod holds are estimates; the fidelity says so.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..kube.names import (
    GPU_COUNT_LABEL,
    GPU_PRODUCT_LABEL,
    MIG_CONFIG_LABEL,
    MIG_CONFIG_STATE_LABEL,
    MIG_STRATEGY_LABEL,
    NODE_MODE_LABEL,
)
from ..model.caches import CACHES
from ..model.catalog import CatalogError, GpuModel, Profile, model_named, parse_product_label
from ..model.demand import GPU_RESOURCE, MIG_RESOURCE_PREFIX, PodDemand
from ..model.fit import Allocator, fit
from ..model.layouts import place_counts
from ..model.migparted import MigPartedConfig, MigPartedError, configured_gpus
from ..model.placement import Placement, PlacementError, place_all
from ..model.state import Fidelity, GpuState, Instance, MigStrategy, NodeState, UnknownProduct
from .objects import NodeInfo

MAX_GPUS_PER_NODE = 64


class AnnotationError(ValueError):
    """An invalid ``mig-extender.io/gpus`` annotation; the message names the field."""


@dataclass
class Usage:
    """What pods hold on a node: MIG instances per profile name, and whole GPUs.

    ``mig`` and ``gpus`` are bound pods; ``assumed`` is what the extender expects pods it just answered
    for to take, which no node agent can have reported yet.
    """

    mig: Counter[str] = field(default_factory=Counter)
    gpus: int = 0
    assumed: Counter[str] = field(default_factory=Counter)
    assumed_gpus: int = 0

    def add(self, demand: PodDemand, *, assumed: bool = False) -> None:
        target = self.assumed if assumed else self.mig
        for name, count in demand.mig:
            target[name] += count
        if assumed:
            self.assumed_gpus += demand.gpus
        else:
            self.gpus += demand.gpus


def usage_of(demands: Iterable[PodDemand]) -> Usage:
    usage = Usage()
    for demand in demands:
        usage.add(demand)
    return usage


def build_node_state(node: NodeInfo, usage: Usage, mig_parted: MigPartedConfig) -> NodeState:
    """The node's GPUs from the best source available, with used instances marked."""
    warnings: list[str] = []
    if node.gpus_annotation is not None:
        try:
            return _exact(node, usage)
        except AnnotationError as exc:
            warnings.append(f"invalid {node.name} annotation mig-extender.io/gpus, using derived layout: {exc}")
    state = _derived(node, usage, mig_parted, warnings)
    return NodeState(
        state.name,
        state.gpus,
        state.fidelity,
        state.strategy,
        state.single_profile,
        tuple(warnings),
        state.unknown_product,
    )


# --- exact -------------------------------------------------------------------------------------------


def _field(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise AnnotationError(f"{where}.{key} must be {expected}, not {value!r}")
    return value


def parse_gpus_annotation(text: str) -> tuple[GpuState, ...]:
    """Parse and validate a ``mig-extender.io/gpus`` value (version v1)."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise AnnotationError(f"not JSON: {exc}") from None
    except RecursionError:
        raise AnnotationError("not JSON this parser reads: nested too deeply") from None
    if not isinstance(document, Mapping):
        raise AnnotationError("must be a JSON object")
    if document.get("version") != "v1":
        raise AnnotationError(f"version must be 'v1', not {document.get('version')!r}")
    raw_gpus = _field(document, "gpus", list, "$")
    if len(raw_gpus) > MAX_GPUS_PER_NODE:
        raise AnnotationError(f"$.gpus lists {len(raw_gpus)} GPUs, more than {MAX_GPUS_PER_NODE}")
    gpus: list[GpuState] = []
    seen: set[int] = set()
    for position, raw in enumerate(raw_gpus):
        gpu = _parse_gpu(raw, f"$.gpus[{position}]")
        if gpu.index in seen:
            raise AnnotationError(f"$.gpus[{position}].index {gpu.index} is repeated")
        seen.add(gpu.index)
        gpus.append(gpu)
    return tuple(sorted(gpus, key=lambda g: g.index))


def _parse_gpu(raw: Any, where: str) -> GpuState:
    if not isinstance(raw, Mapping):
        raise AnnotationError(f"{where} must be an object")
    index = _field(raw, "index", int, where)
    if not 0 <= index < MAX_GPUS_PER_NODE:
        raise AnnotationError(f"{where}.index {index} is outside 0..{MAX_GPUS_PER_NODE - 1}")
    try:
        model = model_named(_field(raw, "product", str, where))
    except CatalogError as exc:
        raise AnnotationError(f"{where}.product: {exc}") from None
    mode = raw.get("mode", "static")
    if mode not in ("static", "dynamic"):
        raise AnnotationError(f"{where}.mode must be 'static' or 'dynamic', not {mode!r}")
    enabled = raw.get("migEnabled", True)
    if not isinstance(enabled, bool):
        raise AnnotationError(f"{where}.migEnabled must be true or false")
    items = raw.get("instances") or []
    if not isinstance(items, list):
        raise AnnotationError(f"{where}.instances must be a list")
    instances = [
        _parse_instance(model, item, mode == "dynamic", f"{where}.instances[{i}]") for i, item in enumerate(items)
    ]
    if not enabled and instances:
        raise AnnotationError(f"{where} has MIG disabled but lists instances")
    try:
        return GpuState(index, model, tuple(instances), dynamic=mode == "dynamic", mig_enabled=enabled)
    except PlacementError as exc:
        raise AnnotationError(f"{where}: {exc}") from None


def _parse_instance(model: GpuModel, item: Any, dynamic: bool, where: str) -> Instance:
    if not isinstance(item, Mapping):
        raise AnnotationError(f"{where} must be an object")
    try:
        profile = model.profile(_field(item, "profile", str, where))
    except CatalogError as exc:
        raise AnnotationError(f"{where}.profile: {exc}") from None
    start = _field(item, "start", int, where)
    size = item.get("size", profile.memory_slices)
    if size != profile.memory_slices:
        raise AnnotationError(f"{where}.size {size!r} is not {profile.name}'s {profile.memory_slices} slices")
    used = item.get("used", False)
    if not isinstance(used, bool):
        raise AnnotationError(f"{where}.used must be true or false")
    # Dynamic GPUs create instances only for pods: every listed instance is in use.
    return Instance(Placement(start, profile), used or dynamic)


def _exact(node: NodeInfo, usage: Usage) -> NodeState:
    assert node.gpus_annotation is not None
    gpus = parse_gpus_annotation(node.gpus_annotation)
    # The agent may lag behind the binder: pods bound since its last update also hold instances.
    gpus = _mark_used(gpus, usage, single=None)
    return NodeState(node.name, gpus, Fidelity.EXACT, MigStrategy.MIXED)


# --- derived -----------------------------------------------------------------------------------------


def _derived(node: NodeInfo, usage: Usage, mig_parted: MigPartedConfig, warnings: list[str]) -> NodeState:
    product = node.labels.get(GPU_PRODUCT_LABEL)
    if not product:
        return NodeState(node.name, (), Fidelity.COUNTS)
    try:
        label = parse_product_label(product)
    except CatalogError:
        # Never guessed from a similar name: the node is left to kube-scheduler's counts (the view logs the
        # product once and counts its nodes; see ClusterView.unknown_products).
        return NodeState(node.name, (), Fidelity.COUNTS, unknown_product=_counted(node, product, usage))
    model = label.model
    single = label.single_profile
    strategy = (
        MigStrategy.SINGLE
        if (node.labels.get(MIG_STRATEGY_LABEL) == "single" or single or label.invalid_layout)
        else MigStrategy.MIXED
    )
    counts = _allocatable_counts(node, model, strategy, single, warnings)
    gpu_count = _gpu_count(node, model, counts, warnings)
    dynamic = node.labels.get(NODE_MODE_LABEL) == "dynamic"
    fidelity = Fidelity.COUNTS
    gpus: tuple[GpuState, ...] | None = None
    if dynamic:
        gpus = tuple(GpuState(i, model, (), dynamic=True) for i in range(gpu_count))
    else:
        config_name = node.labels.get(MIG_CONFIG_LABEL)
        if config_name:
            gpus = _from_config(node, model, gpu_count, config_name, mig_parted, counts, warnings)
            if gpus is not None:
                fidelity = Fidelity.LAYOUT
        if gpus is None:
            whole = node.allocatable.get(GPU_RESOURCE, 0) if strategy is MigStrategy.MIXED else 0
            gpus = _from_counts(node, model, gpu_count, counts, whole, warnings)
    gpus = _mark_used(gpus, usage, single if strategy is MigStrategy.SINGLE else None, warnings, node.name)
    return NodeState(node.name, gpus, fidelity, strategy, single if strategy is MigStrategy.SINGLE else None)


def _counted(node: NodeInfo, product: str, usage: Usage) -> UnknownProduct:
    """What kube-scheduler counts free on the node: allocatable minus the requests of pods bound or assumed there."""
    requested: Counter[str] = Counter()
    for name, count in (*usage.mig.items(), *usage.assumed.items()):
        requested[MIG_RESOURCE_PREFIX + name] += count
    requested[GPU_RESOURCE] += usage.gpus + usage.assumed_gpus
    free = tuple(sorted((name, max(0, count - requested[name])) for name, count in node.allocatable.items()))
    return UnknownProduct(product, free)


def _allocatable_counts(
    node: NodeInfo, model: GpuModel, strategy: MigStrategy, single: Profile | None, warnings: list[str]
) -> dict[Profile, int]:
    counts: dict[Profile, int] = {}
    if strategy is MigStrategy.SINGLE:
        if single is not None and _plausible(node, GPU_RESOURCE, single, warnings):
            counts[single] = node.allocatable[GPU_RESOURCE]
        return counts
    for resource, count in node.allocatable.items():
        if not resource.startswith(MIG_RESOURCE_PREFIX) or not count:
            continue
        profile = model.find_profile(resource)
        if profile is None:
            warnings.append(f"{node.name}: allocatable {resource} is not a profile of {model.name}")
            continue
        if _plausible(node, resource, profile, warnings):
            counts[profile] = counts.get(profile, 0) + count
    return counts


def _plausible(node: NodeInfo, resource: str, profile: Profile, warnings: list[str]) -> bool:
    """An allocatable count that the largest node could hold; anything above it is ignored.

    Spreading a count over GPUs costs time in proportion to it: a node object claiming 10**20 instances
    would otherwise stall every answer that reads it.
    """
    count = node.allocatable.get(resource, 0)
    most = profile.max_instances * MAX_GPUS_PER_NODE
    if count > most:
        warnings.append(
            f"{node.name}: allocatable {resource}={count} is more than {MAX_GPUS_PER_NODE} GPUs hold; ignored"
        )
    return 0 < count <= most


def _gpu_count(node: NodeInfo, model: GpuModel, counts: Mapping[Profile, int], warnings: list[str]) -> int:
    text = node.labels.get(GPU_COUNT_LABEL)
    if text is not None:
        try:
            count = int(text)
            if 0 < count <= MAX_GPUS_PER_NODE:
                return count
        except ValueError:
            pass
        warnings.append(f"{node.name}: label {GPU_COUNT_LABEL}={text!r} is not a GPU count")
    # No usable count: as many GPUs as the instances need, at least one.
    return max(1, len(_first_fit(model, MAX_GPUS_PER_NODE, counts)[0]))


# Nodes of one shape share their unused GPUs: a node rebuilt after each pod need not resolve its config again.
_CONFIGURED_LIMIT = 512  # config names x GPU models x GPU counts in use; a few KB each
_CONFIGURED: dict[tuple[int, str, str, int], tuple[MigPartedConfig, tuple[GpuState, ...]]] = {}
CACHES.register_table("sources._CONFIGURED", lambda: _CONFIGURED, lambda: _CONFIGURED_LIMIT)


def _configured(mig_parted: MigPartedConfig, config_name: str, model: GpuModel, gpu_count: int) -> tuple[GpuState, ...]:
    """The GPUs as MIG Manager leaves them under ``config_name``; raises MigPartedError."""
    key = (id(mig_parted), config_name, model.name, gpu_count)
    found = _CONFIGURED.get(key)
    if found is not None and found[0] is mig_parted:  # the id of a config since replaced may be reused
        return found[1]
    gpus = configured_gpus(model, mig_parted.resolve_all(config_name, model, gpu_count))
    if len(_CONFIGURED) >= _CONFIGURED_LIMIT:
        _CONFIGURED.clear()
    _CONFIGURED[key] = (mig_parted, gpus)
    return gpus


def _from_config(
    node: NodeInfo,
    model: GpuModel,
    gpu_count: int,
    config_name: str,
    mig_parted: MigPartedConfig,
    counts: Mapping[Profile, int],
    warnings: list[str],
) -> tuple[GpuState, ...] | None:
    try:
        gpus = _configured(mig_parted, config_name, model, gpu_count)
    except MigPartedError as exc:
        warnings.append(f"{node.name}: {exc}")
        return None
    configured = Counter(i.profile for g in gpus for i in g.instances)
    state = node.labels.get(MIG_CONFIG_STATE_LABEL, "success")
    if counts and dict(configured) != dict(counts):
        # MIG Manager has not (or not fully) applied the config: what the device plugin advertises wins.
        warnings.append(
            f"{node.name}: allocatable differs from mig-parted config {config_name!r} "
            f"(mig.config.state={state}); using allocatable counts"
        )
        return None
    return tuple(gpus)


def _first_fit(model: GpuModel, gpu_count: int, counts: Mapping[Profile, int]) -> tuple[list[list[Placement]], int]:
    """Spread instances over GPUs, largest first, each on the first GPU where it fits; and what is left."""
    wanted = sorted(
        (p for p, n in counts.items() for _ in range(n)), key=lambda p: (-p.memory_slices, -p.compute_slices)
    )
    per_gpu: list[list[Placement]] = []
    left_over = 0
    for profile in wanted:
        for placed in per_gpu:
            candidate = place_all(model, (*(p.profile for p in placed), profile), 0)
            if candidate is not None:
                placed[:] = candidate
                break
        else:
            if len(per_gpu) < gpu_count:
                per_gpu.append([Placement(profile.starts[0], profile)])
            else:
                left_over += 1
    return per_gpu, left_over


def _spread(model: GpuModel, gpu_count: int, counts: Mapping[Profile, int]) -> tuple[list[list[Placement]], int]:
    """Spread instances over GPUs: first fit, and where that leaves some over, an exact search."""
    per_gpu, left_over = _first_fit(model, gpu_count, counts)
    if not left_over or sum(p.memory_slices * n for p, n in counts.items()) > gpu_count * model.memory_slices:
        return per_gpu, left_over  # all placed, or more memory slices than the GPUs have: no search helps
    # First fit can strand instances (3g+3g on one GPU leaves no 3g for the next): search exactly.
    empty = NodeState("spread", tuple(GpuState(i, model, (), dynamic=True) for i in range(gpu_count)))
    result = fit(empty, PodDemand(mig=tuple(sorted((p.name, n) for p, n in counts.items() if n))), Allocator.IDEAL)
    if not result.fits_now:
        return per_gpu, left_over
    exact: list[list[Placement]] = [[] for _ in range(gpu_count)]
    for planned in result.plan:
        exact[planned.gpu_index].append(planned.placement)
    return exact, 0


def _from_counts(
    node: NodeInfo,
    model: GpuModel,
    gpu_count: int,
    counts: Mapping[Profile, int],
    whole_gpus: int,
    warnings: list[str],
) -> tuple[GpuState, ...]:
    per_gpu, left_over = _spread(model, gpu_count, counts)
    if left_over:
        warnings.append(f"{node.name}: {left_over} allocatable MIG instances do not fit on {gpu_count} GPUs")
    # GPUs left without instances are whole GPUs (MIG disabled) as far as nvidia.com/gpu counts them.
    whole = whole_gpus
    gpus = []
    for index in range(gpu_count):
        placements = per_gpu[index] if index < len(per_gpu) else []
        if placements:
            placements = list(place_counts(model, Counter(p.profile for p in placements)))
        enabled = bool(placements) or whole <= 0
        whole -= 0 if enabled else 1
        gpus.append(GpuState(index, model, tuple(Instance(p, False) for p in placements), mig_enabled=enabled))
    return tuple(gpus)


def _mark_used(
    gpus: tuple[GpuState, ...],
    usage: Usage,
    single: Profile | None,
    warnings: list[str] | None = None,
    node_name: str = "",
) -> tuple[GpuState, ...]:
    """Mark instances used by pods, beyond those already marked (lowest GPU index first: an estimate)."""
    bound: Counter[str] = Counter(usage.mig)
    assumed: Counter[str] = Counter(usage.assumed)
    if single is not None:
        bound[single.name] += usage.gpus
        assumed[single.name] += usage.assumed_gpus
    result = list(gpus)
    # Static GPUs' instances with this call's marks, by position: each changed GPU is built once at the end.
    marked: dict[int, list[Instance]] = {}
    for name in sorted(bound.keys() | assumed.keys()):  # sorted: the same estimate in every process
        # Instances already marked used (by a node agent) may be the bound pods' own: count them once.
        already = sum(
            1
            for position, g in enumerate(result)
            for i in marked.get(position, g.instances)
            if i.used and g.model.find_profile(name) is i.profile
        )
        missing = max(0, bound[name] - already) + assumed[name]
        for position, gpu in enumerate(result):
            profile = gpu.model.find_profile(name)
            if profile is None or missing <= 0:
                continue
            if gpu.dynamic:
                updated = gpu
                while missing > 0:
                    placed = place_all(gpu.model, (profile,), updated.occupied, "first-fit")
                    if placed is None:
                        break
                    updated = updated.with_used(placed[0])
                    missing -= 1
                result[position] = updated
                continue
            instances = marked.get(position, list(gpu.instances))
            for index, instance in enumerate(instances):
                if missing > 0 and instance.profile is profile and not instance.used:
                    instances[index] = Instance(instance.placement, True)
                    missing -= 1
                    marked[position] = instances
        if missing > 0 and warnings is not None:
            warnings.append(f"{node_name}: pods hold {missing} more {name} than the node has instances")
    for position, instances in marked.items():
        result[position] = result[position].with_instances(tuple(instances))
    whole = usage.gpus + usage.assumed_gpus if single is None else 0
    for position, gpu in enumerate(result):
        if whole and not gpu.mig_enabled and not gpu.whole_gpu_used:
            result[position] = GpuState(gpu.index, gpu.model, (), mig_enabled=False, whole_gpu_used=True)
            whole -= 1
    return tuple(result)
