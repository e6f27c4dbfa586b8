"""New capacity for pods that no existing node can host: how many nodes of which pool.

A pool is a Karpenter NodePool whose nodes come up with one MIG layout (its ``nvidia.com/mig.config``).
The pending demand is packed, largest first, into the nodes already on their way (arriving: registered but
not yet re-partitioned by MIG Manager; requested: asked for and not yet there), then into new nodes of the
cheapest pool whose layout hosts it, as the extender itself would fill them (the same fit as the filter).
Pure: the provisioning controller and ``mig-extender pools`` share it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .catalog import CatalogError, GpuModel, model_named
from .demand import PodDemand
from .eligibility import FILTERING_EFFECTS, PodPlacement, Requirement, Taint, Term
from .migparted import MigPartedConfig, configured_gpus
from .policy import PolicyConfig, evaluate
from .state import NodeState

_SLICES = re.compile(r"(\d+)g\.")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_POOL_KEYS = {"nodePool", "gpu", "gpusPerNode", "migConfig", "cost", "maxNodes"}
MAX_GPUS_PER_NODE = 64


class PoolsError(ValueError):
    """A pools file that cannot be used; the message names the entry and field."""


@dataclass(frozen=True, slots=True)
class Pool:
    """A NodePool of MIG nodes: what one of its nodes looks like once MIG Manager applied its config."""

    name: str
    model: GpuModel
    gpus_per_node: int
    mig_config: str
    cost: float = 1.0
    """Relative cost of one node: of the pools that host a demand, the cheapest gets the new node."""
    max_nodes: int = 4
    """At most this many nodes asked for (requested, not yet there) at once."""

    def empty_node(self, mig_parted: MigPartedConfig) -> NodeState:
        """A new node of the pool, every instance free; MigPartedError if the config does not cover it."""
        specs = mig_parted.resolve_all(self.mig_config, self.model, self.gpus_per_node)
        return NodeState(f"<new {self.name} node>", configured_gpus(self.model, specs))

    def advertised(self, mig_parted: MigPartedConfig) -> dict[str, int]:
        """Extended resources a node of the pool advertises with the device plugin's mixed strategy."""
        counts: dict[str, int] = {}
        for gpu in self.empty_node(mig_parted).gpus:
            if not gpu.mig_enabled:
                counts["nvidia.com/gpu"] = counts.get("nvidia.com/gpu", 0) + 1
            for instance in gpu.instances:
                name = instance.profile.resource_name
                counts[name] = counts.get(name, 0) + 1
        return counts


@dataclass(frozen=True)
class PoolNodes:
    """What a node of a pool will carry, as its NodePool says before the node exists: label values and taints.

    ``labels`` maps each key the NodePool decides (a template label, or an ``In`` requirement) to the values
    a node may get; ``absent`` are keys it rules out (``DoesNotExist``). Keys it leaves open (the instance
    type's, the zone Karpenter picks) may take any value: a pod's selector on them is not held against the
    pool.
    """

    labels: Mapping[str, frozenset[str]] = field(default_factory=dict)
    absent: frozenset[str] = frozenset()
    taints: tuple[Taint, ...] = ()

    def admits(self, placement: PodPlacement) -> bool:
        """Whether a pod with ``placement`` may use such a node: tolerations, nodeSelector, required affinity."""
        if any(t.effect in FILTERING_EFFECTS and not placement.tolerates(t) for t in self.taints):
            return False
        if any(not self._possible(key, (Requirement(key, "In", (value,)),)) for key, value in placement.node_selector):
            return False
        return placement.required_terms is None or any(self._term(term) for term in placement.required_terms)

    def _term(self, term: Term) -> bool:
        if not term.requirements:
            return False  # an empty or unreadable term matches no node, as upstream
        by_key: dict[str, list[Requirement]] = {}
        for requirement in term.requirements:
            if requirement.field:
                # metadata.name: a new node's name is not known; In names existing nodes only
                if requirement.operator != "NotIn":
                    return False
                continue
            by_key.setdefault(requirement.key, []).append(requirement)
        return all(self._possible(key, requirements) for key, requirements in by_key.items())

    def _possible(self, key: str, requirements: Sequence[Requirement]) -> bool:
        """Some label the node may get satisfies every requirement on ``key``."""
        if key in self.absent:
            return all(r.matches({}, "") for r in requirements)
        values = self.labels.get(key)
        if values is None:
            return True  # left open by the NodePool
        return any(all(r.matches({key: value}, "") for r in requirements) for value in values)


class Unhosted(enum.StrEnum):
    NO_POOL = "no-pool"
    """No configured pool's layout can host the demand, even on an empty node."""
    CAPPED = "capped"
    """Pools that could host it are at their ``max_nodes``."""
    EXCLUDED = "excluded"
    """Pools whose layout could host it are ruled out by its node selector, node affinity or tolerations."""


class NodeSource(enum.IntEnum):
    """Where a node of the plan comes from, in the order demand fills them."""

    ARRIVING = 0
    REQUESTED = 1
    NEW = 2


@dataclass
class _PlannedNode:
    pool: str
    source: NodeSource
    state: NodeState
    used: bool = False


@dataclass(frozen=True)
class CapacityPlan:
    requests: Mapping[str, int]
    """Per pool: nodes to keep asked for (requested ones that host demand, plus new ones)."""
    hosts: Mapping[int, str]
    """Demand index -> the pool whose arriving, requested or new node hosts it."""
    unhosted: Mapping[int, Unhosted]
    new: Mapping[str, int] = field(default_factory=dict)
    """Per pool: nodes beyond those already requested."""
    nodes: tuple[tuple[str, NodeSource], ...] = ()
    """Every node of the plan that hosts demand: its pool and where it comes from."""
    placed: Mapping[int, int] = field(default_factory=dict)
    """Demand index -> its node in :attr:`nodes`."""


def demand_slices(demand: PodDemand) -> int:
    """Compute slices a demand takes, from its profile names (``3g.40gb`` is 3): the packing order."""
    total = demand.gpus * 8
    for name, count in demand.mig:
        match = _SLICES.search(name)
        total += count * (int(match.group(1)) if match else 1)
    return total


def plan_capacity(
    pools: Sequence[tuple[Pool, NodeState]],
    demands: Sequence[PodDemand],
    policy: PolicyConfig,
    *,
    arriving: Mapping[str, int] | None = None,
    requested: Mapping[str, int] | None = None,
    arrived: Sequence[tuple[str, NodeState]] = (),
    usable: Sequence[frozenset[str] | None] = (),
) -> CapacityPlan:
    """Pack ``demands`` into arriving, then requested, then new nodes; new ones from the cheapest pool.

    ``pools`` pairs each pool with its empty node (:meth:`Pool.empty_node`); pools are tried by cost, then
    in the order given. ``arriving`` counts nodes on their way as empty nodes of their pool; ``arrived`` are
    arriving nodes already in their real state (layout applied, not yet usable by the pods), filled first.
    ``usable`` gives, per demand, the pools its pod may use (None or missing: every pool).
    """
    arriving = arriving or {}
    requested = requested or {}
    templates = {pool.name: template for pool, template in pools}
    by_cost = sorted((pool for pool, _ in pools), key=lambda p: p.cost)  # stable: equal costs keep their order
    nodes: list[_PlannedNode] = [_PlannedNode(pool, NodeSource.ARRIVING, state) for pool, state in arrived]
    for source, counts in ((NodeSource.ARRIVING, arriving), (NodeSource.REQUESTED, requested)):
        for pool, _ in pools:
            nodes.extend(_PlannedNode(pool.name, source, templates[pool.name]) for _ in range(counts.get(pool.name, 0)))
    asked = {pool.name: requested.get(pool.name, 0) for pool, _ in pools}
    hosts: dict[int, str] = {}
    unhosted: dict[int, Unhosted] = {}

    def constraint(index: int) -> int:
        allowed = usable[index] if index < len(usable) else None
        return len(pools) if allowed is None else len(allowed)

    # largest first; of equal size, those with fewer pools to choose from first (the others can follow them)
    order = sorted(range(len(demands)), key=lambda i: (-demand_slices(demands[i]), constraint(i)))
    placed: dict[int, _PlannedNode] = {}
    for index in order:
        demand = demands[index]
        allowed = usable[index] if index < len(usable) else None
        host = _place([n for n in nodes if allowed is None or n.pool in allowed], demand, policy)
        if host is not None:
            hosts[index] = host.pool
            placed[index] = host
            continue
        hosting = [pool for pool in by_cost if evaluate(templates[pool.name], demand, policy).fits_now]
        if not hosting:
            unhosted[index] = Unhosted.NO_POOL
            continue
        hosting = [pool for pool in hosting if allowed is None or pool.name in allowed]
        if not hosting:
            unhosted[index] = Unhosted.EXCLUDED
            continue
        room = [pool for pool in hosting if asked[pool.name] < pool.max_nodes]
        if not room:
            unhosted[index] = Unhosted.CAPPED
            continue
        pool = room[0]
        asked[pool.name] += 1
        nodes.append(_PlannedNode(pool.name, NodeSource.NEW, templates[pool.name]))
        _place(nodes[-1:], demand, policy)
        hosts[index] = pool.name
        placed[index] = nodes[-1]
    requests = {pool.name: 0 for pool, _ in pools}
    new = dict(requests)
    for node in nodes:
        if node.source is NodeSource.NEW:
            new[node.pool] += 1
        if node.source is not NodeSource.ARRIVING and node.used:
            requests[node.pool] += 1
    used = [node for node in nodes if node.used]
    number = {id(node): n for n, node in enumerate(used)}
    return CapacityPlan(
        requests,
        hosts,
        unhosted,
        new,
        tuple((node.pool, node.source) for node in used),
        {index: number[id(node)] for index, node in placed.items()},
    )


def _place(nodes: Sequence[_PlannedNode], demand: PodDemand, policy: PolicyConfig) -> _PlannedNode | None:
    """Put the demand on the first node that hosts it now (fits are cached by state: equal nodes are cheap)."""
    for node in nodes:
        result = evaluate(node.state, demand, policy)
        if result.fits_now:
            node.state = node.state.with_used((p.gpu_index, p.placement) for p in result.plan)
            node.used = True
            return node
    return None


def parse_pools(document: object) -> tuple[Pool, ...]:
    """Pools from a pools file: ``{"pools": [{"nodePool", "gpu", "gpusPerNode", "migConfig", ...}]}``."""
    if not isinstance(document, Mapping) or not isinstance(document.get("pools"), list):
        raise PoolsError("expected a mapping with a list 'pools'")
    pools: list[Pool] = []
    for position, entry in enumerate(document["pools"]):
        where = f"pools[{position}]"
        if not isinstance(entry, Mapping):
            raise PoolsError(f"{where}: expected a mapping")
        unknown = sorted(set(map(str, entry)) - _POOL_KEYS)
        if unknown:
            raise PoolsError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_POOL_KEYS))}")
        name = entry.get("nodePool")
        if not isinstance(name, str) or len(name) > 63 or not _DNS_LABEL.fullmatch(name):
            raise PoolsError(f"{where}.nodePool: {name!r} is not a NodePool name (a DNS label)")
        if any(p.name == name for p in pools):
            raise PoolsError(f"{where}.nodePool: {name!r} is listed twice")
        try:
            model = model_named(str(entry.get("gpu", "")))
        except CatalogError as exc:
            raise PoolsError(f"{where}.gpu: {exc}") from None
        gpus = _integer(entry, "gpusPerNode", where, None)
        if not 0 < gpus <= MAX_GPUS_PER_NODE:
            raise PoolsError(f"{where}.gpusPerNode: {gpus} is outside 1..{MAX_GPUS_PER_NODE}")
        config = entry.get("migConfig")
        if not isinstance(config, str) or not config:
            raise PoolsError(f"{where}.migConfig: {config!r} is not a mig-parted config name")
        cost = _float(entry, "cost", where, 1.0)
        if not cost > 0:
            raise PoolsError(f"{where}.cost: must be positive, not {cost}")
        max_nodes = _integer(entry, "maxNodes", where, 4)
        if max_nodes < 1:
            raise PoolsError(f"{where}.maxNodes: must be at least 1, not {max_nodes}")
        pools.append(Pool(name, model, gpus, config, cost, max_nodes))
    return tuple(pools)


def _integer(entry: Mapping[str, object], key: str, where: str, default: int | None) -> int:
    value = entry.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise PoolsError(f"{where}.{key}: expected an integer, not {value!r}")
    return value


def _float(entry: Mapping[str, object], key: str, where: str, default: float) -> float:
    value = entry.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise PoolsError(f"{where}.{key}: expected a number, not {value!r}")
    try:
        return float(value)
    except OverflowError:  # an int beyond a float's range
        raise PoolsError(f"{where}.{key}: {value} is out of range") from None
