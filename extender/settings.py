"""Every tunable of the extender, typed and grouped, with the reason for each default.

Each setting has one public name (``relayout_min_idle_s``): the flag ``--relayout-min-idle-s``, the
variable ``MIG_EXTENDER_RELAYOUT_MIN_IDLE_S`` and the key of the ``--config`` file (dashes or underscores).
Values come, lowest precedence first, from the defaults below, the YAML or JSON config file, the
environment and the flags. Code reads them by group (``settings.relayout.min_idle_s``) and each component
takes its group as it is, so every default is stated once: here.

The public name is written out on each field rather than derived from the group, so that renaming a field
in code never renames a flag, and a grep for a flag finds its definition.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import types
import typing
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple

import yaml

from .model.fit import Allocator
from .model.fragmentation import parse_mix
from .model.scoring import SCORERS

log = logging.getLogger(__name__)

ENV_PREFIX = "MIG_EXTENDER_"

ScoringStrategy = Literal["fragmentation", "fragmentation-spread", "packing", "spread"]
"""The names of ``model.scoring.SCORERS`` (a test keeps the two in step)."""
DynamicAllocator = Literal[Allocator.FIRST_FIT, Allocator.IDEAL]
RelayoutMode = Literal["off", "plan-only", "on"]
DefragMode = Literal["off", "plan-only", "on"]
EventLoop = Literal["uvloop", "asyncio"]
ProvisionMode = Literal["off", "plan-only", "requests", "overlay"]
RequestResources = Literal["gpu", "mig"]
HeadroomMode = Literal["off", "on"]
LogFormat = Literal["text", "json"]

RETIRED: dict[str, str] = {
    "placement": "placement estimates follow dynamic_allocator (first-fit, or most-options for ideal)",
}
"""Settings that no longer exist: accepted from every source with a warning, so old configs still start."""


class Problem(NamedTuple):
    names: tuple[str, ...]
    """The settings the problem is about, whose sources the message gets; empty once a source is named."""
    message: str


class SettingsError(ValueError):
    """Bad settings; the message names each setting and where its value came from."""

    def __init__(self, problems: str | Sequence[Problem]) -> None:
        self.problems = [Problem((), problems)] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(p.message for p in self.problems))


Check = Callable[[Any], str | None]
"""A value check: the reason the value is bad, or None."""


def setting(name: str, default: Any, doc: str, *, check: Check | None = None) -> Any:
    """A field of a settings group: its public name, default, why, and a check beyond its type."""
    return field(default=default, metadata={"name": name, "doc": doc, "check": check})


def positive(value: float) -> str | None:
    return None if value > 0 else f"must be positive, not {value}"


def non_negative(value: float) -> str | None:
    return None if value >= 0 else f"must not be negative, not {value}"


def _port(value: int) -> str | None:
    return None if 0 < value < 65536 else f"{value} is outside 1..65535"


def _port_or_off(value: int) -> str | None:
    return None if 0 <= value < 65536 else f"{value} is outside 1..65535 (or 0 for none)"


def _strategy(value: str) -> str | None:
    return None if value in SCORERS else f"unknown strategy {value!r}; known: {', '.join(sorted(SCORERS))}"


def _mix(value: str) -> str | None:
    try:
        parse_mix(value)
    except ValueError as exc:
        return str(exc)
    return None


def _paths(value: str) -> str | None:
    bad = [p for p in value.split(",") if p.strip() and not p.strip().startswith("/")]
    return f"paths start with '/', not {', '.join(map(repr, bad))}" if bad else None


def _either(choices: Sequence[object]) -> str:
    names = [str(c) for c in choices]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


_HINTS: dict[str, dict[str, Any]] = {}


def _hints(group: type) -> dict[str, Any]:
    """The resolved field types of ``group`` (its annotations are strings, see the future import)."""
    hints = _HINTS.get(group.__qualname__)
    if hints is None:
        hints = _HINTS[group.__qualname__] = typing.get_type_hints(group)
    return hints


def _is_literal(kind: Any) -> bool:
    return getattr(kind, "__origin__", None) is Literal


class Group:
    """Base of the settings groups: each field's type and check hold once a group is made."""

    TITLE: ClassVar[str]

    def __post_init__(self) -> None:
        problems = [*self._field_problems(), *self._problems()]
        if problems:
            raise SettingsError(problems)

    def _field_problems(self) -> list[Problem]:
        problems = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            name, check, value = f.metadata["name"], f.metadata["check"], getattr(self, f.name)
            kind = _hints(type(self))[f.name]
            if check is not None:
                reason = check(value)
            elif _is_literal(kind) and value not in typing.get_args(kind):
                reason = f"{value!r} is not {_either(typing.get_args(kind))}"
            else:
                reason = None
            if reason:
                problems.append(Problem((name,), f"{name}: {reason}"))
        return problems

    def _problems(self) -> list[Problem]:
        """Checks across the group's fields."""
        return []


@dataclass(frozen=True)
class ServerSettings(Group):
    """The HTTP listener that kube-scheduler calls: address, limits and timeouts."""

    TITLE = "HTTP server"

    host: str = setting(
        "host",
        "0.0.0.0",
        "Address to listen on. All interfaces in a pod, so kube-scheduler reaches it through the Service; "
        "tests and demos pass 127.0.0.1.",
    )
    port: int = setting("port", 8888, "HTTP port for /filter, /prioritize, probes and /metrics.", check=_port)
    max_body_bytes: int = setting(
        "max_body_bytes",
        128 * 1024 * 1024,
        "Largest request body. With nodeCacheCapable false kube-scheduler sends every candidate Node: 5,000 "
        "nodes of ~20 KB (labels, images, managed fields) are ~100 MB, so 128 MiB holds them.",
        check=positive,
    )
    access_log: bool = setting(
        "access_log",
        False,
        "aiohttp access log. Off: it costs a third of throughput on small requests and metrics cover it.",
    )
    event_loop: EventLoop = setting(
        "event_loop",
        "uvloop",
        "The asyncio event loop: uvloop (libuv) spends less CPU per request and per watch event than the "
        "standard library's loop, which stays available as asyncio.",
    )
    shutdown_timeout_s: float = setting(
        "shutdown_timeout_s",
        10.0,
        "Grace for in-flight requests on SIGTERM; below the Deployment's terminationGracePeriodSeconds.",
    )
    read_timeout_s: float = setting(
        "read_timeout_s",
        10.0,
        "A request's headers and body must arrive within this time of its first byte, or the connection is "
        "closed (408): kube-scheduler gives up after its 5 s httpTimeout, so only a stalled client is slower.",
        check=positive,
    )
    keepalive_timeout_s: float = setting(
        "keepalive_timeout_s",
        120.0,
        "Idle keep-alive connections are closed after this. Above kube-scheduler's 90 s idle timeout "
        "(Go's default transport), so the client closes first and never races a server-side close.",
        check=positive,
    )
    max_connections: int = setting(
        "max_connections",
        1000,
        "Open connections at most. At the limit a new connection replaces the longest-idle one, or gets a "
        "503 when all are mid-request; this bounds the memory that many clients can pin.",
        check=positive,
    )
    bind_wait_s: float = setting(
        "bind_wait_s",
        0.1,
        "With kube-scheduler's bind verb configured: a filter that arrives while a pod prioritize placed on "
        "its best-scored node awaits its bind waits up to this long for it, so that it counts that pod on the "
        "node kube-scheduler chose (its own scores may outvote the extender's). kube-scheduler sends the bind "
        "as its scheduling cycle ends; only a pod held in PreBind (volumes) or failed after prioritize makes "
        "the filter wait this long, once. 0: never wait.",
        check=non_negative,
    )
    metrics_host: str = setting(
        "metrics_host",
        "0.0.0.0",
        "Address of the metrics listener (metrics_port). All interfaces, so that Prometheus reaches it through a "
        "Service while host stays on loopback.",
    )
    metrics_port: int = setting(
        "metrics_port",
        0,
        "A second, plain-HTTP listener serving only GET /metrics, /healthz and /readyz: for the secondary "
        "scheduler's sidecar, whose verbs listen on loopback, so that Prometheus can scrape it through a Service. "
        "0: none (/metrics is on port).",
        check=_port_or_off,
    )

    def _problems(self) -> list[Problem]:
        if self.metrics_port and self.metrics_port == self.port:
            return [Problem(("metrics_port", "port"), "metrics_port: must differ from port (or be 0 for none)")]
        return []


@dataclass(frozen=True)
class ViewSettings(Group):
    """Where the cluster view comes from and how fresh it must be."""

    TITLE = "Cluster view"

    kubeconfig: str | None = setting(
        "kubeconfig",
        None,
        "Kubeconfig file. Unset: the in-cluster service account, so a stray ~/.kube/config never wins.",
    )
    snapshot: str | None = setting(
        "snapshot",
        None,
        "Serve a Kubernetes List (YAML or JSON of Nodes, Pods, ConfigMaps) instead of a live cluster.",
    )
    stale_after_s: float = setting(
        "stale_after_s",
        180.0,
        "Readiness fails when the last good list or watch event (bookmarks included) is older than this. "
        "The API server sends bookmarks about every minute, so three missed ones mean a stuck stream.",
        check=positive,
    )
    watch_timeout_s: int = setting(
        "watch_timeout_s",
        300,
        "Server-side watch timeout; a random extra up to the same again spreads reconnects, as client-go does.",
        check=positive,
    )
    watch_read_timeout_s: float = setting(
        "watch_read_timeout_s",
        90.0,
        "Client-side read timeout of a watch: longer than the bookmark interval, so only a dead stream trips.",
        check=positive,
    )
    assume_ttl_s: float = setting(
        "assume_ttl_s",
        30.0,
        "How long a placement the extender expects (between its answer and the bind) is counted as used.",
    )

    def _problems(self) -> list[Problem]:
        if self.kubeconfig and self.snapshot:
            return [
                Problem(
                    ("kubeconfig", "snapshot"),
                    "kubeconfig and snapshot: give one source of the cluster view, not both",
                )
            ]
        return []


@dataclass(frozen=True)
class ConfigMapRef(Group):
    """The mig-parted ConfigMap that MIG Manager reads: the layouts the view knows, where re-layouts go."""

    TITLE = "mig-parted ConfigMap"

    namespace: str = setting(
        "mig_parted_namespace",
        "gpu-operator",
        "Namespace of the mig-parted ConfigMap: where the GPU Operator installs it by default.",
    )
    name: str = setting(
        "mig_parted_configmap",
        "default-mig-parted-config",
        "Name of the mig-parted ConfigMap that MIG Manager reads; the GPU Operator's default name.",
    )
    key: str = setting("mig_parted_key", "config.yaml", "Key of the config inside the ConfigMap.")


@dataclass(frozen=True)
class ScoringSettings(Group):
    """How nodes are scored and placements predicted, and the demand mix that fragmentation expects."""

    TITLE = "Scoring"

    strategy: ScoringStrategy = setting(
        "scoring",
        "fragmentation",
        "Node scoring strategy: fragmentation (FGD gradient, packing breaks ties: fewest node-hours), "
        "fragmentation-spread (FGD gradient, the emptiest node breaks ties: shorter waits for room, more "
        "node-hours), packing or spread.",
        check=_strategy,
    )
    dynamic_allocator: DynamicAllocator = setting(
        "dynamic_allocator",
        Allocator.FIRST_FIT,
        "Who picks the placement inside a DynamicMIG node: first-fit, as kube-scheduler's DRA allocator does "
        "today, or ideal for an allocator that honours the policy's placement (most-options).",
    )
    demand_prior: str = setting(
        "demand_prior",
        "uniform",
        "Prior mix of MIG requests for fragmentation: a named mix (inference, uniform, training) or "
        "shape=weight pairs such as 1g=0.5,3g=0.3,7g=0.2.",
        check=_mix,
    )
    demand_prior_weight: float = setting(
        "demand_prior_weight",
        20.0,
        "How many requests the prior counts for: small enough that an hour of real traffic outweighs it.",
    )
    demand_half_life_s: float = setting(
        "demand_half_life_s",
        3600.0,
        "Half-life of observed requests in the demand mix: follows a daily cycle, forgets last week.",
        check=positive,
    )


@dataclass(frozen=True)
class AnnotatorSettings(Group):
    """Verdict annotations and events on pending MIG pods."""

    TITLE = "Verdict annotations"

    enabled: bool = setting("annotate", True, "Write verdict annotations and events on pending MIG pods.")
    rate: float = setting(
        "annotate_rate",
        5.0,
        "Pod patches per second at most (with a burst of twice as many): the API server is shared.",
        check=positive,
    )
    scan_interval_s: float = setting(
        "pending_scan_s",
        10.0,
        "How often pending MIG pods are re-evaluated for verdicts, besides right after a filter.",
        check=positive,
    )


@dataclass(frozen=True)
class MetricsSettings(Group):
    """What /metrics exports beyond the fixed series."""

    TITLE = "Metrics"

    per_gpu: bool = setting(
        "metrics_per_gpu",
        False,
        "Export per-GPU fleet series (mig_extender_gpu_*), about 5 per GPU: off by default for cardinality.",
    )


@dataclass(frozen=True)
class LoggingSettings(Group):
    """The process log on stderr."""

    TITLE = "Logging"

    format: LogFormat = setting("log_format", "text", "text or json (one JSON object per line).")
    level: str = setting("log_level", "INFO", "Python logging level.")


@dataclass(frozen=True)
class TlsSettings(Group):
    """HTTPS and client certificates (docs/security.md)."""

    TITLE = "TLS"

    cert_file: str | None = setting(
        "tls_cert_file",
        None,
        "PEM certificate (chain) to serve HTTPS with, e.g. tls.crt of a cert-manager Secret. Unset: plain HTTP. "
        "Re-read when it changes on disk (docs/security.md).",
    )
    key_file: str | None = setting(
        "tls_key_file",
        None,
        "PEM private key of tls_cert_file (unencrypted), e.g. tls.key of the same Secret.",
    )
    client_ca_file: str | None = setting(
        "tls_client_ca_file",
        None,
        "PEM CA bundle: require a client certificate it signed (kube-scheduler's tlsConfig certFile/keyFile) "
        "on every path but tls_open_paths. Unset: no client certificates.",
    )
    open_paths: str = setting(
        "tls_open_paths",
        "/healthz,/readyz",
        "With tls_client_ca_file: comma-separated paths served without a client certificate. The kubelet's "
        "HTTPS probes present none; add /metrics if Prometheus scrapes without one.",
        check=_paths,
    )
    reload_interval_s: float = setting(
        "tls_reload_interval_s",
        5.0,
        "How often the TLS files are checked for a change (inode, size, mtime); a changed pair is loaded for "
        "new connections. The kubelet refreshes Secret volumes within about a minute, so this adds little.",
        check=positive,
    )

    def _problems(self) -> list[Problem]:
        problems = []
        if bool(self.cert_file) != bool(self.key_file):
            problems.append(
                Problem(
                    ("tls_cert_file", "tls_key_file"),
                    "tls_cert_file and tls_key_file: give both (a certificate and its key) or neither",
                )
            )
        if self.client_ca_file and not self.cert_file:
            problems.append(
                Problem(
                    ("tls_client_ca_file",),
                    "tls_client_ca_file: needs tls_cert_file and tls_key_file (client certificates need TLS)",
                )
            )
        return problems


@dataclass(frozen=True)
class RelayoutSettings(Group):
    """The re-layout controller (docs/relayout.md)."""

    TITLE = "Re-layout controller"

    mode: RelayoutMode = setting(
        "relayout",
        "off",
        "Re-layout controller: off, plan-only (annotate waiting pods and export what it would do) or on "
        "(re-partition idle GPUs through MIG Manager). Off by default: it changes nodes. See docs/relayout.md.",
    )
    single_gpus: bool = setting(
        "relayout_gpus",
        False,
        "Also re-partition single idle GPUs of busy nodes (only on nodes with the exact layout annotation). "
        "Off: only wholly idle nodes, since MIG Manager pauses the GPU clients of the whole node meanwhile.",
    )
    rebalance: bool = setting(
        "relayout_rebalance",
        False,
        "When no pod waits for a re-layout, also re-partition idle GPUs toward the expected demand mix, so "
        "that pods find the instances they ask for instead of stranding a layout's small ones. For "
        "fixed-size clusters: with an autoscaler, idle nodes are better removed than re-partitioned. "
        "Subject to the same idle time, cool-down and rate limits. See docs/relayout.md.",
    )
    min_idle_s: float = setting(
        "relayout_min_idle_s",
        300.0,
        "A GPU or node is re-partitioned only after it has been idle this long, so that a pod about to "
        "start there again is not pre-empted by a layout change.",
        check=non_negative,
    )
    interval_s: float = setting(
        "relayout_interval_s",
        10.0,
        "How often the controller plans and follows re-layouts in progress.",
        check=positive,
    )
    settle_s: float = setting(
        "relayout_settle_s",
        10.0,
        "Pause between tainting a node and re-checking it: a pod kube-scheduler chose before the taint "
        "binds within this time, and the re-check then sees it.",
        check=non_negative,
    )
    timeout_s: float = setting(
        "relayout_timeout_s",
        1200.0,
        "A re-layout not reported success by MIG Manager within this time is abandoned: previous config "
        "label restored, taint removed. 20 minutes covers a MIG mode change that reboots the node.",
        check=positive,
    )
    max_concurrent: int = setting(
        "relayout_max_concurrent",
        1,
        "Re-layouts in progress at once, cluster-wide: each takes a node out of scheduling.",
        check=positive,
    )
    cooldown_s: float = setting(
        "relayout_node_cooldown_s",
        1800.0,
        "A node is not re-partitioned again within this time of its last re-layout, so none flaps.",
        check=non_negative,
    )
    max_per_hour: int = setting(
        "relayout_max_per_hour",
        6,
        "Re-layouts started per hour at most, cluster-wide (a sliding window).",
        check=positive,
    )

    def _problems(self) -> list[Problem]:
        if self.rebalance and self.mode == "off":
            return [
                Problem(
                    ("relayout_rebalance",),
                    "relayout_rebalance: needs relayout plan-only or on (the re-layout controller does it)",
                )
            ]
        return []


@dataclass(frozen=True)
class ProvisionSettings(Group):
    """The provisioning loop that asks Karpenter for MIG nodes (docs/karpenter.md)."""

    TITLE = "Provisioning"

    mode: ProvisionMode = setting(
        "provision",
        "off",
        "Provisioning loop for pods no layout anywhere fits: off; plan-only (export what it would ask for); "
        "requests (capacity-request pods that Karpenter provisions nodes of the MIG NodePools for); overlay "
        "(Karpenter provisions for the pods itself through NodeOverlays; the loop guards new nodes, and asks for "
        "a node for a pod Karpenter launches nothing for). "
        "Off by default: it makes Karpenter buy nodes. See docs/karpenter.md.",
    )
    pools_file: str | None = setting(
        "provision_pools_file",
        None,
        "YAML file mapping Karpenter NodePools to GPU model, GPUs per node, mig-parted config, cost and cap "
        "(docs/karpenter.md); needed unless provision is off. Mounted from the ConfigMap mig-extender-pools.",
    )
    request_resources: RequestResources = setting(
        "provision_request_resources",
        "mig",
        "What a capacity request asks for: mig (the pool's nvidia.com/mig-* instances, which Karpenter knows "
        "from the pool's NodeOverlay) or gpu (the instance's whole nvidia.com/gpu, which every Karpenter "
        "knows). Karpenter initializes a node once each requested resource is registered, and a node whose "
        "GPUs are all in MIG mode registers nvidia.com/gpu: 0, so with gpu such pools are not asked for "
        "(docs/karpenter.md).",
    )
    namespace: str = setting(
        "provision_namespace",
        "mig-extender",
        "Namespace of the capacity-request pods: the extender's own, where its Role allows them.",
    )
    owner_configmap: str = setting(
        "provision_owner_configmap",
        "mig-extender-pools",
        "ConfigMap in provision_namespace that owns the capacity-request pods: deleting it (or the install) "
        "lets the garbage collector remove them. Missing: the requests carry no owner.",
    )
    interval_s: float = setting(
        "provision_interval_s",
        10.0,
        "How often the loop reconciles capacity requests and new nodes.",
        check=positive,
    )
    debounce_s: float = setting(
        "provision_debounce_s",
        30.0,
        "A pod counts as unmet demand once its no-layout-fits verdict is this old: pods that a deletion or "
        "a re-layout would host soon do not buy nodes.",
        check=non_negative,
    )
    debounce_window_s: float = setting(
        "provision_debounce_window_s",
        10.0,
        "Pods whose no-layout-fits verdicts came at most this far apart are one burst, planned together (as "
        "the fewest nodes) once its first pod is provision_debounce_s old; 0: each pod by its own age.",
        check=non_negative,
    )
    max_requests: int = setting(
        "provision_max_requests",
        20,
        "Capacity requests outstanding at once, cluster-wide, on top of each pool's maxNodes.",
        check=positive,
    )
    protect_s: float = setting(
        "provision_protect_s",
        1800.0,
        "A new node of a MIG pool carries karpenter.sh/do-not-disrupt until a MIG pod runs on it or this "
        "long: MIG Manager may reboot it to apply its layout, and an empty node would be consolidated.",
        check=positive,
    )
    overlay_wait_s: float = setting(
        "provision_overlay_wait_s",
        60.0,
        "In overlay mode, a pod counted as unmet demand with no node on its way this long is one Karpenter "
        "launches nothing for (its counts found room on an existing node): it gets a capacity request. At "
        "once when Karpenter's own Events for the pod say so (Nominated to an existing node, "
        "FailedScheduling).",
        check=positive,
    )
    request_timeout_s: float = setting(
        "provision_request_timeout_s",
        900.0,
        "A capacity request with no node of its pool after this long gets a Warning event and counts as "
        "stuck (NodePool limits, no offering, or Karpenter deciding an existing node fits).",
        check=positive,
    )


@dataclass(frozen=True)
class HeadroomSettings(Group):
    """Warm headroom: low-priority placeholder pods holding MIG room that real pods preempt (docs/headroom.md)."""

    TITLE = "Warm headroom"

    mode: HeadroomMode = setting(
        "headroom",
        "off",
        "Keep placeholder pods (PriorityClass mig-extender-headroom, below every workload) asking for the MIG "
        "profiles most likely to be asked next, so that an arriving pod preempts one at once instead of "
        "waiting for a new node, and the evicted placeholder makes the autoscaler start that node. Off by "
        "default: it holds GPUs that nothing uses. See docs/headroom.md.",
    )
    namespace: str = setting(
        "headroom_namespace",
        "mig-extender",
        "Namespace of the placeholder pods: the extender's own, where its Role allows them.",
    )
    priority_class: str = setting(
        "headroom_priority_class",
        "mig-extender-headroom",
        "PriorityClass of the placeholder pods (manifests ship it at -10, preemptionPolicy Never): below "
        "every real workload, so that any pod that needs the room preempts them.",
    )
    lead_time_s: float = setting(
        "headroom_lead_time_s",
        420.0,
        "Seconds from a pod finding no room to a new node running it (the autoscaler's delay, the node's "
        "start-up and MIG Manager's layout): the headroom covers what is asked in that time.",
        check=positive,
    )
    coverage: float = setting(
        "headroom_coverage",
        0.9,
        "Per MIG shape, the probability that the pods arriving in one lead time all find a placeholder "
        "(arrivals taken as Poisson at the recent rate).",
        check=lambda v: None if 0 < v < 1 else f"must be strictly between 0 and 1, not {v}",
    )
    size: float = setting(
        "headroom_size",
        1.0,
        "Multiplies the arrivals expected in one lead time: above 1 buys shorter waits with more idle GPUs.",
        check=non_negative,
    )
    max_gpus: float = setting(
        "headroom_max_gpus",
        8.0,
        "At most this many GPUs' compute slices held by placeholders, cluster-wide.",
        check=non_negative,
    )
    max_fleet_share: float = setting(
        "headroom_max_fleet_share",
        0.1,
        "And at most this share of the cluster's MIG GPUs (1: no bound but headroom_max_gpus).",
        check=lambda v: None if 0 <= v <= 1 else f"must be within 0..1, not {v}",
    )
    rate_half_life_s: float = setting(
        "headroom_rate_half_life_s",
        1800.0,
        "Half-life of the recent arrival rate the headroom is sized from: shorter follows bursts sooner "
        "and forgets them sooner.",
        check=positive,
    )
    interval_s: float = setting(
        "headroom_interval_s",
        30.0,
        "How often the placeholders are planned again and reconciled.",
        check=positive,
    )
    exclude_pools: str = setting(
        "headroom_exclude_pools",
        "",
        "Comma-separated Karpenter NodePools (karpenter.sh/nodepool) whose nodes take no placeholder: pools "
        "that should scale to zero when idle.",
    )


@dataclass(frozen=True)
class DefragSettings(Group):
    """The defragmentation controller: evict a few movable pods so that a waiting one fits (docs/defrag.md)."""

    TITLE = "Defragmentation controller"

    mode: DefragMode = setting(
        "defrag",
        "off",
        "Defragmentation controller: off, plan-only (annotate waiting pods with the evictions that would make "
        "room, and export them) or on (reserve the room and evict those pods through the Eviction API). Off by "
        "default: it evicts running pods. See docs/defrag.md.",
    )
    namespaces: str = setting(
        "defrag_namespaces",
        "",
        "Comma-separated namespaces whose pods may be moved without opting in; elsewhere only pods labelled or "
        "annotated mig-extender.io/movable=true are. Empty: none, so nothing is movable by default.",
    )
    min_wait_s: float = setting(
        "defrag_min_wait_s",
        120.0,
        "A pod is planned for once its current verdict is this old: room that a leaving pod or a re-layout "
        "frees soon is not bought with evictions.",
        check=non_negative,
    )
    interval_s: float = setting(
        "defrag_interval_s",
        15.0,
        "How often the controller plans and follows its plans.",
        check=positive,
    )
    max_evictions: int = setting(
        "defrag_max_evictions",
        2,
        "Pods one plan may evict at most.",
        check=positive,
    )
    max_per_hour: int = setting(
        "defrag_max_evictions_per_hour",
        10,
        "Pods evicted per hour at most, cluster-wide (a sliding window): a plan going beyond is not started.",
        check=positive,
    )
    max_concurrent: int = setting(
        "defrag_max_concurrent",
        1,
        "Plans (reservations) in progress at once, cluster-wide.",
        check=positive,
    )
    pod_cooldown_s: float = setting(
        "defrag_pod_cooldown_s",
        3600.0,
        "A pod that started less than this long ago is not moved. A moved pod comes back as a new pod, which "
        "this keeps from being moved again in a row (across leader changes too: it is read from the pod).",
        check=non_negative,
    )
    max_lost_s: float = setting(
        "defrag_max_lost_s",
        0.0,
        "No plan throws away more run time than this, summed over the pods it moves (a moved pod restarts from "
        "zero unless the workload checkpoints): long-running pods stay where they are. 0: no bound.",
        check=non_negative,
    )
    reservation_s: float = setting(
        "defrag_reservation_s",
        600.0,
        "How long the room made for a waiting pod is kept from other MIG pods; a reservation whose pod has not "
        "bound by then is released. It covers the evicted pods' termination and, on static GPUs, a re-layout.",
        check=positive,
    )
    grace_period_s: int = setting(
        "defrag_eviction_grace_period_s",
        -1,
        "gracePeriodSeconds of the evictions; -1: each pod's own terminationGracePeriodSeconds.",
        check=lambda v: None if v >= -1 else f"must be -1 or more, not {v}",
    )
    max_plans_shown: int = setting(
        "defrag_max_plans_shown",
        50,
        "Waiting pods whose plan the metrics name at most (one series per pod).",
        check=non_negative,
    )

    @property
    def movable_namespaces(self) -> frozenset[str]:
        return frozenset(n.strip() for n in self.namespaces.split(",") if n.strip())


@dataclass(frozen=True)
class LeaderElectionSettings(Group):
    """The Lease that lets one replica act at a time (client-go's leader election)."""

    TITLE = "Leader election"

    enabled: bool = setting(
        "leader_election",
        True,
        "Hold a Lease before the re-layout controller, the provisioning loop, the defrag controller or the "
        "headroom controller acts, so one replica acts at a time. Only used when one of them is on, or with "
        "leader_only_verbs.",
    )
    verbs: bool = setting(
        "leader_only_verbs",
        False,
        "Answer kube-scheduler (filter, prioritize, bind) only while this replica holds the Lease, and label "
        "its Pod mig-extender.io/leader=true meanwhile, so that a Service selecting that label sends "
        "kube-scheduler to it alone: replicas do not share what they assumed between an answer and the "
        "binding, and two answering side by side could count the same free slices twice. Needs POD_NAME (and "
        "POD_NAMESPACE, else the Lease's namespace) from the downward API. The extender Deployment of "
        "manifests/base and the chart's extender mode turn it on; a secondary scheduler's sidecar, which only "
        "its own kube-scheduler calls, leaves it off.",
    )
    namespace: str = setting(
        "leader_election_namespace",
        "mig-extender",
        "Namespace of the Lease: the extender's own, where its Role allows it.",
    )
    name: str = setting("leader_election_name", "mig-extender", "Name of the Lease.")
    lease_duration_s: float = setting(
        "leader_lease_duration_s",
        15.0,
        "How long a Lease holds without renewal before another replica may take it (client-go's).",
    )
    renew_deadline_s: float = setting(
        "leader_renew_deadline_s",
        10.0,
        "The leader stops acting if it could not renew for this long; below the lease duration.",
    )
    retry_period_s: float = setting(
        "leader_retry_period_s",
        2.0,
        "How often the Lease is renewed, or tried by a replica that does not hold it.",
    )

    def _problems(self) -> list[Problem]:
        problems = []
        if not 0 < self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            problems.append(
                Problem(
                    ("leader_retry_period_s", "leader_renew_deadline_s", "leader_lease_duration_s"),
                    "leader election: need 0 < retry period < renew deadline < lease duration",
                )
            )
        if self.verbs and not self.enabled:
            problems.append(
                Problem(
                    ("leader_only_verbs", "leader_election"),
                    "leader_only_verbs: needs leader_election (only the replica that holds the Lease answers)",
                )
            )
        return problems


@dataclass(frozen=True)
class Settings:
    """All settings, by group; ``Settings.of(port=9000)`` makes them from public names."""

    server: ServerSettings = field(default_factory=ServerSettings)
    view: ViewSettings = field(default_factory=ViewSettings)
    mig_parted: ConfigMapRef = field(default_factory=ConfigMapRef)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    annotator: AnnotatorSettings = field(default_factory=AnnotatorSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    relayout: RelayoutSettings = field(default_factory=RelayoutSettings)
    provisioning: ProvisionSettings = field(default_factory=ProvisionSettings)
    headroom: HeadroomSettings = field(default_factory=HeadroomSettings)
    defrag: DefragSettings = field(default_factory=DefragSettings)
    leader_election: LeaderElectionSettings = field(default_factory=LeaderElectionSettings)

    def __post_init__(self) -> None:
        problems = []
        if self.relayout.mode != "off" and not self.annotator.enabled:
            problems.append(
                Problem(
                    ("relayout", "annotate"),
                    "relayout: needs annotate (it acts on pods whose verdict annotation is relayout)",
                )
            )
        # Here rather than in ProvisionSettings: the loop itself takes its pools loaded (tests in memory).
        if self.provisioning.mode != "off" and not self.provisioning.pools_file:
            problems.append(
                Problem(
                    ("provision", "provision_pools_file"),
                    "provision: needs provision_pools_file (which NodePools to provision, with what layout)",
                )
            )
        if self.defrag.mode != "off" and not self.annotator.enabled:
            problems.append(
                Problem(
                    ("defrag", "annotate"),
                    "defrag: needs annotate (it plans for pods by their verdict annotation and its age)",
                )
            )
        if self.provisioning.mode != "off" and not self.annotator.enabled:
            problems.append(
                Problem(
                    ("provision", "annotate"),
                    "provision: needs annotate (it acts on pods whose verdict annotation is no-layout-fits)",
                )
            )
        if problems:
            raise SettingsError(problems)

    @classmethod
    def of(cls, **values: Any) -> Settings:
        """Settings from public names (``host="127.0.0.1"``), the others defaults: for tests and tools."""
        return _build({name: (value, "the caller") for name, value in values.items()})


GROUPS: dict[str, type[Group]] = _hints(Settings)
"""Each group by its attribute of Settings, in the order of the settings page."""


@dataclass(frozen=True)
class Spec:
    """One setting as users see it: public name, flag, variable, type, default and why."""

    name: str
    group: str
    attribute: str
    kind: Any
    default: Any
    doc: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


SPECS: dict[str, Spec] = {
    f.metadata["name"]: Spec(f.metadata["name"], group, f.name, _hints(kind)[f.name], f.default, f.metadata["doc"])
    for group, kind in GROUPS.items()
    for f in dataclasses.fields(kind)  # type: ignore[arg-type]
}


def _convert(kind: Any, value: Any) -> Any:
    """``value`` as ``kind``; raises ValueError saying why not. Literal values are checked by the group."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{value!r} is not a boolean")
    if kind in (int, float):
        what = "an integer" if kind is int else "a number"
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not {what}")
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not {what}") from None
    if isinstance(kind, types.UnionType) and type(None) in typing.get_args(kind):
        return None if value is None else str(value)
    if _is_literal(kind):
        if isinstance(value, bool):  # YAML 1.1 reads an unquoted on/off as a boolean
            value = "on" if value else "off"
        return next((choice for choice in typing.get_args(kind) if str(choice) == str(value)), str(value))
    return str(value)


def _build(values: Mapping[str, tuple[Any, str]]) -> Settings:
    """Settings from public names mapped to (value, where it came from); every problem in one error."""
    problems: list[Problem] = []
    typed: dict[str, dict[str, Any]] = defaultdict(dict)
    for name, (value, source) in values.items():
        spec = SPECS.get(name)
        if spec is None:
            problems.append(Problem((), f"unknown setting {name!r} (from {source})"))
            continue
        try:
            typed[spec.group][spec.attribute] = _convert(spec.kind, value)
        except ValueError as exc:
            problems.append(Problem((), f"{name} (from {source}): {exc}"))
    groups: dict[str, Group] = {}
    for group, kind in GROUPS.items():
        try:
            groups[group] = kind(**typed[group])
        except SettingsError as exc:
            problems.extend(exc.problems)
    if not problems:
        try:
            return Settings(**groups)  # type: ignore[arg-type]
        except SettingsError as exc:
            problems.extend(exc.problems)
    raise SettingsError([_with_sources(p, values) for p in problems])


def _with_sources(problem: Problem, values: Mapping[str, tuple[Any, str]]) -> Problem:
    given = {name: values[name][1] for name in problem.names if name in values}
    if not given:
        return problem  # defaults only
    if len(set(given.values())) == 1:
        return Problem((), f"{problem.message} (from {next(iter(given.values()))})")
    where = ", ".join(f"{name} from {source}" for name, source in given.items())
    return Problem((), f"{problem.message} ({where})")


def _read_config(path: str) -> Mapping[Any, Any]:
    try:
        document = yaml.safe_load(pathlib.Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"config file {path}: {exc}") from None
    if not isinstance(document, Mapping):
        raise SettingsError(f"config file {path}: expected a mapping of settings")
    return document


def _retire(name: str, source: str) -> None:
    log.warning("setting %s (from %s) is retired and ignored: %s", name, source, RETIRED[name])


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults, then the config file, then ``MIG_EXTENDER_*`` variables, then ``overrides`` (flags)."""
    values: dict[str, tuple[Any, str]] = {}
    if config_file:
        for key, value in _read_config(config_file).items():
            name = str(key).replace("-", "_")
            if name in RETIRED:
                _retire(name, f"config file {config_file}")
            elif name not in SPECS:
                raise SettingsError(f"config file {config_file}: unknown setting {key!r}")
            else:
                values[name] = (value, f"config file {config_file}")
    env = os.environ if environ is None else environ
    for name in RETIRED:
        if ENV_PREFIX + name.upper() in env:
            _retire(name, ENV_PREFIX + name.upper())
    for spec in SPECS.values():
        if spec.env in env:
            values[spec.name] = (env[spec.env], spec.env)
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name in RETIRED:
            _retire(name, "--" + name.replace("_", "-"))
        else:
            values[name] = (value, "--" + name.replace("_", "-"))
    return _build(values)


INTRO = (
    "Generated by `mig-extender settings` (`mig-extender settings > docs/settings.md`); each can be a flag, "
    "an environment variable or a key of the `--config` file (YAML or JSON, dashes or underscores). "
    "Precedence: flag > environment > config file > default."
)


def describe() -> str:
    """The settings page in Markdown, a table per group: every setting, its default and why."""
    lines = ["# Settings", "", INTRO]
    for group, kind in GROUPS.items():
        lines += ["", f"## {kind.TITLE}", "", kind.__doc__ or "", "", "| setting | env | default | why |"]
        lines.append("|---|---|---|---|")
        for spec in SPECS.values():
            if spec.group == group:
                lines.append(f"| `{spec.flag}` | `{spec.env}` | `{spec.default}` | {spec.doc} |")
    if RETIRED:
        lines += ["", "## Retired", "", "Accepted from every source with a warning, and ignored.", ""]
        lines += [f"- `--{name.replace('_', '-')}`: {why}." for name, why in RETIRED.items()]
    return "\n".join(lines)
