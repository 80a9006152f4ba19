"""The listener with conditional orders: ALGO_UPDATE moves them, and the order one triggered is
read at once (its own events may come first) and linked, so its later events find it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import fakeredis
import httpx
import pytest

from order_execution.exchange.client import BinanceClient
from order_execution.exchange.user_stream import parse_algo_event, parse_order_event
from order_execution.listener.order_events import OrderEventRecorder
from order_execution.orders import fsm
from order_execution.orders.model import OrderState, OrderType
from order_execution.orders.store import OrderStore
from tests import factories
from tests.exchange_double import HandlerTransport
from tests.unit.test_user_stream import order_trade_update

S = OrderState


def algo_update(status: str, actual: str = "") -> dict[str, Any]:
    return {
        "e": "ALGO_UPDATE",
        "E": 1,
        "o": {"caid": "oe-1", "aid": 1000000001, "s": "BTCUSDT", "X": status, "ai": actual, "rm": ""},
    }


@pytest.fixture
async def parts() -> AsyncIterator[tuple[OrderStore, BinanceClient, list[httpx.Request]]]:
    client = fakeredis.FakeAsyncRedis()
    store = OrderStore(client)
    stop = factories.make_order(
        type=OrderType.STOP_MARKET, price=None, time_in_force=None, trigger_price=Decimal(49000)
    )
    await store.create(stop)
    await store.transition("o1", lambda o: fsm.transition(o, S.SUBMITTING))
    seen: list[httpx.Request] = []

    def exchange(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/fapi/v1/userTrades":
            rows = [
                {"id": 501, "orderId": 77, "qty": "0.010", "price": "48900", "commission": "0.2", "time": 1}
            ]
            return httpx.Response(200, content=json.dumps(rows).encode())
        body = {
            "status": "FILLED",
            "orderId": 77,
            "clientOrderId": "x-sim-77",
            "executedQty": "0.010",
            "avgPrice": "48900",
        }
        return httpx.Response(200, content=json.dumps(body).encode())

    exchange_client = BinanceClient(
        "http://x.test", api_key="k", secret_key="s", transport=HandlerTransport(exchange)
    )
    yield store, exchange_client, seen
    await exchange_client.close()
    await client.aclose()


async def test_waiting_triggered_then_the_resulting_order_is_read_and_linked(parts: Any) -> None:
    store, exchange, seen = parts
    recorder = OrderEventRecorder(store, exchange)
    await recorder.record(parse_algo_event(algo_update("NEW")))
    waiting = await store.get("o1")
    assert waiting.state is S.WAITING_TRIGGER and waiting.algo_id == "1000000001"

    await recorder.record(parse_algo_event(algo_update("TRIGGERED")))
    assert (await store.get("o1")).state is S.TRIGGERED
    # The triggered order's own event comes before anything names it: held as awaiting a link.
    early = order_trade_update("NEW", "NEW", client_id="x-sim-77")
    await recorder.record(parse_order_event(early))
    assert (recorder.foreign, recorder.awaiting_link) == (0, 1)

    await recorder.record(parse_algo_event(algo_update("FINISHED", actual="77")))
    filled = await store.get("o1")
    assert (
        filled.state is S.FILLED
        and filled.exchange_order_id == "77"
        and [f.trade_id for f in filled.fills] == ["501"]
    )
    assert [r.url.path for r in seen] == ["/fapi/v1/order", "/fapi/v1/userTrades"]
    assert dict(seen[0].url.params)["orderId"] == "77"
    assert (await store.find_by_client_id("x-sim-77")) is not None  # linked: its later events land

    late_fee = order_trade_update(
        "TRADE",
        "FILLED",
        client_id="x-sim-77",
        last_qty="0.010",
        cumulative="0.010",
        last_price="48900",
        trade_id=501,
        fee="0.2",
    )
    await recorder.record(parse_order_event(late_fee))  # the same trade again: nothing changes
    assert await store.get("o1") == filled


async def test_without_a_recent_trigger_an_unknown_order_is_foreign(parts: Any) -> None:
    store, exchange, _ = parts
    recorder = OrderEventRecorder(store, exchange)
    await recorder.record(parse_order_event(order_trade_update("NEW", "NEW", client_id="manual-1")))
    assert (recorder.foreign, recorder.awaiting_link) == (1, 0)


async def test_an_algo_rejection_is_final(parts: Any) -> None:
    store, exchange, _ = parts
    recorder = OrderEventRecorder(store, exchange)
    await recorder.record(parse_algo_event(algo_update("NEW")))
    rejected = algo_update("REJECTED")
    rejected["o"]["rm"] = "Margin is insufficient."
    await recorder.record(parse_algo_event(rejected))
    order = await store.get("o1")
    assert order.state is S.REJECTED and "Margin is insufficient." in order.reject_reason
