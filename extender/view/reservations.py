"""Room held for waiting pods by the defrag controller, read from the pods' own annotation and indexed by node.

The reservation lives on the waiting pod (``mig-extender.io/defrag-reservation``, JSON, docs/defrag.md), so it
survives a leader change and goes away with the pod. The view indexes the pending pods that carry one by node,
so that the filter's hot path asks one dictionary whether a candidate node holds any room (almost never).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..kube.names import DEFRAG_RESERVATION_ANNOTATION
from ..kube.times import parse_time
from .objects import PodInfo


class ReservationError(ValueError):
    """A reservation annotation that cannot be read; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Reservation:
    pod_uid: str
    pod: str
    """``namespace/name`` of the waiting pod, for reasons."""
    node: str
    gpus: tuple[int, ...]
    """The GPUs held; empty: the whole node (a DRA node, or a re-layout of the node)."""
    expires: datetime.datetime
    started: datetime.datetime
    residents: tuple[str, ...] = ()
    """Uids of the MIG pods on the node when it was made (not newcomers)."""

    def holds(self, now: datetime.datetime) -> bool:
        return now < self.expires

    def text(self) -> str:
        where = f"GPU {', '.join(map(str, self.gpus))} of node {self.node}" if self.gpus else f"node {self.node}"
        return f"{where} reserved for pod {self.pod} until {self.expires.strftime('%Y-%m-%dT%H:%M:%SZ')}"

    def to_json(self) -> str:
        return json.dumps(
            {
                "node": self.node,
                "gpus": list(self.gpus),
                "started": _stamp(self.started),
                "expires": _stamp(self.expires),
                "residents": list(self.residents),
            },
            separators=(",", ":"),
        )


def _stamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(data: Mapping[str, Any], key: str) -> datetime.datetime:
    value = data.get(key)
    moment = parse_time(value) if isinstance(value, str) else None
    if moment is None:
        raise ReservationError(f"{key} must be an RFC 3339 time, not {value!r}")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.UTC)


def parse_reservation(pod: PodInfo, text: str) -> Reservation:
    """The reservation in ``text`` (the annotation's value) for ``pod``; raises :class:`ReservationError`."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ReservationError(f"not JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise ReservationError("must be a JSON object")
    node = data.get("node")
    if not isinstance(node, str) or not node:
        raise ReservationError("node must be a node name")
    gpus = data.get("gpus", [])
    if not isinstance(gpus, list) or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in gpus):
        raise ReservationError("gpus must be a list of GPU indexes")
    residents = data.get("residents", [])
    if not isinstance(residents, list) or not all(isinstance(r, str) for r in residents):
        raise ReservationError("residents must be a list of pod uids")
    return Reservation(
        pod.uid,
        pod.key,
        node,
        tuple(sorted(set(gpus))),
        _time(data, "expires"),
        _time(data, "started"),
        tuple(residents),
    )


class ReservationIndex:
    """The reservations of pending pods, by node (the filter's question) and by pod uid (the view's updates)."""

    def __init__(self) -> None:
        self._by_pod: dict[str, Reservation] = {}
        self._by_node: dict[str, dict[str, Reservation]] = {}
        self.invalid: dict[str, str] = {}
        """Pod key -> why its reservation annotation could not be read (such a pod holds nothing)."""

    def __bool__(self) -> bool:
        return bool(self._by_pod)

    def on(self, node: str) -> Mapping[str, Reservation]:
        """The reservations on ``node`` by waiting pod uid (expired ones too: the reader has the clock)."""
        return self._by_node.get(node, _NONE)

    def of(self, pod_uid: str) -> Reservation | None:
        return self._by_pod.get(pod_uid)

    def all(self) -> Iterable[Reservation]:
        return self._by_pod.values()

    def track(self, pod: PodInfo) -> None:
        """The pod was added or changed: it holds room while it is pending with a readable reservation."""
        text = pod.annotations.get(DEFRAG_RESERVATION_ANNOTATION)
        if text is None and not self.invalid and pod.uid not in self._by_pod:
            return  # every pod event comes here: the common case costs two lookups
        self.forget(pod.uid, pod.key)
        if text is None or pod.node_name or not pod.is_active:
            return
        try:
            reservation = parse_reservation(pod, text)
        except ReservationError as exc:
            self.invalid[pod.key] = str(exc)
            return
        self._by_pod[pod.uid] = reservation
        self._by_node.setdefault(reservation.node, {})[pod.uid] = reservation

    def forget(self, pod_uid: str, key: str | None = None) -> None:
        if key is not None:
            self.invalid.pop(key, None)
        old = self._by_pod.pop(pod_uid, None)
        if old is None:
            return
        on_node = self._by_node.get(old.node)
        if on_node is not None:
            on_node.pop(pod_uid, None)
            if not on_node:
                del self._by_node[old.node]

    def rebuild(self, pods: Iterable[PodInfo]) -> None:
        self._by_pod.clear()
        self._by_node.clear()
        self.invalid.clear()
        for pod in pods:
            if DEFRAG_RESERVATION_ANNOTATION in pod.annotations:
                self.track(pod)


_NONE: Mapping[str, Reservation] = {}
