"""The reconciler settles stuck orders by evidence only, within its query budget, and never re-POSTs.

Each test builds orders in the store with their clocks set in the past, lets a scripted
exchange answer by method and path, runs a sweep, and checks both where the orders ended
and exactly which requests reached the exchange.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import fakeredis
import httpx
import pytest

from order_execution.exchange.client import BinanceClient
from order_execution.exchange.errors import CircuitOpen
from order_execution.listener.reconciler import ReconcilePolicy, Reconciler
from order_execution.orders import fsm
from order_execution.orders.model import Order, OrderState, now_ms
from order_execution.orders.store import OrderStore
from tests import factories
from tests.exchange_double import HandlerTransport

S = OrderState

POLICY = ReconcilePolicy(
    grace_ms=1_000,
    max_order_age_ms=20_000,
    acceptance_window_ms=10_000,
    request_timeout_ms=1_000,
    resend_unplaced=False,
    max_queries=50,
)
QUIET = 5_000  # past the grace period, inside the acceptance window
LONG_AGO = 11_000  # past the acceptance window

_OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")


def _json(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body).encode())


@dataclass(repr=False)
class Venue:
    """A scripted exchange: answers each request from `orders` (by clientOrderId) and `trades`
    (by orderId) according to its method and path, and records it. Anything else, a POST of a
    new order above all, fails the test."""

    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    trades: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def add(self, client_id: str, status: str, *fills: str, exchange_id: int = 99) -> None:
        """An order the exchange holds, with one trade per quantity in `fills` (0.02 USDT fee each)."""
        executed = sum((Decimal(q) for q in fills), Decimal(0))
        self.orders[client_id] = {
            "clientOrderId": client_id,
            "orderId": exchange_id,
            "symbol": "BTCUSDT",
            "side": "BUY",
            "type": "LIMIT",
            "price": "50000",
            "origQty": "0.010",
            "status": status,
            "executedQty": str(executed),
            "avgPrice": "50000" if fills else "0",
        }
        self.trades[str(exchange_id)] = [
            {
                "id": 500 + n,
                "orderId": exchange_id,
                "qty": q,
                "price": "50000",
                "commission": "0.02",
                "commissionAsset": "USDT",
                "maker": False,
                "time": 1,
            }
            for n, q in enumerate(fills)
        ]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        params = request.url.params
        route = (request.method, request.url.path)
        if route == ("GET", "/fapi/v1/openOrders"):
            return _json(200, [o for o in self.orders.values() if o["status"] in _OPEN_STATUSES])
        if route == ("GET", "/fapi/v1/order"):
            found = self.orders.get(params["origClientOrderId"])
            if found is None:
                return _json(400, {"code": -2013, "msg": "Order does not exist."})
            return _json(200, found)
        if route == ("DELETE", "/fapi/v1/order"):
            found = self.orders.get(params["origClientOrderId"])
            if found is None or found["status"] not in _OPEN_STATUSES:
                return _json(400, {"code": -2011, "msg": "Unknown order sent."})
            found["status"] = "CANCELED"
            return _json(200, found)
        if route == ("GET", "/fapi/v1/userTrades"):
            return _json(200, self.trades.get(params["orderId"], []))
        raise AssertionError(f"the reconciler must not send {request.method} {request.url.path}")

    def calls(self) -> list[str]:
        """The requests so far, as "GET order oe-1", "GET userTrades 99", "GET openOrders"..."""
        out = []
        for r in self.requests:
            subject = r.url.params.get("origClientOrderId") or r.url.params.get("orderId") or ""
            out.append(f"{r.method} {r.url.path.removeprefix('/fapi/v1/')} {subject}".rstrip())
        return out


@dataclass(repr=False)
class Rig:
    store: OrderStore
    venue: Venue
    redis: fakeredis.FakeAsyncRedis
    client: BinanceClient

    def reconciler(self, **changes: Any) -> Reconciler:
        return Reconciler(self.store, self.client, replace(POLICY, **changes))

    async def queued(self) -> list[tuple[str, dict[str, Any]]]:
        return await factories.queued_messages(self.redis, "BTCUSDT")


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    redis = fakeredis.FakeAsyncRedis()
    venue = Venue()
    client = BinanceClient(
        "http://exchange.test", api_key="k", secret_key="s", transport=HandlerTransport(venue.handle)
    )
    yield Rig(OrderStore(redis, ttl_s=3600), venue, redis, client)
    await client.close()
    await redis.aclose()


def to(state: OrderState) -> Callable[[Order], Order | None]:
    return lambda o: fsm.transition(o, state)


async def stored(
    store: OrderStore,
    *path: OrderState,
    n: int = 1,
    age_ms: int = 30_000,
    quiet_ms: int | None = None,
    sent_ago_ms: int | None = None,
    **fields: Any,
) -> Order:
    """Order `o<n>` (client id `oe-<n>`) created `age_ms` ago and moved along `path`; its last
    change was `quiet_ms` ago (default: at creation) and its last send `sent_ago_ms` ago."""
    now = now_ms()
    order = factories.make_order(order_id=f"o{n}", client_order_id=f"oe-{n}", created_at=now - age_ms)
    await store.create(order)
    for state in path:
        assert (await store.transition(order.order_id, to(state))).changed, state
    if not path and quiet_ms is None and sent_ago_ms is None and not fields:
        return await store.get(order.order_id)
    updated_at = now - (age_ms if quiet_ms is None else quiet_ms)
    sent_at = 0 if sent_ago_ms is None else now - sent_ago_ms
    result = await store.transition(
        order.order_id, lambda o: o.replace(updated_at=updated_at, sent_at=sent_at, **fields)
    )
    return result.order


# --- NEW ----------------------------------------------------------------------------------


async def test_new_order_past_its_age_expires_without_a_request(rig: Rig) -> None:
    await stored(rig.store, age_ms=61_000)
    result = await rig.reconciler().sweep()
    order = await rig.store.get("o1")
    assert order.state is S.EXPIRED and "max_order_age_ms" in order.reject_reason
    assert result.changed == 1
    assert rig.venue.calls() == [] and await rig.queued() == []
    assert await rig.store.unsettled() == []


async def test_new_order_within_its_age_gets_its_submit_message_queued_again(rig: Rig) -> None:
    before = await stored(rig.store, age_ms=5_000)
    reconciler = rig.reconciler()
    await reconciler.sweep()
    order = await rig.store.get("o1")
    assert order.state is S.NEW and order.version == before.version
    assert await rig.queued() == [("submit_order", {"order_id": "o1", "account": "default"})]
    await reconciler.sweep()  # right away again: not flooded with copies
    assert await rig.queued() == [("submit_order", {"order_id": "o1", "account": "default"})]
    assert rig.venue.calls() == []


# --- grace ----------------------------------------------------------------------------------


async def test_orders_younger_than_the_grace_period_are_not_touched(rig: Rig) -> None:
    fresh = [
        await stored(rig.store, n=1, age_ms=200),
        await stored(rig.store, S.SUBMITTING, n=2, quiet_ms=200, sent_ago_ms=LONG_AGO),
        await stored(rig.store, S.SUBMITTING, S.UNKNOWN, n=3, quiet_ms=200, sent_ago_ms=LONG_AGO),
        await stored(rig.store, S.SUBMITTING, S.SUBMITTED, n=4, quiet_ms=200, exchange_order_id="99"),
        await stored(rig.store, S.SUBMITTING, S.PENDING_CANCEL, n=5, quiet_ms=200, sent_ago_ms=LONG_AGO),
    ]
    result = await rig.reconciler().sweep()
    assert result.looked_at == 0 and result.queries == 0
    assert rig.venue.calls() == [] and await rig.queued() == []
    assert await rig.store.get_many([o.order_id for o in fresh]) == fresh


# --- SUBMITTING -----------------------------------------------------------------------------


async def test_submitting_inside_the_acceptance_window_is_not_queried(rig: Rig) -> None:
    before = await stored(rig.store, S.SUBMITTING, quiet_ms=QUIET, sent_ago_ms=QUIET)
    rig.venue.add("oe-1", "FILLED", "0.010")  # even though it is there: a worker may still be on it
    await rig.reconciler().sweep()
    assert rig.venue.calls() == []
    assert await rig.store.get("o1") == before


async def test_submitting_past_the_window_found_filled_records_its_fills_and_settles(rig: Rig) -> None:
    await stored(rig.store, S.SUBMITTING, quiet_ms=LONG_AGO, sent_ago_ms=LONG_AGO)
    rig.venue.add("oe-1", "FILLED", "0.004", "0.006")
    result = await rig.reconciler().sweep()
    order = await rig.store.get("o1")
    assert order.state is S.FILLED and order.exchange_order_id == "99"
    assert order.filled_quantity == Decimal("0.010")
    assert [f.trade_id for f in order.fills] == ["500", "501"] and order.fee == Decimal("0.04")
    assert fsm.is_settled(order) and await rig.store.unsettled() == []
    assert rig.venue.calls() == ["GET order oe-1", "GET userTrades 99"]
    assert result.changed == 1


async def test_submitting_while_a_worker_may_still_wait_for_the_budget_is_left_alone(rig: Rig) -> None:
    """Claimed 11 s ago, but the order is 15 s old of a 20 s age limit: its worker may still send it."""
    await stored(rig.store, S.SUBMITTING, age_ms=15_000, quiet_ms=LONG_AGO, sent_ago_ms=LONG_AGO)
    await rig.reconciler().sweep()
    assert rig.venue.calls() == [] and (await rig.store.get("o1")).state is S.SUBMITTING


# --- UNKNOWN --------------------------------------------------------------------------------


async def test_unknown_not_found_inside_the_window_stays_unknown(rig: Rig) -> None:
    before = await stored(rig.store, S.SUBMITTING, S.UNKNOWN, quiet_ms=QUIET, sent_ago_ms=QUIET)
    result = await rig.reconciler().sweep()
    assert await rig.store.get("o1") == before
    assert rig.venue.calls() == ["GET order oe-1"] and result.changed == 0
    assert await rig.queued() == []


async def test_unknown_not_found_after_the_window_is_rejected_as_never_placed(rig: Rig) -> None:
    await stored(rig.store, S.SUBMITTING, S.UNKNOWN, quiet_ms=LONG_AGO, sent_ago_ms=LONG_AGO)
    await rig.reconciler(resend_unplaced=False).sweep()
    order = await rig.store.get("o1")
    assert order.state is S.REJECTED and "never placed" in order.reject_reason
    assert rig.venue.calls() == ["GET order oe-1"]
    assert await rig.queued() == [] and await rig.store.unsettled() == []


async def test_unknown_not_found_after_the_window_is_queued_again_when_resending(rig: Rig) -> None:
    await stored(rig.store, S.SUBMITTING, S.UNKNOWN, quiet_ms=LONG_AGO, sent_ago_ms=LONG_AGO)
    reconciler = rig.reconciler(resend_unplaced=True)
    await reconciler.sweep()
    order = await rig.store.get("o1")
    assert order.state is S.NEW and order.client_order_id == "oe-1"
    assert await rig.queued() == [("submit_order", {"order_id": "o1", "account": "default"})]
    await reconciler.sweep()  # it just changed: the worker has it now
    assert await rig.queued() == [("submit_order", {"order_id": "o1", "account": "default"})]
    assert rig.venue.calls() == ["GET order oe-1"]


async def test_unknown_found_at_the_exchange_takes_its_state_and_fills(rig: Rig) -> None:
    await stored(rig.store, S.SUBMITTING, S.UNKNOWN, quiet_ms=QUIET, sent_ago_ms=QUIET)
    rig.venue.add("oe-1", "PARTIALLY_FILLED", "0.004")
    await rig.reconciler().sweep()
    order = await rig.store.get("o1")
    assert order.state is S.PARTIALLY_FILLED and order.exchange_order_id == "99"
    assert [f.trade_id for f in order.fills] == ["500"] and order.filled_quantity == Decimal("0.004")
    assert rig.venue.calls() == ["GET order oe-1", "GET userTrades 99"]
    assert await rig.store.unsettled() == ["o1"]


# --- PENDING_CANCEL -------------------------------------------------------------------------


async def test_pending_cancel_found_open_is_canceled_at_the_exchange(rig: Rig) -> None:
    """A cancel asked for while the create's outcome was unknown; the create went through."""
    await stored(rig.store, S.SUBMITTING, S.PENDING_CANCEL, quiet_ms=QUIET, sent_ago_ms=QUIET)
    rig.venue.add("oe-1", "NEW")
    await rig.reconciler().sweep()
    order = await rig.store.get("o1")
    assert order.state is S.CANCELED and order.exchange_order_id == "99"
    assert rig.venue.calls() == ["GET order oe-1", "DELETE order oe-1"]
    assert rig.venue.orders["oe-1"]["status"] == "CANCELED"
    assert fsm.is_settled(order)


async def test_pending_cancel_never_placed_is_canceled_once_the_window_has_passed(rig: Rig) -> None:
    await stored(rig.store, S.SUBMITTING, S.PENDING_CANCEL, quiet_ms=LONG_AGO, sent_ago_ms=LONG_AGO)
    await rig.reconciler().sweep()
    order = await rig.store.get("o1")
    assert order.state is S.CANCELED and order.exchange_order_id == ""
    assert rig.venue.calls() == ["GET order oe-1"]


async def test_pending_cancel_not_found_inside_the_window_waits(rig: Rig) -> None:
    before = await stored(rig.store, S.SUBMITTING, S.PENDING_CANCEL, quiet_ms=QUIET, sent_ago_ms=QUIET)
    await rig.reconciler().sweep()
    assert await rig.store.get("o1") == before
    assert rig.venue.calls() == ["GET order oe-1"]


# --- SUBMITTED, PARTIALLY_FILLED ------------------------------------------------------------


async def test_submitted_order_gone_from_open_orders_is_queried_and_canceled(rig: Rig) -> None:
    """Someone canceled it at the exchange and the user stream missed it."""
    await stored(rig.store, S.SUBMITTING, S.SUBMITTED, quiet_ms=QUIET, exchange_order_id="99")
    rig.venue.add("oe-1", "CANCELED")
    await rig.reconciler().sweep()
    order = await rig.store.get("o1")
    assert order.state is S.CANCELED and fsm.is_settled(order)
    assert rig.venue.calls() == ["GET openOrders", "GET order oe-1"]


async def test_submitted_order_listed_unchanged_costs_no_query_of_its_own(rig: Rig) -> None:
    before = await stored(rig.store, S.SUBMITTING, S.SUBMITTED, quiet_ms=QUIET, exchange_order_id="99")
    rig.venue.add("oe-1", "NEW")
    result = await rig.reconciler().sweep()
    assert rig.venue.calls() == ["GET openOrders"] and result.queries == 1
    assert await rig.store.get("o1") == before


async def test_listed_with_more_executed_than_recorded_is_queried_for_its_fills(rig: Rig) -> None:
    await stored(rig.store, S.SUBMITTING, S.SUBMITTED, quiet_ms=QUIET, exchange_order_id="99")
    rig.venue.add("oe-1", "PARTIALLY_FILLED", "0.004")
    await rig.reconciler().sweep()
    order = await rig.store.get("o1")
    assert order.state is S.PARTIALLY_FILLED and order.filled_quantity == Decimal("0.004")
    assert [f.trade_id for f in order.fills] == ["500"]
    assert rig.venue.calls() == ["GET openOrders", "GET order oe-1", "GET userTrades 99"]


async def test_listed_with_its_quantity_known_but_its_fill_missing_is_queried_for_its_fills(rig: Rig) -> None:
    """A reply gave the filled quantity but the trade event with the fill was lost: the fill is read."""
    await stored(rig.store, S.SUBMITTING, S.SUBMITTED, quiet_ms=QUIET, exchange_order_id="99")
    await rig.store.transition(
        "o1", lambda o: o.replace(state=S.PARTIALLY_FILLED, filled_quantity=Decimal("0.004"))
    )
    rig.venue.add("oe-1", "PARTIALLY_FILLED", "0.004")
    await rig.reconciler().sweep()
    order = await rig.store.get("o1")
    assert order.state is S.PARTIALLY_FILLED and [f.trade_id for f in order.fills] == ["500"]
    assert rig.venue.calls() == ["GET openOrders", "GET order oe-1", "GET userTrades 99"]


async def test_acknowledged_order_the_exchange_no_longer_knows_expires(rig: Rig) -> None:
    """Past Binance's retention, or a fresh simulator: nothing more will ever be learned of it."""
    await stored(rig.store, S.SUBMITTING, S.SUBMITTED, quiet_ms=QUIET, exchange_order_id="99")
    await rig.reconciler().sweep()
    order = await rig.store.get("o1")
    assert order.state is S.EXPIRED and await rig.store.unsettled() == []
    assert rig.venue.calls() == ["GET openOrders", "GET order oe-1"]


# --- final but not settled ------------------------------------------------------------------


async def test_filled_without_fills_gets_its_trades_and_leaves_the_unsettled_index(rig: Rig) -> None:
    """The REST reply said FILLED, and the user stream (with the trades) stayed silent."""
    await stored(rig.store, S.SUBMITTING, S.SUBMITTED, exchange_order_id="99")
    report = fsm.ExchangeReport(S.FILLED, Decimal("0.010"), Decimal("50000"), "99")
    await rig.store.transition("o1", lambda o: fsm.apply_report(o, report))
    await rig.store.transition("o1", lambda o: o.replace(updated_at=now_ms() - QUIET))
    assert await rig.store.unsettled() == ["o1"]
    rig.venue.add("oe-1", "FILLED", "0.003", "0.003", "0.004")
    await rig.reconciler().sweep()
    order = await rig.store.get("o1")
    assert order.state is S.FILLED and len(order.fills) == 3
    assert order.fee == Decimal("0.06") and fsm.is_settled(order)
    assert await rig.store.unsettled() == []
    assert 0 < await rig.redis.ttl("oe:order:o1") <= 3600
    assert "GET userTrades 99" in rig.venue.calls()
    assert set(rig.venue.calls()) <= {"GET order oe-1", "GET userTrades 99"}


# --- orders we did not place ----------------------------------------------------------------


async def test_open_order_we_never_placed_is_reported_once_and_left_alone(rig: Rig) -> None:
    await stored(rig.store, S.SUBMITTING, S.SUBMITTED, quiet_ms=QUIET, exchange_order_id="99")
    rig.venue.add("oe-1", "NEW")
    rig.venue.add("manual-1", "NEW", exchange_id=7)
    reconciler = rig.reconciler()
    first = await reconciler.sweep()
    assert first.unknown_at_exchange == ["manual-1"] and reconciler.unknown_orders_seen == 1
    second = await reconciler.sweep()
    assert second.unknown_at_exchange == [] and reconciler.unknown_orders_seen == 1
    assert rig.venue.calls() == ["GET openOrders", "GET openOrders"]
    assert rig.venue.orders["manual-1"]["status"] == "NEW"
    assert await rig.store.find_by_client_id("manual-1") is None


async def test_with_nothing_of_ours_open_foreign_orders_are_still_looked_for_every_minute(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.venue.add("manual-2", "NEW", exchange_id=8)
    reconciler = rig.reconciler()
    assert (await reconciler.sweep()).unknown_at_exchange == []  # nothing of ours: no query yet
    assert rig.venue.calls() == []
    clock = now_ms() + 61_000
    monkeypatch.setattr("order_execution.listener.reconciler.now_ms", lambda: clock)
    assert (await reconciler.sweep()).unknown_at_exchange == ["manual-2"]
    assert rig.venue.calls() == ["GET openOrders"]


# --- the query budget -----------------------------------------------------------------------


async def test_the_next_sweep_continues_with_the_orders_the_budget_left_unchecked(rig: Rig) -> None:
    for n in range(1, 5):  # oldest first: oe-1 .. oe-4, all missing at the exchange for now
        await stored(
            rig.store, S.SUBMITTING, S.UNKNOWN, n=n, age_ms=40_000 - n, quiet_ms=QUIET, sent_ago_ms=QUIET
        )
    reconciler = rig.reconciler(max_queries=2)
    checks: list[str] = []
    for sweep in range(4):
        rig.venue.requests.clear()
        result = await reconciler.sweep()
        assert 0 < len(rig.venue.requests) <= 2, rig.venue.calls()
        assert result.budget_exhausted or sweep > 0
        checks += rig.venue.calls()
        if len(checks) >= 4:
            break
    # Each sweep picks up where the last one stopped: every order checked once before any twice.
    assert checks[:4] == ["GET order oe-1", "GET order oe-2", "GET order oe-3", "GET order oe-4"]
    assert {o.state for o in await rig.store.get_many(["o1", "o2", "o3", "o4"])} == {S.UNKNOWN}


async def test_the_query_budget_bounds_every_request_of_a_sweep(rig: Rig) -> None:
    """Each of these orders needs two requests (the query and its trades): the budget counts both."""
    for n in range(1, 4):
        await stored(rig.store, S.SUBMITTING, n=n, age_ms=40_000 - n, quiet_ms=LONG_AGO, sent_ago_ms=LONG_AGO)
        rig.venue.add(f"oe-{n}", "FILLED", "0.010", exchange_id=100 + n)
    result = await rig.reconciler(max_queries=2).sweep()
    calls = rig.venue.calls()
    assert len(calls) <= 2, calls
    assert result.budget_exhausted and result.queries == len(calls)


async def test_an_open_breaker_ends_the_sweep_at_the_first_refusal_and_the_next_resumes_there(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the query breaker is open every query is refused alike: one refusal (and one log
    line) per sweep, not one per order; once it closes the orders are checked from there."""
    for n in range(1, 5):
        await stored(
            rig.store, S.SUBMITTING, S.UNKNOWN, n=n, age_ms=40_000 - n, quiet_ms=QUIET, sent_ago_ms=QUIET
        )
    refused: list[str] = []
    query = rig.client.query_order

    async def breaker_open(symbol: str, client_order_id: str) -> dict[str, Any]:
        refused.append(client_order_id)
        raise CircuitOpen("circuit breaker binance_query_order is open", group="binance_query_order")

    reconciler = rig.reconciler()
    monkeypatch.setattr(rig.client, "query_order", breaker_open)
    await reconciler.sweep()
    assert refused == ["oe-1"]
    monkeypatch.setattr(rig.client, "query_order", query)
    await reconciler.sweep()
    assert [c for c in rig.venue.calls() if c.startswith("GET order")][:1] == ["GET order oe-1"]
