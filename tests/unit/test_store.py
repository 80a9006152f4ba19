"""OrderStore contract, run on fakeredis and on the real Redis (its own db, flushed before and after:
see tests/redis_dbs.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis
from dramatiq import Message

from order_execution.orders import fsm
from order_execution.orders.errors import InvalidOrder, OrderNotFound
from order_execution.orders.model import Order, OrderState
from order_execution.orders.store import OrderStore
from order_execution.tasks.messages import cancel_order_push, submit_order_push
from order_execution.tasks.queues import SUBMIT_ORDER, doorbell_key, messages_key, queue_for, queue_key
from tests import factories
from tests.redis_dbs import redis_db

S = OrderState


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.integration)])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[aioredis.Redis]:
    if request.param == "fakeredis":
        fake = fakeredis.FakeAsyncRedis()
        yield fake
        await fake.aclose()
        return
    address = request.getfixturevalue("real_redis")
    real = aioredis.Redis.from_url(f"redis://{address}/{redis_db(__name__)}")
    await real.flushdb()
    yield real
    await real.flushdb()
    await real.aclose()


def make_order(n: int = 1, *, symbol: str = "BTCUSDT", created_at: int = 1_000, client_id: str = "") -> Order:
    return factories.make_order(
        order_id=f"order-{n}",
        client_order_id=client_id or f"client-{n}",
        symbol=symbol,
        created_at=created_at,
    )


async def queued_messages(client: aioredis.Redis, symbol: str) -> list[Message[object]]:
    queue = queue_for(symbol)
    ids = await client.lrange(queue_key(queue), 0, -1)
    bodies = [await client.hget(messages_key(queue), i) for i in ids]
    return [Message.decode(b) for b in bodies if isinstance(b, bytes)]


async def test_create_stores_version_one_and_queues_atomically(client: aioredis.Redis) -> None:
    store = OrderStore(client)
    order = make_order()
    result = await store.create(order, submit_order_push)
    assert result.created and result.order.version == 1
    stored = await store.get(order.order_id)
    assert stored == result.order and stored.price == Decimal("50000.0")
    [message] = await queued_messages(client, "BTCUSDT")
    assert message.actor_name == SUBMIT_ORDER and message.kwargs["order_id"] == order.order_id
    assert Order.from_json(message.kwargs["queued"]) == stored  # the worker claims it without a read
    assert message.queue_name == "orders.BTCUSDT"
    assert await client.llen(doorbell_key(queue_for("BTCUSDT"))) == 1


async def test_repeated_client_order_id_returns_the_original_and_queues_nothing(
    client: aioredis.Redis,
) -> None:
    store = OrderStore(client)
    first = make_order(1, client_id="same")
    await store.create(first, submit_order_push)
    second = make_order(2, client_id="same")
    result = await store.create(second, submit_order_push)
    assert not result.created and result.order.order_id == first.order_id
    assert len(await queued_messages(client, "BTCUSDT")) == 1
    with pytest.raises(OrderNotFound):
        await store.get(second.order_id)
    assert (await store.find_by_client_id("same")) == result.order


async def test_transition_bumps_version_and_ignores_disallowed_moves(client: aioredis.Redis) -> None:
    store = OrderStore(client)
    order = make_order()
    await store.create(order)
    moved = await store.transition(order.order_id, lambda o: fsm.transition(o, S.SUBMITTING))
    assert moved.changed and moved.order.version == 2 and moved.order.state is S.SUBMITTING
    refused = await store.transition(order.order_id, lambda o: fsm.transition(o, S.SUBMITTING))
    assert not refused.changed and refused.order.version == 2


async def test_concurrent_transitions_lose_no_update(client: aioredis.Redis) -> None:
    store = OrderStore(client)
    order = make_order()
    await store.create(order)
    await store.transition(order.order_id, lambda o: fsm.transition(o, S.SUBMITTING))

    def add_fill(current: Order) -> Order | None:
        report = fsm.ExchangeReport(S.PARTIALLY_FILLED, current.filled_quantity + Decimal("0.001"))
        return fsm.apply_report(current, report)

    await asyncio.gather(*(store.transition(order.order_id, add_fill) for _ in range(8)))
    final = await store.get(order.order_id)
    assert final.filled_quantity == Decimal("0.008")
    assert final.version == 2 + 8


async def test_a_lost_race_is_retried_on_the_order_the_write_returned(
    client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compare-and-set that finds another version answers with the stored order: the change is
    re-run on that, with no read of its own (two round trips, not three), and lands on top of the
    other writer's change."""
    store = OrderStore(client)
    order = make_order()
    await store.create(order)
    stale = (await store.transition(order.order_id, lambda o: fsm.transition(o, S.SUBMITTING))).order
    accepted = fsm.ExchangeReport(S.SUBMITTED, exchange_order_id="99")
    await store.transition(order.order_id, lambda o: fsm.apply_report(o, accepted))  # another writer
    commands: list[str] = []
    execute = client.execute_command

    async def counting(*args: Any, **kwargs: Any) -> Any:
        commands.append(str(args[0]))
        return await execute(*args, **kwargs)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(client, "execute_command", counting)
    seen: list[int] = []

    def fill(current: Order) -> Order | None:
        seen.append(current.version)
        return fsm.apply_report(current, fsm.ExchangeReport(S.PARTIALLY_FILLED, Decimal("0.004")))

    result = await store.transition(order.order_id, fill, current=stale)
    assert commands == ["EVALSHA", "EVALSHA"]
    assert seen == [2, 3]
    assert result.changed and result.order.version == 4
    assert (result.order.exchange_order_id, result.order.filled_quantity) == ("99", Decimal("0.004"))
    assert await store.get(order.order_id) == result.order


async def test_transition_can_queue_in_the_same_step(client: aioredis.Redis) -> None:
    store = OrderStore(client)
    order = make_order()
    await store.create(order)
    await store.transition(order.order_id, lambda o: fsm.transition(o, S.SUBMITTING))
    result = await store.transition(
        order.order_id, lambda o: fsm.transition(o, S.PENDING_CANCEL), enqueue=cancel_order_push
    )
    assert result.order.state is S.PENDING_CANCEL
    [message] = await queued_messages(client, "BTCUSDT")
    assert message.actor_name == "cancel_order"


async def test_unknown_order(client: aioredis.Redis) -> None:
    store = OrderStore(client)
    with pytest.raises(OrderNotFound):
        await store.get("nope")
    with pytest.raises(OrderNotFound):
        await store.transition("nope", lambda o: o)


async def test_search_filters_and_pages_without_gaps_or_repeats(client: aioredis.Redis) -> None:
    store = OrderStore(client)
    for n in range(25):
        symbol = "ETHUSDT" if n % 5 == 0 else "BTCUSDT"
        await store.create(
            make_order(n, symbol=symbol, created_at=1_000 + n // 2)
        )  # pairs share a millisecond
    await store.transition("order-3", lambda o: fsm.transition(o, S.CANCELED))

    seen: list[str] = []
    token = ""
    while True:
        page = await store.search(symbol="BTCUSDT", limit=6, page_token=token)
        seen += [o.order_id for o in page.orders]
        token = page.next_page_token
        if not token:
            break
    expected = [f"order-{n}" for n in range(25) if n % 5]
    assert sorted(seen) == sorted(expected) and len(seen) == len(expected)
    created = [int(o.split("-")[1]) // 2 for o in seen]
    assert created == sorted(created, reverse=True)

    canceled = await store.search(states=[S.CANCELED], limit=10)
    assert [o.order_id for o in canceled.orders] == ["order-3"]
    window = await store.search(start_ms=1_010, end_ms=1_012, limit=50)
    assert sorted(o.order_id for o in window.orders) == ["order-20", "order-21", "order-22", "order-23"]
    with pytest.raises(InvalidOrder, match="page_token"):
        await store.search(page_token="not-a-token")
