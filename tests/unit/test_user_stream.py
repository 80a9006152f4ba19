"""User-data stream events: parsed as Binance sends them, and applied so order of arrival never matters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import fakeredis
import pytest
from prometheus_client import REGISTRY

from order_execution.exchange.user_stream import OrderEvent, parse_order_event
from order_execution.listener.order_events import OrderEventRecorder
from order_execution.orders import fsm
from order_execution.orders.model import Fill, Order, OrderState, now_ms
from order_execution.orders.store import OrderStore
from tests import factories

S = OrderState


def order_trade_update(
    execution: str,
    status: str,
    *,
    client_id: str = "oe-1",
    symbol: str = "BTCUSDT",
    last_qty: str = "0",
    cumulative: str = "0",
    last_price: str = "0",
    average: str = "0",
    trade_id: int = 0,
    fee: str | None = None,
    maker: bool = False,
) -> dict[str, Any]:
    """An ORDER_TRADE_UPDATE payload with Binance's fields; `n`/`N` only when `fee` is given."""
    o: dict[str, Any] = {
        "s": symbol,
        "c": client_id,
        "S": "BUY",
        "o": "LIMIT",
        "f": "GTC",
        "q": "0.010",
        "p": "50000",
        "ap": average,
        "sp": "0",
        "x": execution,
        "X": status,
        "i": 99,
        "l": last_qty,
        "z": cumulative,
        "L": last_price,
        "T": 1_700_000_000_123,
        "t": trade_id,
        "b": "0",
        "a": "0",
        "m": maker,
        "R": False,
        "wt": "CONTRACT_PRICE",
        "ot": "LIMIT",
        "ps": "BOTH",
        "cp": False,
        "rp": "0",
        "pP": False,
        "si": 0,
        "ss": 0,
        "V": "EXPIRE_TAKER",
        "pm": "NONE",
        "gtd": 0,
        "er": "0",
    }
    if fee is not None:
        o["n"], o["N"] = fee, "USDT"
    return {"e": "ORDER_TRADE_UPDATE", "E": 1_700_000_000_125, "T": 1_700_000_000_123, "o": o}


# Two trades of 0.010: 0.004 at 50000 (fee 0.02), then 0.006 at 50001 (fee 0.03).
FIRST_TRADE = order_trade_update(
    "TRADE",
    "PARTIALLY_FILLED",
    last_qty="0.004",
    cumulative="0.004",
    last_price="50000",
    average="50000",
    trade_id=1,
    fee="0.02",
)
LAST_TRADE = order_trade_update(
    "TRADE",
    "FILLED",
    last_qty="0.006",
    cumulative="0.010",
    last_price="50001",
    average="50000.6",
    trade_id=2,
    fee="0.03",
    maker=True,
)


def submitted() -> Order:
    return factories.make_order(state=S.SUBMITTED, exchange_order_id="99", version=3, created_at=1_000)


def applied(order: Order, *events: dict[str, Any]) -> Order:
    """`order` after each event in turn (events that change nothing leave it as it was)."""
    for event in events:
        order = fsm.apply_report(order, parse_order_event(event).report) or order
    return order


# --- parsing --------------------------------------------------------------------------------


def test_a_partial_trade_gives_its_state_totals_and_one_fill() -> None:
    event = parse_order_event(FIRST_TRADE)
    assert (event.client_order_id, event.symbol, event.event_time) == ("oe-1", "BTCUSDT", 1_700_000_000_125)
    report = event.report
    assert report.state is S.PARTIALLY_FILLED and report.exchange_order_id == "99"
    assert report.filled_quantity == Decimal("0.004") and report.average_price == Decimal("50000")
    assert report.fills == (
        Fill("1", Decimal("0.004"), Decimal("50000"), Decimal("0.02"), "USDT", False, 1_700_000_000_123),
    )


def test_the_last_trade_gives_filled_with_cumulative_totals() -> None:
    report = parse_order_event(LAST_TRADE).report
    assert report.state is S.FILLED
    assert report.filled_quantity == Decimal("0.010") and report.average_price == Decimal("50000.6")
    [fill] = report.fills
    assert (fill.trade_id, fill.quantity, fill.price) == ("2", Decimal("0.006"), Decimal("50001"))
    assert fill.fee == Decimal("0.03") and fill.maker


def test_an_acknowledgement_has_no_fill() -> None:
    report = parse_order_event(order_trade_update("NEW", "NEW")).report  # t=0, no n/N
    assert report.state is S.SUBMITTED and report.fills == ()
    assert report.filled_quantity == 0 and report.exchange_order_id == "99"


def test_a_cancel_gives_canceled_with_no_fill() -> None:
    event = order_trade_update("CANCELED", "CANCELED", cumulative="0.004", average="50000", fee="0")
    report = parse_order_event(event).report
    assert report.state is S.CANCELED and report.fills == ()
    assert report.filled_quantity == Decimal("0.004")


# --- applying -------------------------------------------------------------------------------


def test_the_same_event_twice_records_its_fill_once() -> None:
    once = applied(submitted(), FIRST_TRADE)
    assert fsm.apply_report(once, parse_order_event(FIRST_TRADE).report) is None
    assert len(once.fills) == 1 and once.filled_quantity == Decimal("0.004") and once.fee == Decimal("0.02")


def test_a_fill_after_the_cancel_keeps_canceled_and_records_the_fill() -> None:
    canceled = applied(submitted(), order_trade_update("CANCELED", "CANCELED"))
    assert canceled.state is S.CANCELED
    late = applied(canceled, FIRST_TRADE)
    assert late.state is S.CANCELED
    assert [f.trade_id for f in late.fills] == ["1"] and late.filled_quantity == Decimal("0.004")
    assert late.fee == Decimal("0.02") and fsm.is_settled(late)


def test_events_out_of_order_end_filled_with_both_fills_and_their_fees() -> None:
    early = applied(submitted(), LAST_TRADE)
    assert early.state is S.FILLED and not fsm.is_settled(early)  # 0.004 of it still unaccounted for
    order = applied(early, FIRST_TRADE)
    assert order.state is S.FILLED and order.filled_quantity == Decimal("0.010")
    assert sorted(f.trade_id for f in order.fills) == ["1", "2"]
    assert order.fee == Decimal("0.05") and order.average_price == Decimal("50000.6")
    assert fsm.is_settled(order)
    assert order == applied(submitted(), FIRST_TRADE, LAST_TRADE).replace(
        fills=order.fills, updated_at=order.updated_at
    )


# --- the recorder ---------------------------------------------------------------------------


@pytest.fixture
async def store() -> AsyncIterator[OrderStore]:
    client = fakeredis.FakeAsyncRedis()
    store = OrderStore(client)
    await store.create(factories.make_order())
    await store.transition("o1", lambda o: fsm.transition(o, S.SUBMITTING))
    yield store
    await client.aclose()


async def test_an_event_for_a_stored_order_is_applied(store: OrderStore) -> None:
    recorder = OrderEventRecorder(store)
    await recorder.record(parse_order_event(FIRST_TRADE))
    order = await store.get("o1")
    assert order.state is S.PARTIALLY_FILLED and [f.trade_id for f in order.fills] == ["1"]
    assert order.exchange_order_id == "99"
    await recorder.record(parse_order_event(FIRST_TRADE))  # the stream repeats itself
    assert await store.get("o1") == order
    assert (recorder.applied, recorder.foreign) == (1, 0)


async def test_each_stored_event_records_how_late_it_was_stored(store: OrderStore) -> None:
    def lag(account: str) -> tuple[float, float]:
        labels = {"account": account}
        count = REGISTRY.get_sample_value("order_execution_user_stream_lag_seconds_count", labels) or 0.0
        total = REGISTRY.get_sample_value("order_execution_user_stream_lag_seconds_sum", labels) or 0.0
        return count, total

    before, other_before = lag("default"), lag("other")
    await OrderEventRecorder(store).record(parse_order_event({**FIRST_TRADE, "E": now_ms() - 2500}))
    count, total = lag("default")
    assert count == before[0] + 1
    assert 2.5 <= total - before[1] < 3.5  # stored about 2.5 s after the exchange's event time
    assert lag("other") == other_before  # labelled with the stream's account


async def test_an_amendment_event_records_the_new_price_and_quantity(store: OrderStore) -> None:
    """Even when the worker that sent the PUT died before storing its answer."""
    recorder = OrderEventRecorder(store)
    await recorder.record(parse_order_event(order_trade_update("NEW", "NEW")))
    amendment = order_trade_update("AMENDMENT", "NEW")
    amendment["o"].update(p="49000", q="0.020")
    await recorder.record(parse_order_event(amendment))
    order = await store.get("o1")
    assert (order.state, order.price, order.quantity) == (S.SUBMITTED, Decimal("49000"), Decimal("0.020"))
    await recorder.record(parse_order_event(amendment))  # the stream repeats itself: nothing changes
    assert await store.get("o1") == order


@pytest.mark.parametrize(
    "event",
    [
        parse_order_event(order_trade_update("NEW", "NEW", client_id="manual-7")),
        parse_order_event(order_trade_update("NEW", "NEW", symbol="ETHUSDT")),  # our id, not our order
    ],
    ids=["unknown-client-id", "other-symbol"],
)
async def test_an_event_for_an_order_we_did_not_place_is_counted_and_ignored(
    store: OrderStore, event: OrderEvent
) -> None:
    before = await store.get("o1")
    versions = len(await store.outbox.range_after("0-0"))
    recorder = OrderEventRecorder(store)
    await recorder.record(event)
    assert (recorder.foreign, recorder.applied) == (1, 0)
    assert await store.get("o1") == before
    assert len(await store.outbox.range_after("0-0")) == versions
    assert await store.find_by_client_id("manual-7") is None
