"""The gateway's update tail decodes each outbox entry once, however many streams are open.

Covers gateway/updates.py (the tail, `Update`) and the servicer's StreamOrderUpdates: every stream
filters the one decoded entry (symbols, user, owner, account) and streams that want the same entry
send the one message built for it; with no stream open nothing is decoded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import fakeredis
import grpc
import pytest

from order_execution.gateway import proto_mapping, servicer
from order_execution.gateway.updates import Update, UpdateHub
from order_execution.orders.outbox import OutboxEntry, StoredEntry
from order_execution.orders.store import OrderStore
from order_execution.proto import order_pb2 as pb
from order_execution.proto import order_pb2_grpc
from tests import factories
from tests.unit.gateway_harness import limit_order, serving_gateway

WAIT_S = 2.0


@pytest.fixture
async def redis() -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    client = fakeredis.FakeAsyncRedis()
    yield client
    await client.aclose()


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The entry id of every outbox entry decoded from now on."""
    ids: list[str] = []
    real_decode = StoredEntry.decode

    def counting_decode(self: StoredEntry) -> OutboxEntry:
        ids.append(self.entry_id)
        return real_decode(self)

    monkeypatch.setattr(StoredEntry, "decode", counting_decode)
    return ids


async def take(updates: AsyncIterator[Update], n: int) -> list[Update]:
    async def collect() -> list[Update]:
        return [await anext(updates) for _ in range(n)]

    return await asyncio.wait_for(collect(), WAIT_S)


async def read(stream: Any, n: int) -> list[pb.OrderUpdate]:
    """The next `n` updates of a gRPC stream."""
    return [await asyncio.wait_for(stream.read(), WAIT_S) for _ in range(n)]


async def wait_until(check: Callable[[], bool], what: str) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_two_streams_filter_the_one_decoded_entry_and_share_what_is_built_of_it(
    redis: fakeredis.FakeAsyncRedis, decoded: list[str]
) -> None:
    store = OrderStore(redis)
    hub = UpdateHub(store.outbox)
    await hub.start()
    rendered: list[str] = []

    def render(entry: OutboxEntry) -> str:
        rendered.append(entry.entry_id)
        return f"message of {entry.order.order_id}"

    orders = [
        factories.make_order(order_id="o1", client_order_id="c1", symbol="ETHUSDT", owner="bob"),
        factories.make_order(order_id="o2", client_order_id="c2", owner="alice", account="acct-2"),
        factories.make_order(order_id="o3", client_order_id="c3", owner="alice", account="default"),
        factories.make_order(
            order_id="o4", client_order_id="c4", symbol="ETHUSDT", owner="alice", account="acct-2"
        ),
        factories.make_order(order_id="o5", client_order_id="c5", user_id="u9"),
    ]
    try:
        async with (
            hub.subscribe(["ETHUSDT"]) as eth,
            hub.subscribe([], owner="alice", accounts=frozenset({"acct-2"})) as alices,
        ):
            for order in orders:
                await store.create(order)
            eth_got = await take(eth, 2)
            alice_got = await take(alices, 2)
            messages = [u.rendered(render) for u in (*eth_got, *alice_got)]
            await wait_until(lambda: len(decoded) == len(orders), "the tail to read every entry")
            by_tail = list(decoded)
    finally:
        await hub.stop()
    assert [u.order.order_id for u in eth_got] == ["o1", "o4"]
    assert [u.order.order_id for u in alice_got] == ["o2", "o4"]
    entry_ids = [e.entry_id for e in await store.outbox.range_after("0-0")]
    assert by_tail == entry_ids  # each entry once, whatever the streams (o4 went to both)
    assert eth_got[1] is alice_got[1]
    assert messages == ["message of o1", "message of o4", "message of o2", "message of o4"]
    assert sorted(rendered) == sorted({u.entry_id for u in (*eth_got, *alice_got)})  # o4's built once


async def test_with_no_stream_open_the_tail_decodes_nothing(
    redis: fakeredis.FakeAsyncRedis, decoded: list[str]
) -> None:
    store = OrderStore(redis)
    hub = UpdateHub(store.outbox)
    await hub.start()
    try:
        for n in range(3):
            await store.create(factories.make_order(order_id=f"o{n}", client_order_id=f"c{n}"))
        last = await store.outbox.last_id()
        await wait_until(lambda: hub.position == last, "the tail to pass the entries")
        assert decoded == []
        async with hub.subscribe([]) as updates:
            await store.create(factories.make_order(order_id="o9", client_order_id="c9"))
            assert [u.order.order_id for u in await take(updates, 1)] == ["o9"]
        assert len(decoded) == 1
    finally:
        await hub.stop()


async def test_grpc_streams_wanting_the_same_update_get_the_one_message_built_for_it(
    redis: fakeredis.FakeAsyncRedis, decoded: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []
    real_update_to_pb = proto_mapping.update_to_pb

    def counting_update_to_pb(order: Any, **fields: Any) -> pb.OrderUpdate:
        built.append(fields["resume_token"])
        return real_update_to_pb(order, **fields)

    monkeypatch.setattr(servicer, "update_to_pb", counting_update_to_pb)
    async with (
        serving_gateway(redis, fakeredis.FakeAsyncRedis()) as target,
        grpc.aio.insecure_channel(target) as channel,
    ):
        stub = order_pb2_grpc.OrderServiceStub(channel)
        btc = stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(symbols=["BTCUSDT"]))
        mine = stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest(user_id="u1"))
        every = stub.StreamOrderUpdates(pb.StreamOrderUpdatesRequest())
        await asyncio.sleep(0.2)  # the three streams registered
        await stub.CreateOrder(limit_order(user_id="u1"))  # all three want it
        await stub.CreateOrder(
            limit_order(symbol="ETHUSDT", price="3000", quantity="0.01", user_id="u2")
        )  # only `every`
        got = {"btc": await read(btc, 1), "mine": await read(mine, 1), "every": await read(every, 2)}
        for stream in (btc, mine, every):
            stream.cancel()
    assert got["btc"] == got["mine"] == got["every"][:1]
    assert got["every"][1].order.symbol == "ETHUSDT"
    assert len(decoded) == 2
    assert sorted(built) == sorted(u.resume_token for u in got["every"])  # once each, not per stream
