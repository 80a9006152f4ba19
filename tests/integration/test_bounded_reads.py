"""Bounded reads over 100,000 stored orders on the real Redis, through gRPC on a socket.

The orders are written through the store's own create script, in big pipelines, with the
keys `OrderStore.create` writes (checked against it below): a month of one client's
history, every order final. A ListOrders whose filter matches none of them reads at most
`server.list_scan_cap` index entries and orders per call, each entry once across the
pages (keyset, not offset), and CancelAllOrders reads the unsettled orders only. Counted
by a counting Redis client, never timed.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, cast

import fakeredis
import grpc
import pytest
import redis
import redis.asyncio as aioredis

from order_execution.gateway.auth import API_KEY_HEADER
from order_execution.orders.model import Order, OrderState, now_ms
from order_execution.orders.risk_layout import utc_day
from order_execution.orders.store import OrderStore, _risk_args
from order_execution.orders.store_queries import DEFAULT_SCAN_CAP
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from order_execution.runtime.settings import ApiClientSettings, AuthSettings
from order_execution.runtime.settings_access import hash_key
from tests.counting_redis import CountingRedis
from tests.factories import make_order
from tests.redis_dbs import redis_db
from tests.unit.gateway_harness import serving_gateway

pytestmark = pytest.mark.integration

REDIS_DB = redis_db(__name__)
ORDERS = 100_000
PIPELINE = 2_000
CAP = DEFAULT_SCAN_CAP
KEY = secrets.token_urlsafe(32)  # made per run
ALICE = ((API_KEY_HEADER, KEY),)
AUTH = AuthSettings(clients=[ApiClientSettings(name="alice", key_sha256=hash_key(KEY))], failure_delay_ms=0)


def history_order(n: int, created_at: int) -> Order:
    return make_order(
        order_id=f"h-{n:06d}",
        client_order_id=f"hc-{n:06d}",
        owner="alice",
        state=OrderState.CANCELED,
        created_at=created_at,
        updated_at=created_at,
    )


def queue_create(store: OrderStore, pipe: Any, order: Order) -> Any:
    """`OrderStore.create`'s script call for `order` (no queue push, no risk check), queued on `pipe`."""
    stored = order.replace(version=1)
    keys, args = store._record(stored, "", None)
    keys += [store._index_key(), store._index_key(order.symbol), store._owner_index_key(order.owner)]
    keys += [
        store.risk_keys().mode,
        store.risk_keys().positions,
        store.risk_keys().orders_on(utc_day(order.created_at)),
    ]
    args += _risk_args(stored, None)
    return store._create(keys=keys, args=args, client=pipe)


async def layout(client: aioredis.Redis, namespace: str) -> dict[str, bytes | str]:
    """Every key of `namespace` (the namespace cut off) and its type."""
    return {
        key.decode().removeprefix(namespace): await client.type(key)
        async for key in client.scan_iter(match=f"{namespace}:*", count=1000)
    }


async def seed(url: str, namespace: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        # The seed writes what OrderStore.create writes: compare one order both ways.
        sample = history_order(0, 1_000)
        await OrderStore(client, namespace=f"{namespace}-create").create(sample)
        probe = OrderStore(client, namespace=f"{namespace}-seed")
        pipe = probe.pipeline()
        await queue_create(probe, pipe, sample)
        await pipe.execute()
        assert await layout(client, f"{namespace}-create") == await layout(client, f"{namespace}-seed")
        for probe_namespace in (f"{namespace}-create", f"{namespace}-seed"):
            await client.delete(*[k async for k in client.scan_iter(match=f"{probe_namespace}:*")])

        store = OrderStore(client, namespace=namespace)
        start = now_ms() - ORDERS // 3
        for first in range(0, ORDERS, PIPELINE):
            pipe = store.pipeline()
            for n in range(first, first + PIPELINE):
                await queue_create(store, pipe, history_order(n, start + n // 3))  # three per millisecond
            await pipe.execute()
        assert await client.zcard(f"{namespace}:orders:@alice") == ORDERS
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def seeded(real_redis: str) -> Iterator[tuple[str, str]]:
    """(Redis URL, namespace) holding 100,000 CANCELED orders of alice; removed afterwards."""
    url = f"redis://{real_redis}/{REDIS_DB}"
    namespace = f"test-{uuid.uuid4().hex}"
    try:
        asyncio.run(seed(url, namespace))
        yield url, namespace
    finally:
        cleanup = redis.Redis.from_url(url)
        for pattern in (f"{namespace}:*", f"{namespace}-*"):
            batch: list[bytes] = []
            for key in cleanup.scan_iter(match=pattern, count=5000):
                batch.append(key)
                if len(batch) == 5000:
                    cleanup.unlink(*batch)
                    batch.clear()
            if batch:
                cleanup.unlink(*batch)
        cleanup.close()


@dataclass
class Gateway:
    stub: Any
    client: CountingRedis  # the gateway's own connection: what it reads is counted here
    namespace: str


@pytest.fixture
async def gateway(seeded: tuple[str, str]) -> AsyncIterator[Gateway]:
    url, namespace = seeded
    client = cast(CountingRedis, CountingRedis.from_url(url))
    rules = fakeredis.FakeAsyncRedis()
    async with (
        serving_gateway(client, rules, auth=AUTH, namespace=namespace) as target,
        grpc.aio.insecure_channel(target) as channel,
    ):
        yield Gateway(order_pb2_grpc.OrderServiceStub(channel), client, namespace)
    await rules.aclose()
    await client.aclose()


async def test_a_filter_matching_none_of_100k_orders_reads_at_most_the_cap(
    gateway: Gateway,
) -> None:
    stub, client = gateway.stub, gateway.client
    for request in (pb.ListOrdersRequest(state=pb.NEW), pb.ListOrdersRequest(symbol="ETHUSDT")):
        client.start_count()
        page = await stub.ListOrders(request, metadata=ALICE)
        assert not page.orders and page.next_page_token  # nothing yet, and not the end
        assert 0 < client.index_entries_read <= CAP
        assert client.orders_fetched <= CAP


async def test_following_the_tokens_reads_each_of_100k_entries_once(
    gateway: Gateway,
) -> None:
    stub, client = gateway.stub, gateway.client
    stored = await client.zcard(f"{gateway.namespace}:orders:@alice")  # 100,000 (+ any placed here)
    assert stored >= ORDERS
    token, calls, read = "", 0, 0
    while True:
        client.start_count()
        page = await stub.ListOrders(pb.ListOrdersRequest(symbol="ETHUSDT", page_token=token), metadata=ALICE)
        calls += 1
        assert not page.orders
        assert client.index_entries_read <= CAP
        read += client.index_entries_read
        token = page.next_page_token
        if not token:
            break
    # Keyset paging: no entry is read twice (offset paging would re-read every earlier one).
    assert read == stored
    assert calls == math.ceil(stored / CAP) + (1 if stored % CAP == 0 else 0)


async def test_cancel_all_reads_the_open_orders_not_the_100k_history(
    gateway: Gateway,
) -> None:
    stub, client = gateway.stub, gateway.client
    # Open orders stored as CreateOrder stores them, without the queue push: the queues' keys
    # are not under the test's namespace.
    store = OrderStore(client, namespace=gateway.namespace)
    placed = [
        (
            await store.create(make_order(order_id=f"open-{n}", client_order_id=f"oc-{n}", owner="alice"))
        ).order.order_id
        for n in range(3)
    ]
    client.start_count()
    moved = await stub.CancelAllOrders(pb.CancelAllOrdersRequest(symbol="BTCUSDT"), metadata=ALICE)
    assert sorted(o.order_id for o in moved.orders) == sorted(placed)
    assert all(o.state == pb.CANCELED for o in moved.orders)
    assert client.index_entries_read == len(placed) and client.orders_fetched == len(placed)
