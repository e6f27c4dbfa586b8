"""The few Kubernetes API calls the controllers make, as raw JSON through kubernetes-asyncio.

Raw bodies (``_preload_content=False``) avoid the client's model objects, whose datetime serialisation
drops the microseconds a Lease's MicroTime needs, and keep what is sent exactly what is written here.
Protocols let unit tests put an in-memory API in their place.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, cast

import orjson
from kubernetes_asyncio import client

log = logging.getLogger(__name__)

TIMEOUT_S = 10
REPORTING_CONTROLLER = "mig-extender.io/controllers"
NOTE_LIMIT = 1024


async def reconcile_forever(
    reconcile: Callable[[], Awaitable[None]], interval_s: float, on_error: Callable[[], None], what: str
) -> None:
    """Call ``reconcile`` every ``interval_s``; one that fails is logged and counted, and the next retries."""
    while True:
        try:
            await reconcile()
        except asyncio.CancelledError:
            raise
        except Exception:  # one bad reconcile must not stop the controller
            on_error()
            log.exception("%s reconcile failed", what)
        await asyncio.sleep(interval_s)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Conflict(ApiError):
    """HTTP 409: the object changed since it was read (or already exists); read again and retry."""


class NotFound(ApiError):
    """HTTP 404."""


def identity() -> str:
    """This replica's name: the pod name (downward API ``POD_NAME``), else the host name."""
    return os.environ.get("POD_NAME") or socket.gethostname()


def micro_time(moment: datetime.datetime) -> str:
    """A MicroTime: exactly six fraction digits, or the API server rejects it."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


async def _body(response: Any, what: str) -> Any:
    status = response.status
    data = await response.read()
    response.release()
    if 200 <= status < 300:
        return orjson.loads(data) if data else None
    text = data[:300].decode(errors="replace")
    kind = {404: NotFound, 409: Conflict}.get(status, ApiError)
    raise kind(status, f"{what}: {text}")


class LeaseApi(Protocol):
    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def replace_lease(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]: ...


class ClusterApi(Protocol):
    """What the re-layout controller reads and writes, besides its cluster view."""

    async def get_node(self, name: str) -> dict[str, Any]: ...

    async def patch_node(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """An RFC 7386 merge patch; with ``metadata.resourceVersion`` in it, a 409 if the node changed."""
        ...

    async def pods_on_node(self, name: str) -> list[dict[str, Any]]: ...

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def replace_config_map(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def post_event(
        self, regarding: Mapping[str, str], reason: str, kind: str, note: str, action: str = "Relayout"
    ) -> None: ...


class CapacityApi(Protocol):
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

    async def patch_node(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any]: ...

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def post_event(
        self, regarding: Mapping[str, str], reason: str, kind: str, note: str, action: str = "Relayout"
    ) -> None: ...


class KubeApi:
    """:class:`LeaseApi`, :class:`ClusterApi` and :class:`CapacityApi` against a real API server."""

    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.events = client.EventsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.instance = identity()[:128]

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        response = await self.coordination.read_namespaced_lease(
            name, namespace, _preload_content=False, _request_timeout=TIMEOUT_S
        )
        try:
            return cast(dict[str, Any], await _body(response, f"get lease {namespace}/{name}"))
        except NotFound:
            return None

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = await self.coordination.create_namespaced_lease(
            namespace, cast(Any, dict(body)), _preload_content=False, _request_timeout=TIMEOUT_S
        )
        return cast(dict[str, Any], await _body(response, f"create lease in {namespace}"))

    async def replace_lease(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = await self.coordination.replace_namespaced_lease(
            name, namespace, cast(Any, dict(body)), _preload_content=False, _request_timeout=TIMEOUT_S
        )
        return cast(dict[str, Any], await _body(response, f"update lease {namespace}/{name}"))

    async def get_node(self, name: str) -> dict[str, Any]:
        response = await self.core.read_node(name, _preload_content=False, _request_timeout=TIMEOUT_S)
        return cast(dict[str, Any], await _body(response, f"get node {name}"))

    async def patch_node(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        # A dict body would go out as a strategic merge patch; RFC 7386 so that null deletes a key.
        response = await self.core.patch_node(  # type: ignore[call-arg]  # _content_type is in **kwargs
            name,
            cast(Any, dict(patch)),
            _content_type="application/merge-patch+json",
            _preload_content=False,
            _request_timeout=TIMEOUT_S,
        )
        return cast(dict[str, Any], await _body(response, f"patch node {name}"))

    async def pods_on_node(self, name: str) -> list[dict[str, Any]]:
        response = await self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={name}", _preload_content=False, _request_timeout=TIMEOUT_S
        )
        body = await _body(response, f"list pods on node {name}")
        return list(body.get("items") or [])

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        response = await self.core.read_namespaced_config_map(
            name, namespace, _preload_content=False, _request_timeout=TIMEOUT_S
        )
        try:
            return cast(dict[str, Any], await _body(response, f"get configmap {namespace}/{name}"))
        except NotFound:
            return None

    async def replace_config_map(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = await self.core.replace_namespaced_config_map(
            name, namespace, cast(Any, dict(body)), _preload_content=False, _request_timeout=TIMEOUT_S
        )
        return cast(dict[str, Any], await _body(response, f"update configmap {namespace}/{name}"))

    async def list_pods(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        response = await self.core.list_namespaced_pod(
            namespace, label_selector=label_selector, _preload_content=False, _request_timeout=TIMEOUT_S
        )
        body = await _body(response, f"list pods {label_selector} in {namespace}")
        return list(body.get("items") or [])

    async def create_pod(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = await self.core.create_namespaced_pod(
            namespace, cast(Any, dict(body)), _preload_content=False, _request_timeout=TIMEOUT_S
        )
        return cast(dict[str, Any], await _body(response, f"create pod in {namespace}"))

    async def delete_pod(self, namespace: str, name: str) -> None:
        response = await self.core.delete_namespaced_pod(
            name, namespace, grace_period_seconds=0, _preload_content=False, _request_timeout=TIMEOUT_S
        )
        with contextlib.suppress(NotFound):
            await _body(response, f"delete pod {namespace}/{name}")

    async def patch_pod_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        response = await self.core.patch_namespaced_pod_status(  # type: ignore[call-arg]  # _content_type in **kwargs
            name,
            namespace,
            cast(Any, dict(patch)),
            _content_type="application/merge-patch+json",
            _preload_content=False,
            _request_timeout=TIMEOUT_S,
        )
        return cast(dict[str, Any], await _body(response, f"patch status of pod {namespace}/{name}"))

    async def list_node_claims(self) -> list[dict[str, Any]]:
        response = await self.custom.list_cluster_custom_object(
            "karpenter.sh", "v1", "nodeclaims", _preload_content=False, _request_timeout=TIMEOUT_S
        )
        try:
            body = await _body(response, "list nodeclaims")
        except NotFound:
            return []
        return list(body.get("items") or [])

    async def post_event(
        self, regarding: Mapping[str, str], reason: str, kind: str, note: str, action: str = "Relayout"
    ) -> None:
        # Events about cluster-scoped objects (nodes) live in the default namespace, as the kubelet's do.
        namespace = regarding.get("namespace") or "default"
        if len(note) > NOTE_LIMIT:
            note = note[: NOTE_LIMIT - 3] + "..."
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"generateName": f"{regarding['name'][:200]}-", "namespace": namespace},
            "eventTime": micro_time(datetime.datetime.now(datetime.UTC)),
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": self.instance,
            "action": action,
            "reason": reason,
            "type": kind,
            "note": note,
            "regarding": dict(regarding),
        }
        response = await self.events.create_namespaced_event(
            namespace, cast(Any, body), _preload_content=False, _request_timeout=TIMEOUT_S
        )
        await _body(response, f"event on {regarding.get('kind')} {regarding['name']}")
