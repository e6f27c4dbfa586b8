"""events.k8s.io/v1 Events as the extender writes them: one reporting controller, one note limit.

The API server rejects an Event whose note is longer than 1 KiB, or whose reportingInstance, action or
reason is longer than 128 bytes (``ValidateEventCreate`` in kubernetes/pkg/apis/core/validation/events.go;
Go measures strings in bytes, so these limits are UTF-8 bytes, not characters).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from .times import micro_time

REPORTING_CONTROLLER = "mig-extender.io/extender"
NOTE_LIMIT_BYTES = 1024
FIELD_LIMIT_BYTES = 128
"""reportingInstance, action and reason."""
_ELISION = "..."


def _head(text: str, limit: int) -> str:
    """The longest start of ``text`` that is at most ``limit`` UTF-8 bytes, never half a character."""
    return text.encode()[:limit].decode(errors="ignore")


def truncate(text: str, limit: int = NOTE_LIMIT_BYTES) -> str:
    """``text`` if it fits in ``limit`` UTF-8 bytes, else its start and its end around "...": the start
    names the pod's demand or the re-layout, the end says why."""
    data = text.encode()
    if len(data) <= limit:
        return text
    room = limit - len(_ELISION)
    tail = room // 2
    # errors="ignore" drops the bytes of a character cut in two, so the result only gets shorter.
    return data[: room - tail].decode(errors="ignore") + _ELISION + data[len(data) - tail :].decode(errors="ignore")


def pod_reference(namespace: str, name: str, uid: str) -> dict[str, str]:
    return {"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": name, "uid": uid}


def node_reference(name: str) -> dict[str, str]:
    return {"apiVersion": "v1", "kind": "Node", "name": name}


def event_namespace(regarding: Mapping[str, str]) -> str:
    """Events about cluster-scoped objects (nodes) live in the default namespace, as the kubelet's do."""
    return regarding.get("namespace") or "default"


def event_body(
    regarding: Mapping[str, str],
    reason: str,
    kind: str,
    note: str,
    *,
    action: str,
    instance: str,
    now: datetime.datetime,
) -> dict[str, Any]:
    """An Event about ``regarding`` (an object reference); ``kind`` is ``Normal`` or ``Warning``."""
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"generateName": f"{regarding['name'][:200]}-", "namespace": event_namespace(regarding)},
        "eventTime": micro_time(now),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": _head(instance, FIELD_LIMIT_BYTES),
        "action": _head(action, FIELD_LIMIT_BYTES),
        "reason": _head(reason, FIELD_LIMIT_BYTES),
        "type": kind,
        "note": truncate(note),
        "regarding": dict(regarding),
    }
