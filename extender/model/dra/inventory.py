"""A node's NVIDIA DRA devices in catalog terms: one :class:`GpuState` per physical GPU, and where each device is.

Facts from kubernetes-sigs/dra-driver-nvidia-gpu (``cmd/gpu-kubelet-plugin``: ``deviceinfo.go``, ``mig.go``,
``partitions.go``): the full GPU is ``gpu-<minor>`` (attribute ``type`` ``gpu``), a MIG device
``gpu-<minor>-mig-<profile>-<giProfileId>-<start>`` (``type`` ``mig``; drivers before v25.12 named it
``gpu-<minor>-mig-<giProfileId>-<start>-<size>``), with the parent's ``productName`` and a ``profile`` attribute.
With DynamicMIG every device of one GPU consumes that GPU's counter set ``gpu-<minor>-counter-set``: a MIG device
its profile's engines plus ``memory-slice-<i>`` for each memory slice of its placement, the full GPU all of them.
Pre-created (static) MIG devices consume no counters; they carry ``parentUUID`` and a ``memorySlice<i>``
capacity per memory slice instead.

The placement of a device is read from the memory slices it consumes and must agree with its profile (a legal
start of the catalog's profile, its size) and its name (minor, profile, GI profile id, start); a device that
disagrees is left out with a warning, never guessed. A product the catalog does not know leaves the node
unmodelled (:class:`UnknownProduct`).

MIGBench's fake H100s (:mod:`.migbench_format`) carry no product name: a MIG device is read as a
:data:`~extender.model.migbench.MIGBENCH_H100` when it is named ``gpu<g>-mig-<profile>-<start>`` and consumes only
``memory-slice-<i>`` of one counter set ``gpu-<g>-counter-set`` that offers exactly that model's 7 slots; its
profile, placement, name and ``index`` attribute must then agree as above. No other device lacks a product name
and is named so (NVIDIA's driver names devices ``gpu-<minor>-...``), so no setting is needed to tell them apart.

The parse of a pool is cached by the identity of its slices, so that a change of allocations alone only
recomputes which devices are used; and shared between pools of one shape (every device's name, type, product,
profile, counters and capacities alike, and their UUIDs alike up to renaming), so that the nodes of one kind
are parsed once: another pool of the shape gets the same GPUs with its own name and UUIDs.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, TypeVar

from cachetools import LRUCache

from ..caches import CACHES
from ..catalog import CatalogError, GpuModel, Profile, parse_product_label
from ..migbench import MIGBENCH_H100
from ..placement import Placement, PlacementError, occupancy_of
from ..state import Fidelity, GpuState, Instance, NodeState, UnknownProduct, intern_key
from . import cel
from .allocator import Outcome, PreparedPools, Result, allocate, prepare
from .driver import DRIVER
from .migbench_format import DEVICE_NAME as _MIGBENCH_NAME
from .migbench_format import INDEX, slot_counter
from .types import AllocatedDevice, ClaimSpec, Device, DeviceClass, Pool, ResourceSlice

DeviceKey = tuple[str, str, str]
"""(driver, pool, device): how an allocation result names a device."""

TYPE = f"{DRIVER}/type"
PRODUCT = f"{DRIVER}/productName"
PROFILE = f"{DRIVER}/profile"
UUID = f"{DRIVER}/uuid"
PARENT_UUID = f"{DRIVER}/parentUUID"

_FULL_NAME = re.compile(r"^gpu-(\d+)$")
_MIG_NAME = re.compile(r"^gpu-(\d+)-mig-(\d+g[a-z0-9-]*)-(\d+)-(\d+)$")
_LEGACY_MIG_NAME = re.compile(r"^gpu-(\d+)-mig-(\d+)-(\d+)-(\d+)$")
_COUNTER_SET = re.compile(r"^gpu-(\d+)-counter-set$")
_SLICE_COUNTER = re.compile(r"^memory-slice-(\d+)$")
_SLICE_CAPACITY = re.compile(rf"^{re.escape(DRIVER)}/memorySlice(\d+)$")
_MAX_WARNINGS = 8  # per pool: beyond that one line counts the rest (a driver change can make every device odd)
_ONE = Fraction(1)


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """Where one device is: a GPU index and, for a MIG device, its placement (None: the full GPU)."""

    gpu: int
    placement: Placement | None = None

    @property
    def full_gpu(self) -> bool:
        return self.placement is None

    def __str__(self) -> str:
        return f"GPU {self.gpu} {self.placement}" if self.placement is not None else f"GPU {self.gpu} (full GPU)"


@dataclass(frozen=True, slots=True)
class DraGpu:
    """One physical GPU as the driver publishes it."""

    index: int
    model: GpuModel
    pool: str
    dynamic: bool
    """DynamicMIG: its devices consume counters of ``counter_set`` and MIG instances exist only once allocated."""
    counter_set: str = ""
    uuid: str = ""
    full_device: str = ""
    """The full GPU's device name, empty when the driver does not publish one (Ampere with MIG on)."""
    mig_devices: tuple[str, ...] = ()
    """MIG device names in the order the pool lists them."""
    placements: tuple[Placement, ...] = ()
    """The placement of each of ``mig_devices``."""

    @property
    def predictable(self) -> bool:
        """Whether the allocator's device order is known: DynamicMIG slices list devices sorted by name (MIGBench's
        one device slice by GPU, profile name and start), and from Kubernetes 1.36 the allocator walks pools and
        slices in name order. Pre-created devices come in Go map order, different at each publication."""
        return self.dynamic


@dataclass(frozen=True, slots=True)
class _ParsedPool:
    slices: tuple[ResourceSlice, ...]
    """Held so that their identity, the cache's check, stays theirs."""
    invalid: str
    gpus: tuple[DraGpu, ...]
    refs: dict[str, DeviceRef]
    unknown_products: tuple[str, ...]
    warnings: tuple[str, ...]
    samples: tuple[Device, ...]
    """One device per (model, profile) and per full-GPU model: what selectors can be tried on."""
    sample_positions: tuple[int, ...] = ()
    """Where each of ``samples`` is in the pool's devices."""
    shape: _Shape | None = field(default=None, compare=False)
    """The shape the pool has (None: a parse with warnings, or a pool the key cannot name)."""


@dataclass(slots=True, eq=False)
class _Shape:
    """A parse without warnings, shared by the pools of its shape (:func:`_shape_key`), and the allocator's layout
    of the pool first parsed, which serves every pool of the shape (:meth:`Inventory.allocate`)."""

    parsed: _ParsedPool
    pool: Pool
    """The pool first parsed."""
    uuids: tuple[str, ...]
    """The UUIDs of the pool parsed, by their number in the shape key."""
    gpu_uuids: tuple[int | None, ...]
    """Per GPU of ``parsed``, the number of its UUID (None: it has none)."""
    held: tuple[object, ...]
    """The consumptions, capacities and counters the key names by identity, kept alive while the key is in use."""
    prepared: PreparedPools | None = None

    def layout(self) -> PreparedPools:
        if self.prepared is None:
            self.prepared = prepare((self.pool,))
        return self.prepared


_UNSET: Any = object()


@dataclass(slots=True, eq=False)
class _PoolSet:
    """A node's pools as given, a serial number standing for them, and their allocator layout once built."""

    pools: tuple[Pool, ...]
    serial: int
    prepared: PreparedPools | None = None
    shape: _Shape | None = _UNSET
    """The shape whose layout serves the node's claims: set when the node has one pool, of NVIDIA's driver,
    complete, valid, all on the node and of a known shape; None otherwise (the node's own layout serves)."""


@dataclass(frozen=True, slots=True)
class Inventory:
    """A node's ``gpu.nvidia.com`` devices: the :class:`NodeState` they make and where each device is."""

    gpus: tuple[DraGpu, ...]
    warnings: tuple[str, ...]
    samples: tuple[Device, ...]
    in_use: frozenset[DeviceKey]
    version: int
    """Equal for inventories of one node from the same pools (the same slice objects) and devices in use."""
    _pools: tuple[_ParsedPool, ...] = field(repr=False)
    _pool_names: tuple[str, ...] = field(repr=False)
    _pool_set: _PoolSet = field(repr=False)
    node: NodeState = field(init=False)
    """The node's state, whose :attr:`~NodeState.devices` is this inventory (set by :func:`_build`)."""
    _template_use: tuple[str, frozenset[DeviceKey]] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def pools(self) -> tuple[Pool, ...]:
        """Every pool given (any driver, other nodes' counter pools too), in the allocator's order."""
        return self._pool_set.pools

    @property
    def prepared(self) -> PreparedPools:
        """``pools`` laid out for :func:`~extender.model.dra.allocator.allocate`, built once per node while its
        pools stay the same objects: devices in use change, the layout (and its CEL results) is kept."""
        found = self._pool_set.prepared
        if found is None:
            found = self._pool_set.prepared = prepare(self._pool_set.pools)
        return found

    def allocate(self, claims: Sequence[ClaimSpec], classes: Sequence[DeviceClass], *, idle: bool = False) -> Outcome:
        """:func:`~extender.model.dra.allocator.allocate` of ``claims`` on the node's pools with its devices in use
        (``idle``: none), ``classes`` the DeviceClasses they name.

        A node whose pool has the shape of an earlier one is allocated on that pool's layout instead of its own:
        the allocator reads nothing of a pool but what the shape key holds (device names, attributes, capacities,
        counters, taints, the slices' order and counter sets), UUIDs apart, which only a selector could tell
        apart (one that reads none is used this way; constraints compare UUIDs within a node, where renaming
        keeps them equal or not). The devices in use are named in that pool, the results back in this one, and
        the outcome is kept for other nodes in the same use. An outcome the model cannot evaluate is computed on
        the node's own layout, whose messages name its own devices.
        """
        in_use: frozenset[DeviceKey] = frozenset() if idle else self.in_use
        shape = self._pool_set.shape
        if shape is _UNSET:
            shape = self._pool_set.shape = _allocator_shape(self._pool_set.pools, self._pools)
        asked = _claim_set(claims, classes)
        if shape is None or not asked.shareable:
            return allocate(claims, self.prepared, in_use, asked.class_map)
        own, template = self._pool_set.pools[0].name, shape.pool.name
        use = self._use_named_in(template) if in_use else frozenset()
        key = (shape, use, asked.number)
        outcome = _OUTCOMES.get(key)
        if outcome is None:
            outcome = _OUTCOMES[key] = allocate(claims, shape.layout(), use, asked.class_map)
        if outcome.result is Result.CANNOT_EVALUATE:
            return allocate(claims, self.prepared, in_use, asked.class_map)
        if own == template or not outcome.claims:
            return outcome
        renamed = tuple(
            tuple(
                AllocatedDevice(r.request, r.driver, own, r.device, r.admin_access) if r.pool == template else r
                for r in results
            )
            for results in outcome.claims
        )
        return Outcome(outcome.result, outcome.reason, renamed, outcome.scheduler_error, outcome.steps)

    def _use_named_in(self, template: str) -> frozenset[DeviceKey]:
        """The node's devices in use named in the pool ``template`` (kept: every claim set reads it)."""
        found = self._template_use
        if found is None or found[0] != template:
            own = self._pool_set.pools[0].name
            use = frozenset((d, template, n) for d, p, n in self.in_use if p == own and d == DRIVER)
            found = (template, use)
            object.__setattr__(self, "_template_use", found)
        return found[1]

    def ref(self, key: DeviceKey) -> DeviceRef | None:
        """Where the device ``(driver, pool, device)`` is, or None if it is not a modelled device of this node."""
        driver, pool, device = key
        if driver != DRIVER:
            return None
        for name, parsed in zip(self._pool_names, self._pools):
            if name == pool:
                return parsed.refs.get(device)
        return None

    def gpu(self, index: int) -> DraGpu | None:
        return next((g for g in self.gpus if g.index == index), None)

    def predictable(self, index: int) -> bool:
        """Whether the allocator's order over GPU ``index``'s devices is known (see :attr:`DraGpu.predictable`)."""
        found = self.gpu(index)
        return found is not None and found.predictable

    def plan(self, keys: Iterable[DeviceKey]) -> tuple[DeviceRef, ...] | None:
        """Where allocation results land, in their order; None if one is not a modelled device of this node."""
        refs = tuple(self.ref(k) for k in keys)
        return None if any(r is None for r in refs) else tuple(r for r in refs if r is not None)

    def with_used(self, keys: Iterable[DeviceKey]) -> Inventory:
        """The inventory once the devices ``keys`` are allocated too (a predicted allocation applied)."""
        return _build(self.node.name, self._pool_names, self._pools, self._pool_set, self.in_use | frozenset(keys))


def model_for_product(product: str) -> GpuModel:
    """The catalog model of an NVML device name (``NVIDIA H100 80GB HBM3``, ``NVIDIA A100-SXM4-40GB``).

    GPU Feature Discovery labels nodes with the same name, spaces turned into dashes, so the catalog's product
    table serves both. Only a plain device name is taken: no MIG or SHARED suffix. Raises CatalogError.
    """
    text = product.strip()
    label = parse_product_label(text)  # raises CatalogError for a product it does not know
    if label.single_profile is not None or label.invalid_layout or text.upper().endswith("-SHARED"):
        raise CatalogError(f"unknown GPU product {product!r}: not a GPU device name")
    return label.model


def _canonical(profile_name: str) -> str:
    """The profile's part of a device name (``mig.go`` ToCanonicalName): ``1g.10gb+me`` -> ``1g10gb-me``."""
    return re.sub(r"[^a-z0-9]", "-", profile_name.replace(".", "").lower())


@dataclass(slots=True)
class _Candidate:
    name: str
    minor: int
    model: GpuModel
    counter_set: str
    gpu_uuid: str
    """The full GPU's own uuid, or a MIG device's parentUUID."""
    placement: Placement | None


class _Parser:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.warnings: list[str] = []
        self.unknown: set[str] = set()
        self.models: dict[str, GpuModel | None] = {}
        self.migbench_sets: dict[str, bool] = {}
        """Counter set -> whether it offers exactly MIGBench's slots."""

    def warn(self, text: str) -> None:
        self.warnings.append(text)

    def model(self, product: str) -> GpuModel | None:
        if product not in self.models:
            try:
                self.models[product] = model_for_product(product)
            except CatalogError:
                self.models[product] = None
        return self.models[product]

    def candidate(self, device: Device) -> _Candidate | None:
        where = f"{self.pool.name}/{device.name}"
        kind = device.attribute(TYPE)
        if kind not in ("gpu", "mig"):
            if kind is None:
                self.warn(f"{where}: no {TYPE} attribute: left out")
            return None  # VFIO passthrough and other kinds hold no MIG
        product = device.attribute(PRODUCT)
        if product is None and kind == "mig" and _MIGBENCH_NAME.match(device.name):
            return self._migbench(device, where)
        if not isinstance(product, str):
            self.warn(f"{where}: no {PRODUCT} attribute: left out")
            return None
        model = self.model(product)
        if model is None:
            self.unknown.add(product)
            return None
        if len(device.consumes) > 1:
            self.warn(f"{where}: consumes {len(device.consumes)} counter sets, one GPU's expected: left out")
            return None
        counter_set = device.consumes[0].counter_set if device.consumes else ""
        if kind == "gpu":
            return self._full(device, where, model, counter_set)
        return self._mig(device, where, model, counter_set)

    def _full(self, device: Device, where: str, model: GpuModel, counter_set: str) -> _Candidate | None:
        match = _FULL_NAME.match(device.name)
        if match is None:
            self.warn(f"{where}: a full GPU not named gpu-<minor>: left out")
            return None
        if counter_set:
            held = self._counter_slices(device)
            if held is None or held != tuple(range(model.memory_slices)):
                self.warn(
                    f"{where}: a full GPU that does not consume all {model.memory_slices} memory slices: left out"
                )
                return None
        uuid = device.attribute(UUID)
        return _Candidate(
            device.name, int(match.group(1)), model, counter_set, uuid if isinstance(uuid, str) else "", None
        )

    def _migbench(self, device: Device, where: str) -> _Candidate | None:
        """A device named as MIGBench names its fake H100's, without a product name (see the module's docstring)."""
        consumes = device.consumes
        if len(consumes) != 1 or _COUNTER_SET.match(consumes[0].counter_set) is None:
            self.warn(f"{where}: named as MIGBench's devices but consumes no single gpu-<g>-counter-set: left out")
            return None
        counter_set = consumes[0].counter_set
        # A valid pool declares what its devices consume: a set of the 7 slots alone is consumed in slots alone.
        if not self._migbench_counter_set(counter_set):
            self.warn(
                f"{where}: counter set {counter_set} does not offer exactly memory-slice-0.."
                f"{MIGBENCH_H100.memory_slices - 1} as MIGBench's does: left out"
            )
            return None
        return self._mig(device, where, MIGBENCH_H100, counter_set, migbench=True)

    def _migbench_counter_set(self, name: str) -> bool:
        found = self.migbench_sets.get(name)
        if found is None:
            slots = tuple((slot_counter(i), _ONE) for i in range(MIGBENCH_H100.memory_slices))
            declared = next((c.counters for c in self.pool.counter_sets if c.name == name), None)
            found = self.migbench_sets[name] = declared is not None and sorted(declared) == sorted(slots)
        return found

    def _mig(
        self, device: Device, where: str, model: GpuModel, counter_set: str, *, migbench: bool = False
    ) -> _Candidate | None:
        profile_name = device.attribute(PROFILE)
        if not isinstance(profile_name, str):
            self.warn(f"{where}: a MIG device without a {PROFILE} attribute: left out")
            return None
        profile = model.find_profile(profile_name)
        if profile is None:
            self.warn(f"{where}: {model.name} has no MIG profile {profile_name!r}: left out")
            return None
        held = self._counter_slices(device) if counter_set else self._capacity_slices(device)
        if held is None:
            return None
        if not held:
            self.warn(f"{where}: {profile_name} consumes no memory slice: left out")
            return None
        start = held[0]
        if held != tuple(range(start, start + len(held))) or len(held) != profile.memory_slices:
            self.warn(
                f"{where}: {profile_name} takes {profile.memory_slices} memory slice(s), the device takes "
                f"{list(held)}: left out"
            )
            return None
        if start not in profile.starts:
            self.warn(
                f"{where}: {profile_name} at memory slice {start} is not a legal placement on {model.name} "
                f"({profile.placements_text()}): left out"
            )
            return None
        placement = _placement(start, profile)
        if migbench:
            minor = self._migbench_name_minor(device, where, profile_name, placement)
        else:
            minor = self._mig_name_minor(device.name, where, profile_name, profile, placement)
        if minor is None:
            return None
        parent = device.attribute(PARENT_UUID)
        if not counter_set and not isinstance(parent, str):
            self.warn(f"{where}: a pre-created MIG device without a {PARENT_UUID} attribute: left out")
            return None
        return _Candidate(device.name, minor, model, counter_set, parent if isinstance(parent, str) else "", placement)

    def _mig_name_minor(
        self, name: str, where: str, profile_name: str, profile: Profile, placement: Placement
    ) -> int | None:
        match = _MIG_NAME.match(name)
        if match is not None:
            minor, spelled, gi, start = match.groups()
            if spelled == _canonical(profile_name) and self._gi_agrees(gi, profile) and int(start) == placement.start:
                return int(minor)
        else:
            legacy = _LEGACY_MIG_NAME.match(name)
            if legacy is not None:
                minor, gi, start, size = legacy.groups()
                if self._gi_agrees(gi, profile) and (int(start), int(size)) == (placement.start, profile.memory_slices):
                    return int(minor)
        self.warn(
            f"{where}: the name does not match the device ({profile_name} at memory slice {placement.start}): left out"
        )
        return None

    def _migbench_name_minor(self, device: Device, where: str, profile_name: str, placement: Placement) -> int | None:
        match = _MIGBENCH_NAME.match(device.name)
        if match is not None:
            minor, spelled, start = match.groups()
            index = device.attribute(INDEX)
            if (
                spelled == profile_name.replace(".", "")
                and int(start) == placement.start
                and (index is None or (type(index) is int and index == int(minor)))
            ):
                return int(minor)
        self.warn(
            f"{where}: the name or {INDEX} does not match the device ({profile_name} at slot {placement.start}): "
            "left out"
        )
        return None

    @staticmethod
    def _gi_agrees(gi: str, profile: Profile) -> bool:
        return profile.profile_id is None or int(gi) == profile.profile_id

    def _counter_slices(self, device: Device) -> tuple[int, ...] | None:
        held = []
        for name, amount in device.consumes[0].counters:
            match = _SLICE_COUNTER.match(name)
            if match is None:
                continue
            if amount != _ONE:
                self.warn(f"{self.pool.name}/{device.name}: consumes {amount} of counter {name}, 1 expected: left out")
                return None
            held.append(int(match.group(1)))
        return tuple(sorted(held))

    def _capacity_slices(self, device: Device) -> tuple[int, ...] | None:
        held = []
        for name, amount in device.capacity:
            match = _SLICE_CAPACITY.match(name)
            if match is None:
                continue
            if amount != _ONE:
                self.warn(f"{self.pool.name}/{device.name}: capacity {name} is {amount}, 1 expected: left out")
                return None
            held.append(int(match.group(1)))
        return tuple(sorted(held))


@dataclass(slots=True)
class _Group:
    key: str
    dynamic: bool
    members: list[_Candidate] = field(default_factory=list)


def _group_index(group: _Group) -> int | None:
    """The GPU's minor: the counter set's (DynamicMIG), the full GPU's, or the one all its devices name."""
    if group.dynamic:
        match = _COUNTER_SET.match(group.key)
        if match is not None:
            return int(match.group(1))
    full = [m.minor for m in group.members if m.placement is None]
    if full:
        return full[0]
    minors = {m.minor for m in group.members}
    return minors.pop() if len(minors) == 1 else None


def _parse_pool(pool: Pool) -> _ParsedPool:
    """The parse of ``pool``: that of an earlier pool of the same shape with this pool's name and UUIDs, or a
    fresh one (kept for the shape when it has no warnings, which would name the pool and its devices)."""
    if pool.invalid:
        return _parse_fresh(pool)
    key, uuids, held = _shape_key(pool)
    if key is None:
        return _parse_fresh(pool)
    shape = _SHAPES.get(key)
    if shape is not None:
        return _rebound(shape, pool, uuids)
    parsed = _parse_fresh(pool)
    if not parsed.warnings:
        numbers = {u: n for n, u in enumerate(uuids)}
        gpu_uuids = tuple(numbers.get(g.uuid) if g.uuid else None for g in parsed.gpus)
        if all(n is not None for g, n in zip(parsed.gpus, gpu_uuids) if g.uuid):
            if len(_SHAPES) >= _SHAPES_LIMIT:
                _SHAPES.clear()
            shape = _SHAPES[key] = _Shape(parsed, pool, uuids, gpu_uuids, held)
            parsed = shape.parsed = dataclasses.replace(parsed, shape=shape)
    return parsed


def _shape_key(pool: Pool) -> tuple[tuple[object, ...] | None, tuple[str, ...], tuple[object, ...]]:
    """What the parse and the allocator read of the pool: its driver, its slices' devices (names, attributes,
    capacities, counter consumptions, taints, binding conditions, multiple allocations) and counter sets in
    order, UUIDs replaced by their number in order of appearance: (the key, the UUIDs, the objects the key
    names by identity). Capacities, consumptions and counter values are named by identity (the view shares
    equal ones between nodes); the key holds them, so an identity stays theirs. None for a pool whose UUIDs
    could be mistaken for the names the parse gives GPUs without one."""
    numbers: dict[str, int] = {}
    read: dict[int, tuple[object, ...]] = {}
    parts: list[object] = [pool.driver]
    held: list[object] = []
    for piece in pool.slices:
        parts.append((len(piece.devices), tuple((c.name, id(c.counters)) for c in piece.shared_counters)))
        held.extend(c.counters for c in piece.shared_counters)
        for device in piece.devices:
            attributes = device.attributes
            found = read.get(id(attributes))
            if found is None:
                marks: list[object] = []
                for name, value in attributes:
                    if name in _UUIDS and isinstance(value, str):
                        if _FULL_NAME_LIKE.match(value):
                            return None, (), ()
                        marks.append((name, numbers.setdefault(value, len(numbers))))
                    else:
                        marks.append((name, type(value), value))
                found = read[id(attributes)] = tuple(marks)
            parts.append(
                (
                    device.name,
                    found,
                    id(device.consumes),
                    id(device.capacity),
                    device.taints,
                    device.binding_conditions,
                    device.allow_multiple_allocations,
                )
            )
            held.append(device.consumes)
            held.append(device.capacity)
    # ``attributes`` of one pool stay alive while it is read: ids in ``read`` are not reused meanwhile
    return tuple(parts), tuple(numbers), tuple(held)


def _rebound(shape: _Shape, pool: Pool, uuids: tuple[str, ...]) -> _ParsedPool:
    """The shape's parse for ``pool``: its name and UUIDs in the GPUs, its own devices as samples."""
    parsed = shape.parsed
    gpus = tuple(
        dataclasses.replace(gpu, pool=pool.name, uuid=uuids[number] if number is not None else "")
        for gpu, number in zip(parsed.gpus, shape.gpu_uuids)
    )
    devices = pool.devices
    return _ParsedPool(
        pool.slices,
        pool.invalid,
        gpus,
        parsed.refs,
        parsed.unknown_products,
        parsed.warnings,
        tuple(devices[i] for i in parsed.sample_positions),
        parsed.sample_positions,
        shape,
    )


def _parse_fresh(pool: Pool) -> _ParsedPool:
    parser = _Parser(pool)
    if pool.invalid:
        parser.warn(f"pool {pool.name}: {pool.invalid}: the allocator skips it, its devices are left out")
        return _ParsedPool(pool.slices, pool.invalid, (), {}, (), tuple(parser.warnings), ())
    groups: dict[tuple[bool, str], _Group] = {}
    samples: dict[tuple[str, str], tuple[int, Device]] = {}
    for position, device in enumerate(pool.devices):
        candidate = parser.candidate(device)
        if candidate is None:
            continue
        dynamic = bool(candidate.counter_set)
        key = candidate.counter_set if dynamic else candidate.gpu_uuid or f"gpu-{candidate.minor}"
        groups.setdefault((dynamic, key), _Group(key, dynamic)).members.append(candidate)
        profile = candidate.placement.profile.name if candidate.placement is not None else ""
        samples.setdefault((candidate.model.name, profile), (position, device))
    gpus: dict[int, DraGpu] = {}
    refs: dict[str, DeviceRef] = {}
    for (_, key), group in sorted(groups.items(), key=lambda item: (not item[0][0], item[0][1])):
        gpu = _gpu_of(parser, pool, group)
        if gpu is None:
            continue
        if gpu.index in gpus:
            parser.warn(f"pool {pool.name}: GPU {gpu.index} is published twice ({key} too): the second left out")
            continue
        gpus[gpu.index] = gpu
        if gpu.full_device:
            refs[gpu.full_device] = _ref(gpu.index, None)
        for name, placement in zip(gpu.mig_devices, gpu.placements):
            refs[name] = _ref(gpu.index, placement)
    refs = _shared_table(refs)
    if parser.unknown:
        parser.warn(
            f"pool {pool.name}: GPU product {', '.join(sorted(repr(p) for p in parser.unknown))} is not a "
            "MIG-capable model in the catalog: the node's GPUs are not modelled"
        )
    warnings = parser.warnings
    if len(warnings) > _MAX_WARNINGS:
        warnings = [*warnings[:_MAX_WARNINGS], f"pool {pool.name}: {len(warnings) - _MAX_WARNINGS} more warning(s)"]
    return _ParsedPool(
        pool.slices,
        pool.invalid,
        tuple(gpus[i] for i in sorted(gpus)),
        refs,
        tuple(sorted(parser.unknown)),
        tuple(warnings),
        tuple(d for _, d in samples.values()),
        tuple(i for i, _ in samples.values()),
    )


def _gpu_of(parser: _Parser, pool: Pool, group: _Group) -> DraGpu | None:
    index = _group_index(group)
    if index is None:
        listed = ", ".join(m.name for m in group.members)
        parser.warn(f"pool {pool.name}: devices {listed} of one GPU name different GPUs: left out")
        return None
    model = group.members[0].model
    full = ""
    uuid = ""
    names: list[str] = []
    placements: list[Placement] = []
    occupied: list[Placement] = []
    for member in group.members:
        where = f"{pool.name}/{member.name}"
        if member.minor != index or member.model is not model:
            parser.warn(
                f"{where}: belongs to GPU {index} ({model.name}) by its {_anchor(group)}, not by its name: left out"
            )
            continue
        if member.placement is None:
            if full:
                parser.warn(f"{where}: GPU {index} has a full-GPU device already ({full}): left out")
                continue
            full, uuid = member.name, member.gpu_uuid
            continue
        if member.placement in placements:
            parser.warn(f"{where}: GPU {index} lists {member.placement} twice: left out")
            continue
        if not group.dynamic:
            # Pre-created instances exist side by side: they may not overlap or exceed a profile's limit.
            try:
                occupancy_of(model, (*occupied, member.placement))
            except PlacementError as error:
                parser.warn(f"{where}: {error}: left out")
                continue
            occupied.append(member.placement)
        names.append(member.name)
        placements.append(member.placement)
    if not full and not names:
        return None
    parents = {m.gpu_uuid for m in group.members if m.placement is not None and m.gpu_uuid}
    if not uuid and len(parents) == 1:
        uuid = parents.pop()
    return DraGpu(
        index,
        model,
        pool.name,
        group.dynamic,
        group.key if group.dynamic else "",
        uuid,
        full,
        _shared(tuple(names)),
        _shared(tuple(placements)),
    )


def _anchor(group: _Group) -> str:
    return f"counter set {group.key}" if group.dynamic else f"parent {group.key}"


# Objects equal across nodes, shared: every DynamicMIG H100 publishes the same 25 placements, GPU ``i`` of every
# node of one kind the same device names, and such nodes the same device index. Keys are tagged by kind.
_SHARED: dict[tuple[str, object], Any] = {}
_SHARED_LIMIT = 8_192  # a few hundred per kind of node published (model, GPU count, mode); a fleet has a few kinds
_T = TypeVar("_T")


def _share(kind: str, key: object, make: Callable[[], _T]) -> _T:
    found = _SHARED.get((kind, key))
    if found is None:
        if len(_SHARED) >= _SHARED_LIMIT:
            _SHARED.clear()  # what was handed out stays valid, it is only no longer shared
        found = _SHARED[(kind, key)] = make()
    result: _T = found
    return result


def _placement(start: int, profile: Profile) -> Placement:
    return _share("placement", (start, profile), lambda: Placement(start, profile))


def _ref(index: int, placement: Placement | None) -> DeviceRef:
    return _share("ref", (index, placement), lambda: DeviceRef(index, placement))


def _shared(items: tuple[_T, ...]) -> tuple[_T, ...]:
    return _share("tuple", items, lambda: items)


def _shared_table(refs: dict[str, DeviceRef]) -> dict[str, DeviceRef]:
    return _share("index", tuple(refs.items()), lambda: refs)


_POOLS: dict[tuple[str, str], _ParsedPool] = {}
# One entry per node's pool (the driver publishes one per node): a fleet of 10,000 DynamicMIG nodes needs 10,000.
# ~1.2 KB per pool of 8 DynamicMIG H100s beside the slices it holds (measured with tracemalloc; what is equal
# across nodes is shared): worst ~25 MB.
_POOLS_LIMIT = 20_000
CACHES.register_table("inventory._POOLS", lambda: _POOLS, lambda: _POOLS_LIMIT)
_POOL_SETS: dict[str, _PoolSet] = {}
# One per node, holding the allocator's layout of its pools (PreparedPools) once a claim was evaluated there.
_POOL_SETS_LIMIT = 20_000
_SERIALS = itertools.count()
CACHES.register_table("inventory._POOL_SETS", lambda: _POOL_SETS, lambda: _POOL_SETS_LIMIT)
CACHES.register_table("inventory._SHARED", lambda: _SHARED, lambda: _SHARED_LIMIT)
_SHAPES: dict[tuple[object, ...], _Shape] = {}
# One per shape of pool: a fleet has a few kinds of node (model, GPU count, mode, driver version); ~0.1 MB each
# for 8 DynamicMIG H100s (the key and the parse).
_SHAPES_LIMIT = 64
CACHES.register_table("inventory._SHAPES", lambda: _SHAPES, lambda: _SHAPES_LIMIT)
_READ = (TYPE, PRODUCT, PROFILE, UUID, PARENT_UUID, INDEX)
"""The attributes the parse reads."""
_UUIDS = frozenset((UUID, PARENT_UUID))
_FULL_NAME_LIKE = re.compile(r"^gpu-\d+$")
"""A GPU without a UUID is grouped under this name: a UUID spelled so is not shared."""


_OUTCOMES: LRUCache[tuple[object, ...], Outcome] = LRUCache(maxsize=8_192)
# (shape, devices in use named in the shape's pool, claims, classes) -> the allocator's outcome: nodes in the same
# use (idle ones, and every node's "once its devices are free" check) share it. ~0.5 KB each.
CACHES.register_table("inventory._OUTCOMES", lambda: _OUTCOMES, lambda: int(_OUTCOMES.maxsize))
_SHAREABLE: LRUCache[tuple[object, ...], _ClaimSet] = LRUCache(maxsize=1_024)
# (claims, classes) -> their number and whether no selector reads what tells the pools of one shape apart: a few
# per workload.
CACHES.register_table("inventory._SHAREABLE", lambda: _SHAREABLE, lambda: int(_SHAREABLE.maxsize))
_CLAIM_SETS: dict[tuple[int, int], _ClaimSet] = {}
"""The same, by the identity of the sequences given (a demand passes its own tuples each time): no deep hash."""
_CLAIM_SETS_LIMIT = 1_024
CACHES.register_table("inventory._CLAIM_SETS", lambda: _CLAIM_SETS, lambda: _CLAIM_SETS_LIMIT)
_NUMBERS = itertools.count()


@dataclass(frozen=True, slots=True, eq=False)
class _ClaimSet:
    claims: Sequence[ClaimSpec]
    classes: Sequence[DeviceClass]
    number: int
    """Equal claims and classes, equal numbers (while the set is kept): what outcomes are kept by."""
    shareable: bool
    class_map: dict[str, DeviceClass]


def _claim_set(claims: Sequence[ClaimSpec], classes: Sequence[DeviceClass]) -> _ClaimSet:
    found = _CLAIM_SETS.get((id(claims), id(classes)))
    if found is not None and found.claims is claims and found.classes is classes:
        return found
    key = (tuple(claims), tuple(classes))
    by_value = _SHAREABLE.get(key)
    if by_value is None:
        expressions = {e for c in classes for e in c.selectors}
        expressions.update(e for claim in claims for r in claim.requests for a in r.alternatives for e in a.selectors)
        shareable = all(_blind_to_uuids(e) for e in expressions)
        by_value = _SHAREABLE[key] = _ClaimSet(key[0], key[1], next(_NUMBERS), shareable, {c.name: c for c in classes})
    if len(_CLAIM_SETS) >= _CLAIM_SETS_LIMIT:
        _CLAIM_SETS.clear()
    # holds the sequences given, so that their identities stay theirs while the entry is kept
    found = _CLAIM_SETS[(id(claims), id(classes))] = _ClaimSet(
        claims, classes, by_value.number, by_value.shareable, by_value.class_map
    )
    return found


def _allocator_shape(pools: tuple[Pool, ...], parsed: tuple[_ParsedPool, ...]) -> _Shape | None:
    """The shape whose layout serves a node with these pools: one pool of NVIDIA's driver, complete, valid and
    all on the node (no slices elsewhere, none without a node), its parse that of a known shape."""
    if len(pools) != 1 or len(parsed) != 1:
        return None
    (pool,), (mine,) = pools, parsed
    if (
        pool.driver != DRIVER
        or pool.invalid
        or pool.incomplete
        or pool.unsupported
        or pool.other_slices
        or mine.shape is None
        or not _same(mine.slices, pool.slices)
    ):
        return None
    template = mine.shape.pool
    if template.invalid or template.incomplete or template.unsupported or template.other_slices:
        return None
    return mine.shape


def _blind_to_uuids(expression: str) -> bool:
    try:
        reads = cel.compile_selector(expression).reads
    except cel.SelectorError:
        return False
    kind = "device.attributes"
    if kind in reads.whole or kind in reads.computed_domain or (kind, DRIVER) in reads.domains:
        return False
    return not any(k == kind and f"{d}/{n}" in _UUIDS for k, d, n in reads.keys)


def _parsed(pool: Pool) -> _ParsedPool:
    """The parse of ``pool``, reused while its slices are the same objects (a change of use alone)."""
    key = (pool.driver, pool.name)
    found = _POOLS.get(key)
    if (
        found is not None
        and len(found.slices) == len(pool.slices)
        and all(a is b for a, b in zip(found.slices, pool.slices))
        and found.invalid == pool.invalid
    ):
        return found
    if len(_POOLS) >= _POOLS_LIMIT:
        _POOLS.clear()
    found = _POOLS[key] = _parse_pool(pool)
    return found


def inventory(node: str, pools: Iterable[Pool], in_use: Iterable[DeviceKey] = ()) -> Inventory:
    """The ``gpu.nvidia.com`` devices of ``node`` in catalog terms, with the devices ``in_use`` allocated.

    ``pools`` are the node's pools as :func:`~extender.model.dra.pools.pools_of` gathers them: other drivers'
    pools, and other nodes' pools that are there only for their shared counters, are skipped. ``in_use`` is
    every allocated device of any claim (the allocator counts them all, whoever they are reserved for;
    adminAccess results excluded).
    """
    given = tuple(pools)
    mine = tuple(sorted((p for p in given if p.driver == DRIVER and _on(p, node)), key=lambda p: p.name))
    parsed = tuple(_parsed(p) for p in mine)
    return _build(node, tuple(p.name for p in mine), parsed, _pool_set(node, given), frozenset(in_use))


def _pool_set(node: str, pools: tuple[Pool, ...]) -> _PoolSet:
    found = _POOL_SETS.get(node)
    if found is None or len(found.pools) != len(pools) or not all(map(_same_pool, found.pools, pools)):
        if len(_POOL_SETS) >= _POOL_SETS_LIMIT:
            _POOL_SETS.clear()
        found = _POOL_SETS[node] = _PoolSet(pools, next(_SERIALS))
    return found


def _same_pool(a: Pool, b: Pool) -> bool:
    """Two gatherings of one pool from the same slice objects (``pools_of`` builds new Pool records each time)."""
    return a is b or (
        (a.driver, a.name, a.generation, a.invalid, a.incomplete, a.unsupported)
        == (b.driver, b.name, b.generation, b.invalid, b.incomplete, b.unsupported)
        and _same(a.slices, b.slices)
        and _same(a.counter_sets, b.counter_sets)
        and _same(a.other_slices, b.other_slices)
    )


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def _on(pool: Pool, node: str) -> bool:
    """The pool's devices are the node's: NVIDIA's driver names the pool after the node and lists its slices there."""
    return pool.name == node or any(s.node_name == node for s in pool.slices)


def _build(
    node: str,
    names: tuple[str, ...],
    pools: tuple[_ParsedPool, ...],
    pool_set: _PoolSet,
    in_use: frozenset[DeviceKey],
) -> Inventory:
    version = intern_key(("dra-inventory", node, pool_set.serial, in_use))
    warnings = [w for p in pools for w in p.warnings]
    unknown = sorted({u for p in pools for u in p.unknown_products})
    samples = tuple(s for p in pools for s in p.samples)
    gpus: list[DraGpu] = []
    for name, parsed in zip(names, pools):
        for gpu in parsed.gpus:
            if any(g.index == gpu.index for g in gpus):
                warnings.append(f"pool {name}: GPU {gpu.index} is published by another pool too: left out")
                continue
            gpus.append(gpu)
    gpus.sort(key=lambda g: g.index)
    if unknown:
        found = Inventory((), tuple(warnings), samples, in_use, version, pools, names, pool_set)
        unknown_product = UnknownProduct(", ".join(unknown), ())
        # Claims are still allocated from its devices (the allocator needs no catalog), placements not modelled.
        state = NodeState(
            node, (), Fidelity.DRA, warnings=tuple(warnings), unknown_product=unknown_product, devices=found
        )
        object.__setattr__(found, "node", state)
        return found
    states = []
    for gpu in gpus:
        state_of, more = _gpu_state(gpu, in_use)
        states.append(state_of)
        warnings.extend(more)
    found = Inventory(tuple(gpus), tuple(warnings), samples, in_use, version, pools, names, pool_set)
    state = NodeState(node, tuple(states), Fidelity.DRA, warnings=tuple(warnings), devices=found)
    object.__setattr__(found, "node", state)
    return found


def _gpu_state(gpu: DraGpu, in_use: frozenset[DeviceKey]) -> tuple[GpuState, list[str]]:
    full_used = bool(gpu.full_device) and (DRIVER, gpu.pool, gpu.full_device) in in_use
    used = [p for n, p in zip(gpu.mig_devices, gpu.placements) if (DRIVER, gpu.pool, n) in in_use]
    whole = GpuState(gpu.index, gpu.model, (), dynamic=gpu.dynamic, mig_enabled=False, whole_gpu_used=True)
    if full_used:
        if used:
            names = ", ".join(str(p) for p in used)
            return whole, [f"GPU {gpu.index}: the full GPU and MIG devices ({names}) are allocated at once"]
        return whole, []
    if not gpu.mig_devices:  # a GPU published whole only (MIG disabled)
        return GpuState(gpu.index, gpu.model, (), dynamic=False, mig_enabled=False), []
    if gpu.dynamic:
        try:
            occupancy_of(gpu.model, used)
        except PlacementError as error:
            # Someone else's allocation (kube-scheduler does not re-check it): nothing more fits, say why.
            return whole, [f"GPU {gpu.index}: allocated MIG devices conflict ({error}): taken as fully used"]
        return GpuState(gpu.index, gpu.model, tuple(Instance(p, True) for p in used), dynamic=True), []
    used_set = set(used)
    instances = tuple(Instance(p, p in used_set) for p in gpu.placements)
    return GpuState(gpu.index, gpu.model, instances), []
