"""The scheduling policy over many nodes: filter outcomes, scores, and the cluster-wide verdict for a pod.

One place for the decisions that the HTTP extender, the simulator and the benchmarks all make, so that
nothing is computed twice in different ways.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cachetools import LRUCache

from .caches import CACHES
from .catalog import GpuModel
from .demand import GPU_RESOURCE, MIG_RESOURCE_PREFIX, PodDemand
from .dra.fit import NO_DRA_DEVICES, fit_claims
from .fit import Allocator, FitResult, Verdict, fit
from .layouts import layout_text
from .migparted import MigPartedConfig, MigPartedError
from .placement import Placement
from .scoring import Scorer, normalize
from .state import GpuState, Instance, NodeState


class Outcome(enum.StrEnum):
    """Filter result codes, as kube-scheduler's framework names them."""

    SUCCESS = "Success"
    UNSCHEDULABLE = "Unschedulable"
    UNRESOLVABLE = "UnschedulableAndUnresolvable"


def outcome_of_verdict(verdict: Verdict) -> Outcome:
    # A node the extender cannot evaluate passes: kube-scheduler's own filters (its counts) decide.
    if verdict in (Verdict.FITS_NOW, Verdict.UNKNOWN_PRODUCT, Verdict.NOT_EVALUATED):
        return Outcome.SUCCESS
    return Outcome.UNSCHEDULABLE if verdict.preemption_may_help else Outcome.UNRESOLVABLE


def outcome_of(result: FitResult) -> Outcome:
    return outcome_of_verdict(result.verdict)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    dynamic_allocator: Allocator = Allocator.FIRST_FIT


def allocator_for(node: NodeState, config: PolicyConfig) -> Allocator:
    """The node-side allocator: pre-made instances go to the kubelet; dynamic GPUs to the DRA allocator."""
    return config.dynamic_allocator if node.dynamic else Allocator.KUBELET


# Nodes with equal state ids get equal answers: a fleet of a few layouts costs a few fits per demand.
# 8 demands over 10,000 distinct node states (the soak uses 6), or more over fewer; least recently used go first.
_FITS_LIMIT = 80_000  # worst ~33 MB (~410 B per entry, measured)
_FITS: LRUCache[tuple[int, PodDemand, Allocator], FitResult] = LRUCache(maxsize=_FITS_LIMIT)
CACHES.register_table("policy._FITS", lambda: _FITS, lambda: int(_FITS.maxsize))


def evaluate(node: NodeState, demand: PodDemand, config: PolicyConfig) -> FitResult:
    """``fit`` with the node's own allocator, cached by node state and demand."""
    allocator = allocator_for(node, config)
    key = (node.state_id, demand, allocator)
    result = _FITS.get(key)
    if result is None:
        result = _FITS[key] = _fit_pod(node, demand, allocator)
    return result


DRA_ONLY = "MIG: node offers MIG only through DRA (ResourceClaims), not as nvidia.com/mig-* resources"


def _fit_pod(node: NodeState, demand: PodDemand, allocator: Allocator) -> FitResult:
    """The device plugin's fit on device-plugin nodes, the DRA allocator's on nodes that publish DRA devices.

    A DRA node serves the extended resources a DeviceClass backs as a claim; on a device-plugin node the same
    resources are the device plugin's, and a pod's own MIG claims find no device there.
    """
    claims = demand.claims
    if claims is None:
        if node.devices is not None and not demand.is_empty:
            return FitResult(Verdict.NEVER, DRA_ONLY)
        return fit(node, demand, allocator)
    plugin = PodDemand(demand.mig, demand.gpus)
    if node.devices is None:
        if claims.own_claims or claims.pinned_node:
            return FitResult(Verdict.NEVER, NO_DRA_DEVICES)
        return fit(node, plugin, allocator)
    unbacked = PodDemand(
        tuple((n, c) for n, c in demand.mig if MIG_RESOURCE_PREFIX + n not in claims.backed),
        0 if GPU_RESOURCE in claims.backed else demand.gpus,
    )
    if not unbacked.is_empty:
        return FitResult(Verdict.NEVER, DRA_ONLY)
    return fit_claims(node, claims)


def scores(
    candidates: Sequence[tuple[NodeState, FitResult]],
    scorer: Scorer,
    weights: Mapping[str, float],
    memo: dict[int, float] | None = None,
) -> list[int]:
    """Scores 0..10 for nodes that fit, normalised once over the whole request; others get 0.

    Nodes in equal states score equally: each state is scored once. ``memo`` (state id -> raw score)
    may carry raw scores across requests for the same demand, scorer and weights.
    """
    fitting = [i for i, (_, result) in enumerate(candidates) if result.fits_now]
    seen: dict[int, float] = {} if memo is None else memo
    raw = []
    for i in fitting:
        node, fit_result = candidates[i]
        value = seen.get(node.state_id)
        if value is None:
            value = seen[node.state_id] = scorer(node, fit_result, weights)
        raw.append(value)
    normalized = [0] * len(candidates)
    for i, score in zip(fitting, normalize(raw)):
        normalized[i] = score
    return normalized


class PodVerdict(enum.StrEnum):
    """What the cluster as a whole can do for a pending pod (the ``mig-extender.io/verdict`` values)."""

    FITS = "fits"
    RELAYOUT = "relayout"
    NO_LAYOUT_FITS = "no-layout-fits"


@dataclass(frozen=True, slots=True)
class ClusterVerdict:
    verdict: PodVerdict
    reason: str
    node: str | None = None
    suggested_layout: str | None = None


_PREFERRED_CONFIGS = ("all-balanced",)


def _idle_node_with(
    name: str, model: GpuModel, count: int, config: MigPartedConfig, config_name: str
) -> NodeState | None:
    gpus = []
    for index in range(count):
        try:
            spec = config.resolve(config_name, model, index)
        except MigPartedError:
            return None
        if spec is None or not spec.mig_enabled:
            return None
        gpus.append(GpuState(index, model, tuple(Instance(p, False) for p in spec.layout(model))))
    return NodeState(name, tuple(gpus))


def suggest_layout(demand: PodDemand, model: GpuModel, gpu_count: int, config: MigPartedConfig) -> str | None:
    """A mig-parted config name under which an idle node of this shape hosts the demand, or a geometry."""
    names = [n for n in _PREFERRED_CONFIGS if n in config.configs]
    names += [n for n in config.names() if n not in names]
    for config_name in names:
        node = _idle_node_with("suggestion", model, gpu_count, config, config_name)
        if node is not None and fit(node, demand).fits_now:
            return config_name
    empty = NodeState("suggestion", tuple(GpuState(i, model, (), dynamic=True) for i in range(gpu_count)))
    planned = fit(empty, demand, Allocator.IDEAL)
    if not planned.fits_now:
        return None
    per_gpu: dict[int, list[Placement]] = {}
    for instance in planned.plan:
        per_gpu.setdefault(instance.gpu_index, []).append(instance.placement)
    return "; ".join(f"gpu{i}: {layout_text(p)}" for i, p in sorted(per_gpu.items()))


def cluster_verdict(
    demand: PodDemand,
    nodes: Iterable[NodeState],
    config: PolicyConfig,
    mig_parted: MigPartedConfig,
) -> ClusterVerdict:
    """Can any node host the pod now, after re-partitioning idle GPUs, or does it need new capacity?"""
    search = VerdictSearch(demand, config)
    search.add(nodes)
    return search.verdict(mig_parted)


class VerdictSearch:
    """:func:`cluster_verdict` fed nodes a slice at a time, for a caller that must give the event loop back
    between slices (the verdict scan runs beside ``/filter`` on one thread, not in a worker thread)."""

    def __init__(self, demand: PodDemand, config: PolicyConfig) -> None:
        self.demand = demand
        self.config = config
        self._fits: ClusterVerdict | None = None
        self._relayout: tuple[NodeState, FitResult] | None = None
        self._relayout_changes = 0
        self._shapes: dict[tuple[GpuModel, int], None] = {}
        self._reasons: dict[str, int] = {}

    def add(self, nodes: Iterable[NodeState]) -> bool:
        """Evaluate ``nodes``; True once a node fits now (no further node changes the verdict)."""
        if self._fits is not None:
            return True
        demand, config, shapes, reasons = self.demand, self.config, self._shapes, self._reasons
        for node in nodes:
            result = evaluate(node, demand, config)
            if result.fits_now:
                self._fits = ClusterVerdict(PodVerdict.FITS, "fits on an existing node", node.name)
                return True
            if result.verdict is Verdict.NOT_EVALUATED:
                # Never "no layout fits" on a guess: kube-scheduler's allocator decides this node.
                self._fits = ClusterVerdict(PodVerdict.FITS, f"not evaluated on node {node.name}: {result.reason}")
                return True
            unknown = node.unknown_product
            if unknown is not None and node.devices is None:
                # Not modelled: kube-scheduler places the pod there if its counts admit it (the filter passes
                # the node). Counts that do not admit it are a busy node, never grounds for "no layout fits".
                if unknown.counts_hold(demand):
                    reason = f"kube-scheduler's counts admit it on node {node.name} (GPU product not in the catalog)"
                    self._fits = ClusterVerdict(PodVerdict.FITS, reason, node.name)
                    return True
                busy = f"MIG: nodes with GPU product {unknown.product!r} (not in the catalog) count no room for it"
                reasons[busy] = reasons.get(busy, 0) + 1
                continue
            if result.verdict is Verdict.RELAYOUT:
                # Prefer the node that needs the fewest GPUs re-partitioned.
                changes = len({p.gpu_index for p in result.plan if p.relayout})
                if self._relayout is None or changes < self._relayout_changes:
                    self._relayout, self._relayout_changes = (node, result), changes
            reasons[result.reason] = reasons.get(result.reason, 0) + 1
            if node.gpus and len(node.models) == 1:
                shapes[(node.gpus[0].model, len(node.gpus))] = None
        return False

    def verdict(self, mig_parted: MigPartedConfig) -> ClusterVerdict:
        """The verdict over the nodes added so far."""
        if self._fits is not None:
            return self._fits
        demand = self.demand
        if self._relayout is not None:
            node, _ = self._relayout
            model = node.gpus[0].model
            suggestion = suggest_layout(demand, model, len(node.gpus), mig_parted)
            return ClusterVerdict(
                PodVerdict.RELAYOUT,
                f"re-partitioning idle GPUs of node {node.name} would host {demand.text()}",
                node.name,
                suggestion,
            )
        if demand.claims is not None:
            return self._claims_verdict()
        for model, count in self._shapes:
            suggestion = suggest_layout(demand, model, count, mig_parted)
            if suggestion is not None:
                return ClusterVerdict(
                    PodVerdict.NO_LAYOUT_FITS,
                    f"no existing node can host {demand.text()}; a new {count}x {model.name} node with "
                    f"layout {suggestion} would",
                    None,
                    suggestion,
                )
        return self._reasons_verdict()

    def _claims_verdict(self) -> ClusterVerdict:
        """No node fits the pod's claims now: would a new node of a shape seen (empty DynamicMIG GPUs) hold them?

        Re-partitioning does not apply (DynamicMIG makes instances on allocation); the claims are read as MIG
        profile counts when they are plain counts, otherwise no new shape is claimed to fit.
        """
        claims = self.demand.claims
        assert claims is not None
        if claims.profiles is not None:
            for model, count in self._shapes:
                empty = NodeState("new", tuple(GpuState(i, model, (), dynamic=True) for i in range(count)))
                if fit(empty, claims.profiles, Allocator.FIRST_FIT).fits_now:
                    return ClusterVerdict(
                        PodVerdict.NO_LAYOUT_FITS,
                        f"no existing node can host {claims.text}; a new {count}x {model.name} node with DynamicMIG "
                        "would",
                    )
        return self._reasons_verdict()

    def _reasons_verdict(self) -> ClusterVerdict:
        # The most frequent distinct reasons, so that "H200 nodes are too small" is not hidden behind
        # "A100 nodes lack the profile".
        reasons = self._reasons
        common = sorted(reasons, key=lambda r: -reasons[r])[:3]
        text = "; ".join(r.removeprefix("MIG: ") for r in common) if common else "no MIG-capable node"
        return ClusterVerdict(PodVerdict.NO_LAYOUT_FITS, f"no node shape in the cluster can host it: {text}")
