"""The listener's leader lease: one holder at a time, kept by renewing, handed over on release or lapse."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import fakeredis
import pytest

from order_execution.listener.lease import LeaderLease

SHORT_TTL_MS = 100  # for a lease meant to lapse
TTL_MS = 5000  # long enough that a slow CI machine does not lapse one between two calls


@pytest.fixture
async def client() -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    fake = fakeredis.FakeAsyncRedis()
    yield fake
    await fake.aclose()


@pytest.fixture
def pair(client: fakeredis.FakeAsyncRedis) -> tuple[LeaderLease, LeaderLease]:
    """Two listener replicas contending for one account's lease."""
    return (
        LeaderLease(client, namespace="oe", holder_id="listener-a", ttl_ms=TTL_MS),
        LeaderLease(client, namespace="oe", holder_id="listener-b", ttl_ms=TTL_MS),
    )


async def test_only_one_replica_holds_the_lease(pair: tuple[LeaderLease, LeaderLease]) -> None:
    a, b = pair
    assert await a.hold()
    assert not await b.hold()
    assert await a.holder() == await b.holder() == "listener-a"


async def test_renewing_keeps_the_lease_beyond_its_ttl() -> None:
    client = fakeredis.FakeAsyncRedis()
    a = LeaderLease(client, namespace="oe", holder_id="listener-a", ttl_ms=300)
    b = LeaderLease(client, namespace="oe", holder_id="listener-b", ttl_ms=300)
    assert await a.hold()
    for _ in range(6):  # 600 ms in all, two TTLs, renewed every third of the TTL
        await asyncio.sleep(0.1)
        assert await a.hold()
        assert not await b.hold()
    assert await a.holder() == "listener-a"
    assert 0 < await client.pttl(a.key) <= 300
    await client.aclose()


async def test_a_release_hands_over_at_once(pair: tuple[LeaderLease, LeaderLease]) -> None:
    a, b = pair
    await a.hold()
    await a.release()
    assert await a.holder() is None
    assert await b.hold()
    assert await b.holder() == "listener-b"


async def test_a_release_by_a_replica_that_does_not_hold_changes_nothing(
    pair: tuple[LeaderLease, LeaderLease],
) -> None:
    a, b = pair
    await a.hold()
    await b.release()
    assert await a.holder() == "listener-a"
    assert not await b.hold()


async def test_a_lapsed_lease_is_taken_over_and_not_taken_back(client: fakeredis.FakeAsyncRedis) -> None:
    a = LeaderLease(client, namespace="oe", holder_id="listener-a", ttl_ms=SHORT_TTL_MS)
    b = LeaderLease(client, namespace="oe", holder_id="listener-b", ttl_ms=TTL_MS)
    assert await a.hold()
    await asyncio.sleep(SHORT_TTL_MS * 1.5 / 1000)  # a froze and did not renew
    assert await b.hold()
    assert not await a.hold()  # a wakes up: it must not renew a lease b now holds
    assert await a.holder() == "listener-b"
    await a.release()  # nor can it release b's lease
    assert await b.holder() == "listener-b"
