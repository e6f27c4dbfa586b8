"""An in-memory API server for the controllers: resourceVersions, merge patches, 409s, and a view it feeds."""

from __future__ import annotations

import copy
import datetime
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from extender.kube.errors import Conflict, NotFound
from extender.model.catalog import model_named
from extender.model.migparted import DEFAULT_CONFIG, default_config_document
from extender.view.store import ClusterView, Kind

H100 = "NVIDIA-H100-80GB-HBM3"


def merge(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            target[key] = merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def counts_for(product: str, config: str, gpus: int = 1) -> dict[str, int]:
    model = model_named(product)
    counts: dict[str, int] = {}
    for index in range(gpus):
        spec = DEFAULT_CONFIG.resolve(config, model, index)
        assert spec is not None
        for placement in spec.layout(model):
            counts[placement.profile.resource_name] = counts.get(placement.profile.resource_name, 0) + 1
    return counts


class FakeApi:
    def __init__(self, view: ClusterView | None = None) -> None:
        self.view = view
        self.version = 1
        self.nodes: dict[str, dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.config_maps: dict[tuple[str, str], dict[str, Any]] = {}
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str, str, str, str]] = []
        self.conflicts = 0
        """The next this many writes of a ConfigMap answer 409."""
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.down = False
        self.namespaced_pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.node_claims: list[dict[str, Any]] = []
        """Pods the controllers create (capacity requests)."""
        self.node_pools: list[dict[str, Any]] = []
        """Karpenter NodePools, for list_node_pools."""
        self.core_events: list[dict[str, Any]] = []
        """core/v1 Events written by others (Karpenter), for list_events."""
        self.pod_patches: list[tuple[str, str, dict[str, Any]]] = []
        """Merge patches of pods that are not capacity requests (namespace, name, patch)."""
        self.now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
        """creationTimestamp of created objects; tests move it with their clock."""

    def _bump(self, obj: dict[str, Any]) -> None:
        self.version += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.version)

    def _check(self, current: Mapping[str, Any], body: Mapping[str, Any]) -> None:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
            raise Conflict(409, "the object has been modified")

    # --- test set-up --------------------------------------------------------------------------------------

    def add_node(self, name: str, config: str = "all-3g.40gb", gpus: int = 1, annotation: str | None = None) -> None:
        node: dict[str, Any] = {
            "metadata": {
                "name": name,
                "labels": {
                    "nvidia.com/gpu.product": H100,
                    "nvidia.com/gpu.count": str(gpus),
                    "nvidia.com/mig.config": config,
                    "nvidia.com/mig.config.state": "success",
                },
                "annotations": {},
            },
            "spec": {},
            "status": {"allocatable": {k: str(v) for k, v in counts_for(H100, config, gpus).items()}},
        }
        if annotation is not None:
            node["metadata"]["annotations"]["mig-extender.io/gpus"] = annotation
        self._bump(node)
        self.nodes[name] = node
        self._sync_node(name)

    def add_config_map(
        self,
        namespace: str = "gpu-operator",
        name: str = "default-mig-parted-config",
        document: Mapping[str, Any] | None = None,
    ) -> None:
        """The mig-parted ConfigMap: ``document``, by default the GPU Operator's default configs."""
        body = {
            "metadata": {"name": name, "namespace": namespace},
            "data": {"config.yaml": yaml.safe_dump(dict(document or default_config_document()), sort_keys=False)},
        }
        self._bump(body)
        self.config_maps[(namespace, name)] = body
        self._sync_config()

    def set_node(self, name: str, patch: Mapping[str, Any]) -> None:
        """A change by someone else (MIG Manager, the device plugin)."""
        merge(self.nodes[name], patch)
        self._bump(self.nodes[name])
        self._sync_node(name)

    def bind(self, pod: dict[str, Any], node: str) -> None:
        pod = copy.deepcopy(pod)
        pod["spec"]["nodeName"] = node
        self.pods.append(pod)
        if self.view is not None:
            self.view.apply(Kind.PODS, "MODIFIED", pod)

    def _sync_node(self, name: str) -> None:
        if self.view is not None:
            self.view.apply(Kind.NODES, "MODIFIED", copy.deepcopy(self.nodes[name]))

    def _sync_config(self) -> None:
        if self.view is not None:
            for (_namespace, _name), body in self.config_maps.items():
                self.view.apply(Kind.CONFIG, "MODIFIED", {**copy.deepcopy(body), "kind": "ConfigMap"})

    def configs(self) -> dict[str, Any]:
        (body,) = self.config_maps.values()
        return dict(yaml.safe_load(body["data"]["config.yaml"])["mig-configs"])

    # --- ClusterApi ---------------------------------------------------------------------------------------

    async def get_node(self, name: str) -> dict[str, Any]:
        if name not in self.nodes:
            raise NotFound(404, name)
        return copy.deepcopy(self.nodes[name])

    async def patch_node(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        current = self.nodes[name]
        self._check(current, patch)
        body = copy.deepcopy(dict(patch))
        body.get("metadata", {}).pop("resourceVersion", None)
        self.patches.append((name, body))
        merge(current, body)
        self._bump(current)
        self._sync_node(name)
        return copy.deepcopy(current)

    async def pods_on_node(self, name: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(p) for p in self.pods if p["spec"].get("nodeName") == name]

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.config_maps.get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def replace_config_map(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        current = self.config_maps[(namespace, name)]
        if self.conflicts:
            self.conflicts -= 1
            self._bump(current)  # someone else wrote meanwhile
            raise Conflict(409, "the object has been modified")
        self._check(current, body)
        replaced = copy.deepcopy(dict(body))
        self._bump(replaced)
        self.config_maps[(namespace, name)] = replaced
        self._sync_config()
        return copy.deepcopy(replaced)

    async def post_event(
        self, regarding: Mapping[str, str], reason: str, kind: str, note: str, action: str = "Relayout"
    ) -> None:
        self.events.append((regarding["kind"], regarding["name"], reason, kind, note))

    # --- CapacityApi --------------------------------------------------------------------------------------

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        assert "=" not in label_selector and "," not in label_selector, "only 'key exists' selectors"
        return [
            copy.deepcopy(p)
            for (ns, _), p in sorted(self.namespaced_pods.items())
            if ns == namespace and label_selector in (p["metadata"].get("labels") or {})
        ]

    async def create_pod(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        created = copy.deepcopy(dict(body))
        metadata = created["metadata"]
        metadata.setdefault("name", f"{metadata.pop('generateName')}{len(self.namespaced_pods):05d}")
        metadata["namespace"] = namespace
        metadata["uid"] = f"uid-{metadata['name']}"
        metadata["creationTimestamp"] = self.now.strftime("%Y-%m-%dT%H:%M:%SZ")
        created.setdefault("status", {"phase": "Pending"})
        self._bump(created)
        self.namespaced_pods[(namespace, metadata["name"])] = created
        self._sync_pod(created, "ADDED")
        return copy.deepcopy(created)

    async def delete_pod(self, namespace: str, name: str) -> None:
        gone = self.namespaced_pods.pop((namespace, name), None)
        if gone is not None:
            self._sync_pod(gone, "DELETED")

    async def patch_pod_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        if (namespace, name) not in self.namespaced_pods:
            raise NotFound(404, name)
        current = self.namespaced_pods[(namespace, name)]
        merge(current, {"status": patch["status"]})
        self._bump(current)
        self._sync_pod(current, "MODIFIED")
        return copy.deepcopy(current)

    async def list_node_claims(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.node_claims)

    async def list_node_pools(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.node_pools)

    async def list_events(self, namespace: str, field_selector: str) -> list[dict[str, Any]]:
        """core/v1 Events of ``namespace`` matching a field selector of ``key=value`` terms."""
        terms = dict(term.split("=", 1) for term in field_selector.split(","))
        fields: dict[str, Callable[[dict[str, Any]], Any]] = {
            "involvedObject.uid": lambda e: e["involvedObject"].get("uid"),
            "involvedObject.name": lambda e: e["involvedObject"].get("name"),
            "source": lambda e: (e.get("source") or {}).get("component"),
            "reason": lambda e: e.get("reason"),
        }
        return [
            copy.deepcopy(e)
            for e in self.core_events
            if e["metadata"]["namespace"] == namespace and all(fields[k](e) == v for k, v in terms.items())
        ]

    async def patch_pod(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        if (namespace, name) in self.namespaced_pods:
            merge(self.namespaced_pods[(namespace, name)], patch)
            return
        self.pod_patches.append((namespace, name, copy.deepcopy(dict(patch))))

    def _sync_pod(self, pod: dict[str, Any], event: str) -> None:
        if self.view is not None:
            self.view.apply(Kind.PODS, event, copy.deepcopy(pod))

    # --- LeaseApi -----------------------------------------------------------------------------------------

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.down:
            raise OSError("connection refused")
        found = self.leases.get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        key = (namespace, body["metadata"]["name"])
        if key in self.leases:
            raise Conflict(409, "already exists")
        created = copy.deepcopy(dict(body))
        self._bump(created)
        self.leases[key] = created
        return copy.deepcopy(created)

    async def replace_lease(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if self.down:
            raise OSError("connection refused")
        current = self.leases[(namespace, name)]
        self._check(current, body)
        replaced = copy.deepcopy(dict(body))
        self._bump(replaced)
        self.leases[(namespace, name)] = replaced
        return copy.deepcopy(replaced)
