"""The Kubernetes API calls the extender makes besides list+watch, as raw JSON; protocols for test doubles.

Protocols let unit tests put an in-memory API in place of :class:`KubeApi`.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, cast

from kubernetes_asyncio import client

from .client import ApiClient, discard, identity, read_json
from .errors import NotFound
from .events import event_body, event_namespace

TIMEOUT_S = 10
MERGE_PATCH = "application/merge-patch+json"
"""RFC 7386, so that null deletes a key; a dict body would otherwise go out as a strategic merge patch."""


async def _merge_patch(call: Callable[..., Awaitable[Any]], *target: str, patch: Mapping[str, Any]) -> Any:
    """``call`` (a kubernetes-asyncio patch method) with an RFC 7386 body; the raw response."""
    return await call(
        *target, cast(Any, dict(patch)), _content_type=MERGE_PATCH, _preload_content=False, _request_timeout=TIMEOUT_S
    )


async def _read_unless_missing(response: Any, what: str) -> Any:
    """The parsed body, or None for a 404 (an object, or a CRD, that does not exist)."""
    try:
        return await read_json(response, what)
    except NotFound:
        return None


class LeaseApi(Protocol):
    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def replace_lease(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]: ...


class BindingApi(Protocol):
    async def bind_pod(self, namespace: str, name: str, uid: str, node: str) -> None:
        """Bind the pod to the node (a ``pods/binding`` subresource, as kube-scheduler's DefaultBinder makes)."""


class RouteApi(Protocol):
    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...

    async def patch_pod_metadata(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """An RFC 7386 merge patch of a pod's labels and annotations; the pod as the API server stored it."""


class EventApi(Protocol):
    async def post_event(self, regarding: Mapping[str, str], reason: str, kind: str, note: str, action: str) -> None:
        """An events.k8s.io/v1 Event about ``regarding`` (see :func:`extender.kube.events.event_body`)."""
        ...


class ClusterApi(EventApi, Protocol):
    """What the re-layout controller reads and writes, besides its cluster view."""

    async def get_node(self, name: str) -> dict[str, Any]: ...

    async def patch_node(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """An RFC 7386 merge patch; with ``metadata.resourceVersion`` in it, a 409 if the node changed."""
        ...

    async def pods_on_node(self, name: str) -> list[dict[str, Any]]: ...

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def replace_config_map(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]: ...


class CapacityApi(EventApi, Protocol):
    """What the provisioning loop writes: its capacity-request pods, new nodes' guard, Events."""

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...

    async def create_pod(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def delete_pod(self, namespace: str, name: str) -> None:
        """Gone already is fine."""
        ...

    async def patch_pod_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]: ...

    async def list_node_claims(self) -> list[dict[str, Any]]:
        """Karpenter's NodeClaims (karpenter.sh/v1); none when the CRD is not installed."""
        ...

    async def list_events(self, namespace: str, field_selector: str) -> list[dict[str, Any]]:
        """core/v1 Events of a namespace (Karpenter's recorder writes those), by field selector."""
        ...

    async def list_node_pools(self) -> list[dict[str, Any]]:
        """Karpenter's NodePools (karpenter.sh/v1); none when the CRD is not installed."""
        ...

    async def patch_pod(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None: ...

    async def patch_node(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any]: ...

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None: ...


class DefragApi(EventApi, Protocol):
    """What the defragmentation controller reads and writes, besides its cluster view."""

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod as the API server has it now; None if there is none of that name."""
        ...

    async def patch_pod_metadata(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]: ...

    async def evict_pod(self, namespace: str, name: str, uid: str, grace_period_s: int | None) -> None:
        """A policy/v1 Eviction of the pod with that uid (a precondition): the API server enforces the pod's
        PodDisruptionBudget. An ``ApiError`` with status 429: a budget forbids it now; 404 or 409: no such pod (any
        more, or another pod under the name)."""
        ...

    async def list_pod_disruption_budgets(self) -> list[dict[str, Any]]:
        """Every policy/v1 PodDisruptionBudget of the cluster."""
        ...

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...


class KubeApi:
    """:class:`LeaseApi`, :class:`ClusterApi`, :class:`CapacityApi`, :class:`BindingApi`, :class:`RouteApi`,
    :class:`DefragApi` and pod annotation patches, against a real API server."""

    def __init__(self, api: ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.events = client.EventsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.policy = client.PolicyV1Api(api)
        self.instance = identity()

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        response = await self.coordination.read_namespaced_lease(
            name, namespace, _preload_content=False, _request_timeout=TIMEOUT_S
        )
        return cast(dict[str, Any] | None, await _read_unless_missing(response, f"get lease {namespace}/{name}"))

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = await self.coordination.create_namespaced_lease(
            namespace, cast(Any, dict(body)), _preload_content=False, _request_timeout=TIMEOUT_S
        )
        return cast(dict[str, Any], await read_json(response, f"create lease in {namespace}"))

    async def replace_lease(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = await self.coordination.replace_namespaced_lease(
            name, namespace, cast(Any, dict(body)), _preload_content=False, _request_timeout=TIMEOUT_S
        )
        return cast(dict[str, Any], await read_json(response, f"update lease {namespace}/{name}"))

    async def get_node(self, name: str) -> dict[str, Any]:
        response = await self.core.read_node(name, _preload_content=False, _request_timeout=TIMEOUT_S)
        return cast(dict[str, Any], await read_json(response, f"get node {name}"))

    async def patch_node(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        response = await _merge_patch(self.core.patch_node, name, patch=patch)
        return cast(dict[str, Any], await read_json(response, f"patch node {name}"))

    async def pods_on_node(self, name: str) -> list[dict[str, Any]]:
        response = await self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={name}", _preload_content=False, _request_timeout=TIMEOUT_S
        )
        body = await read_json(response, f"list pods on node {name}")
        return list(body.get("items") or [])

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        response = await self.core.read_namespaced_config_map(
            name, namespace, _preload_content=False, _request_timeout=TIMEOUT_S
        )
        return cast(dict[str, Any] | None, await _read_unless_missing(response, f"get configmap {namespace}/{name}"))

    async def replace_config_map(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = await self.core.replace_namespaced_config_map(
            name, namespace, cast(Any, dict(body)), _preload_content=False, _request_timeout=TIMEOUT_S
        )
        return cast(dict[str, Any], await read_json(response, f"update configmap {namespace}/{name}"))

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        response = await self.core.list_namespaced_pod(
            namespace, label_selector=label_selector, _preload_content=False, _request_timeout=TIMEOUT_S
        )
        body = await read_json(response, f"list pods {label_selector} in {namespace}")
        return list(body.get("items") or [])

    async def create_pod(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = await self.core.create_namespaced_pod(
            namespace, cast(Any, dict(body)), _preload_content=False, _request_timeout=TIMEOUT_S
        )
        return cast(dict[str, Any], await read_json(response, f"create pod in {namespace}"))

    async def delete_pod(self, namespace: str, name: str) -> None:
        response = await self.core.delete_namespaced_pod(
            name, namespace, grace_period_seconds=0, _preload_content=False, _request_timeout=TIMEOUT_S
        )
        await _read_unless_missing(response, f"delete pod {namespace}/{name}")

    async def patch_pod(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        """An RFC 7386 merge patch of a pod (its annotations: null deletes a key); the answer is not read."""
        response = await _merge_patch(self.core.patch_namespaced_pod, name, namespace, patch=patch)
        await discard(response, f"patch pod {namespace}/{name}")

    async def patch_pod_metadata(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        response = await _merge_patch(self.core.patch_namespaced_pod, name, namespace, patch=patch)
        return cast(dict[str, Any], await read_json(response, f"patch pod {namespace}/{name}"))

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        response = await self.core.read_namespaced_pod(
            name, namespace, _preload_content=False, _request_timeout=TIMEOUT_S
        )
        return cast(dict[str, Any] | None, await _read_unless_missing(response, f"get pod {namespace}/{name}"))

    async def evict_pod(self, namespace: str, name: str, uid: str, grace_period_s: int | None) -> None:
        options: dict[str, Any] = {"preconditions": {"uid": uid}}
        if grace_period_s is not None:
            options["gracePeriodSeconds"] = grace_period_s
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
            "deleteOptions": options,
        }
        response = await self.core.create_namespaced_pod_eviction(
            name, namespace, cast(Any, body), _preload_content=False, _request_timeout=TIMEOUT_S
        )
        await discard(response, f"evict pod {namespace}/{name}")

    async def list_pod_disruption_budgets(self) -> list[dict[str, Any]]:
        response = await self.policy.list_pod_disruption_budget_for_all_namespaces(
            _preload_content=False, _request_timeout=TIMEOUT_S
        )
        body = await read_json(response, "list poddisruptionbudgets")
        return list((body or {}).get("items") or [])

    async def bind_pod(self, namespace: str, name: str, uid: str, node: str) -> None:
        """POST ``pods/<name>/binding``; ``uid`` (if set) is a precondition: a pod re-created under the same name
        since is not bound (409). The answer is not read."""
        metadata: dict[str, str] = {"name": name, "namespace": namespace}
        if uid:
            metadata["uid"] = uid
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": metadata, "target": {"kind": "Node", "name": node}}
        response = await self.core.create_namespaced_pod_binding(
            name, namespace, cast(Any, body), _preload_content=False, _request_timeout=TIMEOUT_S
        )
        await discard(response, f"bind pod {namespace}/{name} to node {node}")

    async def patch_pod_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        response = await _merge_patch(self.core.patch_namespaced_pod_status, name, namespace, patch=patch)
        return cast(dict[str, Any], await read_json(response, f"patch status of pod {namespace}/{name}"))

    async def list_node_claims(self) -> list[dict[str, Any]]:
        response = await self.custom.list_cluster_custom_object(
            "karpenter.sh", "v1", "nodeclaims", _preload_content=False, _request_timeout=TIMEOUT_S
        )
        body = await _read_unless_missing(response, "list nodeclaims")
        return list((body or {}).get("items") or [])

    async def list_node_pools(self) -> list[dict[str, Any]]:
        response = await self.custom.list_cluster_custom_object(
            "karpenter.sh", "v1", "nodepools", _preload_content=False, _request_timeout=TIMEOUT_S
        )
        body = await _read_unless_missing(response, "list nodepools")
        return list((body or {}).get("items") or [])

    async def list_events(self, namespace: str, field_selector: str) -> list[dict[str, Any]]:
        response = await self.core.list_namespaced_event(
            namespace, field_selector=field_selector, _preload_content=False, _request_timeout=TIMEOUT_S
        )
        body = await read_json(response, f"list events {field_selector} in {namespace}")
        return list(body.get("items") or [])

    async def post_event(self, regarding: Mapping[str, str], reason: str, kind: str, note: str, action: str) -> None:
        now = datetime.datetime.now(datetime.UTC)
        body = event_body(regarding, reason, kind, note, action=action, instance=self.instance, now=now)
        response = await self.events.create_namespaced_event(
            event_namespace(regarding), cast(Any, body), _preload_content=False, _request_timeout=TIMEOUT_S
        )
        await read_json(response, f"event on {regarding.get('kind')} {regarding['name']}")
