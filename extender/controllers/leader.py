"""Leader election on a coordination.k8s.io/v1 Lease, after client-go's ``leaderelection`` package.

- A replica that finds no Lease creates it holding it; one that finds it expired (or released) takes it
  with an update carrying the Lease's resourceVersion, so that of two replicas racing only one wins.
- Expiry is judged by this replica's own clock: when the Lease's (holder, renewTime) was last seen to
  change, plus its duration, so clock skew between replicas does not matter (as client-go does).
- The leader renews every ``retry_period_s``; it counts as leader only while its last successful renewal
  is younger than ``renew_deadline_s`` (below the lease duration), so it stops acting before another
  replica can take over.
- On shutdown the leader releases the Lease (no holder, duration 1 s) so that a successor need not wait; with
  ``before_release`` it first lets what it started finish (the bindings in flight).
- A replica may lead only while ``may_lead`` says so (its cluster view is synced and fresh): a leader whose
  view goes stale releases the Lease, so that a replica with a current view takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..kube.api import LeaseApi
from ..kube.errors import ApiError, Conflict
from ..kube.times import micro_time
from ..settings import LeaderElectionSettings

log = logging.getLogger(__name__)


class LeaderElector:
    def __init__(
        self,
        api: LeaseApi,
        settings: LeaderElectionSettings,
        *,
        identity: str,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        may_lead: Callable[[], bool] = lambda: True,
        before_release: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.api = api
        self.may_lead = may_lead
        self.before_release = before_release
        self.namespace = settings.namespace
        self.name = settings.name
        self.identity = identity
        self.lease_duration_s = settings.lease_duration_s  # the group checks retry < renew deadline < duration
        self.renew_deadline_s = settings.renew_deadline_s
        self.retry_period_s = settings.retry_period_s
        self.clock = clock
        self.now = now
        self._renewed_at: float | None = None
        self._observed: tuple[str | None, str | None] | None = None
        self._observed_at = 0.0
        self.transitions = 0
        """Times this replica became leader."""
        self.term: str | None = None
        """The ``acquireTime`` of the Lease this replica holds: one value per term of leadership (a renewal keeps
        it, a takeover changes it), so that what a term wrote can be told from what an earlier one left."""

    @property
    def is_leader(self) -> bool:
        return self._renewed_at is not None and self.clock() - self._renewed_at < self.renew_deadline_s

    async def run(self) -> None:
        """Try or renew every retry period, forever; release the Lease when cancelled."""
        try:
            while True:
                await self.try_once()
                await asyncio.sleep(self.retry_period_s)
        finally:
            if self._renewed_at is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(self.release()), timeout=5)

    async def try_once(self) -> bool:
        """One attempt to acquire or renew; True if this replica holds the Lease now."""
        was_leader = self.is_leader
        if not self.may_lead():
            if self._renewed_at is not None:
                log.warning("lease %s/%s: %s may not lead now; releasing", self.namespace, self.name, self.identity)
                with contextlib.suppress(ApiError, OSError, TimeoutError):
                    await self.release()
            self._renewed_at = None
            return False
        try:
            held = await self._acquire_or_renew()
        except (ApiError, OSError, TimeoutError) as exc:
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            held = False
        if held:
            self._renewed_at = self.clock()
            if not was_leader:
                self.transitions += 1
                log.info("lease %s/%s: %s is the leader", self.namespace, self.name, self.identity)
        elif was_leader and not self.is_leader:
            log.warning("lease %s/%s: %s lost the lease", self.namespace, self.name, self.identity)
        if not held and self._renewed_at is not None and not self.is_leader:
            self._renewed_at = None
        return held

    def _spec(self, acquire_time: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_duration_s)),
            "acquireTime": acquire_time,
            "renewTime": micro_time(self.now()),
            "leaseTransitions": transitions,
        }

    async def _acquire_or_renew(self) -> bool:
        lease = await self.api.get_lease(self.namespace, self.name)
        stamp = micro_time(self.now())
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(stamp, 0),
            }
            try:
                await self.api.create_lease(self.namespace, body)
            except Conflict:
                return False  # another replica created it first
            self.term = stamp
            return True
        spec: Mapping[str, Any] = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or None
        observed = (holder, spec.get("renewTime"))
        if observed != self._observed:
            self._observed, self._observed_at = observed, self.clock()
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration_s)
        if holder and holder != self.identity and self.clock() < self._observed_at + duration:
            return False  # held by another replica, and not expired as far as this replica has seen
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            new_spec = self._spec(spec.get("acquireTime") or stamp, transitions)
        else:
            new_spec = self._spec(stamp, transitions + 1)
        body = {**lease, "spec": new_spec}
        try:
            updated = await self.api.replace_lease(self.namespace, self.name, body)
        except Conflict:
            return False
        self._observed = (self.identity, (updated.get("spec") or {}).get("renewTime"))
        self._observed_at = self.clock()
        self.term = new_spec["acquireTime"]
        return True

    async def release(self) -> None:
        """Give the Lease up if this replica holds it: no holder, so the next replica takes it at once.

        It stops leading at once; ``before_release`` runs before the Lease is updated."""
        was_holding = self._renewed_at is not None
        self._renewed_at = None
        if was_holding and self.before_release is not None:
            await self.before_release()
        lease = await self.api.get_lease(self.namespace, self.name)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        spec = dict(lease.get("spec") or {})
        spec.pop("holderIdentity", None)
        spec.update({"leaseDurationSeconds": 1, "renewTime": micro_time(self.now())})
        with contextlib.suppress(Conflict):
            await self.api.replace_lease(self.namespace, self.name, {**lease, "spec": spec})
            log.info("lease %s/%s: released by %s", self.namespace, self.name, self.identity)
