"""Pools as kube-scheduler's structured allocator gathers them for one node.

Modelled on k8s.io/dynamic-resource-allocation v0.36.3 ``structured/internal/incubating/pools_incubating.go``
(``GatherPools``, ``buildPool``, ``checkSlicesInPool``) and the split of slices in ``NewAllocator``
(``allocator_incubating.go``), the variant kube-scheduler v1.36 runs with its default feature gates
(DRAPartitionableDevices and DRADeviceBindingConditions on):

- A slice is looked at for a node when its ``spec.nodeName`` is the node, or when it has shared counters
  (those are always included, whatever node they name), or when it has no ``spec.nodeName``.
- Per (driver, pool) only the highest generation among those slices counts.
- The pool is complete when it has as many slices as the first of them says (``resourceSliceCount``). If it
  has fewer, all slices of the cluster are checked: a newer generation elsewhere drops the pool; the pool's
  slices on other nodes make it complete (they offer no device here but their allocated devices take from
  the shared counters: :attr:`Pool.other_slices`); otherwise the pool is incomplete.
- A complete pool is invalid for a device name used twice in its device slices, a counter set declared twice,
  or a device consuming a counter set or counter the pool does not declare (the reasons are Go's texts).
- Slices are sorted by name, pools by (driver, pool name), pools with a device that has binding conditions
  last. :attr:`Pool.slices` holds the counter slices too; devices listed in a slice that also has shared
  counters (which the v1 API forbids from 1.35) are not offered, as in Go.

Supported node selection: ``spec.nodeName`` and shared-counter slices, exactly. A slice without
``spec.nodeName`` and without shared counters (``allNodes``, ``nodeSelector``, per-device node selection:
the records do not say which) is kept in its pool and the pool is marked :attr:`Pool.unsupported`; the
allocator model then refuses to answer where one of its devices could be chosen.

Note that a node's pools include every other node's pool whose counter slice the driver publishes (NVIDIA's
DynamicMIG slice 0): such a pool offers no device on this node, but the allocator fails an ``All`` request on
it while it is incomplete, and reports "invalid resource pools" when it is invalid and nothing fits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .types import CounterSet, Pool, ResourceSlice

PoolId = tuple[str, str]
"""(driver, pool name)."""


def pools_of(slices: Iterable[ResourceSlice], node: str | None = None) -> tuple[Pool, ...]:
    """The pools the allocator gathers for ``node`` from all of the cluster's ``slices``, in its order.

    ``node=None`` takes every slice as targeting: each pool as a whole, as its driver published it.
    """
    every = tuple(slices)
    if node is None:
        looked_at: Sequence[ResourceSlice] = every
    else:
        # NewAllocator: slices on the node first, then those with no node name or with shared counters.
        looked_at = [s for s in every if s.node_name == node and not s.shared_counters] + [
            s for s in every if not s.node_name or s.shared_counters
        ]
    gathered: dict[PoolId, list[ResourceSlice]] = {}
    for piece in looked_at:
        pool_id = (piece.driver, piece.pool)
        found = gathered.get(pool_id)
        if found is None or piece.generation > found[0].generation:
            gathered[pool_id] = [piece]
        elif piece.generation == found[0].generation:
            found.append(piece)

    plain: list[Pool] = []
    with_binding_conditions: list[Pool] = []
    for pool_id, pool_slices in gathered.items():
        generation = pool_slices[0].generation
        wanted = pool_slices[0].slice_count
        everywhere: list[ResourceSlice] | None = None
        if len(pool_slices) != wanted:
            same_pool = [s for s in every if (s.driver, s.pool) == pool_id]
            if any(s.generation > generation for s in same_pool):
                continue  # the driver is replacing this generation; the newer one offers nothing here
            everywhere = [s for s in same_pool if s.generation == generation]
            if len(everywhere) != wanted:
                plain.append(
                    Pool(
                        pool_id[0],
                        pool_id[1],
                        generation,
                        tuple(sorted(pool_slices, key=_name)),
                        invalid=f"resource pool {pool_id[0]}/{pool_id[1]} is incomplete: "
                        f"{len(everywhere)} of {wanted} slices",
                        incomplete=True,
                        unsupported=_unsupported(pool_slices),
                    )
                )
                continue
        pool = _build(pool_id, generation, pool_slices, everywhere)
        if any(d.binding_conditions for s in pool.slices if not s.shared_counters for d in s.devices):
            with_binding_conditions.append(pool)
        else:
            plain.append(pool)
    plain.sort(key=_pool_order)
    with_binding_conditions.sort(key=_pool_order)
    return (*plain, *with_binding_conditions)


def _name(piece: ResourceSlice) -> str:
    return piece.name


def _pool_order(pool: Pool) -> PoolId:
    return (pool.driver, pool.name)


def _unsupported(pool_slices: Iterable[ResourceSlice]) -> str:
    for piece in pool_slices:
        if not piece.node_name and not piece.shared_counters:
            return (
                f"slice {piece.name} has no spec.nodeName (allNodes, nodeSelector or per-device node "
                "selection), which the model does not evaluate"
            )
    return ""


def _build(
    pool_id: PoolId, generation: int, pool_slices: list[ResourceSlice], everywhere: list[ResourceSlice] | None
) -> Pool:
    """``buildPool``: validate and split the gathered slices (``everywhere`` when they are not all of them)."""
    ordered = tuple(sorted(pool_slices, key=_name))
    counter_slices = [s for s in ordered if s.shared_counters]
    device_slices = [s for s in ordered if not s.shared_counters]
    unsupported = _unsupported(ordered)

    def invalid(reason: str, counter_sets: tuple[CounterSet, ...] = ()) -> Pool:
        return Pool(pool_id[0], pool_id[1], generation, ordered, reason, counter_sets, unsupported=unsupported)

    names: set[str] = set()
    for piece in device_slices:
        for device in piece.devices:
            if device.name in names:
                return invalid(f"duplicate device name {device.name}")
            names.add(device.name)
    counter_sets: dict[str, CounterSet] = {}
    for piece in counter_slices:
        for counter_set in piece.shared_counters:
            if counter_set.name in counter_sets:
                return invalid(f"duplicate counter set name {counter_set.name}")
            counter_sets[counter_set.name] = counter_set
    declared = tuple(counter_sets.values())
    known = {c.name: {name for name, _ in c.counters} for c in declared}
    reason = _consumption_problem(known, ordered)
    if reason:
        return invalid(reason, declared)
    others: tuple[ResourceSlice, ...] = ()
    if everywhere is not None and len(everywhere) != len(ordered):
        here = {s.name for s in ordered}
        others = tuple(s for s in everywhere if s.name not in here)
        reason = _consumption_problem(known, others)
        if reason:
            return invalid(reason, declared)
    return Pool(
        pool_id[0],
        pool_id[1],
        generation,
        ordered,
        counter_sets=declared,
        other_slices=others,
        unsupported=unsupported,
    )


def _consumption_problem(known: dict[str, set[str]], pieces: Iterable[ResourceSlice]) -> str:
    """``validateDeviceCounterConsumption``: every consumed counter set and counter must be declared."""
    for piece in pieces:
        for device in piece.devices:
            for consumption in device.consumes:
                counters = known.get(consumption.counter_set)
                if counters is None:
                    return f"counter set {consumption.counter_set} not found"
                for name, _ in consumption.counters:
                    if name not in counters:
                        return f"counter {name} not found in counter set {consumption.counter_set}"
    return ""
