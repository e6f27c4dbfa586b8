"""The DRA objects of the view, indexed the way answers read them: per node its pools and the devices in use.

:class:`DraRecords` holds the ResourceSlices, ResourceClaims, ResourceClaimTemplates and DeviceClasses the
watch streams (or a snapshot) deliver, and keeps two indexes that change only with what they derive from:

- per node, its pools: ``extender.model.dra.pools.pools_of`` for the node over every slice of each pool that
  has a slice on the node, and the slices that name no node; rebuilt only when one of those slices changes.
  Other nodes' pools, which kube-scheduler also gathers when they publish shared counters, are left out: they
  offer no device on the node (NVIDIA's driver publishes one pool per node, counters included);
- per node, the devices that allocated claims hold there (adminAccess results excluded, reserved or not),
  rebuilt only when an allocation on one of its pools changes.

Each write answers the nodes whose pools or allocations it changed; :class:`~extender.view.store.ClusterView`
owns the instance and turns those into its change log. Nothing here logs or counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from ..model.dra.pools import pools_of
from ..model.dra.types import ClaimTemplate, DeviceClass, Pool, ResourceClaim, ResourceSlice

DRIVER = "gpu.nvidia.com"
"""The driver whose pools make a node's GPU state come from DRA (NVIDIA's DRA driver)."""

DeviceKey = tuple[str, str, str]
"""(driver, pool, device): how an allocation result names a device."""
PoolKey = tuple[str, str]
"""(driver, pool)."""
ObjectKey = tuple[str, str]
"""(namespace, name)."""


def held_devices(claim: ResourceClaim) -> frozenset[DeviceKey]:
    """The devices an allocated claim takes from others: its results without adminAccess."""
    if not claim.allocation:
        return frozenset()
    return frozenset(r.key for r in claim.allocation if not r.admin_access)


@dataclass
class DraRecords:
    slices: dict[str, ResourceSlice] = field(default_factory=dict)
    """By slice name."""
    claims: dict[ObjectKey, ResourceClaim] = field(default_factory=dict)
    templates: dict[ObjectKey, ClaimTemplate] = field(default_factory=dict)
    classes: dict[str, DeviceClass] = field(default_factory=dict)
    _pool_slices: dict[PoolKey, dict[str, ResourceSlice]] = field(default_factory=dict)
    _pool_nodes: dict[PoolKey, dict[str, int]] = field(default_factory=dict)
    """Pool -> node -> how many of the pool's slices name that node."""
    _node_pools: dict[str, dict[PoolKey, int]] = field(default_factory=dict)
    _unpinned: dict[str, ResourceSlice] = field(default_factory=dict)
    """Slices without ``spec.nodeName`` (``allNodes``, ``nodeSelector``): looked at for every node."""
    _held: dict[PoolKey, dict[ObjectKey, frozenset[DeviceKey]]] = field(default_factory=dict)
    """Pool -> claim -> the claim's held devices in that pool."""
    _pools: dict[str, tuple[Pool, ...]] = field(default_factory=dict)
    _allocated: dict[str, frozenset[DeviceKey]] = field(default_factory=dict)

    # --- slices ------------------------------------------------------------------------------------

    def put_slice(self, new: ResourceSlice) -> set[str]:
        """Add or replace a slice; returns the nodes whose pools changed."""
        changed = self._drop_slice(new.name)
        key = (new.driver, new.pool)
        self.slices[new.name] = new
        self._pool_slices.setdefault(key, {})[new.name] = new
        if new.node_name:
            nodes = self._pool_nodes.setdefault(key, {})
            nodes[new.node_name] = nodes.get(new.node_name, 0) + 1
            pools = self._node_pools.setdefault(new.node_name, {})
            pools[key] = pools.get(key, 0) + 1
        else:
            self._unpinned[new.name] = new
            changed |= set(self._node_pools)
        changed |= set(self._pool_nodes.get(key, ()))
        self._forget(changed)
        return changed

    def remove_slice(self, name: str) -> set[str]:
        changed = self._drop_slice(name)
        self._forget(changed)
        return changed

    def _drop_slice(self, name: str) -> set[str]:
        old = self.slices.pop(name, None)
        if old is None:
            return set()
        key = (old.driver, old.pool)
        changed = set(self._pool_nodes.get(key, ()))
        in_pool = self._pool_slices.get(key)
        if in_pool is not None:
            in_pool.pop(name, None)
            if not in_pool:
                del self._pool_slices[key]
        if old.node_name:
            _decrement(self._pool_nodes, key, old.node_name)
            _decrement(self._node_pools, old.node_name, key)
        else:
            del self._unpinned[name]
            changed |= set(self._node_pools)
        return changed

    def replace_slices(self, slices: Iterable[ResourceSlice]) -> None:
        self.slices, self._pool_slices, self._pool_nodes, self._node_pools, self._unpinned = {}, {}, {}, {}, {}
        self._pools.clear()
        self._allocated.clear()
        for item in slices:
            self.put_slice(item)

    # --- claims ------------------------------------------------------------------------------------

    def put_claim(self, new: ResourceClaim) -> set[str]:
        """Add or replace a claim; returns the nodes whose allocated devices changed."""
        key = (new.namespace, new.name)
        old = self.claims.get(key)
        self.claims[key] = new
        before, after = (held_devices(old) if old else frozenset()), held_devices(new)
        if before == after:
            return set()
        return self._rehold(key, before, after, old, new)

    def remove_claim(self, key: ObjectKey) -> set[str]:
        old = self.claims.pop(key, None)
        if old is None:
            return set()
        before = held_devices(old)
        return self._rehold(key, before, frozenset(), old, None) if before else set()

    def replace_claims(self, claims: Iterable[ResourceClaim]) -> None:
        self.claims, self._held = {}, {}
        self._allocated.clear()
        for item in claims:
            self.put_claim(item)

    def _rehold(
        self,
        key: ObjectKey,
        before: frozenset[DeviceKey],
        after: frozenset[DeviceKey],
        old: ResourceClaim | None,
        new: ResourceClaim | None,
    ) -> set[str]:
        pools = {d[:2] for d in before} | {d[:2] for d in after}
        for pool in pools:
            held = frozenset(d for d in after if d[:2] == pool)
            in_pool = self._held.setdefault(pool, {})
            if held:
                in_pool[key] = held
            else:
                in_pool.pop(key, None)
                if not in_pool:
                    del self._held[pool]
        changed = {node for pool in pools for node in self._pool_nodes.get(pool, ())}
        changed |= {c.allocated_node for c in (old, new) if c is not None and c.allocated_node}
        for node in changed:
            self._allocated.pop(node, None)
        return changed

    # --- templates and classes ---------------------------------------------------------------------

    def put_template(self, template: ClaimTemplate) -> bool:
        """Add or replace a template; True when it differs from the one held."""
        key = (template.namespace, template.name)
        old, self.templates[key] = self.templates.get(key), template
        return old != template

    def put_class(self, device_class: DeviceClass) -> bool:
        old, self.classes[device_class.name] = self.classes.get(device_class.name), device_class
        return old != device_class

    # --- reading -----------------------------------------------------------------------------------

    def nodes_with_pools(self) -> Iterator[str]:
        return iter(self._node_pools)

    def has_driver(self, node: str, driver: str = DRIVER) -> bool:
        """The node has a slice of ``driver`` (a pool of NVIDIA's DRA driver makes it a DRA node)."""
        return any(d == driver for d, _ in self._node_pools.get(node, ()))

    def pools(self, node: str) -> tuple[Pool, ...]:
        """The node's pools in the allocator's order (cached until one of their slices changes)."""
        found = self._pools.get(node)
        if found is None:
            keys = self._node_pools.get(node)
            if not keys:
                return ()
            slices = [s for key in keys for s in self._pool_slices.get(key, {}).values()]
            slices += [s for s in self._unpinned.values() if (s.driver, s.pool) not in keys]
            found = self._pools[node] = pools_of(slices, node)
        return found

    def allocated(self, node: str) -> frozenset[DeviceKey]:
        """The devices of the node's pools that allocated claims hold (cached until an allocation changes)."""
        found = self._allocated.get(node)
        if found is None:
            held: set[DeviceKey] = set()
            for key in self._node_pools.get(node, ()):
                for devices in self._held.get(key, {}).values():
                    held |= devices
            found = self._allocated[node] = frozenset(held)
        return found

    def holders(self, node: str) -> Iterator[ResourceClaim]:
        """The allocated claims that hold a device of the node's pools."""
        seen: set[ObjectKey] = set()
        for key in self._node_pools.get(node, ()):
            for claim_key in self._held.get(key, {}):
                if claim_key not in seen:
                    seen.add(claim_key)
                    yield self.claims[claim_key]

    def _forget(self, nodes: Iterable[str]) -> None:
        for node in nodes:
            self._pools.pop(node, None)
            self._allocated.pop(node, None)


_K = TypeVar("_K")
_V = TypeVar("_V")


def _decrement(counts: dict[_K, dict[_V, int]], outer: _K, inner: _V) -> None:
    within = counts.get(outer)
    if within is None:
        return
    left = within.get(inner, 0) - 1
    if left > 0:
        within[inner] = left
    else:
        within.pop(inner, None)
        if not within:
            del counts[outer]
