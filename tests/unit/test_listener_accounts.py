"""One listener serving several exchange accounts: each account's stream, reconciler and dead-man
switch touch only that account's orders, even where two accounts use the same client order id
(Binance scopes client ids per account, so they may)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import fakeredis
import httpx
import pytest

from order_execution.exchange.client import BinanceClient
from order_execution.exchange.user_stream import parse_algo_event, parse_order_event
from order_execution.listener.dead_man import DeadManSwitch
from order_execution.listener.order_events import OrderEventRecorder
from order_execution.listener.reconciler import Reconciler
from order_execution.orders import fsm
from order_execution.orders.model import Order, OrderState, OrderType, now_ms
from order_execution.orders.store import OrderStore
from tests import factories
from tests.exchange_double import HandlerTransport
from tests.unit.test_algo_events import algo_update
from tests.unit.test_dead_man import Countdowns
from tests.unit.test_reconciler import POLICY, Venue
from tests.unit.test_user_stream import order_trade_update

S = OrderState
B = "b"  # the second account; the first is `default`


@pytest.fixture
async def store() -> AsyncIterator[OrderStore]:
    redis = fakeredis.FakeAsyncRedis()
    yield OrderStore(redis, ttl_s=3600)
    await redis.aclose()


def to(state: OrderState) -> Callable[[Order], Order | None]:
    return lambda o: fsm.transition(o, state)


async def place(store: OrderStore, order_id: str, account: str, *path: OrderState, **fields: Any) -> Order:
    """Order `order_id` of `account`, client id `oe-1` whatever the account, moved along `path`."""
    order = factories.make_order(order_id=order_id, client_order_id="oe-1", account=account, **fields)
    await store.create(order)
    for state in path:
        assert (await store.transition(order_id, to(state))).changed, state
    return await store.get(order_id)


# --- the user-data stream --------------------------------------------------------------------


async def test_an_accounts_events_move_its_own_order_and_never_the_same_client_id_of_another(
    store: OrderStore,
) -> None:
    a = await place(store, "oa", "default", S.SUBMITTING)
    await place(store, "ob", B, S.SUBMITTING)
    filled = order_trade_update(
        "TRADE", "FILLED", last_qty="0.010", cumulative="0.010", last_price="50000", trade_id=7
    )
    recorder_b = OrderEventRecorder(store, account=B)
    await recorder_b.record(parse_order_event(filled))
    order_b = await store.get("ob")
    assert order_b.state is S.FILLED and [f.trade_id for f in order_b.fills] == ["7"]
    assert await store.get("oa") == a  # the default account's oe-1: not touched
    assert (recorder_b.applied, recorder_b.foreign) == (1, 0)

    recorder_a = OrderEventRecorder(store)  # the account `default`
    await recorder_a.record(parse_order_event(order_trade_update("CANCELED", "CANCELED")))
    assert (await store.get("oa")).state is S.CANCELED
    assert await store.get("ob") == order_b


async def test_an_event_of_a_client_id_only_another_account_has_is_foreign(store: OrderStore) -> None:
    await place(store, "ob", B, S.SUBMITTING)
    recorder = OrderEventRecorder(store)  # the account `default`, which has no oe-1
    await recorder.record(parse_order_event(order_trade_update("NEW", "NEW")))
    assert (recorder.applied, recorder.foreign) == (0, 1)
    assert (await store.get("ob")).state is S.SUBMITTING


async def test_the_order_a_conditional_order_triggered_is_linked_in_its_account(store: OrderStore) -> None:
    a = await place(store, "oa", "default", S.SUBMITTING)
    stop = {
        "type": OrderType.STOP_MARKET,
        "price": None,
        "time_in_force": None,
        "trigger_price": Decimal(49000),
    }
    await place(store, "ob", B, S.SUBMITTING, **stop)

    def exchange(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/fapi/v1/userTrades":
            rows = [
                {"id": 501, "orderId": 77, "qty": "0.010", "price": "48900", "commission": "0", "time": 1}
            ]
            return httpx.Response(200, content=json.dumps(rows).encode())
        body = {"status": "FILLED", "orderId": 77, "clientOrderId": "x-sim-77", "executedQty": "0.010"}
        return httpx.Response(200, content=json.dumps(body).encode())

    client = BinanceClient("http://x.test", api_key="k", secret_key="s", transport=HandlerTransport(exchange))
    recorder = OrderEventRecorder(store, client, account=B)
    for status, actual in (("NEW", ""), ("TRIGGERED", ""), ("FINISHED", "77")):
        await recorder.record(parse_algo_event(algo_update(status, actual)))
    await client.close()
    assert (await store.get("ob")).state is S.FILLED
    linked = await store.find_by_client_id("x-sim-77", B)
    assert linked is not None and linked.order_id == "ob"
    assert await store.find_by_client_id("x-sim-77") is None  # not in the default account
    assert await store.get("oa") == a


# --- the reconciler ------------------------------------------------------------------------


@dataclass
class Exchange:
    venue: Venue
    client: BinanceClient


@pytest.fixture
async def exchanges() -> AsyncIterator[dict[str, Exchange]]:
    """One scripted exchange account per account name, each with its own client."""
    made = {}
    for name in ("default", B):
        venue = Venue()
        transport = HandlerTransport(venue.handle)
        made[name] = Exchange(
            venue, BinanceClient("http://x.test", api_key="k", secret_key="s", transport=transport)
        )
    yield made
    for exchange in made.values():
        await exchange.client.close()


async def queued(store: OrderStore, account: str) -> list[tuple[str, dict[str, Any]]]:
    """(actor, kwargs) of each message waiting on `account`'s BTCUSDT queue."""
    return await factories.queued_messages(store._redis, "BTCUSDT", account)


async def aged(store: OrderStore, order_id: str, *, quiet_ms: int) -> None:
    then = now_ms() - quiet_ms
    await store.transition(order_id, lambda o: o.replace(updated_at=then, sent_at=then))


async def test_a_sweep_settles_only_its_accounts_orders_with_its_accounts_client(
    store: OrderStore, exchanges: dict[str, Exchange]
) -> None:
    # The same client id in both accounts, both UNKNOWN long enough to be queried.
    for order_id, account in (("oa", "default"), ("ob", B)):
        await place(store, order_id, account, S.SUBMITTING, S.UNKNOWN, created_at=now_ms() - 30_000)
        await aged(store, order_id, quiet_ms=5_000)
    exchanges[B].venue.add("oe-1", "FILLED", "0.010")
    exchanges["default"].venue.add("oe-1", "NEW")
    result = await Reconciler(store, exchanges[B].client, POLICY, account=B).sweep()
    assert result.looked_at == 1 and result.changed == 1
    assert (await store.get("ob")).state is S.FILLED
    assert (await store.get("oa")).state is S.UNKNOWN  # the other account's: left to its own sweep
    assert exchanges[B].venue.calls() == ["GET order oe-1", "GET userTrades 99"]
    assert exchanges["default"].venue.calls() == []

    await Reconciler(store, exchanges["default"].client, POLICY).sweep()
    assert (await store.get("oa")).state is S.SUBMITTED
    assert exchanges["default"].venue.calls() == ["GET order oe-1"]


async def test_a_stuck_new_order_is_queued_again_on_its_accounts_queue(
    store: OrderStore, exchanges: dict[str, Exchange]
) -> None:
    for order_id, account in (("oa", "default"), ("ob", B)):
        await place(store, order_id, account, created_at=now_ms() - 5_000)
    await Reconciler(store, exchanges[B].client, POLICY, account=B).sweep()
    assert await queued(store, B) == [("submit_order", {"order_id": "ob", "account": B})]
    assert await queued(store, "default") == []


async def test_an_accounts_open_order_at_the_exchange_with_a_client_id_only_another_account_has_is_foreign(
    store: OrderStore, exchanges: dict[str, Exchange]
) -> None:
    await place(store, "oa", "default", S.SUBMITTING, S.SUBMITTED)  # the default account's oe-1
    mine = factories.make_order(
        order_id="ob", client_order_id="oe-2", account=B, created_at=now_ms() - 30_000
    )
    await store.create(mine)
    for state in (S.SUBMITTING, S.SUBMITTED):
        await store.transition("ob", to(state))
    await aged(store, "ob", quiet_ms=5_000)  # due: the sweep reads the account's open orders
    exchanges[B].venue.add("oe-2", "NEW")
    exchanges[B].venue.add("oe-1", "NEW", exchange_id=98)  # placed at account b behind our back
    reconciler = Reconciler(store, exchanges[B].client, POLICY, account=B)
    result = await reconciler.sweep()
    assert result.unknown_at_exchange == ["oe-1"] and reconciler.unknown_orders_seen == 1


# --- the dead-man switch --------------------------------------------------------------------


async def test_the_dead_man_switch_arms_only_its_accounts_symbols(store: OrderStore) -> None:
    await place(store, "oa", "default", S.SUBMITTING, S.SUBMITTED)
    await place(store, "ob", B, S.SUBMITTING, S.SUBMITTED, symbol="ETHUSDT")
    countdowns = {name: Countdowns() for name in ("default", B)}
    for name, exchange in countdowns.items():
        await DeadManSwitch(store, exchange, countdown_ms=60_000, account=name).beat()
    assert countdowns["default"].calls == [("BTCUSDT", 60_000)]
    assert countdowns[B].calls == [("ETHUSDT", 60_000)]
