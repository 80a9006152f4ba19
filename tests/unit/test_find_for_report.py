"""User-stream news the stored order already reflects is answered in the lookup's round trip.

`OrderStore.find_for_report` checks in Redis (FIND_FOR_REPORT) whether the stored order already
shows everything an exchange report says. The check must never call news old (the event would
be lost): these tests hold it to `fsm.apply_report` over every pair of states, and show that the
listener then neither decodes the order nor writes, while news is applied exactly as before.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import fakeredis
import pytest

from order_execution.exchange.user_stream import OrderEvent, parse_order_event
from order_execution.listener.order_events import OrderEventRecorder, implied_by
from order_execution.orders import fsm
from order_execution.orders.errors import StoreUnavailable
from order_execution.orders.model import Fill, Order, OrderState
from order_execution.orders.store import OrderStore
from tests import factories
from tests.unit.test_user_stream import order_trade_update

S = OrderState

FILL_1 = Fill("1", Decimal("0.004"), Decimal("50000"), Decimal("0.02"), "USDT")
FILL_2 = Fill("2", Decimal("0.006"), Decimal("50001"), Decimal("0.03"), "USDT")


@pytest.fixture
async def store() -> AsyncIterator[OrderStore]:
    client = fakeredis.FakeAsyncRedis()
    yield OrderStore(client)
    await client.aclose()


# (stored filled, stored fills, exchange id, algo id) x (reported filled, trade ids, exchange id, algo id):
# each field of the report below, equal to and above what is stored, known and new.
_STORED = [
    (Decimal(0), (), "", ""),
    (Decimal("0.004"), (FILL_1,), "99", ""),
    (Decimal("0.010"), (), "99", ""),  # FILLED from the REST reply: no trades yet
    (Decimal("0.010"), (FILL_1, FILL_2), "99", "7"),
]
_REPORTED: list[tuple[Decimal, tuple[Fill, ...], str, str]] = [
    (Decimal(0), (), "", ""),
    (Decimal(0), (), "99", ""),
    (Decimal(0), (), "", "7"),
    (Decimal("0.00400"), (FILL_1,), "99", ""),  # trailing zeros, as Binance writes them
    (Decimal("0.004"), (), "99", ""),
    (Decimal("0.010"), (FILL_2,), "99", ""),
    (Decimal("0.0100000001"), (), "99", ""),
    (Decimal("10.01"), (), "99", ""),  # more integer digits than stored
]


async def test_the_script_calls_a_report_old_exactly_when_the_state_machine_changes_nothing(
    store: OrderStore,
) -> None:
    """Over every stored state x every reported state x the variants above: `reflected` if and only
    if `apply_report` returns None (a report it called old by mistake would be lost)."""
    disagreements: list[str] = []
    n = 0
    for (stored_state, report_state), stored, reported in itertools.product(
        itertools.product(S, S), _STORED, _REPORTED
    ):
        n += 1
        filled, fills, exchange_id, algo_id = stored
        order = factories.make_order(
            order_id=f"o{n}",
            client_order_id=f"c{n}",
            state=stored_state,
            filled_quantity=filled,
            fills=fills,
            exchange_order_id=exchange_id,
            algo_id=algo_id,
        )
        await store.create(order)
        stored_order = await store.get(order.order_id)
        report = fsm.ExchangeReport(
            report_state,
            filled_quantity=reported[0],
            fills=reported[1],
            exchange_order_id=reported[2],
            algo_id=reported[3],
        )
        lookup = await store.find_for_report(f"c{n}", report, symbol="BTCUSDT")
        unchanged = fsm.apply_report(stored_order, report) is None
        if lookup.reflected != unchanged or (not unchanged and lookup.order != stored_order):
            disagreements.append(f"{stored} {stored_state} <- {reported} {report_state}: {lookup}")
    assert n == 12 * 12 * 4 * 8
    assert disagreements == []


async def test_not_found_other_symbol_and_other_account(store: OrderStore) -> None:
    """No order: None. Another symbol: the order, for the listener to judge it foreign. Client ids are
    per account: the account's own order is the one checked."""
    await store.create(factories.make_order(state=S.SUBMITTED, exchange_order_id="99"))
    await store.create(factories.make_order(order_id="o2", account="b"))  # same client id, account b
    report = fsm.ExchangeReport(S.SUBMITTED, exchange_order_id="99")
    assert (await store.find_for_report("nobody", report, symbol="BTCUSDT")).order is None
    assert not (await store.find_for_report("nobody", report, symbol="BTCUSDT")).reflected
    other = await store.find_for_report("oe-1", report, symbol="ETHUSDT")
    assert other.order is not None and other.order.order_id == "o1" and not other.reflected
    assert (await store.find_for_report("oe-1", report, symbol="BTCUSDT")).reflected
    in_b = await store.find_for_report("oe-1", report, symbol="BTCUSDT", account="b")
    assert in_b.order is not None and in_b.order.order_id == "o2"  # NEW in b: the report is news there


# --- the listener ---------------------------------------------------------------------------


class Counts:
    """How often the recorder decoded an order and how often the store ran its compare-and-set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: OrderStore) -> None:
        self.decodes = 0
        self.writes = 0
        decode = Order.from_json.__func__  # type: ignore[attr-defined]

        def counting_decode(cls: type[Order], text: str | bytes) -> Order:
            self.decodes += 1
            return decode(cls, text)  # type: ignore[no-any-return]

        monkeypatch.setattr(Order, "from_json", classmethod(counting_decode))
        cas = store._cas

        async def counting_cas(**kwargs: Any) -> Any:
            self.writes += 1
            return await cas(**kwargs)

        monkeypatch.setattr(store, "_cas", counting_cas)

    def reset(self) -> None:
        self.decodes = self.writes = 0


async def stored_market_fill(store: OrderStore) -> Order:
    """o1 as the worker stores it from the REST reply of a MARKET order that filled at once: FILLED,
    filled 0.010, no trades yet (the reply carries none)."""
    await store.create(factories.make_order())
    await store.transition("o1", lambda o: fsm.transition(o, S.SUBMITTING))
    reply = fsm.ExchangeReport(S.FILLED, Decimal("0.010"), Decimal("50000.6"), "99")
    return (await store.transition("o1", lambda o: fsm.apply_report(o, reply))).order


def event(execution: str, status: str, **fields: Any) -> OrderEvent:
    return parse_order_event(order_trade_update(execution, status, **fields))


TRADE_1 = {"last_qty": "0.004", "cumulative": "0.004", "last_price": "50000", "trade_id": 1, "fee": "0.02"}
TRADE_2 = {"last_qty": "0.006", "cumulative": "0.010", "last_price": "50001", "trade_id": 2, "fee": "0.03"}


async def test_old_news_costs_no_decode_and_no_write(
    store: OrderStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The NEW of an order already FILLED, and a trade already recorded, come back as "reflected":
    no order is decoded, nothing is written, nothing reaches the outbox."""
    await stored_market_fill(store)
    recorder = OrderEventRecorder(store)
    await recorder.record(event("TRADE", "PARTIALLY_FILLED", **TRADE_1))
    await recorder.record(event("TRADE", "FILLED", **TRADE_2))
    before, versions = await store.get("o1"), len(await store.outbox.range_after("0-0"))
    counts = Counts(monkeypatch, store)
    for old in (
        event("NEW", "NEW"),  # the exchange's ack, after the REST reply stored FILLED
        event("TRADE", "FILLED", **TRADE_2),  # a trade the stream repeats
        event("TRADE", "PARTIALLY_FILLED", **TRADE_1),  # an earlier trade, late
    ):
        await recorder.record(old)
    assert (counts.decodes, counts.writes) == (0, 0)
    assert (recorder.reflected, recorder.applied) == (3, 2)
    assert await store.get("o1") == before
    assert len(await store.outbox.range_after("0-0")) == versions


async def test_news_is_applied_exactly_as_the_state_machine_says(
    store: OrderStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trade not yet recorded on an order already FILLED (from the REST reply): the order is decoded
    once, the change is what `apply_report` makes of it, one write, one outbox entry."""
    stored = await stored_market_fill(store)
    counts = Counts(monkeypatch, store)
    recorder = OrderEventRecorder(store)
    news = event("TRADE", "PARTIALLY_FILLED", **TRADE_1)
    await recorder.record(news)
    expected = fsm.apply_report(stored, news.report)
    assert expected is not None
    after = await store.get("o1")
    assert after.replace(updated_at=0) == expected.replace(version=stored.version + 1, updated_at=0)
    assert [f.trade_id for f in after.fills] == ["1"] and after.state is S.FILLED
    assert (counts.writes, recorder.applied, recorder.reflected) == (1, 1, 0)
    assert counts.decodes == 2  # the lookup's answer, and `get` above
    assert (await store.outbox.range_after("0-0"))[-1].order == after


async def test_each_trade_is_recorded_once_whatever_the_order_of_arrival(store: OrderStore) -> None:
    await stored_market_fill(store)
    recorder = OrderEventRecorder(store)
    stream = [
        event("TRADE", "FILLED", **TRADE_2),
        event("NEW", "NEW"),
        event("TRADE", "FILLED", **TRADE_2),
        event("TRADE", "PARTIALLY_FILLED", **TRADE_1),
        event("TRADE", "PARTIALLY_FILLED", **TRADE_1),
    ]
    for news in stream:
        await recorder.record(news)
    order = await store.get("o1")
    assert sorted(f.trade_id for f in order.fills) == ["1", "2"]
    assert (order.state, order.filled_quantity, order.fee) == (S.FILLED, Decimal("0.010"), Decimal("0.05"))
    assert fsm.is_settled(order)
    assert (recorder.applied, recorder.reflected) == (2, 3)


@pytest.mark.parametrize(
    "later", [lambda o: o, lambda o: o.replace(symbol="ETHUSDT")], ids=["same-order", "other-symbol"]
)
async def test_an_order_of_another_symbol_is_still_foreign(
    store: OrderStore, later: Callable[[Order], Order]
) -> None:
    stored = await stored_market_fill(store)
    recorder = OrderEventRecorder(store)
    await recorder.record(event("NEW", "NEW", symbol=later(stored).symbol))
    foreign = later(stored).symbol != stored.symbol
    assert (recorder.foreign, recorder.reflected) == ((1, 0) if foreign else (0, 1))


# --- an order's events that arrive together ---------------------------------------------------


class Lookups:
    """Counts the store's lookups: single ones, and shared ones (one round trip each)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: OrderStore) -> None:
        self.single = 0
        self.shared: list[int] = []
        find_one, find_many = store.find_for_report, store.find_for_reports

        async def one(*args: Any, **kwargs: Any) -> Any:
            self.single += 1
            return await find_one(*args, **kwargs)

        async def many(lookups: Any, *args: Any) -> Any:
            self.shared.append(len(lookups))
            return await find_many(lookups, *args)

        monkeypatch.setattr(store, "find_for_report", one)
        monkeypatch.setattr(store, "find_for_reports", many)


async def submitted(store: OrderStore) -> Order:
    """o1 claimed by a worker (SUBMITTING), the exchange's answer not stored yet."""
    await store.create(factories.make_order())
    return (await store.transition("o1", lambda o: fsm.transition(o, S.SUBMITTING))).order


async def one_by_one(events: list[OrderEvent]) -> Order:
    """The order after `events` applied one at a time, each with its own lookup, on a store of its own."""
    client = fakeredis.FakeAsyncRedis()
    store = OrderStore(client)
    await submitted(store)
    recorder = OrderEventRecorder(store)
    for news in events:
        await recorder.record(news)
    order = await store.get("o1")
    await client.aclose()
    return order


def without_times(order: Order) -> Order:
    return order.replace(updated_at=0, created_at=0)


def without_versions(order: Order) -> Order:
    """`order` without what an acceptance applied on its own adds: its version, and the times."""
    return without_times(order).replace(version=0)


async def test_an_orders_events_that_arrive_together_share_one_lookup(
    store: OrderStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NEW, a trade, the same trade again, the last trade: the NEW is implied by the trade right after
    it, one lookup round trip for the three others, the events after the first change applied to the
    order as it left it; the result is what applying all four one by one gives."""
    await submitted(store)
    batch = [
        event("NEW", "NEW"),
        event("TRADE", "PARTIALLY_FILLED", **TRADE_1),
        event("TRADE", "PARTIALLY_FILLED", **TRADE_1),
        event("TRADE", "FILLED", **TRADE_2),
    ]
    lookups, counts = Lookups(monkeypatch, store), Counts(monkeypatch, store)
    recorder = OrderEventRecorder(store)
    await recorder.record_all(batch)
    assert (lookups.shared, lookups.single, recorder.coalesced) == ([3], 0, 1)
    assert counts.writes == 2 and recorder.applied == 2  # trade 1, trade 2; the repeat wrote nothing
    order = await store.get("o1")
    assert without_versions(order) == without_versions(await one_by_one(batch))
    assert order.state is S.FILLED and [f.trade_id for f in order.fills] == ["1", "2"]
    versions = [entry.order.state for entry in await store.outbox.range_after("0-0")]
    assert versions == [S.NEW, S.SUBMITTING, S.PARTIALLY_FILLED, S.FILLED]  # in order


async def test_old_news_in_a_batch_costs_nothing_more(
    store: OrderStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The NEW, a repeated trade and a new one of an order the worker stored FILLED, arriving
    together: one round trip, the new trade written, the NEW not even looked up (the trade after it
    implies it), the repeat neither decoded nor written."""
    stored = await stored_market_fill(store)
    await OrderEventRecorder(store).record(event("TRADE", "PARTIALLY_FILLED", **TRADE_1))
    lookups, counts = Lookups(monkeypatch, store), Counts(monkeypatch, store)
    recorder = OrderEventRecorder(store)
    batch = [
        event("NEW", "NEW"),
        event("TRADE", "PARTIALLY_FILLED", **TRADE_1),
        event("TRADE", "FILLED", **TRADE_2),
    ]
    await recorder.record_all(batch)
    assert (lookups.shared, lookups.single, counts.writes, counts.decodes) == ([2], 0, 1, 1)
    assert (recorder.coalesced, recorder.reflected, recorder.applied) == (1, 1, 1)
    assert (await store.get("o1")).version == stored.version + 2


async def test_a_write_by_someone_else_after_the_shared_lookup_is_not_overwritten(
    store: OrderStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker stores the REST reply (FILLED) between the batch's lookup and its writes: the
    compare-and-set sees it, the events are applied on top of it, nothing is lost."""
    await submitted(store)
    find_many = store.find_for_reports

    async def then_the_worker_writes(lookups: Any, *args: Any) -> Any:
        found = await find_many(lookups, *args)
        reply = fsm.ExchangeReport(S.FILLED, Decimal("0.010"), Decimal("50000.6"), "99")
        await store.transition("o1", lambda o: fsm.apply_report(o, reply))
        return found

    monkeypatch.setattr(store, "find_for_reports", then_the_worker_writes)
    recorder = OrderEventRecorder(store)
    await recorder.record_all(
        [event("TRADE", "PARTIALLY_FILLED", **TRADE_1), event("TRADE", "FILLED", **TRADE_2)]
    )
    order = await store.get("o1")
    assert (order.state, order.filled_quantity, [f.trade_id for f in order.fills]) == (
        S.FILLED,
        Decimal("0.010"),
        ["1", "2"],
    )


async def test_a_failed_shared_lookup_leaves_each_event_to_look_itself_up(
    store: OrderStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await submitted(store)

    async def unavailable(*args: Any) -> Any:
        raise StoreUnavailable("order store (Redis) unreachable; retry shortly")

    monkeypatch.setattr(store, "find_for_reports", unavailable)
    recorder = OrderEventRecorder(store)
    await recorder.record_all(
        [event("TRADE", "PARTIALLY_FILLED", **TRADE_1), event("TRADE", "FILLED", **TRADE_2)]
    )
    order = await store.get("o1")
    assert (order.state, [f.trade_id for f in order.fills]) == (S.FILLED, ["1", "2"])


async def test_an_amendment_in_a_batch_is_looked_up_whole(
    store: OrderStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await submitted(store)
    amendment = order_trade_update("AMENDMENT", "NEW")
    amendment["o"].update(p="49000", q="0.020")
    batch = [event("NEW", "NEW"), parse_order_event(amendment), parse_order_event(amendment)]
    lookups = Lookups(monkeypatch, store)
    await OrderEventRecorder(store).record_all(batch)
    order = await store.get("o1")
    assert lookups.shared == [3]
    assert (order.state, order.price, order.quantity) == (S.SUBMITTED, Decimal("49000"), Decimal("0.020"))
    assert without_times(order) == without_times(await one_by_one(batch))


@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize("exchange_id", ["", "99"])
@pytest.mark.parametrize("trade", [TRADE_1, TRADE_2])
def test_a_trade_leaves_the_order_as_the_acceptance_before_it_and_the_trade_would(
    state: OrderState, exchange_id: str, trade: dict[str, Any]
) -> None:
    """Why an acceptance right before a trade may be skipped: from every state, with or without the
    exchange id stored, the trade alone makes the order the acceptance and the trade make it."""
    order = factories.make_order(state=state, exchange_order_id=exchange_id)
    accepted, traded = (
        event("NEW", "NEW"),
        event("TRADE", "FILLED" if trade is TRADE_2 else "PARTIALLY_FILLED", **trade),
    )
    assert implied_by(accepted, traded)
    after_new = fsm.apply_report(order, accepted.report) or order
    both = fsm.apply_report(after_new, traded.report) or after_new
    alone = fsm.apply_report(order, traded.report) or order
    assert without_times(alone) == without_times(both)


def test_only_a_plain_acceptance_right_before_a_trade_of_the_same_order_is_implied() -> None:
    """A trade (each carries its own fill and fee), an amendment, a final state, an algo's news, an
    acceptance before anything but a trade of the same order: never skipped."""
    accepted, trade = event("NEW", "NEW"), event("TRADE", "PARTIALLY_FILLED", **TRADE_1)
    amendment = order_trade_update("AMENDMENT", "NEW")
    amendment["o"].update(p="49000", q="0.020")
    algo = OrderEvent("oe-1", "BTCUSDT", accepted.report, 0, conditional=True)
    other_order = dataclasses.replace(trade, client_order_id="oe-2")
    other_id = dataclasses.replace(trade, report=dataclasses.replace(trade.report, exchange_order_id="98"))
    for first, after in [
        (accepted, None),
        (trade, event("TRADE", "FILLED", **TRADE_2)),
        (accepted, parse_order_event(amendment)),
        (parse_order_event(amendment), trade),
        (accepted, event("CANCELED", "CANCELED")),
        (event("EXPIRED", "EXPIRED"), trade),
        (algo, trade),
        (accepted, OrderEvent("oe-1", "BTCUSDT", trade.report, 0, conditional=True)),
        (accepted, other_order),
        (accepted, other_id),
        (accepted, event("NEW", "NEW")),
    ]:
        assert not implied_by(first, after), (first, after)


async def test_a_coalesced_batch_stores_what_applying_every_event_stores(store: OrderStore) -> None:
    """NEW, trade, NEW (a repeat), trade, CANCELED after an amendment: the two acceptances before a
    trade are skipped and counted, the rest applied; the order is what applying every event one by
    one makes it (but for the versions the skipped ones would have added)."""
    await submitted(store)
    amendment = order_trade_update("AMENDMENT", "PARTIALLY_FILLED", cumulative="0.004")
    amendment["o"].update(p="49000", q="0.020")
    batch = [
        event("NEW", "NEW"),
        event("TRADE", "PARTIALLY_FILLED", **TRADE_1),
        event("NEW", "NEW"),
        event("TRADE", "FILLED", **TRADE_2),
        parse_order_event(amendment),
        event("CANCELED", "CANCELED"),
    ]
    recorder = OrderEventRecorder(store)
    await recorder.record_all(batch)
    order = await store.get("o1")
    assert recorder.coalesced == 2
    assert without_versions(order) == without_versions(await one_by_one(batch))
    assert (order.state, [f.trade_id for f in order.fills], order.fee) == (
        S.FILLED,
        ["1", "2"],
        Decimal("0.05"),
    )


@pytest.mark.parametrize(
    "rewrite",
    [
        lambda text: text.replace('":"', '": "'),  # another JSON layout: nothing is read, nothing assumed
        lambda text: text.replace('"filled_quantity":"0.004"', '"filled_quantity":"4E-3"'),
        lambda text: text.replace('"state":"SUBMITTED",', ""),
    ],
    ids=["spaces", "exponent", "no-state"],
)
async def test_an_order_json_of_another_form_is_returned_not_judged(
    store: OrderStore, rewrite: Callable[[str], str]
) -> None:
    order = factories.make_order(
        state=S.SUBMITTED, filled_quantity=Decimal("0.004"), fills=(FILL_1,), exchange_order_id="99"
    )
    await store.create(order)
    report = fsm.ExchangeReport(S.SUBMITTED, filled_quantity=Decimal("0.004"), exchange_order_id="99")
    assert (await store.find_for_report("oe-1", report, symbol="BTCUSDT")).reflected  # as stored: old news
    key = "oe:order:o1"
    stored = await store._redis.hget(key, "data")
    assert isinstance(stored, bytes)
    await store._redis.hset(key, "data", rewrite(stored.decode()))
    assert not (await store.find_for_report("oe-1", report, symbol="BTCUSDT")).reflected


async def test_a_value_holding_a_key_and_quotes_cannot_fake_a_field(store: OrderStore) -> None:
    """A free-text field is escaped in the JSON: a reason that spells `"state":"FILLED"` is not read."""
    order = factories.make_order(
        state=S.SUBMITTED, exchange_order_id="99", reject_reason='x","state":"FILLED'
    )
    await store.create(order)
    report = fsm.ExchangeReport(S.CANCELED, exchange_order_id="99")  # moves SUBMITTED, not FILLED
    assert not (await store.find_for_report("oe-1", report, symbol="BTCUSDT")).reflected
