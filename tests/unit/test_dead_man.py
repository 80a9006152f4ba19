"""The dead-man switch: which symbols it arms, re-arms and disarms, and what it leaves alone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import fakeredis
import pytest

from order_execution.listener.dead_man import DeadManSwitch
from order_execution.orders import fsm
from order_execution.orders.model import Order, OrderState
from order_execution.orders.store import OrderStore
from tests import factories


class Countdowns:
    """Records every countdownCancelAll call; can be told to fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail = False

    async def countdown_cancel_all(self, symbol: str, countdown_ms: int) -> None:
        if self.fail:
            raise RuntimeError("exchange down")
        self.calls.append((symbol, countdown_ms))


@pytest.fixture
async def store() -> AsyncIterator[OrderStore]:
    redis = fakeredis.FakeAsyncRedis()
    yield OrderStore(redis, ttl_s=3600)
    await redis.aclose()


async def _place(store: OrderStore, n: int, symbol: str, *path: OrderState) -> None:
    order = factories.make_order(order_id=f"o{n}", client_order_id=f"oe-{n}", symbol=symbol)
    await store.create(order)
    for state in path:
        assert (await store.transition(order.order_id, _to(state))).changed


def _to(state: OrderState) -> Callable[[Order], Order | None]:
    return lambda o: fsm.transition(o, state)


async def test_nothing_is_sent_while_no_order_is_open(store: OrderStore) -> None:
    exchange = Countdowns()
    switch = DeadManSwitch(store, exchange, countdown_ms=120_000)
    await switch.beat()
    await switch.beat()
    assert exchange.calls == [] and switch.beats == 2


async def test_arms_symbols_with_open_orders_and_rearms_each_beat(store: OrderStore) -> None:
    await _place(store, 1, "BTCUSDT", OrderState.SUBMITTING, OrderState.SUBMITTED)
    await _place(store, 2, "BTCUSDT")  # NEW: about to be sent, armed too
    await _place(store, 3, "ETHUSDT", OrderState.SUBMITTING, OrderState.SUBMITTED)
    await _place(store, 4, "SOLUSDT", OrderState.REJECTED)
    exchange = Countdowns()
    switch = DeadManSwitch(store, exchange, countdown_ms=90_000)
    await switch.beat()
    await switch.beat()
    assert exchange.calls == [("BTCUSDT", 90_000), ("ETHUSDT", 90_000)] * 2
    assert switch.armed == {"BTCUSDT", "ETHUSDT"}


async def test_disarms_a_symbol_once_its_last_order_is_final(store: OrderStore) -> None:
    await _place(store, 1, "BTCUSDT", OrderState.SUBMITTING, OrderState.SUBMITTED)
    await _place(store, 2, "ETHUSDT", OrderState.SUBMITTING, OrderState.SUBMITTED)
    exchange = Countdowns()
    switch = DeadManSwitch(store, exchange, countdown_ms=120_000)
    await switch.beat()
    await store.transition("o2", lambda o: fsm.transition(o, OrderState.CANCELED))
    exchange.calls.clear()
    await switch.beat()
    assert exchange.calls == [("BTCUSDT", 120_000), ("ETHUSDT", 0)]
    exchange.calls.clear()
    await switch.beat()
    assert exchange.calls == [("BTCUSDT", 120_000)]  # disarmed once, not every beat


async def test_open_symbols_pages_through_many_orders(store: OrderStore) -> None:
    for n in range(1, 1203):
        await _place(store, n, "BTCUSDT" if n < 1202 else "XRPUSDT")
    switch = DeadManSwitch(store, Countdowns(), countdown_ms=120_000)
    assert await switch.open_symbols() == {"BTCUSDT", "XRPUSDT"}


async def test_a_failed_beat_keeps_what_it_armed_for_a_later_disarm(store: OrderStore) -> None:
    await _place(store, 1, "BTCUSDT", OrderState.SUBMITTING, OrderState.SUBMITTED)
    exchange = Countdowns()
    switch = DeadManSwitch(store, exchange, countdown_ms=120_000)
    await switch.beat()
    await store.transition("o1", lambda o: fsm.transition(o, OrderState.CANCELED))
    exchange.fail = True
    with pytest.raises(RuntimeError):
        await switch.beat()
    assert switch.armed == {"BTCUSDT"}
    exchange.fail = False
    await switch.beat()
    assert exchange.calls[-1] == ("BTCUSDT", 0) and switch.armed == set()
