"""Every change is written with its outbox entry; the gateway's streams deliver each version once, in order.

Covers the store's outbox and unsettled bookkeeping (orders/store.py, orders/store_queries.py,
orders/outbox.py) and the gateway's fan-out of the outbox to update streams (gateway/updates.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import fakeredis
import pytest

from order_execution.gateway import updates as updates_module
from order_execution.gateway.updates import Update, UpdateHub
from order_execution.orders import fsm
from order_execution.orders.errors import InvalidOrder, ResumePointExpired
from order_execution.orders.model import Fill, Order, OrderState, now_ms
from order_execution.orders.outbox import OutboxEntry
from order_execution.orders.store import OrderStore
from tests import factories

S = OrderState
WAIT_S = 2.0
CACHE_TTL_S = 3600


@pytest.fixture
async def client() -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    fake = fakeredis.FakeAsyncRedis()
    yield fake
    await fake.aclose()


@pytest.fixture
def store(client: fakeredis.FakeAsyncRedis) -> OrderStore:
    return OrderStore(client, ttl_s=CACHE_TTL_S)


def fill(trade_id: str, quantity: str) -> Fill:
    return Fill(trade_id, Decimal(quantity), Decimal("50000"), Decimal("0.02"), "USDT")


def report(state: OrderState, filled: str = "0", *fills: Fill) -> Callable[[Order], Order | None]:
    news = fsm.ExchangeReport(state, Decimal(filled), Decimal("50000"), "99", fills=fills)
    return lambda o: fsm.apply_report(o, news)


def to(state: OrderState) -> Callable[[Order], Order | None]:
    return lambda o: fsm.transition(o, state)


async def new(store: OrderStore, n: int, **fields: str) -> Order:
    order = factories.make_order(order_id=f"o{n}", client_order_id=f"oe-{n}", **fields)
    return (await store.create(order)).order


# --- the outbox -----------------------------------------------------------------------------


async def test_create_and_every_transition_append_one_entry_with_the_version(store: OrderStore) -> None:
    await new(store, 1)
    await store.transition("o1", to(S.SUBMITTING))
    await store.transition("o1", report(S.SUBMITTED))
    await store.transition("o1", to(S.SUBMITTING))  # not allowed from SUBMITTED: no change, no entry
    await store.transition("o1", report(S.PARTIALLY_FILLED, "0.004", fill("t1", "0.004")))
    await store.transition("o1", report(S.PARTIALLY_FILLED, "0.004", fill("t1", "0.004")))  # a repeat
    await store.transition("o1", report(S.FILLED, "0.010", fill("t1", "0.004"), fill("t2", "0.006")))
    entries = await store.outbox.range_after("0-0")
    assert [(e.order.version, e.order.state) for e in entries] == [
        (1, S.NEW),
        (2, S.SUBMITTING),
        (3, S.SUBMITTED),
        (4, S.PARTIALLY_FILLED),
        (5, S.FILLED),
    ]
    assert [[f.trade_id for f in e.fills] for e in entries] == [[], [], [], ["t1"], ["t2"]]
    assert entries[-1].fills == (fill("t2", "0.006"),)
    assert [f.trade_id for f in entries[-1].order.fills] == ["t1", "t2"]
    assert entries[-1].order == await store.get("o1")
    ids = [e.entry_id for e in entries]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) and len(set(ids)) == 5


async def test_a_workers_claim_reaches_the_outbox_with_the_next_change_right_before_it(
    store: OrderStore, client: fakeredis.FakeAsyncRedis
) -> None:
    await new(store, 1)
    await store.transition("o1", to(S.SUBMITTING))
    entries = await store.outbox.range_after("0-0")
    assert [e.order.state for e in entries] == [S.NEW]  # held back: nothing to wake the readers for
    assert (await store.get("o1")).state is S.SUBMITTING  # but stored, for a crash to be seen
    await store.transition("o1", report(S.SUBMITTED))
    entries = await store.outbox.range_after("0-0")
    assert [(e.order.version, e.order.state, e.was) for e in entries] == [
        (1, S.NEW, None),
        (2, S.SUBMITTING, S.NEW),
        (3, S.SUBMITTED, S.SUBMITTING),
    ]
    assert await client.hget("oe:order:o1", "held_was") is None  # released once
    await store.transition("o1", report(S.CANCELED))
    assert [e.order.version for e in await store.outbox.range_after("0-0")] == [1, 2, 3, 4]


async def test_only_the_claim_is_held_back(store: OrderStore) -> None:
    await new(store, 1)
    await store.transition("o1", to(S.EXPIRED))  # NEW -> EXPIRED (too old to send): at once
    await new(store, 2)
    await store.transition("o2", to(S.SUBMITTING))
    await store.transition("o2", lambda o: o.replace(sent_at=now_ms()))  # a re-send's restamp: at once
    entries = await store.outbox.range_after("0-0")
    assert [(e.order.order_id, e.order.version, e.order.state) for e in entries] == [
        ("o1", 1, S.NEW),
        ("o1", 2, S.EXPIRED),
        ("o2", 1, S.NEW),
        ("o2", 2, S.SUBMITTING),
        ("o2", 3, S.SUBMITTING),
    ]


async def test_update_type_says_what_happened_so_a_final_state_is_announced_once(store: OrderStore) -> None:
    await new(store, 1)
    await store.transition("o1", to(S.SUBMITTING))
    await store.transition("o1", report(S.FILLED, "0.010"))  # the REST reply: no trades yet
    await store.transition("o1", report(S.FILLED, "0.010", fill("t1", "0.010")))  # the stream's trade
    entries = await store.outbox.range_after("0-0")
    assert [e.update_type for e in entries] == ["NEW", "SUBMITTING", "FILLED", "TRADE"]
    assert [e.was for e in entries] == [None, S.NEW, S.SUBMITTING, S.FILLED]


async def test_an_order_stays_unsettled_and_persistent_until_final_with_all_its_fills(
    store: OrderStore, client: fakeredis.FakeAsyncRedis
) -> None:
    keys = ("oe:order:o1", "oe:client:oe-1")

    async def ttls() -> list[int]:
        return [await client.ttl(key) for key in keys]

    await new(store, 1)
    for change in (to(S.SUBMITTING), report(S.SUBMITTED), report(S.FILLED, "0.010")):
        await store.transition("o1", change)
        assert await store.unsettled() == ["o1"] and await ttls() == [-1, -1]
    assert (await store.get("o1")).state is S.FILLED  # final, but its trades are not recorded yet
    await store.transition("o1", report(S.FILLED, "0.010", fill("t1", "0.004")))
    assert await store.unsettled() == ["o1"] and await ttls() == [-1, -1]
    await store.transition("o1", report(S.FILLED, "0.010", fill("t1", "0.004"), fill("t2", "0.006")))
    assert await store.unsettled() == []
    assert all(CACHE_TTL_S - 5 <= ttl <= CACHE_TTL_S for ttl in await ttls())


async def test_an_order_given_up_locally_becomes_persistent_again_when_the_exchange_shows_it(
    store: OrderStore, client: fakeredis.FakeAsyncRedis
) -> None:
    await new(store, 1)
    await store.transition("o1", to(S.SUBMITTING))
    await store.transition("o1", to(S.REJECTED))  # e.g. "never placed"
    assert await store.unsettled() == [] and await client.ttl("oe:order:o1") > 0
    await store.transition("o1", report(S.SUBMITTED))  # it was there after all
    assert (await store.get("o1")).state is S.SUBMITTED
    assert await store.unsettled() == ["o1"] and await client.ttl("oe:order:o1") == -1


async def test_unsettled_lists_oldest_first_and_resumes_after_a_position(store: OrderStore) -> None:
    for n, created in ((1, 3_000), (2, 1_000), (3, 2_000)):
        await store.create(
            factories.make_order(order_id=f"o{n}", client_order_id=f"oe-{n}", created_at=created)
        )
    assert await store.unsettled() == ["o2", "o3", "o1"]
    assert await store.unsettled(after=(2_000, "o3")) == ["o1"]
    assert await store.unsettled(limit=2) == ["o2", "o3"]


async def test_trim_indexes_drops_only_entries_of_expired_orders(
    store: OrderStore, client: fakeredis.FakeAsyncRedis
) -> None:
    now = now_ms()
    old, recent = now - 10_000, now
    for n, symbol, created in (
        (1, "BTCUSDT", old),
        (2, "BTCUSDT", old),
        (3, "ETHUSDT", old),
        (4, "BTCUSDT", recent),
    ):
        await store.create(
            factories.make_order(
                order_id=f"o{n}", client_order_id=f"oe-{n}", symbol=symbol, created_at=created
            )
        )
    for gone in ("o1", "o3", "o4"):  # as if their TTL had run out
        await client.delete(f"oe:order:{gone}")
    removed = await store.trim_indexes(older_than_ms=now - 5_000)
    assert removed == 4  # o1 and o3, each from the global and its symbol's index
    assert await client.zrange("oe:orders", 0, -1) == [b"o2", b"o4"]
    assert await client.zrange("oe:orders:BTCUSDT", 0, -1) == [b"o2", b"o4"]
    assert await client.zrange("oe:orders:ETHUSDT", 0, -1) == []
    assert await store.trim_indexes(older_than_ms=now - 5_000) == 0


# --- the update hub -------------------------------------------------------------------------


@pytest.fixture
async def hub(store: OrderStore) -> AsyncIterator[UpdateHub]:
    hub = UpdateHub(store.outbox)
    await hub.start()
    yield hub
    await hub.stop()


Key = tuple[str, int]  # (order id, version)


def key(entry: OutboxEntry | Update) -> Key:
    return entry.order.order_id, entry.order.version


async def take_until(updates: AsyncIterator[Update], last: Key) -> list[Update]:
    """Entries up to and including the one for `last`; fails if it does not come within WAIT_S."""

    async def collect() -> list[Update]:
        got: list[Update] = []
        async for entry in updates:
            got.append(entry)
            if key(entry) == last:
                return got
        raise AssertionError("the update stream ended")

    return await asyncio.wait_for(collect(), WAIT_S)


async def life_of(store: OrderStore, n: int, **fields: str) -> None:
    """Order n created, then sent, acknowledged and canceled: versions 1..4."""
    await new(store, n, **fields)
    for change in (to(S.SUBMITTING), report(S.SUBMITTED), report(S.CANCELED)):
        await store.transition(f"o{n}", change)


async def test_a_live_stream_gets_each_new_version_once_in_order(store: OrderStore, hub: UpdateHub) -> None:
    async with hub.subscribe([]) as updates:
        await life_of(store, 1)
        await life_of(store, 2)
        await new(store, 3)  # the marker: nothing repeated can come before it
        got = await take_until(updates, ("o3", 1))
    assert [key(e) for e in got] == [*((f"o{n}", v) for n in (1, 2) for v in (1, 2, 3, 4)), ("o3", 1)]
    assert [e.entry_id for e in got] == [e.entry_id for e in await store.outbox.range_after("0-0")]


async def test_a_resumed_stream_replays_what_it_missed_then_goes_live_with_no_gap_or_repeat(
    store: OrderStore, hub: UpdateHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(updates_module, "_REPLAY_PAGE", 2)  # several replay pages, writes between them
    async with hub.subscribe([]) as first:
        await life_of(store, 1)
        seen = await take_until(first, ("o1", 4))
    token = seen[1].entry_id  # the client got o1 v1 and v2, then lost its stream
    await life_of(store, 2)  # written while it was away
    after = hub.resume_point(token)
    async with hub.subscribe([], after=after) as resumed:
        await new(store, 3)  # written after it subscribed, before its replay began
        head = await asyncio.wait_for(anext(resumed), WAIT_S)
        await life_of(store, 4)  # written during the replay
        await asyncio.sleep(0.05)  # let the hub's tail queue them live as well
        await new(store, 5)
        rest = await take_until(resumed, ("o5", 1))
        await new(store, 6)  # fetched by the last, short, replay page
        rest += await take_until(resumed, ("o6", 1))
        await new(store, 7)  # written once the replay is over: comes live, after the repeats it skips
        rest += await take_until(resumed, ("o7", 1))
    got = [head, *rest]
    expected = await store.outbox.range_after(token)
    assert [e.entry_id for e in got] == [e.entry_id for e in expected]
    assert [key(e) for e in got] == [
        ("o1", 3),
        ("o1", 4),
        *(("o2", v) for v in (1, 2, 3, 4)),
        ("o3", 1),
        *(("o4", v) for v in (1, 2, 3, 4)),
        ("o5", 1),
        ("o6", 1),
        ("o7", 1),
    ]


async def test_a_stream_resumed_at_the_newest_entry_gets_only_what_follows(
    store: OrderStore, hub: UpdateHub
) -> None:
    await life_of(store, 1)
    token = (await store.outbox.range_after("0-0"))[-1].entry_id
    async with hub.subscribe([], after=hub.resume_point(token)) as updates:
        await new(store, 2)
        got = await take_until(updates, ("o2", 1))
    assert [key(e) for e in got] == [("o2", 1)]


async def test_streams_get_only_their_symbols_and_user(store: OrderStore, hub: UpdateHub) -> None:
    async with hub.subscribe(["ETHUSDT"]) as eth, hub.subscribe([], user_id="u1") as mine:
        await new(store, 1, symbol="BTCUSDT", user_id="u1")
        await new(store, 2, symbol="ETHUSDT", user_id="u2")
        await new(store, 3, symbol="BTCUSDT", user_id="u2")
        await new(store, 4, symbol="ETHUSDT", user_id="u1")  # both want this one: the marker
        eth_got = await take_until(eth, ("o4", 1))
        mine_got = await take_until(mine, ("o4", 1))
    assert [key(e) for e in eth_got] == [("o2", 1), ("o4", 1)]
    assert [key(e) for e in mine_got] == [("o1", 1), ("o4", 1)]


async def test_a_resumed_stream_replays_only_its_symbols(store: OrderStore, hub: UpdateHub) -> None:
    await new(store, 1, symbol="ETHUSDT")
    token = (await store.outbox.range_after("0-0"))[-1].entry_id
    await new(store, 2, symbol="BTCUSDT")
    await new(store, 3, symbol="ETHUSDT")
    async with hub.subscribe(["ETHUSDT"], after=hub.resume_point(token)) as eth:
        await new(store, 4, symbol="BTCUSDT")
        await new(store, 5, symbol="ETHUSDT")
        got = await take_until(eth, ("o5", 1))
    assert [key(e) for e in got] == [("o3", 1), ("o5", 1)]


async def test_a_resume_token_that_is_not_one_is_invalid_naming_the_field(hub: UpdateHub) -> None:
    with pytest.raises(InvalidOrder) as caught:
        hub.resume_point("garbage")
    assert caught.value.field == "resume_token" and "resume_token" in str(caught.value)
    assert hub.resume_point("") == ""  # no token: from now


async def test_a_resume_token_older_than_the_retention_has_expired(client: fakeredis.FakeAsyncRedis) -> None:
    hub = UpdateHub(OrderStore(client, update_retention_s=60).outbox)
    with pytest.raises(ResumePointExpired):
        hub.resume_point(f"{now_ms() - 61_000}-0")
    recent = f"{now_ms() - 30_000}-0"
    assert hub.resume_point(recent) == recent
