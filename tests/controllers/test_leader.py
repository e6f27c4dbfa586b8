"""Lease-based leader election: one holder, takeover after expiry, release on shutdown, lost renewals."""

from __future__ import annotations

import asyncio

import pytest

from extender.controllers.leader import LeaderElector
from extender.settings import LeaderElectionSettings
from tests.controllers.fake import FakeApi
from tests.support import Clock


def elector(api: FakeApi, clock: Clock, name: str) -> LeaderElector:
    lease = LeaderElectionSettings(
        namespace="mig-extender", name="mig-extender", lease_duration_s=15, renew_deadline_s=10, retry_period_s=2
    )
    return LeaderElector(
        api,
        lease,
        identity=name,
        clock=clock.monotonic,
        now=clock.wall,
    )


async def test_one_replica_holds_the_lease_and_the_other_takes_over_after_expiry() -> None:
    api, clock = FakeApi(), Clock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    assert await a.try_once() and a.is_leader
    assert not await b.try_once() and not b.is_leader
    lease = api.leases[("mig-extender", "mig-extender")]
    assert lease["spec"]["holderIdentity"] == "a" and lease["spec"]["leaseDurationSeconds"] == 15
    assert lease["spec"]["renewTime"].endswith("Z") and len(lease["spec"]["renewTime"].split(".")[1]) == 7
    for _ in range(5):  # a keeps renewing: b never gets it
        clock.advance(2)
        assert await a.try_once()
        assert not await b.try_once()
    clock.advance(14)  # a stopped renewing; b has seen the same record for 14 s < 15 s
    assert not await b.try_once()
    assert not a.is_leader  # past its renew deadline: a stops acting before anyone can take over
    clock.advance(2)
    assert await b.try_once() and b.is_leader
    spec = api.leases[("mig-extender", "mig-extender")]["spec"]
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    assert not await a.try_once()  # a comes back: b holds it


async def test_release_on_shutdown_lets_the_next_replica_take_the_lease_at_once() -> None:
    api, clock = FakeApi(), Clock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    task = asyncio.create_task(a.run())
    for _ in range(50):
        await asyncio.sleep(0)
        if a.is_leader:
            break
    assert a.is_leader
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "holderIdentity" not in api.leases[("mig-extender", "mig-extender")]["spec"]
    assert await b.try_once()


async def test_a_leader_that_cannot_reach_the_api_server_stops_leading() -> None:
    api, clock = FakeApi(), Clock()
    a = elector(api, clock, "a")
    assert await a.try_once()
    api.down = True
    clock.advance(2)
    assert not await a.try_once()
    assert a.is_leader  # within the renew deadline a failed renewal is tolerated
    clock.advance(9)
    assert not await a.try_once() and not a.is_leader


async def test_racing_updates_have_one_winner() -> None:
    api, clock = FakeApi(), Clock()
    a, b = elector(api, clock, "a"), elector(api, clock, "b")
    assert await a.try_once()
    assert not await b.try_once()  # b's own clock starts when it first sees the record
    clock.advance(20)
    # both read the expired lease; the second update carries a stale resourceVersion
    stale = await api.get_lease("mig-extender", "mig-extender")
    assert await b.try_once()
    assert stale is not None
    with pytest.raises(Exception, match="409"):
        await api.replace_lease("mig-extender", "mig-extender", stale)


def test_durations_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="retry period"):
        LeaderElector(
            FakeApi(),
            LeaderElectionSettings(namespace="n", name="l", lease_duration_s=5, renew_deadline_s=10),
            identity="i",
        )
