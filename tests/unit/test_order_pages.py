"""Bounded reads on fakeredis: ListOrders' keyset pages under a scan cap, and CancelAllOrders
walking the unsettled orders rather than every order of the last 30 days.

The counting client (tests/counting_redis.py) says how many index entries and orders each
call read: the bound is asserted on work done, never on time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from order_execution.gateway.auth import Caller
from order_execution.gateway.commands import CancelAll, Requester
from order_execution.gateway.handlers import Intake
from order_execution.gateway.rules_cache import RulesCache
from order_execution.orders import fsm
from order_execution.orders.model import Order, OrderState
from order_execution.orders.rules_store import RulesStore
from order_execution.orders.store import OrderStore
from order_execution.runtime.settings import RiskSettings
from tests import factories
from tests.counting_redis import CountingFakeRedis

S = OrderState
ORDERS = 240
TIES = 7  # orders per millisecond: every page boundary lands inside a tie sooner or later
CAP = 25


@pytest.fixture
async def client() -> AsyncIterator[CountingFakeRedis]:
    fake = CountingFakeRedis()
    yield fake
    await fake.aclose()


def order_number(n: int, *, owner: str = "", symbol: str = "BTCUSDT") -> Order:
    return factories.make_order(
        order_id=f"order-{n:04d}",
        client_order_id=f"client-{n:04d}",
        created_at=1_000 + n // TIES,
        owner=owner,
        symbol=symbol,
    )


async def stored(store: OrderStore, count: int, *, canceled_every: int = 0) -> list[Order]:
    """`count` orders, TIES per millisecond; every `canceled_every`-th is CANCELED."""
    orders = []
    for n in range(count):
        order = (await store.create(order_number(n))).order
        if canceled_every and n % canceled_every == 0:
            order = (await store.transition(order.order_id, lambda o: fsm.transition(o, S.CANCELED))).order
        orders.append(order)
    return orders


def newest_first(orders: list[Order]) -> list[str]:
    """The order a time index lists: newest first, a tie on one millisecond by descending id."""
    return [o.order_id for o in sorted(orders, key=lambda o: (o.created_at, o.order_id), reverse=True)]


async def test_a_rare_filter_pages_every_match_once_newest_first_reading_at_most_the_cap(
    client: CountingFakeRedis,
) -> None:
    store = OrderStore(client)
    orders = await stored(store, ORDERS, canceled_every=37)
    expected = newest_first([o for o in orders if o.state is S.CANCELED])

    listed: list[str] = []
    token, calls, empty_pages_with_token = "", 0, 0
    while True:
        client.start_count()
        page = await store.search(states=[S.CANCELED], limit=4, page_token=token, scan_cap=CAP)
        calls += 1
        assert client.index_entries_read <= CAP and client.orders_fetched <= CAP
        listed += [o.order_id for o in page.orders]
        token = page.next_page_token
        empty_pages_with_token += int(not page.orders and bool(token))
        if not token:
            break
    assert listed == expected  # each match exactly once, newest first, ties by descending id
    # Matches 37 entries apart under a cap of 25: some pages must be empty and still continue.
    assert empty_pages_with_token > 0
    assert calls <= ORDERS // CAP + len(expected) + 1


async def test_pages_without_a_filter_list_each_order_once_across_ties(client: CountingFakeRedis) -> None:
    store = OrderStore(client)
    orders = await stored(store, ORDERS)
    listed: list[str] = []
    token = ""
    while True:
        page = await store.search(limit=TIES - 2, page_token=token, scan_cap=CAP)  # pages end inside ties
        listed += [o.order_id for o in page.orders]
        token = page.next_page_token
        if not token:
            break
    assert listed == newest_first(orders)


async def test_a_page_continues_exactly_when_its_last_order_expired_meanwhile(
    client: CountingFakeRedis,
) -> None:
    store = OrderStore(client)
    orders = await stored(store, 3 * TIES)
    first = await store.search(limit=TIES + 3, page_token="")
    last = first.orders[-1]
    # The order the token points at is gone from the index (trimmed once expired).
    await client.zrem("oe:orders", last.order_id)
    rest: list[str] = []
    token = first.next_page_token
    while token:
        page = await store.search(limit=4, page_token=token)
        rest += [o.order_id for o in page.orders]
        token = page.next_page_token
    assert [o.order_id for o in first.orders] + rest == newest_first(orders)


async def test_the_time_window_bounds_a_continued_page(client: CountingFakeRedis) -> None:
    store = OrderStore(client)
    orders = await stored(store, 5 * TIES)
    window = [o for o in orders if 1_001 <= o.created_at < 1_004]
    listed: list[str] = []
    token = ""
    while True:
        page = await store.search(start_ms=1_001, end_ms=1_004, limit=3, page_token=token)
        listed += [o.order_id for o in page.orders]
        token = page.next_page_token
        if not token:
            break
    assert listed == newest_first(window)


async def test_cancel_all_reads_the_unsettled_orders_not_the_history(client: CountingFakeRedis) -> None:
    store = OrderStore(client)
    history = await stored(store, ORDERS, canceled_every=1)  # every one CANCELED: settled, history only
    open_mine = [(await store.create(order_number(ORDERS + n, owner="alice"))).order for n in range(3)]
    others = [
        (await store.create(order_number(ORDERS + 10, owner="bob"))).order,
        (await store.create(order_number(ORDERS + 11, owner="alice", symbol="ETHUSDT"))).order,
    ]
    intake = Intake(store, RulesCache(RulesStore(client)), RiskSettings(), list_scan_cap=2)
    client.start_count()
    moved = await intake.handle(CancelAll("BTCUSDT"), Requester(caller=_caller("alice")))
    assert sorted(o.order_id for o in moved) == sorted(o.order_id for o in open_mine)
    assert all(o.state is S.CANCELED for o in moved)
    # Only the five unsettled orders were read (in batches of two), none of the history.
    assert client.index_entries_read == len(open_mine) + len(others)
    assert client.orders_fetched == len(open_mine) + len(others)
    for order in others:
        assert (await store.get(order.order_id)).state is S.NEW
    assert len(history) == ORDERS


def _caller(name: str) -> Caller:
    return Caller(name)
