"""The Redis adapters raise the service's StoreUnavailable family for an outage, with redis-py's
error as the cause, and let any other Redis error (a bug) through unchanged."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from order_execution.listener.lease import LeaderLease
from order_execution.orders.errors import StoreTimedOut, StoreUnavailable
from order_execution.orders.listener_status import ListenerStatus
from order_execution.orders.outbox import Outbox
from order_execution.orders.replicas import ReplicaAcks, ReplicaProbe
from order_execution.orders.risk_state import RiskState
from order_execution.orders.rules_store import RulesStore
from order_execution.orders.store import OrderStore
from order_execution.orders.store_outages import store_outages
from order_execution.runtime.redis_connection import open_redis
from order_execution.runtime.settings import RedisSettings
from order_execution.tasks.redis_queues import QueueClient
from tests.factories import make_order
from tests.silent_server import silent_server


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
async def unreachable() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(
        host="127.0.0.1", port=_closed_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    yield client
    await client.aclose()


async def _first(entries: AsyncIterator[Any]) -> Any:
    async for entry in entries:
        return entry
    return None


ADAPTER_CALLS: dict[str, Callable[[aioredis.Redis], Awaitable[object]]] = {
    "OrderStore.get": lambda r: OrderStore(r).get("o1"),
    "OrderStore.transition": lambda r: OrderStore(r).transition("o1", lambda o: None),
    "OrderStore.unsettled_orders": lambda r: _first(OrderStore(r).unsettled_orders()),
    "Outbox.last_id": lambda r: Outbox(r).last_id(),
    "Outbox.replay_after": lambda r: _first(Outbox(r).replay_after("0-0")),
    "ReplicaProbe.confirmed": lambda r: ReplicaProbe(r, ReplicaAcks(needed=1), key="probe").confirmed(),
    "RiskState.positions": lambda r: RiskState(r).positions(),
    "RulesStore.load": lambda r: RulesStore(r).load(),
    "ListenerStatus.read": lambda r: ListenerStatus(r, namespace="oe").read(),
    "QueueClient.fetch": lambda r: QueueClient(r).fetch([("orders.BTCUSDT", 1)]),
    "LeaderLease.hold": lambda r: LeaderLease(r, namespace="oe", holder_id="a", ttl_ms=1000).hold(),
}


@pytest.mark.parametrize("call", ADAPTER_CALLS.values(), ids=ADAPTER_CALLS.keys())
async def test_an_unreachable_redis_is_store_unavailable_with_the_cause_kept(
    unreachable: aioredis.Redis, call: Callable[[aioredis.Redis], Awaitable[object]]
) -> None:
    with pytest.raises(StoreUnavailable) as caught:
        await call(unreachable)
    assert str(caught.value) == "order store (Redis) unreachable; retry shortly"
    assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError)


async def test_a_create_that_failed_names_the_client_order_id_to_retry_with(
    unreachable: aioredis.Redis,
) -> None:
    with pytest.raises(StoreUnavailable) as caught:
        await OrderStore(unreachable).create(make_order(order_id="o-7", client_order_id="retry-me-7"))
    assert str(caught.value) == (
        "order store (Redis) unreachable; order o-7 may have been stored. "
        "Retry with client_order_id 'retry-me-7' (idempotent) or GetOrder it"
    )


async def test_a_frozen_redis_is_a_timeout_that_says_a_write_may_have_landed() -> None:
    async with silent_server() as port:
        client = open_redis(RedisSettings(address=f"127.0.0.1:{port}", socket_timeout_ms=200))
        with pytest.raises(StoreTimedOut) as caught:
            await OrderStore(client).get("o1")
        assert "did not answer within redis.socket_timeout_ms" in str(caught.value)
        assert isinstance(caught.value.__cause__, redis.exceptions.TimeoutError)
        await client.aclose()


async def test_a_redis_error_that_is_no_outage_passes_unchanged(fake_redis: fakeredis.FakeAsyncRedis) -> None:
    """A wrong type is a bug, not a reason to retry: it must not be dressed as an outage."""
    outbox = Outbox(fake_redis)
    await fake_redis.set(outbox.key, "not a stream")
    with pytest.raises(redis.exceptions.ResponseError) as caught:
        await outbox.last_id()
    assert not isinstance(caught.value, StoreUnavailable)


def test_the_seam_maps_what_redis_raises_inside_it() -> None:
    """What a test's fake Redis raises becomes, through the seam, what the adapters raise."""
    with pytest.raises(StoreUnavailable) as caught, store_outages():
        raise redis.exceptions.ConnectionError("Connection refused")
    assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError)
