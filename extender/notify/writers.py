"""Writers of verdicts: the API server (merge patches and events.k8s.io/v1 Events), or the log."""

from __future__ import annotations

import datetime
import logging
import os
import socket
from collections.abc import Mapping
from typing import Any, cast

from kubernetes_asyncio import client

from ..view.objects import PodInfo
from ..view.store import ClusterView

log = logging.getLogger(__name__)

REPORTING_CONTROLLER = "mig-extender.io/extender"
NOTE_LIMIT = 1024  # events.k8s.io/v1 rejects longer notes


def _truncate(text: str, limit: int = NOTE_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit // 2 - 2] + "..." + text[-(limit // 2 - 2) :]


class KubeWriter:
    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.events = client.EventsV1Api(api)
        self.instance = _truncate(os.environ.get("POD_NAME") or socket.gethostname(), 128)

    async def patch_annotations(self, pod: PodInfo, annotations: Mapping[str, str | None]) -> None:
        body = {"metadata": {"annotations": dict(annotations)}}
        # A dict body would go out as a strategic merge patch; force RFC 7386 so that null deletes a key.
        response = await self.core.patch_namespaced_pod(  # type: ignore[call-arg]  # _content_type is in **kwargs
            pod.name,
            pod.namespace,
            cast(Any, body),
            _content_type="application/merge-patch+json",
            _preload_content=False,
            _request_timeout=10,
        )
        await _raise_for_status(response, f"patch pod {pod.key}")

    async def post_event(self, pod: PodInfo, reason: str, kind: str, message: str) -> None:
        now = datetime.datetime.now(datetime.UTC)
        body: dict[str, Any] = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"generateName": f"{pod.name[:200]}-", "namespace": pod.namespace},
            # MicroTime: exactly six fraction digits, or the API server rejects the event.
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": self.instance,
            "action": "Scheduling",
            "reason": reason,
            "type": kind,
            "note": _truncate(message),
            "regarding": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod.name,
                "namespace": pod.namespace,
                "uid": pod.uid,
            },
        }
        response = await self.events.create_namespaced_event(
            pod.namespace, cast(Any, body), _preload_content=False, _request_timeout=10
        )
        await _raise_for_status(response, f"event on pod {pod.key}")


async def _raise_for_status(response: Any, what: str) -> None:
    status = response.status
    if not 200 <= status < 300:
        text = (await response.read())[:300].decode(errors="replace")
        response.release()
        raise RuntimeError(f"{what}: HTTP {status}: {text}")
    response.release()


class LogWriter:
    """For snapshots: no API server, so verdicts are logged and applied to the view's copy of the pod."""

    def __init__(self, view: ClusterView) -> None:
        self.view = view
        self.patches: list[tuple[str, dict[str, str | None]]] = []
        self.events: list[tuple[str, str, str]] = []

    async def patch_annotations(self, pod: PodInfo, annotations: Mapping[str, str | None]) -> None:
        self.patches.append((pod.key, dict(annotations)))
        self.view.annotate(pod.uid, annotations)
        log.info("verdict for %s: %s", pod.key, {k: v for k, v in annotations.items() if v is not None} or "cleared")

    async def post_event(self, pod: PodInfo, reason: str, kind: str, message: str) -> None:
        self.events.append((pod.key, reason, message))
        log.info("event %s %s on %s: %s", kind, reason, pod.key, message)
