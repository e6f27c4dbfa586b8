"""Every tunable of the extender in one typed object, with the reason for each default.

Values come, from lowest to highest precedence, from the defaults below, an optional YAML or JSON config
file (keys as the field names, with dashes or underscores), environment variables ``MIG_EXTENDER_<FIELD>``
and command-line flags ``--<field-with-dashes>``.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from .model.fit import Allocator
from .model.fragmentation import parse_mix
from .model.placement import START_CHOOSERS
from .model.scoring import SCORERS

ENV_PREFIX = "MIG_EXTENDER_"
PROVISION_MODES = ("off", "plan-only", "requests", "overlay")


class SettingsError(ValueError):
    """A setting with a bad value; the message names the setting and where it came from."""


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class Settings:
    host: str = field(
        default="0.0.0.0",
        metadata=_doc(
            "Address to listen on. All interfaces in a pod, so kube-scheduler reaches it through the Service; "
            "tests and demos pass 127.0.0.1."
        ),
    )
    port: int = field(default=8888, metadata=_doc("HTTP port for /filter, /prioritize, probes and /metrics."))
    kubeconfig: str | None = field(
        default=None,
        metadata=_doc("Kubeconfig file. Unset: the in-cluster service account, so a stray ~/.kube/config never wins."),
    )
    snapshot: str | None = field(
        default=None,
        metadata=_doc("Serve a Kubernetes List (YAML or JSON of Nodes, Pods, ConfigMaps) instead of a live cluster."),
    )
    mig_parted_namespace: str = field(
        default="gpu-operator",
        metadata=_doc("Namespace of the mig-parted ConfigMap: where the GPU Operator installs it by default."),
    )
    mig_parted_configmap: str = field(
        default="default-mig-parted-config",
        metadata=_doc("Name of the mig-parted ConfigMap that MIG Manager reads; the GPU Operator's default name."),
    )
    mig_parted_key: str = field(default="config.yaml", metadata=_doc("Key of the config inside the ConfigMap."))
    max_body_bytes: int = field(
        default=128 * 1024 * 1024,
        metadata=_doc(
            "Largest request body. With nodeCacheCapable false kube-scheduler sends every candidate Node: 5,000 "
            "nodes of ~20 KB (labels, images, managed fields) are ~100 MB, so 128 MiB holds them."
        ),
    )
    scoring: str = field(
        default="fragmentation",
        metadata=_doc(
            "Node scoring strategy: fragmentation (FGD gradient, packing breaks ties: fewest node-hours), "
            "fragmentation-spread (FGD gradient, the emptiest node breaks ties: shorter waits for room, more "
            "node-hours), packing or spread."
        ),
    )
    dynamic_allocator: str = field(
        default=Allocator.FIRST_FIT.value,
        metadata=_doc(
            "Who picks the placement inside a DynamicMIG node: first-fit, as kube-scheduler's DRA allocator does "
            "today, or ideal for an allocator that honours the policy's placement."
        ),
    )
    placement: str = field(
        default="most-options",
        metadata=_doc("How placements are estimated where the extender chooses: most-options or first-fit."),
    )
    demand_prior: str = field(
        default="uniform",
        metadata=_doc(
            "Prior mix of MIG requests for fragmentation: a named mix (inference, uniform, training) or "
            "shape=weight pairs such as 1g=0.5,3g=0.3,7g=0.2."
        ),
    )
    demand_prior_weight: float = field(
        default=20.0,
        metadata=_doc(
            "How many requests the prior counts for: small enough that an hour of real traffic outweighs it."
        ),
    )
    demand_half_life_s: float = field(
        default=3600.0,
        metadata=_doc("Half-life of observed requests in the demand mix: follows a daily cycle, forgets last week."),
    )
    stale_after_s: float = field(
        default=180.0,
        metadata=_doc(
            "Readiness fails when the last good list or watch event (bookmarks included) is older than this. "
            "The API server sends bookmarks about every minute, so three missed ones mean a stuck stream."
        ),
    )
    watch_timeout_s: int = field(
        default=300,
        metadata=_doc(
            "Server-side watch timeout; a random extra up to the same again spreads reconnects, as client-go does."
        ),
    )
    watch_read_timeout_s: float = field(
        default=90.0,
        metadata=_doc(
            "Client-side read timeout of a watch: longer than the bookmark interval, so only a dead stream trips."
        ),
    )
    assume_ttl_s: float = field(
        default=30.0,
        metadata=_doc(
            "How long a placement the extender expects (between its answer and the bind) is counted as used."
        ),
    )
    annotate: bool = field(default=True, metadata=_doc("Write verdict annotations and events on pending MIG pods."))
    annotate_rate: float = field(
        default=5.0,
        metadata=_doc("Pod patches per second at most (with a burst of twice as many): the API server is shared."),
    )
    pending_scan_s: float = field(
        default=10.0,
        metadata=_doc("How often pending MIG pods are re-evaluated for verdicts, besides right after a filter."),
    )
    metrics_per_gpu: bool = field(
        default=False,
        metadata=_doc(
            "Export per-GPU fleet series (mig_extender_gpu_*), about 5 per GPU: off by default for cardinality."
        ),
    )
    log_format: str = field(default="text", metadata=_doc("text or json (one JSON object per line)."))
    log_level: str = field(default="INFO", metadata=_doc("Python logging level."))
    access_log: bool = field(
        default=False,
        metadata=_doc(
            "aiohttp access log. Off: it costs a third of throughput on small requests and metrics cover it."
        ),
    )
    shutdown_timeout_s: float = field(
        default=10.0,
        metadata=_doc("Grace for in-flight requests on SIGTERM; below the Deployment's terminationGracePeriodSeconds."),
    )
    tls_cert_file: str | None = field(
        default=None,
        metadata=_doc(
            "PEM certificate (chain) to serve HTTPS with, e.g. tls.crt of a cert-manager Secret. Unset: plain HTTP. "
            "Re-read when it changes on disk (docs/security.md)."
        ),
    )
    tls_key_file: str | None = field(
        default=None,
        metadata=_doc("PEM private key of tls_cert_file (unencrypted), e.g. tls.key of the same Secret."),
    )
    tls_client_ca_file: str | None = field(
        default=None,
        metadata=_doc(
            "PEM CA bundle: require a client certificate it signed (kube-scheduler's tlsConfig certFile/keyFile) "
            "on every path but tls_open_paths. Unset: no client certificates."
        ),
    )
    tls_open_paths: str = field(
        default="/healthz,/readyz",
        metadata=_doc(
            "With tls_client_ca_file: comma-separated paths served without a client certificate. The kubelet's "
            "HTTPS probes present none; add /metrics if Prometheus scrapes without one."
        ),
    )
    tls_reload_interval_s: float = field(
        default=5.0,
        metadata=_doc(
            "How often the TLS files are checked for a change (inode, size, mtime); a changed pair is loaded for "
            "new connections. The kubelet refreshes Secret volumes within about a minute, so this adds little."
        ),
    )
    read_timeout_s: float = field(
        default=10.0,
        metadata=_doc(
            "A request's headers and body must arrive within this time of its first byte, or the connection is "
            "closed (408): kube-scheduler gives up after its 5 s httpTimeout, so only a stalled client is slower."
        ),
    )
    keepalive_timeout_s: float = field(
        default=120.0,
        metadata=_doc(
            "Idle keep-alive connections are closed after this. Above kube-scheduler's 90 s idle timeout "
            "(Go's default transport), so the client closes first and never races a server-side close."
        ),
    )
    max_connections: int = field(
        default=1000,
        metadata=_doc(
            "Open connections at most. At the limit a new connection replaces the longest-idle one, or gets a "
            "503 when all are mid-request; this bounds the memory that many clients can pin."
        ),
    )

    relayout: str = field(
        default="off",
        metadata=_doc(
            "Re-layout controller: off, plan-only (annotate waiting pods and export what it would do) or on "
            "(re-partition idle GPUs through MIG Manager). Off by default: it changes nodes. See docs/relayout.md."
        ),
    )
    relayout_gpus: bool = field(
        default=False,
        metadata=_doc(
            "Also re-partition single idle GPUs of busy nodes (only on nodes with the exact layout annotation). "
            "Off: only wholly idle nodes, since MIG Manager pauses the GPU clients of the whole node meanwhile."
        ),
    )
    relayout_rebalance: bool = field(
        default=False,
        metadata=_doc(
            "When no pod waits for a re-layout, also re-partition idle GPUs toward the expected demand mix, so "
            "that pods find the instances they ask for instead of stranding a layout's small ones. For "
            "fixed-size clusters: with an autoscaler, idle nodes are better removed than re-partitioned. "
            "Subject to the same idle time, cool-down and rate limits. See docs/relayout.md."
        ),
    )
    relayout_min_idle_s: float = field(
        default=300.0,
        metadata=_doc(
            "A GPU or node is re-partitioned only after it has been idle this long, so that a pod about to "
            "start there again is not pre-empted by a layout change."
        ),
    )
    relayout_interval_s: float = field(
        default=10.0,
        metadata=_doc("How often the controller plans and follows re-layouts in progress."),
    )
    relayout_settle_s: float = field(
        default=10.0,
        metadata=_doc(
            "Pause between tainting a node and re-checking it: a pod kube-scheduler chose before the taint "
            "binds within this time, and the re-check then sees it."
        ),
    )
    relayout_timeout_s: float = field(
        default=1200.0,
        metadata=_doc(
            "A re-layout not reported success by MIG Manager within this time is abandoned: previous config "
            "label restored, taint removed. 20 minutes covers a MIG mode change that reboots the node."
        ),
    )
    relayout_max_concurrent: int = field(
        default=1,
        metadata=_doc("Re-layouts in progress at once, cluster-wide: each takes a node out of scheduling."),
    )
    relayout_node_cooldown_s: float = field(
        default=1800.0,
        metadata=_doc("A node is not re-partitioned again within this time of its last re-layout, so none flaps."),
    )
    relayout_max_per_hour: int = field(
        default=6,
        metadata=_doc("Re-layouts started per hour at most, cluster-wide (a sliding window)."),
    )
    provision: str = field(
        default="off",
        metadata=_doc(
            "Provisioning loop for pods no layout anywhere fits: off; plan-only (export what it would ask for); "
            "requests (capacity-request pods that Karpenter provisions nodes of the MIG NodePools for); overlay "
            "(Karpenter provisions for the pods itself through NodeOverlays; the loop only guards new nodes). "
            "Off by default: it makes Karpenter buy nodes. See docs/karpenter.md."
        ),
    )
    provision_pools_file: str | None = field(
        default=None,
        metadata=_doc(
            "YAML file mapping Karpenter NodePools to GPU model, GPUs per node, mig-parted config, cost and cap "
            "(docs/karpenter.md); needed unless provision is off. Mounted from the ConfigMap mig-extender-pools."
        ),
    )
    provision_request_resources: str = field(
        default="gpu",
        metadata=_doc(
            "What a capacity request asks for: gpu (the instance's whole nvidia.com/gpu, which every Karpenter "
            "knows) or mig (the pool's nvidia.com/mig-* instances; needs the NodeOverlays applied). With gpu, "
            "Karpenter may never mark a node Initialized once MIG Manager turned its GPUs into MIG instances "
            "(docs/karpenter.md); mig avoids that."
        ),
    )
    provision_namespace: str = field(
        default="mig-extender",
        metadata=_doc("Namespace of the capacity-request pods: the extender's own, where its Role allows them."),
    )
    provision_owner_configmap: str = field(
        default="mig-extender-pools",
        metadata=_doc(
            "ConfigMap in provision_namespace that owns the capacity-request pods: deleting it (or the install) "
            "lets the garbage collector remove them. Missing: the requests carry no owner."
        ),
    )
    provision_interval_s: float = field(
        default=10.0, metadata=_doc("How often the loop reconciles capacity requests and new nodes.")
    )
    provision_debounce_s: float = field(
        default=30.0,
        metadata=_doc(
            "A pod counts as unmet demand once its no-layout-fits verdict is this old: pods that a deletion or "
            "a re-layout would host soon do not buy nodes."
        ),
    )
    provision_max_requests: int = field(
        default=20,
        metadata=_doc("Capacity requests outstanding at once, cluster-wide, on top of each pool's maxNodes."),
    )
    provision_protect_s: float = field(
        default=1800.0,
        metadata=_doc(
            "A new node of a MIG pool carries karpenter.sh/do-not-disrupt until a MIG pod runs on it or this "
            "long: MIG Manager may reboot it to apply its layout, and an empty node would be consolidated."
        ),
    )
    provision_request_timeout_s: float = field(
        default=900.0,
        metadata=_doc(
            "A capacity request with no node of its pool after this long gets a Warning event and counts as "
            "stuck (NodePool limits, no offering, or Karpenter deciding an existing node fits)."
        ),
    )
    leader_election: bool = field(
        default=True,
        metadata=_doc(
            "Hold a Lease before the re-layout controller or the provisioning loop acts, so one replica acts "
            "at a time. Only used when either is on."
        ),
    )
    leader_election_namespace: str = field(
        default="mig-extender",
        metadata=_doc("Namespace of the Lease: the extender's own, where its Role allows it."),
    )
    leader_election_name: str = field(default="mig-extender", metadata=_doc("Name of the Lease."))
    leader_lease_duration_s: float = field(
        default=15.0,
        metadata=_doc("How long a Lease holds without renewal before another replica may take it (client-go's)."),
    )
    leader_renew_deadline_s: float = field(
        default=10.0,
        metadata=_doc("The leader stops acting if it could not renew for this long; below the lease duration."),
    )
    leader_retry_period_s: float = field(
        default=2.0,
        metadata=_doc("How often the Lease is renewed, or tried by a replica that does not hold it."),
    )

    def __post_init__(self) -> None:
        errors = []
        if self.scoring not in SCORERS:
            errors.append(f"scoring: unknown strategy {self.scoring!r}; known: {', '.join(sorted(SCORERS))}")
        if self.dynamic_allocator not in (Allocator.FIRST_FIT, Allocator.IDEAL):
            errors.append(f"dynamic_allocator: {self.dynamic_allocator!r} is not first-fit or ideal")
        if self.placement not in START_CHOOSERS:
            errors.append(f"placement: unknown {self.placement!r}; known: {', '.join(sorted(START_CHOOSERS))}")
        try:
            parse_mix(self.demand_prior)
        except ValueError as exc:
            errors.append(f"demand_prior: {exc}")
        if self.relayout not in ("off", "plan-only", "on"):
            errors.append(f"relayout: {self.relayout!r} is not off, plan-only or on")
        if self.relayout != "off" and not self.annotate:
            errors.append("relayout: needs annotate (it acts on pods whose verdict annotation is relayout)")
        if self.relayout_rebalance and self.relayout == "off":
            errors.append("relayout_rebalance: needs relayout plan-only or on (the re-layout controller does it)")
        if self.provision not in PROVISION_MODES:
            errors.append(f"provision: {self.provision!r} is not {', '.join(PROVISION_MODES)}")
        if self.provision_request_resources not in ("gpu", "mig"):
            errors.append(f"provision_request_resources: {self.provision_request_resources!r} is not gpu or mig")
        if self.provision != "off" and not self.provision_pools_file:
            errors.append("provision: needs provision_pools_file (which NodePools to provision, with what layout)")
        if self.provision != "off" and not self.annotate:
            errors.append("provision: needs annotate (it acts on pods whose verdict annotation is no-layout-fits)")
        if not 0 < self.leader_retry_period_s < self.leader_renew_deadline_s < self.leader_lease_duration_s:
            errors.append("leader election: need 0 < retry period < renew deadline < lease duration")
        if self.log_format not in ("text", "json"):
            errors.append(f"log_format: {self.log_format!r} is not text or json")
        if not 0 < self.port < 65536:
            errors.append(f"port: {self.port} is outside 1..65535")
        for name in (
            "max_body_bytes",
            "demand_half_life_s",
            "stale_after_s",
            "watch_timeout_s",
            "watch_read_timeout_s",
            "annotate_rate",
            "pending_scan_s",
            "relayout_interval_s",
            "relayout_timeout_s",
            "relayout_max_concurrent",
            "relayout_max_per_hour",
            "provision_interval_s",
            "provision_max_requests",
            "provision_protect_s",
            "provision_request_timeout_s",
            "tls_reload_interval_s",
            "read_timeout_s",
            "keepalive_timeout_s",
            "max_connections",
        ):
            if getattr(self, name) <= 0:
                errors.append(f"{name}: must be positive, not {getattr(self, name)}")
        for name in ("relayout_min_idle_s", "relayout_settle_s", "relayout_node_cooldown_s", "provision_debounce_s"):
            if getattr(self, name) < 0:
                errors.append(f"{name}: must not be negative, not {getattr(self, name)}")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            errors.append("tls_cert_file and tls_key_file: give both (a certificate and its key) or neither")
        if self.tls_client_ca_file and not self.tls_cert_file:
            errors.append("tls_client_ca_file: needs tls_cert_file and tls_key_file (client certificates need TLS)")
        bad_paths = [p for p in self.tls_open_paths.split(",") if p.strip() and not p.strip().startswith("/")]
        if bad_paths:
            errors.append(f"tls_open_paths: paths start with '/', not {', '.join(map(repr, bad_paths))}")
        if self.kubeconfig and self.snapshot:
            errors.append("kubeconfig and snapshot: give one source of the cluster view, not both")
        if errors:
            raise SettingsError("; ".join(errors))


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _convert(name: str, value: Any, source: str) -> Any:
    kind = FIELDS[name].type
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{value!r} is not a boolean")
        if kind == "int":
            if isinstance(value, bool):
                raise ValueError(f"{value!r} is not a number")
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError(f"{value!r} is not a number")
            return float(value)
        if value is None:
            return None
        return str(value)
    except ValueError as exc:
        raise SettingsError(f"{name} (from {source}): {exc}") from None


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults, then the config file, then ``MIG_EXTENDER_*`` variables, then ``overrides`` (flags)."""
    values: dict[str, Any] = {}
    if config_file:
        try:
            document = yaml.safe_load(pathlib.Path(config_file).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise SettingsError(f"config file {config_file}: {exc}") from None
        if not isinstance(document, Mapping):
            raise SettingsError(f"config file {config_file}: expected a mapping of settings")
        for key, value in document.items():
            name = str(key).replace("-", "_")
            if name not in FIELDS:
                raise SettingsError(f"config file {config_file}: unknown setting {key!r}")
            values[name] = _convert(name, value, config_file)
    env = os.environ if environ is None else environ
    for name in FIELDS:
        variable = ENV_PREFIX + name.upper()
        if variable in env:
            values[name] = _convert(name, env[variable], variable)
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _convert(name, value, "--" + name.replace("_", "-"))
    return Settings(**values)


def describe() -> str:
    """Markdown table of every setting, its default and why: the documentation is the code."""
    rows = ["| setting | env | default | why |", "|---|---|---|---|"]
    for f in dataclasses.fields(Settings):
        rows.append(
            f"| `--{f.name.replace('_', '-')}` | `{ENV_PREFIX}{f.name.upper()}` | `{f.default}` | {f.metadata['doc']} |"
        )
    return "\n".join(rows)
