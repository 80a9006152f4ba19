"""The update hub's tail outlives an order store outage: Redis refusing the tail's reads (which
the outbox's adapter raises as StoreUnavailable) is retried, and the streams carry on after it."""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
import pytest
import redis.exceptions

from order_execution.gateway.updates import UpdateHub
from order_execution.orders.store import OrderStore
from tests.factories import make_order


async def test_the_tail_retries_a_store_outage_and_streams_carry_on(
    fake_redis: fakeredis.FakeAsyncRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = OrderStore(fake_redis)
    hub = UpdateHub(store.outbox)
    xread = fake_redis.xread
    refusals = 3

    async def refused_at_first(*args: Any, **kwargs: Any) -> Any:
        nonlocal refusals
        if refusals:
            refusals -= 1
            raise redis.exceptions.ConnectionError("Connection refused")
        return await xread(*args, **kwargs)

    monkeypatch.setattr(fake_redis, "xread", refused_at_first)
    await hub.start(wait_s=1)
    for _ in range(250):  # 5 s: the tail backs off 0.1, 0.2, 0.4 s between its tries
        if not refusals:
            break
        await asyncio.sleep(0.02)
    assert refusals == 0, "the tail stopped reading at the outage"

    got: list[str] = []
    async with hub.subscribe(["BTCUSDT"]) as stream:

        async def read() -> None:
            async for entry in stream:
                got.append(entry.order.order_id)

        reader = asyncio.create_task(read())
        await store.create(make_order(order_id="o1", client_order_id="c1"))
        for _ in range(250):
            if got:
                break
            await asyncio.sleep(0.02)
        await hub.close_streams()
        await asyncio.wait([reader], timeout=1)
    assert got == ["o1"], "the stream did not carry on after the outage"
