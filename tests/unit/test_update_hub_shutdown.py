"""On shutdown the update hub ends every stream normally, with where to resume."""

from __future__ import annotations

import asyncio

import fakeredis

from order_execution.gateway.updates import UpdateHub
from order_execution.orders.store import OrderStore
from tests.factories import make_order


async def test_close_streams_ends_each_stream_with_the_hub_position(
    fake_redis: fakeredis.FakeAsyncRedis,
) -> None:
    store = OrderStore(fake_redis)
    hub = UpdateHub(store.outbox)
    await hub.start(wait_s=1)
    got: list[str] = []
    async with hub.subscribe(["BTCUSDT"]) as btc, hub.subscribe(["ETHUSDT"]) as eth:

        async def read(subscription: object, into: list[str]) -> None:
            async for entry in subscription:  # type: ignore[attr-defined]
                into.append(entry.entry_id)

        readers = [asyncio.create_task(read(btc, got)), asyncio.create_task(read(eth, []))]
        await store.create(make_order(order_id="o1", client_order_id="c1"))
        await store.create(make_order(order_id="o2", client_order_id="c2"))
        for _ in range(100):
            if len(got) == 2 and hub.position == got[-1]:
                break
            await asyncio.sleep(0.02)
        await hub.close_streams()
        done, _ = await asyncio.wait(readers, timeout=1)
        assert len(done) == 2, "streams did not end when the hub closed them"
        assert btc.resume_token == got[-1]
        # The ETH stream saw nothing, yet resumes after everything the hub had read.
        assert eth.resume_token == hub.position == got[-1]
    async with hub.subscribe([]) as late:
        assert [entry async for entry in late] == []  # opened after the close: ends at once
