"""List+watch of Nodes, Pods, the mig-parted ConfigMap and the ``resource.k8s.io/v1`` kinds (ResourceSlices,
ResourceClaims, ResourceClaimTemplates, DeviceClasses) through ``extender.kube``, raw JSON throughout.

Follows client-go's reflector (kubernetes/client-go ``tools/cache/reflector.go``) and kopf's watcher
(nolar/kopf ``kopf/_cogs/clients/watching.py``):
- list, replace the store, then watch from the list's resourceVersion with bookmarks;
- 410 Gone (expired resourceVersion) means re-list, which replaces the store (after a backoff when the
  version a list has just returned is refused: re-listing at once would only spin);
- a client-side read timeout above the bookmark interval detects a stream that went silent; the stream is
  then re-watched at once (a quiet cluster looks the same: after an API server starts, minutes can pass
  without a bookmark), and only a re-watch that fails backs off;
- an accepted watch counts as a good sync for readiness, as a list, an event or a bookmark do;
- a server-side timeout, randomised, makes every watch end and restart now and then;
- failures back off exponentially with jitter (``extender.kube.retry.Backoff``: 0.8 s doubling to 30 s,
  reset after 2 minutes of health), and a watch that ends at once without events counts as a failure;
- the loop never gives up; readiness reports a stale view meanwhile;
- a DRA kind the API server does not serve (404: a cluster before 1.34, or with the API group off) or that
  the extender may not read (403: RBAC not updated) is held as none and in sync, logged once, and asked for
  again with the same backoff, so that such a cluster keeps its answers for everything else.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp
import orjson

from ..kube.client import (
    ApiClient,
    Collection,
    claim_template_collection,
    config_map_collection,
    device_class_collection,
    node_collection,
    pod_collection,
    resource_claim_collection,
    resource_slice_collection,
)
from ..kube.errors import ApiError, Gone, NotFound, error_for
from ..kube.retry import Backoff
from .store import DRA_KINDS, ClusterView, Kind

log = logging.getLogger(__name__)

LIST_READ_TIMEOUT_S = 60.0


class WatchObserver(Protocol):
    """What the watch reports, for metrics; the view layer does not import a metrics library."""

    def restarted(self, kind: Kind, reason: str) -> None: ...

    def relisted(self, kind: Kind) -> None: ...


class _NullObserver:
    def restarted(self, kind: Kind, reason: str) -> None:
        pass

    def relisted(self, kind: Kind) -> None:
        pass


class SilentStream(Exception):
    """An accepted watch delivered nothing for the read timeout: re-watch from the same resourceVersion.

    A stalled connection and a quiet cluster look alike from here; the next watch request tells them
    apart, as it is either accepted or fails (and then backs off).
    """


class Reflector:
    """Keeps one kind of object in the view in step with the API server, forever."""

    def __init__(
        self,
        view: ClusterView,
        kind: Kind,
        collection: Collection,
        *,
        timeout_s: int = 300,
        read_timeout_s: float = 90.0,
        observer: WatchObserver | None = None,
        page_size: int = 500,
    ) -> None:
        self.view = view
        self.kind = kind
        self.collection = collection
        self.timeout_s = timeout_s
        self.read_timeout_s = read_timeout_s
        self.observer = observer or _NullObserver()
        self.resource_version: str | None = None
        self.page_size = page_size
        self._fresh_list = False
        """The resourceVersion came from a list and no watch has served from it yet (see :meth:`watch`)."""
        self.optional = kind in DRA_KINDS
        """A kind some clusters do not serve (or let the extender read): then it is held as none."""
        self._absence_logged = False

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            try:
                if self.resource_version is None:
                    await self.list()
                started = time.monotonic()
                events = await self.watch()
                if events == 0 and time.monotonic() - started < 1.0:
                    raise ApiError(0, "watch ended at once without events")
                backoff.healthy()
            except SilentStream as exc:
                log.info("%s: nothing for %.0fs on the watch, re-watching (%s)", self.kind, self.read_timeout_s, exc)
                self.observer.restarted(self.kind, str(exc))
            except Gone:
                log.info("%s: resourceVersion expired, re-listing", self.kind)
                self.observer.restarted(self.kind, "gone")
                # Expired after a working watch: re-list at once. Gone for the version a list just returned
                # (or from the list itself) would only repeat: back off, or list+watch would spin.
                rejected_at_once = self.resource_version is None or self._fresh_list
                self.resource_version = None
                if rejected_at_once:
                    await backoff.wait()
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                if self._is_absence(exc):
                    self._absent(exc)
                else:
                    log.warning("%s: watch failed (%s: %s); retrying", self.kind, type(exc).__name__, exc)
                    self.observer.restarted(self.kind, type(exc).__name__)
                await backoff.wait()
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
                reason = type(exc).__name__
                log.warning("%s: watch failed (%s: %s); retrying", self.kind, reason, exc)
                self.observer.restarted(self.kind, reason)
                await backoff.wait()

    def _is_absence(self, exc: ApiError) -> bool:
        return self.optional and (isinstance(exc, NotFound) or exc.status == 403)

    async def list_once(self) -> None:
        """One :meth:`list`, for a caller that does not watch (``mig-extender report``): a kind the API server does
        not serve, or does not let the extender read, is held as none, as :meth:`run` does."""
        try:
            await self.list()
        except ApiError as exc:
            if not self._is_absence(exc):
                raise
            self._absent(exc)

    def _absent(self, exc: ApiError) -> None:
        """The API server does not serve this kind, or does not let the extender read it: hold none of it."""
        self.resource_version = None
        self.view.mark_absent(self.kind)
        if not self._absence_logged:
            self._absence_logged = True
            why = (
                "the API server does not serve it (resource.k8s.io/v1 is off or older than 1.34)"
                if isinstance(exc, NotFound)
                else "the extender may not list it (RBAC: get, list, watch on resource.k8s.io " + str(self.kind) + ")"
            )
            log.warning("%s: %s; treating it as empty and asking again with backoff (%s)", self.kind, why, exc)

    async def list(self) -> None:
        """List in pages, keeping only the view's slim records of each page: a 100,000-pod cluster is
        never held as one parsed response (client-go's pager does the same, 500 per page)."""
        records: list[Any] = []
        token: str | None = None
        version = ""
        while True:
            # An expired continue token is a 410 (Gone): the next attempt re-lists.
            response = await self.collection.list_page(self.page_size, token, LIST_READ_TIMEOUT_S)
            body = orjson.loads(await response.read())
            if not isinstance(body, Mapping) or not isinstance(body.get("metadata"), Mapping):
                raise ValueError(f"list answer is not a List object: {type(body).__name__}")
            # Read the version first: a list the watch cannot continue from must not replace the store.
            version = str(body["metadata"]["resourceVersion"])
            token = body["metadata"].get("continue") or None
            items = body.get("items") or []
            if not isinstance(items, list):
                raise ValueError("list answer's items is not a list")
            records.extend(self.view.parse(self.kind, raw) for raw in items if isinstance(raw, Mapping))
            del body, items
            if not token:
                break
        self.view.replace_parsed(self.kind, records)
        self.resource_version = version
        self._fresh_list = True
        self.observer.relisted(self.kind)
        if self._absence_logged:
            self._absence_logged = False
            log.warning("%s: served and readable again", self.kind)
        log.info("%s: listed %d objects at resourceVersion %s", self.kind, len(records), self.resource_version)

    async def watch(self) -> int:
        """Stream events until the server ends the watch; returns how many arrived."""
        response = await self.collection.watch(
            self.resource_version, self.timeout_s + random.randint(0, self.timeout_s), self.read_timeout_s
        )
        # The API server accepted the watch from our resourceVersion: it will send every change since, so
        # the view is as fresh as after an event (a quiet stream may see neither events nor bookmarks).
        previous_ok = self.view.sync[self.kind].last_ok
        self.view.mark_ok(self.kind)
        accepted = time.monotonic()
        events = 0
        pending = bytearray()
        try:
            # Lines can be large (a Node with many images): split chunks ourselves instead of readline().
            async for chunk in response.content.iter_any():
                pending += chunk
                while (end := pending.find(b"\n")) >= 0:
                    line = bytes(pending[:end])
                    del pending[: end + 1]
                    if line.strip():
                        self._handle(orjson.loads(line))
                        events += 1
        except TimeoutError as exc:  # aiohttp's SocketTimeoutError: no byte for read_timeout_s
            raise SilentStream(type(exc).__name__) from exc
        except Gone:
            if events == 0:  # accepted, then refused before anything arrived: nothing was in sync after all
                self.view.sync[self.kind].last_ok = previous_ok
            raise
        finally:
            response.release()
            # The version has served a watch (an event, or a second of it): a later 410 means it expired
            # meanwhile, and a re-list at once is right. A stream cut before that keeps the flag.
            if events or time.monotonic() - accepted >= 1.0:
                self._fresh_list = False
        return events

    def _handle(self, event: Any) -> None:
        # A malformed line is a failed watch (back off, resume), never an AttributeError that ends the loop.
        if not isinstance(event, Mapping):
            raise ValueError(f"watch event is not an object: {type(event).__name__}")
        kind = event.get("type")
        obj = event.get("object") or {}
        metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
        if not isinstance(obj, Mapping) or not isinstance(metadata or {}, Mapping):
            raise ValueError(f"watch event {kind!r} carries a malformed object")
        if kind == "ERROR":
            raise error_for(int(obj.get("code", 0)), str(obj.get("message", "")))
        version = (metadata or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            self.view.mark_ok(self.kind)
        elif kind in ("ADDED", "MODIFIED", "DELETED"):
            self.view.apply(self.kind, kind, obj)
        else:
            log.warning("%s: ignoring watch event of type %r", self.kind, kind)
            return
        if version:
            self.resource_version = str(version)
            self._fresh_list = False


def reflectors(
    view: ClusterView,
    api: ApiClient,
    *,
    timeout_s: int,
    read_timeout_s: float,
    observer: WatchObserver | None = None,
) -> list[Reflector]:
    ref = view.config_ref
    collections = {
        Kind.NODES: node_collection(api),
        Kind.PODS: pod_collection(api),
        Kind.CONFIG: config_map_collection(api, ref.namespace, ref.name),
        Kind.RESOURCE_SLICES: resource_slice_collection(api),
        Kind.RESOURCE_CLAIMS: resource_claim_collection(api),
        Kind.CLAIM_TEMPLATES: claim_template_collection(api),
        Kind.DEVICE_CLASSES: device_class_collection(api),
    }
    return [
        Reflector(view, kind, collection, timeout_s=timeout_s, read_timeout_s=read_timeout_s, observer=observer)
        for kind, collection in collections.items()
    ]
