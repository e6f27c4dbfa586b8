"""Writers of verdicts: the API server (merge patches and events.k8s.io/v1 Events), or the log."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ..kube.api import KubeApi
from ..kube.client import ApiClient
from ..kube.events import pod_reference
from ..view.objects import PodInfo
from ..view.store import ClusterView

log = logging.getLogger(__name__)

EVENT_ACTION = "Scheduling"


class KubeWriter:
    def __init__(self, api: ApiClient) -> None:
        self.api = KubeApi(api)

    async def patch_annotations(self, pod: PodInfo, annotations: Mapping[str, str | None]) -> None:
        await self.api.patch_pod(pod.namespace, pod.name, {"metadata": {"annotations": dict(annotations)}})

    async def post_event(self, pod: PodInfo, reason: str, kind: str, message: str) -> None:
        regarding = pod_reference(pod.namespace, pod.name, pod.uid)
        await self.api.post_event(regarding, reason, kind, message, EVENT_ACTION)


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
