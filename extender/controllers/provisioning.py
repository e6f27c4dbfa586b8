"""The provisioning loop: pods that no MIG layout anywhere fits become nodes that Karpenter launches.

Karpenter acts only on pods whose ``PodScheduled`` reason is ``Unschedulable``, simulates scheduling with
counted resources only, knows no ``nvidia.com/mig-*`` resource unless a NodeOverlay declares it and reads no
annotation of ours. So every ``interval_s`` the leader (see :mod:`.leader`):

1. **Guards new nodes** of the configured MIG pools (label ``karpenter.sh/nodepool``). A node that does not
   advertise MIG instances yet is on its way (MIG Manager still has to apply its ``nvidia.com/mig.config``,
   maybe with a reboot): it gets ``karpenter.sh/do-not-disrupt: "true"`` and ``mig-extender.io/capacity:
   arriving`` so that consolidation does not take it while it is empty, and one capacity request of its pool
   is deleted (the oldest): the node it asked for is here. The guard is lifted once a MIG pod runs on the
   node, or after ``protect_s`` (with a Warning Event if its layout never appeared).
2. **Plans**: pods whose verdict annotation has said ``no-layout-fits`` for ``debounce_s``, with the rest of
   their burst (verdicts at most ``debounce_window_s`` apart), are packed, as
   the filter would place them, into arriving nodes, then requested ones, then new nodes of the cheapest
   pool whose layout hosts them (:func:`~extender.model.provisioning.plan_capacity`), within each pool's
   ``maxNodes`` and ``max_requests`` overall.
3. **Converges** (mode ``requests``): one capacity-request pod per node to ask for, pinned to its pool
   (``nodeSelector karpenter.sh/nodepool``, every taint tolerated), requesting what its node will register:
   the pool's MIG instances (Karpenter knows them from the NodeOverlays) or, with ``request_resources`` gpu,
   the instance's whole ``nvidia.com/gpu``, for pools that keep a GPU whole only (Karpenter initializes a
   node once every requested resource is registered), with a ``schedulerName`` that no scheduler
   serves so that none binds it, and ``PodScheduled=False/Unschedulable`` written by the loop so that
   Karpenter provisions for it. Requests that no demand needs any more are deleted. In ``overlay`` mode
   NodeOverlays let Karpenter provision for the pods themselves, and the loop makes requests only for the
   pods Karpenter launches nothing for (its counts found room on an existing node: its ``Nominated`` Event
   names one, or no node is on its way after ``overlay_wait_s``), with a Warning and an annotation on the
   pod. ``plan-only`` exports the plan.

Requests are labelled ``mig-extender.io/capacity-request=<pool>`` and owned by the pools ConfigMap, so that
uninstalling removes them; all state lives in the API server (requests, node annotations), so a restarted
or new leader carries on. Every action is an Event and a count in :class:`ProvisioningStats`.
"""

from __future__ import annotations

import datetime
import logging
import pathlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from ..kube.api import CapacityApi
from ..kube.errors import ApiError
from ..kube.events import pod_reference
from ..kube.names import (
    APP_COMPONENT_LABEL,
    APP_NAME_LABEL,
    CAPACITY_ANNOTATION,
    CAPACITY_GUARDED_ANNOTATION,
    CAPACITY_MODE_ANNOTATION,
    CAPACITY_REQUEST_LABEL,
    CAPACITY_REQUEST_SCHEDULER,
    CAPACITY_SINCE_ANNOTATION,
    DO_NOT_DISRUPT_ANNOTATION,
    KARPENTER_EVENT_SOURCE,
    MANAGED_BY_LABEL,
    MIG_CONFIG_STATE_LABEL,
    NODEPOOL_LABEL,
    PROVISIONING_ANNOTATION,
    SINCE_ANNOTATION,
    VERDICT_ANNOTATION,
)
from ..kube.times import parse_time
from ..metrics import ProvisioningStats
from ..model.eligibility import ANYWHERE, FILTERING_EFFECTS, PodPlacement, Taint
from ..model.migparted import MigPartedConfig, MigPartedError
from ..model.policy import PodVerdict, PolicyConfig, evaluate
from ..model.provisioning import (
    CapacityPlan,
    NodeSource,
    Pool,
    PoolNodes,
    PoolsError,
    parse_pools,
    plan_capacity,
)
from ..model.state import NodeState
from ..settings import ProvisionSettings
from ..view.objects import NodeInfo, PodInfo
from ..view.store import ClusterView
from .loop import reconcile_forever

log = logging.getLogger(__name__)

ARRIVING = "arriving"
RELEASED = "released"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
EVENT_ACTION = "Provision"
_POLICY = PolicyConfig()  # new nodes are static MIG nodes: the kubelet picks instances


def load_pools(path: str) -> tuple[Pool, ...]:
    try:
        document = yaml.safe_load(pathlib.Path(path).read_text())
        return parse_pools(document)
    except (OSError, yaml.YAMLError, PoolsError) as exc:
        raise PoolsError(f"pools file {path}: {exc}") from None


@dataclass(frozen=True)
class CapacityRequest:
    name: str
    pool: str
    created: datetime.datetime
    marked_unschedulable: bool
    mode: str = "requests"
    """The mode that made it: overlay for pods Karpenter launched no node for."""
    uid: str = ""

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> CapacityRequest:
        metadata = raw.get("metadata") or {}
        conditions = (raw.get("status") or {}).get("conditions") or []
        return cls(
            name=str(metadata.get("name")),
            pool=str((metadata.get("labels") or {}).get(CAPACITY_REQUEST_LABEL, "")),
            created=parse_time(metadata.get("creationTimestamp")) or datetime.datetime.now(datetime.UTC),
            marked_unschedulable=any(
                c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable" for c in conditions
            ),
            mode=str((metadata.get("annotations") or {}).get(CAPACITY_MODE_ANNOTATION, "requests")),
            uid=str(metadata.get("uid") or ""),
        )


def unschedulable_condition(note: str, now: datetime.datetime) -> dict[str, Any]:
    return {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": note,
        "lastProbeTime": None,
        "lastTransitionTime": now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def request_pod(
    pool: Pool,
    namespace: str,
    owner: Mapping[str, Any] | None,
    resources: Mapping[str, int] | None = None,
    mode: str = "requests",
) -> dict[str, Any]:
    """A pod that only Karpenter acts on: a node of ``pool``, then it is deleted.

    It asks for a whole node as Karpenter knows it: ``resources`` (the pool's MIG instances, known through
    NodeOverlays), else the instance's whole ``nvidia.com/gpu`` (only for pools that keep a GPU whole: the
    node must register every resource asked for, see ``_no_whole_gpus``).
    """
    wanted = resources or {"nvidia.com/gpu": pool.gpus_per_node}
    gpus = {name: str(count) for name, count in sorted(wanted.items())}
    metadata: dict[str, Any] = {
        "generateName": f"mig-capacity-{pool.name}-"[:58],
        "namespace": namespace,
        "labels": {MANAGED_BY_LABEL: "mig-extender", CAPACITY_REQUEST_LABEL: pool.name},
        "annotations": {
            CAPACITY_ANNOTATION: f"a node of NodePool {pool.name} ({pool.mig_config})",
            CAPACITY_MODE_ANNOTATION: mode,
        },
    }
    if owner is not None:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
            }
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "schedulerName": CAPACITY_REQUEST_SCHEDULER,
            "nodeSelector": {NODEPOOL_LABEL: pool.name},
            "tolerations": [{"operator": "Exists"}],
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 0,
            "restartPolicy": "Never",
            "containers": [{"name": "capacity", "image": PAUSE_IMAGE, "resources": {"requests": gpus, "limits": gpus}}],
        },
    }


def node_overlay(pool: Pool, mig_parted: MigPartedConfig) -> dict[str, Any]:
    """A NodeOverlay (karpenter.sh/v1alpha1) that tells Karpenter what MIG instances a node of ``pool`` has.

    Karpenter only adds these counts to the instance type's capacity: it still sees no placement, so the
    extender's verdicts remain what decides whether a layout really fits.
    """
    capacity = {name: str(count) for name, count in sorted(pool.advertised(mig_parted).items())}
    return {
        "apiVersion": "karpenter.sh/v1alpha1",
        "kind": "NodeOverlay",
        "metadata": {
            "name": f"mig-{pool.name}"[:253],
            "labels": {APP_NAME_LABEL: "mig-extender", APP_COMPONENT_LABEL: "nodeoverlay"},
        },
        "spec": {
            "requirements": [{"key": NODEPOOL_LABEL, "operator": "In", "values": [pool.name]}],
            "capacity": capacity,
            "weight": 10,
        },
    }


class ProvisioningController:
    def __init__(
        self,
        view: ClusterView,
        api: CapacityApi,
        config: ProvisionSettings,
        pools: Sequence[Pool],
        *,
        is_leader: Callable[[], bool] = lambda: True,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        if config.mode not in ("plan-only", "requests", "overlay"):
            raise ValueError(f"provision mode {config.mode!r} is not plan-only, requests or overlay")
        self.view = view
        self.api = api
        self.config = config
        self.is_leader = is_leader
        self.now = now
        self.pools = {pool.name: pool for pool in pools}
        """The pools file's NodePools by name, in the file's order (names are unique)."""
        self.stats = ProvisioningStats()
        self.plan: CapacityPlan | None = None
        self._owner: dict[str, Any] | None = None
        self._claimed: set[str] = set()
        """Nodes this leader guarded, until the view shows the annotation."""
        self._told: dict[str, str] = {}
        """Pod uid -> the last Event reason it got from the loop (so each is told once)."""
        self._stuck_told: set[str] = set()
        self._pool_errors: dict[str, str] = {}
        self._refused: dict[str, tuple[NodeState | None, str, str]] = {}
        """Pools the last plan left out: their empty node (None if unresolvable), reason and text."""
        self._templates_by_name: dict[str, NodeState] = {}
        self._stalled: dict[str, datetime.datetime] = {}
        """Overlay mode: pod uid -> since when the plan has had no node on its way for it."""
        self._noted: dict[str, tuple[str, str]] = {}
        """Pod uid -> (namespace, name) of the pods this leader wrote the provisioning annotation on."""
        self._events_denied = False
        self._node_pools_denied = False

    async def run(self) -> None:
        await reconcile_forever(self.reconcile, self.config.interval_s, self._count_error, "provisioning")

    def _count_error(self) -> None:
        self.stats.errors += 1

    async def reconcile(self) -> None:
        if not self.is_leader():
            self._claimed.clear()
            return
        requests = []
        for request in await self._requests():
            # overlay keeps only its own requests (for pods Karpenter launched nothing for); plan-only none
            if self.config.mode == "requests" or (self.config.mode == "overlay" and request.mode == "overlay"):
                requests.append(request)
            else:
                await self._delete(request, "mode")
        requests = await self._guard_nodes(requests)
        launching = await self._launching()
        requests, ours = await self._launched(requests, launching)
        pending = self._unmet()
        templates = self._templates()
        requested = _count(r.pool for r in requests)
        arriving = self._arriving(requested, launching, ours)
        plan = plan_capacity(
            templates,
            [p.demand for p in pending],
            _POLICY,
            arriving=arriving,
            requested=requested,
            arrived=self._arrived(),
            usable=await self._usable(pending),
        )
        self.plan = plan
        self.stats.planned_nodes = {pool: n for pool, n in plan.requests.items()}
        self.stats.unmet_pods = {
            "hosted": len(plan.hosts),
            **_count(str(reason) for reason in plan.unhosted.values()),
        }
        await self._tell_unhosted(pending, plan)
        if self.config.mode == "requests":
            requests = await self._converge(requests, plan.requests, pending)
            await self._tell_hosted(pending, plan)
        elif self.config.mode == "overlay":
            requests = await self._converge(requests, await self._unlaunched(pending, plan), pending)
        await self._clear_notes()
        self.stats.requests = _count(r.pool for r in requests)
        await self._flag_stuck(requests)

    # --- reading ----------------------------------------------------------------------------------------

    async def _requests(self) -> list[CapacityRequest]:
        raw = await self.api.list_pods(self.config.namespace, CAPACITY_REQUEST_LABEL)
        requests = [CapacityRequest.from_raw(r) for r in raw if not (r.get("metadata") or {}).get("deletionTimestamp")]
        return sorted(requests, key=lambda r: (r.created, r.name))

    def _templates(self) -> list[tuple[Pool, NodeState]]:
        """Each pool's empty node under the cluster's mig-parted config, but for the pools left out (kept in
        ``_refused`` with the reason, said once in the log): those it cannot resolve, and with whole-GPU
        requests those whose nodes register no whole GPU."""
        templates = []
        self._refused = {}
        for pool in self.pools.values():
            try:
                template = pool.empty_node(self.view.mig_parted)
            except MigPartedError as exc:
                self._refuse(pool, None, "mig-config", str(exc))
                continue
            if self._asks_whole_gpus() and all(gpu.mig_enabled for gpu in template.gpus):
                self._refuse(pool, template, "no-whole-gpus", _no_whole_gpus(pool))
                continue
            templates.append((pool, template))
            self._pool_errors.pop(pool.name, None)
        self.stats.pools_refused = {(name, reason): 1 for name, (_, reason, _) in self._refused.items()}
        self._templates_by_name = {pool.name: template for pool, template in templates}
        return templates

    def _asks_whole_gpus(self) -> bool:
        """Capacity requests (made, or in plan-only planned) ask for the instances' whole ``nvidia.com/gpu``."""
        return self.config.mode in ("requests", "plan-only") and self.config.request_resources == "gpu"

    def _refuse(self, pool: Pool, template: NodeState | None, reason: str, text: str) -> None:
        if self._pool_errors.get(pool.name) != text:
            log.error("NodePool %s is not provisioned for: %s", pool.name, text)
        self._pool_errors[pool.name] = text
        self._refused[pool.name] = (template, reason, text)

    def _pool_nodes(self) -> Iterable[NodeInfo]:
        return (info for info in self.view.nodes.values() if info.pool in self.pools)

    def _arriving(
        self, requested: Mapping[str, int], launching: Mapping[str, Sequence[str]], ours: set[str]
    ) -> dict[str, int]:
        """Nodes on their way, by pool: guarded nodes without their layout, and NodeClaims without a Node.

        A NodeClaim launched for a capacity request (``ours``: named by Karpenter's Nominated Event on one)
        is arriving capacity, its request gone. Any other is taken for an outstanding request's node (counted
        as requested) first, in case its Event is still to come; the rest, such as Karpenter acting on the
        pods themselves through NodeOverlays, are arriving capacity too.
        """
        arriving = _count(
            str(info.pool)
            for info in self._pool_nodes()
            if not _layout_applied(info)
            and (info.annotations.get(CAPACITY_ANNOTATION) == ARRIVING or info.name in self._claimed)
        )
        for pool, claims in launching.items():
            launched = sum(1 for name in claims if name in ours)
            others = len(claims) - launched
            arriving[pool] = arriving.get(pool, 0) + launched + max(0, others - requested.get(pool, 0))
        return arriving

    async def _launched(
        self, requests: list[CapacityRequest], launching: Mapping[str, Sequence[str]]
    ) -> tuple[list[CapacityRequest], set[str]]:
        """Delete the requests Karpenter has launched a NodeClaim for; the requests left, and the NodeClaims
        launched for requests (now or before: the Events outlive the requests).

        Karpenter writes a ``Nominated`` Event on each pod it launches a NodeClaim for ("Pod should schedule
        on: nodeclaim/<name>", sigs.k8s.io/karpenter ``pkg/controllers/provisioning/provisioner.go``). A
        request still pending when its node registers is provisioned for again if the node no longer fits it
        (whole GPUs: MIG Manager leaves fewer than were asked for), and Karpenter would launch a second node;
        once its NodeClaim exists the request has done its work, and the NodeClaim is the capacity on its way.
        """
        claims = {name for names in launching.values() for name in names}
        if not claims or self._events_denied:
            return requests, set()
        try:
            events = await self.api.list_events(
                self.config.namespace, f"source={KARPENTER_EVENT_SOURCE},reason=Nominated"
            )
        except ApiError as exc:  # e.g. no RBAC for it: requests go when their node arrives
            log.warning("cannot list Karpenter's Events (requests go when their node arrives): %s", exc)
            self._events_denied = True
            return requests, set()
        nominated: dict[str, set[str]] = {}
        for event in events:
            uid = str((event.get("involvedObject") or {}).get("uid") or "")
            nominated.setdefault(uid, set()).update(_NOMINATED_CLAIM.findall(str(event.get("message") or "")))
        left = []
        for request in requests:
            if request.uid and nominated.get(request.uid, set()) & claims:
                await self._delete(request, "launched")
            else:
                left.append(request)
        named: set[str] = set().union(*nominated.values())
        return left, claims & named

    def _arrived(self) -> list[tuple[str, NodeState]]:
        """Guarded nodes whose layout is applied, in their real state: still arriving capacity while a taint
        (a startup taint some agent removes) keeps the pods off them, until their guard is lifted."""
        arrived = []
        for info in self._pool_nodes():
            guarded = info.annotations.get(CAPACITY_ANNOTATION) == ARRIVING or info.name in self._claimed
            state = self.view.node_state(info.name) if guarded and _layout_applied(info) else None
            if state is not None:
                arrived.append((str(info.pool), state))
        return arrived

    async def _usable(self, pending: Sequence[PodInfo]) -> list[frozenset[str] | None]:
        """Per pending pod, the pools whose new nodes it may use (its NodePool's labels, requirements and taints
        against the pod's node selector, required node affinity and tolerations); None: any."""
        if not pending or not self.pools:
            return []
        try:
            raw = await self.api.list_node_pools()
        except ApiError as exc:  # e.g. no RBAC for it: every pool is taken as usable
            if not self._node_pools_denied:
                log.warning("cannot list Karpenter NodePools (every pool taken as usable by every pod): %s", exc)
            self._node_pools_denied = True
            return []
        found = {str((n.get("metadata") or {}).get("name")): n for n in raw}
        shapes = {name: pool_nodes(name, found[name]) for name in self.pools if name in found}
        usable: dict[PodPlacement, frozenset[str] | None] = {ANYWHERE: None} if not shapes else {}
        result = []
        for pod in pending:
            if pod.placement not in usable:
                usable[pod.placement] = frozenset(
                    name for name in self.pools if name not in shapes or shapes[name].admits(pod.placement)
                )
            result.append(usable[pod.placement])
        return result

    async def _launching(self) -> dict[str, list[str]]:
        """The names of the pools' NodeClaims that have no Node yet, by pool."""
        try:
            claims = await self.api.list_node_claims()
        except ApiError as exc:  # e.g. no RBAC for it: plan without, and say so
            log.warning("cannot list Karpenter NodeClaims: %s", exc)
            return {}
        launching: dict[str, list[str]] = {}
        for claim in claims:
            metadata = claim.get("metadata") or {}
            pool = (metadata.get("labels") or {}).get(NODEPOOL_LABEL)
            registered = (claim.get("status") or {}).get("nodeName")
            if pool in self.pools and not metadata.get("deletionTimestamp") and not registered:
                launching.setdefault(str(pool), []).append(str(metadata.get("name")))
        return launching

    def _unmet(self) -> list[PodInfo]:
        """Pending pods whose no-layout-fits verdict is ``debounce_s`` old, with their bursts; oldest first.

        A burst is a run of verdicts at most ``debounce_window_s`` apart: once one of its pods is ``debounce_s``
        old, the pods that came after it within the window are planned with it, so that the burst is packed
        into the fewest nodes at once rather than by whichever part of it was old enough at a tick.

        The verdict annotation lags the view by up to a scan: a pod that some node hosts now (a node that
        just got its layout) is not unmet, or it would buy a second node.
        """
        now = self.now()
        waiting: list[tuple[datetime.datetime | None, PodInfo]] = []
        for pod in self.view.pending_mig_pods():
            if pod.demand_error or pod.annotations.get(VERDICT_ANNOTATION) != PodVerdict.NO_LAYOUT_FITS:
                continue
            waiting.append((parse_time(pod.annotations.get(SINCE_ANNOTATION)), pod))
        unmet = _debounced(waiting, now, self.config.debounce_s, self.config.debounce_window_s)
        if unmet:
            nodes = list(self.view.node_states())
            infos = self.view.nodes
            hosted_now = {
                (demand, placement)
                for demand, placement in {(p.demand, p.placement) for p in unmet}
                # fits cached by node state; only nodes the pod may use (taints, cordons, node affinity)
                if any(
                    infos[node.name].admits(placement) and evaluate(node, demand, _POLICY).fits_now for node in nodes
                )
            }
            unmet = [p for p in unmet if (p.demand, p.placement) not in hosted_now]
        return sorted(unmet, key=lambda p: (p.annotations.get(SINCE_ANNOTATION, ""), p.key))

    # --- new nodes ----------------------------------------------------------------------------------------

    async def _guard_nodes(self, requests: list[CapacityRequest]) -> list[CapacityRequest]:
        """Guard nodes that arrived, delete a request for each, lift guards that served; the requests left."""
        left = list(requests)
        now = self.now()
        for info in sorted(self._pool_nodes(), key=lambda n: (n.created, n.name)):
            state = info.annotations.get(CAPACITY_ANNOTATION)
            if state is None and info.name not in self._claimed:
                # A new node of a MIG pool is guarded whatever its MIG state (MIG Manager may have been
                # quick, and the pod it came for is not bound yet); it is the node of the oldest request of
                # its pool made before it.
                created = parse_time(info.created)
                is_old = created is None or (now - created).total_seconds() >= self.config.protect_s
                if is_old and _layout_applied(info):
                    continue  # an older node of the pool, in service
                mine = [r for r in left if r.pool == info.pool and (created is None or r.created <= created)]
                await self._guard(info, now)
                if mine:
                    left.remove(mine[0])
                    await self._delete(mine[0], "arrived")
            elif state == ARRIVING:
                self._claimed.discard(info.name)
                await self._maybe_release(info, now)
        return left

    async def _guard(self, info: NodeInfo, now: datetime.datetime) -> None:
        annotations: dict[str, str | None] = {CAPACITY_ANNOTATION: ARRIVING, CAPACITY_SINCE_ANNOTATION: _stamp(now)}
        if DO_NOT_DISRUPT_ANNOTATION not in info.annotations:
            annotations[DO_NOT_DISRUPT_ANNOTATION] = "true"
            annotations[CAPACITY_GUARDED_ANNOTATION] = "true"
        await self.api.patch_node(info.name, {"metadata": {"annotations": annotations}})
        self._claimed.add(info.name)
        self.stats.nodes_arrived[str(info.pool)] += 1
        pool = self.pools[str(info.pool)]
        log.info("node %s of NodePool %s arrived; guarded until a MIG pod runs on it", info.name, pool.name)
        await self._event(
            _node_ref(info.name),
            "MigCapacityArrived",
            "Normal",
            f"new node of NodePool {pool.name}: karpenter.sh/do-not-disrupt until MIG Manager applies "
            f"{pool.mig_config} and a MIG pod runs on it (at most {self.config.protect_s:.0f}s)",
        )

    async def _maybe_release(self, info: NodeInfo, now: datetime.datetime) -> None:
        in_use = any(p.is_active and p.demand.mig for p in self.view.pods_on(info.name))
        since = parse_time(info.annotations.get(CAPACITY_SINCE_ANNOTATION))
        expired = since is None or (now - since).total_seconds() >= self.config.protect_s
        if not (in_use and _layout_applied(info)) and not expired:
            return
        annotations: dict[str, str | None] = {CAPACITY_ANNOTATION: RELEASED}
        if CAPACITY_GUARDED_ANNOTATION in info.annotations:
            annotations[DO_NOT_DISRUPT_ANNOTATION] = None
            annotations[CAPACITY_GUARDED_ANNOTATION] = None
        await self.api.patch_node(info.name, {"metadata": {"annotations": annotations}})
        reason = "in-use" if in_use and _layout_applied(info) else "timeout"
        self.stats.protections_released[reason] += 1
        if reason == "timeout" and not _layout_applied(info):
            await self._event(
                _node_ref(info.name),
                "MigLayoutNotApplied",
                "Warning",
                f"no MIG instances advertised {self.config.protect_s:.0f}s after the node arrived: is MIG Manager "
                f"running, and does its config have {info.labels.get('nvidia.com/mig.config')!r}? "
                "karpenter.sh/do-not-disrupt lifted",
            )
        log.info("node %s: guard lifted (%s)", info.name, reason)

    # --- capacity requests --------------------------------------------------------------------------------

    async def _converge(
        self, requests: list[CapacityRequest], wanted: Mapping[str, int], pending: Sequence[PodInfo]
    ) -> list[CapacityRequest]:
        """Requests to ``wanted`` per pool: the newest of a pool deleted first, missing ones made cheapest first."""
        kept: list[CapacityRequest] = []
        for pool_name in sorted({r.pool for r in requests} | set(wanted)):
            mine = [r for r in requests if r.pool == pool_name]
            want = wanted.get(pool_name, 0) if pool_name in self.pools else 0
            for request in mine[want:][::-1]:  # the newest go first: the oldest are closest to a node
                await self._delete(request, "demand-gone")
            kept.extend(mine[:want])
        for request in kept:
            if not request.marked_unschedulable:
                await self._mark(request.name, self.pools[request.pool], len(pending))
        room = self.config.max_requests - len(kept)
        by_cost = sorted(self.pools.values(), key=lambda p: p.cost)
        for pool in by_cost:
            missing = wanted.get(pool.name, 0) - sum(1 for r in kept if r.pool == pool.name)
            for _ in range(max(0, min(missing, room))):
                kept.append(await self._create(pool, len(pending)))
                room -= 1
        return kept

    async def _owner_ref(self) -> dict[str, Any] | None:
        if self._owner is None:
            self._owner = await self.api.get_config_map(self.config.namespace, self.config.owner_configmap)
            if self._owner is None:
                log.warning(
                    "ConfigMap %s/%s not found: capacity requests carry no owner",
                    self.config.namespace,
                    self.config.owner_configmap,
                )
        return self._owner

    async def _create(self, pool: Pool, waiting: int) -> CapacityRequest:
        # overlay mode has the NodeOverlays by definition: its requests ask for the MIG instances they declare
        mig = self.config.request_resources == "mig" or self.config.mode == "overlay"
        resources = pool.advertised(self.view.mig_parted) if mig else None
        body = request_pod(pool, self.config.namespace, await self._owner_ref(), resources, self.config.mode)
        created = await self.api.create_pod(self.config.namespace, body)
        name = str(created["metadata"]["name"])
        self.stats.requests_created[pool.name] += 1
        await self._mark(name, pool, waiting)
        log.info("capacity request %s/%s: a node of NodePool %s", self.config.namespace, name, pool.name)
        await self._event(
            {"kind": "Pod", "namespace": self.config.namespace, "name": name, "apiVersion": "v1"},
            "MigCapacityRequested",
            "Normal",
            f"a node of NodePool {pool.name} ({pool.gpus_per_node}x {pool.model.name}, {pool.mig_config}) for "
            f"{waiting} pending MIG pod(s) that no layout fits",
        )
        return CapacityRequest(
            name, pool.name, self.now(), True, self.config.mode, str(created["metadata"].get("uid") or "")
        )

    async def _mark(self, name: str, pool: Pool, waiting: int) -> None:
        """PodScheduled=False/Unschedulable: what makes Karpenter provision for the pod."""
        note = (
            f"mig-extender capacity request: a node of NodePool {pool.name} for {waiting} pending MIG pod(s); "
            "no scheduler binds this pod"
        )
        patch = {"status": {"conditions": [unschedulable_condition(note, self.now())]}}
        await self.api.patch_pod_status(self.config.namespace, name, patch)

    async def _delete(self, request: CapacityRequest, reason: str) -> None:
        await self.api.delete_pod(self.config.namespace, request.name)
        self.stats.requests_deleted[reason] += 1
        self._stuck_told.discard(request.name)
        log.info("capacity request %s/%s deleted (%s)", self.config.namespace, request.name, reason)

    async def _flag_stuck(self, requests: Sequence[CapacityRequest]) -> None:
        now = self.now()
        stuck = [r for r in requests if (now - r.created).total_seconds() >= self.config.request_timeout_s]
        self.stats.requests_stuck = len(stuck)
        for request in stuck:
            if request.name in self._stuck_told:
                continue
            self._stuck_told.add(request.name)
            await self._event(
                {"kind": "Pod", "namespace": self.config.namespace, "name": request.name, "apiVersion": "v1"},
                "MigCapacityStuck",
                "Warning",
                f"no node of NodePool {request.pool} after {self.config.request_timeout_s:.0f}s: check the "
                "NodePool's limits and Karpenter's events for this pod (an existing node it thinks fits, "
                "no offering)",
            )

    # --- overlay mode: pods Karpenter launches nothing for ------------------------------------------------

    async def _unlaunched(self, pending: Sequence[PodInfo], plan: CapacityPlan) -> dict[str, int]:
        """Requests wanted per pool in overlay mode: a node for the pods Karpenter launched nothing for.

        A pod that the plan puts on a new node has no node on its way (none arriving, no NodeClaim). Karpenter
        provisions only for what its own simulation cannot place, and it counts ``nvidia.com/mig-*`` without
        placements: a node whose counts have room "fits" a pod the extender rejects there, and Karpenter
        nominates it and launches nothing. Such a pod is taken as stalled once Karpenter's Events for it say
        so (Nominated to an existing node, FailedScheduling), or after ``overlay_wait_s``; its new node, and
        every requested node that hosts a pod, are asked for.
        """
        now = self.now()
        on_new = {i for i, n in plan.placed.items() if plan.nodes[n][1] is NodeSource.NEW}
        live = {pending[i].uid for i in on_new}
        for uid in [u for u in self._stalled if u not in live]:
            del self._stalled[uid]
        stalled: set[int] = set()
        looked = 0
        for index in sorted(on_new, key=lambda i: (self._stalled.get(pending[i].uid, now), pending[i].key)):
            pod = pending[index]
            since = self._stalled.setdefault(pod.uid, now)
            said = None
            if looked < self.config.max_requests:  # a few Event lists per reconcile
                looked += 1
                said = await self._karpenter_says(pod)
            waited = (now - since).total_seconds()
            if said is None and waited >= self.config.overlay_wait_s:
                said = f"no node on its way for it {waited:.0f}s after it counted as unmet demand"
            if said is not None:
                stalled.add(index)
                await self._note(pod, said, plan.hosts[index])
        wanted: dict[str, int] = {}
        for number, (pool, source) in enumerate(plan.nodes):
            hosted = [i for i, n in plan.placed.items() if n == number]
            if source is NodeSource.REQUESTED or (source is NodeSource.NEW and stalled.intersection(hosted)):
                wanted[pool] = wanted.get(pool, 0) + 1
        self.stats.unlaunched_pods = len(stalled) + sum(
            1 for i, n in plan.placed.items() if plan.nodes[n][1] is NodeSource.REQUESTED
        )
        return wanted

    async def _karpenter_says(self, pod: PodInfo) -> str | None:
        """What Karpenter's latest Event on the pod says, if it means that Karpenter launches nothing for it."""
        if self._events_denied:
            return None
        try:
            events = await self.api.list_events(
                pod.namespace, f"involvedObject.uid={pod.uid},source={KARPENTER_EVENT_SOURCE}"
            )
        except ApiError as exc:  # e.g. no RBAC for it: the wait alone decides
            log.warning("cannot list Karpenter's Events (the overlay wait alone decides): %s", exc)
            self._events_denied = True
            return None
        relevant = [e for e in events if e.get("reason") in ("Nominated", "FailedScheduling")]
        if not relevant:
            return None
        latest = max(relevant, key=_event_time)
        message = str(latest.get("message") or "")
        if latest.get("reason") == "FailedScheduling":
            return f"Karpenter: {message}"
        # "Pod should schedule on: nodeclaim/<claim>, node/<node>": an existing node is Karpenter's answer
        for name in _NOMINATED_NODE.findall(message):
            info = self.view.nodes.get(name)
            arriving = info is not None and (
                info.annotations.get(CAPACITY_ANNOTATION) == ARRIVING or name in self._claimed
            )
            if info is not None and not arriving:
                return (
                    f"Karpenter nominated node/{name} for it (it counts nvidia.com/mig-* there, and no placement "
                    "on that node fits)"
                )
        return None

    async def _note(self, pod: PodInfo, said: str, pool: str) -> None:
        """Say on the pod (an Event once, the provisioning annotation) that Karpenter launched nothing."""
        await self._tell(
            pod,
            "MigNoNodeLaunched",
            "Warning",
            f"{pod.demand.text()}: {said}; asking for a node of NodePool {pool} (a capacity request)",
        )
        value = f"no node launched: {said}; capacity request for NodePool {pool}"
        if pod.uid in self._noted or pod.annotations.get(PROVISIONING_ANNOTATION):
            return
        self._noted[pod.uid] = (pod.namespace, pod.name)
        await self._patch_note(pod.namespace, pod.name, value)

    async def _clear_notes(self) -> None:
        """The provisioning annotation goes once the pod is bound (or no longer a pending MIG pod)."""
        noted = dict(self._noted)
        for pod in self.view.pods.values():
            if PROVISIONING_ANNOTATION in pod.annotations:
                noted.setdefault(pod.uid, (pod.namespace, pod.name))
        for uid, (namespace, name) in noted.items():
            current = self.view.pods.get(uid)
            if current is not None and current.is_pending_mig:
                continue
            self._noted.pop(uid, None)
            if current is not None:
                await self._patch_note(namespace, name, None)

    async def _patch_note(self, namespace: str, name: str, value: str | None) -> None:
        try:
            await self.api.patch_pod(namespace, name, {"metadata": {"annotations": {PROVISIONING_ANNOTATION: value}}})
        except (ApiError, OSError, TimeoutError) as exc:  # a note is worth a log line, not a failed reconcile
            log.warning("annotating pod %s/%s: %s", namespace, name, exc)

    # --- telling the pods ----------------------------------------------------------------------------------

    async def _tell_hosted(self, pending: Sequence[PodInfo], plan: CapacityPlan) -> None:
        for index, pool in plan.hosts.items():
            await self._tell(
                pending[index], "MigCapacityRequested", "Normal", f"a node of NodePool {pool} is on its way for it"
            )

    async def _tell_unhosted(self, pending: Sequence[PodInfo], plan: CapacityPlan) -> None:
        for index, reason in plan.unhosted.items():
            pod = pending[index]
            refused = [
                f"NodePool {name} would host it but is not asked for: {text}"
                for name, (template, _, text) in self._refused.items()
                if template is not None and evaluate(template, pod.demand, _POLICY).fits_now
            ]
            if str(reason) == "no-pool" and refused:
                text = f"{pod.demand.text()}: " + "; ".join(refused)
            elif str(reason) == "no-pool":
                text = f"no configured NodePool's MIG layout can host {pod.demand.text()}"
            elif str(reason) == "excluded":
                hosting = [
                    name
                    for name, template in self._templates_by_name.items()
                    if evaluate(template, pod.demand, _POLICY).fits_now
                ]
                text = (
                    f"the NodePools whose layout can host {pod.demand.text()} ({', '.join(hosting)}) are ruled out "
                    "by its node selector, required node affinity or tolerations (their labels, requirements "
                    "and taints)"
                )
            else:
                text = f"the NodePools that could host {pod.demand.text()} are at their maxNodes"
            await self._tell(pod, "MigNoNodePoolFits", "Warning", text)
        live = {p.uid for p in self.view.pending_mig_pods()}
        for uid in [u for u in self._told if u not in live]:
            del self._told[uid]

    async def _tell(self, pod: PodInfo, reason: str, kind: str, note: str) -> None:
        if self._told.get(pod.uid) == reason:
            return
        self._told[pod.uid] = reason
        ref = pod_reference(pod.namespace, pod.name, pod.uid)
        await self._event(ref, reason, kind, note)

    async def _event(self, regarding: Mapping[str, str], reason: str, kind: str, note: str) -> None:
        try:
            await self.api.post_event(regarding, reason, kind, note, EVENT_ACTION)
        except (ApiError, OSError, TimeoutError) as exc:  # an Event is worth a log line, not a failed reconcile
            log.warning("event %s on %s: %s", reason, regarding.get("name"), exc)


def _debounced(
    waiting: Sequence[tuple[datetime.datetime | None, PodInfo]],
    now: datetime.datetime,
    debounce_s: float,
    window_s: float,
) -> list[PodInfo]:
    """The pods to plan: verdicts ``debounce_s`` old (or undated), and every later verdict chained to one of
    them by gaps of at most ``window_s`` (the rest of its burst)."""
    ready: list[PodInfo] = [pod for since, pod in waiting if since is None]
    dated = sorted(((since, pod) for since, pod in waiting if since is not None), key=lambda e: (e[0], e[1].key))
    previous: datetime.datetime | None = None
    in_burst = False
    for since, pod in dated:
        old_enough = (now - since).total_seconds() >= debounce_s
        in_burst = old_enough or (in_burst and previous is not None and (since - previous).total_seconds() <= window_s)
        if in_burst:
            ready.append(pod)
        previous = since
    return ready


def _no_whole_gpus(pool: Pool) -> str:
    return (
        f"every GPU of its nodes is in MIG mode ({pool.mig_config}), so they register nvidia.com/gpu: 0, and "
        "Karpenter initializes a node only once each resource its NodeClaim requested is registered: a node "
        f"asked for with whole GPUs would stay uninitialized (never consolidated, its {pool.gpus_per_node} "
        "GPUs counted as free); use --provision-request-resources mig with the pool's NodeOverlay"
    )


def pool_nodes(name: str, nodepool: Mapping[str, Any]) -> PoolNodes:
    """What a new node of the NodePool ``name`` will carry: its template's labels, its requirements' ``In``
    values (``DoesNotExist`` keys absent), ``karpenter.sh/nodepool``, and its template's taints (not its
    startupTaints: they go before pods are bound). Anything unreadable is left open."""
    spec = ((nodepool.get("spec") or {}).get("template") or {}).get("spec") or {}
    template_labels = (((nodepool.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels")
    labels: dict[str, frozenset[str]] = {NODEPOOL_LABEL: frozenset({name})}
    if isinstance(template_labels, Mapping):
        labels.update({str(k): frozenset({str(v)}) for k, v in template_labels.items()})
    absent: set[str] = set()
    requirements = spec.get("requirements")
    for requirement in requirements if isinstance(requirements, list) else []:
        if not isinstance(requirement, Mapping) or not isinstance(requirement.get("key"), str):
            continue
        key, values = requirement["key"], requirement.get("values")
        if requirement.get("operator") == "In" and isinstance(values, list):
            allowed = frozenset(map(str, values))
            labels[key] = labels[key] & allowed if key in labels else allowed
        elif requirement.get("operator") == "DoesNotExist" and key not in labels:
            absent.add(key)
    raw_taints = spec.get("taints")
    taints = tuple(
        Taint(str(t.get("key") or ""), str(t.get("value") or ""), str(t.get("effect") or ""))
        for t in (raw_taints if isinstance(raw_taints, list) else [])
        if isinstance(t, Mapping) and t.get("effect") in FILTERING_EFFECTS
    )
    return PoolNodes(labels, frozenset(absent), taints)


_NOMINATED_NODE = re.compile(r"\bnode/([^\s,]+)")
_NOMINATED_CLAIM = re.compile(r"\bnodeclaim/([^\s,]+)")


def _event_time(event: Mapping[str, Any]) -> datetime.datetime:
    metadata = event.get("metadata") or {}
    for value in (event.get("lastTimestamp"), event.get("eventTime"), metadata.get("creationTimestamp")):
        moment = parse_time(value)
        if moment is not None:
            return moment
    return datetime.datetime.min.replace(tzinfo=datetime.UTC)


def _layout_applied(info: NodeInfo) -> bool:
    """MIG Manager reported success and the device plugin advertises instances (a fresh node may carry
    counts its provider copied from the instance type, NodeOverlays included, before either ran)."""
    return info.advertises_mig and info.labels.get(MIG_CONFIG_STATE_LABEL) == "success"


def _count(keys: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return counts


def _stamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _node_ref(name: str) -> dict[str, str]:
    return {"kind": "Node", "name": name, "apiVersion": "v1"}
